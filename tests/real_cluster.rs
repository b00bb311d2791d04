//! Real `ravel node` processes on loopback ports in temporary directories: writes through any
//! node, `kill -9` of the leader, a restart from its data, a fourth node joining through the join
//! workflow, a node leaving, and the admission hook refusing a joiner. Every process is killed
//! when a test ends, whatever happens.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use ravel::client::{Client, ClientError};
use tokio::time::{sleep, Instant};

mod common;

use common::{free_address, wait_voter, RAVEL};

/// A node process, killed on drop.
struct NodeProcess {
    id: u64,
    address: String,
    data_dir: PathBuf,
    child: Option<Child>,
}

impl NodeProcess {
    fn start(id: u64, address: &str, data_dir: &Path, extra: &[&str]) -> NodeProcess {
        let mut node = NodeProcess {
            id,
            address: address.to_string(),
            data_dir: data_dir.to_path_buf(),
            child: None,
        };
        node.spawn(extra);
        node
    }

    fn spawn(&mut self, extra: &[&str]) {
        let log = std::fs::File::create(self.data_dir.with_extension("log")).expect("log file");
        let child = Command::new(RAVEL)
            .arg("node")
            .args(["--id", &self.id.to_string(), "--listen", &self.address])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args([
                "--election-timeout-min-ms",
                "300",
                "--election-timeout-max-ms",
                "600",
                "--heartbeat-interval-ms",
                "50",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("ravel starts");
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Asks the node to stop gracefully (SIGTERM).
    fn terminate(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Sends `signal` to the node directly (no external `kill`: slim images have none).
    fn signal(&self, signal: libc::c_int) {
        if let Some(child) = &self.child {
            let pid = libc::pid_t::try_from(child.id()).expect("a pid");
            // SAFETY: kill(2) on our own child with a signal number; no memory is involved.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }

    fn exit_code(&mut self, within: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + within;
        let child = self.child.as_mut()?;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn client(endpoints: &[&NodeProcess]) -> Client {
    let mut client = Client::new(endpoints.iter().map(|node| node.address.clone()).collect());
    client.timeout = Duration::from_secs(15);
    client
}

fn key(i: u64) -> Bytes {
    Bytes::from(format!("key-{i}"))
}

/// Node 1 bootstraps at `addresses[0]`, nodes 2 and 3 join it; returns once all three are voters.
async fn three_voters(dir: &Path, addresses: &[String]) -> Vec<NodeProcess> {
    let mut nodes = vec![NodeProcess::start(
        1,
        &addresses[0],
        &dir.join("node-1"),
        &[],
    )];
    wait_voter(&nodes[0].address).await;
    for id in 2..=3 {
        nodes.push(NodeProcess::start(
            id,
            &addresses[id as usize - 1],
            &dir.join(format!("node-{id}")),
            &["--join", &addresses[0]],
        ));
    }
    for node in &nodes {
        wait_voter(&node.address).await;
    }
    nodes
}

async fn leader_id(nodes: &[&NodeProcess]) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for node in nodes {
            let mut client = client(&[node]);
            client.timeout = Duration::from_millis(500);
            if let Ok(status) = client.status().await {
                if status.role == "leader" {
                    return status.node_id;
                }
            }
        }
        assert!(Instant::now() < deadline, "no leader was elected");
        sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_survive_kill_9_of_the_leader_and_change_membership() {
    let dir = tempfile::tempdir().expect("temp dir");
    let addresses: Vec<String> = (0..4).map(|_| free_address()).collect();
    let mut nodes = three_voters(dir.path(), &addresses).await;

    // Writes through each node in turn (followers redirect to the leader).
    for i in 0..60 {
        let through = &nodes[i as usize % 3];
        let mut client = client(&[through]);
        client
            .put(key(i), Bytes::from(format!("value-{i}")))
            .await
            .expect("write acknowledged");
    }

    // kill -9 the leader; the others elect a new one and still hold every acknowledged write.
    let all: Vec<&NodeProcess> = nodes.iter().collect();
    let old_leader = leader_id(&all).await;
    nodes[old_leader as usize - 1].kill();
    let survivors: Vec<&NodeProcess> = nodes.iter().filter(|n| n.id != old_leader).collect();
    let new_leader = leader_id(&survivors).await;
    assert_ne!(new_leader, old_leader);
    let mut survivors_client = client(&survivors);
    for i in 0..60 {
        let value = survivors_client.get(key(i), false).await.expect("read");
        assert_eq!(value, Some(Bytes::from(format!("value-{i}"))), "key {i}");
    }
    for i in 60..80 {
        survivors_client
            .put(key(i), Bytes::from(format!("value-{i}")))
            .await
            .expect("write after failover");
    }

    // The killed node restarts from its data (no join) and catches up.
    nodes[old_leader as usize - 1].spawn(&[]);
    wait_voter(&nodes[old_leader as usize - 1].address).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut stale = client(&[&nodes[old_leader as usize - 1]]);
        if let Ok(Some(value)) = stale.get(key(79), true).await {
            assert_eq!(value, Bytes::from("value-79"));
            break;
        }
        assert!(Instant::now() < deadline, "restarted node did not catch up");
        sleep(Duration::from_millis(100)).await;
    }

    // SIGSTOP the leader: a client that knew it as the leader gives up on it after one read
    // attempt and reads through the others; on SIGCONT it serves on as a follower.
    let all: Vec<&NodeProcess> = nodes.iter().collect();
    let paused = leader_id(&all).await as usize - 1;
    let mut reader = client(&all);
    reader.get(key(0), false).await.expect("read");
    nodes[paused].signal(libc::SIGSTOP);
    let started = Instant::now();
    let value = reader.get(key(1), false).await;
    nodes[paused].signal(libc::SIGCONT);
    assert_eq!(value.expect("read"), Some(Bytes::from("value-1")));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the read waited {:?} on a paused leader",
        started.elapsed()
    );

    // A fourth node joins through any member, then node 4 leaves again.
    let fourth = NodeProcess::start(
        4,
        &addresses[3],
        &dir.path().join("node-4"),
        &["--join", &addresses[1]],
    );
    wait_voter(&fourth.address).await;
    let mut everyone = client(&[&nodes[0], &nodes[1], &nodes[2], &fourth]);
    let members = everyone.members().await.expect("members");
    assert_eq!(members.members.len(), 4, "{members:?}");
    everyone.leave(4).await.expect("node 4 leaves");
    drop(fourth);
    let members = everyone.members().await.expect("members");
    assert_eq!(
        members.members.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let value = everyone.get(key(0), false).await.expect("read");
    assert_eq!(value, Some(Bytes::from("value-0")));

    // SIGTERM to the leader: it hands leadership over and exits 0; the others serve on at once.
    let all: Vec<&NodeProcess> = nodes.iter().collect();
    let leader = leader_id(&all).await as usize - 1;
    nodes[leader].terminate();
    assert_eq!(
        nodes[leader].exit_code(Duration::from_secs(10)),
        Some(0),
        "a leader stopped by SIGTERM exits cleanly"
    );
    let log = std::fs::read_to_string(nodes[leader].data_dir.with_extension("log")).expect("log");
    assert!(log.contains("handing leadership over"), "{log}");
    let rest: Vec<&NodeProcess> = nodes.iter().filter(|n| n.id != leader as u64 + 1).collect();
    let mut rest_client = client(&rest);
    rest_client
        .put(key(100), Bytes::from_static(b"after handover"))
        .await
        .expect("write after a graceful handover");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_update_node_hook_refuses_a_joiner_and_bad_requests_get_clear_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let hooks = dir.path().join("hooks");
    std::fs::create_dir_all(&hooks).expect("hooks dir");
    let hook = hooks.join("update-node");
    std::fs::write(
        &hook,
        "#!/bin/sh\nif [ \"$1\" = 9 ]; then echo \"node 9 is not on the allow list\"; exit 1; fi\nexit 0\n",
    )
    .expect("hook");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let first = free_address();
    let hooks_arg = hooks.to_string_lossy().to_string();
    let leader = NodeProcess::start(
        1,
        &first,
        &dir.path().join("node-1"),
        &["--hooks-dir", &hooks_arg],
    );
    wait_voter(&leader.address).await;

    let mut refused = NodeProcess::start(
        9,
        &free_address(),
        &dir.path().join("node-9"),
        &["--join", &first],
    );
    assert_eq!(
        refused.exit_code(Duration::from_secs(20)),
        Some(5),
        "a refused joiner exits with the 'refused' code"
    );
    let log = std::fs::read_to_string(dir.path().join("node-9.log")).expect("log");
    assert!(log.contains("node 9 is not on the allow list"), "{log}");

    // A joiner of another cluster is refused with a clear message and exits.
    let mut wrong = NodeProcess::start(
        5,
        &free_address(),
        &dir.path().join("node-5"),
        &["--join", &first, "--cluster-id", "77"],
    );
    assert_eq!(wrong.exit_code(Duration::from_secs(20)), Some(5));
    let log = std::fs::read_to_string(dir.path().join("node-5.log")).expect("log");
    assert!(log.contains("cluster 77"), "{log}");

    // A joiner claiming the id of a live member at another address is refused, saying why.
    let mut impostor = NodeProcess::start(
        1,
        &free_address(),
        &dir.path().join("node-1-impostor"),
        &["--join", &first],
    );
    assert_eq!(impostor.exit_code(Duration::from_secs(20)), Some(5));
    let log = std::fs::read_to_string(dir.path().join("node-1-impostor.log")).expect("log");
    assert!(log.contains("already used by the live node"), "{log}");

    // Client mistakes: reserved and empty keys are refused, nothing is written.
    let mut client = client(&[&leader]);
    let error = client
        .put(Bytes::from_static(b"\0ravel/node-address/1"), Bytes::new())
        .await
        .expect_err("reserved key refused");
    assert!(matches!(error, ClientError::Api(_)), "{error}");
    let error = client
        .put(Bytes::new(), Bytes::from_static(b"v"))
        .await
        .expect_err("empty key refused");
    assert!(error.to_string().contains("empty"), "{error}");

    // A follower-only node without a cluster to join refuses to start, saying why.
    let mut lonely = NodeProcess::start(
        6,
        &free_address(),
        &dir.path().join("node-6"),
        &["--follower-only"],
    );
    assert_eq!(lonely.exit_code(Duration::from_secs(10)), Some(2));
    let log = std::fs::read_to_string(dir.path().join("node-6.log")).expect("log");
    assert!(log.contains("needs a cluster to join"), "{log}");
}

/// `GET path` over plain HTTP/1.1; the status line and the body.
fn http_get(address: &str, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("metrics endpoint reachable");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .expect("request sent");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let status = response.lines().next().unwrap_or_default().to_string();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of an unlabelled sample in Prometheus text.
fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {name} in:\n{metrics}"))
        .trim()
        .parse()
        .expect("a number")
}

/// Node 1 of a new cluster, serving metrics; returns it with the metrics address once it leads.
async fn node_with_metrics(dir: &Path) -> (NodeProcess, String) {
    let metrics_address = free_address();
    let node = NodeProcess::start(
        1,
        &free_address(),
        &dir.join("node-1"),
        &["--metrics-listen", &metrics_address],
    );
    wait_voter(&node.address).await;
    (node, metrics_address)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_for_prometheus_and_a_bad_metrics_address_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (node, metrics_address) = node_with_metrics(dir.path()).await;
    let mut client = client(&[&node]);
    for i in 0..5 {
        client
            .put(key(i), Bytes::from("v"))
            .await
            .expect("write acknowledged");
    }
    for i in 0..2 {
        client.get(key(i), false).await.expect("read");
    }
    let (status, metrics) = http_get(&metrics_address, "/metrics");
    assert!(status.contains("200"), "{status}");
    assert_eq!(sample(&metrics, "ravel_writes_total"), 5.0);
    assert_eq!(sample(&metrics, "ravel_reads_total"), 2.0);
    assert!(
        sample(&metrics, "ravel_disk_syncs_total") >= 5.0,
        "{metrics}"
    );
    assert!(
        sample(&metrics, "ravel_entries_per_sync_sum") >= 5.0,
        "{metrics}"
    );
    // Every request timed, by operation; the log's size on disk after its syncs.
    assert_eq!(
        sample(&metrics, "ravel_request_seconds_count{op=\"put\"}"),
        5.0
    );
    assert_eq!(
        sample(&metrics, "ravel_request_seconds_count{op=\"get\"}"),
        2.0
    );
    assert!(sample(&metrics, "ravel_wal_bytes") > 0.0, "{metrics}");
    assert!(sample(&metrics, "ravel_wal_segments") >= 1.0, "{metrics}");
    // Gauges are refreshed every tick.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, metrics) = http_get(&metrics_address, "/metrics");
        if sample(&metrics, "ravel_is_leader") == 1.0
            && sample(&metrics, "ravel_commit_index") >= 5.0
        {
            assert_eq!(sample(&metrics, "ravel_voters"), 1.0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gauges never caught up:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = http_get(&metrics_address, "/elsewhere");
    assert!(status.contains("404"), "{status}");
    assert!(body.contains("/metrics"), "{body}");

    // A metrics address that is taken stops the node with the reason; a malformed one is a
    // usage error.
    let mut clash = NodeProcess::start(
        2,
        &free_address(),
        &dir.path().join("node-2"),
        &["--metrics-listen", &metrics_address],
    );
    assert_eq!(clash.exit_code(Duration::from_secs(10)), Some(1));
    let log = std::fs::read_to_string(dir.path().join("node-2.log")).expect("log");
    assert!(log.contains("cannot serve metrics on"), "{log}");
    let mut malformed = NodeProcess::start(
        3,
        &free_address(),
        &dir.path().join("node-3"),
        &["--metrics-listen", "localhost"],
    );
    assert_eq!(malformed.exit_code(Duration::from_secs(10)), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bench_counts_what_the_node_answered() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (node, metrics_address) = node_with_metrics(dir.path()).await;
    // The first endpoint is dead: the bench's client moves on to the node and then calls it
    // directly.
    let endpoints = format!("{},{}", free_address(), node.address);
    let output = Command::new(RAVEL)
        .args(["bench", "--endpoints", &endpoints, "--clients", "4"])
        .args(["--duration", "1", "--read-ratio", "0.5", "--keys", "10"])
        .output()
        .expect("the bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    // "N ops in 1.0 s: R ops/s, 0 errors"
    let summary = stdout
        .lines()
        .find(|line| line.contains(" ops in "))
        .unwrap_or_else(|| panic!("no summary in {stdout}"));
    assert!(summary.ends_with(" 0 errors"), "{summary}");
    let operations: f64 = summary.split(' ').next().unwrap().parse().expect("a count");
    assert!(operations > 100.0, "{summary}");
    assert!(stdout.contains("latency ms: p50 "), "{stdout}");
    let (_, metrics) = http_get(&metrics_address, "/metrics");
    let answered = sample(&metrics, "ravel_writes_total") + sample(&metrics, "ravel_reads_total");
    // The bench writes each of its 10 keys once before it starts measuring.
    assert_eq!(answered, operations + 10.0, "{summary}");
}

/// A gRPC client that knows nothing of Ravel's redirects (as grpcurl, h2load or a client in
/// another language) is served by a follower, which passes each request on to the leader; Ravel's
/// own client, which follows redirects, is told "not leader" instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_passes_a_plain_clients_requests_on_to_the_leader() {
    use ravel::server::leader_proxy::no_forward;
    use ravel::server::proto::ravel::{self as pb, kv_client::KvClient};

    let dir = tempfile::tempdir().expect("temp dir");
    let addresses: Vec<String> = (0..3).map(|_| free_address()).collect();
    let nodes = three_voters(dir.path(), &addresses).await;
    let all: Vec<&NodeProcess> = nodes.iter().collect();
    let leader = leader_id(&all).await;
    let follower = nodes
        .iter()
        .find(|node| node.id != leader)
        .expect("a follower");
    let channel = ravel::server::connect(&follower.address, Duration::from_secs(1))
        .await
        .expect("connects to the follower");
    let mut plain = KvClient::new(channel);

    let put = plain
        .put(pb::PutRequest {
            key: key(1),
            value: Bytes::from_static(b"through a follower"),
        })
        .await
        .expect("the follower passes the put on")
        .into_inner();
    assert!(put.index > 0, "the put was committed at an index");
    let got = plain
        .get(pb::GetRequest {
            key: key(1),
            stale: false,
        })
        .await
        .expect("the follower passes the read on")
        .into_inner();
    assert!(got.found);
    assert_eq!(got.value, Bytes::from_static(b"through a follower"));
    let swapped = plain
        .compare_and_swap(pb::CompareAndSwapRequest {
            key: key(1),
            expected_absent: false,
            expected: Bytes::from_static(b"through a follower"),
            new_value: Bytes::from_static(b"swapped"),
        })
        .await
        .expect("the follower passes the compare-and-swap on")
        .into_inner();
    assert!(swapped.swapped);
    let deleted = plain
        .delete(pb::DeleteRequest { key: key(1) })
        .await
        .expect("the follower passes the delete on")
        .into_inner();
    assert!(deleted.existed);
    let mut client = client(&[&nodes[leader as usize - 1]]);
    assert_eq!(client.get(key(1), false).await.expect("read"), None);

    // Asked not to forward (as Ravel's client asks), the follower names the leader instead.
    let refused = plain
        .put(no_forward(pb::PutRequest {
            key: key(2),
            value: Bytes::from_static(b"not passed on"),
        }))
        .await
        .expect_err("refused: not the leader");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused
            .message()
            .contains(&nodes[leader as usize - 1].address),
        "the refusal names the leader: {}",
        refused.message()
    );
    assert_eq!(client.get(key(2), false).await.expect("read"), None);
    let refused = plain
        .get(no_forward(pb::GetRequest {
            key: key(1),
            stale: false,
        }))
        .await
        .expect_err("refused: not the leader");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);

    // A paused leader holds its connections open without answering: the follower gives up on
    // the forwarded write after an election timeout (outcome unknown) instead of holding the
    // client for ever.
    let paused = &nodes[leader as usize - 1];
    paused.signal(libc::SIGSTOP);
    let started = Instant::now();
    let stuck = tokio::time::timeout(
        Duration::from_secs(25),
        plain.put(pb::PutRequest {
            key: key(3),
            value: Bytes::from_static(b"to a paused leader"),
        }),
    )
    .await;
    paused.signal(libc::SIGCONT);
    let stuck = stuck
        .expect("the follower answers within its forwarding timeout")
        .expect_err("no answer from a paused leader");
    assert_eq!(stuck.code(), tonic::Code::Unknown, "{stuck:?}");
    assert!(stuck.message().contains("outcome unknown"), "{stuck:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "gave up before an election timeout (600 ms here)"
    );

    // Once the leader is back, the same follower serves the plain client again (whichever node
    // leads now).
    let resumed = Instant::now();
    loop {
        let put = plain
            .put(pb::PutRequest {
                key: key(3),
                value: Bytes::from_static(b"after the pause"),
            })
            .await;
        match put {
            Ok(_) => break,
            Err(_) if resumed.elapsed() < Duration::from_secs(20) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(status) => panic!("no write through the follower after the pause: {status:?}"),
        }
    }
    assert_eq!(
        client.get(key(3), false).await.expect("read"),
        Some(Bytes::from_static(b"after the pause"))
    );

    // With the leader paused, the follower's reads go to whichever node leads next (or it
    // confirms them itself if elected): served again within a few election timeouts, with the
    // last acknowledged value, while the old leader is still stopped.
    client
        .put(key(4), Bytes::from_static(b"before the pause"))
        .await
        .expect("write before the pause");
    let leader = settled_leader(&all).await;
    let reader = nodes
        .iter()
        .find(|node| node.id != leader)
        .expect("a follower");
    let mut plain = KvClient::new(
        ravel::server::connect(&reader.address, Duration::from_secs(1))
            .await
            .expect("connects to the follower"),
    );
    let paused = &nodes[leader as usize - 1];
    paused.signal(libc::SIGSTOP);
    let started = Instant::now();
    let read = loop {
        let read = tokio::time::timeout(
            Duration::from_secs(5),
            plain.get(pb::GetRequest {
                key: key(4),
                stale: false,
            }),
        )
        .await;
        match read {
            Ok(Ok(read)) => break read.into_inner(),
            Ok(Err(status)) if status.code() == tonic::Code::Unavailable => {}
            Ok(Err(status)) => panic!("a read through the follower failed: {status:?}"),
            Err(_) => {}
        }
        if started.elapsed() > Duration::from_secs(20) {
            paused.signal(libc::SIGCONT);
            panic!("no read through the follower while the leader was paused");
        }
    };
    paused.signal(libc::SIGCONT);
    assert!(read.found, "{read:?}");
    assert_eq!(read.value, Bytes::from_static(b"before the pause"));
    // No node can lead before the minimum election timeout (300 ms here) less a heartbeat.
    let waited = started.elapsed();
    eprintln!("a read through a follower was served {waited:?} after the leader paused");
    assert!(
        waited >= Duration::from_millis(250),
        "served after {waited:?}, before anyone else could lead: node {leader} was not the leader"
    );
}

/// The leader every node agrees on: a leader that has just been resumed may still believe it
/// leads for a moment after the others moved on.
async fn settled_leader(nodes: &[&NodeProcess]) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut leaders = std::collections::BTreeSet::new();
        for node in nodes {
            let mut client = client(&[node]);
            client.timeout = Duration::from_millis(500);
            match client.status().await {
                Ok(status) => leaders.insert(status.leader_id),
                Err(_) => leaders.insert(0),
            };
        }
        if let [leader] = leaders.into_iter().collect::<Vec<_>>()[..] {
            if leader != 0 {
                return leader;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the nodes never agreed on a leader"
        );
        sleep(Duration::from_millis(100)).await;
    }
}

/// `leave 2` on a three-node cluster: node 2 never receives the entry that removes it, yet it
/// learns it (the leader tells it), says so in `status`, stops campaigning, refuses to list
/// members it no longer knows, refuses a restart without --join, and comes back as a voter
/// through the join workflow when restarted with --join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_learns_it_stops_campaigning_and_can_rejoin() {
    let dir = tempfile::tempdir().expect("temp dir");
    let addresses: Vec<String> = (0..3).map(|_| free_address()).collect();
    let mut nodes = three_voters(dir.path(), &addresses).await;
    let mut everyone = client(&[&nodes[0], &nodes[1], &nodes[2]]);
    everyone
        .put(key(1), Bytes::from_static(b"before"))
        .await
        .expect("write");
    everyone.leave(2).await.expect("node 2 leaves");
    let mut removed = client(&[&nodes[1]]);
    removed.timeout = Duration::from_millis(500);
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Ok(status) = removed.status().await {
            if status.member_state == "removed" {
                break status;
            }
        }
        assert!(
            Instant::now() < deadline,
            "node 2 never learned it was removed"
        );
        sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status.role, "follower", "{status:?}");
    sleep(Duration::from_secs(2)).await;
    let later = removed.status().await.expect("status");
    assert_eq!(later.term, status.term, "it still campaigns");
    let refused = removed.members().await;
    assert!(
        refused.is_err(),
        "members through a removed node: {refused:?}"
    );
    let log = std::fs::read_to_string(nodes[1].data_dir.with_extension("log")).expect("log");
    assert!(log.contains("removed from the cluster"), "{log}");
    // Restarted as it was, it refuses: its data would make it a member again.
    nodes[1].kill();
    nodes[1].spawn(&[]);
    assert_eq!(nodes[1].exit_code(Duration::from_secs(10)), Some(2));
    // With --join it comes back through the join workflow and votes again.
    nodes[1].spawn(&["--join", &addresses[0]]);
    wait_voter(&nodes[1].address).await;
    let members = everyone.members().await.expect("members");
    assert_eq!(members.members.len(), 3, "{members:?}");
    let mut through_two = client(&[&nodes[1]]);
    assert_eq!(
        through_two.get(key(1), false).await.expect("read"),
        Some(Bytes::from_static(b"before"))
    );
}
