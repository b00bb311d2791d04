//! What the admin's leader does, step by step, to carry out one move the directory recorded
//! (`directory::moves`), sans-IO: it says what to ask of whom next ([`MoveRun::ask`]) and takes
//! the answer ([`MoveRun::answered`]); the caller (the admin's shell, or a simulator) delivers
//! the asks, retries them when no answer comes, and decides when an uncommitted move has waited
//! long enough to be rolled back ([`MoveRun::give_up`]). Every ask is idempotent (each step is
//! keyed by the partition and the move's epoch), so a run can be dropped at any point — the
//! admin's leader crashed or lost its leadership — and a new run started from the directory's
//! record by the next leader repeats what was done without doing it twice.
//!
//! The order: the source freezes the partition; its pairs are exported from a source replica
//! that applied the freeze (the partition no longer changes there) and ingested by the
//! destination chunk by chunk, each chunk committed in the destination's log; only when the
//! last is does the directory commit the move; then the source drops the partition, and only
//! then does the destination serve it, so no read is served by the source once the destination
//! takes writes; then the directory finishes the move. Rolled back: the directory aborts it,
//! the source unfreezes, the destination discards what came in, the directory forgets it.

use bytes::Bytes;

use super::command::DirectoryCommand;
use super::moves::{Move, MoveOutcome, MovePhase};
use crate::core::LogIndex;
use crate::kv::shard::Step;
use crate::kv::{Command, MoveStep};
use crate::sharding::{GroupId, PartitionId};

/// Bytes of pairs per exported chunk, about, unless a node is set to cut them otherwise (its
/// `move_chunk_bytes`): each chunk is one entry in the destination's log.
pub const CHUNK_BYTES: usize = 256 * 1024;
/// The largest chunk a node may be set to cut: one entry in the destination's log, one
/// message to its followers.
pub const CHUNK_BYTES_MAX: usize = 8 << 20;

/// What to ask next, and of whom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ask {
    /// Write this command to the source group's log (through its leader).
    Source(Command),
    /// Write this command to the destination group's log.
    Destination(Command),
    /// Read the next chunk of the partition from a source replica that has applied the log up
    /// to `applied_at_least` (the freeze): the pairs after `after`, about [`CHUNK_BYTES`].
    Export {
        partition: PartitionId,
        after: Option<Bytes>,
        applied_at_least: LogIndex,
    },
    /// Write this command to the directory's log.
    Admin(DirectoryCommand),
}

/// The answer to the last ask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A group applied a move step at this index.
    Step { step: Step, index: LogIndex },
    /// The next chunk, and whether it is the last.
    Exported {
        pairs: Vec<(Bytes, Bytes)>,
        last: bool,
    },
    /// The directory applied a move command.
    Directory(MoveOutcome),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Stage {
    Freezing,
    /// Only with the planted bug `drop_before_commit`.
    #[cfg(feature = "planted-bugs")]
    DroppingEarly {
        freeze_index: LogIndex,
    },
    Exporting {
        freeze_index: LogIndex,
        after: Option<Bytes>,
        chunk: u32,
    },
    Ingesting {
        freeze_index: LogIndex,
        chunk: u32,
        last: bool,
        pairs: Vec<(Bytes, Bytes)>,
    },
    Committing,
    Dropping,
    Activating,
    Finishing,
    Aborting,
    Unfreezing,
    Discarding,
    Forgetting,
    Done,
}

/// One move being carried out.
#[derive(Clone, Debug)]
pub struct MoveRun {
    pub partition: PartitionId,
    pub epoch: u64,
    pub from: GroupId,
    pub to: GroupId,
    stage: Stage,
    /// Whether the directory committed the move (known from its record or its answer).
    committed: bool,
    #[cfg(feature = "planted-bugs")]
    bugs: super::DirectoryBugs,
}

impl MoveRun {
    /// A run of `moving` from where the directory's record puts it.
    pub fn new(moving: &Move) -> Self {
        let (stage, committed) = match moving.phase {
            MovePhase::Copying => (Stage::Freezing, false),
            MovePhase::Committed => (Stage::Dropping, true),
            MovePhase::RolledBack => (Stage::Unfreezing, false),
        };
        MoveRun {
            partition: moving.partition,
            epoch: moving.epoch,
            from: moving.from,
            to: moving.to,
            stage,
            committed,
            #[cfg(feature = "planted-bugs")]
            bugs: super::DirectoryBugs::default(),
        }
    }

