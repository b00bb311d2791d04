//! Messages between the cores of one group. The shell carries them; the core never sees a socket.

use bytes::Bytes;

use super::io::{Proposal, RequestId};
use super::types::{Entry, LogIndex, NodeId, SnapshotMeta, Term};

/// A message from one node to another, stamped with the sender's term.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    /// The sender's term; for a pre-vote request and a granted pre-vote response, the term the
    /// pre-candidate would campaign in.
    pub term: Term,
    pub body: MessageBody,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MessageBody {
    /// Asks for a vote (or, with `pre_vote`, whether a vote would be granted).
    VoteRequest {
        pre_vote: bool,
        last_log_index: LogIndex,
        last_log_term: Term,
        /// Sent on the leader's request (TimeoutNow): voters ignore their leader lease.
        leadership_transfer: bool,
    },
    VoteResponse {
        pre_vote: bool,
        granted: bool,
    },
    /// Log replication with the consistency check on `(prev_log_index, prev_log_term)`.
    Append {
        prev_log_index: LogIndex,
        prev_log_term: Term,
        entries: Vec<Entry>,
        leader_commit: LogIndex,
        /// Every voter holds the log up to here durably: below it, no one needs entries from
        /// memory any more.
        durable_everywhere: LogIndex,
    },
    AppendResponse(AppendResponse),
    /// Leader liveness, commit propagation and read confirmation; carries no entries.
    Heartbeat {
        /// Capped at the follower's known match index, so a follower never commits an entry it
        /// has not been shown to hold.
        commit: LogIndex,
        /// The leader's heartbeat round, echoed back to confirm leadership for reads and leases.
        round: u64,
    },
    HeartbeatResponse {
        round: u64,
        /// Sent by a joining node: see [`AppendResponse::Accepted`]'s `joining`.
        joining: bool,
    },
    /// Tells the target of a leadership transfer to campaign at once.
    TimeoutNow,
    /// A piece of the leader's snapshot for a follower whose next entries were compacted.
    SnapshotChunk {
        meta: SnapshotMeta,
        offset: u64,
        data: Bytes,
        done: bool,
    },
    /// The follower holds `meta`'s bytes up to `received` and wants the rest from there (also
    /// the answer to a chunk out of order, so a transfer resumes where it stopped).
    SnapshotAck {
        meta: SnapshotMeta,
        received: u64,
    },
    /// A follower's client commands, passed on to the leader of the message's term (as etcd's
    /// followers do), so a client may write through any member. `(nonce, seq)` numbers the
    /// batch: the leader appends each batch at most once, whatever the network duplicates.
    Propose {
        /// Differs between incarnations of the sender (its seed), whose `seq` starts afresh.
        nonce: u64,
        /// Grows with every batch the sender forwards.
        seq: u64,
        proposals: Vec<Proposal>,
    },
    /// The leader appended a forwarded batch: `ids[i]` at `first_index + i`, in the message's
    /// term.
    ProposeAccepted {
        first_index: LogIndex,
        ids: Vec<RequestId>,
    },
    /// The leader will never append this forwarded batch.
    ProposeRefused {
        ids: Vec<RequestId>,
        reason: ForwardRefusal,
    },
    /// A follower asks the leader for a read index for the reads it numbered `(nonce, seq)`
    /// (`read_forwarding.rs`); `nonce` differs between incarnations of the sender, so that an
    /// answer meant for an earlier one is never taken for a new request.
    ReadIndex {
        nonce: u64,
        seq: u64,
    },
    /// The leader confirmed its leadership after request `(nonce, seq)` arrived: the reads it
    /// carried may be served from any state machine that has applied `index`.
    ReadIndexResponse {
        nonce: u64,
        seq: u64,
        index: LogIndex,
    },
    /// The configuration committed at `config_index` no longer has the recipient: it was
    /// removed. Sent to a non-member that still speaks as one (it never received the entry that
    /// removed it, as replication to it stopped there), so it stops campaigning and says so.
    Removed {
        config_index: LogIndex,
    },
}

/// Why a leader refused a forwarded batch; only a leader refuses one (see `forwarding.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ForwardRefusal {
    TransferInProgress,
    Overloaded,
}

/// The answer to an `Append`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AppendResponse {
    /// The follower's log matches the leader's up to and including `match_index`.
    Accepted {
        match_index: LogIndex,
        /// The follower is joining: it started without its data (or was never admitted), so it
        /// may have forgotten what it acknowledged and the terms it saw. Its acknowledgements
        /// count toward no quorum unless the leader admitted it itself (`LeaderState::counted_match`).
        joining: bool,
    },
    /// The consistency check failed at `rejected_index`; the hint lets the leader skip a whole
    /// conflicting term at once (Raft §5.3, "fast backtracking").
    Rejected {
        rejected_index: LogIndex,
        hint: RejectHint,
    },
}

/// Where the follower's log diverges, as far as it can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RejectHint {
    /// The term of the follower's entry at the rejected index, or `None` if its log is shorter.
    pub conflict_term: Option<Term>,
    /// The first index of `conflict_term` in the follower's log, or its last index + 1.
    pub conflict_index: LogIndex,
}

impl MessageBody {
    /// A short name for traces and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            MessageBody::VoteRequest { pre_vote: true, .. } => "PreVote",
            MessageBody::VoteRequest { .. } => "Vote",
            MessageBody::VoteResponse { pre_vote: true, .. } => "PreVoteResp",
            MessageBody::VoteResponse { .. } => "VoteResp",
            MessageBody::Append { .. } => "Append",
            MessageBody::AppendResponse(_) => "AppendResp",
            MessageBody::Heartbeat { .. } => "Heartbeat",
            MessageBody::HeartbeatResponse { .. } => "HeartbeatResp",
            MessageBody::TimeoutNow => "TimeoutNow",
            MessageBody::SnapshotChunk { .. } => "SnapshotChunk",
            MessageBody::SnapshotAck { .. } => "SnapshotAck",
            MessageBody::Removed { .. } => "Removed",
            MessageBody::Propose { .. } => "Propose",
            MessageBody::ProposeAccepted { .. } => "ProposeAccepted",
            MessageBody::ProposeRefused { .. } => "ProposeRefused",
            MessageBody::ReadIndex { .. } => "ReadIndex",
            MessageBody::ReadIndexResponse { .. } => "ReadIndexResp",
        }
    }
}
