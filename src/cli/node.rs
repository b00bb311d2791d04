//! `ravel node`: settings from the TOML file, overridden by flags; runs until SIGINT/SIGTERM.

use super::{ExitCode, NodeArgs};
use crate::server::admin_link;
use crate::server::node::{Entry, Service};
use crate::server::{run_node, NodeError, NodeOptions};

pub async fn run(args: NodeArgs) -> ExitCode {
    let mut options = match options(args, NodeOptions::default()) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::Usage;
        }
    };
    // A data node of a sharded store: the admin gives it its id and group.
    let mut reporting = None;
    let mut service = Service::key_value();
    if !options.admin.is_empty() {
        if let Err(error) = crate::server::node::install_client_tls(&options) {
            return exit_code(Err(error));
        }
        match enter_through_admin(&mut options).await {
            Ok(assignment) => {
                reporting = Some((options.admin.clone(), assignment.group_id));
                options.metrics_group = Some(assignment.group_id.to_string());
                if assignment.partitions > 0 {
                    service =
                        Service::key_value_sharded(assignment.partitions, options.move_chunk_bytes);
                }
            }
            Err(code) => return code,
        }
    }
    let advertise = options.advertise().to_string();
    let listen = options.listen.clone();
    let data_dir = options.data_dir.display().to_string();
    let id = options.id;
    let metrics_listen = options.metrics_listen.clone();
    let scheme = if options.cert.is_some() {
        "https"
    } else {
        "http"
    };
    let sharded = reporting.is_some();
    let result = run_node(options, service, shutdown_signal(), move |started| {
        if let Some((admin, group)) = reporting {
            tokio::spawn(admin_link::report_leadership(
                admin,
                group,
                started.handle.clone(),
                started.leadership.clone(),
            ));
        }
        let how = match started.entry {
            Entry::Resume => "resuming from its data",
            Entry::Join => "joining the cluster (connection pending)",
            // The admin made it the first member of a new group: no warning due.
            Entry::Bootstrap if sharded => "started its group as the first member",
            Entry::Bootstrap => {
                tracing::warn!("no nodes to join: bootstrapping a new single-node cluster");
                "bootstrapped a new single-node cluster, leader once elected"
            }
        };
        println!(
            "ravel node {id} listening on {listen} (advertised as {advertise}), data in {data_dir}: {how}"
        );
        if let Some(metrics) = &metrics_listen {
            println!("ravel node {id} serves metrics at {scheme}://{metrics}/metrics");
        }
    })
    .await;
    exit_code(result)
}

/// How a node (or admin replica) that stopped ends the process; the error is printed.
pub(super) fn exit_code(result: Result<(), NodeError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::Success,
        Err(error) => {
            eprintln!("error: {error}");
            match error {
                NodeError::Invalid(_)
                | NodeError::FounderGivenJoin(_)
                | NodeError::FollowerOnlyWithoutCluster => ExitCode::Usage,
                NodeError::JoinRefused(_) | NodeError::ForceRefused(_) => ExitCode::Refused,
                _ => ExitCode::Failure,
            }
        }
    }
}

