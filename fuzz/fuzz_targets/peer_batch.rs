//! Arbitrary bytes as a peer's batch: decoded as protobuf (as the peer service receives it),
//! then each message checked at the boundary and stepped into a node holding a log
//! (`ravel_sim::hostile_peer`). The node must never panic nor ask its storage or state machine
//! for what they would refuse.
//!
//! Run (stable): `cargo fuzz run peer_batch -s none`; with sanitizers on nightly:
//! `cargo +nightly fuzz run peer_batch`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use ravel::server::proto::ravel::MessageBatch;
use ravel_sim::hostile_peer::HostileTarget;

fuzz_target!(|data: &[u8]| {
    let Ok(batch) = MessageBatch::decode(data) else {
        return;
    };
    let mut node = HostileTarget::new();
    for message in batch.messages.into_iter().take(256) {
        node.deliver(batch.from, message);
        node.pass(50);
    }
    node.pass(3_000);
});
