//! The sharded store's directory on Ravel's replica: the second state machine runs on the same
//! `Replica` as the key-value store, with no change to it. Three replicas in memory (storage
//! completes at once): servers register through the leader, a follower answers a route with a
//! read index from the leader, and a replica cut off while the others move on catches up by
//! snapshot — restoring a directory equal to theirs.

use std::collections::{BTreeSet, VecDeque};

use ravel::core::{Config, Input, Message, NodeId, RawNode, Recovered, Role};
use ravel::directory::{
    Directory, DirectoryAnswer, DirectoryCommand, DirectoryOutcome, DirectoryQuery,
    DirectorySettings,
};
use ravel::replica::{Answer, Effect, Replica, Reply, Request, SnapshotImage, StateMachine};

struct Cluster {
    replicas: Vec<Replica<Directory>>,
    in_flight: VecDeque<Message>,
    /// Nodes whose messages (both ways) are dropped.
    cut: BTreeSet<NodeId>,
    replies: Vec<(NodeId, u64, Reply<Directory>)>,
    now_ms: u64,
}

impl Cluster {
    fn new() -> Self {
        let replicas = (1..=3)
            .map(|id| {
                let mut config = Config::new(id, 1..=3);
                config.snapshot_interval_entries = 20;
                config.snapshot_trailing_entries = 2;
                config.snapshot_chunk_bytes_max = 512;
                let core = RawNode::new(config, Recovered::default(), 0).expect("valid");
                let directory = Directory::new(DirectorySettings::default());
                Replica::new(core, directory, format!("10.0.1.{id}:7379"), None)
            })
            .collect();
        Cluster {
            replicas,
            in_flight: VecDeque::new(),
            cut: BTreeSet::new(),
            replies: Vec::new(),
            now_ms: 10_000,
        }
    }

    fn replica(&mut self, id: NodeId) -> &mut Replica<Directory> {
        &mut self.replicas[id as usize - 1]
    }

    /// Runs a replica and carries out its effects until it is quiet.
    fn run(&mut self, id: NodeId) {
        loop {
            let replica = &mut self.replicas[id as usize - 1];
            replica.tick(self.now_ms);
            replica.run();
            let effects = replica.take_effects();
            if effects.is_empty() {
                return;
            }
            for effect in effects {
                match effect {
                    Effect::Persist { id: persist, .. } => {
                        replica.completed(Input::Persisted { id: persist })
                    }
                    Effect::Send(message) => self.in_flight.push_back(message),
                    Effect::SaveSnapshot { meta, image } => {
                        let data = Box::new(image).encode();
                        replica.snapshot_saved(meta.clone(), data);
                        replica.completed(Input::SnapshotSaved { meta });
                    }
                    Effect::InstallSnapshot { id: persist, .. } => {
                        replica.completed(Input::Persisted { id: persist })
                    }
                    // No log is kept here: what the core no longer holds is held nowhere, and a
                    // follower that needs it gets a snapshot.
                    Effect::ReadEntries { peer, from, .. } => {
                        replica.completed(Input::EntriesRead {
                            peer,
                            from,
                            entries: Vec::new(),
                        })
                    }
                    Effect::Reply { ticket, reply } => self.replies.push((id, ticket, reply)),
                    Effect::Fatal(reason) => panic!("node {id} stops: {reason}"),
                    _ => {}
                }
            }
        }
    }

    /// Delivers messages (and those they cause) until none are left; time moves 5 ms a round.
    fn settle(&mut self) {
        for _ in 0..200 {
            self.now_ms += 5;
            for id in 1..=3 {
                self.run(id);
            }
            while let Some(message) = self.in_flight.pop_front() {
                if self.cut.contains(&message.from) || self.cut.contains(&message.to) {
                    continue;
                }
                let to = message.to;
                self.replica(to).message(message);
                self.run(to);
            }
        }
    }

    fn leader(&self) -> NodeId {
        (1..=3)
            .find(|&id| self.replicas[id as usize - 1].role() == Role::Leader)
            .expect("a leader")
    }

    fn take_reply(&mut self, ticket: u64) -> Reply<Directory> {
        let at = self
            .replies
            .iter()
            .position(|(_, answered, _)| *answered == ticket)
            .unwrap_or_else(|| panic!("request {ticket} was not answered"));
        self.replies.remove(at).2
    }

    fn register(&mut self, token: u64) -> DirectoryOutcome {
        let leader = self.leader();
        let command = DirectoryCommand::Register {
            token,
            address: format!("10.0.0.{token}:7379"),
            labels: Vec::new(),
        };
        let write = Request::Write {
            command: command.encode(),
            may_forward: false,
        };
        self.replica(leader).request(token, write);
        self.settle();
        match self.take_reply(token) {
            Ok(Answer::Written { outcome, .. }) => outcome,
            other => panic!("registration {token}: {other:?}"),
        }
    }
}

#[test]
fn the_directory_runs_on_the_same_replica_as_the_key_value_store() {
    let mut cluster = Cluster::new();
    cluster.replica(1).campaign();
    cluster.settle();
    assert_eq!(cluster.leader(), 1);

    // Six servers: two groups of three, in the order the log put them.
    for token in 1..=6 {
        let DirectoryOutcome::Registered { node, group, .. } = cluster.register(token) else {
            panic!("server {token} not registered");
        };
        assert_eq!((node, group), (99 + token, 1 + (token - 1) / 3));
    }

    // A follower answers a route after confirming with the leader (a read index).
    let read = Request::Read {
        query: DirectoryQuery::Route(0),
        stale: false,
        may_forward: true,
    };
    cluster.replica(2).request(1_000, read);
    cluster.settle();
    match cluster.take_reply(1_000) {
        Ok(Answer::Read {
            answer: DirectoryAnswer::Route(Some((1, 1, None))),
            ..
        }) => {}
        other => panic!("route: {other:?}"),
    }

    // Node 3 is cut off while sixty more servers register (snapshots are taken every 20
    // entries, so the leader no longer holds what node 3 misses); healed, it installs the
    // leader's snapshot and its directory equals the others'.
    cluster.cut.insert(3);
    for token in 7..=66 {
        cluster.register(token);
    }
    let behind = cluster.replicas[2].core().log().last_index();
    cluster.cut.clear();
    cluster.settle();
    let caught_up = cluster.replicas[2].core().log();
    assert!(
        caught_up.first_index() > behind + 1,
        "node 3 caught up by snapshot: its log starts at {} (it held up to {behind})",
        caught_up.first_index()
    );
    let states: Vec<&Directory> = cluster
        .replicas
        .iter()
        .map(|replica| replica.state())
        .collect();
    assert_eq!(states[0].servers().len(), 66);
    assert_eq!(states[0], states[1]);
    assert_eq!(states[0], states[2]);
    // The directory's replicas recorded their own addresses in it (their address book).
    assert!(states[2]
        .addresses()
        .contains(&(1, "10.0.1.1:7379".to_string())));
}
