//! The leader's join pool (the leader's side of the join workflow). A node asks to join, the
//! shell runs the admission hook, and the leader queues it here; the pool is drained one change at
//! a time: add as learner, wait until caught up, promote to voter, answer once the promotion
//! commits. A node that asks again while already a caught-up voter is answered at once; a member
//! that lost its data (it reports a log shorter than what the leader committed or knows it held)
//! is removed and added again, so the leader stops trusting what it had acknowledged before.

use super::io::{Action, RequestId};
use super::membership::MembershipChange;
use super::node::RawNode;
use super::types::{Admission, LogIndex, NodeId, Refusal};

/// Joins queued at the leader, at most.
pub(super) const JOIN_POOL_MAX: usize = 64;

/// A node waiting in the pool, with every request that asked for it.
#[derive(Debug)]
pub(super) struct PendingJoin {
    pub node: NodeId,
    /// The last index the joiner reported holding.
    pub joiner_last_index: LogIndex,
    /// The nonce of the joiner's latest request (0: none).
    pub nonce: u64,
    pub requests: Vec<RequestId>,
    /// The pool removed it (it had lost its data) or added it as a learner: what it holds from
    /// then on came from this leader's replication, so it is not replaced again.
    pub admitted_here: bool,
}

impl RawNode {
    pub(super) fn join(
        &mut self,
        id: RequestId,
        node: NodeId,
        joiner_last_index: LogIndex,
        nonce: u64,
    ) {
        let refusal = if self.leader_state.is_none() {
            Some(Refusal::NotLeader {
                leader_hint: self.leader,
            })
        } else if node == 0 {
            Some(Refusal::InvalidMembership(
                super::membership::MembershipError::ZeroNodeId,
            ))
        } else {
            None
        };
        if let Some(reason) = refusal {
            return self.events.push(Action::ProposalRefused { id, reason });
        }
        let leader = self.leader_state.as_mut().expect("checked leader");
        if let Some(pending) = leader
            .join_pool
            .iter_mut()
            .find(|pending| pending.node == node)
        {
            pending.requests.push(id);
            pending.joiner_last_index = joiner_last_index;
            pending.nonce = nonce;
            return;
        }
        if leader.join_pool.len() >= JOIN_POOL_MAX {
            return self.events.push(Action::ProposalRefused {
                id,
                reason: Refusal::Overloaded,
            });
        }
        leader.join_pool.push_back(PendingJoin {
            node,
            joiner_last_index,
            nonce,
            requests: vec![id],
            admitted_here: false,
        });
    }

    /// Moves the first join in the pool one step further, if it can move now.
    pub(super) fn drive_join_pool(&mut self) {
        loop {
            let Some(leader) = self.leader_state.as_ref() else {
                return;
            };
            let Some(pending) = leader.join_pool.front() else {
                return;
            };
            let node = pending.node;
            let admission = (pending.nonce != 0).then_some(Admission {
                node,
                nonce: pending.nonce,
            });
            let commit = self.log.commit();
            let last = self.log.last_index();
            let matched = leader
                .progress
                .get(&node)
                .map_or(0, |progress| progress.match_index);
            let change_pending = self.membership.is_joint()
                || self
                    .membership_log
                    .last()
                    .is_some_and(|(at, _)| *at > commit);
            // Only a node that does not know itself a member asks to join. A member that asks
            // and lacks committed entries lost its data (and its memory of past votes; the
            // leader's progress, fresh after an election, may not show it): replace it rather
            // than trust its old place. One that holds them is a retry: answer it.
            let holds_log = pending.joiner_last_index >= commit;
            let lost_data = self.membership.is_member(node) && !pending.admitted_here && !holds_log;
            let caught_up =
                matched + self.config.promotion_lag_max_entries >= last && matched >= commit;
            let voter = self.membership_at(commit).is_voter(node) && self.membership.is_voter(node);
            if node == self.config.id || (voter && (pending.admitted_here || holds_log)) {
                let done = self
                    .leader_state
                    .as_mut()
                    .expect("leader")
                    .join_pool
                    .pop_front()
                    .expect("front");
                for id in done.requests {
                    self.events.push(Action::JoinCompleted { id, node });
                }
                continue;
            }
            if change_pending {
                return;
            }
            let change = if lost_data {
                MembershipChange::Remove(node)
            } else if !self.membership.is_member(node) {
                MembershipChange::AddLearner(node)
            } else if self.membership.learners.contains(&node) && caught_up {
                MembershipChange::Promote(node)
            } else {
                return;
            };
            // Refusals here are transient (the leader's term not committed yet): retry later.
            // Only a change that was made counts.
            let admits = matches!(
                change,
                MembershipChange::Remove(_) | MembershipChange::AddLearner(_)
            );
            // The entries that add or promote the joiner carry its request's nonce: holding one,
            // the joiner knows it was admitted even if this leader's answer never comes. Both:
            // a leader that appended the promotion may be lost before the joiner receives it,
            // and a learner votes when a candidate whose configuration counts it asks.
            let admission = match change {
                MembershipChange::AddLearner(_) | MembershipChange::Promote(_) => admission,
                _ => None,
            };
            if self.make_change_admitting(change, admission).is_ok() && admits {
                if let Some(front) = self
                    .leader_state
                    .as_mut()
                    .and_then(|leader| leader.join_pool.front_mut())
                {
                    front.admitted_here = true;
                }
            }
            return;
        }
    }
}
