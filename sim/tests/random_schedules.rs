//! proptest: random schedules of inputs — ticks, deliveries in any order, drops, duplicates,
//! proposals, reads, crashes, forced campaigns and transfers — never violate the invariants the
//! harness checks after every step. Failures shrink to a minimal schedule.

use proptest::prelude::*;
use ravel::core::Input;
use ravel_sim::harness::TestCluster;

#[derive(Clone, Debug)]
enum Step {
    Tick(u64),
    /// Deliver the queued message at this position (modulo the queue length).
    Deliver(usize),
    Drop(usize),
    Duplicate(usize),
    Propose(u64),
    Read(u64),
    CrashAndRestart(u64),
    Campaign(u64),
    Transfer(u64, u64),
}

fn step() -> impl Strategy<Value = Step> {
    let node = 1..=3u64;
    prop_oneof![
        3 => (1..200u64).prop_map(Step::Tick),
        8 => any::<usize>().prop_map(Step::Deliver),
        1 => any::<usize>().prop_map(Step::Drop),
        1 => any::<usize>().prop_map(Step::Duplicate),
        3 => node.clone().prop_map(Step::Propose),
        1 => node.clone().prop_map(Step::Read),
        1 => node.clone().prop_map(Step::CrashAndRestart),
        1 => node.clone().prop_map(Step::Campaign),
        1 => (node.clone(), node).prop_map(|(from, to)| Step::Transfer(from, to)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_schedules_keep_every_invariant(steps in proptest::collection::vec(step(), 1..300)) {
        let mut cluster = TestCluster::new(3, |_| {});
        let mut request = 0;
        for step in steps {
            match step {
                Step::Tick(ms) => {
                    cluster.now_ms += ms;
                    for id in 1..=3 {
                        cluster.step(id, Input::Tick { now_ms: cluster.now_ms });
                    }
                }
                Step::Deliver(position) if !cluster.in_flight.is_empty() => {
                    let message = cluster.in_flight.remove(position % cluster.in_flight.len());
                    cluster.deliver(message);
                }
                Step::Drop(position) if !cluster.in_flight.is_empty() => {
                    let len = cluster.in_flight.len();
                    cluster.in_flight.remove(position % len);
                }
                Step::Duplicate(position) if !cluster.in_flight.is_empty() => {
                    let message = cluster.in_flight[position % cluster.in_flight.len()].clone();
                    cluster.in_flight.push(message);
                }
                Step::Deliver(_) | Step::Drop(_) | Step::Duplicate(_) => {}
                Step::Propose(id) => {
                    request += 1;
                    cluster.propose(id, request, b"command");
                }
                Step::Read(id) => {
                    request += 1;
                    cluster.step(id, Input::Read { id: request });
                }
                Step::CrashAndRestart(id) => {
                    cluster.crash(id);
                    cluster.restart(id);
                }
                Step::Campaign(id) => cluster.step(id, Input::Campaign),
                Step::Transfer(from, to) => cluster.step(from, Input::TransferLeadership { to }),
            }
        }
        // Healed and quiet, the cluster converges: one leader, everyone caught up.
        cluster.in_flight.clear();
        cluster.run_for(3_000);
        let leader = cluster.leader().expect("a leader after the schedule ends");
        let last = cluster.status(leader).last_index;
        for id in 1..=3 {
            prop_assert_eq!(cluster.status(id).commit, last, "node {} caught up", id);
        }
    }
}
