//! The client commands: one request each, printed in plain words.

use bytes::Bytes;
use tokio::time::Duration;

use super::{ClientArgs, Command, ExitCode};
use crate::client::{Client, ClientError};
use crate::routed_client::{RoutedClient, RoutedError};
use crate::server::ApiError;

/// A client of a sharded store when `--admin` is given: it routes each key itself.
fn routed(args: &ClientArgs) -> Option<RoutedClient> {
    if args.admin.is_empty() {
        return None;
    }
    let mut client = RoutedClient::new(args.admin.clone());
    client.timeout = Duration::from_secs_f64(args.timeout.max(0.1));
    if let Some(token) = &args.credentials.token {
        client.set_token(token.clone());
    }
    Some(client)
}

fn fail_routed(error: RoutedError) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::of_routed(&error)
}

fn client(args: &ClientArgs) -> Client {
    args.client()
}

fn bytes(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

fn fail(error: ClientError) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::of(&error)
}

pub async fn run(command: Command) -> ExitCode {
    match command {
        // With --admin, routed to the key's group by the CLI itself; else to --endpoints.
        Command::Put {
            key,
            value,
            value_file,
            client: args,
        } => {
            let value = match super::values::read_value(value.as_deref(), value_file.as_deref()) {
                Ok(value) => value,
                Err(message) => {
                    eprintln!("error: {message}");
                    return ExitCode::Usage;
                }
            };
            let key = bytes(&key);
            let result = match routed(&args) {
                Some(routed) => routed.put(key, value).await.map_err(fail_routed),
                None => client(&args).put(key, value).await.map_err(fail),
            };
            match result {
                Ok(_) => {
                    println!("OK");
                    ExitCode::Success
                }
                Err(code) => code,
            }
        }
        Command::Get {
            key,
            stale,
            write_out,
            client: args,
        } => {
            let result = match routed(&args) {
                Some(routed) => routed.get(bytes(&key), stale).await.map_err(fail_routed),
                None => client(&args).get(bytes(&key), stale).await.map_err(fail),
            };
            match result {
                Ok(Some(value)) if write_out == super::WriteOut::Json => {
                    let document = serde_json::json!({
                        "key": key,
                        "value": super::values::base64(&value),
                    });
                    println!("{document:#}");
                    ExitCode::Success
                }
                Ok(Some(value)) => match super::values::print_value(&value) {
                    Ok(()) => ExitCode::Success,
                    Err(error) => {
                        eprintln!("error: writing the value: {error}");
                        ExitCode::Failure
                    }
                },
                Ok(None) => {
                    eprintln!("key {key:?} not found");
                    ExitCode::NotFound
                }
                Err(code) => code,
            }
        }
        Command::Delete { key, client: args } => {
            let result = match routed(&args) {
                Some(routed) => routed.delete(bytes(&key)).await.map_err(fail_routed),
                None => client(&args).delete(bytes(&key)).await.map_err(fail),
            };
            match result {
                Ok(existed) => {
                    println!("{}", if existed { 1 } else { 0 });
                    ExitCode::Success
                }
                Err(code) => code,
            }
        }
        Command::Cas {
            key,
            old,
            new,
            absent,
            client: args,
        } => {
            // With --absent the one positional value given is the new one.
            let (expected, new) = match (absent, old, new) {
                (true, Some(new), None) | (true, None, Some(new)) => (None, new),
                (false, Some(old), Some(new)) => (Some(bytes(&old)), new),
                _ => {
                    eprintln!("error: usage: ravel cas KEY OLD NEW, or ravel cas --absent KEY NEW");
                    return ExitCode::Usage;
                }
            };
            match client(&args)
                .compare_and_swap(bytes(&key), expected, bytes(&new))
                .await
            {
                Ok((true, _)) => {
                    println!("OK");
                    ExitCode::Success
                }
                Ok((false, current)) => {
                    match current {
                        Some(value) => eprintln!(
                            "not swapped: {key:?} holds {:?}",
                            String::from_utf8_lossy(&value)
                        ),
                        None => eprintln!("not swapped: {key:?} does not exist"),
                    }
                    ExitCode::CompareFailed
                }
                Err(error) => fail(error),
            }
        }
        Command::Members {
            write_out: super::WriteOut::Json,
            client: args,
        } => match client(&args).members().await {
            Ok(response) => {
                let members: Vec<serde_json::Value> = response
                    .members
                    .iter()
                    .map(|member| {
                        serde_json::json!({
                            "id": member.id,
                            "role": member.role,
                            "address": member.address,
                            "leader": member.id == response.leader_id,
                        })
                    })
                    .collect();
                let leader = (response.leader_id != 0).then_some(response.leader_id);
                let document = serde_json::json!({"leader": leader, "members": members});
                println!("{document:#}");
                ExitCode::Success
            }
            Err(error) => fail(error),
        },
        Command::Members {
            write_out: super::WriteOut::Table,
            client: args,
        } => match client(&args).members().await {
            Ok(response) => {
                println!("{:<6} {:<9} {:<24} LEADER", "ID", "ROLE", "ADDRESS");
                for member in response.members {
                    let leader = if member.id == response.leader_id {
                        "*"
                    } else {
                        ""
                    };
                    println!(
                        "{:<6} {:<9} {:<24} {leader}",
                        member.id, member.role, member.address
                    );
                }
                ExitCode::Success
            }
            Err(error) => fail(error),
        },
        Command::Status {
            write_out: super::WriteOut::Json,
            client: args,
        } => match client(&args).status().await {
            Ok(status) => {
                println!("{:#}", super::endpoint::status_json(&status));
                ExitCode::Success
            }
            Err(error) => fail(error),
        },
        Command::Status {
            write_out: super::WriteOut::Table,
            client: args,
        } => match client(&args).status().await {
            Ok(status) => {
                println!("node:         {} ({})", status.node_id, status.address);
                println!("cluster:      {}", status.cluster_id);
                println!("role:         {}", status.role);
                println!("member state: {}", status.member_state);
                println!("term:         {}", status.term);
                let leader = if status.leader_id == 0 {
                    "none known".to_string()
                } else {
                    format!("{} ({})", status.leader_id, status.leader_address)
                };
                println!("leader:       {leader}");
                println!(
                    "log:          last {}, committed {}, applied {}",
                    status.last_index, status.commit_index, status.applied_index
                );
                ExitCode::Success
            }
            Err(error) => fail(error),
        },
        Command::Leave {
            id, client: args, ..
        } if !args.admin.is_empty() => {
            let Some(node) = id else {
                eprintln!(
                    "error: with --admin, name the node that leaves: ravel leave ID --admin ADDR"
                );
                return ExitCode::Usage;
            };
            leave_system(node, &args).await
        }
        Command::Leave {
            id,
            cluster_id,
            client: args,
        } => {
            let mut client = client(&args);
            client.cluster_id = cluster_id;
            let node = match id {
                Some(id) => id,
                None => match client.status().await {
                    Ok(status) => status.node_id,
                    Err(error) => return fail(error),
                },
            };
            match client.leave(node).await {
                Ok(()) => {
                    println!("node {node} removed");
                    ExitCode::Success
                }
                Err(error) => fail(error),
            }
        }
        Command::Groups { admin, write_out } => groups(admin, write_out).await,
        Command::RetireGroup { id, admin } => retire_group(id, &admin).await,
        Command::MoveLimit { limit, admin } => move_limit(limit, &admin).await,
        Command::Moves { admin, write_out } => super::moves::moves(admin, write_out).await,
        Command::MoveRate { rate, admin } => move_rate(rate, &admin).await,
        Command::Endpoint { command } => super::endpoint::run(command).await,
        Command::CheckData { dir, write_out } => super::check_data::run(&dir, write_out),
        Command::Snapshot { command } => super::snapshot::run(command).await,
        Command::Node(_) | Command::Admin(_) | Command::Dev { .. } | Command::Bench(_) => {
            ExitCode::Usage
        }
    }
}

