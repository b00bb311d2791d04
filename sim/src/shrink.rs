//! `--shrink`: from a failing run, search greedily for a smaller one — fewer nodes, clients,
//! keys, spares and fault families, less simulated time — that fails the same check, so that
//! its trace is short enough to read. Any smaller configuration changes the whole schedule, so
//! each is tried on the failing seed and on a few others.

use crate::explain::check_of;
use crate::options::SimOptions;
use crate::runner::run_seed;

/// A failing run: its options, seed and report.
#[derive(Clone, Debug)]
pub struct Failing {
    pub options: SimOptions,
    pub seed: u64,
    pub failure: String,
}

/// What the search found, and how many runs it took.
#[derive(Debug)]
pub struct Shrunk {
    pub smallest: Failing,
    pub runs: usize,
}

/// Turns one fault family off.
type LeaveOut = fn(&mut SimOptions);

/// Shortest simulated fault phase tried.
const DURATION_MIN_MS: u64 = 250;

/// Shrinks `start` (which must fail), trying each smaller configuration on its own seed and on
/// seeds `0..other_seeds`, within `runs_max` runs. `on_step` hears of every smaller failing run.
pub fn shrink(
    start: Failing,
    other_seeds: u64,
    runs_max: usize,
    on_step: &dyn Fn(&Failing),
) -> Shrunk {
    let (check, _) = check_of(&start.failure);
    let mut current = start;
    let mut runs = 0;
    'search: loop {
        for candidate in smaller(&current.options) {
            let seeds = std::iter::once(current.seed)
                .chain((0..other_seeds).filter(|&s| s != current.seed));
            for seed in seeds {
                if runs >= runs_max {
                    break 'search;
                }
                runs += 1;
                let result = run_seed(seed, &candidate, false);
                if let Some(failure) = result.failure {
                    if check_of(&failure).0 == check {
                        current = Failing {
                            options: candidate,
                            seed,
                            failure,
                        };
                        on_step(&current);
                        continue 'search;
                    }
                }
            }
        }
        break;
    }
    Shrunk {
        smallest: current,
        runs,
    }
}

/// Every configuration one step smaller than `options`, the biggest cuts first.
fn smaller(options: &SimOptions) -> Vec<SimOptions> {
    let mut candidates = Vec::new();
    let with = |change: &dyn Fn(&mut SimOptions)| {
        let mut smaller = options.clone();
        change(&mut smaller);
        smaller
    };
    if options.nodes >= 3 {
        candidates.push(with(&|o| o.nodes -= 2));
    }
    if options.duration_ms / 2 >= DURATION_MIN_MS {
        candidates.push(with(&|o| o.duration_ms /= 2));
    }
    if options.clients > 1 {
        candidates.push(with(&|o| o.clients /= 2));
    }
    if options.keys > 1 {
        candidates.push(with(&|o| o.keys = 1));
    }
    if options.spares > 0 && options.faults.membership {
        candidates.push(with(&|o| o.spares -= 1));
    }
    let faults = options.faults;
    let families: [(bool, LeaveOut); 11] = [
        (faults.partition, |o| o.faults.partition = false),
        (faults.loss, |o| o.faults.loss = false),
        (faults.delay, |o| o.faults.delay = false),
        (faults.duplicate, |o| o.faults.duplicate = false),
        (faults.crash, |o| o.faults.crash = false),
        (faults.pause, |o| o.faults.pause = false),
        (faults.skew, |o| o.faults.skew = false),
        (faults.transfer, |o| o.faults.transfer = false),
        (faults.disk, |o| o.faults.disk = false),
        (faults.membership, |o| o.faults.membership = false),
        (faults.disk_loss, |o| o.faults.disk_loss = false),
    ];
    for (on, off) in families {
        if on {
            candidates.push(with(&off));
        }
    }
    candidates
}

#[cfg(test)]
mod tests {
    use super::*;
    use ravel::core::PlantedBugs;

    /// A planted bug found on 5 nodes with every fault family shrinks to a smaller run that
    /// fails the same check.
    #[test]
    fn a_failure_shrinks_to_a_smaller_run_failing_the_same_check() {
        let options = SimOptions {
            nodes: 5,
            bugs: PlantedBugs::by_name("pre-vote-adopts-term").expect("known"),
            ..SimOptions::default()
        };
        let failure = run_seed(1, &options, false)
            .failure
            .expect("the bug is caught");
        let shrunk = shrink(
            Failing {
                options: options.clone(),
                seed: 1,
                failure,
            },
            4,
            200,
            &|_| {},
        );
        let smallest = &shrunk.smallest;
        assert_eq!(check_of(&smallest.failure).0, "term rises");
        assert!(smallest.options.nodes < 5, "{smallest:?}");
        assert!(
            smallest.options.duration_ms < options.duration_ms,
            "{smallest:?}"
        );
        assert!(smallest.options.faults != options.faults, "{smallest:?}");
    }
}
