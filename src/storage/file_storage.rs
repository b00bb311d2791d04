//! The file-backed store. Layout of a data directory:
//!
//! ```text
//! LOCK                             held (flock) by the one process using the directory
//! ravel.meta                       identity: cluster id and node id; where the node stands
//! wal/00000000000000000001.wal     log segments, in order; records are framed and checksummed
//! snapshots/00000000000000000100-00000000000000000003.snap   snapshot at index 100, term 3
//! ```
//!
//! Writes are buffered in memory and reach the file on `sync` (one write and one fdatasync for
//! everything appended since: group commit). A segment is closed once it passes
//! `segment_bytes_max`; segments wholly covered by a snapshot are deleted.
//!
//! The active segment is extended with zeros ahead of the records, a mebibyte at a time, and
//! records overwrite those zeros. An fdatasync after an append that grows the file must also
//! commit the new size through the file system's journal; one that only overwrites allocated
//! blocks flushes the data alone. On ext4 here that takes a write plus fdatasync from ~200 to
//! ~135 µs. Recovery reads the zeros after the last record as the end of the log.
//!
//! The active segment's size is always a whole number of extents (`PREALLOCATE_BYTES`): it
//! grows by one `ftruncate`, made durable before records are written into the new space, so
//! whatever a crash keeps, the size is a whole number of extents. A last segment of any other
//! size was cut short (or grown) by something other than a crash (an operator, a copy, a
//! broken disk): entries the node acknowledged may be gone, and it refuses to start rather than
//! vote with a shortened log. (A cut at exactly an extent's boundary goes unseen; junk after the
//! records is read as a torn write, as before.) A full segment is closed by first
//! creating the next one and only then cutting the full one to its records, so the last segment
//! is never a closed one; a crash between the two leaves zeros after the closed segment's
//! records, which recovery cuts.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::codec::{self, Identity, Standing, WalRecord};
use super::entry_locations::{offset_too_large, EntryLocations, Location};
use super::error::StorageError;
use super::recovery;
use super::snapshot_file::{
    self, latest_snapshot, parse_snapshot, snapshot_files, snapshot_name, verify_snapshot_file,
    SnapshotWriter, WrittenBody, WrittenSnapshot,
};
use crate::core::{Entry, HardState, LogIndex, SnapshotMeta};

pub(super) const META_FILE: &str = "ravel.meta";
const LOCK_FILE: &str = "LOCK";
pub(super) const WAL_DIR: &str = "wal";
pub(super) const SNAPSHOT_DIR: &str = "snapshots";
/// How far ahead of its records the active segment is filled with zeros (see the module docs).
const PREALLOCATE_BYTES: u64 = 1 << 20;

/// Segments are cut at this size whatever `segment_bytes_max` says, so that an entry's offset
/// in its segment fits the 32 bits the log keeps of it (`EntryLocations`).
const SEGMENT_BYTES_LIMIT: u64 = 1 << 30;

#[derive(Clone, Debug)]
pub struct StorageOptions {
    /// A segment is closed and a new one started once it holds this many bytes (at most 1 GiB).
    pub segment_bytes_max: u64,
    /// Entries kept in the log behind a snapshot this node takes, so that a follower a little
    /// behind catches up from the log instead of receiving the whole state: up to this many...
    pub retain_entries: u64,
    /// ...in whole segments of at most this many bytes together.
    pub retain_bytes: u64,
}

/// Default log retention behind a snapshot: about 40 s of writes at this machine's best rate,
/// or what fits in 256 MiB of segments, whichever is less.
pub const RETAIN_ENTRIES_DEFAULT: u64 = 1_000_000;
pub const RETAIN_BYTES_DEFAULT: u64 = 256 << 20;

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            segment_bytes_max: 64 << 20,
            retain_entries: RETAIN_ENTRIES_DEFAULT,
            retain_bytes: RETAIN_BYTES_DEFAULT,
        }
    }
}

/// What a node finds in its data directory on start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredState {
    pub hard_state: HardState,
    pub snapshot: Option<SnapshotMeta>,
    /// The entries after the snapshot (or from index 1), contiguous.
    pub entries: Vec<Entry>,
}

