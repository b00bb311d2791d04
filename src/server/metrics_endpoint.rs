//! Serves the node's metrics over HTTP (`GET /metrics`) for Prometheus to scrape. Under madsim
//! there is no HTTP: the harness reads the same metrics from [`Metrics`] directly.

use std::net::SocketAddr;

use super::metrics::Metrics;

#[cfg(not(madsim))]
pub use real::{bind, serve, Bound};

/// Under simulation there are no real sockets: the address only.
#[cfg(madsim)]
pub struct Bound(SocketAddr);

#[cfg(madsim)]
pub fn bind(listen: SocketAddr) -> Result<Bound, String> {
    Ok(Bound(listen))
}

/// Under simulation: nothing to serve (no real sockets); says so once.
#[cfg(madsim)]
pub async fn serve(bound: Bound, _metrics: Metrics, _tls: Option<()>) -> Result<(), String> {
    tracing::warn!(listen = %bound.0, "the metrics endpoint is not served under simulation");
    std::future::pending::<()>().await;
    Ok(())
}

#[cfg(not(madsim))]
mod real {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper::{Method, Request, Response, StatusCode};
    use tokio::net::TcpListener;

    use super::*;
    use crate::server::http_server;
    use crate::server::tls::ServerTls;

    /// A listening socket for the metrics, not yet served.
    pub struct Bound(TcpListener);

    /// Binds `listen` (inside a tokio runtime), before the node touches its data directory.
    pub fn bind(listen: SocketAddr) -> Result<Bound, String> {
        http_server::bind(listen, "metrics").map(Bound)
    }

    /// Accepts scrapes until dropped; over TLS with the node's certificate if it serves TLS.
    pub async fn serve(
        bound: Bound,
        metrics: Metrics,
        tls: Option<ServerTls>,
    ) -> Result<(), String> {
        let service = service_fn(move |request| {
            let response = answer(&request, &metrics);
            async move { Ok::<_, Infallible>(response) }
        });
        http_server::serve(bound.0, tls, service).await;
        Ok(())
    }
    fn answer<B>(request: &Request<B>, metrics: &Metrics) -> Response<Full<Bytes>> {
        let (status, content_type, body) =
            if request.method() == Method::GET && request.uri().path() == "/metrics" {
                (
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    metrics.encode(),
                )
            } else {
                (
                    StatusCode::NOT_FOUND,
                    "text/plain; charset=utf-8",
                    "not found: the metrics are at GET /metrics\n".to_string(),
                )
            };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = content_type.parse() {
            response.headers_mut().insert("content-type", value);
        }
        response
    }
}
