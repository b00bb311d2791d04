//! Ravel: a Raft engine and replicated key-value store whose correctness is earned by
//! deterministic simulation.
//!
//! - [`core`]: the sans-IO Raft state machine.
//! - [`replica`]: one core and one state machine, turning the core's actions into answers;
//!   every runtime (the node, the simulators, the benchmarks) drives it.
//! - [`directory`]: the sharded store's directory (servers, groups, partition table), a second
//!   state machine on the same replica.
//! - [`kv`]: the replicated key-value state machine and its command encoding.
//! - [`storage`]: the durable write-ahead log, hard state and snapshot files.
//! - [`sharding`]: routing keys to groups — partitions by a portable hash, groups by consistent
//!   hashing with bounded loads.
//! - [`routed_client`]: a client of the sharded store that routes each key itself.
//! - [`server`]: the shell that runs the core on tokio and tonic (gRPC), and [`client`].
//! - [`admin`]: `ravel admin`, a replica of the sharded store's admin group, with the HTTP API.
//! - [`cli`]: the `ravel` command line.

pub mod admin;
pub mod cli;
pub mod client;
pub mod core;
pub mod directory;
pub mod kv;
pub mod replica;
pub mod routed_client;
pub mod server;
pub mod sharding;
pub mod storage;
