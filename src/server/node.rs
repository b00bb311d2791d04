//! Starting a node: open its data directory, decide how it enters the cluster (resume from its
//! data, join through the join workflow, or bootstrap a new single-node cluster), start the event
//! loop, the storage worker and the gRPC server, and stop them in order on shutdown.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};
use tonic::transport::server::Router;

use super::cluster_id::{new_cluster_id, ClusterId};
use super::event_loop::{EventLoop, EventLoopParts, Leadership};
use super::force_new_cluster::{force_new_cluster, ForceError};
use super::handle::NodeHandle;
use super::health_service::HealthService;
use super::hooks::Hooks;
use super::joiner::{self, JoinRequest};
use super::kv_service::KvService;
use super::listener;
use super::membership_service::{check_address, MembershipService};
use super::metrics::Metrics;
use super::metrics_endpoint;
use super::peer_auth::PeerAuth;
use super::peer_service::PeerService;
use super::proto::health::health_server::HealthServer;
#[cfg(not(madsim))]
use super::proto::ravel::maintenance_server::MaintenanceServer;
use super::proto::ravel::{
    kv_server::KvServer, membership_server::MembershipServer, peer_server::PeerServer,
    relocation_server::RelocationServer,
};
use super::relocation_service::RelocationService;
use super::tokens::{Auth, Tokens};
use super::transport::{Transport, PEER_MESSAGE_BYTES_MAX};
use super::{storage_queue, storage_worker};
use crate::core::{Config, NodeId, RawNode, ReadMode, SnapshotMeta};
use crate::kv::KvStateMachine;
use crate::replica::StateMachine;
use crate::storage::{
    stored_identity, FileStorage, Identity, Standing, Storage, StorageOptions, StoredState,
};

/// Requests queued for the event loop, at most; senders wait when it is full (back-pressure).
const REQUEST_QUEUE_MAX: usize = 16384;

/// Requests one gRPC connection may have in flight at once (HTTP/2's
/// SETTINGS_MAX_CONCURRENT_STREAMS): a client cannot open streams without bound.
const STREAMS_PER_CONNECTION_MAX: u32 = 1024;

