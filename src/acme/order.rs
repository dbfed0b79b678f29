//! One order's life in the manager: the budget taken as it is placed, the order run with its own
//! record of what the CA asked, its challenges removed however it ended, the certificate published (or
//! the failure recorded as a back-off, per name or for the whole account), and the event of each step.

use super::client::{self, Issued, OrderError, Responder};
use super::manager::{Manager, Track};
use super::responder::ControlResponder;
use super::schedule::{jitter_of, next_attempt};
use crate::control::unix_now;
use crate::events::Kind;
use crate::metrics;
use crate::model::{AcmeChallenge, Backoff, CertRecord, CertSource, Change};
use crate::tls::rfc3339;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

impl Manager {
    pub(super) async fn run_order(
        self: &Arc<Self>,
        host: &str,
        lock: &crate::store::OrderLock,
        responder: &ControlResponder,
    ) {
        // The budget is taken now that the order is placed; none left (another order took the last):
        // wait for the window, no failure.
        let placed = self.take_budget(unix_now() as i64).await;
        self.reserved.fetch_sub(1, Ordering::SeqCst);
        let now = unix_now() as i64;
        let wait_until = match placed {
            Ok(true) => None,
            Ok(false) => Some(self.control.acme_stored().budget.next_free(
                now,
                self.cfg.max_orders_per_window,
                self.cfg.order_window_seconds,
            )),
            Err(e) => {
                log::warn!("cannot persist the ACME order budget: {e}");
                Some(now + 5)
            }
        };
        if let Some(at) = wait_until {
            self.tracks().entry(host.to_string()).or_default().in_flight = false;
            self.set_next(host, at);
            return;
        }
        let bundle = self.control.certificate(host);
        let asked = self.control.renewal_requested(host);
        self.control.renewal_done(host);
        let why = match (&bundle, asked) {
            (None, _) => "ordering a first certificate".to_string(),
            (Some(_), true) => "renewing now, as asked".to_string(),
            (Some(b), false) => format!("renewing (expires {})", rfc3339(b.not_after)),
        };
        self.control
            .events()
            .record(Kind::OrderStarted, Some(host), why, None);
        let renewal = bundle.is_some();
        let replaces = bundle
            .as_ref()
            .filter(|_| self.ari_offered())
            .and_then(|b| client::cert_id(&b.leaf));
        // A CA that stops answering must not hold a slot forever: bound the whole order.
        let limit = Duration::from_secs(self.cfg.order_timeout_seconds.saturating_mul(2));
        let kind = self
            .control
            .domain(host)
            .map_or(AcmeChallenge::Http01, |d| d.challenge());
        let order = async {
            let account = self.account().await?;
            client::issue(
                &account, &self.cfg, &self.http, host, kind, replaces, responder,
            )
            .await
        };
        // What the CA asks (`Retry-After`) is recorded for this order alone.
        let (result, asked) = client::scoped(tokio::time::timeout(limit, order)).await;
        // Whatever ended the order (its result or the timeout): its tokens and TXT records go.
        responder.remove_all().await;
        let result = match result {
            Ok(r) => r,
            Err(_) => Err(OrderError::TimedOut(limit.as_secs())),
        };
        if let Err(e) = &result {
            if e.kind() == "accountDoesNotExist" {
                self.forget_account().await;
            }
        }
        let now = unix_now() as i64;
        let outcome = match result {
            Ok(issued) => self.publish(host, issued, lock, responder).await,
            Err(e) => Err(e),
        };
        let stored = self.control.acme_stored().budget.backoff.get(host).cloned();
        let (t, persist) = {
            let mut tracks = self.tracks();
            let t = tracks.entry(host.to_string()).or_default();
            t.in_flight = false;
            // The back-off to persist once the lock on the tracks is released.
            let mut persist: Option<(Option<Backoff>, i64)> = None;
            match outcome {
                Ok(()) => {
                    metrics::ACME_ORDERS.with_label_values(&["ok"]).inc();
                    if renewal {
                        metrics::ACME_RENEWALS.inc();
                    }
                    log::info!("certificate for {host} issued");
                    let what = if renewal {
                        "certificate renewed"
                    } else {
                        "certificate issued"
                    };
                    self.control
                        .events()
                        .record(Kind::OrderIssued, Some(host), what.into(), None);
                    *t = Track::default();
                    if stored.is_some() {
                        persist = Some((None, 0));
                    }
                }
                Err(OrderError::Abandoned) => {
                    metrics::ACME_ORDERS.with_label_values(&["abandoned"]).inc();
                    log::info!("order for {host} abandoned");
                    self.control.events().record(
                        Kind::OrderAbandoned,
                        Some(host),
                        "order abandoned: the domain no longer wants this certificate".into(),
                        None,
                    );
                }
                Err(e) => {
                    metrics::ACME_ORDERS.with_label_values(&["failed"]).inc();
                    metrics::ACME_FAILURES.with_label_values(&[&e.kind()]).inc();
                    t.failures = t.failures.max(stored.as_ref().map_or(0, |b| b.failures)) + 1;
                    let retry_after = asked.map(|a| unix_of(a.until));
                    let account_wide = asked.is_some_and(|a| account_level(a.status, &e));
                    t.next_attempt = next_attempt(
                        now,
                        t.failures,
                        self.cfg.retry_min_seconds,
                        self.cfg.retry_max_seconds,
                        jitter_of(host),
                        retry_after.filter(|_| !account_wide),
                    );
                    t.last_error = Some(error_chain(&e));
                    let paused = if account_wide {
                        let until = retry_after.unwrap_or(now);
                        log::warn!(
                            "the CA limits the account (or is unavailable): no new order before {}",
                            rfc3339(until)
                        );
                        until
                    } else {
                        0
                    };
                    let entry = Backoff {
                        until: t.next_attempt,
                        failures: t.failures,
                        last_error: t.last_error.as_ref().map(|e| truncate(e, 300)),
                    };
                    persist = Some((Some(entry), paused));
                    log::warn!(
                        "order for {host} failed ({} in a row), next attempt {}: {e}",
                        t.failures,
                        rfc3339(t.next_attempt)
                    );
                    self.control.events().record(
                        Kind::OrderFailed,
                        Some(host),
                        format!(
                            "order failed ({} in a row); next attempt {}",
                            t.failures,
                            rfc3339(t.next_attempt)
                        ),
                        t.last_error.clone(),
                    );
                }
            }
            (t.clone(), persist)
        };
        if let Some((entry, paused)) = persist {
            let update = move |b: &mut crate::model::Budget| {
                b.set_backoff(host, entry.clone(), paused, now);
                true
            };
            if let Err(e) = self.control.update_budget(&update).await {
                log::warn!("cannot persist the back-off of {host}: {e}");
            }
        }
        self.publish_status(host, &t, now);
    }

