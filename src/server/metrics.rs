//! A node's Prometheus metrics: what an operator graphs and alerts on (term, commit and apply
//! progress, leadership, disk syncs, peer traffic) and what shows how well the node batches
//! (entries per fsync, messages per peer RPC). Cheap to update: every metric is an atomic, the
//! event loop sets the gauges once per tick, and text is encoded only when scraped.

use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::core::{Role, Status};

/// Histograms by one label whose value is a `V`.
type HistogramFamily<V> = Family<Vec<(&'static str, V)>, Histogram, fn() -> Histogram>;

/// Shared by the event loop, the storage worker and the transport.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    term: Gauge,
    commit_index: Gauge,
    applied_index: Gauge,
    last_log_index: Gauge,
    is_leader: Gauge,
    has_leader: Gauge,
    voters: Gauge,
    leader_changes: Counter,
    writes: Counter,
    reads: Counter,
    requests_refused: Counter,
    disk_syncs: Counter,
    disk_sync_seconds: Histogram,
    entries_per_sync: Histogram,
    peer_batches: Counter,
    peer_messages: Counter,
    peer_messages_per_batch: Histogram,
    peer_messages_dropped: Counter,
    peer_send_failures: Counter,
    peer_messages_on_replies: Counter,
    peer_messages_refused: Counter,
    moves_started: Counter,
    moves_committed: Counter,
    moves_rolled_back: Counter,
    move_bytes_shipped: Counter,
    move_seconds: Histogram,
    move_writes_refused_seconds: Histogram,
    snapshot_write_seconds: Histogram,
    snapshot_bytes: Gauge,
    wal_bytes: Gauge,
    wal_segments: Gauge,
    /// By operation (`put`, `get`, `delete`, `cas`, `snapshot`).
    request_seconds: HistogramFamily<&'static str>,
    /// By peer id.
    peer_rpc_seconds: HistogramFamily<String>,
    process_cpu_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    process_resident_bytes: Gauge,
    process_open_fds: Gauge,
    process_start_time_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// The directory's move totals, last seen (their increases are added to the above).
    move_totals_seen: std::sync::Mutex<[u64; 3]>,
    /// The core's own count of refused messages, last seen (its increase is added to the above).
    core_refused_seen: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self::of_group(None)
    }

    /// Metrics whose `ravel_` figures carry the label `group="GROUP"`: a sharded store's data
    /// nodes (their group's id) and admin replicas (`admin`), so one dashboard tells the
    /// groups apart. A plain cluster's have none.
    pub fn of_group(group: Option<String>) -> Self {
        let counts = || Histogram::new(exponential_buckets(1.0, 2.0, 12));
        // 50 µs to 1.6 s: a request or RPC answered at once up to one that waited out an
        // election.
        fn latencies() -> Histogram {
            Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
        }
        let mut inner = Inner {
            term: Gauge::default(),
            commit_index: Gauge::default(),
            applied_index: Gauge::default(),
            last_log_index: Gauge::default(),
            is_leader: Gauge::default(),
            has_leader: Gauge::default(),
            voters: Gauge::default(),
            leader_changes: Counter::default(),
            writes: Counter::default(),
            reads: Counter::default(),
            requests_refused: Counter::default(),
            disk_syncs: Counter::default(),
            disk_sync_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 14)),
            entries_per_sync: counts(),
            peer_batches: Counter::default(),
            peer_messages: Counter::default(),
            peer_messages_per_batch: counts(),
            peer_messages_dropped: Counter::default(),
            peer_send_failures: Counter::default(),
            peer_messages_on_replies: Counter::default(),
            peer_messages_refused: Counter::default(),
            moves_started: Counter::default(),
            moves_committed: Counter::default(),
            moves_rolled_back: Counter::default(),
            move_bytes_shipped: Counter::default(),
            move_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            move_writes_refused_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            snapshot_write_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 18)),
            snapshot_bytes: Gauge::default(),
            wal_bytes: Gauge::default(),
            wal_segments: Gauge::default(),
            request_seconds: Family::new_with_constructor(latencies),
            peer_rpc_seconds: Family::new_with_constructor(latencies),
            process_cpu_seconds: Counter::default(),
            process_resident_bytes: Gauge::default(),
            process_open_fds: Gauge::default(),
            process_start_time_seconds: Gauge::default(),
            move_totals_seen: Default::default(),
            core_refused_seen: Default::default(),
            registry: Registry::default(),
        };
        // The process's figures under their standard names; the node's own under `ravel_`.
        let mut top = Registry::default();
        top.register(
            "process_cpu_seconds",
            "User and system CPU time the process used",
            inner.process_cpu_seconds.clone(),
        );
        top.register(
            "process_resident_memory_bytes",
            "Resident memory of the process",
            inner.process_resident_bytes.clone(),
        );
        top.register(
            "process_open_fds",
            "File descriptors the process holds open",
            inner.process_open_fds.clone(),
        );
        top.register(
            "process_start_time_seconds",
            "When the process started, in seconds since the Unix epoch",
            inner.process_start_time_seconds.clone(),
        );
        let registry = top.sub_registry_with_prefix("ravel");
        let registry = match group {
            Some(group) => registry.sub_registry_with_label(("group".into(), group.into())),
            None => registry,
        };
        let gauges = [
            ("term", "Current Raft term", &inner.term),
            (
                "commit_index",
                "Highest log index known committed",
                &inner.commit_index,
            ),
            (
                "applied_index",
                "Highest log index applied to the key-value store",
                &inner.applied_index,
            ),
            (
                "last_log_index",
                "Index of the last entry in this node's log",
                &inner.last_log_index,
            ),
            (
                "is_leader",
                "1 if this node is the leader, else 0",
                &inner.is_leader,
            ),
            (
                "has_leader",
                "1 if this node knows a leader of its cluster, else 0 (0 on every node: no \
                 quorum)",
                &inner.has_leader,
            ),
            (
                "voters",
                "Voters in this node's current configuration",
                &inner.voters,
            ),
            (
                "snapshot_bytes",
                "Size of the data of the last snapshot this node took",
                &inner.snapshot_bytes,
            ),
            (
                "wal_bytes",
                "Bytes of records in the write-ahead log's segments on disk (what the log \
                 keeps behind the last snapshot included)",
                &inner.wal_bytes,
            ),
            (
                "wal_segments",
                "Segment files of the write-ahead log",
                &inner.wal_segments,
            ),
        ];
        for (name, help, gauge) in gauges {
            registry.register(name, help, gauge.clone());
        }
        let counters = [
            (
                "leader_changes",
                "Times the leader this node knows of changed",
                &inner.leader_changes,
            ),
            (
                "writes",
                "Client writes applied and answered by this node",
                &inner.writes,
            ),
            ("reads", "Client reads answered by this node", &inner.reads),
            (
                "requests_refused",
                "Client requests answered with an error",
                &inner.requests_refused,
            ),
            ("disk_syncs", "fsyncs of the log", &inner.disk_syncs),
            (
                "peer_batches",
                "RPCs carrying Raft messages sent to peers",
                &inner.peer_batches,
            ),
            (
                "peer_messages",
                "Raft messages sent to peers",
                &inner.peer_messages,
            ),
            (
                "peer_messages_dropped",
                "Raft messages dropped (peer queue full or peer unknown)",
                &inner.peer_messages_dropped,
            ),
            (
                "peer_messages_on_replies",
                "Raft messages that rode back to a peer on the reply of its RPC",
                &inner.peer_messages_on_replies,
            ),
            (
                "peer_messages_refused",
                "Raft messages from peers refused as malformed or impossible from an honest peer \
                 (a broken or hostile peer); each is also logged",
                &inner.peer_messages_refused,
            ),
            (
                "peer_send_failures",
                "Peer RPCs that failed or timed out",
                &inner.peer_send_failures,
            ),
            (
                "moves_started",
                "Partition moves the sharded store started (admin replicas only; as the \
                 directory this replica applied records them)",
                &inner.moves_started,
            ),
            (
                "moves_committed",
                "Partition moves committed: the destination group owns the partition (admin \
                 replicas only)",
                &inner.moves_committed,
            ),
            (
                "moves_rolled_back",
                "Partition moves rolled back before their commit (admin replicas only)",
                &inner.moves_rolled_back,
            ),
            (
                "move_bytes_shipped",
                "Key and value bytes this admin replica shipped from source to destination \
                 groups while it led",
                &inner.move_bytes_shipped,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        let histograms = [
            (
                "disk_sync_seconds",
                "Time one fsync of the log took",
                &inner.disk_sync_seconds,
            ),
            (
                "entries_per_sync",
                "Log entries made durable by one fsync",
                &inner.entries_per_sync,
            ),
            (
                "peer_messages_per_batch",
                "Raft messages carried by one peer RPC",
                &inner.peer_messages_per_batch,
            ),
            (
                "move_seconds",
                "Time one partition move took, as the admin leader that carried it out saw it \
                 (from when it took the move up)",
                &inner.move_seconds,
            ),
            (
                "move_writes_refused_seconds",
                "Time one move kept its partition from taking writes: from the source's freeze \
                 to the destination serving it (or the source unfreezing it after a rollback)",
                &inner.move_writes_refused_seconds,
            ),
            (
                "snapshot_write_seconds",
                "Time writing one snapshot this node took into its file took (encoding, writing \
                 and fsync, on a thread of its own)",
                &inner.snapshot_write_seconds,
            ),
        ];
        for (name, help, histogram) in histograms {
            registry.register(name, help, histogram.clone());
        }
        registry.register(
            "request_seconds",
            "Time from a client request's arrival to its answer, by operation (op: put, get, \
             delete, cas, snapshot), errors included",
            inner.request_seconds.clone(),
        );
        registry.register(
            "peer_rpc_seconds",
            "Time from sending a batch of Raft messages to a peer to its reply (the network's \
             round trip, the peer's handling, and the answers that ride back), by peer id",
            inner.peer_rpc_seconds.clone(),
        );
        inner.registry = top;
        Metrics {
            inner: Arc::new(inner),
        }
    }

    /// The metrics in the Prometheus / OpenMetrics text format.
    pub fn encode(&self) -> String {
        if let Some(process) = super::process_metrics::sample() {
            let inner = &self.inner;
            let used = process.cpu_seconds - inner.process_cpu_seconds.get();
            if used > 0.0 {
                inner.process_cpu_seconds.inc_by(used);
            }
            inner
                .process_resident_bytes
                .set(as_gauge(process.resident_bytes));
            inner.process_open_fds.set(as_gauge(process.open_fds));
            inner
                .process_start_time_seconds
                .set(process.start_time_seconds);
        }
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.inner.registry);
        text
    }

    /// The core's progress, set by the event loop once per tick.
    pub fn observe_status(&self, status: &Status, voters: usize) {
        let inner = &self.inner;
        inner.term.set(as_gauge(status.term));
        inner.commit_index.set(as_gauge(status.commit));
        inner.applied_index.set(as_gauge(status.applied));
        inner.last_log_index.set(as_gauge(status.last_index));
        inner.is_leader.set(i64::from(status.role == Role::Leader));
        inner.has_leader.set(i64::from(status.leader.is_some()));
        inner.voters.set(voters as i64);
        let seen = inner.core_refused_seen.swap(
            status.refused_messages,
            std::sync::atomic::Ordering::Relaxed,
        );
        inner
            .peer_messages_refused
            .inc_by(status.refused_messages.saturating_sub(seen));
    }

    /// A peer's message was refused where it entered the node.
    pub fn refused_peer_message(&self) {
        self.inner.peer_messages_refused.inc();
    }

    pub fn leader_changed(&self) {
        self.inner.leader_changes.inc();
    }

    pub fn wrote(&self) {
        self.inner.writes.inc();
    }

    pub fn read(&self) {
        self.inner.reads.inc();
    }

    pub fn refused(&self) {
        self.inner.requests_refused.inc();
    }

    pub fn synced(&self, entries: usize, seconds: f64) {
        self.inner.disk_syncs.inc();
        self.inner.disk_sync_seconds.observe(seconds);
        self.inner.entries_per_sync.observe(entries as f64);
    }

    /// A snapshot this node took was written: its data's size and how long writing it took.
    /// Starts timing a client request of operation `op`; observed when the timer is dropped
    /// (whichever way the request ends).
    pub fn time_request(&self, op: &'static str) -> RequestTimer {
        RequestTimer {
            histogram: self
                .inner
                .request_seconds
                .get_or_create(&vec![("op", op)])
                .clone(),
            started: tokio::time::Instant::now(),
        }
    }

    pub fn peer_rpc(&self, peer: crate::core::NodeId, seconds: f64) {
        (self.inner.peer_rpc_seconds)
            .get_or_create(&vec![("peer", peer.to_string())])
            .observe(seconds);
    }

    /// The write-ahead log's size on disk.
    pub fn observe_log_size(&self, bytes: u64, segments: usize) {
        self.inner
            .wal_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.inner
            .wal_segments
            .set(i64::try_from(segments).unwrap_or(i64::MAX));
    }

    pub fn snapshot_written(&self, bytes: u64, seconds: f64) {
        self.inner.snapshot_bytes.set(as_gauge(bytes));
        self.inner.snapshot_write_seconds.observe(seconds);
    }

    pub fn sent_batch(&self, messages: usize) {
        self.inner.peer_batches.inc();
        self.inner.peer_messages.inc_by(messages as u64);
        self.inner.peer_messages_per_batch.observe(messages as f64);
    }

    pub fn answered_on_reply(&self, messages: usize) {
        self.inner.peer_messages_on_replies.inc_by(messages as u64);
    }

    pub fn dropped_message(&self) {
        self.inner.peer_messages_dropped.inc();
    }

    pub fn send_failed(&self) {
        self.inner.peer_send_failures.inc();
    }

    /// The directory's move totals as this admin replica applied them (started, committed,
    /// rolled back; each only grows).
    pub fn observe_move_totals(&self, totals: [u64; 3]) {
        let inner = &self.inner;
        let mut seen = inner.move_totals_seen.lock().expect("not poisoned");
        let counters = [
            &inner.moves_started,
            &inner.moves_committed,
            &inner.moves_rolled_back,
        ];
        for ((counter, now), before) in counters.into_iter().zip(totals).zip(seen.iter_mut()) {
            counter.inc_by(now.saturating_sub(*before));
            *before = (*before).max(now);
        }
    }

    pub fn shipped_move_bytes(&self, bytes: u64) {
        self.inner.move_bytes_shipped.inc_by(bytes);
    }

    /// A move this replica carried out ended: how long it took, and how long its partition
    /// refused writes (none: this replica did not see the freeze, or the move ended before).
    pub fn move_ended(&self, seconds: f64, writes_refused_seconds: Option<f64>) {
        self.inner.move_seconds.observe(seconds);
        if let Some(refused) = writes_refused_seconds {
            self.inner.move_writes_refused_seconds.observe(refused);
        }
    }
}

