//! The sharded store from outside, as real processes on loopback: an admin group of three
//! (`ravel admin`, two of them serving the HTTP API) and data nodes that get their id and group
//! from it (`ravel node --admin`). Checks the HTTP API (every JSON type back as sent, each error
//! code, 503 before any group exists), a new node landing in a new group once the others are
//! full, and `kill -9` of the admin's leader and of a group's leader under load through the
//! HTTP API: requests resume, and every acknowledged write is there at the end.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{free_address, wait_for, Process, FAST, RAVEL};
use ravel::client::{Client, ClientError};
use ravel::routed_client::read_overview;
use ravel::server::proto::ravel::OverviewResponse;
use ravel::server::ApiError;
use ravel::sharding::partition_of;

/// Starts `ravel ARGS --data-dir DIR` with short Raft timings, logging to `DIR.log`.
fn start(args: &[String], data_dir: &Path) -> Process {
    let mut args = args.to_vec();
    args.extend(["--data-dir".to_string(), common::path(data_dir)]);
    args.extend(FAST.iter().map(|arg| arg.to_string()));
    Process::start(&args, &data_dir.with_extension("log"))
}

/// `POST path body` (or GET with no body); the status code and the body.
fn request(address: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let (code, _, body) = request_with_head(address, method, path, body);
    (code, body)
}

/// As [`request`], with the response's head (status line and headers) too.
fn request_with_head(address: &str, method: &str, path: &str, body: &str) -> (u16, String, String) {
    let attempt = || -> std::io::Result<(u16, String, String)> {
        let mut stream = std::net::TcpStream::connect(address)?;
        stream.set_read_timeout(Some(Duration::from_secs(15)))?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let code = response
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        let (head, body) = response
            .split_once("\r\n\r\n")
            .map(|(head, body)| (head.to_string(), body.to_string()))
            .unwrap_or_default();
        Ok((code, head, body))
    };
    attempt().unwrap_or((0, String::new(), String::new()))
}

fn post(address: &str, path: &str, body: &str) -> (u16, String) {
    request(address, "POST", path, body)
}

fn read_directory(runtime: &tokio::runtime::Runtime, admin: &[String]) -> Option<OverviewResponse> {
    runtime
        .block_on(read_overview(admin, Duration::from_secs(2)))
        .ok()
}

/// Four threads writing through the HTTP API until stopped, each write's key and JSON value
/// from `write(writer, round)`. Acknowledged writes are recorded (a key whose later write
/// failed is left out: its outcome is unknown), and failures with their time, code and body.
struct HttpWriters {
    successes: Arc<AtomicU64>,
    acknowledged: Arc<Mutex<BTreeMap<String, String>>>,
    failures: Arc<Mutex<Failures>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

type Failures = Vec<(Instant, u16, String)>;

impl HttpWriters {
    fn start(api: &str, write: fn(u64, u64) -> (String, String)) -> Self {
        let writers = HttpWriters {
            successes: Arc::default(),
            acknowledged: Arc::default(),
            failures: Arc::default(),
            stop: Arc::default(),
            threads: Vec::new(),
        };
        let threads = (0..4)
            .map(|writer| {
                let (api, acknowledged, stop, failures, successes) = (
                    api.to_string(),
                    writers.acknowledged.clone(),
                    writers.stop.clone(),
                    writers.failures.clone(),
                    writers.successes.clone(),
                );
                std::thread::spawn(move || {
                    let mut round = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        round += 1;
                        let (key, value) = write(writer, round);
                        let (code, body) =
                            post(&api, "/put", &format!(r#"{{"key":"{key}","val":{value}}}"#));
                        if code == 200 {
                            acknowledged.lock().unwrap().insert(key, value);
                            successes.fetch_add(1, Ordering::Relaxed);
                        } else {
                            acknowledged.lock().unwrap().remove(&key);
                            failures.lock().unwrap().push((Instant::now(), code, body));
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                })
            })
            .collect();
        HttpWriters { threads, ..writers }
    }

    /// Stops the writers; what they had acknowledged, and their failures.
    fn stop(self) -> (BTreeMap<String, String>, Failures) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().expect("the writer ran");
        }
        let acknowledged = std::mem::take(&mut *self.acknowledged.lock().unwrap());
        let failures = std::mem::take(&mut *self.failures.lock().unwrap());
        (acknowledged, failures)
    }
}

struct Store {
    dir: PathBuf,
    admin: Vec<String>,
    admins: Vec<Process>,
    /// HTTP addresses of admins 1 and 2.
    http: Vec<String>,
    data: Vec<(String, Process)>,
    runtime: tokio::runtime::Runtime,
}

impl Store {
    /// An admin group of three (the first two serving the HTTP API), placing the table once
    /// two groups exist; no data node yet.
    fn start(dir: &Path) -> Store {
        let admin: Vec<String> = (0..3).map(|_| free_address()).collect();
        let http: Vec<String> = (0..2).map(|_| free_address()).collect();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut admins = Vec::new();
        for id in 1..=3usize {
            let mut args: Vec<String> = vec![
                "admin".into(),
                "--id".into(),
                id.to_string(),
                "--listen".into(),
                admin[id - 1].clone(),
                "--initial-groups".into(),
                "2".into(),
            ];
            if id <= 2 {
                args.extend(["--http".into(), http[id - 1].clone()]);
            }
            if id > 1 {
                args.extend(["--join".into(), admin[0].clone()]);
            }
            admins.push(start(&args, &dir.join(format!("admin-{id}"))));
            if id == 1 {
                wait_for("the admin's first replica answers", 20, || {
                    read_directory(&runtime, &admin[..1]).is_some()
                });
            }
        }
        Store {
            dir: dir.to_path_buf(),
            admin,
            admins,
            http,
            data: Vec::new(),
            runtime,
        }
    }

