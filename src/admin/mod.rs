//! `ravel admin`: a replica of the sharded store's admin group. It is a Ravel node like any
//! other (same core, storage, shell and join workflow) whose state machine is the
//! [`Directory`]; it serves the directory over gRPC to data nodes and routing clients, the
//! key-value service as a front door that routes every request to its group
//! ([`routing_kv`]), and, with `--http`, the store's HTTP JSON API and status page ([`http`]).
//! Its leader moves partitions between groups ([`mover`]).

#[cfg(not(madsim))]
pub mod http;
mod mover;
pub use mover::{step_answer, GIVE_UP_AFTER_DEFAULT};
mod routing_kv;
#[cfg(not(madsim))]
mod status_page;

use std::future::Future;
use std::sync::Arc;

use tokio::time::{sleep, Duration};

use crate::directory::{
    Directory, DirectoryAnswer, DirectoryCommand, DirectoryOutcome, DirectoryQuery,
    DirectorySettings,
};
use crate::routed_client::RoutedClient;
use crate::server::directory_service::DirectoryService;
use crate::server::event_loop::{ReadResult, Request, WriteResult};
use crate::server::handle::NodeHandle;
use crate::server::node::{Entry, Service, Started};
use crate::server::proto::ravel::{directory_server::DirectoryServer, kv_server::KvServer};
use crate::server::{run_node, run_node_on, NodeError, NodeOptions, Opened};
use crate::storage::Standing;
use routing_kv::RoutingKvService;

/// An admin replica's settings beyond a node's.
#[derive(Clone, Debug)]
pub struct AdminOptions {
    pub node: NodeOptions,
    /// The system's settings; used only by the replica that creates the admin group.
    pub settings: DirectorySettings,
    /// Where the HTTP API and status page are served; none: not served.
    pub http: Option<String>,
    /// An uncommitted move that makes no progress for this long (a group unreachable, say) is
    /// rolled back, and attempted again later.
    pub move_give_up: std::time::Duration,
    /// Test-only: mistakes planted in the directory and its mover, so the madsim harness can
    /// show that it notices them.
    #[cfg(feature = "planted-bugs")]
    pub bugs: crate::directory::DirectoryBugs,
}

/// Runs an admin replica on its data directory until `shutdown` resolves. Calls `on_ready` once
/// it serves.
pub async fn run_admin(
    options: AdminOptions,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(Entry),
) -> Result<(), NodeError> {
    run_admin_with(options, None, shutdown, on_ready).await
}

/// [`run_admin`] on storage opened by the caller (a simulated disk under madsim).
pub async fn run_admin_on(
    options: AdminOptions,
    opened: Opened,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(Entry),
) -> Result<(), NodeError> {
    run_admin_with(options, Some(opened), shutdown, on_ready).await
}

async fn run_admin_with(
    mut options: AdminOptions,
    opened: Option<Opened>,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(Entry),
) -> Result<(), NodeError> {
    options.node.metrics_group = Some("admin".to_string());
    options
        .settings
        .check()
        .map_err(|reason| NodeError::Invalid(format!("the system's settings: {reason}")))?;
    #[cfg(not(madsim))]
    let http = match &options.http {
        Some(listen) => Some(http::bind(listen).map_err(|reason| NodeError::Serve {
            address: listen.clone(),
            reason,
        })?),
        None => None,
    };
    // The HTTP API and the key-value service route by the directory read through this replica.
    let routed = Arc::new(RoutedClient::new(vec![options
        .node
        .advertise()
        .to_string()]));
    let kv_routed = routed.clone();
    #[cfg(feature = "planted-bugs")]
    let (fresh, bugs) = {
        let mut fresh = Directory::awaiting_settings();
        fresh.plant(options.bugs);
        (fresh, options.bugs)
    };
    #[cfg(not(feature = "planted-bugs"))]
    let fresh = Directory::awaiting_settings();
    let service = Service {
        fresh,
        add: Box::new(move |router, handle| {
            let auth = handle.auth.clone();
            // Routed requests carry this replica's token to the groups (whose nodes check the
            // same file when the store is secured with one); set before anything is served.
            match auth.service_token() {
                Some(token) => kv_routed.set_token(token),
                None if auth.enabled() => tracing::warn!(
                    "--auth-tokens holds no read-write token: this admin cannot route requests \
                     or move partitions to data nodes that check tokens"
                ),
                None => {}
            }
            router
                .add_service(DirectoryServer::new(DirectoryService::new(handle)))
                .add_service(KvServer::new(RoutingKvService::new(kv_routed, auth)))
        }),
    };
    let settings = options.settings.clone();
    let move_give_up = options.move_give_up;
    let mut tasks = Vec::new();
    let ready = |started: Started<Directory>| {
        let founder =
            started.entry == Entry::Bootstrap || started.standing == Some(Standing::Founder);
        if founder {
            tasks.push(tokio::spawn(propose_settings(
                started.handle.clone(),
                settings,
            )));
        }
        tasks.push(tokio::spawn(learn_leaders(started.handle.clone())));
        tasks.push(tokio::spawn(mover::move_partitions(
            started.handle.clone(),
            started.metrics.clone(),
            move_give_up,
            #[cfg(feature = "planted-bugs")]
            bugs,
        )));
        #[cfg(not(madsim))]
        if let Some(bound) = http {
            tasks.push(tokio::spawn(http::serve(
                bound,
                started.handle.clone(),
                routed,
                started.tls.clone(),
            )));
        }
        on_ready(started.entry);
    };
    let result = match opened {
        None => run_node(options.node, service, shutdown, ready).await,
        Some(opened) => run_node_on(options.node, opened, service, shutdown, ready).await,
    };
    for task in tasks {
        task.abort();
    }
    result
}

