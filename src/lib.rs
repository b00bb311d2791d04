//! Ravel: a Raft engine and replicated key-value store whose correctness is earned by
//! deterministic simulation.
//!
//! - [`core`]: the sans-IO Raft state machine.
//! - [`kv`]: the replicated key-value state machine and its command encoding.
//! - [`storage`]: the durable write-ahead log, hard state and snapshot files.

pub mod core;
pub mod kv;
pub mod storage;
