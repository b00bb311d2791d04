//! Real `ravel node` processes against the mistakes operators make: two nodes on one data
//! directory, a WAL cut short by hand, `--join` given to a node that founded its own cluster,
//! and settings or ports that are wrong on a new directory. Each must be refused with an error
//! that says what to do, and lose nothing.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ravel::client::Client;

mod common;

use common::{free_address, RAVEL};

fn node_command(id: u64, address: &str, data_dir: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(RAVEL);
    command
        .arg("node")
        .args(["--id", &id.to_string(), "--listen", address])
        .arg("--data-dir")
        .arg(data_dir)
        .args([
            "--election-timeout-min-ms",
            "300",
            "--election-timeout-max-ms",
            "600",
        ])
        .args(extra)
        .stdin(Stdio::null());
    command
}

/// A node that is expected to keep running; killed on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(id: u64, address: &str, data_dir: &Path, extra: &[&str]) -> Running {
    Running(
        node_command(id, address, data_dir, extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ravel starts"),
    )
}

/// Stops a node gracefully (SIGTERM) and waits for it.
fn stop(mut node: Running) {
    let pid = libc::pid_t::try_from(node.0.id()).expect("a pid");
    // SAFETY: kill(2) on our own child with a signal number; no memory is involved.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = node.0.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the node did not stop within 20 s of SIGTERM");
}

