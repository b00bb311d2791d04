//! The queue from the event loop to the storage worker, with a limit on what waits in it.
//!
//! The loop never blocks on the disk (it must keep answering ticks and completions), so it hands
//! operations over without waiting. What keeps the queue from growing while the disk is slow or
//! stalled is the loop itself: it takes no new requests or peer messages while
//! [`STORAGE_QUEUE_BYTES_MAX`] bytes of entries or [`STORAGE_QUEUE_OPS_MAX`] operations wait here
//! ([`StorageQueue::has_room`]). The requests then wait in the loop's bounded request queue, and
//! once that is full clients are told the node is overloaded — back-pressure from the disk to the
//! clients, with memory bounded on the way. (The core merges what one loop iteration asks to
//! persist into one operation, so it is the bytes, not the operations, that grow with the load.)
//!
//! The bound is soft by at most one loop iteration's worth (what the requests taken before the
//! queue filled produce).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::storage_worker::StorageOp;

/// Operations that may wait for the storage worker before the loop stops taking new work. The
/// worker takes up to 4,096 operations per batch, so a disk that keeps up never sees the limit.
pub const STORAGE_QUEUE_OPS_MAX: usize = 1024;

/// Bytes of entries and snapshots that may wait for the storage worker before the loop stops
/// taking new work: about three seconds of writes at this machine's best rate.
pub const STORAGE_QUEUE_BYTES_MAX: usize = 64 << 20;

/// A new queue: the loop's end and the worker's.
pub fn storage_queue() -> (StorageQueue, StorageOps) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let queued = Arc::new(Queued::default());
    (
        StorageQueue {
            sender: sender.clone(),
            queued: queued.clone(),
        },
        StorageOps {
            weak_sender: sender.downgrade(),
            receiver,
            queued,
        },
    )
}

/// The event loop's end.
pub struct StorageQueue {
    sender: mpsc::UnboundedSender<StorageOp>,
    queued: Arc<Queued>,
}

/// What waits in the queue: operations, and the bytes they carry.
#[derive(Default)]
struct Queued {
    ops: AtomicUsize,
    bytes: AtomicUsize,
}

impl StorageQueue {
    /// Hands `op` to the worker; false if the worker has stopped (the loop learns why from the
    /// worker's last report).
    pub fn send(&self, op: StorageOp) -> bool {
        self.queued.ops.fetch_add(1, Ordering::Relaxed);
        self.queued
            .bytes
            .fetch_add(op.size_bytes(), Ordering::Relaxed);
        self.sender.send(op).is_ok()
    }

    /// Whether the loop may take new work: less than both limits waits.
    pub fn has_room(&self) -> bool {
        let (ops, bytes) = self.queued.get();
        ops < STORAGE_QUEUE_OPS_MAX && bytes < STORAGE_QUEUE_BYTES_MAX
    }
}

impl Queued {
    fn get(&self) -> (usize, usize) {
        (
            self.ops.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

/// The storage worker's end.
pub struct StorageOps {
    receiver: mpsc::UnboundedReceiver<StorageOp>,
    /// For work the worker hands elsewhere and takes back later (a snapshot written on a
    /// thread of its own); weak, so the queue still closes when the loop's end goes.
    weak_sender: mpsc::WeakUnboundedSender<StorageOp>,
    queued: Arc<Queued>,
}

impl StorageOps {
    /// A sender into this queue, as the loop's; none once the loop's end is gone.
    pub fn sender(&self) -> Option<StorageQueue> {
        Some(StorageQueue {
            sender: self.weak_sender.upgrade()?,
            queued: self.queued.clone(),
        })
    }

    /// Waits for operations and moves up to `limit` of them into `batch`; 0 once the loop is gone.
    pub async fn recv_many(&mut self, batch: &mut Vec<StorageOp>, limit: usize) -> usize {
        let start = batch.len();
        self.receiver.recv_many(batch, limit).await;
        self.taken(&batch[start..])
    }

    /// As [`Self::recv_many`], blocking the thread (the worker's own thread).
    pub fn blocking_recv_many(&mut self, batch: &mut Vec<StorageOp>, limit: usize) -> usize {
        let start = batch.len();
        self.receiver.blocking_recv_many(batch, limit);
        self.taken(&batch[start..])
    }

    /// Operations, and the bytes they carry, waiting to be taken.
    pub fn queued(&self) -> (usize, usize) {
        self.queued.get()
    }

    fn taken(&self, taken: &[StorageOp]) -> usize {
        let bytes = taken.iter().map(StorageOp::size_bytes).sum();
        let ops_before = self.queued.ops.fetch_sub(taken.len(), Ordering::Relaxed);
        let bytes_before = self.queued.bytes.fetch_sub(bytes, Ordering::Relaxed);
        assert!(
            ops_before >= taken.len() && bytes_before >= bytes,
            "took more than was counted"
        );
        taken.len()
    }
}
