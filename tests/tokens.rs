//! Client tokens with real `ravel` processes: a cluster started with `--auth-tokens` refuses a
//! request without a token or with an unknown one ("unauthenticated"), a read-only token's
//! writes ("permission denied"), serves each token what its rights allow, through the command
//! line and through a plain gRPC client at a follower (which passes the token on to the
//! leader with the request); and a malformed token file stops the node before anything is
//! written.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{free_address, ravel, said, wait_voter, RAVEL};
use ravel::client::Client;
use ravel::server::proto::ravel::{kv_client::KvClient, GetRequest, PutRequest};

const READER: &str = "reader-0123456789abcdef";
const WRITER: &str = "writer-0123456789abcdef";

struct NodeProcess(Child);

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(id: u64, address: &str, dir: &Path, extra: &[&str]) -> NodeProcess {
    let child = Command::new(RAVEL)
        .arg("node")
        .args(["--id", &id.to_string(), "--listen", address])
        .arg("--data-dir")
        .arg(dir.join(format!("node-{id}")))
        .args([
            "--election-timeout-min-ms",
            "300",
            "--election-timeout-max-ms",
            "600",
        ])
        .arg("--auth-tokens")
        .arg(dir.join("tokens"))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ravel starts");
    NodeProcess(child)
}

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {token}").parse().expect("a header value");
    request.metadata_mut().insert("authorization", value);
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_token_does_what_its_rights_allow_and_nothing_without_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path();
    std::fs::write(
        dir.join("tokens"),
        format!("# who may do what\n{READER} read-only\n{WRITER} read-write\n"),
    )
    .expect("write the token file");
    let addresses: Vec<String> = (0..3).map(|_| free_address()).collect();
    let mut nodes = vec![start(1, &addresses[0], dir, &[])];
    wait_voter(&addresses[0]).await;
    for id in 2..=3 {
        let address = &addresses[id as usize - 1];
        nodes.push(start(id, address, dir, &["--join", &addresses[0]]));
    }
    for address in &addresses {
        wait_voter(address).await;
    }
    let endpoints = addresses.join(",");

    let none = ravel(&["put", "k", "v", "--endpoints", &endpoints]);
    assert_eq!(none.status.code(), Some(5), "{}", said(&none));
    assert!(said(&none).contains("unauthenticated"), "{}", said(&none));
    let unknown = ravel(&[
        "put",
        "k",
        "v",
        "--endpoints",
        &endpoints,
        "--token",
        "guessed-0123456789abc",
    ]);
    assert_eq!(unknown.status.code(), Some(5), "{}", said(&unknown));
    assert!(
        said(&unknown).contains("not one this node accepts"),
        "{}",
        said(&unknown)
    );
    let reader_writes = ravel(&[
        "put",
        "k",
        "v",
        "--endpoints",
        &endpoints,
        "--token",
        READER,
    ]);
    assert_eq!(
        reader_writes.status.code(),
        Some(5),
        "{}",
        said(&reader_writes)
    );
    assert!(
        said(&reader_writes).contains("permission denied"),
        "{}",
        said(&reader_writes)
    );

    let written = ravel(&[
        "put",
        "k",
        "v",
        "--endpoints",
        &endpoints,
        "--token",
        WRITER,
    ]);
    assert!(written.status.success(), "{}", said(&written));
    let read = ravel(&["get", "k", "--endpoints", &endpoints, "--token", READER]);
    assert!(read.status.success(), "{}", said(&read));
    assert_eq!(read.stdout, b"v");
    let unread = ravel(&["get", "k", "--endpoints", &endpoints]);
    assert_eq!(unread.status.code(), Some(5), "{}", said(&unread));
    let members = ravel(&["members", "--endpoints", &endpoints]);
    assert_eq!(members.status.code(), Some(5), "{}", said(&members));
    let status = ravel(&["status", "--endpoints", &addresses[0]]);
    assert!(
        status.status.success(),
        "status needs no token: {}",
        said(&status)
    );

    // A backup holds every key: a read-write token's.
    let backup = dir.join("backup");
    let backup_arg = backup.to_str().expect("utf-8");
    let refused = ravel(&[
        "snapshot",
        "save",
        backup_arg,
        "--endpoints",
        &endpoints,
        "--token",
        READER,
    ]);
    assert_eq!(refused.status.code(), Some(5), "{}", said(&refused));
    assert!(!backup.exists());
    let saved = ravel(&[
        "snapshot",
        "save",
        backup_arg,
        "--endpoints",
        &endpoints,
        "--token",
        WRITER,
    ]);
    assert!(saved.status.success(), "{}", said(&saved));

    // A plain gRPC client at a follower: the follower checks the token, then serves the
    // request (a write travels on to the leader in Raft's own messages; a request relayed to
    // the leader over gRPC, when the follower cannot, carries the token along).
    let mut client = Client::new(addresses.clone());
    client.token = Some(READER.to_string());
    client
        .get("k".into(), false)
        .await
        .expect("a read with a read-only token");
    let leader = client.leader().expect("a leader").to_string();
    let follower = addresses
        .iter()
        .find(|a| **a != leader)
        .expect("a follower");
    let channel = ravel::server::connect(follower, Duration::from_secs(1))
        .await
        .expect("connect");
    let mut kv = KvClient::new(channel);
    let put = PutRequest {
        key: "via-follower".into(),
        value: "1".into(),
    };
    kv.put(with_token(put.clone(), WRITER))
        .await
        .expect("a write at a follower with a read-write token");
    let denied = kv
        .put(with_token(put, READER))
        .await
        .expect_err("read-only");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    let got = kv
        .get(with_token(
            GetRequest {
                key: "via-follower".into(),
                stale: false,
            },
            READER,
        ))
        .await
        .expect("a read at a follower with a read-only token");
    assert_eq!(&got.into_inner().value[..], b"1");
    let anonymous = kv
        .get(tonic::Request::new(GetRequest {
            key: "k".into(),
            stale: false,
        }))
        .await
        .expect_err("no token");
    assert_eq!(
        anonymous.code(),
        tonic::Code::Unauthenticated,
        "{anonymous:?}"
    );
    drop(nodes);
}

#[test]
fn a_malformed_token_file_stops_the_node_before_anything_is_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path();
    for (contents, expected) in [
        ("short read-write\n", "at least 16 characters"),
        (
            "long-enough-token-0123 admin\n",
            "neither read-only nor read-write",
        ),
        ("# nothing\n", "no tokens"),
    ] {
        std::fs::write(dir.join("tokens"), contents).expect("write");
        let data_dir = dir.join("never-written");
        let output = Command::new(RAVEL)
            .args(["node", "--listen", &free_address()])
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--auth-tokens")
            .arg(dir.join("tokens"))
            .output()
            .expect("ravel runs");
        assert_eq!(
            output.status.code(),
            Some(2),
            "{contents:?}: {}",
            said(&output)
        );
        assert!(
            said(&output).contains(expected),
            "{contents:?}: {}",
            said(&output)
        );
        assert!(
            !data_dir.exists(),
            "{contents:?}: the data directory was written"
        );
    }
}
