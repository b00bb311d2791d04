//! The admin's gRPC service (`ravel admin`): servers register and report their groups' leaders,
//! and anyone reads the whole directory. Every replica of the admin group serves it; a follower
//! passes writes on to the admin's leader inside Raft (`core/forwarding.rs`) and serves the
//! overview with a read index from it, so the answer is linearizable wherever it was asked.
//!
//! An operator's changes (`leave`, `retire-group`, `move-limit`, `move-rate`) need a
//! read-write token when the admin checks tokens (`--auth-tokens`). Registering and reporting
//! leaders are the data nodes' (mutual TLS guards those, as it guards peers), and the overview
//! is what every router reads: neither needs one.

use tonic::{Request, Response, Status};

use super::error::ApiError;
use super::event_loop::{self, ReadResult, WriteResult};
use super::handle::NodeHandle;
use super::proto::ravel::{self as pb, directory_server::Directory as DirectoryRpc};
use super::tokens::Rights;
use crate::directory::{
    Directory, DirectoryAnswer, DirectoryCommand, DirectoryOutcome, DirectoryQuery, Move, MovePhase,
};

pub struct DirectoryService {
    node: NodeHandle<Directory>,
}

impl DirectoryService {
    pub fn new(node: NodeHandle<Directory>) -> Self {
        DirectoryService { node }
    }

    async fn write(&self, command: DirectoryCommand) -> Result<DirectoryOutcome, ApiError> {
        let result: WriteResult<DirectoryOutcome> = self
            .node
            .ask(|reply| event_loop::Request::Write {
                command: command.encode(),
                may_forward: true,
                reply,
            })
            .await?;
        Ok(result.outcome)
    }
}

/// The directory's refusal of a command, as a gRPC status a client can act on.
fn refused(outcome: DirectoryOutcome) -> Status {
    match outcome {
        DirectoryOutcome::Refused(reason) => Status::failed_precondition(reason),
        DirectoryOutcome::NotInitialized => Status::unavailable(
            "the admin has no settings yet (its first replica proposes them when it starts); \
             retry shortly",
        ),
        DirectoryOutcome::Invalid(reason) => Status::internal(format!(
            "the admin could not decode its own command: {reason}"
        )),
        other => Status::internal(format!("unexpected answer from the directory: {other:?}")),
    }
}

#[tonic::async_trait]
impl DirectoryRpc for DirectoryService {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let message = request.into_inner();
        // Sorted: the command's bytes do not depend on the order a map was sent in.
        let mut labels: Vec<(String, String)> = message.labels.into_iter().collect();
        labels.sort();
        let command = DirectoryCommand::Register {
            token: message.token,
            address: message.address,
            labels,
        };
        match self.write(command).await? {
            DirectoryOutcome::Registered {
                node,
                group,
                leader,
                seeds,
                partitions,
            } => Ok(Response::new(pb::RegisterResponse {
                node_id: node,
                group_id: group,
                leader_id: leader.unwrap_or(0),
                seeds,
                partitions,
            })),
            other => Err(refused(other)),
        }
    }

    async fn report_leader(
        &self,
        request: Request<pb::ReportLeaderRequest>,
    ) -> Result<Response<pb::ReportLeaderResponse>, Status> {
        let message = request.into_inner();
        let command = DirectoryCommand::ReportLeader {
            group: message.group_id,
            leader: message.leader_id,
            term: message.term,
        };
        match self.write(command).await? {
            DirectoryOutcome::LeaderRecorded => Ok(Response::new(pb::ReportLeaderResponse {
                recorded: true,
                recorded_term: message.term,
            })),
            DirectoryOutcome::LeaderStale { recorded } => {
                Ok(Response::new(pb::ReportLeaderResponse {
                    recorded: false,
                    recorded_term: recorded,
                }))
            }
            other => Err(refused(other)),
        }
    }

    async fn leave(
        &self,
        request: Request<pb::LeaveServerRequest>,
    ) -> Result<Response<pb::LeaveServerResponse>, Status> {
        self.node.auth.check_request(&request, Rights::ReadWrite)?;
        let node = request.into_inner().node_id;
        match self.write(DirectoryCommand::Leave { node }).await? {
            DirectoryOutcome::Left { group, members } => {
                Ok(Response::new(pb::LeaveServerResponse {
                    group_id: group,
                    members,
                }))
            }
            other => Err(refused(other)),
        }
    }

    async fn retire_group(
        &self,
        request: Request<pb::RetireGroupRequest>,
    ) -> Result<Response<pb::RetireGroupResponse>, Status> {
        self.node.auth.check_request(&request, Rights::ReadWrite)?;
        let group = request.into_inner().group_id;
        match self.write(DirectoryCommand::RetireGroup { group }).await? {
            DirectoryOutcome::Retiring { partitions } => {
                Ok(Response::new(pb::RetireGroupResponse { partitions }))
            }
            other => Err(refused(other)),
        }
    }

    async fn set_move_limit(
        &self,
        request: Request<pb::SetMoveLimitRequest>,
    ) -> Result<Response<pb::SetMoveLimitResponse>, Status> {
        self.node.auth.check_request(&request, Rights::ReadWrite)?;
        let limit = request.into_inner().limit;
        match self.write(DirectoryCommand::SetMoveLimit { limit }).await? {
            DirectoryOutcome::MoveLimitSet => Ok(Response::new(pb::SetMoveLimitResponse {})),
            other => Err(refused(other)),
        }
    }

    async fn set_move_rate(
        &self,
        request: Request<pb::SetMoveRateRequest>,
    ) -> Result<Response<pb::SetMoveRateResponse>, Status> {
        self.node.auth.check_request(&request, Rights::ReadWrite)?;
        let bytes_per_second = request.into_inner().bytes_per_second;
        match self
            .write(DirectoryCommand::SetMoveRate { bytes_per_second })
            .await?
        {
            DirectoryOutcome::MoveRateSet => Ok(Response::new(pb::SetMoveRateResponse {})),
            other => Err(refused(other)),
        }
    }

    async fn overview(
        &self,
        _request: Request<pb::OverviewRequest>,
    ) -> Result<Response<pb::OverviewResponse>, Status> {
        let result: ReadResult<DirectoryAnswer> = self
            .node
            .ask(|reply| event_loop::Request::Read {
                query: DirectoryQuery::Overview,
                stale: false,
                may_forward: true,
                reply,
            })
            .await?;
        let DirectoryAnswer::Overview(directory) = result.value else {
            return Err(Status::internal("the directory answered another question"));
        };
        let view = self.node.view().await?;
        Ok(Response::new(overview(
            &directory,
            self.node.id,
            view.status.leader.unwrap_or(0),
            view.leader_address.unwrap_or_default(),
            result.index,
        )))
    }
}

