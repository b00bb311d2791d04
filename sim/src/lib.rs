//! `ravel-sim`: a deterministic, seeded simulator for clusters of Ravel Raft cores. One seed
//! decides every schedule, fault and client operation; every step is checked against the Raft
//! safety invariants and every run's client history against linearizability.

pub mod checker;
pub mod client;
pub mod disk;
pub mod explain;
pub mod harness;
pub mod history;
pub mod hostile_peer;
pub mod linearizability;
pub mod madsim_harness;
pub mod madsim_sharded;
pub mod network;
pub mod options;
pub mod runner;
pub mod schedule;
pub mod sharded;
pub mod shrink;
pub mod timeline;
pub mod trace;
pub mod world;
