//! `ravel check-data DIR`: verifies a stopped node's data directory without changing a byte —
//! the identity record, every record of every log segment (checksums, order, no gaps), every
//! snapshot file (checksummed block by block) — and says what it found: what the node would
//! resume with, what it would repair by itself on start (a torn last write), and what would
//! make it refuse to start (anything else), each with its file and byte offset.
//!
//! A node opening its directory does the same checks (`FileStorage::open`) but repairs what a
//! crash leaves; this one only reads, so it can run on a copy, a backup, or a directory an
//! operator is about to trust.

use std::fs;
use std::path::{Path, PathBuf};

use super::codec::{Identity, Standing, WalRecord};
use super::file_storage::{
    extent_bytes, lock_dir, segment_paths, stored_meta, StorageOptions, META_FILE, SNAPSHOT_DIR,
    WAL_DIR,
};
use super::recovery;
use super::snapshot_file::{snapshot_files, verify_snapshot_file};
use super::StorageError;
use crate::core::{HardState, LogIndex, Term};

/// What a data directory holds, and what is wrong with it.
#[derive(Clone, Debug, Default)]
pub struct DataReport {
    /// The node and cluster the directory belongs to, and where the node stood.
    pub identity: Option<(Identity, Option<Standing>)>,
    pub segments: Vec<SegmentReport>,
    pub snapshots: Vec<SnapshotReport>,
    /// The latest snapshot that verified: the log resumes after its index.
    pub snapshot_index: LogIndex,
    /// The entries the node would resume with: `first..=last` (empty when `last < first`).
    pub first_index: LogIndex,
    pub last_index: LogIndex,
    pub last_term: Term,
    /// The latest hard state recorded (term, vote, commit).
    pub hard_state: Option<HardState>,
    /// What the node repairs by itself on start (a write a crash cut short).
    pub repairable: Vec<String>,
    /// What makes the node refuse to start, or means data is lost.
    pub problems: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct SegmentReport {
    pub path: PathBuf,
    pub bytes: u64,
    pub records: usize,
    /// The lowest and highest entry index written in it, if any.
    pub entries: Option<(LogIndex, LogIndex)>,
}

#[derive(Clone, Debug)]
pub struct SnapshotReport {
    pub path: PathBuf,
    pub index: LogIndex,
    pub term: Term,
    pub bytes: u64,
    /// Why it does not verify, if it does not.
    pub damage: Option<String>,
}

impl DataReport {
    /// Whether the node would start from this directory and lose nothing it acknowledged.
    pub fn is_sound(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks the data directory `dir`, reading only. Fails if it is not a data directory or a
/// running node holds it (its files change under a reader).
pub fn check_data_dir(dir: &Path) -> Result<DataReport, StorageError> {
    if !dir.join(META_FILE).exists() && !dir.join(WAL_DIR).exists() {
        return Err(StorageError::NotADataDir {
            path: dir.to_path_buf(),
        });
    }
    let _lock = lock_dir(dir)?;
    let mut report = DataReport::default();
    match stored_meta(dir) {
        Ok(Some(identity)) => report.identity = Some(identity),
        Ok(None) => report
            .problems
            .push(format!("{}: missing", dir.join(META_FILE).display())),
        Err(error) => report.problems.push(error.to_string()),
    }
    check_snapshots(&dir.join(SNAPSHOT_DIR), &mut report)?;
    check_segments(dir, &mut report)?;
    if let Some(hard_state) = report.hard_state {
        let known = report.last_index.max(report.snapshot_index);
        if hard_state.commit > known {
            report.problems.push(format!(
                "the commit index {} is beyond the last entry held ({known}): committed \
                 entries are missing",
                hard_state.commit
            ));
        }
    }
    Ok(report)
}

fn check_snapshots(snapshots: &Path, report: &mut DataReport) -> Result<(), StorageError> {
    if !snapshots.exists() {
        return Ok(());
    }
    for (index, term, path) in snapshot_files(snapshots)? {
        let bytes = fs::metadata(&path).map_or(0, |metadata| metadata.len());
        let damage = match verify_snapshot_file(&path) {
            Ok(_) => {
                report.snapshot_index = report.snapshot_index.max(index);
                None
            }
            Err(error) => Some(error.to_string()),
        };
        if let Some(damage) = &damage {
            report.problems.push(damage.clone());
        }
        report.snapshots.push(SnapshotReport {
            path,
            index,
            term,
            bytes,
            damage,
        });
    }
    for item in fs::read_dir(snapshots).map_err(|error| StorageError::io(snapshots, error))? {
        let path = item
            .map_err(|error| StorageError::io(snapshots, error))?
            .path();
        if path.extension().is_some_and(|extension| extension == "tmp") {
            report.repairable.push(format!(
                "{}: a snapshot never finished (removed on start)",
                path.display()
            ));
        }
    }
    Ok(())
}

fn check_segments(dir: &Path, report: &mut DataReport) -> Result<(), StorageError> {
    if !dir.join(WAL_DIR).exists() {
        report
            .problems
            .push(format!("{}: missing", dir.join(WAL_DIR).display()));
        return Ok(());
    }
    report.first_index = report.snapshot_index + 1;
    // The index the next entry of the log the node resumes with must have (an entry at or
    // below it replaces what followed, as a new leader's entries do).
    let mut next = report.first_index;
    let paths = segment_paths(dir)?;
    for (position, (_, path)) in paths.iter().enumerate() {
        let bytes = fs::read(path).map_err(|error| StorageError::io(path, error))?;
        let is_last = position + 1 == paths.len();
        let mut segment = SegmentReport {
            path: path.clone(),
            bytes: bytes.len() as u64,
            records: 0,
            entries: None,
        };
        // The last segment grows by whole extents: shorter, it was cut outside Ravel.
        let extent = extent_bytes(&StorageOptions::default());
        if is_last && !segment.bytes.is_multiple_of(extent) {
            report.problems.push(
                StorageError::Truncated {
                    path: path.clone(),
                    size: segment.bytes,
                    extent,
                }
                .to_string(),
            );
        }
        match recovery::scan(&bytes, is_last) {
            Err(damage) => report.problems.push(format!(
                "{}: at byte {}: {}",
                path.display(),
                damage.offset,
                damage.reason
            )),
            Ok(scan) => {
                if scan.valid_len < segment.bytes {
                    let rest = &bytes[scan.valid_len as usize..];
                    if rest.iter().any(|&byte| byte != 0) {
                        report.repairable.push(format!(
                            "{}: a write cut short at byte {} (a crash; cut off on start)",
                            path.display(),
                            scan.valid_len
                        ));
                    }
                }
                segment.records = scan.records.len();
                for (offset, _, record) in scan.records {
                    if let WalRecord::HardState { term, vote, commit } = record {
                        report.hard_state = Some(HardState { term, vote, commit });
                        continue;
                    }
                    let Some(entry) = record.into_entry() else {
                        continue;
                    };
                    let (low, high) = segment.entries.unwrap_or((entry.index, entry.index));
                    segment.entries = Some((low.min(entry.index), high.max(entry.index)));
                    if entry.index < report.first_index {
                        continue;
                    }
                    if entry.index > next {
                        report.problems.push(format!(
                            "{}: at byte {offset}: entry {} follows entry {} with a gap",
                            path.display(),
                            entry.index,
                            next - 1
                        ));
                    }
                    next = entry.index + 1;
                    report.last_term = entry.term;
                }
            }
        }
        report.segments.push(segment);
    }
    report.last_index = next - 1;
    if report.last_index < report.first_index {
        report.last_term = 0;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::codec::to_entry;
    use crate::storage::FileStorage;

    fn write_log(dir: &Path, entries: u64) {
        let identity = Identity {
            cluster_id: 7,
            node_id: 1,
        };
        let (mut storage, _) =
            FileStorage::open(dir, identity, StorageOptions::default()).expect("opens");
        let written: Vec<_> = (1..=entries)
            .map(|index| to_entry(1, index, Some(format!("command {index}").into_bytes())))
            .collect();
        storage.append(&written).expect("appended");
        storage
            .set_hard_state(HardState {
                term: 1,
                vote: Some(1),
                commit: entries,
            })
            .expect("recorded");
        storage.sync().expect("synced");
    }

    /// A directory a node wrote and stopped with is sound, and the report says what it holds;
    /// the check changes no byte of it.
    #[test]
    fn a_healthy_directory_is_sound_and_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 20);
        let segment = segment_paths(dir.path()).unwrap()[0].1.clone();
        let before = fs::read(&segment).unwrap();
        let report = check_data_dir(dir.path()).unwrap();
        assert!(report.is_sound(), "{report:?}");
        assert_eq!((report.first_index, report.last_index), (1, 20));
        assert_eq!(report.hard_state.map(|state| state.commit), Some(20));
        let (identity, _) = report.identity.expect("an identity");
        assert_eq!((identity.cluster_id, identity.node_id), (7, 1));
        assert_eq!(report.segments[0].entries, Some((1, 20)));
        assert_eq!(fs::read(&segment).unwrap(), before);
    }

    /// A flipped byte in the middle of the log is corruption, named with its file and offset;
    /// a write cut short at the very end is what a crash leaves, repaired on start.
    #[test]
    fn damage_is_named_with_its_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 20);
        let segment = segment_paths(dir.path()).unwrap()[0].1.clone();
        let mut bytes = fs::read(&segment).unwrap();
        let clean = bytes.clone();
        bytes[100] ^= 0x40;
        fs::write(&segment, &bytes).unwrap();
        let report = check_data_dir(dir.path()).unwrap();
        assert!(!report.is_sound());
        assert!(
            report.problems[0].contains(&segment.display().to_string())
                && report.problems[0].contains("at byte"),
            "{:?}",
            report.problems
        );

        // The last record (the hard state written after the entries) garbled at its end: a
        // torn write, which the node cuts off on start; the entries before it stand.
        let mut torn = clean.clone();
        let end = torn.iter().rposition(|&byte| byte != 0).unwrap();
        torn[end] ^= 0xff;
        fs::write(&segment, &torn).unwrap();
        let report = check_data_dir(dir.path()).unwrap();
        assert_eq!(report.repairable.len(), 1, "{report:?}");
        assert_eq!((report.last_index, report.hard_state), (20, None));
        assert!(report.is_sound(), "{report:?}");
    }

    #[test]
    fn not_a_data_directory_and_one_in_use_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_data_dir(dir.path()).is_err());
        write_log(dir.path(), 1);
        let identity = Identity {
            cluster_id: 7,
            node_id: 1,
        };
        let held = FileStorage::open(dir.path(), identity, StorageOptions::default()).unwrap();
        assert!(matches!(
            check_data_dir(dir.path()),
            Err(StorageError::InUse { .. })
        ));
        drop(held);
        assert!(check_data_dir(dir.path()).is_ok());
    }
}
