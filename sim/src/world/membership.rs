//! Membership faults: configuration changes asked of the leader, spares joining through the join
//! workflow (with redirects), members losing their disks and rejoining.

use rand::seq::IndexedRandom;
use rand::Rng;
use ravel::core::{LogIndex, MemberState, MembershipChange, NodeId};
use ravel::replica::{self};

use crate::disk::SimDisk;

use super::*;

impl World {
    /// Asks the current leader for a random membership change: add a spare as learner, promote
    /// a learner, remove a member (the leader too), or replace the voters through a joint
    /// configuration. The leader may refuse (a change pending, its term not committed yet).
    pub(super) fn change_membership(&mut self) {
        self.change_membership_or_join(true);
    }

    /// As `change_membership`; with `spare_may_join` false, always a change asked of the leader
    /// (the armed moments want one in its log, not a spare's request).
    pub(super) fn change_membership_or_join(&mut self, spare_may_join: bool) {
        let Some(leader) = self.current_leader() else {
            return;
        };
        // Sometimes a member loses its disk and must join again (one at a time: Raft survives
        // losing the durable state of a minority, not of a majority).
        let rejoining = self
            .joins
            .iter()
            .any(|(&node, join)| !join.done && self.node_ref(node).joining);
        if self.options.faults.disk_loss && !rejoining && self.rng.random_bool(0.15) {
            return self.wipe_and_rejoin();
        }
        if rejoining {
            // A voter without its disk may be needed for every majority: changing the voters now
            // could leave no quorum at all, which no Raft survives. Let the join finish first.
            return;
        }
        // Half the time, a spare outside the cluster starts the join workflow instead.
        let outside: Vec<NodeId> = self.ids[self.founders.len()..]
            .iter()
            .copied()
            .filter(|id| self.joins.get(id).is_none_or(|join| join.done))
            .filter(|&id| {
                !self.nodes[leader as usize - 1]
                    .core()
                    .expect("up")
                    .membership()
                    .is_member(id)
            })
            .collect();
        if spare_may_join && !outside.is_empty() && self.rng.random_bool(0.5) {
            let joiner = *outside.choose(&mut self.rng).expect("some");
            let target = *self.ids.choose(&mut self.rng).expect("nodes");
            self.joins.insert(
                joiner,
                Join {
                    target,
                    done: false,
                },
            );
            return self.schedule(0, Event::JoinTry(joiner));
        }
        let membership = self
            .node(leader)
            .core()
            .expect("a leader is up")
            .membership()
            .clone();
        let outsiders: Vec<NodeId> = self
            .ids
            .iter()
            .copied()
            .filter(|&id| !membership.is_member(id))
            .collect();
        let learners: Vec<NodeId> = membership.learners.iter().copied().collect();
        let members: Vec<NodeId> = membership.replicas().into_iter().collect();
        let change = match self.rng.random_range(0..4) {
            0 if !outsiders.is_empty() => {
                MembershipChange::AddLearner(*outsiders.choose(&mut self.rng).expect("some"))
            }
            1 if !learners.is_empty() => {
                MembershipChange::Promote(*learners.choose(&mut self.rng).expect("some"))
            }
            2 if members.len() > 2 => {
                MembershipChange::Remove(*members.choose(&mut self.rng).expect("some"))
            }
            3 => {
                // Replace the voters with any 3 (or fewer) nodes that are already members.
                let mut pool = members.clone();
                rand::seq::SliceRandom::shuffle(pool.as_mut_slice(), &mut self.rng);
                pool.truncate(3);
                MembershipChange::ReplaceVoters(pool.into_iter().collect())
            }
            _ => return,
        };
        self.next_change_id += 1;
        let id = self.next_change_id;
        self.trace.line(self.now_us, || {
            format!("n{leader}: membership change {change:?}")
        });
        self.feed(leader, |replica| {
            replica.request(id, replica::Request::ChangeMembership(change))
        });
    }

