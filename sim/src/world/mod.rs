//! One simulated run: N replicas, their disks and clocks, the network between them, clients, and a
//! fault schedule, all driven by one seeded generator through a discrete-event queue.
//!
//! Phases: faults for `duration_ms`; then every fault heals and the cluster must elect a leader
//! and apply a fresh write everywhere within `liveness_bound_ms`; then the client history is
//! checked for linearizability. Safety invariants are checked after every step of every node.

mod checks;
mod clients;
mod faults;
mod leases;
mod membership;
mod nodes;
mod quorums;
mod step_down;
mod tuning;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ravel::core::{LogIndex, Message, NodeId, PersistId, RawNode, Term};
use ravel::kv::KvStateMachine;
use ravel::replica::{Effect, Replica, Ticket};

use crate::checker::{Checker, NodeWatch, Violation};
use crate::client::{Client, ClientId};
use crate::disk::SimDisk;
use crate::history::{History, OpId, OpKind, OpResult};
use crate::linearizability::{self, Verdict};
use crate::network::{Network, NetworkConfig};
use crate::options::{FaultMix, SimOptions};
use crate::trace::Trace;

use checks::describe_message;
use nodes::sim_address;
pub use tuning::{sim_config, Tuning};

const TICK_INTERVAL_US: u64 = 10_000;
const CLIENT_TIMEOUT_US: u64 = 1_000_000;
/// Log matching is checked across all pairs every this many events (and at the end).
const LOG_MATCHING_EVERY_EVENTS: u64 = 256;
const LIVENESS_KEY: &str = "liveness";
/// Mixed into the seed for the stragglers' generator.
const STRAGGLER_STREAM: u64 = 0x5354_5241_4747_4c45;
/// Mixed into the seed for the swarm's draw of fault families.
const SWARM_STREAM: u64 = 0x5357_4152_4d00_0001;

/// What the run found.
#[derive(Debug)]
pub struct RunReport {
    pub seed: u64,
    pub failure: Option<String>,
    pub trace_hash: u64,
    pub events: u64,
    pub operations_completed: usize,
    pub operations_total: usize,
    pub elections: u64,
    pub committed: LogIndex,
    /// The most entries any node had released from memory by the end.
    pub released: LogIndex,
    pub simulated_ms: u64,
}

/// A node's clock: an offset and a rate error, so durations and instants differ between nodes.
#[derive(Clone, Copy, Debug)]
struct Clock {
    offset_us: u64,
    drift_ppm: i64,
}

impl Clock {
    fn local_ms(&self, global_us: u64) -> u64 {
        let drift = global_us as i128 * self.drift_ppm as i128 / 1_000_000;
        ((global_us as i128 + drift) as u64 + self.offset_us) / 1000
    }
}

/// The most dangerous moments to lose a node: a leader right after it took office (its no-op
/// exists only on its disk, a divergent entry for later), or right after its commit index
/// advanced (the commit is known only to itself); any node right after it promised something
/// that must outlive a crash (an accepted append, a granted vote), before its disk synced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CrashMoment {
    LeaderElected,
    LeaderCommits,
    Acknowledges,
}

/// A spare's way through the join workflow.
#[derive(Clone, Copy, Debug)]
struct Join {
    /// Where it sends its next request: a leader hint, or a guess.
    target: NodeId,
    done: bool,
}

/// A client's request as it reaches a node.
#[derive(Clone, Debug)]
struct Request {
    client: ClientId,
    op: OpId,
    key: Bytes,
    kind: OpKind,
}

#[derive(Clone, Debug)]
enum Reply {
    Ok(OpResult),
    /// Definitely did not take effect; retry, at the hinted leader if any.
    Refused(Option<NodeId>),
    /// May or may not have taken effect (the node said so): as a timeout, sooner.
    Unknown,
}

#[derive(Debug)]
enum Event {
    Tick(NodeId),
    /// Boxed, as are requests and replies: events move in the queue's nodes on every insert
    /// and removal, and a small event keeps those moves cheap.
    Deliver(Box<Message>),
    DiskSynced {
        node: NodeId,
        incarnation: u64,
        up_to: PersistId,
    },
    Request {
        node: NodeId,
        request: Box<Request>,
    },
    Reply {
        client: ClientId,
        op: OpId,
        reply: Box<Reply>,
    },
    ClientTimeout {
        client: ClientId,
        op: OpId,
    },
    ClientNext(ClientId),
    Fault,
    HealPartition,
    /// Cut one link (the first step of the lease attack).
    CutLink {
        from: NodeId,
        to: NodeId,
    },
    /// Cut every link into this node (the second step of the lease attack).
    CutInbound(NodeId),
    Restart(NodeId),
    Resume(NodeId),
    /// A joiner (re)sends its join request.
    JoinTry(NodeId),
    /// A joiner hears that its join completed.
    Admit(NodeId),
    /// Asks the leader for a membership change (one of a burst), or a spare to join.
    ChangeMembership,
    /// Asks the leader for a membership change, armed for the moment it was elected.
    ChangeMembershipOnElection,
    /// Cuts every link into a node (while faults last).
    Deafen(NodeId),
}

