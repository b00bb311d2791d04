//! The key-value service on every admin replica: a gRPC front door to the sharded store. Each
//! request goes to the group that owns its key, through the same [`RoutedClient`] as the HTTP
//! API, so `ravel put/get` with the admin's address, `ravel bench`, and any gRPC client (grpcurl,
//! h2load, clients in other languages) work against the admin as against one group.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::client::ClientError;
use crate::routed_client::{RoutedClient, RoutedError};
use crate::server::kv_service::{check_key, check_value};
use crate::server::proto::ravel::{self as pb, kv_server::Kv};
use crate::server::tokens::{Auth, Rights};
use crate::server::ApiError;

pub struct RoutingKvService {
    routed: Arc<RoutedClient>,
    /// The admin replica's own `--auth-tokens`: callers are checked here, and the routed
    /// request carries the admin's token on to the group.
    auth: Auth,
}

impl RoutingKvService {
    pub fn new(routed: Arc<RoutedClient>, auth: Auth) -> Self {
        RoutingKvService { routed, auth }
    }
}

/// A routed request's failure as the caller sees it. A group's "not leader" is not passed on
/// (a Ravel client would follow it to that group and send it keys of others): the routing
/// client already followed it, so what is left is "unavailable".
fn status(error: RoutedError) -> Status {
    match error {
        RoutedError::Group(ClientError::Api(ApiError::NotLeader { .. })) => {
            Status::unavailable("the owning group has no leader; retry shortly")
        }
        RoutedError::Group(ClientError::Api(error)) => error.into(),
        RoutedError::Group(ClientError::Unknown(reason)) => ApiError::OutcomeUnknown(reason).into(),
        other => Status::unavailable(other.to_string()),
    }
}

#[tonic::async_trait]
impl Kv for RoutingKvService {
    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        self.auth.check_request(&request, Rights::ReadWrite)?;
        let message = request.into_inner();
        check_key(&message.key)?;
        check_value(&message.value)?;
        let index = self
            .routed
            .put(message.key, message.value)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::PutResponse { index }))
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        self.auth.check_request(&request, Rights::ReadOnly)?;
        let message = request.into_inner();
        check_key(&message.key)?;
        let value = self
            .routed
            .get(message.key, message.stale)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::GetResponse {
            found: value.is_some(),
            value: value.unwrap_or_default(),
            index: 0,
        }))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        self.auth.check_request(&request, Rights::ReadWrite)?;
        let message = request.into_inner();
        check_key(&message.key)?;
        let existed = self.routed.delete(message.key).await.map_err(status)?;
        Ok(Response::new(pb::DeleteResponse { existed, index: 0 }))
    }

    async fn compare_and_swap(
        &self,
        request: Request<pb::CompareAndSwapRequest>,
    ) -> Result<Response<pb::CompareAndSwapResponse>, Status> {
        self.auth.check_request(&request, Rights::ReadWrite)?;
        let message = request.into_inner();
        check_key(&message.key)?;
        let expected = (!message.expected_absent).then_some(message.expected);
        let (swapped, current) = self
            .routed
            .compare_and_swap(message.key, expected, message.new_value)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::CompareAndSwapResponse {
            swapped,
            current_found: current.is_some(),
            current: current.unwrap_or_default(),
            index: 0,
        }))
    }
}
