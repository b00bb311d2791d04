//! Which partitions of a sharded store a data group holds, and in what state, in the group's own
//! replicated state: every replica of the group knows the same, at the same log index, so a
//! write is refused by every replica alike when it applies — not only when it was proposed — if
//! its key's partition is not (or no longer) the group's to change. A group of a plain cluster
//! has no shard and serves every key.
//!
//! A group takes its partitions of the first partition table (epoch 1) from the admin by a
//! `Claim` in its own log. Later epochs come only from moving a partition between groups, each
//! step a command in a group's log, keyed by the partition and the move's epoch so that a step
//! repeated (a retry, a duplicate, a new leader of the admin driving the move again) changes
//! nothing the second time, and a step of an older move is refused — also once that move is
//! rolled back and cleaned up (the group remembers the latest attempt it saw rolled back):
//!
//! - at the source A: `Freeze` (writes refused as "moving", reads go on), then either
//!   `Drop` (after the admin committed the move: the keys go, requests are told where it went)
//!   or `Unfreeze` (the move was rolled back);
//! - at the destination B: `Ingest` chunk by chunk ("incoming", not served), then either
//!   `Activate` (after the admin committed the move: served at the move's epoch) or `Discard`.
//!
//! A claim for a partition the group has held in any state is ignored, so a late claim cannot
//! bring back a partition that moved away.

use std::collections::BTreeMap;

use crate::sharding::{partition_of, GroupId, PartitionId};

/// A partition's epoch: 1 for the first table, one more at each move.
pub type Epoch = u64;

/// A request for a key this group does not serve (or, for a write, does not serve now).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotOwned {
    pub partition: PartitionId,
    /// The epoch at which this group last held the partition; 0 if it never did.
    pub epoch: Epoch,
    /// The partition is moving out of this group: a write is refused until the move ends
    /// (retry shortly; it will be served here again, or by the group it moved to).
    pub moving: bool,
    /// The group the partition moved to, if it moved away from this one (0: not known here).
    pub moved_to: GroupId,
}

impl NotOwned {
    fn never_held(partition: PartitionId) -> Self {
        NotOwned {
            partition,
            epoch: 0,
            moving: false,
            moved_to: 0,
        }
    }
}

/// What a group holds of one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub enum Holding {
    /// Served at `epoch`: reads and writes.
    Serving { epoch: Epoch },
    /// Held at `epoch`, moving out in the move to epoch `moving_to`: reads go on, writes are
    /// refused until the move is committed (then `Drop`) or rolled back (then `Unfreeze`).
    Frozen { epoch: Epoch, moving_to: Epoch },
    /// Coming in for epoch `epoch`, not served: `chunks` chunks ingested so far, `complete`
    /// once the last one is.
    Incoming {
        epoch: Epoch,
        chunks: u32,
        complete: bool,
    },
    /// Moved away at `epoch` to group `to`; its keys are gone from here.
    Gone { epoch: Epoch, to: GroupId },
}

/// What a relocation step did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The step changed the partition's holding.
    Done,
    /// The step had been taken already (a retry or a duplicate): nothing changed.
    AlreadyDone,
    /// The step does not fit the partition's holding here (another move's epoch, a step out
    /// of order, a chunk past the next one): nothing changed.
    Refused(String),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Shard {
    /// Partitions of the whole key space (the admin's setting).
    partitions: u32,
    /// What this group holds of each partition it has had anything to do with.
    holdings: BTreeMap<PartitionId, Holding>,
    /// The latest epoch of an attempt to move each partition that this group has seen rolled
    /// back (unfrozen here as its source, discarded here as its destination): that attempt's
    /// steps, and older ones', may still arrive late, and are refused.
    rolled_back: BTreeMap<PartitionId, Epoch>,
}

impl Shard {
    pub fn new(partitions: u32) -> Self {
        assert!(partitions > 0, "a key space of at least one partition");
        Shard {
            partitions,
            holdings: BTreeMap::new(),
            rolled_back: BTreeMap::new(),
        }
    }

    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    pub fn holdings(&self) -> &BTreeMap<PartitionId, Holding> {
        &self.holdings
    }

    /// The partitions this group serves reads of, with the epoch it holds each at (serving or
    /// frozen).
    pub fn serving(&self) -> BTreeMap<PartitionId, Epoch> {
        self.holdings
            .iter()
            .filter_map(|(&partition, holding)| match *holding {
                Holding::Serving { epoch } | Holding::Frozen { epoch, .. } => {
                    Some((partition, epoch))
                }
                _ => None,
            })
            .collect()
    }

