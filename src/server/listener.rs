//! The TCP connections the gRPC server accepts.
//!
//! h2 sends a DATA frame of 256 bytes or more with a write of its own when the socket offers
//! vectored writes, and flushes before the next frame: a read answering a 256-byte value took
//! three `writev` calls (headers + data, then trailers, often more). A socket that says it has no
//! vectored writes raises h2's threshold to 1 KiB, so a small answer is copied into one buffer and
//! leaves in one write. Under madsim there are no sockets; the simulated server binds itself.

#[cfg(not(madsim))]
pub use real::serve;
#[cfg(madsim)]
pub use simulated::serve;

/// An error with its causes, which tonic's transport errors keep out of their own message.
fn source_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
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
    use std::task::{Context, Poll};

    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
    use tokio::net::TcpStream;
    use tokio_stream::StreamExt;
    use tonic::transport::server::{Connected, Router, TcpConnectInfo, TcpIncoming};

    /// Serves `router` on `listen` until `shutdown` completes. Fails at once if it cannot bind.
    pub async fn serve(
        router: Router,
        listen: SocketAddr,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), String> {
        let incoming = TcpIncoming::bind(listen)
            .map_err(|error| error.to_string())?
            .with_nodelay(Some(true))
            .map(|accepted| accepted.map(Connection));
        router
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
            .map_err(|error| super::source_chain(&error))
    }

    /// An accepted connection that makes h2 coalesce small frames (see the module docs).
    struct Connection(TcpStream);

    impl Connected for Connection {
        type ConnectInfo = TcpConnectInfo;

        fn connect_info(&self) -> TcpConnectInfo {
            self.0.connect_info()
        }
    }

    impl AsyncRead for Connection {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Connection {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.0).poll_write(cx, buf)
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_shutdown(cx)
        }

        fn is_write_vectored(&self) -> bool {
            false
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
