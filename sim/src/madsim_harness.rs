//! The whole `ravel` node — shell, gRPC, storage worker, transport, join workflow — under madsim:
//! 3 to 5 nodes on simulated hosts, each on a simulated disk that loses unsynced writes when the
//! host is killed, and clients using the real gRPC client library. One seed decides the fault
//! schedule (partitions of nodes and of single links, one-way too; kills and restarts; pauses;
//! power failures of every node at once right after a write is acknowledged; a node joining
//! through the join workflow and a member leaving, nodes stopped gracefully while writes they
//! passed on are in flight, racing all of those), and madsim makes the run
//! reproducible. The transport itself duplicates and reorders batches under madsim; odd seeds run
//! on a LAN-fast network, even ones on madsim's slower default; one fsync in ten stalls.
//!
//! Checked: the client history is linearizable (so no acknowledged write is lost), at most one
//! leader per term as observed through the status API, and the cluster recovers after the faults
//! heal (a write and a read succeed within a bounded time, and every node but one that left ends
//! as a voter).

#![cfg(madsim)]

use std::collections::BTreeMap;
use std::hash::Hasher;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use madsim::net::NetSim;
use madsim::runtime::{Handle, NodeHandle};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ravel::client::Client;
use ravel::server::node::Service;
use ravel::server::{run_node_on, NodeError, NodeOptions, Opened};
use ravel::storage::MemoryDisk;

use crate::history::{History, OpKind, OpResult};
use crate::linearizability::{self, Verdict};

#[derive(Clone, Debug)]
pub struct MadsimOptions {
    pub nodes: usize,
    /// Simulated seconds of faults (and client load) before everything heals.
    pub fault_seconds: u64,
    pub faults: bool,
    pub clients: usize,
    pub keys: usize,
    pub bugs: ravel::core::PlantedBugs,
    /// Members lose their disks and rejoin through the join workflow, some crashing again
    /// while they rejoin (off by default: it draws from the seed's generator, so it changes
    /// every schedule).
    pub disk_loss: bool,
    /// Data groups of a sharded store (an admin group of three beside them, see
    /// [`crate::madsim_sharded`]); 0: one plain cluster of `nodes`.
    pub groups: usize,
    /// With `groups`: mistakes planted in the admin's directory and mover, and in the data
    /// groups' state machines.
    pub directory_bugs: ravel::directory::DirectoryBugs,
    pub shard_bugs: ravel::kv::planted::ShardBugs,
}

impl Default for MadsimOptions {
    fn default() -> Self {
        MadsimOptions {
            nodes: 3,
            fault_seconds: 8,
            faults: true,
            clients: 8,
            keys: 4,
            bugs: ravel::core::PlantedBugs::default(),
            directory_bugs: Default::default(),
            shard_bugs: Default::default(),
            disk_loss: false,
            groups: 0,
        }
    }
}

#[derive(Clone, Debug)]
pub struct MadsimResult {
    pub seed: u64,
    pub failure: Option<String>,
    /// FNV-1a over the client history and the leaders observed: equal across runs of a seed.
    pub trace_hash: u64,
    pub completed_operations: usize,
    pub faults_injected: usize,
}

/// Runs one seed on a thread of its own: std's `HashMap` keys are per thread, and madsim can
/// derive them from the seed only on a thread that has not hashed yet. Run on a shared thread
/// after other seeds, a seed hashed differently from the same seed run alone (madsim's and
/// tonic's maps iterate in hash order), so it could pass or fail depending on the seeds before
/// it, and a failure might not replay.
pub fn run_seed(seed: u64, options: &MadsimOptions) -> MadsimResult {
    let options = options.clone();
    let thread = std::thread::Builder::new()
        .name(format!("seed-{seed}"))
        .spawn(move || run_seed_on_this_thread(seed, &options))
        .expect("a thread for the seed");
    match thread.join() {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

fn run_seed_on_this_thread(seed: u64, options: &MadsimOptions) -> MadsimResult {
    // Odd seeds run on a LAN (0.1-1 ms a hop: the network beats the disk, so an acknowledgement
    // sent before its write is durable reaches the leader first), even ones on madsim's default
    // 1-10 ms (timeouts and retries race more).
    let mut config = madsim::Config::default();
    if seed % 2 == 1 {
        config.net.send_latency = Duration::from_micros(100)..Duration::from_millis(1);
    }
    let runtime = madsim::runtime::Runtime::with_seed_and_config(seed, config);
    let options = options.clone();
    runtime.block_on(async move {
        let run = async move {
            if options.groups > 0 {
                crate::madsim_sharded::scenario(seed, options).await
            } else {
                scenario(seed, options).await
            }
        };
        match tokio::time::timeout(Duration::from_secs(300), run).await {
            Ok(result) => result,
            Err(_) => MadsimResult {
                seed,
                failure: Some("the scenario did not finish within 300 simulated s".to_string()),
                trace_hash: 0,
                completed_operations: 0,
                faults_injected: 0,
            },
        }
    })
}

fn ip(index: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, index as u8 + 1))
}

