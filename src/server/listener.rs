//! The TCP connections the gRPC server accepts, through the socket of [`super::socket`] so a
//! small answer leaves in one write. Under madsim there are no sockets; the simulated server
//! binds itself.

//! Binding is a step of its own, taken before the node touches its data directory: a port in
//! use is refused before anything is written.

#[cfg(not(madsim))]
pub use real::{bind, serve, Bound};
#[cfg(madsim)]
pub use simulated::{bind, serve, Bound};

/// An error with its causes, which tonic's transport errors keep out of their own message.
pub(super) fn source_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        // Wrappers often repeat their cause's text (an I/O error inside a connect error).
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(not(madsim))]
mod real {
    use std::future::Future;
    use std::net::SocketAddr;

    use tokio::net::TcpStream;
    use tokio_stream::StreamExt;
    use tonic::transport::server::{Connected, Router, TcpConnectInfo, TcpIncoming};

    use crate::server::socket::Unvectored;

    /// A listening socket, not yet served.
    pub struct Bound(TcpIncoming);

    /// Binds `listen` (inside a tokio runtime).
    pub fn bind(listen: SocketAddr) -> Result<Bound, String> {
        TcpIncoming::bind(listen)
            .map(Bound)
            .map_err(|error| error.to_string())
    }

    /// Serves `router` on the bound socket until `shutdown` completes.
    pub async fn serve(
        router: Router,
        bound: Bound,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), String> {
        let incoming = bound
            .0
            .with_nodelay(Some(true))
            .map(|accepted| accepted.map(Unvectored));
        router
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
            .map_err(|error| super::source_chain(&error))
    }

    impl Connected for Unvectored<TcpStream> {
        type ConnectInfo = TcpConnectInfo;

        fn connect_info(&self) -> TcpConnectInfo {
            self.0.connect_info()
        }
    }
}

#[cfg(madsim)]
mod simulated {
    use std::future::Future;
    use std::net::SocketAddr;

    use tonic::transport::server::Router;

    /// The address to serve; the simulated server binds it itself.
    pub struct Bound(SocketAddr);

    pub fn bind(listen: SocketAddr) -> Result<Bound, String> {
        Ok(Bound(listen))
    }

    /// Serves `router` on `bound` until `shutdown` completes.
    pub async fn serve(
        router: Router,
        bound: Bound,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), String> {
        router
            .serve_with_shutdown(bound.0, shutdown)
            .await
            .map_err(|error| super::source_chain(&error))
    }
}