/// Settings from `--config` (else `defaults`), overridden by flags.
pub(super) fn options(args: NodeArgs, defaults: NodeOptions) -> Result<NodeOptions, String> {
    let mut options = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
            toml::from_str::<NodeOptions>(&text)
                .map_err(|error| format!("{}: {error}", path.display()))?
        }
        None => defaults,
    };
    if let Some(admin) = args.admin {
        options.admin = admin.into_iter().filter(|seed| !seed.is_empty()).collect();
    }
    if !options.admin.is_empty() && (args.id.is_some() || args.join.is_some()) {
        return Err(
            "--admin gives the node its id and the group to join: leave out --id and --join"
                .to_string(),
        );
    }
    if let Some(id) = args.id {
        options.id = id;
    }
    if let Some(cluster_id) = args.cluster_id {
        options.cluster_id = Some(cluster_id);
    }
    if let Some(listen) = args.listen {
        options.listen = listen;
    }
    if let Some(advertise) = args.advertise {
        options.advertise = Some(advertise);
    }
    if let Some(data_dir) = args.data_dir {
        options.data_dir = data_dir;
    }
    if let Some(join) = args.join {
        options.join = join.into_iter().filter(|seed| !seed.is_empty()).collect();
    }
    if args.follower_only {
        options.follower_only = true;
    }
    if let Some(hooks_dir) = args.hooks_dir {
        options.hooks_dir = Some(hooks_dir);
    }
    if let Some(metrics_listen) = args.metrics_listen {
        options.metrics_listen = Some(metrics_listen);
    }
    for label in args.labels {
        let (key, value) = label
            .split_once('=')
            .ok_or_else(|| format!("label {label:?} is not KEY=VALUE"))?;
        options.labels.insert(key.to_string(), value.to_string());
    }
    if let Some(ms) = args.election_timeout_min_ms {
        options.election_timeout_min_ms = ms;
    }
    if let Some(ms) = args.election_timeout_max_ms {
        options.election_timeout_max_ms = ms;
    }
    if let Some(ms) = args.heartbeat_interval_ms {
        options.heartbeat_interval_ms = ms;
    }
    if let Some(mode) = args.read_mode {
        options.read_mode = mode;
    }
    if let Some(connections_max) = args.connections_max {
        options.connections_max = connections_max;
    }
    if let Some(bytes) = args.move_chunk_bytes {
        options.move_chunk_bytes = bytes;
    }
    if let Some(entries) = args.log_retention_entries {
        options.log_retention_entries = entries;
    }
    if let Some(bytes) = args.log_retention_bytes {
        options.log_retention_bytes = bytes;
    }
    if args.force_new_cluster && (!options.join.is_empty() || !options.admin.is_empty()) {
        return Err(
            "--force-new-cluster starts a cluster from this node's own data: leave out --join \
             and --admin"
                .to_string(),
        );
    }
    for (flag, path) in [
        (&mut options.cert, args.cert),
        (&mut options.key, args.key),
        (&mut options.ca, args.ca),
        (&mut options.peer_cert, args.peer_cert),
        (&mut options.peer_key, args.peer_key),
        (&mut options.peer_ca, args.peer_ca),
    ] {
        if path.is_some() {
            *flag = path;
        }
    }
    options.peer_cert_names_node |= args.peer_cert_names_node;
    if args.auth_tokens.is_some() {
        options.auth_tokens = args.auth_tokens;
    }
    options.force_new_cluster = args.force_new_cluster;
    options.force_new_cluster_confirm = args.confirm_force_new_cluster;
    Ok(options)
}

/// SIGINT or SIGTERM (under madsim, which has no SIGTERM, the simulated Ctrl-C).
pub(super) async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(all(unix, not(madsim)))]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(any(not(unix), madsim))]
    {
        let _ = interrupt.await;
    }
}

/// Registers a data node with the sharded store's admin, unless its data directory shows it
/// has been a member of its group (then it resumes as the member it is, without asking). Sets the node's id and,
/// for a new node, the members to join through (none: it starts a new group). Returns what the
/// admin assigned it.
async fn enter_through_admin(
    options: &mut NodeOptions,
) -> Result<admin_link::Assignment, ExitCode> {
    let stored = admin_link::stored_assignment(&options.data_dir).map_err(|error| {
        eprintln!("error: {error}");
        ExitCode::Failure
    })?;
    let meta = crate::storage::stored_meta(&options.data_dir).map_err(|error| {
        eprintln!("error: {error}");
        ExitCode::Failure
    })?;
    let in_dir = meta.map(|(identity, standing)| (identity.node_id, standing));
    if let Some(assignment) = &stored {
        if admin_link::resumes_without_asking(Some(assignment), in_dir) {
            options.id = assignment.node_id;
            return Ok(assignment.clone());
        }
    }
    let token = fresh_token();
    let address = options.advertise().to_string();
    println!(
        "asking the admin ({}) for this node's id and group",
        options.admin.join(",")
    );
    let registered = admin_link::register(
        &options.admin,
        &admin_link::AssignmentFile(&options.data_dir),
        &address,
        &options.labels,
        token,
    )
    .await
    .map_err(|error| {
        eprintln!("error: {error}");
        ExitCode::Refused
    })?;
    let assignment = registered.assignment;
    println!(
        "the admin made this node {} of group {}{}",
        assignment.node_id,
        assignment.group_id,
        if registered.seeds.is_empty() {
            " (its first member: it starts the group)".to_string()
        } else {
            format!(", joining through {}", registered.seeds.join(","))
        }
    );
    options.id = assignment.node_id;
    options.join = registered.seeds;
    Ok(assignment)
}

/// A registration token no other node draws: the time and the process id, mixed (63 bits: the
/// assignment file is TOML, whose integers are signed).
fn fresh_token() -> u64 {
    use rand::{RngCore, SeedableRng};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64);
    let seed = nanos ^ (u64::from(std::process::id()) << 32);
    rand_chacha::ChaCha8Rng::seed_from_u64(seed).next_u64() >> 1
}
