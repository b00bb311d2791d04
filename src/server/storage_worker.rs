//! Runs the node's storage off the event loop, with group commit: while one batch is being
//! written and fsynced, the next accumulates, and every persist in a batch shares one fsync.
//! Completions come back to the event loop in the order the operations were sent.

use bytes::Bytes;
use tokio::sync::mpsc;

use super::metrics::Metrics;
use super::storage_queue::StorageOps;
use crate::core::{
    bounded_entries, Entry, HardState, Input, LogIndex, NodeId, PersistId, SnapshotMeta,
};
use crate::replica::SnapshotImage;
use crate::storage::{SnapshotWriter, Standing, Storage, WrittenSnapshot};

/// Operations a batch takes at most, so one slow fsync does not grow a batch without bound.
const BATCH_OPERATIONS_MAX: usize = 4096;

/// What the event loop asks of storage, in the core's order.
#[derive(Debug)]
pub enum StorageOp {
    Persist {
        id: PersistId,
        hard_state: Option<HardState>,
        entries: Vec<Entry>,
        sync: bool,
    },
    /// A snapshot this node took: written on a thread of its own (encoded straight into its
    /// file: neither the event loop nor the log's fsyncs wait for a large store to be written),
    /// then adopted here (`AdoptSnapshot`). Chunks for followers are read back from the file
    /// (`ReadSnapshotChunk`), so a node does not keep a second copy of its state in memory.
    SaveSnapshot {
        meta: SnapshotMeta,
        image: Box<dyn SnapshotImage>,
    },
    /// A snapshot written for `SaveSnapshot` (or why it could not be): make it the store's,
    /// compact the log and answer `SnapshotSaved`.
    AdoptSnapshot(Result<WrittenSnapshot, String>),
    /// A snapshot received from the leader: a persist in order with the others.
    Install {
        id: PersistId,
        meta: SnapshotMeta,
        data: Bytes,
    },
    /// A chunk of the saved snapshot for a follower.
    ReadSnapshotChunk {
        to: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        bytes_max: usize,
    },
    /// Entries `from..=through` for a follower the core no longer holds them for in memory,
    /// cut to `bytes_max` (see `core::bounded_entries`).
    ReadEntries {
        peer: NodeId,
        from: LogIndex,
        through: LogIndex,
        bytes_max: usize,
    },
    /// Where the node now stands in its cluster (admitted by the leader), recorded durably.
    RecordStanding(Standing),
    /// The cluster id a joiner learned, recorded durably.
    RecordClusterId(u64),
}

impl StorageOp {
    /// The bytes this operation holds while it waits: entries' and snapshots' own data (a
    /// snapshot this node takes is counted as it is encoded, by the worker).
    pub fn size_bytes(&self) -> usize {
        match self {
            StorageOp::Persist { entries, .. } => entries.iter().map(Entry::size_bytes).sum(),
            StorageOp::Install { data, .. } => data.len(),
            StorageOp::SaveSnapshot { .. }
            | StorageOp::AdoptSnapshot(_)
            | StorageOp::ReadEntries { .. }
            | StorageOp::ReadSnapshotChunk { .. }
            | StorageOp::RecordStanding(_)
            | StorageOp::RecordClusterId(_) => 0,
        }
    }
}

/// What storage reports back.
#[derive(Debug)]
pub enum StorageDone {
    /// Inputs for the core, in order (`Persisted`, `SnapshotSaved`, `SnapshotChunkRead`).
    Inputs(Vec<Input>),
    /// Storage failed and stopped: the node must stop acknowledging anything (fail-stop).
    Failed(String),
}

/// Starts the worker; it ends when `ops` closes or storage fails.
pub fn spawn(
    storage: Box<dyn Storage>,
    ops: StorageOps,
    done: mpsc::UnboundedSender<StorageDone>,
    metrics: Metrics,
) -> tokio::task::JoinHandle<()> {
    #[cfg(not(madsim))]
    return spawn_thread(storage, ops, done, metrics);
    #[cfg(madsim)]
    tokio::spawn(run_simulated(storage, ops, done, metrics))
}

