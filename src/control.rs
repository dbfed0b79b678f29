//! The writer side. Every change (admin API, seed list, challenge expiry) goes through `Control::apply`:
//! preconditions are checked against memory, the batch is made durable in the `Store`, then applied to
//! the in-memory tables the proxy reads. One writer at a time, so store order and memory order agree.
//! Each change costs one store write and one map update: O(1) in the number of domains. Requests that
//! arrive while a write is in progress are committed together by the next writer (group commit): one
//! durable write (one sync, one etcd transaction) for all of them, each still checked on its own.

use crate::acme::budget::Budget;
use crate::acme::{AccountRecord, CertStatus};
use crate::challenges::{Challenge, Challenges};
use crate::domain::{Domain, FieldError};
use crate::metrics;
use crate::pools::Pools;
use crate::routes::{Route, Routes};
use crate::store::{Change, Snapshot, Store, StoreError};
use crate::tls::{self, CertBundle, CertRecord, CertStore};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// What the proxy reads on every request.
#[derive(Default)]
pub struct State {
    pub routes: Routes,
    pub challenges: Challenges,
    pub certs: CertStore,
    /// Certificate status of `tls: "auto"` domains, kept by the ACME manager for the API.
    pub acme_status: dashmap::DashMap<String, CertStatus>,
}

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
}

/// A request waiting for the writer.
struct Pending {
    changes: Vec<Change>,
    done: tokio::sync::oneshot::Sender<Result<(), ApplyError>>,
}

/// Most changes one group commit writes (a single larger batch still goes alone): bounds one write's
/// size and the wait of its first request.
const MAX_GROUP: usize = 1024;