fn as_gauge(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A client request being timed (see [`Metrics::time_request`]).
pub struct RequestTimer {
    histogram: Histogram,
    started: tokio::time::Instant,
}

impl Drop for RequestTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::MemberState;

    #[test]
    fn encodes_what_was_observed() {
        let metrics = Metrics::new();
        metrics.observe_status(
            &Status {
                id: 1,
                role: Role::Leader,
                term: 7,
                vote: Some(1),
                leader: Some(1),
                commit: 41,
                applied: 40,
                persisted: 42,
                last_index: 42,
                member: MemberState::Voter,
                refused_messages: 2,
            },
            3,
        );
        metrics.synced(5, 0.001);
        metrics.sent_batch(3);
        metrics.wrote();
        metrics.answered_on_reply(2);
        metrics.refused_peer_message();
        metrics.observe_move_totals([3, 1, 0]);
        metrics.observe_move_totals([5, 2, 1]);
        metrics.shipped_move_bytes(4096);
        metrics.move_ended(0.5, Some(0.125));
        let text = metrics.encode();
        for line in [
            "ravel_term 7",
            "ravel_commit_index 41",
            "ravel_applied_index 40",
            "ravel_is_leader 1",
            "ravel_has_leader 1",
            "ravel_voters 3",
            "ravel_writes_total 1",
            "ravel_disk_syncs_total 1",
            "ravel_peer_messages_total 3",
            "ravel_entries_per_sync_sum 5.0",
            "ravel_peer_messages_on_replies_total 2",
            // Two refused by the core, one where it entered.
            "ravel_peer_messages_refused_total 3",
            "ravel_moves_started_total 5",
            "ravel_moves_committed_total 2",
            "ravel_moves_rolled_back_total 1",
            "ravel_move_bytes_shipped_total 4096",
            "ravel_move_writes_refused_seconds_sum 0.125",
            "ravel_move_seconds_count 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
        // The process's own figures, under the standard names.
        for line in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(line)),
                "missing {line:?} in:\n{text}"
            );
        }
        assert!(
            text.lines().any(|l| l == "# TYPE ravel_term gauge"),
            "{text}"
        );
    }

    /// A sharded store's node labels every one of its own figures with its group, and leaves
    /// the process's standard ones as every exporter names them.
    #[test]
    fn a_groups_figures_carry_its_label() {
        let metrics = Metrics::of_group(Some("7".to_string()));
        drop(metrics.time_request("put"));
        let text = metrics.encode();
        let samples: Vec<&str> = (text.lines())
            .filter(|line| !line.starts_with('#'))
            .collect();
        let ours: Vec<&&str> = (samples.iter())
            .filter(|line| line.starts_with("ravel_"))
            .collect();
        assert!(ours.len() > 20, "{text}");
        for line in ours {
            assert!(line.contains("group=\"7\""), "{line}");
        }
        for line in samples.iter().filter(|line| line.starts_with("process_")) {
            assert!(!line.contains("group="), "{line}");
        }
        assert!(!Metrics::new().encode().contains("group="));
    }

    /// Every metric the Grafana dashboard in `docs/` queries is one the node serves (a renamed
    /// metric must not leave an empty panel behind).
    #[test]
    fn the_dashboard_queries_only_metrics_the_node_serves() {
        let metrics = Metrics::new();
        // Families with labels appear once observed.
        drop(metrics.time_request("put"));
        metrics.peer_rpc(2, 0.001);
        let text = metrics.encode();
        let served: std::collections::BTreeSet<&str> = text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.split(['{', ' ']).next())
            .collect();
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../docs/grafana-dashboard.json"))
                .expect("the dashboard is JSON");
        let panels = dashboard["panels"].as_array().expect("panels");
        assert!(panels.len() >= 10, "{} panels", panels.len());
        let mut queried = 0;
        for panel in panels {
            for target in panel["targets"].as_array().expect("targets") {
                let expr = target["expr"].as_str().expect("an expression");
                let names = expr
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .filter(|word| word.starts_with("ravel_") || word.starts_with("process_"));
                for name in names {
                    queried += 1;
                    // Each of Ravel's own figures is filtered by the dashboard's group picker.
                    if name.starts_with("ravel_") {
                        assert!(
                            expr.contains(&format!("{name}{{group=~\"$group\"}}")),
                            "panel {:?}: {name} is not filtered by group in {expr}",
                            panel["title"]
                        );
                    }
                    assert!(
                        served.contains(name),
                        "panel {:?} queries {name}, which the node does not serve",
                        panel["title"]
                    );
                }
            }
        }
        assert!(queried >= 15, "only {queried} metrics queried");
    }
}
