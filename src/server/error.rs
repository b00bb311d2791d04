//! The errors a client or peer can see, and their gRPC form: a status code for generic tooling and
//! an encoded `ErrorDetail` in the status details that a client can act on (where the leader is).

use bytes::Bytes;
use prost::Message as _;
use thiserror::Error;
use tonic::{Code, Status};

use super::proto::ravel::{error_detail::Kind, ErrorDetail};
use crate::core::NodeId;

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ApiError {
    #[error("{}", not_leader_message(*leader_id, leader_address.as_deref()))]
    NotLeader {
        leader_id: Option<NodeId>,
        leader_address: Option<String>,
    },
    #[error("no quorum: {0}; retry when a majority of the cluster is reachable")]
    NoQuorum(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("too large: {0}")]
    TooLarge(String),
    #[error("the node is shutting down; retry at another node")]
    ShuttingDown,
    #[error("the node is overloaded; retry after a short pause")]
    Overloaded,
    #[error("request for cluster {got}, but this node belongs to cluster {expected}")]
    WrongCluster { expected: u64, got: u64 },
    #[error("{0}")]
    AlreadyExists(String),
    /// The request may or may not have taken effect (leadership changed after it was accepted).
    #[error("outcome unknown: {0}; read the key to find out whether the write took effect")]
    OutcomeUnknown(String),
    #[error("storage failed: {0}")]
    StorageFailed(String),
}

fn not_leader_message(leader_id: Option<NodeId>, leader_address: Option<&str>) -> String {
    match (leader_id, leader_address) {
        (Some(id), Some(address)) => {
            format!("not the leader; the leader is node {id} at {address}")
        }
        (Some(id), None) => format!("not the leader; the leader is node {id} (address unknown)"),
        _ => "not the leader, and no leader is known yet; retry shortly".to_string(),
    }
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Status {
        let message = error.to_string();
        let (code, kind, leader_id, leader_address) = match &error {
            ApiError::NotLeader {
                leader_id,
                leader_address,
            } => (
                Code::FailedPrecondition,
                Kind::NotLeader,
                leader_id.unwrap_or(0),
                leader_address.clone().unwrap_or_default(),
            ),
            ApiError::NoQuorum(_) => (Code::Unavailable, Kind::NoQuorum, 0, String::new()),
            ApiError::InvalidArgument(_) | ApiError::AlreadyExists(_) => (
                Code::InvalidArgument,
                Kind::InvalidArgument,
                0,
                String::new(),
            ),
            ApiError::TooLarge(_) => (Code::InvalidArgument, Kind::TooLarge, 0, String::new()),
            ApiError::ShuttingDown | ApiError::StorageFailed(_) => {
                (Code::Unavailable, Kind::ShuttingDown, 0, String::new())
            }
            ApiError::Overloaded => (Code::ResourceExhausted, Kind::Overloaded, 0, String::new()),
            ApiError::WrongCluster { .. } => (
                Code::FailedPrecondition,
                Kind::WrongCluster,
                0,
                String::new(),
            ),
            ApiError::OutcomeUnknown(_) => (Code::Unknown, Kind::Unspecified, 0, String::new()),
        };
        let detail = ErrorDetail {
            kind: kind as i32,
            leader_id,
            leader_address,
        };
        Status::with_details(code, message, Bytes::from(detail.encode_to_vec()))
    }
}

impl ApiError {
    /// Reads an error back from a status (the client side of `From<ApiError> for Status`).
    /// Statuses without a Ravel detail (a transport failure, a timeout) give `None`.
    pub fn from_status(status: &Status) -> Option<ApiError> {
        let detail = ErrorDetail::decode(status.details()).ok()?;
        let message = status.message().to_string();
        Some(match detail.kind() {
            Kind::NotLeader => ApiError::NotLeader {
                leader_id: (detail.leader_id != 0).then_some(detail.leader_id),
                leader_address: (!detail.leader_address.is_empty())
                    .then_some(detail.leader_address),
            },
            Kind::NoQuorum => ApiError::NoQuorum(message),
            Kind::InvalidArgument => ApiError::InvalidArgument(message),
            Kind::TooLarge => ApiError::TooLarge(message),
            Kind::ShuttingDown => ApiError::ShuttingDown,
            Kind::Overloaded => ApiError::Overloaded,
            Kind::WrongCluster => ApiError::InvalidArgument(message),
            Kind::Unspecified if status.code() == Code::Unknown => {
                ApiError::OutcomeUnknown(message)
            }
            Kind::Unspecified => return None,
        })
    }
}
