//! `ravel-madsim`: the real node under madsim, seed by seed. Build and run it with
//! `scripts/madsim` (which sets `--cfg madsim` and a separate target directory), e.g.
//!
//!     scripts/madsim --seeds 0..200 --nodes 3,5
//!     scripts/madsim --replay 17 --nodes 3
//!     scripts/madsim --seeds 0..20 --determinism
//!     scripts/madsim --groups 2 --seeds 0..300      (the sharded store: admin + 2 groups)
//!
//! Every seed runs in a process of its own (this program again, with `--child`): madsim's
//! runtime keeps state across runs in one process (global task ids, std's per-thread hash keys)
//! that its own maps iterate by, so a seed run after others could take another path than the
//! same seed run alone, and a failure might not replay. Alone in a process, every run of a seed
//! is the replay. Seeds run on `--jobs` processes at once.

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
    use std::collections::BTreeMap;
    use std::process::{Command, ExitCode};
    use std::sync::{mpsc, Arc, Mutex};
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
        /// Run the sharded store instead: an admin group of 3 and this many data groups of 3
        /// (`--nodes` is then ignored).
        #[arg(long, default_value_t = 0)]
        groups: usize,
        /// Seeds run at once, each in its own process (default: available cores).
        #[arg(long)]
        jobs: Option<usize>,
        /// Internal: run this one seed in this process and print its result for the parent.
        #[arg(long, hide = true)]
        child: Option<u64>,
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
        use ravel::directory::DirectoryBugs;
        use ravel::kv::planted::ShardBugs;
        let (mut bugs, mut directory_bugs, mut shard_bugs) = Default::default();
        if let Some(name) = cli.bug.as_deref() {
            // The admin's and the data groups' mistakes exist only in the sharded store.
            let sharded = cli.groups > 0;
            match (
                PlantedBugs::by_name(name),
                DirectoryBugs::named(name).filter(|_| sharded),
                ShardBugs::named(name).filter(|_| sharded),
            ) {
                (Some(core), _, _) => bugs = core,
                (None, Some(directory), _) => directory_bugs = directory,
                (None, None, Some(shard)) => shard_bugs = shard,
                (None, None, None) => {
                    eprintln!(
                        "error: unknown bug {name:?}; known: {} (and with --groups: {}, {})",
                        PlantedBugs::NAMES.join(", "),
                        DirectoryBugs::NAMES.join(", "),
                        ShardBugs::NAMES.join(", ")
                    );
                    return ExitCode::from(2);
                }
            }
        }
        let options_for = |nodes| MadsimOptions {
            nodes,
            fault_seconds: cli.fault_seconds,
            faults: !cli.no_faults,
            bugs,
            directory_bugs,
            shard_bugs,
            disk_loss: cli.disk_loss,
            groups: cli.groups,
            ..MadsimOptions::default()
        };
        if let Some(seed) = cli.child {
            let nodes = cli.nodes.first().copied().unwrap_or(3);
            print!("{}", encode(&run_checked(seed, &options_for(nodes))));
            return ExitCode::SUCCESS;
        }
        if cli.replay.is_some() {
            let mut all_passed = true;
            for &nodes in &cli.nodes {
                for seed in seeds.clone() {
                    let result = run_checked(seed, &options_for(nodes));
                    all_passed &= result.failure.is_none();
                    report(&result, &cli, nodes, true);
                }
            }
            return if all_passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
        let started = Instant::now();
        let (mut passed, mut failed) = (0u64, 0u64);
        for &nodes in &cli.nodes {
            let mut runs = run_in_children(&cli, nodes, seeds.clone());
            for seed in seeds.clone() {
                let (mut result, again) = runs.recv_in_order(seed);
                if let (true, None, Some(again)) = (cli.determinism, &result.failure, again) {
                    if again.trace_hash != result.trace_hash {
                        result.failure = Some(format!(
                            "nondeterministic: trace {:016x} then {:016x}",
                            result.trace_hash, again.trace_hash
                        ));
                    }
                }
                report(&result, &cli, nodes, false);
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

    /// Results of seeds run in child processes, handed out in seed order.
    struct Runs {
        received: mpsc::Receiver<(u64, MadsimResult, Option<MadsimResult>)>,
        early: BTreeMap<u64, (MadsimResult, Option<MadsimResult>)>,
    }

    impl Runs {
        fn recv_in_order(&mut self, seed: u64) -> (MadsimResult, Option<MadsimResult>) {
            loop {
                if let Some(result) = self.early.remove(&seed) {
                    return result;
                }
                let (done, result, again) = self.received.recv().expect("a worker ended early");
                self.early.insert(done, (result, again));
            }
        }
    }

    /// Runs every seed in a child process (twice with `--determinism`), `--jobs` at once.
    fn run_in_children(cli: &Cli, nodes: usize, seeds: std::ops::Range<u64>) -> Runs {
        let jobs = cli
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1);
        let queue = Arc::new(Mutex::new(seeds));
        let (results, received) = mpsc::channel();
        let mut arguments = vec![
            "--nodes".to_string(),
            nodes.to_string(),
            "--fault-seconds".to_string(),
            cli.fault_seconds.to_string(),
        ];
        arguments.extend(extra_arguments(cli));
        for _ in 0..jobs {
            let queue = queue.clone();
            let results = results.clone();
            let arguments = arguments.clone();
            let twice = cli.determinism;
            std::thread::spawn(move || loop {
                let Some(seed) = queue.lock().expect("lock").next() else {
                    return;
                };
                let result = run_child(seed, &arguments);
                let again =
                    (twice && result.failure.is_none()).then(|| run_child(seed, &arguments));
                if results.send((seed, result, again)).is_err() {
                    return;
                }
            });
        }
        Runs {
            received,
            early: BTreeMap::new(),
        }
    }

    /// The flags that shape a run beyond its seed and size: a replay needs them too.
    fn extra_arguments(cli: &Cli) -> Vec<String> {
        let mut arguments = Vec::new();
        if cli.no_faults {
            arguments.push("--no-faults".to_string());
        }
        if let Some(bug) = &cli.bug {
            arguments.extend(["--bug".to_string(), bug.clone()]);
        }
        if cli.disk_loss {
            arguments.push("--disk-loss".to_string());
        }
        if cli.groups > 0 {
            arguments.extend(["--groups".to_string(), cli.groups.to_string()]);
        }
        arguments
    }

    fn run_child(seed: u64, arguments: &[String]) -> MadsimResult {
        let lost = |failure: String| MadsimResult {
            seed,
            failure: Some(failure),
            trace_hash: 0,
            completed_operations: 0,
            faults_injected: 0,
        };
        let output = match std::env::current_exe().and_then(|program| {
            Command::new(program)
                .arg("--child")
                .arg(seed.to_string())
                .args(arguments)
                .output()
        }) {
            Ok(output) => output,
            Err(error) => return lost(format!("cannot start the seed's process: {error}")),
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        match decode(seed, &stdout) {
            Some(result) if output.status.success() => result,
            _ => lost(format!(
                "the seed's process ended with {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )),
        }
    }

    /// A child's result on stdout: hash, operations and faults on the first line, then the
    /// failure, if any, on the rest.
    fn encode(result: &MadsimResult) -> String {
        let mut text = format!(
            "{:016x} {} {}\n",
            result.trace_hash, result.completed_operations, result.faults_injected
        );
        if let Some(failure) = &result.failure {
            text.push_str(failure);
        }
        text
    }

    fn decode(seed: u64, text: &str) -> Option<MadsimResult> {
        let (first, failure) = text.split_once('\n')?;
        let mut fields = first.split(' ');
        let trace_hash = u64::from_str_radix(fields.next()?, 16).ok()?;
        let completed_operations = fields.next()?.parse().ok()?;
        let faults_injected = fields.next()?.parse().ok()?;
        Some(MadsimResult {
            seed,
            failure: (!failure.is_empty()).then(|| failure.to_string()),
            trace_hash,
            completed_operations,
            faults_injected,
        })
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

    fn report(result: &MadsimResult, cli: &Cli, nodes: usize, verbose: bool) {
        let size = if cli.groups > 0 {
            format!("{} groups", cli.groups)
        } else {
            format!("{nodes} nodes")
        };
        match &result.failure {
            Some(failure) => {
                println!("seed {} ({size}) FAILED: {failure}", result.seed);
                let mut replay = format!("scripts/madsim --replay {} --nodes {nodes}", result.seed);
                if cli.fault_seconds != 8 {
                    replay.push_str(&format!(" --fault-seconds {}", cli.fault_seconds));
                }
                for argument in extra_arguments(cli) {
                    replay.push(' ');
                    replay.push_str(&argument);
                }
                println!("  replay: {replay}");
            }
            None if verbose => println!(
                "seed {} ({size}) passed: {} operations completed, {} faults, trace {:016x}",
                result.seed, result.completed_operations, result.faults_injected, result.trace_hash
            ),
            None => {}
        }
    }
}
