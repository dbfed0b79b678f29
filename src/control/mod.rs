//! The single writer. Every change (admin API, seed list, challenge expiry, ACME) goes through
//! `Control::apply`: preconditions are checked against memory, the batch is made durable in the `Store`,
//! then applied to the `State` the proxy reads. One writer at a time, so store order and memory order
//! agree; each change costs one store write and one map update, O(1) in the number of domains.
//!
//! Split by role: `commit` (group commit, fencing, the gate that says whether this process may write
//! now), `apply` (durable changes into memory), `restore` (start-up, resync, following another
//! writer's log), `handover` (the state writer service: when this process takes the writer role and
//! when it gives it up during a graceful upgrade), `fleet` (the etcd watch).
//!
//! The gate: a process starts `Waiting` (it has loaded the state and follows what the current writer
//! appends), becomes `Open` once it owns the store (the directory lock, or at once with etcd) and has
//! caught up, and `Closed` once it handed the writer role to its successor. Admin writes wait, bounded,
//! for `Open`.

mod acme_feed;
mod apply;
mod commit;
pub mod fleet;
mod fresh;
pub mod handover;
mod migrate;
mod restore;

pub use commit::Writes;

use crate::acme::CertStatus;
use crate::events::{Events, Kind};
use crate::metrics;
use crate::model::{AccountRecord, Budget, Challenge, Domain, FieldError};
use crate::pools::Pools;
use crate::state::State;
use crate::store::{Store, StoreError};
use crate::tls::CertBundle;
use std::sync::Arc;

pub use crate::model::unix_now;

/// The ACME manager's durable bits, as last stored.
#[derive(Debug, Default, Clone)]
pub struct AcmeStored {
    pub account: Option<AccountRecord>,
    pub budget: Budget,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{0}")]
    Invalid(FieldError),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the fleet lock was lost before the write: another node holds it now")]
    Fenced,
    /// This process may not write now: it is waiting for, or has handed over to, another process.
    #[error("{0}")]
    NotWriter(String),
}

pub struct Control {
    state: Arc<State>,
    store: Arc<dyn Store>,
    pools: Pools,
    commit: commit::Committer,
    acme: std::sync::Mutex<AcmeStored>,
    seeds: std::sync::Mutex<restore::SeedPreview>,
    /// Certificate status of `tls: "auto"` domains, kept by the ACME manager for the API.
    acme_status: dashmap::DashMap<String, CertStatus>,
    /// Woken when a change may need the ACME manager's attention.
    changed: Arc<tokio::sync::Notify>,
    /// Fleet mode: own writes against the watch (never a key moved backwards).
    fresh: std::sync::Mutex<fresh::Freshness>,
    /// Recent activity, for `GET /v1/events`.
    events: Events,
    /// `tls: "auto"` hosts whose renewal was asked for (`POST /v1/domains/{host}/renew`), until the
    /// manager places the order. Memory only: a request is not a change of state.
    renewals: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Changes the ACME manager's renewal queue has not seen yet.
    acme_feed: std::sync::Mutex<acme_feed::AcmeFeed>,
}

impl Control {
    /// A writer for `store`, waiting (`Writes::Waiting`) until `open_writes`.
    pub fn new(store: Arc<dyn Store>, pools: Pools) -> Self {
        Control {
            state: Arc::new(State::default()),
            store,
            pools,
            commit: commit::Committer::default(),
            acme: Default::default(),
            seeds: Default::default(),
            acme_status: Default::default(),
            changed: Arc::default(),
            fresh: Default::default(),
            events: Events::default(),
            renewals: Default::default(),
            acme_feed: Default::default(),
        }
    }

    pub fn events(&self) -> &Events {
        &self.events
    }

    /// Ask the ACME manager to renew `host` now (still within the order budget and any back-off).
    pub fn request_renewal(&self, host: &str) {
        self.renewals_mut().insert(host.to_string());
        self.acme_touch(host);
        self.wake_watchers();
    }

    pub fn renewal_requested(&self, host: &str) -> bool {
        self.renewals_mut().contains(host)
    }

    /// The manager placed the order (or the domain is gone): the request is done.
    pub fn renewal_done(&self, host: &str) {
        self.renewals_mut().remove(host);
    }

