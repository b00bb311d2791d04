//! A sharded store secured end to end, as real processes: every process (the admin, the data
//! nodes) serves TLS only, peers authenticate with mutual TLS, and one token file is given to
//! all of them. Checks that the HTTP API and the metrics are served over TLS and refuse
//! plaintext; that the admin's HTTP API, its routing gRPC service and its operator commands
//! check tokens (401, 403, exit 5) and that a data node does too; and that the admin, with the
//! file's read-write token, still routes requests and moves partitions between groups (a group
//! retired, every key back from its new owner), and `ravel bench` runs over TLS with a token.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use common::{free_address, path, ravel, said, wait_for, Process, FAST};
use ravel::client::{Client, ClientError};
use ravel::routed_client::read_overview;
use ravel::server::proto::ravel::OverviewResponse;
use ravel::server::tls::{client_config, set_client_config};
use ravel::server::tls_certificates::{Authority, Subject};
use ravel::server::ApiError;

const WRITER: &str = "writer-token-0123456789";
const READER: &str = "reader-token-0123456789";

/// The files every process of the store is given.
struct Secrets {
    ca: PathBuf,
    server: (PathBuf, PathBuf),
    peer: (PathBuf, PathBuf),
    tokens: PathBuf,
}

impl Secrets {
    fn make(dir: &Path) -> Secrets {
        let authority = Authority::new("secured store CA").expect("a CA");
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, authority.cert_pem()).expect("write the CA");
        let issue = |name: &str, dns: &str| {
            authority
                .issue(&Subject {
                    dns_names: &[dns.to_string()],
                    ip_addresses: &[std::net::IpAddr::from([127, 0, 0, 1])],
                    expired: false,
                })
                .expect("a certificate")
                .write(dir, name)
                .expect("written")
        };
        let tokens = dir.join("tokens");
        std::fs::write(
            &tokens,
            format!("{WRITER} read-write\n{READER} read-only\n"),
        )
        .expect("write the tokens");
        Secrets {
            ca: ca.clone(),
            server: issue("server", "localhost"),
            peer: issue("peer", "ravel-store-peer"),
            tokens,
        }
    }

    fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = FAST.iter().map(|arg| arg.to_string()).collect();
        for (flag, file) in [
            ("--cert", &self.server.0),
            ("--key", &self.server.1),
            ("--ca", &self.ca),
            ("--peer-cert", &self.peer.0),
            ("--peer-key", &self.peer.1),
            ("--peer-ca", &self.ca),
            ("--auth-tokens", &self.tokens),
        ] {
            args.extend([flag.to_string(), path(file)]);
        }
        args
    }
}

fn overview(runtime: &tokio::runtime::Runtime, admin: &str) -> Option<OverviewResponse> {
    runtime
        .block_on(read_overview(&[admin.to_string()], Duration::from_secs(2)))
        .ok()
}

fn owned_by(overview: &OverviewResponse, group: u64) -> Option<u32> {
    (overview.groups.iter())
        .find(|info| info.id == group)
        .map(|info| info.partitions)
}

