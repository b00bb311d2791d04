//! Opening a gRPC channel to a node, for clients and for nodes talking to each other: one place
//! for the address form, the connect timeout, `TCP_NODELAY` and the socket h2 writes through
//! (see [`super::socket`]). Under madsim the simulated endpoint connects itself.

use tokio::time::{timeout, Duration};
use tonic::transport::{Channel, Endpoint};

/// Connects to `address` (`host:port` or a URI), giving up after `connect_timeout`. The
/// channel reconnects by itself after the connection breaks.
pub async fn connect(address: &str, connect_timeout: Duration) -> Result<Channel, String> {
    connect_or_say_why(address, connect_timeout)
        .await
        .map_err(|failure| failure.message)
}

/// Why a connection could not be opened.
#[derive(Clone, Debug)]
pub struct ConnectFailure {
    pub message: String,
    /// The address's host answered that nothing listens on the port: unlike a timeout, no
    /// point in waiting for an answer (a command line says so at once).
    pub nothing_listens: bool,
}

/// [`connect`], telling a refused connection from other failures.
pub async fn connect_or_say_why(
    address: &str,
    connect_timeout: Duration,
) -> Result<Channel, ConnectFailure> {
    let uri = if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    };
    let failure = |message: String, nothing_listens| ConnectFailure {
        message,
        nothing_listens,
    };
    let endpoint = Endpoint::from_shared(uri)
        .map_err(|error| failure(format!("{address}: {error}"), false))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true);
    match timeout(connect_timeout, open(&endpoint)).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(error)) => Err(failure(
            format!("{address}: {}", super::listener::source_chain(&error)),
            refused(&error),
        )),
        Err(_) => Err(failure(format!("{address}: connect timed out"), false)),
    }
}

/// A status's message with the errors under it (tonic's "transport error" alone names no
/// cause; under it may be a TLS alert, a reset, a refusal).
pub fn status_text(status: &tonic::Status) -> String {
    super::listener::source_chain(status)
}

/// A hint for a connection that broke as soon as it was used, when this process speaks
/// plaintext: the likeliest cause is a node that serves TLS only.
pub fn plaintext_hint() -> &'static str {
    #[cfg(not(madsim))]
    if super::tls::client_config_in_use().is_none() {
        return " (does the node serve TLS? then connect with TLS: --cacert)";
    }
    ""
}

/// Whether an I/O error somewhere in `error`'s chain is a refused connection.
fn refused(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        cause = error.source();
    }
    false
}

/// Whether `address` has the form [`connect`] takes: `host:port` (a port number) or a URI.
pub fn check_address(address: &str) -> Result<(), String> {
    let well_formed = if address.contains("://") {
        !address.chars().any(char::is_whitespace)
    } else {
        address.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty()
                && !host.chars().any(char::is_whitespace)
                && port.parse::<u16>().is_ok_and(|port| port > 0)
        })
    };
    if well_formed {
        Ok(())
    } else {
        Err(format!(
            "{address:?} is not an address: expected HOST:PORT (e.g. 127.0.0.1:7379) or a URI"
        ))
    }
}

#[cfg(not(madsim))]
async fn open(endpoint: &Endpoint) -> Result<Channel, tonic::transport::Error> {
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpStream;
    use tokio_util::either::Either;

    use super::socket::Unvectored;

    endpoint
        .connect_with_connector(tower::service_fn(
            |uri: tonic::codegen::http::Uri| async move {
                let authority = uri.authority().map(|authority| authority.as_str());
                let authority = authority.ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, "the address has no host")
                })?;
                let address = if uri.port().is_some() {
                    authority.to_string()
                } else {
                    format!("{authority}:80")
                };
                let stream = TcpStream::connect(address).await?;
                stream.set_nodelay(true)?;
                let Some(tls) = super::tls::client_config_in_use() else {
                    return Ok::<_, std::io::Error>(TokioIo::new(Either::Left(Unvectored(stream))));
                };
                let host = uri.host().unwrap_or_default();
                let name = super::tls::server_name(host)
                    .map_err(|reason| std::io::Error::new(std::io::ErrorKind::InvalidInput, reason))?;
                let stream = tokio_rustls::TlsConnector::from(tls)
                    .connect(name, stream)
                    .await
                    .map_err(|error| {
                        let hint = if error.to_string().contains("InvalidContentType")
                            || error.to_string().contains("corrupt message")
                        {
                            " (does the node serve TLS? one started without --cert serves plaintext)"
                        } else {
                            ""
                        };
                        std::io::Error::new(
                            error.kind(),
                            format!("TLS handshake failed: {error}{hint}"),
                        )
                    })?;
                Ok(TokioIo::new(Either::Right(Box::new(stream))))
            },
        ))
        .await
}

#[cfg(madsim)]
async fn open(endpoint: &Endpoint) -> Result<Channel, tonic::transport::Error> {
    endpoint.connect().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_host_and_port_or_a_uri() {
        for good in [
            "127.0.0.1:7379",
            "localhost:1",
            "[::1]:7379",
            "http://10.0.0.1:80",
        ] {
            assert_eq!(check_address(good), Ok(()), "{good}");
        }
        for bad in [
            "127.0.0.1",
            "no port",
            "host:port",
            ":7379",
            "host:0",
            "host:70000",
            "",
        ] {
            assert!(check_address(bad).is_err(), "{bad}");
        }
    }
}
