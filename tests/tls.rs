//! TLS and mutual TLS with real `ravel` processes: a cluster whose every connection is TLS and
//! whose peers authenticate each other, and what it must refuse, each named to the caller and
//! in the log: a plaintext client, a client trusting another CA, a joiner with another CA's
//! certificate, with none, or with another node's; an expired certificate; certificates
//! renewed on disk taken without a restart; and bad TLS settings refused before anything is
//! written.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{free_address, path, ravel, said, wait_voter, RAVEL};
use ravel::client::Client;
use ravel::server::tls::{client_config, node_name, set_client_config};
use ravel::server::tls_certificates::{Authority, Subject};
use tokio::time::sleep;

struct NodeProcess {
    child: Child,
    log: PathBuf,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl NodeProcess {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The files one node uses.
struct NodeFiles {
    server: (PathBuf, PathBuf),
    peer: Option<(PathBuf, PathBuf)>,
}

struct Pki {
    dir: PathBuf,
    ca: Authority,
    ca_file: PathBuf,
}

impl Pki {
    fn new(dir: &Path, name: &str) -> Pki {
        let ca = Authority::new(name).expect("a CA");
        let ca_file = dir.join(format!("{name}.pem"));
        std::fs::write(&ca_file, ca.cert_pem()).expect("write the CA");
        Pki {
            dir: dir.to_path_buf(),
            ca,
            ca_file,
        }
    }

    fn issue(&self, file: &str, dns: &[String], expired: bool) -> (PathBuf, PathBuf) {
        self.ca
            .issue(&Subject {
                dns_names: dns,
                ip_addresses: &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
                expired,
            })
            .expect("a certificate")
            .write(&self.dir, file)
            .expect("written")
    }

    /// A server certificate for 127.0.0.1 and a peer certificate naming node `id`.
    fn node(&self, id: u64) -> NodeFiles {
        NodeFiles {
            server: self.issue(&format!("server-{id}"), &["localhost".to_string()], false),
            peer: Some(self.issue(&format!("peer-{id}"), &[node_name(id)], false)),
        }
    }
}

fn node_command(
    id: u64,
    address: &str,
    dir: &Path,
    files: &NodeFiles,
    ca: &Path,
    extra: &[&str],
) -> Command {
    let mut command = Command::new(RAVEL);
    command
        .arg("node")
        .args(["--id", &id.to_string(), "--listen", address])
        .args(["--data-dir", &path(&dir.join(format!("node-{id}")))])
        .args([
            "--election-timeout-min-ms",
            "300",
            "--election-timeout-max-ms",
            "600",
        ])
        .args([
            "--cert",
            &path(&files.server.0),
            "--key",
            &path(&files.server.1),
        ])
        .args([
            "--ca",
            &path(ca),
            "--peer-ca",
            &path(ca),
            "--peer-cert-names-node",
        ])
        .args(extra)
        .stdin(Stdio::null());
    if let Some((cert, key)) = &files.peer {
        command.args(["--peer-cert", &path(cert), "--peer-key", &path(key)]);
    }
    command
}

fn start(
    id: u64,
    address: &str,
    dir: &Path,
    files: &NodeFiles,
    ca: &Path,
    extra: &[&str],
) -> NodeProcess {
    let log = dir.join(format!("node-{id}-{}.log", address.replace(':', "-")));
    let child = node_command(id, address, dir, files, ca, extra)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("ravel starts");
    NodeProcess { child, log }
}

async fn voters(address: &str) -> usize {
    let mut client = Client::new(vec![address.to_string()]);
    client.timeout = Duration::from_secs(5);
    let members = client.members().await.expect("members");
    members
        .members
        .iter()
        .filter(|member| member.role == "voter")
        .count()
}

/// Waits `seconds` for `log` to say `what`.
async fn wait_logged(node: &NodeProcess, what: &str, seconds: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let log = node.log();
        if log.contains(what) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "the log never said {what:?}:\n{log}"
        );
        sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_serves_and_refuses_what_it_must() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path();
    let pki = Pki::new(dir, "cluster-ca");
    let other = Pki::new(dir, "other-ca");
    set_client_config(client_config(&pki.ca_file, None).expect("client config"));

    let addresses: Vec<String> = (0..3).map(|_| free_address()).collect();
    let mut nodes = vec![start(
        1,
        &addresses[0],
        dir,
        &pki.node(1),
        &pki.ca_file,
        &[],
    )];
    wait_voter(&addresses[0]).await;
    for id in 2..=3 {
        let join = ["--join", addresses[0].as_str()];
        let address = &addresses[id as usize - 1];
        nodes.push(start(id, address, dir, &pki.node(id), &pki.ca_file, &join));
    }
    for address in &addresses {
        wait_voter(address).await;
    }
    let mut client = Client::new(addresses.clone());
    client.timeout = Duration::from_secs(10);
    client
        .put(Bytes::from("k"), Bytes::from("v"))
        .await
        .expect("a write over TLS");
    let leader = client.leader().expect("a leader").to_string();
    let leader_node = &nodes[addresses.iter().position(|a| *a == leader).unwrap()];

    // The command line with the CA reads; without it, it is told to give one, and the node
    // logs a plaintext client; trusting another CA, it is told the issuer is unknown.
    let ca = path(&pki.ca_file);
    let read = ravel(&["get", "k", "--endpoints", &leader, "--cacert", &ca]);
    assert!(read.status.success(), "{}", said(&read));
    assert_eq!(read.stdout, b"v");
    let plain = ravel(&["get", "k", "--endpoints", &leader, "--timeout", "2"]);
    assert_eq!(plain.status.code(), Some(3), "{}", said(&plain));
    assert!(said(&plain).contains("--cacert"), "{}", said(&plain));
    wait_logged(
        leader_node,
        "does the client speak plaintext to this TLS port",
        5,
    )
    .await;
    let wrong_ca = path(&other.ca_file);
    let distrusted = ravel(&[
        "get",
        "k",
        "--endpoints",
        &leader,
        "--timeout",
        "2",
        "--cacert",
        &wrong_ca,
    ]);
    assert_eq!(distrusted.status.code(), Some(3), "{}", said(&distrusted));
    assert!(
        said(&distrusted).contains("UnknownIssuer"),
        "{}",
        said(&distrusted)
    );

    // Joiners the cluster must not admit: each stays out, and why is logged.
    let joiners = [
        // A peer certificate from another CA: refused in the handshake.
        (
            4,
            NodeFiles {
                server: pki.issue("server-4", &["localhost".to_string()], false),
                peer: Some(other.issue("peer-4-other", &[node_name(4)], false)),
            },
            "UnknownCA",
        ),
        // No peer certificate: refused by the membership service.
        (
            5,
            NodeFiles {
                server: pki.issue("server-5", &["localhost".to_string()], false),
                peer: None,
            },
            "need a client certificate",
        ),
        // Another node's certificate: refused as not naming the joiner.
        (
            6,
            NodeFiles {
                server: pki.issue("server-6", &["localhost".to_string()], false),
                peer: Some(pki.issue("peer-6-as-2", &[node_name(2)], false)),
            },
            "does not name node 6",
        ),
    ];
    for (id, files, why) in &joiners {
        let address = free_address();
        let joiner = start(
            *id,
            &address,
            dir,
            files,
            &pki.ca_file,
            &["--join", &leader],
        );
        wait_logged(&joiner, why, 10).await;
        assert_eq!(voters(&leader).await, 3, "node {id} was admitted");
    }

    // An expired server certificate: clients are told so.
    let expired_files = NodeFiles {
        server: pki.issue("server-7-expired", &["localhost".to_string()], true),
        peer: Some(pki.issue("peer-7", &[node_name(7)], false)),
    };
    let expired_address = free_address();
    let _expired = start(7, &expired_address, dir, &expired_files, &pki.ca_file, &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = ravel(&[
            "status",
            "--endpoints",
            &expired_address,
            "--timeout",
            "1",
            "--cacert",
            &ca,
        ]);
        if said(&status).contains("certificate expired") {
            assert_eq!(status.status.code(), Some(3), "{}", said(&status));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never told of the expired certificate: {}",
            said(&status)
        );
        sleep(Duration::from_millis(200)).await;
    }

    // Renewed on disk, by another CA: the node serves the new certificate without a restart.
    let renewed = other
        .ca
        .issue(&Subject {
            dns_names: &["localhost".to_string()],
            ip_addresses: &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
            expired: false,
        })
        .expect("a certificate");
    std::fs::write(&expired_files.server.1, &renewed.key_pem).expect("write key");
    std::fs::write(&expired_files.server.0, &renewed.cert_pem).expect("write cert");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = ravel(&[
            "status",
            "--endpoints",
            &expired_address,
            "--timeout",
            "1",
            "--cacert",
            &wrong_ca,
        ]);
        if status.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was not taken: {}",
            said(&status)
        );
        sleep(Duration::from_millis(200)).await;
    }
    drop(nodes);
}

