//! A simulated disk with the semantics of `ravel::storage::FileStorage`: writes land in a
//! volatile cache until a sync makes them durable. A crash keeps only a prefix of the unsynced
//! writes (in order), and may tear the last one: a prefix of its records survives, as a
//! checksummed log would recover it. Snapshots taken locally are saved durably at once;
//! snapshots installed from a leader are ordinary writes in the queue.

use std::collections::VecDeque;

use bytes::Bytes;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use ravel::core::{
    bounded_entries, read_entries_through, Entry, HardState, Input, LogIndex, NodeId, PersistId,
    RawNode, Recovered, SnapshotMeta, Term,
};
use ravel::kv::KvStateMachine;
use ravel::replica::{Replica, SnapshotImage, StateMachine};

/// One storage action as the disk received it.
#[derive(Debug)]
enum Write {
    Log {
        id: PersistId,
        hard_state: Option<HardState>,
        entries: Vec<Entry>,
    },
    Install {
        id: PersistId,
        meta: SnapshotMeta,
        data: Bytes,
    },
}

impl Write {
    fn id(&self) -> PersistId {
        match self {
            Write::Log { id, .. } | Write::Install { id, .. } => *id,
        }
    }
}

#[derive(Debug, Default)]
pub struct SimDisk {
    hard_state: HardState,
    snapshot: Option<(SnapshotMeta, Bytes)>,
    /// Durable entries after the snapshot, contiguous.
    entries: Vec<Entry>,
    /// Durable entries kept behind the snapshot (its log retention), contiguous up to the
    /// snapshot's index: a leader reads them back for a follower that fell behind.
    retained: VecDeque<Entry>,
    /// How many entries the log keeps behind a snapshot (0: none).
    retain_entries: usize,
    /// Written but not yet synced, oldest first.
    cache: VecDeque<Write>,
    /// The last write made durable, and the last received (so a message can wait for it).
    /// Both are handles of the current incarnation of the core.
    pub synced_id: PersistId,
    pub written_id: PersistId,
}

impl SimDisk {
    /// An empty disk whose log keeps `retain_entries` entries behind each snapshot.
    pub fn with_retention(retain_entries: usize) -> SimDisk {
        SimDisk {
            retain_entries,
            ..SimDisk::default()
        }
    }

    /// The same durable contents, for a new incarnation of the core (persist ids start over).
    pub fn restarted(mut disk: SimDisk) -> SimDisk {
        assert!(
            disk.cache.is_empty(),
            "restart after a crash: unsynced writes were dealt with"
        );
        disk.synced_id = 0;
        disk.written_id = 0;
        disk.retained.clear();
        disk
    }

    pub fn write(&mut self, id: PersistId, hard_state: Option<HardState>, entries: Vec<Entry>) {
        self.written_id = id;
        self.cache.push_back(Write::Log {
            id,
            hard_state,
            entries,
        });
    }

    pub fn write_install(&mut self, id: PersistId, meta: SnapshotMeta, data: Bytes) {
        self.written_id = id;
        self.cache.push_back(Write::Install { id, meta, data });
    }

    /// Power loss before any cached write reached the platter (the scenario tests' crash).
    pub fn lose_unsynced(&mut self) {
        self.cache.clear();
        self.retained.clear();
    }

    pub fn has_unsynced(&self) -> bool {
        !self.cache.is_empty()
    }

    /// Makes the cached writes up to `up_to` durable (those issued before the sync began).
    pub fn sync_up_to(&mut self, up_to: PersistId) {
        while self.cache.front().is_some_and(|write| write.id() <= up_to) {
            let write = self.cache.pop_front().expect("checked non-empty");
            self.synced_id = write.id();
            self.make_durable(write);
        }
    }

    fn snapshot_index(&self) -> LogIndex {
        self.snapshot.as_ref().map_or(0, |(meta, _)| meta.index)
    }

