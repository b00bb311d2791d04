//! The handle the gRPC services use to reach a node's event loop.

use tokio::sync::{mpsc, oneshot};

use super::cluster_id::ClusterId;
use super::error::ApiError;
use super::event_loop::{Look, NodeView, Request};
use super::metrics::Metrics;
use super::tokens::Auth;
use crate::core::NodeId;
use crate::kv::KvStateMachine;
use crate::replica::StateMachine;

#[derive(Debug)]
pub struct NodeHandle<S: StateMachine = KvStateMachine> {
    requests: mpsc::Sender<Request<S>>,
    pub cluster_id: ClusterId,
    pub id: NodeId,
    /// The node's metrics, for the services to time what they answer.
    pub metrics: Metrics,
    /// The node's client authentication, for the services to check requests with.
    pub auth: Auth,
}

// Not derived: a derive would ask `S: Clone`.
impl<S: StateMachine> Clone for NodeHandle<S> {
    fn clone(&self) -> Self {
        NodeHandle {
            requests: self.requests.clone(),
            cluster_id: self.cluster_id.clone(),
            id: self.id,
            metrics: self.metrics.clone(),
            auth: self.auth.clone(),
        }
    }
}

impl<S: StateMachine> NodeHandle<S> {
    pub fn new(
        requests: mpsc::Sender<Request<S>>,
        cluster_id: ClusterId,
        id: NodeId,
        metrics: Metrics,
        auth: Auth,
    ) -> Self {
        NodeHandle {
            requests,
            cluster_id,
            id,
            metrics,
            auth,
        }
    }

    /// Sends a request built around a reply channel and waits for the answer.
    pub async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, ApiError>>) -> Request<S>,
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

    /// Runs `look` on the state this node has applied so far and answers what it returns.
    pub async fn inspect<T: Send + 'static>(
        &self,
        look: impl FnOnce(&S) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let (reply, answer) = oneshot::channel();
        let look = Box::new(move |state: &S| {
            let _ = reply.send(look(state));
        });
        self.send(Request::Inspect(Look(look))).await?;
        answer.await.map_err(|_| ApiError::ShuttingDown)
    }

    pub async fn send(&self, request: Request<S>) -> Result<(), ApiError> {
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
