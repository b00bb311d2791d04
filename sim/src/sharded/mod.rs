//! The sharded store under simulation, all sans-IO in one seeded world: an admin group of three
//! `Replica<Directory>`s and data groups of three `Replica<KvStateMachine>`s, on simulated disks
//! and one simulated network, driven as the real processes drive them:
//!
//! - servers register through random admin replicas at once, racing (retrying with the same
//!   token after a timeout), and each data group starts once the admin has filled it;
//! - every data leader reports its leadership to the admin, then claims its partitions;
//! - clients route every key themselves — partition, owning group, that group's leader — from a
//!   directory read through a random admin replica, reread after a refusal;
//! - in half the seeds a group is added midway: the directory gives it its share, and the
//!   admin leader's mover (the real `MoveRun` driver) moves partitions to it — freeze at the
//!   source, export and ingest in chunks, commit in the directory, drop at the source, serve at
//!   the destination — racing every fault, a new admin leader starting again from its record;
//! - crashes that lose unsynced writes (admin and data replicas alike), partitions, loss,
//!   duplication and delay, until the faults heal.
//!
//! Checked: the Raft invariants of every group, after every step; the directory's invariants
//! on every admin replica after every step (each server in exactly one group of at most the
//! target size, partitions owned by existing groups, a group's recorded leader term never going
//! back within a replica's run, and every recorded leader really led that group in that term);
//! a retried registration gets the same answer; every group holds only keys it owns (or is
//! moving in or out); no partition served by two groups at one epoch; the linearizability of the
//! whole client history, key by key, across moves; and, after healing, every group's leader
//! known to the admin, every move carried out, every group holding exactly its share of the
//! table, and writes completing again.

mod agents;
mod armed;
mod checks;
mod clients;
mod effects;
mod faults;
pub mod host;
mod mover;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ravel::core::{Input, Message, NodeId, PersistId, PlantedBugs, Role};
use ravel::directory::{
    Directory, DirectoryAnswer, DirectoryBugs, DirectoryCommand, DirectoryOutcome, DirectoryQuery,
    DirectorySettings,
};
use ravel::kv::{Command, KvStateMachine, Outcome};
use ravel::replica::{Answer, ApiError, Effect, Request, StateMachine};
use ravel::sharding::{partition_of, GroupId};

use crate::checker::{Checker, Violation};
use crate::history::{History, OpId, OpKind, OpResult};
use crate::linearizability::{self, Verdict};
use crate::network::{Network, NetworkConfig};
use crate::trace::Trace;
use crate::world::Tuning;
use host::Host;
use mover::MOVER_TICK_US;

pub use checks::check_directory;

const TICK_US: u64 = 10_000;
/// A request that got no answer in this long is given up (its outcome unknown).
const REQUEST_TIMEOUT_US: u64 = 1_000_000;
const ADMIN_IDS: [NodeId; 3] = [1, 2, 3];
const GROUP_SIZE: u32 = 3;

#[derive(Clone, Debug)]
pub struct ShardedOptions {
    pub groups: usize,
    pub clients: usize,
    pub keys: u64,
    pub duration_ms: u64,
    pub liveness_bound_ms: u64,
    pub faults: bool,
    /// Mistakes planted in the directory, to show the checks catch them.
    pub bugs: DirectoryBugs,
    /// Classic Raft bugs planted in every core.
    pub core_bugs: PlantedBugs,
    /// Relocation mistakes planted in every data group's state machine.
    pub shard_bugs: ravel::kv::planted::ShardBugs,
    /// Some seeds (drawn) add a group midway: three more servers register, the directory gives
    /// the new group its share, and partitions move to it while the faults go on.
    pub add_group: bool,
}

impl Default for ShardedOptions {
    fn default() -> Self {
        ShardedOptions {
            groups: 2,
            clients: 6,
            keys: 12,
            duration_ms: 6_000,
            liveness_bound_ms: 20_000,
            faults: true,
            bugs: DirectoryBugs::default(),
            core_bugs: PlantedBugs::default(),
            shard_bugs: Default::default(),
            add_group: true,
        }
    }
}

#[derive(Debug)]
pub struct ShardedReport {
    pub seed: u64,
    pub failure: Option<String>,
    pub trace_hash: u64,
    pub operations_completed: usize,
    pub operations_total: usize,
    pub simulated_ms: u64,
}

