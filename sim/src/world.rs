//! One simulated run: N cores, their disks and clocks, the network between them, clients, and a
//! fault schedule, all driven by one seeded generator through a discrete-event queue.
//!
//! Phases: faults for `duration_ms`; then every fault heals and the cluster must elect a leader
//! and apply a fresh write everywhere within `liveness_bound_ms`; then the client history is
//! checked for linearizability. Safety invariants are checked after every step of every node.

use std::collections::BTreeMap;

use bytes::Bytes;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ravel::core::{
    Action, Config, Input, LogIndex, MembershipChange, Message, NodeId, PersistId, RawNode,
    ReadMode, Role,
};
use ravel::core::{AppendResponse, MessageBody};
use ravel::kv::{KvStateMachine, Outcome};
use ravel::replica::{self, Answer, ApiError, Effect, Replica, SnapshotImage, Ticket};

use crate::checker::{Checker, NodeWatch, Violation};
use crate::client::{to_command, Client, ClientId};
use crate::disk::SimDisk;
use crate::history::{History, OpId, OpKind, OpResult};
use crate::linearizability::{self, Verdict};
use crate::network::{Network, NetworkConfig};
use crate::options::SimOptions;
use crate::trace::Trace;

const TICK_INTERVAL_US: u64 = 10_000;
const CLIENT_TIMEOUT_US: u64 = 1_000_000;
/// Log matching is checked across all pairs every this many events (and at the end).
const LOG_MATCHING_EVERY_EVENTS: u64 = 256;
const LIVENESS_KEY: &str = "liveness";
/// Mixed into the seed for the stragglers' generator.
const STRAGGLER_STREAM: u64 = 0x5354_5241_4747_4c45;

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
    Deliver(Message),
    DiskSynced {
        node: NodeId,
        incarnation: u64,
        up_to: PersistId,
    },
    Request {
        node: NodeId,
        request: Request,
    },
    Reply {
        client: ClientId,
        op: OpId,
        reply: Reply,
    },
    ClientTimeout {
        client: ClientId,
        op: OpId,
    },
    ClientNext(ClientId),
    Fault,
    HealPartition,
    /// Cut every link into this node (the second step of the lease attack).
    CutInbound(NodeId),
    Restart(NodeId),
    Resume(NodeId),
    /// A joiner (re)sends its join request.
    JoinTry(NodeId),
    /// A joiner hears that its join completed.
    Admit(NodeId),
}

struct SimNode {
    id: NodeId,
    /// The node's own replica (the code a real node runs), while it is up.
    replica: Option<Replica<KvStateMachine>>,
    incarnation: u64,
    disk: SimDisk,
    sync_in_flight: bool,
    clock: Clock,
    paused: bool,
    /// Events that arrived while paused, handled on resume.
    deferred: Vec<Event>,
    /// Lost its disk and has not joined again yet: restarts as a joining node.
    joining: bool,
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
    /// Spares going through the join workflow, and which join request came from whom.
    joins: BTreeMap<NodeId, Join>,
    join_requests: BTreeMap<u64, NodeId>,
    tuning: Tuning,
    network: Network,
    clients: Vec<Client>,
    history: History,
    checker: Checker,
    trace: Trace,
    next_op: OpId,
    faults_over: bool,
    /// After healing: the committed index every node must apply once the liveness write returned.
    liveness_target: Option<LogIndex>,
    liveness_done: bool,
    /// Armed by the fault schedule: crash the next node at this moment.
    armed_crash: Option<CrashMoment>,
    /// The slowest fsync of this seed's disks: slow disks keep writes unsynced longer, so a
    /// node that answers before its write is durable is more often caught by a crash.
    sync_delay_max_us: u64,
    failure: Option<Violation>,
    events: u64,
    /// The effects being carried out (one buffer, reused).
    effects: Vec<Effect<KvStateMachine>>,
}

