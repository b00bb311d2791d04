//! `ravel dev --tls`: a throw-away CA and the certificates a local cluster needs, so TLS and
//! mutual TLS between peers can be tried in one command. Written to `DATA_DIR/tls/`; the CA's
//! key is never written (nothing more can be signed with it).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use crate::server::tls::node_name;
use crate::server::tls_certificates::{write_file, Authority, Subject};

/// The files of a dev cluster's TLS.
pub struct DevTls {
    ca: PathBuf,
    server: (PathBuf, PathBuf),
    /// Per node id (a plain cluster's nodes, each named), and one for every other process
    /// (a sharded store's, whose ids the admin gives out).
    peers: Vec<(u64, PathBuf, PathBuf)>,
    shared_peer: (PathBuf, PathBuf),
}

impl DevTls {
    /// Makes a CA, a server certificate for 127.0.0.1, ::1 and localhost, and peer
    /// certificates for `node_ids` (each naming its node) and one shared.
    pub fn generate(dir: &Path, node_ids: &[u64]) -> Result<DevTls, String> {
        std::fs::create_dir_all(dir)
            .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
        let authority = Authority::new("ravel dev CA")?;
        let ca = dir.join("ca.pem");
        write_file(&ca, &authority.cert_pem(), 0o644)?;
        let loopback = [
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ];
        let server = authority
            .issue(&Subject {
                dns_names: &["localhost".to_string()],
                ip_addresses: &loopback,
                expired: false,
            })?
            .write(dir, "server")?;
        let mut peers = Vec::new();
        for &id in node_ids {
            let (cert, key) = authority
                .issue(&Subject {
                    dns_names: &[node_name(id)],
                    ip_addresses: &[],
                    expired: false,
                })?
                .write(dir, &format!("peer-{id}"))?;
            peers.push((id, cert, key));
        }
        let shared_peer = authority
            .issue(&Subject {
                dns_names: &["ravel-dev-peer".to_string()],
                ip_addresses: &[],
                expired: false,
            })?
            .write(dir, "peer")?;
        Ok(DevTls {
            ca,
            server,
            peers,
            shared_peer,
        })
    }

    /// With `tls`, the files of a dev cluster of `groups` groups (0: one plain group of
    /// `nodes`) in `data_dir/tls`, this process set to trust them; else none.
    pub fn make(
        tls: bool,
        groups: u64,
        nodes: u64,
        data_dir: &Path,
    ) -> Result<Option<DevTls>, String> {
        if !tls {
            return Ok(None);
        }
        // A plain group's node ids are known here: each gets a certificate naming it.
        let ids: Vec<u64> = if groups == 0 {
            (1..=nodes).collect()
        } else {
            Vec::new()
        };
        let made = DevTls::generate(&data_dir.join("tls"), &ids)?;
        crate::server::tls::set_client_config(crate::server::tls::client_config(&made.ca, None)?);
        Ok(Some(made))
    }

    pub fn ca(&self) -> &Path {
        &self.ca
    }

    /// The TLS flags for the process of node `id` (none: a process without a fixed id).
    pub fn args(&self, id: Option<u64>) -> Vec<String> {
        let named = id.and_then(|id| self.peers.iter().find(|(peer, _, _)| *peer == id));
        let (peer_cert, peer_key) = match named {
            Some((_, cert, key)) => (cert, key),
            None => (&self.shared_peer.0, &self.shared_peer.1),
        };
        let path = |path: &PathBuf| path.display().to_string();
        let mut args = vec![
            "--cert".to_string(),
            path(&self.server.0),
            "--key".to_string(),
            path(&self.server.1),
            "--ca".to_string(),
            path(&self.ca),
            "--peer-cert".to_string(),
            path(peer_cert),
            "--peer-key".to_string(),
            path(peer_key),
            "--peer-ca".to_string(),
            path(&self.ca),
        ];
        if named.is_some() {
            args.push("--peer-cert-names-node".to_string());
        }
        args
    }
}
