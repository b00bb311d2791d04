//! The fault schedule: which fault strikes next and where, partitions, and the heal.

use rand::seq::IndexedRandom;
use rand::Rng;
use ravel::core::{NodeId, RawNode, ReadMode, Role};
use ravel::replica::Replica;

use crate::client::Client;

use super::*;

impl World {
    pub(super) fn inject_fault(&mut self) {
        let faults = self.options.faults;
        let mut choices: Vec<&str> = Vec::new();
        if faults.partition && self.network.cut_links() == 0 {
            choices.extend(["partition", "partition"]);
            if self.tuning.read_mode == ReadMode::Lease {
                choices.extend(["lease-cut", "lease-cut", "lease-attack"]);
            }
        }
        if faults.crash {
            choices.extend([
                "crash",
                "crash",
                "crash-on-commit",
                "crash-on-election",
                "crash-on-commit",
                "crash-on-election",
                "crash-on-ack",
                "crash-on-ack",
            ]);
        }
        if faults.pause {
            choices.push("pause");
        }
        if faults.transfer {
            choices.extend(["transfer", "campaign"]);
        }
        if faults.disk {
            choices.extend(["fsync-fails", "disk-full"]);
        }
        if faults.membership {
            choices.extend([
                "membership",
                "membership",
                "membership",
                "membership-on-election",
                "membership-burst",
            ]);
        }
        if let Some(&choice) = choices.choose(&mut self.rng) {
            match choice {
                "partition" => self.partition(),
                "lease-cut" => self.armed_lease_cut = true,
                "lease-attack" => self.partition_as(3),
                "crash" => {
                    let target = self.pick_target();
                    if self.rng.random_bool(0.3) {
                        self.stop_gracefully(target);
                    }
                    self.crash_and_restart(target, 20_000..2_000_000);
                }
                "fsync-fails" => {
                    let target = self.pick_target();
                    self.node(target).sync_fails = true;
                }
                "disk-full" => {
                    let target = self.pick_target();
                    let full_us = self.rng.random_range(100_000..2_000_000);
                    self.node(target).disk_full_until_us = self.now_us + full_us;
                    self.trace.line(self.now_us, || {
                        format!("n{target}: disk full for {} ms", full_us / 1000)
                    });
                }
                "membership" => self.change_membership(),
                // The moment a new leader may still hold its predecessor's uncommitted change:
                // a change asked then must wait for the leader's own term to commit.
                // Half the time, leave that predecessor's change behind first: the leader is
                // asked for a change and goes deaf as its entry leaves, so no one acknowledges
                // it and the next leader inherits it uncommitted.
                "membership-on-election" => {
                    self.armed_change = true;
                    if let Some(leader) = self.current_leader() {
                        if self.network.cut_links() == 0 && self.rng.random_bool(0.5) {
                            self.change_membership_or_join(false);
                            let deaf_us = self.rng.random_range(100..3_000);
                            self.schedule(deaf_us, Event::Deafen(leader));
                            let heal_us = self.rng.random_range(300_000..2_000_000);
                            self.schedule(heal_us, Event::HealPartition);
                        }
                    }
                }
                // Changes back to back, racing each other and, half the time, an election.
                "membership-burst" => {
                    self.change_membership();
                    for _ in 0..self.rng.random_range(1..=2) {
                        let later_us = self.rng.random_range(0..30_000);
                        self.schedule(later_us, Event::ChangeMembership);
                    }
                    if self.rng.random_bool(0.5) {
                        let target = *self.ids.choose(&mut self.rng).expect("nodes");
                        if !self.node(target).paused {
                            self.trace.line(self.now_us, || {
                                format!("n{target}: forced campaign racing the changes")
                            });
                            self.feed(target, Replica::campaign);
                        }
                    }
                }
                "crash-on-commit" => self.armed_crash = Some(CrashMoment::LeaderCommits),
                "crash-on-ack" => self.armed_crash = Some(CrashMoment::Acknowledges),
                "crash-on-election" => self.armed_crash = Some(CrashMoment::LeaderElected),
                "pause" => {
                    let target = self.pick_target();
                    let node = self.node(target);
                    if node.replica.is_some() && !node.paused {
                        node.paused = true;
                        // Judged afresh from its resumption (the check-quorum check).
                        self.hearings.remove(&target);
                        self.trace.line(self.now_us, || format!("n{target} pauses"));
                        let pause_us = self.rng.random_range(50_000..2_000_000);
                        self.schedule(pause_us, Event::Resume(target));
                    }
                }
                "transfer" => {
                    if let Some(leader) = self.current_leader() {
                        let others: Vec<NodeId> = self
                            .ids
                            .iter()
                            .copied()
                            .filter(|&id| id != leader)
                            .collect();
                        if let Some(&to) = others.choose(&mut self.rng) {
                            self.trace.line(self.now_us, || {
                                format!("n{leader}: transfer leadership to n{to}")
                            });
                            self.feed(leader, |replica| replica.transfer_leadership(to));
                            if self.network.cut_links() == 0 && self.rng.random_bool(0.5) {
                                // The handover attack: the old leader stops hearing anyone as it
                                // hands over, so it learns of no newer term. Only a
                                // leader that stopped lease reads when the handover began
                                // serves no stale reads.
                                for other in self.ids.clone().into_iter().filter(|&o| o != leader) {
                                    self.network.cut(other, leader);
                                }
                                self.trace.line(self.now_us, || {
                                    format!("n{leader} hears no one after handing over")
                                });
                                let heal_us = self.rng.random_range(300_000..2_000_000);
                                self.schedule(heal_us, Event::HealPartition);
                            }
                        }
                    }
                }
                _ => {
                    let target = *self.ids.choose(&mut self.rng).expect("nodes");
                    if !self.node(target).paused {
                        self.trace
                            .line(self.now_us, || format!("n{target}: forced campaign"));
                        self.feed(target, Replica::campaign);
                    }
                }
            }
        }
        let next_us = self.rng.random_range(50_000..800_000);
        self.schedule(next_us, Event::Fault);
    }

