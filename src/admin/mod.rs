//! The admin API: JSON over HTTP/1.1 on its own listener. Every call but `GET /v1/health` needs the
//! bearer token. A call that changes something returns once the change is durable and live.

mod activity;
pub mod auth;
mod console;
pub mod list;
pub mod listener;
pub mod ops;

use crate::control::{ApplyError, Control, Writes};
use crate::model::{Change, FieldError};
use crate::store::StoreError;
use crate::tls::CertInfo;
use async_trait::async_trait;
use auth::AdminToken;
use http::{Method, Response, StatusCode};
use percent_encoding::percent_decode_str;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde::Serialize;
use serde_json::json;
use std::sync::Arc;

/// Largest request body accepted (a batch of many thousands of ops fits).
pub const MAX_BODY: usize = 64 << 20;

pub struct AdminApp {
    pub control: Arc<Control>,
    pub token: AdminToken,
    pub limits: ops::Limits,
    /// This node runs the ACME manager (`edgeward.acme`): renew requests can be served.
    pub orders: bool,
}

type Reply = Response<Vec<u8>>;

/// The OpenAPI 3.1 description of this API, served at `GET /v1/openapi.json`. The integration test
/// `openapi` calls every operation in it with its examples and checks the answers against it.
pub const OPENAPI: &str = include_str!("openapi.json");

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Reply {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        if method == Method::GET && path == "/v1/health" {
            // Which process answers, and whether it writes: an upgrade script waits for the new pid
            // to report `"writer": "open"`.
            let writer = match *self.control.writes().borrow() {
                Writes::Waiting => "waiting",
                Writes::Open => "open",
                Writes::Closing | Writes::Closed => "handed_over",
            };
            return reply(
                StatusCode::OK,
                &json!({"status": "ok", "pid": std::process::id(), "writer": writer}),
            );
        }
        // The console's page and assets: no data in them, so no token (the page asks for it).
        if let Some(r) = console::serve(&method, &path) {
            return r;
        }
        let auth = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        if !self.token.accepts(auth) {
            let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            r.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                "Bearer".parse().expect("static header"),
            );
            return r;
        }
        let body = match read_body(session).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        self.route(session, &method, &path, &body).await
    }
}

