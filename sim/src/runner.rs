//! Runs many seeds (in parallel, each seed alone deterministic), catches panics from the core's
//! assertions as failures, reports progress, and optionally runs every seed twice to prove the
//! run is a pure function of its seed.

use std::ops::Range;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use crate::options::SimOptions;
use crate::world::{RunReport, World};

/// One seed's result.
#[derive(Debug)]
pub struct SeedResult {
    pub seed: u64,
    pub nodes: usize,
    pub failure: Option<String>,
    pub report: Option<RunReport>,
    /// Every trace line with its simulated time in µs, if the run was recorded.
    pub trace_lines: Vec<(u64, String)>,
}

thread_local! {
    static LAST_PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Panics inside a seed become failure reports; keep them off the terminal.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let in_seed = LAST_PANIC.with(|slot| slot.borrow().is_some());
            if in_seed {
                let location = info
                    .location()
                    .map(|l| format!(" at {}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                let message = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panic".to_string());
                LAST_PANIC
                    .with(|slot| *slot.borrow_mut() = Some(format!("panic: {message}{location}")));
            } else {
                default(info);
            }
        }));
    });
}

/// Runs one seed; a panic anywhere in it is reported as its failure.
pub fn run_seed(seed: u64, options: &SimOptions, verbose: bool) -> SeedResult {
    run_seed_traced(seed, options, verbose, false)
}

/// [`run_seed`], keeping every trace line in `trace_lines` when `record`.
pub fn run_seed_traced(seed: u64, options: &SimOptions, verbose: bool, record: bool) -> SeedResult {
    install_panic_hook();
    LAST_PANIC.with(|slot| *slot.borrow_mut() = Some(String::new()));
    let recording = crate::trace::Recording::default();
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        let mut world = World::new(seed, options.clone(), verbose);
        if record {
            world.record_trace(recording.clone());
        }
        world.run()
    }));
    let trace_lines = recording.take();
    let panic_message = LAST_PANIC
        .with(|slot| slot.borrow_mut().take())
        .filter(|message| !message.is_empty());
    match outcome {
        Ok(report) => SeedResult {
            seed,
            nodes: options.nodes,
            failure: report.failure.clone(),
            report: Some(report),
            trace_lines,
        },
        Err(_) => SeedResult {
            seed,
            nodes: options.nodes,
            failure: Some(panic_message.unwrap_or_else(|| "panic".to_string())),
            report: None,
            trace_lines,
        },
    }
}

/// Runs `seed` twice and fails if the two traces differ in any input or action.
pub fn run_seed_twice(seed: u64, options: &SimOptions) -> SeedResult {
    let first = run_seed(seed, options, false);
    let second = run_seed(seed, options, false);
    let hashes = |result: &SeedResult| result.report.as_ref().map(|report| report.trace_hash);
    if hashes(&first) != hashes(&second) || first.failure != second.failure {
        return SeedResult {
            seed,
            nodes: options.nodes,
            failure: Some(format!(
                "nondeterminism: two runs of the seed differ (trace hashes {:?} vs {:?})",
                hashes(&first),
                hashes(&second)
            )),
            report: first.report,
            trace_lines: Vec::new(),
        };
    }
    first
}

/// Totals over a range of seeds.
#[derive(Debug, Default)]
pub struct Summary {
    pub passed: usize,
    pub failed: Vec<SeedResult>,
    pub events: u64,
    pub operations_completed: usize,
    pub elections: u64,
    pub elapsed: Duration,
}

/// Runs `seeds` on `jobs` threads. `on_result` sees each result as it finishes (for printing).
pub fn run_seeds(
    seeds: Range<u64>,
    options: &SimOptions,
    jobs: usize,
    determinism: bool,
    progress: bool,
    on_failure: &(dyn Fn(&SeedResult) + Sync),
) -> Summary {
    let started = Instant::now();
    let next = AtomicU64::new(seeds.start);
    let done = AtomicUsize::new(0);
    let failed_count = AtomicUsize::new(0);
    let total = (seeds.end - seeds.start) as usize;
    let summary = Mutex::new(Summary::default());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= seeds.end {
                    break;
                }
                let result = if determinism {
                    run_seed_twice(seed, options)
                } else {
                    run_seed(seed, options, false)
                };
                let mut summary = summary.lock().expect("no thread panics holding the lock");
                if let Some(report) = &result.report {
                    summary.events += report.events;
                    summary.operations_completed += report.operations_completed;
                    summary.elections += report.elections;
                }
                if result.failure.is_some() {
                    failed_count.fetch_add(1, Ordering::Relaxed);
                    on_failure(&result);
                    summary.failed.push(result);
                } else {
                    summary.passed += 1;
                }
                drop(summary);
                let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                if progress && (finished.is_multiple_of(50) || finished == total) {
                    let rate = finished as f64 / started.elapsed().as_secs_f64();
                    eprintln!(
                        "  {} nodes: {finished}/{total} seeds, {} failed, {rate:.0} seeds/s",
                        options.nodes,
                        failed_count.load(Ordering::Relaxed)
                    );
                }
            });
        }
    });
    let mut summary = summary
        .into_inner()
        .expect("no thread panics holding the lock");
    summary.failed.sort_by_key(|result| result.seed);
    summary.elapsed = started.elapsed();
    summary
}
