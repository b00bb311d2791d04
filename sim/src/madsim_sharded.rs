//! The sharded store's real processes under madsim: an admin group of three replicas
//! (`run_admin_on`: the directory, its gRPC service, its founder proposing the settings, its
//! leader polling for leaders) and data groups of three nodes that each register with the admin
//! through the real admin link (a token kept on a simulated "disk" that survives crashes, as the
//! `ASSIGNMENT` file does), join their group through the join workflow, report every leadership
//! and claim their partitions; routing clients (the real `RoutedClient`) read, write and swap
//! keys spread over every group. All data nodes start at once, each asking a different admin
//! replica first, so registrations race each other and the admin's elections.
//!
//! One seed decides the fault schedule, started as soon as every process is: isolations, cuts
//! and one-way cuts, kills (the disk losing what it had not synced) and restarts, pauses,
//! kills of the leader of the admin or of a data group, a whole group (or the admin) losing
//! power at once; and in most seeds a new group of three registering midway, which the admin
//! places once it is staffed: partitions then move to it (the admin leader's real mover over
//! gRPC: freeze, export, ingest, commit, drop, activate) while the faults go on; and in some
//! seeds group 1 is retired midway, its partitions moving to the others.
//!
//! Checked, every seed: the client history is linearizable per key; at most one leader per term
//! in each group and in the admin; the directory, read again and again, never shows a group's
//! leader term going back, a server moving between groups or listed in two, or its own index
//! going back. After the faults heal, within a bounded time: every key can be written and read;
//! every node is the member the admin made it (its id, its group), a voter of its group; every
//! move carried out (none in flight or pending), no retiring group owning a partition and no
//! group over the load bound; and every key is served by its owner only — every other group
//! refuses it as not its own. While it runs, no partition's epoch goes back in the directory,
//! nor does one epoch name two owners.

#![cfg(madsim)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use madsim::net::NetSim;
use madsim::runtime::{Handle, NodeHandle};
use rand::seq::IndexedRandom;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ravel::admin::{run_admin_on, AdminOptions};
use ravel::client::{Client, ClientError};
use ravel::directory::DirectorySettings;
use ravel::routed_client::{read_overview, RoutedClient, RoutedError};
use ravel::server::admin_link::{
    register, report_leadership, resumes_without_asking, Assignment, AssignmentStore,
};
use ravel::server::node::Service;
use ravel::server::{run_node_on, ApiError, NodeOptions, Opened};
use ravel::storage::{MemoryDisk, Storage};

use crate::history::{OpKind, OpResult};
use crate::madsim_harness::{not_linearizable, result, MadsimOptions, MadsimResult, Recorder};

const ADMINS: usize = 3;
const GROUP_SIZE: usize = 3;
const PARTITIONS: u32 = 16;
const KEYS: usize = 12;
const ADMIN_CLUSTER: u64 = 1;
/// A data group's cluster id is this plus its group id.
const DATA_CLUSTER_BASE: u64 = 1000;
/// After the heal, how long the system may take to serve every key again.
const RECOVERY: Duration = Duration::from_secs(60);

fn admin_address(index: usize) -> String {
    format!("10.0.2.{}:7379", index + 1)
}

fn data_address(index: usize) -> String {
    format!("10.0.3.{}:7379", index + 1)
}

fn admin_addresses() -> Vec<String> {
    (0..ADMINS).map(admin_address).collect()
}

fn ip_of(address: &str) -> IpAddr {
    let host = address.split(':').next().expect("host:port");
    host.parse().expect("an IP address")
}

/// The assignment a data node keeps, durably (it survives the host's kill, as the fsynced
/// `ASSIGNMENT` file does).
#[derive(Clone, Default)]
struct KeptAssignment(Arc<Mutex<Option<Assignment>>>);

impl AssignmentStore for KeptAssignment {
    fn load(&self) -> Result<Option<Assignment>, String> {
        Ok(self.0.lock().expect("lock").clone())
    }
    fn keep(&self, assignment: &Assignment) -> Result<(), String> {
        *self.0.lock().expect("lock") = Some(assignment.clone());
        Ok(())
    }
}

/// One simulated host: an admin replica or a data node.
struct Host {
    handle: NodeHandle,
    address: String,
    disk: MemoryDisk,
    /// A data node's assignment (none for an admin replica).
    assignment: Option<KeptAssignment>,
    down: bool,
    /// The process ended by itself (a storage fault, a refusal to start).
    stopped: Arc<AtomicBool>,
}

impl Host {
    /// The cluster it serves: the admin's, or its data group's once it is assigned one.
    fn cluster(&self) -> Option<u64> {
        match &self.assignment {
            None => Some(ADMIN_CLUSTER),
            Some(kept) => {
                let assignment = kept.load().ok().flatten()?;
                (assignment.node_id != 0).then_some(DATA_CLUSTER_BASE + assignment.group_id)
            }
        }
    }
}

