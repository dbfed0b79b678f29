//! The background service that keeps `tls: "auto"` domains certified. Domains wait in a renewal queue
//! (`queue`, placed by `plan`) by their next due time; each wake moves the changed domains, starts the
//! due ones (soonest expiry first) within the concurrency limit and the persisted new-order budget,
//! and sleeps until the earliest is due or a change wakes it: nothing is scanned. A failing domain
//! backs off on its own and never blocks the others.

use super::client::{self, CaHttp, Issued, OrderError, Responder};
use super::queue::Queue;
use super::responder::ControlResponder;
use super::schedule::{jitter_of, next_attempt};
use super::{AcmeConfig, CertState, CertStatus};
use crate::control::handover::{until_closing, until_writable, Handover};
use crate::control::{unix_now, ApplyError, Control};
use crate::events::Kind;
use crate::metrics;
use crate::model::{AccountRecord, AcmeChallenge, Backoff, Change};
use crate::model::{CertRecord, CertSource};
use crate::tls::rfc3339;
use async_trait::async_trait;
use instant_acme::Account;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// The CA's renewal window for one certificate (ARI), and when to ask again.
#[derive(Debug, Clone)]
pub(super) struct AriWindow {
    serial: String,
    pub(super) start: i64,
    pub(super) end: i64,
    pub(super) refetch_at: i64,
}

#[derive(Debug, Default, Clone)]
pub(super) struct Track {
    pub(super) failures: u32,
    pub(super) next_attempt: i64,
    pub(super) last_error: Option<String>,
    pub(super) in_flight: bool,
}

pub struct Manager {
    pub(super) cfg: AcmeConfig,
    pub(super) control: Arc<Control>,
    http: CaHttp,
    /// Loaded or created on first use; dropped when the CA no longer knows it.
    account: tokio::sync::Mutex<Option<Arc<Account>>>,
    tracks: Mutex<HashMap<String, Track>>,
    slots: Arc<Semaphore>,
    /// ARI windows by host; `ari_offered` becomes false once the directory says it has no ARI.
    ari: Mutex<HashMap<String, AriWindow>>,
    ari_offered: std::sync::atomic::AtomicBool,
    pub(super) ari_fetching: Arc<Semaphore>,
    /// Domains by next due time; `ari` hosts by when their ARI window is to be (re)fetched.
    queue: Mutex<Queue>,
    ari_due: Mutex<Queue>,
    /// Orders started that have not taken their share of the budget yet.
    reserved: AtomicUsize,
}

impl Manager {
    pub fn new(cfg: AcmeConfig, control: Arc<Control>) -> Result<Arc<Self>, String> {
        let http = CaHttp::new(cfg.ca_bundle.as_deref())?;
        let slots = Arc::new(Semaphore::new(cfg.max_concurrent_orders));
        control.follow_acme();
        Ok(Arc::new(Manager {
            cfg,
            control,
            http,
            account: Default::default(),
            tracks: Mutex::default(),
            slots,
            ari: Mutex::default(),
            ari_offered: std::sync::atomic::AtomicBool::new(true),
            ari_fetching: Arc::new(Semaphore::new(2)),
            queue: Mutex::default(),
            ari_due: Mutex::default(),
            reserved: AtomicUsize::new(0),
        }))
    }

