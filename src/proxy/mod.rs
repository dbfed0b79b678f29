//! The Pingora `ProxyHttp` for the public listeners. Per request: the challenge responder (if this
//! listener intercepts), then the route lookup, then an upstream from the route's pool. Lookups only:
//! no I/O, no parsing, no lock held across an await.

pub mod challenge;
pub mod front;
pub mod redirect;
pub mod routing;

use crate::metrics;
use crate::model::host::normalize_request_host;
use crate::model::{unix_now, Challenge};
use crate::state::{Reader, Route};
use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::modules::http::HttpModules;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{ProxyHttp, Session};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

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
    pub connect_timeout: Duration,
    /// Fleet mode: where to look for a challenge token before answering 404.
    pub read_through: Option<Arc<dyn ReadThrough>>,
}

#[derive(Default)]
pub struct Ctx {
    route: Option<Arc<Route>>,
    tried: Vec<SocketAddr>,
}

impl EdgeProxy {
    /// Fleet mode: a token another node registered may not have reached this node's memory yet; look
    /// in the store before answering 404. (The fleet watch brings it into memory shortly after.)
    async fn read_through(&self, token: &str, host: &str) -> Option<Bytes> {
        let c = self.read_through.as_ref()?.fetch(token).await?;
        (c.host == host && c.expires_at > unix_now()).then(|| Bytes::from(c.key_authorization))
    }
}

#[async_trait]
impl ProxyHttp for EdgeProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
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
            let host = routing::request_host(session).map(normalize_request_host);
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
                        fetch = self
                            .read_through
                            .as_ref()
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
        let reply = match fetch {
            Some((token, host)) => match self.read_through(&token, &host).await {
                Some(found) => {
                    metrics::CHALLENGE_HITS.inc();
                    (200, found)
                }
                None => {
                    metrics::CHALLENGE_MISSES.inc();
                    reply
                }
            },
            None => reply,
        };
        respond(session, reply.0, reply.1, head).await?;
        Ok(true)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let Some(route) = ctx.route.as_ref() else {
            return Error::e_explain(pingora_error::ErrorType::HTTPStatus(404), "no route");
        };
        let addr = routing::pick(route, &mut ctx.tried)?;
        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.options.connection_timeout = Some(self.connect_timeout);
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
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
        _ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(ip) = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip())
        {
            let xff = routing::forwarded_for(
                upstream
                    .headers
                    .get("x-forwarded-for")
                    .map(|v| v.as_bytes()),
                ip,
            );
            upstream.insert_header("x-forwarded-for", xff)?;
        }
        let proto = if self.tls { "https" } else { "http" };
        upstream.insert_header("x-forwarded-proto", http::HeaderValue::from_static(proto))?;
        // The Host header's value as is (a refcount, no copy); HTTP/2 requests carry :authority.
        let host = match session.req_header().headers.get(http::header::HOST) {
            Some(h) => Some(h.clone()),
            None => {
                routing::request_host(session).and_then(|h| http::HeaderValue::from_str(h).ok())
            }
        };
        if let Some(host) = host {
            upstream.insert_header("x-forwarded-host", host)?;
        }
        Ok(())
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, _ctx: &mut Ctx) {
        if let Some(resp) = session.response_written() {
            metrics::count_request(resp.status.as_u16());
        }
    }
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