/// What every process of a seed shares.
#[derive(Clone)]
struct Setup {
    seed: u64,
    bugs: ravel::core::PlantedBugs,
    directory_bugs: ravel::directory::DirectoryBugs,
    groups: usize,
    /// Bytes per chunk a moving partition is shipped in: small in most seeds, so that moves
    /// take many chunks and a commit can race an ingest not yet complete.
    move_chunk_bytes: usize,
    /// How long the admin's mover waits on a move that makes no progress before it gives up:
    /// short in some seeds, so that rollbacks, cleanups and new attempts race late steps.
    move_give_up: Duration,
}

impl Setup {
    fn node_options(&self, address: String, salt: u64) -> NodeOptions {
        NodeOptions {
            listen: address,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            heartbeat_interval_ms: 50,
            snapshot_interval_entries: 100,
            seed: Some(self.seed.wrapping_mul(1_000_003).wrapping_add(salt)),
            planted_bugs: self.bugs,
            move_chunk_bytes: self.move_chunk_bytes,
            ..NodeOptions::default()
        }
    }
}

/// An admin replica: the first founds the admin group, the others join it.
fn start_admin(runtime: &Handle, setup: &Setup, index: usize, disk: MemoryDisk) -> Host {
    let address = admin_address(index);
    let mut node = setup.node_options(address.clone(), index as u64);
    node.id = index as u64 + 1;
    // The simulated disk keeps no identity: every replica is given the cluster id.
    node.cluster_id = Some(ADMIN_CLUSTER);
    if index > 0 {
        node.join = vec![admin_address(0)];
    }
    let options = AdminOptions {
        node,
        settings: DirectorySettings {
            partitions: PARTITIONS,
            group_size: GROUP_SIZE as u32,
            initial_groups: setup.groups as u32,
            first_server_id: 100,
        },
        http: None,
        move_give_up: setup.move_give_up,
        bugs: setup.directory_bugs,
    };
    let stopped = Arc::new(AtomicBool::new(false));
    let (host_disk, host_stopped) = (disk.clone(), stopped.clone());
    let handle = runtime
        .create_node()
        .name(format!("admin-{}", index + 1))
        .ip(ip_of(&address))
        .init(move || {
            let (disk, options, stopped) =
                (host_disk.clone(), options.clone(), host_stopped.clone());
            async move {
                match disk.open() {
                    Ok((storage, state, snapshot)) => {
                        let opened = Opened {
                            storage: Box::new(storage),
                            state,
                            snapshot,
                        };
                        let outcome =
                            run_admin_on(options, opened, std::future::pending(), |_| {}).await;
                        if let Err(error) = outcome {
                            tracing::warn!(%error, "admin replica stopped");
                        }
                    }
                    Err(error) => tracing::warn!(%error, "admin replica cannot start"),
                }
                stopped.store(true, Ordering::SeqCst);
            }
        })
        .build();
    Host {
        handle,
        address,
        disk,
        assignment: None,
        down: false,
        stopped,
    }
}

/// A data node as `ravel node --admin` runs one: it registers (or resumes as the member its
/// disk shows it is), then runs its group's key-value store and reports its leaderships.
fn start_data(runtime: &Handle, setup: &Setup, index: usize, disk: MemoryDisk) -> Host {
    let address = data_address(index);
    let options = setup.node_options(address.clone(), 100 + index as u64);
    // Asked first through a different admin replica than its neighbours.
    let mut admin = admin_addresses();
    admin.rotate_left(index % ADMINS);
    let token = ChaCha8Rng::seed_from_u64(setup.seed ^ (index as u64 + 1) << 40).next_u64() >> 1;
    let kept = KeptAssignment::default();
    let stopped = Arc::new(AtomicBool::new(false));
    let (host_disk, host_kept, host_stopped) = (disk.clone(), kept.clone(), stopped.clone());
    let handle = runtime
        .create_node()
        .name(format!("data-{}", index + 1))
        .ip(ip_of(&address))
        .init(move || {
            let (disk, kept, stopped) =
                (host_disk.clone(), host_kept.clone(), host_stopped.clone());
            let (mut options, admin) = (options.clone(), admin.clone());
            async move {
                let (storage, state, snapshot) = match disk.open() {
                    Ok(opened) => opened,
                    Err(error) => {
                        tracing::warn!(%error, "data node cannot start");
                        stopped.store(true, Ordering::SeqCst);
                        return;
                    }
                };
                let assignment = kept.load().expect("kept in memory");
                let in_dir = assignment
                    .as_ref()
                    .map(|assignment| (assignment.node_id, storage.standing()));
                let assignment = match assignment {
                    Some(assignment) if resumes_without_asking(Some(&assignment), in_dir) => {
                        assignment
                    }
                    _ => {
                        let labels = BTreeMap::new();
                        match register(&admin, &kept, &options.listen, &labels, token).await {
                            Ok(registered) => {
                                options.join = registered.seeds;
                                registered.assignment
                            }
                            Err(error) => {
                                tracing::warn!(%error, "registration refused");
                                stopped.store(true, Ordering::SeqCst);
                                return;
                            }
                        }
                    }
                };
                options.id = assignment.node_id;
                options.cluster_id = Some(DATA_CLUSTER_BASE + assignment.group_id);
                let opened = Opened {
                    storage: Box::new(storage),
                    state,
                    snapshot,
                };
                let group = assignment.group_id;
                let service =
                    Service::key_value_sharded(assignment.partitions, options.move_chunk_bytes);
                let outcome = run_node_on(
                    options,
                    opened,
                    service,
                    std::future::pending(),
                    |started| {
                        tokio::spawn(report_leadership(
                            admin,
                            group,
                            started.handle.clone(),
                            started.leadership.clone(),
                        ));
                    },
                )
                .await;
                if let Err(error) = outcome {
                    tracing::warn!(%error, "data node stopped");
                }
                stopped.store(true, Ordering::SeqCst);
            }
        })
        .build();
    Host {
        handle,
        address,
        disk,
        assignment: Some(kept),
        down: false,
        stopped,
    }
}

