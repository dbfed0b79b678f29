//! The connection loop in front of Pingora's HTTP/1 session, on every proxy listener.
//!
//! Each request head on the connection is read here first, then handed to Pingora with the bytes
//! already read (`set_pipelined_prefix`); the connection comes back here after Pingora's response if it
//! stays open. Two things need this:
//!
//! - On listeners that answer ACME challenges, a challenge answer is a lookup and a fixed response, but
//!   going through Pingora's HTTP/1 machinery (session, header maps, `ProxyHttp` callbacks) costs
//!   several times the lookup. A complete `GET`/`HEAD` for a known token of the request's host, with
//!   no body, is answered from here with the same bytes Pingora would send; anything else (other
//!   paths, misses, passthrough domains, fleet read-through, bodies, malformed or oversized heads,
//!   HTTP/2) goes to Pingora. The decision is `challenge::decide`, the same as `request_filter`'s.
//! - At a graceful shutdown or upgrade, Pingora drops a connection that has not delivered its request
//!   head yet. Here, a connection with no complete head when the shutdown starts gets `request_wait`
//!   for it: a request that arrives is served (with `Connection: close`), so connections accepted by
//!   the process being replaced are served instead of closed. Pingora is handed complete heads only.
//!
//! Each HTTP/1 connection runs in a task of its own (`Front::serve`), spawned from Pingora's task
//! for the accept, which then ends: an open connection waiting for its next request holds this
//! loop's state (about 0.7 KiB with tokio's task header) instead of Pingora's task (2.5 KiB, sized for
//! the TLS handshake it began with) plus this loop's boxed future. With the write buffer that exists
//! only while a response is written (`write_buffer`), an idle keep-alive connection costs about
//! 1.9 KiB of heap (it was 6.0 KiB).

use super::challenge::{self, Decision};
use super::limit::{Connections, Open};
use super::write_buffer::WriteBuffer;
use crate::access_log::AccessLog;
use crate::http1::{self, read_head, read_step, HeadClock, Limits};
use crate::metrics;
use crate::model::host::normalize_request_host;
use crate::model::unix_now;
use crate::state::Reader;
use async_trait::async_trait;
use bytes::{Buf, Bytes, BytesMut};
use http::Method;
use pingora_core::apps::{HttpServerApp, ServerApp};
use pingora_core::protocols::http::date::get_cached_date;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::{Stream, ALPN};
use pingora_core::server::ShutdownWatch;
use std::io::Write;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// Longest request head answered here; longer ones go to Pingora, whose own limit then applies.
const MAX_CHALLENGE_HEAD: usize = 4096;
/// More header lines than this: handed to Pingora.
const MAX_HEADERS: usize = 32;
const GET_PREFIX: &[u8] = b"GET /.well-known/acme-challenge/";
const HEAD_PREFIX: &[u8] = b"HEAD /.well-known/acme-challenge/";

/// Whether a listener answers ACME challenges itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenges {
    Answer,
    /// Passed to the upstreams like any request (dedicated proxies whose customers run ACME).
    Proxy,
}

/// Wraps the HTTP application of a proxy listener (the Pingora proxy).
pub struct Front<A> {
    pub inner: Arc<A>,
    pub state: Reader,
    pub challenges: Challenges,
    /// The downstream timeouts: request head, keep-alive, shutdown wait.
    pub limits: Limits,
    /// Open connections, shared by every proxy listener (`max_connections`).
    pub connections: Arc<Connections>,
    /// The service name, for log lines.
    pub name: String,
    pub access_log: Option<Arc<AccessLog>>,
    /// Plain listeners with `proxy_protocol: true`: each connection starts with the header.
    pub proxy_protocol: bool,
}

/// What the bytes at the start of the buffer are.
#[derive(Debug, PartialEq, Eq)]
pub enum Head {
    /// Could still become a challenge request: read more.
    Incomplete,
    /// Not answered here: hand the connection to Pingora.
    Other,
    /// A challenge this node answers: `len` bytes of request, then this response.
    Answer {
        len: usize,
        body: Bytes,
        head_only: bool,
        keep_alive: bool,
    },
}

