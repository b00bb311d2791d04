//! Routing keys to Raft groups in the sharded store: a key belongs to one of a fixed number of
//! partitions (by a portable hash, so a client in any language computes the same), and each
//! partition to one group, by a table the directory stores and changes only in small steps
//! (consistent hashing with bounded loads).

mod partition;
mod placement;
mod table;

pub use partition::{partition_of, PartitionId, KEY_HASH_SEED, PARTITIONS_DEFAULT};
pub use placement::{capacity, LoadFactor, Placement, POINTS_PER_GROUP};
pub use table::PartitionTable;

/// A Raft group of the sharded store (a "cluster" of replicas). Allocated by the directory,
/// never reused.
pub type GroupId = u64;
