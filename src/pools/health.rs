//! Upstream health beyond Pingora's TCP check: an HTTP check (`edgeward.upstreams.health_check`) with
//! an expected status range, rise and fall counts, a `Host` header; every check's result recorded for
//! `GET /v1/upstreams`; and passive health: `fall` consecutive connect failures or 5xx answers of live
//! traffic take a backend out of rotation until its next good check.

use async_trait::async_trait;
use dashmap::DashMap;
use pingora_error::{Error, ErrorType, Result};
use pingora_load_balancing::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora_load_balancing::Backend;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// `edgeward.upstreams.health_check`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// `None`: a TCP connect is the check.
    pub http_path: Option<String>,
    pub host: String,
    /// Inclusive range of good statuses.
    pub expect: (u16, u16),
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: usize,
    pub fall: usize,
    /// Whether failures of live traffic take a backend out (only with the `health_check` section:
    /// without it, a 5xx never changes routing, as before).
    pub passive: bool,
}

impl HealthConfig {
    /// What edgeward did before the section existed: TCP, one check flips the state.
    pub fn tcp(interval: Duration, timeout: Duration) -> Self {
        HealthConfig {
            http_path: None,
            host: "localhost".into(),
            expect: (200, 399),
            interval,
            timeout,
            rise: 1,
            fall: 1,
            passive: false,
        }
    }
}

/// The last check of one backend.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckResult {
    pub at: String,
    pub ok: bool,
    pub error: Option<String>,
    /// Checks of this backend so far.
    pub checks: u64,
}

/// What traffic and the checks report about backends, shared by the pools and the check.
#[derive(Default)]
pub struct Observed {
    last: DashMap<SocketAddr, CheckResult>,
    /// Consecutive failures of live traffic, and whether that took the backend out.
    failures: DashMap<SocketAddr, (usize, bool)>,
    /// Entries in `failures`: the request path looks at the map only when there are some.
    tracked: AtomicUsize,
    /// Taken out by traffic.
    down: AtomicUsize,
    /// 0: passive health off.
    fall: AtomicUsize,
}

impl Observed {
    /// `fall` failures in a row take a backend out; 0: traffic never does.
    pub fn new(fall: usize) -> Arc<Self> {
        let o = Observed::default();
        o.fall.store(fall, Ordering::Relaxed);
        Arc::new(o)
    }

    /// Whether live traffic took `addr` out of rotation.
    pub fn passive_down(&self, addr: &SocketAddr) -> bool {
        self.down.load(Ordering::Relaxed) > 0 && self.failures.get(addr).is_some_and(|f| f.1)
    }

    /// A request to `addr` failed to connect or got a 5xx.
    pub fn failed(&self, addr: SocketAddr) {
        let fall = self.fall.load(Ordering::Relaxed);
        if fall == 0 {
            return;
        }
        let mut e = self.failures.entry(addr).or_insert_with(|| {
            self.tracked.fetch_add(1, Ordering::Relaxed);
            (0, false)
        });
        e.0 += 1;
        if e.0 >= fall && !e.1 {
            e.1 = true;
            self.down.fetch_add(1, Ordering::Relaxed);
            log::warn!(
                "upstream {addr}: {} failures in a row, out of rotation until its next good check",
                e.0
            );
        }
    }

