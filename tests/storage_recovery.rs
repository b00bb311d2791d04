//! The file store against power cuts: random appends (with overwrites), hard states, syncs,
//! snapshots, and cuts — everything unsynced dropped, or a sync torn at a random byte, or
//! garbage after the last record — always recover to a state that holds everything synced and
//! is exactly what some prefix of the writes produced. Damage that is not a torn tail refuses to
//! start, naming the file and offset.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use proptest::prelude::*;
use ravel::core::{Entry, EntryPayload, HardState, Membership, SnapshotMeta};
use ravel::storage::{FileStorage, Identity, Standing, StorageError, StorageOptions, StoredState};

const IDENTITY: Identity = Identity {
    cluster_id: 7,
    node_id: 1,
};

/// Small segments, so that runs cross many; the file grows by extents of this size too.
const EXTENT: usize = 700;

fn options() -> StorageOptions {
    StorageOptions {
        segment_bytes_max: EXTENT as u64,
        // Entries behind a snapshot, kept in whole segments: compaction keeps some of them.
        retain_entries: 7,
        retain_bytes: 3 * EXTENT as u64,
    }
}

fn open(dir: &Path) -> Result<(FileStorage, StoredState), StorageError> {
    FileStorage::open(dir, IDENTITY, options())
}

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        term,
        index,
        payload: EntryPayload::Command(Bytes::from(format!("command {index} of term {term}"))),
    }
}

/// A write the model replays exactly as recovery does.
#[derive(Clone, Debug)]
enum Write_ {
    Entries(Vec<Entry>),
    HardState(HardState),
}

fn apply(state: &mut StoredState, write: &Write_) {
    match write {
        Write_::HardState(hard_state) => state.hard_state = *hard_state,
        Write_::Entries(entries) => {
            for entry in entries {
                let first = state.snapshot.as_ref().map_or(1, |meta| meta.index + 1);
                if entry.index < first {
                    state.entries.clear();
                    continue;
                }
                state.entries.truncate((entry.index - first) as usize);
                state.entries.push(entry.clone());
            }
        }
    }
}

fn last_index(state: &StoredState) -> u64 {
    state.snapshot.as_ref().map_or(0, |meta| meta.index) + state.entries.len() as u64
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|item| item.unwrap().path())
        .collect();
    paths.sort();
    paths
}

