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

    /// Runs a call forwarded to the leader at `address` within [`FORWARD_TIMEOUT`]; past it, the
    /// outcome is unknown. A call that got no answer also drops the connection: a partition can
    /// leave it stalled long after it heals (TCP waits longer and longer between retransmissions,
    /// up to minutes), so the next request connects afresh.
    pub async fn relay<T>(
        &self,
        address: &str,
        call: impl std::future::Future<Output = Result<Response<T>, Status>>,
    ) -> Result<Response<T>, Status> {
        self.relay_within(FORWARD_TIMEOUT, address, call).await
    }

    async fn relay_within<T>(
        &self,
        limit: Duration,
        address: &str,
        call: impl std::future::Future<Output = Result<Response<T>, Status>>,
    ) -> Result<Response<T>, Status> {
        match tokio::time::timeout(limit, call).await {
            Ok(outcome) => outcome,
            Err(_) => {
                self.forget(address);
                Err(Status::deadline_exceeded(format!(
                    "the leader did not answer within {} ms; a write may or may not have taken \
                     effect",
                    limit.as_millis()
                )))
            }
        }
    }

    /// Drops the connection to `address`, if it is the one kept.
    fn forget(&self, address: &str) {
        let mut leader = self.lock();
        if leader.as_ref().is_some_and(|(known, _)| known == address) {
            *leader = None;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(String, KvClient<Channel>)>> {
        self.leader
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    /// A leader that does not answer in time costs the connection: after a partition heals, the
    /// old one may stay stalled for minutes, so the next request must not reuse it.
    #[tokio::test]
    async fn a_call_the_leader_does_not_answer_drops_the_connection() {
        // A "leader" that accepts connections and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                open.push(stream);
            }
        });
        let connections = || async {
            // The accept runs on its own task: give it a moment to count.
            tokio::time::sleep(Duration::from_millis(100)).await;
            accepted.load(Ordering::SeqCst)
        };

        let proxy = LeaderProxy::default();
        proxy.client(&address).await.unwrap();
        proxy.client(&address).await.unwrap();
        assert_eq!(
            connections().await,
            1,
            "the connection is kept between calls"
        );

        let answered = proxy
            .relay_within(
                Duration::from_millis(50),
                &address,
                std::future::pending::<Result<Response<()>, Status>>(),
            )
            .await;
        let status = answered.unwrap_err();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert!(status.message().contains("may or may not"), "{status:?}");

        proxy.client(&address).await.unwrap();
        assert_eq!(connections().await, 2, "a new connection after the timeout");
    }
}