/// A thread of its own, which blocks in each fsync: handing every batch to tokio's blocking
/// pool instead cost the leader ~2.5 % of its CPU (a task, a lock and a wake-up per batch).
#[cfg(not(madsim))]
fn spawn_thread(
    mut storage: Box<dyn Storage>,
    mut ops: StorageOps,
    done: mpsc::UnboundedSender<StorageDone>,
    metrics: Metrics,
) -> tokio::task::JoinHandle<()> {
    let (finished, on_finish) = tokio::sync::oneshot::channel::<()>();
    let report_to = done.clone();
    let spawned = std::thread::Builder::new()
        .name("ravel-storage".to_string())
        .spawn(move || {
            let mut batch = Vec::new();
            while ops.blocking_recv_many(&mut batch, BATCH_OPERATIONS_MAX) > 0 {
                let outcome = write(storage.as_mut(), std::mem::take(&mut batch), &ops, &metrics)
                    .and_then(|written| complete(storage.as_mut(), written));
                let (log_bytes, log_segments) = storage.log_size();
                metrics.observe_log_size(log_bytes, log_segments);
                if !report(outcome, &done, &metrics) {
                    break;
                }
            }
            let _ = finished.send(());
        });
    let failure = match spawned {
        Ok(_) => "the storage thread stopped (panicked)".to_string(),
        Err(error) => format!("cannot start the storage thread: {error}"),
    };
    // Ends with the thread; a thread that panicked, or never started, never said it finished.
    tokio::spawn(async move {
        if on_finish.await.is_err() {
            let _ = report_to.send(StorageDone::Failed(failure));
        }
    })
}

/// Under simulation the disk takes time to sync, so a host killed meanwhile loses (or tears)
/// writes that were written but not synced. There are no real threads: `spawn_blocking` runs
/// the closure as an ordinary task (it warns, as blocking is not simulated; the disk never
/// blocks).
#[cfg(madsim)]
async fn run_simulated(
    mut storage: Box<dyn Storage>,
    mut ops: StorageOps,
    done: mpsc::UnboundedSender<StorageDone>,
    metrics: Metrics,
) {
    let mut batch = Vec::new();
    loop {
        if ops.recv_many(&mut batch, BATCH_OPERATIONS_MAX).await == 0 {
            return;
        }
        let written = write(storage.as_mut(), std::mem::take(&mut batch), &ops, &metrics);
        tokio::time::sleep(simulated_sync_time()).await;
        #[allow(deprecated)]
        let joined = tokio::task::spawn_blocking(move || {
            let outcome = written.and_then(|written| complete(storage.as_mut(), written));
            (storage, outcome)
        })
        .await;
        let (returned, outcome) = match joined {
            Ok(result) => result,
            Err(error) => {
                let _ = done.send(StorageDone::Failed(format!("storage task failed: {error}")));
                return;
            }
        };
        storage = returned;
        let (log_bytes, log_segments) = storage.log_size();
        metrics.observe_log_size(log_bytes, log_segments);
        if !report(outcome, &done, &metrics) {
            return;
        }
    }
}

/// Passes a batch's outcome to the event loop; false when the worker must stop (storage failed,
/// or the loop is gone).
fn report(
    outcome: Result<Completed, String>,
    done: &mpsc::UnboundedSender<StorageDone>,
    metrics: &Metrics,
) -> bool {
    match outcome {
        Ok((inputs, synced)) => {
            if let Some(Synced { entries, seconds }) = synced {
                metrics.synced(entries, seconds);
            }
            done.send(StorageDone::Inputs(inputs)).is_ok()
        }
        Err(message) => {
            let _ = done.send(StorageDone::Failed(message));
            false
        }
    }
}

