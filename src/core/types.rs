//! The vocabulary of the log: ids, terms, indexes, entries and the state that must be durable.

use bytes::Bytes;

use super::membership::{Membership, MembershipError};

/// A node's identity within one Raft group. `0` is never a valid id.
pub type NodeId = u64;
/// A Raft term: a logical clock that only moves forward.
pub type Term = u64;
/// A position in the replicated log. The first entry has index 1; index 0 means "nothing".
pub type LogIndex = u64;

/// One record of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    pub term: Term,
    pub index: LogIndex,
    pub payload: EntryPayload,
}

/// What an entry carries. The core never looks inside a command.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EntryPayload {
    /// Appended by every new leader so that it can commit an entry of its own term (Raft §5.4.2)
    /// and so that reads can be served (Raft thesis §6.4).
    Noop,
    /// An opaque command for the state machine.
    Command(Bytes),
    /// A new configuration; it takes effect on every node as soon as it is in its log. With an
    /// [`Admission`], it was made for a joiner's request (adding it as a learner, or promoting
    /// it), which tells the joiner from its own log that a leader admitted it.
    Membership(Membership, Option<Admission>),
}

/// The join a configuration entry was made for: the joiner, and the nonce it asked with.
///
/// Why in the log: a joiner votes only once admitted, and a leader's answer to its request is
/// one message that a leader lost at the wrong moment never sends. Promoted to voter but never
/// told, the joiner stayed silent while the configuration counted it, and a group whose other
/// voter needed its vote could never elect again (the sharded madsim harness found it: a group's
/// founder cut off right after promoting its first joiner). A nonce the joiner drew when it
/// started, in an entry only a leader that took this very request appends, is the same promise,
/// and the joiner holds it as soon as it holds the entry. An entry from before (the node lost its
/// data and asked again) carries another nonce and admits nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Admission {
    pub node: NodeId,
    pub nonce: u64,
}

impl Entry {
    /// Bytes this entry counts for in flow control: the payload plus a fixed header.
    pub fn size_bytes(&self) -> usize {
        const HEADER_BYTES: usize = 24;
        HEADER_BYTES
            + match &self.payload {
                EntryPayload::Noop => 0,
                EntryPayload::Command(command) => command.len(),
                EntryPayload::Membership(membership, admission) => {
                    8 * membership.replicas().len() + 16 * usize::from(admission.is_some())
                }
            }
    }
}

/// The state that must survive a crash before the node may act on it: the current term, the vote
/// cast in it, and (as an optimisation for restart) the commit index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HardState {
    pub term: Term,
    pub vote: Option<NodeId>,
    pub commit: LogIndex,
}

/// What a snapshot of the state machine covers: every entry up to `index`, the last of term
/// `term`, the configuration in effect there, and the members' admissions (the entries that set
/// both are compacted away).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SnapshotMeta {
    pub index: LogIndex,
    pub term: Term,
    pub membership: Membership,
    /// For each member the join workflow admitted, the latest request it was admitted for
    /// (sorted by node, one per node). A leader answers a member's repeated join request at
    /// once only with this evidence that the very request was admitted, and it must outlive
    /// compaction: without it, a retry whose answer was lost looks like a member that lost its
    /// data, and is removed for nothing.
    pub admissions: Vec<Admission>,
}

/// The role a node plays in its current term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Follower,
    /// Asking whether it could win an election, without disturbing anyone's term (Raft thesis §9.6).
    PreCandidate,
    Candidate,
    Leader,
}

/// Which way the leader confirms that it is still the leader before serving a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReadMode {
    /// One heartbeat round acknowledged by a quorum per batch of reads (Raft thesis §6.4).
    ReadIndex,
    /// No round trip while the leader holds a lease earned by a quorum's acknowledgements
    /// (Raft thesis §6.4.1); falls back to ReadIndex when the lease has run out. Requires
    /// check-quorum and assumes clock drift within `Config::clock_drift_max_ppm`.
    Lease,
}

/// Why a proposal or read was refused. Refused means it did not and will not take effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// This node is not the leader; `leader_hint` names the leader it knows of, if any.
    NotLeader { leader_hint: Option<NodeId> },
    /// Leadership is being handed over; retry at the new leader shortly.
    TransferInProgress,
    /// Too many proposals are waiting to commit; retry after a short back-off.
    Overloaded,
    /// A membership change that cannot be made (now, or at all).
    InvalidMembership(MembershipError),
    /// A read passed on to the leader got no read index back in time; retry it.
    LeaderUnresponsive,
}
