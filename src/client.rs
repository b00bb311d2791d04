//! A client for a Ravel cluster: tries its endpoints in turn, follows "not leader" redirects to
//! the leader, and retries what is safe to retry until its deadline.

use std::collections::BTreeMap;

use bytes::Bytes;
use thiserror::Error;
use tokio::time::{sleep, timeout, Duration, Instant};
use tonic::transport::Channel;
use tonic::Code;

use crate::server::kv_service::{check_key, check_value};
use crate::server::leader_proxy::kv_request;
use crate::server::proto::ravel::{
    self as pb, kv_client::KvClient, maintenance_client::MaintenanceClient,
    membership_client::MembershipClient, relocation_client::RelocationClient,
};
use crate::server::ApiError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one attempt of a read may take before the read is tried elsewhere: a leader that is
/// paused (or cut off) holds a request without failing it, and a read is safe to resend. A
/// write is not (it may have been applied), so it waits out the whole timeout.
const READ_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
const RETRY_PAUSE: Duration = Duration::from_millis(100);

#[derive(Clone, Debug, Error)]
pub enum ClientError {
    /// The cluster answered with an error it attached a Ravel detail to.
    #[error("{0}")]
    Api(ApiError),
    #[error("no endpoint answered within {timeout_ms} ms (tried {endpoints}); is the cluster running, and does it have a quorum?")]
    Unreachable { endpoints: String, timeout_ms: u64 },
    /// Every endpoint refused the connection (with [`Client::fail_when_nothing_listens`]).
    #[error("nothing listens at {0} (connection refused): is the node running, and is that its address?")]
    NothingListens(String),
    /// The request may or may not have taken effect (e.g. the connection broke mid-request).
    #[error("outcome unknown: {0}")]
    Unknown(String),
    #[error("{0}")]
    Other(String),
}

impl From<ApiError> for ClientError {
    fn from(error: ApiError) -> Self {
        ClientError::Api(error)
    }
}

/// What a retry may assume about a failed attempt.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Reads and idempotent writes: retry after any failure.
    Always,
    /// Only when the request is known not to have taken effect.
    OnlyIfNotApplied,
}

pub struct Client {
    endpoints: Vec<String>,
    leader: Option<String>,
    channels: BTreeMap<String, Channel>,
    pub timeout: Duration,
    /// Let a follower pass requests on to the leader instead of redirecting: every call then
    /// takes the extra hop through whichever endpoint answered first, as a plain gRPC client's
    /// would. Off by default; the simulator turns it on for some clients to check that path.
    pub through_followers: bool,
    /// The cluster membership requests are meant for (`leave`): a node of another cluster
    /// refuses them. `None`: not checked.
    pub cluster_id: Option<u64>,
    /// Give up at once when every endpoint refused the connection in a row (nothing listens
    /// at any of them), instead of retrying until the timeout: for a person at a command line.
    /// Off by default: a program waits out nodes that are restarting.
    pub fail_when_nothing_listens: bool,
    /// Sent with every request as `authorization: Bearer TOKEN`, for a node that checks
    /// tokens (`--auth-tokens`).
    pub token: Option<String>,
}

/// A connection to a node, carrying the client's token on every request.
#[cfg(not(madsim))]
pub type Connection = tonic::service::interceptor::InterceptedService<Channel, Bearer>;
/// Under madsim, no tokens: the plain channel.
#[cfg(madsim)]
pub type Connection = Channel;

/// The `authorization` header a client's requests carry, if it has a token (under madsim,
/// made but not sent).
#[derive(Clone)]
#[cfg_attr(madsim, allow(dead_code))]
pub struct Bearer(Option<tonic::metadata::AsciiMetadataValue>);

impl Bearer {
    pub fn of(token: Option<&str>) -> Result<Bearer, ClientError> {
        let Some(token) = token else {
            return Ok(Bearer(None));
        };
        let value = format!("Bearer {token}").parse().map_err(|_| {
            ClientError::Other("the token holds characters a header cannot carry".to_string())
        })?;
        Ok(Bearer(Some(value)))
    }

    #[cfg(not(madsim))]
    pub fn on(&self, channel: Channel) -> Connection {
        tonic::service::interceptor::InterceptedService::new(channel, self.clone())
    }