impl From<StoredState> for crate::core::Recovered {
    fn from(state: StoredState) -> Self {
        crate::core::Recovered {
            hard_state: state.hard_state,
            snapshot: state.snapshot,
            entries: state.entries,
        }
    }
}

#[derive(Debug)]
struct Segment {
    sequence: u64,
    path: PathBuf,
    /// Bytes of records on disk (written, maybe not yet synced); zeros may follow them.
    len: u64,
    /// The highest entry index written into it, 0 if none.
    last_index: LogIndex,
}

pub struct FileStorage {
    dir: PathBuf,
    /// Holds the directory's exclusive lock for as long as the store is open.
    _lock: File,
    identity: Identity,
    /// Where the node stands in its cluster, if recorded (directories from before it was: `None`).
    standing: Option<Standing>,
    options: StorageOptions,
    segments: Vec<Segment>,
    active: File,
    /// The active segment's file size: its records and the zeros after them.
    allocated: u64,
    /// Framed records not yet written to the active segment.
    pending: Vec<u8>,
    /// `locations.get(k)` is entry `first_index + k`.
    locations: EntryLocations,
    first_index: LogIndex,
    hard_state: HardState,
    /// The segment holding the latest hard state record: it is never deleted, even when a
    /// snapshot covers all its entries (the record may have landed in a segment closed right
    /// after it was written).
    hard_state_segment: u64,
    snapshot: Option<SnapshotMeta>,
    /// The snapshot file chunks are read from, once verified whole: its meta, and where its
    /// data starts and how long it is.
    serving: Option<(SnapshotMeta, u64, u64)>,
    /// Set by the first failed write or sync; every later call returns `Stopped`.
    failure: Option<String>,
}

