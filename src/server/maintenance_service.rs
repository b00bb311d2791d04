//! The maintenance service: a consistent snapshot of the whole key-value state, streamed to an
//! operator's `ravel snapshot save`.
//!
//! Consistent means it holds every write acknowledged before the request: the leader (a
//! follower answers "not leader", which the client follows) first serves a linearizable read,
//! which returns once a quorum confirmed it still leads and it applied the read index; the
//! image is taken after that, at an applied index at least as high. Taking the image costs
//! constant time on the event loop (the store's map is shared, see `kv::store`); it is encoded
//! on a thread of its own straight into the response's chunks, so a large state is never
//! encoded whole in memory, and a slow reader holds back only that thread. (Not built under
//! madsim, whose nodes have no threads to spare.)

use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc::error::SendTimeoutError;
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::event_loop;
use super::handle::NodeHandle;
use super::proto::ravel::{self as pb, maintenance_server::Maintenance};
use super::tokens::Rights;
use crate::kv::SnapshotState;
use crate::replica::SnapshotImage;

/// The data bytes per streamed message (well under gRPC's 4 MiB message limit).
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// Snapshots streamed at once by one node: each holds the store's map shared (writes meanwhile
/// go to an overlay) and a thread busy encoding, so a second one waits for the first.
const STREAMS_MAX: usize = 1;

/// A client that reads nothing for this long loses its stream: the image it holds keeps the
/// store's map shared, and every write meanwhile adds to an overlay.
const STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The key the consistency read asks for: reserved, so no client's key, and its answer unused.
const BARRIER_KEY: &[u8] = b"\0snapshot-barrier";

pub struct MaintenanceService {
    node: NodeHandle,
    streams: Arc<Semaphore>,
}

impl MaintenanceService {
    pub fn new(node: NodeHandle) -> Self {
        MaintenanceService {
            node,
            streams: Arc::new(Semaphore::new(STREAMS_MAX)),
        }
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::BackupChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    type SnapshotStream = ChunkStream;

    async fn snapshot(
        &self,
        request: Request<pb::BackupRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        // A backup holds every key: it takes a read-write token (as etcd's needs its root).
        self.node.auth.check_request(&request, Rights::ReadWrite)?;
        // Taken at the leader: a follower answers "not leader", naming the leader, and never
        // passes the request on (the stream would cross two hops).
        drop(request);
        // Until the stream starts: the consistency read and taking the image.
        let _timer = self.node.metrics.time_request("snapshot");
        let permit = self.streams.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(
                "this node is streaming a snapshot already; retry once it is done",
            )
        })?;
        let read = self
            .node
            .ask(|reply| event_loop::Request::Read {
                query: Bytes::from_static(BARRIER_KEY),
                stale: false,
                may_forward: false,
                reply,
            })
            .await?;
        let view = self.node.view().await?;
        let image = self.node.inspect(|state| state.snapshot_state()).await?;
        let header = pb::BackupHeader {
            cluster_id: self.node.cluster_id.get(),
            node_id: self.node.id,
            index: image.applied_index(),
            term: view.status.term,
        };
        if header.index < read.index {
            // Applied only grows, and the image was taken after the read applied its index.
            return Err(Status::internal(format!(
                "the snapshot's index {} is below the read index {}",
                header.index, read.index
            )));
        }
        tracing::info!(
            index = header.index,
            term = header.term,
            "streaming a snapshot to a client"
        );
        let (sender, receiver) = mpsc::channel(4);
        stream_image(image, header, sender, permit);
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}

/// Encodes `image` into `sender`'s chunks, away from the runtime's threads; the permit is held
/// until the last chunk is handed over or the client went away.
fn stream_image(
    image: SnapshotState,
    header: pb::BackupHeader,
    sender: mpsc::Sender<Result<pb::BackupChunk, Status>>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let runtime = tokio::runtime::Handle::current();
    let encode = move || {
        let mut chunks = ChunkWriter::new(header, sender, runtime);
        let written = Box::new(image).write_to(&mut chunks);
        match written.and_then(|()| chunks.finish()) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {
                tracing::info!("the client stopped reading the snapshot stream");
            }
            Err(error) if error.kind() == std::io::ErrorKind::TimedOut => {
                tracing::warn!(%error, "gave up streaming a snapshot");
            }
            Err(error) => {
                let status = Status::internal(format!("cannot encode the snapshot: {error}"));
                let _ = chunks.sender.blocking_send(Err(status));
            }
        }
        drop(permit);
    };
    let started = std::thread::Builder::new()
        .name("ravel-backup".to_string())
        .spawn(encode);
    if let Err(error) = started {
        tracing::warn!(%error, "cannot start a thread to stream a snapshot");
    }
}

/// Cuts what is written into chunks of [`SNAPSHOT_CHUNK_BYTES`], summing their CRC as they go.
struct ChunkWriter {
    /// The node's runtime, to wait on the channel with a deadline from this thread.
    runtime: tokio::runtime::Handle,
    header: Option<pb::BackupHeader>,
    buffer: Vec<u8>,
    crc: crc32fast::Hasher,
    total: u64,
    sender: mpsc::Sender<Result<pb::BackupChunk, Status>>,
}

impl ChunkWriter {
    fn new(
        header: pb::BackupHeader,
        sender: mpsc::Sender<Result<pb::BackupChunk, Status>>,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        ChunkWriter {
            runtime,
            header: Some(header),
            buffer: Vec::with_capacity(SNAPSHOT_CHUNK_BYTES),
            crc: crc32fast::Hasher::new(),
            total: 0,
            sender,
        }
    }

    fn send(&mut self, chunk: pb::BackupChunk) -> std::io::Result<()> {
        let sent = self
            .runtime
            .block_on(self.sender.send_timeout(Ok(chunk), STALL_TIMEOUT));
        sent.map_err(|error| match error {
            SendTimeoutError::Closed(_) => {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
            }
            SendTimeoutError::Timeout(_) => std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the client read nothing for {} s", STALL_TIMEOUT.as_secs()),
            ),
        })
    }

    fn send_data(&mut self, data: Vec<u8>) -> std::io::Result<()> {
        self.crc.update(&data);
        self.total += data.len() as u64;
        let chunk = pb::BackupChunk {
            header: self.header.take(),
            data: Bytes::from(data),
            ..pb::BackupChunk::default()
        };
        self.send(chunk)
    }

    /// Sends what is buffered and the last message, with the checksum of everything sent.
    fn finish(&mut self) -> std::io::Result<()> {
        let rest = std::mem::take(&mut self.buffer);
        if !rest.is_empty() {
            self.send_data(rest)?;
        }
        let last = pb::BackupChunk {
            header: self.header.take(),
            data: Bytes::new(),
            last: true,
            crc32: self.crc.clone().finalize(),
            total_bytes: self.total,
        };
        self.send(last)
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        while self.buffer.len() >= SNAPSHOT_CHUNK_BYTES {
            let rest = self.buffer.split_off(SNAPSHOT_CHUNK_BYTES);
            let full = std::mem::replace(&mut self.buffer, rest);
            self.send_data(full)?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
