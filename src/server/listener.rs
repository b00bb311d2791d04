//! The TCP connections the gRPC server accepts, through the socket of [`super::socket`] so a
//! small answer leaves in one write. Under madsim there are no sockets; the simulated server
//! binds itself.

//! Binding is a step of its own, taken before the node touches its data directory: a port in
//! use is refused before anything is written. At most `connections_max` connections are served
//! at once: one more is closed as soon as it is accepted (and counted in the log), since clients
//! decide how many they open.

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
    use std::io;
    use std::net::SocketAddr;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
    use tokio::net::TcpStream;
    use tokio::sync::{OwnedSemaphorePermit, Semaphore};
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

    /// Serves `router` on the bound socket until `shutdown` completes, at most
    /// `connections_max` connections at once.
    pub async fn serve(
        router: Router,
        bound: Bound,
        connections_max: usize,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), String> {
        let permits = Arc::new(Semaphore::new(connections_max));
        let incoming =
            bound
                .0
                .with_nodelay(Some(true))
                .filter_map(move |accepted| match accepted {
                    Ok(stream) => match permits.clone().try_acquire_owned() {
                        Ok(permit) => Some(Ok(Counted {
                            stream: Unvectored(stream),
                            _permit: permit,
                        })),
                        Err(_) => {
                            tracing::warn!(
                                peer = ?stream.peer_addr().ok(),
                                "closed a connection: {connections_max} are open already \
                                 (--connections-max)"
                            );
                            None
                        }
                    },
                    Err(error) => Some(Err(error)),
                });
        router
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
            .map_err(|error| super::source_chain(&error))
    }

    /// An accepted connection, holding one of the server's connection permits until it closes.
    struct Counted {
        stream: Unvectored<TcpStream>,
        _permit: OwnedSemaphorePermit,
    }

    impl Connected for Counted {
        type ConnectInfo = TcpConnectInfo;

        fn connect_info(&self) -> TcpConnectInfo {
            self.stream.0.connect_info()
        }
    }

    impl AsyncRead for Counted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.stream).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Counted {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.stream).poll_write(cx, buf)
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.stream).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.stream).poll_shutdown(cx)
        }

        fn is_write_vectored(&self) -> bool {
            self.stream.is_write_vectored()
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

    /// Serves `router` on `bound` until `shutdown` completes (simulated connections are not
    /// counted).
    pub async fn serve(
        router: Router,
        bound: Bound,
        _connections_max: usize,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), String> {
        router
            .serve_with_shutdown(bound.0, shutdown)
            .await
            .map_err(|error| super::source_chain(&error))
    }
}
