//! The key-value state machine applied from the log.
//!
//! A hash map with a fixed hasher (FxHash): applying is the hottest loop of every replica, and a
//! `BTreeMap` of byte keys cost a third of the CPU of the in-process benchmark. The hasher has no
//! per-process randomness, and nothing iterates the map in an order that reaches a replica's
//! output, so replicas stay deterministic. (FxHash is not collision-resistant; a store exposed to
//! hostile key choices would want a keyed hasher, at about twice the hashing cost.)

use std::sync::Arc;

use bytes::Bytes;

use super::command::{Command, DecodeError, MoveStep, CHUNK_PAIRS_MAX};
use super::node_addresses::RESERVED_KEY_PREFIX;
use super::shard::{Ingest, NotOwned, Shard, Step};
use super::store::{Pairs, Store};
use crate::core::LogIndex;
use crate::sharding::{partition_of, PartitionId};
use crate::storage::{self, CodecError};

/// A snapshot as bincode encodes it: the applied index and the pairs, sorted by key so that equal
/// states give equal bytes.
#[derive(bincode::Encode, bincode::Decode)]
struct SnapshotImage {
    applied_index: LogIndex,
    shard: Option<Shard>,
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The same image, encoded from the store's own (sorted) pairs, so encoding copies nothing
/// first.
#[derive(bincode::Encode)]
struct SnapshotImageRef<'a> {
    applied_index: LogIndex,
    shard: &'a Option<Shard>,
    pairs: PairsRef<'a>,
}

/// Pairs encoded exactly as a `Vec<(Vec<u8>, Vec<u8>)>`: the length as a `u64`, then each key
/// and value as a length and its bytes.
struct PairsRef<'a>(&'a [(&'a Bytes, &'a Bytes)]);

impl bincode::Encode for PairsRef<'_> {
    fn encode<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        (self.0.len() as u64).encode(encoder)?;
        for (key, value) in self.0 {
            key[..].encode(encoder)?;
            value[..].encode(encoder)?;
        }
        Ok(())
    }
}

/// The chunk of a partition's `sorted` pairs after key `after` (none: from the first): up to
/// about `bytes_max` bytes (at least one pair, at most [`CHUNK_PAIRS_MAX`]); and whether it is
/// the last.
pub fn export_chunk(
    sorted: &[(Bytes, Bytes)],
    after: Option<&[u8]>,
    bytes_max: usize,
) -> (Vec<(Bytes, Bytes)>, bool) {
    let start = after.map_or(0, |after| {
        sorted.partition_point(|(key, _)| &key[..] <= after)
    });
    let mut pairs = Vec::new();
    let mut bytes = 0;
    for (key, value) in &sorted[start..] {
        if !pairs.is_empty() && (bytes >= bytes_max || pairs.len() >= CHUNK_PAIRS_MAX) {
            break;
        }
        bytes += key.len() + value.len();
        pairs.push((key.clone(), value.clone()));
    }
    let last = start + pairs.len() == sorted.len();
    (pairs, last)
}

/// The state of the store at one applied index, to be encoded as a snapshot: the store's own
/// pairs, shared (see `kv::store`) until the snapshot is written.
#[derive(Debug)]
pub struct SnapshotState {
    applied_index: LogIndex,
    shard: Option<Shard>,
    pairs: Arc<Pairs>,
}

impl SnapshotState {
    /// The index of the last entry the state holds.
    pub fn applied_index(&self) -> LogIndex {
        self.applied_index
    }

    /// Encodes the state: the same bytes as [`KvStateMachine::snapshot`] at that index.
    pub fn encode(self) -> Bytes {
        let sorted = self.sorted();
        Bytes::from(storage::encode_exact(&self.image(&sorted)))
    }

    /// Writes the same bytes as [`SnapshotState::encode`] to `out`, as they are encoded.
    pub fn write_to(self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        let sorted = self.sorted();
        storage::encode_to_writer(&self.image(&sorted), out)
    }

    /// The pairs by key (equal states give equal bytes).
    fn sorted(&self) -> Vec<(&Bytes, &Bytes)> {
        let mut sorted: Vec<(&Bytes, &Bytes)> = self.pairs.iter().collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
        sorted
    }