    pub(super) fn tracks(&self) -> std::sync::MutexGuard<'_, HashMap<String, Track>> {
        self.tracks.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn ari_queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.ari_due.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The account: loaded from the store, or created once and stored (0600).
    async fn account(&self) -> Result<Arc<Account>, OrderError> {
        let mut slot = self.account.lock().await;
        if let Some(a) = slot.as_ref() {
            return Ok(a.clone());
        }
        let stored = self
            .control
            .acme_stored()
            .account
            .filter(|a| a.directory == self.cfg.directory);
        let (account, created) = client::account(
            &self.cfg,
            &self.http,
            stored.as_ref().map(|a| a.credentials.as_str()),
        )
        .await?;
        if let Some(credentials) = created {
            log::info!(
                "created ACME account {} at {}",
                account.id(),
                self.cfg.directory
            );
            let record = AccountRecord {
                directory: self.cfg.directory.clone(),
                credentials,
            };
            self.control
                .apply(vec![Change::PutAcmeAccount(record)])
                .await
                .map_err(|e| OrderError::Local(format!("storing the ACME account: {e}")))?;
        }
        if let Some(p) = self.cfg.profile.as_deref() {
            let offered: Vec<String> = account.profiles().map(|m| m.name.to_string()).collect();
            if let Some(why) = client::profile_refusal(p, &self.cfg.directory, &offered) {
                return Err(OrderError::Local(format!("edgeward.acme.profile {why}")));
            }
        }
        let account = Arc::new(account);
        *slot = Some(account.clone());
        Ok(account)
    }

    /// The CA says the account does not exist (deactivated, or a test CA restarted): forget it so the
    /// next order registers a new one.
    async fn forget_account(&self) {
        *self.account.lock().await = None;
        let mut stored = self.control.acme_stored();
        if stored.account.take().is_some() {
            log::warn!("the CA no longer knows the stored ACME account; a new one will be created");
            let record = AccountRecord {
                directory: String::new(),
                credentials: String::new(),
            };
            let _ = self
                .control
                .apply(vec![Change::PutAcmeAccount(record)])
                .await;
        }
    }

    /// At start-up, with `acme.profile` set: refuse a profile the directory does not list. A CA that
    /// does not answer within 10 s is not a reason to refuse to start (orders check again).
    pub async fn check_profile(&self) -> Result<(), String> {
        let Some(p) = self.cfg.profile.as_deref() else {
            return Ok(());
        };
        let dir = &self.cfg.directory;
        let listed = client::directory_profiles(&self.http, dir);
        match tokio::time::timeout(Duration::from_secs(10), listed).await {
            Ok(Ok(offered)) => match client::profile_refusal(p, dir, &offered) {
                Some(why) => Err(format!("edgeward.acme.profile: {why}")),
                None => Ok(()),
            },
            Ok(Err(e)) => {
                log::warn!("cannot check edgeward.acme.profile now ({e}); orders will");
                Ok(())
            }
            Err(_) => {
                log::warn!(
                    "{dir} did not answer within 10 s; edgeward.acme.profile checked by orders"
                );
                Ok(())
            }
        }
    }

    /// One pass, as the service runs it (for `benches/acme_manager.rs`).
    #[doc(hidden)]
    pub async fn wake_once(self: &Arc<Self>) -> Duration {
        self.tick().await
    }

    /// One pass: move what changed, start what is due; returns how long to sleep before the next.
    async fn tick(self: &Arc<Self>) -> Duration {
        let now = unix_now() as i64;
        let (all, changed) = self.control.take_acme_changes();
        if all {
            self.rebuild(now);
        } else {
            for host in changed {
                self.schedule(&host, now);
            }
        }
        let mut wake = now + 300;
        if let Some(at) = self.fetch_due_windows(now) {
            wake = wake.min(at);
        }
        // The account paused (a limit on the account, the CA unavailable): every host waits.
        let stored = self.control.acme_stored().budget;
        let paused = stored
            .paused_until
            .max(self.http.retry_after().map_or(0, unix_of));
        if paused > now {
            self.postpone_ready(now, paused);
            wake = wake.min(paused);
        } else if let Some(at) = self.start_due(now).await {
            wake = wake.min(at);
        }
        if let Some(at) = self.queue().next_due() {
            wake = wake.min(at);
        }
        let in_flight = self.tracks().values().filter(|t| t.in_flight).count();
        metrics::ACME_IN_FLIGHT.set(in_flight as i64);
        let left = self.control.acme_stored().budget.left(
            now,
            self.cfg.max_orders_per_window,
            self.cfg.order_window_seconds,
        );
        metrics::ACME_BUDGET_LEFT.set(left as i64);
        Duration::from_secs((wake - now).clamp(1, 300) as u64)
    }