#[derive(Clone, Debug)]
enum Step {
    /// Append `count` entries after rewinding `rewind` entries (an overwrite), in `term`.
    Append {
        rewind: u64,
        count: u64,
        term_bump: bool,
    },
    Vote {
        vote: u64,
    },
    Sync,
    /// Drop the process: unsynced writes vanish.
    PowerCut,
    /// The next sync is cut at this fraction (per mille) of its bytes.
    TornSync {
        per_mille: u64,
    },
    /// Garbage lands after the last record (a torn write of zeros or junk).
    GarbageTail {
        bytes: Vec<u8>,
    },
    /// Snapshot at this fraction (per mille) of the synced log: saved whole, or written by the
    /// store's snapshot writer (as the node does on a thread of its own) and adopted.
    Snapshot {
        per_mille: u64,
        written_elsewhere: bool,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..4u64, 1..6u64, any::<bool>()).prop_map(|(rewind, count, term_bump)| Step::Append { rewind, count, term_bump }),
        1 => (1..4u64).prop_map(|vote| Step::Vote { vote }),
        4 => Just(Step::Sync),
        1 => Just(Step::PowerCut),
        2 => (0..1000u64).prop_map(|per_mille| Step::TornSync { per_mille }),
        1 => proptest::collection::vec(any::<u8>(), 1..40).prop_map(|bytes| Step::GarbageTail { bytes }),
        1 => (0..1000u64, any::<bool>()).prop_map(|(per_mille, written_elsewhere)| Step::Snapshot { per_mille, written_elsewhere }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn power_cuts_never_lose_synced_writes(steps in proptest::collection::vec(step(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let (mut storage, recovered) = open(dir.path()).unwrap();
        prop_assert_eq!(&recovered, &StoredState::default());
        // `synced` is what must survive; `pending` what was written since.
        let mut synced = StoredState::default();
        let mut pending: Vec<Write_> = Vec::new();
        let mut term = 1;
        for step in steps {
            match step {
                Step::Append { rewind, count, term_bump } => {
                    let mut view = synced.clone();
                    pending.iter().for_each(|write| apply(&mut view, write));
                    let floor = view.snapshot.as_ref().map_or(0, |meta| meta.index);
                    let start = last_index(&view).saturating_sub(rewind).max(floor) + 1;
                    if term_bump {
                        term += 1;
                    }
                    let entries: Vec<Entry> = (start..start + count).map(|index| entry(index, term)).collect();
                    storage.append(&entries).unwrap();
                    // One record per entry on disk: a torn sync may keep any prefix of them.
                    pending.extend(entries.into_iter().map(|entry| Write_::Entries(vec![entry])));
                }
                Step::Vote { vote } => {
                    let hard_state = HardState { term, vote: Some(vote), commit: 0 };
                    storage.set_hard_state(hard_state).unwrap();
                    pending.push(Write_::HardState(hard_state));
                }
                Step::Sync => {
                    storage.sync().unwrap();
                    pending.drain(..).for_each(|write| apply(&mut synced, &write));
                }
                Step::PowerCut => {
                    drop(storage);
                    pending.clear();
                    let (reopened, recovered) = open(dir.path()).unwrap();
                    prop_assert_eq!(&recovered, &synced);
                    storage = reopened;
                }
                Step::TornSync { per_mille } => {
                    let before = segments(dir.path());
                    let (active, start) = storage.active_segment();
                    let active = active.to_path_buf();
                    let old_bytes = fs::read(&active).unwrap();
                    storage.sync().unwrap();
                    let end = match storage.active_segment() {
                        (path, end) if path == active => end,
                        _ => fs::metadata(&active).unwrap().len(),
                    };
                    drop(storage);
                    // The crash came inside this sync: a prefix of its bytes reached the disk, and
                    // the next segment (if the sync would have started one) was never created.
                    for extra in segments(dir.path()).into_iter().filter(|path| !before.contains(path)) {
                        fs::remove_file(extra).unwrap();
                    }
                    // After the cut the file holds what it held before (zeros where it grew).
                    // The file grows by whole extents, made durable before records are written
                    // into them, so it has its new size (the one it had before a close cut it
                    // to its records); on odd cuts the crash came while it grew, before any of
                    // the records were written, and it is as it was.
                    let cut = (start + (end - start) * per_mille / 1000) as usize;
                    let mut torn = fs::read(&active).unwrap();
                    torn.resize(torn.len().div_ceil(EXTENT) * EXTENT, 0);
                    for (at, byte) in torn.iter_mut().enumerate().skip(cut) {
                        *byte = old_bytes.get(at).copied().unwrap_or(0);
                    }
                    if per_mille % 2 == 1 && torn.len() > old_bytes.len() {
                        torn = old_bytes.clone();
                    }
                    fs::write(&active, torn).unwrap();
                    let (reopened, recovered) = open(dir.path()).unwrap();
                    // Exactly the state after some prefix of the writes in that sync.
                    let mut candidate = synced.clone();
                    let mut matched = candidate == recovered;
                    for write in &pending {
                        apply(&mut candidate, write);
                        matched |= candidate == recovered;
                    }
                    prop_assert!(matched, "recovered {:?}\nsynced {:?}\npending {:?}", recovered, synced, pending);
                    synced = recovered;
                    pending.clear();
                    storage = reopened;
                }
                Step::GarbageTail { bytes } => {
                    storage.sync().unwrap();
                    pending.drain(..).for_each(|write| apply(&mut synced, &write));
                    let (active, end) = storage.active_segment();
                    let active = active.to_path_buf();
                    drop(storage);
                    // Over the zeros that follow the records (a crash never grows the file: that
                    // would be damage, see `a_cut_or_grown_segment_refuses_to_start`).
                    let room = (fs::metadata(&active).unwrap().len() - end) as usize;
                    OpenOptions::new().write(true).open(&active).unwrap().write_all_at(&bytes[..bytes.len().min(room)], end).unwrap();
                    let (reopened, recovered) = open(dir.path()).unwrap();
                    prop_assert_eq!(&recovered, &synced);
                    storage = reopened;
                }
                Step::Snapshot { per_mille, written_elsewhere } => {
                    storage.sync().unwrap();
                    pending.drain(..).for_each(|write| apply(&mut synced, &write));
                    let floor = synced.snapshot.as_ref().map_or(0, |meta| meta.index);
                    let last = last_index(&synced);
                    if last > floor {
                        let index = floor + 1 + (last - floor - 1) * per_mille / 1000;
                        // The configuration travels with the snapshot.
                        let membership = Membership::with_voters([1, index % 5 + 2]);
                        let meta = SnapshotMeta { index, term: synced.entries[(index - floor - 1) as usize].term, membership, admissions: vec![ravel::core::Admission { node: 1, nonce: index + 1 }] };
                        let before_snapshot = synced.entries.clone();
                        let data = format!("state at {index}");
                        if written_elsewhere {
                            let writer = storage.snapshot_writer();
                            let written = writer.write(meta.clone(), |out| out.write_all(data.as_bytes())).unwrap();
                            storage.adopt_snapshot(written).unwrap();
                        } else {
                            storage.save_snapshot(meta.clone(), data.as_bytes()).unwrap();
                        }
                        // What the log keeps behind the snapshot reads back as it was.
                        for from in index.saturating_sub(10).max(floor + 1)..=index {
                            let kept = storage.entries(from, index).unwrap();
                            let expected = &before_snapshot[(from - floor - 1) as usize..(index - floor) as usize];
                            prop_assert!(kept.is_empty() || kept == expected, "entries {}..={} read back {:?}", from, index, kept);
                        }
                        synced.entries.drain(..(index - floor) as usize);
                        synced.snapshot = Some(meta.clone());
                        let (stored_meta, data) = storage.load_snapshot().unwrap().unwrap();
                        prop_assert_eq!(stored_meta, meta);
                        prop_assert_eq!(data, format!("state at {index}").into_bytes());
                    }
                }
            }
        }
        // Whatever happened, reading back through the index agrees with a fresh recovery.
        storage.sync().unwrap();
        pending.drain(..).for_each(|write| apply(&mut synced, &write));
        let first = synced.snapshot.as_ref().map_or(1, |meta| meta.index + 1);
        if !synced.entries.is_empty() {
            prop_assert_eq!(storage.entries(first, last_index(&synced)).unwrap(), synced.entries.clone());
        }
        drop(storage);
        let (_, recovered) = open(dir.path()).unwrap();
        prop_assert_eq!(recovered, synced);
    }
}

#[test]
fn damage_before_the_tail_refuses_to_start_and_names_the_place() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = open(dir.path()).unwrap();
    storage
        .append(&[entry(1, 1), entry(2, 1), entry(3, 1)])
        .unwrap();
    storage.sync().unwrap();
    drop(storage);
    let segment = segments(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&segment).unwrap();
    bytes[20] ^= 0xff;
    fs::write(&segment, bytes).unwrap();
    let error = open(dir.path()).err().expect("refused");
    let StorageError::Corrupt { path, offset, .. } = &error else {
        panic!("expected corruption, got {error}");
    };
    assert_eq!(path, &segment);
    assert_eq!(*offset, 0);
    let message = error.to_string();
    assert!(
        message.contains("refuses to start") && message.contains("join"),
        "{message}"
    );
}

#[test]
fn a_data_directory_of_another_node_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()).unwrap());
    let other = Identity {
        cluster_id: 7,
        node_id: 2,
    };
    let error = FileStorage::open(dir.path(), other, options())
        .err()
        .expect("refused");
    assert!(
        matches!(
            error,
            StorageError::WrongIdentity {
                found_node: 1,
                node: 2,
                ..
            }
        ),
        "{error}"
    );
}