/// The directory as this replica has applied it (no read index: for status and for its own
/// background work, which must go on while the admin has no quorum).
pub(crate) async fn local_directory(
    node: &NodeHandle<Directory>,
) -> Result<Box<Directory>, crate::server::ApiError> {
    let read: ReadResult<DirectoryAnswer> = node
        .ask(|reply| Request::Read {
            query: DirectoryQuery::Overview,
            stale: true,
            may_forward: false,
            reply,
        })
        .await?;
    match read.value {
        DirectoryAnswer::Overview(directory) => Ok(directory),
        other => unreachable!("an overview query answered with {other:?}"),
    }
}

/// How often the admin's leader asks the members of groups whose leader it does not know.
const LEADER_POLL: Duration = Duration::from_secs(2);

/// Besides the reports of the groups' leaders, the admin's leader asks the members of every
/// group whose leader it does not know (a report lost with its reporter, say): a member that
/// knows a leader of a later term than the one recorded is reported as any leader would be
/// (a member knows a leader of term T only if that node led in T).
async fn learn_leaders(node: NodeHandle<Directory>) {
    loop {
        sleep(LEADER_POLL).await;
        let Ok(view) = node.view().await else {
            return;
        };
        if view.status.role != crate::core::Role::Leader {
            continue;
        }
        let Ok(directory) = local_directory(&node).await else {
            continue;
        };
        for (&group, info) in directory.groups() {
            if info.leader.is_some() {
                continue;
            }
            for member in &info.members {
                let address = &directory.servers()[member].address;
                let mut client = crate::client::Client::new(vec![address.clone()]);
                client.timeout = Duration::from_secs(1);
                let Ok(status) = client.status().await else {
                    continue;
                };
                let known = info.members.contains(&status.leader_id);
                if known && status.term > info.leader_term {
                    let command = DirectoryCommand::ReportLeader {
                        group,
                        leader: status.leader_id,
                        term: status.term,
                    };
                    let _ = node
                        .ask(|reply| Request::Write {
                            command: command.encode(),
                            may_forward: false,
                            reply,
                        })
                        .await;
                    tracing::info!(group, leader = status.leader_id, term = status.term, via = %address, "learned a group's leader by asking");
                    break;
                }
            }
        }
    }
}

/// The founder proposes the system's settings until the directory has some (its own, or —
/// after a restart with other flags — the ones it was created with, which never change).
async fn propose_settings(node: NodeHandle<Directory>, settings: DirectorySettings) {
    loop {
        if let Ok(directory) = local_directory(&node).await {
            if directory.is_initialized() {
                if directory.settings() != &settings {
                    tracing::warn!(
                        fixed = ?directory.settings(),
                        given = ?settings,
                        "the system's settings were fixed when it was created; the ones given \
                         now are ignored"
                    );
                }
                return;
            }
        }
        let command = DirectoryCommand::Initialize(settings.clone()).encode();
        let written: Result<WriteResult<DirectoryOutcome>, _> = node
            .ask(|reply| Request::Write {
                command,
                may_forward: true,
                reply,
            })
            .await;
        match written {
            Ok(WriteResult {
                outcome: DirectoryOutcome::Initialized,
                ..
            }) => {
                tracing::info!(?settings, "the system's settings are set");
                return;
            }
            Ok(WriteResult { outcome, .. }) => {
                tracing::warn!(?outcome, "the system's settings were not set");
            }
            Err(crate::server::ApiError::ShuttingDown) => return,
            Err(error) => tracing::debug!(%error, "proposing the system's settings; retrying"),
        }
        sleep(Duration::from_millis(200)).await;
    }
}