    /// Takes `claimed` at epoch 1, except partitions out of range or held before in any state;
    /// returns how many it took.
    pub fn claim(&mut self, claimed: &[PartitionId]) -> usize {
        let mut taken = 0;
        for &partition in claimed {
            if partition < self.partitions && !self.holdings.contains_key(&partition) {
                self.holdings
                    .insert(partition, Holding::Serving { epoch: 1 });
                taken += 1;
            }
        }
        taken
    }

    /// Whether this group serves reads of `key` (served or frozen).
    pub fn check_read(&self, key: &[u8]) -> Result<(), NotOwned> {
        let partition = partition_of(key, self.partitions);
        match self.holdings.get(&partition) {
            Some(Holding::Serving { .. } | Holding::Frozen { .. }) => Ok(()),
            other => Err(not_owned(partition, other)),
        }
    }

    /// Whether this group takes writes of `key` now (served, not frozen).
    pub fn check_write(&self, key: &[u8]) -> Result<(), NotOwned> {
        let partition = partition_of(key, self.partitions);
        match self.holdings.get(&partition) {
            Some(Holding::Serving { .. }) => Ok(()),
            #[cfg(feature = "planted-bugs")]
            Some(Holding::Frozen { .. })
                if super::planted::planted().frozen_source_takes_writes =>
            {
                Ok(())
            }
            other => Err(not_owned(partition, other)),
        }
    }

    /// Source: stop writes to `partition` for the move to epoch `moving_to`. Frozen for an
    /// earlier attempt (which the admin rolled back before starting this one, and whose
    /// unfreeze has not arrived), it is frozen for this one instead.
    pub fn freeze(&mut self, partition: PartitionId, moving_to: Epoch) -> Step {
        if let Some(refused) = self.rolled_back_already(partition, moving_to) {
            return refused;
        }
        match self.holdings.get(&partition).copied() {
            Some(Holding::Serving { epoch }) if epoch < moving_to => {
                self.holdings
                    .insert(partition, Holding::Frozen { epoch, moving_to });
                Step::Done
            }
            Some(Holding::Frozen {
                epoch,
                moving_to: earlier,
            }) if earlier < moving_to => {
                self.holdings
                    .insert(partition, Holding::Frozen { epoch, moving_to });
                Step::Done
            }
            Some(Holding::Frozen { moving_to: now, .. }) if now == moving_to => Step::AlreadyDone,
            other => Step::Refused(format!(
                "partition {partition} cannot be frozen for epoch {moving_to}: it is {other:?}"
            )),
        }
    }

    /// Source: the move to epoch `moving_to` was rolled back; writes resume. Whatever it
    /// finds, the group remembers the attempt as rolled back: its freeze may still arrive (even
    /// before the group claimed the partition) and must then be refused.
    pub fn unfreeze(&mut self, partition: PartitionId, moving_to: Epoch) -> Step {
        self.note_rolled_back(partition, moving_to);
        match self.holdings.get(&partition).copied() {
            Some(Holding::Frozen {
                epoch,
                moving_to: now,
            }) if now == moving_to => {
                self.holdings.insert(partition, Holding::Serving { epoch });
                Step::Done
            }
            Some(Holding::Serving { epoch }) if epoch < moving_to => Step::AlreadyDone,
            other => Step::Refused(format!(
                "partition {partition} cannot be unfrozen from epoch {moving_to}'s move: it is \
                 {other:?}"
            )),
        }
    }

    /// Source: the move to epoch `moving_to` (to group `to`) is committed; the partition's keys
    /// go (the caller removes them when this is `Done`).
    pub fn drop_moved(&mut self, partition: PartitionId, moving_to: Epoch, to: GroupId) -> Step {
        match self.holdings.get(&partition).copied() {
            Some(Holding::Frozen { moving_to: now, .. }) if now == moving_to => {
                self.holdings.insert(
                    partition,
                    Holding::Gone {
                        epoch: moving_to,
                        to,
                    },
                );
                Step::Done
            }
            Some(Holding::Gone { epoch, .. }) if epoch == moving_to => Step::AlreadyDone,
            other => Step::Refused(format!(
                "partition {partition} cannot be dropped for epoch {moving_to}: it is {other:?}"
            )),
        }
    }