/// Each cluster's leaders seen, by term, and the latest one's host.
#[derive(Default)]
struct Leaders {
    by_term: BTreeMap<(u64, u64), u64>,
    latest: BTreeMap<u64, (u64, usize)>,
}

pub(crate) async fn scenario(seed: u64, options: MadsimOptions) -> MadsimResult {
    let runtime = Handle::current();
    let setup = Setup {
        seed,
        bugs: options.bugs,
        directory_bugs: options.directory_bugs,
        groups: options.groups,
        move_chunk_bytes: *[1, 100, ravel::directory::CHUNK_BYTES]
            .choose(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x0063_6875_6e6b))
            .expect("not empty"),
        move_give_up: {
            let mut stream = ChaCha8Rng::seed_from_u64(seed ^ 0x0067_6976_655f_7570);
            if stream.random_bool(0.4) {
                Duration::from_millis(stream.random_range(300..2_000))
            } else {
                ravel::admin::GIVE_UP_AFTER_DEFAULT
            }
        },
    };
    // Planted (or cleared) for this seed: every data group's state machine reads it.
    ravel::kv::planted::plant(options.shard_bugs);
    let mut hosts = vec![start_admin(&runtime, &setup, 0, MemoryDisk::new())];
    tokio::time::sleep(Duration::from_millis(200)).await;
    for index in 1..ADMINS {
        hosts.push(start_admin(&runtime, &setup, index, MemoryDisk::new()));
    }
    let data_nodes = options.groups * GROUP_SIZE;
    for index in 0..data_nodes {
        hosts.push(start_data(&runtime, &setup, index, MemoryDisk::new()));
    }
    // Every address a host may have (the added group's too), in host order.
    let endpoints: Vec<String> = admin_addresses()
        .into_iter()
        .chain((0..data_nodes + GROUP_SIZE).map(data_address))
        .collect();

    let client_host = runtime
        .create_node()
        .name("clients")
        .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 1, 1)))
        .build();
    let recorder = Arc::new(Recorder::default());
    let stop = Arc::new(AtomicBool::new(false));
    let failure: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let leaders = Arc::new(Mutex::new(Leaders::default()));
    let mut tasks = Vec::new();
    for client in 0..options.clients {
        tasks.push(client_host.spawn(client_loop(
            client as u64,
            recorder.clone(),
            stop.clone(),
            seed.wrapping_add(client as u64 * 7919),
        )));
    }
    tasks.push(client_host.spawn(monitor_leaders(
        endpoints.clone(),
        leaders.clone(),
        failure.clone(),
        stop.clone(),
    )));
    tasks.push(client_host.spawn(monitor_directory(failure.clone(), stop.clone())));
    // Most seeds replay move steps late, as an admin leader deposed mid-move would deliver
    // them (from a stream of their own).
    if ChaCha8Rng::seed_from_u64(seed ^ 0x6c61_7465).random_bool(2.0 / 3.0) {
        tasks.push(client_host.spawn(late_move_steps(seed, stop.clone())));
    }

    let mut faults = Faults {
        runtime: runtime.clone(),
        net: NetSim::current(),
        rng: ChaCha8Rng::seed_from_u64(seed ^ 0x0073_6861_7264_6564),
        setup,
        hosts,
        clogged_links: Vec::new(),
        clogged_nodes: Vec::new(),
        paused: Vec::new(),
        group_added: false,
        injected: 0,
    };
    let faults_start = tokio::time::Instant::now();
    let fault_end = faults_start + Duration::from_secs(options.fault_seconds);
    // Most seeds add a group at a seeded moment, so its moves race the faults.
    let add_group_at = faults.rng.random_bool(0.75).then(|| {
        faults_start
            + Duration::from_millis(faults.rng.random_range(0..options.fault_seconds * 700))
    });
    // Some seeds retire group 1 midway (as an operator would, once it serves): its partitions
    // move to the others while the faults, and the added group's moves, go on.
    if faults.rng.random_bool(0.4) {
        let after = Duration::from_millis(faults.rng.random_range(0..options.fault_seconds * 700));
        // A third of the seeds that add a group retire that one instead (from a stream of its
        // own): the table then aims back where the partitions were, so attempts rolled back
        // on the way are not tried again and their late steps meet partitions nothing moves.
        let added = options.groups as u64 + 1;
        let group = if add_group_at.is_some()
            && ChaCha8Rng::seed_from_u64(seed ^ 0x7265_7469_7265).random_bool(1.0 / 3.0)
        {
            added
        } else {
            1
        };
        tasks.push(client_host.spawn(retire_group(group, after, stop.clone())));
    }
    while options.faults && tokio::time::Instant::now() < fault_end {
        if add_group_at.is_some_and(|at| tokio::time::Instant::now() >= at) && !faults.group_added {
            faults.add_group(data_nodes);
        }
        let pause_ms = faults.rng.random_range(100..800);
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        let target = faults.rng.random_range(0..faults.hosts.len());
        faults.injected += 1;
        let fault = faults.rng.random_range(0..12);
        tracing::info!(fault, host = %faults.hosts[target].address, "fault");
        match fault {
            0 => faults.isolate(target),
            1 => faults.cut_off_from_peers(target),
            2 => faults.cut_one_way(target),
            3 => faults.heal_network(),
            4 | 5 => faults.kill_or_restart(target),
            6 => faults.pause_or_resume(target),
            7 | 8 => faults.kill_a_leader(&leaders),
            9 => faults.power_failure(target),
            _ => restart_stopped(&runtime, &mut faults.hosts),
        }
    }
    faults.heal_everything();
    let faults_injected = faults.injected;
    let mut hosts = faults.hosts;
    let expected: Vec<Option<KeptAssignment>> =
        hosts.iter().map(|host| host.assignment.clone()).collect();
    let addresses: Vec<String> = hosts.iter().map(|host| host.address.clone()).collect();
    let check = client_host.spawn(check_recovery(recorder.clone(), expected, addresses));
    let recovered = restarting_stopped(&runtime, &mut hosts, check)
        .await
        .unwrap_or_else(|_| Err("the recovery check failed".to_string()));
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        let _ = task.await;
    }

    let mut failure = failure.lock().expect("lock").clone();
    if failure.is_none() {
        failure = recovered.err();
    }
    if failure.is_none() {
        failure = not_linearizable(&recorder);
    }
    let leaders = Mutex::new(leaders.lock().expect("lock").by_term.clone());
    result(seed, failure, &recorder, &leaders, faults_injected)
}

