//! The Pingora `ProxyHttp` for the public listeners. Per request: the challenge responder (if this
//! listener intercepts), then the route lookup, then an upstream from the route's pool. Lookups only:
//! no I/O, no parsing, no lock held across an await.

pub mod access;
pub mod challenge;
pub mod errors;
pub mod forwarded;
pub mod front;
pub mod limit;
pub mod proxy_protocol;
pub mod read_through;
pub mod redirect;
pub mod routing;
pub mod write_buffer;

use crate::access_log::AccessLog;
use crate::metrics;
use crate::model::host::{normalize_request_host, valid_request_host};
use crate::model::{unix_now, Challenge, UpstreamTimeouts};
use crate::state::{Reader, Route};
use async_trait::async_trait;
use bytes::Bytes;
use forwarded::Forwarding;
use pingora_core::modules::http::HttpModules;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use read_through::{Lookup, ReadThroughGate};
use std::net::SocketAddr;
use std::sync::Arc;

/// Where a node looks for a challenge token it does not hold (fleet mode: etcd).
#[async_trait]
pub trait ReadThrough: Send + Sync {
    async fn fetch(&self, token: &str) -> Option<Challenge>;
}

/// One proxy per listener group (listeners that share the same interception setting).
pub struct EdgeProxy {
    pub state: Reader,
    pub intercept_acme_challenges: bool,
    pub tls: bool,
    /// Port for `redirect_https` targets when the HTTPS listener is not on 443.
    pub https_redirect_port: Option<u16>,
    /// `edgeward.upstreams`; a domain's `upstream_timeouts` override them.
    pub timeouts: UpstreamTimeouts,
    pub forwarding: Forwarding,
    /// Fleet mode: where to look for a challenge token before answering 404 (bounded).
    pub read_through: Option<Arc<ReadThroughGate>>,
    pub access_log: Option<Arc<AccessLog>>,
}

#[derive(Default)]
pub struct Ctx {
    route: Option<Arc<Route>>,
    tried: Vec<SocketAddr>,
    /// Only with the access log on.
    timing: Option<access::Timing>,
}