/// A node's settings: TOML file keys, each overridable by a command-line flag.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct NodeOptions {
    pub id: NodeId,
    /// None: the one the data directory holds; for a new cluster, drawn at random; for a
    /// joiner, learned from the cluster.
    pub cluster_id: Option<u64>,
    /// Where the gRPC server listens.
    pub listen: String,
    /// Where other nodes and clients reach this node (default: `listen`).
    pub advertise: Option<String>,
    pub data_dir: PathBuf,
    /// Nodes of an existing cluster to join through; empty: bootstrap a new cluster.
    pub join: Vec<String>,
    /// Join as a learner that never votes (a read replica).
    pub follower_only: bool,
    /// The sharded store's admin replicas: the node registers there for its id and group and
    /// reports its leaderships (empty: a node of a plain cluster).
    pub admin: Vec<String>,
    pub hooks_dir: Option<PathBuf>,
    /// Where Prometheus metrics are served over HTTP (`GET /metrics`); none: not served.
    pub metrics_listen: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub snapshot_interval_entries: u64,
    /// How linearizable reads confirm leadership: "read-index" (a heartbeat round per batch of
    /// reads) or "lease" (no round trip while the leader's lease holds; assumes bounded clock
    /// drift).
    pub read_mode: String,
    /// Seeds the election jitter; default: different on every start. Simulations set it.
    pub seed: Option<u64>,
    /// gRPC connections served at once (clients and peers); more are closed as they arrive.
    pub connections_max: usize,
    /// A sharded store's data node: bytes of pairs per chunk it cuts when a partition moves
    /// away from its group (each chunk is one entry in the destination group's log).
    pub move_chunk_bytes: usize,
    /// The `group` label of the node's metrics: a sharded store's data group, or `admin`
    /// (none: a plain cluster's node, unlabelled).
    pub metrics_group: Option<String>,
    /// Log entries kept behind a snapshot, so that a follower that missed them catches up
    /// from the log instead of receiving the whole state; at most this many...
    pub log_retention_entries: u64,
    /// ...in whole log segments of at most this many bytes together (0 and 0: keep none).
    pub log_retention_bytes: u64,
    /// Client tokens, one per line (`TOKEN read-only|read-write`): with them, every client
    /// request needs one (see `server::tokens`).
    pub auth_tokens: Option<PathBuf>,
    /// TLS: the certificate (chain) and key this node's port presents; with them the port
    /// speaks TLS only, and `ca` is needed too.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The CA that signed the cluster's server certificates: the node checks its peers' with it.
    pub ca: Option<PathBuf>,
    /// The client certificate and key the node presents to its peers (mutual TLS).
    pub peer_cert: Option<PathBuf>,
    pub peer_key: Option<PathBuf>,
    /// The CA that signs peers' client certificates: with it, peer messages and joins are
    /// accepted only over a connection that presented a certificate it signed.
    pub peer_ca: Option<PathBuf>,
    /// With `peer_ca`: a peer's certificate must also name the node id its messages claim
    /// (`ravel-node-ID` as a DNS name).
    pub peer_cert_names_node: bool,
    /// Disaster recovery (`--force-new-cluster`; never from a TOML file, which would force
    /// again on every start): make this node the only member of a new cluster built from its
    /// data before starting (see `server::force_new_cluster`)...
    #[serde(skip)]
    pub force_new_cluster: bool,
    /// ...if this is the cluster id its data directory holds (`--confirm-force-new-cluster`).
    #[serde(skip)]
    pub force_new_cluster_confirm: Option<u64>,
    /// Test-only: classic Raft bugs planted in the core, so the madsim harness can show that it
    /// notices them.
    #[cfg(feature = "planted-bugs")]
    #[serde(skip)]
    pub planted_bugs: crate::core::PlantedBugs,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            id: 1,
            cluster_id: None,
            listen: "127.0.0.1:7379".to_string(),
            advertise: None,
            data_dir: PathBuf::from("ravel-data"),
            join: Vec::new(),
            follower_only: false,
            admin: Vec::new(),
            hooks_dir: None,
            metrics_listen: None,
            labels: BTreeMap::new(),
            election_timeout_min_ms: 1000,
            election_timeout_max_ms: 2000,
            heartbeat_interval_ms: 100,
            snapshot_interval_entries: 100_000,
            read_mode: "read-index".to_string(),
            seed: None,
            connections_max: 1024,
            move_chunk_bytes: crate::directory::CHUNK_BYTES,
            metrics_group: None,
            log_retention_entries: crate::storage::RETAIN_ENTRIES_DEFAULT,
            log_retention_bytes: crate::storage::RETAIN_BYTES_DEFAULT,
            auth_tokens: None,
            cert: None,
            key: None,
            ca: None,
            peer_cert: None,
            peer_key: None,
            peer_ca: None,
            peer_cert_names_node: false,
            force_new_cluster: false,
            force_new_cluster_confirm: None,
            #[cfg(feature = "planted-bugs")]
            planted_bugs: crate::core::PlantedBugs::default(),
        }
    }
}

impl NodeOptions {
    pub fn advertise(&self) -> &str {
        self.advertise.as_deref().unwrap_or(&self.listen)
    }
}

/// Why a node could not start or had to stop.
#[derive(Debug, Error)]
pub enum NodeError {
    #[error("invalid setting: {0}")]
    Invalid(String),
    #[error("{0}")]
    Storage(#[from] crate::storage::StorageError),
    #[error("the snapshot in the data directory does not decode ({0}); restore the data directory from a backup or remove it and join again")]
    Snapshot(String),
    #[error(
        "a follower-only node needs a cluster to join: give --join with the address of a member"
    )]
    FollowerOnlyWithoutCluster,
    #[error("cannot serve on {address}: {reason}")]
    Serve { address: String, reason: String },
    #[error("{0}")]
    JoinRefused(String),
    /// `--force-new-cluster` was not confirmed, or does not fit the data directory.
    #[error("{0}")]
    ForceRefused(String),
    #[error("{0}")]
    Stopped(String),
    /// `--join` was given to the founder of the cluster in its data directory (a founder that
    /// was asked to leave but never learned it was removed is still a member: it restarts
    /// without `--join`).
    #[error("invalid setting: {0}")]
    FounderGivenJoin(String),
}

/// A task that stops when its holder is dropped (the node's helpers end with it).
#[cfg(not(madsim))]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

#[cfg(not(madsim))]
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How the node enters the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// Its data directory holds a log or snapshot: it resumes as the member it was.
    Resume,
    Join,
    Bootstrap,
}

