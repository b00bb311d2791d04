//! The key-value state machine applied from the log.
//!
//! A hash map with a fixed hasher (FxHash): applying is the hottest loop of every replica, and a
//! `BTreeMap` of byte keys cost a third of the CPU of the in-process benchmark. The hasher has no
//! per-process randomness, and nothing iterates the map in an order that reaches a replica's
//! output, so replicas stay deterministic. (FxHash is not collision-resistant; a store exposed to
//! hostile key choices would want a keyed hasher, at about twice the hashing cost.)

use std::collections::HashMap;

use rustc_hash::FxBuildHasher;

use bytes::Bytes;

use super::command::{Command, DecodeError};
use crate::core::LogIndex;
use crate::storage::{self, CodecError};

/// A snapshot as bincode encodes it: the applied index and the pairs, sorted by key so that equal
/// states give equal bytes.
#[derive(bincode::Encode, bincode::Decode)]
struct SnapshotImage {
    applied_index: LogIndex,
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The same image, encoded from borrowed bytes (a slice encodes exactly as a `Vec<u8>`), so
/// encoding does not copy the whole store first.
#[derive(bincode::Encode)]
struct SnapshotImageRef<'a> {
    applied_index: LogIndex,
    pairs: Vec<(&'a [u8], &'a [u8])>,
}

/// The state of the store at one applied index, to be encoded as a snapshot.
#[derive(Debug)]
pub struct SnapshotState {
    applied_index: LogIndex,
    pairs: Vec<(Bytes, Bytes)>,
}

impl SnapshotState {
    /// Encodes the state: the same bytes as [`KvStateMachine::snapshot`] at that index.
    pub fn encode(mut self) -> Bytes {
        self.pairs.sort_unstable();
        let image = SnapshotImageRef {
            applied_index: self.applied_index,
            pairs: self
                .pairs
                .iter()
                .map(|(key, value)| (&key[..], &value[..]))
                .collect(),
        };
        Bytes::from(storage::encode(&image))
    }
}

/// The result of applying one command, returned to the client that proposed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Put,
    Deleted {
        existed: bool,
    },
    CompareAndSwap {
        swapped: bool,
        current: Option<Bytes>,
    },
    /// The entry did not decode; every replica reaches the same verdict, so nothing diverges.
    Invalid(DecodeError),
}

#[derive(Debug, Default)]
pub struct KvStateMachine {
    data: HashMap<Bytes, Bytes, FxBuildHasher>,
    applied_index: LogIndex,
}

impl KvStateMachine {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies the command of entry `index`; entries must arrive in order, each once.
    pub fn apply(&mut self, index: LogIndex, command: &Bytes) -> Outcome {
        assert_eq!(
            index,
            self.applied_index + 1,
            "entries must be applied in order"
        );
        self.applied_index = index;
        match Command::decode(command) {
            Ok(command) => self.apply_command(command),
            Err(error) => Outcome::Invalid(error),
        }
    }

    /// Applies entry `index` whose command the caller already decoded (the shell looks at it too).
    pub fn apply_decoded(&mut self, index: LogIndex, command: Command) -> Outcome {
        assert_eq!(
            index,
            self.applied_index + 1,
            "entries must be applied in order"
        );
        self.applied_index = index;
        self.apply_command(command)
    }

