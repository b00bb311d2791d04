//! TLS (rustls, with the *ring* provider) for the node's port and for every connection the
//! process opens (to peers, to leaders, the command line's to nodes).
//!
//! One port serves clients and peers, so the node has one server certificate. Mutual TLS
//! between peers: with a peer CA, the server asks each connection for a client certificate and
//! accepts one only if that CA signed it (a connection may come without one: a client's); the
//! peer service then refuses messages over a connection that presented none, and with
//! `peer_cert_names_node` also one whose certificate does not name the node id the messages
//! claim to come from (`ravel-node-ID` as a DNS name). Files are read again when they change
//! (checked every [`RELOAD_EVERY`]), so certificates are renewed without a restart; a file
//! that does not load is logged and the configuration in use is kept.
//!
//! Outgoing connections use the process's client configuration ([`set_client_config`]): the
//! CA that signed the servers' certificates, and the certificate this process presents.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// How long a connection may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a failed server-side handshake most likely means, for the log.
pub fn handshake_hint(error: &std::io::Error) -> &'static str {
    let text = error.to_string();
    if text.contains("InvalidContentType") || text.contains("corrupt message") {
        " (does the client speak plaintext to this TLS port? give it --cacert)"
    } else if text.contains("UnknownCA") || text.contains("BadCertificate") {
        " (the client's certificate is not signed by --peer-ca, or it does not trust --ca)"
    } else if text.contains("Expired") {
        " (a certificate has expired)"
    } else {
        ""
    }
}

/// How often certificate files are checked for changes.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// The DNS name a peer certificate carries for node `id` (checked with
/// `--peer-cert-names-node`; `ravel dev --tls` issues them so).
pub fn node_name(id: u64) -> String {
    format!("ravel-node-{id}")
}

/// The files a node's TLS is made of.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server certificate (chain) and key the node's port presents.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA that signed the other nodes' server certificates (outgoing connections check it).
    pub ca: PathBuf,
    /// The client certificate and key the node presents to peers.
    pub peer_cert: Option<PathBuf>,
    pub peer_key: Option<PathBuf>,
    /// The CA that signs peers' client certificates: with it, peer messages need one.
    pub peer_ca: Option<PathBuf>,
}

impl TlsFiles {
    fn paths(&self) -> Vec<&Path> {
        let mut paths = vec![self.cert.as_path(), self.key.as_path(), self.ca.as_path()];
        paths.extend(self.peer_cert.as_deref());
        paths.extend(self.peer_key.as_deref());
        paths.extend(self.peer_ca.as_deref());
        paths
    }

    /// The server's configuration.
    pub fn server_config(&self) -> Result<ServerConfig, String> {
        let provider = provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|error| error.to_string())?;
        let builder = match &self.peer_ca {
            Some(peer_ca) => {
                let roots = Arc::new(roots(peer_ca)?);
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
                    .allow_unauthenticated()
                    .build()
                    .map_err(|error| format!("{}: {error}", peer_ca.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(certificates(&self.cert)?, private_key(&self.key)?)
            .map_err(|error| {
                format!(
                    "{} and {} do not make a certificate and its key: {error}",
                    self.cert.display(),
                    self.key.display()
                )
            })?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }

    /// The configuration of the node's outgoing connections.
    pub fn client_config(&self) -> Result<ClientConfig, String> {
        let identity = match (&self.peer_cert, &self.peer_key) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            _ => None,
        };
        client_config(&self.ca, identity)
    }
}

/// A client configuration trusting the servers `ca` signed, presenting `identity` if given.
pub fn client_config(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<ClientConfig, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .with_root_certificates(roots(ca)?);
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(certificates(cert)?, private_key(key)?)
            .map_err(|error| {
                format!(
                    "{} and {} do not make a certificate and its key: {error}",
                    cert.display(),
                    key.display()
                )
            })?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// *ring*: it builds with a C compiler alone, as a fresh machine has. (rustls now steers to
/// aws-lc-rs for post-quantum key exchange, which needs more to build.)
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|error| format!("cannot read certificates from {}: {error}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certificates)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|error| format!("cannot read a private key from {}: {error}", path.display()))
}

fn roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for certificate in certificates(path)? {
        roots
            .add(certificate)
            .map_err(|error| format!("{}: not a CA certificate: {error}", path.display()))?;
    }
    Ok(roots)
}

/// The name to check a server's certificate against: its address's host (an IP address or a
/// DNS name).
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|error| format!("{host:?} cannot name a TLS server: {error}"))
}

/// The process's configuration for outgoing connections (none: plaintext).
static CLIENT_CONFIG: RwLock<Option<Arc<ClientConfig>>> = RwLock::new(None);

/// Sets the configuration every connection this process opens from now on uses.
pub fn set_client_config(config: ClientConfig) {
    let mut slot = CLIENT_CONFIG
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    *slot = Some(Arc::new(config));
}

/// The configuration for a new outgoing connection, if the process speaks TLS.
pub fn client_config_in_use() -> Option<Arc<ClientConfig>> {
    CLIENT_CONFIG
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

/// The server configuration a node's port uses now, replaced when its files change; and the
/// same certificate offered over HTTP/1.1 (the metrics endpoint, the admin's HTTP API).
#[derive(Clone)]
pub struct ServerTls {
    configs: Arc<RwLock<Configs>>,
}

/// One configuration per application protocol: a client offering ALPN gets the protocol the
/// port speaks (curl offers `h2` first, which a gRPC port wants and an HTTP/1.1 one must not
/// pick).
struct Configs {
    grpc: Arc<ServerConfig>,
    http: Arc<ServerConfig>,
}

impl Configs {
    fn of(grpc: ServerConfig) -> Self {
        let mut http = grpc.clone();
        http.alpn_protocols = vec![b"http/1.1".to_vec()];
        Configs {
            grpc: Arc::new(grpc),
            http: Arc::new(http),
        }
    }
}

impl ServerTls {
    pub fn new(config: ServerConfig) -> Self {
        ServerTls {
            configs: Arc::new(RwLock::new(Configs::of(config))),
        }
    }

    /// The configuration for the next handshake at the gRPC port.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.read().grpc.clone()
    }

    /// The configuration for the next handshake at an HTTP/1.1 port.
    pub fn current_http(&self) -> Arc<ServerConfig> {
        self.read().http.clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Configs> {
        self.configs
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn replace(&self, config: ServerConfig) {
        let mut slot = self
            .configs
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *slot = Configs::of(config);
    }
}

/// Reloads the server's and the process's client configuration whenever one of `files`
/// changes, until the task is dropped.
pub async fn reload_on_change(files: TlsFiles, server: ServerTls) {
    let stamp = |files: &TlsFiles| -> Vec<Option<SystemTime>> {
        (files.paths().into_iter())
            .map(|path| {
                std::fs::metadata(path)
                    .and_then(|meta| meta.modified())
                    .ok()
            })
            .collect()
    };
    let mut seen = stamp(&files);
    loop {
        tokio::time::sleep(RELOAD_EVERY).await;
        let now = stamp(&files);
        if now == seen {
            continue;
        }
        seen = now;
        match (files.server_config(), files.client_config()) {
            (Ok(server_config), Ok(client_config)) => {
                server.replace(server_config);
                set_client_config(client_config);
                tracing::info!("TLS certificates changed on disk: reloaded");
            }
            (Err(error), _) | (_, Err(error)) => tracing::warn!(
                %error,
                "TLS certificates changed on disk but do not load; still using the previous ones"
            ),
        }
    }
}
