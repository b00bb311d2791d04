//! A hand-driven cluster of replicas for scenario tests: the test decides which messages arrive,
//! when time passes and who crashes; storage syncs at once unless a test holds a node's syncs. Every step
//! is checked by the same invariant checker as the randomized simulator.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use ravel::core::{
    Action, Config, Entry, EntryPayload, HardState, Input, Message, NodeId, Proposal, RawNode,
    Role, Status,
};
use ravel::kv::KvStateMachine;
use ravel::replica::{Effect, Replica};
use ravel::storage::Standing;

use crate::checker::{Checker, NodeWatch};
use crate::disk::SimDisk;

pub struct TestNode {
    /// The node's replica (the code a real node runs), while it is up. It has no address, so
    /// it registers none: a test's log holds only what the test put there.
    pub replica: Option<Replica<KvStateMachine>>,
    pub config: Config,
    /// Synced at once after every write, unless `syncs_held`.
    pub disk: SimDisk,
    /// Writes stay unsynced, and messages that promise them wait (in the replica), until
    /// [`TestCluster::sync`]; a crash meanwhile loses them.
    syncs_held: bool,
    watch: NodeWatch,
    /// Replies the core emitted (proposal and read outcomes), for the test to look at.
    pub events: Vec<Action>,
}

impl TestNode {
    /// The node's state machine (it must be up).
    pub fn kv(&self) -> &KvStateMachine {
        self.replica.as_ref().expect("node is up").state()
    }
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
                let replica = Replica::new(core, KvStateMachine::new(), String::new(), None);
                let node = TestNode {
                    watch: NodeWatch {
                        term: hard_state.term,
                        ..NodeWatch::default()
                    },
                    replica: Some(replica),
                    config,
                    disk: SimDisk::restarted(disk),
                    syncs_held: false,
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
        self.nodes[&id].replica.as_ref().expect("node is up").core()
    }

    pub fn status(&self, id: NodeId) -> Status {
        self.core(id).status()
    }

    /// Feeds one input to a node (after a tick at the current time) and runs its replica:
    /// persists complete at once, messages queue in `in_flight`, entries apply.
    pub fn step(&mut self, id: NodeId, input: Input) {
        self.step_batch(id, vec![input]);
    }

    /// Feeds several inputs before running the replica, as the shell does with a burst of
    /// requests. Checks the invariants after every round of the core's actions.
    pub fn step_batch(&mut self, id: NodeId, inputs: Vec<Input>) {
        let now_ms = self.now_ms;
        let node = self.nodes.get_mut(&id).expect("known node");
        let Some(replica) = node.replica.as_mut() else {
            return;
        };
        replica.tick(now_ms);
        for input in inputs {
            replica.step(input);
        }
        self.carry_out_effects(id);
        loop {
            let node = self.nodes.get_mut(&id).expect("known node");
            let replica = node
                .replica
                .as_mut()
                .expect("a node stays up while it steps");
            let Some(actions) = replica.take_round() else {
                self.carry_out_effects(id);
                return;
            };
            if let Err(violation) = self.checker.after_step(replica.core(), &mut node.watch) {
                panic!("invariant violated: {violation}");
            }
            for action in actions {
                let node = self.nodes.get_mut(&id).expect("known node");
                let checked = match &action {
                    Action::Apply { entries } => entries
                        .iter()
                        .try_for_each(|entry| self.checker.on_apply(id, entry)),
                    Action::InstallSnapshot { meta, .. } => self.checker.on_install(id, meta),
                    Action::Persist { .. }
                    | Action::Send { .. }
                    | Action::TakeSnapshot { .. }
                    | Action::ReadSnapshotChunk { .. }
                    | Action::ReadEntries { .. }
                    | Action::WriteSnapshotChunk { .. }
                    | Action::RoleChanged { .. } => Ok(()),
                    reply => {
                        node.events.push(reply.clone());
                        Ok(())
                    }
                };
                if let Err(violation) = checked {
                    panic!("invariant violated: {violation}");
                }
                node.replica.as_mut().expect("up").execute(action);
                self.carry_out_effects(id);
            }
        }
    }