/// Runs a node on its data directory until `shutdown` resolves (then hands leadership over and
/// stops cleanly) or until it fails. Calls `on_ready` once it serves, with how it entered the
/// cluster.
///
/// The order matters: every setting is checked and the ports are bound before the data
/// directory is touched, so a mistake in the command line leaves nothing behind that the
/// corrected command would then trip over.
pub async fn run_node<S: StateMachine>(
    options: NodeOptions,
    service: Service<S>,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(Started<S>),
) -> Result<(), NodeError> {
    let mut options = options;
    let settings = Settings::check(&options)?;
    let sockets = settings.bind()?;
    if options.force_new_cluster {
        let new_id = options
            .cluster_id
            .unwrap_or_else(|| new_cluster_id(now_seed()));
        let forced = force_new_cluster(
            &options.data_dir,
            options.id,
            options.force_new_cluster_confirm,
            new_id,
        )
        .map_err(|error| match error {
            ForceError::Refused(reason) => NodeError::ForceRefused(reason),
            ForceError::Storage(error) => NodeError::Storage(error),
        })?;
        tracing::warn!(
            old_cluster = forced.old_cluster_id,
            new_cluster = forced.new_cluster_id,
            old_voters = ?forced.old_voters,
            kept_through = forced.kept_through,
            uncommitted_kept = forced.uncommitted_kept,
            "FORCED A NEW CLUSTER: node {} is now the only member of cluster {}, built from its own \
             data through index {} (entries it never saw committed: {}, committed now); the old \
             cluster's other voters {:?} are not members and cannot rejoin with their data; add \
             nodes with --join",
            options.id,
            forced.new_cluster_id,
            forced.kept_through,
            forced.uncommitted_kept,
            forced.old_voters,
        );
        options.cluster_id = Some(forced.new_cluster_id);
    }
    let stored = stored_identity(&options.data_dir)?;
    let cluster_id = options.cluster_id.unwrap_or_else(|| match stored {
        Some(identity) => identity.cluster_id,
        None if options.join.is_empty() => new_cluster_id(now_seed()),
        None => 0,
    });
    options.cluster_id = Some(cluster_id);
    let identity = Identity {
        cluster_id,
        node_id: options.id,
    };
    let storage_options = StorageOptions {
        retain_entries: options.log_retention_entries,
        retain_bytes: options.log_retention_bytes,
        ..StorageOptions::default()
    };
    let (storage, state) = FileStorage::open(&options.data_dir, identity, storage_options)?;
    let snapshot = storage.load_snapshot()?;
    let opened = Opened {
        storage: Box::new(storage),
        state,
        snapshot,
    };
    run(
        options, settings, sockets, opened, service, shutdown, on_ready,
    )
    .await
}

/// What a node found in its storage on start.
pub struct Opened {
    pub storage: Box<dyn Storage>,
    pub state: StoredState,
    pub snapshot: Option<(SnapshotMeta, Vec<u8>)>,
}

/// [`run_node`] on storage opened by the caller (a simulated disk under madsim).
pub async fn run_node_on<S: StateMachine>(
    options: NodeOptions,
    opened: Opened,
    service: Service<S>,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(Started<S>),
) -> Result<(), NodeError> {
    let settings = Settings::check(&options)?;
    let sockets = settings.bind()?;
    run(
        options, settings, sockets, opened, service, shutdown, on_ready,
    )
    .await
}

/// The settings a node needs beyond its options, each checked before anything is bound or
/// written.
pub(crate) struct Settings {
    advertise: String,
    listen: SocketAddr,
    metrics_listen: Option<SocketAddr>,
    read_mode: ReadMode,
    tls: Option<Tls>,
    /// Client tokens (`--auth-tokens`), loaded.
    tokens: Option<Tokens>,
}

/// A node's TLS, loaded: its files, and the server configuration its port uses now.
#[cfg(not(madsim))]
struct Tls {
    files: super::tls::TlsFiles,
    server: super::tls::ServerTls,
    client: rustls::ClientConfig,
}
/// Under madsim there is no TLS (the simulated network carries no bytes to encrypt).
#[cfg(madsim)]
struct Tls;