    /// Every pair whose key starts with `prefix`, sorted by key.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Vec<(Bytes, Bytes)> {
        let mut pairs: Vec<(Bytes, Bytes)> = self
            .data
            .iter()
            .filter(|(key, _)| key.starts_with(prefix))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        pairs.sort_unstable();
        pairs
    }

    /// Records an entry without a command (a leader's no-op).
    pub fn skip(&mut self, index: LogIndex) {
        assert_eq!(
            index,
            self.applied_index + 1,
            "entries must be applied in order"
        );
        self.applied_index = index;
    }

    fn apply_command(&mut self, command: Command) -> Outcome {
        match command {
            Command::Put { key, value } => {
                self.data.insert(key, value);
                Outcome::Put
            }
            Command::Delete { key } => Outcome::Deleted {
                existed: self.data.remove(&key).is_some(),
            },
            Command::CompareAndSwap { key, expected, new } => {
                let current = self.data.get(&key);
                if current == expected.as_ref() {
                    self.data.insert(key, new);
                    Outcome::CompareAndSwap {
                        swapped: true,
                        current: expected,
                    }
                } else {
                    Outcome::CompareAndSwap {
                        swapped: false,
                        current: current.cloned(),
                    }
                }
            }
        }
    }

    /// The whole state, encoded (version byte, then bincode), identical on every replica that
    /// applied the same entries.
    pub fn snapshot(&self) -> Bytes {
        self.snapshot_state().encode()
    }

    /// The whole state as it is now, cheaply: the keys and values are shared, not copied, so a
    /// node takes it on its event loop and encodes it elsewhere (sorting and encoding a large
    /// store takes far longer than an election timeout).
    pub fn snapshot_state(&self) -> SnapshotState {
        SnapshotState {
            applied_index: self.applied_index,
            pairs: self
                .data
                .iter()
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
        }
    }

    /// Rebuilds a state machine from `snapshot`; corrupt bytes are an error, never a panic.
    pub fn restore(snapshot: &[u8]) -> Result<Self, CodecError> {
        let image: SnapshotImage = storage::decode(snapshot)?;
        Ok(KvStateMachine {
            data: image
                .pairs
                .into_iter()
                .map(|(key, value)| (Bytes::from(key), Bytes::from(value)))
                .collect(),
            applied_index: image.applied_index,
        })
    }

    pub fn get(&self, key: &[u8]) -> Option<&Bytes> {
        self.data.get(key)
    }

    pub fn applied_index(&self) -> LogIndex {
        self.applied_index
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

impl crate::replica::SnapshotImage for SnapshotState {
    fn encode(self: Box<Self>) -> Bytes {
        SnapshotState::encode(*self)
    }
}

/// The replica's view of the store: commands are [`Command`]s, reads are keys.
impl crate::replica::StateMachine for KvStateMachine {
    type Outcome = Outcome;
    type Query = Bytes;
    type ReadAnswer = Option<Bytes>;
    type Image = SnapshotState;

    fn apply(&mut self, index: LogIndex, command: &Bytes) -> crate::replica::Applied<Outcome> {
        // Decoded once: the registration check and the store both look at it.
        let (outcome, registered) = match Command::decode(command) {
            Ok(command) => {
                let registered = super::node_addresses::registration(&command);
                (self.apply_decoded(index, command), registered)
            }
            Err(_) => (self.apply(index, command), None),
        };
        crate::replica::Applied {
            outcome,
            registered,
        }
    }

    fn skip(&mut self, index: LogIndex) {
        KvStateMachine::skip(self, index);
    }

    fn applied_index(&self) -> LogIndex {
        self.applied_index
    }

    fn read(&self, key: &Bytes) -> Option<Bytes> {
        self.get(key).cloned()
    }

    fn snapshot(&self) -> SnapshotState {
        self.snapshot_state()
    }

    fn restore(image: &[u8]) -> Result<Self, String> {
        KvStateMachine::restore(image).map_err(|error| error.to_string())
    }

    fn registration(node: crate::core::NodeId, address: &str) -> Bytes {
        super::node_addresses::register(node, address).encode()
    }

    fn addresses(&self) -> Vec<(crate::core::NodeId, String)> {
        super::node_addresses::recorded(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(text: &str) -> Bytes {
        Bytes::copy_from_slice(text.as_bytes())
    }

    #[test]
    fn compare_and_swap_swaps_only_on_a_match() {
        let mut kv = KvStateMachine::new();
        let cas = |expected: Option<&str>, new: &str| {
            Command::CompareAndSwap {
                key: b("k"),
                expected: expected.map(b),
                new: b(new),
            }
            .encode()
        };
        assert_eq!(
            kv.apply(1, &cas(None, "a")),
            Outcome::CompareAndSwap {
                swapped: true,
                current: None
            }
        );
        assert_eq!(
            kv.apply(2, &cas(None, "b")),
            Outcome::CompareAndSwap {
                swapped: false,
                current: Some(b("a"))
            }
        );
        assert_eq!(
            kv.apply(3, &cas(Some("a"), "c")),
            Outcome::CompareAndSwap {
                swapped: true,
                current: Some(b("a"))
            }
        );
        assert_eq!(kv.get(b"k"), Some(&b("c")));
        assert_eq!(
            kv.apply(4, &Command::Delete { key: b("k") }.encode()),
            Outcome::Deleted { existed: true }
        );
        assert_eq!(
            kv.apply(5, &Command::Delete { key: b("k") }.encode()),
            Outcome::Deleted { existed: false }
        );
        assert!(kv.is_empty());
    }

    #[test]
    fn a_snapshot_restores_the_same_state() {
        let mut kv = KvStateMachine::new();
        for (index, key) in ["b", "a", "c"].iter().enumerate() {
            kv.apply(
                index as u64 + 1,
                &Command::Put {
                    key: b(key),
                    value: b("v"),
                }
                .encode(),
            );
        }
        let snapshot = kv.snapshot();
        let restored = KvStateMachine::restore(&snapshot).expect("restores");
        assert_eq!(restored.applied_index(), 3);
        assert_eq!(restored.get(b"a"), Some(&b("v")));
        assert_eq!(restored.snapshot(), snapshot, "equal states, equal bytes");
        assert!(KvStateMachine::restore(&snapshot[..snapshot.len() - 1]).is_err());
        assert!(KvStateMachine::restore(&[]).is_err());
    }

    #[test]
    fn a_snapshot_state_encodes_the_store_as_it_was_when_taken() {
        let mut kv = KvStateMachine::new();
        let put = |key: &str, value: &str| {
            Command::Put {
                key: b(key),
                value: b(value),
            }
            .encode()
        };
        kv.apply(1, &put("a", "1"));
        kv.apply(2, &put("b", "2"));
        let taken = kv.snapshot_state();
        let expected = kv.snapshot();
        kv.apply(3, &put("a", "changed"));
        kv.apply(4, &Command::Delete { key: b("b") }.encode());
        kv.apply(5, &put("c", "3"));
        assert_eq!(taken.encode(), expected);
    }

    #[test]
    fn an_undecodable_entry_is_skipped_the_same_way_everywhere() {
        let mut kv = KvStateMachine::new();
        assert!(matches!(
            kv.apply(1, &Bytes::from_static(&[1, 99])),
            Outcome::Invalid(_)
        ));
        assert_eq!(kv.applied_index(), 1);
    }
}
