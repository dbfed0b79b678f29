//! The access-log line of a request: from Pingora's session and our context (`EdgeProxy::logging`),
//! or from a challenge answered by the front.

use super::errors;
use super::routing;
use crate::access_log::{request_id, AccessLog, Entry};
use crate::model::host::{normalize_request_host, valid_request_host};
use crate::tls::accept::describe;
use pingora_core::protocols::Stream;
use pingora_error::Error;
use pingora_proxy::Session;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

/// What a request collects for its line while it runs (only when the access log is on).
#[derive(Debug)]
pub struct Timing {
    pub started: Instant,
    pub upstream_started: Option<Instant>,
    pub upstream_ms: Option<f64>,
    /// Also the `X-Request-Id` sent upstream.
    pub request_id: Option<http::HeaderValue>,
    /// `request_filter` found the Host valid (the line does not check it again).
    pub host_valid: bool,
}

impl Timing {
    pub fn start() -> Timing {
        Timing {
            started: Instant::now(),
            upstream_started: None,
            upstream_ms: None,
            request_id: None,
            host_valid: false,
        }
    }

    /// The upstream's response head arrived.
    pub fn upstream_answered(&mut self) {
        if let Some(t) = self.upstream_started {
            self.upstream_ms = Some(ms(t));
        }
    }
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

pub fn protocol(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

fn inet(a: Option<&pingora_core::protocols::l4::socket::SocketAddr>) -> Option<SocketAddr> {
    a.and_then(|a| a.as_inet()).copied()
}

/// The host as routed, or `-` for one that is not a valid host (never written as sent); `valid`: it
/// was checked already.
fn host_of(raw: Option<&str>, valid: bool) -> std::borrow::Cow<'_, str> {
    match raw {
        Some(h) if valid || valid_request_host(h) => normalize_request_host(h),
        Some(_) => "-".into(),
        None => "".into(),
    }
}

/// The line of a request that went through Pingora.
pub fn session_line(
    log: &AccessLog,
    session: &Session,
    e: Option<&Error>,
    timing: &mut Timing,
    upstream: Option<SocketAddr>,
    retries: usize,
) {
    let req = session.req_header();
    let status = session.response_written().map_or(0, |r| r.status.as_u16());
    let id = timing.request_id.take().unwrap_or_else(request_id);
    let host = host_of(routing::request_host(session), timing.host_valid);
    let ssl = session.digest().and_then(|d| d.ssl_digest.as_deref());
    let (tls, sni) = describe(ssl);
    let error = e
        .filter(|_| status >= 500 || status == 0)
        .map(errors::reason);
    log.log(&Entry {
        at: SystemTime::now(),
        client: inet(session.client_addr()),
        listener: inet(session.server_addr()),
        tls,
        sni,
        method: req.method.as_str(),
        host: &host,
        path: req.uri.path_and_query().map_or("/", |p| p.as_str()),
        protocol: protocol(req.version),
        status,
        bytes_sent: session.body_bytes_sent(),
        request_bytes: session.body_bytes_read(),
        duration_ms: ms(timing.started),
        upstream,
        upstream_ms: timing.upstream_ms,
        retries,
        request_id: id.to_str().unwrap_or("-"),
        error,
    });
}

/// The line of a challenge answered by the front: `head` is the request head it answered.
pub fn answer_line(log: &AccessLog, stream: &Stream, head: &[u8], sent: usize, started: Instant) {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    if req.parse(head).is_err() {
        return;
    }
    let raw_host = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"))
        .and_then(|h| std::str::from_utf8(h.value).ok());
    let host = host_of(raw_host, false);
    let socket = stream.get_socket_digest();
    let ssl = stream.get_ssl_digest();
    let (tls, sni) = describe(ssl.as_deref());
    let id = request_id();
    log.log(&Entry {
        at: SystemTime::now(),
        client: inet(socket.as_ref().and_then(|s| s.peer_addr())),
        listener: inet(socket.as_ref().and_then(|s| s.local_addr())),
        tls,
        sni,
        method: req.method.unwrap_or("GET"),
        host: &host,
        path: req.path.unwrap_or("/"),
        protocol: if req.version == Some(0) {
            "HTTP/1.0"
        } else {
            "HTTP/1.1"
        },
        status: 200,
        bytes_sent: sent,
        request_bytes: 0,
        duration_ms: ms(started),
        upstream: None,
        upstream_ms: None,
        retries: 0,
        request_id: id.to_str().unwrap_or("-"),
        error: None,
    });
}