    /// Destination: chunk `chunk` of the partition coming in at `epoch`. `Done` means the
    /// caller stores the chunk's pairs; with `restart`, it first removes what an abandoned
    /// older ingest left.
    pub fn ingest(
        &mut self,
        partition: PartitionId,
        epoch: Epoch,
        chunk: u32,
        last: bool,
    ) -> Ingest {
        let fresh = Holding::Incoming {
            epoch,
            chunks: 1,
            complete: last,
        };
        if let Some(refused) = self.rolled_back_already(partition, epoch) {
            return Ingest::Step(refused);
        }
        match self.holdings.get(&partition).copied() {
            None => {
                if chunk != 0 {
                    return Ingest::Step(gap(partition, epoch, chunk, 0));
                }
                self.holdings.insert(partition, fresh);
                Ingest::Store { restart: false }
            }
            Some(Holding::Gone { epoch: gone, .. }) if gone < epoch => {
                if chunk != 0 {
                    return Ingest::Step(gap(partition, epoch, chunk, 0));
                }
                self.holdings.insert(partition, fresh);
                Ingest::Store { restart: false }
            }
            Some(Holding::Incoming { epoch: older, .. }) if older < epoch => {
                if chunk != 0 {
                    return Ingest::Step(gap(partition, epoch, chunk, 0));
                }
                self.holdings.insert(partition, fresh);
                Ingest::Store { restart: true }
            }
            Some(Holding::Incoming {
                epoch: now,
                chunks,
                complete,
            }) if now == epoch || stale_epoch_accepted() => {
                if chunk < chunks {
                    Ingest::Step(Step::AlreadyDone)
                } else if chunk > chunks || complete {
                    Ingest::Step(gap(partition, epoch, chunk, chunks))
                } else {
                    self.holdings.insert(
                        partition,
                        Holding::Incoming {
                            epoch: now,
                            chunks: chunks + 1,
                            complete: last,
                        },
                    );
                    Ingest::Store { restart: false }
                }
            }
            other => Ingest::Step(Step::Refused(format!(
                "partition {partition} cannot take epoch {epoch}'s data: it is {other:?}"
            ))),
        }
    }

    /// Destination: the move to `epoch` is committed; the partition is served from now on.
    pub fn activate(&mut self, partition: PartitionId, epoch: Epoch) -> Step {
        match self.holdings.get(&partition).copied() {
            Some(Holding::Incoming {
                epoch: now,
                complete: true,
                ..
            }) if now == epoch => {
                self.holdings.insert(partition, Holding::Serving { epoch });
                Step::Done
            }
            Some(Holding::Serving { epoch: now } | Holding::Frozen { epoch: now, .. })
                if now == epoch =>
            {
                Step::AlreadyDone
            }
            other => Step::Refused(format!(
                "partition {partition} cannot be served at epoch {epoch}: it is {other:?}"
            )),
        }
    }

    /// Destination: the move to `epoch` was rolled back; what came in goes (the caller removes
    /// the keys when this is `Done`). Whatever it finds, the attempt is remembered as rolled
    /// back, so its chunks arriving late are refused.
    pub fn discard(&mut self, partition: PartitionId, epoch: Epoch) -> Step {
        self.note_rolled_back(partition, epoch);
        match self.holdings.get(&partition).copied() {
            Some(Holding::Incoming { epoch: now, .. })
                if now == epoch || stale_epoch_accepted() =>
            {
                self.holdings.remove(&partition);
                Step::Done
            }
            None | Some(Holding::Gone { .. }) => Step::AlreadyDone,
            Some(Holding::Incoming { epoch: now, .. }) if now < epoch => Step::AlreadyDone,
            other => Step::Refused(format!(
                "partition {partition}'s epoch {epoch} data cannot be discarded: it is {other:?}"
            )),
        }
    }

    fn note_rolled_back(&mut self, partition: PartitionId, epoch: Epoch) {
        let latest = self.rolled_back.entry(partition).or_insert(epoch);
        *latest = (*latest).max(epoch);
    }

    /// A refusal for a step of an attempt at `epoch` if this group has seen that attempt, or
    /// a later one, rolled back.
    fn rolled_back_already(&self, partition: PartitionId, epoch: Epoch) -> Option<Step> {
        let latest = *self.rolled_back.get(&partition)?;
        (epoch <= latest && !stale_epoch_accepted()).then(|| {
            Step::Refused(format!(
                "partition {partition}: epoch {epoch}'s attempt was rolled back (epoch {latest} \
                 was)"
            ))
        })
    }
}

/// Only with the planted bug `stale_epoch_accepted`: a step of any epoch fits the incoming one.
fn stale_epoch_accepted() -> bool {
    #[cfg(feature = "planted-bugs")]
    return super::planted::planted().stale_epoch_accepted;
    #[cfg(not(feature = "planted-bugs"))]
    false
}

