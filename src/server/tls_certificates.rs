//! Certificates made on the spot (rcgen): a throw-away CA and what it signs, for `ravel dev
//! --tls` (a newcomer tries TLS in one command) and for tests of what TLS must refuse (another
//! CA's certificate, an expired one, one naming another node).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};

/// A certificate authority whose key lives only in memory.
pub struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, PEM-encoded.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// What a certificate is for and whom it names.
pub struct Subject<'a> {
    /// DNS names (a server's host names, or `ravel-node-ID` for a peer).
    pub dns_names: &'a [String],
    pub ip_addresses: &'a [IpAddr],
    /// Already expired (for tests of what must be refused).
    pub expired: bool,
}

fn error(what: &str) -> impl Fn(rcgen::Error) -> String + '_ {
    move |error| format!("cannot make {what}: {error}")
}

impl Authority {
    pub fn new(name: &str) -> Result<Self, String> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(error("a CA"))?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().map_err(error("a CA key"))?;
        let issuer = CertifiedIssuer::self_signed(params, key).map_err(error("a CA"))?;
        Ok(Authority { issuer })
    }

    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `subject`, usable by a server and by a client (a node is both).
    pub fn issue(&self, subject: &Subject<'_>) -> Result<Issued, String> {
        let mut params =
            CertificateParams::new(subject.dns_names.to_vec()).map_err(error("a certificate"))?;
        params
            .subject_alt_names
            .extend((subject.ip_addresses.iter()).map(|address| SanType::IpAddress(*address)));
        if let Some(first) = subject.dns_names.first() {
            params.distinguished_name.push(DnType::CommonName, first);
        }
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        if subject.expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().map_err(error("a key"))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(error("a certificate"))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

impl Issued {
    /// Writes `NAME.pem` and `NAME-key.pem` (the key readable by its owner only) into `dir`.
    pub fn write(&self, dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), String> {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}-key.pem"));
        write_file(&cert, &self.cert_pem, 0o644)?;
        write_file(&key, &self.key_pem, 0o600)?;
        Ok((cert, key))
    }
}

/// Writes `contents` to `path` with permissions `mode`.
pub fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .and_then(|mut file| file.write_all(contents.as_bytes()))
        .map_err(|error| format!("cannot write {}: {error}", path.display()))
}
