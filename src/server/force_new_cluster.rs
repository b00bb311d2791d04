//! `ravel node --force-new-cluster`: disaster recovery when a majority of the cluster is lost
//! for good. The node keeps its data and becomes the only voter of a new cluster built on it.
//!
//! How, in its data directory, before the node starts: a configuration entry naming this node
//! as the only voter is appended after the last entry it holds, and recorded as committed (so
//! the node applies every entry it holds, including any it never learned were committed: one of
//! those may have been acknowledged to a client by the lost majority, and losing an
//! acknowledged write is worse than applying one whose outcome its client never learned); then
//! the directory gets a new cluster id, so that a node of the old cluster that comes back after
//! all (with its own idea of the log) can never take the new cluster's messages for its own
//! or send it entries. The node then starts as usual, resumes from that log and elects itself.
//!
//! It is asked twice (`--force-new-cluster` and `--confirm-force-new-cluster` with the cluster
//! id the directory holds, which `ravel check-data` prints), and says loudly what it did.

use std::path::Path;

use thiserror::Error;

use crate::core::{Entry, EntryPayload, HardState, LogIndex, Membership, NodeId};
use crate::storage::{stored_meta, FileStorage, Standing, StorageError, StorageOptions};

#[derive(Debug, Error)]
pub enum ForceError {
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What forcing a new cluster did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forced {
    pub old_cluster_id: u64,
    pub new_cluster_id: u64,
    /// The other voters of the configuration the node held last (in its log or snapshot).
    pub old_voters: Vec<NodeId>,
    /// The last entry the node held (now committed), and the new configuration's entry.
    pub kept_through: LogIndex,
    pub config_index: LogIndex,
    /// Entries the node held past its commit index, committed now.
    pub uncommitted_kept: u64,
}

/// Makes node `node_id`'s directory the only member of new cluster `new_cluster_id`, if
/// `confirm` is the cluster id the directory holds.
pub fn force_new_cluster(
    data_dir: &Path,
    node_id: NodeId,
    confirm: Option<u64>,
    new_cluster_id: u64,
) -> Result<Forced, ForceError> {
    let refused = |reason: String| Err(ForceError::Refused(reason));
    let dir = data_dir.display();
    let Some((identity, standing)) = stored_meta(data_dir)? else {
        return refused(format!(
            "--force-new-cluster: {dir} holds no node's data; it recovers a cluster from a \
             surviving node's data directory"
        ));
    };
    if identity.node_id != node_id {
        return refused(format!(
            "--force-new-cluster: {dir} belongs to node {}, not {node_id}; give --id {}",
            identity.node_id, identity.node_id
        ));
    }
    match standing {
        Some(Standing::Joining) => {
            return refused(format!(
                "--force-new-cluster: the node of {dir} was joining and never admitted, so its \
                 log may lack committed entries; force a new cluster from a member's directory"
            ))
        }
        Some(Standing::Removed) => {
            return refused(format!(
                "--force-new-cluster: the node of {dir} was removed from its cluster, so its \
                 log may lack committed entries; force a new cluster from a member's directory"
            ))
        }
        _ => {}
    }
    if confirm != Some(identity.cluster_id) {
        let wrong = match confirm {
            Some(given) => format!(
                " ({given} is not this directory's cluster id; a directory forced already starts \
                 without --force-new-cluster)"
            ),
            None => String::new(),
        };
        return refused(format!(
            "--force-new-cluster makes node {node_id} the only member of a NEW cluster built from \
             the data in {dir}, for when a majority of cluster {} is lost for good: entries it \
             holds that it never saw committed become committed, and nodes of the old cluster \
             can never rejoin with their data. If that is what you want, stop every other node \
             of the old cluster for good and add --confirm-force-new-cluster {}{wrong}",
            identity.cluster_id, identity.cluster_id
        ));
    }
    if new_cluster_id == 0 || new_cluster_id == identity.cluster_id {
        return refused(format!(
            "--force-new-cluster needs a new cluster id other than 0 and {}",
            identity.cluster_id
        ));
    }
    let (mut storage, state) = FileStorage::open(data_dir, identity, StorageOptions::default())?;
    let last = storage.last_index();
    let last_term = state
        .entries
        .last()
        .map(|entry| entry.term)
        .or(state.snapshot.as_ref().map(|meta| meta.term))
        .unwrap_or(0);
    let old_voters = state
        .entries
        .iter()
        .rev()
        .find_map(|entry| match &entry.payload {
            EntryPayload::Membership(membership, _) => Some(membership.clone()),
            _ => None,
        })
        .or(state.snapshot.as_ref().map(|meta| meta.membership.clone()))
        .map(|membership| {
            (membership.voters.into_iter())
                .filter(|&voter| voter != node_id)
                .collect()
        })
        .unwrap_or_default();
    let hard_state = storage.hard_state();
    // No lower than any term the node has seen, so its log's terms still never decrease.
    let term = hard_state.term.max(last_term).max(1);
    let config_index = last + 1;
    storage.append(&[Entry {
        term,
        index: config_index,
        payload: EntryPayload::Membership(Membership::with_voters([node_id]), None),
    }])?;
    storage.set_hard_state(HardState {
        term,
        vote: if term == hard_state.term {
            hard_state.vote
        } else {
            None
        },
        commit: config_index,
    })?;
    storage.sync()?;
    storage.record_cluster_id(new_cluster_id)?;
    if standing != Some(Standing::Founder) {
        storage.record_standing(Standing::Founder)?;
    }
    Ok(Forced {
        old_cluster_id: identity.cluster_id,
        new_cluster_id,
        old_voters,
        kept_through: last,
        config_index,
        uncommitted_kept: last.saturating_sub(hard_state.commit),
    })
}