impl World {
    pub fn new(seed: u64, options: SimOptions, verbose: bool) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
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
        let nodes = ids
            .iter()
            .map(|&id| {
                let clock = if faults.skew {
                    Clock {
                        offset_us: rng.random_range(0..10_000_000),
                        drift_ppm: rng.random_range(-drift_max_ppm..=drift_max_ppm),
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
                    disk: SimDisk::default(),
                    sync_in_flight: false,
                    clock,
                    paused: false,
                    deferred: Vec::new(),
                    joining: false,
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
            liveness_target: None,
            liveness_done: false,
            armed_crash: None,
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
            self.handle(event);
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
                Verdict::Inconclusive { key } => self.fail(format!(
                    "linearizability: the search on key {key} ran out of budget"
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
                self.feed(to, |replica| replica.message(message));
            }
            Event::DiskSynced {
                node,
                incarnation,
                up_to,
            } => self.disk_synced(node, incarnation, up_to),
            Event::Request { node, request } => self.request_arrives(node, request),
            Event::Reply { client, op, reply } => self.reply_arrives(client, op, reply),
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
            Event::HealPartition => {
                self.trace.line(self.now_us, || "network heals".to_string());
                self.network.heal();
            }
            Event::Restart(id) => self.restart(id),
            Event::Resume(id) => self.resume(id),
            Event::JoinTry(joiner) => self.join_try(joiner),
            Event::Admit(joiner) => self.feed(joiner, |replica| replica.admitted(true)),
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

    // ---- nodes -------------------------------------------------------------------------------

    fn start_node(&mut self, id: NodeId) {
        let tuning = self.tuning;
        let ids = self.founders.clone();
        let seed = self.seed;
        let bugs = self.options.bugs;
        let now_us = self.now_us;
        let node = self.node(id);
        node.incarnation += 1;
        let mut config = sim_config(id, &ids, &tuning, seed ^ (id << 32) ^ node.incarnation);
        config.planted_bugs = bugs;
        if node.joining {
            config.voters.clear();
            config.joining = true;
        }
        let recovered = node.disk.recover();
        let commit = recovered.hard_state.commit;
        let term = recovered.hard_state.term;
        let core = RawNode::new(config, recovered, node.clock.local_ms(now_us))
            .expect("simulator config is valid");
        let saved = node
            .disk
            .snapshot()
            .map(|(meta, data)| (meta.clone(), data.clone()));
        let kv = match &saved {
            Some((_, data)) => KvStateMachine::restore(data).expect("a saved snapshot restores"),
            None => KvStateMachine::new(),
        };
        node.replica = Some(Replica::new(core, kv, sim_address(id), saved));
        node.watch = NodeWatch {
            term,
            commit,
            role: None,
        };
        let incarnation = node.incarnation;
        self.trace.line(self.now_us, || {
            format!("n{id} starts (incarnation {incarnation}, term {term}, commit {commit})")
        });
    }

    /// Ticks a node with its local time, hands it `input`, and runs its replica round by round
    /// until it has nothing more to say, carrying out what it asks. Checks invariants after each
    /// round, and crashes the node mid-step when a crash is armed for this moment.
    fn feed(&mut self, id: NodeId, input: impl FnOnce(&mut Replica<KvStateMachine>)) {
        let now_us = self.now_us;
        let node = &mut self.nodes[id as usize - 1];
        let local_ms = node.clock.local_ms(now_us);
        let Some(replica) = node.replica.as_mut() else {
            return;
        };
        self.trace.hash(&(now_us, id, local_ms));
        replica.tick(local_ms);
        input(replica);
        if !self.carry_out_effects(id) {
            return;
        }
        loop {
            let node = &mut self.nodes[id as usize - 1];
            let Some(replica) = node.replica.as_mut() else {
                return;
            };
            let Some(actions) = replica.take_round() else {
                self.carry_out_effects(id);
                return;
            };
            let before = node.watch;
            if let Err(violation) = self.checker.after_step(replica.core(), &mut node.watch) {
                return self.fail(violation);
            }
            let moment = match (before.role, node.watch.role) {
                (Some(Role::Leader), Some(Role::Leader)) if node.watch.commit > before.commit => {
                    Some(CrashMoment::LeaderCommits)
                }
                (previous, Some(Role::Leader)) if previous != Some(Role::Leader) => {
                    Some(CrashMoment::LeaderElected)
                }
                _ => None,
            };
            if self.armed_crash == Some(CrashMoment::Acknowledges) && actions.iter().any(is_promise)
            {
                return self.crash_after_promise(id, actions);
            }
            if moment.is_some() && moment == self.armed_crash {
                // Crash before this step's messages to peers leave. A new leader's writes may
                // reach its disk cache first (and survive the crash or not), leaving a divergent
                // no-op.
                // Often chain the other moment: the Figure 8 schedule is a leader lost right
                // after election, then its successor lost right after committing.
                if moment == Some(CrashMoment::LeaderElected) {
                    let persists = actions
                        .into_iter()
                        .filter(|action| matches!(action, Action::Persist { .. }));
                    if !self.execute_all(id, persists) {
                        return;
                    }
                } else if self.rng.random_bool(0.5) {
                    // Or a commit that reached its clients but none of the followers: the
                    // next leader holds those entries without knowing they are committed, and
                    // must not answer reads from its older commit.
                    let local = actions
                        .into_iter()
                        .filter(|action| !matches!(action, Action::Send { .. }));
                    if !self.execute_all(id, local) {
                        return;
                    }
                }
                self.armed_crash = match moment {
                    Some(CrashMoment::LeaderElected) if self.rng.random_bool(0.5) => {
                        Some(CrashMoment::LeaderCommits)
                    }
                    Some(CrashMoment::LeaderCommits) if self.rng.random_bool(0.5) => {
                        Some(CrashMoment::LeaderElected)
                    }
                    _ => None,
                };
                return self.crash_and_restart(id, 20_000..1_000_000);
            }
            if !self.execute_all(id, actions) {
                return;
            }
        }
    }

    /// The armed crash after a promise: carries out the step's actions (what a correct node holds
    /// until its disk synced stays held), then crashes the node before that sync. Often the
    /// leader is then lost as it commits, which may have counted the promise: if the promise
    /// left early, that commit now rests on a write that is gone.
    fn crash_after_promise(&mut self, id: NodeId, actions: Vec<Action>) {
        if !self.execute_all(id, actions) {
            return;
        }
        self.armed_crash = self
            .rng
            .random_bool(0.5)
            .then_some(CrashMoment::LeaderCommits);
        self.trace.line(self.now_us, || {
            format!("n{id}: crash right after a promise")
        });
        self.crash(id);
        // Often a quick restart: a vote request still in flight then finds the node back with
        // whatever its disk kept, free to promise again if it forgot.
        let down_max_us = *[20_000, 1_000_000]
            .choose(&mut self.rng)
            .expect("non-empty");
        let down_us = self.rng.random_range(1_000..down_max_us);
        self.schedule(down_us, Event::Restart(id))
    }

    /// Has the node's replica carry out a round's actions in order, and carries out what it
    /// asks; false if the run failed or the node stopped (nothing after that happens).
    fn execute_all(&mut self, id: NodeId, actions: impl IntoIterator<Item = Action>) -> bool {
        for action in actions {
            self.trace.hash(&(id, &action));
            if let Err(violation) = self.check_action(id, &action) {
                self.fail(violation);
                return false;
            }
            let Some(replica) = self.nodes[id as usize - 1].replica.as_mut() else {
                return false;
            };
            replica.execute(action);
            if !self.carry_out_effects(id) {
                return false;
            }
        }
        true
    }

    /// What the checker sees of an action before the replica carries it out.
    fn check_action(&mut self, id: NodeId, action: &Action) -> Result<(), Violation> {
        match action {
            Action::Send { message, .. } => {
                let grants_vote = matches!(
                    message.body,
                    MessageBody::VoteResponse {
                        pre_vote: false,
                        granted: true
                    }
                );
                let outsider = id > self.founders.len() as NodeId
                    && self
                        .node_ref(id)
                        .core()
                        .is_some_and(|core| core.log().last_index() == 0);
                if grants_vote && outsider {
                    return Err(format!("node {id} votes before it ever joined the cluster"));
                }
            }
            Action::Apply { entries } => {
                for entry in entries {
                    self.checker.on_apply(id, entry)?;
                }
            }
            Action::InstallSnapshot { meta, .. } => {
                self.checker.on_install(id, meta)?;
                self.trace
                    .line(self.now_us, || format!("n{id} installs snapshot {meta:?}"));
            }
            _ => {}
        }
        Ok(())
    }

    /// Carries out what the node's replica asked for, in order; false if the run failed or the
    /// node stopped.
    fn carry_out_effects(&mut self, id: NodeId) -> bool {
        let incarnation = self.nodes[id as usize - 1].incarnation;
        let Some(replica) = self.nodes[id as usize - 1].replica.as_mut() else {
            return false;
        };
        let mut effects = std::mem::take(&mut self.effects);
        replica.move_effects_to(&mut effects);
        let mut carried_out = true;
        for effect in effects.drain(..) {
            if !carried_out || self.nodes[id as usize - 1].incarnation != incarnation {
                carried_out = false;
                continue;
            }
            if let Err(violation) = self.carry_out(id, effect) {
                self.fail(violation);
                carried_out = false;
            }
        }
        self.effects = effects;
        carried_out && self.nodes[id as usize - 1].incarnation == incarnation
    }

    fn carry_out(&mut self, id: NodeId, effect: Effect<KvStateMachine>) -> Result<(), Violation> {
        match effect {
            Effect::Persist {
                id: persist_id,
                hard_state,
                entries,
                sync: _,
            } => {
                self.trace.line(self.now_us, || {
                    format!(
                        "n{id} persist #{persist_id} {hard_state:?} +{} entries",
                        entries.len()
                    )
                });
                if self.node(id).disk_full_until_us > self.now_us {
                    // The write fails with "no space": the node stops until space is freed.
                    let restart_in = self.node(id).disk_full_until_us - self.now_us;
                    self.trace
                        .line(self.now_us, || format!("n{id}: disk full; the node stops"));
                    self.crash(id);
                    self.schedule(restart_in, Event::Restart(id));
                    return Ok(());
                }
                self.node(id).disk.write(persist_id, hard_state, entries);
                self.schedule_sync(id);
            }
            Effect::Send(message) => self.transmit(message),
            Effect::SaveSnapshot { meta, image } => {
                let data = Box::new(image).encode();
                self.trace
                    .line(self.now_us, || format!("n{id} saves snapshot {meta:?}"));
                let node = self.node(id);
                node.disk.save_snapshot(meta.clone(), data.clone());
                let replica = node.replica.as_mut().expect("up");
                replica.snapshot_saved(meta.clone(), data);
                replica.completed(Input::SnapshotSaved { meta });
            }
            Effect::ReadSnapshotChunk {
                to,
                meta,
                offset,
                bytes_max,
            } => {
                let node = self.node(id);
                let saved = node.disk.snapshot().filter(|(saved, _)| *saved == meta);
                if let Some(chunk) = saved.and_then(|(_, data)| {
                    Input::snapshot_chunk(to, meta.clone(), offset, bytes_max, data)
                }) {
                    node.replica.as_mut().expect("up").completed(chunk);
                }
            }
            Effect::InstallSnapshot {
                id: persist_id,
                meta,
                data,
            } => {
                self.node(id).disk.write_install(persist_id, meta, data);
                self.schedule_sync(id);
            }
            // The simulator models a node's standing with `joining` (set when it loses its disk,
            // cleared when its join completes).
            Effect::RecordStanding(_) | Effect::AddressLearned { .. } => {}
            Effect::Reply { ticket, reply } => self.replied(id, ticket, reply)?,
            Effect::LeaderChanged { role, term, leader } => {
                self.trace.line(self.now_us, || {
                    format!("n{id} is {role:?} in term {term}, leader {leader:?}")
                });
            }
            Effect::MemberStateChanged { from, to } => {
                self.trace
                    .line(self.now_us, || format!("n{id}: {from:?} -> {to:?}"));
            }
            Effect::Fatal(reason) => return Err(format!("node {id} stops: {reason}")),
        }
        Ok(())
    }

    /// Node `id` answered the request under `ticket`: a client's request (checked against what
    /// was asked, then sent back), or a join (the joiner is admitted or redirected).
    fn replied(
        &mut self,
        id: NodeId,
        ticket: Ticket,
        reply: replica::Reply<KvStateMachine>,
    ) -> Result<(), Violation> {
        if let Some(joiner) = self.join_requests.get(&ticket).copied() {
            match reply {
                Ok(_) => {
                    if let Some(join) = self.joins.get_mut(&joiner) {
                        join.done = true;
                    }
                    // The leader's answer reaches the joiner (and it records it durably).
                    self.node(joiner).joining = false;
                    self.schedule(1, Event::Admit(joiner));
                    self.trace
                        .line(self.now_us, || format!("n{joiner} has joined"));
                }
                Err(error) => {
                    // Redirected: the joiner asks the hinted leader (or anyone) next time.
                    let hint = match error {
                        ApiError::NotLeader { leader_id, .. } => leader_id,
                        _ => None,
                    };
                    let next =
                        hint.unwrap_or_else(|| *self.ids.choose(&mut self.rng).expect("nodes"));
                    if let Some(join) = self.joins.get_mut(&joiner) {
                        join.target = next;
                    }
                }
            }
            return Ok(());
        }
        // Membership changes the fault schedule asked for need no answer.
        let Some(request) = self.node(id).requests.remove(&ticket) else {
            return Ok(());
        };
        let wrong = |answer: &dyn std::fmt::Debug| {
            format!(
                "node {id} answered client {}'s {:?} with {answer:?}",
                request.client, request.kind
            )
        };
        let reply = match reply {
            Ok(Answer::Written { outcome, .. }) => match (&request.kind, outcome) {
                (OpKind::Put(_), Outcome::Put) | (OpKind::Delete, Outcome::Deleted { .. }) => {
                    Reply::Ok(OpResult::Done)
                }
                (OpKind::CompareAndSwap { .. }, Outcome::CompareAndSwap { swapped, .. }) => {
                    Reply::Ok(OpResult::Swapped(swapped))
                }
                (_, outcome) => return Err(wrong(&outcome)),
            },
            Ok(Answer::Read { answer, .. }) if matches!(request.kind, OpKind::Get) => {
                Reply::Ok(OpResult::Value(answer))
            }
            Ok(answer) => return Err(wrong(&answer)),
            Err(ApiError::NotLeader { leader_id, .. }) => Reply::Refused(leader_id),
            Err(ApiError::OutcomeUnknown(_)) => Reply::Unknown,
            Err(_) => Reply::Refused(None),
        };
        self.send_reply(&request, reply);
        Ok(())
    }

    /// Starts a sync of everything written so far, unless one is already under way.
    fn schedule_sync(&mut self, id: NodeId) {
        let delay = self.rng.random_range(100..self.sync_delay_max_us);
        let node = self.node(id);
        if node.sync_in_flight {
            return;
        }
        node.sync_in_flight = true;
        let event = Event::DiskSynced {
            node: id,
            incarnation: node.incarnation,
            up_to: node.disk.written_id,
        };
        self.schedule(delay, event);
    }

    fn transmit(&mut self, message: Message) {
        self.trace.line(self.now_us, || {
            format!(
                "n{} -> n{} {}",
                message.from,
                message.to,
                describe_message(&message)
            )
        });
        let delays = self.network.route(message.from, message.to, &mut self.rng);
        if let Some((last, rest)) = delays.split_last() {
            for &delay in rest {
                self.schedule(delay, Event::Deliver(message.clone()));
            }
            self.schedule(*last, Event::Deliver(message));
        }
    }

    fn disk_synced(&mut self, id: NodeId, incarnation: u64, up_to: PersistId) {
        let node = self.node(id);
        if node.incarnation != incarnation || node.replica.is_none() {
            return;
        }
        node.sync_in_flight = false;
        if node.sync_fails {
            // fsync reported an error: what it wrote may or may not be on disk, so the node
            // must stop rather than acknowledge anything (fail-stop), and restart.
            node.sync_fails = false;
            self.trace.line(self.now_us, || {
                format!("n{id}: fsync fails; the node stops")
            });
            return self.crash_and_restart(id, 50_000..1_000_000);
        }
        node.disk.sync_up_to(up_to);
        let synced = node.disk.synced_id;
        if node.disk.has_unsynced() {
            node.sync_in_flight = true;
            let written = node.disk.written_id;
            let delay = self.rng.random_range(100..self.sync_delay_max_us);
            self.schedule(
                delay,
                Event::DiskSynced {
                    node: id,
                    incarnation,
                    up_to: written,
                },
            );
        }
        // Messages that waited for these writes leave now.
        self.feed(id, |replica| {
            replica.completed(Input::Persisted { id: synced })
        });
    }

    fn crash(&mut self, id: NodeId) {
        let node = &mut self.nodes[id as usize - 1];
        if node.replica.is_none() {
            return;
        }
        let survived = node.disk.crash(&mut self.rng);
        node.replica = None;
        node.incarnation += 1;
        node.sync_in_flight = false;
        node.paused = false;
        node.deferred.clear();
        node.requests.clear();
        self.trace.line(self.now_us, || {
            format!("n{id} crashes ({survived} unsynced writes survive)")
        });
    }

    /// Stops `id` as SIGTERM would, before it goes down: its storage finishes every write, and
    /// its replica answers every request still waiting (as the node's event loop does when it
    /// stops). A write it handed to the core may still commit, so anything but "outcome
    /// unknown" for it would let the client retry and write twice.
    fn stop_gracefully(&mut self, id: NodeId) {
        let node = self.node(id);
        if node.paused {
            return;
        }
        let Some(replica) = node.replica.as_mut() else {
            return;
        };
        replica.abandon_waiting(ApiError::ShuttingDown);
        let written = node.disk.written_id;
        node.disk.sync_up_to(written);
        self.trace
            .line(self.now_us, || format!("n{id} stops gracefully"));
        self.carry_out_effects(id);
    }

    /// Crashes `id` and restarts it after a time drawn from `down_us`.
    fn crash_and_restart(&mut self, id: NodeId, down_us: std::ops::Range<u64>) {
        self.crash(id);
        let down_us = self.rng.random_range(down_us);
        self.schedule(down_us, Event::Restart(id));
    }

    fn restart(&mut self, id: NodeId) {
        if self.node(id).replica.is_none() {
            self.start_node(id);
        }
    }

    fn resume(&mut self, id: NodeId) {
        let node = self.node(id);
        if !node.paused {
            return;
        }
        node.paused = false;
        let deferred = std::mem::take(&mut node.deferred);
        self.trace.line(self.now_us, || {
            format!("n{id} resumes with {} queued events", deferred.len())
        });
        for event in deferred {
            self.handle(event);
        }
    }

    // ---- clients -----------------------------------------------------------------------------

    fn client_next(&mut self, client: ClientId) {
        if self.faults_over && client != self.liveness_client() {
            return;
        }
        let keys = self.options.keys;
        let is_liveness = client == self.liveness_client();
        let client_state = &mut self.clients[client as usize - 1];
        if client_state.current.is_some() {
            return;
        }
        let (key, kind) = if is_liveness {
            let value = Bytes::from(format!("live-{}", self.next_op));
            (
                Bytes::from_static(LIVENESS_KEY.as_bytes()),
                OpKind::Put(value),
            )
        } else {
            client_state.next_operation(keys, &mut self.rng)
        };
        let op = self.next_op;
        self.next_op += 1;
        // One request in three goes to any member, as a client behind a load balancer would send
        // it: followers pass writes on to the leader (`forwarding.rs`) and serve reads with a
        // read index from it (`read_forwarding.rs`).
        let anywhere = !is_liveness && self.rng.random_range(0..3) == 0;
        let target = if anywhere {
            *self.ids.choose(&mut self.rng).expect("nodes")
        } else {
            self.clients[client as usize - 1].target
        };
        self.clients[client as usize - 1].current = Some(op);
        let at = self.stamp();
        self.history.call(op, client, key.clone(), kind.clone(), at);
        self.trace.line(self.now_us, || {
            format!("client {client}: op {op} {kind:?} on {key:?} -> n{target}")
        });
        let delay = self.network.delay(&mut self.rng);
        let request = Request {
            client,
            op,
            key,
            kind,
        };
        self.schedule(
            delay,
            Event::Request {
                node: target,
                request,
            },
        );
        self.schedule(CLIENT_TIMEOUT_US, Event::ClientTimeout { client, op });
    }

    /// A client's request reaches node `id`: it goes through the replica's request path, as a
    /// real client's does (a follower passes writes on and asks the leader for a read index).
    fn request_arrives(&mut self, id: NodeId, request: Request) {
        let node = self.node(id);
        if node.replica.is_none() {
            return;
        }
        let ticket: Ticket = request.op;
        let asked = match to_command(&request.key, &request.kind) {
            Some(command) => replica::Request::Write {
                command: command.encode(),
                may_forward: true,
            },
            None => replica::Request::Read {
                query: request.key.clone(),
                stale: false,
                may_forward: true,
            },
        };
        node.requests.insert(ticket, request);
        self.feed(id, |replica| replica.request(ticket, asked));
    }

    fn send_reply(&mut self, request: &Request, reply: Reply) {
        let delay = self.network.delay(&mut self.rng);
        self.schedule(
            delay,
            Event::Reply {
                client: request.client,
                op: request.op,
                reply,
            },
        );
    }

    fn reply_arrives(&mut self, client: ClientId, op: OpId, reply: Reply) {
        let client_state = &mut self.clients[client as usize - 1];
        if client_state.current != Some(op) {
            return;
        }
        client_state.current = None;
        let think_us = match reply {
            Reply::Ok(result) => {
                let at = self.stamp();
                self.trace.line(self.now_us, || {
                    format!("client {client}: op {op} -> {result:?}")
                });
                self.history.complete(op, result, at);
                if client == self.liveness_client() {
                    self.liveness_target = Some(self.checker.committed_len());
                    return;
                }
                self.rng.random_range(0..20_000)
            }
            Reply::Unknown => {
                let client_state = &mut self.clients[client as usize - 1];
                client_state.target = *self.ids.choose(&mut self.rng).expect("nodes");
                self.trace.line(self.now_us, || {
                    format!("client {client}: op {op} outcome unknown")
                });
                self.rng.random_range(1_000..20_000)
            }
            Reply::Refused(hint) => {
                self.history.fail(op);
                let client_state = &mut self.clients[client as usize - 1];
                client_state.target =
                    hint.unwrap_or_else(|| *self.ids.choose(&mut self.rng).expect("nodes"));
                self.rng.random_range(1_000..20_000)
            }
        };
        self.schedule(think_us, Event::ClientNext(client));
    }

    fn liveness_client(&self) -> ClientId {
        self.options.clients as ClientId + 1
    }

    // ---- faults ------------------------------------------------------------------------------

    fn inject_fault(&mut self) {
        let faults = self.options.faults;
        let mut choices: Vec<&str> = Vec::new();
        if faults.partition && self.network.cut_links() == 0 {
            choices.extend(["partition", "partition"]);
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
            choices.extend(["membership", "membership", "membership"]);
        }
        if let Some(&choice) = choices.choose(&mut self.rng) {
            match choice {
                "partition" => self.partition(),
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
                "crash-on-commit" => self.armed_crash = Some(CrashMoment::LeaderCommits),
                "crash-on-ack" => self.armed_crash = Some(CrashMoment::Acknowledges),
                "crash-on-election" => self.armed_crash = Some(CrashMoment::LeaderElected),
                "pause" => {
                    let target = self.pick_target();
                    let node = self.node(target);
                    if node.replica.is_some() && !node.paused {
                        node.paused = true;
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

    /// Asks the current leader for a random membership change: add a spare as learner, promote
    /// a learner, remove a member (the leader too), or replace the voters through a joint
    /// configuration. The leader may refuse (a change pending, its term not committed yet).
    fn change_membership(&mut self) {
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
        if !outside.is_empty() && self.rng.random_bool(0.5) {
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
    fn wipe_and_rejoin(&mut self) {
        let Some(leader) = self.current_leader() else {
            return;
        };
        let leader_core = self.nodes[leader as usize - 1].core().expect("up");
        if leader_core.membership_change_pending() {
            return; // The voters may be about to change; judge the loss against settled ones.
        }
        let membership = leader_core.membership().clone();
        let members: Vec<NodeId> = membership.replicas().into_iter().collect();
        let Some(&victim) = members.choose(&mut self.rng) else {
            return;
        };
        // The voters left must still be a majority: a lost disk is a lost voter until it rejoins.
        let voters = membership.voters.len();
        let left = voters - usize::from(membership.voters.contains(&victim));
        if membership.is_joint() || left < voters / 2 + 1 {
            return;
        }
        self.crash(victim);
        let node = self.node(victim);
        node.disk = SimDisk::default();
        node.joining = true;
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
    fn join_try(&mut self, joiner: NodeId) {
        let Some(join) = self.joins.get(&joiner) else {
            return;
        };
        if join.done {
            return;
        }
        let target = join.target;
        let retry_us = self.rng.random_range(100_000..400_000);
        self.schedule(retry_us, Event::JoinTry(joiner));
        let Some(last_index) = self.node(joiner).core().map(|core| core.log().last_index()) else {
            return;
        };
        if self.node(target).replica.is_none() || self.node(target).paused {
            self.joins.get_mut(&joiner).expect("present").target =
                *self.ids.choose(&mut self.rng).expect("nodes");
            return;
        }
        self.next_change_id += 1;
        let id = self.next_change_id;
        self.join_requests.insert(id, joiner);
        self.trace
            .line(self.now_us, || format!("n{joiner} asks n{target} to join"));
        let join = replica::Request::Join {
            node: joiner,
            address: sim_address(joiner),
            last_index,
            follower_only: false,
        };
        self.feed(target, |replica| replica.request(id, join));
    }

    /// Every member of the leader's configuration is up and applied `target`.
    fn members_applied(&self, target: LogIndex) -> bool {
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

    /// The current leader two times in five, otherwise any node.
    fn pick_target(&mut self) -> NodeId {
        match self.current_leader() {
            Some(leader) if self.rng.random_bool(0.4) => leader,
            _ => *self.ids.choose(&mut self.rng).expect("nodes"),
        }
    }

    fn current_leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|node| node.core().map(RawNode::status))
            .filter(|status| status.role == Role::Leader)
            .max_by_key(|status| status.term)
            .map(|status| status.id)
    }

    fn partition(&mut self) {
        let all = self.ids.clone();
        let mut shuffled = all.clone();
        rand::seq::SliceRandom::shuffle(shuffled.as_mut_slice(), &mut self.rng);
        let description = match self.rng.random_range(0..5) {
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
                self.network.cut(leader, deaf);
                let later_us = self.rng.random_range(80_000..145_000);
                self.schedule(later_us, Event::CutInbound(leader));
                format!("lease attack: n{deaf} stops hearing leader n{leader}; n{leader} goes deaf in {} ms", later_us / 1000)
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

    fn heal_everything(&mut self) {
        self.faults_over = true;
        self.trace
            .line(self.now_us, || "faults end: everything heals".to_string());
        self.network.heal();
        self.network.config.loss_rate = 0.0;
        self.network.config.duplicate_rate = 0.0;
        self.network.config.straggler_rate = 0.0;
        self.queue
            .retain(|_, event| !matches!(event, Event::Fault | Event::HealPartition));
        self.armed_crash = None;
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

    // ---- checks ------------------------------------------------------------------------------

    fn check_log_matching(&mut self) {
        let cores: Vec<&RawNode> = self.nodes.iter().filter_map(SimNode::core).collect();
        if let Err(violation) = self.checker.check_log_matching(&cores) {
            self.fail(violation);
        }
    }

    /// Replicas that applied the same index hold byte-identical state machines (this catches
    /// a snapshot that restores to the wrong state, which no log check sees).
    fn check_replicas_agree(&mut self) {
        let mut by_applied: BTreeMap<LogIndex, (NodeId, Bytes)> = BTreeMap::new();
        for node in &self.nodes {
            let Some(kv) = node.replica.as_ref().map(Replica::state) else {
                continue;
            };
            let state = kv.snapshot();
            match by_applied.get(&kv.applied_index()) {
                Some((other, other_state)) if *other_state != state => {
                    let violation = format!(
                        "state machines of nodes {other} and {} differ after applying {} entries",
                        node.id,
                        kv.applied_index()
                    );
                    return self.fail(violation);
                }
                Some(_) => {}
                None => {
                    by_applied.insert(kv.applied_index(), (node.id, state));
                }
            }
        }
    }

    fn describe_nodes(&self) -> String {
        let mut text = String::new();
        for node in &self.nodes {
            match node.core() {
                Some(core) => text.push_str(&format!(
                    "\n    n{}: {:?}, voters {:?} (outgoing {:?}), learners {:?}",
                    node.id,
                    core.status(),
                    core.membership().voters,
                    core.membership().outgoing_voters,
                    core.membership().learners
                )),
                None => text.push_str(&format!("\n    n{}: down", node.id)),
            }
        }
        text
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
        | Event::HealPartition
        | Event::CutInbound(_)
        | Event::JoinTry(_)
        | Event::Admit(_)
        | Event::Restart(_)
        | Event::Resume(_) => None,
    }
}

/// What varies between seeds in the cores' configuration.
#[derive(Clone, Copy, Debug)]
pub struct Tuning {
    pub read_mode: ReadMode,
    pub entries_per_message_max: usize,
    pub inflight_messages_max: usize,
    /// 0: no snapshots in this seed.
    pub snapshot_interval_entries: u64,
    pub snapshot_trailing_entries: u64,
    pub snapshot_chunk_bytes_max: usize,
}

impl Tuning {
    fn draw(read_mode: Option<ReadMode>, rng: &mut ChaCha8Rng) -> Self {
        Tuning {
            read_mode: read_mode.unwrap_or(if rng.random_bool(0.5) {
                ReadMode::ReadIndex
            } else {
                ReadMode::Lease
            }),
            entries_per_message_max: *[1, 2, 8, 64].choose(rng).expect("non-empty"),
            inflight_messages_max: *[1, 4, 16].choose(rng).expect("non-empty"),
            snapshot_interval_entries: *[0, 10, 50].choose(rng).expect("non-empty"),
            snapshot_trailing_entries: *[0, 5, 50].choose(rng).expect("non-empty"),
            snapshot_chunk_bytes_max: *[16, 64, 4096].choose(rng).expect("non-empty"),
        }
    }
}

/// The core configuration every simulated node runs with: short timeouts so that a few simulated
/// seconds hold many elections, and small flow-control limits so that they are exercised.
pub fn sim_config(id: NodeId, ids: &[NodeId], tuning: &Tuning, seed: u64) -> Config {
    let mut config = Config::new(id, ids.iter().copied());
    config.election_timeout_min_ms = 150;
    config.election_timeout_max_ms = 300;
    config.heartbeat_interval_ms = 30;
    config.read_mode = tuning.read_mode;
    config.clock_drift_max_ppm = 20_000;
    config.entries_per_message_max = tuning.entries_per_message_max;
    config.bytes_per_message_max = 2048;
    config.inflight_messages_max = tuning.inflight_messages_max;
    config.snapshot_interval_entries = tuning.snapshot_interval_entries;
    config.snapshot_trailing_entries = tuning.snapshot_trailing_entries;
    config.snapshot_chunk_bytes_max = tuning.snapshot_chunk_bytes_max;
    config.uncommitted_entries_max = 256;
    config.release_batch_entries_min = 8;
    config.promotion_lag_max_entries = 10;
    config.seed = seed;
    config
}

fn describe_message(message: &Message) -> String {
    let detail = match &message.body {
        MessageBody::VoteRequest {
            last_log_index,
            last_log_term,
            leadership_transfer,
            ..
        } => format!(
            "last=({last_log_index},{last_log_term}){}",
            if *leadership_transfer {
                " transfer"
            } else {
                ""
            }
        ),
        MessageBody::VoteResponse { granted, .. } => format!("granted={granted}"),
        MessageBody::Append {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
            ..
        } => format!(
            "prev=({prev_log_index},{prev_log_term}) entries={} commit={leader_commit}",
            entries.len()
        ),
        MessageBody::AppendResponse(response) => format!("{response:?}"),
        MessageBody::Heartbeat { commit, round } => format!("commit={commit} round={round}"),
        MessageBody::HeartbeatResponse { round, joining } => {
            format!("round={round} joining={joining}")
        }
        MessageBody::TimeoutNow => String::new(),
        MessageBody::SnapshotChunk {
            meta,
            offset,
            data,
            done,
        } => format!("{meta:?} offset={offset} bytes={} done={done}", data.len()),
        MessageBody::SnapshotAck { meta, received } => format!("{meta:?} received={received}"),
        MessageBody::Propose { seq, proposals, .. } => {
            format!("seq={seq} proposals={}", proposals.len())
        }
        MessageBody::ProposeAccepted { first_index, ids } => {
            format!("first={first_index} count={}", ids.len())
        }
        MessageBody::ProposeRefused { ids, reason } => {
            format!("count={} reason={reason:?}", ids.len())
        }
        MessageBody::ReadIndex { seq, .. } => format!("seq={seq}"),
        MessageBody::ReadIndexResponse { seq, index, .. } => format!("seq={seq} index={index}"),
        MessageBody::Removed { config_index } => format!("config_index={config_index}"),
    };
    format!("{} t{} {detail}", message.body.kind(), message.term)
}

/// Where the simulator says node `id` is reached (replicated in its address book like a real
/// node's address).
fn sim_address(id: NodeId) -> String {
    format!("sim-n{id}")
}

/// A message that promises something the sender's disk must keep: an accepted append or a
/// granted vote.
fn is_promise(action: &Action) -> bool {
    match action {
        Action::Send { message, .. } => matches!(
            message.body,
            MessageBody::AppendResponse(AppendResponse::Accepted { .. })
                | MessageBody::VoteResponse {
                    pre_vote: false,
                    granted: true
                }
        ),
        _ => false,
    }
}
