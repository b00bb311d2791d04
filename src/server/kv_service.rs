//! The client KV service: validates requests, hands them to the event loop, and answers once the
//! write is applied (or the read confirmed by ReadIndex).

use bytes::Bytes;
use tonic::{Request, Response, Status};

use super::address_book::RESERVED_KEY_PREFIX;
use super::error::ApiError;
use super::event_loop::{self, ReadResult, WriteResult};
use super::handle::NodeHandle;
use super::proto::ravel::{self as pb, kv_server::Kv};
use crate::kv::{Command, Outcome};

pub const KEY_BYTES_MAX: usize = 4096;
pub const VALUE_BYTES_MAX: usize = 1 << 20;

pub struct KvService {
    node: NodeHandle,
}

impl KvService {
    pub fn new(node: NodeHandle) -> Self {
        KvService { node }
    }

    async fn write(&self, command: Command) -> Result<WriteResult, Status> {
        Ok(self
            .node
            .ask(|reply| event_loop::Request::Write { command, reply })
            .await?)
    }
}

fn check_key(key: &Bytes) -> Result<(), ApiError> {
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

fn check_value(value: &Bytes) -> Result<(), ApiError> {
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
        let pb::PutRequest { key, value } = request.into_inner();
        check_key(&key)?;
        check_value(&value)?;
        let result = self.write(Command::Put { key, value }).await?;
        Ok(Response::new(pb::PutResponse {
            index: result.index,
        }))
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let pb::GetRequest { key, stale } = request.into_inner();
        check_key(&key)?;
        let ReadResult { value, index } = self
            .node
            .ask(|reply| event_loop::Request::Read { key, stale, reply })
            .await?;
        Ok(Response::new(pb::GetResponse {
            found: value.is_some(),
            value: value.unwrap_or_default(),
            index,
        }))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let pb::DeleteRequest { key } = request.into_inner();
        check_key(&key)?;
        let result = self.write(Command::Delete { key }).await?;
        let existed = matches!(result.outcome, Outcome::Deleted { existed: true });
        Ok(Response::new(pb::DeleteResponse {
            existed,
            index: result.index,
        }))
    }

    async fn compare_and_swap(
        &self,
        request: Request<pb::CompareAndSwapRequest>,
    ) -> Result<Response<pb::CompareAndSwapResponse>, Status> {
        let pb::CompareAndSwapRequest {
            key,
            expected_absent,
            expected,
            new_value,
        } = request.into_inner();
        check_key(&key)?;
        check_value(&expected)?;
        check_value(&new_value)?;
        let command = Command::CompareAndSwap {
            key,
            expected: (!expected_absent).then_some(expected),
            new: new_value,
        };
        let result = self.write(command).await?;
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
