//! Ravel: a Raft engine and replicated key-value store whose correctness is earned by
//! deterministic simulation.
//!
//! - [`core`]: the sans-IO Raft state machine.
//! - [`kv`]: the replicated key-value state machine and its command encoding.

pub mod core;
pub mod kv;