fn address(index: usize) -> String {
    format!("{}:7379", ip(index))
}

/// One simulated host running a ravel node.
struct Host {
    handle: NodeHandle,
    disk: MemoryDisk,
    /// The nodes it joins through when it starts with no data (read at every start: a founder
    /// that lost its disk rejoins through the others).
    join: Arc<Mutex<Vec<String>>>,
    down: bool,
    /// The node stopped (by itself on a storage fault or when it could not start, or when
    /// told to).
    stopped: Arc<AtomicBool>,
    /// Tells the running node to stop gracefully, as SIGTERM does (a node not running yet, or
    /// not listening for it yet, misses it).
    stop: Arc<tokio::sync::Notify>,
}

fn start_host(
    runtime: &Handle,
    (seed, bugs): (u64, ravel::core::PlantedBugs),
    index: usize,
    join: Vec<String>,
    disk: MemoryDisk,
) -> Host {
    let join = Arc::new(Mutex::new(join));
    let node_join = join.clone();
    let options = NodeOptions {
        id: index as u64 + 1,
        // The simulated disk keeps no identity, so a node could not resume with a cluster id it
        // drew or learned: every node is given one.
        cluster_id: Some(1),
        listen: address(index),
        election_timeout_min_ms: 300,
        election_timeout_max_ms: 600,
        heartbeat_interval_ms: 50,
        snapshot_interval_entries: 100,
        seed: Some(seed.wrapping_mul(1_000_003).wrapping_add(index as u64)),
        planted_bugs: bugs,
        ..NodeOptions::default()
    };
    let node_disk = disk.clone();
    let stopped = Arc::new(AtomicBool::new(false));
    let node_stopped = stopped.clone();
    let stop = Arc::new(tokio::sync::Notify::new());
    let node_stop = stop.clone();
    let handle = runtime
        .create_node()
        .name(format!("node-{}", index + 1))
        .ip(ip(index))
        .init(move || {
            let disk = node_disk.clone();
            let mut options = options.clone();
            options.join = node_join.lock().expect("lock").clone();
            let stopped = node_stopped.clone();
            let stop = node_stop.clone();
            let node_join_cleared = node_join.clone();
            async move {
                // A disk that cannot be read refuses to start, as `FileStorage::open` would.
                match disk.open() {
                    Ok((storage, state, snapshot)) => {
                        let opened = Opened {
                            storage: Box::new(storage),
                            state,
                            snapshot,
                        };
                        let told = async move { stop.notified().await };
                        let outcome =
                            run_node_on(options, opened, Service::key_value(), told, |_| {}).await;
                        if let Err(error) = outcome {
                            tracing::warn!(%error, "node stopped");
                            if matches!(error, NodeError::FounderGivenJoin(_)) {
                                // A member asked to leave that never learned it was removed:
                                // its operator does as the error says, and starts it without
                                // --join (it is still a member).
                                node_join_cleared.lock().expect("lock").clear();
                            }
                        }
                    }
                    Err(error) => tracing::warn!(%error, "node cannot start"),
                }
                stopped.store(true, Ordering::SeqCst);
            }
        })
        .build();
    Host {
        handle,
        disk,
        join,
        down: false,
        stopped,
        stop,
    }
}

/// Disks lost per seed, at most: each is a voter lost until it rejoins, and two at once in a
/// cluster of three leave no majority that can elect a leader to readmit them.
const DISK_LOSSES_MAX: usize = 1;

