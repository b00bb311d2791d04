//! Who votes and who only listens. A configuration is a log entry and takes effect as soon as it
//! is appended (Raft thesis §4.1); during a joint change (thesis §4.3) every decision — commit,
//! election, leadership confirmation — needs a majority of the incoming voters and a majority of
//! the outgoing voters.

use std::collections::BTreeSet;

use thiserror::Error;

use super::quorum::{majority_value, vote_result, VoteResult};
use super::types::{LogIndex, NodeId};

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Membership {
    pub voters: BTreeSet<NodeId>,
    /// The previous voters while a joint change is in progress; empty otherwise.
    pub outgoing_voters: BTreeSet<NodeId>,
    /// Receive the log, never vote, never count toward a quorum.
    pub learners: BTreeSet<NodeId>,
}

/// A change a leader is asked to make.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MembershipChange {
    /// Start replicating to a new node without giving it a vote.
    AddLearner(NodeId),
    /// Give a learner a vote (a single-server change).
    Promote(NodeId),
    /// Remove a voter or learner (a single-server change).
    Remove(NodeId),
    /// Any new voter set, through joint consensus.
    ReplaceVoters(BTreeSet<NodeId>),
}

/// Why a change was refused; nothing changed.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq, Hash)]
pub enum MembershipError {
    #[error("node {0} is already a member")]
    AlreadyMember(NodeId),
    #[error("node {0} is not a learner; add it as a learner first and let it catch up")]
    NotALearner(NodeId),
    #[error("node {0} is not a member")]
    NotAMember(NodeId),
    #[error("the change would leave no voters")]
    NoVotersLeft,
    #[error("node id 0 is reserved")]
    ZeroNodeId,
    #[error("a membership change is already in progress; retry once it commits")]
    ChangeInProgress,
    #[error("the leader has not committed an entry of its term yet; retry shortly")]
    LeaderNotReady,
    #[error(
        "node {0} is too far behind the leader to vote; wait until it has caught up as a learner"
    )]
    TooFarBehind(NodeId),
}

impl Membership {
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> Self {
        Membership {
            voters: voters.into_iter().collect(),
            ..Membership::default()
        }
    }

