//! The sans-IO Raft core: a deterministic state machine that consumes [`Input`]s and emits
//! [`Action`]s. It owns no sockets, files, clocks or threads; time arrives in `Input::Tick` and
//! randomness comes from a generator seeded by `Config::seed`.
//!
//! Use: feed any number of inputs with [`RawNode::step`], then execute
//! [`RawNode::take_actions`] in order. Batching inputs between two `take_actions` calls batches
//! the output: one persist and one append per peer for many proposals.

mod config;
mod election;
mod forwarding;
mod io;
mod join;
mod log;
mod membership;
mod message;
mod message_check;
mod node;
mod progress;
mod quorum;
mod read_forwarding;
mod reads;
mod reconfiguration;
mod replication;
mod snapshot;
mod types;

#[cfg(feature = "planted-bugs")]
mod bugs;

#[cfg(feature = "planted-bugs")]
pub use bugs::PlantedBugs;
pub use config::{Config, ConfigError};
pub use io::{
    bounded_entries, read_entries_through, Action, Input, PersistId, Proposal, RequestId,
};
pub use log::RaftLog;
pub use membership::{Membership, MembershipChange, MembershipError};
pub use message::{AppendResponse, ForwardRefusal, Message, MessageBody, RejectHint};
pub use message_check::{check_message, Malformed};
pub use node::{MemberState, RawNode, Recovered, Status};
pub use progress::{Progress, ProgressState, SnapshotTransfer};
pub use types::{
    Admission, Entry, EntryPayload, HardState, LogIndex, NodeId, ReadMode, Refusal, Role,
    SnapshotMeta, Term,
};
