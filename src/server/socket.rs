//! The TCP streams under every gRPC connection, accepted or opened.
//!
//! h2 sends a DATA frame of 256 bytes or more with a write of its own when the socket offers
//! vectored writes, and flushes before the next frame: a 256-byte value took three writes a
//! request (headers, data, then the end of the stream or the trailers), and each write on a TCP
//! socket is a segment the other side must take in. A socket that says it has no vectored
//! writes raises h2's threshold to 1 KiB, so a small request or answer is copied into one
//! buffer and leaves in one write. `perf stat` on the bench with 256-byte writes: 3.1 `writev`
//! calls a request before, 1 after; on the node, 2.4 writes an answer before, 1 after.

#![cfg(not(madsim))]

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A stream that tells h2 it has no vectored writes (see the module docs).
pub struct Unvectored<S>(pub S);

impl<S: AsyncRead + Unpin> AsyncRead for Unvectored<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Unvectored<S> {
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