/// A member's disk is lost: it dies, comes back empty and rejoins through the other founders
/// (the leader removes and re-adds it); one time in two it crashes again while rejoining,
/// keeping whatever part of the log it had synced by then.
async fn lose_disk(
    runtime: &Handle,
    host: &mut Host,
    founders: usize,
    index: usize,
    rng: &mut ChaCha8Rng,
) {
    if host.down {
        return;
    }
    tracing::info!(node = index + 1, "loses its disk");
    runtime.kill(host.handle.id());
    host.disk.wipe();
    *host.join.lock().expect("lock") = (0..founders)
        .filter(|&other| other != index)
        .map(address)
        .collect();
    runtime.restart(host.handle.id());
    if rng.random_bool(0.5) {
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..1500))).await;
        runtime.kill(host.handle.id());
        let unsynced = host.disk.unsynced_writes();
        host.disk
            .crash(rng.random_range(0..=unsynced), rng.random_range(1..4));
        tokio::time::sleep(Duration::from_millis(rng.random_range(10..300))).await;
        runtime.restart(host.handle.id());
    }
}

/// The history and its clock: a counter bumped at every call and return, a strict total order
/// consistent with simulated time (madsim runs one task at a time).
#[derive(Default)]
pub(crate) struct Recorder {
    pub(crate) history: Mutex<History>,
    clock: AtomicU64,
    pub(crate) next_op: AtomicU64,
    /// Woken whenever a client's write is acknowledged (a power failure waits for one).
    pub(crate) write_acknowledged: tokio::sync::Notify,
}

impl Recorder {
    pub(crate) fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst)
    }
}

