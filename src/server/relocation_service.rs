//! The relocation service of a sharded store's data node: the admin's leader moves a partition
//! between groups through it (`directory::mover` says in what order). A step is a
//! `Command::Move` written through the group's log like a client's write (a follower passes it
//! on to its leader); an export reads this replica's own applied state, which for a frozen
//! partition no longer changes once the freeze is applied, so any replica that applied it
//! answers the same.
//!
//! So an export takes the partition's pairs off the event loop once per move (one pass over
//! the store, the pairs shared rather than copied), sorts them here, and answers every chunk of
//! that move from them: a pass over the whole store per 256 KiB chunk would stall the node's
//! writes for as long, again and again.
//!
//! With `--auth-tokens`, both need a read-write token: the admin presents the first one of its
//! own file (`Tokens::first_read_write`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tonic::{Request, Response, Status};

use super::error::ApiError;
use super::event_loop::{self, WriteResult};
use super::handle::NodeHandle;
use super::kv_service::KEY_BYTES_MAX;
use super::proto::ravel::{self as pb, relocation_server::Relocation};
use super::tokens::Rights;
use crate::directory::CHUNK_BYTES_MAX;
use crate::kv::shard::Step;
use crate::kv::{export_chunk, Command, Outcome};

/// Partitions whose sorted pairs are kept for the chunks still to come, at most (a few moves
/// are in flight at once).
const EXPORTS_KEPT_MAX: usize = 8;

/// A frozen partition's pairs, sorted, as of a freeze: by partition and freeze index.
type Exports = BTreeMap<(u32, u64), Arc<Vec<(Bytes, Bytes)>>>;

pub struct RelocationService {
    node: NodeHandle,
    exports: Mutex<Exports>,
    /// Bytes of pairs per exported chunk, about.
    chunk_bytes: usize,
}

impl RelocationService {
    pub fn new(node: NodeHandle, chunk_bytes: usize) -> Self {
        assert!((1..=CHUNK_BYTES_MAX).contains(&chunk_bytes));
        RelocationService {
            node,
            exports: Mutex::default(),
            chunk_bytes,
        }
    }

    /// The sorted pairs of `partition` frozen at `freeze` (kept, or taken now); `Err` with
    /// this replica's applied index if it has not applied the freeze yet.
    async fn frozen_pairs(
        &self,
        partition: u32,
        freeze: u64,
    ) -> Result<Result<Arc<Vec<(Bytes, Bytes)>>, u64>, ApiError> {
        if let Some(pairs) = self
            .exports
            .lock()
            .expect("not poisoned")
            .get(&(partition, freeze))
        {
            return Ok(Ok(pairs.clone()));
        }
        let taken = self
            .node
            .inspect(move |state| {
                let applied = state.applied_index();
                if applied < freeze {
                    Err(applied)
                } else {
                    Ok(state.partition_pairs(partition))
                }
            })
            .await?;
        let mut pairs = match taken {
            Ok(pairs) => pairs,
            Err(applied) => return Ok(Err(applied)),
        };
        pairs.sort_unstable();
        let pairs = Arc::new(pairs);
        let mut exports = self.exports.lock().expect("not poisoned");
        if exports.len() >= EXPORTS_KEPT_MAX {
            // The oldest freeze goes first: its move is the likeliest to be over.
            let oldest = exports
                .keys()
                .min_by_key(|(_, freeze)| *freeze)
                .copied()
                .expect("not empty");
            exports.remove(&oldest);
        }
        exports.insert((partition, freeze), pairs.clone());
        Ok(Ok(pairs))
    }
}

#[tonic::async_trait]
impl Relocation for RelocationService {
    async fn step(
        &self,
        request: Request<pb::MoveStepRequest>,
    ) -> Result<Response<pb::MoveStepResponse>, Status> {
        self.node.auth.check_request(&request, Rights::ReadWrite)?;
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
        self.node.auth.check_request(&request, Rights::ReadWrite)?;
        let message = request.into_inner();
        if message.after.len() > KEY_BYTES_MAX {
            return Err(ApiError::InvalidArgument(format!(
                "`after` has {} bytes; a key has at most {KEY_BYTES_MAX}",
                message.after.len()
            ))
            .into());
        }
        let after: Option<Bytes> = message.has_after.then_some(message.after);
        let (partition, freeze) = (message.partition, message.applied_at_least);
        let answer = match self.frozen_pairs(partition, freeze).await? {
            Err(applied) => pb::ExportResponse {
                pairs: Vec::new(),
                last: false,
                behind: true,
                applied_index: applied,
            },
            Ok(sorted) => {
                let (pairs, last) = export_chunk(&sorted, after.as_deref(), self.chunk_bytes);
                pb::ExportResponse {
                    pairs: pairs
                        .into_iter()
                        .map(|(key, value)| pb::KeyValue { key, value })
                        .collect(),
                    last,
                    behind: false,
                    applied_index: freeze,
                }
            }
        };
        Ok(Response::new(answer))
    }
}