    /// Carries out what a node's replica asked for: storage at once (unless its syncs are
    /// held), messages into `in_flight` unless their link is cut.
    fn carry_out_effects(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("known node");
        let Some(replica) = node.replica.as_mut() else {
            return;
        };
        for effect in replica.take_effects() {
            match effect {
                Effect::Persist {
                    id: persist_id,
                    hard_state,
                    entries,
                    ..
                } => {
                    node.disk.write(persist_id, hard_state, entries);
                    if !node.syncs_held {
                        node.disk.sync_up_to(persist_id);
                        replica.completed(Input::Persisted { id: persist_id });
                    }
                }
                Effect::Send(message) => {
                    if !self.cut.contains(&(message.from, message.to)) {
                        self.in_flight.push(message);
                    }
                }
                Effect::SaveSnapshot { meta, image } => {
                    node.disk.save_snapshot_of(replica, meta, image);
                }
                Effect::ReadSnapshotChunk {
                    to,
                    meta,
                    offset,
                    bytes_max,
                } => node
                    .disk
                    .read_chunk_for(replica, (to, meta, offset, bytes_max)),
                Effect::ReadEntries {
                    peer,
                    from,
                    through,
                    entries_max,
                    bytes_max,
                } => node
                    .disk
                    .read_entries_for(replica, (peer, from, through, entries_max, bytes_max)),
                Effect::InstallSnapshot {
                    id: persist_id,
                    meta,
                    data,
                } => {
                    node.disk.write_install(persist_id, meta, data);
                    node.disk.sync_up_to(persist_id);
                    replica.completed(Input::Persisted { id: persist_id });
                }
                Effect::Fatal(reason) => panic!("invariant violated: node {id} stops: {reason}"),
                // Admitted by a configuration entry in its log: it restarts as a member.
                Effect::RecordStanding(Standing::Admitted) => node.config.joining = false,
                Effect::RecordStanding(_)
                | Effect::Reply { .. }
                | Effect::AddressLearned { .. }
                | Effect::LeaderChanged { .. }
                | Effect::MemberStateChanged { .. } => {}
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
        if self
            .nodes
            .get(&to)
            .is_some_and(|node| node.replica.is_some())
        {
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
                node.replica
                    .as_ref()
                    .is_some_and(|replica| replica.core().status().role == Role::Leader)
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
        // The replica lets the messages that waited for these writes go.
        self.step(id, Input::Persisted { id: written });
    }

    /// Drops a node's volatile state, and any writes not yet synced; it restarts from what it
    /// persisted.
    pub fn crash(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("known node");
        node.disk.lose_unsynced();
        node.syncs_held = false;
        node.replica = None;
        node.disk = SimDisk::restarted(std::mem::take(&mut node.disk));
        self.in_flight.retain(|message| message.to != id);
    }

    /// The node's disk is lost (replaced by an empty one). Only while it is down.
    pub fn wipe(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("known node");
        assert!(node.replica.is_none(), "wipe a node only while it is down");
        node.disk = SimDisk::default();
    }

    /// Restarts a node that lost its data as a joining node (no votes until admitted).
    pub fn restart_joining(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("known node");
        node.config.voters.clear();
        node.config.joining = true;
        self.restart(id);
    }

    /// The nonce node `id` would join with now (a joining node's, drawn at each restart; 0
    /// for a member).
    pub fn join_nonce(&self, id: NodeId) -> u64 {
        self.nodes[&id].config.join_nonce
    }

    /// Restarts a crashed node from its disk. Like a real node's, each incarnation has a seed
    /// of its own.
    pub fn restart(&mut self, id: NodeId) {
        let now_ms = self.now_ms;
        let node = self.nodes.get_mut(&id).expect("known node");
        node.config.seed = node.config.seed.wrapping_add(1 << 32);
        if node.config.joining {
            // New at every start, as a real node's.
            node.config.join_nonce =
                (node.config.seed ^ 0x6a6f_696e).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        }
        let recovered = node.disk.recover();
        node.watch = NodeWatch {
            term: recovered.hard_state.term,
            commit: recovered.hard_state.commit,
            ..NodeWatch::default()
        };
        let core = RawNode::new(node.config.clone(), recovered, now_ms).expect("valid config");
        node.replica = Some(node.disk.start_replica(core, String::new()));
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
