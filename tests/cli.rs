//! The `ravel` command line against a real node, as a person or a script uses it: values of any
//! bytes in and out (a file, standard input, a pipe), `-w json` that parses, `endpoint health`
//! and `endpoint status` across live and dead endpoints, and failures that come at once with
//! the right exit code (nothing listening, a malformed address).

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;

mod common;

use common::{free_address, ravel, RAVEL};

/// A node killed on drop.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_node(address: &str, data_dir: &Path) -> Node {
    let child = Command::new(RAVEL)
        .args(["node", "--id", "1", "--listen", address])
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ravel node starts");
    let node = Node(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if ravel(&[
            "put",
            "ready",
            "yes",
            "--endpoints",
            address,
            "--timeout",
            "2",
        ])
        .status
        .success()
        {
            return node;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the node did not take a write within 20 s");
}

fn ravel_with_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(RAVEL)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ravel runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("written");
    child.wait_with_output().expect("ravel ends")
}

fn json(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the output is JSON")
}

/// Values of any bytes, larger than an argument list may carry, go in from a file or standard
/// input and come back out to a pipe exactly; `-w json` carries them in base64.
#[test]
fn values_of_any_bytes_go_in_and_come_out_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let address = free_address();
    let _node = start_node(&address, &dir.path().join("node"));
    // 300 KiB: beyond what one argument may hold (128 KiB); every byte value, NULs, an escape
    // sequence and bytes that are not UTF-8 included.
    let mut value: Vec<u8> = (0..300 * 1024).map(|i| (i % 251) as u8).collect();
    value.extend_from_slice(b"\x1b[31m\xff\xfe\n");
    let file = dir.path().join("value");
    std::fs::write(&file, &value).unwrap();
    let file = file.to_str().unwrap();
    let put = ravel(&["put", "blob", "--value-file", file, "--endpoints", &address]);
    assert!(put.status.success(), "{put:?}");
    let got = ravel(&["get", "blob", "--endpoints", &address]);
    assert!(got.status.success(), "{got:?}");
    assert!(got.stdout == value, "the value came back changed");

    let got = json(&ravel(&[
        "get",
        "blob",
        "-w",
        "json",
        "--endpoints",
        &address,
    ]));
    assert_eq!(got["key"], "blob");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(got["value"].as_str().expect("a string"))
        .expect("base64");
    assert!(decoded == value);

    // From standard input: with `-`, and with no value at all.
    let piped = ravel_with_stdin(&["put", "in", "-", "--endpoints", &address], b"\x00one");
    assert!(piped.status.success(), "{piped:?}");
    assert_eq!(
        ravel(&["get", "in", "--endpoints", &address]).stdout,
        b"\x00one"
    );
    let piped = ravel_with_stdin(&["put", "in", "--endpoints", &address], b"two\n");
    assert!(piped.status.success(), "{piped:?}");
    assert_eq!(
        ravel(&["get", "in", "--endpoints", &address]).stdout,
        b"two\n"
    );

    // Too large: refused with the limit named, nothing written.
    std::fs::write(dir.path().join("huge"), vec![1u8; (1 << 20) + 1]).unwrap();
    let huge = dir.path().join("huge");
    let refused = ravel(&[
        "put",
        "in",
        "--value-file",
        huge.to_str().unwrap(),
        "--endpoints",
        &address,
    ]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("1048576"));
    assert_eq!(
        ravel(&["get", "in", "--endpoints", &address]).stdout,
        b"two\n"
    );
}