/// The one snapshot file in data directory `dir`.
fn only_snapshot_file(dir: &Path) -> PathBuf {
    fs::read_dir(dir.join("snapshots"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
}

#[test]
fn a_damaged_snapshot_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = open(dir.path()).unwrap();
    storage.append(&[entry(1, 1), entry(2, 1)]).unwrap();
    storage.sync().unwrap();
    storage
        .save_snapshot(
            SnapshotMeta {
                index: 2,
                term: 1,
                membership: Membership::with_voters([1]),
                admissions: Vec::new(),
            },
            b"state",
        )
        .unwrap();
    drop(storage);
    let snapshot = only_snapshot_file(dir.path());
    let mut bytes = fs::read(&snapshot).unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    fs::write(&snapshot, bytes).unwrap();
    assert!(matches!(
        open(dir.path()),
        Err(StorageError::Corrupt { .. })
    ));
}

/// A follower's chunks are read from the snapshot's file, range by range: together they are
/// the data, only the last says so; a chunk of another snapshot, or past the end, is none; a
/// file damaged after it was opened is refused before any chunk is served from it.
#[test]
fn snapshot_chunks_are_read_from_the_file_and_a_damaged_file_serves_none() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = open(dir.path()).unwrap();
    storage.append(&[entry(1, 1), entry(2, 1)]).unwrap();
    storage.sync().unwrap();
    let meta = SnapshotMeta {
        index: 2,
        term: 1,
        membership: Membership::with_voters([1]),
        admissions: Vec::new(),
    };
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    storage.save_snapshot(meta.clone(), &data).unwrap();
    let mut read = Vec::new();
    let mut offset = 0u64;
    loop {
        let (chunk, last) = storage
            .read_snapshot_chunk(&meta, offset, 1 << 20)
            .unwrap()
            .expect("a chunk of the latest snapshot");
        assert!(chunk.len() <= 1 << 20);
        offset += chunk.len() as u64;
        read.extend_from_slice(&chunk);
        if last {
            break;
        }
    }
    assert!(read == data, "the chunks are not the data");
    assert_eq!(
        storage
            .read_snapshot_chunk(&meta, data.len() as u64, 10)
            .unwrap(),
        Some((Vec::new(), true))
    );
    assert_eq!(
        storage
            .read_snapshot_chunk(&meta, data.len() as u64 + 1, 10)
            .unwrap(),
        None
    );
    let other = SnapshotMeta {
        index: 1,
        ..meta.clone()
    };
    assert_eq!(storage.read_snapshot_chunk(&other, 0, 10).unwrap(), None);

    // Damaged on disk while the store is open, before it was served again (a new store).
    drop(storage);
    let (mut storage, _) = open(dir.path()).unwrap();
    let snapshot = only_snapshot_file(dir.path());
    let file = OpenOptions::new().write(true).open(&snapshot).unwrap();
    file.write_all_at(&[0xff], 2_000_000).unwrap();
    drop(file);
    assert!(matches!(
        storage.read_snapshot_chunk(&meta, 0, 10),
        Err(StorageError::Corrupt { .. })
    ));
}