    #[cfg(madsim)]
    pub fn on(&self, channel: Channel) -> Connection {
        channel
    }
}

#[cfg(not(madsim))]
impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

impl Client {
    pub fn new(endpoints: Vec<String>) -> Self {
        Client {
            endpoints,
            leader: None,
            channels: BTreeMap::new(),
            timeout: Duration::from_secs(10),
            through_followers: false,
            cluster_id: None,
            fail_when_nothing_listens: false,
            token: None,
        }
    }

    /// The endpoint that answered the last call, where the next one goes first.
    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    pub async fn put(&mut self, key: Bytes, value: Bytes) -> Result<u64, ClientError> {
        check_key(&key).and_then(|_| check_value(&value))?;
        let request = pb::PutRequest { key, value };
        // Not `Always`: a put retried after an attempt that did take effect would apply twice,
        // the second time after writes of other clients — not linearizable.
        let forward = self.through_followers;
        let response = self
            .call(Retry::OnlyIfNotApplied, move |mut kv, _, _| {
                let request = request.clone();
                async move { kv.put(kv_request(request, forward)).await }
            })
            .await?;
        Ok(response.index)
    }

    pub async fn get(&mut self, key: Bytes, stale: bool) -> Result<Option<Bytes>, ClientError> {
        let request = pb::GetRequest { key, stale };
        let forward = self.through_followers;
        let response = self
            .call(Retry::Always, move |mut kv, _, _| {
                let request = request.clone();
                async move { kv.get(kv_request(request, forward)).await }
            })
            .await?;
        Ok(response.found.then_some(response.value))
    }

    /// Deletes `key`; `true` if it existed.
    pub async fn delete(&mut self, key: Bytes) -> Result<bool, ClientError> {
        let request = pb::DeleteRequest { key };
        let forward = self.through_followers;
        let response = self
            .call(Retry::OnlyIfNotApplied, move |mut kv, _, _| {
                let request = request.clone();
                async move { kv.delete(kv_request(request, forward)).await }
            })
            .await?;
        Ok(response.existed)
    }

    /// Sets `key` to `new` if it holds `expected` (`None`: absent). Returns whether it swapped
    /// and the value found.
    pub async fn compare_and_swap(
        &mut self,
        key: Bytes,
        expected: Option<Bytes>,
        new: Bytes,
    ) -> Result<(bool, Option<Bytes>), ClientError> {
        check_key(&key).and_then(|_| check_value(&new))?;
        if let Some(expected) = &expected {
            check_value(expected)?;
        }
        let request = pb::CompareAndSwapRequest {
            key,
            expected_absent: expected.is_none(),
            expected: expected.unwrap_or_default(),
            new_value: new,
        };
        let forward = self.through_followers;
        let response = self
            .call(Retry::OnlyIfNotApplied, move |mut kv, _, _| {
                let request = request.clone();
                async move { kv.compare_and_swap(kv_request(request, forward)).await }
            })
            .await?;
        Ok((
            response.swapped,
            response.current_found.then_some(response.current),
        ))
    }

    pub async fn members(&mut self) -> Result<pb::MembersResponse, ClientError> {
        self.call(Retry::Always, |_, mut membership, _| async move {
            membership.members(pb::MembersRequest {}).await
        })
        .await
    }

    /// The status of the first endpoint that answers (not redirected: status is per node).
    pub async fn status(&mut self) -> Result<pb::StatusResponse, ClientError> {
        let mut last_error = None;
        for endpoint in self.endpoints.clone() {
            match self.channel(&endpoint).await {
                Ok(channel) => {
                    let mut client = MembershipClient::new(channel);
                    match timeout(self.timeout, client.status(pb::StatusRequest {})).await {
                        Ok(Ok(response)) => return Ok(response.into_inner()),
                        Ok(Err(status)) => last_error = Some(status.message().to_string()),
                        Err(_) => last_error = Some("timed out".to_string()),
                    }
                }
                Err(error) => last_error = Some(error),
            }
        }
        Err(ClientError::Unreachable {
            endpoints: format!(
                "{} ({})",
                self.endpoints.join(", "),
                last_error.unwrap_or_default()
            ),
            timeout_ms: self.timeout.as_millis() as u64,
        })
    }