/// `status`, `members`, `endpoint status` and `endpoint health` print JSON that parses with
/// `-w json`; the endpoint commands report each endpoint, the dead one with its error, and
/// exit non-zero when any endpoint failed.
#[test]
fn json_output_and_every_endpoint_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let address = free_address();
    let _node = start_node(&address, &dir.path().join("node"));
    let status = json(&ravel(&["status", "-w", "json", "--endpoints", &address]));
    assert_eq!(status["id"], 1);
    assert_eq!(status["role"], "leader");
    assert!(status["commit_index"].as_u64().unwrap() >= 1);
    let members = json(&ravel(&["members", "-w", "json", "--endpoints", &address]));
    assert_eq!(members["leader"], 1);
    assert_eq!(members["members"][0]["address"], address.as_str());

    let dead = free_address();
    let both = format!("{address},{dead}");
    let health = ravel(&["endpoint", "health", "-w", "json", "--endpoints", &both]);
    assert_eq!(health.status.code(), Some(3), "one endpoint is dead");
    let rows: serde_json::Value = serde_json::from_slice(&health.stdout).expect("JSON");
    assert_eq!(rows[0]["endpoint"], address.as_str());
    assert_eq!(rows[0]["health"], true);
    assert_eq!(rows[1]["health"], false);
    assert!(rows[1]["error"].as_str().unwrap().contains("refused"));
    let alone = ravel(&["endpoint", "health", "--endpoints", &address]);
    assert!(alone.status.success(), "{alone:?}");
    assert!(String::from_utf8_lossy(&alone.stdout).contains("true"));

    let statuses = ravel(&["endpoint", "status", "-w", "json", "--endpoints", &both]);
    assert_eq!(statuses.status.code(), Some(3));
    let rows: serde_json::Value = serde_json::from_slice(&statuses.stdout).expect("JSON");
    assert_eq!(rows[0]["status"]["id"], 1);
    assert!(rows[1]["error"].is_string());
    let table = ravel(&["endpoint", "status", "--endpoints", &address]);
    assert!(table.status.success());
    assert!(String::from_utf8_lossy(&table.stdout).contains("leader"));
}

/// Nothing listening is said at once (not after the 10 s timeout); a malformed address is a
/// usage error (exit 2) before anything is sent.
#[test]
fn failures_come_at_once_with_the_right_exit_code() {
    let nobody = free_address();
    let started = Instant::now();
    let output = ravel(&["get", "k", "--endpoints", &nobody]);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("nothing listens"), "{stderr}");

    let output = ravel(&["get", "k", "--endpoints", "localhost"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("HOST:PORT"), "{stderr}");
}

/// `--log-format json` writes one JSON object per log line (for a log collector).
#[test]
fn logs_can_be_json_lines() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let address = free_address();
    let mut child = Command::new(RAVEL)
        .args([
            "node",
            "--id",
            "1",
            "--listen",
            &address,
            "--log-format",
            "json",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("node"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ravel node starts");
    let stderr = child.stderr.take().expect("stderr");
    let node = Node(child);
    // A new single-node cluster logs that it bootstraps, then that it leads.
    let (sender, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    let lines: Vec<String> = (0..2)
        .map_while(|_| lines.recv_timeout(Duration::from_secs(20)).ok())
        .collect();
    drop(node);
    assert_eq!(lines.len(), 2, "{lines:?}");
    for line in &lines {
        let entry: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        assert!(entry["level"].is_string(), "{line}");
        assert!(entry["fields"]["message"].is_string(), "{line}");
    }
}

/// `check-data` on a stopped node's directory: sound, with what it holds; refused while the
/// node runs; a byte flipped inside the log is named with its file and offset, exit 1; and the
/// check changes nothing (the node starts from the sound directory afterwards).
#[test]
fn check_data_verifies_a_stopped_nodes_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let data_arg = data.to_str().unwrap();
    let address = free_address();
    let node = start_node(&address, &data);
    for i in 0..50 {
        let put = ravel(&["put", &format!("k{i}"), "v", "--endpoints", &address]);
        assert!(put.status.success(), "{put:?}");
    }
    let in_use = ravel(&["check-data", data_arg]);
    assert_eq!(in_use.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&in_use.stderr).contains("in use"));
    drop(node);

    let report = json(&ravel(&["check-data", data_arg, "-w", "json"]));
    assert_eq!(report["sound"], true, "{report:#}");
    assert!(report["last_index"].as_u64().unwrap() >= 51, "{report:#}");
    assert_eq!(report["identity"]["node_id"], 1);
    let table = ravel(&["check-data", data_arg]);
    assert!(table.status.success());
    assert!(String::from_utf8_lossy(&table.stdout).contains("verdict:        sound"));

    // The node still starts from it and has every key.
    let node = start_node(&address, &data);
    let got = ravel(&["get", "k49", "--endpoints", &address]);
    assert_eq!(got.stdout, b"v");
    drop(node);

    let segment = report["segments"][0]["path"].as_str().unwrap().to_string();
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[200] ^= 0x01;
    std::fs::write(&segment, &bytes).unwrap();
    let damaged = ravel(&["check-data", data_arg]);
    assert_eq!(damaged.status.code(), Some(1));
    let text = String::from_utf8_lossy(&damaged.stdout);
    assert!(
        text.contains("PROBLEM") && text.contains(&segment) && text.contains("at byte"),
        "{text}"
    );
}