#[test]
fn the_active_segment_is_zero_filled_ahead_and_closed_segments_hold_records_only() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = open(dir.path()).unwrap();
    storage.append(&[entry(1, 1)]).unwrap();
    storage.sync().unwrap();
    let (active, end) = storage.active_segment();
    let bytes = fs::read(active).unwrap();
    assert!(
        bytes.len() as u64 > end,
        "no space filled ahead of the records"
    );
    assert!(bytes[end as usize..].iter().all(|&byte| byte == 0));
    for index in 2..=100 {
        storage.append(&[entry(index, 1)]).unwrap();
        storage.sync().unwrap();
    }
    let all = segments(dir.path());
    assert!(all.len() > 2, "expected the log to span segments");
    drop(storage);
    let (_, recovered) = open(dir.path()).unwrap();
    assert_eq!(recovered.entries.len(), 100);
    for closed in &all[..all.len() - 1] {
        let bytes = fs::read(closed).unwrap();
        assert_ne!(bytes.last(), Some(&0), "{closed:?} ends in zeros");
    }
}

/// A node that stopped after taking writes, with its active segment then cut short by hand (to
/// half its length, or by its last 100 bytes) or its last segment deleted, must refuse to start:
/// its log would be shorter than what it acknowledged. (Before the check, it started and served
/// without the last writes and without a word.)
#[test]
fn a_log_cut_short_outside_ravel_refuses_to_start() {
    type Cut = fn(&Path);
    let cuts: [(&str, Cut); 4] = [
        ("half of the active segment", |path| {
            let len = fs::metadata(path).unwrap().len();
            OpenOptions::new()
                .write(true)
                .open(path)
                .unwrap()
                .set_len(len / 2)
                .unwrap();
        }),
        ("the last 100 bytes", |path| {
            let len = fs::metadata(path).unwrap().len();
            OpenOptions::new()
                .write(true)
                .open(path)
                .unwrap()
                .set_len(len - 100)
                .unwrap();
        }),
        ("bytes added after its end", |path| {
            let len = fs::metadata(path).unwrap().len();
            OpenOptions::new()
                .write(true)
                .open(path)
                .unwrap()
                .write_all_at(b"junk", len)
                .unwrap();
        }),
        ("the whole active segment", |path| {
            fs::remove_file(path).unwrap()
        }),
    ];
    for (what, cut) in cuts {
        let dir = tempfile::tempdir().unwrap();
        let (mut storage, _) = open(dir.path()).unwrap();
        for index in 1..=60 {
            storage.append(&[entry(index, 1)]).unwrap();
            storage.sync().unwrap();
        }
        let (active, _) = storage.active_segment();
        let active = active.to_path_buf();
        drop(storage);
        assert!(segments(dir.path()).len() > 1, "the log spans segments");
        cut(&active);
        match open(dir.path()) {
            Err(error @ StorageError::Truncated { .. }) => {
                let text = error.to_string();
                assert!(text.contains("--join"), "says how to rejoin: {text}");
            }
            Err(other) => panic!("cutting {what}: refused for another reason: {other}"),
            Ok((_, recovered)) => panic!(
                "cutting {what}: started with {} of 60 entries",
                recovered.entries.len()
            ),
        }
    }
}

