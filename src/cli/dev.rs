//! `ravel dev --nodes N`: a local cluster in one command. Node 1 bootstraps; the others join it
//! through the join workflow. Each serves Prometheus metrics 1000 ports above its gRPC port.
//! Ctrl-C (or SIGTERM) stops them all, gracefully.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use tokio::time::{sleep, Duration, Instant};

use super::ExitCode;
use crate::client::Client;

pub async fn run(
    nodes: u64,
    base_port: u16,
    data_dir: PathBuf,
    node_args: Vec<String>,
) -> ExitCode {
    if nodes == 0 {
        eprintln!("error: --nodes must be at least 1");
        return ExitCode::Usage;
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(error) => {
            eprintln!("error: cannot find the ravel executable: {error}");
            return ExitCode::Failure;
        }
    };
    let address = |id: u64| format!("127.0.0.1:{}", u64::from(base_port) + id - 1);
    let metrics_address = |id: u64| format!("127.0.0.1:{}", u64::from(base_port) + 1000 + id - 1);
    let mut children: Vec<Child> = Vec::new();
    for id in 1..=nodes {
        let mut command = Command::new(&exe);
        command
            .arg("node")
            .args(["--id", &id.to_string()])
            .args(["--listen", &address(id)])
            .args(["--metrics-listen", &metrics_address(id)])
            .arg("--data-dir")
            .arg(data_dir.join(format!("node-{id}")))
            .args(&node_args)
            .stdin(Stdio::null());
        if id > 1 {
            command.args(["--join", &address(1)]);
        }
        match command.spawn() {
            Ok(child) => children.push(child),
            Err(error) => {
                eprintln!("error: cannot start node {id}: {error}");
                stop(&mut children);
                return ExitCode::Failure;
            }
        }
        if id == 1 && !wait_serving(&address(1)).await {
            eprintln!("error: node 1 did not start serving on {}", address(1));
            stop(&mut children);
            return ExitCode::Failure;
        }
    }
    let endpoints: Vec<String> = (1..=nodes).map(address).collect();
    println!(
        "ravel dev cluster of {nodes} nodes, data in {}",
        data_dir.display()
    );
    println!("  endpoints: {}", endpoints.join(","));
    println!(
        "  metrics:   {}",
        (1..=nodes)
            .map(|id| format!("http://{}/metrics", metrics_address(id)))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "  try: ravel put hello world --endpoints {0} && ravel get hello --endpoints {0}",
        endpoints.join(",")
    );
    println!("Ctrl-C stops the cluster.");
    super::node::shutdown_signal().await;
    stop(&mut children);
    ExitCode::Success
}

async fn wait_serving(address: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut client = Client::new(vec![address.to_string()]);
    client.timeout = Duration::from_millis(500);
    while Instant::now() < deadline {
        if client.status().await.is_ok() {
            return true;
        }
        sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Asks every node to stop gracefully (SIGTERM), then waits for it.
fn stop(children: &mut [Child]) {
    for child in children.iter_mut() {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
    }
    for child in children.iter_mut() {
        let _ = child.wait();
    }
}