/// Who waits for a request's answer.
#[derive(Clone, Debug)]
pub enum Asker {
    Initialize,
    Register {
        server: usize,
    },
    Report {
        node: NodeId,
        term: u64,
    },
    ClaimRead {
        node: NodeId,
        term: u64,
    },
    Claim {
        node: NodeId,
        term: u64,
    },
    ClientRoute {
        client: usize,
    },
    Client {
        client: usize,
        op: OpId,
    },
    /// The operator retiring a group.
    Retire,
    /// A copy of one of the mover's steps that a former admin leader sent and that arrives
    /// late: nobody waits for its answer.
    LateStep,
    /// The admin leader's mover, waiting for ask `ask` of the move of `partition` to `epoch`.
    Mover {
        partition: u32,
        epoch: u64,
        ask: u64,
    },
}

enum Event {
    Tick(NodeId),
    Deliver(Message),
    Synced {
        node: NodeId,
        incarnation: u64,
        up_to: PersistId,
    },
    AdminRequest {
        node: NodeId,
        asker: Asker,
        request: Request<DirectoryQuery>,
    },
    DataRequest {
        node: NodeId,
        asker: Asker,
        request: Request<Bytes>,
    },
    Initialize,
    Register(usize),
    Report {
        node: NodeId,
        term: u64,
    },
    ClaimRead {
        node: NodeId,
        term: u64,
    },
    ClientNext(usize),
    MoverTick,
    /// The operator asks the admin to retire a group (again, until it answers).
    Retire(GroupId),
    /// A move step sent again long after the mover sent it (see [`Asker::LateStep`]).
    LateStep {
        group: GroupId,
        command: Command,
    },
    ClientTimeout {
        client: usize,
        op: Option<OpId>,
    },
    Fault,
    /// A crash armed at a move's step (see `armed`).
    Crash(NodeId),
    Restart(NodeId),
    Heal,
}

#[derive(Default)]
struct SimClient {
    /// The directory this client routes by.
    route: Option<Box<Directory>>,
    current: Option<OpId>,
    routing: bool,
}

pub struct ShardedWorld {
    seed: u64,
    options: ShardedOptions,
    rng: ChaCha8Rng,
    tuning: Tuning,
    now_us: u64,
    sequence: u64,
    queue: BTreeMap<(u64, u64), Event>,
    network: Network,
    admins: Vec<Host<Directory>>,
    data: BTreeMap<NodeId, Host<KvStateMachine>>,
    /// Which group each started data node belongs to.
    group_of: BTreeMap<NodeId, GroupId>,
    admin_checker: Checker,
    checkers: BTreeMap<GroupId, Checker>,
    settings: DirectorySettings,
    initialized: bool,
    /// Each server's registration answer: (node id, group).
    assignments: Vec<Option<(NodeId, GroupId)>>,
    started_groups: BTreeSet<GroupId>,
    /// Every (group, node, term) in which a data node led its group.
    led: BTreeSet<(GroupId, NodeId, u64)>,
    reported: BTreeSet<(NodeId, u64)>,
    claimed: BTreeSet<(NodeId, u64)>,
    /// Per admin replica and incarnation: the last leader term seen for each group.
    admin_terms: BTreeMap<(NodeId, u64, GroupId), u64>,
    clients: Vec<SimClient>,
    history: History,
    next_op: OpId,
    trace: Trace,
    faults_over: bool,
    healed_at_us: Option<u64>,
    completed_after_heal: usize,
    failure: Option<String>,
    /// This seed adds a group midway (see [`ShardedOptions::add_group`]).
    adds_group: bool,
    /// This seed retires this group at this time (µs).
    retires: Option<(GroupId, u64)>,
    /// The admin answered the retirement.
    retired: bool,
    mover: mover::Mover,
    /// An uncommitted move with no step taken for this long is rolled back.
    give_up_us: u64,
    /// Bytes of pairs per exported chunk, about.
    chunk_bytes: usize,
    /// How often a step the mover sends to a group arrives again later, as one from an admin
    /// leader deposed since would (0 in most seeds), and the stream that draws them.
    late_step_rate: f64,
    late_steps: ChaCha8Rng,
    /// The move step right after which the party that took it crashes (see `armed`), and the
    /// stream that arms the next one.
    armed_move_crash: Option<armed::MoveMoment>,
    armed_moves: ChaCha8Rng,
}

