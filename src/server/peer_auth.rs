//! Mutual TLS between peers, at the services: with a peer CA (`--peer-ca`), the TLS layer has
//! verified any client certificate a connection presented against it; here a peer's messages
//! and a joiner's request are refused over a connection that presented none (a client's), and,
//! with `--peer-cert-names-node`, over one whose certificate does not name the node id the
//! request claims (`ravel-node-ID`), so one node's key cannot speak for another.

use tonic::{Request, Status};

use crate::core::NodeId;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerAuth {
    /// Peer requests need a client certificate the peer CA signed.
    pub required: bool,
    /// ...that names the node the request claims to come from.
    pub names_node: bool,
}

impl PeerAuth {
    /// Whether `request`, claiming to come from node `claimed`, may pass.
    pub fn check<T>(&self, request: &Request<T>, claimed: NodeId) -> Result<(), Status> {
        if !self.required {
            return Ok(());
        }
        #[cfg(madsim)]
        {
            let _ = (request, claimed);
            Ok(())
        }
        #[cfg(not(madsim))]
        {
            use super::listener::ConnectionInfo;
            use super::tls::node_name;

            let certificate = (request.extensions().get::<ConnectionInfo>())
                .and_then(|info| info.client_certificate.as_ref());
            let Some(certificate) = certificate else {
                return Err(Status::unauthenticated(format!(
                    "node {claimed}: peer requests need a client certificate signed by this \
                     cluster's peer CA; start the node with --peer-cert and --peer-key"
                )));
            };
            if self.names_node {
                let name = node_name(claimed);
                let named = webpki::EndEntityCert::try_from(certificate)
                    .ok()
                    .zip(rustls_pki_types::ServerName::try_from(name.as_str()).ok())
                    .is_some_and(|(certificate, server_name)| {
                        certificate
                            .verify_is_valid_for_subject_name(&server_name)
                            .is_ok()
                    });
                if !named {
                    return Err(Status::permission_denied(format!(
                        "the peer's certificate does not name node {claimed} (DNS name {name}): \
                         each node needs a certificate of its own"
                    )));
                }
            }
            Ok(())
        }
    }
}