/// The fault schedule's state, and the faults it injects, one named step each.
struct Faults {
    runtime: Handle,
    net: Arc<NetSim>,
    rng: ChaCha8Rng,
    setup: Setup,
    hosts: Vec<Host>,
    clogged_links: Vec<(usize, usize)>,
    clogged_nodes: Vec<usize>,
    paused: Vec<usize>,
    group_added: bool,
    injected: usize,
}

impl Faults {
    fn id(&self, index: usize) -> madsim::task::NodeId {
        self.hosts[index].handle.id()
    }

    /// Heals what is isolated, then isolates one host (both directions, clients too).
    fn isolate(&mut self, target: usize) {
        for node in std::mem::take(&mut self.clogged_nodes) {
            self.net.unclog_node(self.id(node));
        }
        self.net.clog_node(self.id(target));
        self.clogged_nodes.push(target);
    }

    /// Cuts one host off from every other host (its group, the admin, the other groups);
    /// clients still reach it.
    fn cut_off_from_peers(&mut self, target: usize) {
        for other in (0..self.hosts.len()).filter(|&other| other != target) {
            self.net.clog_link(self.id(target), self.id(other));
            self.net.clog_link(self.id(other), self.id(target));
            self.clogged_links.push((target, other));
            self.clogged_links.push((other, target));
        }
    }

    /// Cuts the link from `target` to another host, one way.
    fn cut_one_way(&mut self, target: usize) {
        let other = self.rng.random_range(0..self.hosts.len());
        if other != target {
            self.net.clog_link(self.id(target), self.id(other));
            self.clogged_links.push((target, other));
        }
    }

