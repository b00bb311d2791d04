//! Crashes armed at a move's steps, as the core simulator arms them at Raft's promises: in some
//! seeds, the party that has just taken a given step of a move — the source group's leader
//! right after freezing, dropping or unfreezing the partition, the destination's right after
//! ingesting a chunk, activating or discarding, the admin's right after committing or aborting
//! the move — crashes the moment its answer is out, losing what it had not synced. Each time
//! one fires, another moment may be armed, so a seed can crash several parties of one move.

use rand::seq::IndexedRandom;

use ravel::directory::{Ask, DirectoryCommand};
use ravel::kv::MoveStep;

use super::*;

/// A moment of a move, right after a step taken by one of its parties.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum MoveMoment {
    Frozen,
    Ingested,
    Committed,
    Dropped,
    Activated,
    Aborted,
    Unfrozen,
    Discarded,
}

const MOMENTS: [MoveMoment; 8] = [
    MoveMoment::Frozen,
    MoveMoment::Ingested,
    MoveMoment::Committed,
    MoveMoment::Dropped,
    MoveMoment::Activated,
    MoveMoment::Aborted,
    MoveMoment::Unfrozen,
    MoveMoment::Discarded,
];

/// Who took the step: whose leader crashes.
enum Party {
    Source,
    Destination,
    Admin,
}

impl MoveMoment {
    /// The moment an answer to `ask` marks, if it is one a crash may be armed at.
    pub(super) fn of(ask: &Ask) -> Option<MoveMoment> {
        Some(match ask {
            Ask::Source(Command::Move { step, .. }) => match step {
                MoveStep::Freeze => MoveMoment::Frozen,
                MoveStep::Drop { .. } => MoveMoment::Dropped,
                MoveStep::Unfreeze => MoveMoment::Unfrozen,
                _ => return None,
            },
            Ask::Destination(Command::Move { step, .. }) => match step {
                MoveStep::Ingest { .. } => MoveMoment::Ingested,
                MoveStep::Activate => MoveMoment::Activated,
                MoveStep::Discard => MoveMoment::Discarded,
                _ => return None,
            },
            Ask::Admin(DirectoryCommand::CommitMove { .. }) => MoveMoment::Committed,
            Ask::Admin(DirectoryCommand::AbortMove { .. }) => MoveMoment::Aborted,
            _ => return None,
        })
    }

    fn party(self) -> Party {
        match self {
            MoveMoment::Frozen | MoveMoment::Dropped | MoveMoment::Unfrozen => Party::Source,
            MoveMoment::Ingested | MoveMoment::Activated | MoveMoment::Discarded => {
                Party::Destination
            }
            MoveMoment::Committed | MoveMoment::Aborted => Party::Admin,
        }
    }

    /// A moment drawn at random.
    pub(super) fn draw(rng: &mut ChaCha8Rng) -> MoveMoment {
        *MOMENTS.choose(rng).expect("non-empty")
    }
}

impl ShardedWorld {
    /// The step that `ask` asked of the move `from` → `to` was just taken: if a crash is armed
    /// at that moment, the party that took it crashes now (its leader: the node that applied
    /// the step and answered).
    pub(super) fn step_taken(&mut self, ask: &Ask, from: GroupId, to: GroupId) {
        let Some(moment) = MoveMoment::of(ask) else {
            return;
        };
        if self.faults_over || self.armed_move_crash != Some(moment) {
            return;
        }
        let leader = match moment.party() {
            Party::Source => self.leader_of_group(from),
            Party::Destination => self.leader_of_group(to),
            Party::Admin => self
                .admins
                .iter()
                .find(|host| host.is_leader())
                .map(|host| host.id),
        };
        let Some(leader) = leader else {
            return;
        };
        self.trace.line(self.now_us, || {
            format!("armed crash: n{leader} crashes right after the move's {moment:?} step")
        });
        // As the next event, not in the middle of the step that is handing out this answer.
        self.schedule(0, Event::Crash(leader));
        self.armed_move_crash = self
            .armed_moves
            .random_bool(0.5)
            .then(|| MoveMoment::draw(&mut self.armed_moves));
    }

    fn leader_of_group(&self, group: GroupId) -> Option<NodeId> {
        self.data
            .iter()
            .find(|(id, host)| self.group_of.get(id) == Some(&group) && host.is_leader())
            .map(|(&id, _)| id)
    }
}
