//! A disk in memory with [`super::FileStorage`]'s semantics, for simulations of the whole node:
//! writes stay volatile until `sync`; a crash keeps only a prefix of the unsynced writes and may
//! tear the last one (a prefix of its entries survives, as the checksummed log would recover it).
//! Snapshots are durable when saved, like the file store's (temp file, fsync, rename).
//!
//! The disk outlives the node that uses it: the harness keeps a [`MemoryDisk`] per simulated
//! host, crashes it when it kills the host, and opens it again when the host restarts.

use std::sync::{Arc, Mutex, MutexGuard};

use super::{Standing, Storage, StorageError, StoredState};
use crate::core::{Entry, HardState, LogIndex, SnapshotMeta};

#[derive(Clone, Debug)]
enum Write {
    Append(Vec<Entry>),
    HardState(HardState),
}

#[derive(Clone, Debug, Default)]
struct Image {
    hard_state: HardState,
    snapshot: Option<(SnapshotMeta, Vec<u8>)>,
    /// Entries after the snapshot, contiguous.
    entries: Vec<Entry>,
}

impl Image {
    fn apply(&mut self, write: &Write) {
        match write {
            Write::HardState(hard_state) => self.hard_state = *hard_state,
            Write::Append(entries) => {
                let Some(first) = entries.first() else { return };
                let base = self.snapshot.as_ref().map_or(1, |(meta, _)| meta.index + 1);
                let keep = first.index.saturating_sub(base) as usize;
                self.entries.truncate(keep);
                self.entries
                    .extend(entries.iter().filter(|entry| entry.index >= base).cloned());
            }
        }
    }

    fn last_index(&self) -> LogIndex {
        self.entries.last().map_or_else(
            || self.snapshot.as_ref().map_or(0, |(meta, _)| meta.index),
            |entry| entry.index,
        )
    }
}

#[derive(Debug, Default)]
struct Disk {
    durable: Image,
    unsynced: Vec<Write>,
    /// The next read fails: `Some(true)` returns bytes that fail their checksum (the file
    /// store reports corruption), `Some(false)` an I/O error.
    read_fault: Option<bool>,
    /// Durable as soon as recorded, like the file store's `ravel.meta`.
    standing: Option<Standing>,
}

/// A simulated disk, shared between the harness and the node using it.
#[derive(Clone, Debug, Default)]
pub struct MemoryDisk {
    disk: Arc<Mutex<Disk>>,
}

impl MemoryDisk {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Disk> {
        self.disk
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Opens the disk as a node starting up does: what survived, and the latest snapshot; an
    /// error if a read fault was armed (the node must refuse to start, as on a real disk).
    #[allow(clippy::type_complexity)]
    pub fn open(
        &self,
    ) -> Result<(MemoryStorage, StoredState, Option<(SnapshotMeta, Vec<u8>)>), StorageError> {
        let mut disk = self.lock();
        take_read_fault(&mut disk)?;
        disk.unsynced.clear();
        let image = disk.durable.clone();
        let state = StoredState {
            hard_state: image.hard_state,
            snapshot: image.snapshot.as_ref().map(|(meta, _)| meta.clone()),
            entries: image.entries,
        };
        Ok((MemoryStorage { disk: self.clone() }, state, image.snapshot))
    }

    /// Makes the next read fail, with corrupt bytes (caught by the checksum) or an I/O error.
    /// The fault is transient: the read after it succeeds.
    pub fn fail_next_read(&self, corrupt: bool) {
        self.lock().read_fault = Some(corrupt);
    }

    /// A power cut: keeps the first `kept` unsynced writes (the last of them torn to
    /// `torn_entries` entries if it is an append and that is fewer) and loses the rest.
    pub fn crash(&self, kept: usize, torn_entries: usize) {
        let mut disk = self.lock();
        let mut survivors: Vec<Write> = disk.unsynced.drain(..).take(kept).collect();
        if let Some(Write::Append(entries)) = survivors.last_mut() {
            entries.truncate(torn_entries.max(1).min(entries.len()));
        }
        for write in &survivors {
            disk.durable.apply(write);
        }
    }

    /// The disk is lost (replaced by an empty one): every write, snapshot and record gone.
    pub fn wipe(&self) {
        let mut disk = self.lock();
        *disk = Disk::default();
    }

    /// How many writes are waiting for a sync.
    pub fn unsynced_writes(&self) -> usize {
        self.lock().unsynced.len()
    }
}

/// The node's handle on a [`MemoryDisk`].
#[derive(Debug)]
pub struct MemoryStorage {
    disk: MemoryDisk,
}

const SIMULATED_PATH: &str = "simulated-disk";

fn take_read_fault(disk: &mut Disk) -> Result<(), StorageError> {
    match disk.read_fault.take() {
        None => Ok(()),
        Some(true) => Err(StorageError::Corrupt {
            path: SIMULATED_PATH.into(),
            offset: 0,
            reason: "checksum mismatch (simulated corrupt read)".to_string(),
        }),
        Some(false) => Err(StorageError::Io {
            path: SIMULATED_PATH.into(),
            source: std::io::Error::other("simulated read failure"),
        }),
    }
}

impl Storage for MemoryStorage {
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let mut disk = self.disk.lock();
        disk.unsynced.push(Write::Append(entries.to_vec()));
        Ok(())
    }

    fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        let mut disk = self.disk.lock();
        disk.unsynced.push(Write::HardState(hard_state));
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        let mut disk = self.disk.lock();
        let writes: Vec<Write> = disk.unsynced.drain(..).collect();
        for write in &writes {
            disk.durable.apply(write);
        }
        Ok(())
    }

    fn entries(&mut self, from: LogIndex, to: LogIndex) -> Result<Vec<Entry>, StorageError> {
        let mut disk = self.disk.lock();
        take_read_fault(&mut disk)?;
        let mut view = disk.durable.clone();
        for write in &disk.unsynced {
            view.apply(write);
        }
        Ok(view
            .entries
            .into_iter()
            .filter(|entry| (from..=to).contains(&entry.index))
            .collect())
    }

    fn save_snapshot(&mut self, meta: SnapshotMeta, data: &[u8]) -> Result<(), StorageError> {
        let mut disk = self.disk.lock();
        // Like the file store: the log written so far is synced before the snapshot lands.
        let writes: Vec<Write> = disk.unsynced.drain(..).collect();
        for write in &writes {
            disk.durable.apply(write);
        }
        let image = &mut disk.durable;
        if meta.index >= image.last_index() {
            image.entries.clear();
        } else {
            image.entries.retain(|entry| entry.index > meta.index);
        }
        image.snapshot = Some((meta, data.to_vec()));
        Ok(())
    }

    fn snapshot_index(&self) -> LogIndex {
        let disk = self.disk.lock();
        disk.durable
            .snapshot
            .as_ref()
            .map_or(0, |(meta, _)| meta.index)
    }

    fn load_snapshot(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>, StorageError> {
        let mut disk = self.disk.lock();
        take_read_fault(&mut disk)?;
        Ok(disk.durable.snapshot.clone())
    }

    fn standing(&self) -> Option<Standing> {
        self.disk.lock().standing
    }

    fn record_standing(&mut self, standing: Standing) -> Result<(), StorageError> {
        self.disk.lock().standing = Some(standing);
        Ok(())
    }

    /// The simulated disk keeps no identity (the harness gives every node its cluster id).
    fn record_cluster_id(&mut self, _cluster_id: u64) -> Result<(), StorageError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::core::EntryPayload;

    fn entry(index: LogIndex, term: u64) -> Entry {
        Entry {
            term,
            index,
            payload: EntryPayload::Command(Bytes::from(vec![index as u8])),
        }
    }

    #[test]
    fn only_synced_writes_and_a_prefix_of_the_rest_survive_a_crash() {
        let disk = MemoryDisk::new();
        let (mut storage, _, _) = disk.open().unwrap();
        storage.append(&[entry(1, 1), entry(2, 1)]).unwrap();
        storage.sync().unwrap();
        storage
            .append(&[entry(3, 1), entry(4, 1), entry(5, 1)])
            .unwrap();
        storage
            .set_hard_state(HardState {
                term: 2,
                vote: Some(1),
                commit: 2,
            })
            .unwrap();
        disk.crash(1, 2);
        let (_, state, _) = disk.open().unwrap();
        let indexes: Vec<LogIndex> = state.entries.iter().map(|e| e.index).collect();
        assert_eq!(indexes, vec![1, 2, 3, 4], "torn append keeps a prefix");
        assert_eq!(
            state.hard_state,
            HardState::default(),
            "unsynced hard state lost"
        );
    }

    #[test]
    fn an_append_replaces_the_suffix_and_a_snapshot_drops_what_it_covers() {
        let disk = MemoryDisk::new();
        let (mut storage, _, _) = disk.open().unwrap();
        storage
            .append(&[entry(1, 1), entry(2, 1), entry(3, 1)])
            .unwrap();
        storage.append(&[entry(2, 2)]).unwrap();
        storage.sync().unwrap();
        let meta = SnapshotMeta {
            index: 1,
            term: 1,
            membership: Default::default(),
            admissions: Vec::new(),
        };
        storage.save_snapshot(meta.clone(), b"image").unwrap();
        let (_, state, snapshot) = disk.open().unwrap();
        assert_eq!(state.entries, vec![entry(2, 2)]);
        assert_eq!(snapshot, Some((meta, b"image".to_vec())));
    }

    /// A snapshot written while a newer one was installed is dropped when it is adopted.
    #[test]
    fn an_adopted_snapshot_older_than_the_one_held_is_dropped() {
        let disk = MemoryDisk::new();
        let (mut storage, _, _) = disk.open().unwrap();
        storage
            .append(&(1..=6).map(|index| entry(index, 1)).collect::<Vec<_>>())
            .unwrap();
        storage.sync().unwrap();
        let at = |index| SnapshotMeta {
            index,
            term: 1,
            membership: Default::default(),
            admissions: Vec::new(),
        };
        let older = storage
            .snapshot_writer()
            .write(at(3), |out| out.write_all(b"state at 3"))
            .unwrap();
        storage.save_snapshot(at(5), b"state at 5").unwrap();
        storage.adopt_snapshot(older).unwrap();
        let (_, state, snapshot) = disk.open().unwrap();
        assert_eq!(snapshot, Some((at(5), b"state at 5".to_vec())));
        assert_eq!(state.entries, vec![entry(6, 1)]);
    }

    #[test]
    fn an_armed_read_fault_fails_one_read_then_reads_succeed() {
        let disk = MemoryDisk::new();
        disk.fail_next_read(true);
        let error = disk.open().expect_err("corrupt read");
        assert!(error.to_string().contains("corrupt"), "{error}");
        let (storage, _, _) = disk.open().expect("transient");
        disk.fail_next_read(false);
        assert!(storage.load_snapshot().is_err());
        assert!(storage.load_snapshot().is_ok());
    }
}