    fn heal_network(&mut self) {
        for (from, to) in std::mem::take(&mut self.clogged_links) {
            self.net.unclog_link(self.id(from), self.id(to));
        }
        for node in std::mem::take(&mut self.clogged_nodes) {
            self.net.unclog_node(self.id(node));
        }
    }

    fn kill_or_restart(&mut self, target: usize) {
        if self.hosts[target].down {
            self.runtime.restart(self.id(target));
            self.hosts[target].down = false;
        } else if !self.paused.contains(&target) {
            self.kill(target);
        }
    }

    /// Kills a host: its disk loses (or tears) some of what it had not synced.
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

    /// Kills the latest leader seen of the admin or of a data group.
    fn kill_a_leader(&mut self, leaders: &Mutex<Leaders>) {
        let latest: Vec<usize> = leaders
            .lock()
            .expect("lock")
            .latest
            .values()
            .map(|&(_, host)| host)
            .collect();
        if latest.is_empty() {
            return;
        }
        let target = latest[self.rng.random_range(0..latest.len())];
        if target < self.hosts.len() && !self.hosts[target].down && !self.paused.contains(&target) {
            tracing::info!(host = %self.hosts[target].address, "killing a leader");
            self.kill(target);
        }
    }

    /// Every host of `target`'s cluster loses power at once; all but `target` come back at once.
    fn power_failure(&mut self, target: usize) {
        let Some(cluster) = self.hosts[target].cluster() else {
            return;
        };
        let members: Vec<usize> = (0..self.hosts.len())
            .filter(|&index| self.hosts[index].cluster() == Some(cluster))
            .collect();
        for &index in &members {
            if let Some(position) = self.paused.iter().position(|&node| node == index) {
                self.runtime.resume(self.id(index));
                self.paused.remove(position);
            }
            if !self.hosts[index].down {
                self.kill(index);
            }
        }
        for index in members.into_iter().filter(|&index| index != target) {
            self.runtime.restart(self.id(index));
            self.hosts[index].down = false;
        }
    }

    /// Three more data nodes register at once while the faults go on: every group is full, so
    /// the admin makes the first the founder of a new group and the others its members; once
    /// it is staffed, partitions move to it.
    fn add_group(&mut self, data_nodes: usize) {
        tracing::info!("a new group registers");
        for index in data_nodes..data_nodes + GROUP_SIZE {
            let host = start_data(&self.runtime, &self.setup, index, MemoryDisk::new());
            self.hosts.push(host);
        }
        self.group_added = true;
        self.injected += 1;
    }

    fn heal_everything(&mut self) {
        self.heal_network();
        for node in std::mem::take(&mut self.paused) {
            self.runtime.resume(self.id(node));
        }
        restart_stopped(&self.runtime, &mut self.hosts);
    }
}

/// Restarts every host that was killed or whose process ended.
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

/// Awaits `check` while restarting, every 200 ms, hosts that stop by themselves, as a
/// supervisor would.
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

fn key(index: usize) -> Bytes {
    Bytes::from(format!("k{index}"))
}

