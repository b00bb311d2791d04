//! The relocation service of a sharded store's data node: the admin's leader moves a partition
//! between groups through it (`directory::mover` says in what order). A step is a
//! `Command::Move` written through the group's log like a client's write (a follower passes it
//! on to its leader); an export reads this replica's own applied state, which for a frozen
//! partition no longer changes once the freeze is applied, so any replica that applied it
//! answers the same.

use bytes::Bytes;
use tonic::{Request, Response, Status};

use super::error::ApiError;
use super::event_loop::{self, WriteResult};
use super::handle::NodeHandle;
use super::kv_service::KEY_BYTES_MAX;
use super::proto::ravel::{self as pb, relocation_server::Relocation};
use crate::directory::CHUNK_BYTES;
use crate::kv::shard::Step;
use crate::kv::{Command, Outcome};

pub struct RelocationService {
    node: NodeHandle,
}

impl RelocationService {
    pub fn new(node: NodeHandle) -> Self {
        RelocationService { node }
    }
}

#[tonic::async_trait]
impl Relocation for RelocationService {
    async fn step(
        &self,
        request: Request<pb::MoveStepRequest>,
    ) -> Result<Response<pb::MoveStepResponse>, Status> {
        let command = request.into_inner().command;
        match Command::decode(&command) {
            Ok(Command::Move { .. }) => {}
            Ok(_) => {
                return Err(ApiError::InvalidArgument(
                    "a move step must be a move command".to_string(),
                )
                .into())
            }
            Err(error) => {
                return Err(ApiError::InvalidArgument(format!("the move step: {error}")).into())
            }
        }
        let written: WriteResult = self
            .node
            .ask(|reply| event_loop::Request::Write {
                command,
                may_forward: true,
                reply,
            })
            .await?;
        let (result, reason) = match written.outcome {
            Outcome::MoveStep(Step::Done) => (pb::move_step_response::Result::Done, String::new()),
            Outcome::MoveStep(Step::AlreadyDone) => {
                (pb::move_step_response::Result::AlreadyDone, String::new())
            }
            Outcome::MoveStep(Step::Refused(reason)) => {
                (pb::move_step_response::Result::Refused, reason)
            }
            other => {
                return Err(Status::internal(format!(
                    "a move step applied with the outcome {other:?}"
                )))
            }
        };
        Ok(Response::new(pb::MoveStepResponse {
            result: result as i32,
            reason,
            index: written.index,
        }))
    }

    async fn export(
        &self,
        request: Request<pb::ExportRequest>,
    ) -> Result<Response<pb::ExportResponse>, Status> {
        let message = request.into_inner();
        if message.after.len() > KEY_BYTES_MAX {
            return Err(ApiError::InvalidArgument(format!(
                "`after` has {} bytes; a key has at most {KEY_BYTES_MAX}",
                message.after.len()
            ))
            .into());
        }
        let after: Option<Bytes> = message.has_after.then_some(message.after);
        let (partition, wanted) = (message.partition, message.applied_at_least);
        let answer = self
            .node
            .inspect(move |state| {
                let applied = state.applied_index();
                if applied < wanted {
                    return pb::ExportResponse {
                        pairs: Vec::new(),
                        last: false,
                        behind: true,
                        applied_index: applied,
                    };
                }
                let (pairs, last) = state.export(partition, after.as_deref(), CHUNK_BYTES);
                pb::ExportResponse {
                    pairs: pairs
                        .into_iter()
                        .map(|(key, value)| pb::KeyValue { key, value })
                        .collect(),
                    last,
                    behind: false,
                    applied_index: applied,
                }
            })
            .await?;
        Ok(Response::new(answer))
    }
}
