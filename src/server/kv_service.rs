//! The client KV service: validates requests, hands them to the event loop, and answers once the
//! write is applied (or the read confirmed by ReadIndex). At a follower, the core passes writes
//! on to the leader in Raft messages (`core/forwarding.rs`) and serves reads itself with a read
//! index from the leader (`core/read_forwarding.rs`); what the core refused as "not leader"
//! goes to the leader through [`super::leader_proxy`].

use std::future::Future;

use bytes::Bytes;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::error::ApiError;
use super::event_loop::{self, ReadResult, WriteResult};
use super::handle::NodeHandle;
use super::leader_proxy::{may_forward, no_forward, LeaderProxy};
use super::proto::ravel::{self as pb, kv_client::KvClient, kv_server::Kv};
use super::tokens::Rights;
use crate::kv::shard::NotOwned;
use crate::kv::RESERVED_KEY_PREFIX;
use crate::kv::{Command, Outcome};

pub const KEY_BYTES_MAX: usize = 4096;
pub const VALUE_BYTES_MAX: usize = 1 << 20;

pub struct KvService {
    node: NodeHandle,
    proxy: LeaderProxy,
}

impl KvService {
    pub fn new(node: NodeHandle) -> Self {
        KvService {
            node,
            proxy: LeaderProxy::default(),
        }
    }

    /// Checks the request's token (`--auth-tokens`) for `needed`; answers whether the request
    /// may be forwarded, and its token, which goes along if it is.
    fn admit<M>(
        &self,
        request: &Request<M>,
        needed: Rights,
    ) -> Result<(bool, Option<AsciiMetadataValue>), ApiError> {
        self.node.auth.check_request(request, needed)?;
        let token = request.metadata().get("authorization").cloned();
        Ok((may_forward(request), token))
    }

    /// A write, answered once applied; refused if the group does not serve its key.
    async fn write(&self, command: Command, may_forward: bool) -> Result<WriteResult, ApiError> {
        let result = self
            .node
            .ask(|reply| event_loop::Request::Write {
                command: command.encode(),
                may_forward,
                reply,
            })
            .await?;
        match result.outcome {
            Outcome::NotOwned(not_owned) => Err(not_owned_error(&not_owned)),
            _ => Ok(result),
        }
    }

    /// Answers a request this node refused: if it was refused for not being the leader, the
    /// leader is known and the request may be forwarded, `call` passes it on (marked so it is
    /// not forwarded again, and bounded in time); otherwise the refusal itself.
    async fn forward<M, T, F, Fut>(
        &self,
        forward: bool,
        error: ApiError,
        message: M,
        token: Option<AsciiMetadataValue>,
        call: F,
    ) -> Result<Response<T>, Status>
    where
        F: FnOnce(KvClient<Channel>, Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let Some(address) = LeaderProxy::target(&error).filter(|_| forward) else {
            return Err(error.into());
        };
        // Boxed: a client call is a large future, and inline it made every request's future
        // (boxed and moved on every call, forwarded or not) 6.6 KB instead of a few hundred bytes.
        Box::pin(async move {
            let leader = self.proxy.client(address).await?;
            let mut request = no_forward(message);
            // The leader checks the client's token as this node did.
            if let Some(token) = token {
                request.metadata_mut().insert("authorization", token);
            }
            self.proxy.relay(address, call(leader, request)).await
        })
        .await
    }
}

/// The error for a key whose partition this group does not serve now: moving (retry here
/// shortly) or not owned (ask the admin).
fn not_owned_error(not_owned: &NotOwned) -> ApiError {
    if not_owned.moving {
        ApiError::Moving {
            partition: not_owned.partition,
        }
    } else {
        ApiError::NotOwned {
            partition: not_owned.partition,
            epoch: not_owned.epoch,
        }
    }
}

/// The rules for a key, checked by the service and, before sending, by Ravel's client (so a
/// value too large for gRPC's message limit gets this error, not gRPC's).
pub fn check_key(key: &Bytes) -> Result<(), ApiError> {
    if key.is_empty() {
        return Err(ApiError::InvalidArgument("the key is empty".to_string()));
    }
    if key[0] == RESERVED_KEY_PREFIX {
        return Err(ApiError::InvalidArgument(
            "keys starting with a zero byte are reserved for Ravel".to_string(),
        ));
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(ApiError::TooLarge(format!(
            "the key has {} bytes; at most {KEY_BYTES_MAX} are allowed",
            key.len()
        )));
    }
    Ok(())
}