async fn client_loop(client_id: u64, recorder: Arc<Recorder>, stop: Arc<AtomicBool>, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut admin = admin_addresses();
    admin.rotate_left(client_id as usize % ADMINS);
    let mut client = RoutedClient::new(admin);
    client.timeout = Duration::from_secs(2);
    let mut sequence = 0u64;
    // The value this client last saw at each key, so most of its swaps expect the current value.
    let mut last_seen: BTreeMap<Bytes, Option<Bytes>> = BTreeMap::new();
    while !stop.load(Ordering::SeqCst) {
        sequence += 1;
        let key = key(rng.random_range(0..KEYS));
        let value = Bytes::from(format!("c{client_id}-{sequence}"));
        let kind = match rng.random_range(0..10) {
            0..=3 => OpKind::Get,
            4..=7 => OpKind::Put(value),
            _ => OpKind::CompareAndSwap {
                expected: match last_seen.get(&key) {
                    Some(seen) if rng.random_bool(0.8) => seen.clone(),
                    _ => None,
                },
                new: value,
            },
        };
        match perform(&client, &recorder, client_id, key.clone(), kind.clone()).await {
            Ok(OpResult::Value(value)) => {
                last_seen.insert(key, value);
            }
            Ok(OpResult::Done) | Ok(OpResult::Swapped(true)) => {
                if let OpKind::Put(value) | OpKind::CompareAndSwap { new: value, .. } = kind {
                    last_seen.insert(key, Some(value));
                }
            }
            Ok(OpResult::Swapped(false)) | Err(_) => {
                // A failure may mean no group serves yet: do not spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..10))).await;
    }
}

/// Runs one operation through the routing client and records it; an error leaves it open.
async fn perform(
    client: &RoutedClient,
    recorder: &Recorder,
    client_id: u64,
    key: Bytes,
    kind: OpKind,
) -> Result<OpResult, RoutedError> {
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
    }?;
    recorder
        .history
        .lock()
        .expect("lock")
        .complete(id, result.clone(), recorder.tick());
    Ok(result)
}

/// Polls every host's status; two nodes of one cluster leading in the same term is a failure.
async fn monitor_leaders(
    endpoints: Vec<String>,
    leaders: Arc<Mutex<Leaders>>,
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
        for (host, client) in clients.iter_mut().enumerate() {
            let Ok(status) = client.status().await else {
                continue;
            };
            if status.role != "leader" {
                continue;
            }
            let mut leaders = leaders.lock().expect("lock");
            let known = *leaders
                .by_term
                .entry((status.cluster_id, status.term))
                .or_insert(status.node_id);
            if known != status.node_id {
                failure.lock().expect("lock").get_or_insert_with(|| {
                    format!(
                        "two leaders in term {} of cluster {}: node {known} and node {}",
                        status.term, status.cluster_id, status.node_id
                    )
                });
            }
            let latest = leaders
                .latest
                .entry(status.cluster_id)
                .or_insert((status.term, host));
            if status.term >= latest.0 {
                *latest = (status.term, host);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads the directory again and again (each read linearizable, through the admin's leader):
/// a group's leader term, a server's group and the admin's index never go back, and no server
/// is listed in two groups.
async fn monitor_directory(failure: Arc<Mutex<Option<String>>>, stop: Arc<AtomicBool>) {
    let admin = admin_addresses();
    let mut terms: BTreeMap<u64, u64> = BTreeMap::new();
    let mut groups_of: BTreeMap<u64, u64> = BTreeMap::new();
    // Each partition's owner and epoch as last seen.
    let mut owners: BTreeMap<usize, (u64, u64)> = BTreeMap::new();
    let mut index = 0;
    let fail = |violation: String| {
        failure.lock().expect("lock").get_or_insert(violation);
    };
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Ok(overview) = read_overview(&admin, Duration::from_millis(500)).await else {
            continue;
        };
        if overview.admin_index < index {
            fail(format!(
                "the directory went back from index {index} to {} (admin replica {})",
                overview.admin_index, overview.admin_id
            ));
        }
        index = overview.admin_index;
        let mut listed: BTreeMap<u64, u64> = BTreeMap::new();
        for group in &overview.groups {
            let seen = terms.entry(group.id).or_insert(0);
            if group.leader_term < *seen {
                fail(format!(
                    "the admin's record of group {}'s leader went back from term {} to {}",
                    group.id, seen, group.leader_term
                ));
            }
            *seen = group.leader_term;
            for &member in &group.members {
                if let Some(other) = listed.insert(member, group.id) {
                    fail(format!(
                        "server {member} is listed in groups {other} and {}",
                        group.id
                    ));
                }
            }
        }
        for (partition, owner) in overview.owners.iter().enumerate() {
            let now = (owner.group_id, owner.epoch);
            if let Some(&(group, epoch)) = owners.get(&partition) {
                if now.1 < epoch || (now.1 == epoch && now.0 != group) {
                    fail(format!(
                        "partition {partition} was group {group}'s at epoch {epoch}, then \
                         group {}'s at epoch {}",
                        now.0, now.1
                    ));
                }
            }
            owners.insert(partition, now);
        }
        for server in &overview.servers {
            let first = *groups_of.entry(server.id).or_insert(server.group_id);
            if first != server.group_id {
                fail(format!(
                    "server {} moved from group {first} to group {}",
                    server.id, server.group_id
                ));
            }
        }
    }
}

/// Asks the admin to retire `group` after `after`, once the group has a leader, until the
/// admin answers (through any admin replica; a follower passes it to the leader).
async fn retire_group(group: u64, after: Duration, stop: Arc<AtomicBool>) {
    use ravel::server::proto::ravel::{directory_client::DirectoryClient, RetireGroupRequest};
    tokio::time::sleep(after).await;
    let admin = admin_addresses();
    let mut attempt = 0;
    while !stop.load(Ordering::SeqCst) {
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let serving = read_overview(&admin, Duration::from_millis(500))
            .await
            .is_ok_and(|overview| {
                overview
                    .groups
                    .iter()
                    .any(|info| info.id == group && info.leader_id != 0)
            });
        if !serving {
            continue;
        }
        let address = &admin[attempt % admin.len()];
        let Ok(channel) = ravel::server::connect(address, Duration::from_millis(500)).await else {
            continue;
        };
        let mut directory = DirectoryClient::new(channel);
        let call = directory.retire_group(RetireGroupRequest { group_id: group });
        if let Ok(Ok(answer)) = tokio::time::timeout(Duration::from_secs(2), call).await {
            tracing::info!(
                group,
                partitions = answer.get_ref().partitions,
                "a group is retiring"
            );
            return;
        }
    }
}

/// A deposed admin leader's move steps, arriving late and again: the moves the directory shows
/// (in flight, committed, rolled back) are, half of them, carried on by a copy of the mover's
/// driver whose every ask goes out late — most a little, some by seconds — while the real
/// mover carries the same move on, or has finished it, or rolled it back and started another
/// attempt. A copy stops at its first ask of the directory (a former leader can no longer
/// write there), so every step it sends is one a real mover of that move sent too.
async fn late_move_steps(seed: u64, stop: Arc<AtomicBool>) {
    use ravel::directory::{Move, MovePhase, MoveRun};
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6c61_7465_5f73_7465);
    let admin = admin_addresses();
    let mut seen = std::collections::BTreeSet::new();
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..600))).await;
        let Ok(overview) = read_overview(&admin, Duration::from_millis(500)).await else {
            continue;
        };
        for moving in &overview.moves {
            let phase = match moving.phase.as_str() {
                "copying" => MovePhase::Copying,
                "committed" => MovePhase::Committed,
                "rolled-back" => MovePhase::RolledBack,
                _ => continue,
            };
            let key = (moving.partition, moving.epoch, moving.phase.clone());
            if !seen.insert(key) || rng.random_bool(0.5) {
                continue;
            }
            let run = MoveRun::new(&Move {
                partition: moving.partition,
                from: moving.from_group,
                to: moving.to_group,
                epoch: moving.epoch,
                phase,
            });
            let members = |group: u64| -> Vec<String> {
                overview
                    .servers
                    .iter()
                    .filter(|server| server.group_id == group)
                    .map(|server| server.address.clone())
                    .collect()
            };
            let (from, to) = (members(moving.from_group), members(moving.to_group));
            if from.is_empty() || to.is_empty() {
                continue;
            }
            tokio::spawn(carry_on_late(run, from, to, rng.next_u64()));
        }
    }
}