impl FileStorage {
    /// Opens (or creates) the data directory of node `identity` and recovers what it holds.
    pub fn open(
        dir: impl AsRef<Path>,
        identity: Identity,
        options: StorageOptions,
    ) -> Result<(FileStorage, StoredState), StorageError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|error| StorageError::io(&dir, error))?;
        let lock = lock_dir(&dir)?;
        for sub in [dir.join(WAL_DIR), dir.join(SNAPSHOT_DIR)] {
            fs::create_dir_all(&sub).map_err(|error| StorageError::io(&sub, error))?;
        }
        let standing = check_identity(&dir, identity)?;
        let extent = extent_bytes(&options);
        let snapshots = dir.join(SNAPSHOT_DIR);
        snapshot_file::remove_unfinished(&snapshots)?;
        let snapshot = latest_snapshot(&snapshots)?;
        let first_index = snapshot.as_ref().map_or(1, |meta| meta.index + 1);
        let mut storage_segments = Vec::new();
        let mut locations = EntryLocations::default();
        let mut entries: Vec<Entry> = Vec::new();
        let mut hard_state = HardState::default();
        let mut hard_state_segment = 0;
        let paths = segment_paths(&dir)?;
        for (position, (sequence, path)) in paths.iter().enumerate() {
            let bytes = fs::read(path).map_err(|error| StorageError::io(path, error))?;
            let is_last = position + 1 == paths.len();
            let size = bytes.len() as u64;
            if is_last && !size.is_multiple_of(extent) {
                return Err(StorageError::Truncated {
                    path: path.clone(),
                    size,
                    extent,
                });
            }
            let scan = recovery::scan(&bytes, is_last).map_err(|damage| StorageError::Corrupt {
                path: path.clone(),
                offset: damage.offset,
                reason: damage.reason,
            })?;
            if scan.valid_len < size {
                if is_last {
                    zero_torn_tail(path, scan.valid_len, size)?;
                } else {
                    // A close cut short by a crash: the next segment exists, finish the cut.
                    cut_to_records(path, scan.valid_len)?;
                }
            }
            let mut last_index = 0;
            for (offset, len, record) in scan.records {
                match record {
                    WalRecord::HardState { term, vote, commit } => {
                        hard_state = HardState { term, vote, commit };
                        hard_state_segment = *sequence;
                    }
                    record => {
                        let entry = record.into_entry().expect("not a hard state");
                        let index = entry.index;
                        last_index = last_index.max(index);
                        if index < first_index {
                            // Covered by the snapshot, but it still replaced what followed it.
                            entries.clear();
                            locations.clear();
                            continue;
                        }
                        let next = first_index + entries.len() as LogIndex;
                        if index > next {
                            return Err(StorageError::Corrupt {
                                path: path.clone(),
                                offset,
                                reason: format!(
                                    "entry {index} follows entry {} with a gap",
                                    next - 1
                                ),
                            });
                        }
                        let keep = (index - first_index) as usize;
                        entries.truncate(keep);
                        locations.truncate(keep);
                        entries.push(entry);
                        locations
                            .push(Location {
                                sequence: *sequence,
                                offset,
                                len,
                            })
                            .map_err(|offset| offset_too_large(path, offset))?;
                    }
                }
            }
            storage_segments.push(Segment {
                sequence: *sequence,
                path: path.clone(),
                len: scan.valid_len,
                last_index,
            });
        }
        if storage_segments.is_empty() {
            storage_segments.push(create_segment(&dir, 1)?);
        }
        let active_path = &storage_segments.last().expect("at least one segment").path;
        let active = OpenOptions::new()
            .write(true)
            .open(active_path)
            .map_err(|error| StorageError::io(active_path, error))?;
        let allocated = fs::metadata(active_path)
            .map_err(|error| StorageError::io(active_path, error))?
            .len();
        let storage = FileStorage {
            dir,
            _lock: lock,
            identity,
            standing,
            options,
            segments: storage_segments,
            active,
            allocated,
            pending: Vec::new(),
            locations,
            first_index,
            hard_state,
            hard_state_segment,
            snapshot: snapshot.clone(),
            serving: None,
            failure: None,
        };
        let state = StoredState {
            hard_state,
            snapshot,
            entries,
        };
        Ok((storage, state))
    }

    /// The index of the last entry stored (or covered by the snapshot).
    pub fn last_index(&self) -> LogIndex {
        self.first_index + self.locations.len() as LogIndex - 1
    }

    /// Bytes of records in the log's segments (written, maybe not yet synced), and how many
    /// segments there are.
    pub fn log_size(&self) -> (u64, usize) {
        let bytes = self.segments.iter().map(|segment| segment.len).sum();
        (bytes, self.segments.len())
    }

    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// Where the node stands in its cluster, as recorded in its data directory.
    pub fn standing(&self) -> Option<Standing> {
        self.standing
    }

    /// Records the cluster id a joiner learned (its identity was stamped with 0), or the new
    /// one of a cluster forced from this node's data, durably.
    pub fn record_cluster_id(&mut self, cluster_id: u64) -> Result<(), StorageError> {
        self.check_running()?;
        let identity = Identity {
            cluster_id,
            ..self.identity
        };
        write_meta(&self.dir, identity, self.standing)?;
        self.identity = identity;
        Ok(())
    }

    /// Records where the node stands in its cluster, durably, beside its identity.
    pub fn record_standing(&mut self, standing: Standing) -> Result<(), StorageError> {
        self.check_running()?;
        write_meta(&self.dir, self.identity, Some(standing))?;
        self.standing = Some(standing);
        Ok(())
    }

    pub fn snapshot(&self) -> Option<&SnapshotMeta> {
        self.snapshot.as_ref()
    }

    fn check_running(&self) -> Result<(), StorageError> {
        match &self.failure {
            Some(cause) => Err(StorageError::Stopped(cause.clone())),
            None => Ok(()),
        }
    }

    /// Appends entries; an entry replaces any stored entry at or after its index. Durable only
    /// after the next `sync`.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.check_running()?;
        for entry in entries {
            if entry.index < self.first_index {
                // Below the snapshot: nothing to store, but it replaces everything after it, as
                // recovery will replay it.
                self.locations.clear();
                continue;
            }
            assert!(
                entry.index <= self.last_index() + 1,
                "entry {} appended after {} leaves a gap",
                entry.index,
                self.last_index()
            );
            self.locations
                .truncate((entry.index - self.first_index) as usize);
            if self.active_len() + self.pending.len() as u64 > u64::from(u32::MAX) / 2 {
                // Cut the segment before its offsets outgrow what a location holds (it is cut
                // at `segment_bytes_max` on every sync, at most 1 GiB; only one huge batch
                // of appends between two syncs gets here).
                self.write_and_sync()?;
            }
            let offset = self.active_len() + self.pending.len() as u64;
            let before = self.pending.len();
            codec::frame_into(
                &mut self.pending,
                &codec::encode(&WalRecord::from_entry(entry)),
            );
            let active = self.segments.last_mut().expect("an active segment");
            active.last_index = active.last_index.max(entry.index);
            let location = Location {
                sequence: active.sequence,
                offset,
                len: (self.pending.len() - before) as u32,
            };
            let path = &active.path;
            self.locations
                .push(location)
                .map_err(|offset| offset_too_large(path, offset))?;
        }
        Ok(())
    }

    /// Records a new hard state, durable after the next `sync`.
    pub fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        self.check_running()?;
        self.hard_state = hard_state;
        // Pending records go to the active segment at the next sync.
        self.hard_state_segment = self.segments.last().expect("an active segment").sequence;
        codec::frame_into(
            &mut self.pending,
            &codec::encode(&WalRecord::from_hard_state(&hard_state)),
        );
        Ok(())
    }

    /// The segment being appended to, and where its records end (zeros may follow).
    pub fn active_segment(&self) -> (&Path, u64) {
        let active = self.segments.last().expect("an active segment");
        (&active.path, active.len)
    }

    fn active_len(&self) -> u64 {
        self.segments.last().map_or(0, |segment| segment.len)
    }

    /// Writes everything appended so far and makes it durable: one write, one fdatasync. Then
    /// starts a new segment if the active one is full.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        self.check_running()?;
        let result = self.write_and_sync();
        if let Err(error) = &result {
            self.failure = Some(error.to_string());
        }
        result
    }

    fn write_and_sync(&mut self) -> Result<(), StorageError> {
        let path = self
            .segments
            .last()
            .expect("an active segment")
            .path
            .clone();
        let io = |error| StorageError::io(&path, error);
        if !self.pending.is_empty() {
            let start = self.active_len();
            let end = start + self.pending.len() as u64;
            self.preallocate(end).map_err(io)?;
            assert!(
                end <= self.allocated,
                "records written past the allocated space"
            );
            self.active.write_all_at(&self.pending, start).map_err(io)?;
            self.segments.last_mut().expect("an active segment").len = end;
            self.pending.clear();
        }
        self.active.sync_data().map_err(io)?;
        if self.active_len() >= self.options.segment_bytes_max.min(SEGMENT_BYTES_LIMIT) {
            // The next segment exists before this one is cut to its records, so the last segment
            // on disk is always one being appended to (see the module docs).
            let sequence = self.segments.last().expect("an active segment").sequence + 1;
            let segment = create_segment(&self.dir, sequence)?;
            let next = OpenOptions::new()
                .write(true)
                .open(&segment.path)
                .map_err(|error| StorageError::io(&segment.path, error))?;
            // Closed segments hold records only.
            self.active.set_len(self.active_len()).map_err(io)?;
            self.active.sync_all().map_err(io)?;
            self.active = next;
            self.allocated = 0;
            self.segments.push(segment);
        }
        Ok(())
    }

    /// Grows the active segment by whole extents to hold `end` bytes, if it does not yet: the
    /// size first (one `ftruncate`, so a crash keeps the old size or the new one), then zeros
    /// over the new space so its blocks are allocated once here, not at every fdatasync; then an
    /// fdatasync, so that no record is written past a size that a crash could still take back
    /// (one more fsync per extent of log, a mebibyte).
    fn preallocate(&mut self, end: u64) -> std::io::Result<()> {
        if end <= self.allocated {
            return Ok(());
        }
        let extent = extent_bytes(&self.options);
        let target = end.div_ceil(extent) * extent;
        self.active.set_len(target)?;
        let zeros = vec![0u8; (target - self.allocated) as usize];
        self.active.write_all_at(&zeros, self.allocated)?;
        self.active.sync_data()?;
        self.allocated = target;
        debug_assert!(self.allocated.is_multiple_of(extent));
        Ok(())
    }

    /// Reads stored entries `from..=to` (none unless all are held), writing out first any of
    /// them still buffered. Records lying one after the other in a segment are read together.
    pub fn entries(&mut self, from: LogIndex, to: LogIndex) -> Result<Vec<Entry>, StorageError> {
        self.check_running()?;
        if from < self.first_index || to > self.last_index() || from > to {
            return Ok(Vec::new());
        }
        let last = self.locations.get((to - self.first_index) as usize);
        let active = self.segments.last().expect("an active segment").sequence;
        if last.sequence == active && last.offset + u64::from(last.len) > self.active_len() {
            self.sync()?;
        }
        let wanted = self.locations.range(
            (from - self.first_index) as usize,
            (to - self.first_index) as usize,
        );
        let mut entries = Vec::with_capacity(wanted.len());
        let mut open: Option<(u64, File)> = None;
        let mut start = 0;
        while start < wanted.len() {
            // The run of records that follow each other in one segment.
            let first = wanted[start];
            let mut end = start + 1;
            let mut run_end = first.offset + u64::from(first.len);
            while end < wanted.len()
                && wanted[end].sequence == first.sequence
                && wanted[end].offset == run_end
            {
                run_end += u64::from(wanted[end].len);
                end += 1;
            }
            let segment = self
                .segments
                .iter()
                .find(|segment| segment.sequence == first.sequence)
                .expect("a location points at a live segment");
            if open
                .as_ref()
                .is_none_or(|(sequence, _)| *sequence != first.sequence)
            {
                let file = File::open(&segment.path)
                    .map_err(|error| StorageError::io(&segment.path, error))?;
                open = Some((first.sequence, file));
            }
            let (_, file) = open.as_ref().expect("opened above");
            let mut bytes = vec![0; (run_end - first.offset) as usize];
            file.read_exact_at(&mut bytes, first.offset)
                .map_err(|error| StorageError::io(&segment.path, error))?;
            for (position, location) in wanted[start..end].iter().enumerate() {
                let index = from + (start + position) as LogIndex;
                let at = (location.offset - first.offset) as usize;
                let corrupt = |reason: String| StorageError::Corrupt {
                    path: segment.path.clone(),
                    offset: location.offset,
                    reason,
                };
                let record = &bytes[at..at + location.len as usize];
                let codec::Frame::Valid { body, .. } = codec::read_frame(record) else {
                    return Err(corrupt(
                        "a stored record no longer matches its checksum".to_string(),
                    ));
                };
                let record =
                    codec::decode::<WalRecord>(body).map_err(|error| corrupt(error.to_string()))?;
                match record.into_entry() {
                    Some(entry) if entry.index == index => entries.push(entry),
                    other => {
                        return Err(corrupt(format!("expected entry {index}, found {other:?}")))
                    }
                }
            }
            start = end;
        }
        Ok(entries)
    }

    /// Saves a snapshot durably (temporary file, fsync, rename, directory fsync), then drops
    /// the entries it covers: whole segments are deleted, older snapshots removed. Used for a
    /// snapshot received from the leader; one this node takes is written by a
    /// [`SnapshotWriter`] and adopted ([`FileStorage::adopt_snapshot`]).
    pub fn save_snapshot(&mut self, meta: SnapshotMeta, data: &[u8]) -> Result<(), StorageError> {
        self.check_running()?;
        let result = self
            .snapshot_writer()
            .write(meta, |out| out.write_all(data));
        let result = result.and_then(|written| self.adopt(written));
        if let Err(error) = &result {
            self.failure = Some(error.to_string());
        }
        result
    }

    /// Where a snapshot of this store may be written from another thread.
    pub fn snapshot_writer(&self) -> SnapshotWriter {
        SnapshotWriter::Directory(self.dir.join(SNAPSHOT_DIR))
    }

    /// Makes a snapshot written by [`FileStorage::snapshot_writer`] the store's snapshot, if it
    /// is newer than the one it holds (a snapshot installed from the leader meanwhile wins),
    /// and compacts the log it covers.
    pub fn adopt_snapshot(&mut self, written: WrittenSnapshot) -> Result<(), StorageError> {
        self.check_running()?;
        let result = self.adopt(written);
        if let Err(error) = &result {
            self.failure = Some(error.to_string());
        }
        result
    }

    fn adopt(&mut self, written: WrittenSnapshot) -> Result<(), StorageError> {
        if self
            .snapshot
            .as_ref()
            .is_some_and(|held| held.index >= written.meta.index)
        {
            written.discard();
            return Ok(());
        }
        let WrittenSnapshot { meta, body, .. } = written;
        let WrittenBody::File(temporary) = body else {
            unreachable!("this store's writer writes files");
        };
        let dir = self.dir.join(SNAPSHOT_DIR);
        let path = dir.join(snapshot_name(meta.index, meta.term));
        fs::rename(&temporary, &path).map_err(|error| StorageError::io(&path, error))?;
        // The snapshot must be durable under its name before any segment it covers goes.
        sync_dir(&dir)?;
        // The latest hard state must outlive the segments about to be deleted.
        let hard_state = self.hard_state;
        self.set_hard_state(hard_state)?;
        self.write_and_sync()?;
        // Installed from a leader beyond our log: what we had is replaced entirely.
        let beyond_log = meta.index > self.last_index();
        let dead = self.segments_past_retention(&meta, beyond_log);
        // Entries stay readable from the first after the last one in a deleted segment, but
        // no more than the retention keeps.
        let retained_first = if beyond_log {
            meta.index + 1
        } else {
            (meta.index + 1 - self.options.retain_entries.min(meta.index)).max(self.first_index)
        };
        let after_dead = self
            .locations
            .last_in(&dead)
            .map_or(0, |position| self.first_index + position as LogIndex + 1);
        let first = retained_first.max(after_dead);
        if beyond_log {
            self.locations.clear();
        } else {
            self.locations
                .drain_front((first - self.first_index) as usize);
        }
        self.first_index = first;
        self.snapshot = Some(meta);
        let (dead, live): (Vec<Segment>, Vec<Segment>) = std::mem::take(&mut self.segments)
            .into_iter()
            .partition(|segment| dead.contains(&segment.sequence));
        self.segments = live;
        for segment in dead {
            fs::remove_file(&segment.path)
                .map_err(|error| StorageError::io(&segment.path, error))?;
        }
        for (_, _, old) in snapshot_files(&dir)? {
            if old != path {
                fs::remove_file(&old).map_err(|error| StorageError::io(&old, error))?;
            }
        }
        // The removals are not synced (each directory sync waits for a journal commit, on the
        // thread the log's fsyncs wait for): a file a crash brings back is harmless. An old
        // segment replays as entries the snapshot covers, an old snapshot is not the newest,
        // and both go with the next snapshot.
        Ok(())
    }

    /// The segments a snapshot at `meta` lets go: those it covers wholly (never the active one,
    /// nor the one holding the latest hard state), except the newest of them the retention
    /// keeps (none when the snapshot lies beyond the log).
    fn segments_past_retention(&self, meta: &SnapshotMeta, beyond_log: bool) -> Vec<u64> {
        let active = self.segments.last().expect("an active segment").sequence;
        let floor = meta.index.saturating_sub(self.options.retain_entries);
        let mut kept_bytes = 0;
        let mut retaining = !beyond_log;
        let mut dead = Vec::new();
        for segment in self.segments.iter().rev() {
            if segment.sequence == active
                || segment.sequence == self.hard_state_segment
                || segment.last_index > meta.index
            {
                continue;
            }
            retaining &=
                segment.last_index > floor && kept_bytes + segment.len <= self.options.retain_bytes;
            if retaining {
                kept_bytes += segment.len;
            } else {
                dead.push(segment.sequence);
            }
        }
        dead
    }

    /// Bytes `offset..offset + bytes_max` of snapshot `meta`'s data (fewer at its end), and
    /// whether they reach the end; none if `meta` is not the latest snapshot or `offset` lies
    /// beyond its end. Read from the file, not from memory: a node keeps no copy of its
    /// snapshot to send. The whole file is checked against its checksum once, before its
    /// first chunk is read, a block at a time.
    pub fn read_snapshot_chunk(
        &mut self,
        meta: &SnapshotMeta,
        offset: u64,
        bytes_max: usize,
    ) -> Result<Option<(Vec<u8>, bool)>, StorageError> {
        if self.snapshot.as_ref() != Some(meta) {
            return Ok(None);
        }
        let path = self
            .dir
            .join(SNAPSHOT_DIR)
            .join(snapshot_name(meta.index, meta.term));
        let (start, len) = match &self.serving {
            Some((serving, start, len)) if serving == meta => (*start, *len),
            _ => {
                let (_, start, len) = verify_snapshot_file(&path)?;
                self.serving = Some((meta.clone(), start, len));
                (start, len)
            }
        };
        if offset > len {
            return Ok(None);
        }
        let end = offset.saturating_add(bytes_max as u64).min(len);
        let mut chunk = vec![0u8; (end - offset) as usize];
        File::open(&path)
            .and_then(|file| file.read_exact_at(&mut chunk, start + offset))
            .map_err(|error| StorageError::io(&path, error))?;
        Ok(Some((chunk, end == len)))
    }

    /// The latest snapshot and its data, verified against its checksum.
    pub fn load_snapshot(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>, StorageError> {
        let Some(meta) = self.snapshot.clone() else {
            return Ok(None);
        };
        let path = self
            .dir
            .join(SNAPSHOT_DIR)
            .join(snapshot_name(meta.index, meta.term));
        let bytes = fs::read(&path).map_err(|error| StorageError::io(&path, error))?;
        let (_, data) = parse_snapshot(&path, &bytes)?;
        Ok(Some((meta, data.to_vec())))
    }
}

