//! The replicated key-value store: commands as the log carries them, and the state machine that
//! applies them.

mod command;
pub mod node_addresses;
#[cfg(feature = "planted-bugs")]
pub mod planted;
pub mod shard;
mod state_machine;
mod store;

pub use command::{Command, DecodeError, MoveStep, CHUNK_PAIRS_MAX};
pub use node_addresses::RESERVED_KEY_PREFIX;
pub use shard::{NotOwned, Shard};
pub use state_machine::{export_chunk, KvStateMachine, Outcome, SnapshotState};
