//! A hand-driven cluster for scenario tests: the test decides which messages arrive, when time
//! passes and who crashes; storage syncs at once unless a test holds a node's syncs. Every step
//! is checked by the same invariant checker as the randomized simulator.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use ravel::core::{
    Action, Config, Entry, EntryPayload, HardState, Input, Message, NodeId, Proposal, RawNode,
    Role, Status,
};
use ravel::kv::KvStateMachine;

use crate::checker::{Checker, NodeWatch};
use crate::disk::SimDisk;

pub struct TestNode {
    pub core: Option<RawNode>,
    pub config: Config,
    /// Synced at once after every write, unless `syncs_held`.
    pub disk: SimDisk,
    /// Writes stay unsynced, and messages that promise them wait, until [`TestCluster::sync`];
    /// a crash meanwhile loses them.
    syncs_held: bool,
    /// Messages waiting for this node's writes to be durable.
    held: Vec<Message>,
    pub kv: KvStateMachine,
    /// A snapshot arriving from the leader.
    staging: Vec<u8>,
    watch: NodeWatch,
    /// Replies the node emitted (proposal and read outcomes).
    pub events: Vec<Action>,
}

pub struct TestCluster {
    pub nodes: BTreeMap<NodeId, TestNode>,
    /// Sent and not yet delivered, in send order.
    pub in_flight: Vec<Message>,
    cut: BTreeSet<(NodeId, NodeId)>,
    pub now_ms: u64,
    pub checker: Checker,
}

/// The paper's Raft, without the thesis's pre-vote and check-quorum: terms move on a single
/// campaign, and a node takes vote requests even right after it restarted or heard a leader (so
/// a partition elects a new leader at once while the old one still believes it leads).
pub fn without_pre_vote_or_check_quorum(config: &mut Config) {
    config.pre_vote = false;
    config.check_quorum = false;
}

impl TestCluster {
    /// `n` empty nodes with the default configuration adjusted by `configure`.
    pub fn new(n: u64, configure: impl Fn(&mut Config)) -> Self {
        Self::with_logs(&vec![Vec::new(); n as usize], 0, configure)
    }

    /// `voters` founding voters and `spares` more nodes that know them but are not members yet.
    pub fn with_spares(voters: u64, spares: u64, configure: impl Fn(&mut Config)) -> Self {
        Self::with_logs(&vec![Vec::new(); (voters + spares) as usize], 0, |config| {
            config.voters = (1..=voters).collect();
            configure(config);
        })
    }

    /// Nodes whose durable logs hold entries of the given terms (one list per node), all at
    /// `term`. Builds the follower logs of the paper's figures.
    pub fn with_logs(logs: &[Vec<u64>], term: u64, configure: impl Fn(&mut Config)) -> Self {
        let ids: Vec<NodeId> = (1..=logs.len() as NodeId).collect();
        let now_ms = 10_000;
        let nodes = ids
            .iter()
            .zip(logs)
            .map(|(&id, terms)| {
                let mut config = Config::new(id, ids.iter().copied());
                config.election_timeout_min_ms = 100;
                config.election_timeout_max_ms = 200;
                config.heartbeat_interval_ms = 20;
                configure(&mut config);
                let entries = terms
                    .iter()
                    .enumerate()
                    .map(|(position, &entry_term)| Entry {
                        term: entry_term,
                        index: position as u64 + 1,
                        payload: EntryPayload::Noop,
                    })
                    .collect();
                let hard_state = HardState {
                    term: term.max(terms.last().copied().unwrap_or(0)),
                    vote: None,
                    commit: 0,
                };
                let mut disk = SimDisk::default();
                disk.write(1, Some(hard_state), entries);
                disk.sync_up_to(1);
                let core = RawNode::new(config.clone(), disk.recover(), now_ms - 5_000)
                    .expect("valid config");
                let node = TestNode {
                    watch: NodeWatch {
                        term: hard_state.term,
                        ..NodeWatch::default()
                    },
                    core: Some(core),
                    config,
                    disk: SimDisk::restarted(disk),
                    syncs_held: false,
                    held: Vec::new(),
                    kv: KvStateMachine::new(),
                    staging: Vec::new(),
                    events: Vec::new(),
                };
                (id, node)
            })
            .collect();
        TestCluster {
            nodes,
            in_flight: Vec::new(),
            cut: BTreeSet::new(),
            now_ms,
            checker: Checker::default(),
        }
    }

    pub fn core(&self, id: NodeId) -> &RawNode {
        self.nodes[&id].core.as_ref().expect("node is up")
    }

    pub fn status(&self, id: NodeId) -> Status {
        self.core(id).status()
    }

    /// Feeds one input to a node (after a tick at the current time) and executes its actions:
    /// persists complete at once, messages queue in `in_flight`, entries apply.
    pub fn step(&mut self, id: NodeId, input: Input) {
        self.step_batch(id, vec![input]);
    }