struct SimNode {
    id: NodeId,
    /// The node's own replica (the code a real node runs), while it is up.
    replica: Option<Replica<KvStateMachine>>,
    incarnation: u64,
    disk: SimDisk,
    /// The disk it lost last (the membership family's wipe), for the checks on what leaders
    /// counted: an acknowledgement or vote given before the loss was honest.
    lost_disk: Option<SimDisk>,
    sync_in_flight: bool,
    clock: Clock,
    paused: bool,
    /// Events that arrived while paused, handled on resume.
    deferred: Vec<Event>,
    /// Lost its disk and has not joined again yet: restarts as a joining node.
    joining: bool,
    /// The leaders (with their terms) that held it out of their voters while it was joining
    /// again: they removed it or hold it as a learner, so what it acknowledges to them came from
    /// their own replication and may count once they make it a voter again.
    readmitted_by: BTreeSet<(NodeId, Term)>,
    /// The next sync reports an error.
    sync_fails: bool,
    /// Writes fail for lack of space until then.
    disk_full_until_us: u64,
    /// Client requests handed to the replica, by ticket.
    requests: BTreeMap<Ticket, Request>,
    watch: NodeWatch,
}

impl SimNode {
    fn core(&self) -> Option<&RawNode> {
        self.replica.as_ref().map(Replica::core)
    }

    /// Its disk, and the one it lost before.
    fn disks(&self) -> impl Iterator<Item = &SimDisk> {
        std::iter::once(&self.disk).chain(&self.lost_disk)
    }
}

pub struct World {
    options: SimOptions,
    seed: u64,
    rng: ChaCha8Rng,
    now_us: u64,
    /// Orders events with equal times, and stamps the history: a strict total order.
    sequence: u64,
    queue: BTreeMap<(u64, u64), Event>,
    nodes: Vec<SimNode>,
    ids: Vec<NodeId>,
    /// The founding voters (every node's `Config::voters`); the others start outside.
    founders: Vec<NodeId>,
    /// Request ids of membership changes and joins (out of the clients' range).
    next_change_id: u64,
    /// Spares going through the join workflow, and which join request came from whom (the
    /// node and its incarnation: an answer to an earlier start reaches no one).
    joins: BTreeMap<NodeId, Join>,
    join_requests: BTreeMap<u64, (NodeId, u64)>,
    tuning: Tuning,
    network: Network,
    clients: Vec<Client>,
    history: History,
    checker: Checker,
    trace: Trace,
    next_op: OpId,
    faults_over: bool,
    /// The message being delivered, for the check on how terms rise.
    delivering: Option<quorums::Delivering>,
    /// What each leader heard in its term, for the check-quorum check.
    hearings: BTreeMap<NodeId, step_down::Hearing>,
    /// After healing: the committed index every node must apply once the liveness write returned.
    liveness_target: Option<LogIndex>,
    liveness_done: bool,
    /// Armed by the fault schedule: crash the next node at this moment.
    armed_crash: Option<CrashMoment>,
    /// Ask the next leader for a membership change the moment it is elected.
    armed_change: bool,
    /// Cut the next leader whose lease grows off from everyone at that moment.
    armed_lease_cut: bool,
    /// Until then clients only read (a quiet spell of the lease attack).
    writes_quiet_until_us: u64,
    /// The slowest fsync of this seed's disks: slow disks keep writes unsynced longer, so a
    /// node that answers before its write is durable is more often caught by a crash.
    sync_delay_max_us: u64,
    failure: Option<Violation>,
    events: u64,
    /// The effects being carried out (one buffer, reused).
    effects: Vec<Effect<KvStateMachine>>,
}

