//! The random simulator as the test of a mutation run (`scripts/mutants`): seeds on 3 and on 5
//! nodes with every fault family and no planted bug, through the same checkers as CI's runs;
//! any failure kills the mutant. `RAVEL_MUTATION_SEEDS` sets how many seeds per size (default
//! 40, which keeps this test short where CI runs it with the rest).

use ravel_sim::options::SimOptions;
use ravel_sim::runner::run_seeds;

#[test]
fn the_random_simulator_passes() {
    let seeds: u64 = std::env::var("RAVEL_MUTATION_SEEDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(40);
    for nodes in [3, 5] {
        let options = SimOptions {
            nodes,
            ..SimOptions::default()
        };
        let summary = run_seeds(0..seeds, &options, 2, false, false, &|_| {});
        let failures: Vec<_> = summary
            .failed
            .iter()
            .map(|result| (result.seed, &result.failure))
            .collect();
        assert!(failures.is_empty(), "{nodes} nodes: {failures:?}");
    }
}
