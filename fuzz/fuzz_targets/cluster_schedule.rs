//! The input bytes are a schedule for a 3-node cluster: each byte pair picks a step (tick,
//! deliver, drop, duplicate, propose, read, crash and restart, campaign, transfer) and its
//! argument. The harness checks every Raft invariant after every step and panics on a violation.
//!
//! Run (stable): `cargo fuzz run cluster_schedule -s none`; with sanitizers on nightly:
//! `cargo +nightly fuzz run cluster_schedule`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ravel::core::Input;
use ravel_sim::harness::TestCluster;

fuzz_target!(|data: &[u8]| {
    let mut cluster = TestCluster::new(3, |_| {});
    let mut request = 0;
    for pair in data.chunks_exact(2).take(2_000) {
        let (op, arg) = (pair[0] % 9, pair[1]);
        let node = u64::from(arg % 3) + 1;
        let position = usize::from(arg);
        match op {
            0 => {
                cluster.now_ms += u64::from(arg);
                for id in 1..=3 {
                    cluster.step(id, Input::Tick { now_ms: cluster.now_ms });
                }
            }
            1 if !cluster.in_flight.is_empty() => {
                let message = cluster.in_flight.remove(position % cluster.in_flight.len());
                cluster.deliver(message);
            }
            2 if !cluster.in_flight.is_empty() => {
                let len = cluster.in_flight.len();
                cluster.in_flight.remove(position % len);
            }
            3 if !cluster.in_flight.is_empty() => {
                let message = cluster.in_flight[position % cluster.in_flight.len()].clone();
                cluster.in_flight.push(message);
            }
            4 => {
                request += 1;
                cluster.propose(node, request, b"fuzz");
            }
            5 => {
                request += 1;
                cluster.step(node, Input::Read { id: request });
            }
            6 => {
                cluster.crash(node);
                cluster.restart(node);
            }
            7 => cluster.step(node, Input::Campaign),
            8 => cluster.step(node, Input::TransferLeadership { to: u64::from(arg / 3 % 3) + 1 }),
            _ => {}
        }
    }
});