/// The size the active segment grows by; it is always a whole number of these.
pub(super) fn extent_bytes(options: &StorageOptions) -> u64 {
    PREALLOCATE_BYTES.min(options.segment_bytes_max).max(1)
}

/// Takes the directory's exclusive lock, held until the returned file is closed (the process
/// exits, however it exits): two nodes on one directory would interleave their logs.
pub(super) fn lock_dir(dir: &Path) -> Result<File, StorageError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|error| StorageError::io(&path, error))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(StorageError::InUse {
            path: dir.to_path_buf(),
            lock: path,
        }),
        Err(fs::TryLockError::Error(error)) => Err(StorageError::io(&path, error)),
    }
}

/// The identity record, then (if known) where the node stands in its cluster, each framed.
fn write_meta(
    dir: &Path,
    identity: Identity,
    standing: Option<Standing>,
) -> Result<(), StorageError> {
    let mut contents = Vec::new();
    codec::frame_into(&mut contents, &codec::encode(&identity));
    if let Some(standing) = standing {
        codec::frame_into(&mut contents, &codec::encode(&standing));
    }
    write_durably(
        &dir.join("ravel.meta.tmp"),
        &dir.join(META_FILE),
        &[&contents],
    )
}

/// The identity a data directory was stamped with, if it has one (read before it is opened, to
/// resume with its cluster id when none is given).
pub fn stored_identity(dir: &Path) -> Result<Option<Identity>, StorageError> {
    Ok(stored_meta(dir)?.map(|(identity, _)| identity))
}

