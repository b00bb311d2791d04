//! proptest: random schedules — ticks, deliveries in any order, drops, duplicates, proposals,
//! reads, crashes, forced campaigns, transfers, and the membership workflow (spares joining
//! through the join pool, members leaving, members losing their disk and joining again) — never
//! violate the invariants the harness checks after every step, and a healed cluster converges.
//! Failures shrink to a minimal schedule. The fuzz target drives the same generator.

use proptest::prelude::*;
use ravel_sim::schedule::{Schedule, Step, NODES};

fn step() -> impl Strategy<Value = Step> {
    let node = 1..=NODES;
    prop_oneof![
        3 => (1..200u64).prop_map(Step::Tick),
        1 => (1..1000u64).prop_map(Step::RunFor),
        8 => any::<usize>().prop_map(Step::Deliver),
        1 => any::<usize>().prop_map(Step::Drop),
        1 => any::<usize>().prop_map(Step::Duplicate),
        3 => node.clone().prop_map(Step::Propose),
        1 => node.clone().prop_map(Step::Read),
        1 => node.clone().prop_map(Step::CrashAndRestart),
        1 => node.clone().prop_map(Step::Campaign),
        1 => (node.clone(), node.clone()).prop_map(|(from, to)| Step::Transfer(from, to)),
        1 => (node.clone(), node.clone()).prop_map(|(node, via)| Step::Join { node, via }),
        1 => (node.clone(), node.clone()).prop_map(|(node, via)| Step::Leave { node, via }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_schedules_keep_every_invariant(steps in proptest::collection::vec(step(), 1..300)) {
        let mut schedule = Schedule::new();
        for step in steps {
            schedule.apply(step);
        }
        // Healed and quiet, the cluster converges: one leader, every voter caught up.
        if let Err(problem) = schedule.settle(3_000) {
            prop_assert!(false, "{}", problem);
        }
    }
}
