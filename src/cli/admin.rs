//! `ravel admin`: a replica of the sharded store's admin group. Flags as for `ravel node`
//! (`--id`, `--listen`, `--join`, ...), with the admin's own defaults, plus the system's
//! settings (used when the admin group is created) and the HTTP API's address.

use std::path::PathBuf;

use clap::Args;

use super::{ExitCode, NodeArgs};
use crate::admin::{run_admin, AdminOptions};
use crate::directory::DirectorySettings;
use crate::server::node::Entry;
use crate::server::NodeOptions;

#[derive(Debug, Args)]
pub struct AdminArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// Serve the HTTP JSON API and the status page here, e.g. 127.0.0.1:8080 (default: off).
    #[arg(long)]
    pub http: Option<String>,
    /// Partitions of the key space; fixed when the admin group is created.
    #[arg(long, default_value_t = crate::sharding::PARTITIONS_DEFAULT)]
    pub partitions: u32,
    /// Replicas per data group; fixed when the admin group is created.
    #[arg(long, default_value_t = 3)]
    pub group_size: u32,
    /// The partition table is placed once this many data groups have a member (no key has an
    /// owner before); fixed when the admin group is created.
    #[arg(long, default_value_t = 1)]
    pub initial_groups: u32,
    /// Roll back a partition move that made no progress for this many milliseconds (a group
    /// unreachable, say); it is attempted again later.
    #[arg(long, default_value_t = crate::admin::GIVE_UP_AFTER_DEFAULT.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(100..=86_400_000))]
    pub move_give_up_ms: u64,
}

pub async fn run(args: AdminArgs) -> ExitCode {
    if args.node.admin.is_some() {
        eprintln!("error: --admin is for data nodes; an admin replica joins its group with --join");
        return ExitCode::Usage;
    }
    let defaults = NodeOptions {
        // The front door of a sharded store: where `ravel dev` puts its first admin replica and
        // where `ravel groups` looks first. A data node beside it needs its own `--listen`.
        listen: "127.0.0.1:7379".to_string(),
        data_dir: PathBuf::from("ravel-admin"),
        ..NodeOptions::default()
    };
    let node = match super::node::options(args.node, defaults) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::Usage;
        }
    };
    let settings = DirectorySettings {
        partitions: args.partitions,
        group_size: args.group_size,
        initial_groups: args.initial_groups,
        ..DirectorySettings::default()
    };
    let (id, listen, http) = (node.id, node.listen.clone(), args.http.clone());
    let scheme = if node.cert.is_some() { "https" } else { "http" };
    let data_dir = node.data_dir.display().to_string();
    let options = AdminOptions {
        node,
        settings,
        http: args.http,
        move_give_up: std::time::Duration::from_millis(args.move_give_up_ms),
        #[cfg(feature = "planted-bugs")]
        bugs: Default::default(),
    };
    let result = run_admin(options, super::node::shutdown_signal(), move |entry| {
        let how = match entry {
            Entry::Resume => "resuming from its data",
            Entry::Join => "joining the admin group (connection pending)",
            Entry::Bootstrap => "created a new admin group",
        };
        println!("ravel admin {id} listening on {listen}, data in {data_dir}: {how}");
        if let Some(http) = http {
            println!("ravel admin {id} serves the HTTP API and status page at {scheme}://{http}/");
        }
    })
    .await;
    super::node::exit_code(result)
}