#[test]
fn a_sharded_store_served_over_tls_checks_tokens_everywhere_and_still_moves_partitions() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let secrets = Secrets::make(dir.path());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // This process reads the directory over TLS too.
    set_client_config(client_config(&secrets.ca, None).expect("a client configuration"));

    let (admin, api) = (free_address(), free_address());
    let mut args: Vec<String> = ["admin", "--id", "1", "--listen", &admin, "--http", &api]
        .iter()
        .map(|arg| arg.to_string())
        .collect();
    args.extend(
        [
            "--group-size",
            "1",
            "--initial-groups",
            "2",
            "--partitions",
            "32",
        ]
        .map(String::from),
    );
    args.extend(["--data-dir".to_string(), path(&dir.path().join("admin"))]);
    args.extend(secrets.args());
    let _admin = Process::start(&args, &dir.path().join("admin.log"));
    wait_for("the admin answers over TLS", 20, || {
        overview(&runtime, &admin).is_some()
    });

    let mut data = Vec::new();
    for n in 1..=2 {
        let (address, metrics) = (free_address(), free_address());
        let mut args: Vec<String> = ["node", "--admin", &admin, "--listen", &address]
            .iter()
            .map(|arg| arg.to_string())
            .collect();
        args.extend(["--metrics-listen".to_string(), metrics.clone()]);
        args.extend([
            "--data-dir".to_string(),
            path(&dir.path().join(format!("data-{n}"))),
        ]);
        args.extend(secrets.args());
        let log = dir.path().join(format!("data-{n}.log"));
        data.push((address, metrics, Process::start(&args, &log)));
    }
    wait_for("two groups with a leader each", 30, || {
        overview(&runtime, &admin).is_some_and(|overview| {
            overview.groups.len() == 2
                && overview.groups.iter().all(|group| group.leader_id != 0)
                && overview.groups.iter().all(|group| group.partitions > 0)
        })
    });

    // The HTTP API, over TLS only, checking the admin's tokens.
    let https = |method: &str, path: &str, body: &str, token: Option<&str>| {
        runtime
            .block_on(common::https(&secrets.ca, &api, method, path, body, token))
            .unwrap_or_else(|error| panic!("{method} {path}: {error}"))
    };
    let put = |key: &str, token| {
        https(
            "POST",
            "/put",
            &format!(r#"{{"key":"{key}","val":1}}"#),
            token,
        )
    };
    assert_eq!(put("k", None).code, 401, "a write without a token");
    assert_eq!(put("k", Some("not-a-token-of-this-store")).code, 401);
    assert_eq!(
        put("k", Some(READER)).code,
        403,
        "a write with a read-only token"
    );
    for i in 0..40 {
        let answer = put(&format!("key-{i}"), Some(WRITER));
        assert_eq!(answer.code, 200, "key-{i}: {answer:?}");
    }
    let got = https("POST", "/get", r#"{"key":"key-7"}"#, Some(READER));
    assert_eq!(
        (got.code, got.body.as_str()),
        (200, r#"{"key":"key-7","val":1}"#)
    );
    assert_eq!(
        https("GET", "/v1/status", "", None).code,
        200,
        "the status needs no token"
    );
    let plaintext = common::http(&api, "GET", "/v1/status", "", None);
    assert_eq!(
        plaintext.code, 0,
        "plaintext HTTP to a TLS port: {plaintext:?}"
    );

    // Metrics over TLS too.
    let (_, metrics, _) = &data[0];
    let scraped = runtime
        .block_on(common::https(
            &secrets.ca,
            metrics,
            "GET",
            "/metrics",
            "",
            None,
        ))
        .expect("metrics over TLS");
    assert_eq!(scraped.code, 200);
    assert!(
        scraped.body.contains("ravel_has_leader{group=\""),
        "{}",
        scraped.body
    );
    assert_eq!(common::http(metrics, "GET", "/metrics", "", None).code, 0);

    // The admin's gRPC front door checks tokens as its HTTP API does, and a data node checks
    // them itself: nobody goes around the admin.
    let put_at = |address: &str, token: Option<&str>| {
        let mut client = Client::new(vec![address.to_string()]);
        client.timeout = Duration::from_secs(5);
        client.token = token.map(str::to_string);
        runtime.block_on(client.put(Bytes::from("key-0"), Bytes::from("2")))
    };
    for address in [&admin, &data[0].0] {
        assert!(
            matches!(
                put_at(address, None),
                Err(ClientError::Api(ApiError::Unauthenticated(_)))
            ),
            "{address} took a write without a token"
        );
        assert!(
            matches!(
                put_at(address, Some(READER)),
                Err(ClientError::Api(ApiError::PermissionDenied(_)))
            ),
            "{address} took a write with a read-only token"
        );
    }
    put_at(&admin, Some(WRITER)).expect("a routed write with a read-write token");

    // The command line: routed through the admin's table, each call checked.
    let ca = path(&secrets.ca);
    let cli = |args: &[&str], token: &str| {
        let mut all = args.to_vec();
        all.extend(["--admin", &admin, "--cacert", &ca, "--token", token]);
        ravel(&all)
    };
    let refused = cli(&["put", "cli-key", "v"], READER);
    assert_eq!(refused.status.code(), Some(5), "{}", said(&refused));
    let written = cli(&["put", "cli-key", "v"], WRITER);
    assert!(written.status.success(), "{}", said(&written));
    let read = cli(&["get", "cli-key"], READER);
    assert_eq!(
        String::from_utf8_lossy(&read.stdout).trim(),
        "v",
        "{}",
        said(&read)
    );

    // Moving partitions: the admin calls the data nodes with the file's read-write token.
    let before = overview(&runtime, &admin).expect("the directory");
    let retired = before
        .groups
        .iter()
        .map(|group| group.id)
        .max()
        .expect("a group");
    let kept = before
        .groups
        .iter()
        .map(|group| group.id)
        .min()
        .expect("a group");
    let denied = cli(&["retire-group", &retired.to_string()], READER);
    assert_eq!(denied.status.code(), Some(5), "{}", said(&denied));
    assert!(said(&denied).contains("read-write"), "{}", said(&denied));
    let retiring = cli(&["retire-group", &retired.to_string()], WRITER);
    assert!(retiring.status.success(), "{}", said(&retiring));
    wait_for("the retired group's partitions moved", 60, || {
        overview(&runtime, &admin).is_some_and(|overview| {
            owned_by(&overview, retired) == Some(0)
                && owned_by(&overview, kept) == Some(32)
                && overview.moves.is_empty()
        })
    });
    for i in 0..40 {
        let got = https(
            "POST",
            "/get",
            &format!(r#"{{"key":"key-{i}"}}"#),
            Some(READER),
        );
        assert_eq!(got.code, 200, "key-{i} after the moves: {got:?}");
    }

    // The bench, over TLS with a token.
    let bench = cli(&["bench", "--duration", "1", "--clients", "4"], WRITER);
    assert!(bench.status.success(), "{}", said(&bench));
    assert!(said(&bench).contains(" 0 errors"), "{}", said(&bench));
}
