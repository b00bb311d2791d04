//! Three cores on real file storage in temporary directories: writes, snapshots, a follower that
//! is down while the leader compacts past it and catches up by snapshot after restarting from its
//! files, and a full-cluster restart that loses nothing acknowledged.

use std::collections::VecDeque;
use std::path::Path;

use bytes::Bytes;
use ravel::core::{
    Action, Config, EntryPayload, Input, Message, NodeId, Proposal, RawNode, Role, SnapshotMeta,
};
use ravel::kv::{Command, KvStateMachine};
use ravel::storage::{FileStorage, Identity, StorageOptions};

struct Node {
    core: RawNode,
    storage: FileStorage,
    kv: KvStateMachine,
    staging: Vec<u8>,
}

fn config(id: NodeId) -> Config {
    let mut config = Config::new(id, [1, 2, 3]);
    config.election_timeout_min_ms = 100;
    config.election_timeout_max_ms = 200;
    config.heartbeat_interval_ms = 20;
    config.snapshot_interval_entries = 50;
    config.snapshot_trailing_entries = 5;
    config.snapshot_chunk_bytes_max = 256;
    config
}

fn start(dir: &Path, id: NodeId, now_ms: u64) -> Node {
    let identity = Identity {
        cluster_id: 42,
        node_id: id,
    };
    let options = StorageOptions {
        segment_bytes_max: 4096,
    };
    let (storage, state) =
        FileStorage::open(dir.join(format!("node-{id}")), identity, options).expect("opens");
    let kv = match storage.load_snapshot().expect("reads") {
        Some((_, data)) => KvStateMachine::restore(&data).expect("restores"),
        None => KvStateMachine::new(),
    };
    let core = RawNode::new(config(id), state.into(), now_ms).expect("valid");
    Node {
        core,
        storage,
        kv,
        staging: Vec::new(),
    }
}

struct Cluster {
    nodes: Vec<Option<Node>>,
    in_flight: VecDeque<Message>,
    now_ms: u64,
    acknowledged: Vec<u64>,
}

impl Cluster {
    fn node(&mut self, id: NodeId) -> Option<&mut Node> {
        self.nodes[id as usize - 1].as_mut()
    }

    /// Steps a node and carries out its actions against its files; storage syncs at once.
    fn step(&mut self, id: NodeId, input: Input) {
        let now_ms = self.now_ms;
        let Some(node) = self.node(id) else { return };
        node.core.step(Input::Tick { now_ms });
        node.core.step(input);
        let mut sent = Vec::new();
        let mut acknowledged = Vec::new();
        loop {
            let actions = node.core.take_actions();
            if actions.is_empty() {
                break;
            }
            let mut follow_ups = Vec::new();
            for action in actions {
                match action {
                    Action::Persist {
                        id,
                        hard_state,
                        entries,
                        ..
                    } => {
                        node.storage.append(&entries).expect("append");
                        if let Some(hard_state) = hard_state {
                            node.storage.set_hard_state(hard_state).expect("hard state");
                        }
                        node.storage.sync().expect("sync");
                        follow_ups.push(Input::Persisted { id });
                    }
                    Action::Send { message, .. } => sent.push(message),
                    Action::Apply { entries } => {
                        for entry in &entries {
                            match &entry.payload {
                                EntryPayload::Noop | EntryPayload::Membership(_) => {
                                    node.kv.skip(entry.index)
                                }
                                EntryPayload::Command(command) => {
                                    node.kv.apply(entry.index, command);
                                }
                            }
                        }
                        follow_ups.push(Input::Applied {
                            index: entries.last().expect("non-empty").index,
                        });
                    }
                    Action::ProposalAccepted { id: request, .. } => acknowledged.push(request),
                    Action::TakeSnapshot { meta } => {
                        assert_eq!(node.kv.applied_index(), meta.index);
                        node.storage
                            .save_snapshot(meta.clone(), &node.kv.snapshot())
                            .expect("snapshot");
                        follow_ups.push(Input::SnapshotSaved { meta });
                    }
                    Action::ReadSnapshotChunk {
                        to,
                        meta,
                        offset,
                        bytes_max,
                    } => {
                        let (saved, data) = node
                            .storage
                            .load_snapshot()
                            .expect("reads")
                            .expect("has one");
                        let data = Bytes::from(data);
                        if saved == meta {
                            follow_ups
                                .extend(Input::snapshot_chunk(to, meta, offset, bytes_max, &data));
                        }
                    }
                    Action::WriteSnapshotChunk { offset, data, .. } => {
                        node.staging.truncate(offset as usize);
                        node.staging.extend_from_slice(&data);
                    }
                    Action::InstallSnapshot { id, meta } => {
                        install(node, meta);
                        follow_ups.push(Input::Persisted { id });
                    }
                    _ => {}
                }
            }
            for input in follow_ups {
                node.core.step(input);
            }
        }
        self.in_flight.extend(sent);
        self.acknowledged.extend(acknowledged);
    }

