//! A node fed whatever a broken or hostile peer sends: protobuf peer messages, decoded and
//! checked at the node's boundary exactly as the peer service does
//! ([`ravel::server::convert::peer_message_from_proto`]), then stepped into a core that holds a
//! log and a committed prefix. The node must never panic, and what it asks of its storage and
//! state machine must stay what they accept (entries contiguous and following what is stored;
//! entries applied in order, each once), because those assert it. Safety is not checked: a peer
//! that lies with a well-formed message (a forged term, say) can mislead any Raft node.
//!
//! Used by the fuzz target `peer_batch` (arbitrary bytes) and the property test
//! `sim/tests/hostile_peer.rs` (generated messages).

use bytes::Bytes;
use ravel::core::{
    Action, Config, Entry, EntryPayload, HardState, Input, LogIndex, NodeId, RawNode, Recovered,
};
use ravel::server::convert::peer_message_from_proto;
use ravel::server::proto::ravel::RaftMessage;

/// The node under attack: node 2 of voters {1, 2, 3}.
pub const TARGET: NodeId = 2;

pub struct HostileTarget {
    core: RawNode,
    now_ms: u64,
    /// The last entry index storage holds (what its `append` checks a new entry against).
    stored_last: LogIndex,
    /// The last index the state machine applied.
    applied: LogIndex,
    /// Messages refused at the boundary.
    pub refused: u64,
}

impl Default for HostileTarget {
    fn default() -> Self {
        Self::new()
    }
}

impl HostileTarget {
    /// A follower holding entries 1..=4 of terms 1, 1, 2, 2, with 3 committed and applied.
    pub fn new() -> Self {
        let mut config = Config::new(TARGET, [1, 2, 3]);
        config.seed = 7;
        config.snapshot_interval_entries = 4;
        config.snapshot_trailing_entries = 1;
        let entries: Vec<Entry> = [1, 1, 2, 2]
            .iter()
            .enumerate()
            .map(|(position, &term)| Entry {
                term,
                index: position as LogIndex + 1,
                payload: EntryPayload::Command(Bytes::from_static(b"\x00")),
            })
            .collect();
        let recovered = Recovered {
            hard_state: HardState {
                term: 2,
                vote: Some(1),
                commit: 3,
            },
            snapshot: None,
            entries,
        };
        let core = RawNode::new(config, recovered, 0).expect("a valid configuration");
        let mut target = HostileTarget {
            core,
            now_ms: 0,
            stored_last: 4,
            applied: 0,
            refused: 0,
        };
        target.execute();
        target
    }

    /// Delivers one message as if it arrived in a batch from `from`.
    pub fn deliver(&mut self, from: NodeId, message: RaftMessage) {
        match peer_message_from_proto(message, from, TARGET) {
            Ok(message) => {
                self.core.step(Input::Message(message));
                self.execute();
            }
            Err(_) => self.refused += 1,
        }
    }

    /// Lets `ms` of time pass, in ticks of 10 ms.
    pub fn pass(&mut self, ms: u64) {
        for _ in 0..ms / 10 {
            self.now_ms += 10;
            self.core.step(Input::Tick {
                now_ms: self.now_ms,
            });
            self.execute();
        }
    }

    /// Carries out the core's actions as the node does, asserting what its storage and state
    /// machine would assert.
    fn execute(&mut self) {
        loop {
            let actions = self.core.take_actions();
            if actions.is_empty() {
                return;
            }
            let mut follow_ups = Vec::new();
            for action in actions {
                match action {
                    Action::Persist { id, entries, .. } => {
                        if let Some(first) = entries.first() {
                            assert!(
                                first.index <= self.stored_last + 1,
                                "entry {} stored after {} leaves a gap",
                                first.index,
                                self.stored_last
                            );
                        }
                        for pair in entries.windows(2) {
                            assert_eq!(pair[1].index, pair[0].index + 1, "entries not contiguous");
                        }
                        if let Some(last) = entries.last() {
                            self.stored_last = last.index;
                        }
                        follow_ups.push(Input::Persisted { id });
                    }
                    Action::Apply { entries } => {
                        for entry in &entries {
                            assert_eq!(entry.index, self.applied + 1, "applied out of order");
                            self.applied = entry.index;
                        }
                        if let Some(last) = entries.last() {
                            follow_ups.push(Input::Applied { index: last.index });
                        }
                    }
                    Action::TakeSnapshot { meta } => {
                        follow_ups.push(Input::SnapshotSaved { meta });
                    }
                    Action::InstallSnapshot { id, meta } => {
                        // The state machine is replaced by the snapshot's.
                        self.stored_last = meta.index;
                        self.applied = meta.index;
                        follow_ups.push(Input::Persisted { id });
                    }
                    _ => {}
                }
            }
            for input in follow_ups {
                self.core.step(input);
            }
        }
    }
}