/// The identity a data directory was stamped with and where its node stands in its cluster (if
/// recorded), read before it is opened: a data node of a sharded store asks the admin where to
/// join unless it has been a member of its group.
pub fn stored_meta(dir: &Path) -> Result<Option<(Identity, Option<Standing>)>, StorageError> {
    let path = dir.join(META_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(StorageError::io(&path, error)),
    };
    let corrupt = |reason: String| StorageError::Corrupt {
        path: path.clone(),
        offset: 0,
        reason,
    };
    let codec::Frame::Valid { body, len } = codec::read_frame(&bytes) else {
        return Err(corrupt(
            "the identity record does not match its checksum".to_string(),
        ));
    };
    let identity: Identity = codec::decode(body).map_err(|error| corrupt(error.to_string()))?;
    let standing = match codec::read_frame(&bytes[len..]) {
        codec::Frame::Valid { body, .. } => {
            Some(codec::decode(body).map_err(|error| corrupt(error.to_string()))?)
        }
        codec::Frame::Incomplete if bytes.len() == len => None,
        _ => {
            return Err(corrupt(
                "the record of where the node stands in its cluster is damaged".to_string(),
            ))
        }
    };
    Ok(Some((identity, standing)))
}

/// Checks the directory belongs to `identity` (stamping it if new) and returns where the node
/// stands in its cluster, if that was recorded.
fn check_identity(dir: &Path, identity: Identity) -> Result<Option<Standing>, StorageError> {
    let Some((found, standing)) = stored_meta(dir)? else {
        write_meta(dir, identity, None)?;
        return Ok(None);
    };
    // Cluster 0: a joiner that had not learned its cluster's id; it takes the one given.
    let same_cluster = found.cluster_id == identity.cluster_id || found.cluster_id == 0;
    if !same_cluster || found.node_id != identity.node_id {
        return Err(StorageError::WrongIdentity {
            path: dir.join(META_FILE),
            cluster: identity.cluster_id,
            node: identity.node_id,
            found_cluster: found.cluster_id,
            found_node: found.node_id,
        });
    }
    if found.cluster_id == 0 && identity.cluster_id != 0 {
        write_meta(dir, identity, standing)?;
    }
    Ok(standing)
}