    fn make_durable(&mut self, write: Write) {
        match write {
            Write::Log {
                hard_state,
                entries,
                ..
            } => {
                self.store_entries(&entries);
                if let Some(hard_state) = hard_state {
                    self.hard_state = hard_state;
                }
            }
            Write::Install { meta, data, .. } => {
                let base = self.snapshot_index();
                let holds = meta.index > base
                    && self
                        .entries
                        .get((meta.index - base - 1) as usize)
                        .is_some_and(|entry| entry.term == meta.term);
                if holds {
                    let covered: Vec<Entry> =
                        self.entries.drain(..(meta.index - base) as usize).collect();
                    self.retain(covered);
                } else {
                    self.entries.clear();
                    self.retained.clear();
                }
                self.snapshot = Some((meta, data));
            }
        }
    }

    /// Each entry replaces any stored at or after its index (one below the snapshot replaces
    /// everything after the snapshot), as `FileStorage` replays its log.
    fn store_entries(&mut self, entries: &[Entry]) {
        for entry in entries {
            let base = self.snapshot_index();
            if entry.index <= base {
                self.entries.clear();
                // A snapshot here is saved at once, ahead of the writes still cached; one of
                // those may rewrite an entry the snapshot covers (its state came from the newer
                // entry): what the log keeps behind the snapshot is no longer the log. (A file
                // store saves a snapshot after every write before it.)
                self.retained.clear();
                continue;
            }
            self.entries.truncate((entry.index - base - 1) as usize);
            self.entries.push(entry.clone());
        }
    }

    /// The state machine's snapshot, saved durably at once; the entries it covers go.
    pub fn save_snapshot(&mut self, meta: SnapshotMeta, data: Bytes) {
        if meta.index <= self.snapshot_index() {
            return;
        }
        let covered = ((meta.index - self.snapshot_index()) as usize).min(self.entries.len());
        let covered: Vec<Entry> = self.entries.drain(..covered).collect();
        if covered.last().map(|entry| entry.index) == Some(meta.index) {
            self.retain(covered);
        } else {
            self.retained.clear();
        }
        self.snapshot = Some((meta, data));
    }

    /// Keeps `covered` (the entries a new snapshot covers, up to its index) behind the
    /// snapshot, as far as the retention goes.
    fn retain(&mut self, covered: Vec<Entry>) {
        if covered.first().map(|entry| entry.index)
            != self.retained.back().map(|entry| entry.index + 1)
        {
            self.retained.clear();
        }
        self.retained.extend(covered);
        while self.retained.len() > self.retain_entries {
            self.retained.pop_front();
        }
    }

    /// Durable entries `from..=through`, from behind the snapshot or after it: none unless
    /// `from` is held, then as many as are held in a row.
    pub fn read_entries(&self, from: LogIndex, through: LogIndex) -> Vec<Entry> {
        let mut read = Vec::new();
        for entry in self.retained.iter().chain(&self.entries) {
            if entry.index < from {
                continue;
            }
            if entry.index > through || entry.index != from + read.len() as LogIndex {
                break;
            }
            read.push(entry.clone());
        }
        read
    }

    /// Answers `replica`'s `Effect::ReadEntries` from this disk.
    pub fn read_entries_for<S: StateMachine>(
        &self,
        replica: &mut Replica<S>,
        (peer, from, through, entries_max, bytes_max): (NodeId, LogIndex, LogIndex, usize, usize),
    ) {
        let through = read_entries_through(from, through, entries_max);
        let entries = bounded_entries(self.read_entries(from, through), bytes_max);
        replica.completed(Input::EntriesRead {
            peer,
            from,
            entries,
        });
    }

    /// Whether entry `index` of `term` would survive a power cut here: it is in the durable log,
    /// or the durable snapshot (which only ever holds committed entries) covers it.
    pub fn durably_holds(&self, index: LogIndex, term: Term) -> bool {
        let base = self.snapshot_index();
        if index <= base {
            return true;
        }
        self.entries
            .get((index - base - 1) as usize)
            .is_some_and(|entry| entry.term == term)
    }