impl Tls {
    /// The TLS the options ask for: none, or every file loaded and checked.
    fn load(options: &NodeOptions) -> Result<Option<Tls>, NodeError> {
        let invalid = |reason: &str| Err(NodeError::Invalid(reason.to_string()));
        let any_peer = options.peer_cert.is_some()
            || options.peer_key.is_some()
            || options.peer_ca.is_some()
            || options.peer_cert_names_node;
        let (cert, key, ca) =
            match (&options.cert, &options.key, &options.ca) {
                (None, None, None) if !any_peer => return Ok(None),
                (Some(cert), Some(key), Some(ca)) => (cert, key, ca),
                _ => return invalid(
                    "TLS needs --cert, --key and --ca together (the --peer-* flags need them too)",
                ),
            };
        if options.peer_cert.is_some() != options.peer_key.is_some() {
            return invalid("--peer-cert and --peer-key go together");
        }
        if options.peer_cert_names_node && options.peer_ca.is_none() {
            return invalid("--peer-cert-names-node needs --peer-ca");
        }
        #[cfg(madsim)]
        {
            let _ = (cert, key, ca);
            invalid("TLS is not simulated; run the node without the TLS flags under madsim")
        }
        #[cfg(not(madsim))]
        {
            let files = super::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
                peer_cert: options.peer_cert.clone(),
                peer_key: options.peer_key.clone(),
                peer_ca: options.peer_ca.clone(),
            };
            let server = files.server_config().map_err(NodeError::Invalid)?;
            let client = files.client_config().map_err(NodeError::Invalid)?;
            Ok(Some(Tls {
                server: super::tls::ServerTls::new(server),
                files,
                client,
            }))
        }
    }
}

/// Makes the process's outgoing connections speak TLS as the node's flags say, before the node
/// starts: a sharded store's data node asks the admin for its id first.
pub fn install_client_tls(options: &NodeOptions) -> Result<(), NodeError> {
    #[cfg(not(madsim))]
    if let Some(tls) = Tls::load(options)? {
        super::tls::set_client_config(tls.client);
    }
    #[cfg(madsim)]
    let _ = Tls::load(options)?;
    Ok(())
}

/// The node's listening sockets, bound.
pub(crate) struct Sockets {
    server: listener::Bound,
    metrics: Option<metrics_endpoint::Bound>,
}

impl Settings {
    fn check(options: &NodeOptions) -> Result<Settings, NodeError> {
        if options.id == 0 {
            return Err(NodeError::Invalid(
                "node id 0 is reserved; use --id 1 or more".to_string(),
            ));
        }
        let advertise = options.advertise().to_string();
        check_address(&advertise).map_err(|error| NodeError::Invalid(error.to_string()))?;
        for seed in &options.join {
            check_address(seed).map_err(|error| NodeError::Invalid(format!("--join: {error}")))?;
        }
        let listen: SocketAddr = options.listen.parse().map_err(|_| {
            NodeError::Invalid(format!(
                "listen address {:?} is not an IP address and port, e.g. 127.0.0.1:7379",
                options.listen
            ))
        })?;
        let metrics_listen: Option<SocketAddr> = match &options.metrics_listen {
            Some(address) => Some(address.parse().map_err(|_| {
                NodeError::Invalid(format!(
                    "metrics address {address:?} is not an IP address and port, e.g. 127.0.0.1:9379"
                ))
            })?),
            None => None,
        };
        let read_mode = match options.read_mode.as_str() {
            "read-index" => ReadMode::ReadIndex,
            "lease" => ReadMode::Lease,
            other => {
                return Err(NodeError::Invalid(format!(
                    "read mode {other:?} is unknown; use \"read-index\" or \"lease\""
                )))
            }
        };
        if !(1..=crate::directory::CHUNK_BYTES_MAX).contains(&options.move_chunk_bytes) {
            return Err(NodeError::Invalid(format!(
                "--move-chunk-bytes {} is out of range: use 1 to {}",
                options.move_chunk_bytes,
                crate::directory::CHUNK_BYTES_MAX
            )));
        }
        if options.connections_max < 4 {
            return Err(NodeError::Invalid(format!(
                "--connections-max {} leaves no room for peers and clients; use 4 or more",
                options.connections_max
            )));
        }
        let tls = Tls::load(options)?;
        let tokens = match &options.auth_tokens {
            Some(path) => Some(Tokens::load(path).map_err(NodeError::Invalid)?),
            None => None,
        };
        let settings = Settings {
            advertise,
            listen,
            metrics_listen,
            read_mode,
            tls,
            tokens,
        };
        // The core's own checks (timeouts and the like), on the configuration it would get.
        settings
            .config(options, Entry::Bootstrap)
            .validate()
            .map_err(|error| NodeError::Invalid(error.to_string()))?;
        Ok(settings)
    }

