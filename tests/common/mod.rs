//! Helpers the real-process tests share: the binary, free ports, running the command line, a
//! process killed on drop, waiting for a condition, HTTP(S) requests. Each test file uses what
//! it needs (hence `dead_code` allowed).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const RAVEL: &str = env!("CARGO_BIN_EXE_ravel");

/// Raft timings short enough for a test to see elections in a second.
pub const FAST: [&str; 6] = [
    "--election-timeout-min-ms",
    "300",
    "--election-timeout-max-ms",
    "600",
    "--heartbeat-interval-ms",
    "50",
];

/// An address on loopback nothing listens on (yet).
pub fn free_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("address").to_string()
}

pub fn path(path: &Path) -> String {
    path.display().to_string()
}

/// `ravel ARGS`, waited for (a `RAVEL_TOKEN` in the test's environment is not passed on: a
/// test gives its tokens explicitly).
pub fn ravel(args: &[&str]) -> Output {
    Command::new(RAVEL)
        .args(args)
        .env_remove("RAVEL_TOKEN")
        .stdin(Stdio::null())
        .output()
        .expect("ravel runs")
}

/// What a command printed, stdout then stderr.
pub fn said(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A `ravel` process whose stderr goes to a log file, killed on drop.
pub struct Process {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Process {
    /// Starts `ravel ARGS`, logging to `log`.
    pub fn start(args: &[String], log: &Path) -> Process {
        let child = Command::new(RAVEL)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("log file"))
            .spawn()
            .expect("ravel starts");
        Process {
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits up to `seconds` for `check` to hold, or fails naming `what`.
pub fn wait_for(what: &str, seconds: u64, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits up to 20 s for the node at `address` to be a voter that knows a leader (asked with
/// `status`, which needs no token).
pub async fn wait_voter(address: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut client = ravel::client::Client::new(vec![address.to_string()]);
    client.timeout = Duration::from_millis(500);
    loop {
        if let Ok(status) = client.status().await {
            if status.member_state == "voter" && status.leader_id != 0 {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{address} did not become a voter"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An HTTP/1.1 answer: its status code (0: no answer) and body.
#[derive(Debug)]
pub struct Answer {
    pub code: u16,
    pub body: String,
}

fn request_text(
    address: &str,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> String {
    let authorization = token.map_or(String::new(), |token| {
        format!("Authorization: Bearer {token}\r\n")
    });
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n{authorization}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn parse_answer(response: &str) -> Answer {
    let code = (response.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = (response.split_once("\r\n\r\n"))
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Answer { code, body }
}

/// A plaintext HTTP/1.1 request; code 0 when nothing sensible came back.
pub fn http(address: &str, method: &str, path: &str, body: &str, token: Option<&str>) -> Answer {
    let attempt = || -> std::io::Result<String> {
        let mut stream = std::net::TcpStream::connect(address)?;
        stream.set_read_timeout(Some(Duration::from_secs(15)))?;
        stream.write_all(request_text(address, method, path, body, token).as_bytes())?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        Ok(String::from_utf8_lossy(&response).into_owned())
    };
    parse_answer(&attempt().unwrap_or_default())
}

/// An HTTP/1.1 request over TLS, trusting the servers `ca` signed; `Err` says why the
/// connection failed.
pub async fn https(
    ca: &Path,
    address: &str,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> Result<Answer, String> {
    let mut config = ravel::server::tls::client_config(ca, None)?;
    // HTTP/1.1, as curl and Prometheus speak to such a port (the gRPC client's config offers h2).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|error| error.to_string())?;
    let name = ravel::server::tls::server_name("127.0.0.1")?;
    let mut stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
        .map_err(|error| format!("TLS handshake: {error}"))?;
    let request = request_text(address, method, path, body, token);
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|error| error.to_string())?;
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut response));
    match read.await {
        Ok(Ok(_)) => {}
        // A server closing without close_notify after a complete answer is fine here.
        Ok(Err(error)) if !response.is_empty() => {
            let _ = error;
        }
        Ok(Err(error)) => return Err(error.to_string()),
        Err(_) => return Err("no answer within 15 s".to_string()),
    }
    Ok(parse_answer(&String::from_utf8_lossy(&response)))
}
