//! The errors a request can end with, as a client sees them. The replica decides them (it knows
//! why a request failed); the gRPC and HTTP services only translate them (`server::error`).

use thiserror::Error;

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
    /// A sharded store's data group does not serve this key's partition (it never did, or it
    /// moved): the client reads the admin's directory again and asks the owner.
    #[error("partition {partition} is not served by this group{}; ask the admin which group owns it", if *epoch > 0 { format!(" (it was, up to epoch {epoch})") } else { String::new() })]
    NotOwned { partition: u32, epoch: u64 },
    /// The key's partition is moving out of this group (frozen for the move): no write is
    /// taken until the move commits (then its new owner serves it) or rolls back (then this
    /// group again). Nothing was applied; retry shortly.
    #[error("partition {partition} is moving between groups; retry shortly")]
    Moving { partition: u32 },
    /// No token, or one the node does not accept (`--auth-tokens`).
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The token may not do this (a read-only token writing).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
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
