//! Backups and disaster recovery with real `ravel` processes: `ravel snapshot save` from a
//! running cluster, `snapshot status` and `snapshot restore` refusing a damaged file and writing
//! nothing, a restored cluster serving every key the backup holds (and none written after it)
//! and growing by a join; and `ravel node --force-new-cluster` bringing a cluster back from the
//! one directory left of three, refused until confirmed.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ravel::client::Client;
use tokio::time::sleep;

mod common;

use common::{free_address, ravel, said, wait_voter, RAVEL};

struct NodeProcess {
    id: u64,
    address: String,
    child: Child,
}

impl NodeProcess {
    fn start(id: u64, address: &str, data_dir: &Path, extra: &[&str]) -> NodeProcess {
        let log = std::fs::File::create(data_dir.with_extension("log")).expect("log file");
        let child = node_command(id, address, data_dir, extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("ravel starts");
        NodeProcess {
            id,
            address: address.to_string(),
            child,
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

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
            "--heartbeat-interval-ms",
            "50",
        ])
        .args(extra)
        .stdin(Stdio::null());
    command
}

/// A node that must refuse to start: its exit code and what it printed.
fn refused_node(id: u64, address: &str, data_dir: &Path, extra: &[&str]) -> (i32, String) {
    let output = node_command(id, address, data_dir, extra)
        .output()
        .expect("ravel runs");
    let text = String::from_utf8_lossy(&output.stderr).to_string();
    (output.status.code().unwrap_or(-1), text)
}

fn client(addresses: &[&str]) -> Client {
    let mut client = Client::new(
        addresses
            .iter()
            .map(|address| address.to_string())
            .collect(),
    );
    client.timeout = Duration::from_secs(15);
    client
}

fn key(i: u64) -> Bytes {
    Bytes::from(format!("key-{i}"))
}

/// A value of any bytes, different per key.
fn value(i: u64) -> Bytes {
    let mut value = vec![0xff, 0x00, b'\n'];
    value.extend_from_slice(format!("value-{i}").as_bytes());
    Bytes::from(value)
}

/// Node 1 bootstraps, nodes 2 and 3 join it; returns once all three are voters.
async fn three_voters(dir: &Path) -> Vec<NodeProcess> {
    let addresses: Vec<String> = (0..3).map(|_| free_address()).collect();
    let mut nodes = vec![NodeProcess::start(
        1,
        &addresses[0],
        &dir.join("node-1"),
        &[],
    )];
    wait_voter(&addresses[0]).await;
    for id in 2..=3 {
        nodes.push(NodeProcess::start(
            id,
            &addresses[id as usize - 1],
            &dir.join(format!("node-{id}")),
            &["--join", &addresses[0]],
        ));
    }
    for address in &addresses {
        wait_voter(address).await;
    }
    nodes
}

/// Waits until every node has applied `index`.
async fn wait_applied(nodes: &[NodeProcess], index: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    for node in nodes {
        let mut client = client(&[&node.address]);
        loop {
            if let Ok(status) = client.status().await {
                if status.applied_index >= index {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "node {} did not apply {index}",
                node.id
            );
            sleep(Duration::from_millis(50)).await;
        }
    }
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("not JSON ({error}): {}", said(output)))
}

fn is_empty_or_absent(dir: &Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut entries| entries.next().is_none())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_then_restore_brings_every_key_back_and_nothing_written_after() {
    let dir = tempfile::tempdir().expect("temp dir");
    let nodes = three_voters(dir.path()).await;
    let endpoints: Vec<&str> = nodes.iter().map(|node| node.address.as_str()).collect();
    let mut writer = client(&endpoints);
    for i in 0..300 {
        writer.put(key(i), value(i)).await.expect("put");
    }
    for i in 0..300 {
        if i % 7 == 0 {
            writer.delete(key(i)).await.expect("delete");
        }
    }

    // Saved through a follower: the request finds the leader.
    let leader = writer.leader().expect("a leader answered").to_string();
    let follower = endpoints
        .iter()
        .find(|address| **address != leader)
        .expect("a follower");
    let backup = dir.path().join("backup.ravel");
    let backup_arg = backup.to_str().expect("utf-8 path");
    let saved = ravel(&[
        "snapshot",
        "save",
        backup_arg,
        "--endpoints",
        follower,
        "-w",
        "json",
    ]);
    assert!(saved.status.success(), "save failed: {}", said(&saved));
    let saved = json(&saved);
    let index = saved["index"].as_u64().expect("an index");
    assert!(
        index >= 300 + 300 / 7,
        "the backup's index {index} misses writes"
    );
    // Written after the save returned: must not be in the backup.
    writer.put(key(1000), value(1000)).await.expect("put after");

    let again = ravel(&["snapshot", "save", backup_arg, "--endpoints", follower]);
    assert_eq!(again.status.code(), Some(1), "{}", said(&again));
    assert!(said(&again).contains("exists already"), "{}", said(&again));

    let status = ravel(&["snapshot", "status", backup_arg, "-w", "json"]);
    assert!(status.status.success(), "{}", said(&status));
    let status = json(&status);
    assert_eq!(status["index"].as_u64(), Some(index));
    assert_eq!(status["crc32"], saved["crc32"]);
    assert_eq!(status["keys"].as_u64(), Some(300 - 300_u64.div_ceil(7)));

    // A damaged copy: refused by status and restore, and restore writes nothing.
    let mut bytes = std::fs::read(&backup).expect("read backup");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    let damaged = dir.path().join("damaged.ravel");
    std::fs::write(&damaged, &bytes).expect("write damaged");
    let damaged_arg = damaged.to_str().expect("utf-8 path");
    let checked = ravel(&["snapshot", "status", damaged_arg]);
    assert_eq!(checked.status.code(), Some(1), "{}", said(&checked));
    assert!(said(&checked).contains("checksum"), "{}", said(&checked));
    let refused_dir = dir.path().join("from-damaged");
    let refused_arg = refused_dir.to_str().expect("utf-8 path");
    let restored = ravel(&[
        "snapshot",
        "restore",
        damaged_arg,
        "--data-dir",
        refused_arg,
    ]);
    assert!(!restored.status.success(), "a damaged backup was restored");
    assert!(is_empty_or_absent(&refused_dir), "a refused restore wrote");
    let truncated = dir.path().join("truncated.ravel");
    std::fs::write(&truncated, &std::fs::read(&backup).unwrap()[..middle]).unwrap();
    let restored = ravel(&[
        "snapshot",
        "restore",
        truncated.to_str().unwrap(),
        "--data-dir",
        refused_arg,
    ]);
    assert!(
        !restored.status.success(),
        "a truncated backup was restored"
    );
    assert!(is_empty_or_absent(&refused_dir), "a refused restore wrote");

    // Restored into a node of a new cluster, on a new port.
    let restore_dir = dir.path().join("restored-7");
    let restore_arg = restore_dir.to_str().expect("utf-8 path");
    let restored = ravel(&[
        "snapshot",
        "restore",
        backup_arg,
        "--data-dir",
        restore_arg,
        "--id",
        "7",
        "-w",
        "json",
    ]);
    assert!(
        restored.status.success(),
        "restore failed: {}",
        said(&restored)
    );
    let restored = json(&restored);
    assert_ne!(
        restored["cluster_id"], saved["cluster_id"],
        "a new cluster id"
    );
    let into_full = ravel(&["snapshot", "restore", backup_arg, "--data-dir", restore_arg]);
    assert_eq!(into_full.status.code(), Some(5), "{}", said(&into_full));
    assert!(
        said(&into_full).contains("not empty"),
        "{}",
        said(&into_full)
    );

    drop(nodes);
    let address = free_address();
    let _restored_node = NodeProcess::start(7, &address, &restore_dir, &[]);
    wait_voter(&address).await;
    let mut reader = client(&[&address]);
    for i in 0..300 {
        let got = reader.get(key(i), false).await.expect("get");
        let expected = (i % 7 != 0).then(|| value(i));
        assert_eq!(got, expected, "key {i} after the restore");
    }
    let after = reader.get(key(1000), false).await.expect("get");
    assert_eq!(after, None, "a write made after the save is in the backup");

    // The restored cluster takes writes and grows by a join.
    reader
        .put(key(2000), value(2000))
        .await
        .expect("put on the restored cluster");
    let joiner_address = free_address();
    let _joiner = NodeProcess::start(
        8,
        &joiner_address,
        &dir.path().join("restored-8"),
        &["--join", &address],
    );
    wait_voter(&joiner_address).await;
    let mut at_joiner = client(&[&joiner_address]);
    at_joiner.through_followers = true;
    assert_eq!(
        at_joiner.get(key(1), false).await.expect("get"),
        Some(value(1))
    );
    assert_eq!(
        at_joiner.get(key(2000), false).await.expect("get"),
        Some(value(2000))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_new_cluster_recovers_from_one_directory_of_three() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut nodes = three_voters(dir.path()).await;
    let endpoints: Vec<&str> = nodes.iter().map(|node| node.address.as_str()).collect();
    let mut writer = client(&endpoints);
    let mut last = 0;
    for i in 0..200 {
        last = writer.put(key(i), value(i)).await.expect("put");
    }
    // Every node holds every acknowledged write, so any one directory is enough.
    wait_applied(&nodes, last).await;
    let leader = writer.leader().expect("a leader answered").to_string();
    let survivor = nodes
        .iter()
        .position(|node| node.address != leader)
        .expect("a follower");
    for node in &mut nodes {
        node.kill();
    }
    let survivor_id = nodes[survivor].id;
    let survivor_dir = dir.path().join(format!("node-{survivor_id}"));
    for node in &nodes {
        if node.id != survivor_id {
            std::fs::remove_dir_all(dir.path().join(format!("node-{}", node.id)))
                .expect("remove a lost node's directory");
        }
    }
    let checked = ravel(&["check-data", survivor_dir.to_str().unwrap(), "-w", "json"]);
    let old_cluster = json(&checked)["identity"]["cluster_id"]
        .as_u64()
        .expect("a cluster id");

    // Asked once: refused, saying how to confirm, and the directory untouched.
    let address = free_address();
    let (code, said) = refused_node(
        survivor_id,
        &address,
        &survivor_dir,
        &["--force-new-cluster"],
    );
    assert_eq!(code, 5, "{said}");
    assert!(
        said.contains(&format!("--confirm-force-new-cluster {old_cluster}")),
        "{said}"
    );
    let wrong = (old_cluster ^ 1).to_string();
    let (code, said) = refused_node(
        survivor_id,
        &address,
        &survivor_dir,
        &["--force-new-cluster", "--confirm-force-new-cluster", &wrong],
    );
    assert_eq!(code, 5, "{said}");
    let checked = ravel(&["check-data", survivor_dir.to_str().unwrap(), "-w", "json"]);
    assert_eq!(
        json(&checked)["identity"]["cluster_id"].as_u64(),
        Some(old_cluster)
    );
    // A plain start waits for the lost majority: it cannot elect itself.
    {
        let _waiting = NodeProcess::start(survivor_id, &address, &survivor_dir, &[]);
        sleep(Duration::from_millis(1500)).await;
        let mut probe = client(&[&address]);
        probe.timeout = Duration::from_millis(500);
        let status = probe.status().await.expect("status");
        assert_eq!(
            status.leader_id, 0,
            "a third of the cluster elected a leader"
        );
    }

    let confirm = old_cluster.to_string();
    let _forced = NodeProcess::start(
        survivor_id,
        &address,
        &survivor_dir,
        &[
            "--force-new-cluster",
            "--confirm-force-new-cluster",
            &confirm,
        ],
    );
    wait_voter(&address).await;
    let mut reader = client(&[&address]);
    for i in 0..200 {
        assert_eq!(
            reader.get(key(i), false).await.expect("get"),
            Some(value(i)),
            "key {i} after forcing a new cluster"
        );
    }
    reader
        .put(key(500), value(500))
        .await
        .expect("a write on the new cluster");
    let status = reader.status().await.expect("status");
    assert_ne!(status.cluster_id, old_cluster, "a new cluster id");
    let members = reader.members().await.expect("members");
    assert_eq!(members.members.len(), 1, "{members:?}");

    let joiner_address = free_address();
    let _joiner = NodeProcess::start(
        9,
        &joiner_address,
        &dir.path().join("node-9"),
        &["--join", &address],
    );
    wait_voter(&joiner_address).await;
    let mut at_joiner = client(&[&joiner_address]);
    at_joiner.through_followers = true;
    assert_eq!(
        at_joiner.get(key(500), false).await.expect("get"),
        Some(value(500))
    );
}
