//! Reading HTTP/1 request heads on a connection, shared by the proxy front and the admin listener.
//! Idle waits are Pingora's keep-alive; once a graceful shutdown or upgrade has started, a connection
//! gets `request_wait` more for its request instead of being dropped, so that a request already on
//! its way is served (then the connection closes).

use bytes::BytesMut;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

/// Idle time allowed between requests (and while a head arrives): Pingora's HTTP/1 default.
pub const KEEPALIVE: Duration = Duration::from_secs(60);
/// A head not complete within this many bytes is handed on as it is (Pingora's limit is 1 MiB).
pub const MAX_WAITED_HEAD: usize = 64 << 10;
/// Room kept free in the read buffer.
const READ_CHUNK: usize = 4096;

/// Where the head that starts `buf` ends (after its empty line), if it is complete. Bare `\n` line
/// ends count, as Pingora's parser accepts them.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = buf[from..].iter().position(|b| *b == b'\n') {
        let nl = from + i;
        match (buf.get(nl + 1), buf.get(nl + 2)) {
            (Some(b'\n'), _) => return Some(nl + 2),
            (Some(b'\r'), Some(b'\n')) => return Some(nl + 3),
            _ => from = nl + 1,
        }
    }
    None
}

/// Read more of the next request into `buf`. Waits up to `KEEPALIVE`; once `shutdown` is set, up to
/// `request_wait` from the first time this connection saw it (`deadline`). `false`: closed, reset, or
/// nothing came in time.
pub async fn read_more(
    stream: &mut Stream,
    buf: &mut BytesMut,
    shutdown: &mut ShutdownWatch,
    deadline: &mut Option<Instant>,
    request_wait: Duration,
) -> bool {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(READ_CHUNK);
    }
    let read = loop {
        if *shutdown.borrow() {
            let until = *deadline.get_or_insert_with(|| Instant::now() + request_wait);
            break tokio::time::timeout_at(until, stream.read_buf(buf)).await;
        }
        tokio::select! {
            biased;
            // `read_buf` is cancel safe: nothing is lost if the shutdown wins.
            r = tokio::time::timeout(KEEPALIVE, stream.read_buf(buf)) => break r,
            changed = shutdown.changed() => if changed.is_err() {
                return false;
            },
        }
    };
    matches!(read, Ok(Ok(n)) if n > 0)
}

/// Read until `buf` starts with a complete request head (or holds `MAX_WAITED_HEAD` bytes).
pub async fn read_head(
    stream: &mut Stream,
    buf: &mut BytesMut,
    shutdown: &mut ShutdownWatch,
    request_wait: Duration,
) -> bool {
    let mut deadline = None;
    while head_end(buf).is_none() && buf.len() < MAX_WAITED_HEAD {
        if !read_more(stream, buf, shutdown, &mut deadline, request_wait).await {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_end_of_a_head() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nrest"), Some(27));
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: a\n\nrest"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\n\r\n"), Some(26));
        for partial in [
            &b""[..],
            b"GET / HTTP/1.1\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n\r",
        ] {
            assert_eq!(head_end(partial), None, "{partial:?}");
        }
    }
}
