//! `ravel bench`: closed-loop clients (each with its own connection, one request at a time)
//! against a cluster; prints throughput and latency percentiles, with a progress line per second.
//! Each client finds the leader through [`Client`], then calls it over a lean connection of its
//! own ([`BenchConnection`]) and goes back to the client whenever that connection fails.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::time::{Duration, Instant};

use super::bench_connection::{BenchConnection, CallError};
use super::bench_routes::BenchRoutes;
use super::ExitCode;
use crate::client::{Client, ClientError};
use crate::routed_client::RoutingTable;
use crate::server::ApiError;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Nodes to load, comma separated; each client finds the leader from any of them.
    #[arg(
        long,
        env = "RAVEL_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:7379"
    )]
    pub endpoints: Vec<String>,
    /// Concurrent clients, each with its own connection.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Bytes per written value.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Fraction of operations that are (linearizable) reads, 0.0 to 1.0.
    #[arg(long, default_value_t = 0.0)]
    pub read_ratio: f64,
    /// Serve reads from the local replica (`get --stale`) instead of confirming leadership.
    #[arg(long)]
    pub stale_reads: bool,
    /// Distinct keys written and read.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// A sharded store's admin replicas (comma separated): each client routes every key to
    /// its group's leader itself, from the directory read at the start and again whenever a
    /// group refuses a key as not its own (instead of --endpoints).
    #[arg(long, value_delimiter = ',')]
    pub admin: Vec<String>,
    /// Write every one of the --keys keys once, in order, spread over the clients, then stop
    /// (instead of running --duration seconds of random keys): loads a store to a known size
    /// before a measurement.
    #[arg(long)]
    pub fill: bool,
    /// A request refused because its key's partition is moving is counted as deferred and the
    /// client goes on with another key, instead of waiting the move out: the throughput then
    /// is that of the partitions not moving.
    #[arg(long)]
    pub skip_moving: bool,
    #[command(flatten)]
    pub credentials: super::Credentials,
}

#[derive(Default)]
struct Counters {
    operations: AtomicU64,
    errors: AtomicU64,
    /// Requests refused as moving and not sent again (`--skip-moving`).
    deferred: AtomicU64,
    /// The first error, printed at the end so a failing run says why.
    first_error: Mutex<Option<String>>,
}

impl Counters {
    fn failed(&self, error: impl std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().expect("not poisoned");
        first.get_or_insert_with(|| error.to_string());
    }
}

