//! Storage failures, each saying what happened, where, and what the operator can do.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum StorageError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("the disk is full writing {path}; free space or move the data directory, then restart the node")]
    DiskFull { path: PathBuf },
    #[error(
        "{path} is corrupt at byte {offset}: {reason}. The node refuses to start rather than lose committed \
         entries: restore the data directory from a backup, or remove it and let the node join the cluster again"
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error(
        "{path} belongs to cluster {found_cluster} node {found_node}, not cluster {cluster} node {node}; \
         point the node at its own data directory"
    )]
    WrongIdentity {
        path: PathBuf,
        cluster: u64,
        node: u64,
        found_cluster: u64,
        found_node: u64,
    },
    #[error(
        "{path} is {size} bytes, not a whole number of the {extent}-byte extents Ravel grows it by: \
         the file was cut short or written to outside Ravel, and entries this node acknowledged may be \
         gone. A voter with a shortened log could help elect a leader that lacks committed entries, so \
         the node refuses to start. To bring it back, move the data directory aside and start the node \
         with an empty --data-dir and --join ADDR of a member: it rejoins as a fresh member and the \
         leader sends it the log"
    )]
    Truncated {
        path: PathBuf,
        size: u64,
        extent: u64,
    },
    #[error(
        "the data directory {path} is in use by another process (it holds the lock on {lock}); \
         stop that process, or give this node a --data-dir of its own"
    )]
    InUse { path: PathBuf, lock: PathBuf },
    #[error("{path} is not a node's data directory (it has no ravel.meta and no wal/)")]
    NotADataDir { path: PathBuf },
    #[error("storage stopped after an earlier failure ({0}); restart the node to recover from what is on disk")]
    Stopped(String),
}

impl StorageError {
    /// Wraps an I/O error, naming a full disk as such.
    pub(super) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        if source.raw_os_error() == Some(28) || source.kind() == io::ErrorKind::StorageFull {
            StorageError::DiskFull { path }
        } else {
            StorageError::Io { path, source }
        }
    }
}
