//! The TCP connections the gRPC server accepts, through the socket of [`super::socket`] so a
//! small answer leaves in one write. Under madsim there are no sockets; the simulated server
//! binds itself.

//! Binding is a step of its own, taken before the node touches its data directory: a port in
//! use is refused before anything is written. At most `connections_max` connections are served
//! at once: one more is closed as soon as it is accepted (and counted in the log), since clients
//! decide how many they open.

#[cfg(not(madsim))]
pub use real::{bind, serve, Bound, ConnectionInfo};
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

    use rustls_pki_types::CertificateDer;
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
    use tokio::net::TcpStream;
    use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
    use tokio::time::timeout;
    use tokio_stream::wrappers::ReceiverStream;
    use tokio_stream::StreamExt;
    use tokio_util::either::Either;
    use tonic::transport::server::{Connected, Router, TcpIncoming};

    use crate::server::socket::Unvectored;
    use crate::server::tls::{handshake_hint, ServerTls, HANDSHAKE_TIMEOUT};

    /// What a request's extensions say about its connection.
    #[derive(Clone, Debug)]
    pub struct ConnectionInfo {
        /// The client certificate the connection presented, verified against the peer CA
        /// (none: plaintext, or TLS without one).
        pub client_certificate: Option<CertificateDer<'static>>,
    }

    /// A listening socket, not yet served.
    pub struct Bound(TcpIncoming);

    /// Binds `listen` (inside a tokio runtime).
    pub fn bind(listen: SocketAddr) -> Result<Bound, String> {
        TcpIncoming::bind(listen)
            .map(Bound)
            .map_err(|error| error.to_string())
    }

    /// Serves `router` on the bound socket until `shutdown` completes, at most
    /// `connections_max` connections at once; over TLS if `tls` is given.
    pub async fn serve(
        router: Router,
        bound: Bound,
        connections_max: usize,
        tls: Option<ServerTls>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), String> {
        let permits = Arc::new(Semaphore::new(connections_max));
        if let Some(tls) = tls {
            let (ready, incoming) = mpsc::channel(64);
            let accepting = tokio::spawn(accept_tls(bound, permits, connections_max, tls, ready));
            let served = router
                .serve_with_incoming_shutdown(ReceiverStream::new(incoming), shutdown)
                .await
                .map_err(|error| super::source_chain(&error));
            accepting.abort();
            return served;
        }
        let incoming =
            bound
                .0
                .with_nodelay(Some(true))
                .filter_map(move |accepted| match accepted {
                    Ok(stream) => match permits.clone().try_acquire_owned() {
                        Ok(permit) => Some(Ok(Counted {
                            info: ConnectionInfo {
                                client_certificate: None,
                            },
                            stream: Either::Left(Unvectored(stream)),
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

    /// Accepts connections and hands each to the server once its TLS handshake is done (each
    /// handshake on a task of its own, so a slow or silent client holds up no other); a failed
    /// handshake is logged with the likely cause.
    async fn accept_tls(
        bound: Bound,
        permits: Arc<Semaphore>,
        connections_max: usize,
        tls: ServerTls,
        ready: mpsc::Sender<io::Result<Counted>>,
    ) {
        let mut accepted = bound.0.with_nodelay(Some(true));
        while let Some(next) = accepted.next().await {
            let stream = match next {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed");
                    continue;
                }
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                tracing::warn!(
                    peer = ?stream.peer_addr().ok(),
                    "closed a connection: {connections_max} are open already (--connections-max)"
                );
                continue;
            };
            let (acceptor, ready) = (
                tokio_rustls::TlsAcceptor::from(tls.current()),
                ready.clone(),
            );
            tokio::spawn(async move {
                let peer = stream.peer_addr().ok();
                match timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let client_certificate = (stream.get_ref().1.peer_certificates())
                            .and_then(|chain| chain.first().cloned());
                        let counted = Counted {
                            info: ConnectionInfo { client_certificate },
                            stream: Either::Right(Box::new(stream)),
                            _permit: permit,
                        };
                        let _ = ready.send(Ok(counted)).await;
                    }
                    Ok(Err(error)) => tracing::warn!(
                        ?peer,
                        %error,
                        "refused a connection: its TLS handshake failed{}",
                        handshake_hint(&error)
                    ),
                    Err(_) => tracing::warn!(
                        ?peer,
                        "refused a connection: no TLS handshake within {HANDSHAKE_TIMEOUT:?}"
                    ),
                }
            });
        }
    }

    type ServedStream =
        Either<Unvectored<TcpStream>, Box<tokio_rustls::server::TlsStream<TcpStream>>>;

    /// An accepted connection, holding one of the server's connection permits until it closes.
    struct Counted {
        stream: ServedStream,
        info: ConnectionInfo,
        _permit: OwnedSemaphorePermit,
    }

    impl Connected for Counted {
        type ConnectInfo = ConnectionInfo;

        fn connect_info(&self) -> ConnectionInfo {
            self.info.clone()
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
        _tls: Option<()>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), String> {
        router
            .serve_with_shutdown(bound.0, shutdown)
            .await
            .map_err(|error| super::source_chain(&error))
    }
}
