//! A data node's side of the sharded store's admin (`ravel node --admin ADDR,...`): it asks the
//! admin for its id and group once, keeps the answer in its data directory (so a restart with
//! its data resumes without asking), reports every leadership of its own to the admin, and as
//! leader claims its group's partitions of the admin's first table.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::{sleep, timeout, Duration};

use super::error::ApiError;
use super::event_loop::{Leadership, Request, WriteResult};
use super::handle::NodeHandle;
use super::proto::ravel::{self as pb, directory_client::DirectoryClient};
use crate::core::NodeId;
use crate::kv::{Command, Outcome};
use crate::routed_client::read_overview;
use crate::sharding::GroupId;
use crate::storage::Standing;

/// The file in the data directory that keeps the registration.
pub const ASSIGNMENT_FILE: &str = "ASSIGNMENT";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What the admin assigned this node, as kept in [`ASSIGNMENT_FILE`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assignment {
    /// This node's own random number for its registration: asking again with it (after a crash
    /// before the answer was kept) gets the same answer, not a second id. Below 2^63 (TOML's
    /// integers are signed).
    pub token: u64,
    /// 0 until the admin answered.
    pub node_id: NodeId,
    pub group_id: GroupId,
    /// The system's partitions, which the node's state machine starts knowing, so that its
    /// group serves no key before it claims its partitions (0, in a file written before this
    /// was kept: the group served every key until its first claim).
    #[serde(default)]
    pub partitions: u32,
}

/// The registration's answer: the assignment, and where to join the group (empty: start it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registered {
    pub assignment: Assignment,
    pub seeds: Vec<String>,
}

/// Where a node keeps its assignment: [`AssignmentFile`] in its data directory, or a simulated
/// disk under madsim.
pub trait AssignmentStore: Send + Sync {
    /// The assignment kept, if any.
    fn load(&self) -> Result<Option<Assignment>, String>;
    /// Keeps the assignment durably before returning.
    fn keep(&self, assignment: &Assignment) -> Result<(), String>;
}

/// The assignment as [`ASSIGNMENT_FILE`] in a node's data directory.
pub struct AssignmentFile<'a>(pub &'a Path);

impl AssignmentStore for AssignmentFile<'_> {
    fn load(&self) -> Result<Option<Assignment>, String> {
        stored_assignment(self.0)
    }
    fn keep(&self, assignment: &Assignment) -> Result<(), String> {
        keep(self.0, assignment)
    }
}

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(ASSIGNMENT_FILE)
}