    fn start_data_node(&mut self) -> String {
        let address = free_address();
        let n = self.data.len() + 1;
        let args: Vec<String> = [
            "node",
            "--admin",
            &self.admin.join(","),
            "--listen",
            &address,
        ]
        .iter()
        .map(|arg| arg.to_string())
        .collect();
        let process = start(&args, &self.dir.join(format!("data-{n}")));
        self.data.push((address.clone(), process));
        address
    }

    /// `ravel ARGS --admin ...` against this store's admin.
    fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(RAVEL)
            .args(args)
            .args(["--admin", &self.admin.join(",")])
            .output()
            .expect("ravel runs")
    }

    /// `kill -9` of the data node the directory lists as server `id`.
    fn kill_server(&mut self, overview: &OverviewResponse, id: u64) {
        let address = overview
            .servers
            .iter()
            .find(|server| server.id == id)
            .map(|server| server.address.clone())
            .expect("a server of the directory");
        let index = self
            .data
            .iter()
            .position(|(ours, _)| *ours == address)
            .expect("a data node of ours");
        self.data[index].1.kill();
    }

    fn overview(&self) -> Option<OverviewResponse> {
        read_directory(&self.runtime, &self.admin)
    }

    /// Waits until every group with members has a leader the admin knows.
    fn wait_leaders(&self, groups: usize) {
        wait_for("every group has a leader", 30, || {
            self.overview().is_some_and(|overview| {
                overview.groups.len() == groups
                    && overview.groups.iter().all(|group| group.leader_id != 0)
            })
        });
    }
}

#[test]
fn the_sharded_store_serves_http_routes_keys_and_survives_kill_9_of_leaders() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut store = Store::start(dir.path());
    let api = store.http[1].clone();
    // No group yet: no key has an owner.
    wait_for("the HTTP API answers", 20, || {
        request(&api, "GET", "/v1/status", "").0 == 200
    });
    let (code, head, body) = request_with_head(&api, "POST", "/put", r#"{"key":"early","val":1}"#);
    assert_eq!(code, 503, "{body}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "a 503 says when to retry: {head}"
    );
    assert!(body.contains("no data group exists yet"), "{body}");

    // Two groups of three.
    for _ in 0..6 {
        store.start_data_node();
    }
    store.wait_leaders(2);
    let overview = store.overview().expect("the admin answers");
    let placed: Vec<u32> = overview
        .groups
        .iter()
        .map(|group| group.partitions)
        .collect();
    assert_eq!(placed.iter().sum::<u32>(), 271, "{overview:?}");
    assert!(
        placed.iter().all(|&count| count <= 170),
        "bounded loads: {placed:?}"
    );
    for group in &overview.groups {
        assert_eq!(group.members.len(), 3, "{overview:?}");
    }

    // A group refuses a key it does not own, with the partition (a typed redirect), once it
    // has claimed its own partitions.
    let group_1: Vec<String> = overview
        .servers
        .iter()
        .filter(|server| server.group_id == 1)
        .map(|server| server.address.clone())
        .collect();
    let foreign = (0..)
        .map(|i| format!("foreign-{i}"))
        .find(|key| {
            let partition = partition_of(key.as_bytes(), overview.partitions);
            overview.owners[partition as usize].group_id == 2
        })
        .expect("group 2 owns some keys");
    let mut direct = Client::new(group_1);
    let refused = store.runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let result = direct
                .put(Bytes::from(foreign.clone()), Bytes::from_static(b"1"))
                .await;
            if result.is_err() || Instant::now() > deadline {
                break result;
            }
            // Accepted: group 1 has not claimed its partitions yet; the key is not group 2's
            // either, so this cannot go on.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    match refused {
        Err(ClientError::Api(ApiError::NotOwned { partition, epoch })) => {
            assert_eq!(
                partition,
                partition_of(foreign.as_bytes(), overview.partitions)
            );
            assert_eq!(epoch, 0);
        }
        other => panic!("group 1 took group 2's key: {other:?}"),
    }