    /// Start orders for the ready domains, soonest expiry first, while slots and budget last; when to
    /// look again if something is waiting on time (the budget, a lock held elsewhere, the store).
    async fn start_due(self: &Arc<Self>, now: i64) -> Option<i64> {
        let (max, window) = (
            self.cfg.max_orders_per_window,
            self.cfg.order_window_seconds,
        );
        loop {
            let host = {
                let mut q = self.queue();
                q.promote(now);
                q.first_ready()?
            };
            let host = host.to_string();
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                return None; // a finishing order wakes the loop
            };
            // Budget is only taken when the order is placed; orders started and not placed yet count.
            let budget = self.control.acme_stored().budget;
            if budget.left(now, max, window) <= self.reserved.load(Ordering::SeqCst) {
                let free = budget.next_free(now, max, window);
                self.postpone_ready(now, free);
                return Some(free);
            }
            // One order per certificate fleet-wide: another node holding the lock is doing it, and
            // its certificate will arrive through the store.
            let lock = match self.control.lock_order(&host, self.lock_ttl()).await {
                Ok(Some(lock)) => lock,
                Ok(None) => {
                    self.set_next(&host, now + 15);
                    continue;
                }
                Err(e) => {
                    log::warn!("cannot take the order lock for {host}: {e}");
                    return Some(now + 5);
                }
            };
            // Under the lock, the certificate as the store has it: a watch that has not delivered
            // another node's new certificate yet must not cause a second order.
            if let Err(e) = self.control.refresh_certificate(&host).await {
                log::warn!("cannot read the stored certificate of {host}: {e}");
                self.control.unlock(lock).await;
                return Some(now + 5);
            }
            self.schedule(&host, now);
            if self.queue().first_ready().is_none_or(|h| *h != *host) {
                self.control.unlock(lock).await; // no longer due
                continue;
            }
            self.queue().remove(&host);
            self.reserved.fetch_add(1, Ordering::SeqCst);
            self.tracks().entry(host.clone()).or_default().in_flight = true;
            self.publish_status(&host, &self.tracks()[&host].clone(), now);
            let me = self.clone();
            tokio::spawn(async move {
                let responder = ControlResponder::new(me.control.clone(), me.cfg.dns01.clone());
                // A graceful upgrade hands the writer role over: the order stops here (its tokens
                // removed while this process may still write) and the new process, which finds
                // the certificate still due, orders it.
                tokio::select! {
                    _ = me.run_order(&host, &lock, &responder) => {}
                    _ = until_closing(&me.control) => {
                        responder.remove_all().await;
                        log::info!("order for {host} left to the new process (graceful upgrade)");
                    }
                }
                me.control.unlock(lock).await;
                drop(permit);
                me.control.acme_touch(&host);
                me.control.wake_watchers();
            });
        }
    }

    /// Postpone every ready domain until `at` (the budget spent, the account paused), each showing
    /// when; at `at` they are ready again together, soonest expiry first.
    fn postpone_ready(self: &Arc<Self>, now: i64, at: i64) {
        loop {
            let host = {
                let mut q = self.queue();
                q.promote(now);
                q.first_ready()
            };
            match host {
                Some(h) => self.set_next(&h, at),
                None => return,
            }
        }
    }

    /// Postpone `host` until `at` (a lock held elsewhere, the budget spent) and show it.
    fn set_next(self: &Arc<Self>, host: &str, at: i64) {
        {
            let mut tracks = self.tracks();
            let t = tracks.entry(host.to_string()).or_default();
            t.next_attempt = t.next_attempt.max(at);
        }
        self.schedule(host, unix_now() as i64);
    }

    /// Take one order from the persisted budget (shared by the fleet in etcd mode).
    async fn take_budget(&self, now: i64) -> Result<bool, ApplyError> {
        self.control
            .take_budget(
                now,
                self.cfg.max_orders_per_window,
                self.cfg.order_window_seconds,
            )
            .await
    }

    /// How long the order lock outlives this node's last keep-alive.
    fn lock_ttl(&self) -> i64 {
        (self.cfg.order_timeout_seconds as i64).clamp(10, 300)
    }

    pub(super) fn ari_offered(&self) -> bool {
        self.ari_offered.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(super) fn ari_window(&self, host: &str, serial: &str) -> Option<AriWindow> {
        self.ari
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(host)
            .filter(|w| w.serial == serial)
            .cloned()
    }

    pub(super) async fn fetch_window(
        &self,
        host: &str,
        serial: String,
        id: instant_acme::CertificateIdentifier<'static>,
    ) {
        let now = unix_now() as i64;
        let result = match self.account().await {
            Ok(account) => client::renewal_window(&account, &id)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let window = match result {
            Ok(Some((start, end, again))) => AriWindow {
                serial,
                start,
                end,
                refetch_at: now + (again.as_secs() as i64).clamp(60, 86_400),
            },
            Ok(None) => {
                log::info!(
                    "the ACME directory offers no renewal information (ARI); renewing by lifetime"
                );
                self.ari_offered
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                return;
            }
            Err(e) => {
                log::debug!("renewal information for {host} unavailable, asking again later: {e}");
                self.ari_queue().set(host, now + 300, None);
                return;
            }
        };
        self.ari_queue().set(host, window.refetch_at, None);
        self.ari
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(host.to_string(), window);
        self.control.acme_touch(host);
        self.control.wake_watchers();
    }

    async fn run_order(
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
            let mut tracks = self.tracks();
            let t = tracks.entry(host.to_string()).or_default();
            t.in_flight = false;
            t.next_attempt = t.next_attempt.max(at);
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

    /// The `certificate` object shown by the domain API.
    pub(super) fn publish_status(&self, host: &str, t: &Track, now: i64) {
        let bundle = self.control.certificate(host);
        let valid = bundle.as_ref().filter(|b| b.not_after > now);
        let state = match (t.in_flight, valid.is_some(), t.failures > 0) {
            (true, true, _) => CertState::Renewing,
            (true, false, _) => CertState::Pending,
            (false, true, true) => CertState::Renewing,
            (false, true, false) => CertState::Valid,
            (false, false, true) => CertState::Failed,
            (false, false, false) => CertState::Pending,
        };
        let status = CertStatus {
            state,
            not_after: valid.map(|b| rfc3339(b.not_after)),
            renew_at: valid.map(|b| rfc3339(self.shown_renew_at(host, b))),
            last_error: t.last_error.clone(),
            next_attempt: (t.failures > 0 || t.next_attempt > now).then(|| rfc3339(t.next_attempt)),
        };
        self.control.set_acme_status(host, status);
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

/// Pingora background service wrapper.
pub struct ManagerService {
    pub manager: Arc<Manager>,
    pub handover: Arc<Handover>,
}

#[async_trait]
impl BackgroundService for ManagerService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let m = &self.manager;
        self.handover.acme_running();
        // Orders are writes: none before this process owns the store, none after it handed it over.
        if until_writable(&m.control, &mut shutdown).await {
            let changed = m.control.watch();
            loop {
                let sleep = m.tick().await;
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = until_closing(&m.control) => break,
                    _ = changed.notified() => {}
                    _ = tokio::time::sleep(sleep) => {}
                }
            }
            // The hand-over: every order task stops and removes its tokens; then let go.
            let all = m.cfg.max_concurrent_orders as u32;
            let _ = m.slots.acquire_many(all).await;
        }
        self.handover.acme_stopped();
    }
}

/// Unix seconds of a `SystemTime` (0 before 1970).
fn unix_of(t: std::time::SystemTime) -> i64 {
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
