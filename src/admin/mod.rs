//! `ravel admin`: a replica of the sharded store's admin group. It is a Ravel node like any
//! other (same core, storage, shell and join workflow) whose state machine is the
//! [`Directory`]; it serves the directory over gRPC to data nodes and routing clients, and,
//! with `--http`, the store's HTTP JSON API and status page ([`http`]).

#[cfg(not(madsim))]
pub mod http;
#[cfg(not(madsim))]
mod status_page;

use std::future::Future;

use tokio::time::{sleep, Duration};

use crate::directory::{
    Directory, DirectoryAnswer, DirectoryCommand, DirectoryOutcome, DirectoryQuery,
    DirectorySettings,
};
use crate::server::directory_service::DirectoryService;
use crate::server::event_loop::{ReadResult, Request, WriteResult};
use crate::server::handle::NodeHandle;
use crate::server::node::{Entry, Service, Started};
use crate::server::proto::ravel::directory_server::DirectoryServer;
use crate::server::{run_node, NodeError, NodeOptions};
use crate::storage::Standing;

/// An admin replica's settings beyond a node's.
#[derive(Clone, Debug)]
pub struct AdminOptions {
    pub node: NodeOptions,
    /// The system's settings; used only by the replica that creates the admin group.
    pub settings: DirectorySettings,
    /// Where the HTTP API and status page are served; none: not served.
    pub http: Option<String>,
}

/// Runs an admin replica until `shutdown` resolves. Calls `on_ready` once it serves.
pub async fn run_admin(
    options: AdminOptions,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(Entry),
) -> Result<(), NodeError> {
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
    let service = Service {
        fresh: Directory::awaiting_settings(),
        add: Box::new(|router, handle| {
            router.add_service(DirectoryServer::new(DirectoryService::new(handle)))
        }),
    };
    let settings = options.settings.clone();
    // The HTTP API reads the directory through this replica.
    #[cfg(not(madsim))]
    let advertise = options.node.advertise().to_string();
    let mut tasks = Vec::new();
    let result = run_node(
        options.node,
        service,
        shutdown,
        |started: Started<Directory>| {
            let founder =
                started.entry == Entry::Bootstrap || started.standing == Some(Standing::Founder);
            if founder {
                tasks.push(tokio::spawn(propose_settings(
                    started.handle.clone(),
                    settings,
                )));
            }
            #[cfg(not(madsim))]
            if let Some(bound) = http {
                let routed =
                    std::sync::Arc::new(crate::routed_client::RoutedClient::new(vec![advertise]));
                tasks.push(tokio::spawn(http::serve(
                    bound,
                    started.handle.clone(),
                    routed,
                )));
            }
            on_ready(started.entry);
        },
    )
    .await;
    for task in tasks {
        task.abort();
    }
    result
}

/// The founder proposes the system's settings until the directory has some (its own, or —
/// after a restart with other flags — the ones it was created with, which never change).
async fn propose_settings(node: NodeHandle<Directory>, settings: DirectorySettings) {
    loop {
        let local: Result<ReadResult<DirectoryAnswer>, _> = node
            .ask(|reply| Request::Read {
                query: DirectoryQuery::Overview,
                stale: true,
                may_forward: false,
                reply,
            })
            .await;
        if let Ok(ReadResult {
            value: DirectoryAnswer::Overview(directory),
            ..
        }) = &local
        {
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