/// `ravel groups`: the sharded store's groups, their members, leaders and partitions.
async fn groups(admin: super::AdminEndpoints, write_out: super::WriteOut) -> ExitCode {
    let deadline = Duration::from_secs_f64(admin.timeout.max(0.1));
    let overview = match crate::routed_client::read_overview(&admin.admin, deadline).await {
        Ok(overview) => overview,
        Err(error) => return fail_routed(error),
    };
    match write_out {
        super::WriteOut::Json => {
            let groups: Vec<serde_json::Value> = overview
                .groups
                .iter()
                .map(|group| {
                    let members: Vec<serde_json::Value> = group
                        .members
                        .iter()
                        .map(|&member| {
                            let address = overview
                                .servers
                                .iter()
                                .find(|server| server.id == member)
                                .map(|server| server.address.clone());
                            serde_json::json!({"id": member, "address": address})
                        })
                        .collect();
                    serde_json::json!({
                        "id": group.id,
                        "leader": (group.leader_id != 0).then_some(group.leader_id),
                        "leader_term": group.leader_term,
                        "retiring": group.retiring,
                        "partitions": group.partitions,
                        "members": members,
                    })
                })
                .collect();
            let admin_leader = (overview.admin_leader_id != 0).then_some(overview.admin_leader_id);
            let document = serde_json::json!({
                "partitions": overview.partitions,
                "group_size": overview.group_size,
                "admin_leader": admin_leader,
                "admin_leader_address": admin_leader.map(|_| overview.admin_leader_address.clone()),
                "groups": groups,
                "moves": overview.moves.iter().map(|moving| serde_json::json!({
                    "partition": moving.partition,
                    "from": moving.from_group,
                    "to": moving.to_group,
                    "epoch": moving.epoch,
                    "phase": moving.phase,
                })).collect::<Vec<_>>(),
                "moves_pending": overview.moves_pending,
                "move_limit": overview.move_limit,
            });
            println!("{document:#}");
        }
        super::WriteOut::Table => {
            let leader = if overview.admin_leader_id == 0 {
                "none known".to_string()
            } else {
                format!(
                    "{} ({})",
                    overview.admin_leader_id, overview.admin_leader_address
                )
            };
            println!(
                "admin leader: {leader}; {} partitions, groups of {}",
                overview.partitions, overview.group_size
            );
            if overview.groups.is_empty() {
                println!("no data groups yet: start data nodes with `ravel node --admin ADDR`");
                return ExitCode::Success;
            }
            println!(
                "{:<6} {:<8} {:<6} {:<10} MEMBERS",
                "GROUP", "LEADER", "TERM", "PARTITIONS"
            );
            for group in &overview.groups {
                let members: Vec<String> = group
                    .members
                    .iter()
                    .map(|&member| {
                        let address = overview
                            .servers
                            .iter()
                            .find(|server| server.id == member)
                            .map_or("?", |server| server.address.as_str());
                        let star = if member == group.leader_id { "*" } else { "" };
                        format!("{member}{star}@{address}")
                    })
                    .collect();
                let leader = if group.leader_id == 0 {
                    "-".to_string()
                } else {
                    group.leader_id.to_string()
                };
                let partitions = if group.retiring {
                    format!("{} (retiring)", group.partitions)
                } else {
                    group.partitions.to_string()
                };
                println!(
                    "{:<6} {:<8} {:<6} {:<10} {}",
                    group.id,
                    leader,
                    group.leader_term,
                    partitions,
                    members.join(" ")
                );
            }
            if overview.moves_pending > 0 || !overview.moves.is_empty() {
                let moving: Vec<String> = overview
                    .moves
                    .iter()
                    .map(|moving| {
                        format!(
                            "{} {}→{} ({})",
                            moving.partition, moving.from_group, moving.to_group, moving.phase
                        )
                    })
                    .collect();
                println!(
                    "moving: {} partitions still to move, at most {} at once; now: {}",
                    overview.moves_pending,
                    overview.move_limit,
                    if moving.is_empty() {
                        "none".to_string()
                    } else {
                        moving.join(", ")
                    }
                );
            }
        }
    }
    ExitCode::Success
}

