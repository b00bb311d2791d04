//! `ravel dev`: a local sharded store in one command — an admin group of three replicas
//! (serving the HTTP API) and `--groups` data groups of `--nodes` nodes, each data node given
//! its id and group by the admin. With `--groups 0`, one plain cluster of `--nodes` nodes
//! (node 1 bootstraps, the others join it). Every process's log lines are prefixed with its
//! name; Ctrl-C (or SIGTERM) stops them all, gracefully.
//!
//! Ports, from `--base-port` B: the admin replicas' gRPC at B..B+2 and HTTP at B+701..B+703
//! (8080.. for the default B = 7379; `--http-port` moves them); data nodes' gRPC from B+10
//! (plain cluster: from B); everyone's Prometheus metrics `--metrics-offset` (1000) above its
//! gRPC port.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use tokio::time::{sleep, Duration, Instant};

use super::ExitCode;
use crate::client::Client;

/// Admin replicas `ravel dev` starts for a sharded store.
const ADMIN_REPLICAS: u64 = 3;

/// Where `ravel dev` puts its processes' ports.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    /// The first gRPC port.
    pub base: u64,
    /// A process's metrics port is its gRPC port plus this; 0: no metrics.
    pub metrics_offset: u64,
    /// The first admin replica's HTTP port.
    pub http: u64,
}

impl Ports {
    /// The `--metrics-listen` flag of the process on gRPC port `port` (none: no metrics).
    fn metrics_args(&self, port: u64) -> Vec<String> {
        if self.metrics_offset == 0 {
            return Vec::new();
        }
        vec![
            "--metrics-listen".to_string(),
            address(port + self.metrics_offset),
        ]
    }
}

pub async fn run(
    groups: u64,
    nodes: u64,
    partitions: u32,
    ports: Ports,
    data_dir: PathBuf,
    node_args: Vec<String>,
    tls: bool,
) -> ExitCode {
    if nodes == 0 {
        eprintln!("error: --nodes must be at least 1");
        return ExitCode::Usage;
    }
    let tls = match DevTls::make(tls, groups, nodes, &data_dir) {
        Ok(tls) => tls,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::Failure;
        }
    };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(error) => {
            eprintln!("error: cannot find the ravel executable: {error}");
            return ExitCode::Failure;
        }
    };
    let base = ports.base;
    let last_port = (base + ports.metrics_offset + 10 + groups * nodes + nodes)
        .max(ports.http + ADMIN_REPLICAS);
    if last_port > u64::from(u16::MAX) {
        eprintln!(
            "error: --base-port {base}, --metrics-offset {} and --http-port {} leave no room for \
             every port (up to {last_port})",
            ports.metrics_offset, ports.http
        );
        return ExitCode::Usage;
    }
    let mut cluster = Cluster {
        exe,
        data_dir,
        children: Vec::new(),
        tls,
    };
    let started = if groups == 0 {
        cluster.plain(nodes, ports, &node_args).await
    } else {
        cluster
            .sharded(groups, nodes, partitions, ports, &node_args)
            .await
    };
    if let Err(message) = started {
        eprintln!("error: {message}");
        cluster.stop();
        return ExitCode::Failure;
    }
    println!("Ctrl-C stops them all.");
    super::node::shutdown_signal().await;
    cluster.stop();
    ExitCode::Success
}

fn address(port: u64) -> String {
    format!("127.0.0.1:{port}")
}

struct Cluster {
    exe: PathBuf,
    data_dir: PathBuf,
    children: Vec<Child>,
    tls: Option<DevTls>,
}

#[cfg(not(madsim))]
use super::dev_tls::DevTls;

/// Under madsim there is no TLS: a type with no value.
#[cfg(madsim)]
enum DevTls {}

#[cfg(madsim)]
impl DevTls {
    fn make(tls: bool, _: u64, _: u64, _: &Path) -> Result<Option<DevTls>, String> {
        match tls {
            true => Err("TLS is not simulated under madsim".to_string()),
            false => Ok(None),
        }
    }
    fn args(&self, _id: Option<u64>) -> Vec<String> {
        match *self {}
    }
    fn ca(&self) -> &Path {
        match *self {}
    }
}

