//! In-process throughput of the replica: three replicas (the core, the KV state machine and the
//! bookkeeping that answers clients — the code a node runs) wired directly (no network, no
//! disk), C closed-loop clients each doing one put at a time through `Replica::request`.
//! Reports operations answered per second and latency percentiles.
//! All three nodes run in one thread: a round hands every idle client's put to the leader,
//! lets the leader append and send, the followers append and acknowledge, and the leader commit,
//! apply and answer. (A variant with the followers on a second thread was slower: the rounds
//! became small batches and the cost moved into cross-thread handoffs.)
//!
//! Run: `cargo bench -p ravel-sim --bench core_throughput -- [--clients 1,64,256] [--seconds 3]`

use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use ravel::core::{Config, Input, LogIndex, Message, RawNode, Recovered, Role};
use ravel::kv::{Command, KvStateMachine};
use ravel::replica::{Answer, Effect, Replica, Request};

const NODES: u64 = 3;
const KEYS: u64 = 1_000;
const VALUE_BYTES: usize = 32;
/// The cores' clock starts past the vote lockout every core observes after it boots.
const CLOCK_START_MS: u64 = 10_000;

/// One node: its replica, whose storage completes every write at once.
struct Node {
    replica: Replica<KvStateMachine>,
    /// The effects being carried out (one buffer, reused).
    effects: Vec<Effect<KvStateMachine>>,
}

impl Node {
    fn new(id: u64) -> Self {
        let mut config = Config::new(id, 1..=NODES);
        config.entries_per_message_max = 4096;
        config.bytes_per_message_max = 4 << 20;
        // Snapshots are measured elsewhere; here the log is only released from memory.
        config.snapshot_interval_entries = 0;
        let core = RawNode::new(config, Recovered::default(), 0).expect("valid config");
        Node {
            replica: Replica::new(core, KvStateMachine::new(), format!("node-{id}"), None),
            effects: Vec::new(),
        }
    }

    /// Runs the replica until it is quiet: storage completes at once, messages go to `outbox`,
    /// and the clients whose puts were answered go to `done`.
    fn run(&mut self, outbox: &mut Vec<Message>, done: &mut Vec<u64>) {
        loop {
            self.replica.run();
            self.replica.move_effects_to(&mut self.effects);
            if self.effects.is_empty() {
                return;
            }
            for effect in self.effects.drain(..) {
                match effect {
                    Effect::Persist { id, .. } => {
                        self.replica.completed(Input::Persisted { id });
                    }
                    Effect::Send(message) => outbox.push(message),
                    Effect::Reply { ticket, reply } => match reply {
                        Ok(Answer::Written { .. }) => done.push(ticket),
                        other => panic!("put {ticket} answered {other:?}"),
                    },
                    Effect::Fatal(reason) => panic!("{reason}"),
                    _ => {}
                }
            }
        }
    }

    fn receive(&mut self, messages: impl IntoIterator<Item = Message>, now_ms: u64) {
        self.replica.tick(now_ms);
        for message in messages {
            self.replica.message(message);
        }
    }
}

/// Routes every message until all three are quiet (single-threaded), discarding answers.
fn settle(nodes: &mut [Node], mut outbox: Vec<Message>, now_ms: u64) {
    let mut done = Vec::new();
    while !outbox.is_empty() {
        let mut next = Vec::new();
        for message in outbox.drain(..) {
            let node = &mut nodes[message.to as usize - 1];
            node.receive([message], now_ms);
            node.run(&mut next, &mut done);
        }
        outbox = next;
    }
}

fn elected_cluster() -> Vec<Node> {
    let mut nodes: Vec<Node> = (1..=NODES).map(Node::new).collect();
    nodes[0].replica.tick(CLOCK_START_MS);
    nodes[0].replica.campaign();
    let mut outbox = Vec::new();
    nodes[0].run(&mut outbox, &mut Vec::new());
    settle(&mut nodes, outbox, CLOCK_START_MS);
    let status = nodes[0].replica.core().status();
    assert!(
        status.role == Role::Leader && status.commit >= 1,
        "node 1 leads: {status:?}"
    );
    nodes
}

/// The clients: each has one put outstanding at a time.
struct Clients {
    keys: Vec<Bytes>,
    value: Bytes,
    started_at: Vec<Instant>,
    sequence: Vec<u64>,
    idle: Vec<u64>,
    latency_ns: Histogram<u64>,
    operations: u64,
}