pub async fn run(args: BenchArgs) -> ExitCode {
    if args.clients == 0 || !(0.0..=1.0).contains(&args.read_ratio) {
        eprintln!("error: --clients must be at least 1 and --read-ratio within 0.0..=1.0");
        return ExitCode::Usage;
    }
    if args.fill && args.read_ratio > 0.0 {
        eprintln!("error: --fill writes every key once; it takes no --read-ratio");
        return ExitCode::Usage;
    }
    let duration = Duration::from_secs_f64(args.duration.max(0.1));
    let counters = Arc::new(Counters::default());
    let value = Bytes::from(vec![b'x'; args.value_size]);
    let token: Option<Arc<str>> = args.credentials.token.as_deref().map(Arc::from);
    let directory = if args.admin.is_empty() {
        None
    } else {
        match BenchRoutes::read(args.admin.clone()).await {
            Ok((routes, groups)) => Some((groups, Arc::new(routes))),
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::of_routed(&error);
            }
        }
    };
    // Write every key once so reads find values.
    if args.read_ratio > 0.0 && !args.fill {
        let table = directory.as_ref().map(|(_, table)| table.clone());
        let mut caller = Caller::new(args.endpoints.clone(), table, false, token.clone());
        for key in 0..args.keys.min(1000) {
            if let Err(error) = caller.put(key_name(key), value.clone()).await {
                eprintln!("error: preparing keys: {error}");
                return ExitCode::Failure;
            }
        }
    }
    println!(
        "bench: {} clients, {}, {}-byte values, read ratio {}, {}",
        args.clients,
        if args.fill {
            format!("each of {} keys written once", args.keys)
        } else {
            format!("{:.0} s", duration.as_secs_f64())
        },
        args.value_size,
        args.read_ratio,
        match &directory {
            Some((groups, _)) => format!(
                "routed to {groups} groups by the admin at {}",
                args.admin.join(",")
            ),
            None => format!("endpoints {}", args.endpoints.join(",")),
        }
    );
    let started = Instant::now();
    // Filling: no deadline; each client stops after its share of the keys.
    let deadline = started
        + if args.fill {
            Duration::from_secs(365 * 24 * 3600)
        } else {
            duration
        };
    let fill = args.fill.then_some((args.keys, args.clients as u64));
    let mut tasks = Vec::new();
    for index in 0..args.clients {
        let counters = counters.clone();
        let endpoints = args.endpoints.clone();
        let table = directory.as_ref().map(|(_, table)| table.clone());
        let value = value.clone();
        let token = token.clone();
        let (keys, read_ratio, stale, skip_moving) = (
            args.keys.clamp(1, 1000),
            args.read_ratio,
            args.stale_reads,
            args.skip_moving,
        );
        let keys = if read_ratio > 0.0 {
            keys
        } else {
            args.keys.max(1)
        };
        tasks.push(tokio::spawn(async move {
            let mut histogram =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
            let mut caller = Caller::new(endpoints, table, skip_moving, token);
            let mut rng = ChaCha8Rng::seed_from_u64(index as u64);
            // Filling: this client's keys, index, index + clients, ...
            let mut next_fill = index as u64;
            while Instant::now() < deadline {
                let key = match fill {
                    Some((keys, clients)) => {
                        if next_fill >= keys {
                            break;
                        }
                        next_fill += clients;
                        key_name(next_fill - clients)
                    }
                    None => key_name(rng.random_range(0..keys)),
                };
                let read = rng.random_bool(read_ratio);
                let start = Instant::now();
                let result = if read {
                    caller.get(key, stale).await
                } else {
                    caller.put(key, value.clone()).await
                };
                match result {
                    Ok(Served::Yes) => {
                        let micros = start.elapsed().as_micros() as u64;
                        let _ = histogram.record(micros.max(1));
                        counters.operations.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Served::Deferred) => {
                        counters.deferred.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => counters.failed(error),
                }
            }
            histogram
        }));
    }
    // With --skip-moving, the requests let go so far.
    let deferred = || {
        if args.skip_moving {
            format!(
                ", {} deferred (moving)",
                counters.deferred.load(Ordering::Relaxed)
            )
        } else {
            String::new()
        }
    };
    let mut last = 0;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    while Instant::now() + Duration::from_millis(500) < deadline
        && !tasks.iter().all(|task| task.is_finished())
    {
        ticker.tick().await;
        let done = counters.operations.load(Ordering::Relaxed);
        eprintln!(
            "[{:>4.0} s] {:>8} ops/s, {} errors so far{}",
            started.elapsed().as_secs_f64(),
            done - last,
            counters.errors.load(Ordering::Relaxed),
            deferred()
        );
        last = done;
    }
    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    for task in tasks {
        if let Ok(histogram) = task.await {
            let _ = total.add(histogram);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let operations = counters.operations.load(Ordering::Relaxed);
    let errors = counters.errors.load(Ordering::Relaxed);
    println!(
        "{operations} ops in {elapsed:.1} s: {:.0} ops/s, {errors} errors{}",
        operations as f64 / elapsed,
        deferred()
    );
    if let Some(error) = counters.first_error.lock().expect("not poisoned").take() {
        println!("first error: {error}");
    }
    let ms = |quantile: f64| total.value_at_quantile(quantile) as f64 / 1000.0;
    println!(
        "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        total.max() as f64 / 1000.0
    );
    if operations == 0 {
        ExitCode::Unavailable
    } else {
        ExitCode::Success
    }
}

/// Times a request refused because its partition moved or is moving is sent again, at most.
const REFUSALS_MAX: u32 = 400;
const MOVING_PAUSE: Duration = Duration::from_millis(25);

/// Whether a request was served, or refused as moving and let go (`--skip-moving`).
enum Served {
    Yes,
    Deferred,
}

/// One client's way to the cluster: a [`GroupCaller`] for the one group of `--endpoints`, or
/// one per group of a sharded store, each key routed to its group by the directory.
struct Caller {
    /// Let a request refused as moving go instead of waiting the move out.
    skip_moving: bool,
    /// The token every request carries (`--token`).
    token: Option<Arc<str>>,
    endpoints: Vec<String>,
    routes: Option<Arc<BenchRoutes>>,
    /// The table this client routes by, and its generation.
    table: Option<(u64, Arc<RoutingTable>)>,
    groups: std::collections::BTreeMap<u64, GroupCaller>,
}

/// Why a request to a group failed.
enum Failure {
    /// Refused: the group does not own the key's partition (any more).
    NotOwned,
    /// Refused: the key's partition is moving; it is served again shortly.
    Moving,
    Other(String),
}

impl Failure {
    fn of(error: Option<ApiError>, text: String) -> Self {
        match error {
            Some(ApiError::NotOwned { .. }) => Failure::NotOwned,
            Some(ApiError::Moving { .. }) => Failure::Moving,
            _ => Failure::Other(text),
        }
    }
}

impl Caller {
    fn new(
        endpoints: Vec<String>,
        routes: Option<Arc<BenchRoutes>>,
        skip_moving: bool,
        token: Option<Arc<str>>,
    ) -> Self {
        let table = routes.as_ref().map(|routes| routes.current());
        Caller {
            skip_moving,
            token,
            endpoints,
            routes,
            table,
            groups: std::collections::BTreeMap::new(),
        }
    }

    /// What to do after a request: its result, or `None` to send it again (it was refused, so
    /// it did not take effect) — after reading the table again, or pausing while it moves.
    async fn settled(&mut self, result: Result<(), Failure>) -> Option<Result<Served, String>> {
        match result {
            Ok(()) => Some(Ok(Served::Yes)),
            Err(Failure::Moving) if self.skip_moving => Some(Ok(Served::Deferred)),
            Err(Failure::Other(error)) => Some(Err(error)),
            Err(Failure::NotOwned) => {
                let routes = self.routes.clone()?;
                let seen = self.table.as_ref().map_or(0, |(generation, _)| *generation);
                routes.refresh(seen).await;
                self.table = Some(routes.current());
                None
            }
            Err(Failure::Moving) => {
                tokio::time::sleep(MOVING_PAUSE).await;
                None
            }
        }
    }

    /// The caller of the group that owns `key`.
    fn group(&mut self, key: &[u8]) -> Result<&mut GroupCaller, String> {
        let token = &self.token;
        let Some((_, table)) = &self.table else {
            let endpoints = &self.endpoints;
            return Ok(self
                .groups
                .entry(0)
                .or_insert_with(|| GroupCaller::new(endpoints.clone(), token.clone())));
        };
        let route = table.route(key).map_err(|error| error.to_string())?;
        Ok(self
            .groups
            .entry(route.group)
            .or_insert_with(|| GroupCaller::new(route.endpoints.to_vec(), token.clone())))
    }

    async fn put(&mut self, key: Bytes, value: Bytes) -> Result<Served, String> {
        for _ in 0..REFUSALS_MAX {
            let result = self.group(&key)?.put(key.clone(), value.clone()).await;
            if let Some(done) = self.settled(result).await {
                return done;
            }
        }
        Err(format!(
            "{key:?}: refused {REFUSALS_MAX} times as moving or not owned"
        ))
    }

    async fn get(&mut self, key: Bytes, stale: bool) -> Result<Served, String> {
        for _ in 0..REFUSALS_MAX {
            let result = self.group(&key)?.get(key.clone(), stale).await;
            if let Some(done) = self.settled(result).await {
                return done;
            }
        }
        Err(format!(
            "{key:?}: refused {REFUSALS_MAX} times as not owned"
        ))
    }
}

/// One client's way to one group: its lean connection to the leader while that works, the
/// client library (which follows redirects) to find the leader again.
struct GroupCaller {
    endpoints: Vec<String>,
    token: Option<Arc<str>>,
    client: Client,
    direct: Option<BenchConnection>,
}

impl GroupCaller {
    fn new(endpoints: Vec<String>, token: Option<Arc<str>>) -> Self {
        GroupCaller {
            client: client(endpoints.clone(), &token),
            endpoints,
            token,
            direct: None,
        }
    }

    async fn put(&mut self, key: Bytes, value: Bytes) -> Result<(), Failure> {
        if let Some(direct) = self.direct.as_mut() {
            let answer = direct.put(key.clone(), value.clone()).await;
            if let Some(done) = self.settle(answer) {
                return done;
            }
        }
        let result = self.client.put(key, value).await.map(drop);
        self.connect_after(result).await
    }

    async fn get(&mut self, key: Bytes, stale: bool) -> Result<(), Failure> {
        if let Some(direct) = self.direct.as_mut() {
            let answer = direct.get(key.clone(), stale).await;
            if let Some(done) = self.settle(answer) {
                return done;
            }
        }
        let result = self.client.get(key, stale).await.map(drop);
        self.connect_after(result).await
    }

    /// The outcome of a direct call, or `None` if the client must make it instead (the node
    /// was no longer the leader, so the request did not take effect).
    fn settle(&mut self, answer: Result<(), CallError>) -> Option<Result<(), Failure>> {
        match answer {
            Ok(()) => Some(Ok(())),
            Err(error) if error.not_leader() => {
                self.direct = None;
                None
            }
            // Refused by a leader that is fine: the connection stays.
            Err(CallError::Status(status))
                if ApiError::from_status(&status).is_some_and(|error| {
                    matches!(error, ApiError::NotOwned { .. } | ApiError::Moving { .. })
                }) =>
            {
                Some(Err(Failure::of(
                    ApiError::from_status(&status),
                    String::new(),
                )))
            }
            Err(error) => {
                // The leader may be paused or cut off: find one anew, the others first.
                self.direct = None;
                let failed = self.client.leader().map(str::to_string);
                let mut order = self.endpoints.clone();
                order.sort_by_key(|endpoint| Some(endpoint) == failed.as_ref());
                self.client = client(order, &self.token);
                Some(Err(Failure::Other(error.to_string())))
            }
        }
    }

    /// After a call through the client: calls go straight to whoever answered from now on.
    async fn connect_after(&mut self, result: Result<(), ClientError>) -> Result<(), Failure> {
        result.map_err(|error| match error {
            ClientError::Api(api) => {
                let text = api.to_string();
                Failure::of(Some(api), text)
            }
            other => Failure::Other(other.to_string()),
        })?;
        if let Some(leader) = self.client.leader() {
            self.direct = BenchConnection::open(leader, self.token.clone()).await.ok();
        }
        Ok(())
    }
}

/// The client library's client for `endpoints`, carrying `token`.
fn client(endpoints: Vec<String>, token: &Option<Arc<str>>) -> Client {
    let mut client = Client::new(endpoints);
    client.token = token.as_deref().map(str::to_string);
    client
}

fn key_name(key: u64) -> Bytes {
    Bytes::from(format!("bench-{key:08}"))
}