/// How long a simulated fsync takes: mostly 0.2-3.2 ms, and one in ten a slow 5-40 ms, as real
/// disks stall now and then. The slow ones outlast a network round trip, so an acknowledgement
/// sent before its write is durable (a classic bug) reaches the leader in time to matter.
#[cfg(madsim)]
fn simulated_sync_time() -> std::time::Duration {
    let micros = if madsim::rand::random::<f64>() < 0.1 {
        5_000 + madsim::rand::random::<u32>() % 35_000
    } else {
        200 + madsim::rand::random::<u32>() % 3_000
    };
    std::time::Duration::from_micros(u64::from(micros))
}

/// Writes snapshot `meta` with `writer` away from the worker, and hands the result back to it
/// through its queue: on a thread of its own, or under simulation as a task that takes a while.
fn write_snapshot_elsewhere(
    writer: SnapshotWriter,
    meta: SnapshotMeta,
    image: Box<dyn SnapshotImage>,
    ops: &StorageOps,
    metrics: Metrics,
) {
    // The loop is gone if there is no sender: nothing waits for the snapshot.
    let Some(queue) = ops.sender() else {
        return;
    };
    let write = move || {
        let index = meta.index;
        // tokio's clock: simulated under madsim, like every other time the node measures.
        let started = tokio::time::Instant::now();
        let written = writer
            .write(meta, |out| image.write_to(out))
            .map_err(|error| format!("cannot write the snapshot at index {index}: {error}"));
        if let Ok(written) = &written {
            let seconds = started.elapsed().as_secs_f64();
            metrics.snapshot_written(written.bytes, seconds);
            tracing::info!(
                index,
                bytes = written.bytes,
                ms = (seconds * 1000.0) as u64,
                "snapshot written"
            );
        }
        // The worker is gone if this fails; nothing waits for the snapshot then.
        let _ = queue.send(StorageOp::AdoptSnapshot(written));
    };
    #[cfg(not(madsim))]
    {
        let spawned = std::thread::Builder::new()
            .name("ravel-snapshot".to_string())
            .spawn(move || {
                run_in_background();
                write()
            });
        if let (Err(error), Some(queue)) = (spawned, ops.sender()) {
            let failed = format!("cannot start a thread to write a snapshot: {error}");
            let _ = queue.send(StorageOp::AdoptSnapshot(Err(failed)));
        }
    }
    #[cfg(madsim)]
    {
        tokio::spawn(async move {
            tokio::time::sleep(simulated_snapshot_time()).await;
            write();
        });
    }
}

/// Lowers the calling thread's CPU priority (nice 10) and its disk priority (best effort, the
/// lowest level): writing a snapshot is background work, and on a machine as busy as its cores
/// it must not take them from the event loops and the log's fsyncs. Best effort: a system that
/// refuses leaves the thread as it was.
#[cfg(not(madsim))]
fn run_in_background() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on the calling thread (0 / its own tid); no memory is shared.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
        // ioprio_set(IOPRIO_WHO_PROCESS, tid, class best-effort (2) << 13 | level 7).
        const IOPRIO_WHO_PROCESS: libc::c_int = 1;
        const BEST_EFFORT_LOWEST: libc::c_int = (2 << 13) | 7;
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            tid,
            BEST_EFFORT_LOWEST,
        );
    }
}

/// How long a simulated snapshot takes to write: up to a few heartbeats, so that the log moves
/// on, snapshots arrive from the leader and nodes crash while one is being written.
#[cfg(madsim)]
fn simulated_snapshot_time() -> std::time::Duration {
    std::time::Duration::from_micros(u64::from(madsim::rand::random::<u32>() % 300_000))
}

/// A batch written but maybe not yet synced.
struct Written {
    inputs: Vec<Input>,
    persisted: Option<PersistId>,
    needs_sync: bool,
    entries: usize,
}

