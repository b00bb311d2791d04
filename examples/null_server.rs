//! A KV gRPC server that does nothing but answer: the ceiling for `ravel bench` on this machine,
//! so a node's figures can be read against it. Serves on 127.0.0.1:7379; `THREADS` sets its
//! runtime threads (default 1).
//!
//! ```text
//! cargo run --release --example null_server &
//! ravel bench --endpoints 127.0.0.1:7379 --clients 64 --duration 5
//! ```

use ravel::server::proto::ravel::{
    self as pb,
    kv_server::{Kv, KvServer},
};
use tonic::{Request, Response, Status};

struct Null;

#[tonic::async_trait]
impl Kv for Null {
    async fn put(&self, _: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let threads: usize = std::env::var("THREADS")
        .ok()
        .and_then(|threads| threads.parse().ok())
        .unwrap_or(1);
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
            .add_service(KvServer::new(Null))
            .serve("127.0.0.1:7379".parse()?)
            .await?;
        Ok(())
    })
}
