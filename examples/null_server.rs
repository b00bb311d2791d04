//! A KV gRPC server that does nothing but answer: the ceiling for `ravel bench` (or h2load) on
//! this machine, so a node's figures can be read against it. Serves on `ADDRESS` (default
//! 127.0.0.1:7379); `THREADS` sets its runtime threads (default 1).
//!
//! With `SYNC=FILE` it is the "do-nothing server that only group-commits each request to a
//! file": every put's key and value are appended to FILE (written over zeros laid ahead, as
//! the node's log does), and a put is answered once an fsync (`fdatasync`) covering it returned. One thread writes and syncs whatever arrived while the
//! previous sync ran, so a batch costs one sync whatever its size — what a single Raft node's
//! WAL must do at the least, without replication, a state machine or a log index. Issue 22
//! measures the node against this one.
//!
//! ```text
//! SYNC=/tmp/null.wal cargo run --release --example null_server &
//! ravel bench --endpoints 127.0.0.1:7379 --clients 64 --duration 5
//! ```

use std::os::unix::fs::FileExt;
use std::sync::mpsc;

use ravel::server::proto::ravel::{
    self as pb,
    kv_server::{Kv, KvServer},
};
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

/// One put waiting for the group commit: its bytes and whom to answer once they are synced.
type Pending = (Vec<u8>, oneshot::Sender<()>);

struct Null {
    /// Where puts go to be synced; `None` answers at once.
    commits: Option<mpsc::Sender<Pending>>,
}

#[tonic::async_trait]
impl Kv for Null {
    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        if let Some(commits) = &self.commits {
            let put = request.into_inner();
            let mut record = put.key.to_vec();
            record.extend_from_slice(&put.value);
            let (synced, answer) = oneshot::channel();
            commits
                .send((record, synced))
                .map_err(|_| Status::unavailable("the commit thread stopped"))?;
            answer
                .await
                .map_err(|_| Status::unavailable("the commit thread stopped"))?;
        }
        Ok(Response::new(pb::PutResponse { index: 1 }))
    }

    async fn get(&self, _: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        Ok(Response::new(pb::GetResponse::default()))
    }

    async fn delete(
        &self,
        _: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        Ok(Response::new(pb::DeleteResponse::default()))
    }

    async fn compare_and_swap(
        &self,
        _: Request<pb::CompareAndSwapRequest>,
    ) -> Result<Response<pb::CompareAndSwapResponse>, Status> {
        Ok(Response::new(pb::CompareAndSwapResponse::default()))
    }
}

/// Zeros written ahead of the records, a mebibyte at a time as the node's log does: an
/// fdatasync after a write that only overwrites allocated blocks need not commit the file's size
/// and block map too.
const PREALLOCATE_BYTES: u64 = 1 << 20;

/// Appends every waiting put to `file`, syncs once, answers them all; again while any arrive.
fn group_commit(file: std::fs::File, puts: mpsc::Receiver<Pending>) -> std::io::Result<()> {
    let (mut written, mut allocated) = (0u64, 0u64);
    let mut buffer = Vec::new();
    let mut waiting = Vec::new();
    while let Ok(first) = puts.recv() {
        waiting.push(first);
        waiting.extend(puts.try_iter());
        buffer.clear();
        for (record, _) in &waiting {
            buffer.extend_from_slice(&(record.len() as u32).to_le_bytes());
            buffer.extend_from_slice(record);
        }
        while written + buffer.len() as u64 > allocated {
            file.write_all_at(&vec![0; PREALLOCATE_BYTES as usize], allocated)?;
            allocated += PREALLOCATE_BYTES;
        }
        file.write_all_at(&buffer, written)?;
        written += buffer.len() as u64;
        file.sync_data()?;
        for (_, synced) in waiting.drain(..) {
            let _ = synced.send(());
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let threads: usize = std::env::var("THREADS")
        .ok()
        .and_then(|threads| threads.parse().ok())
        .unwrap_or(1);
    let address = std::env::var("ADDRESS").unwrap_or_else(|_| "127.0.0.1:7379".into());
    let commits = match std::env::var_os("SYNC") {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(path)?;
            let (commits, puts) = mpsc::channel();
            std::thread::spawn(move || {
                if let Err(error) = group_commit(file, puts) {
                    eprintln!("null_server: the commit file failed: {error}");
                    std::process::exit(1);
                }
            });
            Some(commits)
        }
        None => None,
    };
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    }
    .enable_all()
    .build()?;
    runtime.block_on(async {
        tonic::transport::Server::builder()
            .add_service(KvServer::new(Null { commits }))
            .serve(address.parse()?)
            .await?;
        Ok(())
    })
}