/// The directory as the wire carries it.
pub fn overview(
    directory: &Directory,
    admin_id: u64,
    admin_leader_id: u64,
    admin_leader_address: String,
    admin_index: u64,
) -> pb::OverviewResponse {
    let table = directory.table();
    pb::OverviewResponse {
        partitions: directory.settings().partitions,
        group_size: directory.settings().group_size,
        servers: directory
            .servers()
            .iter()
            .map(|(&id, server)| pb::DirectoryServer {
                id,
                address: server.address.clone(),
                group_id: server.group,
                labels: server.labels.iter().cloned().collect(),
            })
            .collect(),
        groups: directory
            .groups()
            .iter()
            .map(|(&id, group)| pb::DirectoryGroup {
                id,
                members: group.members.iter().copied().collect(),
                leader_id: group.leader.unwrap_or(0),
                leader_term: group.leader_term,
                partitions: table.map_or(0, |table| table.load(id) as u32),
                retiring: group.retiring,
            })
            .collect(),
        owners: table.map_or_else(Vec::new, |table| {
            (0..table.partitions())
                .filter_map(|partition| table.owner(partition))
                .map(|(group_id, epoch)| pb::PartitionOwner { group_id, epoch })
                .collect()
        }),
        admin_id,
        admin_leader_id,
        admin_leader_address,
        admin_index,
        admin_replicas: directory
            .replica_addresses()
            .iter()
            .map(|(&id, address)| (id, address.clone()))
            .collect(),
        moves: directory
            .moves()
            .runs()
            .map(|moving| partition_move(moving, moving.phase.name()))
            .collect(),
        moves_pending: table.map_or(0, |table| directory.moves().pending(table) as u32),
        move_limit: directory.moves().limit(),
        moves_ended: directory
            .moves()
            .ended()
            .map(|moving| {
                let ended = match moving.phase {
                    MovePhase::RolledBack => MovePhase::RolledBack.name(),
                    _ => "finished",
                };
                partition_move(moving, ended)
            })
            .collect(),
        moves_started: directory.moves().totals().started,
        moves_committed: directory.moves().totals().committed,
        moves_rolled_back: directory.moves().totals().rolled_back,
        move_rate: directory.moves().rate(),
    }
}

fn partition_move(moving: &Move, phase: &str) -> pb::PartitionMove {
    pb::PartitionMove {
        partition: moving.partition,
        from_group: moving.from,
        to_group: moving.to,
        epoch: moving.epoch,
        phase: phase.to_string(),
    }
}
