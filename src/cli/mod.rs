//! The `ravel` command line, in the style of etcd/etcdctl: `ravel node` runs a node; `put`, `get`,
//! `delete`, `cas`, `members`, `status` and `leave` talk to a cluster; `dev` starts a local
//! cluster; `bench` measures one.

mod admin;
mod bench;
mod bench_connection;
mod bench_routes;
mod check_data;
mod commands;
mod dev;
#[cfg(not(madsim))]
mod dev_tls;
mod endpoint;
mod exit;
mod moves;
mod node;
mod snapshot;
mod values;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use exit::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "ravel", version, about = "A Raft-replicated key-value store")]
pub struct Cli {
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, global = true)]
    pub log_level: Option<String>,
    /// Log lines as text, or as one JSON object per line (for a log collector).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// Nodes to talk to, comma separated; the leader is found from any of them.
    #[arg(
        long,
        env = "RAVEL_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:7379"
    )]
    pub endpoints: Vec<String>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    /// A sharded store's admin replicas, comma separated: put, get and delete go to the group
    /// that owns the key (instead of --endpoints).
    #[arg(long, env = "RAVEL_ADMIN", value_delimiter = ',')]
    pub admin: Vec<String>,
    #[command(flatten)]
    pub credentials: Credentials,
}

impl ClientArgs {
    /// A client for these settings, for a person at a command line (it gives up at once when
    /// nothing listens).
    pub fn client(&self) -> crate::client::Client {
        let mut client = crate::client::Client::new(self.endpoints.clone());
        client.timeout = std::time::Duration::from_secs_f64(self.timeout.max(0.1));
        client.fail_when_nothing_listens = true;
        client.token = self.credentials.token.clone();
        client
    }
}

/// How a command proves itself to nodes: a token, TLS. Every command that talks to nodes or
/// to a sharded store's admin takes them.
#[derive(Debug, Args, Clone, Default)]
pub struct Credentials {
    /// A token for nodes that check them (--auth-tokens), sent as `authorization: Bearer`.
    #[arg(long, env = "RAVEL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Speak TLS, trusting the servers this CA (PEM) signed (etcdctl's --cacert).
    #[arg(long, env = "RAVEL_CACERT")]
    pub cacert: Option<PathBuf>,
    /// A client certificate (PEM) to present, with --key.
    #[arg(
        long = "cert",
        id = "client_cert",
        env = "RAVEL_CERT",
        requires = "cacert",
        requires = "client_key"
    )]
    pub cert: Option<PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(
        long = "key",
        id = "client_key",
        env = "RAVEL_KEY",
        requires = "client_cert"
    )]
    pub key: Option<PathBuf>,
}

impl Credentials {
    /// Makes this process's connections speak TLS, if asked to.
    pub fn install_tls(&self) -> Result<(), String> {
        let Some(ca) = &self.cacert else {
            return Ok(());
        };
        #[cfg(madsim)]
        {
            let _ = ca;
            Err("TLS is not simulated under madsim".to_string())
        }
        #[cfg(not(madsim))]
        {
            let identity = self.cert.as_deref().zip(self.key.as_deref());
            let config = crate::server::tls::client_config(ca, identity)?;
            crate::server::tls::set_client_config(config);
            Ok(())
        }
    }
}