    /// The current leader two times in five, otherwise any node.
    pub(super) fn pick_target(&mut self) -> NodeId {
        match self.current_leader() {
            Some(leader) if self.rng.random_bool(0.4) => leader,
            _ => *self.ids.choose(&mut self.rng).expect("nodes"),
        }
    }

    pub(super) fn current_leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|node| node.core().map(RawNode::status))
            .filter(|status| status.role == Role::Leader)
            .max_by_key(|status| status.term)
            .map(|status| status.id)
    }

    pub(super) fn partition(&mut self) {
        let shape = self.rng.random_range(0..5);
        self.partition_as(shape);
    }

    /// A partition of the given shape: a minority, the leader, one-way links, the lease attack,
    /// a bridge.
    fn partition_as(&mut self, shape: u32) {
        let all = self.ids.clone();
        let mut shuffled = all.clone();
        rand::seq::SliceRandom::shuffle(shuffled.as_mut_slice(), &mut self.rng);
        let description = match shape {
            0 => {
                let minority = self.rng.random_range(1..=all.len() / 2);
                let group = &shuffled[..minority];
                self.network.isolate(group, &all);
                format!("partition {group:?} from the rest")
            }
            1 => match self.current_leader() {
                Some(leader) => {
                    self.network.isolate(&[leader], &all);
                    format!("isolate leader n{leader}")
                }
                None => return,
            },
            2 => {
                let links = self.rng.random_range(1..=all.len());
                let mut cut = Vec::new();
                for _ in 0..links {
                    let from = *all.choose(&mut self.rng).expect("nodes");
                    let to = *all.choose(&mut self.rng).expect("nodes");
                    if from != to {
                        self.network.cut(from, to);
                        cut.push((from, to));
                    }
                }
                format!("cut one-way links {cut:?}")
            }
            3 => {
                // The lease attack: one follower stops hearing the leader (and will campaign),
                // then, while the leader's lease still runs, the leader stops hearing anyone
                // (so it learns of no newer term). Only followers refusing votes while they hear
                // a leader keep a rival from being elected under the lease.
                let Some(leader) = self.current_leader() else {
                    return;
                };
                let followers: Vec<NodeId> =
                    all.iter().copied().filter(|&id| id != leader).collect();
                let deaf = *followers.choose(&mut self.rng).expect("a follower");
                let later_us = self.rng.random_range(80_000..145_000);
                // Half the time the clients only read, from 40 ms before the follower stops
                // hearing the leader: with no new entries its log stays as long as the
                // others', so only their promise to the leader (no votes while they hear it)
                // keeps it from winning under the lease.
                let quiet_us = if self.rng.random_bool(0.5) {
                    self.writes_quiet_until_us = self.now_us + 500_000;
                    40_000
                } else {
                    0
                };
                self.schedule(
                    quiet_us,
                    Event::CutLink {
                        from: leader,
                        to: deaf,
                    },
                );
                self.schedule(quiet_us + later_us, Event::CutInbound(leader));
                format!(
                    "lease attack: n{deaf} stops hearing leader n{leader} in {} ms; n{leader} goes deaf {} ms later{}",
                    quiet_us / 1000,
                    later_us / 1000,
                    if quiet_us > 0 { "; clients only read for 500 ms" } else { "" }
                )
            }
            _ => {
                // A bridge: one node reaches both halves, which cannot reach each other.
                let bridge = shuffled[0];
                let half = (all.len() - 1) / 2;
                let left = &shuffled[1..1 + half];
                let right = &shuffled[1 + half..];
                for &a in left {
                    for &b in right {
                        self.network.cut(a, b);
                        self.network.cut(b, a);
                    }
                }
                format!("bridge n{bridge} between {left:?} and {right:?}")
            }
        };
        self.trace.line(self.now_us, || description);
        let heal_us = self.rng.random_range(300_000..4_000_000);
        self.schedule(heal_us, Event::HealPartition);
    }

    /// The lease's sharpest moment: a leader cut off from everyone the instant a round's
    /// acknowledgements extend its lease, its messages still in flight lost, so the voters'
    /// last word from it is that round's and their promises run out as early as they can. A
    /// lease that outlives them (drift or clock resolution misjudged) shows at once.
    pub(super) fn cut_lease_holder(&mut self, id: NodeId) {
        self.armed_lease_cut = false;
        let all = self.ids.clone();
        self.network.isolate(&[id], &all);
        self.queue
            .retain(|_, event| !matches!(event, Event::Deliver(message) if message.from == id));
        self.trace.line(self.now_us, || {
            format!("lease cut: n{id} isolated as its lease grows; its messages in flight are lost")
        });
        let heal_us = self.rng.random_range(300_000..4_000_000);
        self.schedule(heal_us, Event::HealPartition);
    }

    pub(super) fn heal_everything(&mut self) {
        self.faults_over = true;
        self.trace
            .line(self.now_us, || "faults end: everything heals".to_string());
        self.network.heal();
        self.network.config.loss_rate = 0.0;
        self.network.config.duplicate_rate = 0.0;
        self.network.config.straggler_rate = 0.0;
        self.queue.retain(|_, event| {
            !matches!(
                event,
                Event::Fault
                    | Event::HealPartition
                    | Event::ChangeMembership
                    | Event::ChangeMembershipOnElection
                    | Event::Deafen(_)
                    | Event::CutLink { .. }
            )
        });
        self.armed_crash = None;
        self.armed_change = false;
        self.armed_lease_cut = false;
        for node in &mut self.nodes {
            node.sync_fails = false;
            node.disk_full_until_us = 0;
        }
        for id in self.ids.clone() {
            self.restart(id);
            self.resume(id);
        }
        let liveness = self.liveness_client();
        let target = *self.ids.choose(&mut self.rng).expect("nodes");
        self.clients.push(Client::new(liveness, target));
        self.schedule(0, Event::ClientNext(liveness));
    }
}
