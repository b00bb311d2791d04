//! The random simulator as the test of a mutation run (`scripts/mutants`): seeds on 3 and on 5
//! nodes with every fault family and no planted bug, then on 3 nodes with members losing their
//! disks too (the join workflow's rejoin path), through the same checkers as CI's runs; any
//! failure kills the mutant. `RAVEL_MUTATION_SEEDS` sets how many seeds per run (default 40,
//! which keeps this test short where CI runs it with the rest).

use ravel_sim::options::SimOptions;
use ravel_sim::runner::run_seeds;

#[test]
fn the_random_simulator_passes() {
    let seeds: u64 = std::env::var("RAVEL_MUTATION_SEEDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(40);
    for (nodes, disk_loss) in [(3, false), (5, false), (3, true)] {
        let mut options = SimOptions {
            nodes,
            ..SimOptions::default()
        };
        options.faults.disk_loss = disk_loss;
        let summary = run_seeds(0..seeds, &options, 2, false, false, &|_| {});
        let failures: Vec<_> = summary
            .failed
            .iter()
            .map(|result| (result.seed, &result.failure))
            .collect();
        assert!(
            failures.is_empty(),
            "{nodes} nodes, disk loss {disk_loss}: {failures:?}"
        );
    }
}