    /// A consistent snapshot of the whole store, streamed from the leader (see
    /// `server::maintenance_service`): the header comes in the first message, the checksum in
    /// the last. Connecting is retried; the stream itself is the caller's to read.
    pub async fn backup(&mut self) -> Result<tonic::Streaming<pb::BackupChunk>, ClientError> {
        self.call_on(Retry::Always, |channel| async move {
            MaintenanceClient::new(channel)
                .snapshot(pb::BackupRequest {})
                .await
        })
        .await
    }

    /// Removes node `node` (0: the node the request reaches) from the cluster.
    /// Removes `node` from the cluster; with [`Client::cluster_id`] set, a node of another
    /// cluster refuses.
    pub async fn leave(&mut self, node: u64) -> Result<(), ClientError> {
        let cluster_id = self.cluster_id.unwrap_or(0);
        self.call(
            Retry::OnlyIfNotApplied,
            move |_, mut membership, _| async move {
                membership
                    .leave(pb::LeaveRequest {
                        node_id: node,
                        cluster_id,
                    })
                    .await
            },
        )
        .await
        .map(|_| ())
    }

    /// Writes a move step (an encoded `Command::Move`) through the group's log: the admin's
    /// mover's call. A step is idempotent, so it is retried after any failure.
    pub async fn move_step(&mut self, command: Bytes) -> Result<pb::MoveStepResponse, ClientError> {
        self.call(Retry::Always, move |_, _, mut relocation| {
            let request = pb::MoveStepRequest {
                command: command.clone(),
            };
            async move { relocation.step(request).await }
        })
        .await
    }

    /// The next chunk of a partition, from the first replica that has applied the source's
    /// freeze (`applied_at_least`); `None` if none of those that answered has yet.
    pub async fn export(
        &mut self,
        partition: u32,
        after: Option<Bytes>,
        applied_at_least: u64,
    ) -> Result<Option<(Vec<(Bytes, Bytes)>, bool)>, ClientError> {
        let request = pb::ExportRequest {
            partition,
            has_after: after.is_some(),
            after: after.unwrap_or_default(),
            applied_at_least,
        };
        let response = self
            .call(Retry::Always, move |_, _, mut relocation| {
                let request = request.clone();
                async move { relocation.export(request).await }
            })
            .await?;
        if response.behind {
            return Ok(None);
        }
        let pairs = response
            .pairs
            .into_iter()
            .map(|pair| (pair.key, pair.value))
            .collect();
        Ok(Some((pairs, response.last)))
    }

    async fn channel(&mut self, endpoint: &str) -> Result<Channel, String> {
        self.channel_or_say_why(endpoint)
            .await
            .map_err(|failure| failure.message)
    }

    async fn channel_or_say_why(
        &mut self,
        endpoint: &str,
    ) -> Result<Channel, crate::server::ConnectFailure> {
        if let Some(channel) = self.channels.get(endpoint) {
            return Ok(channel.clone());
        }
        let channel = crate::server::connect_or_say_why(endpoint, CONNECT_TIMEOUT).await?;
        self.channels.insert(endpoint.to_string(), channel.clone());
        Ok(channel)
    }