/// Two processes on one directory would interleave their logs: the second is refused while the
/// first holds it, and may open it once the first closed it.
#[test]
fn a_directory_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut first, _) = open(dir.path()).unwrap();
    first.append(&[entry(1, 1)]).unwrap();
    first.sync().unwrap();
    match open(dir.path()) {
        Err(error @ StorageError::InUse { .. }) => {
            assert!(
                error.to_string().contains("--data-dir of its own"),
                "{error}"
            );
        }
        other => panic!(
            "a second open of a directory in use: {:?}",
            other.map(|(_, s)| s)
        ),
    }
    drop(first);
    let (_, recovered) = open(dir.path()).unwrap();
    assert_eq!(recovered.entries, vec![entry(1, 1)]);
}

/// Where the node stands in its cluster is recorded durably and read back on every start; a
/// directory from before it was recorded reads as unknown.
#[test]
fn the_standing_is_recorded_durably() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = open(dir.path()).unwrap();
    assert_eq!(storage.standing(), None);
    storage.record_standing(Standing::Joining).unwrap();
    drop(storage);
    let (mut storage, _) = open(dir.path()).unwrap();
    assert_eq!(storage.standing(), Some(Standing::Joining));
    storage.record_standing(Standing::Admitted).unwrap();
    drop(storage);
    let (storage, _) = open(dir.path()).unwrap();
    assert_eq!(storage.standing(), Some(Standing::Admitted));
    drop(storage);
    // A damaged standing record is refused, not taken for "unknown".
    let meta = dir.path().join("ravel.meta");
    let mut bytes = fs::read(&meta).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&meta, bytes).unwrap();
    assert!(matches!(
        open(dir.path()),
        Err(StorageError::Corrupt { .. })
    ));
}

fn snapshot_at(index: u64) -> SnapshotMeta {
    SnapshotMeta {
        index,
        term: 1,
        membership: Membership::with_voters([1]),
        admissions: Vec::new(),
    }
}

/// A snapshot written while the store moved on is adopted only if it is newer than the one
/// the store holds by then (a leader's snapshot may have been installed meanwhile); an older
/// one is dropped, its file with it.
#[test]
fn a_snapshot_written_elsewhere_is_adopted_unless_a_newer_one_came_first() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = open(dir.path()).unwrap();
    storage
        .append(&(1..=9).map(|index| entry(index, 1)).collect::<Vec<_>>())
        .unwrap();
    storage.sync().unwrap();
    let writer = storage.snapshot_writer();
    let older = writer
        .write(snapshot_at(4), |out| out.write_all(b"state at 4"))
        .unwrap();
    assert_eq!(older.bytes, 10);
    let newer = writer
        .write(snapshot_at(6), |out| out.write_all(b"state at 6"))
        .unwrap();
    storage.adopt_snapshot(newer).unwrap();
    storage.adopt_snapshot(older).unwrap();
    assert_eq!(
        storage.load_snapshot().unwrap(),
        Some((snapshot_at(6), b"state at 6".to_vec()))
    );
    let files: Vec<_> = fs::read_dir(dir.path().join("snapshots"))
        .unwrap()
        .map(|item| item.unwrap().file_name())
        .collect();
    assert_eq!(files.len(), 1, "the older file is gone: {files:?}");
    assert_eq!(storage.entries(7, 9).unwrap().len(), 3);
    drop(storage);
    let (_, recovered) = open(dir.path()).unwrap();
    assert_eq!(recovered.snapshot, Some(snapshot_at(6)));
    assert_eq!(recovered.entries.first().map(|entry| entry.index), Some(7));
}

