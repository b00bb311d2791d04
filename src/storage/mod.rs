//! Durable storage for one node: a segmented write-ahead log holding entries and hard states,
//! snapshot files, and the identity of the data directory.
//!
//! The contract the core relies on: after `sync` returns `Ok`, everything written before it
//! survives a crash; after any write or sync error the store stops (fail-stop) and the node must
//! restart, because after a failed fsync the kernel may have dropped the data it claimed to hold.
//! On start, a torn record at the very end of the log (a write cut by a crash) is cut off;
//! a bad record anywhere else is corruption, and so is a log shorter than the space it was
//! written into (a file cut short by something other than a crash): the node refuses to start.
//! One process at a time owns a data directory (an exclusive lock on its `LOCK` file).

mod backup_file;
mod check;
mod codec;
mod entry_locations;
mod error;
mod file_storage;
mod memory_disk;
mod recovery;
mod snapshot_file;

pub use backup_file::{read_backup, BackupError, BackupHeader, BackupWriter};
pub use check::{check_data_dir, DataReport, SegmentReport, SnapshotReport};
pub(crate) use codec::{decode, encode, encode_exact, encode_to_writer};
pub use codec::{CodecError, Identity, Standing, FORMAT_VERSION};
pub use error::StorageError;
pub use file_storage::{
    stored_identity, stored_meta, FileStorage, StorageOptions, StoredState, RETAIN_BYTES_DEFAULT,
    RETAIN_ENTRIES_DEFAULT,
};
pub use memory_disk::{MemoryDisk, MemoryStorage};
pub use snapshot_file::{SnapshotWriter, WrittenSnapshot};

use crate::core::{Entry, HardState, LogIndex, SnapshotMeta};

/// What a node needs from durable storage. [`FileStorage`] is the real one; simulations provide
/// a disk that loses unsynced writes. Writes are buffered until [`Storage::sync`]; after any
/// error the store is stopped and every later call fails.
pub trait Storage: Send + 'static {
    /// Appends entries, replacing any stored entries at or after the first one's index.
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError>;
    fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError>;
    /// Makes everything written so far durable (one fsync for all of it: group commit).
    fn sync(&mut self) -> Result<(), StorageError>;
    /// Entries `from..=to`, for a follower the core no longer holds in memory.
    fn entries(&mut self, from: LogIndex, to: LogIndex) -> Result<Vec<Entry>, StorageError>;
    /// Saves a snapshot durably and drops the entries it covers.
    fn save_snapshot(&mut self, meta: SnapshotMeta, data: &[u8]) -> Result<(), StorageError>;
    /// Where a snapshot this node takes may be written, on another thread, before
    /// [`Storage::adopt_snapshot`] makes it the store's: writing a large snapshot must not
    /// delay the log's fsyncs. By default, into memory.
    fn snapshot_writer(&self) -> SnapshotWriter {
        SnapshotWriter::Memory
    }
    /// Makes a snapshot written by this store's [`Storage::snapshot_writer`] its snapshot (as
    /// [`Storage::save_snapshot`]) unless it holds a newer one already (one installed from the
    /// leader while this one was being written), which it keeps.
    fn adopt_snapshot(&mut self, written: WrittenSnapshot) -> Result<(), StorageError> {
        if self.snapshot_index() >= written.meta.index {
            written.discard();
            return Ok(());
        }
        let meta = written.meta.clone();
        match written.into_memory() {
            Some(data) => self.save_snapshot(meta, &data),
            None => Err(StorageError::Stopped(
                "a snapshot file was handed to a store that keeps snapshots in memory".to_string(),
            )),
        }
    }
    /// The index of the snapshot the store holds (0: none).
    fn snapshot_index(&self) -> LogIndex;
    /// Bytes of log records the store holds on disk, and in how many files (for metrics).
    fn log_size(&self) -> (u64, usize) {
        (0, 0)
    }
    /// The latest snapshot and its bytes, verified.
    fn load_snapshot(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>, StorageError>;
    /// Bytes `offset..offset + bytes_max` of snapshot `meta`'s data (fewer at its end), and
    /// whether they reach its end; none if `meta` is not the latest snapshot or `offset` lies
    /// beyond its end. To send a follower; a store may read just that range.
    fn read_snapshot_chunk(
        &mut self,
        meta: &SnapshotMeta,
        offset: u64,
        bytes_max: usize,
    ) -> Result<Option<(Vec<u8>, bool)>, StorageError> {
        let Some((saved, data)) = self.load_snapshot()? else {
            return Ok(None);
        };
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        if saved != *meta || start > data.len() {
            return Ok(None);
        }
        let end = start.saturating_add(bytes_max).min(data.len());
        Ok(Some((data[start..end].to_vec(), end == data.len())))
    }
    /// Where the node stands in its cluster, as last recorded (`None`: never recorded).
    fn standing(&self) -> Option<Standing>;
    /// Records where the node stands, durably, before returning.
    fn record_standing(&mut self, standing: Standing) -> Result<(), StorageError>;
    /// Records the cluster id a joiner learned, durably, before returning.
    fn record_cluster_id(&mut self, cluster_id: u64) -> Result<(), StorageError>;
}

impl Storage for FileStorage {
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        FileStorage::append(self, entries)
    }
    fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        FileStorage::set_hard_state(self, hard_state)
    }
    fn sync(&mut self) -> Result<(), StorageError> {
        FileStorage::sync(self)
    }
    fn entries(&mut self, from: LogIndex, to: LogIndex) -> Result<Vec<Entry>, StorageError> {
        FileStorage::entries(self, from, to)
    }
    fn save_snapshot(&mut self, meta: SnapshotMeta, data: &[u8]) -> Result<(), StorageError> {
        FileStorage::save_snapshot(self, meta, data)
    }
    fn snapshot_writer(&self) -> SnapshotWriter {
        FileStorage::snapshot_writer(self)
    }
    fn adopt_snapshot(&mut self, written: WrittenSnapshot) -> Result<(), StorageError> {
        FileStorage::adopt_snapshot(self, written)
    }
    fn snapshot_index(&self) -> LogIndex {
        FileStorage::snapshot(self).map_or(0, |meta| meta.index)
    }
    fn log_size(&self) -> (u64, usize) {
        FileStorage::log_size(self)
    }
    fn load_snapshot(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>, StorageError> {
        FileStorage::load_snapshot(self)
    }
    fn read_snapshot_chunk(
        &mut self,
        meta: &SnapshotMeta,
        offset: u64,
        bytes_max: usize,
    ) -> Result<Option<(Vec<u8>, bool)>, StorageError> {
        FileStorage::read_snapshot_chunk(self, meta, offset, bytes_max)
    }
    fn standing(&self) -> Option<Standing> {
        FileStorage::standing(self)
    }
    fn record_standing(&mut self, standing: Standing) -> Result<(), StorageError> {
        FileStorage::record_standing(self, standing)
    }
    fn record_cluster_id(&mut self, cluster_id: u64) -> Result<(), StorageError> {
        FileStorage::record_cluster_id(self, cluster_id)
    }
}
