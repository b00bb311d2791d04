//! `ravel snapshot restore`: a new data directory seeded from a backup, for a one-member
//! cluster that then grows by joins, as any cluster does.
//!
//! The directory gets the backup's image as its snapshot, at the backup's index and term, with
//! this node as the only voter, a new cluster id (the backup's cluster may still be running:
//! its nodes must never take the new one's messages for their own), and the standing of a
//! founder. Started with `ravel node --data-dir DIR --id ID`, it resumes from that snapshot and
//! elects itself at once. Nothing is written unless the backup verifies and decodes.

use std::path::Path;

use thiserror::Error;

use super::cluster_id::new_cluster_id;
use super::node::now_seed;
use crate::core::{HardState, Membership, NodeId, SnapshotMeta};
use crate::kv::KvStateMachine;
use crate::storage::{
    read_backup, BackupError, BackupHeader, FileStorage, Identity, Standing, StorageError,
    StorageOptions,
};

#[derive(Debug, Error)]
pub enum RestoreError {
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What a restore wrote.
#[derive(Clone, Debug)]
pub struct Restored {
    pub backup: BackupHeader,
    pub keys: usize,
    pub cluster_id: u64,
    pub node_id: NodeId,
}

/// Seeds the empty (or absent) directory `data_dir` from `backup` for node `node_id` of a new
/// cluster (`cluster_id`, or a new one drawn).
pub fn restore_backup(
    backup: &Path,
    data_dir: &Path,
    node_id: NodeId,
    cluster_id: Option<u64>,
) -> Result<Restored, RestoreError> {
    if node_id == 0 {
        return Err(RestoreError::Refused(
            "node id 0 is reserved; use --id 1 or more".to_string(),
        ));
    }
    if cluster_id == Some(0) {
        return Err(RestoreError::Refused(
            "cluster id 0 means \"not known\"; give another or none (one is drawn)".to_string(),
        ));
    }
    let occupied = std::fs::read_dir(data_dir).is_ok_and(|mut entries| entries.next().is_some());
    if occupied {
        return Err(RestoreError::Refused(format!(
            "{} is not empty; restore into a new directory (a restore never overwrites a node's data)",
            data_dir.display()
        )));
    }
    let (header, image) = read_backup(backup)?;
    let machine = KvStateMachine::restore(&image).map_err(|error| {
        RestoreError::Refused(format!(
            "{}: the image does not decode ({error}); take the backup again",
            backup.display()
        ))
    })?;
    if machine.is_sharded() {
        return Err(RestoreError::Refused(format!(
            "{} holds a sharded store's data group, which only its admin can place; this restores \
             a single-group store",
            backup.display()
        )));
    }
    if machine.applied_index() != header.index {
        return Err(RestoreError::Refused(format!(
            "{}: the image holds index {} where the header says {}; take the backup again",
            backup.display(),
            machine.applied_index(),
            header.index
        )));
    }
    let cluster_id = cluster_id.unwrap_or_else(|| new_cluster_id(now_seed()));
    let identity = Identity {
        cluster_id,
        node_id,
    };
    let (mut storage, _) = FileStorage::open(data_dir, identity, StorageOptions::default())?;
    // A term of at least 1: the term of the snapshot's last entry, as a follower installing it
    // would record it.
    let term = header.term.max(1);
    let meta = SnapshotMeta {
        index: header.index,
        term,
        membership: Membership::with_voters([node_id]),
        admissions: Vec::new(),
    };
    storage.save_snapshot(meta, &image)?;
    storage.set_hard_state(HardState {
        term,
        vote: None,
        commit: header.index,
    })?;
    storage.sync()?;
    // Last: a directory cut short before this holds a snapshot and no standing, and resumes.
    storage.record_standing(Standing::Founder)?;
    Ok(Restored {
        backup: header,
        keys: machine.client_keys(),
        cluster_id,
        node_id,
    })
}
