//! One generator of hand-driven schedules, shared by the proptest test (`random_schedules.rs`,
//! which shrinks failures) and the cargo-fuzz target (`fuzz/fuzz_targets/cluster_schedule.rs`,
//! which decodes steps from its input bytes): message deliveries in any order, drops,
//! duplicates, proposals, reads, crashes, forced campaigns, transfers — and the membership
//! workflow: spares joining through the leader's join pool (admitted when their join
//! completes), members leaving, and members that lose their disk and join again. The harness
//! checks every Raft invariant after every step.

use ravel::core::{Action, Input, MembershipChange, NodeId};

use crate::harness::TestCluster;

/// Voters the schedules start with, and spares that may join.
pub const VOTERS: u64 = 3;
pub const SPARES: u64 = 2;
pub const NODES: u64 = VOTERS + SPARES;

#[derive(Clone, Debug)]
pub enum Step {
    Tick(u64),
    /// Run undisturbed for this many ms (every message delivered), so that elections, joins
    /// and catch-up can make progress between the disturbances.
    RunFor(u64),
    /// Deliver the queued message at this position (modulo the queue length).
    Deliver(usize),
    Drop(usize),
    Duplicate(usize),
    Propose(NodeId),
    Read(NodeId),
    CrashAndRestart(NodeId),
    Campaign(NodeId),
    Transfer(NodeId, NodeId),
    /// `node` asks `via` to join (the leader queues it; anyone else refuses).
    Join {
        node: NodeId,
        via: NodeId,
    },
    /// `via` (if leader) removes `node`.
    Leave {
        node: NodeId,
        via: NodeId,
    },
    /// `node` crashes, loses its disk, and comes back as a joining node.
    LoseDisk(NodeId),
}

impl Step {
    /// The step a pair of fuzzer bytes stands for.
    pub fn from_bytes(op: u8, arg: u8) -> Step {
        let node = u64::from(arg % NODES as u8) + 1;
        let other = u64::from(arg / NODES as u8 % NODES as u8) + 1;
        let position = usize::from(arg);
        match op % 16 {
            0 | 1 => Step::Tick(u64::from(arg)),
            2 => Step::RunFor(u64::from(arg) * 4),
            3..=6 => Step::Deliver(position),
            7 => Step::Drop(position),
            8 => Step::Duplicate(position),
            9 => Step::Propose(node),
            10 => Step::Read(node),
            11 => Step::CrashAndRestart(node),
            12 => Step::Campaign(node),
            13 => Step::Transfer(node, other),
            14 => Step::Join { node, via: other },
            _ if arg.is_multiple_of(4) => Step::LoseDisk(node),
            _ => Step::Leave { node, via: other },
        }
    }
}

/// A cluster of [`VOTERS`] voters and [`SPARES`] spares, and the requests made so far.
pub struct Schedule {
    pub cluster: TestCluster,
    request: u64,
}

impl Default for Schedule {
    fn default() -> Self {
        Self::new()
    }
}

impl Schedule {
    pub fn new() -> Self {
        Self::with_bugs(ravel::core::PlantedBugs::default())
    }

    /// The same cluster with classic Raft bugs planted, to show the schedules find them.
    pub fn with_bugs(bugs: ravel::core::PlantedBugs) -> Self {
        Schedule {
            cluster: TestCluster::with_spares(VOTERS, SPARES, |config| {
                config.planted_bugs = bugs;
            }),
            request: 0,
        }
    }

    /// How many nodes are voters in the leader's (or, without a leader, node 1's) view.
    pub fn voters(&self) -> usize {
        let viewer = self.cluster.leader().unwrap_or(1);
        self.cluster.core(viewer).membership().voters.len()
    }

    pub fn apply(&mut self, step: Step) {
        let cluster = &mut self.cluster;
        match step {
            Step::Tick(ms) => {
                cluster.now_ms += ms;
                for id in 1..=NODES {
                    cluster.step(
                        id,
                        Input::Tick {
                            now_ms: cluster.now_ms,
                        },
                    );
                }
            }
            Step::RunFor(ms) => cluster.run_for(ms),
            Step::Deliver(position) if !cluster.in_flight.is_empty() => {
                let message = cluster.in_flight.remove(position % cluster.in_flight.len());
                cluster.deliver(message);
            }
            Step::Drop(position) if !cluster.in_flight.is_empty() => {
                let len = cluster.in_flight.len();
                cluster.in_flight.remove(position % len);
            }
            Step::Duplicate(position) if !cluster.in_flight.is_empty() => {
                let message = cluster.in_flight[position % cluster.in_flight.len()].clone();
                cluster.in_flight.push(message);
            }
            Step::Deliver(_) | Step::Drop(_) | Step::Duplicate(_) => {}
            Step::Propose(id) => {
                self.request += 1;
                cluster.propose(id, self.request, b"command");
            }
            Step::Read(id) => {
                self.request += 1;
                cluster.step(id, Input::Read { id: self.request });
            }
            Step::CrashAndRestart(id) => {
                cluster.crash(id);
                cluster.restart(id);
            }
            Step::Campaign(id) => cluster.step(id, Input::Campaign),
            Step::Transfer(from, to) => cluster.step(from, Input::TransferLeadership { to }),
            Step::Join { node, via } => {
                self.request += 1;
                let last_index = cluster.status(node).last_index;
                let nonce = cluster.join_nonce(node);
                cluster.step(
                    via,
                    Input::Join {
                        id: self.request,
                        node,
                        last_index,
                        nonce,
                    },
                );
            }
            Step::Leave { node, via } => {
                self.request += 1;
                cluster.step(
                    via,
                    Input::ChangeMembership {
                        id: self.request,
                        change: MembershipChange::Remove(node),
                    },
                );
            }
            Step::LoseDisk(id) => {
                cluster.crash(id);
                cluster.wipe(id);
                cluster.restart_joining(id);
            }
        }
        self.admit_completed_joins();
    }

    /// A joiner whose join completed is told so (the shell's joiner does this on `JOINED`).
    fn admit_completed_joins(&mut self) {
        for id in 1..=NODES {
            for event in self.cluster.take_events(id) {
                if let Action::JoinCompleted { node, .. } = event {
                    self.cluster.step(node, Input::Admitted);
                }
            }
        }
    }

    /// Heals, lets the cluster run quietly, and returns the leader if the voters it knows of
    /// all caught up with it (`Err` says who did not).
    pub fn settle(&mut self, ms: u64) -> Result<NodeId, String> {
        self.cluster.in_flight.clear();
        for _ in 0..ms / 100 {
            self.cluster.run_for(100);
            self.admit_completed_joins();
        }
        let leader = self
            .cluster
            .leader()
            .ok_or_else(|| "no leader after the schedule ended".to_string())?;
        let last = self.cluster.status(leader).last_index;
        let voters = self.cluster.core(leader).membership().voters.clone();
        for id in voters {
            let commit = self.cluster.status(id).commit;
            if commit != last {
                return Err(format!(
                    "voter {id} committed {commit}, the leader {leader} holds {last}"
                ));
            }
        }
        Ok(leader)
    }
}
