//! Three replicas on real file storage in temporary directories: writes, snapshots, a follower that
//! is down while the leader compacts past it and catches up after restarting from its files (from
//! the leader's log when it keeps entries behind its snapshots, else by snapshot), and a
//! full-cluster restart that loses nothing acknowledged.

use std::collections::VecDeque;
use std::path::Path;

use bytes::Bytes;
use ravel::core::{
    bounded_entries, read_entries_through, Config, Input, Message, NodeId, RawNode, Role,
};
use ravel::kv::{Command, KvStateMachine};
use ravel::replica::{Answer, Effect, Replica, Request, SnapshotImage};
use ravel::storage::{FileStorage, Identity, StorageOptions};

/// A node: its replica (the code a real node runs) and its files.
struct Node {
    replica: Replica<KvStateMachine>,
    storage: FileStorage,
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

fn start(dir: &Path, id: NodeId, now_ms: u64, retain_entries: u64) -> Node {
    let identity = Identity {
        cluster_id: 42,
        node_id: id,
    };
    let options = StorageOptions {
        segment_bytes_max: 4096,
        retain_entries,
        retain_bytes: 1 << 20,
    };
    let (storage, state) =
        FileStorage::open(dir.join(format!("node-{id}")), identity, options).expect("opens");
    let saved = storage
        .load_snapshot()
        .expect("reads")
        .map(|(meta, data)| (meta, Bytes::from(data)));
    let kv = match &saved {
        Some((_, data)) => KvStateMachine::restore(data).expect("restores"),
        None => KvStateMachine::new(),
    };
    let core = RawNode::new(config(id), state.into(), now_ms).expect("valid");
    Node {
        replica: Replica::new(core, kv, format!("node-{id}"), saved),
        storage,
    }
}

struct Cluster {
    nodes: Vec<Option<Node>>,
    in_flight: VecDeque<Message>,
    now_ms: u64,
    /// Puts answered "written" (applied, with their outcome).
    acknowledged: Vec<u64>,
    /// Snapshots installed from a leader, and entries a leader read back from its log.
    installs: usize,
    read_back: usize,
}

impl Cluster {
    fn node(&mut self, id: NodeId) -> Option<&mut Node> {
        self.nodes[id as usize - 1].as_mut()
    }

    /// Hands a node `input`, runs its replica and carries out its effects against its files;
    /// storage syncs at once.
    fn step(&mut self, id: NodeId, input: impl FnOnce(&mut Replica<KvStateMachine>)) {
        let now_ms = self.now_ms;
        let Some(node) = self.node(id) else { return };
        node.replica.tick(now_ms);
        input(&mut node.replica);
        let mut sent = Vec::new();
        let mut acknowledged = Vec::new();
        let (mut installs, mut read_back) = (0, 0);
        loop {
            node.replica.run();
            let effects = node.replica.take_effects();
            if effects.is_empty() {
                break;
            }
            for effect in effects {
                match effect {
                    Effect::Persist {
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
                        node.replica.completed(Input::Persisted { id });
                    }
                    Effect::Send(message) => sent.push(message),
                    Effect::SaveSnapshot { meta, image } => {
                        let data = Box::new(image).encode();
                        node.storage
                            .save_snapshot(meta.clone(), &data)
                            .expect("snapshot");
                        node.replica.snapshot_saved(meta.clone(), data);
                        node.replica.completed(Input::SnapshotSaved { meta });
                    }
                    Effect::ReadSnapshotChunk {
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
                        if saved == meta {
                            let data = Bytes::from(data);
                            if let Some(chunk) =
                                Input::snapshot_chunk(to, meta, offset, bytes_max, &data)
                            {
                                node.replica.completed(chunk);
                            }
                        }
                    }
                    Effect::InstallSnapshot { id, meta, data } => {
                        node.storage.save_snapshot(meta, &data).expect("install");
                        node.replica.completed(Input::Persisted { id });
                        installs += 1;
                    }
                    Effect::ReadEntries {
                        peer,
                        from,
                        through,
                        entries_max,
                        bytes_max,
                    } => {
                        let through = read_entries_through(from, through, entries_max);
                        let entries = node.storage.entries(from, through).expect("reads");
                        let entries = bounded_entries(entries, bytes_max);
                        read_back += entries.len();
                        node.replica.completed(Input::EntriesRead {
                            peer,
                            from,
                            entries,
                        });
                    }
                    Effect::Reply { ticket, reply } => match reply {
                        Ok(Answer::Written { .. }) => acknowledged.push(ticket),
                        other => panic!("put {ticket} answered {other:?}"),
                    },
                    Effect::Fatal(reason) => panic!("node {id} stops: {reason}"),
                    _ => {}
                }
            }
        }
        self.in_flight.extend(sent);
        self.acknowledged.extend(acknowledged);
        self.installs += installs;
        self.read_back += read_back;
    }