async fn scenario(seed: u64, options: MadsimOptions) -> MadsimResult {
    let runtime = Handle::current();
    let rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6d61_6473_696d);
    let mut hosts: Vec<Host> = Vec::new();
    hosts.push(start_host(
        &runtime,
        (seed, options.bugs),
        0,
        Vec::new(),
        MemoryDisk::new(),
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    for index in 1..options.nodes {
        hosts.push(start_host(
            &runtime,
            (seed, options.bugs),
            index,
            vec![address(0)],
            MemoryDisk::new(),
        ));
    }
    let endpoints: Vec<String> = (0..=options.nodes).map(address).collect();
    let failure: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let leaders: Arc<Mutex<BTreeMap<u64, u64>>> = Arc::new(Mutex::new(BTreeMap::new()));

    // Clients (and every check) run on their own host: the supervisor has no network address.
    let client_host = runtime
        .create_node()
        .name("clients")
        .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 1, 1)))
        .build();
    // Wait for the founding members to join before the faults start.
    let founders = endpoints[..options.nodes].to_vec();
    let nodes = options.nodes;
    let joined = client_host
        .spawn(async move {
            let mut admin = Client::new(founders);
            admin.timeout = Duration::from_secs(5);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            let mut last = String::new();
            while tokio::time::Instant::now() < deadline {
                match admin.members().await {
                    Ok(members) => {
                        let voters = members.members.iter().filter(|m| m.role == "voter");
                        if voters.count() == nodes {
                            return Ok(());
                        }
                        last = format!("{members:?}");
                    }
                    Err(error) => last = error.to_string(),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(format!(
                "the founding nodes did not all join within 30 s (last: {last})"
            ))
        })
        .await
        .unwrap_or_else(|_| Err("the join check failed".to_string()));
    if let Err(error) = joined {
        return result(seed, Some(error), &Recorder::default(), &leaders, 0);
    }

    let recorder = Arc::new(Recorder::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut client_tasks = Vec::new();
    for client in 0..options.clients {
        client_tasks.push(client_host.spawn(client_loop(
            client as u64,
            endpoints.clone(),
            recorder.clone(),
            stop.clone(),
            options.keys,
            seed.wrapping_add(client as u64 * 7919),
        )));
    }
    let monitor = client_host.spawn(monitor_leaders(
        endpoints.clone(),
        leaders.clone(),
        failure.clone(),
        stop.clone(),
    ));

    let mut faults = Faults {
        runtime: runtime.clone(),
        net: NetSim::current(),
        rng,
        seed,
        options: options.clone(),
        hosts,
        clogged_links: Vec::new(),
        clogged_nodes: Vec::new(),
        paused: Vec::new(),
        spare_joined: false,
        disks_lost: 0,
        left: None,
        injected: 0,
    };
    let fault_end = tokio::time::Instant::now() + Duration::from_secs(options.fault_seconds);
    while options.faults && tokio::time::Instant::now() < fault_end {
        let pause_ms = faults.rng.random_range(100..800);
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        let target = faults.rng.random_range(0..faults.hosts.len());
        faults.injected += 1;
        let fault = faults.rng.random_range(0..13);
        tracing::info!(fault, target = target + 1, "fault");
        match fault {
            0 => faults.cut_off_from_peers(target),
            1 => faults.isolate(target),
            2 => faults.cut_one_way(target),
            3 => faults.heal_network(),
            4 | 5 => faults.kill_or_restart(target),
            6 => faults.pause_or_resume(target),
            7 if faults.may_add_spare() => faults.add_spare(),
            8 if faults.may_remove_member() => faults.member_leaves(&endpoints, &client_host),
            9 => faults.arm_read_fault(target),
            10 => faults.power_failure(target, &recorder).await,
            11 => faults.stop_gracefully(target, &leaders).await,
            _ if faults.may_lose_disk() && faults.rng.random_bool(0.4) => {
                faults.lose_disk(target).await
            }
            _ => restart_stopped(&runtime, &mut faults.hosts),
        }
    }

    // Heal everything, then the cluster must serve again.
    faults.heal_everything();
    let (mut hosts, left, faults_injected) = (faults.hosts, faults.left, faults.injected);
    let liveness = check_liveness(&client_host, endpoints.clone(), recorder.clone());
    let liveness = restarting_stopped(&runtime, &mut hosts, liveness).await;
    // Every node but the one that left ends as a voter: a member that lost its disk rejoined,
    // the spare finished joining, none is stuck half way (e.g. a learner no one promotes).
    let members = if liveness.is_ok() {
        let voters: Vec<u64> = (1..=hosts.len() as u64)
            .filter(|&id| Some(id) != left)
            .collect();
        // Asked through members only: a node that left refuses to list them.
        let members: Vec<String> = (0..hosts.len())
            .filter(|&index| Some(index as u64 + 1) != left)
            .map(address)
            .collect();
        let check = check_voters(&client_host, members, voters, left);
        restarting_stopped(&runtime, &mut hosts, check).await
    } else {
        Ok(())
    };
    stop.store(true, Ordering::SeqCst);
    for task in client_tasks {
        let _ = task.await;
    }
    let _ = monitor.await;

    let mut failure = failure.lock().expect("lock").clone();
    if failure.is_none() {
        failure = liveness.err();
    }
    if failure.is_none() {
        failure = members.err();
    }
    if failure.is_none() {
        failure = not_linearizable(&recorder);
    }
    result(seed, failure, &recorder, &leaders, faults_injected)
}

/// Why the recorded history is not linearizable, if it is not.
pub(crate) fn not_linearizable(recorder: &Recorder) -> Option<String> {
    let history = recorder.history.lock().expect("lock");
    match linearizability::check(&history) {
        Verdict::Linearizable => None,
        Verdict::Violation { key, operations } => Some(format!(
            "history not linearizable on key {key}:\n  {}",
            operations.join("\n  ")
        )),
        Verdict::Inconclusive {
            key,
            operations,
            open_writes,
        } => Some(linearizability::out_of_budget(
            &key,
            operations,
            open_writes,
        )),
    }
}

/// The fault schedule's state, and the faults it injects, one named step each.
struct Faults {
    runtime: Handle,
    net: Arc<NetSim>,
    rng: ChaCha8Rng,
    seed: u64,
    options: MadsimOptions,
    hosts: Vec<Host>,
    clogged_links: Vec<(usize, usize)>,
    clogged_nodes: Vec<usize>,
    paused: Vec<usize>,
    spare_joined: bool,
    disks_lost: usize,
    /// The member asked to leave, if any (one per seed).
    left: Option<u64>,
    injected: usize,
}

impl Faults {
    fn id(&self, index: usize) -> madsim::task::NodeId {
        self.hosts[index].handle.id()
    }

    /// Cuts one node off from its peers only: clients still reach it, so a deposed leader that
    /// serves reads or takes writes without a quorum is exposed.
    fn cut_off_from_peers(&mut self, target: usize) {
        for other in (0..self.hosts.len()).filter(|&other| other != target) {
            self.net.clog_link(self.id(target), self.id(other));
            self.net.clog_link(self.id(other), self.id(target));
            self.clogged_links.push((target, other));
            self.clogged_links.push((other, target));
        }
    }

    /// Heals what is isolated, then isolates one node (both directions, clients too).
    fn isolate(&mut self, target: usize) {
        for node in std::mem::take(&mut self.clogged_nodes) {
            self.net.unclog_node(self.id(node));
        }
        self.net.clog_node(self.id(target));
        self.clogged_nodes.push(target);
    }

    /// Cuts the link from `target` to another node, one way.
    fn cut_one_way(&mut self, target: usize) {
        let other = self.rng.random_range(0..self.hosts.len());
        if other != target {
            self.net.clog_link(self.id(target), self.id(other));
            self.clogged_links.push((target, other));
        }
    }

    /// Heals every cut link and isolated node.
    fn heal_network(&mut self) {
        for (from, to) in std::mem::take(&mut self.clogged_links) {
            self.net.unclog_link(self.id(from), self.id(to));
        }
        for node in std::mem::take(&mut self.clogged_nodes) {
            self.net.unclog_node(self.id(node));
        }
    }

    /// Kills a running node (its disk losing or tearing what it had not synced), or restarts a
    /// killed one.
    fn kill_or_restart(&mut self, target: usize) {
        if self.hosts[target].down {
            self.runtime.restart(self.id(target));
            self.hosts[target].down = false;
        } else if !self.paused.contains(&target) {
            self.kill(target);
        }
    }

    /// Kills a node's host: its disk loses (or tears) some of what it had not synced.
    fn kill(&mut self, index: usize) {
        let host = &mut self.hosts[index];
        self.runtime.kill(host.handle.id());
        let unsynced = host.disk.unsynced_writes();
        host.disk.crash(
            self.rng.random_range(0..=unsynced),
            self.rng.random_range(1..4),
        );
        host.down = true;
    }

    fn pause_or_resume(&mut self, target: usize) {
        if let Some(position) = self.paused.iter().position(|&node| node == target) {
            self.runtime.resume(self.id(target));
            self.paused.remove(position);
        } else if !self.hosts[target].down {
            self.runtime.pause(self.id(target));
            self.paused.push(target);
        }
    }

    /// Not with a lost disk, nor a disk lost while it joins ([`Faults::may_lose_disk`]): a
    /// joiner promoted to voter votes only once the leader tells it it was admitted, so until
    /// then it is a lost voter too, and with a member that lost its disk that makes two of four
    /// (seed 132 with --disk-loss: no election could succeed). One lost voter at a time.
    fn may_add_spare(&self) -> bool {
        !self.spare_joined && self.disks_lost == 0
    }

    /// A new node joins through a random member first, racing the faults; it is given every
    /// founder, as an operator lists several (a single seed that leaves would leave it nobody
    /// to ask).
    fn add_spare(&mut self) {
        let founders = self.options.nodes;
        let via = self.rng.random_range(0..founders);
        let seeds = std::iter::once(via)
            .chain((0..founders).filter(|&other| other != via))
            .map(address)
            .collect();
        self.hosts.push(start_host(
            &self.runtime,
            (self.seed, self.options.bugs),
            founders,
            seeds,
            MemoryDisk::new(),
        ));
        self.spare_joined = true;
    }

    /// Not with a lost disk: a voter that lost its disk is a lost voter until it rejoins, and
    /// one more voter gone leaves a configuration no election can satisfy.
    fn may_remove_member(&self) -> bool {
        self.spare_joined && self.left.is_none() && self.disks_lost == 0
    }

    /// A member leaves (possibly the leader, possibly while partitioned).
    fn member_leaves(&mut self, endpoints: &[String], client_host: &NodeHandle) {
        let leaving = self.rng.random_range(1..=self.hosts.len()) as u64;
        // Once it learns it was removed it refuses to start again without --join; with it, a
        // restart brings it back through the join workflow.
        *self.hosts[leaving as usize - 1].join.lock().expect("lock") = (0..self.options.nodes)
            .filter(|&other| other as u64 + 1 != leaving)
            .map(address)
            .collect();
        let mut client = Client::new(endpoints.to_vec());
        client.timeout = Duration::from_secs(2);
        client_host.spawn(async move {
            let _ = client.leave(leaving).await;
        });
        self.left = Some(leaving);
    }

    /// The next read of this node's disk fails or returns corrupt bytes: it stops (fail-stop)
    /// when it reads, or refuses to start on its next restart.
    fn arm_read_fault(&mut self, target: usize) {
        let corrupt = self.rng.random_bool(0.5);
        self.hosts[target].disk.fail_next_read(corrupt);
    }

    /// Power failure right after a write was acknowledged: every node dies at once, each
    /// losing (or tearing) what it had not synced; all but `target` come back at once (that
    /// machine reboots slowly: a later fault or the heal restarts it). A write acknowledged
    /// before a majority had it on disk is lost here, and the history shows it.
    async fn power_failure(&mut self, target: usize, recorder: &Recorder) {
        tokio::select! {
            _ = recorder.write_acknowledged.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        for node in std::mem::take(&mut self.paused) {
            self.runtime.resume(self.id(node));
        }
        for index in 0..self.hosts.len() {
            if !self.hosts[index].down {
                self.kill(index);
            }
        }
        for (index, host) in self.hosts.iter_mut().enumerate() {
            if index != target {
                self.runtime.restart(host.handle.id());
                host.down = false;
            }
        }
    }

    /// Stopped as by SIGTERM: a follower (the last leader seen is spared) whose writes passed
    /// on to the leader are unanswered, because the leader's answers to it are held back a
    /// moment first. The leader commits them meanwhile, so the follower must answer them
    /// "outcome unknown", never "shutting down" (refused: retry), or a client's retry applies
    /// them twice. It comes back at a later fault or at the heal.
    async fn stop_gracefully(&mut self, target: usize, leaders: &Mutex<BTreeMap<u64, u64>>) {
        let live = self.hosts.len();
        let leader = leaders.lock().expect("lock").values().last().copied();
        let leader = leader
            .map(|id| id as usize - 1)
            .filter(|&index| index < live);
        let target = if leader == Some(target) {
            (target + 1) % live
        } else {
            target
        };
        if self.hosts[target].down || self.paused.contains(&target) {
            return;
        }
        tracing::info!(node = target + 1, "told to stop");
        if let Some(leader) = leader {
            self.net.clog_link(self.id(leader), self.id(target));
            let hold_ms = self.rng.random_range(10..100);
            tokio::time::sleep(Duration::from_millis(hold_ms)).await;
        }
        self.hosts[target].stop.notify_waiters();
        if let Some(leader) = leader {
            self.net.unclog_link(self.id(leader), self.id(target));
        }
    }

    /// At most [`DISK_LOSSES_MAX`], with every node up, no member asked to leave and no spare
    /// joining ([`Faults::may_add_spare`]).
    fn may_lose_disk(&self) -> bool {
        self.options.disk_loss
            && self.disks_lost < DISK_LOSSES_MAX
            && !self.spare_joined
            && self.left.is_none()
            && self.hosts.iter().all(|host| !host.down)
    }

    async fn lose_disk(&mut self, target: usize) {
        let founders = self.options.nodes;
        lose_disk(
            &self.runtime,
            &mut self.hosts[target],
            founders,
            target,
            &mut self.rng,
        )
        .await;
        self.disks_lost += 1;
    }

    /// Every cut and isolation healed, every paused node resumed, every stopped node restarted.
    fn heal_everything(&mut self) {
        self.heal_network();
        for node in std::mem::take(&mut self.paused) {
            self.runtime.resume(self.id(node));
        }
        restart_stopped(&self.runtime, &mut self.hosts);
    }
}

/// Awaits `check` while restarting, every 200 ms, nodes that stop by themselves (a read fault
/// armed before the heal), as an operator or a supervisor would while the cluster must recover.
async fn restarting_stopped<T>(
    runtime: &Handle,
    hosts: &mut [Host],
    check: impl std::future::Future<Output = T>,
) -> T {
    tokio::pin!(check);
    loop {
        tokio::select! {
            outcome = &mut check => return outcome,
            _ = tokio::time::sleep(Duration::from_millis(200)) => restart_stopped(runtime, hosts),
        }
    }
}

/// Restarts every node that was killed or stopped by itself.
fn restart_stopped(runtime: &Handle, hosts: &mut [Host]) {
    for host in hosts.iter_mut() {
        let stopped = host.stopped.swap(false, Ordering::SeqCst);
        if host.down || stopped {
            if !host.down {
                // madsim's restart keeps the old incarnation's sockets; kill releases them.
                runtime.kill(host.handle.id());
            }
            runtime.restart(host.handle.id());
            host.down = false;
        }
    }
}

pub(crate) fn result(
    seed: u64,
    failure: Option<String>,
    recorder: &Recorder,
    leaders: &Mutex<impl std::fmt::Debug>,
    faults_injected: usize,
) -> MadsimResult {
    let history = recorder.history.lock().expect("lock");
    let mut hash = crate::trace::Fnv64::default();
    for op in &history.operations {
        hash.write(format!("{op:?}").as_bytes());
    }
    hash.write(format!("{:?}", leaders.lock().expect("lock")).as_bytes());
    MadsimResult {
        seed,
        failure,
        trace_hash: hash.finish(),
        completed_operations: history.completed(),
        faults_injected,
    }
}

async fn client_loop(
    client_id: u64,
    endpoints: Vec<String>,
    recorder: Arc<Recorder>,
    stop: Arc<AtomicBool>,
    keys: usize,
    seed: u64,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Every other client lets followers pass its requests on to the leader, as a plain gRPC
    // client's are, starting at a different member each, so that path runs under the faults too.
    let through_followers = client_id % 2 == 1;
    let mut endpoints = endpoints;
    if through_followers {
        let shift = client_id as usize % endpoints.len();
        endpoints.rotate_left(shift);
    }
    let mut client = Client::new(endpoints);
    client.timeout = Duration::from_secs(2);
    client.through_followers = through_followers;
    let mut sequence = 0u64;
    // The value this client last saw at each key (read or written), so that most of its
    // compare-and-swaps expect the current value and succeed, as a read-modify-write does: one
    // applied twice then shows (its retry fails on its own first effect).
    let mut last_seen: BTreeMap<Bytes, Option<Bytes>> = BTreeMap::new();
    while !stop.load(Ordering::SeqCst) {
        sequence += 1;
        let key = Bytes::from(format!("k{}", rng.random_range(0..keys)));
        let value = Bytes::from(format!("c{client_id}-{sequence}"));
        let kind = match rng.random_range(0..10) {
            0..=3 => OpKind::Get,
            4..=7 => OpKind::Put(value),
            _ => OpKind::CompareAndSwap {
                expected: match last_seen.get(&key) {
                    Some(seen) if rng.random_bool(0.8) => seen.clone(),
                    _ => rng
                        .random_bool(0.5)
                        .then(|| Bytes::from(format!("c{client_id}-{}", sequence - 1))),
                },
                new: value,
            },
        };
        let result = perform(&mut client, &recorder, client_id, key.clone(), kind.clone()).await;
        match (kind, result) {
            (_, Ok(OpResult::Value(value))) => {
                last_seen.insert(key, value);
            }
            (OpKind::Put(value), Ok(_))
            | (OpKind::CompareAndSwap { new: value, .. }, Ok(OpResult::Swapped(true))) => {
                last_seen.insert(key, Some(value));
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..10))).await;
    }
}

/// Runs one operation and records it; an error leaves it open (it may or may not have happened).
async fn perform(
    client: &mut Client,
    recorder: &Recorder,
    client_id: u64,
    key: Bytes,
    kind: OpKind,
) -> Result<OpResult, ravel::client::ClientError> {
    let id = recorder.next_op.fetch_add(1, Ordering::SeqCst);
    recorder.history.lock().expect("lock").call(
        id,
        client_id,
        key.clone(),
        kind.clone(),
        recorder.tick(),
    );
    let result = match kind {
        OpKind::Get => client.get(key, false).await.map(OpResult::Value),
        OpKind::Put(value) => client.put(key, value).await.map(|_| OpResult::Done),
        OpKind::Delete => client.delete(key).await.map(|_| OpResult::Done),
        OpKind::CompareAndSwap { expected, new } => client
            .compare_and_swap(key, expected, new)
            .await
            .map(|(swapped, _)| OpResult::Swapped(swapped)),
    };
    let result = result?;
    recorder
        .history
        .lock()
        .expect("lock")
        .complete(id, result.clone(), recorder.tick());
    if !matches!(result, OpResult::Value(_)) {
        recorder.write_acknowledged.notify_waiters();
    }
    Ok(result)
}

/// After the faults heal: a write and a read of it must succeed within 30 simulated seconds.
async fn check_liveness(
    client_host: &NodeHandle,
    endpoints: Vec<String>,
    recorder: Arc<Recorder>,
) -> Result<(), String> {
    let endpoints_for_report = endpoints.clone();
    let task = client_host.spawn(async move {
        let mut client = Client::new(endpoints);
        client.timeout = Duration::from_secs(2);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let key = Bytes::from_static(b"k0");
        let mut last_error = String::new();
        // Each attempt writes a value of its own: attempts that fail stay open in the history,
        // and the checker bounds an open write by the read that saw it only when its value is
        // unique (30 open writes of one value made a seed's check run out of budget).
        let mut attempt = 0;
        while tokio::time::Instant::now() < deadline {
            attempt += 1;
            let put = OpKind::Put(Bytes::from(format!("after-heal-{attempt}")));
            match perform(&mut client, &recorder, 1_000, key.clone(), put).await {
                Err(error) => {
                    last_error = format!("put: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(_) => {
                    match perform(&mut client, &recorder, 1_000, key.clone(), OpKind::Get).await {
                        Ok(_) => return Ok(()),
                        Err(error) => last_error = format!("get: {error}"),
                    }
                }
            }
        }
        // What each node says of itself, so the failure tells its own story.
        let mut nodes = String::new();
        for endpoint in &endpoints_for_report {
            let mut one = Client::new(vec![endpoint.clone()]);
            one.timeout = Duration::from_secs(1);
            let status = one.status().await.map_err(|error| error.to_string());
            let members = one.members().await.map_err(|error| error.to_string());
            nodes.push_str(&format!("\n  {endpoint}: {status:?}; members {members:?}"));
        }
        Err(format!(
            "no write and read succeeded within 30 s after the faults healed (last error: \
             {last_error}){nodes}"
        ))
    });
    task.await
        .unwrap_or_else(|_| Err("liveness task failed".to_string()))
}

/// After the heal: within 30 simulated seconds the members are exactly `voters`, all voters, and
/// `left` either gone or (restarted with `--join`, it came back) a voter too.
async fn check_voters(
    client_host: &NodeHandle,
    endpoints: Vec<String>,
    voters: Vec<u64>,
    left: Option<u64>,
) -> Result<(), String> {
    let task = client_host.spawn(async move {
        let mut client = Client::new(endpoints);
        client.timeout = Duration::from_secs(2);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut last = String::new();
        while tokio::time::Instant::now() < deadline {
            match client.members().await {
                Ok(members) => {
                    let mut seen: Vec<(u64, String)> = members
                        .members
                        .iter()
                        .map(|member| (member.id, member.role.clone()))
                        .collect();
                    seen.sort();
                    let voter = |id: &u64| (*id, "voter".to_string());
                    let expected: Vec<(u64, String)> = voters.iter().map(voter).collect();
                    let mut with_left: Vec<(u64, String)> =
                        voters.iter().chain(left.iter()).map(voter).collect();
                    with_left.sort();
                    if seen == expected || seen == with_left {
                        return Ok(());
                    }
                    last = format!("{seen:?}");
                }
                Err(error) => last = error.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(format!(
            "the members were not nodes {voters:?}, all voters, within 30 s after the faults \
             healed (last seen: {last})"
        ))
    });
    task.await
        .unwrap_or_else(|_| Err("membership task failed".to_string()))
}

/// Polls every node's status; two nodes claiming leadership of the same term is a failure.
async fn monitor_leaders(
    endpoints: Vec<String>,
    leaders: Arc<Mutex<BTreeMap<u64, u64>>>,
    failure: Arc<Mutex<Option<String>>>,
    stop: Arc<AtomicBool>,
) {
    let mut clients: Vec<Client> = endpoints
        .iter()
        .map(|endpoint| {
            let mut client = Client::new(vec![endpoint.clone()]);
            client.timeout = Duration::from_millis(100);
            client
        })
        .collect();
    while !stop.load(Ordering::SeqCst) {
        for client in clients.iter_mut() {
            let Ok(status) = client.status().await else {
                continue;
            };
            if status.role != "leader" {
                continue;
            }
            let mut leaders = leaders.lock().expect("lock");
            let known = *leaders.entry(status.term).or_insert(status.node_id);
            if known != status.node_id {
                let mut failure = failure.lock().expect("lock");
                failure.get_or_insert_with(|| {
                    format!(
                        "two leaders in term {}: node {known} and node {}",
                        status.term, status.node_id
                    )
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