    /// The hard state that would survive a power cut.
    pub fn durable_hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn snapshot(&self) -> Option<&(SnapshotMeta, Bytes)> {
        self.snapshot.as_ref()
    }

    /// Power loss: a random prefix of the cached writes survives; the last of them may be torn
    /// (entries are written before the hard state, so a torn write keeps a prefix of its entries
    /// and loses its hard state). Returns how many writes survived whole.
    pub fn crash(&mut self, rng: &mut ChaCha8Rng) -> usize {
        let cached: Vec<Write> = self.cache.drain(..).collect();
        let survivors = rng.random_range(0..=cached.len());
        // As a file store after a restart, the log serves entries from the snapshot on only
        // (the writes lost here may have been what the snapshot's state was made of).
        self.retained.clear();
        for (position, write) in cached.into_iter().enumerate() {
            if position < survivors {
                self.make_durable(write);
                continue;
            }
            if let Write::Log { entries, .. } = &write {
                if !entries.is_empty() && rng.random_bool(0.5) {
                    let kept = rng.random_range(0..entries.len());
                    self.store_entries(&entries[..kept]);
                }
            }
            break;
        }
        // Persist ids are handles of one incarnation of the core: the next one starts again at 1.
        self.synced_id = 0;
        self.written_id = 0;
        survivors
    }

    /// What a restarting node reads back. No clamping of the commit index: it is written with or
    /// after the entries it covers, and a core that broke that rule should fail loudly.
    /// A replica of `core` over the state machine this disk's snapshot holds (the same
    /// recovery a node makes from its files).
    pub fn start_replica(&self, core: RawNode, address: String) -> Replica<KvStateMachine> {
        self.start_replica_of(core, address, KvStateMachine::new())
    }

    /// [`SimDisk::start_replica`] for any state machine; `fresh` when no snapshot was saved.
    pub fn start_replica_of<S: StateMachine>(
        &self,
        core: RawNode,
        address: String,
        fresh: S,
    ) -> Replica<S> {
        let saved = self
            .snapshot()
            .map(|(meta, data)| (meta.clone(), data.clone()));
        let state = match &saved {
            Some((_, data)) => S::restore(data).expect("a saved snapshot restores"),
            None => fresh,
        };
        Replica::new(core, state, address, saved)
    }

    /// Saves the snapshot `replica` took (`Effect::SaveSnapshot`), and tells it so.
    pub fn save_snapshot_of<S: StateMachine>(
        &mut self,
        replica: &mut Replica<S>,
        meta: SnapshotMeta,
        image: S::Image,
    ) {
        let data = Box::new(image).encode();
        self.save_snapshot(meta.clone(), data.clone());
        replica.snapshot_saved(meta.clone(), data);
        replica.completed(Input::SnapshotSaved { meta });
    }

    /// Reads `replica` the chunk it asked for (`Effect::ReadSnapshotChunk`), if this disk still
    /// holds snapshot `meta`.
    pub fn read_chunk_for<S: StateMachine>(
        &self,
        replica: &mut Replica<S>,
        (to, meta, offset, bytes_max): (NodeId, SnapshotMeta, u64, usize),
    ) {
        let saved = self.snapshot().filter(|(saved, _)| *saved == meta);
        if let Some(chunk) = saved
            .and_then(|(_, data)| Input::snapshot_chunk(to, meta.clone(), offset, bytes_max, data))
        {
            replica.completed(chunk);
        }
    }

    pub fn recover(&self) -> Recovered {
        Recovered {
            hard_state: self.hard_state,
            snapshot: self.snapshot.as_ref().map(|(meta, _)| meta.clone()),
            entries: self.entries.clone(),
        }
    }
}