/// Calls the admin through the first replica that answers (a follower passes writes on to the
/// leader); a refusal is printed and ends the command, as does no replica answering.
async fn call_admin<T, F, Fut>(
    endpoints: &super::AdminEndpoints,
    mut call: F,
) -> Result<T, ExitCode>
where
    F: FnMut(
        crate::server::proto::ravel::directory_client::DirectoryClient<crate::client::Connection>,
    ) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    use crate::server::proto::ravel::directory_client::DirectoryClient;
    let (admin, timeout) = (&endpoints.admin, endpoints.timeout);
    let bearer = match crate::client::Bearer::of(endpoints.credentials.token.as_deref()) {
        Ok(bearer) => bearer,
        Err(error) => {
            eprintln!("error: {error}");
            return Err(ExitCode::Usage);
        }
    };
    let deadline = Duration::from_secs_f64(timeout.max(0.1));
    let mut last_error = String::new();
    for endpoint in admin {
        let channel = match crate::server::connect(endpoint, Duration::from_secs(1)).await {
            Ok(channel) => channel,
            Err(error) => {
                last_error = format!("{endpoint}: {error}");
                continue;
            }
        };
        match tokio::time::timeout(deadline, call(DirectoryClient::new(bearer.on(channel)))).await {
            Ok(Ok(response)) => return Ok(response.into_inner()),
            Ok(Err(status)) if status.code() == tonic::Code::FailedPrecondition => {
                eprintln!("error: the admin refused: {}", status.message());
                return Err(ExitCode::Refused);
            }
            Ok(Err(status)) => {
                if let Some(
                    error @ (ApiError::Unauthenticated(_) | ApiError::PermissionDenied(_)),
                ) = ApiError::from_status(&status)
                {
                    eprintln!("error: the admin refused: {error}");
                    return Err(ExitCode::of(&ClientError::Api(error)));
                }
                last_error = format!("{endpoint}: {}", crate::client::failure_text(&status))
            }
            Err(_) => last_error = format!("{endpoint}: timed out"),
        }
    }
    eprintln!("error: no admin replica answered ({last_error})");
    Err(ExitCode::Unavailable)
}