/// Carries `run` on with every ask late, until it asks the directory (or 64 asks).
async fn carry_on_late(
    mut run: ravel::directory::MoveRun,
    from: Vec<String>,
    to: Vec<String>,
    seed: u64,
) {
    use ravel::admin::step_answer;
    use ravel::directory::{Answer, Ask};
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut source = Client::new(from);
    let mut destination = Client::new(to);
    source.timeout = Duration::from_secs(1);
    destination.timeout = Duration::from_secs(1);
    for _ in 0..64 {
        let Some(ask) = run.ask() else {
            return;
        };
        let late_ms = if rng.random_bool(0.2) {
            rng.random_range(1_000..6_000)
        } else {
            rng.random_range(20..800)
        };
        tokio::time::sleep(Duration::from_millis(late_ms)).await;
        tracing::info!(
            partition = run.partition,
            epoch = run.epoch,
            ?ask,
            "a late move step"
        );
        let answer = match ask {
            Ask::Source(command) => source
                .move_step(command.encode())
                .await
                .ok()
                .map(step_answer),
            Ask::Destination(command) => destination
                .move_step(command.encode())
                .await
                .ok()
                .map(step_answer),
            Ask::Export {
                partition,
                after,
                applied_at_least,
            } => match source.export(partition, after, applied_at_least).await {
                Ok(Some((pairs, last))) => Some(Answer::Exported { pairs, last }),
                _ => None,
            },
            Ask::Admin(_) => return,
        };
        if let Some(answer) = answer {
            run.answered(answer);
        }
    }
}

