//! `ravel node`: settings from the TOML file, overridden by flags; runs until SIGINT/SIGTERM.

use super::{ExitCode, NodeArgs};
use crate::server::node::Entry;
use crate::server::{run_node, NodeError, NodeOptions};

pub async fn run(args: NodeArgs) -> ExitCode {
    let options = match options(args) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::Usage;
        }
    };
    let advertise = options.advertise().to_string();
    let listen = options.listen.clone();
    let data_dir = options.data_dir.display().to_string();
    let id = options.id;
    let metrics_listen = options.metrics_listen.clone();
    let result = run_node(options, shutdown_signal(), move |entry| {
        let how = match entry {
            Entry::Resume => "resuming from its data",
            Entry::Join => "joining the cluster (connection pending)",
            Entry::Bootstrap => {
                tracing::warn!("no nodes to join: bootstrapping a new single-node cluster");
                "bootstrapped a new single-node cluster, leader once elected"
            }
        };
        println!(
            "ravel node {id} listening on {listen} (advertised as {advertise}), data in {data_dir}: {how}"
        );
        if let Some(metrics) = &metrics_listen {
            println!("ravel node {id} serves metrics at http://{metrics}/metrics");
        }
    })
    .await;
    match result {
        Ok(()) => ExitCode::Success,
        Err(error) => {
            eprintln!("error: {error}");
            match error {
                NodeError::Invalid(_)
                | NodeError::FounderGivenJoin(_)
                | NodeError::FollowerOnlyWithoutCluster => ExitCode::Usage,
                NodeError::JoinRefused(_) => ExitCode::Refused,
                _ => ExitCode::Failure,
            }
        }
    }
}

fn options(args: NodeArgs) -> Result<NodeOptions, String> {
    let mut options = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
            toml::from_str::<NodeOptions>(&text)
                .map_err(|error| format!("{}: {error}", path.display()))?
        }
        None => NodeOptions::default(),
    };
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
