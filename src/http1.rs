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
/// ends count, as Pingora's parser (httparse) accepts them; a property test holds the two together.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    // Empty lines before the request line are skipped, as parsers do (RFC 9112 section 2.2).
    let start = buf.iter().position(|b| !matches!(b, b'\r' | b'\n'))?;
    // Line ends found with SIMD (`memchr`): a head is a dozen lines, scanned once per request.
    for nl in memchr::memchr_iter(b'\n', &buf[start..]).map(|i| start + i) {
        match (buf.get(nl + 1), buf.get(nl + 2)) {
            (Some(b'\n'), _) => return Some(nl + 2),
            (Some(b'\r'), Some(b'\n')) => return Some(nl + 3),
            _ => {}
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
    use proptest::prelude::*;

    /// A request head as clients write it: any line end (CRLF or bare LF, mixed), optional empty
    /// lines before it.
    fn head() -> impl Strategy<Value = Vec<u8>> {
        let eol = prop_oneof![Just("\r\n"), Just("\n")];
        let header = ("[A-Za-z][A-Za-z0-9-]{0,15}", "[ -~]{0,40}", eol.clone())
            .prop_map(|(n, v, e)| format!("{n}: {}{e}", v.trim()));
        (
            prop::collection::vec(eol.clone(), 0..3),
            prop_oneof![Just("GET"), Just("POST"), Just("HEAD"), Just("PUT")],
            "/[a-z0-9/._-]{0,30}",
            eol.clone(),
            prop::collection::vec(header, 0..12),
            eol,
        )
            .prop_map(|(lead, m, path, e1, headers, end)| {
                format!(
                    "{}{m} {path} HTTP/1.1{e1}{}{end}",
                    lead.concat(),
                    headers.concat()
                )
                .into_bytes()
            })
    }

    proptest! {
        /// The end found is the head's, whatever follows; no strict prefix of a head is complete.
        #[test]
        fn finds_exactly_the_end_of_generated_heads(
            head in head(),
            rest in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let whole = [head.clone(), rest].concat();
            prop_assert_eq!(head_end(&whole), Some(head.len()));
            for cut in 0..head.len() {
                prop_assert_eq!(head_end(&head[..cut]), None, "prefix of {}", cut);
            }
        }

        /// Where httparse (Pingora's parser) says a head is complete, so does `head_end`, at the
        /// same byte; where it wants more, `head_end` finds no end either. Heads are generated, then
        /// cut short and damaged (a byte replaced), so that all three outcomes occur.
        #[test]
        fn agrees_with_httparse(
            head in head(),
            rest in prop::collection::vec(any::<u8>(), 0..16),
            cut in prop::option::of(any::<prop::sample::Index>()),
            damage in prop::option::of((any::<prop::sample::Index>(), prop_oneof![
                Just(b'\r'), Just(b'\n'), Just(b' '), Just(b':'), Just(0u8), any::<u8>(),
            ])),
        ) {
            let mut bytes = [head, rest].concat();
            if let Some(cut) = cut {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            if let (Some((at, b)), false) = (damage, bytes.is_empty()) {
                let i = at.index(bytes.len());
                bytes[i] = b;
            }
            let mut headers = [httparse::EMPTY_HEADER; 64];
            match httparse::Request::new(&mut headers).parse(&bytes) {
                Ok(httparse::Status::Complete(n)) => prop_assert_eq!(head_end(&bytes), Some(n)),
                Ok(httparse::Status::Partial) => prop_assert_eq!(head_end(&bytes), None),
                Err(_) => {}
            }
        }
    }

    #[test]
    fn finds_the_end_of_a_head() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nrest"), Some(27));
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: a\n\nrest"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\n\r\n"), Some(26));
        assert_eq!(
            head_end(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n"),
            Some(22),
            "leading empty lines"
        );
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