/// After the heal, within [`RECOVERY`]: every key written and read through the routing client;
/// every data node the member the admin made it and a voter of its group; every key refused
/// by every group but its owner.
async fn check_recovery(
    recorder: Arc<Recorder>,
    expected: Vec<Option<KeptAssignment>>,
    addresses: Vec<String>,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + RECOVERY;
    let admin = admin_addresses();
    let mut client = RoutedClient::new(admin.clone());
    client.timeout = Duration::from_secs(2);
    let mut last = String::new();
    // Every key, written and read.
    let mut index = 0;
    // A value per attempt (see `madsim_harness::check_liveness`).
    let mut attempt = 0;
    while index < KEYS {
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "key {} could not be written and read within {RECOVERY:?} after the faults \
                 healed (last error: {last})",
                key(index).escape_ascii()
            ));
        }
        attempt += 1;
        let put = OpKind::Put(Bytes::from(format!("after-heal-{index}-{attempt}")));
        match perform(&client, &recorder, 1_000, key(index), put).await {
            Err(error) => {
                last = format!("put: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(_) => match perform(&client, &recorder, 1_000, key(index), OpKind::Get).await {
                Ok(_) => index += 1,
                Err(error) => last = format!("get: {error}"),
            },
        }
    }
    // Every partition takes writes, not only those the keys fall in: none is left frozen.
    for partition in 0..PARTITIONS {
        let probe = (0u32..)
            .map(|n| Bytes::from(format!("probe-{partition}-{n}")))
            .find(|probe| ravel::sharding::partition_of(probe, PARTITIONS) == partition)
            .expect("some key falls in every partition");
        loop {
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "partition {partition} took no write within {RECOVERY:?} after the faults \
                     healed (last error: {last})"
                ));
            }
            let put = OpKind::Put(Bytes::from_static(b"probe"));
            match perform(&client, &recorder, 1_000, probe.clone(), put).await {
                Ok(_) => break,
                Err(error) => {
                    last = format!("put: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    // Every data node is what the admin made it, a voter of its group; every key is served by
    // its owner only.
    loop {
        let outcome = check_members_and_owners(&client, &expected, &addresses).await;
        match outcome {
            Ok(()) => return Ok(()),
            Err(reason) if tokio::time::Instant::now() > deadline => {
                return Err(format!(
                    "{reason}, still {RECOVERY:?} after the faults healed"
                ))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn check_members_and_owners(
    client: &RoutedClient,
    expected: &[Option<KeptAssignment>],
    addresses: &[String],
) -> Result<(), String> {
    let overview = client
        .overview(true)
        .await
        .map_err(|error| format!("the directory: {error}"))?;
    if !overview.moves.is_empty() || overview.moves_pending > 0 {
        return Err(format!(
            "moves not carried out: {} pending, in flight {:?}",
            overview.moves_pending, overview.moves
        ));
    }
    if let Some(group) = overview
        .groups
        .iter()
        .find(|group| group.retiring && group.partitions > 0)
    {
        return Err(format!(
            "group {} is retiring but still owns {} partitions",
            group.id, group.partitions
        ));
    }
    let staffed = overview
        .groups
        .iter()
        .filter(|group| group.members.len() >= GROUP_SIZE && !group.retiring)
        .count()
        .max(1);
    let bound = (PARTITIONS as usize * 5).div_ceil(4 * staffed) as u32;
    if let Some(group) = overview
        .groups
        .iter()
        .find(|group| group.partitions > bound)
    {
        return Err(format!(
            "group {} holds {} partitions, over the bound {bound} for {staffed} groups",
            group.id, group.partitions
        ));
    }
    let mut group_endpoints: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for (host, kept) in expected.iter().enumerate() {
        let Some(kept) = kept else { continue };
        let assignment = kept
            .load()
            .expect("kept in memory")
            .filter(|assignment| assignment.node_id != 0)
            .ok_or_else(|| format!("{} has no assignment", addresses[host]))?;
        let listed = overview
            .servers
            .iter()
            .find(|server| server.id == assignment.node_id);
        if listed.map(|server| (server.group_id, server.address.as_str()))
            != Some((assignment.group_id, addresses[host].as_str()))
        {
            return Err(format!(
                "{} is node {} of group {}, but the directory lists {listed:?}",
                addresses[host], assignment.node_id, assignment.group_id
            ));
        }
        let mut one = Client::new(vec![addresses[host].clone()]);
        one.timeout = Duration::from_secs(1);
        let status = one
            .status()
            .await
            .map_err(|error| format!("{}: status: {error}", addresses[host]))?;
        let cluster = DATA_CLUSTER_BASE + assignment.group_id;
        if (
            status.node_id,
            status.cluster_id,
            status.member_state.as_str(),
        ) != (assignment.node_id, cluster, "voter")
        {
            return Err(format!(
                "{} should be a voter, node {} of cluster {cluster}, but says {status:?}",
                addresses[host], assignment.node_id
            ));
        }
        group_endpoints
            .entry(assignment.group_id)
            .or_default()
            .push(addresses[host].clone());
    }
    for index in 0..KEYS {
        let owner = client
            .route(&key(index), false)
            .await
            .map_err(|error| format!("routing {}: {error}", key(index).escape_ascii()))?;
        for (&group, endpoints) in &group_endpoints {
            if group == owner.group {
                continue;
            }
            let mut other = Client::new(endpoints.clone());
            other.timeout = Duration::from_secs(1);
            match other.get(key(index), false).await {
                Err(ClientError::Api(ApiError::NotOwned { .. })) => {}
                answer => {
                    return Err(format!(
                        "group {group} answered {answer:?} for key {}, which group {} owns",
                        key(index).escape_ascii(),
                        owner.group
                    ))
                }
            }
        }
    }
    Ok(())
}
