//! The accept loop of the node's HTTP/1.1 ports (the metrics endpoint, the admin's HTTP API):
//! plaintext, or TLS with the node's own certificate when the node serves TLS, so a cluster
//! secured with `--cert/--key` serves no plaintext anywhere.
//!
//! Each connection is served on a task of its own, its TLS handshake included (with the gRPC
//! port's deadline), so a silent client holds up no other.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{timeout, Duration};

use super::tls::{handshake_hint, ServerTls, HANDSHAKE_TIMEOUT};

/// Binds `listen` (inside a tokio runtime); `what` names the port in the error.
pub fn bind(listen: SocketAddr, what: &str) -> Result<TcpListener, String> {
    std::net::TcpListener::bind(listen)
        .and_then(|listener| {
            listener.set_nonblocking(true)?;
            TcpListener::from_std(listener)
        })
        .map_err(|error| format!("cannot serve {what} on {listen}: {error}"))
}

/// The URL scheme a port served with `tls` answers to.
pub fn scheme(tls: bool) -> &'static str {
    if tls {
        "https"
    } else {
        "http"
    }
}

/// Serves each connection `listener` accepts with a clone of `service`, over TLS if `tls` is
/// given; never returns.
pub async fn serve<S>(listener: TcpListener, tls: Option<ServerTls>, service: S)
where
    S: Service<Request<Incoming>, Response = Response<Full<Bytes>>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors, say: wait rather than spin on the error.
                tracing::warn!(%error, "cannot accept an HTTP connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_connection(stream, tls.clone(), service.clone()));
    }
}

async fn serve_connection<S>(stream: TcpStream, tls: Option<ServerTls>, service: S)
where
    S: Service<Request<Incoming>, Response = Response<Full<Bytes>>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let Some(tls) = tls else {
        let _ = http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await;
        return;
    };
    let peer = stream.peer_addr().ok();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.current_http());
    match timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
        Ok(Err(error)) => tracing::warn!(
            ?peer,
            %error,
            "refused an HTTP connection: its TLS handshake failed{}",
            handshake_hint(&error)
        ),
        Err(_) => tracing::warn!(
            ?peer,
            "refused an HTTP connection: no TLS handshake within {HANDSHAKE_TIMEOUT:?}"
        ),
    }
}
