//! The directory of the sharded store: the second state machine on Ravel's replica (the first is
//! the key-value store). Replicated by its own Raft group, it knows every server (its id,
//! address, labels and group), every group (its members and the latest leader it heard of, with
//! that leader's term), and the partition table. Node ids and group ids are allocated here,
//! unique in the whole system and never reused.
//!
//! Every change is a command in the directory group's log, so two servers asking at once
//! through different directory replicas are ordered by that log, and every replica reaches the
//! same answer for each.

mod command;
mod mover;
mod moves;
mod state;

pub use command::{DirectoryAnswer, DirectoryCommand, DirectoryOutcome, DirectoryQuery};
pub use mover::{Answer, Ask, MoveRun, CHUNK_BYTES, CHUNK_BYTES_MAX};
pub use moves::{
    Move, MoveOutcome, MovePhase, MoveTotals, Moves, MOVES_IN_FLIGHT_CEILING,
    MOVES_IN_FLIGHT_DEFAULT, MOVES_REMEMBERED, MOVE_RATE_DEFAULT, MOVE_RATE_FLOOR,
};
#[cfg(feature = "planted-bugs")]
pub use state::DirectoryBugs;
pub use state::{Directory, DirectorySettings, GroupInfo, ServerInfo};
