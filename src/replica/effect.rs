//! What a replica asks its runtime to do, in order. The runtime carries each out with its own
//! means (a storage worker and gRPC for a node, a simulated disk and network for the simulator)
//! and reports completions back ([`Replica::completed`](super::Replica::completed)).

use bytes::Bytes;

use super::request::{Reply, Ticket};
use super::state_machine::StateMachine;
use crate::core::{
    Entry, HardState, LogIndex, MemberState, Message, NodeId, PersistId, Role, SnapshotMeta, Term,
};
use crate::storage::Standing;

#[must_use]
pub enum Effect<S: StateMachine> {
    /// Write to stable storage, in order with the other writes; report `Persisted { id }`.
    Persist {
        id: PersistId,
        hard_state: Option<HardState>,
        entries: Vec<Entry>,
        /// `false` only when the change is not needed for safety (a commit index alone).
        sync: bool,
    },
    /// Deliver now: a message that promises a write was held back until that write is durable.
    Send(Message),
    /// Save this snapshot (encode it off the replica's thread), compact the log it covers,
    /// then report `SnapshotSaved` and hand the bytes back ([`Replica::snapshot_saved`]).
    ///
    /// [`Replica::snapshot_saved`]: super::Replica::snapshot_saved
    SaveSnapshot { meta: SnapshotMeta, image: S::Image },
    /// Read a chunk of the saved snapshot `meta` for follower `to` (it is not in memory);
    /// report `SnapshotChunkRead`.
    ReadSnapshotChunk {
        to: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        bytes_max: usize,
    },
    /// Read stored entries for follower `peer` (see `Action::ReadEntries`); report
    /// `EntriesRead`.
    ReadEntries {
        peer: NodeId,
        from: LogIndex,
        through: LogIndex,
        entries_max: usize,
        bytes_max: usize,
    },
    /// A snapshot received from the leader, now the state: a write in order with the others,
    /// reported by `Persisted { id }`.
    InstallSnapshot {
        id: PersistId,
        meta: SnapshotMeta,
        data: Bytes,
    },
    /// Where this node stands in its cluster, to record durably (a restart reads it).
    RecordStanding(Standing),
    /// The request under `ticket` is done.
    Reply { ticket: Ticket, reply: Reply<S> },
    /// `node` is reached at `address` (the replicated address book says so).
    AddressLearned { node: NodeId, address: String },
    /// The known leader changed.
    LeaderChanged {
        role: Role,
        term: Term,
        leader: Option<NodeId>,
    },
    /// This node's place in the cluster changed (joining, learner, voter, removed).
    MemberStateChanged { from: MemberState, to: MemberState },
    /// Carrying on would break an invariant: the node must stop acknowledging anything.
    Fatal(String),
}

impl<S: StateMachine> std::fmt::Debug for Effect<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Effect::Persist { id, entries, .. } => {
                write!(f, "Persist #{id} +{} entries", entries.len())
            }
            Effect::Send(message) => write!(f, "Send {message:?}"),
            Effect::SaveSnapshot { meta, .. } => write!(f, "SaveSnapshot {meta:?}"),
            Effect::ReadSnapshotChunk { to, offset, .. } => {
                write!(f, "ReadSnapshotChunk for {to} at {offset}")
            }
            Effect::ReadEntries {
                peer,
                from,
                through,
                ..
            } => write!(f, "ReadEntries for {peer}: {from}..={through}"),
            Effect::InstallSnapshot { id, meta, .. } => write!(f, "InstallSnapshot #{id} {meta:?}"),
            Effect::RecordStanding(standing) => write!(f, "RecordStanding {standing:?}"),
            Effect::Reply { ticket, reply } => write!(f, "Reply {ticket} {:?}", reply.is_ok()),
            Effect::AddressLearned { node, address } => {
                write!(f, "AddressLearned {node} {address}")
            }
            Effect::LeaderChanged { term, leader, .. } => {
                write!(f, "LeaderChanged {leader:?} in {term}")
            }
            Effect::MemberStateChanged { from, to } => write!(f, "MemberState {from:?} -> {to:?}"),
            Effect::Fatal(reason) => write!(f, "Fatal {reason}"),
        }
    }
}