    /// Test-only: plants the mover's mistakes of `bugs`.
    #[cfg(feature = "planted-bugs")]
    pub fn plant(mut self, bugs: super::DirectoryBugs) -> Self {
        self.bugs = bugs;
        self
    }

    /// The move is carried out (finished, or rolled back at both groups).
    pub fn is_done(&self) -> bool {
        self.stage == Stage::Done
    }

    pub fn is_committed(&self) -> bool {
        self.committed
    }

    /// What to ask next; `None` once done.
    pub fn ask(&self) -> Option<Ask> {
        let step = |step| Command::Move {
            partition: self.partition,
            epoch: self.epoch,
            step,
        };
        let (partition, epoch) = (self.partition, self.epoch);
        Some(match &self.stage {
            Stage::Freezing => Ask::Source(step(MoveStep::Freeze)),
            #[cfg(feature = "planted-bugs")]
            Stage::DroppingEarly { .. } => Ask::Source(step(MoveStep::Drop { to: self.to })),
            Stage::Exporting {
                freeze_index,
                after,
                ..
            } => Ask::Export {
                partition,
                after: after.clone(),
                applied_at_least: *freeze_index,
            },
            Stage::Ingesting {
                chunk, last, pairs, ..
            } => Ask::Destination(step(MoveStep::Ingest {
                chunk: *chunk,
                last: *last,
                pairs: pairs.clone(),
            })),
            Stage::Committing => Ask::Admin(DirectoryCommand::CommitMove { partition, epoch }),
            Stage::Dropping => Ask::Source(step(MoveStep::Drop { to: self.to })),
            Stage::Activating => Ask::Destination(step(MoveStep::Activate)),
            Stage::Finishing => Ask::Admin(DirectoryCommand::FinishMove { partition, epoch }),
            Stage::Aborting => Ask::Admin(DirectoryCommand::AbortMove { partition, epoch }),
            Stage::Unfreezing => Ask::Source(step(MoveStep::Unfreeze)),
            Stage::Discarding => Ask::Destination(step(MoveStep::Discard)),
            Stage::Forgetting => Ask::Admin(DirectoryCommand::ForgetMove { partition, epoch }),
            Stage::Done => return None,
        })
    }

    /// Takes the answer to the last ask and moves on (or stays, to ask again).
    pub fn answered(&mut self, answer: Answer) {
        let taken = |step: &Step| matches!(step, Step::Done | Step::AlreadyDone);
        let next = match (&self.stage, answer) {
            #[cfg(feature = "planted-bugs")]
            (Stage::Freezing, Answer::Step { step, index })
                if taken(&step) && self.bugs.drop_before_commit =>
            {
                Stage::DroppingEarly {
                    freeze_index: index,
                }
            }
            #[cfg(feature = "planted-bugs")]
            (Stage::DroppingEarly { .. }, Answer::Step { index, .. }) => Stage::Exporting {
                freeze_index: index,
                after: None,
                chunk: 0,
            },
            (Stage::Freezing, Answer::Step { step, index }) if taken(&step) => Stage::Exporting {
                freeze_index: index,
                after: None,
                chunk: 0,
            },
            // The source does not hold the partition as the move expects (it has not claimed
            // it yet, say): ask again; the caller gives up if that lasts.
            (
                Stage::Exporting {
                    freeze_index,
                    chunk,
                    ..
                },
                Answer::Exported { pairs, last },
            ) => Stage::Ingesting {
                freeze_index: *freeze_index,
                chunk: *chunk,
                last,
                pairs,
            },
            #[cfg(feature = "planted-bugs")]
            (Stage::Ingesting { .. }, Answer::Step { step, .. })
                if taken(&step) && self.bugs.commit_before_ingest =>
            {
                Stage::Committing
            }
            (
                Stage::Ingesting {
                    freeze_index,
                    chunk,
                    last,
                    pairs,
                },
                Answer::Step { step, .. },
            ) if taken(&step) => {
                if *last {
                    Stage::Committing
                } else {
                    Stage::Exporting {
                        freeze_index: *freeze_index,
                        after: pairs.last().map(|(key, _)| key.clone()),
                        chunk: chunk + 1,
                    }
                }
            }
            (Stage::Committing, Answer::Directory(MoveOutcome::Committed))
            | (Stage::Committing, Answer::Directory(MoveOutcome::AlreadyDone)) => {
                self.committed = true;
                Stage::Dropping
            }
            // Not in flight any more as copying: rolled back by an earlier leader.
            (Stage::Committing, Answer::Directory(_)) => Stage::Unfreezing,
            (Stage::Dropping, Answer::Step { step, .. }) if taken(&step) => Stage::Activating,
            (Stage::Activating, Answer::Step { step, .. }) if taken(&step) => Stage::Finishing,
            (Stage::Finishing, Answer::Directory(_)) => Stage::Done,
            (Stage::Aborting, Answer::Directory(MoveOutcome::Aborted))
            | (Stage::Aborting, Answer::Directory(MoveOutcome::AlreadyDone)) => Stage::Unfreezing,
            // Committed after all (by an earlier leader): it can only go forward.
            (Stage::Aborting, Answer::Directory(_)) => {
                self.committed = true;
                Stage::Dropping
            }
            (Stage::Unfreezing, Answer::Step { .. }) => Stage::Discarding,
            // Refused or not, the cleanup of this attempt is done at that group: a refusal
            // means a later attempt took the partition over there.
            (Stage::Discarding, Answer::Step { .. }) => Stage::Forgetting,
            (Stage::Forgetting, Answer::Directory(_)) => Stage::Done,
            // Anything else (a refused drop or activation after the commit point, an answer
            // that does not fit): ask again.
            (stage, _) => stage.clone(),
        };
        self.stage = next;
    }

