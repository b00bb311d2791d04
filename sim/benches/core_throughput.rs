//! In-process throughput of the Raft core: three cores wired directly (no network, no disk),
//! C closed-loop clients each doing one put at a time, applied to the KV state machine on every
//! node. Reports committed-and-applied operations per second and latency percentiles.
//!
//! Run: `cargo bench -p ravel-sim --bench core_throughput -- [--clients 1,64,256] [--seconds 3]`

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use ravel::core::{
    Action, Config, EntryPayload, Input, Message, Proposal, RawNode, Recovered, Role,
};
use ravel::kv::{Command, KvStateMachine};

const NODES: usize = 3;
const KEYS: u64 = 1_000;
const VALUE_BYTES: usize = 32;

struct Cluster {
    cores: Vec<RawNode>,
    state_machines: Vec<KvStateMachine>,
    inboxes: Vec<VecDeque<Message>>,
    started: Instant,
}

impl Cluster {
    fn new() -> Self {
        let ids: Vec<u64> = (1..=NODES as u64).collect();
        let cores = ids
            .iter()
            .map(|&id| {
                let mut config = Config::new(id, ids.iter().copied());
                config.entries_per_message_max = 4096;
                config.bytes_per_message_max = 4 << 20;
                RawNode::new(config, Recovered::default(), 0).expect("valid config")
            })
            .collect();
        Cluster {
            cores,
            state_machines: (0..NODES).map(|_| KvStateMachine::new()).collect(),
            inboxes: (0..NODES).map(|_| VecDeque::new()).collect(),
            started: Instant::now(),
        }
    }

    /// Starts past the vote lockout that every core observes after it boots.
    fn now_ms(&self) -> u64 {
        10_000 + self.started.elapsed().as_millis() as u64
    }

    /// Executes a node's actions: storage completes at once, messages go to inboxes, entries
    /// are applied. Returns the ids of proposals applied on this node.
    fn run_actions(
        &mut self,
        node: usize,
        applied_ids: &mut Vec<(u64, u64)>,
        accepted: &mut VecDeque<(u64, u64)>,
    ) {
        loop {
            let actions = self.cores[node].take_actions();
            if actions.is_empty() {
                return;
            }
            let mut persisted = None;
            let mut applied = None;
            for action in actions {
                match action {
                    Action::Persist { id, .. } => persisted = Some(id),
                    Action::Send { message, .. } => {
                        self.inboxes[message.to as usize - 1].push_back(message)
                    }
                    Action::Apply { entries } => {
                        let state_machine = &mut self.state_machines[node];
                        for entry in entries {
                            match &entry.payload {
                                EntryPayload::Noop => state_machine.skip(entry.index),
                                EntryPayload::Command(command) => {
                                    state_machine.apply(entry.index, command);
                                }
                            }
                            applied = Some(entry.index);
                            while accepted
                                .front()
                                .is_some_and(|&(index, _)| index <= entry.index)
                            {
                                let (index, client) = accepted.pop_front().expect("checked");
                                applied_ids.push((index, client));
                            }
                        }
                    }
                    Action::ProposalAccepted { id, index, .. } => accepted.push_back((index, id)),
                    Action::ProposalRefused { id, reason } => {
                        panic!("proposal {id} refused: {reason:?}")
                    }
                    _ => {}
                }
            }
            if let Some(id) = persisted {
                self.cores[node].step(Input::Persisted { id });
            }
            if let Some(index) = applied {
                self.cores[node].step(Input::Applied { index });
            }
        }
    }

    fn elect(&mut self) {
        let now_ms = self.now_ms();
        self.cores[0].step(Input::Tick { now_ms });
        self.cores[0].step(Input::Campaign);
        let mut ignored = Vec::new();
        let mut accepted = VecDeque::new();
        for _ in 0..100 {
            for node in 0..NODES {
                self.deliver(node, &mut ignored, &mut accepted);
            }
            if self.cores[0].status().role == Role::Leader && self.cores[0].status().commit >= 1 {
                return;
            }
        }
        panic!("no leader elected");
    }

    fn deliver(
        &mut self,
        node: usize,
        applied: &mut Vec<(u64, u64)>,
        accepted: &mut VecDeque<(u64, u64)>,
    ) {
        let now_ms = self.now_ms();
        self.cores[node].step(Input::Tick { now_ms });
        while let Some(message) = self.inboxes[node].pop_front() {
            self.cores[node].step(Input::Message(message));
        }
        // Followers' accepted queues stay empty: only the leader accepts proposals.
        self.run_actions(node, applied, accepted);
    }
}

