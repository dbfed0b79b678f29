//! HTTP/1 request heads on a connection, shared by the proxy front and the admin listener: where a head
//! ends, reading it within the downstream limits (`read`), and checking it before Pingora parses it
//! (`check`); upstream response framing for the fast path (`response`).

pub mod check;
pub mod read;
pub mod response;

pub use check::Refusal;
pub use read::{HeadClock, Limits, Read};

use bytes::BytesMut;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use tokio::io::AsyncWriteExt;

/// Longest request head; a longer one is answered 431 (Pingora's own limit is 1 MiB; nginx's default
/// is 4 x 8 KiB, HAProxy's 16 KiB).
pub const MAX_HEAD: usize = 64 << 10;

/// The `close` and `keep-alive` options of a message's `Connection` fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionOptions {
    pub close: bool,
    pub keep_alive: bool,
}

impl ConnectionOptions {
    /// Add the options of one `Connection` field value (a comma-separated list, any case).
    pub fn add(&mut self, value: &[u8]) {
        for option in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            self.close |= option.eq_ignore_ascii_case(b"close");
            self.keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
        }
    }
}

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

/// How reading the next request head ended.
#[derive(Debug)]
pub enum Head {
    /// `buf` starts with a complete head of this length, which Pingora's parser accepts.
    Complete(usize),
    /// The connection ends here (answered already if an answer was possible).
    Done,
}

/// Read until `buf` starts with a complete request head, checked; a late, oversized or malformed
/// head is answered (408, 431, 400) and logged without header values.
pub async fn read_head(
    stream: &mut Stream,
    buf: &mut BytesMut,
    shutdown: &mut ShutdownWatch,
    clock: &mut HeadClock,
    listener: &str,
) -> Head {
    loop {
        if let Some(end) = head_end(buf) {
            if end > MAX_HEAD {
                return Box::pin(refuse(stream, buf, &check::too_large(MAX_HEAD), listener)).await;
            }
            return match check::check_head(buf, end) {
                Ok(()) => Head::Complete(head_end(buf).unwrap_or(end)),
                Err(r) => Box::pin(refuse(stream, buf, &r, listener)).await,
            };
        }
        if buf.len() >= MAX_HEAD {
            return Box::pin(refuse(stream, buf, &check::too_large(MAX_HEAD), listener)).await;
        }
        if let Some(end) = read_step(stream, buf, shutdown, clock, listener).await {
            return end;
        }
    }
}

/// One read of a head in progress: `None` to go on, else how the connection ends.
pub async fn read_step(
    stream: &mut Stream,
    buf: &mut BytesMut,
    shutdown: &mut ShutdownWatch,
    clock: &mut HeadClock,
    listener: &str,
) -> Option<Head> {
    let read = read::read_more(stream, buf, shutdown, clock).await;
    match after_read(read, buf.is_empty()) {
        Step::More => None,
        Step::Close => Some(Head::Done),
        Step::Refuse => {
            let r = Refusal {
                status: 408,
                error: format!(
                    "request head not complete within {:?}",
                    clock.limits().header_timeout
                ),
            };
            Some(Box::pin(refuse(stream, buf, &r, listener)).await)
        }
    }
}

/// What a read means for the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Bytes came: go on.
    More,
    /// Closed by the client, idle past the keep-alive, or no byte of a head in time: close.
    Close,
    /// Part of a head came, not all of it in time: answer 408 and close.
    Refuse,
}

/// The step after `read` (`empty`: the buffer still holds nothing), timeouts counted by kind.
pub fn after_read(read: Read, empty: bool) -> Step {
    let timeout = |kind| {
        crate::metrics::DOWNSTREAM_TIMEOUTS
            .with_label_values(&[kind])
            .inc()
    };
    match read {
        Read::Data => Step::More,
        Read::Closed => Step::Close,
        Read::Idle => {
            timeout("keepalive");
            Step::Close
        }
        Read::HeaderTimeout => {
            timeout("request_header");
            if empty {
                Step::Close
            } else {
                Step::Refuse
            }
        }
    }
}

/// Answer a refused head and end the connection; the log line names the method and path only.
/// Callers box it: its state (the answer, the lingering close) is not part of what every open
/// connection holds while it waits for a head.
pub async fn refuse(stream: &mut Stream, buf: &[u8], r: &Refusal, listener: &str) -> Head {
    crate::metrics::REFUSED_REQUESTS
        .with_label_values(&[status_label(r.status)])
        .inc();
    crate::metrics::count_request(r.status);
    let peer = stream
        .get_socket_digest()
        .and_then(|d| d.peer_addr().map(|a| a.to_string()))
        .unwrap_or_default();
    log::info!(
        "{listener}: {} from {peer}: {} ({})",
        r.status,
        r.error,
        check::describe(buf)
    );
    let _ = stream.write_all(&check::refusal_response(r.status)).await;
    let _ = stream.flush().await;
    linger(stream).await;
    Head::Done
}

/// Close after an answer the client may still be sending into: the write side first (FIN, or TLS
/// close_notify), then what still arrives is read and dropped for a moment, so that closing with
/// unread bytes does not reset the connection before the client has read the answer (nginx's
/// `lingering_close`). Bounded in time and bytes.
async fn linger(stream: &mut Stream) {
    const LINGER: std::time::Duration = std::time::Duration::from_millis(500);
    const MAX_DRAINED: usize = 256 << 10;
    let _ = stream.shutdown().await;
    let drain = async {
        let mut drained = 0;
        let mut sink = BytesMut::new();
        while drained < MAX_DRAINED {
            sink.clear();
            match read::append(stream, &mut sink).await {
                Ok(n) if n > 0 => drained += n,
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

fn status_label(status: u16) -> &'static str {
    match status {
        408 => "408",
        431 => "431",
        _ => "400",
    }
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
