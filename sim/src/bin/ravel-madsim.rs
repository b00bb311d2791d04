//! `ravel-madsim`: the real node under madsim, seed by seed. Build and run it with
//! `scripts/madsim` (which sets `--cfg madsim` and a separate target directory), e.g.
//!
//!     scripts/madsim --seeds 0..200 --nodes 3,5
//!     scripts/madsim --replay 17 --nodes 3
//!     scripts/madsim --seeds 0..20 --determinism

#[cfg(madsim)]
fn main() -> std::process::ExitCode {
    runner::main()
}

#[cfg(not(madsim))]
fn main() -> std::process::ExitCode {
    eprintln!(
        "ravel-madsim runs only in a madsim build: use scripts/madsim (it sets RUSTFLAGS=\"--cfg madsim\")"
    );
    std::process::ExitCode::from(2)
}

#[cfg(madsim)]
mod runner {
    use std::process::ExitCode;
    use std::time::Instant;

    use clap::Parser;
    use ravel::core::PlantedBugs;
    use ravel_sim::madsim_harness::{run_seed, MadsimOptions, MadsimResult};

    #[derive(Debug, Parser)]
    #[command(
        name = "ravel-madsim",
        about = "The ravel node under deterministic simulation"
    )]
    struct Cli {
        /// Seeds to run, e.g. 0..200 (end excluded) or a single seed.
        #[arg(long, default_value = "0..20")]
        seeds: String,
        /// Cluster sizes, comma separated.
        #[arg(long, value_delimiter = ',', default_value = "3")]
        nodes: Vec<usize>,
        /// Run one seed and print what happened.
        #[arg(long)]
        replay: Option<u64>,
        /// Run every seed twice and compare the traces.
        #[arg(long)]
        determinism: bool,
        /// Simulated seconds of faults per seed.
        #[arg(long, default_value_t = 8)]
        fault_seconds: u64,
        /// Run without faults (clients only).
        #[arg(long)]
        no_faults: bool,
        /// Plant a classic Raft bug in the node's core, to see it caught.
        #[arg(long)]
        bug: Option<String>,
        /// Members also lose their disks and rejoin (some crashing again mid-rejoin).
        #[arg(long)]
        disk_loss: bool,
    }

    pub fn main() -> ExitCode {
        let cli = Cli::parse();
        if cli.replay.is_some() {
            // A replay shows what the nodes logged (RUST_LOG narrows or widens it).
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
            tracing_subscriber::fmt().with_env_filter(filter).init();
        }
        let seeds = match cli.replay {
            Some(seed) => seed..seed + 1,
            None => match ravel_sim::options::parse_seeds(&cli.seeds) {
                Ok(seeds) => seeds,
                Err(error) => {
                    eprintln!("error: {error}");
                    return ExitCode::from(2);
                }
            },
        };
        let bugs = match cli.bug.as_deref() {
            None => PlantedBugs::default(),
            Some(name) => match PlantedBugs::by_name(name) {
                Some(bugs) => bugs,
                None => {
                    eprintln!(
                        "error: unknown bug {name:?}; known: {}",
                        PlantedBugs::NAMES.join(", ")
                    );
                    return ExitCode::from(2);
                }
            },
        };
        let started = Instant::now();
        let (mut passed, mut failed) = (0u64, 0u64);
        for &nodes in &cli.nodes {
            let options = MadsimOptions {
                nodes,
                fault_seconds: cli.fault_seconds,
                faults: !cli.no_faults,
                bugs,
                disk_loss: cli.disk_loss,
                ..MadsimOptions::default()
            };
            for seed in seeds.clone() {
                let mut result = run_checked(seed, &options);
                if cli.determinism && result.failure.is_none() {
                    let again = run_checked(seed, &options);
                    if again.trace_hash != result.trace_hash {
                        result.failure = Some(format!(
                            "nondeterministic: trace {:016x} then {:016x}",
                            result.trace_hash, again.trace_hash
                        ));
                    }
                }
                report(&result, nodes, cli.replay.is_some());
                if result.failure.is_some() {
                    failed += 1;
                } else {
                    passed += 1;
                }
                let done = passed + failed;
                if done % 25 == 0 {
                    eprintln!(
                        "  ... {done} seeds, {failed} failed, {:.1} seeds/s",
                        done as f64 / started.elapsed().as_secs_f64()
                    );
                }
            }
        }
        println!(
            "{passed} passed, {failed} failed ({:.1} s)",
            started.elapsed().as_secs_f64()
        );
        if failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }

    /// Runs a seed; a panic anywhere (a core assertion: two leaders in a term, a committed
    /// entry overwritten, ...) is that seed's failure, not the end of the run.
    fn run_checked(seed: u64, options: &MadsimOptions) -> MadsimResult {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_seed(seed, options)));
        std::panic::set_hook(previous);
        outcome.unwrap_or_else(|payload| {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|text| text.to_string()))
                .unwrap_or_else(|| "unknown panic".to_string());
            MadsimResult {
                seed,
                failure: Some(format!("a node panicked: {message}")),
                trace_hash: 0,
                completed_operations: 0,
                faults_injected: 0,
            }
        })
    }

    fn report(result: &MadsimResult, nodes: usize, verbose: bool) {
        match &result.failure {
            Some(failure) => {
                println!("seed {} ({nodes} nodes) FAILED: {failure}", result.seed);
                println!(
                    "  replay: scripts/madsim --replay {} --nodes {nodes}",
                    result.seed
                );
            }
            None if verbose => println!(
                "seed {} ({nodes} nodes) passed: {} operations completed, {} faults, trace {:016x}",
                result.seed, result.completed_operations, result.faults_injected, result.trace_hash
            ),
            None => {}
        }
    }
}
