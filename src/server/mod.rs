//! The shell: runs the sans-IO core for real on tokio and tonic (or on madsim's simulated ones
//! under `--cfg madsim`, from the same code).
//!
//! - [`node`]: starts a node (resume, join or bootstrap) and stops it in order.
//! - [`event_loop`]: the one task that owns the core and carries out its actions.
//! - [`storage_worker`]: persists off the loop, with group commit; [`storage_queue`] carries
//!   the loop's operations to it and holds the loop back while too many wait.
//! - [`transport`]: one queue and connection per peer; never blocks the loop.
//! - [`listener`]: the connections the gRPC server accepts; [`channel`] opens them to a node,
//!   both through [`socket`].
//! - [`metrics`]: Prometheus metrics, served by `metrics_endpoint` at `GET /metrics`.
//! - the gRPC services: [`kv_service`] (with [`leader_proxy`] on followers),
//!   [`membership_service`], [`peer_service`], [`health_service`], and on a sharded store's
//!   data node [`relocation_service`]; [`joiner`] is the joining node's side of the join
//!   workflow.

pub mod admin_link;
pub mod channel;
pub mod cluster_id;
pub mod convert;
pub mod directory_service;
pub mod error;
pub mod event_loop;
pub mod force_new_cluster;
pub mod handle;
pub mod health_service;
pub mod hooks;
#[cfg(not(madsim))]
pub mod http_server;
pub mod joiner;
pub mod kv_service;
pub mod leader_proxy;
mod listener;
#[cfg(not(madsim))]
pub mod maintenance_service;
pub mod membership_service;
pub mod metrics;
mod metrics_endpoint;
pub mod node;
pub mod peer_auth;
pub mod peer_service;
pub mod process_metrics;
pub mod proto;
pub mod relocation_service;
pub mod restore;
mod socket;
pub mod storage_queue;
pub mod storage_worker;
#[cfg(not(madsim))]
pub mod tls;
#[cfg(not(madsim))]
pub mod tls_certificates;
pub mod tokens;
pub mod transport;

pub use channel::{check_address, connect, connect_or_say_why, ConnectFailure};
pub use error::ApiError;
pub use node::{run_node, run_node_on, NodeError, NodeOptions, Opened};
