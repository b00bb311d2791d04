//! The membership service: the leader's side of the join workflow (`UpdateNode`: admission hook,
//! redirect to the leader, join pool), leave, the member list and this node's status.

use std::collections::BTreeMap;

use tonic::{Request, Response, Status};

use super::error::ApiError;
use super::event_loop::{self, member_state_name, role_name};
use super::handle::NodeHandle;
use super::hooks::{Hooks, NotAdmitted};
use super::peer_auth::PeerAuth;
use super::proto::ravel::{
    self as pb, membership_server::Membership, update_node_response::Outcome,
};
use super::tokens::Rights;
use crate::core::Role;
use crate::kv::KvStateMachine;
use crate::replica::StateMachine;

pub struct MembershipService<S: StateMachine = KvStateMachine> {
    node: NodeHandle<S>,
    hooks: Hooks,
    auth: PeerAuth,
}

impl<S: StateMachine> MembershipService<S> {
    pub fn new(node: NodeHandle<S>, hooks: Hooks, auth: PeerAuth) -> Self {
        MembershipService { node, hooks, auth }
    }
}

/// An address a peer can dial: `host:port` with a numeric port.
pub fn check_address(address: &str) -> Result<(), ApiError> {
    let valid = address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if valid && !address.contains(char::is_whitespace) {
        Ok(())
    } else {
        Err(ApiError::InvalidArgument(format!(
            "address {address:?} is not of the form host:port"
        )))
    }
}

#[tonic::async_trait]
impl<S: StateMachine> Membership for MembershipService<S> {
    async fn update_node(
        &self,
        request: Request<pb::UpdateNodeRequest>,
    ) -> Result<Response<pb::UpdateNodeResponse>, Status> {
        // A joiner becomes a peer: it must hold a peer certificate (naming it, if asked).
        self.auth.check(&request, request.get_ref().node_id)?;
        let request = request.into_inner();
        self.node.check_cluster(request.cluster_id)?;
        if request.node_id == 0 {
            return Err(ApiError::InvalidArgument("node id 0 is reserved".to_string()).into());
        }
        check_address(&request.address)?;
        let labels: BTreeMap<String, String> = request.labels.into_iter().collect();
        match self
            .hooks
            .admit(request.node_id, &request.address, &labels)
            .await
        {
            Ok(()) => {}
            Err(NotAdmitted::Busy) => return Err(ApiError::Overloaded.into()),
            Err(NotAdmitted::Refused(reason)) => {
                tracing::info!(node = request.node_id, %reason, "join refused by the update-node hook");
                return Ok(Response::new(pb::UpdateNodeResponse {
                    outcome: Outcome::Rejected as i32,
                    reason,
                    ..Default::default()
                }));
            }
        }
        let view = self.node.view().await?;
        let redirect = |leader_id: Option<u64>, leader_address: Option<String>| {
            Response::new(pb::UpdateNodeResponse {
                outcome: Outcome::Redirect as i32,
                leader_id: leader_id.unwrap_or(0),
                leader_address: leader_address.unwrap_or_default(),
                leader_commit: view.status.commit,
                ..Default::default()
            })
        };
        if view.status.role != Role::Leader {
            return Ok(redirect(view.status.leader, view.leader_address.clone()));
        }
        let joined = self
            .node
            .ask(|reply| event_loop::Request::Join {
                node: request.node_id,
                address: request.address.clone(),
                last_index: request.last_index,
                follower_only: request.follower_only,
                nonce: request.join_nonce,
                reply,
            })
            .await;
        match joined {
            Ok(()) => Ok(Response::new(pb::UpdateNodeResponse {
                outcome: Outcome::Joined as i32,
                leader_id: self.node.id,
                leader_commit: view.status.commit,
                ..Default::default()
            })),
            Err(ApiError::NotLeader {
                leader_id,
                leader_address,
            }) => Ok(redirect(leader_id, leader_address)),
            Err(error) => Err(error.into()),
        }
    }

    async fn leave(
        &self,
        request: Request<pb::LeaveRequest>,
    ) -> Result<Response<pb::LeaveResponse>, Status> {
        self.node.auth.check_request(&request, Rights::ReadWrite)?;
        let request = request.into_inner();
        if request.cluster_id != 0 {
            self.node.check_cluster(request.cluster_id)?;
        }
        let node = match request.node_id {
            0 => self.node.id,
            node => node,
        };
        self.node
            .ask(|reply| event_loop::Request::Leave { node, reply })
            .await?;
        Ok(Response::new(pb::LeaveResponse {}))
    }

    async fn members(
        &self,
        request: Request<pb::MembersRequest>,
    ) -> Result<Response<pb::MembersResponse>, Status> {
        self.node.auth.check_request(&request, Rights::ReadOnly)?;
        let view = self.node.view().await?;
        if view.status.member == crate::core::MemberState::Removed {
            // What it holds is the membership from before its removal: out of date.
            return Err(Status::failed_precondition(
                "this node was removed from the cluster, so it does not know the members; \
                 ask a member (ravel members --endpoints ADDR)",
            ));
        }
        let membership = &view.membership;
        let members = membership
            .replicas()
            .into_iter()
            .map(|id| {
                let role = if membership.voters.contains(&id) {
                    "voter"
                } else if membership.outgoing_voters.contains(&id) {
                    "outgoing"
                } else {
                    "learner"
                };
                pb::Member {
                    id,
                    address: view.addresses.get(&id).cloned().unwrap_or_default(),
                    role: role.to_string(),
                }
            })
            .collect();
        Ok(Response::new(pb::MembersResponse {
            members,
            leader_id: view.status.leader.unwrap_or(0),
        }))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let view = self.node.view().await?;
        let status = view.status;
        Ok(Response::new(pb::StatusResponse {
            node_id: status.id,
            cluster_id: self.node.cluster_id.get(),
            address: view.addresses.get(&status.id).cloned().unwrap_or_default(),
            role: role_name(status.role).to_string(),
            member_state: member_state_name(status.member).to_string(),
            term: status.term,
            leader_id: status.leader.unwrap_or(0),
            leader_address: view.leader_address.unwrap_or_default(),
            commit_index: status.commit,
            applied_index: status.applied,
            last_index: status.last_index,
        }))
    }
}