/// `ravel retire-group ID --admin ...`: the group's partitions move to the other groups; once
/// it owns none (`ravel groups` shows it), its servers can leave with `ravel leave ID --admin`.
async fn retire_group(group: u64, admin: &super::AdminEndpoints) -> ExitCode {
    use crate::server::proto::ravel::RetireGroupRequest;
    match call_admin(admin, |mut directory| async move {
        directory
            .retire_group(RetireGroupRequest { group_id: group })
            .await
    })
    .await
    {
        Ok(answer) if answer.partitions == 0 => {
            println!(
                "group {group} is retiring and owns no partition: its servers can leave now \
                 (ravel leave ID --admin ...)"
            );
            ExitCode::Success
        }
        Ok(answer) => {
            println!(
                "group {group} is retiring: {} partitions move to the other groups; once \
                 `ravel groups` shows it owns none, its servers can leave (ravel leave ID \
                 --admin ...)",
                answer.partitions
            );
            ExitCode::Success
        }
        Err(code) => code,
    }
}

/// `ravel move-limit N --admin ...`: at most N partitions move at once from now on.
async fn move_limit(limit: u32, admin: &super::AdminEndpoints) -> ExitCode {
    use crate::server::proto::ravel::SetMoveLimitRequest;
    match call_admin(admin, |mut directory| async move {
        directory
            .set_move_limit(SetMoveLimitRequest { limit })
            .await
    })
    .await
    {
        Ok(_) if limit == 0 => {
            println!("no new move starts; those in flight finish (resume with a limit above 0)");
            ExitCode::Success
        }
        Ok(_) => {
            println!("at most {limit} partitions move at once");
            ExitCode::Success
        }
        Err(code) => code,
    }
}

/// `ravel move-rate RATE --admin ...`: moves ship at most RATE bytes per second from now on.
async fn move_rate(bytes_per_second: u64, admin: &super::AdminEndpoints) -> ExitCode {
    use crate::server::proto::ravel::SetMoveRateRequest;
    match call_admin(admin, |mut directory| async move {
        directory
            .set_move_rate(SetMoveRateRequest { bytes_per_second })
            .await
    })
    .await
    {
        Ok(_) => {
            println!(
                "partition moves ship at most {}",
                super::moves::rate_name(bytes_per_second)
            );
            ExitCode::Success
        }
        Err(code) => code,
    }
}

/// `ravel leave ID --admin ...`: the admin forgets the server (it refuses the last replica of a
/// group that owns partitions), then the server leaves its group's Raft configuration through
/// the group's remaining members.
async fn leave_system(node: u64, args: &ClientArgs) -> ExitCode {
    use crate::server::proto::ravel::LeaveServerRequest;
    let deadline = Duration::from_secs_f64(args.timeout.max(0.1));
    let admin_endpoints = super::AdminEndpoints {
        admin: args.admin.clone(),
        timeout: args.timeout,
        credentials: args.credentials.clone(),
    };
    let answer = match call_admin(&admin_endpoints, |mut directory| async move {
        directory.leave(LeaveServerRequest { node_id: node }).await
    })
    .await
    {
        Ok(answer) => answer,
        Err(code) => return code,
    };
    if answer.members.is_empty() {
        println!(
            "node {node} left; group {} has no members left: stop the node",
            answer.group_id
        );
        return ExitCode::Success;
    }
    let mut group = Client::new(answer.members.clone());
    group.timeout = deadline;
    group.token = args.credentials.token.clone();
    match group.leave(node).await {
        Ok(()) => {
            println!("node {node} left group {} and the system", answer.group_id);
            ExitCode::Success
        }
        Err(error) => {
            eprintln!(
                "error: the admin forgot node {node}, but removing it from group {} failed: \
                 {error}; retry with: ravel leave {node} --endpoints {}",
                answer.group_id,
                answer.members.join(",")
            );
            ExitCode::of(&error)
        }
    }
}