/// A crash while a snapshot is written leaves its file unfinished, under a name that is not a
/// snapshot's: the store starts from the snapshot before it and removes the leftover.
#[test]
fn a_snapshot_left_unfinished_by_a_crash_is_removed_on_start() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = open(dir.path()).unwrap();
    storage
        .append(&(1..=5).map(|index| entry(index, 1)).collect::<Vec<_>>())
        .unwrap();
    storage.sync().unwrap();
    storage
        .save_snapshot(snapshot_at(2), b"state at 2")
        .unwrap();
    // The writer fails half way through (as a crash would leave it, but for the name).
    let failed = storage.snapshot_writer().write(snapshot_at(4), |out| {
        out.write_all(b"half a st")?;
        Err(std::io::Error::other("the disk is full"))
    });
    assert!(failed.is_err());
    // And one cut by a crash: written, never adopted.
    let cut = storage
        .snapshot_writer()
        .write(snapshot_at(5), |out| out.write_all(b"state at 5"))
        .unwrap();
    drop(cut);
    drop(storage);
    let (storage, recovered) = open(dir.path()).unwrap();
    assert_eq!(recovered.snapshot, Some(snapshot_at(2)));
    assert_eq!(recovered.entries.len(), 3);
    assert_eq!(
        storage.load_snapshot().unwrap(),
        Some((snapshot_at(2), b"state at 2".to_vec()))
    );
    let files: Vec<_> = fs::read_dir(dir.path().join("snapshots"))
        .unwrap()
        .map(|item| item.unwrap().file_name())
        .collect();
    assert_eq!(files.len(), 1, "leftovers are removed: {files:?}");
}

/// A snapshot this node takes keeps the log behind it within the retention (whole segments, at
/// most so many entries and bytes), readable for followers that fell behind; older segments go.
#[test]
fn the_log_behind_a_snapshot_is_kept_within_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    let options = StorageOptions {
        segment_bytes_max: EXTENT as u64,
        retain_entries: 40,
        retain_bytes: 10 * EXTENT as u64,
    };
    let (mut storage, _) = FileStorage::open(dir.path(), IDENTITY, options.clone()).unwrap();
    let all: Vec<Entry> = (1..=300).map(|index| entry(index, 1)).collect();
    for chunk in all.chunks(10) {
        storage.append(chunk).unwrap();
        storage.sync().unwrap();
    }
    storage
        .save_snapshot(snapshot_at(250), b"state at 250")
        .unwrap();
    // Some entries behind the snapshot are still there: at most 40, in whole segments.
    let first_kept = (1..=250)
        .find(|&from| !storage.entries(from, 250).unwrap().is_empty())
        .expect("some entries are kept behind the snapshot");
    assert!(
        (210..=240).contains(&first_kept),
        "kept from {first_kept}: about 40 entries, whole segments"
    );
    assert_eq!(
        storage.entries(first_kept, 300).unwrap(),
        all[first_kept as usize - 1..].to_vec()
    );
    assert!(storage.entries(first_kept - 1, 260).unwrap().is_empty());
    let segments_on_disk = segments(dir.path()).len();
    // With no retention, every segment the snapshot covers goes.
    drop(storage);
    let (mut storage, _) = FileStorage::open(
        dir.path(),
        IDENTITY,
        StorageOptions {
            retain_entries: 0,
            ..options
        },
    )
    .unwrap();
    storage.append(&[entry(301, 1)]).unwrap();
    storage.sync().unwrap();
    storage
        .save_snapshot(snapshot_at(300), b"state at 300")
        .unwrap();
    assert!(storage.entries(300, 301).unwrap().is_empty());
    assert_eq!(storage.entries(301, 301).unwrap(), vec![entry(301, 1)]);
    assert!(segments(dir.path()).len() < segments_on_disk);
}