/// What an ingest step asks of the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ingest {
    /// Store the chunk's pairs (after removing the partition's keys, with `restart`).
    Store { restart: bool },
    /// Store nothing.
    Step(Step),
}

fn gap(partition: PartitionId, epoch: Epoch, chunk: u32, expected: u32) -> Step {
    Step::Refused(format!(
        "partition {partition} epoch {epoch}: chunk {chunk} arrived, chunk {expected} expected"
    ))
}

fn not_owned(partition: PartitionId, holding: Option<&Holding>) -> NotOwned {
    match holding.copied() {
        None => NotOwned::never_held(partition),
        Some(Holding::Serving { epoch }) => NotOwned {
            partition,
            epoch,
            moving: false,
            moved_to: 0,
        },
        Some(Holding::Frozen { epoch, .. }) => NotOwned {
            partition,
            epoch,
            moving: true,
            moved_to: 0,
        },
        Some(Holding::Incoming { .. }) => NotOwned::never_held(partition),
        Some(Holding::Gone { epoch, to }) => NotOwned {
            partition,
            epoch,
            moving: false,
            moved_to: to,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(wanted: PartitionId) -> Vec<u8> {
        (0..10_000)
            .map(|i| format!("key-{i}").into_bytes())
            .find(|key| partition_of(key, 8) == wanted)
            .expect("some key hashes there")
    }

    #[test]
    fn a_group_serves_only_what_it_claimed_and_a_claim_is_taken_once() {
        let mut shard = Shard::new(8);
        assert_eq!(shard.check_write(&key_of(3)), Err(NotOwned::never_held(3)));
        assert_eq!(shard.claim(&[3, 5, 99]), 2, "99 is out of range");
        assert_eq!(shard.claim(&[3]), 0, "taken already");
        assert_eq!(shard.check_write(&key_of(3)), Ok(()));
        assert_eq!(shard.check_read(&key_of(5)), Ok(()));
        assert!(shard.check_write(&key_of(4)).is_err());
        assert_eq!(
            shard.serving().into_iter().collect::<Vec<_>>(),
            vec![(3, 1), (5, 1)]
        );
    }

    /// The source's side of a move: frozen (reads on, writes refused as moving), then dropped
    /// (told where it went) or unfrozen; every step taken twice changes nothing the second time,
    /// and a step of another move's epoch is refused.
    #[test]
    fn the_source_freezes_then_drops_or_unfreezes_each_step_once() {
        let mut shard = Shard::new(8);
        shard.claim(&[3]);
        assert!(
            matches!(shard.drop_moved(3, 2, 7), Step::Refused(_)),
            "not frozen"
        );
        assert_eq!(shard.freeze(3, 2), Step::Done);
        assert_eq!(shard.freeze(3, 2), Step::AlreadyDone);
        assert_eq!(shard.check_read(&key_of(3)), Ok(()));
        let refused = shard.check_write(&key_of(3)).expect_err("frozen");
        assert!(refused.moving && refused.epoch == 1);
        // A later attempt (the admin rolled this one back) freezes it anew; the earlier
        // attempt's steps arriving late are refused.
        assert_eq!(shard.freeze(3, 4), Step::Done);
        assert!(
            matches!(shard.freeze(3, 2), Step::Refused(_)),
            "an earlier attempt"
        );
        assert!(
            matches!(shard.unfreeze(3, 2), Step::Refused(_)),
            "an earlier attempt"
        );
        assert_eq!(shard.unfreeze(3, 4), Step::Done);
        assert_eq!(shard.unfreeze(3, 4), Step::AlreadyDone);
        assert_eq!(shard.check_write(&key_of(3)), Ok(()));
        assert!(
            matches!(shard.freeze(3, 3), Step::Refused(_)),
            "an attempt before the one rolled back"
        );
        assert_eq!(shard.freeze(3, 5), Step::Done);
        assert_eq!(shard.drop_moved(3, 5, 7), Step::Done);
        assert_eq!(shard.drop_moved(3, 5, 7), Step::AlreadyDone);
        assert!(
            matches!(shard.unfreeze(3, 5), Step::Refused(_)),
            "dropped already"
        );
        let gone = shard.check_read(&key_of(3)).expect_err("moved");
        assert_eq!((gone.epoch, gone.moved_to, gone.moving), (5, 7, false));
        assert_eq!(shard.claim(&[3]), 0, "a late claim does not bring it back");
    }

    /// The destination's side: chunks in order (a duplicate is a no-op, a gap refused), served
    /// only once complete and activated; a newer move's ingest restarts an abandoned older one;
    /// a step of an older epoch than what is held is refused.
    #[test]
    fn the_destination_ingests_in_order_then_activates_or_discards() {
        let mut shard = Shard::new(8);
        assert_eq!(shard.ingest(3, 2, 1, false), Ingest::Step(gap(3, 2, 1, 0)));
        assert_eq!(
            shard.ingest(3, 2, 0, false),
            Ingest::Store { restart: false }
        );
        assert_eq!(
            shard.ingest(3, 2, 0, false),
            Ingest::Step(Step::AlreadyDone)
        );
        assert!(
            shard.check_read(&key_of(3)).is_err(),
            "incoming is not served"
        );
        assert!(
            matches!(shard.activate(3, 2), Step::Refused(_)),
            "not complete"
        );
        // A newer move of the same partition restarts what the older one left.
        assert_eq!(
            shard.ingest(3, 4, 0, false),
            Ingest::Store { restart: true }
        );
        assert!(matches!(
            shard.ingest(3, 2, 1, true),
            Ingest::Step(Step::Refused(_))
        ));
        assert_eq!(
            shard.ingest(3, 4, 1, true),
            Ingest::Store { restart: false }
        );
        assert!(matches!(
            shard.ingest(3, 4, 2, false),
            Ingest::Step(Step::Refused(_))
        ));
        assert_eq!(shard.activate(3, 4), Step::Done);
        assert_eq!(shard.activate(3, 4), Step::AlreadyDone);
        assert_eq!(shard.check_write(&key_of(3)), Ok(()));
        assert!(matches!(shard.discard(3, 4), Step::Refused(_)), "served");
        assert!(matches!(
            shard.ingest(3, 4, 0, false),
            Ingest::Step(Step::Refused(_))
        ));
        // A rolled-back move leaves nothing.
        assert_eq!(
            shard.ingest(5, 2, 0, true),
            Ingest::Store { restart: false }
        );
        assert_eq!(shard.discard(5, 2), Step::Done);
        assert_eq!(shard.discard(5, 2), Step::AlreadyDone);
        assert!(!shard.holdings().contains_key(&5));
    }

    /// Steps of a rolled-back attempt that arrive after its cleanup (sent by an admin leader
    /// deposed since, say) are refused: a late freeze would otherwise freeze the partition
    /// again with no move left to unfreeze it (writes refused for good once the table no
    /// longer wants it moved), and a late chunk would leave data no move will ever serve.
    #[test]
    fn steps_of_a_rolled_back_attempt_arriving_after_its_cleanup_are_refused() {
        let mut source = Shard::new(8);
        source.claim(&[3]);
        assert_eq!(source.freeze(3, 2), Step::Done);
        assert_eq!(source.unfreeze(3, 2), Step::Done);
        assert!(
            matches!(source.freeze(3, 2), Step::Refused(_)),
            "the rolled-back attempt's freeze, late"
        );
        assert_eq!(source.check_write(&key_of(3)), Ok(()));
        // Its unfreeze arrived before its freeze: the freeze is refused all the same, even
        // when the unfreeze came before the group claimed the partition.
        source.claim(&[4]);
        assert_eq!(source.unfreeze(4, 2), Step::AlreadyDone);
        assert!(matches!(source.freeze(4, 2), Step::Refused(_)));
        assert!(
            matches!(source.unfreeze(6, 2), Step::Refused(_)),
            "not held"
        );
        source.claim(&[6]);
        assert!(matches!(source.freeze(6, 2), Step::Refused(_)));
        assert_eq!(source.check_write(&key_of(6)), Ok(()));
        assert_eq!(source.freeze(3, 3), Step::Done, "the next attempt");

        let mut destination = Shard::new(8);
        assert_eq!(
            destination.ingest(5, 2, 0, false),
            Ingest::Store { restart: false }
        );
        assert_eq!(destination.discard(5, 2), Step::Done);
        assert!(matches!(
            destination.ingest(5, 2, 0, false),
            Ingest::Step(Step::Refused(_))
        ));
        assert_eq!(destination.discard(6, 2), Step::AlreadyDone);
        assert!(matches!(
            destination.ingest(6, 2, 0, true),
            Ingest::Step(Step::Refused(_))
        ));
        assert_eq!(
            destination.ingest(5, 3, 0, true),
            Ingest::Store { restart: false },
            "the next attempt"
        );
    }
}