/// The assignment kept in `data_dir`, if any.
pub fn stored_assignment(data_dir: &Path) -> Result<Option<Assignment>, String> {
    let path = path(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).map(Some).map_err(|error| {
            format!(
                "{} is damaged ({error}); if this node never served, remove the data directory \
                 and start again",
                path.display()
            )
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(format!("cannot read {}: {error}", path.display())),
    }
}

/// Writes the assignment durably (a temporary file, fsynced, renamed over the old one).
fn keep(data_dir: &Path, assignment: &Assignment) -> Result<(), String> {
    use std::io::Write;
    std::fs::create_dir_all(data_dir)
        .map_err(|error| format!("cannot create {}: {error}", data_dir.display()))?;
    let text = toml::to_string(assignment)
        .map_err(|error| format!("cannot encode the assignment {assignment:?}: {error}"))?;
    let temporary = data_dir.join(format!("{ASSIGNMENT_FILE}.tmp"));
    let written = std::fs::File::create(&temporary).and_then(|mut file| {
        file.write_all(text.as_bytes())?;
        file.sync_all()
    });
    written
        .and_then(|_| std::fs::rename(&temporary, path(data_dir)))
        .and_then(|_| std::fs::File::open(data_dir)?.sync_all())
        .map_err(|error| format!("cannot write {}: {error}", path(data_dir).display()))
}

/// Whether a node resumes as the member it is without asking the admin: only once its data
/// directory (`stored`: the node id it was stamped with and where it stands) shows it has been a
/// member of the group it was assigned — it started it, or was admitted to it. Before that it
/// asks again with its token (the same answer, and where to join): started with no one to
/// join, it would otherwise start a second group of its own (nothing recorded yet) or refuse to
/// start at all (recorded as joining).
pub fn resumes_without_asking(
    assignment: Option<&Assignment>,
    stored: Option<(NodeId, Option<Standing>)>,
) -> bool {
    match (assignment, stored) {
        (Some(assignment), Some((node_id, standing))) => {
            assignment.node_id != 0
                && assignment.node_id == node_id
                && matches!(standing, Some(Standing::Founder | Standing::Admitted))
        }
        _ => false,
    }
}

/// Registers this node with the admin (or finishes a registration a crash interrupted),
/// retrying until an admin replica answers; keeps the answer in `store` before returning.
pub async fn register(
    admin: &[String],
    store: &dyn AssignmentStore,
    address: &str,
    labels: &BTreeMap<String, String>,
    fresh_token: u64,
) -> Result<Registered, String> {
    let mut assignment = match store.load()? {
        Some(assignment) => assignment,
        None => {
            let assignment = Assignment {
                token: fresh_token,
                ..Assignment::default()
            };
            // Kept before asking: a crash after the admin answered asks again with this token.
            store.keep(&assignment)?;
            assignment
        }
    };
    let request = pb::RegisterRequest {
        token: assignment.token,
        address: address.to_string(),
        labels: labels.clone().into_iter().collect(),
    };
    let mut backoff = BACKOFF_MIN;
    let response = 'asking: loop {
        for endpoint in admin {
            match ask(endpoint, request.clone()).await {
                Ok(response) => break 'asking response,
                Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                    return Err(format!("the admin refused this node: {}", status.message()));
                }
                Err(status) => {
                    tracing::debug!(%endpoint, %status, "registration with the admin failed")
                }
            }
        }
        tracing::warn!(
            ?admin,
            retry_in_ms = backoff.as_millis() as u64,
            "no admin replica registered this node yet; retrying"
        );
        sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    };
    if assignment.node_id != 0 && assignment.node_id != response.node_id {
        return Err(format!(
            "the admin now gives this node id {} but it was given {} before: the admin's data \
             was replaced; remove this node's data directory and start it again",
            response.node_id, assignment.node_id
        ));
    }
    assignment.node_id = response.node_id;
    assignment.group_id = response.group_id;
    assignment.partitions = response.partitions;
    store.keep(&assignment)?;
    Ok(Registered {
        assignment,
        seeds: response.seeds,
    })
}

async fn ask(
    endpoint: &str,
    request: pb::RegisterRequest,
) -> Result<pb::RegisterResponse, tonic::Status> {
    let channel = super::channel::connect(endpoint, CONNECT_TIMEOUT)
        .await
        .map_err(tonic::Status::unavailable)?;
    match timeout(
        CALL_TIMEOUT,
        DirectoryClient::new(channel).register(request),
    )
    .await
    {
        Ok(result) => result.map(tonic::Response::into_inner),
        Err(_) => Err(tonic::Status::deadline_exceeded("timed out")),
    }
}

/// Reports each leadership of this node (`me`, of `group`) to the admin, and as leader claims
/// the group's partitions of the admin's first table in the group's log, until the node stops.
/// A report is retried until the admin records it or this node's leadership is superseded; the
/// admin keeps the leader of the highest term, so a late report does no harm. A claim is
/// proposed once per leadership (it takes only what the group does not hold yet).
pub async fn report_leadership(
    admin: Vec<String>,
    group: GroupId,
    node: NodeHandle,
    mut leadership: watch::Receiver<Leadership>,
) {
    loop {
        let now = *leadership.borrow_and_update();
        if now.leading {
            let lead = async {
                report_until_recorded(&admin, group, node.id, now.term).await;
                claim_until_applied(&admin, group, &node).await;
            };
            tokio::select! {
                _ = lead => {}
                changed = leadership.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    continue;
                }
            }
        }
        if leadership.changed().await.is_err() {
            return;
        }
    }
}