    fn bind(&self) -> Result<Sockets, NodeError> {
        let server = listener::bind(self.listen).map_err(|reason| NodeError::Serve {
            address: self.listen.to_string(),
            reason,
        })?;
        let metrics = match self.metrics_listen {
            Some(listen) => {
                Some(
                    metrics_endpoint::bind(listen).map_err(|reason| NodeError::Serve {
                        address: listen.to_string(),
                        reason,
                    })?,
                )
            }
            None => None,
        };
        Ok(Sockets { server, metrics })
    }

    /// The core's configuration for a node entering its cluster as `entry`.
    fn config(&self, options: &NodeOptions, entry: Entry) -> Config {
        let mut config = match entry {
            Entry::Join => Config::joining(options.id),
            Entry::Resume | Entry::Bootstrap => Config::new(options.id, [options.id]),
        };
        config.election_timeout_min_ms = options.election_timeout_min_ms;
        config.election_timeout_max_ms = options.election_timeout_max_ms;
        config.heartbeat_interval_ms = options.heartbeat_interval_ms;
        config.snapshot_interval_entries = options.snapshot_interval_entries;
        #[cfg(feature = "planted-bugs")]
        {
            config.planted_bugs = options.planted_bugs;
        }
        config.read_mode = self.read_mode;
        config.seed = options.seed.unwrap_or_else(|| {
            options.id ^ options.cluster_id.unwrap_or(0).rotate_left(32) ^ now_seed()
        });
        config
    }
}

fn has_data(state: &StoredState) -> bool {
    state.snapshot.is_some() || !state.entries.is_empty()
}

/// How the node enters its cluster: resume from its data, join, or bootstrap, from what its data
/// directory says it is (`standing`) and what the command line asks; refused where the two
/// contradict each other.
pub fn decide_entry(
    options: &NodeOptions,
    state: &StoredState,
    standing: Option<Standing>,
) -> Result<Entry, NodeError> {
    let data_dir = options.data_dir.display();
    let join = !options.join.is_empty();
    #[cfg(feature = "planted-bugs")]
    if options.planted_bugs.resume_while_joining
        && standing == Some(Standing::Joining)
        && has_data(state)
    {
        return Ok(Entry::Resume);
    }
    match standing {
        Some(Standing::Founder) if join => Err(NodeError::FounderGivenJoin(format!(
            "the data directory {data_dir} holds the cluster this node founded (it was started \
             without --join), so it cannot join another cluster with it. To keep running that \
             cluster, start the node without --join; to join {}, move the directory aside and \
             start with an empty --data-dir",
            options.join.join(",")
        ))),
        // Not admitted yet: whatever log it holds, it may not vote with it; it asks again.
        Some(Standing::Joining) if join => Ok(Entry::Join),
        Some(Standing::Joining) => Err(NodeError::Invalid(format!(
            "the node of data directory {data_dir} was joining a cluster and was not admitted yet; \
             give --join with the address of a member to finish joining"
        ))),
        Some(Standing::Removed) if join => Ok(Entry::Join),
        Some(Standing::Removed) => Err(NodeError::Invalid(format!(
            "the node of data directory {data_dir} was removed from its cluster; to bring it \
             back, give --join with the address of a member (it rejoins through the join \
             workflow)"
        ))),
        Some(Standing::Admitted) if !has_data(state) && join => Ok(Entry::Join),
        Some(Standing::Admitted) if !has_data(state) => Err(NodeError::Invalid(format!(
            "the node of data directory {data_dir} was a member of a cluster but its log is gone; \
             give --join with the address of a member to rejoin as a fresh member"
        ))),
        _ if has_data(state) => Ok(Entry::Resume),
        _ if join => Ok(Entry::Join),
        _ if options.follower_only => Err(NodeError::FollowerOnlyWithoutCluster),
        _ => Ok(Entry::Bootstrap),
    }
}

/// What a node runs: its state machine and the client-facing gRPC service that goes with it
/// (the key-value service for a data node, the directory service for the admin).
pub struct Service<S: StateMachine> {
    /// The state machine of a node whose storage holds no snapshot.
    pub fresh: S,
    /// Adds the state machine's client services to the node's gRPC router.
    pub add: Box<dyn FnOnce(Router, NodeHandle<S>) -> Router + Send>,
}

impl Service<KvStateMachine> {
    /// The key-value store, served by [`KvService`].
    pub fn key_value() -> Self {
        Self::key_value_from(KvStateMachine::new())
    }