impl ShardedWorld {
    pub fn new(seed: u64, options: ShardedOptions, verbose: bool) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5348_4152_4445_4421);
        let faults = options.faults;
        let network = Network::new(
            NetworkConfig {
                loss_rate: if faults {
                    rng.random_range(0.0..0.03)
                } else {
                    0.0
                },
                duplicate_rate: if faults {
                    rng.random_range(0.0..0.03)
                } else {
                    0.0
                },
                delay_min_us: 200,
                delay_max_us: if faults {
                    rng.random_range(1_000..20_000)
                } else {
                    1_000
                },
                // Messages and requests arriving long after they were sent (a move's step of
                // an attempt rolled back since, say), from a stream of their own.
                straggler_rate: if faults {
                    *[0.0, 0.002, 0.01]
                        .choose(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x4c41_5445))
                        .expect("non-empty")
                } else {
                    0.0
                },
            },
            ChaCha8Rng::seed_from_u64(seed ^ 0x5354_5241_4747_4c45),
        );
        let tuning = Tuning::draw(None, &mut rng);
        let settings = DirectorySettings {
            partitions: *[4, 16, 271].choose(&mut rng).expect("non-empty"),
            group_size: GROUP_SIZE,
            initial_groups: options.groups as u32,
            first_server_id: 100,
        };
        let adds_group = options.add_group && rng.random_bool(0.5);
        // Some seeds retire one of the first groups midway (racing the added group's moves in
        // seeds that add one): its partitions move to the others.
        let retires =
            (options.add_group && options.groups >= 2 && rng.random_bool(0.4)).then(|| {
                (
                    rng.random_range(1..=options.groups as GroupId),
                    rng.random_range(1_500_000..5_000_000),
                )
            });
        // A third of the seeds that add a group and retire one retire the added group instead
        // (from a stream of its own): the table then aims back at where partitions were, so a
        // rolled-back attempt's late steps meet a partition no attempt will move again.
        let retires = retires.map(|(group, at)| {
            let mut stream = ChaCha8Rng::seed_from_u64(seed ^ 0x5245_5449_5245);
            if adds_group && stream.random_bool(1.0 / 3.0) {
                (options.groups as GroupId + 1, at)
            } else {
                (group, at)
            }
        });
        // Some seeds' mover gives up on a stalled move within a few round trips, so rollbacks
        // and new attempts race the late messages of the ones abandoned.
        let give_up_us = if adds_group && rng.random_bool(0.4) {
            rng.random_range(100_000..800_000)
        } else {
            mover::GIVE_UP_US
        };
        // Chunks of one pair in some seeds, so a move takes many steps at the destination.
        let chunk_bytes = *[1, 100, ravel::directory::CHUNK_BYTES]
            .choose(&mut rng)
            .expect("non-empty");
        // Some seeds send a copy of some move steps again, late: a deposed admin leader's
        // steps arriving after the next leader rolled its attempt back and started another.
        let mut late_steps = ChaCha8Rng::seed_from_u64(seed ^ 0x4c41_5445_5354_4550);
        let late_step_rate = if faults {
            *[0.0, 0.1, 0.3, 0.6]
                .choose(&mut late_steps)
                .expect("non-empty")
        } else {
            0.0
        };
        // Half the seeds that move partitions arm a crash at one of a move's steps.
        let mut armed_moves = ChaCha8Rng::seed_from_u64(seed ^ 0x4152_4d45_445f_4d56);
        let armed_move_crash =
            (faults && (adds_group || retires.is_some()) && armed_moves.random_bool(0.5))
                .then(|| armed::MoveMoment::draw(&mut armed_moves));
        let groups = options.groups + usize::from(adds_group);
        let servers = groups * GROUP_SIZE as usize;
        ShardedWorld {
            seed,
            rng,
            tuning,
            now_us: 0,
            sequence: 0,
            queue: BTreeMap::new(),
            network,
            admins: ADMIN_IDS
                .iter()
                .map(|&id| Host::new(id, ADMIN_IDS.to_vec()))
                .collect(),
            data: BTreeMap::new(),
            group_of: BTreeMap::new(),
            admin_checker: Checker::default(),
            checkers: BTreeMap::new(),
            settings,
            initialized: false,
            assignments: vec![None; servers],
            started_groups: BTreeSet::new(),
            led: BTreeSet::new(),
            reported: BTreeSet::new(),
            claimed: BTreeSet::new(),
            admin_terms: BTreeMap::new(),
            clients: (0..options.clients).map(|_| SimClient::default()).collect(),
            history: History::default(),
            next_op: 1,
            trace: Trace::new(verbose),
            faults_over: false,
            healed_at_us: None,
            completed_after_heal: 0,
            failure: None,
            adds_group,
            retires,
            retired: false,
            mover: mover::Mover::default(),
            give_up_us,
            chunk_bytes,
            late_step_rate,
            late_steps,
            armed_move_crash,
            armed_moves,
            options,
        }
    }

    pub fn run(mut self) -> ShardedReport {
        // Planted (or cleared) for this seed's thread: the data groups' state machines read it.
        ravel::kv::planted::plant(self.options.shard_bugs);
        self.trace.line(0, || {
            format!(
                "sharded seed {} | {} groups | {:?} | {:?} | {:?}",
                self.seed, self.options.groups, self.settings, self.tuning, self.network.config
            )
        });
        for index in 0..self.admins.len() {
            let host = &mut self.admins[index];
            let setup = (&self.tuning, self.options.core_bugs);
            host.start(setup, self.seed, 0, fresh_directory(self.options.bugs));
            let id = host.id;
            let jitter = self.rng.random_range(0..TICK_US);
            self.schedule(jitter, Event::Tick(id));
        }
        self.schedule(1_000, Event::Initialize);
        let first = self.options.groups * GROUP_SIZE as usize;
        for server in 0..self.assignments.len() {
            // The added group's servers come once the first groups serve.
            let at = if server < first {
                self.rng.random_range(0..500_000)
            } else {
                self.rng.random_range(1_500_000..4_000_000)
            };
            self.schedule(at, Event::Register(server));
        }
        self.schedule(MOVER_TICK_US, Event::MoverTick);
        if let Some((group, at)) = self.retires {
            self.schedule(at, Event::Retire(group));
        }
        for client in 0..self.options.clients {
            let at = self.rng.random_range(200_000..1_000_000);
            self.schedule(at, Event::ClientNext(client));
        }
        if self.options.faults {
            let first = self.rng.random_range(300_000..1_000_000);
            self.schedule(first, Event::Fault);
        }
        let fault_end_us = self.options.duration_ms * 1000;
        // Moving a large table (271 partitions, four at a time, each step a round of Raft
        // writes over the slowest tunings) takes longer than the bound for a plain run.
        let moving_many =
            (self.adds_group || self.retires.is_some()) && self.settings.partitions > 16;
        let moves_bound_us = if moving_many { 40_000_000 } else { 0 };
        let deadline_us = fault_end_us + self.options.liveness_bound_ms * 1000 + moves_bound_us;
        while self.failure.is_none() {
            if !self.faults_over && self.next_time().is_none_or(|at| at >= fault_end_us) {
                self.now_us = self.now_us.max(fault_end_us);
                self.heal();
            }
            if self.live() {
                break;
            }
            let Some(((at, _), event)) = self.queue.pop_first() else {
                break;
            };
            if at > deadline_us {
                break;
            }
            self.now_us = at;
            self.handle(event);
        }
        if self.failure.is_none() && !self.live() {
            let leaders = self.admin_view_of_leaders();
            let moves = self.admin_view_of_moves();
            self.fail(format!(
                "liveness: {} writes completed, the admin knew the leaders {leaders:?} and the \
                 moves (admin, under way, the first few) {moves:?}, and {} {} ms after the faults healed (groups started: {:?})",
                self.completed_after_heal,
                self.share_mismatch()
                    .unwrap_or_else(|| "every group held its share".to_string()),
                (deadline_us - fault_end_us) / 1000,
                self.started_groups
            ));
        }
        if self.failure.is_none() {
            self.check_ownership();
        }
        if self.failure.is_none() {
            match linearizability::check(&self.history) {
                Verdict::Linearizable => {}
                Verdict::Violation { key, operations } => self.fail(format!(
                    "linearizability: the history of key {key} has no valid order:\n    {}",
                    operations.join("\n    ")
                )),
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
        ShardedReport {
            seed: self.seed,
            failure: self.failure,
            trace_hash: self.trace.digest(),
            operations_completed: self.history.completed(),
            operations_total: self.history.operations.len(),
            simulated_ms: self.now_us / 1000,
        }
    }

    fn next_time(&self) -> Option<u64> {
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

    fn all_ids(&self) -> Vec<NodeId> {
        ADMIN_IDS
            .iter()
            .copied()
            .chain(self.data.keys().copied())
            .collect()
    }

    fn random_admin(&mut self) -> NodeId {
        *ADMIN_IDS.choose(&mut self.rng).expect("non-empty")
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Tick(id) => {
                self.schedule(TICK_US, Event::Tick(id));
                self.step(id, |_| {}, |_| {});
            }
            Event::Deliver(message) => {
                let to = message.to;
                self.trace.hash(&(self.now_us, to, message.from));
                // A message to a data node that has not started yet is lost.
                let message = std::cell::RefCell::new(Some(message));
                self.step(
                    to,
                    |replica| replica.message(message.borrow_mut().take().expect("once")),
                    |replica| replica.message(message.borrow_mut().take().expect("once")),
                );
            }
            Event::Synced {
                node,
                incarnation,
                up_to,
            } => self.synced(node, incarnation, up_to),
            Event::AdminRequest {
                node,
                asker,
                request,
            } => {
                let Some(host) = self.admins.iter_mut().find(|host| host.id == node) else {
                    return;
                };
                if host.replica.is_none() {
                    return;
                }
                let ticket = host.ticket(asker);
                self.step(node, |replica| replica.request(ticket, request), |_| {});
            }
            Event::DataRequest {
                node,
                asker,
                request,
            } => {
                let Some(host) = self.data.get_mut(&node) else {
                    return;
                };
                if host.replica.is_none() {
                    return;
                }
                let ticket = host.ticket(asker);
                self.step(node, |_| {}, |replica| replica.request(ticket, request));
            }
            Event::Initialize => {
                if !self.initialized {
                    let command = DirectoryCommand::Initialize(self.settings.clone()).encode();
                    self.send_admin(1, Asker::Initialize, write(command));
                    self.schedule(REQUEST_TIMEOUT_US, Event::Initialize);
                }
            }
            Event::Register(server) => {
                if self.assignments[server].is_none() {
                    let command = DirectoryCommand::Register {
                        token: server as u64 + 1,
                        address: format!("server-{server}"),
                        labels: Vec::new(),
                    }
                    .encode();
                    let admin = self.random_admin();
                    self.send_admin(admin, Asker::Register { server }, write(command));
                    self.schedule(REQUEST_TIMEOUT_US, Event::Register(server));
                }
            }
            Event::Report { node, term } => {
                // Reported again while it leads, as often as a report can take: a deposed
                // leader that does not know it yet keeps reporting its old term.
                if self.leads(node, term) {
                    let group = self.group_of[&node];
                    let command = DirectoryCommand::ReportLeader {
                        group,
                        leader: node,
                        term,
                    }
                    .encode();
                    let admin = self.random_admin();
                    self.send_admin(admin, Asker::Report { node, term }, write(command));
                    let again = if self.reported.contains(&(node, term)) {
                        self.rng.random_range(100_000..1_000_000)
                    } else {
                        REQUEST_TIMEOUT_US
                    };
                    self.schedule(again, Event::Report { node, term });
                }
            }
            Event::ClaimRead { node, term } => {
                if self.leads(node, term) && !self.claimed.contains(&(node, term)) {
                    let admin = self.random_admin();
                    self.send_admin(admin, Asker::ClaimRead { node, term }, overview());
                    self.schedule(REQUEST_TIMEOUT_US, Event::ClaimRead { node, term });
                }
            }
            Event::ClientNext(client) => self.client_next(client),
            Event::MoverTick => self.mover_tick(),
            // Only a group that runs: an operator retires a group it sees serving (the moves
            // away need its replicas).
            Event::Retire(group) if !self.started_groups.contains(&group) => {
                self.schedule(REQUEST_TIMEOUT_US, Event::Retire(group));
            }
            Event::Retire(group) => {
                if !self.retired {
                    let admin = *ADMIN_IDS.choose(&mut self.rng).expect("non-empty");
                    let command = DirectoryCommand::RetireGroup { group }.encode();
                    self.send_admin(admin, Asker::Retire, write(command));
                    self.schedule(REQUEST_TIMEOUT_US, Event::Retire(group));
                }
            }
            Event::ClientTimeout { client, op } => {
                let state = &mut self.clients[client];
                if op.is_some() && state.current == op {
                    state.current = None;
                    state.route = None;
                    self.schedule(1_000, Event::ClientNext(client));
                } else if op.is_none() && state.routing {
                    state.routing = false;
                    self.schedule(1_000, Event::ClientNext(client));
                }
            }
            Event::Fault => self.fault(),
            Event::Crash(id) => {
                if !self.faults_over {
                    self.crash_node(id);
                }
            }
            Event::Restart(id) => self.restart(id),
            Event::Heal => {
                self.trace.line(self.now_us, || "network heals".to_string());
                self.network.heal();
            }
            Event::LateStep { group, command } => {
                self.trace.line(self.now_us, || {
                    format!("a late step to group {group}: {command:?}")
                });
                self.ask_group(group, Asker::LateStep, command);
            }
        }
    }

    fn leads(&self, node: NodeId, term: u64) -> bool {
        self.data
            .get(&node)
            .is_some_and(|host| host.is_leader() && host.term() == term)
    }

    /// Sends a request to an admin replica over the network (it may be lost or delayed).
    fn send_admin(&mut self, node: NodeId, asker: Asker, request: Request<DirectoryQuery>) {
        if let Some(delay) = self.request_delay(node) {
            self.schedule(
                delay,
                Event::AdminRequest {
                    node,
                    asker,
                    request,
                },
            );
        }
    }

    fn send_data(&mut self, node: NodeId, asker: Asker, request: Request<Bytes>) {
        if let Some(delay) = self.request_delay(node) {
            self.schedule(
                delay,
                Event::DataRequest {
                    node,
                    asker,
                    request,
                },
            );
        }
    }

    /// A request's trip from outside (id 0) to `node`: none if lost.
    fn request_delay(&mut self, node: NodeId) -> Option<u64> {
        self.network
            .route(0, node, &mut self.rng)
            .into_iter()
            .next()
    }

    /// Steps node `id` (an admin replica through `admin`, a data replica through `data`), then
    /// carries out its effects.
    fn step(
        &mut self,
        id: NodeId,
        admin: impl FnOnce(&mut ravel::replica::Replica<Directory>),
        data: impl FnOnce(&mut ravel::replica::Replica<KvStateMachine>),
    ) {
        let now_ms = self.now_us / 1000;
        if let Some(index) = self.admins.iter().position(|host| host.id == id) {
            let host = &mut self.admins[index];
            match host.step(now_ms, &mut self.admin_checker, admin) {
                Ok(effects) => {
                    for effect in effects {
                        self.carry_out_admin(index, effect);
                    }
                    self.check_admin(index);
                }
                Err(violation) => self.fail(format!("admin group: {violation}")),
            }
        } else if let Some(group) = self.group_of.get(&id).copied() {
            let host = self.data.get_mut(&id).expect("started");
            let checker = self.checkers.entry(group).or_default();
            match host.step(now_ms, checker, data) {
                Ok(effects) => {
                    for effect in effects {
                        self.carry_out_data(id, effect);
                    }
                }
                Err(violation) => self.fail(format!("group {group}: {violation}")),
            }
        }
    }
}

fn fresh_directory(bugs: DirectoryBugs) -> Directory {
    let mut directory = Directory::awaiting_settings();
    directory.plant(bugs);
    directory
}

fn write<Query>(command: Bytes) -> Request<Query> {
    Request::Write {
        command,
        may_forward: true,
    }
}

fn overview() -> Request<DirectoryQuery> {
    Request::Read {
        query: DirectoryQuery::Overview,
        stale: false,
        may_forward: true,
    }
}
