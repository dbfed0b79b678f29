//! The background service that keeps `tls: "auto"` domains certified. Domains wait in a renewal queue
//! (`queue`, placed by `plan`) by their next due time; each wake moves the changed domains, starts the
//! due ones (soonest expiry first) within the concurrency limit and the persisted new-order budget,
//! and sleeps until the earliest is due or a change wakes it: nothing is scanned. A failing domain
//! backs off on its own and never blocks the others.

use super::client::CaHttp;
use super::queue::Queue;
use super::responder::ControlResponder;
use super::{AcmeConfig, CertState, CertStatus};
use crate::control::handover::{until_closing, until_writable, Handover};
use crate::control::{unix_now, ApplyError, Control};
use crate::metrics;
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
    pub(super) serial: String,
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
    pub(super) http: CaHttp,
    /// Loaded or created on first use; dropped when the CA no longer knows it.
    pub(super) account: tokio::sync::Mutex<Option<Arc<Account>>>,
    pub(super) tracks: Mutex<HashMap<String, Track>>,
    pub(super) slots: Arc<Semaphore>,
    /// ARI windows by host; `ari_offered` becomes false once the directory says it has no ARI.
    pub(super) ari: Mutex<HashMap<String, AriWindow>>,
    pub(super) ari_offered: std::sync::atomic::AtomicBool,
    pub(super) ari_fetching: Arc<Semaphore>,
    /// Domains by next due time; `ari` hosts by when their ARI window is to be (re)fetched.
    pub(super) queue: Mutex<Queue>,
    pub(super) ari_due: Mutex<Queue>,
    /// Orders started that have not taken their share of the budget yet.
    pub(super) reserved: AtomicUsize,
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
            .max(self.http.retry_after().map_or(0, super::order::unix_of));
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
            match self.control.refresh_certificate(&host).await {
                Ok(false) => {}
                Ok(true) => {
                    self.schedule(&host, now);
                    if self.queue().first_ready().is_none_or(|h| *h != *host) {
                        self.control.unlock(lock).await; // no longer due
                        continue;
                    }
                }
                Err(e) => {
                    log::warn!("cannot read the stored certificate of {host}: {e}");
                    self.control.unlock(lock).await;
                    return Some(now + 5);
                }
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
    pub(super) fn set_next(self: &Arc<Self>, host: &str, at: i64) {
        {
            let mut tracks = self.tracks();
            let t = tracks.entry(host.to_string()).or_default();
            t.next_attempt = t.next_attempt.max(at);
        }
        self.schedule(host, unix_now() as i64);
    }

    /// Take one order from the persisted budget (shared by the fleet in etcd mode).
    pub(super) async fn take_budget(&self, now: i64) -> Result<bool, ApplyError> {
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
            renew_at: valid.map(|b| rfc3339(self.renew_at(host, b))),
            last_error: t.last_error.clone(),
            next_attempt: (t.failures > 0 || t.next_attempt > now).then(|| rfc3339(t.next_attempt)),
        };
        self.control.set_acme_status(host, status);
    }
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
