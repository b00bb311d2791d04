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
//! At most [`HOOK_PROCESSES_MAX`] hook processes run at once: joiners control how many
//! `update-node` checks are asked for, so beyond that a join is answered "overloaded" (the
//! joiner retries) and a notification is skipped, with a warning.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::time::{timeout, Duration};

use crate::core::NodeId;

pub const HOOK_TIMEOUT: Duration = Duration::from_secs(5);

/// Hook processes running at once, at most.
pub const HOOK_PROCESSES_MAX: usize = 8;

#[derive(Clone, Debug)]
pub struct Hooks {
    dir: Option<PathBuf>,
    /// One permit per hook process that may run now.
    running: Arc<Semaphore>,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks::new(None)
    }
}

/// Why `update-node` did not admit a joiner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotAdmitted {
    /// The hook refused, with its reason: final.
    Refused(String),
    /// Too many hooks are running: the joiner should retry shortly.
    Busy,
}

impl Hooks {
    pub fn new(dir: Option<PathBuf>) -> Self {
        Hooks {
            dir,
            running: Arc::new(Semaphore::new(HOOK_PROCESSES_MAX)),
        }
    }

    /// Runs `update-node`: `Ok` admits the joiner.
    pub async fn admit(
        &self,
        node: NodeId,
        address: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), NotAdmitted> {
        if self.path("update-node").is_none() {
            return Ok(());
        }
        let Ok(_permit) = self.running.clone().try_acquire_owned() else {
            return Err(NotAdmitted::Busy);
        };
        let mut args = vec![node.to_string(), address.to_string()];
        args.extend(labels.iter().map(|(key, value)| format!("{key}={value}")));
        match self.run("update-node", args).await {
            None | Some(Ok(_)) => Ok(()),
            Some(Err(reason)) => Err(NotAdmitted::Refused(reason)),
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
        let Ok(permit) = self.running.clone().try_acquire_owned() else {
            tracing::warn!(
                hook = name,
                "skipped: {HOOK_PROCESSES_MAX} hooks are running already"
            );
            return;
        };
        let hooks = self.clone();
        tokio::spawn(async move {
            if let Some(Err(reason)) = hooks.run(name, args).await {
                tracing::warn!(hook = name, %reason, "hook failed");
            }
            drop(permit);
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

#[cfg(all(test, not(madsim)))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// Joiners decide how many `update-node` checks run: beyond the limit a join is answered
    /// busy at once (and retried by the joiner), not queued behind slow hooks or refused.
    #[tokio::test]
    async fn no_more_than_the_limit_of_hooks_run_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let hook = dir.path().join("update-node");
        std::fs::write(&hook, "#!/bin/sh\nsleep 1\n").unwrap();
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
        let hooks = Hooks::new(Some(dir.path().to_path_buf()));
        let labels = BTreeMap::new();
        let admissions = (0..HOOK_PROCESSES_MAX as u64 + 2).map(|node| {
            let hooks = hooks.clone();
            let labels = labels.clone();
            async move { hooks.admit(node + 1, "127.0.0.1:1", &labels).await }
        });
        let outcomes = futures_join_all(admissions).await;
        let busy = outcomes
            .iter()
            .filter(|outcome| **outcome == Err(NotAdmitted::Busy))
            .count();
        let admitted = outcomes.iter().filter(|outcome| outcome.is_ok()).count();
        assert_eq!((admitted, busy), (HOOK_PROCESSES_MAX, 2), "{outcomes:?}");
        // Once they finished, a join is checked again.
        assert_eq!(hooks.admit(99, "127.0.0.1:1", &labels).await, Ok(()));
    }

    /// Runs every future as a task of its own, at once, and collects their outputs.
    async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let handles: Vec<_> = futures.map(tokio::spawn).collect();
        let mut outputs = Vec::new();
        for handle in handles {
            outputs.push(handle.await.expect("joins"));
        }
        outputs
    }
}