impl World {
    pub fn new(seed: u64, mut options: SimOptions, verbose: bool) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        options.faults = swarm(seed, options.faults);
        let faults = options.faults;
        // Stragglers came later than the other faults: a stream of their own keeps the schedules
        // of seeds without them as they were.
        let mut stragglers = ChaCha8Rng::seed_from_u64(seed ^ STRAGGLER_STREAM);
        let straggler_rate = if faults.delay {
            *[0.0, 0.0, 0.001, 0.005]
                .choose(&mut stragglers)
                .expect("non-empty")
        } else {
            0.0
        };
        let network = Network::new(
            NetworkConfig {
                loss_rate: if faults.loss {
                    rng.random_range(0.0..0.05)
                } else {
                    0.0
                },
                duplicate_rate: if faults.duplicate {
                    rng.random_range(0.0..0.05)
                } else {
                    0.0
                },
                delay_min_us: 200,
                delay_max_us: if faults.delay {
                    rng.random_range(1_000..30_000)
                } else {
                    1_000
                },
                straggler_rate,
            },
            stragglers,
        );
        let tuning = Tuning::draw(options.read_mode, &mut rng);
        let sync_delay_max_us = if faults.disk {
            *[2_000, 2_000, 10_000, 40_000]
                .choose(&mut rng)
                .expect("non-empty")
        } else {
            2_000
        };
        let spares = if faults.membership { options.spares } else { 0 };
        let ids: Vec<NodeId> = (1..=(options.nodes + spares) as NodeId).collect();
        let founders: Vec<NodeId> = (1..=options.nodes as NodeId).collect();
        let drift_max_ppm = sim_config(1, &ids, &tuning, 0).clock_drift_max_ppm as i64;
        // Half the seeds with skew put every clock at an edge of the drift bound, where a lease
        // that misjudges drift outlives its promise by the most (a stream of its own).
        let mut edges = rng.clone();
        edges.set_stream(3);
        let clocks_at_edges = faults.skew && edges.random_bool(0.5);
        let nodes = ids
            .iter()
            .map(|&id| {
                let clock = if faults.skew {
                    let offset_us = rng.random_range(0..10_000_000);
                    let drift_ppm = rng.random_range(-drift_max_ppm..=drift_max_ppm);
                    Clock {
                        offset_us,
                        drift_ppm: if clocks_at_edges {
                            drift_max_ppm * drift_ppm.signum()
                        } else {
                            drift_ppm
                        },
                    }
                } else {
                    Clock {
                        offset_us: 0,
                        drift_ppm: 0,
                    }
                };
                SimNode {
                    id,
                    replica: None,
                    incarnation: 0,
                    disk: SimDisk::with_retention(tuning.log_retention_entries),
                    lost_disk: None,
                    sync_in_flight: false,
                    clock,
                    paused: false,
                    deferred: Vec::new(),
                    joining: false,
                    readmitted_by: BTreeSet::new(),
                    sync_fails: false,
                    disk_full_until_us: 0,
                    requests: BTreeMap::new(),
                    watch: NodeWatch::default(),
                }
            })
            .collect();
        let clients = (1..=options.clients as ClientId)
            .map(|id| Client::new(id, *ids.choose(&mut rng).expect("at least one node")))
            .collect();
        World {
            seed,
            rng,
            now_us: 0,
            sequence: 0,
            queue: BTreeMap::new(),
            nodes,
            tuning,
            network,
            clients,
            history: History::default(),
            checker: Checker::default(),
            trace: Trace::new(verbose),
            next_op: 1,
            faults_over: false,
            delivering: None,
            hearings: BTreeMap::new(),
            liveness_target: None,
            liveness_done: false,
            armed_crash: None,
            armed_change: false,
            armed_lease_cut: false,
            writes_quiet_until_us: 0,
            sync_delay_max_us,
            failure: None,
            events: 0,
            effects: Vec::new(),
            ids,
            founders,
            next_change_id: u64::MAX / 2,
            joins: BTreeMap::new(),
            join_requests: BTreeMap::new(),
            options,
        }
    }

    /// Runs the whole scenario and reports.
    pub fn run(mut self) -> RunReport {
        self.trace.line(0, || {
            format!(
                "seed {} | {} nodes | faults {} | {:?} | {:?}",
                self.seed,
                self.options.nodes,
                self.options.faults,
                self.tuning,
                self.network.config
            )
        });
        for id in self.ids.clone() {
            self.start_node(id);
            let jitter = self.rng.random_range(0..TICK_INTERVAL_US);
            self.schedule(jitter, Event::Tick(id));
        }
        for client in 1..=self.options.clients as ClientId {
            let start = self.rng.random_range(0..50_000);
            self.schedule(start, Event::ClientNext(client));
        }
        if self.options.faults.any_scheduled() {
            let first = self.rng.random_range(100_000..1_000_000);
            self.schedule(first, Event::Fault);
        }
        let fault_end_us = self.options.duration_ms * 1000;
        let liveness_deadline_us = fault_end_us + self.options.liveness_bound_ms * 1000;
        while self.failure.is_none() {
            if !self.faults_over && self.next_event_time().is_none_or(|at| at >= fault_end_us) {
                self.now_us = self.now_us.max(fault_end_us);
                self.heal_everything();
            }
            if self.liveness_done {
                break;
            }
            let Some(((at, _), event)) = self.queue.pop_first() else {
                break;
            };
            if at > liveness_deadline_us {
                break;
            }
            self.now_us = at;
            self.events += 1;
            let tick = matches!(event, Event::Tick(_));
            self.handle(event);
            // After every event, not only a node's step: a lease ends, and a promise runs out,
            // with the passing of time alone.
            if self.failure.is_none() {
                if let Err(violation) = self.check_leases() {
                    self.fail(violation);
                }
            }
            // A leader steps down only when ticked (every input ticks it first): after ticks.
            if tick && self.failure.is_none() {
                if let Err(violation) = self.check_step_down() {
                    self.fail(violation);
                }
            }
            if self.events.is_multiple_of(LOG_MATCHING_EVERY_EVENTS) {
                self.check_log_matching();
            }
            if let Some(target) = self.liveness_target {
                // Every joiner that stays reachable eventually joins.
                let joined = self.joins.values().all(|join| join.done);
                self.liveness_done = joined && self.members_applied(target);
            }
        }
        if self.failure.is_none() {
            self.check_log_matching();
        }
        if self.failure.is_none() && !self.liveness_done {
            self.fail(format!(
                "liveness: no write was applied on every node within {} ms after the faults healed{}",
                self.options.liveness_bound_ms,
                self.describe_nodes()
            ));
        }
        if self.failure.is_none() {
            self.check_replicas_agree();
        }
        if self.failure.is_none() {
            match linearizability::check(&self.history) {
                Verdict::Linearizable => {}
                Verdict::Violation { key, operations } => {
                    let shown = operations.len().min(60);
                    self.fail(format!(
                        "linearizability: the history of key {key} ({} operations) has no valid order:\n    {}{}",
                        operations.len(),
                        operations[operations.len() - shown..].join("\n    "),
                        if shown < operations.len() { "\n    (earlier operations omitted)" } else { "" }
                    ));
                }
                Verdict::Inconclusive {
                    key,
                    operations,
                    open_writes,
                } => self.fail(linearizability::out_of_budget(
                    &key,
                    operations,
                    open_writes,
                )),
            }
        }
        RunReport {
            seed: self.seed,
            failure: self.failure,
            trace_hash: self.trace.digest(),
            events: self.events,
            operations_completed: self.history.completed(),
            operations_total: self.history.operations.len(),
            elections: self.checker.elections,
            committed: self.checker.committed_len(),
            released: self
                .nodes
                .iter()
                .filter_map(SimNode::core)
                .map(|core| core.log().first_index() - 1)
                .max()
                .unwrap_or(0),
            simulated_ms: self.now_us / 1000,
        }
    }

    /// Keeps every trace line in `recording` (`--explain`, `--timeline`).
    pub fn record_trace(&mut self, recording: crate::trace::Recording) {
        self.trace.record_into(recording);
    }

    fn next_event_time(&self) -> Option<u64> {
        self.queue.first_key_value().map(|((at, _), _)| *at)
    }

    fn schedule(&mut self, delay_us: u64, event: Event) {
        self.sequence += 1;
        self.queue
            .insert((self.now_us + delay_us, self.sequence), event);
    }

    fn stamp(&mut self) -> u64 {
        self.sequence += 1;
        self.sequence
    }

    fn fail(&mut self, violation: Violation) {
        if self.failure.is_none() {
            self.trace
                .line(self.now_us, || format!("VIOLATION: {violation}"));
            self.failure = Some(format!("at {} ms: {violation}", self.now_us / 1000));
        }
    }

    fn node_ref(&self, id: NodeId) -> &SimNode {
        &self.nodes[id as usize - 1]
    }

    fn node(&mut self, id: NodeId) -> &mut SimNode {
        &mut self.nodes[id as usize - 1]
    }

    fn handle(&mut self, event: Event) {
        if let Some(node) = event_node(&event) {
            let node = self.node(node);
            if node.paused {
                node.deferred.push(event);
                return;
            }
        }
        match event {
            Event::Tick(id) => {
                self.schedule(TICK_INTERVAL_US, Event::Tick(id));
                self.feed(id, |_| {});
            }
            Event::Deliver(message) => {
                let to = message.to;
                self.trace.line(self.now_us, || {
                    format!("n{to} <- n{} {}", message.from, describe_message(&message))
                });
                self.delivering = Some(quorums::Delivering::of(&message));
                self.note_heard(&message);
                self.feed(to, |replica| replica.message(*message));
                self.delivering = None;
            }
            Event::DiskSynced {
                node,
                incarnation,
                up_to,
            } => self.disk_synced(node, incarnation, up_to),
            Event::Request { node, request } => self.request_arrives(node, *request),
            Event::Reply { client, op, reply } => self.reply_arrives(client, op, *reply),
            Event::ClientTimeout { client, op } => {
                let client = &mut self.clients[client as usize - 1];
                if client.current == Some(op) {
                    client.current = None;
                    client.target = *self.ids.choose(&mut self.rng).expect("nodes");
                    let id = client.id;
                    self.trace
                        .line(self.now_us, || format!("client {id}: op {op} timed out"));
                    self.schedule(0, Event::ClientNext(id));
                }
            }
            Event::ClientNext(client) => self.client_next(client),
            Event::Fault => self.inject_fault(),
            Event::ChangeMembership => self.change_membership(),
            Event::ChangeMembershipOnElection => self.change_membership_or_join(false),
            Event::HealPartition => {
                self.trace.line(self.now_us, || "network heals".to_string());
                self.network.heal();
            }
            Event::Restart(id) => self.restart(id),
            Event::Resume(id) => self.resume(id),
            Event::JoinTry(joiner) => self.join_try(joiner),
            Event::Admit(joiner) => self.feed(joiner, |replica| replica.admitted(true)),
            Event::Deafen(id) => {
                if !self.faults_over {
                    for other in self.ids.clone().into_iter().filter(|&other| other != id) {
                        self.network.cut(other, id);
                    }
                    self.trace.line(self.now_us, || format!("n{id} goes deaf"));
                }
            }
            Event::CutLink { from, to } => {
                if !self.faults_over {
                    self.network.cut(from, to);
                    self.trace
                        .line(self.now_us, || format!("n{to} stops hearing n{from}"));
                }
            }
            Event::CutInbound(id) => {
                if self.network.cut_links() > 0 {
                    for other in self.ids.clone().into_iter().filter(|&other| other != id) {
                        self.network.cut(other, id);
                    }
                    self.trace
                        .line(self.now_us, || format!("cut every link into n{id}"));
                }
            }
        }
    }
}

