//! Throughput of the file store with group commit: W writer threads each append one 256-byte
//! entry at a time and wait until it is durable; one committer thread takes everything queued,
//! appends it, and syncs once. Printed next to the raw fdatasync rate of the same disk, measured
//! by this program on a plain file, and the store driven from a single thread (no handoff).
//!
//! Run: `cargo bench -p ravel --bench storage_throughput -- [--writers 1,64] [--seconds 3] [--dir PATH]`

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ravel::core::{Entry, EntryPayload};
use ravel::storage::{FileStorage, Identity, StorageOptions};

const ENTRY_BYTES: usize = 256;

/// fdatasyncs per second of a plain file, each after a small write.
fn raw_fsync_rate(dir: &Path, duration: Duration) -> f64 {
    let path = dir.join("raw-fsync");
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("open");
    let block = [0u8; ENTRY_BYTES];
    let begin = Instant::now();
    let mut syncs = 0u64;
    while begin.elapsed() < duration {
        file.write_all(&block).expect("write");
        file.sync_data().expect("fdatasync");
        syncs += 1;
    }
    syncs as f64 / begin.elapsed().as_secs_f64()
}

/// Appends and syncs one entry at a time in this thread: the store's own cost over the raw rate.
fn same_thread(dir: &Path, duration: Duration) -> f64 {
    let identity = Identity {
        cluster_id: 1,
        node_id: 1,
    };
    let (mut storage, _) =
        FileStorage::open(dir, identity, StorageOptions::default()).expect("open store");
    let payload = Bytes::from(vec![7u8; ENTRY_BYTES]);
    let begin = Instant::now();
    let mut index = 0;
    while begin.elapsed() < duration {
        index += 1;
        let entry = Entry {
            term: 1,
            index,
            payload: EntryPayload::Command(payload.clone()),
        };
        storage.append(&[entry]).expect("append");
        storage.sync().expect("sync");
    }
    index as f64 / begin.elapsed().as_secs_f64()
}

/// A writer's request: its entry's payload and where to say it is durable.
type Request = (Bytes, mpsc::Sender<()>);

fn group_commit(dir: &Path, writers: usize, duration: Duration) -> (f64, f64) {
    let identity = Identity {
        cluster_id: 1,
        node_id: 1,
    };
    let (mut storage, _) =
        FileStorage::open(dir, identity, StorageOptions::default()).expect("open store");
    let (requests, queue) = mpsc::channel::<Request>();
    let begin = Instant::now();
    let deadline = begin + duration;
    let handles: Vec<_> = (0..writers)
        .map(|_| {
            let requests = requests.clone();
            std::thread::spawn(move || {
                let payload = Bytes::from(vec![7u8; ENTRY_BYTES]);
                let (done, durable) = mpsc::channel();
                let mut appended = 0u64;
                while Instant::now() < deadline {
                    requests
                        .send((payload.clone(), done.clone()))
                        .expect("committer runs");
                    durable.recv().expect("committer answers");
                    appended += 1;
                }
                appended
            })
        })
        .collect();
    drop(requests);
    let mut next_index = 1;
    let mut syncs = 0u64;
    // The committer: block for one request, take every other queued one, one sync for all.
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        batch.extend(queue.try_iter());
        let entries: Vec<Entry> = batch
            .iter()
            .map(|(payload, _)| {
                let entry = Entry {
                    term: 1,
                    index: next_index,
                    payload: EntryPayload::Command(payload.clone()),
                };
                next_index += 1;
                entry
            })
            .collect();
        storage.append(&entries).expect("append");
        storage.sync().expect("sync");
        syncs += 1;
        for (_, done) in batch {
            let _ = done.send(());
        }
    }
    let appended: u64 = handles
        .into_iter()
        .map(|handle| handle.join().expect("writer ran"))
        .sum();
    let elapsed = begin.elapsed().as_secs_f64();
    (appended as f64 / elapsed, syncs as f64 / elapsed)
}

fn main() {
    let mut writers_list = vec![1usize, 64];
    let mut seconds = 3.0f64;
    let mut base: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--writers" => {
                writers_list = value()
                    .split(',')
                    .map(|part| part.parse().expect("integers"))
                    .collect()
            }
            "--seconds" => seconds = value().parse().expect("a number"),
            "--dir" => base = Some(PathBuf::from(value())),
            "--bench" => {}
            other => eprintln!("ignoring unknown argument {other}"),
        }
    }
    let duration = Duration::from_secs_f64(seconds);
    let scratch = match &base {
        Some(base) => tempfile::tempdir_in(base),
        None => tempfile::tempdir_in("."),
    }
    .expect("a scratch directory");
    println!(
        "storage_throughput: {ENTRY_BYTES}-byte entries, in {}",
        scratch.path().display()
    );
    let raw = raw_fsync_rate(scratch.path(), duration);
    println!(
        "{:>24} {:>12.0} fdatasync/s (write 256 bytes, fdatasync)",
        "raw disk", raw
    );
    let direct = same_thread(&scratch.path().join("store-direct"), duration);
    println!(
        "{:>24} {:>12.0} appends/s (append, sync, in one thread)",
        "store, no handoff", direct
    );
    println!(
        "{:>8} {:>14} {:>12} {:>16}",
        "writers", "appends/s", "fsyncs/s", "appends/fsync"
    );
    for writers in writers_list {
        let dir = scratch.path().join(format!("store-{writers}"));
        let (appends, syncs) = group_commit(&dir, writers, duration);
        println!(
            "{writers:>8} {appends:>14.0} {syncs:>12.0} {:>16.1}",
            appends / syncs.max(1.0)
        );
    }
}