    /// The key-value store of a sharded store's data group (see [`KvStateMachine::sharded`]).
    /// It serves the relocation service too, through which the admin moves partitions.
    pub fn key_value_sharded(partitions: u32, move_chunk_bytes: usize) -> Self {
        Service {
            fresh: KvStateMachine::sharded(partitions),
            add: Box::new(move |router, handle| {
                router
                    .add_service(KvServer::new(KvService::new(handle.clone())))
                    .add_service(RelocationServer::new(RelocationService::new(
                        handle,
                        move_chunk_bytes,
                    )))
            }),
        }
    }

    fn key_value_from(fresh: KvStateMachine) -> Self {
        Service {
            fresh,
            add: Box::new(|router, handle| {
                let router = router.add_service(KvServer::new(KvService::new(handle.clone())));
                #[cfg(not(madsim))]
                let router = router.add_service(MaintenanceServer::new(
                    super::maintenance_service::MaintenanceService::new(handle),
                ));
                router
            }),
        }
    }
}

/// A node that is serving, as the runtime's caller sees it: for the tasks it starts beside
/// the node (the founder of an admin group proposing its settings, a data node reporting its
/// leadership to the admin).
pub struct Started<S: StateMachine> {
    pub entry: Entry,
    /// How its data directory said it entered the cluster before (none: a new directory).
    pub standing: Option<Standing>,
    pub handle: NodeHandle<S>,
    pub leadership: watch::Receiver<Leadership>,
    /// The node's metrics, for tasks beside it to add to (the admin's mover).
    pub metrics: Metrics,
    /// The node's TLS, for HTTP ports beside it to serve with (the admin's API); none when it
    /// serves plaintext.
    pub tls: Option<PortTls>,
}

/// What an HTTP port beside the node needs of its TLS (under madsim, no TLS).
#[cfg(not(madsim))]
pub type PortTls = super::tls::ServerTls;
#[cfg(madsim)]
pub type PortTls = ();

