//! The leader's join pool (the leader's side of the join workflow). A node asks to join, the
//! shell runs the admission hook, and the leader queues it here; the pool is drained one change at
//! a time: add as learner, wait until caught up, promote to voter, answer once the promotion
//! commits. A member that asks is answered at once only when the leader's committed log shows
//! that this very request (its nonce) was admitted: a retry whose answer was lost. Any other
//! member that asks is one that forgot it is a member, because it lost its data, and with it what
//! it acknowledged and whom it voted for. It is removed and added again, so the leader stops
//! trusting what it had acknowledged before, however much of the log it holds by now (a leader
//! deposed without knowing it may have refilled it).

use std::collections::BTreeMap;

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
    /// The nonce of the joiner's latest request (0: none).
    pub nonce: u64,
    pub requests: Vec<RequestId>,
    /// The pool removed it (it had lost its data) or added it as a learner: what it holds from
    /// then on came from this leader's replication, so it is not replaced again.
    pub admitted_here: bool,
}

impl RawNode {
    pub(super) fn join(&mut self, id: RequestId, node: NodeId, nonce: u64) {
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
            if pending.nonce != nonce {
                // Another start of the node: it may have lost its data since this leader
                // admitted it, so what it holds no longer came from this leader's replication.
                pending.admitted_here = false;
            }
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
            // is either retrying a request that was admitted (its nonce is in a committed entry
            // that added or promoted it) or lost its data, and its memory of past votes: replace
            // it rather than trust its old place. How much of the log it reports holding proves
            // nothing: a leader deposed without knowing it may have refilled the log since.
            let retried = admission.is_some_and(|admission| {
                self.admissions_through(commit).get(&node) == Some(&admission.nonce)
            });
            #[cfg(feature = "planted-bugs")]
            let retried = retried || self.config.planted_bugs.rejoin_answered_as_retry;
            let lost_data = self.membership.is_member(node) && !pending.admitted_here && !retried;
            let caught_up =
                matched + self.config.promotion_lag_max_entries >= last && matched >= commit;
            let voter = self.membership_at(commit).is_voter(node) && self.membership.is_voter(node);
            if node == self.config.id || (voter && (pending.admitted_here || retried)) {
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

    /// The nonce of the latest request this node was admitted for, as its own log and snapshot
    /// hold it. A node that resumes from its disk (not joining) uses it to ask again to finish
    /// a join: only a node that kept its disk holds it.
    pub fn own_admission_nonce(&self) -> Option<u64> {
        (self.admissions_through(self.log.last_index())).remove(&self.config.id)
    }

    /// Each member's latest admission through `index` (node to nonce): the snapshot's, then
    /// those of the configuration entries after it. A joiner draws a new nonce at every start,
    /// and only a node resuming from the disk that holds its admission asks with an old one; so
    /// an admission of the nonce a node asks with means that the disk it runs on was held out
    /// of the voters and let in again: everything it acknowledged since is on that disk.
    pub(super) fn admissions_through(&self, index: LogIndex) -> BTreeMap<NodeId, u64> {
        let mut admitted: BTreeMap<NodeId, u64> = (self.snapshot.admissions.iter())
            .map(|admission| (admission.node, admission.nonce))
            .collect();
        let after_snapshot = (self.membership_log.iter())
            .filter(|(at, _)| *at > self.snapshot.index && *at <= index);
        for (at, membership) in after_snapshot {
            admitted.retain(|node, _| membership.is_member(*node));
            if let Some((_, made_for)) =
                self.admission_log.iter().find(|(made_at, _)| made_at == at)
            {
                admitted.insert(made_for.node, made_for.nonce);
            }
        }
        admitted
    }
}