impl crate::options::FaultMix {
    /// Whether any family needs the fault schedule (the others are network settings).
    fn any_scheduled(&self) -> bool {
        self.partition || self.crash || self.pause || self.transfer || self.disk || self.membership
    }
}

/// The node an event is handled by, if it is one that waits while that node is paused.
fn event_node(event: &Event) -> Option<NodeId> {
    match event {
        Event::Deliver(message) => Some(message.to),
        Event::DiskSynced { node, .. } | Event::Request { node, .. } => Some(*node),
        Event::Tick(_)
        | Event::Reply { .. }
        | Event::ClientTimeout { .. }
        | Event::ClientNext(_)
        | Event::Fault
        | Event::ChangeMembership
        | Event::ChangeMembershipOnElection
        | Event::HealPartition
        | Event::CutLink { .. }
        | Event::CutInbound(_)
        | Event::Deafen(_)
        | Event::JoinTry(_)
        | Event::Admit(_)
        | Event::Restart(_)
        | Event::Resume(_) => None,
    }
}

/// Swarm testing (Groce et al., 2012): in half the seeds, each fault family asked for is left
/// out with probability 1/3, so that the others strike more often and in combinations that an
/// everything-at-once mix crowds out (a long partition with no crash to end it, elections with
/// no message loss to delay them). Drawn from a stream of its own.
fn swarm(seed: u64, asked: FaultMix) -> FaultMix {
    let mut draw = ChaCha8Rng::seed_from_u64(seed ^ SWARM_STREAM);
    if draw.random_bool(0.5) {
        return asked;
    }
    let mut keep = |on: bool| on && !draw.random_bool(1.0 / 3.0);
    FaultMix {
        partition: keep(asked.partition),
        loss: keep(asked.loss),
        delay: keep(asked.delay),
        duplicate: keep(asked.duplicate),
        crash: keep(asked.crash),
        pause: keep(asked.pause),
        skew: keep(asked.skew),
        transfer: keep(asked.transfer),
        disk: keep(asked.disk),
        membership: keep(asked.membership),
        disk_loss: asked.disk_loss,
    }
}