    /// Feeds several inputs before taking the actions, as the shell does with a burst of
    /// requests.
    pub fn step_batch(&mut self, id: NodeId, inputs: Vec<Input>) {
        let now_ms = self.now_ms;
        let node = self.nodes.get_mut(&id).expect("known node");
        let Some(core) = node.core.as_mut() else {
            return;
        };
        core.step(Input::Tick { now_ms });
        for input in inputs {
            core.step(input);
        }
        loop {
            let actions = core.take_actions();
            if actions.is_empty() {
                return;
            }
            if let Err(violation) = self.checker.after_step(core, &mut node.watch) {
                panic!("invariant violated: {violation}");
            }
            let mut follow_ups = Vec::new();
            for action in actions {
                match action {
                    Action::Persist {
                        id: persist_id,
                        hard_state,
                        entries,
                        ..
                    } => {
                        node.disk.write(persist_id, hard_state, entries);
                        if !node.syncs_held {
                            node.disk.sync_up_to(persist_id);
                            follow_ups.push(Input::Persisted { id: persist_id });
                        }
                    }
                    Action::TakeSnapshot { meta } => {
                        node.disk.save_snapshot(meta.clone(), node.kv.snapshot());
                        follow_ups.push(Input::SnapshotSaved { meta });
                    }
                    Action::ReadSnapshotChunk {
                        to,
                        meta,
                        offset,
                        bytes_max,
                    } => {
                        let saved = node.disk.snapshot().filter(|(saved, _)| *saved == meta);
                        if let Some(chunk) = saved.and_then(|(_, data)| {
                            Input::snapshot_chunk(to, meta.clone(), offset, bytes_max, data)
                        }) {
                            follow_ups.push(chunk);
                        }
                    }
                    Action::WriteSnapshotChunk { offset, data, .. } => {
                        if offset == 0 {
                            node.staging.clear();
                        }
                        assert_eq!(node.staging.len() as u64, offset, "chunks arrive in order");
                        node.staging.extend_from_slice(&data);
                    }
                    Action::InstallSnapshot {
                        id: persist_id,
                        meta,
                    } => {
                        if let Err(violation) = self.checker.on_install(id, &meta) {
                            panic!("invariant violated: {violation}");
                        }
                        let data = Bytes::from(std::mem::take(&mut node.staging));
                        node.kv =
                            KvStateMachine::restore(&data).expect("an installed snapshot restores");
                        node.disk.write_install(persist_id, meta, data);
                        node.disk.sync_up_to(persist_id);
                        follow_ups.push(Input::Persisted { id: persist_id });
                    }
                    Action::Send {
                        message,
                        after_persist,
                    } => {
                        if after_persist && node.disk.has_unsynced() {
                            node.held.push(message);
                        } else if !self.cut.contains(&(message.from, message.to)) {
                            self.in_flight.push(message);
                        }
                    }
                    Action::Apply { entries } => {
                        let last = entries.last().map(|entry| entry.index);
                        for entry in &entries {
                            if let Err(violation) = self.checker.on_apply(id, entry) {
                                panic!("invariant violated: {violation}");
                            }
                            match &entry.payload {
                                EntryPayload::Noop | EntryPayload::Membership(_) => {
                                    node.kv.skip(entry.index)
                                }
                                EntryPayload::Command(command) => {
                                    node.kv.apply(entry.index, command);
                                }
                            }
                        }
                        if let Some(index) = last {
                            follow_ups.push(Input::Applied { index });
                        }
                    }
                    Action::RoleChanged { .. } => {}
                    other => node.events.push(other),
                }
            }
            for follow_up in follow_ups {
                core.step(follow_up);
            }
        }
    }

    /// Delivers queued messages (and those they cause) until none are left or `limit` were.
    pub fn deliver_all(&mut self) {
        let mut delivered = 0;
        while !self.in_flight.is_empty() {
            let batch = std::mem::take(&mut self.in_flight);
            for message in batch {
                self.deliver(message);
                delivered += 1;
                assert!(delivered < 1_000_000, "messages never stop: a livelock");
            }
        }
    }

    /// Delivers queued messages that satisfy `wanted` (and those they cause, if wanted) until no
    /// such message is left; the rest stay queued in order.
    pub fn deliver_all_matching(&mut self, wanted: impl Fn(&Message) -> bool) {
        let mut held = Vec::new();
        loop {
            let (deliver, hold): (Vec<Message>, Vec<Message>) = std::mem::take(&mut self.in_flight)
                .into_iter()
                .partition(|message| wanted(message));
            held.extend(hold);
            if deliver.is_empty() {
                break;
            }
            for message in deliver {
                self.deliver(message);
            }
        }
        held.append(&mut self.in_flight);
        self.in_flight = held;
    }