/// Look at the request head at the start of `buf`. Pure: tested without a socket.
pub fn examine(state: &Reader, buf: &[u8], now: u64) -> Head {
    let could_be = |prefix: &[u8]| {
        let n = buf.len().min(prefix.len());
        buf[..n] == prefix[..n]
    };
    let (method, prefix) = if could_be(GET_PREFIX) {
        (Method::GET, GET_PREFIX)
    } else if could_be(HEAD_PREFIX) {
        (Method::HEAD, HEAD_PREFIX)
    } else {
        return Head::Other;
    };
    if buf.len() < prefix.len() {
        return Head::Incomplete;
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_CHALLENGE_HEAD => return Head::Incomplete,
        _ => return Head::Other,
    };
    let (Some(version @ (0 | 1)), Some(target)) = (req.version, req.path) else {
        return Head::Other;
    };
    let mut host = None;
    let mut connection = http1::ConnectionOptions::default();
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("host") {
            if host.is_some() {
                return Head::Other;
            }
            host = Some(h.value);
        } else if h.name.eq_ignore_ascii_case("content-length") {
            if h.value.trim_ascii() != b"0" {
                return Head::Other;
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Head::Other;
        } else if h.name.eq_ignore_ascii_case("connection") {
            connection.add(h.value);
        }
    }
    let Some(Ok(host)) = host.map(std::str::from_utf8) else {
        return Head::Other;
    };
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let host = normalize_request_host(host);
    match challenge::decide(state, &method, path, &host, now) {
        Decision::Answer(body) => Head::Answer {
            len,
            body,
            head_only: method == Method::HEAD,
            keep_alive: if version == 1 {
                !connection.close
            } else {
                connection.keep_alive
            },
        },
        Decision::NotFound | Decision::Proxy(_) => Head::Other,
    }
}

/// The response Pingora writes for the same answer (`proxy::respond`), header for header.
pub fn write_answer(out: &mut Vec<u8>, body: &[u8], head_only: bool, keep_alive: bool) {
    out.extend_from_slice(
        b"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Type: text/plain\r\nContent-Length: ",
    );
    let _ = write!(out, "{}", body.len());
    out.extend_from_slice(b"\r\nDate: ");
    out.extend_from_slice(get_cached_date().as_bytes());
    out.extend_from_slice(if keep_alive {
        b"\r\nConnection: keep-alive\r\n\r\n"
    } else {
        b"\r\nConnection: close\r\n\r\n"
    });
    if !head_only {
        out.extend_from_slice(body);
    }
}

/// What the connection does after the loop in front.
enum Next {
    /// Hand it to Pingora: the buffer starts with a checked request head not answered here.
    Pingora,
    Close,
}