    /// Store and serve a new certificate, unless the domain stopped wanting it meanwhile.
    async fn publish(
        &self,
        host: &str,
        issued: Issued,
        lock: &crate::store::OrderLock,
        responder: &ControlResponder,
    ) -> Result<(), OrderError> {
        if !responder.still_wanted(host) {
            return Err(OrderError::Abandoned);
        }
        let record = CertRecord {
            host: host.to_string(),
            chain_pem: issued.chain_pem,
            key_pem: issued.key_pem,
            source: CertSource::Acme,
        };
        crate::tls::bundle::parse(&record, unix_now() as i64, true).map_err(|e| {
            OrderError::Local(format!("the CA's certificate does not validate: {e}"))
        })?;
        self.control
            .apply_fenced(vec![Change::PutCertificate(record)], lock)
            .await
            .map_err(|e| OrderError::Local(format!("storing the certificate: {e}")))
    }
}

/// An error with its causes (`client error (Connect): invalid peer certificate: UnknownIssuer`), so the
/// operator sees why, not only that.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = s.source();
    }
    out
}

/// Unix seconds of a `SystemTime` (0 before 1970).
pub(super) fn unix_of(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Does a refusal with a `Retry-After` concern the whole account rather than this order's name? A
/// 503 (the CA is unavailable) and a rate limit on the account (Let's Encrypt's new orders per
/// account: "too many new orders ... from this account") do; per-name limits (duplicate certificate,
/// failed validations for a host) do not.
fn account_level(status: u16, e: &OrderError) -> bool {
    status == 503 || (e.kind() == "rateLimited" && e.to_string().to_lowercase().contains("account"))
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}