/// Where a command that talks to a sharded store's admin finds it.
#[derive(Debug, Args, Clone)]
pub struct AdminEndpoints {
    /// The admin replicas, comma separated.
    #[arg(
        long,
        env = "RAVEL_ADMIN",
        value_delimiter = ',',
        default_value = "127.0.0.1:7379,127.0.0.1:7380,127.0.0.1:7381"
    )]
    pub admin: Vec<String>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    #[command(flatten)]
    pub credentials: Credentials,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// How a command prints its answer (etcdctl's `--write-out`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WriteOut {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// A TOML file with the settings below (flags override it).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// This node's id, unique in its cluster (1 for a new cluster's first node when not given;
    /// a joining node needs one; a sharded store's data node gets one from the admin).
    #[arg(long)]
    pub id: Option<u64>,
    /// The cluster this node belongs to: a new cluster draws one when not given; a joining
    /// node learns it; a node refuses peers and membership requests of another cluster.
    #[arg(long)]
    pub cluster_id: Option<u64>,
    /// Address to listen on [default: 127.0.0.1:7379].
    #[arg(long)]
    pub listen: Option<String>,
    /// Address other nodes and clients use to reach this node [default: the listen address].
    #[arg(long)]
    pub advertise: Option<String>,
    /// Where the node keeps its log, snapshots and identity (one node per directory; a
    /// second one is refused) [default: ./ravel-data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Join the cluster of these nodes (comma separated) instead of starting a new one.
    #[arg(long, value_delimiter = ',')]
    pub join: Option<Vec<String>>,
    /// Join as a learner that never votes (needs --join).
    #[arg(long)]
    pub follower_only: bool,
    /// Be a data node of the sharded store whose admin replicas are these (comma separated):
    /// the admin gives the node its id and group (instead of --id and --join).
    #[arg(long, value_delimiter = ',')]
    pub admin: Option<Vec<String>>,
    /// Directory with the update-node, switch-status and leader-change hooks.
    #[arg(long)]
    pub hooks_dir: Option<PathBuf>,
    /// Serve Prometheus metrics over HTTP at ADDR/metrics, e.g. 127.0.0.1:9379 (default: off).
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// A label for the admission hook, KEY=VALUE (repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// A follower that hears no leader for a random time between this and
    /// --election-timeout-max-ms starts an election [default: 1000].
    #[arg(long)]
    pub election_timeout_min_ms: Option<u64>,
    /// The upper end of the election timeout's range [default: 2000].
    #[arg(long)]
    pub election_timeout_max_ms: Option<u64>,
    /// How often a leader with nothing to send tells its followers it is alive; well below
    /// the election timeout [default: 100].
    #[arg(long)]
    pub heartbeat_interval_ms: Option<u64>,
    /// How reads confirm leadership: read-index (default) or lease.
    #[arg(long)]
    pub read_mode: Option<String>,
    /// gRPC connections (clients and peers) served at once; more are closed as they arrive
    /// [default: 1024].
    #[arg(long)]
    pub connections_max: Option<usize>,
    /// A sharded store's data node: bytes of pairs per chunk it ships when a partition moves
    /// away from its group, 1 to 8388608 [default: 262144].
    #[arg(long)]
    pub move_chunk_bytes: Option<usize>,
    /// Log entries kept behind a snapshot for followers that fall behind to catch up from
    /// (beyond them, a follower receives the whole state) [default: 1000000].
    #[arg(long)]
    pub log_retention_entries: Option<u64>,
    /// The most bytes of log segments kept behind a snapshot [default: 268435456].
    #[arg(long)]
    pub log_retention_bytes: Option<u64>,
    /// TLS: the certificate (PEM, chain first) this node's port presents; with --key and --ca
    /// the port speaks TLS only. Files are reloaded when they change.
    #[arg(long, visible_alias = "cert-file")]
    pub cert: Option<PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(long, visible_alias = "key-file")]
    pub key: Option<PathBuf>,
    /// The CA (PEM) that signed the cluster's server certificates: peers are checked with it.
    #[arg(long, visible_alias = "trusted-ca-file")]
    pub ca: Option<PathBuf>,
    /// Client tokens, one per line `TOKEN read-only|read-write`: every client request then
    /// needs one (`authorization: Bearer TOKEN`; ravel --token).
    #[arg(long)]
    pub auth_tokens: Option<PathBuf>,
    /// The client certificate (PEM) this node presents to its peers (mutual TLS).
    #[arg(long, visible_alias = "peer-cert-file")]
    pub peer_cert: Option<PathBuf>,
    /// The private key (PEM) of --peer-cert.
    #[arg(long, visible_alias = "peer-key-file")]
    pub peer_key: Option<PathBuf>,
    /// The CA (PEM) that signs peers' client certificates: with it, peer messages and joins
    /// are accepted only from a connection that presented a certificate it signed.
    #[arg(long, visible_alias = "peer-trusted-ca-file")]
    pub peer_ca: Option<PathBuf>,
    /// With --peer-ca: a peer's certificate must also name the node id it speaks for, as the
    /// DNS name ravel-node-ID (one node's key cannot speak for another).
    #[arg(long)]
    pub peer_cert_names_node: bool,
    /// Disaster recovery when a majority is lost for good: make this node the only member of a
    /// new cluster (a new cluster id) built from its data, then start. Needs
    /// --confirm-force-new-cluster; without it, says what it would do and stops.
    #[arg(long)]
    pub force_new_cluster: bool,
    /// The cluster id the data directory holds (see `ravel check-data DIR`), to confirm
    /// --force-new-cluster.
    #[arg(long, value_name = "CLUSTER_ID", requires = "force_new_cluster")]
    pub confirm_force_new_cluster: Option<u64>,
}