/// Runs the node once its settings are checked, its sockets bound and its storage opened.
#[allow(clippy::too_many_arguments)]
// Under madsim the TLS handed around is `Option<()>`, which is Copy.
#[cfg_attr(madsim, allow(clippy::clone_on_copy))]
pub(crate) async fn run<S: StateMachine>(
    options: NodeOptions,
    mut settings: Settings,
    sockets: Sockets,
    opened: Opened,
    service: Service<S>,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(Started<S>),
) -> Result<(), NodeError> {
    let Opened {
        mut storage,
        state,
        snapshot,
    } = opened;
    let standing = storage.standing();
    let entry = decide_entry(&options, &state, standing)?;
    // Remember how the node entered, for every later start; a node joining (again) is not
    // admitted until the leader says so.
    let entered = match entry {
        Entry::Bootstrap => Some(Standing::Founder),
        Entry::Join => Some(Standing::Joining),
        Entry::Resume => None,
    };
    if let Some(entered) = entered.filter(|&entered| standing != Some(entered)) {
        storage.record_standing(entered)?;
    }
    let Service { fresh, add } = service;
    let machine = match &snapshot {
        Some((_, data)) => S::restore(data).map_err(NodeError::Snapshot)?,
        None => fresh,
    };
    let advertise = settings.advertise.clone();
    let mut config = settings.config(&options, entry);
    if entry == Entry::Join {
        // New at every start (the seed alone may repeat across restarts): an entry made for an
        // earlier start's request must not admit this one.
        config.join_nonce = join_nonce(config.seed ^ now_seed().rotate_left(17));
    }
    let mut join_nonce = config.join_nonce;
    let mut core = RawNode::new(config, state.into(), 0)
        .map_err(|error| NodeError::Invalid(error.to_string()))?;
    if entry == Entry::Resume {
        // A learner that resumes asks again to finish its join (below), with the nonce of the
        // request its own disk holds the admission of: the leader recognises it by that alone.
        // Any other nonce would make it look like a member that lost its data, to be removed.
        join_nonce = core.own_admission_nonce().unwrap_or(0);
    }
    if entry == Entry::Bootstrap {
        // Alone in a new cluster: no one to wait for, so no election timeout to sit out.
        core.step(crate::core::Input::Campaign);
    }

    let (requests_tx, requests) = mpsc::channel(REQUEST_QUEUE_MAX);
    let (storage_tx, storage_rx) = storage_queue::storage_queue();
    let (done_tx, storage_done) = mpsc::unbounded_channel();
    let metrics = Metrics::of_group(options.metrics_group.clone());
    let storage_task = storage_worker::spawn(storage, storage_rx, done_tx, metrics.clone());
    let inbox = requests_tx.downgrade();
    // Given, stored, drawn for a new cluster (by `run_node`), or 0 until a joiner learns it.
    let cluster_id = ClusterId::new(options.cluster_id.unwrap_or(0));
    let handle = NodeHandle::new(
        requests_tx,
        cluster_id.clone(),
        options.id,
        metrics.clone(),
        Auth::new(settings.tokens.take()),
    );
    let hooks = Hooks::new(options.hooks_dir.clone());
    let (leadership_tx, leadership) = watch::channel(Leadership::default());
    let event_loop = EventLoop::new(EventLoopParts {
        core,
        state: machine,
        address: advertise.clone(),
        transport: Transport::new(
            cluster_id,
            options.id,
            advertise.clone(),
            metrics.clone(),
            inbox,
        ),
        metrics: metrics.clone(),
        hooks: hooks.clone(),
        storage: storage_tx,
        storage_done,
        requests,
        leadership: leadership_tx,
    });
    let mut loop_task = tokio::spawn(event_loop.run());

    let (stop_server, server_stopped) = oneshot::channel::<()>();
    let peer_auth = PeerAuth {
        required: options.peer_ca.is_some(),
        names_node: options.peer_cert_names_node,
    };
    let router = tonic::transport::Server::builder()
        .max_concurrent_streams(Some(STREAMS_PER_CONNECTION_MAX))
        .add_service(MembershipServer::new(MembershipService::new(
            handle.clone(),
            hooks,
            peer_auth,
        )))
        .add_service(
            PeerServer::new(PeerService::new(handle.clone(), metrics.clone(), peer_auth))
                .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
                .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX),
        )
        .add_service(HealthServer::new(HealthService::new(handle.clone())));
    let router = add(router, handle.clone());
    #[cfg(not(madsim))]
    let (server_tls, _reloading) = match settings.tls {
        Some(tls) => {
            super::tls::set_client_config(tls.client);
            let reloading = AbortOnDrop(tokio::spawn(super::tls::reload_on_change(
                tls.files,
                tls.server.clone(),
            )));
            (Some(tls.server), Some(reloading))
        }
        None => (None, None),
    };
    #[cfg(madsim)]
    let server_tls = settings.tls.map(|Tls| ());
    // The HTTP ports (metrics, the admin's API) serve TLS with the same certificate.
    let http_tls = server_tls.clone();
    let mut server_task = tokio::spawn(listener::serve(
        router,
        sockets.server,
        options.connections_max,
        server_tls,
        async {
            let _ = server_stopped.await;
        },
    ));

    let mut metrics_task = sockets.metrics.map(|bound| {
        tokio::spawn(metrics_endpoint::serve(
            bound,
            metrics.clone(),
            http_tls.clone(),
        ))
    });
    let metrics_failed = async {
        match metrics_task.as_mut() {
            Some(task) => match task.await {
                Ok(Err(reason)) => reason,
                _ => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    };

    let (join_failed_tx, mut join_failed) = mpsc::channel::<String>(1);
    // A node admitted as a learner (a configuration entry made for its request says so) that
    // stopped before it was promoted resumes as a learner: it asks again, through the members
    // it knows, to finish its join.
    let may_be_unpromoted = entry == Entry::Resume && !options.follower_only;
    if entry == Entry::Join || may_be_unpromoted {
        let mut request = JoinRequest {
            address: advertise.clone(),
            labels: options.labels.clone(),
            follower_only: options.follower_only,
            seeds: options.join.clone(),
            nonce: join_nonce,
        };
        let node = handle.clone();
        tokio::spawn(async move {
            if may_be_unpromoted {
                // Whom to ask: the voters and leader it learns of as it catches up again (its
                // address book fills as it applies the log).
                loop {
                    let Ok(view) = node.view().await else { return };
                    if view.membership.is_voter(node.id) {
                        return;
                    }
                    // Not a learner yet either: the entry that added it may not have been
                    // durable when it stopped; the leader sends it again.
                    let learner = view.membership.learners.contains(&node.id);
                    let voters = view.addresses.iter().filter(|(&member, _)| {
                        member != node.id && view.membership.is_voter(member)
                    });
                    let seeds: Vec<String> = view
                        .leader_address
                        .into_iter()
                        .chain(voters.map(|(_, address)| address.clone()))
                        .collect();
                    if learner && !seeds.is_empty() {
                        tracing::info!(
                            ?seeds,
                            "resumed as a learner that asked to be a voter: asking again"
                        );
                        request.seeds.extend(seeds);
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
            if let Err(reason) = joiner::join(node, request).await {
                let _ = join_failed_tx.send(reason).await;
            }
        });
    }
    on_ready(Started {
        entry,
        standing,
        handle: handle.clone(),
        leadership,
        metrics,
        tls: http_tls,
    });

    let outcome = tokio::select! {
        _ = shutdown => {
            tracing::info!("shutting down");
            handle.shutdown().await;
            Ok(())
        }
        Some(reason) = join_failed.recv() => {
            handle.shutdown().await;
            Err(NodeError::JoinRefused(reason))
        }
        result = &mut loop_task => match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(NodeError::Stopped(format!("stopped: {reason}"))),
            Err(error) => Err(NodeError::Stopped(format!("the event loop failed: {error}"))),
        },
        reason = metrics_failed => {
            handle.shutdown().await;
            return Err(NodeError::Serve {
                address: options.metrics_listen.clone().unwrap_or_default(),
                reason,
            });
        }
        result = &mut server_task => {
            let reason = match result {
                Ok(Ok(())) => "the server stopped".to_string(),
                Ok(Err(reason)) => reason,
                Err(error) => error.to_string(),
            };
            handle.shutdown().await;
            return Err(NodeError::Serve { address: options.listen.clone(), reason });
        }
    };
    let _ = stop_server.send(());
    let _ = server_task.await;
    if let Some(task) = metrics_task {
        task.abort();
    }
    drop(handle);
    let _ = storage_task.await;
    outcome
}

/// A join nonce from `seed`: mixed (SplitMix64's finalizer), never 0 (0 is "none").
fn join_nonce(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)).max(1)
}

/// A seed for election jitter that differs between runs of the same node (two nodes restarted
/// together must not keep picking the same timeouts). Under simulation the clock is virtual and
/// seeded, so this stays deterministic there.
pub(crate) fn now_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Entry as LogEntry, EntryPayload};

    fn options(join: bool) -> NodeOptions {
        NodeOptions {
            join: if join {
                vec!["127.0.0.1:7379".to_string()]
            } else {
                Vec::new()
            },
            ..NodeOptions::default()
        }
    }

    fn with_log() -> StoredState {
        StoredState {
            entries: vec![LogEntry {
                term: 1,
                index: 1,
                payload: EntryPayload::Noop,
            }],
            ..StoredState::default()
        }
    }

    /// Every combination of what the directory says and what the command line asks.
    #[test]
    fn the_entry_follows_the_recorded_standing() {
        let empty = StoredState::default();
        let log = with_log();
        let cases: [(Option<Standing>, &StoredState, bool, Option<Entry>); 16] = [
            // A removed node comes back only through the join workflow.
            (Some(Standing::Removed), &log, true, Some(Entry::Join)),
            (Some(Standing::Removed), &log, false, None),
            (None, &empty, false, Some(Entry::Bootstrap)),
            (None, &empty, true, Some(Entry::Join)),
            (None, &log, false, Some(Entry::Resume)),
            (None, &log, true, Some(Entry::Resume)),
            (
                Some(Standing::Founder),
                &empty,
                false,
                Some(Entry::Bootstrap),
            ),
            (Some(Standing::Founder), &log, false, Some(Entry::Resume)),
            (Some(Standing::Founder), &log, true, None),
            // A joiner not yet admitted never resumes as a member, whatever its log holds: a
            // member that lost its disk and crashed mid-rejoin may hold configurations in which
            // it was a voter, and a partial log.
            (Some(Standing::Joining), &log, true, Some(Entry::Join)),
            (Some(Standing::Joining), &empty, true, Some(Entry::Join)),
            (Some(Standing::Joining), &log, false, None),
            (Some(Standing::Joining), &empty, false, None),
            (Some(Standing::Admitted), &log, true, Some(Entry::Resume)),
            (Some(Standing::Admitted), &empty, true, Some(Entry::Join)),
            (Some(Standing::Admitted), &empty, false, None),
        ];
        for (standing, state, join, expected) in cases {
            let decided = decide_entry(&options(join), state, standing).ok();
            assert_eq!(
                decided,
                expected,
                "standing {standing:?}, log {}, --join {join}",
                !state.entries.is_empty()
            );
        }
    }
}
