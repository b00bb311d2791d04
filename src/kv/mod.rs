//! The replicated key-value store: commands as the log carries them, and the state machine that
//! applies them.

mod command;
mod state_machine;

pub use command::{Command, DecodeError};
pub use state_machine::{KvStateMachine, Outcome, SnapshotState};
