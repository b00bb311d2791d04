//! Durable storage for one node: a segmented write-ahead log holding entries and hard states,
//! snapshot files, and the identity of the data directory.
//!
//! The contract the core relies on: after `sync` returns `Ok`, everything written before it
//! survives a crash; after any write or sync error the store stops (fail-stop) and the node must
//! restart, because after a failed fsync the kernel may have dropped the data it claimed to hold.
//! On start, a torn record at the very end of the log (a write cut by a crash) is cut off;
//! a bad record anywhere else is corruption, and the node refuses to start.

mod codec;
mod error;
mod file_storage;
mod recovery;

pub(crate) use codec::{decode, encode};
pub use codec::{CodecError, Identity, FORMAT_VERSION};
pub use error::StorageError;
pub use file_storage::{FileStorage, StorageOptions, StoredState};