/// A client's put, encoded as a server would receive it: a fresh buffer per request.
fn command(keys: &[Bytes], value: &Bytes, client: u64, sequence: u64) -> Bytes {
    let key = (client.wrapping_mul(7919) + sequence) % KEYS;
    Command::Put {
        key: keys[key as usize].clone(),
        value: value.clone(),
    }
    .encode()
}

struct Figures {
    operations: u64,
    elapsed: Duration,
    latency_ns: Histogram<u64>,
}

fn run(clients: u64, duration: Duration) -> Figures {
    let mut cluster = Cluster::new();
    cluster.elect();
    let mut latency_ns =
        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds");
    let mut started_at: Vec<Instant> = vec![Instant::now(); clients as usize];
    let mut sequence = vec![0u64; clients as usize];
    let mut idle: Vec<u64> = (0..clients).collect();
    let mut applied = Vec::with_capacity(clients as usize);
    let mut accepted = VecDeque::with_capacity(clients as usize);
    let mut follower_accepted = VecDeque::new();
    let mut ignored = Vec::new();
    let mut operations = 0;
    let keys: Vec<Bytes> = (0..KEYS)
        .map(|key| Bytes::from(format!("key-{key:08}")))
        .collect();
    let value = Bytes::from(vec![b'v'; VALUE_BYTES]);
    let begin = Instant::now();
    while begin.elapsed() < duration {
        // Every idle client submits its next put; the leader takes them as one batch.
        let now = Instant::now();
        let proposals: Vec<Proposal> = idle
            .drain(..)
            .map(|client| {
                started_at[client as usize] = now;
                sequence[client as usize] += 1;
                Proposal {
                    id: client,
                    command: command(&keys, &value, client, sequence[client as usize]),
                }
            })
            .collect();
        if !proposals.is_empty() {
            cluster.cores[0].step(Input::Propose(proposals));
        }
        cluster.deliver(0, &mut applied, &mut accepted);
        for follower in 1..NODES {
            cluster.deliver(follower, &mut ignored, &mut follower_accepted);
        }
        cluster.deliver(0, &mut applied, &mut accepted);
        let done = Instant::now();
        for (_, client) in applied.drain(..) {
            let elapsed = done.duration_since(started_at[client as usize]);
            latency_ns
                .record(elapsed.as_nanos().max(1) as u64)
                .expect("within bounds");
            operations += 1;
            idle.push(client);
        }
    }
    let elapsed = begin.elapsed();
    // Every node applied the same state.
    let applied_on_leader = cluster.state_machines[0].applied_index();
    for node in 1..NODES {
        cluster.deliver(0, &mut applied, &mut accepted);
        cluster.deliver(node, &mut ignored, &mut follower_accepted);
        assert!(
            cluster.state_machines[node].applied_index() + 2 * clients + 4096 >= applied_on_leader
        );
    }
    Figures {
        operations,
        elapsed,
        latency_ns,
    }
}

fn main() {
    let mut clients_list = vec![1u64, 64, 256];
    let mut seconds = 3.0f64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--clients" => {
                clients_list = args
                    .next()
                    .expect("--clients needs a list like 1,64,256")
                    .split(',')
                    .map(|part| part.parse().expect("client counts are integers"))
                    .collect();
            }
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("--seconds needs a number")
            }
            "--bench" => {}
            other => eprintln!("ignoring unknown argument {other}"),
        }
    }
    println!("core_throughput: {NODES} cores in one thread, no network, no disk, {VALUE_BYTES}-byte values, {KEYS} keys");
    println!(
        "{:>8} {:>14} {:>10} {:>10} {:>10} {:>10}",
        "clients", "ops/s", "p50 us", "p99 us", "p999 us", "max us"
    );
    for clients in clients_list {
        let figures = run(clients, Duration::from_secs_f64(seconds));
        let rate = figures.operations as f64 / figures.elapsed.as_secs_f64();
        let us = |quantile: f64| figures.latency_ns.value_at_quantile(quantile) as f64 / 1000.0;
        println!(
            "{clients:>8} {rate:>14.0} {:>10.1} {:>10.1} {:>10.1} {:>10.1}",
            us(0.5),
            us(0.99),
            us(0.999),
            figures.latency_ns.max() as f64 / 1000.0
        );
    }
}