    /// Calls the leader (or whichever endpoint answers), following redirects, until `timeout`.
    async fn call<T, F, Fut>(&mut self, retry: Retry, mut attempt: F) -> Result<T, ClientError>
    where
        F: FnMut(
            KvClient<Connection>,
            MembershipClient<Connection>,
            RelocationClient<Connection>,
        ) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call_on(retry, move |channel: Connection| {
            attempt(
                KvClient::new(channel.clone()),
                MembershipClient::new(channel.clone()),
                RelocationClient::new(channel),
            )
        })
        .await
    }

    /// [`Client::call`] with the attempt given the connection itself, for any service.
    async fn call_on<T, F, Fut>(&mut self, retry: Retry, mut attempt: F) -> Result<T, ClientError>
    where
        F: FnMut(Connection) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let bearer = Bearer::of(self.token.as_deref())?;
        let deadline = Instant::now() + self.timeout;
        let mut next_endpoint = 0;
        let mut last_error = String::new();
        // Connections refused in a row, by distinct endpoints tried in turn.
        let mut refused = 0;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(ClientError::Unreachable {
                    endpoints: format!("{} (last error: {last_error})", self.endpoints.join(", ")),
                    timeout_ms: self.timeout.as_millis() as u64,
                });
            }
            let target = match self.leader.clone() {
                Some(leader) => leader,
                None => {
                    // Pause once every endpoint has been tried in vain, not before the first try.
                    if next_endpoint > 0 && next_endpoint % self.endpoints.len() == 0 {
                        sleep(RETRY_PAUSE).await;
                    }
                    let target = self.endpoints[next_endpoint % self.endpoints.len()].clone();
                    next_endpoint += 1;
                    target
                }
            };
            let channel = match self.channel_or_say_why(&target).await {
                Ok(channel) => channel,
                Err(failure) => {
                    last_error = failure.message;
                    self.leader = None;
                    refused = if failure.nothing_listens {
                        refused + 1
                    } else {
                        0
                    };
                    if self.fail_when_nothing_listens && refused >= self.endpoints.len() {
                        return Err(ClientError::NothingListens(self.endpoints.join(", ")));
                    }
                    continue;
                }
            };
            refused = 0;
            let call = attempt(bearer.on(channel));
            let attempt_timeout = match retry {
                Retry::Always => READ_ATTEMPT_TIMEOUT.min(deadline - now),
                Retry::OnlyIfNotApplied => deadline - now,
            };
            let status = match timeout(attempt_timeout, call).await {
                Ok(Ok(response)) => {
                    // The node that answered is where the next call goes first.
                    self.leader = Some(target);
                    return Ok(response.into_inner());
                }
                Ok(Err(status)) => status,
                Err(_) => {
                    self.leader = None;
                    self.channels.remove(&target);
                    if retry == Retry::OnlyIfNotApplied {
                        return Err(ClientError::Unknown("the request timed out".to_string()));
                    }
                    continue;
                }
            };
            last_error = format!("{target}: {}", failure_text(&status));
            match ApiError::from_status(&status) {
                Some(ApiError::NotLeader { leader_address, .. }) => {
                    self.leader = leader_address.filter(|address| *address != target);
                    if self.leader.is_none() {
                        sleep(RETRY_PAUSE).await;
                    }
                }
                Some(ApiError::NoQuorum(_)) | Some(ApiError::Overloaded) => {
                    self.leader = None;
                    sleep(RETRY_PAUSE).await;
                }
                // A status with no detail and code Unknown: the connection broke under the
                // call (a server answers reads with a detail). A read goes elsewhere.
                Some(ApiError::OutcomeUnknown(_)) if retry == Retry::Always => {
                    self.leader = None;
                    self.channels.remove(&target);
                }
                // Refused before it was proposed (an accepted request gets "outcome unknown").
                Some(ApiError::ShuttingDown) => {
                    self.leader = None;
                    self.channels.remove(&target);
                }
                Some(error) => return Err(ClientError::Api(error)),
                None if status.code() == Code::Unavailable || connection_broke(&status) => {
                    // The connection failed: the next attempt (or call) goes elsewhere.
                    self.leader = None;
                    self.channels.remove(&target);
                    if retry == Retry::OnlyIfNotApplied {
                        return Err(ClientError::Unknown(status.message().to_string()));
                    }
                }
                None => return Err(ClientError::Other(status.message().to_string())),
            }
        }
    }
}

/// A failed call's status in words, with its cause, and a hint when the connection broke
/// under a plaintext client (the likeliest cause: a node that serves TLS only).
pub(crate) fn failure_text(status: &tonic::Status) -> String {
    let mut text = crate::server::channel::status_text(status);
    if connection_broke(status) {
        text.push_str(crate::server::channel::plaintext_hint());
    }
    text
}

/// Whether a status is the connection failing under the call rather than an answer: what
/// tonic reports when the bytes that came back were not HTTP/2 (a TLS server answering a
/// plaintext client) or the connection dropped.
fn connection_broke(status: &tonic::Status) -> bool {
    let message = status.message();
    status.code() == Code::Cancelled
        || message == "transport error"
        || message.starts_with("h2 protocol error")
        || message.contains("operation was canceled")
}