async fn report_until_recorded(admin: &[String], group: GroupId, me: NodeId, term: u64) {
    let request = pb::ReportLeaderRequest {
        group_id: group,
        leader_id: me,
        term,
    };
    let mut backoff = BACKOFF_MIN;
    loop {
        for endpoint in admin {
            if report(endpoint, request).await {
                tracing::info!(group, term, "reported leadership to the admin");
                return;
            }
        }
        sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Proposes the claim of the group's partitions of the first table (epoch 1), once the admin
/// has placed it, and waits until it is applied.
async fn claim_until_applied(admin: &[String], group: GroupId, node: &NodeHandle) {
    let mut backoff = BACKOFF_MIN;
    loop {
        if let Ok(overview) = read_overview(admin, CALL_TIMEOUT).await {
            if !overview.owners.is_empty() {
                let claimed: Vec<u32> = overview
                    .owners
                    .iter()
                    .enumerate()
                    .filter(|(_, owner)| owner.group_id == group && owner.epoch == 1)
                    .map(|(partition, _)| partition as u32)
                    .collect();
                let command = Command::Claim {
                    partitions: overview.partitions,
                    claimed,
                };
                let written: Result<WriteResult, ApiError> = node
                    .ask(|reply| Request::Write {
                        command: command.encode(),
                        may_forward: false,
                        reply,
                    })
                    .await;
                match written {
                    Ok(WriteResult {
                        outcome: Outcome::Claimed { taken },
                        ..
                    }) => {
                        tracing::info!(group, taken, "claimed the group's partitions");
                        return;
                    }
                    Ok(other) => tracing::warn!(?other, "unexpected answer to a claim"),
                    Err(ApiError::ShuttingDown) => return,
                    Err(error) => tracing::debug!(%error, "claiming partitions; retrying"),
                }
            }
        }
        sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Whether the admin took the report (recorded, or already knew of a later leader).
async fn report(endpoint: &str, request: pb::ReportLeaderRequest) -> bool {
    let Ok(channel) = super::channel::connect(endpoint, CONNECT_TIMEOUT).await else {
        return false;
    };
    match timeout(
        CALL_TIMEOUT,
        DirectoryClient::new(channel).report_leader(request),
    )
    .await
    {
        Ok(Ok(_)) => true,
        Ok(Err(status)) => {
            tracing::debug!(%endpoint, %status, "leadership report failed");
            false
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_assignment_survives_a_restart_and_damage_is_named() {
        let dir = tempfile::tempdir().expect("temporary directory");
        assert_eq!(stored_assignment(dir.path()), Ok(None));
        let assignment = Assignment {
            token: 7,
            node_id: 101,
            group_id: 2,
            partitions: 16,
        };
        keep(dir.path(), &assignment).expect("written");
        assert_eq!(stored_assignment(dir.path()), Ok(Some(assignment)));
        std::fs::write(path(dir.path()), "token = [").expect("written");
        let error = stored_assignment(dir.path()).expect_err("damaged");
        assert!(error.contains("ASSIGNMENT is damaged"), "{error}");
    }

    #[test]
    fn only_a_node_that_has_been_a_member_resumes_without_asking() {
        let assigned = Assignment {
            token: 7,
            node_id: 101,
            group_id: 2,
            partitions: 16,
        };
        let asked = Assignment {
            node_id: 0,
            ..assigned.clone()
        };
        for (assignment, stored, resumes) in [
            (Some(&assigned), Some((101, Some(Standing::Founder))), true),
            (Some(&assigned), Some((101, Some(Standing::Admitted))), true),
            // Crashed before it started its group, or while it was joining: it asks again.
            (Some(&assigned), Some((101, None)), false),
            (Some(&assigned), Some((101, Some(Standing::Joining))), false),
            (Some(&assigned), Some((101, Some(Standing::Removed))), false),
            (
                Some(&assigned),
                Some((102, Some(Standing::Admitted))),
                false,
            ),
            (Some(&assigned), None, false),
            (Some(&asked), Some((0, Some(Standing::Founder))), false),
            (None, Some((101, Some(Standing::Admitted))), false),
        ] {
            assert_eq!(
                resumes_without_asking(assignment, stored),
                resumes,
                "{assignment:?} {stored:?}"
            );
        }
    }
}