impl Cluster {
    /// One Raft group: node 1 bootstraps, the others join it.
    async fn plain(
        &mut self,
        nodes: u64,
        ports: Ports,
        node_args: &[String],
    ) -> Result<(), String> {
        let port = |id: u64| ports.base + id - 1;
        for id in 1..=nodes {
            let mut args = vec![
                "node".to_string(),
                "--id".to_string(),
                id.to_string(),
                "--listen".to_string(),
                address(port(id)),
            ];
            args.extend(ports.metrics_args(port(id)));
            if id > 1 {
                args.extend(["--join".to_string(), address(port(1))]);
            }
            args.extend(node_args.iter().cloned());
            args.extend(self.tls_args(Some(id)));
            let dir = self.data_dir.join(format!("node-{id}"));
            self.start(&format!("node-{id}"), &args, &dir)?;
            if id == 1 {
                wait_serving(&address(port(1))).await?;
            }
        }
        let endpoints: Vec<String> = (1..=nodes).map(|id| address(port(id))).collect();
        println!(
            "ravel dev cluster of {nodes} nodes, data in {}",
            self.data_dir.display()
        );
        println!("  endpoints: {}", endpoints.join(","));
        if ports.metrics_offset > 0 {
            let scheme = self.http_scheme();
            println!(
                "  metrics:   {}",
                (1..=nodes)
                    .map(|id| format!(
                        "{scheme}://{}/metrics",
                        address(port(id) + ports.metrics_offset)
                    ))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
        let cacert = match &self.tls {
            Some(tls) => format!(" --cacert {}", tls.ca().display()),
            None => String::new(),
        };
        if self.tls.is_some() {
            println!(
                "  TLS: every port, mutual TLS between peers (certificates in {}/tls)",
                self.data_dir.display()
            );
        }
        println!(
            "  try: ravel put hello world --endpoints {0}{cacert} && ravel get hello --endpoints {0}{cacert}",
            endpoints.join(",")
        );
        Ok(())
    }

    /// An admin group of three, then `groups` data groups of `nodes`, registered through it.
    async fn sharded(
        &mut self,
        groups: u64,
        nodes: u64,
        partitions: u32,
        ports: Ports,
        node_args: &[String],
    ) -> Result<(), String> {
        let base = ports.base;
        let admin_port = |id: u64| base + id - 1;
        let http_port = |id: u64| ports.http + id - 1;
        let admin: Vec<String> = (1..=ADMIN_REPLICAS)
            .map(|id| address(admin_port(id)))
            .collect();
        for id in 1..=ADMIN_REPLICAS {
            let mut args = vec![
                "admin".to_string(),
                "--id".to_string(),
                id.to_string(),
                "--listen".to_string(),
                address(admin_port(id)),
                "--http".to_string(),
                address(http_port(id)),
                "--group-size".to_string(),
                nodes.to_string(),
                "--initial-groups".to_string(),
                groups.to_string(),
                "--partitions".to_string(),
                partitions.to_string(),
            ];
            args.extend(ports.metrics_args(admin_port(id)));
            if id > 1 {
                args.extend(["--join".to_string(), admin[0].clone()]);
            }
            args.extend(self.tls_args(None));
            let dir = self.data_dir.join(format!("admin-{id}"));
            self.start(&format!("admin-{id}"), &args, &dir)?;
            if id == 1 {
                wait_serving(&admin[0]).await?;
            }
        }
        let data_nodes = groups * nodes;
        for n in 1..=data_nodes {
            let port = base + 10 + n - 1;
            let mut args = vec![
                "node".to_string(),
                "--admin".to_string(),
                admin.join(","),
                "--listen".to_string(),
                address(port),
            ];
            args.extend(ports.metrics_args(port));
            args.extend(node_args.iter().cloned());
            args.extend(self.tls_args(None));
            let dir = self.data_dir.join(format!("data-{n}"));
            self.start(&format!("data-{n}"), &args, &dir)?;
            // One at a time: each registers before the next, so the groups fill in order.
            wait_serving(&address(port)).await?;
        }
        let http = format!("{}://{}", self.http_scheme(), address(http_port(1)));
        // curl and the command line take the throw-away CA with the same flag.
        let cacert = match &self.tls {
            Some(tls) => format!(" --cacert {}", tls.ca().display()),
            None => String::new(),
        };
        println!(
            "ravel dev: a sharded store of {groups} groups of {nodes} nodes and an admin group \
             of {ADMIN_REPLICAS}, data in {}",
            self.data_dir.display()
        );
        println!("  admin:       {}", admin.join(","));
        println!("  status page: {http}/");
        println!("  try:");
        println!(
            "    curl -s{cacert} {http}/put -d '{{\"key\": \"hello\", \"val\": {{\"n\": 1}}}}'"
        );
        println!("    curl -s{cacert} {http}/get -d '{{\"key\": \"hello\"}}'");
        println!("    curl -s{cacert} {http}/delete -d '{{\"key\": \"hello\"}}'");
        println!("    ravel groups --admin {}{cacert}", admin.join(","));
        println!(
            "    ravel put hello world --admin {}{cacert}",
            admin.join(",")
        );
        if let Some(tls) = &self.tls {
            println!(
                "  TLS: every port (gRPC, HTTP, metrics), mutual TLS between peers (CA: {})",
                tls.ca().display()
            );
        }
        Ok(())
    }

    /// The TLS flags of node `id`'s process (none: a process whose id the admin gives).
    /// `https` when the cluster serves TLS (its HTTP ports then do too).
    fn http_scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    fn tls_args(&self, id: Option<u64>) -> Vec<String> {
        self.tls.as_ref().map_or_else(Vec::new, |tls| tls.args(id))
    }

    /// Starts `ravel ARGS` on `data_dir`, its output prefixed with `name`.
    fn start(&mut self, name: &str, args: &[String], data_dir: &Path) -> Result<(), String> {
        let mut child = Command::new(&self.exe)
            .args(args)
            .arg("--data-dir")
            .arg(data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| format!("cannot start {name}: {error}"))?;
        if let Some(stdout) = child.stdout.take() {
            prefix_lines(name, stdout, false);
        }
        if let Some(stderr) = child.stderr.take() {
            prefix_lines(name, stderr, true);
        }
        self.children.push(child);
        Ok(())
    }

    /// Asks every process to stop gracefully (SIGTERM), data nodes first, then waits for them.
    /// The signal is sent directly, not through an external `kill` (slim images have none).
    fn stop(&mut self) {
        for child in self.children.iter_mut().rev() {
            let Ok(pid) = libc::pid_t::try_from(child.id()) else {
                continue;
            };
            // SAFETY: kill(2) with a child's pid and a signal number has no memory effects; a
            // child that already exited (and is not yet reaped) ignores it.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        for child in self.children.iter_mut() {
            let _ = child.wait();
        }
    }
}

/// Copies a child's output line by line, each line prefixed with the child's name.
fn prefix_lines(name: &str, output: impl Read + Send + 'static, to_stderr: bool) {
    let prefix = format!("[{name}] ");
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines() {
            let Ok(line) = line else { return };
            let _ = if to_stderr {
                writeln!(std::io::stderr().lock(), "{prefix}{line}")
            } else {
                writeln!(std::io::stdout().lock(), "{prefix}{line}")
            };
        }
    });
}

async fn wait_serving(address: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut client = Client::new(vec![address.to_string()]);
    client.timeout = Duration::from_millis(500);
    while Instant::now() < deadline {
        if client.status().await.is_ok() {
            return Ok(());
        }
        sleep(Duration::from_millis(100)).await;
    }
    Err(format!("{address} did not start serving"))
}
