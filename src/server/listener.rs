//! The TCP connections the gRPC server accepts, through the socket of [`super::socket`] so a
//! small answer leaves in one write. Under madsim there are no sockets; the simulated server
//! binds itself.

#[cfg(not(madsim))]
pub use real::serve;
#[cfg(madsim)]
pub use simulated::serve;

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

    /// Serves `router` on `listen` until `shutdown` completes. Fails at once if it cannot bind.
    pub async fn serve(
        router: Router,
        listen: SocketAddr,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), String> {
        let incoming = TcpIncoming::bind(listen)
            .map_err(|error| error.to_string())?
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

    /// Serves `router` on `listen` until `shutdown` completes.
    pub async fn serve(
        router: Router,
        listen: SocketAddr,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), String> {
        router
            .serve_with_shutdown(listen, shutdown)
            .await
            .map_err(|error| super::source_chain(&error))
    }
}
