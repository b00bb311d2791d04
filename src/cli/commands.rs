//! The client commands: one request each, printed in plain words.

use bytes::Bytes;
use tokio::time::Duration;

use super::{ClientArgs, Command, ExitCode};
use crate::client::{Client, ClientError};

fn client(args: &ClientArgs) -> Client {
    let mut client = Client::new(args.endpoints.clone());
    client.timeout = Duration::from_secs_f64(args.timeout.max(0.1));
    client
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
        Command::Put {
            key,
            value,
            client: args,
        } => match client(&args).put(bytes(&key), bytes(&value)).await {
            Ok(_) => {
                println!("OK");
                ExitCode::Success
            }
            Err(error) => fail(error),
        },
        Command::Get {
            key,
            stale,
            client: args,
        } => match client(&args).get(bytes(&key), stale).await {
            Ok(Some(value)) => {
                println!("{}", String::from_utf8_lossy(&value));
                ExitCode::Success
            }
            Ok(None) => {
                eprintln!("key {key:?} not found");
                ExitCode::NotFound
            }
            Err(error) => fail(error),
        },
        Command::Delete { key, client: args } => match client(&args).delete(bytes(&key)).await {
            Ok(existed) => {
                println!("{}", if existed { 1 } else { 0 });
                ExitCode::Success
            }
            Err(error) => fail(error),
        },
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
        Command::Members { client: args } => match client(&args).members().await {
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
        Command::Status { client: args } => match client(&args).status().await {
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
        Command::Node(_) | Command::Dev { .. } | Command::Bench(_) => ExitCode::Usage,
    }
}
