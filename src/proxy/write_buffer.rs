//! The write buffer of a plain connection, held only while a response is being written.
//!
//! Pingora gives every connection a 1,460-byte write buffer (`tokio::io::BufWriter`) for as long as
//! it is open, so that a response head and a small body leave in one `send`. An edge node holds
//! 100k idle keep-alive connections, and that buffer was a quarter of what each one cost. Plain
//! listeners therefore run with Pingora's write buffer off, and the front wraps the stream in this:
//! the same buffering as `BufWriter` (same capacity, writes of at least the capacity go straight
//! through, `flush` writes what is buffered), but the buffer is allocated at the first write after a
//! flush and released by the flush. Between responses a connection holds no write buffer.

use async_trait::async_trait;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType,
};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Pingora's `DEFAULT_L4_WRITE_BUFFER_SIZE` (one MSS).
pub const CAPACITY: usize = 1460;

#[derive(Debug)]
pub struct WriteBuffer {
    inner: Stream,
    /// Empty with no capacity between flushes.
    buf: Vec<u8>,
    /// Bytes of `buf` already written to `inner` by a flush that has not finished.
    written: usize,
}

impl WriteBuffer {
    pub fn new(inner: Stream) -> Self {
        WriteBuffer {
            inner,
            buf: Vec::new(),
            written: 0,
        }
    }

    /// Bytes held (for tests: a flushed stream holds none).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Write out what is buffered, then release the buffer.
    fn poll_flush_buf(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.buf = Vec::new();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for WriteBuffer {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteBuffer {
    /// As `BufWriter::poll_write`: buffer what fits, flush first what would not, and send writes of
    /// at least the capacity straight through.
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.buf.len() + data.len() > CAPACITY {
            ready!(this.poll_flush_buf(cx))?;
        }
        if data.len() >= CAPACITY {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        if this.buf.capacity() == 0 {
            this.buf.reserve_exact(CAPACITY);
        }
        this.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_flush_buf(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_flush_buf(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for WriteBuffer {
    async fn shutdown(&mut self) {
        // What is buffered goes first, as through Pingora's own buffer.
        let _ = tokio::io::AsyncWriteExt::flush(self).await;
        self.inner.shutdown().await
    }
}

impl UniqueID for WriteBuffer {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for WriteBuffer {}

impl GetTimingDigest for WriteBuffer {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for WriteBuffer {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for WriteBuffer {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for WriteBuffer {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A connected pair: ours wrapped, and the peer's plain socket.
    async fn pair() -> (WriteBuffer, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let ours: Stream = Box::new(pingora_core::protocols::l4::stream::Stream::from(
            accepted.unwrap().0,
        ));
        (WriteBuffer::new(ours), client.unwrap())
    }

    #[tokio::test]
    async fn buffers_until_flush_and_then_holds_nothing() {
        let (mut w, mut peer) = pair().await;
        assert_eq!(w.capacity(), 0);
        w.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        w.write_all(b"body").await.unwrap();
        assert!(
            w.capacity() >= CAPACITY,
            "held while the response is written"
        );
        assert_eq!(w.buf.len(), 23, "nothing sent before the flush");
        w.flush().await.unwrap();
        assert_eq!(w.capacity(), 0, "released by the flush");
        let mut got = vec![0u8; 23];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"HTTP/1.1 200 OK\r\n\r\nbody");
    }

    #[tokio::test]
    async fn large_writes_keep_their_order_with_what_was_buffered() {
        let (mut w, mut peer) = pair().await;
        let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        w.write_all(b"head").await.unwrap();
        w.write_all(&big).await.unwrap();
        w.write_all(b"tail").await.unwrap();
        AsyncWriteExt::shutdown(&mut w).await.unwrap();
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), 100_008);
        assert_eq!(&got[..4], b"head");
        assert_eq!(&got[4..100_004], &big[..]);
        assert_eq!(&got[100_004..], b"tail");
    }
}