impl<A: HttpServerApp + Send + Sync + 'static> Front<A> {
    /// Read request heads on `stream`, answering challenges, until one is for Pingora (or the
    /// connection ends).
    async fn next_request(
        &self,
        stream: &mut Stream,
        buf: &mut BytesMut,
        shutdown: &mut ShutdownWatch,
        clock: &mut HeadClock,
        served: &mut u32,
    ) -> Next {
        loop {
            let head = match self.challenges {
                Challenges::Answer => examine(&self.state, buf, unix_now()),
                Challenges::Proxy => Head::Other,
            };
            match head {
                Head::Incomplete => {
                    if read_step(stream, buf, shutdown, clock, &self.name)
                        .await
                        .is_some()
                    {
                        return Next::Close;
                    }
                }
                Head::Other => {
                    return match read_head(stream, buf, shutdown, clock, &self.name).await {
                        http1::Head::Complete(_) => Next::Pingora,
                        http1::Head::Done => Next::Close,
                    }
                }
                Head::Answer {
                    len,
                    body,
                    head_only,
                    keep_alive,
                } => {
                    let started = std::time::Instant::now();
                    *served = served.saturating_add(1);
                    let keep_alive = keep_alive && self.keepalive_secs(shutdown, *served).is_some();
                    let mut out = Vec::with_capacity(256);
                    write_answer(&mut out, &body, head_only, keep_alive);
                    metrics::CHALLENGE_HITS.inc();
                    metrics::count_request(200);
                    let written =
                        stream.write_all(&out).await.is_ok() && stream.flush().await.is_ok();
                    if let Some(log) = &self.access_log {
                        let sent = if head_only { 0 } else { body.len() };
                        super::access::answer_line(log, stream, &buf[..len], sent, started);
                    }
                    buf.advance(len);
                    if !written {
                        return Next::Close;
                    }
                    if !keep_alive {
                        // TLS: send close_notify. TCP: dropping the socket sends the FIN after the
                        // answer (no unread bytes), so a `shutdown` call would only cost a syscall.
                        if stream.get_ssl_digest().is_some() {
                            let _ = stream.shutdown().await;
                        }
                        return Next::Close;
                    }
                    clock.next_request();
                }
            }
        }
    }

    /// An HTTP/1 connection, from its first request head to its end: heads are read (and challenges
    /// answered) here, every other request is handed to Pingora's session and comes back here if
    /// the connection stays open.
    async fn serve(self: Arc<Self>, mut stream: Stream, shutdown: ShutdownWatch, _open: Open) {
        let mut watch = shutdown.clone();
        let mut buf = BytesMut::new();
        if self.proxy_protocol {
            let within = self.limits.header_timeout;
            // Boxed: once per connection, and not part of the state it keeps while open.
            let header = Box::pin(super::proxy_protocol::read_into(
                &mut stream,
                &mut buf,
                within,
            ));
            match header.await {
                Ok(Some(source)) => {
                    let fd = stream.id();
                    super::proxy_protocol::set_client(&mut *stream, fd, source);
                }
                Ok(None) => {}
                Err(_) => return,
            }
        }
        let mut clock = HeadClock::accepted(self.limits);
        let mut served = 0u32;
        loop {
            if buf.is_empty() {
                // Waiting for a request, as most open connections are: only this loop's state and
                // the read are held here.
                let read = http1::read::read_more(&mut stream, &mut buf, &mut watch, &mut clock);
                if http1::after_read(read.await, buf.is_empty()) != http1::Step::More {
                    return;
                }
            }
            // Boxed while a head is read, and freed then: its state is not what an idle connection
            // holds (the box is one allocation per request, as Pingora's own session has several).
            let next =
                self.next_request(&mut stream, &mut buf, &mut watch, &mut clock, &mut served);
            if let Next::Close = Box::pin(next).await {
                return;
            }
            served = served.saturating_add(1);
            // The session is a temporary of this statement: only Pingora's boxed future is held
            // while it runs.
            let run = self
                .inner
                .process_new_http(self.session(stream, &watch, served, buf.split()), &shutdown);
            let Some(reused) = run.await else {
                return;
            };
            stream = reused.consume().0;
            // No buffer is kept while the connection waits for its next request.
            buf = BytesMut::new();
            clock.next_request();
        }
    }

    /// Pingora's session for the request at the start of `head`.
    fn session(
        &self,
        stream: Stream,
        watch: &ShutdownWatch,
        served: u32,
        head: BytesMut,
    ) -> ServerSession {
        // As Pingora's HTTP/1 loop: keep-alive unless shutting down. Pipelining stays off in
        // Pingora, so a reused connection comes back with nothing read past its request.
        let mut session = ServerSession::new_http1(stream);
        let keepalive = self.keepalive_secs(watch, served);
        session.set_keepalive(keepalive);
        if keepalive.is_none() {
            // Pingora sets the keep-alive again from the request's head when it reads it; no
            // reuse left is what makes this response say `Connection: close`.
            session.set_keepalive_reuses_remaining(Some(0));
        }
        session.set_pipelined_prefix(head);
        session
    }

    /// The keep-alive offered with the `served`-th response of a connection: none once shutting
    /// down, when it is configured off, or on the last request `keepalive_request_limit` allows.
    fn keepalive_secs(&self, shutdown: &ShutdownWatch, served: u32) -> Option<u64> {
        let secs = self.limits.keepalive.as_secs();
        let limit = self.limits.keepalive_requests;
        let more = limit == 0 || served < limit;
        (secs > 0 && more && !*shutdown.borrow()).then_some(secs)
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for Front<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let Some(open) = self.connections.admit() else {
            // Past `max_connections`: closed at once, the connections already open are served.
            return None;
        };
        let alpn = stream.selected_alpn_proto();
        if let Some(ALPN::Custom(c)) = &alpn {
            if c.protocol() == crate::tls::alpn::ACME_TLS_1 {
                // A TLS-ALPN-01 validation: the handshake was all of it, no application data.
                return None;
            }
        }
        if matches!(alpn, Some(ALPN::H2 | ALPN::Custom(_))) {
            // HTTP/2 (TLS listeners): Pingora's own loop, where `request_filter` answers challenges.
            return self.inner.process_new(stream, shutdown).await;
        }
        // Plain listeners run without Pingora's write buffer: this one is held only while a
        // response is written (`write_buffer`). Under TLS the buffer is OpenSSL's, below.
        let stream: Stream = if stream.get_ssl().is_some() {
            stream
        } else {
            Box::new(WriteBuffer::new(stream))
        };
        // A task of its own, so that what an open connection costs is this loop's state only:
        // Pingora's task per connection (sized for the TLS handshake it began with, 2.5 KiB) and
        // this call's boxed future end here.
        tokio::spawn(self.clone().serve(stream, shutdown.clone(), open));
        None
    }

    async fn cleanup(&self) {
        self.inner.http_cleanup().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Challenge;
    use crate::state::State;

    fn state() -> Reader {
        let state = Arc::new(State::default());
        state.challenges.insert(&Challenge {
            token: "tok".into(),
            host: "site.test".into(),
            key_authorization: "tok.thumb".into(),
            expires_at: 100,
            kind: crate::model::AcmeChallenge::Http01,
        });
        state.reader()
    }

    fn answer(len: usize, head_only: bool, keep_alive: bool) -> Head {
        Head::Answer {
            len,
            body: Bytes::from_static(b"tok.thumb"),
            head_only,
            keep_alive,
        }
    }

    #[test]
    fn answers_complete_challenge_heads() {
        let s = state();
        let ex = |req: &str| examine(&s, req.as_bytes(), 1);
        let get = "GET /.well-known/acme-challenge/tok HTTP/1.1\r\nHost: site.test\r\n\r\n";
        assert_eq!(ex(get), answer(get.len(), false, true));
        // What follows the head (a pipelined request) is not part of it.
        assert_eq!(
            ex(&format!("{get}GET / HTTP/1.1\r\n")),
            answer(get.len(), false, true)
        );
        let head = "HEAD /.well-known/acme-challenge/tok HTTP/1.1\r\nhost: SITE.test.:8080\r\n\r\n";
        assert_eq!(ex(head), answer(head.len(), true, true));
        let query = "GET /.well-known/acme-challenge/tok?x=1 HTTP/1.1\r\nHost: site.test\r\n\r\n";
        assert_eq!(ex(query), answer(query.len(), false, true));
        for (req, keep_alive) in [
            ("HTTP/1.1\r\nConnection: close", false),
            ("HTTP/1.1\r\nConnection: Upgrade, CLOSE", false),
            ("HTTP/1.0", false),
            ("HTTP/1.0\r\nConnection: keep-alive", true),
            ("HTTP/1.1\r\nContent-Length: 0", true),
        ] {
            let req =
                format!("GET /.well-known/acme-challenge/tok {req}\r\nHost: site.test\r\n\r\n");
            assert_eq!(ex(&req), answer(req.len(), false, keep_alive), "{req}");
        }
    }

    #[test]
    fn waits_for_the_rest_of_a_possible_challenge_head() {
        let s = state();
        let full = "GET /.well-known/acme-challenge/tok HTTP/1.1\r\nHost: site.test\r\n\r\n";
        for cut in [1, 4, 20, GET_PREFIX.len(), full.len() - 1] {
            assert_eq!(
                examine(&s, &full.as_bytes()[..cut], 1),
                Head::Incomplete,
                "{cut}"
            );
        }
        assert_eq!(examine(&s, b"HEA", 1), Head::Incomplete);
        // A head that never ends within the limit goes to Pingora (and its limits).
        let long = format!(
            "GET /.well-known/acme-challenge/tok HTTP/1.1\r\nX: {}",
            "a".repeat(MAX_CHALLENGE_HEAD)
        );
        assert_eq!(examine(&s, long.as_bytes(), 1), Head::Other);
    }

    #[test]
    fn leaves_everything_else_to_pingora() {
        let s = state();
        let p = "/.well-known/acme-challenge/";
        for req in [
            "GET / HTTP/1.1\r\nHost: site.test\r\n\r\n".to_string(),
            "GET /.well-known/other".to_string(),
            "HEAD / HTTP/1.1".to_string(),
            format!("POST {p}tok HTTP/1.1\r\nHost: site.test\r\n\r\n"),
            format!("GET http://site.test{p}tok HTTP/1.1\r\nHost: site.test\r\n\r\n"),
            format!("GET {p}tok HTTP/1.1\r\nHost: other.test\r\n\r\n"),
            format!("GET {p}unknown HTTP/1.1\r\nHost: site.test\r\n\r\n"),
            format!("GET {p}tok HTTP/1.1\r\n\r\n"),
            format!("GET {p}tok HTTP/1.1\r\nHost: site.test\r\nHost: x.test\r\n\r\n"),
            format!("GET {p}tok HTTP/1.1\r\nHost: site.test\r\nContent-Length: 3\r\n\r\nabc"),
            format!(
                "GET {p}tok HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
            format!("GET {p}tok HTTP/2.0\r\nHost: site.test\r\n\r\n"),
            format!("GET {p}tok HTTP/1.1\r\nHost: site.test\r\nBad Header\r\n\r\n"),
            format!("GET {p}tok/x HTTP/1.1\r\nHost: site.test\r\n\r\n"),
            format!(
                "GET {p}tok HTTP/1.1\r\nHost: site.test\r\n{}\r\n",
                "X: y\r\n".repeat(MAX_HEADERS)
            ),
        ] {
            assert_eq!(examine(&s, req.as_bytes(), 1), Head::Other, "{req:?}");
        }
        let not_utf8 =
            b"GET /.well-known/acme-challenge/tok HTTP/1.1\r\nHost: site\xff.test\r\n\r\n";
        assert_eq!(examine(&s, not_utf8, 1), Head::Other);
        // Expired.
        let get = "GET /.well-known/acme-challenge/tok HTTP/1.1\r\nHost: site.test\r\n\r\n";
        assert_eq!(examine(&s, get.as_bytes(), 100), Head::Other);
    }

    #[test]
    fn the_answer_matches_pingoras() {
        let mut out = Vec::new();
        write_answer(&mut out, b"tok.thumb", false, true);
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert_eq!(body, "tok.thumb");
        let lines: Vec<&str> = head.split("\r\n").collect();
        assert_eq!(
            lines[..4],
            [
                "HTTP/1.1 200 OK",
                "Cache-Control: no-store",
                "Content-Type: text/plain",
                "Content-Length: 9"
            ]
        );
        assert!(lines[4].starts_with("Date: ") && lines[4].ends_with(" GMT"));
        assert_eq!(lines[5], "Connection: keep-alive");

        let mut out = Vec::new();
        write_answer(&mut out, b"tok.thumb", true, false);
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("\r\nConnection: close\r\n\r\n"), "{text}");
    }
}