    /// A member crashes and comes back with an empty disk: it starts as a joining node (no
    /// configuration, no votes) and goes through the join workflow, in which the leader removes
    /// and re-adds it.
    pub(super) fn wipe_and_rejoin(&mut self) {
        let Some(leader) = self.current_leader() else {
            return;
        };
        let leader_core = self.nodes[leader as usize - 1].core().expect("up");
        // The voters may be about to change; judge the loss against settled ones — settled
        // everywhere: a change another node holds uncommitted (a deposed leader's, say) may
        // still win, and with it a configuration in which this loss is a lost majority.
        let settled = self
            .nodes
            .iter()
            .filter_map(SimNode::core)
            .filter(|core| leader_core.membership().is_member(core.id()))
            .all(|core| {
                !core.membership_change_pending() && core.membership() == leader_core.membership()
            });
        if !settled {
            return;
        }
        let membership = leader_core.membership().clone();
        let members: Vec<NodeId> = membership.replicas().into_iter().collect();
        let Some(&victim) = members.choose(&mut self.rng) else {
            return;
        };
        // The voters left must still be a majority: a lost disk is a lost voter until it rejoins.
        // So is a voter still joining (one an operator made a voter before the join workflow
        // admitted it): the leader does not count it until the workflow has replaced it, which
        // takes a majority of voters that do count. A voter that is down counts unless it lost
        // its disk.
        let voters = membership.voters.len();
        let left = (membership.voters.iter())
            .filter(|&&voter| voter != victim)
            .filter(|&&voter| {
                let node = self.node_ref(voter);
                node.core().map_or(!node.joining, |core| {
                    core.status().member != MemberState::ConnectionPending
                })
            })
            .count();
        if membership.is_joint() || left < voters / 2 + 1 {
            return;
        }
        self.crash(victim);
        let retention = self.tuning.log_retention_entries;
        let node = self.node(victim);
        node.lost_disk = Some(std::mem::replace(
            &mut node.disk,
            SimDisk::with_retention(retention),
        ));
        node.joining = true;
        node.readmitted_by.clear();
        self.trace
            .line(self.now_us, || format!("n{victim} loses its disk"));
        let down_us = self.rng.random_range(50_000..500_000);
        self.schedule(down_us, Event::Restart(victim));
        let target = *self.ids.choose(&mut self.rng).expect("nodes");
        self.joins.insert(
            victim,
            Join {
                target,
                done: false,
            },
        );
        self.schedule(down_us + 1, Event::JoinTry(victim));
    }

    /// A joiner asks its target to let it join (retrying until it has joined): the join
    /// workflow from the joiner's side, with redirects to the leader.
    pub(super) fn join_try(&mut self, joiner: NodeId) {
        let Some(join) = self.joins.get(&joiner) else {
            return;
        };
        if join.done {
            return;
        }
        // A spare is no joining node (the simulator starts it knowing the founders, as a node an
        // operator added): once an operator's change made it a voter it has nothing to ask. A
        // real joiner asks until answered, and so does a member back without its disk.
        let spare_voter = !self.node_ref(joiner).joining
            && (self.node_ref(joiner).core())
                .is_some_and(|core| core.status().member == MemberState::Voter);
        if spare_voter {
            self.joins.get_mut(&joiner).expect("present").done = true;
            return;
        }
        let target = join.target;
        let retry_us = self.rng.random_range(100_000..400_000);
        self.schedule(retry_us, Event::JoinTry(joiner));
        let Some((last_index, nonce)) = self
            .node(joiner)
            .core()
            .map(|core| (core.log().last_index(), core.config().join_nonce))
        else {
            return;
        };
        if self.node(target).replica.is_none() || self.node(target).paused {
            self.joins.get_mut(&joiner).expect("present").target =
                *self.ids.choose(&mut self.rng).expect("nodes");
            return;
        }
        self.next_change_id += 1;
        let id = self.next_change_id;
        let incarnation = self.node_ref(joiner).incarnation;
        self.join_requests.insert(id, (joiner, incarnation));
        self.trace
            .line(self.now_us, || format!("n{joiner} asks n{target} to join"));
        let join = replica::Request::Join {
            node: joiner,
            address: sim_address(joiner),
            last_index,
            follower_only: false,
            nonce,
        };
        self.feed(target, |replica| replica.request(id, join));
    }

    /// Every member of the leader's configuration is up and applied `target`.
    pub(super) fn members_applied(&self, target: LogIndex) -> bool {
        let Some(leader) = self.current_leader() else {
            return false;
        };
        let members = self.nodes[leader as usize - 1]
            .core()
            .expect("up")
            .membership()
            .replicas();
        members.iter().all(|&id| {
            self.nodes[id as usize - 1]
                .core()
                .is_some_and(|core| core.status().applied >= target)
        })
    }
}
