//! `ravel-sim`: run the cluster simulator over a range of seeds, or replay one with a full trace.

use std::process::ExitCode;

use clap::Parser;
use ravel::core::{PlantedBugs, ReadMode};
use ravel_sim::explain::{check_of, explain};
use ravel_sim::options::{FaultMix, SimOptions};
use ravel_sim::runner::{run_seed, run_seed_traced, run_seeds, SeedResult};
use ravel_sim::shrink::Failing;

#[derive(Parser, Debug)]
#[command(
    name = "ravel-sim",
    about = "Deterministic fault-injection simulator for the Ravel Raft core"
)]
struct Cli {
    /// Seeds to run, as START..END (END excluded) or a single seed.
    #[arg(long, default_value = "0..1000")]
    seeds: String,
    /// Cluster sizes, comma-separated; every seed runs once per size.
    #[arg(long, default_value = "3,5", value_delimiter = ',')]
    nodes: Vec<usize>,
    /// Fault families: all, none, or a list of partition,loss,delay,duplicate,crash,pause,skew,transfer,disk,membership.
    #[arg(long, default_value = "all")]
    faults: String,
    /// Simulated milliseconds of faults per seed (then everything heals and liveness is checked).
    #[arg(long, default_value_t = 10_000)]
    duration_ms: u64,
    /// Nodes outside the cluster that the membership family adds (with that family only).
    #[arg(long, default_value_t = 2)]
    spares: usize,
    #[arg(long, default_value_t = 4)]
    clients: usize,
    #[arg(long, default_value_t = 3)]
    keys: usize,
    /// read-index or lease; by default each seed picks one.
    #[arg(long)]
    read_mode: Option<String>,
    /// Plant a classic Raft bug to see the checkers catch it (see --list-bugs).
    #[arg(long)]
    bug: Option<String>,
    #[arg(long)]
    list_bugs: bool,
    /// Replay one seed, printing every event, message and state change.
    #[arg(long)]
    replay: Option<u64>,
    /// With --replay: instead of the whole trace, tell the failure's story — the check that
    /// failed and what it guards, who led, the faults before it, the last steps of the nodes
    /// (or operations on the key) it names.
    #[arg(long)]
    explain: bool,
    /// With --replay: also draw the run as a self-contained HTML page (lanes per node, messages,
    /// faults, client operations, the violation), which opens offline in a browser.
    #[arg(long, value_name = "FILE.html")]
    timeline: Option<std::path::PathBuf>,
    /// Search from this failing seed (with the other options as given) for a smaller run
    /// failing the same check, and print its replay command.
    #[arg(long, value_name = "SEED")]
    shrink: Option<u64>,
    /// Run every seed twice and fail on any difference between the two traces.
    #[arg(long)]
    determinism: bool,
    /// Worker threads (default: available cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Simulate the sharded store instead: an admin group of three and --groups data groups of
    /// three, with routing clients (uses --seeds, --replay, --determinism, --clients, --faults
    /// all|none).
    #[arg(long)]
    sharded: bool,
    /// Data groups of the sharded simulation.
    #[arg(long, default_value_t = 2)]
    groups: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.sharded {
        return sharded(&cli);
    }
    if cli.list_bugs {
        for name in PlantedBugs::NAMES {
            println!("{name}");
        }
        return ExitCode::SUCCESS;
    }
    let options = match build_options(&cli) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    if let Some(seed) = cli.shrink {
        let nodes = cli.nodes.first().copied().unwrap_or(3);
        return shrink(seed, SimOptions { nodes, ..options }, &cli);
    }
    if let Some(seed) = cli.replay {
        let nodes = cli.nodes.first().copied().unwrap_or(3);
        let options = SimOptions { nodes, ..options };
        let record = cli.explain || cli.timeline.is_some();
        let result = run_seed_traced(seed, &options, !cli.explain, record);
        if let Some(path) = &cli.timeline {
            let title = format!(
                "seed {seed}, {} nodes, faults {}",
                options.nodes, options.faults
            );
            let page =
                ravel_sim::timeline::render(&title, &result.trace_lines, result.failure.as_deref());
            if let Err(error) = std::fs::write(path, page) {
                eprintln!(
                    "error: cannot write the timeline to {}: {error}",
                    path.display()
                );
                return ExitCode::from(2);
            }
            eprintln!("timeline written to {}", path.display());
        }
        match (&result.failure, cli.explain) {
            (Some(failure), true) => print!("{}", explain(failure, &result.trace_lines)),
            (None, true) => println!("seed {seed} passed: nothing to explain"),
            _ => {}
        }
        print_result(&result, &cli);
        return if result.failure.is_some() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    let seeds = match ravel_sim::options::parse_seeds(&cli.seeds) {
        Ok(seeds) => seeds,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let jobs = cli
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let mut passed = 0;
    let mut failed = 0;
    for &nodes in &cli.nodes {
        let options = SimOptions {
            nodes,
            ..options.clone()
        };
        eprintln!(
            "running seeds {}..{} on {nodes} nodes, faults {}, {} ms each{}",
            seeds.start,
            seeds.end,
            options.faults,
            options.duration_ms,
            if cli.determinism {
                ", each twice (determinism check)"
            } else {
                ""
            }
        );
        let summary = run_seeds(
            seeds.clone(),
            &options,
            jobs,
            cli.determinism,
            true,
            &|result| print_result(result, &cli),
        );
        eprintln!(
            "  {nodes} nodes: {} passed, {} failed in {:.1} s ({:.0} seeds/s, {} events, {} client operations, {} elections)",
            summary.passed,
            summary.failed.len(),
            summary.elapsed.as_secs_f64(),
            (summary.passed + summary.failed.len()) as f64 / summary.elapsed.as_secs_f64(),
            summary.events,
            summary.operations_completed,
            summary.elections
        );
        passed += summary.passed;
        failed += summary.failed.len();
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn build_options(cli: &Cli) -> Result<SimOptions, String> {
    let faults = FaultMix::parse(&cli.faults)?;
    let read_mode = match cli.read_mode.as_deref() {
        None => None,
        Some("read-index") => Some(ReadMode::ReadIndex),
        Some("lease") => Some(ReadMode::Lease),
        Some(other) => {
            return Err(format!(
                "unknown read mode `{other}`; use read-index or lease"
            ))
        }
    };
    let bugs = match cli.bug.as_deref() {
        None => PlantedBugs::default(),
        Some(name) => PlantedBugs::by_name(name).ok_or_else(|| {
            format!(
                "unknown bug `{name}`; known: {}",
                PlantedBugs::NAMES.join(", ")
            )
        })?,
    };
    if cli.nodes.iter().any(|&nodes| nodes == 0 || nodes > 9) {
        return Err("--nodes takes sizes from 1 to 9".to_string());
    }
    Ok(SimOptions {
        nodes: 3,
        spares: cli.spares,
        duration_ms: cli.duration_ms,
        clients: cli.clients,
        keys: cli.keys.max(1),
        faults,
        read_mode,
        bugs,
        ..SimOptions::default()
    })
}

/// Prints a seed's outcome; for a failure, the exact command that replays it.
fn print_result(result: &SeedResult, cli: &Cli) {
    match &result.failure {
        None => {
            if let Some(report) = &result.report {
                println!(
                    "seed {} passed: {} events, {}/{} operations completed, {} elections, {} entries committed ({} released from memory), {} ms simulated, trace {:016x}",
                    result.seed,
                    report.events,
                    report.operations_completed,
                    report.operations_total,
                    report.elections,
                    report.committed,
                    report.released,
                    report.simulated_ms,
                    report.trace_hash
                );
            }
        }
        Some(failure) => {
            // The options were validated before any seed ran.
            let options = build_options(cli).expect("validated at start");
            let options = SimOptions {
                nodes: result.nodes,
                ..options
            };
            let replay = replay_command(result.seed, &options, cli.bug.as_deref());
            println!(
                "seed {} FAILED on {} nodes: {failure}\n  replay: {replay}",
                result.seed, result.nodes
            );
        }
    }
}

/// `--shrink SEED`: the failing run, then ever smaller ones failing the same check.
fn shrink(seed: u64, options: SimOptions, cli: &Cli) -> ExitCode {
    const OTHER_SEEDS: u64 = 16;
    const RUNS_MAX: usize = 2_000;
    let Some(failure) = run_seed(seed, &options, false).failure else {
        eprintln!("seed {seed} passes with these options: nothing to shrink");
        return ExitCode::from(2);
    };
    let (check, _) = check_of(&failure);
    println!(
        "seed {seed} on {} nodes fails the {check} check: {failure}",
        options.nodes
    );
    println!("searching for a smaller run failing the same check (each step tried on seed {seed} and 0..{OTHER_SEEDS})");
    let bug = cli.bug.as_deref();
    let shrunk = ravel_sim::shrink::shrink(
        Failing {
            options,
            seed,
            failure,
        },
        OTHER_SEEDS,
        RUNS_MAX,
        &|step| {
            println!(
                "  smaller: {}",
                replay_command(step.seed, &step.options, bug)
                    .trim_start_matches("cargo run --release -p ravel-sim -- ")
            );
        },
    );
    let smallest = &shrunk.smallest;
    println!(
        "smallest found in {} runs: {}\n  replay: {}\n  explain: {} --explain",
        shrunk.runs,
        smallest.failure,
        replay_command(smallest.seed, &smallest.options, bug),
        replay_command(smallest.seed, &smallest.options, bug)
    );
    ExitCode::SUCCESS
}

/// The command that replays `seed` with `options`.
fn replay_command(seed: u64, options: &SimOptions, bug: Option<&str>) -> String {
    let mut command = format!(
        "cargo run --release -p ravel-sim -- --replay {seed} --nodes {} --spares {} --faults {} --duration-ms {} --clients {} --keys {}",
        options.nodes, options.spares, options.faults, options.duration_ms, options.clients, options.keys
    );
    match options.read_mode {
        Some(ReadMode::ReadIndex) => command.push_str(" --read-mode read-index"),
        Some(ReadMode::Lease) => command.push_str(" --read-mode lease"),
        None => {}
    }
    if let Some(bug) = bug {
        command.push_str(&format!(" --bug {bug}"));
    }
    command
}

/// `--sharded`: seeds of the sharded store's simulation, in parallel, each checked.
fn sharded(cli: &Cli) -> ExitCode {
    use ravel::kv::planted::ShardBugs;
    use ravel_sim::sharded::{ShardedOptions, ShardedWorld};
    let (mut bugs, mut core_bugs, mut shard_bugs): (
        ravel::directory::DirectoryBugs,
        PlantedBugs,
        ShardBugs,
    ) = Default::default();
    if let Some(name) = cli.bug.as_deref() {
        match (
            ravel::directory::DirectoryBugs::named(name),
            ShardBugs::named(name),
            PlantedBugs::by_name(name),
        ) {
            (Some(directory), _, _) => bugs = directory,
            (None, Some(shard), _) => shard_bugs = shard,
            (None, None, Some(core)) => core_bugs = core,
            (None, None, None) => {
                eprintln!(
                    "error: no bug {name:?}; the sharded simulation plants the core's (see \
                     --list-bugs), {} and {}",
                    ravel::directory::DirectoryBugs::NAMES.join(", "),
                    ShardBugs::NAMES.join(", ")
                );
                return ExitCode::from(2);
            }
        }
    }
    let options = ShardedOptions {
        bugs,
        core_bugs,
        shard_bugs,
        groups: cli.groups.max(1),
        clients: cli.clients.max(1),
        faults: cli.faults != "none",
        ..ShardedOptions::default()
    };
    if let Some(seed) = cli.replay {
        let report = ShardedWorld::new(seed, options, true).run();
        println!("{report:?}");
        return if report.failure.is_some() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    let seeds = match ravel_sim::options::parse_seeds(&cli.seeds) {
        Ok(seeds) => seeds,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let jobs = cli
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let started = std::time::Instant::now();
    let next = std::sync::atomic::AtomicU64::new(seeds.start);
    let failures = std::sync::Mutex::new(Vec::new());
    let completed = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if seed >= seeds.end {
                    return;
                }
                let run = || ShardedWorld::new(seed, options.clone(), false).run();
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run));
                let failure = match outcome {
                    Ok(report) => {
                        completed.fetch_add(
                            report.operations_completed,
                            std::sync::atomic::Ordering::Relaxed,
                        );
                        let again = cli
                            .determinism
                            .then(|| ShardedWorld::new(seed, options.clone(), false).run());
                        match again {
                            Some(again) if again.trace_hash != report.trace_hash => Some(format!(
                                "nondeterministic: traces {:x} and {:x}",
                                report.trace_hash, again.trace_hash
                            )),
                            _ => report.failure,
                        }
                    }
                    Err(panic) => Some(format!(
                        "panic: {}",
                        panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default()
                    )),
                };
                if let Some(failure) = failure {
                    failures.lock().expect("not poisoned").push((seed, failure));
                }
            });
        }
    });
    let failures = failures.into_inner().expect("not poisoned");
    let count = seeds.end - seeds.start;
    println!(
        "sharded: {count} seeds ({} groups), {} failed, {} client operations completed, {:.1} s",
        options.groups,
        failures.len(),
        completed.into_inner(),
        started.elapsed().as_secs_f64()
    );
    for (seed, failure) in &failures {
        println!("seed {seed} FAILED: {failure}");
        let bug = cli
            .bug
            .as_ref()
            .map(|bug| format!(" --bug {bug}"))
            .unwrap_or_default();
        println!(
            "  replay: cargo run --release -p ravel-sim -- --sharded --groups {} --replay {seed}{bug}",
            options.groups
        );
    }
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