    /// Delivers one message unless its link is cut or its target is down.
    pub fn deliver(&mut self, message: Message) {
        if self.cut.contains(&(message.from, message.to)) {
            return;
        }
        let to = message.to;
        if self.nodes.get(&to).is_some_and(|node| node.core.is_some()) {
            self.step(to, Input::Message(message));
        }
    }

    /// Lets `ms` milliseconds pass in 5 ms ticks, delivering everything after each.
    pub fn run_for(&mut self, ms: u64) {
        let end = self.now_ms + ms;
        while self.now_ms < end {
            self.now_ms += 5;
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                self.step(
                    id,
                    Input::Tick {
                        now_ms: self.now_ms,
                    },
                );
            }
            self.deliver_all();
        }
    }

    /// Forces `id` to campaign and delivers everything.
    pub fn elect(&mut self, id: NodeId) {
        self.step(id, Input::Campaign);
        self.deliver_all();
    }

    pub fn leaders(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, node)| {
                node.core
                    .as_ref()
                    .is_some_and(|core| core.status().role == Role::Leader)
            })
            .map(|(&id, _)| id)
            .collect()
    }

    /// The leader with the highest term, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.leaders()
            .into_iter()
            .max_by_key(|&id| self.status(id).term)
    }

    pub fn isolate(&mut self, id: NodeId) {
        let others: Vec<NodeId> = self
            .nodes
            .keys()
            .copied()
            .filter(|&other| other != id)
            .collect();
        for other in others {
            self.cut.insert((id, other));
            self.cut.insert((other, id));
        }
    }

    pub fn cut_link(&mut self, from: NodeId, to: NodeId) {
        self.cut.insert((from, to));
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    pub fn propose(&mut self, id: NodeId, request: u64, command: &'static [u8]) {
        let proposal = Proposal {
            id: request,
            command: Bytes::from_static(command),
        };
        self.step(id, Input::Propose(vec![proposal]));
    }

    /// From now on the node's writes stay unsynced until [`TestCluster::sync`].
    pub fn hold_syncs(&mut self, id: NodeId) {
        self.nodes.get_mut(&id).expect("known node").syncs_held = true;
    }

    /// The node's disk syncs what it holds; the messages that waited for it leave.
    pub fn sync(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("known node");
        node.syncs_held = false;
        if !node.disk.has_unsynced() {
            return;
        }
        let written = node.disk.written_id;
        node.disk.sync_up_to(written);
        self.in_flight.append(&mut node.held);
        self.step(id, Input::Persisted { id: written });
    }

    /// Drops a node's volatile state, and any writes not yet synced; it restarts from what it
    /// persisted.
    pub fn crash(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("known node");
        node.disk.lose_unsynced();
        node.syncs_held = false;
        node.held.clear();
        node.core = None;
        node.kv = KvStateMachine::new();
        node.staging.clear();
        node.disk = SimDisk::restarted(std::mem::take(&mut node.disk));
        self.in_flight.retain(|message| message.to != id);
    }

    /// The node's disk is lost (replaced by an empty one). Only while it is down.
    pub fn wipe(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("known node");
        assert!(node.core.is_none(), "wipe a node only while it is down");
        node.disk = SimDisk::default();
    }

    /// Restarts a node that lost its data as a joining node (no votes until admitted).
    pub fn restart_joining(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("known node");
        node.config.voters.clear();
        node.config.joining = true;
        self.restart(id);
    }

    /// Restarts a crashed node from its disk. Like a real node's, each incarnation has a seed
    /// of its own.
    pub fn restart(&mut self, id: NodeId) {
        let now_ms = self.now_ms;
        let node = self.nodes.get_mut(&id).expect("known node");
        node.config.seed = node.config.seed.wrapping_add(1 << 32);
        let recovered = node.disk.recover();
        node.watch = NodeWatch {
            term: recovered.hard_state.term,
            commit: recovered.hard_state.commit,
            role: None,
        };
        node.kv = match node.disk.snapshot() {
            Some((_, data)) => KvStateMachine::restore(data).expect("a saved snapshot restores"),
            None => KvStateMachine::new(),
        };
        let core = RawNode::new(node.config.clone(), recovered, now_ms).expect("valid config");
        node.core = Some(core);
    }

    /// The terms of a node's log, for comparing with the paper's figures.
    pub fn log_terms(&self, id: NodeId) -> Vec<u64> {
        let log = self.core(id).log();
        (1..=log.last_index())
            .map(|index| log.term(index).expect("held"))
            .collect()
    }

    /// Takes the events a node emitted so far.
    pub fn take_events(&mut self, id: NodeId) -> Vec<Action> {
        std::mem::take(&mut self.nodes.get_mut(&id).expect("known node").events)
    }
}
