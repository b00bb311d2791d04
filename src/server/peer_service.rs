//! The peer service: Raft messages from the other nodes of the group, checked (cluster id,
//! sender, recipient, well-formed) before they reach the core.

use tokio::sync::oneshot;
use tokio::time::{timeout, Duration};
use tonic::{Request, Response, Status};

use super::convert::{message_to_proto, peer_message_from_proto};
use super::event_loop;
use super::handle::NodeHandle;
use super::metrics::Metrics;
use super::peer_auth::PeerAuth;
use super::proto::ravel::{peer_server::Peer, BatchAck, MessageBatch};
use crate::kv::KvStateMachine;
use crate::replica::StateMachine;

/// How long a batch's reply waits for the answers to ride back on it; later ones go in an RPC of
/// their own. Well under the sender's timeout.
const REPLY_WAIT: Duration = Duration::from_millis(500);

pub struct PeerService<S: StateMachine = KvStateMachine> {
    node: NodeHandle<S>,
    metrics: Metrics,
    auth: PeerAuth,
}

impl<S: StateMachine> PeerService<S> {
    pub fn new(node: NodeHandle<S>, metrics: Metrics, auth: PeerAuth) -> Self {
        PeerService {
            node,
            metrics,
            auth,
        }
    }
}

#[tonic::async_trait]
impl<S: StateMachine> Peer for PeerService<S> {
    async fn send(&self, request: Request<MessageBatch>) -> Result<Response<BatchAck>, Status> {
        self.auth.check(&request, request.get_ref().from)?;
        let batch = request.into_inner();
        self.node.check_cluster(batch.cluster_id)?;
        let messages = refuse_malformed(batch.messages, batch.from, self.node.id, &self.metrics);
        if messages.is_empty() {
            return Ok(Response::new(BatchAck::default()));
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

/// The messages of a peer's batch that may reach the core: each malformed one (or one not
/// addressed as the batch says) is dropped, counted and logged; the rest go on, since one bad
/// message says nothing about the others.
pub fn refuse_malformed(
    messages: Vec<super::proto::ravel::RaftMessage>,
    from: crate::core::NodeId,
    me: crate::core::NodeId,
    metrics: &Metrics,
) -> Vec<crate::core::Message> {
    messages
        .into_iter()
        .filter_map(|message| match peer_message_from_proto(message, from, me) {
            Ok(message) => Some(message),
            Err(reason) => {
                metrics.refused_peer_message();
                tracing::warn!(peer = from, %reason, "refused a peer's message");
                None
            }
        })
        .collect()
}