    /// The caller waited long enough for an uncommitted move (a group unreachable, say): roll
    /// it back. A committed move only goes forward. A rolled-back one whose destination does
    /// not answer the discard is forgotten without it: what came in there is never served (no
    /// activation at a rolled-back epoch can come) and a later attempt's first chunk replaces
    /// it; the source's unfreeze, which gives the partition its writes back, is never skipped.
    pub fn give_up(&mut self) {
        if self.committed {
            return;
        }
        match self.stage {
            Stage::Freezing | Stage::Exporting { .. } | Stage::Ingesting { .. } => {
                self.stage = Stage::Aborting;
            }
            Stage::Discarding => self.stage = Stage::Forgetting,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{KvStateMachine, Outcome};
    use crate::sharding::partition_of;

    fn moving(phase: MovePhase) -> Move {
        Move {
            partition: 1,
            from: 1,
            to: 2,
            epoch: 2,
            phase,
        }
    }

    /// A run carries a move from the source's state machine to the destination's, chunk by
    /// chunk, and commits only after the last chunk is in; the destination then holds exactly
    /// what the source held of the partition, and the source none of it.
    #[test]
    fn a_run_moves_a_partition_and_commits_only_after_the_last_chunk() {
        let mut source = KvStateMachine::sharded(4);
        let mut target = KvStateMachine::sharded(4);
        let (mut source_index, mut target_index) = (0, 0);
        let claim = Command::Claim {
            partitions: 4,
            claimed: vec![0, 1, 2, 3],
        };
        source_index += 1;
        source.apply(source_index, &claim.encode());
        let keys: Vec<Bytes> = (0..2_000)
            .map(|i| Bytes::from(format!("key-{i}")))
            .collect();
        for key in &keys {
            source_index += 1;
            let value = Bytes::from(vec![7u8; 1_000]);
            let put = Command::Put {
                key: key.clone(),
                value,
            };
            source.apply(source_index, &put.encode());
        }
        let in_partition = keys.iter().filter(|key| partition_of(key, 4) == 1).count();
        let mut run = MoveRun::new(&moving(MovePhase::Copying));
        let mut chunks = 0;
        let mut asked_commit = false;
        while let Some(ask) = run.ask() {
            let answer = match ask {
                Ask::Source(command) => {
                    source_index += 1;
                    let Outcome::MoveStep(step) = source.apply(source_index, &command.encode())
                    else {
                        panic!("a move step");
                    };
                    Answer::Step {
                        step,
                        index: source_index,
                    }
                }
                Ask::Destination(command) => {
                    if matches!(
                        command,
                        Command::Move {
                            step: MoveStep::Ingest { .. },
                            ..
                        }
                    ) {
                        chunks += 1;
                        assert!(!asked_commit);
                    }
                    target_index += 1;
                    let Outcome::MoveStep(step) = target.apply(target_index, &command.encode())
                    else {
                        panic!("a move step");
                    };
                    Answer::Step {
                        step,
                        index: target_index,
                    }
                }
                Ask::Export {
                    partition,
                    after,
                    applied_at_least,
                } => {
                    assert!(source.applied_index() >= applied_at_least);
                    let (pairs, last) = source.export(partition, after.as_deref(), CHUNK_BYTES);
                    Answer::Exported { pairs, last }
                }
                Ask::Admin(DirectoryCommand::CommitMove { .. }) => {
                    asked_commit = true;
                    Answer::Directory(MoveOutcome::Committed)
                }
                Ask::Admin(_) => Answer::Directory(MoveOutcome::Finished),
            };
            run.answered(answer);
        }
        assert!(run.is_committed());
        assert!(chunks > 1, "several chunks");
        assert_eq!(target.len(), in_partition);
        for key in keys.iter().filter(|key| partition_of(key, 4) == 1) {
            assert!(target.get(key).is_some());
            assert!(source.get(key).is_none());
        }
    }

    /// Given up before the commit, a run rolls back; a run of a committed move cannot be given
    /// up, and one whose abort finds the move committed (by an earlier leader) goes forward.
    #[test]
    fn a_run_rolls_back_only_before_the_commit_point() {
        let mut run = MoveRun::new(&moving(MovePhase::Copying));
        run.give_up();
        assert!(matches!(
            run.ask(),
            Some(Ask::Admin(DirectoryCommand::AbortMove { .. }))
        ));
        run.answered(Answer::Directory(MoveOutcome::Refused("committed".into())));
        assert!(run.is_committed());
        assert!(matches!(
            run.ask(),
            Some(Ask::Source(Command::Move {
                step: MoveStep::Drop { to: 2 },
                ..
            }))
        ));
        run.give_up();
        assert!(
            matches!(run.ask(), Some(Ask::Source(_))),
            "a committed move goes forward"
        );

        let mut run = MoveRun::new(&moving(MovePhase::Copying));
        run.give_up();
        run.answered(Answer::Directory(MoveOutcome::Aborted));
        assert!(
            !run.is_done(),
            "a rolled-back move is cleaned up at both groups"
        );
        for expected in [MoveStep::Unfreeze, MoveStep::Discard] {
            match run.ask() {
                Some(Ask::Source(Command::Move { step, .. }))
                | Some(Ask::Destination(Command::Move { step, .. })) => {
                    assert_eq!(step, expected)
                }
                other => panic!("{other:?}"),
            }
            run.answered(Answer::Step {
                step: Step::Done,
                index: 1,
            });
        }
        assert!(matches!(
            run.ask(),
            Some(Ask::Admin(DirectoryCommand::ForgetMove { .. }))
        ));
        run.answered(Answer::Directory(MoveOutcome::Forgotten));
        assert!(run.is_done() && !run.is_committed());
    }

    /// A cleanup never skips the source's unfreeze (the partition's writes depend on it); a
    /// destination that does not answer the discard is given up on, and the attempt forgotten.
    #[test]
    fn a_cleanup_gives_up_on_the_discard_but_not_on_the_unfreeze() {
        let mut run = MoveRun::new(&moving(MovePhase::RolledBack));
        run.give_up();
        assert!(matches!(
            run.ask(),
            Some(Ask::Source(Command::Move {
                step: MoveStep::Unfreeze,
                ..
            }))
        ));
        run.answered(Answer::Step {
            step: Step::Done,
            index: 1,
        });
        assert!(matches!(
            run.ask(),
            Some(Ask::Destination(Command::Move {
                step: MoveStep::Discard,
                ..
            }))
        ));
        run.give_up();
        assert!(matches!(
            run.ask(),
            Some(Ask::Admin(DirectoryCommand::ForgetMove { .. }))
        ));
    }
}
