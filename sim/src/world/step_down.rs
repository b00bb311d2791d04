//! Check-quorum (Raft thesis §6.2): a leader that hears from no majority of its voters steps
//! down within two of its check intervals. A leader that never does is safe — its entries
//! cannot commit and, with check-quorum on, a lease it holds still expires — so no log or
//! history check sees the bug; clients just time out against it while a partition lasts. This
//! checks the promise itself.
//!
//! "Heard" is generous: any message a voter sends in the leader's term and the leader
//! receives (the core counts fewer kinds, which only makes it step down sooner). Times are the
//! leader's own clock, as the core judges them; a leader is judged from the latest of when it
//! took office, when it last resumed from a pause (a paused node cannot act), and when its
//! configuration last changed (the new one's majority is counted from then).

use std::collections::{BTreeMap, BTreeSet};

use ravel::core::{Message, NodeId, Role, Term};

use crate::checker::Violation;

use super::*;

/// What a leader heard in its current term, on its own clock (ms).
#[derive(Debug)]
pub(super) struct Hearing {
    term: Term,
    /// When it took office, resumed from a pause, or changed configuration, as far as this
    /// check knows: a majority of a new configuration is judged from when it took effect.
    since_ms: u64,
    /// The configuration it leads with, as last seen.
    voters: (BTreeSet<NodeId>, BTreeSet<NodeId>),
    /// Per voter: when the leader last received a message from it in this term, or when the
    /// voter entered the leader's configuration.
    heard_ms: BTreeMap<NodeId, u64>,
}

impl World {
    /// Before `message` is delivered: its receiver, if it leads in the message's term, heard
    /// from the sender.
    pub(super) fn note_heard(&mut self, message: &Message) {
        // On every delivery: the common case (not to a leader, or of another term) costs one
        // lookup.
        let heard =
            (self.hearings.get(&message.to)).is_some_and(|hearing| hearing.term == message.term);
        if !heard {
            return;
        }
        let local_ms = self.node_ref(message.to).clock.local_ms(self.now_us);
        if let Some(hearing) = self.hearings.get_mut(&message.to) {
            hearing.heard_ms.insert(message.from, local_ms);
        }
    }

    /// Every leader not paused has heard from a majority of its voters (of both
    /// configurations, while joint) within two check-quorum intervals and a tick each. Run
    /// after every tick (a leader steps down only when ticked): a change seen a tick late only
    /// makes the check more lenient, never wrong.
    pub(super) fn check_step_down(&mut self) -> Result<(), Violation> {
        for index in 0..self.nodes.len() {
            let node = &self.nodes[index];
            let id = node.id;
            let leading = node
                .core()
                .filter(|core| core.role() == Role::Leader && core.config().check_quorum)
                .filter(|_| !node.paused);
            let Some(core) = leading else {
                self.hearings.remove(&id);
                continue;
            };
            let term = core.hard_state().term;
            let local_ms = node.clock.local_ms(self.now_us);
            // One tick of this node's clock, rounded up, and a millisecond of rounding.
            let drift = node.clock.drift_ppm.unsigned_abs() * TICK_INTERVAL_US / 1_000_000;
            let tick_ms = (TICK_INTERVAL_US + drift).div_ceil(1000);
            let bound_ms = 2 * (core.config().election_timeout_min_ms + tick_ms) + 1;
            let membership = core.membership();
            let fresh = || Hearing {
                term,
                since_ms: local_ms,
                voters: (
                    membership.voters.clone(),
                    membership.outgoing_voters.clone(),
                ),
                heard_ms: BTreeMap::new(),
            };
            let hearing = self.hearings.entry(id).or_insert_with(fresh);
            if hearing.term != term {
                *hearing = fresh();
            }
            if hearing.voters.0 != membership.voters
                || hearing.voters.1 != membership.outgoing_voters
            {
                hearing.since_ms = local_ms;
                hearing.voters = (
                    membership.voters.clone(),
                    membership.outgoing_voters.clone(),
                );
            }
            let mut last_majority_ms = u64::MAX;
            for voters in [&membership.voters, &membership.outgoing_voters] {
                if voters.is_empty() {
                    continue;
                }
                let mut heard: Vec<u64> = voters
                    .iter()
                    .map(|&voter| {
                        if voter == id {
                            local_ms
                        } else {
                            *hearing.heard_ms.entry(voter).or_insert(local_ms)
                        }
                    })
                    .collect();
                heard.sort_unstable_by(|a, b| b.cmp(a));
                let majority = voters.len() / 2 + 1;
                last_majority_ms = last_majority_ms.min(heard[majority - 1]);
            }
            let since_ms = hearing.since_ms.max(last_majority_ms);
            if local_ms.saturating_sub(since_ms) > bound_ms {
                return Err(format!(
                    "check-quorum: node {id} still leads term {term} though it has heard from no \
                     majority of its voters {:?} (outgoing {:?}) for {} ms of its clock; it must \
                     step down within {bound_ms} ms (two election_timeout_min_ms intervals)",
                    membership.voters,
                    membership.outgoing_voters,
                    local_ms - since_ms
                ));
            }
        }
        Ok(())
    }
}