impl AdminApp {
    async fn route(
        &self,
        session: &mut ServerSession,
        method: &Method,
        path: &str,
        body: &[u8],
    ) -> Reply {
        let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
        let query = session.req_header().uri.query().map(str::to_string);
        let query = query.as_deref();
        let decoded = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        match (method.as_str(), segs.as_slice()) {
            ("GET", ["metrics"]) => {
                self.control.refresh_scrape_gauges();
                pingora_prometheus::PrometheusHttpApp
                    .response(session)
                    .await
            }
            ("GET", ["v1", "openapi.json"]) => {
                let body = OPENAPI.as_bytes().to_vec();
                Response::builder()
                    .status(StatusCode::OK)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .header(http::header::CONTENT_LENGTH, body.len())
                    .body(body)
                    .expect("static response")
            }
            ("GET", ["v1", "domains"]) => self.list_domains(query),
            ("GET", ["v1", "upstreams"]) => reply(StatusCode::OK, &self.control.pools().backends()),
            ("GET", ["v1", "domains", host]) => self.get_domain(&decoded(host)),
            ("PUT", ["v1", "domains", host]) => {
                let r = ops::put_domain(&decoded(host), body, self.limits);
                self.change(r, StatusCode::OK).await
            }
            ("POST", ["v1", "domains", host, "renew"]) => self.renew(&decoded(host)),
            ("GET", ["v1", "events"]) => self.events(query),
            ("DELETE", ["v1", "domains", host]) => {
                let r = ops::domain_host(&decoded(host)).map(|host| Change::DeleteDomain { host });
                self.change(r, StatusCode::NO_CONTENT).await
            }
            ("GET", ["v1", "challenges", token]) => match self.control.challenge(&decoded(token)) {
                Some(c) => reply(StatusCode::OK, &c),
                None => error(StatusCode::NOT_FOUND, "challenge not found"),
            },
            ("PUT", ["v1", "challenges", token]) => {
                let r = ops::put_challenge(&decoded(token), body, self.limits);
                self.change(r, StatusCode::OK).await
            }
            ("DELETE", ["v1", "challenges", token]) => {
                let r = Ok(Change::DeleteChallenge {
                    token: decoded(token),
                });
                self.change(r, StatusCode::NO_CONTENT).await
            }
            ("GET", ["v1", "certificates"]) => certificates(query, self.control.certificates()),
            ("GET", ["v1", "challenges"]) => list_sorted(
                query,
                self.control.challenges(),
                |c| c.token.as_str(),
                Clone::clone,
            ),
            ("GET", ["v1", "certificates", host]) => match ops::domain_host(&decoded(host)) {
                Ok(h) => match self.control.certificate(&h) {
                    Some(b) => reply(StatusCode::OK, &CertInfo::from(b.as_ref())),
                    None => error(
                        StatusCode::NOT_FOUND,
                        &format!("certificate `{h}` not found"),
                    ),
                },
                Err(e) => field_error(e),
            },
            ("PUT", ["v1", "certificates", host]) => {
                let r = ops::put_certificate(&decoded(host), body);
                self.change(r, StatusCode::OK).await
            }
            ("DELETE", ["v1", "certificates", host]) => {
                let r =
                    ops::domain_host(&decoded(host)).map(|host| Change::DeleteCertificate { host });
                self.change(r, StatusCode::NO_CONTENT).await
            }
            ("POST", ["v1", "batch"]) => {
                match ops::batch(body, self.limits, self.control.atomic_limit()) {
                    Ok(changes) => {
                        let n = changes.len();
                        let note = activity::batch_note(&changes);
                        match self.control.apply(changes).await {
                            Ok(()) => {
                                self.record(note);
                                reply(StatusCode::OK, &json!({"applied": n}))
                            }
                            Err(e) => apply_error(e),
                        }
                    }
                    Err(e) => field_error(e),
                }
            }
            (_, ["metrics"])
            | (
                _,
                ["v1", "domains" | "challenges" | "batch" | "upstreams" | "certificates" | "events", ..],
            )
            | (_, ["v1", "openapi.json"]) => error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this path",
            ),
            _ => error(StatusCode::NOT_FOUND, "no such endpoint"),
        }
    }

    /// A domain as the API shows it: the stored object, plus `certificate`: for `tls: "auto"` the
    /// manager's status, for `tls: "manual"` the state and expiry of the certificate it is served.
    fn domain_view(&self, d: &crate::model::Domain) -> serde_json::Value {
        use crate::model::TlsMode;
        let mut v = serde_json::to_value(d).unwrap_or_default();
        match d.tls {
            TlsMode::Auto => {
                let status = self.control.acme_status(&d.host).unwrap_or_default();
                v["certificate"] = serde_json::to_value(status).unwrap_or_default();
                v["certificate"]["renewal_requested"] =
                    self.control.renewal_requested(&d.host).into();
            }
            TlsMode::Manual => {
                let (state, not_after) = self.cert_state(d);
                v["certificate"] = json!({
                    "state": state,
                    "not_after": not_after.map(crate::tls::rfc3339),
                });
            }
            TlsMode::Off => {}
        }
        v
    }

    /// `GET /v1/domains`, paged and filtered (`list`).
    fn list_domains(&self, query: Option<&str>) -> Reply {
        let allowed = [
            "limit",
            "after",
            "prefix",
            "cert_state",
            "expiring_within_days",
        ];
        let q = match list::parse(query, &allowed) {
            Ok(q) => q,
            Err(e) => return field_error(e),
        };
        let now = crate::model::unix_now() as i64;
        let horizon = q.expiring_within_days.map(|d| now + d as i64 * 86_400);
        let mut pager = list::Pager::new(&q);
        self.control
            .scan_domains(q.after.as_deref(), &q.prefix, |d| {
                let (state, not_after) = self.cert_state(d);
                let keep = q.cert_state.is_none_or(|want| state == Some(want))
                    && horizon.is_none_or(|h| not_after.is_some_and(|t| t <= h));
                !keep || pager.offer(self.domain_view(d))
            });
        let (items, next) = pager.finish(|v| v["host"].as_str().unwrap_or(""));
        reply(StatusCode::OK, &list::body(&items, next, &q))
    }

    /// The state of the certificate a domain is served, and its expiry: Let's Encrypt domains as
    /// the manager reports them; manual ones `valid` while a stored certificate covers them, else
    /// `pending`; `tls: off` none.
    fn cert_state(
        &self,
        d: &crate::model::Domain,
    ) -> (Option<crate::acme::CertState>, Option<i64>) {
        use crate::acme::CertState;
        use crate::model::TlsMode;
        let bundle = self.control.certificate(d.certificate_host.host(&d.host));
        let not_after = bundle.as_ref().map(|b| b.not_after);
        let state = match d.tls {
            TlsMode::Off => None,
            TlsMode::Auto => Some(self.control.acme_status(&d.host).unwrap_or_default().state),
            _ => Some(match &bundle {
                Some(b) if b.not_after > crate::model::unix_now() as i64 => CertState::Valid,
                Some(_) => CertState::Failed,
                None => CertState::Pending,
            }),
        };
        (state, not_after)
    }

    fn get_domain(&self, host: &str) -> Reply {
        match self.stored_domain(host) {
            Ok(d) => reply(StatusCode::OK, &self.domain_view(&d)),
            Err(r) => *r,
        }
    }

    /// The domain named in a path: 400 for a host that is not one, 404 for one that is not stored.
    fn stored_domain(&self, host: &str) -> Result<crate::model::Domain, Box<Reply>> {
        let h = ops::domain_host(host).map_err(|e| Box::new(field_error(e)))?;
        self.control.domain(&h).ok_or_else(|| {
            Box::new(error(
                StatusCode::NOT_FOUND,
                &format!("domain `{h}` not found"),
            ))
        })
    }

    /// Apply one validated change and answer with what is now stored (204 for a delete).
    async fn change(&self, change: Result<Change, FieldError>, ok: StatusCode) -> Reply {
        let change = match change {
            Ok(c) => c,
            Err(e) => return field_error(e),
        };
        let shown = match &change {
            Change::PutDomain(d) => serde_json::to_value(d).ok(),
            Change::PutChallenge(c) => serde_json::to_value(c).ok(),
            _ => None,
        };
        let cert_host = match &change {
            Change::PutCertificate(c) => Some(c.host.clone()),
            _ => None,
        };
        let note = activity::note(&change);
        if let Err(e) = self.control.apply(vec![change]).await {
            return apply_error(e);
        }
        self.record(note);
        // A certificate answers with what is now served, never with the key.
        let shown = match cert_host.and_then(|h| self.control.certificate(&h)) {
            Some(b) => serde_json::to_value(CertInfo::from(b.as_ref())).ok(),
            None => shown,
        };
        match shown {
            Some(v) => reply(ok, &v),
            None => Response::builder()
                .status(ok)
                .body(Vec::new())
                .expect("static response"),
        }
    }
}

