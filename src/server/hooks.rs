//! Operator hooks, as executables in a hooks directory (like git hooks):
//!
//! - `update-node ID ADDRESS [LABEL=VALUE...]` decides a join: exit status 0 accepts; otherwise
//!   the first line of its output is the reason given to the joiner.
//! - `switch-status STATUS` is told when this node's member state changes
//!   (`connection-pending`, `learner`, `voter`, `removed`).
//! - `leader-change LEADER_ID TERM NODE_ID` is told when this node learns of a new leader
//!   (0: none known).
//!
//! A missing hook means the default (accept; nothing to tell). A hook that cannot run, fails or
//! runs longer than [`HOOK_TIMEOUT`] rejects, with the reason logged; it never stops the node.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;

use tokio::time::{timeout, Duration};

use crate::core::NodeId;

pub const HOOK_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, Default)]
pub struct Hooks {
    dir: Option<PathBuf>,
}

impl Hooks {
    pub fn new(dir: Option<PathBuf>) -> Self {
        Hooks { dir }
    }

    /// Runs `update-node`: `Ok` admits the joiner, `Err` carries the reason it was refused.
    pub async fn admit(
        &self,
        node: NodeId,
        address: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), String> {
        let mut args = vec![node.to_string(), address.to_string()];
        args.extend(labels.iter().map(|(key, value)| format!("{key}={value}")));
        match self.run("update-node", args).await {
            None => Ok(()),
            Some(Ok(_)) => Ok(()),
            Some(Err(reason)) => Err(reason),
        }
    }

    pub fn switch_status(&self, status: &str) {
        self.notify("switch-status", vec![status.to_string()]);
    }

    pub fn leader_change(&self, leader: NodeId, term: u64, me: NodeId) {
        self.notify(
            "leader-change",
            vec![leader.to_string(), term.to_string(), me.to_string()],
        );
    }

    fn notify(&self, name: &'static str, args: Vec<String>) {
        if self.path(name).is_none() {
            return;
        }
        let hooks = self.clone();
        tokio::spawn(async move {
            if let Some(Err(reason)) = hooks.run(name, args).await {
                tracing::warn!(hook = name, %reason, "hook failed");
            }
        });
    }

    fn path(&self, name: &str) -> Option<PathBuf> {
        let path = self.dir.as_ref()?.join(name);
        path.is_file().then_some(path)
    }

    /// `None` if the hook does not exist; otherwise its first output line, or why it failed.
    async fn run(&self, name: &str, args: Vec<String>) -> Option<Result<String, String>> {
        let path = self.path(name)?;
        let child = tokio::process::Command::new(&path)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(error) => {
                return Some(Err(format!(
                    "hook {} could not run: {error}",
                    path.display()
                )))
            }
        };
        let output = match timeout(HOOK_TIMEOUT, child.wait_with_output()).await {
            Ok(Ok(output)) => output,
            Ok(Err(error)) => return Some(Err(format!("hook {name} failed: {error}"))),
            Err(_) => {
                return Some(Err(format!(
                    "hook {name} did not finish within {} s",
                    HOOK_TIMEOUT.as_secs()
                )))
            }
        };
        let first_line = |bytes: &[u8]| {
            String::from_utf8_lossy(bytes)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        };
        let mut line = first_line(&output.stdout);
        if line.is_empty() {
            line = first_line(&output.stderr);
        }
        if output.status.success() {
            Some(Ok(line))
        } else if line.is_empty() {
            Some(Err(format!("hook {name} refused ({})", output.status)))
        } else {
            Some(Err(line))
        }
    }
}