    pub fn is_joint(&self) -> bool {
        !self.outgoing_voters.is_empty()
    }

    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.outgoing_voters.contains(&id)
    }

    pub fn is_member(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.learners.contains(&id)
    }

    /// Everyone the leader replicates to (including itself, if a member).
    pub fn replicas(&self) -> BTreeSet<NodeId> {
        let mut all: BTreeSet<NodeId> = self.voters.union(&self.outgoing_voters).copied().collect();
        all.extend(&self.learners);
        all
    }

    /// The highest index stored by a majority of each voter set, given each voter's index.
    pub fn committed_index(&self, index_of: impl Fn(NodeId) -> LogIndex) -> LogIndex {
        // Called on every acknowledgement: no allocation for groups of up to 16 voters.
        let majority = |voters: &BTreeSet<NodeId>| {
            const INLINE_MAX: usize = 16;
            if voters.len() <= INLINE_MAX {
                let mut indexes = [0 as LogIndex; INLINE_MAX];
                for (slot, &id) in indexes.iter_mut().zip(voters) {
                    *slot = index_of(id);
                }
                majority_value(&mut indexes[..voters.len()])
            } else {
                let mut indexes: Vec<LogIndex> = voters.iter().map(|&id| index_of(id)).collect();
                majority_value(&mut indexes)
            }
        };
        let incoming = majority(&self.voters);
        if self.is_joint() {
            incoming.min(majority(&self.outgoing_voters))
        } else {
            incoming
        }
    }

    /// The outcome of an election, given who granted (`Some(true)`) or refused.
    pub fn vote_result(&self, vote_of: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
        let count = |voters: &BTreeSet<NodeId>| {
            let granted = voters
                .iter()
                .filter(|&&id| vote_of(id) == Some(true))
                .count();
            let refused = voters
                .iter()
                .filter(|&&id| vote_of(id) == Some(false))
                .count();
            vote_result(voters.len(), granted, refused)
        };
        let incoming = count(&self.voters);
        if !self.is_joint() {
            return incoming;
        }
        match (incoming, count(&self.outgoing_voters)) {
            (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
            (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
            _ => VoteResult::Pending,
        }
    }

    /// The configuration after `change`, or why it cannot be made. A change of more than one
    /// voter becomes a joint configuration; the leader leaves it once it commits.
    pub fn apply(&self, change: &MembershipChange) -> Result<Membership, MembershipError> {
        let mut next = Membership {
            outgoing_voters: BTreeSet::new(),
            ..self.clone()
        };
        match change {
            MembershipChange::AddLearner(id) => {
                if *id == 0 {
                    return Err(MembershipError::ZeroNodeId);
                }
                if self.is_member(*id) {
                    return Err(MembershipError::AlreadyMember(*id));
                }
                next.learners.insert(*id);
            }
            MembershipChange::Promote(id) => {
                if !next.learners.remove(id) {
                    return Err(MembershipError::NotALearner(*id));
                }
                next.voters.insert(*id);
            }
            MembershipChange::Remove(id) => {
                if !next.voters.remove(id) && !next.learners.remove(id) {
                    return Err(MembershipError::NotAMember(*id));
                }
            }
            MembershipChange::ReplaceVoters(voters) => {
                if voters.contains(&0) {
                    return Err(MembershipError::ZeroNodeId);
                }
                next.learners.retain(|id| !voters.contains(id));
                next.voters = voters.clone();
                if self.voters.symmetric_difference(voters).count() > 1 {
                    next.outgoing_voters = self.voters.clone();
                }
            }
        }
        if next.voters.is_empty() {
            return Err(MembershipError::NoVotersLeft);
        }
        Ok(next)
    }

    /// The configuration that ends a joint change: the incoming voters alone.
    pub fn leave_joint(&self) -> Membership {
        Membership {
            outgoing_voters: BTreeSet::new(),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn a_joint_configuration_needs_both_majorities() {
        let joint = Membership {
            voters: set(&[4, 5, 6]),
            outgoing_voters: set(&[1, 2, 3]),
            learners: BTreeSet::new(),
        };
        // Old majority at 10, new majority at 7: only 7 is committed.
        let index_of = |id: NodeId| match id {
            1 | 2 => 10,
            4 | 5 => 7,
            _ => 0,
        };
        assert_eq!(joint.committed_index(index_of), 7);
        let votes = |id: NodeId| match id {
            1 | 2 => Some(true),
            _ => None,
        };
        assert_eq!(
            joint.vote_result(votes),
            VoteResult::Pending,
            "the new voters have not agreed"
        );
        let refused = |id: NodeId| match id {
            1 | 2 | 4 => Some(true),
            5 | 6 => Some(false),
            _ => None,
        };
        assert_eq!(joint.vote_result(refused), VoteResult::Lost);
    }

    #[test]
    fn single_server_changes_stay_simple_and_larger_ones_go_joint() {
        let three = Membership::with_voters([1, 2, 3]);
        let with_learner = three.apply(&MembershipChange::AddLearner(4)).expect("adds");
        assert!(!with_learner.is_voter(4) && with_learner.is_member(4));
        let four = with_learner
            .apply(&MembershipChange::Promote(4))
            .expect("promotes");
        assert!(!four.is_joint() && four.is_voter(4));
        let swapped = three
            .apply(&MembershipChange::ReplaceVoters(set(&[1, 5, 6])))
            .expect("joint");
        assert!(swapped.is_joint());
        assert_eq!(swapped.outgoing_voters, set(&[1, 2, 3]));
        assert_eq!(swapped.leave_joint().voters, set(&[1, 5, 6]));
    }

    #[test]
    fn impossible_changes_are_refused_with_reasons() {
        let one = Membership::with_voters([1]);
        assert_eq!(
            one.apply(&MembershipChange::Remove(1)),
            Err(MembershipError::NoVotersLeft)
        );
        assert_eq!(
            one.apply(&MembershipChange::AddLearner(1)),
            Err(MembershipError::AlreadyMember(1))
        );
        assert_eq!(
            one.apply(&MembershipChange::Promote(2)),
            Err(MembershipError::NotALearner(2))
        );
        assert_eq!(
            one.apply(&MembershipChange::Remove(9)),
            Err(MembershipError::NotAMember(9))
        );
        assert_eq!(
            one.apply(&MembershipChange::AddLearner(0)),
            Err(MembershipError::ZeroNodeId)
        );
    }
}