impl Clients {
    fn new(count: u64) -> Self {
        Clients {
            keys: (0..KEYS)
                .map(|key| Bytes::from(format!("key-{key:08}")))
                .collect(),
            value: Bytes::from(vec![b'v'; VALUE_BYTES]),
            started_at: vec![Instant::now(); count as usize],
            sequence: vec![0; count as usize],
            idle: (0..count).collect(),
            latency_ns: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds"),
            operations: 0,
        }
    }

    /// Hands every idle client's next put to `replica`, encoded as a server would receive it:
    /// a fresh buffer each.
    fn send_puts(&mut self, replica: &mut Replica<KvStateMachine>) {
        let now = Instant::now();
        for client in self.idle.drain(..) {
            let at = client as usize;
            self.started_at[at] = now;
            self.sequence[at] += 1;
            let key = (client.wrapping_mul(7919) + self.sequence[at]) % KEYS;
            let command = Command::Put {
                key: self.keys[key as usize].clone(),
                value: self.value.clone(),
            };
            let put = Request::Write {
                command: command.encode(),
                may_forward: false,
            };
            replica.request(client, put);
        }
    }

    fn completed(&mut self, done: &mut Vec<u64>) {
        let now = Instant::now();
        for client in done.drain(..) {
            let elapsed = now.duration_since(self.started_at[client as usize]);
            self.latency_ns
                .record(elapsed.as_nanos().max(1) as u64)
                .expect("within bounds");
            self.operations += 1;
            self.idle.push(client);
        }
    }
}

fn now_ms(begin: Instant) -> u64 {
    CLOCK_START_MS + begin.elapsed().as_millis() as u64
}

/// All three nodes in this thread: propose, leader, followers, leader again, per round.
fn run_one_thread(clients: &mut Clients, duration: Duration) -> (Duration, Vec<LogIndex>) {
    let mut nodes = elected_cluster();
    let (mut outbox, mut replies, mut done) = (Vec::new(), Vec::new(), Vec::new());
    let begin = Instant::now();
    while begin.elapsed() < duration {
        let now = now_ms(begin);
        clients.send_puts(&mut nodes[0].replica);
        nodes[0].receive(replies.drain(..), now);
        nodes[0].run(&mut outbox, &mut done);
        for message in outbox.drain(..) {
            let follower = &mut nodes[message.to as usize - 1];
            follower.receive([message], now);
            follower.run(&mut replies, &mut Vec::new());
        }
        nodes[0].receive(replies.drain(..), now);
        nodes[0].run(&mut outbox, &mut done);
        clients.completed(&mut done);
    }
    let elapsed = begin.elapsed();
    (
        elapsed,
        nodes
            .iter()
            .map(|node| node.replica.state().applied_index())
            .collect(),
    )
}

fn main() {
    let mut clients_list = vec![1u64, 64, 256];
    let mut seconds = 3.0f64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--clients" => {
                clients_list = value()
                    .split(',')
                    .map(|part| part.parse().expect("client counts are integers"))
                    .collect();
            }
            "--seconds" => seconds = value().parse().expect("--seconds needs a number"),
            "--bench" => {}
            other => eprintln!("ignoring unknown argument {other}"),
        }
    }
    println!(
        "core_throughput: {NODES} replicas in one thread, no network, no disk, {VALUE_BYTES}-byte values, {KEYS} keys"
    );
    println!(
        "{:>8} {:>14} {:>10} {:>10} {:>10} {:>10}",
        "clients", "ops/s", "p50 us", "p99 us", "p999 us", "max us"
    );
    for count in clients_list {
        let mut clients = Clients::new(count);
        let duration = Duration::from_secs_f64(seconds);
        let (elapsed, applied) = run_one_thread(&mut clients, duration);
        // Every replica applied (nearly) everything: followers trail by at most the last rounds.
        let leader_applied = applied[0];
        for follower_applied in &applied[1..] {
            assert!(
                follower_applied + 2 * count + 8 >= leader_applied,
                "followers applied {applied:?}"
            );
        }
        let rate = clients.operations as f64 / elapsed.as_secs_f64();
        let us = |quantile: f64| clients.latency_ns.value_at_quantile(quantile) as f64 / 1000.0;
        println!(
            "{count:>8} {rate:>14.0} {:>10.1} {:>10.1} {:>10.1} {:>10.1}",
            us(0.5),
            us(0.99),
            us(0.999),
            clients.latency_ns.max() as f64 / 1000.0
        );
    }
}