    fn renewals_mut(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.renewals.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The tables, for the proxy and the TLS callback (through `State::reader`) and for start-up.
    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    pub fn pools(&self) -> &Pools {
        &self.pools
    }

    /// Most changes one store write holds atomically (etcd: one transaction).
    pub fn atomic_limit(&self) -> usize {
        self.store.atomic_limit()
    }

    /// Take the fleet-wide lock on ordering `name`'s certificate (always granted on a single node).
    pub async fn lock_order(
        &self,
        name: &str,
        ttl: i64,
    ) -> Result<Option<crate::store::OrderLock>, StoreError> {
        self.store.lock_order(name, ttl).await
    }

    pub async fn unlock(&self, lock: crate::store::OrderLock) {
        self.store.unlock(lock).await
    }

    /// What the ACME manager waits on.
    pub fn watch(&self) -> Arc<tokio::sync::Notify> {
        self.changed.clone()
    }

    pub fn wake_watchers(&self) {
        self.changed.notify_one();
    }

    /// The ACME account and budget as last stored.
    pub fn acme_stored(&self) -> AcmeStored {
        self.acme_stored_mut().clone()
    }

    fn acme_stored_mut(&self) -> std::sync::MutexGuard<'_, AcmeStored> {
        self.acme.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The ACME manager's view of a `tls: "auto"` domain's certificate, for the API.
    pub fn acme_status(&self, host: &str) -> Option<CertStatus> {
        self.acme_status.get(host).map(|s| s.clone())
    }

    pub fn set_acme_status(&self, host: &str, status: CertStatus) {
        self.acme_status.insert(host.to_string(), status);
    }

    /// How many `tls: "auto"` domains are in each certificate state (pending, valid, renewing,
    /// failed), for the gauges.
    pub fn acme_state_counts(&self) -> [(crate::acme::CertState, i64); 4] {
        use crate::acme::CertState::*;
        let mut counts = [(Pending, 0), (Valid, 0), (Renewing, 0), (Failed, 0)];
        for s in self.acme_status.iter() {
            if let Some(c) = counts.iter_mut().find(|(k, _)| *k == s.state) {
                c.1 += 1;
            }
        }
        counts
    }

    /// Forget the status of domains `keep` rejects (gone, or no longer `auto`).
    pub fn retain_acme_status(&self, keep: impl Fn(&str) -> bool) {
        self.acme_status.retain(|h, _| keep(h));
        self.renewals_mut().retain(|h| keep(h));
    }

    /// Bring this node's copy of `host`'s certificate up to the store's (a fleet: another node may
    /// have just stored a new one that the watch has not delivered yet). True when it changed.
    pub async fn refresh_certificate(&self, host: &str) -> Result<bool, StoreError> {
        let Some(rec) = self.store.read_certificate(host).await? else {
            return Ok(false);
        };
        let newer = self
            .state
            .certs
            .get(host)
            .is_none_or(|b| !b.is_stored_as(&rec));
        if newer {
            self.apply_memory(crate::model::Change::PutCertificate(rec));
        }
        Ok(newer)
    }

    /// `host` is no longer `tls: "auto"`: no status, no pending renewal request.
    pub fn forget_acme_status(&self, host: &str) {
        self.acme_status.remove(host);
        self.renewals_mut().remove(host);
    }

    /// The stored back-off of `host`, if its orders failed.
    pub fn acme_backoff(&self, host: &str) -> Option<crate::model::Backoff> {
        self.acme_stored_mut().budget.backoff.get(host).cloned()
    }

    pub fn domain(&self, host: &str) -> Option<Domain> {
        self.state.routes.get(host).map(|r| r.domain.clone())
    }

    pub fn domains(&self) -> Vec<Domain> {
        self.state.routes.domains()
    }

    /// The domains after `after` whose host starts with `prefix`, in host order, until `visit`
    /// returns false (the admin API's paged list).
    pub fn scan_domains(
        &self,
        after: Option<&str>,
        prefix: &str,
        mut visit: impl FnMut(&Domain) -> bool,
    ) {
        self.state
            .routes
            .scan(after, prefix, |route| visit(&route.domain));
    }

    /// Every challenge that has not expired, sorted by token.
    pub fn challenges(&self) -> Vec<Challenge> {
        let now = unix_now();
        let mut v: Vec<Challenge> = self
            .state
            .challenges
            .tokens()
            .into_iter()
            .filter_map(|t| self.state.challenges.get(&t))
            .filter(|c| c.expires_at > now)
            .collect();
        v.sort_by(|a, b| a.token.cmp(&b.token));
        v
    }

    pub fn certificate(&self, host: &str) -> Option<Arc<CertBundle>> {
        self.state.certs.get(host)
    }

    pub fn certificates(&self) -> Vec<Arc<CertBundle>> {
        self.state.certs.all()
    }

    /// The stored challenge for `token`, unless it has expired.
    pub fn challenge(&self, token: &str) -> Option<Challenge> {
        self.state
            .challenges
            .get(token)
            .filter(|c| c.expires_at > unix_now())
    }

    fn update_gauges(&self) {
        metrics::DOMAINS.set(self.state.routes.len() as i64);
        metrics::CHALLENGE_TOKENS.set(self.state.challenges.len() as i64);
        metrics::POOLS.set(self.pools.len() as i64);
        metrics::BACKENDS.set(self.pools.backend_count() as i64);
        metrics::CERTIFICATES.set(self.state.certs.len() as i64);
    }

    /// Gauges too costly to keep current on every change (O(n) in certificates): set at each scrape.
    pub fn refresh_scrape_gauges(&self) {
        metrics::CERT_SOONEST_EXPIRY.set(self.state.certs.soonest_expiry().unwrap_or(0));
        let following = self
            .acme_feed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .following();
        if following {
            self.refresh_acme_gauges();
        }
    }

    /// The ACME gauges (O(n) in `auto` domains): certificates by state, and those expiring within 7
    /// days.
    fn refresh_acme_gauges(&self) {
        for (state, n) in self.acme_state_counts() {
            let label = serde_json::to_value(state).unwrap_or_default();
            metrics::ACME_CERT_STATES
                .with_label_values(&[label.as_str().unwrap_or("")])
                .set(n);
        }
        let soon = crate::model::unix_now() as i64 + 7 * 86_400;
        let expiring = self
            .acme_status
            .iter()
            .filter(|s| {
                self.state
                    .certs
                    .get(s.key())
                    .is_some_and(|b| b.not_after < soon)
            })
            .count();
        metrics::ACME_EXPIRING_7D.set(expiring as i64);
    }
}

#[cfg(test)]
mod tests;