// Parsed once per process: the size of the node's variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node. With no flags: a new single-node cluster on 127.0.0.1:7379, data in ./ravel-data.
    Node(NodeArgs),
    /// Write a value: the VALUE argument, a file (--value-file), or standard input (VALUE `-`,
    /// or neither given), any bytes up to 1 MiB.
    Put {
        /// The key (UTF-8, at most 4096 bytes).
        key: String,
        /// The value; `-` or none (without --value-file): read from standard input.
        value: Option<String>,
        /// Read the value from this file (binary-safe, any size up to the 1 MiB limit).
        #[arg(long, conflicts_with = "value")]
        value_file: Option<PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Read a value (linearizable unless --stale). To a pipe or file: exactly the value's
    /// bytes; on a terminal: the value with control bytes escaped; -w json: base64.
    Get {
        /// The key to read.
        key: String,
        /// Answer from the contacted node's state without confirming leadership (may be stale).
        #[arg(long)]
        stale: bool,
        /// Output format: the value itself (table), or JSON with the value in base64.
        #[arg(short = 'w', long = "write-out", value_enum, default_value_t = WriteOut::Table)]
        write_out: WriteOut,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a key.
    Delete {
        /// The key to delete (printed: 1 if it existed, 0 if not).
        key: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Compare and swap: set KEY to NEW if it holds OLD (or, with --absent, if it does not exist).
    Cas {
        /// The key to swap.
        key: String,
        /// The expected value (omit with --absent).
        #[arg(required_unless_present = "absent")]
        old: Option<String>,
        /// The value to set.
        new: Option<String>,
        /// Expect the key not to exist.
        #[arg(long)]
        absent: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the members of the cluster.
    Members {
        /// Output format.
        #[arg(short = 'w', long = "write-out", value_enum, default_value_t = WriteOut::Table)]
        write_out: WriteOut,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show the status of the first endpoint (`ravel endpoint status`: of every endpoint).
    Status {
        /// Output format.
        #[arg(short = 'w', long = "write-out", value_enum, default_value_t = WriteOut::Table)]
        write_out: WriteOut,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Ask every endpoint on its own (etcdctl's `endpoint`): `health` through the gRPC health
    /// service, `status` through the node's status.
    Endpoint {
        #[command(subcommand)]
        command: endpoint::EndpointCommand,
    },
    /// Remove a node from the cluster (default: the first endpoint's node).
    Leave {
        /// The node to remove (see `ravel members`); default: the first endpoint's node.
        id: Option<u64>,
        /// The cluster meant: a node of another cluster refuses (default: not checked).
        #[arg(long)]
        cluster_id: Option<u64>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Run a replica of a sharded store's admin group (the directory of servers, groups and
    /// partitions), optionally serving the HTTP JSON API.
    Admin(admin::AdminArgs),
    /// List a sharded store's groups: members, leaders, partitions.
    Groups {
        #[command(flatten)]
        admin: AdminEndpoints,
        /// Output format.
        #[arg(short = 'w', long = "write-out", value_enum, default_value_t = WriteOut::Table)]
        write_out: WriteOut,
    },
    /// Retire a sharded store's group: its partitions move to the other groups, then its
    /// servers can leave (`ravel leave ID --admin ...`).
    RetireGroup {
        /// The group to retire (see `ravel groups`).
        id: u64,
        #[command(flatten)]
        admin: AdminEndpoints,
    },
    /// Set how many bytes per second a sharded store's partition moves ship between them, at
    /// most: the throttle on the machine's share rebalancing takes (default 32MiB).
    MoveRate {
        /// Bytes per second: a number with an optional unit (KiB, MiB, GiB, KB, MB, GB), e.g.
        /// 8MiB; 0 or "unlimited": no limit.
        #[arg(value_parser = moves::parse_rate)]
        rate: u64,
        #[command(flatten)]
        admin: AdminEndpoints,
    },
    /// Show a sharded store's partition moves: in flight, still to do, the latest ended, and
    /// totals.
    Moves {
        #[command(flatten)]
        admin: AdminEndpoints,
        /// Output format.
        #[arg(short = 'w', long = "write-out", value_enum, default_value_t = WriteOut::Table)]
        write_out: WriteOut,
    },
    /// Set how many partitions of a sharded store may move at once (0: none starts; those in
    /// flight finish): the throttle between client traffic and rebalancing.
    MoveLimit {
        /// Moves in flight at once, at most (default 4, at most 64).
        limit: u32,
        #[command(flatten)]
        admin: AdminEndpoints,
    },
    /// Start a local sharded store (an admin group and data groups) for trying things out;
    /// with --groups 0, one plain Raft group of --nodes nodes.
    Dev {
        /// Data groups to start (0: one plain cluster with no admin).
        #[arg(long, default_value_t = 2)]
        groups: u64,
        /// Nodes per group.
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        /// Partitions of the sharded store's key space.
        #[arg(long, default_value_t = crate::sharding::PARTITIONS_DEFAULT)]
        partitions: u32,
        /// The first port: the admin replicas' gRPC ports come first, then each data node's;
        /// the HTTP API and the metrics ports are printed at start.
        #[arg(long, default_value_t = 7379)]
        base_port: u16,
        /// Where every node's data directory goes (one subdirectory per node).
        #[arg(long, default_value = "ravel-dev")]
        data_dir: PathBuf,
        /// Each process serves Prometheus metrics on its gRPC port plus this (0: no metrics).
        #[arg(long, default_value_t = 1000)]
        metrics_offset: u16,
        /// The first admin replica's HTTP API port (the others follow it) [default: the base
        /// port + 701, 8080 for the default base].
        #[arg(long)]
        http_port: Option<u16>,
        /// TLS on every gRPC port and mutual TLS between peers, with a throw-away CA and
        /// certificates made in DATA_DIR/tls (the CLI then needs --cacert DATA_DIR/tls/ca.pem).
        #[arg(long)]
        tls: bool,
        /// Extra flags for every node, after `--` (e.g. `-- --read-mode lease`).
        #[arg(last = true)]
        node_args: Vec<String>,
    },
    /// Measure throughput and latency against a cluster.
    Bench(bench::BenchArgs),
    /// Verify a stopped node's data directory without changing it: its identity, every log
    /// record, every snapshot. Says what the node would resume with, what a start repairs by
    /// itself, and what would make it refuse to start (exit 1).
    CheckData {
        /// The node's data directory.
        dir: PathBuf,
        /// Output format.
        #[arg(short = 'w', long = "write-out", value_enum, default_value_t = WriteOut::Table)]
        write_out: WriteOut,
    },
    /// Backups (etcdctl's `snapshot`): `save FILE` from a running cluster, `status FILE`,
    /// `restore FILE --data-dir DIR` to seed a new cluster from one.
    Snapshot {
        #[command(subcommand)]
        command: snapshot::SnapshotCommand,
    },
}

/// A client command whose reader goes away (`ravel members | head -1`) ends quietly, as Unix
/// tools do, instead of panicking on the next `println!`: Rust ignores SIGPIPE, so a write to
/// a closed pipe fails and `println!` panics. Not for a node, which must survive peers and
/// clients closing their sockets.
fn die_quietly_on_closed_pipe() {
    // SAFETY: called at the start of main, before any thread is started; it only restores the
    // default disposition of one signal.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Runs the command line; returns the process exit code.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let server = matches!(cli.command, Command::Node(_) | Command::Admin(_));
    if !server && !matches!(cli.command, Command::Dev { .. }) {
        die_quietly_on_closed_pipe();
    }
    let default_level = match cli.command {
        Command::Node(_) | Command::Admin(_) | Command::Dev { .. } => "info",
        _ => "warn",
    };
    init_logging(
        cli.log_level.as_deref().unwrap_or(default_level),
        cli.log_format,
    );
    if let Err(message) = check_addresses(&cli.command) {
        eprintln!("error: {message}");
        return ExitCode::Usage.into();
    }
    if let Some(credentials) = credentials_of(&cli.command) {
        if let Err(message) = credentials.install_tls() {
            eprintln!("error: {message}");
            return ExitCode::Usage.into();
        }
    }
    let mut builder = runtime_builder(server);
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::Failure.into();
        }
    };
    let code = runtime.block_on(async move {
        match cli.command {
            Command::Node(args) => node::run(args).await,
            Command::Admin(args) => admin::run(args).await,
            Command::Dev {
                groups,
                nodes,
                partitions,
                base_port,
                data_dir,
                metrics_offset,
                http_port,
                tls,
                node_args,
            } => {
                let ports = dev::Ports {
                    base: u64::from(base_port),
                    metrics_offset: u64::from(metrics_offset),
                    http: u64::from(http_port.unwrap_or(base_port.saturating_add(701))),
                };
                dev::run(groups, nodes, partitions, ports, data_dir, node_args, tls).await
            }
            Command::Bench(args) => bench::run(args).await,
            other => commands::run(other).await,
        }
    });
    code.into()
}

/// The client settings of a command that talks to a cluster's nodes.
fn client_args(command: &Command) -> Option<&ClientArgs> {
    match command {
        Command::Put { client, .. }
        | Command::Get { client, .. }
        | Command::Delete { client, .. }
        | Command::Cas { client, .. }
        | Command::Members { client, .. }
        | Command::Status { client, .. }
        | Command::Leave { client, .. }
        | Command::Endpoint {
            command:
                endpoint::EndpointCommand::Health { client, .. }
                | endpoint::EndpointCommand::Status { client, .. },
        }
        | Command::Snapshot {
            command: snapshot::SnapshotCommand::Save { client, .. },
        } => Some(client),
        _ => None,
    }
}

/// How a command that talks to nodes or to an admin proves itself.
fn credentials_of(command: &Command) -> Option<&Credentials> {
    if let Some(client) = client_args(command) {
        return Some(&client.credentials);
    }
    match command {
        Command::Groups { admin, .. }
        | Command::RetireGroup { admin, .. }
        | Command::MoveRate { admin, .. }
        | Command::Moves { admin, .. }
        | Command::MoveLimit { admin, .. } => Some(&admin.credentials),
        Command::Bench(args) => Some(&args.credentials),
        _ => None,
    }
}

/// The addresses a client command is given, checked before anything is sent: a malformed one
/// is a usage error, not a node that does not answer.
fn check_addresses(command: &Command) -> Result<(), String> {
    if let Some(client) = client_args(command) {
        return check_each(&client.endpoints, &client.admin);
    }
    let (endpoints, admin): (&[String], &[String]) = match command {
        Command::Groups { admin, .. }
        | Command::RetireGroup { admin, .. }
        | Command::MoveRate { admin, .. }
        | Command::Moves { admin, .. }
        | Command::MoveLimit { admin, .. } => (&[], &admin.admin),
        Command::Bench(args) => (&args.endpoints, &args.admin),
        _ => (&[], &[]),
    };
    check_each(endpoints, admin)
}

/// Checks every `--endpoints` and `--admin` address.
fn check_each(endpoints: &[String], admin: &[String]) -> Result<(), String> {
    for (flag, addresses) in [("--endpoints", endpoints), ("--admin", admin)] {
        for address in addresses {
            crate::server::check_address(address).map_err(|reason| format!("{flag}: {reason}"))?;
        }
    }
    Ok(())
}

/// A node's work is one event loop plus the gRPC connections; RAVEL_WORKER_THREADS sets how
/// many runtime threads carry them (default: one per two cores, which leaves the rest to the
/// kernel's network and disk work and to neighbours). With 1, everything runs on one thread
/// (tokio's current-thread scheduler), with no wake-ups between threads: on 2 cores with three
/// nodes and a load generator, 4-17 % more writes/s than two worker threads in alternating
/// runs. Other commands (the bench above all) use one thread per core unless told otherwise.
fn runtime_builder(node: bool) -> tokio::runtime::Builder {
    let cores = std::thread::available_parallelism().map_or(1, |cores| cores.get());
    let threads = std::env::var("RAVEL_WORKER_THREADS")
        .ok()
        .and_then(|threads| threads.parse::<usize>().ok())
        .filter(|&threads| threads > 0)
        .unwrap_or(if node { (cores / 2).max(1) } else { cores });
    if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    }
}

fn init_logging(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        // Colour codes only for a terminal: a log file or journal gets plain text.
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        // One object per line: timestamp, level, target, the message and its fields.
        LogFormat::Json => logs.json().init(),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Every flag and argument of every command says what it is for in `--help`.
    #[test]
    fn every_argument_has_a_help_text() {
        fn undocumented(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for argument in command.get_arguments() {
                let id = argument.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if argument.get_help().is_none() && argument.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in command.get_subcommands() {
                undocumented(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        undocumented(&Cli::command(), "ravel", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }

    /// A malformed address is a usage error before anything is sent.
    #[test]
    fn a_malformed_endpoint_is_a_usage_error() {
        let cli = Cli::try_parse_from(["ravel", "get", "k", "--endpoints", "no port"]).unwrap();
        assert!(check_addresses(&cli.command).is_err());
        let cli = Cli::try_parse_from(["ravel", "groups", "--admin", "127.0.0.1:7379"]).unwrap();
        assert_eq!(check_addresses(&cli.command), Ok(()));
    }
}
