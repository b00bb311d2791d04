//! In-process throughput of the Raft core: three cores wired directly (no network, no disk),
//! C closed-loop clients each doing one put at a time, applied to the KV state machine on every
//! node. Reports committed-and-applied operations per second and latency percentiles.
//! All three nodes run in one thread: a round proposes every idle client's put as one batch,
//! lets the leader append and send, the followers append and acknowledge, and the leader commit
//! and apply. (A variant with the followers on a second thread was slower: the rounds became
//! small batches and the cost moved into cross-thread handoffs.)
//!
//! Run: `cargo bench -p ravel-sim --bench core_throughput -- [--clients 1,64,256] [--seconds 3]`

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use ravel::core::{
    Action, Config, EntryPayload, Input, LogIndex, Message, Proposal, RawNode, Recovered, Role,
};
use ravel::kv::{Command, KvStateMachine};

const NODES: u64 = 3;
const KEYS: u64 = 1_000;
const VALUE_BYTES: usize = 32;
/// The cores' clock starts past the vote lockout every core observes after it boots.
const CLOCK_START_MS: u64 = 10_000;

/// One node: its core, its state machine, and the proposals it accepted, by log index.
struct Replica {
    core: RawNode,
    state_machine: KvStateMachine,
    accepted: VecDeque<(LogIndex, u64)>,
}

impl Replica {
    fn new(id: u64) -> Self {
        let mut config = Config::new(id, 1..=NODES);
        config.entries_per_message_max = 4096;
        config.bytes_per_message_max = 4 << 20;
        // Snapshots are measured elsewhere; here the log is only released from memory.
        config.snapshot_interval_entries = 0;
        Replica {
            core: RawNode::new(config, Recovered::default(), 0).expect("valid config"),
            state_machine: KvStateMachine::new(),
            accepted: VecDeque::new(),
        }
    }

    /// Executes actions until the core is quiet: storage completes at once, messages go to
    /// `outbox`, entries are applied, and the clients whose proposals applied go to `done`.
    fn run(&mut self, outbox: &mut Vec<Message>, done: &mut Vec<u64>) {
        loop {
            let actions = self.core.take_actions();
            if actions.is_empty() {
                return;
            }
            let mut persisted = None;
            let mut applied = None;
            for action in actions {
                match action {
                    Action::Persist { id, .. } => persisted = Some(id),
                    Action::Send { message, .. } => outbox.push(message),
                    Action::Apply { entries } => {
                        for entry in entries {
                            match &entry.payload {
                                EntryPayload::Noop | EntryPayload::Membership(_) => {
                                    self.state_machine.skip(entry.index)
                                }
                                EntryPayload::Command(command) => {
                                    self.state_machine.apply(entry.index, command);
                                }
                            }
                            applied = Some(entry.index);
                            while self
                                .accepted
                                .front()
                                .is_some_and(|&(index, _)| index <= entry.index)
                            {
                                done.push(self.accepted.pop_front().expect("checked").1);
                            }
                        }
                    }
                    Action::ProposalAccepted { id, index, .. } => {
                        self.accepted.push_back((index, id))
                    }
                    Action::ProposalRefused { id, reason } => {
                        panic!("proposal {id} refused: {reason:?}")
                    }
                    _ => {}
                }
            }
            if let Some(id) = persisted {
                self.core.step(Input::Persisted { id });
            }
            if let Some(index) = applied {
                self.core.step(Input::Applied { index });
            }
        }
    }

    fn receive(&mut self, messages: impl IntoIterator<Item = Message>, now_ms: u64) {
        self.core.step(Input::Tick { now_ms });
        for message in messages {
            self.core.step(Input::Message(message));
        }
    }
}

/// Routes every message until all three are quiet (single-threaded), discarding applied ids.
fn settle(replicas: &mut [Replica], mut outbox: Vec<Message>, now_ms: u64) {
    let mut done = Vec::new();
    while !outbox.is_empty() {
        let mut next = Vec::new();
        for message in outbox.drain(..) {
            let replica = &mut replicas[message.to as usize - 1];
            replica.receive([message], now_ms);
            replica.run(&mut next, &mut done);
        }
        outbox = next;
    }
}

fn elected_cluster() -> Vec<Replica> {
    let mut replicas: Vec<Replica> = (1..=NODES).map(Replica::new).collect();
    replicas[0].core.step(Input::Tick {
        now_ms: CLOCK_START_MS,
    });
    replicas[0].core.step(Input::Campaign);
    let mut outbox = Vec::new();
    replicas[0].run(&mut outbox, &mut Vec::new());
    settle(&mut replicas, outbox, CLOCK_START_MS);
    let status = replicas[0].core.status();
    assert!(
        status.role == Role::Leader && status.commit >= 1,
        "node 1 leads: {status:?}"
    );
    replicas
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

    /// Every idle client's next put, encoded as a server would receive it: a fresh buffer each.
    fn take_proposals(&mut self) -> Vec<Proposal> {
        let now = Instant::now();
        let mut proposals = Vec::with_capacity(self.idle.len());
        for client in self.idle.drain(..) {
            let at = client as usize;
            self.started_at[at] = now;
            self.sequence[at] += 1;
            let key = (client.wrapping_mul(7919) + self.sequence[at]) % KEYS;
            let command = Command::Put {
                key: self.keys[key as usize].clone(),
                value: self.value.clone(),
            };
            proposals.push(Proposal {
                id: client,
                command: command.encode(),
            });
        }
        proposals
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
    let mut replicas = elected_cluster();
    let (mut outbox, mut replies, mut done) = (Vec::new(), Vec::new(), Vec::new());
    let begin = Instant::now();
    while begin.elapsed() < duration {
        let now = now_ms(begin);
        let proposals = clients.take_proposals();
        if !proposals.is_empty() {
            replicas[0].core.step(Input::Propose(proposals));
        }
        replicas[0].receive(replies.drain(..), now);
        replicas[0].run(&mut outbox, &mut done);
        for message in outbox.drain(..) {
            let follower = &mut replicas[message.to as usize - 1];
            follower.receive([message], now);
            follower.run(&mut replies, &mut Vec::new());
        }
        replicas[0].receive(replies.drain(..), now);
        replicas[0].run(&mut outbox, &mut done);
        clients.completed(&mut done);
    }
    let elapsed = begin.elapsed();
    (
        elapsed,
        replicas
            .iter()
            .map(|replica| replica.state_machine.applied_index())
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
        "core_throughput: {NODES} cores in one thread, no network, no disk, {VALUE_BYTES}-byte values, {KEYS} keys"
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
