//! The input bytes are a schedule for a cluster of 3 voters and 2 spares: each byte pair picks a
//! step (tick, deliver, drop, duplicate, propose, read, crash and restart, campaign, transfer,
//! join, leave, lose the disk and rejoin) and its argument — the generator the proptest test
//! `sim/tests/random_schedules.rs` uses too. The harness checks every Raft invariant after every
//! step and panics on a violation.
//!
//! Run (stable): `cargo fuzz run cluster_schedule -s none`; with sanitizers on nightly:
//! `cargo +nightly fuzz run cluster_schedule`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ravel_sim::schedule::{Schedule, Step};

fuzz_target!(|data: &[u8]| {
    let mut schedule = Schedule::new();
    for pair in data.chunks_exact(2).take(2_000) {
        schedule.apply(Step::from_bytes(pair[0], pair[1]));
    }
});
