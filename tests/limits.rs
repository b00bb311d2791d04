//! Limits on what a client controls, against a real `ravel node` process: the connections it
//! serves at once, and the size of a value (answered with Ravel's own error, not gRPC's).

use std::io::Read;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ravel::client::{Client, ClientError};
use ravel::server::ApiError;

mod common;

use common::{free_address, RAVEL};

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(address: &str, dir: &std::path::Path, extra: &[&str]) -> Node {
    Node(
        Command::new(RAVEL)
            .args(["node", "--listen", address])
            .arg("--data-dir")
            .arg(dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ravel starts"),
    )
}

/// Starts a node on a port that was free a moment ago; if another process took it meanwhile (the
/// node exits at once: it binds before touching its data directory), tries another. A port
/// picked by binding port 0 and closing it can be handed to someone else's outgoing connection
/// before the node binds it: this test once waited 20 s on a node that never listened.
fn start_on_a_free_port(dir: &std::path::Path, extra: &[&str]) -> (Node, String) {
    for _ in 0..5 {
        let address = free_address();
        let mut node = start(&address, dir, extra);
        std::thread::sleep(Duration::from_millis(300));
        if node.0.try_wait().expect("status").is_none() {
            return (node, address);
        }
    }
    panic!("no node stayed up on five free ports in a row");
}

async fn put_within(client: &mut Client, within: Duration) -> Result<u64, ClientError> {
    let deadline = Instant::now() + within;
    loop {
        match client.put(Bytes::from("k"), Bytes::from("v")).await {
            Ok(index) => return Ok(index),
            Err(error) if Instant::now() > deadline => return Err(error),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_closed_and_the_rest_served() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, address) = start_on_a_free_port(dir.path(), &["--connections-max", "4"]);
    let mut client = Client::new(vec![address.clone()]);
    client.timeout = Duration::from_secs(2);
    put_within(&mut client, Duration::from_secs(20))
        .await
        .expect("serves");
    drop(client);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Four idle connections take every place.
    let held: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(&address).expect("connects"))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut extra = TcpStream::connect(&address).expect("the kernel accepts it");
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert_eq!(extra.read(&mut byte).expect("closed, not timed out"), 0);
    let mut client = Client::new(vec![address.clone()]);
    client.timeout = Duration::from_secs(1);
    assert!(client
        .put(Bytes::from("k"), Bytes::from("v"))
        .await
        .is_err());
    // A place frees up: served again.
    drop(held);
    let mut client = Client::new(vec![address.clone()]);
    client.timeout = Duration::from_secs(2);
    put_within(&mut client, Duration::from_secs(10))
        .await
        .expect("served once a connection closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_too_large_gets_ravels_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, address) = start_on_a_free_port(dir.path(), &[]);
    let mut client = Client::new(vec![address.clone()]);
    put_within(&mut client, Duration::from_secs(20))
        .await
        .expect("serves");
    // 100 MB: Ravel's client says what the limit is instead of gRPC's "message too large".
    let huge = Bytes::from(vec![b'x'; 100 << 20]);
    match client.put(Bytes::from("big"), huge).await {
        Err(ClientError::Api(ApiError::TooLarge(message))) => {
            assert!(message.contains("at most 1048576"), "{message}");
        }
        other => panic!("a 100 MB value: {other:?}"),
    }
    // Just over the limit, through a plain gRPC client: the node says the same.
    let mut plain =
        ravel::server::proto::ravel::kv_client::KvClient::connect(format!("http://{address}"))
            .await
            .expect("connects");
    let status = plain
        .put(ravel::server::proto::ravel::PutRequest {
            key: Bytes::from("big"),
            value: Bytes::from(vec![b'x'; (1 << 20) + 1]),
        })
        .await
        .expect_err("refused");
    assert!(status.message().contains("at most 1048576"), "{status:?}");
}