/// Runs a node that must refuse to start: its exit code and what it printed.
fn refused(id: u64, address: &str, data_dir: &Path, extra: &[&str]) -> (i32, String) {
    let mut child = node_command(id, address, data_dir, extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ravel starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            let Output { status, stderr, .. } = child.wait_with_output().expect("output");
            let code = status.code().expect("an exit code");
            assert_ne!(code, 0, "the node exited successfully");
            return (code, String::from_utf8_lossy(&stderr).into_owned());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the node kept running instead of refusing to start");
}

fn client(address: &str) -> Client {
    let mut client = Client::new(vec![address.to_string()]);
    client.timeout = Duration::from_secs(10);
    client
}

async fn put(address: &str, key: &str, value: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut client = client(address);
    loop {
        match client
            .put(Bytes::from(key.to_string()), Bytes::from(value.to_string()))
            .await
        {
            Ok(_) => return,
            Err(error) => {
                assert!(Instant::now() < deadline, "put {key} failed: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn get(address: &str, key: &str) -> Option<Bytes> {
    client(address)
        .get(Bytes::from(key.to_string()), false)
        .await
        .expect("get")
}

/// The cluster id a node reports, once it answers.
async fn cluster_of(address: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match client(address).status().await {
            Ok(status) => return status.cluster_id,
            Err(error) => {
                assert!(Instant::now() < deadline, "status of {address}: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn active_segment(data_dir: &Path) -> PathBuf {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(data_dir.join("wal"))
        .expect("a wal directory")
        .map(|item| item.expect("entry").path())
        .collect();
    segments.sort();
    segments.pop().expect("a segment")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_on_a_data_directory_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let first_address = free_address();
    let first = start(1, &first_address, &data_dir, &[]);
    put(&first_address, "k", "v").await;
    let (code, error) = refused(1, &free_address(), &data_dir, &[]);
    assert!(error.contains("in use"), "exit {code}: {error}");
    assert!(error.contains("--data-dir of its own"), "{error}");
    // The first node is untouched: it still serves what it acknowledged, and so does the
    // directory after it stops.
    assert_eq!(get(&first_address, "k").await, Some(Bytes::from("v")));
    stop(first);
    let address = free_address();
    let again = start(1, &address, &data_dir, &[]);
    assert_eq!(get(&address, "k").await, Some(Bytes::from("v")));
    drop(again);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wal_cut_short_by_hand_refuses_to_start_and_says_how_to_rejoin() {
    type Cut = fn(u64) -> u64;
    let cuts: [(&str, Cut); 2] = [
        ("to half its length", |len| len / 2),
        ("by its last 100 bytes", |len| len - 100),
    ];
    for (what, cut) in cuts {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let address = free_address();
        let node = start(1, &address, &data_dir, &[]);
        let mut writer = client(&address);
        put(&address, "first", "x").await;
        for i in 0..1400 {
            writer
                .put(
                    Bytes::from(format!("key-{i}")),
                    Bytes::from(vec![b'v'; 256]),
                )
                .await
                .expect("put");
        }
        stop(node);
        let segment = active_segment(&data_dir);
        let len = std::fs::metadata(&segment).unwrap().len();
        let cut_to = cut(len);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&segment)
            .unwrap()
            .set_len(cut_to)
            .unwrap();
        let (code, error) = refused(1, &free_address(), &data_dir, &[]);
        assert!(
            error.contains("cut short") && error.contains("--join"),
            "cut {what}: exit {code}: {error}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_given_to_a_node_that_founded_its_cluster_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let other = free_address();
    let other_node = start(1, &other, &dir.path().join("other"), &[]);
    let data_dir = dir.path().join("data");
    let address = free_address();
    let founder = start(2, &address, &data_dir, &[]);
    put(&address, "k", "mine").await;
    stop(founder);
    let (code, error) = refused(2, &address, &data_dir, &["--join", &other]);
    assert_eq!(code, 2, "a usage error: {error}");
    assert!(
        error.contains("founded") && error.contains("without --join"),
        "{error}"
    );
    // Without --join it resumes its own cluster, with its data.
    let again = start(2, &address, &data_dir, &[]);
    assert_eq!(get(&address, "k").await, Some(Bytes::from("mine")));
    drop(again);
    drop(other_node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_and_ports_are_checked_before_the_data_directory_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let address = free_address();
    let (code, error) = refused(0, &address, &data_dir, &[]);
    assert_eq!(code, 2, "{error}");
    assert!(error.contains("use --id 1"), "{error}");
    assert!(!data_dir.exists(), "a refused start created {data_dir:?}");
    let (_, error) = refused(1, &address, &data_dir, &["--read-mode", "fast"]);
    assert!(error.contains("read mode"), "{error}");
    assert!(!data_dir.exists(), "a refused start created {data_dir:?}");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_address = taken.local_addr().unwrap().to_string();
    let (_, error) = refused(1, &taken_address, &data_dir, &[]);
    assert!(error.contains(&taken_address), "{error}");
    assert!(!data_dir.exists(), "a port in use created {data_dir:?}");
    // The advice works: the corrected command starts, on the same directory.
    let node = start(1, &address, &data_dir, &[]);
    put(&address, "k", "v").await;
    drop(node);
}

/// A node killed before it was admitted restarts joining, never as a member: without --join it
/// is refused (before, it bootstrapped a cluster of its own), with --join it finishes joining.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_while_joining_joins_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let founder_address = free_address();
    let founder = start(1, &founder_address, &dir.path().join("founder"), &[]);
    put(&founder_address, "k", "v").await;
    let data_dir = dir.path().join("joiner");
    let address = free_address();
    // Its only seed does not answer: it stays connection pending, then is killed.
    let nobody = free_address();
    let joiner = start(2, &address, &data_dir, &["--join", &nobody]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(joiner);
    let (code, error) = refused(2, &address, &data_dir, &[]);
    assert_eq!(code, 2, "{error}");
    assert!(error.contains("was joining"), "{error}");
    let joiner = start(2, &address, &data_dir, &["--join", &founder_address]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(status) = client(&address).status().await {
            if status.member_state == "voter" {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the joiner never became a voter");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(get(&address, "k").await, Some(Bytes::from("v")));
    // Admitted: a restart with the same command line resumes as the member it is.
    stop(joiner);
    let joiner = start(2, &address, &data_dir, &["--join", &founder_address]);
    assert_eq!(get(&address, "k").await, Some(Bytes::from("v")));
    drop(joiner);
    drop(founder);
}

/// `leave` names the cluster it means: a node of another cluster refuses it, and no one leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_for_another_cluster_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let address = free_address();
    let node = start(
        1,
        &address,
        &dir.path().join("data"),
        &["--cluster-id", "7"],
    );
    put(&address, "k", "v").await;
    let output = Command::new(RAVEL)
        .args(["leave", "1", "--cluster-id", "8", "--endpoints", &address])
        .output()
        .expect("ravel leave runs");
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("belongs to cluster 7"), "{error}");
    let members = client(&address).members().await.expect("members");
    assert_eq!(members.members.len(), 1, "{members:?}");
    let output = Command::new(RAVEL)
        .args(["leave", "1", "--cluster-id", "7", "--endpoints", &address])
        .output()
        .expect("ravel leave runs");
    // The right cluster id passes the check; the change itself is refused (the last voter).
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains("no voters") && !error.contains("belongs to cluster"),
        "{error}"
    );
    drop(node);
}

/// A new cluster draws its id at random, so two clusters bootstrapped by accident never take
/// each other's messages; a joiner given none learns its cluster's and keeps it across restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_clusters_draw_their_ids_and_joiners_learn_them() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (free_address(), free_address());
    let first = start(1, &a, &dir.path().join("a"), &[]);
    let second = start(1, &b, &dir.path().join("b"), &[]);
    put(&a, "k", "a").await;
    put(&b, "k", "b").await;
    let id_a = cluster_of(&a).await;
    let id_b = cluster_of(&b).await;
    assert!(id_a > 1 && id_b > 1, "{id_a} {id_b}");
    assert_ne!(id_a, id_b, "two clusters drew the same id");
    drop(second);
    let joiner_dir = dir.path().join("joiner");
    let address = free_address();
    let joiner = start(2, &address, &joiner_dir, &["--join", &a]);
    assert_eq!(get(&address, "k").await, Some(Bytes::from("a")));
    assert_eq!(cluster_of(&address).await, id_a);
    stop(joiner);
    let joiner = start(2, &address, &joiner_dir, &["--join", &a]);
    assert_eq!(cluster_of(&address).await, id_a);
    assert_eq!(get(&address, "k").await, Some(Bytes::from("a")));
    drop(joiner);
    drop(first);
}

/// A client command whose output is cut short (`ravel status | head -1`) ends quietly, as Unix
/// tools do: before, it panicked ("failed printing to stdout: Broken pipe").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_command_piped_into_a_closed_reader_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let address = free_address();
    let node = start(1, &address, &dir.path().join("node"), &[]);
    put(&address, "k", "v").await;
    let mut command = Command::new(RAVEL);
    command
        .args(["status", "--endpoints", &address])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut status = command.spawn().expect("ravel status starts");
    drop(status.stdout.take());
    let output = status.wait_with_output().expect("ravel status ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        output.status.signal(),
        Some(libc::SIGPIPE),
        "ended with {}: {stderr}",
        output.status
    );
    drop(node);
}
