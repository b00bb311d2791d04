//! The peer service: a stream of Raft message batches from each other node of the group, each
//! batch checked (cluster id, sender, recipient, well-formed) before it reaches the core. A bad
//! batch ends the stream with an error; the sender reconnects.

use tonic::{Request, Response, Status};

use super::convert::message_from_proto;
use super::error::ApiError;
use super::event_loop;
use super::handle::NodeHandle;
use super::proto::ravel::{peer_server::Peer, BatchAck, MessageBatch};

pub struct PeerService {
    node: NodeHandle,
}

impl PeerService {
    pub fn new(node: NodeHandle) -> Self {
        PeerService { node }
    }
}

impl PeerService {
    async fn accept(&self, batch: MessageBatch) -> Result<(), ApiError> {
        self.node.check_cluster(batch.cluster_id)?;
        let mut messages = Vec::with_capacity(batch.messages.len());
        for message in batch.messages {
            let message = message_from_proto(message)
                .map_err(|error| ApiError::InvalidArgument(error.to_string()))?;
            if message.from != batch.from || message.to != self.node.id {
                return Err(ApiError::InvalidArgument(format!(
                    "message from node {} to node {} arrived in a batch from node {} at node {}",
                    message.from, message.to, batch.from, self.node.id
                )));
            }
            messages.push(message);
        }
        self.node
            .send(event_loop::Request::Peer {
                from: batch.from,
                from_address: batch.from_address,
                messages,
            })
            .await
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn stream(
        &self,
        request: Request<tonic::Streaming<MessageBatch>>,
    ) -> Result<Response<BatchAck>, Status> {
        let mut batches = request.into_inner();
        while let Some(batch) = batches.message().await? {
            self.accept(batch).await?;
        }
        Ok(Response::new(BatchAck {}))
    }
}