/// The rules for a value (see [`check_key`]).
pub fn check_value(value: &Bytes) -> Result<(), ApiError> {
    if value.len() > VALUE_BYTES_MAX {
        return Err(ApiError::TooLarge(format!(
            "the value has {} bytes; at most {VALUE_BYTES_MAX} are allowed",
            value.len()
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let _timer = self.node.metrics.time_request("put");
        let (forward, token) = self.admit(&request, Rights::ReadWrite)?;
        let message = request.into_inner();
        check_key(&message.key)?;
        check_value(&message.value)?;
        let command = Command::Put {
            key: message.key.clone(),
            value: message.value.clone(),
        };
        match self.write(command, forward).await {
            Ok(result) => Ok(Response::new(pb::PutResponse {
                index: result.index,
            })),
            Err(error) => {
                self.forward(
                    forward,
                    error,
                    message,
                    token,
                    |mut leader, request| async move { leader.put(request).await },
                )
                .await
            }
        }
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let _timer = self.node.metrics.time_request("get");
        let (forward, token) = self.admit(&request, Rights::ReadOnly)?;
        let message = request.into_inner();
        check_key(&message.key)?;
        let (key, stale) = (message.key.clone(), message.stale);
        let read = self
            .node
            .ask(|reply| event_loop::Request::Read {
                query: key,
                stale,
                may_forward: forward,
                reply,
            })
            .await;
        match read {
            Ok(ReadResult {
                value: Ok(value),
                index,
            }) => Ok(Response::new(pb::GetResponse {
                found: value.is_some(),
                value: value.unwrap_or_default(),
                index,
            })),
            Ok(ReadResult {
                value: Err(not_owned),
                ..
            }) => Err(not_owned_error(&not_owned).into()),
            Err(error) => {
                self.forward(
                    forward,
                    error,
                    message,
                    token,
                    |mut leader, request| async move { leader.get(request).await },
                )
                .await
            }
        }
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let _timer = self.node.metrics.time_request("delete");
        let (forward, token) = self.admit(&request, Rights::ReadWrite)?;
        let message = request.into_inner();
        check_key(&message.key)?;
        let key = message.key.clone();
        match self.write(Command::Delete { key }, forward).await {
            Ok(result) => Ok(Response::new(pb::DeleteResponse {
                existed: matches!(result.outcome, Outcome::Deleted { existed: true }),
                index: result.index,
            })),
            Err(error) => {
                self.forward(
                    forward,
                    error,
                    message,
                    token,
                    |mut leader, request| async move { leader.delete(request).await },
                )
                .await
            }
        }
    }

    async fn compare_and_swap(
        &self,
        request: Request<pb::CompareAndSwapRequest>,
    ) -> Result<Response<pb::CompareAndSwapResponse>, Status> {
        let _timer = self.node.metrics.time_request("cas");
        let (forward, token) = self.admit(&request, Rights::ReadWrite)?;
        let message = request.into_inner();
        check_key(&message.key)?;
        check_value(&message.expected)?;
        check_value(&message.new_value)?;
        let command = Command::CompareAndSwap {
            key: message.key.clone(),
            expected: (!message.expected_absent).then(|| message.expected.clone()),
            new: message.new_value.clone(),
        };
        let result =
            match self.write(command, forward).await {
                Ok(result) => result,
                Err(error) => {
                    return self
                    .forward(forward, error, message, token, |mut leader, request| async move {
                        leader.compare_and_swap(request).await
                    })
                    .await;
                }
            };
        let (swapped, current) = match result.outcome {
            Outcome::CompareAndSwap { swapped, current } => (swapped, current),
            other => {
                return Err(Status::internal(format!(
                    "unexpected outcome for compare-and-swap: {other:?}"
                )))
            }
        };
        Ok(Response::new(pb::CompareAndSwapResponse {
            swapped,
            current_found: current.is_some(),
            current: current.unwrap_or_default(),
            index: result.index,
        }))
    }
}