    fn run_for(&mut self, ms: u64) {
        for _ in 0..ms / 5 {
            self.now_ms += 5;
            for id in 1..=3 {
                self.step(
                    id,
                    Input::Tick {
                        now_ms: self.now_ms,
                    },
                );
            }
            while let Some(message) = self.in_flight.pop_front() {
                let to = message.to;
                self.step(to, Input::Message(message));
            }
        }
    }

    fn leader(&self) -> NodeId {
        (1..=3)
            .find(|&id| {
                self.nodes[id as usize - 1]
                    .as_ref()
                    .is_some_and(|node| node.core.status().role == Role::Leader)
            })
            .expect("a leader")
    }

    fn put(&mut self, request: u64) {
        let leader = self.leader();
        let command = Command::Put {
            key: Bytes::from(format!("key-{request}")),
            value: Bytes::from(format!("value-{request}")),
        };
        self.step(
            leader,
            Input::Propose(vec![Proposal {
                id: request,
                command: command.encode(),
            }]),
        );
        self.run_for(10);
    }
}

fn install(node: &mut Node, meta: SnapshotMeta) {
    node.storage
        .save_snapshot(meta, &node.staging)
        .expect("install");
    node.kv = KvStateMachine::restore(&node.staging).expect("restores");
    node.staging.clear();
}

#[test]
fn a_cluster_on_files_survives_compaction_crashes_and_restarts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cluster = Cluster {
        nodes: (1..=3).map(|id| Some(start(dir.path(), id, 0))).collect(),
        in_flight: VecDeque::new(),
        now_ms: 5_000,
        acknowledged: Vec::new(),
    };
    cluster.run_for(1_000);
    for request in 0..100 {
        cluster.put(request);
    }
    // Node 3 goes down; the others write on and compact far past its log.
    let follower = (1..=3)
        .find(|&id| id != cluster.leader())
        .expect("a follower");
    cluster.nodes[follower as usize - 1] = None;
    for request in 100..300 {
        cluster.put(request);
    }
    let leader = cluster.leader();
    let leader_snapshot = cluster
        .node(leader)
        .expect("up")
        .storage
        .snapshot()
        .expect("snapshotted")
        .clone();
    assert!(
        leader_snapshot.index > 250,
        "the leader compacted: {leader_snapshot:?}"
    );
    // It restarts from its files and catches up: by snapshot, since its next entries are gone.
    let now_ms = cluster.now_ms;
    cluster.nodes[follower as usize - 1] = Some(start(dir.path(), follower, now_ms));
    cluster.run_for(2_000);
    let caught_up = cluster.node(follower).expect("up");
    assert!(caught_up.storage.snapshot().expect("installed").index >= leader_snapshot.index);
    let expected = cluster.node(leader).expect("up").kv.snapshot();
    for id in 1..=3 {
        assert_eq!(
            cluster.node(id).expect("up").kv.get(b"key-299"),
            Some(&Bytes::from("value-299"))
        );
    }
    assert_eq!(cluster.node(follower).expect("up").kv.snapshot(), expected);
    // Every node restarts from disk at once: every write is still there, on every node.
    let now_ms = cluster.now_ms;
    // The old processes are gone (and their directories' locks with them) before the new start.
    cluster.nodes.clear();
    cluster.nodes = (1..=3)
        .map(|id| Some(start(dir.path(), id, now_ms)))
        .collect();
    cluster.run_for(2_000);
    assert_eq!(cluster.acknowledged.len(), 300, "every put was accepted");
    for id in 1..=3 {
        let kv = &cluster.node(id).expect("up").kv;
        for request in 0..300 {
            let key = format!("key-{request}");
            assert_eq!(
                kv.get(key.as_bytes()),
                Some(&Bytes::from(format!("value-{request}"))),
                "node {id} lost {key}"
            );
        }
    }
}