async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, Reply> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "request body too large",
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    &format!("cannot read body: {e}"),
                ))
            }
        }
    }
}

/// `GET /v1/certificates`: by host, or with `sort=not_after` soonest expiry first (the cursor is then
/// the `next` of the previous page: an expiry and a host).
fn certificates(query: Option<&str>, all: Vec<Arc<crate::tls::CertBundle>>) -> Reply {
    let q = match list::parse(query, &["limit", "after", "prefix", "sort"]) {
        Ok(q) => q,
        Err(e) => return field_error(e),
    };
    let view = |b: &Arc<crate::tls::CertBundle>| CertInfo::from(b.as_ref());
    if !q.by_expiry {
        let (items, next) = list::page(all, |b| b.host.as_str(), &q);
        let shown: Vec<CertInfo> = items.iter().map(view).collect();
        return reply(StatusCode::OK, &list::body(&shown, next, &q));
    }
    // Expiry first, then host: a key that sorts as text (seconds zero-padded).
    let mut keyed: Vec<(String, Arc<crate::tls::CertBundle>)> = all
        .into_iter()
        .filter(|b| b.host.starts_with(&q.prefix))
        .map(|b| (format!("{:012}_{}", b.not_after.max(0), b.host), b))
        .collect();
    keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let q = list::ListQuery {
        prefix: String::new(),
        ..q
    };
    let (items, next) = list::page(keyed, |(k, _)| k.as_str(), &q);
    let shown: Vec<CertInfo> = items.iter().map(|(_, b)| view(b)).collect();
    reply(StatusCode::OK, &list::body(&shown, next, &q))
}

/// A list sorted by `key` (certificates, challenges), paged by `limit`, `after` and `prefix`, each
/// item shown as `view` makes it.
fn list_sorted<T, V: Serialize>(
    query: Option<&str>,
    all: Vec<T>,
    key: impl Fn(&T) -> &str,
    view: impl Fn(&T) -> V,
) -> Reply {
    match list::parse(query, &["limit", "after", "prefix"]) {
        Ok(q) => {
            let (items, next) = list::page(all, key, &q);
            let shown: Vec<V> = items.iter().map(view).collect();
            reply(StatusCode::OK, &list::body(&shown, next, &q))
        }
        Err(e) => field_error(e),
    }
}

fn reply<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Reply {
    let mut body = serde_json::to_vec_pretty(value).expect("API objects always serialize");
    body.push(b'\n');
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(body)
        .expect("static response")
}

fn error(status: StatusCode, message: &str) -> Reply {
    reply(status, &json!({ "error": message }))
}

fn field_error(e: FieldError) -> Reply {
    reply(
        StatusCode::BAD_REQUEST,
        &json!({ "error": e.to_string(), "field": e.field }),
    )
}

/// 503 with `Retry-After` (seconds).
fn retry_later(message: &str, seconds: &'static str) -> Reply {
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, message);
    r.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static(seconds),
    );
    r
}

fn apply_error(e: ApplyError) -> Reply {
    match e {
        ApplyError::Invalid(fe) => field_error(fe),
        ApplyError::NotFound(m) => error(StatusCode::NOT_FOUND, &m),
        // The store kept failing for its whole wait (etcd: no quorum, or no leader for
        // `leader_wait_ms`); nothing was acknowledged, the request can be sent again.
        ApplyError::Store(StoreError::Unavailable(m)) => retry_later(&m, "2"),
        ApplyError::Fenced => error(StatusCode::CONFLICT, "the fleet lock was lost"),
        // A graceful upgrade hands the writer role over: the other process answers in a moment.
        ApplyError::NotWriter(m) => retry_later(&m, "1"),
        ApplyError::Store(e) => {
            log::error!("state store write failed: {e}");
            let full = matches!(&e, StoreError::Io { source, .. }
                if matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)));
            let status = if full {
                StatusCode::INSUFFICIENT_STORAGE
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            error(
                status,
                &format!("state store write failed (nothing changed): {e}"),
            )
        }
    }
}
