//! `ravel endpoint health` and `ravel endpoint status` (etcdctl's): every endpoint asked on its
//! own, at once, each row saying what that one node answered or why it did not. The exit code
//! is 0 only if every endpoint answered (health: and serves), so a script can wait on it.

use std::time::Instant;

use clap::Subcommand;
use tokio::time::{timeout, Duration};

use super::{ClientArgs, ExitCode, WriteOut};
use crate::server::proto::health::health_check_response::ServingStatus;
use crate::server::proto::health::health_client::HealthClient;
use crate::server::proto::health::HealthCheckRequest;
use crate::server::proto::ravel::membership_client::MembershipClient;
use crate::server::proto::ravel::{StatusRequest, StatusResponse};

/// How long connecting to one endpoint may take: a node that is up accepts at once.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Subcommand)]
pub enum EndpointCommand {
    /// Whether each endpoint's node serves (the standard gRPC health service): ENDPOINT,
    /// HEALTH, TOOK, ERROR.
    Health {
        /// Output format.
        #[arg(short = 'w', long = "write-out", value_enum, default_value_t = WriteOut::Table)]
        write_out: WriteOut,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Each endpoint's node: id, cluster, role, member state, term, leader, log indexes.
    Status {
        /// Output format.
        #[arg(short = 'w', long = "write-out", value_enum, default_value_t = WriteOut::Table)]
        write_out: WriteOut,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn run(command: EndpointCommand) -> ExitCode {
    match command {
        EndpointCommand::Health { write_out, client } => health(write_out, &client).await,
        EndpointCommand::Status { write_out, client } => status(write_out, &client).await,
    }
}

/// One endpoint's health: whether it serves, how long the answer took, or why it failed.
struct Health {
    endpoint: String,
    healthy: bool,
    took: Duration,
    error: Option<String>,
}

async fn health_of(endpoint: String, deadline: Duration) -> Health {
    let started = Instant::now();
    let answer = async {
        let channel = crate::server::connect(&endpoint, CONNECT_TIMEOUT).await?;
        let request = HealthCheckRequest {
            service: String::new(),
        };
        let response = HealthClient::new(channel)
            .check(request)
            .await
            .map_err(|status| status.message().to_string())?;
        match response.into_inner().status() {
            ServingStatus::Serving => Ok(()),
            other => Err(format!("not serving ({})", other.as_str_name())),
        }
    };
    let outcome = match timeout(deadline, answer).await {
        Ok(outcome) => outcome,
        Err(_) => Err(format!("no answer within {} ms", deadline.as_millis())),
    };
    Health {
        endpoint,
        healthy: outcome.is_ok(),
        took: started.elapsed(),
        error: outcome.err(),
    }
}

async fn health(write_out: WriteOut, args: &ClientArgs) -> ExitCode {
    let deadline = Duration::from_secs_f64(args.timeout.max(0.1));
    let asks = args
        .endpoints
        .iter()
        .map(|endpoint| tokio::spawn(health_of(endpoint.clone(), deadline)));
    let mut rows = Vec::new();
    for ask in asks.collect::<Vec<_>>() {
        rows.push(ask.await.expect("a health check does not panic"));
    }
    match write_out {
        WriteOut::Json => {
            let rows: Vec<serde_json::Value> = rows
                .iter()
                .map(|row| {
                    serde_json::json!({
                        "endpoint": row.endpoint,
                        "health": row.healthy,
                        "took_ms": row.took.as_secs_f64() * 1000.0,
                        "error": row.error,
                    })
                })
                .collect();
            println!("{:#}", serde_json::Value::Array(rows));
        }
        WriteOut::Table => {
            println!("{:<24} {:<7} {:>9}  ERROR", "ENDPOINT", "HEALTH", "TOOK");
            for row in &rows {
                println!(
                    "{:<24} {:<7} {:>7.1}ms  {}",
                    row.endpoint,
                    row.healthy,
                    row.took.as_secs_f64() * 1000.0,
                    row.error.as_deref().unwrap_or("")
                );
            }
        }
    }
    if rows.iter().all(|row| row.healthy) {
        ExitCode::Success
    } else {
        ExitCode::Unavailable
    }
}

async fn status_of(endpoint: String, deadline: Duration) -> Result<StatusResponse, String> {
    let answer = async {
        let channel = crate::server::connect(&endpoint, CONNECT_TIMEOUT).await?;
        MembershipClient::new(channel)
            .status(StatusRequest {})
            .await
            .map(|response| response.into_inner())
            .map_err(|status| status.message().to_string())
    };
    match timeout(deadline, answer).await {
        Ok(outcome) => outcome,
        Err(_) => Err(format!("no answer within {} ms", deadline.as_millis())),
    }
}

async fn status(write_out: WriteOut, args: &ClientArgs) -> ExitCode {
    let deadline = Duration::from_secs_f64(args.timeout.max(0.1));
    let asks: Vec<_> = args
        .endpoints
        .iter()
        .map(|endpoint| tokio::spawn(status_of(endpoint.clone(), deadline)))
        .collect();
    let mut rows = Vec::new();
    for (endpoint, ask) in args.endpoints.iter().zip(asks) {
        rows.push((endpoint, ask.await.expect("a status call does not panic")));
    }
    match write_out {
        WriteOut::Json => {
            let rows: Vec<serde_json::Value> = rows
                .iter()
                .map(|(endpoint, answer)| match answer {
                    Ok(status) => serde_json::json!({
                        "endpoint": endpoint,
                        "status": status_json(status),
                    }),
                    Err(error) => serde_json::json!({"endpoint": endpoint, "error": error}),
                })
                .collect();
            println!("{:#}", serde_json::Value::Array(rows));
        }
        WriteOut::Table => {
            println!(
                "{:<24} {:<6} {:<20} {:<13} {:<11} {:<6} {:<7} {:<9} {:<9} ERROR",
                "ENDPOINT",
                "ID",
                "CLUSTER",
                "ROLE",
                "MEMBER",
                "TERM",
                "LEADER",
                "COMMIT",
                "APPLIED"
            );
            for (endpoint, answer) in &rows {
                match answer {
                    Ok(status) => println!(
                        "{:<24} {:<6} {:<20} {:<13} {:<11} {:<6} {:<7} {:<9} {:<9}",
                        endpoint,
                        status.node_id,
                        status.cluster_id,
                        status.role,
                        status.member_state,
                        status.term,
                        if status.leader_id == 0 {
                            "-".to_string()
                        } else {
                            status.leader_id.to_string()
                        },
                        status.commit_index,
                        status.applied_index
                    ),
                    Err(error) => println!("{endpoint:<24} {:<95} {error}", ""),
                }
            }
        }
    }
    if rows.iter().all(|(_, answer)| answer.is_ok()) {
        ExitCode::Success
    } else {
        ExitCode::Unavailable
    }
}

/// A node's status as `-w json` prints it (`ravel status` and `ravel endpoint status`).
pub fn status_json(status: &StatusResponse) -> serde_json::Value {
    serde_json::json!({
        "id": status.node_id,
        "cluster_id": status.cluster_id,
        "address": status.address,
        "role": status.role,
        "member_state": status.member_state,
        "term": status.term,
        "leader": (status.leader_id != 0).then_some(status.leader_id),
        "leader_address": (status.leader_id != 0).then(|| status.leader_address.clone()),
        "last_index": status.last_index,
        "commit_index": status.commit_index,
        "applied_index": status.applied_index,
    })
}
