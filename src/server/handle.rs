//! The handle the gRPC services use to reach a node's event loop.

use tokio::sync::{mpsc, oneshot};

use super::cluster_id::ClusterId;
use super::error::ApiError;
use super::event_loop::{NodeView, Request};
use crate::core::NodeId;

#[derive(Clone, Debug)]
pub struct NodeHandle {
    requests: mpsc::Sender<Request>,
    pub cluster_id: ClusterId,
    pub id: NodeId,
}

impl NodeHandle {
    pub fn new(requests: mpsc::Sender<Request>, cluster_id: ClusterId, id: NodeId) -> Self {
        NodeHandle {
            requests,
            cluster_id,
            id,
        }
    }

    /// Sends a request built around a reply channel and waits for the answer.
    pub async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, ApiError>>) -> Request,
    ) -> Result<T, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.send(make(reply)).await?;
        answer.await.map_err(|_| ApiError::ShuttingDown)?
    }

    pub async fn view(&self) -> Result<NodeView, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::View { reply }).await?;
        answer.await.map_err(|_| ApiError::ShuttingDown)
    }

    pub async fn send(&self, request: Request) -> Result<(), ApiError> {
        self.requests
            .send(request)
            .await
            .map_err(|_| ApiError::ShuttingDown)
    }

    /// Asks the loop to stop (handing leadership over first) and waits until it has.
    pub async fn shutdown(&self) {
        let (reply, answer) = oneshot::channel();
        if self.send(Request::Shutdown { reply }).await.is_ok() {
            let _ = answer.await;
        }
    }

    pub fn check_cluster(&self, cluster_id: u64) -> Result<(), ApiError> {
        let ours = self.cluster_id.get();
        if cluster_id == ours && ours != 0 {
            Ok(())
        } else {
            Err(ApiError::WrongCluster {
                expected: ours,
                got: cluster_id,
            })
        }
    }
}