    // Every JSON type comes back as it was sent.
    for (i, value) in [
        r#""text""#,
        "12345678901234567890123456789",
        "-0.5e-7",
        "true",
        "null",
        r#"[1,"two",{"three":[3]}]"#,
        r#"{"nested":{"deeper":[null,false]}}"#,
    ]
    .iter()
    .enumerate()
    {
        let (code, body) = post(&api, "/put", &format!(r#"{{"key":"k{i}","val":{value}}}"#));
        assert_eq!((code, body.as_str()), (200, r#"{"msg":"ok"}"#));
        let (code, body) = post(&store.http[0], "/get", &format!(r#"{{"key":"k{i}"}}"#));
        assert_eq!(code, 200, "{body}");
        assert_eq!(body, format!(r#"{{"key":"k{i}","val":{value}}}"#));
    }
    let (code, _) = post(&api, "/delete", r#"{"key":"k0"}"#);
    assert_eq!(code, 200);
    let (code, body) = post(&api, "/get", r#"{"key":"k0"}"#);
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("not found"), "{body}");

    // The error codes.
    let long_key = "k".repeat(5000);
    for (path, request, code, says) in [
        ("/put", "{not json".to_string(), 400, "not a JSON object"),
        ("/put", r#"{"val":1}"#.to_string(), 400, "no \\\"key\\\""),
        ("/put", r#"{"key":"","val":1}"#.to_string(), 400, "empty"),
        (
            "/get",
            format!(r#"{{"key":"{long_key}"}}"#),
            400,
            "at most 4096",
        ),
        ("/nowhere", "{}".to_string(), 404, "no endpoint"),
    ] {
        let (got, body) = post(&api, path, &request);
        assert_eq!(got, code, "{path} {body}");
        assert!(body.starts_with(r#"{"error":"#), "{body}");
        assert!(body.contains(says), "{body} should say {says}");
    }
    let huge = format!(r#"{{"key":"big","val":"{}"}}"#, "v".repeat(1 << 20));
    let (code, body) = post(&api, "/put", &huge);
    assert_eq!(code, 400, "{body}");
    let (code, _) = request(&api, "GET", "/put", "");
    assert_eq!(code, 405);
    let (code, page) = request(&api, "GET", "/", "");
    assert_eq!(code, 200);
    assert!(page.contains("Ravel sharded store") && page.contains("<table id=\"groups\">"));

    // The CLI routes for itself with --admin, and lists the groups as JSON.
    let cli = |args: &[&str]| {
        let output = store.cli(args);
        assert!(output.status.success(), "ravel {args:?}: {output:?}");
        String::from_utf8(output.stdout).expect("utf-8")
    };
    cli(&["put", "cli-key", "cli-value"]);
    // To a pipe, exactly the value's bytes.
    assert_eq!(cli(&["get", "cli-key"]), "cli-value");
    let (code, body) = post(&api, "/get", r#"{"key":"cli-key"}"#);
    assert_eq!(
        (code, body.as_str()),
        (200, r#"{"key":"cli-key","val":"cli-value"}"#)
    );
    let groups: serde_json::Value =
        serde_json::from_str(&cli(&["groups", "-w", "json"])).expect("JSON");
    assert_eq!(groups["partitions"], 271);
    assert_eq!(
        groups["groups"].as_array().map(Vec::len),
        Some(2),
        "{groups}"
    );

    // The admin's own address serves the key-value service too, routing every request.
    let mut front_door = Client::new(store.admin.clone());
    store.runtime.block_on(async {
        for i in 0..20 {
            let key = Bytes::from(format!("front-{i}"));
            front_door
                .put(key.clone(), Bytes::from(format!("v{i}")))
                .await
                .expect("put through the admin");
            let value = front_door.get(key.clone(), false).await.expect("get");
            assert_eq!(value, Some(Bytes::from(format!("v{i}"))));
        }
        let key = Bytes::from_static(b"front-0");
        let swapped = front_door
            .compare_and_swap(
                key.clone(),
                Some(Bytes::from_static(b"v0")),
                Bytes::from_static(b"w0"),
            )
            .await
            .expect("cas");
        assert_eq!(swapped, (true, Some(Bytes::from_static(b"v0"))));
        assert!(front_door.delete(key.clone()).await.expect("delete"));
        assert_eq!(front_door.get(key, false).await.expect("get"), None);
    });

    // Both groups full: a seventh node starts group 3.
    store.start_data_node();
    store.wait_leaders(3);
    let overview = store.overview().expect("the admin answers");
    let newest = overview.servers.iter().map(|server| server.id).max();
    let group_3 = overview.groups.iter().find(|group| group.id == 3);
    assert_eq!(
        group_3.map(|group| group.members.clone()),
        newest.map(|id| vec![id]),
        "{overview:?}"
    );

    // Leaving through the admin: group 3's only member (its group owns nothing), then a
    // follower of group 2, which leaves the group's Raft configuration too.
    let leave = |node: u64| {
        let output = Command::new(RAVEL)
            .args([
                "leave",
                &node.to_string(),
                "--admin",
                &store.admin.join(","),
            ])
            .output()
            .expect("ravel leave runs");
        let said = String::from_utf8_lossy(&output.stdout).to_string()
            + &String::from_utf8_lossy(&output.stderr);
        (output.status.success(), said)
    };
    let lone = newest.expect("a seventh server");
    let (left, said) = leave(lone);
    assert!(left && said.contains("no members left"), "{said}");
    let group_2 = overview
        .groups
        .iter()
        .find(|group| group.id == 2)
        .expect("group 2")
        .clone();
    let follower = *group_2
        .members
        .iter()
        .find(|&&member| member != group_2.leader_id)
        .expect("a follower");
    let (left, said) = leave(follower);
    assert!(left, "{said}");
    let (left, said) = leave(follower);
    assert!(
        !left && said.contains("not a server"),
        "a second leave: {said}"
    );
    let overview = store.overview().expect("the admin answers");
    let members_2 = &overview
        .groups
        .iter()
        .find(|group| group.id == 2)
        .expect("group 2")
        .members;
    assert_eq!(members_2.len(), 2, "{overview:?}");
    assert!(!members_2.contains(&follower));
    assert!(overview
        .servers
        .iter()
        .all(|server| server.id != follower && server.id != lone));
    let group_2_addresses: Vec<String> = overview
        .servers
        .iter()
        .filter(|server| server.group_id == 2)
        .map(|server| server.address.clone())
        .collect();
    let raft_members = store
        .runtime
        .block_on(Client::new(group_2_addresses).members())
        .expect("group 2 answers");
    let ids: Vec<u64> = raft_members
        .members
        .iter()
        .map(|member| member.id)
        .collect();
    assert_eq!(ids.len(), 2, "group 2's configuration: {raft_members:?}");
    assert!(
        !ids.contains(&follower),
        "group 2's configuration: {raft_members:?}"
    );

    // Load through the HTTP API while the admin's leader, then a group's leader, are killed;
    // through an admin replica that is not the leader (the other keeps serving).
    let admin_leader = store.overview().expect("answers").admin_leader_id as usize;
    assert!((1..=3).contains(&admin_leader));
    let api = if admin_leader == 2 {
        store.http[0].clone()
    } else {
        store.http[1].clone()
    };
    let load = HttpWriters::start(&api, |writer, round| {
        (format!("load-{writer}-{}", round % 50), round.to_string())
    });
    let succeeded = || load.successes.load(Ordering::Relaxed);
    wait_for("writes are acknowledged", 20, || succeeded() > 20);

    store.admins[admin_leader - 1].kill();
    let survivors: Vec<String> = (1..=3)
        .filter(|&id| id != admin_leader)
        .map(|id| store.admin[id - 1].clone())
        .collect();
    wait_for("the admin elects a new leader", 30, || {
        read_directory(&store.runtime, &survivors).is_some_and(|overview| {
            overview.admin_leader_id != 0 && overview.admin_leader_id as usize != admin_leader
        })
    });
    let before = succeeded();
    wait_for("writes go on after the admin's election", 30, || {
        succeeded() > before + 50
    });

    // A group's leader, killed: its partitions move to the next leader.
    let overview = read_directory(&store.runtime, &survivors).expect("the admin answers");
    store.kill_server(&overview, overview.groups[0].leader_id);
    let killed_at = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    let written = load.successes.load(Ordering::Relaxed);
    let (acknowledged, failures) = load.stop();
    // Writes to the killed group's keys succeeded again after its election.
    eprintln!(
        "{written} writes acknowledged, {} failed while leaders were killed",
        failures.len()
    );
    let late_failures: Vec<_> = failures
        .iter()
        .filter(|(at, _, _)| *at > killed_at + Duration::from_secs(4))
        .collect();
    assert!(
        late_failures.is_empty(),
        "still failing 4 s after the kill: {late_failures:?}"
    );
    for (_, code, body) in failures.iter() {
        assert_eq!(
            *code, 503,
            "a failure during a leader's loss is a 503: {body}"
        );
    }

    // Every acknowledged write is there, through either API replica still running.
    let reader = &api;
    assert!(acknowledged.len() > 20);
    for (key, round) in acknowledged.iter() {
        let (code, body) = post(reader, "/get", &format!(r#"{{"key":"{key}"}}"#));
        assert_eq!(code, 200, "{key}: {body}");
        assert_eq!(body, format!(r#"{{"key":"{key}","val":{round}}}"#));
    }
}

/// A third group joins a store of two under load through the HTTP API: partitions move to it
/// until the table is balanced within the load bound, the leader of a group partitions are
/// moving out of is killed with `kill -9` mid-move, and afterwards every acknowledged write is
/// there with its value and JSON type, served by its partition's owner and refused by every
/// other group. Then group 1 is retired (`ravel retire-group`): its partitions move away, its
/// servers leave, and every write is still there.
#[test]
fn partitions_move_to_a_new_group_under_load_and_survive_kill_9_of_a_source_leader() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut store = Store::start(dir.path());
    for _ in 0..6 {
        store.start_data_node();
    }
    store.wait_leaders(2);
    let api = store.http[0].clone();
    wait_for("the HTTP API answers", 20, || {
        request(&api, "GET", "/v1/status", "").0 == 200
    });

    // Writers through the HTTP API, each write to a key of its own (a write lost in a move is
    // then not hidden by a later one), values of every JSON type.
    let load = HttpWriters::start(&api, |writer, round| {
        let value = match round % 3 {
            0 => round.to_string(),
            1 => format!(r#""text {round}""#),
            _ => format!(r#"{{"round":[{round},true,null]}}"#),
        };
        (format!("moving-{writer}-{round}"), value)
    });
    let succeeded = || load.successes.load(Ordering::Relaxed);
    wait_for("writes are acknowledged", 20, || succeeded() > 600);

    // A third group: partitions start moving to it; the leader of a source is killed mid-move.
    for _ in 0..3 {
        store.start_data_node();
    }
    let mut killed = None;
    wait_for("a move in flight", 60, || {
        let Some(overview) = store.overview() else {
            return false;
        };
        let Some(moving) = overview
            .moves
            .iter()
            .find(|moving| moving.phase == "copying")
        else {
            return false;
        };
        let Some(leader) = overview
            .groups
            .iter()
            .find(|group| group.id == moving.from_group)
            .map(|group| group.leader_id)
            .filter(|&leader| leader != 0)
        else {
            return false;
        };
        store.kill_server(&overview, leader);
        killed = Some((leader, moving.partition, moving.from_group));
        true
    });
    eprintln!("killed (leader, moving partition, its group): {killed:?}");
    let before = succeeded();
    wait_for("every move carried out", 90, || {
        store.overview().is_some_and(|overview| {
            overview.groups.len() == 3
                && overview.moves.is_empty()
                && overview.moves_pending == 0
                && overview.groups.iter().all(|group| group.partitions > 0)
        })
    });
    wait_for("writes go on after the moves", 30, || {
        succeeded() > before + 200
    });
    let written = succeeded();
    let (acknowledged, failures) = load.stop();

    let overview = store.overview().expect("the admin answers");
    let bound = (1.25f64 * 271.0 / 3.0).ceil() as u32;
    for group in &overview.groups {
        assert!(
            group.partitions <= bound,
            "group {} holds {} partitions, over the bound {bound}",
            group.id,
            group.partitions
        );
    }
    eprintln!(
        "{written} writes acknowledged, {} failed while partitions moved and a leader was killed",
        failures.len()
    );
    for (_, code, body) in failures.iter() {
        assert_eq!(
            *code, 503,
            "a failure during a move or a leader's loss: {body}"
        );
    }

    // Every acknowledged write is there, through the other API replica.
    assert!(acknowledged.len() > 300, "{}", acknowledged.len());
    for (key, value) in acknowledged.iter() {
        let (code, body) = post(&store.http[1], "/get", &format!(r#"{{"key":"{key}"}}"#));
        assert_eq!(code, 200, "{key}: {body}");
        assert_eq!(body, format!(r#"{{"key":"{key}","val":{value}}}"#));
    }
    // Served by the owner only: every other group refuses it as not its own.
    let members = |group: u64| -> Vec<String> {
        overview
            .servers
            .iter()
            .filter(|server| server.group_id == group)
            .filter(|server| Some(server.id) != killed.map(|(leader, ..)| leader))
            .map(|server| server.address.clone())
            .collect()
    };
    for key in acknowledged.keys().take(100) {
        let partition = partition_of(key.as_bytes(), overview.partitions);
        let owner = overview.owners[partition as usize].group_id;
        for group in overview.groups.iter().filter(|group| group.id != owner) {
            let mut client = Client::new(members(group.id));
            let read = store
                .runtime
                .block_on(client.get(Bytes::from(key.clone()), false));
            assert!(
                matches!(read, Err(ClientError::Api(ApiError::NotOwned { .. }))),
                "group {} answered {read:?} for {key} (partition {partition}, owned by {owner})",
                group.id
            );
        }
    }

    // Group 1 retired through the CLI: its partitions move to groups 2 and 3, then its servers
    // leave; every acknowledged write is still there.
    let cli = |args: &[&str]| {
        let output = store.cli(args);
        let said = String::from_utf8_lossy(&output.stdout).to_string()
            + &String::from_utf8_lossy(&output.stderr);
        (output.status.success(), said)
    };
    let (set, said) = cli(&["move-limit", "8"]);
    assert!(set && said.contains("at most 8"), "{said}");
    let (_, said) = cli(&["groups", "-w", "json"]);
    let groups: serde_json::Value = serde_json::from_str(&said).expect("JSON");
    assert_eq!(groups["move_limit"], 8, "{groups}");
    let (set, said) = cli(&["move-limit", "65"]);
    assert!(!set && said.contains("at most 64"), "{said}");
    let (set, said) = cli(&["move-rate", "64KiB"]);
    assert!(!set && said.contains("at least 1048576"), "{said}");
    let (set, said) = cli(&["move-rate", "4MiB"]);
    assert!(set && said.contains("4.0 MiB/s"), "{said}");
    // The moves to the third group are on record, as ended and in the totals, at every admin
    // replica the CLI reaches.
    let (_, said) = cli(&["moves", "-w", "json"]);
    let moves: serde_json::Value = serde_json::from_str(&said).expect("JSON");
    let committed = moves["committed"].as_u64().expect("a count");
    assert!(committed > 0, "{moves}");
    assert_eq!(moves["rate_bytes_per_second"], 4 << 20, "{moves}");
    assert!(
        moves["ended"]
            .as_array()
            .is_some_and(|ended| ended.iter().any(|moving| moving["phase"] == "finished")),
        "{moves}"
    );
    let (retired, said) = cli(&["retire-group", "1"]);
    assert!(retired && said.contains("group 1 is retiring"), "{said}");
    let (_, said) = cli(&["groups"]);
    assert!(said.contains("(retiring)"), "{said}");
    wait_for("group 1's partitions moved away", 60, || {
        store.overview().is_some_and(|overview| {
            overview.moves.is_empty()
                && overview.moves_pending == 0
                && overview
                    .groups
                    .iter()
                    .all(|group| (group.id == 1) == (group.partitions == 0))
        })
    });
    let overview = store.overview().expect("the admin answers");
    assert!(overview.moves_committed > committed, "{overview:?}");
    let bound = (1.25f64 * 271.0 / 2.0).ceil() as u32;
    assert!(
        overview
            .groups
            .iter()
            .all(|group| group.partitions <= bound),
        "{:?}",
        overview.groups
    );
    for server in overview
        .servers
        .iter()
        .filter(|server| server.group_id == 1)
    {
        let (left, said) = cli(&["leave", &server.id.to_string()]);
        assert!(left, "server {} of group 1 leaves: {said}", server.id);
    }
    for (key, value) in acknowledged.iter() {
        let (code, body) = post(&store.http[1], "/get", &format!(r#"{{"key":"{key}"}}"#));
        assert_eq!(code, 200, "{key} after group 1 retired: {body}");
        assert_eq!(body, format!(r#"{{"key":"{key}","val":{value}}}"#));
    }
}

/// A group whose leader never reported itself (here a plain node the test registered by hand,
/// which knows nothing of the admin) is still learned: the admin's leader asks its members.
#[test]
fn the_admin_learns_a_leader_it_was_not_told_of_by_asking_the_members() {
    use ravel::server::proto::ravel::{directory_client::DirectoryClient, RegisterRequest};
    let dir = tempfile::tempdir().expect("temporary directory");
    let admin = free_address();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let args: Vec<String> = ["admin", "--id", "1", "--listen", &admin]
        .iter()
        .map(|arg| arg.to_string())
        .collect();
    let _admin = start(&args, &dir.path().join("admin"));
    let admins = vec![admin.clone()];
    wait_for("the admin answers", 20, || {
        read_directory(&runtime, &admins).is_some_and(|overview| overview.admin_leader_id == 1)
    });
    // A plain single-node cluster with the id the admin will give (its first, 100).
    let address = free_address();
    let args: Vec<String> = ["node", "--id", "100", "--listen", &address]
        .iter()
        .map(|arg| arg.to_string())
        .collect();
    let _node = start(&args, &dir.path().join("node"));
    let registered = runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let attempt = async {
                let channel = ravel::server::connect(&admin, Duration::from_secs(1)).await?;
                DirectoryClient::new(channel)
                    .register(RegisterRequest {
                        token: 1,
                        address: address.clone(),
                        labels: Default::default(),
                    })
                    .await
                    .map(|response| response.into_inner())
                    .map_err(|status| status.to_string())
            };
            match attempt.await {
                Ok(response) => break response,
                // The admin's settings may not be applied yet.
                Err(error) if Instant::now() < deadline => {
                    eprintln!("registering: {error}");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(error) => panic!("the admin did not register the node: {error}"),
            }
        }
    });
    assert_eq!((registered.node_id, registered.group_id), (100, 1));
    wait_for("the admin learns group 1's leader", 20, || {
        read_directory(&runtime, &admins).is_some_and(|overview| {
            overview
                .groups
                .iter()
                .any(|group| group.id == 1 && group.leader_id == 100 && group.leader_term > 0)
        })
    });
}