fn segment_name(sequence: u64) -> String {
    format!("{sequence:020}.wal")
}

pub(super) fn segment_paths(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StorageError> {
    let wal = dir.join(WAL_DIR);
    let mut paths = Vec::new();
    for item in fs::read_dir(&wal).map_err(|error| StorageError::io(&wal, error))? {
        let path = item.map_err(|error| StorageError::io(&wal, error))?.path();
        let sequence = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_suffix(".wal"))
            .and_then(|stem| stem.parse::<u64>().ok());
        if let Some(sequence) = sequence {
            paths.push((sequence, path));
        }
    }
    paths.sort();
    Ok(paths)
}

fn create_segment(dir: &Path, sequence: u64) -> Result<Segment, StorageError> {
    let path = dir.join(WAL_DIR).join(segment_name(sequence));
    File::create(&path)
        .and_then(|file| file.sync_all())
        .map_err(|error| StorageError::io(&path, error))?;
    sync_dir(&dir.join(WAL_DIR))?;
    Ok(Segment {
        sequence,
        path,
        len: 0,
        last_index: 0,
    })
}

/// A crash cut the last write: zero the partial record so new records follow whole ones (the
/// file keeps its size, a whole number of extents).
fn zero_torn_tail(path: &Path, valid_len: u64, size: u64) -> Result<(), StorageError> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|file| {
            file.write_all_at(&vec![0; (size - valid_len) as usize], valid_len)?;
            file.sync_all()
        })
        .map_err(|error| StorageError::io(path, error))
}

/// Cuts a closed segment to its records.
fn cut_to_records(path: &Path, valid_len: u64) -> Result<(), StorageError> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|file| {
            file.set_len(valid_len)?;
            file.sync_all()
        })
        .map_err(|error| StorageError::io(path, error))
}

/// Writes `parts` one after the other to `temporary`, syncs it, renames it to `path` and syncs
/// the directory: `path` then holds all of them or (after a crash) what it held before.
fn write_durably(temporary: &Path, path: &Path, parts: &[&[u8]]) -> Result<(), StorageError> {
    let mut file = File::create(temporary).map_err(|error| StorageError::io(temporary, error))?;
    parts
        .iter()
        .try_for_each(|part| file.write_all(part))
        .and_then(|_| file.sync_all())
        .map_err(|error| StorageError::io(temporary, error))?;
    fs::rename(temporary, path).map_err(|error| StorageError::io(path, error))?;
    sync_dir(path.parent().expect("a file has a directory"))
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|file| file.sync_all())
        .map_err(|error| StorageError::io(dir, error))
}
