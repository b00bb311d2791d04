//! The peer service: Raft messages from the other nodes of the group, checked (cluster id,
//! sender, recipient, well-formed) before they reach the core.

use tokio::sync::oneshot;
use tokio::time::{timeout, Duration};
use tonic::{Request, Response, Status};

use super::convert::{message_from_proto, message_to_proto};
use super::error::ApiError;
use super::event_loop;
use super::handle::NodeHandle;
use super::proto::ravel::{peer_server::Peer, BatchAck, MessageBatch};

/// How long a batch's reply waits for the answers to ride back on it; later ones go in an RPC of
/// their own. Well under the sender's timeout.
const REPLY_WAIT: Duration = Duration::from_millis(500);

pub struct PeerService {
    node: NodeHandle,
}

impl PeerService {
    pub fn new(node: NodeHandle) -> Self {
        PeerService { node }
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn send(&self, request: Request<MessageBatch>) -> Result<Response<BatchAck>, Status> {
        let batch = request.into_inner();
        self.node.check_cluster(batch.cluster_id)?;
        let mut messages = Vec::with_capacity(batch.messages.len());
        for message in batch.messages {
            let message = message_from_proto(message)
                .map_err(|error| ApiError::InvalidArgument(error.to_string()))?;
            if message.from != batch.from || message.to != self.node.id {
                return Err(ApiError::InvalidArgument(format!(
                    "message from node {} to node {} arrived in a batch from node {} at node {}",
                    message.from, message.to, batch.from, self.node.id
                ))
                .into());
            }
            messages.push(message);
        }
        let (reply, answers) = oneshot::channel();
        self.node
            .send(event_loop::Request::Peer {
                from: batch.from,
                from_address: batch.from_address,
                messages,
                reply: Some(reply),
            })
            .await?;
        let answers = match timeout(REPLY_WAIT, answers).await {
            Ok(Ok(answers)) => answers,
            _ => Vec::new(),
        };
        Ok(Response::new(BatchAck {
            messages: answers.iter().map(message_to_proto).collect(),
        }))
    }
}
