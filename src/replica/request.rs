//! What a client (or an operator) asks of a replica, and what it gets back. The runtime keeps
//! the reply handle under a [`Ticket`] of its choosing; the replica answers by ticket.

use bytes::Bytes;

use super::error::ApiError;
use super::state_machine::StateMachine;
use crate::core::{LogIndex, MembershipChange, NodeId};

/// The runtime's name for one waiting request (the key of its reply handle).
pub type Ticket = u64;

#[derive(Clone, Debug)]
pub enum Request<Query> {
    /// A command for the state machine, encoded.
    Write {
        command: Bytes,
        /// A follower may pass it on to the leader; if not, it answers "not leader".
        may_forward: bool,
    },
    Read {
        query: Query,
        /// Served from this replica's state as it is, with no check that it is current.
        stale: bool,
        /// A follower may serve it with a read index from the leader; if not, it answers
        /// "not leader" (a stale read is served anywhere).
        may_forward: bool,
    },
    /// The leader's side of the join workflow (after the admission hook accepted it).
    Join {
        node: NodeId,
        address: String,
        last_index: LogIndex,
        /// Add as a learner only, never promoted to voter.
        follower_only: bool,
        /// The joiner's nonce for this start (0: none; see `core::Admission`).
        nonce: u64,
    },
    /// A configuration change (leaving is `Remove`).
    ChangeMembership(MembershipChange),
}

/// A request done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer<Outcome, ReadAnswer> {
    /// The write was applied at `index` with this outcome.
    Written { index: LogIndex, outcome: Outcome },
    /// The read's answer, from a state that had applied `index`.
    Read { answer: ReadAnswer, index: LogIndex },
    /// A join or configuration change took effect.
    Done,
}

/// The answer to a request of a replica running `S`.
pub type Reply<S> =
    Result<Answer<<S as StateMachine>::Outcome, <S as StateMachine>::ReadAnswer>, ApiError>;