pub struct Control {
    pub state: Arc<State>,
    store: Arc<dyn Store>,
    pools: Pools,
    writer: tokio::sync::Mutex<()>,
    /// Requests waiting for the writer, committed in groups.
    queue: std::sync::Mutex<std::collections::VecDeque<Pending>>,
    acme: std::sync::Mutex<AcmeStored>,
    /// Woken when a change may need the ACME manager's attention.
    changed: Arc<tokio::sync::Notify>,
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Control {
    pub fn new(store: Arc<dyn Store>, pools: Pools) -> Self {
        Control {
            state: Arc::new(State::default()),
            store,
            pools,
            writer: tokio::sync::Mutex::new(()),
            queue: Default::default(),
            acme: Default::default(),
            changed: Arc::default(),
        }
    }

    pub fn pools(&self) -> &Pools {
        &self.pools
    }

    /// Fill memory from a loaded snapshot (start-up). Expired challenges are dropped from the store.
    /// Certificates are parsed in parallel on every core; one that does not parse stops start-up.
    pub async fn restore(&self, snap: Snapshot) -> Result<(), StoreError> {
        let now = unix_now();
        *self.acme_stored_mut() = AcmeStored {
            account: snap.acme_account,
            budget: snap.acme_budget.unwrap_or_default(),
        };
        for b in parse_all(&snap.certificates)? {
            if b.not_after <= now as i64 {
                log::warn!(
                    "certificate for {} expired at {}",
                    b.host,
                    tls::rfc3339(b.not_after)
                );
            }
            self.state.certs.publish(Arc::new(b));
        }
        let mut expired = Vec::new();
        for d in &snap.domains {
            self.put_route(d);
        }
        for c in snap.challenges {
            if c.expires_at <= now {
                expired.push(Change::DeleteChallenge { token: c.token });
            } else {
                self.put_challenge(c);
            }
        }
        if !expired.is_empty() {
            self.store.apply(&expired).await?;
        }
        self.update_gauges();
        Ok(())
    }

    /// Apply a batch, all or nothing. Returns once the batch is durable and live.
    pub async fn apply(self: &Arc<Self>, changes: Vec<Change>) -> Result<(), ApplyError> {
        if changes.is_empty() {
            return Ok(());
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.queue_lock().push_back(Pending { changes, done: tx });
        // The write runs in its own task: a caller that stops waiting (a timeout, a dropped request)
        // cannot leave the requests grouped with its own unanswered or half applied. One task per
        // request, each committing one group, so every queued request is taken by some task.
        let me = self.clone();
        tokio::spawn(async move {
            let _writer = me.writer.lock().await;
            me.commit_group().await;
        });
        rx.await.unwrap_or_else(|_| {
            Err(ApplyError::Store(StoreError::Unavailable(
                "the write task stopped before answering".into(),
            )))
        })
    }

    /// Take the queued requests, in order, while their keys are disjoint (so checking each against
    /// memory alone is exact), check each, write all that pass in one store batch, then make them live
    /// and answer every waiter.
    async fn commit_group(&self) {
        let limit = self.store.atomic_limit().min(MAX_GROUP);
        let group = {
            let mut queue = self.queue_lock();
            let mut keys = std::collections::HashSet::new();
            let mut group = Vec::new();
            while let Some(p) = queue.front() {
                let mine: Vec<_> = p
                    .changes
                    .iter()
                    .map(|c| {
                        let (kind, key) = c.key();
                        (kind, key.to_string())
                    })
                    .collect();
                if !group.is_empty()
                    && (mine.iter().any(|k| keys.contains(k)) || keys.len() + mine.len() > limit)
                {
                    break;
                }
                keys.extend(mine);
                group.push(queue.pop_front().expect("front exists"));
            }
            group
        };
        let (mut all, mut undo, mut passed) = (Vec::new(), Vec::new(), Vec::new());
        for p in group {
            match self.check_and_undo(&p.changes) {
                Ok(u) => {
                    all.extend(p.changes.iter().cloned());
                    undo.extend(u);
                    passed.push(p);
                }
                Err(e) => {
                    let _ = p.done.send(Err(e));
                }
            }
        }
        if all.is_empty() {
            return;
        }
        if let Err(e) = self.store.apply(&all).await {
            if all.len() > 1 {
                // Some files of the batch may be written: put back what was there.
                if let Err(undo_err) = self.store.apply(&undo).await {
                    log::error!("could not undo a failed batch: {undo_err}; the state store may hold part of it");
                }
            }
            for p in passed {
                let _ = p.done.send(Err(e.duplicate().into()));
            }
            return;
        }
        for p in passed {
            self.commit(p.changes, true);
            let _ = p.done.send(Ok(()));
        }
    }

    fn queue_lock(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<Pending>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A change another node made, seen through the fleet store's watch: memory only.
    pub fn apply_remote(&self, c: Change) {
        self.commit(vec![c], false);
    }

    /// Make durable changes live: memory, gauges, and a wake-up for the ACME manager when a domain
    /// wants a certificate. `local`: made here (counted as admin changes).
    fn commit(&self, changes: Vec<Change>, local: bool) {
        let wake = changes
            .iter()
            .any(|c| matches!(c, Change::PutDomain(d) if d.tls == crate::domain::TlsMode::Auto));
        for c in changes {
            if local {
                metrics::ADMIN_CHANGES.with_label_values(&[c.kind()]).inc();
            }
            self.apply_memory(c);
        }
        self.update_gauges();
        if wake {
            self.wake_watchers();
        }
    }

    /// Make memory equal to `snap` (after a lost or compacted watch): apply what differs, drop what is
    /// gone. Unchanged entries are left alone, so nothing stops being served meanwhile.
    pub fn resync(&self, snap: Snapshot) {
        let now = unix_now();
        let hosts: std::collections::HashSet<String> =
            snap.domains.iter().map(|d| d.host.clone()).collect();
        for d in snap.domains {
            if self.domain(&d.host).as_ref() != Some(&d) {
                self.put_route(&d);
            }
        }
        for d in self.domains() {
            if !hosts.contains(&d.host) {
                self.state.routes.remove(&d.host);
            }
        }
        let tokens: std::collections::HashSet<String> =
            snap.challenges.iter().map(|c| c.token.clone()).collect();
        for c in snap.challenges.into_iter().filter(|c| c.expires_at > now) {
            self.put_challenge(c);
        }
        for t in self.state.challenges.expired(u64::MAX) {
            if !tokens.contains(&t) {
                self.state.challenges.remove(&t);
            }
        }
        let certs: std::collections::HashSet<String> =
            snap.certificates.iter().map(|c| c.host.clone()).collect();
        for rec in snap.certificates {
            self.apply_memory(Change::PutCertificate(rec));
        }
        for b in self.certificates() {
            if !certs.contains(&b.host) {
                self.state.certs.remove(&b.host);
            }
        }
        *self.acme_stored_mut() = AcmeStored {
            account: snap.acme_account,
            budget: snap.acme_budget.unwrap_or_default(),
        };
        self.update_gauges();
        self.wake_watchers();
    }

    fn apply_memory(&self, c: Change) {
        match c {
            Change::PutDomain(d) => self.put_route(&d),
            Change::DeleteDomain { host } => {
                self.state.routes.remove(&host);
            }
            Change::PutChallenge(ch) => self.put_challenge(ch),
            Change::DeleteChallenge { token } => {
                self.state.challenges.remove(&token);
            }
            Change::PutCertificate(rec) => {
                let same = self
                    .state
                    .certs
                    .get(&rec.host)
                    .and_then(|b| record_of(&b))
                    .is_some_and(|r| r == rec);
                if !same {
                    match tls::bundle::parse(&rec, 0, false) {
                        Ok(b) => self.state.certs.publish(Arc::new(b)),
                        Err(e) => {
                            log::error!("stored certificate for {} does not parse: {e}", rec.host)
                        }
                    }
                }
            }
            Change::DeleteCertificate { host } => {
                self.state.certs.remove(&host);
            }
            Change::PutAcmeAccount(a) => self.acme_stored_mut().account = Some(a),
            Change::PutAcmeBudget(b) => self.acme_stored_mut().budget = b,
        }
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

    /// `apply`, but written only while `lock` is still held (a node that lost it writes nothing).
    pub async fn apply_fenced(
        &self,
        changes: Vec<Change>,
        lock: &crate::store::OrderLock,
    ) -> Result<(), ApplyError> {
        let _writer = self.writer.lock().await;
        self.check_and_undo(&changes)?;
        if !self.store.apply_fenced(&changes, lock).await? {
            return Err(ApplyError::Fenced);
        }
        self.commit(changes, true);
        Ok(())
    }

    /// Take one new order from the persisted budget (atomically across a fleet).
    pub async fn take_budget(&self, now: i64, max: usize, window: i64) -> Result<bool, ApplyError> {
        let _writer = self.writer.lock().await;
        let current = self.acme_stored().budget;
        match self.store.take_budget(&current, now, max, window).await? {
            Some(b) => {
                metrics::ADMIN_CHANGES
                    .with_label_values(&["put_acme_budget"])
                    .inc();
                self.acme_stored_mut().budget = b;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// What the ACME manager waits on.
    pub fn watch(&self) -> Arc<tokio::sync::Notify> {
        self.changed.clone()
    }

    pub fn wake_watchers(&self) {
        self.changed.notify_one();
    }

    /// Check that every delete names something present (taking earlier ops of the batch into account)
    /// and build the changes that would restore the current state.
    fn check_and_undo(&self, changes: &[Change]) -> Result<Vec<Change>, ApplyError> {
        let mut domains: HashMap<&str, bool> = HashMap::new();
        let mut tokens: HashMap<&str, bool> = HashMap::new();
        let mut certs: HashMap<&str, bool> = HashMap::new();
        let mut undo = Vec::with_capacity(changes.len());
        for (i, c) in changes.iter().enumerate() {
            let at = |m: String| {
                if changes.len() > 1 {
                    format!("ops[{i}]: {m}")
                } else {
                    m
                }
            };
            match c {
                Change::PutDomain(d) => {
                    undo.push(self.domain_undo(&d.host));
                    domains.insert(&d.host, true);
                }
                Change::DeleteDomain { host } => {
                    let present = *domains
                        .entry(host)
                        .or_insert_with(|| self.state.routes.get(host).is_some());
                    if !present {
                        return Err(ApplyError::NotFound(at(format!(
                            "domain `{host}` not found"
                        ))));
                    }
                    undo.push(self.domain_undo(host));
                    domains.insert(host, false);
                }
                Change::PutChallenge(ch) => {
                    undo.push(self.challenge_undo(&ch.token));
                    tokens.insert(&ch.token, true);
                }
                Change::DeleteChallenge { token } => {
                    let present = *tokens
                        .entry(token)
                        .or_insert_with(|| self.state.challenges.contains(token));
                    if !present {
                        return Err(ApplyError::NotFound(at(format!(
                            "challenge `{token}` not found"
                        ))));
                    }
                    undo.push(self.challenge_undo(token));
                    tokens.insert(token, false);
                }
                Change::PutCertificate(c) => {
                    undo.push(self.cert_undo(&c.host));
                    certs.insert(&c.host, true);
                }
                Change::DeleteCertificate { host } => {
                    let present = *certs
                        .entry(host)
                        .or_insert_with(|| self.state.certs.get(host).is_some());
                    if !present {
                        return Err(ApplyError::NotFound(at(format!(
                            "certificate `{host}` not found"
                        ))));
                    }
                    undo.push(self.cert_undo(host));
                    certs.insert(host, false);
                }
                Change::PutAcmeAccount(_) => {
                    if let Some(a) = self.acme_stored().account {
                        undo.push(Change::PutAcmeAccount(a));
                    }
                }
                Change::PutAcmeBudget(_) => {
                    undo.push(Change::PutAcmeBudget(self.acme_stored().budget));
                }
            }
        }
        undo.reverse();
        Ok(undo)
    }

    fn domain_undo(&self, host: &str) -> Change {
        match self.state.routes.get(host) {
            Some(r) => Change::PutDomain(r.domain.clone()),
            None => Change::DeleteDomain { host: host.into() },
        }
    }

    fn challenge_undo(&self, token: &str) -> Change {
        match self.state.challenges.get(token) {
            Some(c) => Change::PutChallenge(c),
            None => Change::DeleteChallenge {
                token: token.into(),
            },
        }
    }

    /// The ACME account and budget as last stored.
    pub fn acme_stored(&self) -> AcmeStored {
        self.acme_stored_mut().clone()
    }

    fn acme_stored_mut(&self) -> std::sync::MutexGuard<'_, AcmeStored> {
        self.acme.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cert_undo(&self, host: &str) -> Change {
        match self.state.certs.get(host).and_then(|b| record_of(&b)) {
            Some(r) => Change::PutCertificate(r),
            None => Change::DeleteCertificate { host: host.into() },
        }
    }

    fn put_route(&self, d: &Domain) {
        let pool = self.pools.get(&d.upstreams);
        self.state.routes.insert(Arc::new(Route {
            domain: d.clone(),
            pool,
        }));
    }

    fn put_challenge(&self, c: Challenge) {
        self.state.challenges.insert(&c);
    }

    pub fn domain(&self, host: &str) -> Option<Domain> {
        self.state.routes.get(host).map(|r| r.domain.clone())
    }

    pub fn domains(&self) -> Vec<Domain> {
        self.state.routes.domains()
    }

    pub fn certificate(&self, host: &str) -> Option<Arc<CertBundle>> {
        self.state.certs.get(host)
    }

    pub fn certificates(&self) -> Vec<Arc<CertBundle>> {
        self.state.certs.all()
    }

    pub fn challenge(&self, token: &str) -> Option<Challenge> {
        self.state.challenges.get(token)
    }

    /// Delete every challenge expired at `now`, durably. Returns how many went.
    pub async fn expire_challenges(self: &Arc<Self>, now: u64) -> Result<usize, ApplyError> {
        let expired: Vec<Change> = self
            .state
            .challenges
            .expired(now)
            .into_iter()
            .map(|token| Change::DeleteChallenge { token })
            .collect();
        let n = expired.len();
        for c in expired {
            // One by one: a token deleted through the API meanwhile is simply not found.
            match self.apply(vec![c]).await {
                Ok(()) | Err(ApplyError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
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
    }
}

/// The stored form of a published bundle, re-encoded (to undo a failed batch).
fn record_of(b: &CertBundle) -> Option<CertRecord> {
    let mut chain = b.leaf.to_pem().ok()?;
    for c in &b.chain {
        chain.extend(c.to_pem().ok()?);
    }
    Some(CertRecord {
        host: b.host.clone(),
        chain_pem: String::from_utf8(chain).ok()?,
        key_pem: tls::bundle::storable_key(&b.key)?,
        source: b.source,
    })
}

/// Parse stored certificates on every core.
fn parse_all(records: &[CertRecord]) -> Result<Vec<CertBundle>, StoreError> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = records.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = records
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|r| {
                            tls::bundle::parse(r, 0, false).map_err(|e| StoreError::Corrupt {
                                path: format!("certificate of {}", r.host).into(),
                                message: e.to_string(),
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(records.len());
        for h in handles {
            out.extend(h.join().expect("certificate parsing does not panic")?);
        }
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::test_domain as domain;
    use crate::store::DirStore;
    use std::time::Duration;

    fn control_on(store: Arc<dyn Store>) -> Arc<Control> {
        Arc::new(Control::new(store, Pools::new(Duration::from_secs(1))))
    }

    /// Concurrent requests share writes, yet each is checked on its own and answered for itself.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn group_commit_answers_each_request() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(DirStore::open(dir.path()).unwrap());
        let control = control_on(store.clone());
        let mut tasks = Vec::new();
        for i in 0..200 {
            let c = control.clone();
            tasks.push(tokio::spawn(async move {
                let host = format!("h{i}.test");
                c.apply(vec![Change::PutDomain(domain(&host))]).await?;
                // Same key as the previous request of this task: must see it committed.
                c.apply(vec![Change::DeleteDomain { host: host.clone() }])
                    .await?;
                // Gone now, so a second delete is refused, alone.
                match c.apply(vec![Change::DeleteDomain { host }]).await {
                    Err(ApplyError::NotFound(_)) => {}
                    other => panic!("expected NotFound, got {other:?}"),
                }
                c.apply(vec![Change::PutDomain(domain(&format!("k{i}.test")))])
                    .await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(control.state.routes.len(), 200);
        let mut stored: Vec<_> = store
            .load()
            .await
            .unwrap()
            .domains
            .into_iter()
            .map(|d| d.host)
            .collect();
        stored.sort();
        let mut expected: Vec<_> = (0..200).map(|i| format!("k{i}.test")).collect();
        expected.sort();
        assert_eq!(stored, expected);
    }

    /// A real state directory that reports a small atomic limit, and records each write's size.
    struct Limited {
        inner: DirStore,
        sizes: std::sync::Mutex<Vec<usize>>,
    }

    #[async_trait::async_trait]
    impl Store for Limited {
        async fn load(&self) -> Result<Snapshot, StoreError> {
            self.inner.load().await
        }
        async fn apply(&self, changes: &[Change]) -> Result<(), StoreError> {
            self.sizes.lock().unwrap().push(changes.len());
            self.inner.apply(changes).await
        }
        fn atomic_limit(&self) -> usize {
            2
        }
    }

    /// Requests are grouped up to the store's atomic limit, never beyond; a larger batch goes alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn groups_respect_the_store_atomic_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Limited {
            inner: DirStore::open(dir.path()).unwrap(),
            sizes: Default::default(),
        });
        let control = control_on(store.clone());
        let mut tasks = Vec::new();
        for i in 0..100 {
            let c = control.clone();
            tasks.push(tokio::spawn(async move {
                c.apply(vec![Change::PutDomain(domain(&format!("g{i}.test")))])
                    .await
            }));
        }
        let batch: Vec<_> = (0..3)
            .map(|i| Change::PutDomain(domain(&format!("b{i}.test"))))
            .collect();
        control.apply(batch).await.unwrap();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(control.state.routes.len(), 103);
        let sizes = store.sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 103);
        assert!(sizes.iter().all(|&n| n <= 2 || n == 3), "{sizes:?}");
        assert_eq!(sizes.iter().filter(|&&n| n == 3).count(), 1, "{sizes:?}");
    }

    /// A caller that stops waiting (here: a zero timeout) neither loses its write nor strands the
    /// requests grouped with it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_caller_does_not_strand_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(DirStore::open(dir.path()).unwrap());
        let control = control_on(store);
        let mut waited = Vec::new();
        for i in 0..100 {
            let c = control.clone();
            let change = vec![Change::PutDomain(domain(&format!("c{i}.test")))];
            if i % 3 == 0 {
                let _ = tokio::time::timeout(Duration::ZERO, c.apply(change)).await;
            } else {
                waited.push(tokio::spawn(async move { c.apply(change).await }));
            }
        }
        for t in waited {
            t.await.unwrap().unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while control.state.routes.len() < 100 {
            assert!(
                std::time::Instant::now() < deadline,
                "abandoned writes never landed"
            );
            tokio::task::yield_now().await;
        }
    }
}
