//! Opening a gRPC channel to a node, for clients and for nodes talking to each other: one place
//! for the address form, the connect timeout, `TCP_NODELAY` and the socket h2 writes through
//! (see [`super::socket`]). Under madsim the simulated endpoint connects itself.

use tokio::time::{timeout, Duration};
use tonic::transport::{Channel, Endpoint};

/// Connects to `address` (`host:port` or a URI), giving up after `connect_timeout`. The
/// channel reconnects by itself after the connection breaks.
pub async fn connect(address: &str, connect_timeout: Duration) -> Result<Channel, String> {
    let uri = if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    };
    let endpoint = Endpoint::from_shared(uri)
        .map_err(|error| format!("{address}: {error}"))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true);
    match timeout(connect_timeout, open(&endpoint)).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(error)) => Err(format!(
            "{address}: {}",
            super::listener::source_chain(&error)
        )),
        Err(_) => Err(format!("{address}: connect timed out")),
    }
}

#[cfg(not(madsim))]
async fn open(endpoint: &Endpoint) -> Result<Channel, tonic::transport::Error> {
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpStream;

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
                Ok::<_, std::io::Error>(TokioIo::new(Unvectored(stream)))
            },
        ))
        .await
}

#[cfg(madsim)]
async fn open(endpoint: &Endpoint) -> Result<Channel, tonic::transport::Error> {
    endpoint.connect().await
}