/// Carries out every write of a batch (a persist is reported only after the fsync that covers
/// it: see [`complete`]).
fn write(
    storage: &mut dyn Storage,
    operations: Vec<StorageOp>,
    ops: &StorageOps,
    metrics: &Metrics,
) -> Result<Written, String> {
    let mut inputs = Vec::new();
    let mut persisted: Option<PersistId> = None;
    let mut needs_sync = false;
    let mut written_entries = 0;
    for operation in operations {
        match operation {
            StorageOp::Persist {
                id,
                hard_state,
                entries,
                sync,
            } => {
                written_entries += entries.len();
                if !entries.is_empty() {
                    storage
                        .append(&entries)
                        .map_err(|error| error.to_string())?;
                }
                if let Some(hard_state) = hard_state {
                    storage
                        .set_hard_state(hard_state)
                        .map_err(|error| error.to_string())?;
                }
                needs_sync |= sync;
                persisted = Some(id);
            }
            StorageOp::SaveSnapshot { meta, image } => {
                let writer = storage.snapshot_writer();
                write_snapshot_elsewhere(writer, meta, image, ops, metrics.clone());
            }
            StorageOp::AdoptSnapshot(written) => {
                let written = written?;
                let meta = written.meta.clone();
                storage
                    .adopt_snapshot(written)
                    .map_err(|error| error.to_string())?;
                // Also when a newer snapshot was installed meanwhile: the core learns that
                // its request is over.
                inputs.push(Input::SnapshotSaved { meta });
            }
            StorageOp::Install { id, meta, data } => {
                let (index, bytes) = (meta.index, data.len());
                // Saving a snapshot syncs the log written before it, so earlier persists are
                // durable too.
                storage
                    .save_snapshot(meta, &data)
                    .map_err(|error| error.to_string())?;
                tracing::info!(index, bytes, "snapshot installed from the leader");
                persisted = Some(id);
            }
            StorageOp::RecordStanding(standing) => storage
                .record_standing(standing)
                .map_err(|error| error.to_string())?,
            StorageOp::RecordClusterId(cluster_id) => storage
                .record_cluster_id(cluster_id)
                .map_err(|error| error.to_string())?,
            StorageOp::ReadEntries {
                peer,
                from,
                through,
                bytes_max,
            } => {
                // Entries the log no longer holds (behind its retention) read as none.
                let entries = storage
                    .entries(from, through)
                    .map_err(|error| error.to_string())?;
                inputs.push(Input::EntriesRead {
                    peer,
                    from,
                    entries: bounded_entries(entries, bytes_max),
                });
            }
            StorageOp::ReadSnapshotChunk {
                to,
                meta,
                offset,
                bytes_max,
            } => {
                let chunk = storage
                    .read_snapshot_chunk(&meta, offset, bytes_max)
                    .map_err(|error| error.to_string())?;
                if let Some((data, done)) = chunk {
                    inputs.push(Input::SnapshotChunkRead {
                        to,
                        meta,
                        offset,
                        data: Bytes::from(data),
                        done,
                    });
                }
            }
        }
    }
    Ok(Written {
        inputs,
        persisted,
        needs_sync,
        entries: written_entries,
    })
}

/// A batch's completions, and what its fsync did.
type Completed = (Vec<Input>, Option<Synced>);

/// What one fsync made durable, and how long the fsync alone took.
struct Synced {
    entries: usize,
    seconds: f64,
}

/// One fsync for the whole batch if any write needs it, then the completions (and what the
/// fsync did, if there was one).
fn complete(storage: &mut dyn Storage, written: Written) -> Result<Completed, String> {
    let Written {
        mut inputs,
        persisted,
        needs_sync,
        entries,
    } = written;
    let mut synced = None;
    if needs_sync {
        let started = tokio::time::Instant::now();
        storage.sync().map_err(|error| error.to_string())?;
        synced = Some(Synced {
            entries,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    if let Some(id) = persisted {
        inputs.insert(0, Input::Persisted { id });
    }
    Ok((inputs, synced))
}