#[test]
fn tls_settings_are_checked_before_anything_is_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path();
    let pki = Pki::new(dir, "ca");
    let files = pki.node(1);
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").expect("write");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--cert".into(), path(&files.server.0)],
            "--cert, --key and --ca together",
        ),
        (
            vec![
                "--cert".into(),
                path(&garbage),
                "--key".into(),
                path(&files.server.1),
                "--ca".into(),
                path(&pki.ca_file),
            ],
            "holds no PEM certificate",
        ),
        (
            vec![
                "--cert".into(),
                path(&files.server.0),
                "--key".into(),
                path(&files.peer.as_ref().unwrap().1),
                "--ca".into(),
                path(&pki.ca_file),
            ],
            "do not make a certificate and its key",
        ),
    ];
    for (args, expected) in cases {
        let data_dir = dir.join("never-written");
        let output = Command::new(RAVEL)
            .args([
                "node",
                "--listen",
                &free_address(),
                "--data-dir",
                &path(&data_dir),
            ])
            .args(&args)
            .output()
            .expect("ravel runs");
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", said(&output));
        assert!(
            said(&output).contains(expected),
            "{args:?}: {}",
            said(&output)
        );
        assert!(
            !data_dir.exists(),
            "{args:?}: the data directory was written"
        );
    }
}
