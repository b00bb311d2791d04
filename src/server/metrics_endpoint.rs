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
pub async fn serve(bound: Bound, _metrics: Metrics) -> Result<(), String> {
    tracing::warn!(listen = %bound.0, "the metrics endpoint is not served under simulation");
    std::future::pending::<()>().await;
    Ok(())
}

#[cfg(not(madsim))]
mod real {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper::{Method, Request, Response, StatusCode};
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;

    use super::*;

    /// A listening socket for the metrics, not yet served.
    pub struct Bound(TcpListener);

    /// Binds `listen` (inside a tokio runtime), before the node touches its data directory.
    pub fn bind(listen: SocketAddr) -> Result<Bound, String> {
        std::net::TcpListener::bind(listen)
            .and_then(|listener| {
                listener.set_nonblocking(true)?;
                TcpListener::from_std(listener)
            })
            .map(Bound)
            .map_err(|error| format!("cannot serve metrics on {listen}: {error}"))
    }

    /// Accepts scrapes until dropped.
    pub async fn serve(bound: Bound, metrics: Metrics) -> Result<(), String> {
        let listener = bound.0;
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, say: wait rather than spin on the error.
                    tracing::warn!(%error, "cannot accept a metrics connection");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let response = answer(&request, &metrics);
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
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
