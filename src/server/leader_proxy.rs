//! A follower passes a client's request on to the leader and relays the answer, as etcd does, so
//! generic gRPC clients (grpcurl, h2load, clients in other languages) work against any member.
//! Ravel's own client follows "not leader" redirects instead, which saves the extra hop: it sends
//! [`NO_FORWARD`], and so does a follower forwarding a request, so none is forwarded twice (two
//! nodes naming each other leader during an election cannot bounce a request between them).

use std::sync::Mutex;

use tokio::time::Duration;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::error::ApiError;
use super::proto::ravel::kv_client::KvClient;

/// The request header that asks a follower to answer "not leader" rather than forward.
pub const NO_FORWARD: &str = "ravel-no-forward";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a forwarded call may take: a paused or cut-off leader keeps its connection open
/// without answering, and a client without a deadline would otherwise wait for ever.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a request may be forwarded: it does not carry [`NO_FORWARD`].
pub fn may_forward<T>(request: &Request<T>) -> bool {
    !request.metadata().contains_key(NO_FORWARD)
}

/// Marks a request so that no follower forwards it.
pub fn no_forward<T>(message: T) -> Request<T> {
    kv_request(message, false)
}

/// A request that a follower may pass on to the leader, or must refuse with a redirect.
pub fn kv_request<T>(message: T, may_forward: bool) -> Request<T> {
    let mut request = Request::new(message);
    if !may_forward {
        request
            .metadata_mut()
            .insert(NO_FORWARD, MetadataValue::from_static("1"));
    }
    request
}

/// Runs a forwarded call within [`FORWARD_TIMEOUT`]; past it, the outcome is unknown.
pub async fn relay<T>(
    call: impl std::future::Future<Output = Result<Response<T>, Status>>,
) -> Result<Response<T>, Status> {
    tokio::time::timeout(FORWARD_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| {
            Err(Status::deadline_exceeded(format!(
                "the leader did not answer within {} s; a write may or may not have taken effect",
                FORWARD_TIMEOUT.as_secs()
            )))
        })
}

/// The connection to the leader, opened on first use and replaced when the leader moves.
#[derive(Default)]
pub struct LeaderProxy {
    leader: Mutex<Option<(String, KvClient<Channel>)>>,
}

impl LeaderProxy {
    /// Where to forward a request this node refused with `error`: the leader's address, if the
    /// refusal is "not leader" and names one.
    pub fn target(error: &ApiError) -> Option<&str> {
        match error {
            ApiError::NotLeader {
                leader_address: Some(address),
                ..
            } => Some(address),
            _ => None,
        }
    }

    /// A client for the leader at `address`. A connection that cannot be opened is
    /// "unavailable": the request was not passed on, so it did not take effect.
    pub async fn client(&self, address: &str) -> Result<KvClient<Channel>, Status> {
        if let Some((known, client)) = self.lock().as_ref() {
            if known == address {
                return Ok(client.clone());
            }
        }
        let channel = super::channel::connect(address, CONNECT_TIMEOUT)
            .await
            .map_err(|error| {
                Status::unavailable(format!(
                    "not the leader, and the leader at {address} cannot be reached to pass the \
                     request on: {error}; retry shortly"
                ))
            })?;
        let client = KvClient::new(channel);
        *self.lock() = Some((address.to_string(), client.clone()));
        Ok(client)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(String, KvClient<Channel>)>> {
        self.leader
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