#[async_trait]
impl ProxyHttp for EdgeProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            timing: self.access_log.as_ref().map(|_| access::Timing::start()),
            ..Ctx::default()
        }
    }

    /// No downstream modules: compression is off at the edge, and skipping the module saves work per
    /// request.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        // Decide with borrowed data only (no allocation for the host), then write.
        // A challenge miss worth looking up in the fleet store: (token, host), owned.
        let mut fetch: Option<(String, String)> = None;
        let (reply, head) = {
            let req = session.req_header();
            let raw_host = routing::request_host(session);
            if raw_host.is_some_and(|h| !valid_request_host(h)) {
                // Never reflected into a redirect or a log line.
                let head = req.method == http::Method::HEAD;
                metrics::REFUSED_REQUESTS.with_label_values(&["400"]).inc();
                let body = Bytes::from_static(b"invalid Host header\n");
                respond(session, 400, body, head).await?;
                return Ok(true);
            }
            if let Some(t) = ctx.timing.as_mut() {
                t.host_valid = raw_host.is_some();
            }
            let host = raw_host.map(normalize_request_host);
            let host = host.as_deref().unwrap_or("");
            let path = req.uri.path();
            let decision = if self.intercept_acme_challenges && path.starts_with(challenge::PREFIX)
            {
                match challenge::decide(&self.state, &req.method, path, host, unix_now()) {
                    challenge::Decision::Answer(body) => {
                        metrics::CHALLENGE_HITS.inc();
                        Err((200, body))
                    }
                    challenge::Decision::NotFound => {
                        // Only for hosts this node routes: anything else is a 404 here and now.
                        fetch = self
                            .read_through
                            .as_ref()
                            .filter(|_| self.state.route(host).is_some())
                            .and(challenge::answerable_token(&req.method, path))
                            .map(|t| (t.to_string(), host.to_string()));
                        if fetch.is_none() {
                            metrics::CHALLENGE_MISSES.inc();
                        }
                        Err((404, Bytes::from_static(b"unknown challenge token\n")))
                    }
                    challenge::Decision::Proxy(route) => Ok(route),
                }
            } else {
                self.state
                    .route(host)
                    .ok_or((404, Bytes::from_static(b"unknown host\n")))
            };
            match decision {
                // Challenge paths are never redirected, even when passed through.
                Ok(route)
                    if !self.tls
                        && route.domain.redirect_https
                        && !path.starts_with(challenge::PREFIX) =>
                {
                    let location = redirect::location(
                        host,
                        self.https_redirect_port,
                        req.uri.path_and_query(),
                    );
                    let head = req.method == http::Method::HEAD;
                    ctx.route = Some(route);
                    return redirect::send(session, location, head).await.map(|_| true);
                }
                Ok(route) => {
                    ctx.route = Some(route);
                    return Ok(false);
                }
                Err(reply) => (reply, req.method == http::Method::HEAD),
            }
        };
        let reply = match (fetch, &self.read_through) {
            (Some((token, host)), Some(gate)) => match gate.fetch(&token, &host).await {
                Lookup::Found(found) => {
                    metrics::CHALLENGE_HITS.inc();
                    (200, found)
                }
                Lookup::Missing | Lookup::Skipped => {
                    metrics::CHALLENGE_MISSES.inc();
                    reply
                }
            },
            _ => reply,
        };
        respond(session, reply.0, reply.1, head).await?;
        Ok(true)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let Some(route) = ctx.route.as_ref() else {
            return Error::e_explain(pingora_error::ErrorType::HTTPStatus(404), "no route");
        };
        let addr = routing::pick(route, &mut ctx.tried)?;
        if let Some(t) = ctx.timing.as_mut() {
            t.upstream_started = Some(std::time::Instant::now());
        }
        let mut peer = HttpPeer::new(addr, false, String::new());
        let t = self.timeouts.with(&route.domain.upstream_timeouts);
        peer.options.connection_timeout = Some(t.connect);
        peer.options.read_timeout = Some(t.read);
        peer.options.write_timeout = Some(t.write);
        peer.options.idle_timeout = Some(t.idle);
        Ok(Box::new(peer))
    }

    /// 504 for an upstream that did not answer in time, 502 for one that could not be reached or
    /// broke the exchange; counted by reason.
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, _ctx: &mut Ctx) -> FailToProxy {
        let started = session.response_written().is_some();
        let code = errors::status_for(e, started);
        errors::count(e, code);
        if code > 0 {
            if let Err(err) = session.respond_error(code).await {
                log::debug!("sending the {code} to the client failed: {err}");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// What Pingora's error lines say about the request: method and path, no header values.
    fn request_summary(&self, session: &Session, _ctx: &Ctx) -> String {
        let req = session.req_header();
        crate::http1::check::describe(format!("{} {} ", req.method, req.uri.path()).as_bytes())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let (Some(route), Some(addr)) = (ctx.route.as_ref(), ctx.tried.last()) {
            route.pool.report(*addr, false);
        }
        let untried = ctx
            .route
            .as_ref()
            .is_some_and(|r| r.pool.addrs().len() > ctx.tried.len());
        if untried {
            log::debug!("connect to {peer} failed, trying another backend: {e}");
            e.set_retry(true);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        if let Some(t) = ctx.timing.as_mut() {
            // A retry keeps the id of the first attempt.
            if t.request_id.is_none() {
                let trusted = peer.is_some_and(|ip| self.forwarding.is_trusted(ip));
                t.request_id = Some(
                    trusted
                        .then(|| upstream.headers.get("x-request-id"))
                        .flatten()
                        .filter(|v| valid_request_id(v.as_bytes()))
                        .cloned()
                        .unwrap_or_else(crate::access_log::request_id),
                );
            }
            if let Some(id) = &t.request_id {
                // A refcount, no copy of the value.
                upstream.insert_header("x-request-id", id.clone())?;
            }
        }
        let proto = if self.tls { "https" } else { "http" };
        // The Host header's value as is (a refcount, no copy); HTTP/2 requests carry :authority.
        let host = match session.req_header().headers.get(http::header::HOST) {
            Some(h) => Some(h.clone()),
            None => {
                routing::request_host(session).and_then(|h| http::HeaderValue::from_str(h).ok())
            }
        };
        self.forwarding.apply(upstream, peer, proto, host)
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // Passive health: a 5xx counts against the backend, anything else clears its count.
        if let (Some(route), Some(addr)) = (ctx.route.as_ref(), ctx.tried.last()) {
            route
                .pool
                .report(*addr, upstream_response.status.as_u16() < 500);
        }
        if let Some(t) = ctx.timing.as_mut() {
            t.upstream_answered();
        }
        Ok(())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        if let Some(resp) = session.response_written() {
            metrics::count_request(resp.status.as_u16());
        }
        if let (Some(access), Some(timing)) = (&self.access_log, ctx.timing.as_mut()) {
            let retries = ctx.tried.len().saturating_sub(1);
            access::session_line(
                access,
                session,
                e,
                timing,
                ctx.tried.last().copied(),
                retries,
            );
        }
    }
}

/// A request id a trusted proxy sent that is kept: 1 to 128 visible ASCII characters.
fn valid_request_id(v: &[u8]) -> bool {
    (1..=128).contains(&v.len()) && v.iter().all(|b| b.is_ascii_graphic())
}

/// Write a complete `text/plain` response.
pub(crate) async fn respond(
    session: &mut Session,
    status: u16,
    body: Bytes,
    head: bool,
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(3))?;
    resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    write(session, resp, body, head).await
}

/// Send `resp` with a `text/plain` body (headers only for HEAD).
pub(crate) async fn write(
    session: &mut Session,
    mut resp: ResponseHeader,
    body: Bytes,
    head: bool,
) -> Result<()> {
    resp.insert_header(http::header::CONTENT_TYPE, "text/plain")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    if head {
        session.write_response_header(Box::new(resp), true).await
    } else {
        session.write_response_header(Box::new(resp), false).await?;
        session.write_response_body(Some(body), true).await
    }
}
