//! The joining node's side of the join workflow: ask each known node in turn with `UpdateNode`,
//! follow the redirect to the leader, and retry with back-off until the leader answers `JOINED`
//! (then the core is told it was admitted) or the admission hook refuses (then the node stops).
//! It never forms a cluster of its own.

use std::collections::{BTreeMap, VecDeque};

use tokio::time::{sleep, timeout, Duration};

use super::event_loop::Request;
use super::handle::NodeHandle;
use super::proto::ravel::{
    membership_client::MembershipClient, update_node_response::Outcome, StatusRequest,
    UpdateNodeRequest,
};
use crate::replica::StateMachine;

/// Redirects followed in one round, at most (a leader can change while we follow it).
const REDIRECTS_MAX: usize = 8;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A join waits for the joiner to catch up and be promoted; the leader answers once it has.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

pub struct JoinRequest {
    pub address: String,
    pub labels: BTreeMap<String, String>,
    pub follower_only: bool,
    pub seeds: Vec<String>,
    /// This start's join nonce (see `core::Admission`).
    pub nonce: u64,
}

/// Runs the workflow to its end: `Ok` once admitted, `Err` with the reason if refused.
pub async fn join<S: StateMachine>(
    node: NodeHandle<S>,
    request: JoinRequest,
) -> Result<(), String> {
    let mut backoff = BACKOFF_MIN;
    loop {
        let mut targets: VecDeque<String> = request.seeds.iter().cloned().collect();
        let mut redirects = 0;
        // Why the last node asked did not admit us, for the retry's log line.
        let mut last_error = String::new();
        while let Some(target) = targets.pop_front() {
            if node.cluster_id.get() == 0 {
                if let Err(error) = learn_cluster_id(&node, &target).await {
                    last_error = error;
                    continue;
                }
            }
            let last_index = match node.view().await {
                Ok(view) => view.status.last_index,
                Err(_) => return Err("the node shut down while joining".to_string()),
            };
            let update = UpdateNodeRequest {
                cluster_id: node.cluster_id.get(),
                node_id: node.id,
                address: request.address.clone(),
                labels: request.labels.clone().into_iter().collect(),
                last_index,
                follower_only: request.follower_only,
                join_nonce: request.nonce,
            };
            match ask(&target, update).await {
                Ok(response) => match response.outcome() {
                    Outcome::Joined => {
                        tracing::info!(via = %target, "joined the cluster");
                        let voter = !request.follower_only;
                        let _ = node.send(Request::Admitted { voter }).await;
                        return Ok(());
                    }
                    Outcome::Redirect => {
                        if !response.leader_address.is_empty() && redirects < REDIRECTS_MAX {
                            redirects += 1;
                            tracing::info!(
                                leader = response.leader_id,
                                address = %response.leader_address,
                                "redirected to the leader"
                            );
                            targets.push_front(response.leader_address);
                        }
                    }
                    Outcome::Rejected => {
                        return Err(format!("the cluster refused the join: {}", response.reason))
                    }
                    Outcome::Unspecified => {
                        tracing::warn!(%target, "unexpected answer to the join request")
                    }
                },
                Err(status) if status.code() == tonic::Code::InvalidArgument => {
                    return Err(format!("{target} refused the join: {}", status.message()));
                }
                Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                    return Err(format!("{target} refused the join: {}", status.message()));
                }
                Err(status) => {
                    tracing::debug!(%target, %status, "join request failed");
                    last_error = format!("{target}: {}", super::channel::status_text(&status));
                }
            }
        }
        tracing::warn!(
            seeds = ?request.seeds,
            retry_in_ms = backoff.as_millis() as u64,
            last_error = %last_error,
            "no known node admitted this node yet; retrying"
        );
        sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// A joiner given no cluster id takes the one of the node it asks first (its status), before
/// asking to join: the leader starts replicating to it before it answers the join, and a node
/// with no cluster id refuses every peer's batch. Recorded durably by the event loop.
async fn learn_cluster_id<S: StateMachine>(
    node: &NodeHandle<S>,
    target: &str,
) -> Result<(), String> {
    let channel = super::channel::connect(target, CONNECT_TIMEOUT).await?;
    let mut client = MembershipClient::new(channel);
    let status = match timeout(CONNECT_TIMEOUT, client.status(StatusRequest {})).await {
        Ok(Ok(status)) => status.into_inner(),
        Ok(Err(status)) => {
            return Err(format!(
                "{target}: {}",
                super::channel::status_text(&status)
            ))
        }
        Err(_) => return Err(format!("{target}: no answer to a status request")),
    };
    if node.cluster_id.learn(status.cluster_id) {
        tracing::info!(cluster = status.cluster_id, via = %target, "learned the cluster id");
        let cluster_id = status.cluster_id;
        let _ = node.send(Request::ClusterLearned { cluster_id }).await;
    }
    if node.cluster_id.get() == 0 {
        return Err(format!("{target} does not know its cluster id yet"));
    }
    Ok(())
}

async fn ask(
    target: &str,
    request: UpdateNodeRequest,
) -> Result<super::proto::ravel::UpdateNodeResponse, tonic::Status> {
    let channel = super::channel::connect(target, CONNECT_TIMEOUT)
        .await
        .map_err(tonic::Status::unavailable)?;
    let mut client = MembershipClient::new(channel);
    match timeout(JOIN_TIMEOUT, client.update_node(request)).await {
        Ok(result) => result.map(tonic::Response::into_inner),
        Err(_) => Err(tonic::Status::deadline_exceeded("join timed out")),
    }
}