    fn run_for(&mut self, ms: u64) {
        for _ in 0..ms / 5 {
            self.now_ms += 5;
            for id in 1..=3 {
                self.step(id, |_| {});
            }
            while let Some(message) = self.in_flight.pop_front() {
                let to = message.to;
                self.step(to, |replica| replica.message(message));
            }
        }
    }

    fn leader(&self) -> NodeId {
        (1..=3)
            .find(|&id| {
                self.nodes[id as usize - 1]
                    .as_ref()
                    .is_some_and(|node| node.replica.role() == Role::Leader)
            })
            .expect("a leader")
    }

    fn put(&mut self, request: u64) {
        let leader = self.leader();
        let command = Command::Put {
            key: Bytes::from(format!("key-{request}")),
            value: Bytes::from(format!("value-{request}")),
        };
        let put = Request::Write {
            command: command.encode(),
            may_forward: false,
        };
        self.step(leader, |replica| replica.request(request, put));
        self.run_for(10);
    }
}

/// With no log kept behind snapshots, the follower catches up by snapshot.
#[test]
fn a_cluster_on_files_survives_compaction_crashes_and_restarts() {
    let cluster = compaction_crashes_and_restarts(0);
    assert!(cluster.installs >= 1, "caught up by snapshot");
}

/// With the log kept behind snapshots, the follower catches up from the leader's log, read
/// back from its files: no snapshot is sent.
#[test]
fn a_follower_catches_up_from_the_log_kept_behind_snapshots() {
    let cluster = compaction_crashes_and_restarts(1_000);
    assert_eq!(cluster.installs, 0, "no snapshot was needed");
    assert!(
        cluster.read_back >= 150,
        "the leader read back the entries the follower missed: {}",
        cluster.read_back
    );
}

fn compaction_crashes_and_restarts(retain_entries: u64) -> Cluster {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cluster = Cluster {
        nodes: (1..=3)
            .map(|id| Some(start(dir.path(), id, 0, retain_entries)))
            .collect(),
        in_flight: VecDeque::new(),
        now_ms: 5_000,
        acknowledged: Vec::new(),
        installs: 0,
        read_back: 0,
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
    // It restarts from its files and catches up: its next entries are no longer in the
    // leader's memory.
    let now_ms = cluster.now_ms;
    cluster.nodes[follower as usize - 1] =
        Some(start(dir.path(), follower, now_ms, retain_entries));
    cluster.run_for(2_000);
    let expected = cluster.node(leader).expect("up").replica.state().snapshot();
    for id in 1..=3 {
        assert_eq!(
            cluster
                .node(id)
                .expect("up")
                .replica
                .state()
                .get(b"key-299"),
            Some(&Bytes::from("value-299"))
        );
    }
    assert_eq!(
        cluster
            .node(follower)
            .expect("up")
            .replica
            .state()
            .snapshot(),
        expected
    );
    // Every node restarts from disk at once: every write is still there, on every node.
    let now_ms = cluster.now_ms;
    // The old processes are gone (and their directories' locks with them) before the new start.
    cluster.nodes.clear();
    cluster.nodes = (1..=3)
        .map(|id| Some(start(dir.path(), id, now_ms, retain_entries)))
        .collect();
    cluster.run_for(2_000);
    assert_eq!(cluster.acknowledged.len(), 300, "every put was answered");
    for id in 1..=3 {
        let kv = cluster.node(id).expect("up").replica.state();
        for request in 0..300 {
            let key = format!("key-{request}");
            assert_eq!(
                kv.get(key.as_bytes()),
                Some(&Bytes::from(format!("value-{request}"))),
                "node {id} lost {key}"
            );
        }
    }
    cluster
}