    fn image<'a>(&'a self, sorted: &'a [(&'a Bytes, &'a Bytes)]) -> SnapshotImageRef<'a> {
        SnapshotImageRef {
            applied_index: self.applied_index,
            shard: &self.shard,
            pairs: PairsRef(sorted),
        }
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
    /// The key's partition is not this group's (a sharded store's data group): nothing changed.
    NotOwned(NotOwned),
    /// A claim of partitions took `taken` of them (the others were held before).
    Claimed {
        taken: usize,
    },
    /// What a step of moving a partition did (see `kv::shard`).
    MoveStep(Step),
    /// The entry did not decode; every replica reaches the same verdict, so nothing diverges.
    Invalid(DecodeError),
}

#[derive(Debug, Default)]
pub struct KvStateMachine {
    data: Store,
    /// The partitions served, for a data group of a sharded store; none: every key.
    shard: Option<Shard>,
    applied_index: LogIndex,
}

impl KvStateMachine {
    pub fn new() -> Self {
        Self::default()
    }

    /// The state machine of a sharded store's data group in a key space of `partitions`: it
    /// serves no key until it claims (or ingests) partitions. Every replica of the group starts
    /// from it, so they agree from the first entry on.
    pub fn sharded(partitions: u32) -> Self {
        KvStateMachine {
            shard: Some(Shard::new(partitions)),
            ..Self::default()
        }
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

    /// Whether this group serves reads of `key`: every key in a plain cluster; in a sharded
    /// store, the keys of the partitions it holds (moving out or not), and Ravel's own reserved
    /// keys.
    pub fn check_read(&self, key: &[u8]) -> Result<(), NotOwned> {
        match &self.shard {
            Some(shard) if key.first() != Some(&RESERVED_KEY_PREFIX) => shard.check_read(key),
            _ => Ok(()),
        }
    }

    /// Whether this group takes writes of `key` now: as [`KvStateMachine::check_read`], except
    /// for a partition moving out (frozen).
    pub fn check_write(&self, key: &[u8]) -> Result<(), NotOwned> {
        match &self.shard {
            Some(shard) if key.first() != Some(&RESERVED_KEY_PREFIX) => shard.check_write(key),
            _ => Ok(()),
        }
    }

    /// The pairs of `partition` after key `after` (none: from the first), in key order, up to
    /// about `bytes_max` bytes (at least one pair, at most [`CHUNK_PAIRS_MAX`]); and whether
    /// they are the last. The source's leader exports a frozen partition with it: no write
    /// changes it any more, so every chunk comes from the same state.
    pub fn export(
        &self,
        partition: PartitionId,
        after: Option<&[u8]>,
        bytes_max: usize,
    ) -> (Vec<(Bytes, Bytes)>, bool) {
        let mut pairs = self.partition_pairs(partition);
        pairs.sort_unstable();
        export_chunk(&pairs, after, bytes_max)
    }

    /// Every pair of `partition`, in no order: one pass over the store, the keys and values
    /// shared, not copied (a node takes them on its event loop and sorts them elsewhere).
    pub fn partition_pairs(&self, partition: PartitionId) -> Vec<(Bytes, Bytes)> {
        let Some(shard) = &self.shard else {
            return Vec::new();
        };
        self.data
            .iter()
            .filter(|(key, _)| key.first() != Some(&RESERVED_KEY_PREFIX))
            .filter(|(key, _)| partition_of(key, shard.partitions()) == partition)
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()
    }

    pub fn shard(&self) -> Option<&Shard> {
        self.shard.as_ref()
    }

    fn apply_command(&mut self, command: Command) -> Outcome {
        #[cfg(feature = "planted-bugs")]
        let checked = !super::planted::planted().no_apply_time_check;
        #[cfg(not(feature = "planted-bugs"))]
        let checked = true;
        if let Some(key) = command.key().filter(|_| checked) {
            if let Err(not_owned) = self.check_write(key) {
                return Outcome::NotOwned(not_owned);
            }
        }
        match command {
            Command::Put { key, value } => {
                self.data.insert(owned(key), owned(value));
                Outcome::Put
            }
            Command::Delete { key } => Outcome::Deleted {
                existed: self.data.remove(&key),
            },
            Command::CompareAndSwap { key, expected, new } => {
                let current = self.data.get(&key);
                if current == expected.as_ref() {
                    self.data.insert(owned(key), owned(new));
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
            Command::Claim {
                partitions,
                claimed,
            } => {
                let shard = self
                    .shard
                    .get_or_insert_with(|| Shard::new(partitions.max(1)));
                if shard.partitions() != partitions {
                    return Outcome::Claimed { taken: 0 };
                }
                Outcome::Claimed {
                    taken: shard.claim(&claimed),
                }
            }
            Command::Move {
                partition,
                epoch,
                step,
            } => Outcome::MoveStep(self.apply_move(partition, epoch, step)),
        }
    }

    /// A step of a move, in this group's log (see `kv::shard`): the shard decides, and the
    /// keys follow (stored on ingest, removed on drop and discard).
    fn apply_move(&mut self, partition: PartitionId, epoch: u64, step: MoveStep) -> Step {
        let Some(shard) = self.shard.as_mut() else {
            return Step::Refused("this group is not a sharded store's".to_string());
        };
        if partition >= shard.partitions() {
            return Step::Refused(format!(
                "partition {partition} is out of range (the key space has {})",
                shard.partitions()
            ));
        }
        let partitions = shard.partitions();
        match step {
            MoveStep::Freeze => shard.freeze(partition, epoch),
            MoveStep::Unfreeze => shard.unfreeze(partition, epoch),
            MoveStep::Drop { to } => {
                let outcome = shard.drop_moved(partition, epoch, to);
                if outcome == Step::Done {
                    remove_partition(&mut self.data, partitions, partition);
                }
                outcome
            }
            MoveStep::Ingest { chunk, last, pairs } => {
                let stray = pairs.iter().any(|(key, _)| {
                    key.first() == Some(&RESERVED_KEY_PREFIX)
                        || partition_of(key, partitions) != partition
                });
                if stray {
                    return Step::Refused(format!(
                        "a chunk of partition {partition} carries a key of another partition"
                    ));
                }
                match shard.ingest(partition, epoch, chunk, last) {
                    Ingest::Store { restart } => {
                        if restart {
                            remove_partition(&mut self.data, partitions, partition);
                        }
                        for (key, value) in pairs {
                            self.data.insert(owned(key), owned(value));
                        }
                        Step::Done
                    }
                    Ingest::Step(step) => step,
                }
            }
            MoveStep::Activate => shard.activate(partition, epoch),
            MoveStep::Discard => {
                let outcome = shard.discard(partition, epoch);
                if outcome == Step::Done {
                    remove_partition(&mut self.data, partitions, partition);
                }
                outcome
            }
        }
    }

    /// The whole state, encoded (version byte, then bincode), identical on every replica that
    /// applied the same entries.
    pub fn snapshot(&self) -> Bytes {
        self.snapshot_state().encode()
    }

    /// The whole state as it is now, in constant time: the store's map itself is shared (see
    /// `kv::store`), so a node takes it on its event loop and sorts and encodes it elsewhere
    /// (that takes far longer than an election timeout for a large store).
    pub fn snapshot_state(&self) -> SnapshotState {
        SnapshotState {
            applied_index: self.applied_index,
            shard: self.shard.clone(),
            pairs: self.data.snapshot(),
        }
    }

    /// Rebuilds a state machine from `snapshot`; corrupt bytes are an error, never a panic.
    pub fn restore(snapshot: &[u8]) -> Result<Self, CodecError> {
        let image: SnapshotImage = storage::decode(snapshot)?;
        Ok(KvStateMachine {
            data: Store::from_pairs(
                image
                    .pairs
                    .into_iter()
                    .map(|(key, value)| (Bytes::from(key), Bytes::from(value)))
                    .collect(),
            ),
            shard: image.shard,
            applied_index: image.applied_index,
        })
    }

    pub fn get(&self, key: &[u8]) -> Option<&Bytes> {
        self.data.get(key)
    }

    pub fn applied_index(&self) -> LogIndex {
        self.applied_index
    }

    /// Clients' keys, leaving out Ravel's own (the node address book's): what a backup or a
    /// restore reports. Counts every key, so not for a hot path.
    pub fn client_keys(&self) -> usize {
        (self.data.iter())
            .filter(|(key, _)| key.first() != Some(&RESERVED_KEY_PREFIX))
            .count()
    }

    /// Whether this is a sharded store's data group (it serves only the partitions it owns).
    pub fn is_sharded(&self) -> bool {
        self.shard.is_some()
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// A key or value to keep in the store, in an allocation of its own. Decoded from a log entry
/// it is a slice of the buffer the entry arrived in — a client's request, or on a follower a
/// whole batch of a peer's entries read off the connection — and kept as is, each live value
/// would keep its whole buffer alive: a follower's memory then grows with the batches that
/// still hold one live value (all of them, under random overwrites of many keys), not with the
/// live data. One copy of a few hundred bytes per write is the price.
fn owned(bytes: Bytes) -> Bytes {
    Bytes::copy_from_slice(&bytes)
}

/// Removes every key of `partition` (Ravel's reserved keys belong to no partition).
fn remove_partition(data: &mut Store, partitions: u32, partition: PartitionId) {
    data.retain(|key| {
        key.first() == Some(&RESERVED_KEY_PREFIX) || partition_of(key, partitions) != partition
    });
}

impl crate::replica::SnapshotImage for SnapshotState {
    fn encode(self: Box<Self>) -> Bytes {
        SnapshotState::encode(*self)
    }

    fn write_to(self: Box<Self>, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        SnapshotState::write_to(*self, out)
    }
}

/// The replica's view of the store: commands are [`Command`]s, reads are keys.
impl crate::replica::StateMachine for KvStateMachine {
    type Outcome = Outcome;
    type Query = Bytes;
    /// The value (none: the key does not exist), or the key is not this group's.
    type ReadAnswer = Result<Option<Bytes>, NotOwned>;
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

    fn read(&self, key: &Bytes) -> Result<Option<Bytes>, NotOwned> {
        self.check_read(key)?;
        Ok(self.get(key).cloned())
    }

    /// A write whose key this group does not serve is refused before it is proposed (and
    /// again when applied: ownership may change between the two).
    fn refuse(&self, command: &Bytes) -> Option<Outcome> {
        self.shard.as_ref()?;
        let command = Command::decode(command).ok()?;
        let key = command.key()?;
        self.check_write(key).err().map(Outcome::NotOwned)
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

    /// A stored value does not keep the buffer its entry arrived in alive: a follower's entries
    /// come as slices of one batch read off the connection, and a value stored as such a slice
    /// pins the whole batch (memory growing with the batches, not the live data).
    #[test]
    fn a_stored_value_does_not_pin_the_buffer_its_entry_came_in() {
        let put = Command::Put {
            key: Bytes::from_static(b"k"),
            value: Bytes::from(vec![7u8; 256]),
        }
        .encode();
        // A batch of a peer's entries: this one somewhere in the middle of a large buffer.
        let mut batch = vec![0u8; 64 * 1024];
        batch[1000..1000 + put.len()].copy_from_slice(&put);
        let batch = Bytes::from(batch);
        let entry = batch.slice(1000..1000 + put.len());
        let mut store = KvStateMachine::new();
        assert_eq!(store.apply(1, &entry), Outcome::Put);
        let within_batch = |bytes: &Bytes| {
            let range = batch.as_ptr_range();
            range.contains(&bytes.as_ptr())
        };
        let stored = store.get(b"k").expect("stored").clone();
        assert_eq!(stored, Bytes::from(vec![7u8; 256]));
        assert!(!within_batch(&stored), "the value is a slice of the batch");
        let key = store.data.iter().next().expect("a key").0.clone();
        assert!(!within_batch(&key), "the key is a slice of the batch");
    }

    /// Chunks taken one after another, each after the last key of the one before, give back
    /// every pair once and in order; each holds about `bytes_max` (at least one pair), and only
    /// the final one says it is the last.
    #[test]
    fn chunks_after_each_other_cover_a_partition_once() {
        let sorted: Vec<(Bytes, Bytes)> = (0..500u32)
            .map(|i| {
                let value = vec![b'v'; (i % 37) as usize];
                (Bytes::from(format!("key-{i:05}")), Bytes::from(value))
            })
            .collect();
        for bytes_max in [1, 100, 4096, usize::MAX] {
            let (mut seen, mut after, mut chunks) = (Vec::new(), None::<Bytes>, 0);
            loop {
                let (pairs, last) = export_chunk(&sorted, after.as_deref(), bytes_max);
                chunks += 1;
                assert!(!pairs.is_empty() || sorted.is_empty());
                let bytes: usize = pairs.iter().map(|(k, v)| k.len() + v.len()).sum();
                let largest = pairs
                    .iter()
                    .map(|(k, v)| k.len() + v.len())
                    .max()
                    .unwrap_or(0);
                assert!(
                    bytes < bytes_max.saturating_add(largest),
                    "{bytes} for {bytes_max}"
                );
                after = pairs.last().map(|(key, _)| key.clone());
                seen.extend(pairs);
                if last {
                    break;
                }
            }
            assert_eq!(seen, sorted, "bytes_max {bytes_max}");
            assert!(bytes_max > 4096 || chunks > 1);
        }
        let (pairs, last) = export_chunk(&sorted, Some(b"zzz"), 100);
        assert!(pairs.is_empty() && last);
    }
    use crate::kv::MoveStep;

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

    /// A data group of a sharded store: keys of partitions it did not claim are refused before
    /// proposing and again when applied (nothing changes), reads of them too; Ravel's own
    /// reserved keys are always served; the shard survives a snapshot.
    #[test]
    fn a_group_serves_only_the_partitions_it_claimed() {
        use crate::replica::StateMachine;
        use crate::sharding::partition_of;
        let key_in = |wanted: u32| {
            (0..10_000)
                .map(|i| Bytes::from(format!("key-{i}")))
                .find(|key| partition_of(key, 4) == wanted)
                .expect("some key hashes there")
        };
        let (mine, theirs) = (key_in(1), key_in(2));
        let put = |key: &Bytes| {
            Command::Put {
                key: key.clone(),
                value: b("v"),
            }
            .encode()
        };
        let mut kv = KvStateMachine::new();
        // A plain cluster serves every key; a sharded store's group none before its claim.
        assert_eq!(StateMachine::refuse(&kv, &put(&theirs)), None);
        let mut unclaimed = KvStateMachine::sharded(4);
        assert!(StateMachine::refuse(&unclaimed, &put(&mine)).is_some());
        assert!(matches!(
            unclaimed.apply(1, &put(&mine)),
            Outcome::NotOwned(_)
        ));
        assert!(StateMachine::read(&unclaimed, &mine).is_err());
        assert_eq!(
            kv.apply(
                1,
                &Command::Claim {
                    partitions: 4,
                    claimed: vec![1, 3]
                }
                .encode()
            ),
            Outcome::Claimed { taken: 2 }
        );
        let not_owned = NotOwned {
            partition: 2,
            epoch: 0,
            moving: false,
            moved_to: 0,
        };
        assert_eq!(
            StateMachine::refuse(&kv, &put(&theirs)),
            Some(Outcome::NotOwned(not_owned))
        );
        assert_eq!(StateMachine::refuse(&kv, &put(&mine)), None);
        assert_eq!(kv.apply(2, &put(&theirs)), Outcome::NotOwned(not_owned));
        assert_eq!(kv.apply(3, &put(&mine)), Outcome::Put);
        assert_eq!(kv.get(&theirs), None);
        assert_eq!(StateMachine::read(&kv, &theirs), Err(not_owned));
        assert_eq!(StateMachine::read(&kv, &mine), Ok(Some(b("v"))));
        let reserved = Bytes::from_static(b"\0node/7");
        assert_eq!(StateMachine::read(&kv, &reserved), Ok(None));
        // A second claim in another key space takes nothing.
        assert_eq!(
            kv.apply(
                4,
                &Command::Claim {
                    partitions: 8,
                    claimed: vec![2]
                }
                .encode()
            ),
            Outcome::Claimed { taken: 0 }
        );
        let restored = KvStateMachine::restore(&kv.snapshot()).expect("restores");
        assert_eq!(restored.shard(), kv.shard());
        assert_eq!(StateMachine::read(&restored, &theirs), Err(not_owned));
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

    /// Streamed into a file, a snapshot is the same bytes as encoded whole.
    #[test]
    fn a_snapshot_written_as_it_is_encoded_is_the_encoded_snapshot() {
        let mut kv = KvStateMachine::new();
        for index in 1..=2_000u64 {
            let command = Command::Put {
                key: Bytes::from(format!("key {}", index * 7919 % 1000)),
                value: Bytes::from(vec![index as u8; (index % 300) as usize]),
            };
            kv.apply(index, &command.encode());
        }
        let mut streamed = Vec::new();
        kv.snapshot_state().write_to(&mut streamed).unwrap();
        assert_eq!(streamed, kv.snapshot());
        assert_eq!(streamed, kv.snapshot_state().encode());
    }

    /// A partition moves from group A to group B through the steps in each group's log: frozen
    /// at A (reads on, writes refused), exported in chunks and ingested at B (not served there
    /// yet), activated at B and dropped at A; afterwards B holds exactly A's pairs of it, A
    /// none, and A tells a reader where it went. Each state survives a snapshot.
    #[test]
    fn a_partition_moves_between_two_groups_step_by_step() {
        use crate::replica::StateMachine;
        use crate::sharding::partition_of;
        let step = |partition, epoch, step| {
            Command::Move {
                partition,
                epoch,
                step,
            }
            .encode()
        };
        let keys_in = |wanted: u32, count: usize| -> Vec<Bytes> {
            (0..100_000)
                .map(|i| Bytes::from(format!("key-{i}")))
                .filter(|key| partition_of(key, 4) == wanted)
                .take(count)
                .collect()
        };
        let (moving, staying) = (keys_in(1, 25), keys_in(2, 5));
        let mut source = KvStateMachine::sharded(4);
        let mut target = KvStateMachine::sharded(4);
        let mut a_index = 0;
        let mut apply_a = |kv: &mut KvStateMachine, command: Bytes| {
            a_index += 1;
            kv.apply(a_index, &command)
        };
        let claim = Command::Claim {
            partitions: 4,
            claimed: vec![1, 2],
        };
        apply_a(&mut source, claim.encode());
        for key in moving.iter().chain(&staying) {
            let put = Command::Put {
                key: key.clone(),
                value: key.clone(),
            };
            assert_eq!(apply_a(&mut source, put.encode()), Outcome::Put);
        }
        assert_eq!(
            apply_a(&mut source, step(1, 2, MoveStep::Freeze)),
            Outcome::MoveStep(Step::Done)
        );
        let write = Command::Put {
            key: moving[0].clone(),
            value: b("late"),
        }
        .encode();
        assert!(matches!(
            StateMachine::refuse(&source, &write),
            Some(Outcome::NotOwned(NotOwned { moving: true, .. }))
        ));
        assert!(matches!(apply_a(&mut source, write), Outcome::NotOwned(_)));
        assert_eq!(
            StateMachine::read(&source, &moving[0]),
            Ok(Some(moving[0].clone()))
        );
        // Exported in chunks of a few pairs, each ingested at B through its log.
        let mut after: Option<Bytes> = None;
        let mut chunk = 0;
        let mut b_index = 0;
        loop {
            let (pairs, last) = source.export(1, after.as_deref(), 60);
            assert!(!pairs.is_empty() && pairs.len() < moving.len());
            after = pairs.last().map(|(key, _)| key.clone());
            let ingest = step(1, 2, MoveStep::Ingest { chunk, last, pairs });
            b_index += 1;
            assert_eq!(
                target.apply(b_index, &ingest),
                Outcome::MoveStep(Step::Done)
            );
            // The same chunk again (a retry) changes nothing.
            b_index += 1;
            assert_eq!(
                target.apply(b_index, &ingest),
                Outcome::MoveStep(Step::AlreadyDone)
            );
            chunk += 1;
            if last {
                break;
            }
        }
        assert!(chunk > 2, "several chunks");
        assert!(
            StateMachine::read(&target, &moving[0]).is_err(),
            "not served before activation"
        );
        let restored = KvStateMachine::restore(&target.snapshot()).expect("restores");
        assert_eq!(restored.shard(), target.shard());
        b_index += 1;
        assert_eq!(
            target.apply(b_index, &step(1, 2, MoveStep::Activate)),
            Outcome::MoveStep(Step::Done)
        );
        assert_eq!(
            apply_a(&mut source, step(1, 2, MoveStep::Drop { to: 9 })),
            Outcome::MoveStep(Step::Done)
        );
        for key in &moving {
            assert_eq!(StateMachine::read(&target, key), Ok(Some(key.clone())));
            assert_eq!(source.get(key), None, "dropped at the source");
            let moved = StateMachine::read(&source, key).expect_err("moved");
            assert_eq!((moved.epoch, moved.moved_to), (2, 9));
        }
        for key in &staying {
            assert_eq!(StateMachine::read(&source, key), Ok(Some(key.clone())));
            assert!(StateMachine::read(&target, key).is_err());
        }
        assert_eq!(target.len(), moving.len());
        // A chunk carrying a key of another partition is refused whole.
        let stray = step(
            3,
            2,
            MoveStep::Ingest {
                chunk: 0,
                last: true,
                pairs: vec![(staying[0].clone(), b("v"))],
            },
        );
        b_index += 1;
        assert!(matches!(
            target.apply(b_index, &stray),
            Outcome::MoveStep(Step::Refused(_))
        ));
        assert_eq!(target.len(), moving.len());
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
