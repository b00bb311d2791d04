//! The core's whole surface: what goes in ([`Input`]) and what comes out ([`Action`]).

use bytes::Bytes;

use super::membership::MembershipChange;
use super::message::Message;
use super::types::{Entry, HardState, LogIndex, NodeId, Refusal, Role, SnapshotMeta, Term};

/// A caller-chosen id that comes back with the outcome of a proposal or read.
pub type RequestId = u64;

/// Identifies one `Persist` action; completions are reported in order.
pub type PersistId = u64;

/// A command to replicate, with the id its outcome will carry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Proposal {
    pub id: RequestId,
    pub command: Bytes,
}

/// Everything that can happen to a node.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Input {
    /// Time has passed; `now_ms` is the caller's monotonic clock. Earlier values are ignored.
    Tick { now_ms: u64 },
    /// A message from a peer.
    Message(Message),
    /// Client commands to replicate. Many in one input become one append per peer.
    Propose(Vec<Proposal>),
    /// A linearizable read: answered by `ReadReady` once it is safe to read the state machine.
    Read { id: RequestId },
    /// Every `Persist` up to and including this one is durable.
    Persisted { id: PersistId },
    /// The state machine has applied every entry up to and including `index`.
    Applied { index: LogIndex },
    /// Hand leadership to another voter (Raft thesis §3.10).
    TransferLeadership { to: NodeId },
    /// Start an election now, skipping the pre-vote.
    Campaign,
    /// Change the configuration (leader only); answered like a proposal.
    ChangeMembership {
        id: RequestId,
        change: MembershipChange,
    },
    /// `node` asks to join (after the shell's admission hook accepted it), reporting the last
    /// index it holds (for the record only: a log refilled by a deposed leader looks the same
    /// as one never lost, so the leader decides by the nonce). A leader queues it; anyone else
    /// refuses with a leader hint.
    Join {
        id: RequestId,
        node: NodeId,
        last_index: LogIndex,
        /// The joiner's nonce for this start (0: none), carried by the configuration entries
        /// made for it.
        nonce: u64,
    },
    /// This joining node's join completed (the leader said so): from now on it votes and may
    /// campaign. The caller records this durably, or starts as joining again after a crash.
    Admitted,
    /// The state machine's snapshot at `meta` (asked for by `TakeSnapshot`) is durable, and
    /// storage dropped the entries it covers.
    SnapshotSaved { meta: SnapshotMeta },
    /// The entries asked for by `ReadEntries`: contiguous from `from`, as many as storage held
    /// within the limits; none if storage no longer holds `from` (the follower then gets a
    /// snapshot).
    EntriesRead {
        peer: NodeId,
        from: LogIndex,
        entries: Vec<Entry>,
    },
    /// The chunk asked for by `ReadSnapshotChunk`; `done` if it is the last.
    SnapshotChunkRead {
        to: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: Bytes,
        done: bool,
    },
}

impl Input {
    /// The answer to `Action::ReadSnapshotChunk { to, meta, offset, bytes_max }`, cut from the
    /// whole saved snapshot `data`; `None` if `offset` lies beyond it.
    pub fn snapshot_chunk(
        to: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        bytes_max: usize,
        data: &Bytes,
    ) -> Option<Input> {
        let start = usize::try_from(offset)
            .ok()
            .filter(|&start| start <= data.len())?;
        let end = start.saturating_add(bytes_max).min(data.len());
        Some(Input::SnapshotChunkRead {
            to,
            meta,
            offset,
            data: data.slice(start..end),
            done: end == data.len(),
        })
    }
}

/// The last `through` a `ReadEntries` with these limits may cover, starting at `from`.
pub fn read_entries_through(from: LogIndex, through: LogIndex, entries_max: usize) -> LogIndex {
    through.min(from.saturating_add(entries_max.max(1) as LogIndex - 1))
}

/// Cuts `entries` read for a `ReadEntries` to its byte limit: the first entry always, then
/// entries while the total stays within `bytes_max`.
pub fn bounded_entries(mut entries: Vec<Entry>, bytes_max: usize) -> Vec<Entry> {
    let mut bytes = 0;
    let keep = entries
        .iter()
        .position(|entry| {
            bytes += entry.size_bytes();
            bytes > bytes_max
        })
        .unwrap_or(entries.len())
        .max(1);
    entries.truncate(keep);
    entries
}

/// What the caller must do, in order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Write this to stable storage. Entries replace any stored entries at or after the first
    /// one's index. Report completion with `Input::Persisted { id }`, in order.
    Persist {
        id: PersistId,
        hard_state: Option<HardState>,
        entries: Vec<Entry>,
        /// `false` only when the change is not needed for safety (a commit index alone).
        sync: bool,
    },
    /// Deliver a message. With `after_persist`, not before every earlier `Persist` is durable:
    /// the message promises something (a vote, stored entries) that a crash must not take back.
    Send {
        message: Message,
        after_persist: bool,
    },
    /// Apply these committed entries to the state machine, in order, then report `Applied`.
    Apply { entries: Vec<Entry> },
    /// The proposal was appended at `index` in `term`; it takes effect if that entry is applied.
    ProposalAccepted {
        id: RequestId,
        index: LogIndex,
        term: Term,
    },
    /// The proposal did not and will not take effect.
    ProposalRefused { id: RequestId, reason: Refusal },
    /// A proposal passed on to the leader got no answer in time: it may or may not take effect.
    ProposalOutcomeUnknown { id: RequestId },
    /// The read may now be served from the state machine, which has applied at least `index`.
    ReadReady { id: RequestId, index: LogIndex },
    /// The read cannot be served here.
    ReadRefused { id: RequestId, reason: Refusal },
    /// Snapshot the state machine now (it has applied exactly `meta.index`), save it durably,
    /// compact the log it covers, then report `SnapshotSaved`.
    TakeSnapshot { meta: SnapshotMeta },
    /// Read stored entries `from..=through` for follower `peer`, which needs entries the core
    /// no longer holds in memory: at most `entries_max`, and no more than `bytes_max` bytes
    /// unless the first alone is larger (see [`bounded_entries`]). Answer `EntriesRead`.
    ReadEntries {
        peer: NodeId,
        from: LogIndex,
        through: LogIndex,
        entries_max: usize,
        bytes_max: usize,
    },
    /// Read a chunk of the saved snapshot `meta` for follower `to`; answer `SnapshotChunkRead`.
    ReadSnapshotChunk {
        to: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        bytes_max: usize,
    },
    /// Stage a chunk of a snapshot arriving from the leader (volatile until installed).
    WriteSnapshotChunk {
        meta: SnapshotMeta,
        offset: u64,
        data: Bytes,
        done: bool,
    },
    /// Make the staged snapshot durable and current, replacing the state machine with it and
    /// the log before it; a `Persist` in order with the others, reported by `Persisted { id }`.
    InstallSnapshot { id: PersistId, meta: SnapshotMeta },
    /// The node that asked to join is a voter now (its promotion committed).
    JoinCompleted { id: RequestId, node: NodeId },
    /// This joining node found in its log a configuration entry made for its own request: a
    /// leader admitted it, and it votes from now on. The caller records that durably (or the
    /// node starts as joining again after a crash, which is safe: it only asks again).
    Admitted,
    /// The node's role, term or known leader changed.
    RoleChanged {
        role: Role,
        term: Term,
        leader: Option<NodeId>,
    },
}