    /// A request to `addr` got an answer below 500: its count starts again (a backend taken out
    /// stays out until a check passes).
    pub fn answered(&self, addr: SocketAddr) {
        if self.tracked.load(Ordering::Relaxed) == 0 {
            return;
        }
        let removed = self.failures.remove_if(&addr, |_, f| !f.1);
        if removed.is_some() {
            self.tracked.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn checked(&self, addr: SocketAddr, result: &Result<()>) {
        let ok = result.is_ok();
        if ok {
            if let Some((_, (_, down))) = self.failures.remove(&addr) {
                self.tracked.fetch_sub(1, Ordering::Relaxed);
                if down {
                    self.down.fetch_sub(1, Ordering::Relaxed);
                    log::info!("upstream {addr}: its check passed, back in rotation");
                }
            }
        }
        let at = crate::tls::rfc3339(crate::model::unix_now() as i64);
        let error = result.as_ref().err().map(|e| e.to_string());
        let checks = self.last.get(&addr).map_or(0, |r| r.checks) + 1;
        self.last.insert(
            addr,
            CheckResult {
                at,
                ok,
                error,
                checks,
            },
        );
    }

    pub fn last_check(&self, addr: &SocketAddr) -> Option<CheckResult> {
        self.last.get(addr).map(|r| r.clone())
    }
}

/// The configured check, recording each result into `Observed`.
pub struct Recording {
    inner: Box<dyn HealthCheck + Send + Sync>,
    observed: Arc<Observed>,
}

impl Recording {
    pub fn new(c: &HealthConfig, observed: Arc<Observed>) -> Self {
        let inner: Box<dyn HealthCheck + Send + Sync> = match &c.http_path {
            None => {
                let mut hc = TcpHealthCheck::new();
                hc.peer_template.options.connection_timeout = Some(c.timeout);
                hc.consecutive_success = c.rise;
                hc.consecutive_failure = c.fall;
                hc
            }
            Some(path) => {
                let mut hc = HttpHealthCheck::new(&c.host, false);
                hc.req = pingora_http::RequestHeader::build("GET", path.as_bytes(), None)
                    .expect("a validated path builds a request");
                hc.req
                    .insert_header("Host", c.host.as_str())
                    .expect("a validated host is a header value");
                hc.req
                    .insert_header("User-Agent", "edgeward-health-check")
                    .expect("static header");
                hc.peer_template.options.connection_timeout = Some(c.timeout);
                hc.peer_template.options.read_timeout = Some(c.timeout);
                hc.peer_template.options.write_timeout = Some(c.timeout);
                hc.consecutive_success = c.rise;
                hc.consecutive_failure = c.fall;
                let (lo, hi) = c.expect;
                hc.validator = Some(Box::new(move |resp| {
                    let s = resp.status.as_u16();
                    if (lo..=hi).contains(&s) {
                        Ok(())
                    } else {
                        Error::e_explain(
                            ErrorType::CustomCode("unexpected status", s),
                            format!("status {s}, expected {lo}-{hi}"),
                        )
                    }
                }));
                Box::new(hc)
            }
        };
        Recording { inner, observed }
    }
}

#[async_trait]
impl HealthCheck for Recording {
    async fn check(&self, target: &Backend) -> Result<()> {
        let r = self.inner.check(target).await;
        if let Some(addr) = target.addr.as_inet() {
            self.observed.checked(*addr, &r);
        }
        r
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        log::info!(
            "upstream {}: health check says {}",
            target.addr,
            if healthy { "up" } else { "down" }
        );
        self.inner.health_status_change(target, healthy).await
    }

    fn health_threshold(&self, success: bool) -> usize {
        self.inner.health_threshold(success)
    }
}

/// `"200-399"` or `"200"`: the inclusive status range a check must get.
pub fn parse_expect(s: &str) -> Option<(u16, u16)> {
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
        None => {
            let v = s.trim().parse().ok()?;
            (v, v)
        }
    };
    ((100..=599).contains(&lo) && (lo..=599).contains(&hi)).then_some((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_ranges_parse() {
        assert_eq!(parse_expect("200-399"), Some((200, 399)));
        assert_eq!(parse_expect("204"), Some((204, 204)));
        assert_eq!(parse_expect(" 200 - 299 "), Some((200, 299)));
        for bad in ["", "abc", "399-200", "99", "200-600", "200-"] {
            assert_eq!(parse_expect(bad), None, "{bad}");
        }
    }

    #[test]
    fn without_passive_health_traffic_changes_nothing() {
        let o = Observed::new(0);
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        for _ in 0..10 {
            o.failed(a);
        }
        assert!(!o.passive_down(&a));
    }

    #[test]
    fn traffic_failures_take_a_backend_out_until_a_good_check() {
        let o = Observed::new(3);
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        o.failed(a);
        o.failed(a);
        o.answered(a); // the count starts again
        o.failed(a);
        o.failed(a);
        assert!(!o.passive_down(&a));
        o.failed(a);
        assert!(o.passive_down(&a));
        o.answered(a); // an answer does not bring it back: a check does
        assert!(o.passive_down(&a));
        o.checked(a, &Error::e_explain(ErrorType::ConnectRefused, "x"));
        assert!(o.passive_down(&a));
        assert!(!o.last_check(&a).unwrap().ok);
        o.checked(a, &Ok(()));
        assert!(!o.passive_down(&a));
        assert!(o.last_check(&a).unwrap().ok);
    }
}
