//! etcd backend for a fleet of edge nodes: every domain, challenge, certificate and ACME record is a key
//! under one prefix (`codec`). A batch is one etcd transaction, so at most `MAX_TXN_OPS` (etcd's
//! default limit) changes: a larger one is refused, never split.
//!
//! High availability: requests go to healthy members only (`members`), are retried on another member
//! or after a leader election for a bounded time, and every write is applied exactly once however
//! often it is resent (`call`). Why each operation's retry is safe is written in `call`.

mod call;
mod codec;
mod members;

use super::OrderLock;
use super::{Change, Revision, Snapshot, Store, StoreError};
use crate::model::{Budget, CertRecord, Challenge};
use async_trait::async_trait;
use call::{Failure, Markers, Written};
use codec::Codec;
use etcd_client::{
    Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, TxnOp, TxnOpResponse, WatchOptions,
    WatchStream, Watcher,
};
use members::Members;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// etcd's default `--max-txn-ops`.
const ETCD_MAX_TXN_OPS: usize = 128;
/// Most changes in one batch: one operation of each transaction is its write marker.
pub const MAX_TXN_OPS: usize = ETCD_MAX_TXN_OPS - 1;

/// `edgeward.state.etcd`. Debug output leaves the password and the encryption key out.
#[derive(Clone)]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub user: Option<(String, String)>,
    /// 32 bytes: private keys and account credentials are stored AES-256-GCM encrypted.
    pub encryption_key: Option<[u8; 32]>,
    pub tls: Option<EtcdTls>,
    /// How long an operation keeps retrying through a member failure or a leader election.
    pub leader_wait: Duration,
    /// How often the member list is read again from the cluster.
    pub member_refresh: Duration,
}

impl EtcdConfig {
    /// Plain HTTP, no auth, no encryption, the default waits.
    pub fn new(endpoints: Vec<String>, prefix: &str) -> Self {
        EtcdConfig {
            endpoints,
            prefix: prefix.into(),
            user: None,
            encryption_key: None,
            tls: None,
            leader_wait: Duration::from_secs(5),
            member_refresh: Duration::from_secs(30),
        }
    }
}

impl std::fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("user", &self.user.as_ref().map(|(u, _)| u))
            .field("encryption", &self.encryption_key.is_some())
            .field("tls", &self.tls)
            .field("leader_wait", &self.leader_wait)
            .field("member_refresh", &self.member_refresh)
            .finish()
    }
}

/// PEM material for TLS to etcd.
#[derive(Clone)]
pub struct EtcdTls {
    pub ca: Vec<u8>,
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdTls")
            .field("client_certificate", &self.identity.is_some())
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
pub struct EtcdStore {
    members: Arc<Members>,
    codec: Arc<Codec>,
    markers: Arc<Markers>,
    wait: Duration,
    /// The revision of the last snapshot: the watch starts after it.
    revision: Arc<AtomicI64>,
}

/// How long a lease keep-alive may go unanswered (it needs a leader) before another member is asked.
const KEEPALIVE_WAIT: Duration = Duration::from_secs(3);

/// A watch on one member, from `EtcdStore::watch`.
pub struct MemberWatch {
    pub member: String,
    pub watcher: Watcher,
    pub stream: WatchStream,
}

impl EtcdStore {
    /// Clients for the configured members (made lazily: members that are down do not fail this),
    /// and the task that probes them and refreshes the member list, on the current runtime.
    pub async fn connect(cfg: &EtcdConfig) -> Result<Self, StoreError> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(call::LOAD_ATTEMPT)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3));
        if let Some((u, p)) = &cfg.user {
            opts = opts.with_user(u.clone(), p.clone());
        }
        if let Some(t) = &cfg.tls {
            let mut tls = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(&t.ca));
            if let Some((cert, key)) = &t.identity {
                tls = tls.identity(etcd_client::Identity::from_pem(cert, key));
            }
            opts = opts.with_tls(tls);
        }
        let members = Members::connect(&cfg.endpoints, opts, cfg.tls.is_some(), cfg.member_refresh)
            .await
            .map_err(|e| StoreError::Unavailable(format!("etcd: {e}")))?;
        tokio::spawn(members.clone().maintain());
        let codec = Codec::new(&cfg.prefix, cfg.encryption_key);
        Ok(EtcdStore {
            members,
            markers: Arc::new(Markers::new(codec.key("locks", "txn/"))),
            codec: Arc::new(codec),
            wait: cfg.leader_wait,
            revision: Arc::default(),
        })
    }

    pub fn prefix(&self) -> String {
        self.codec.prefix()
    }

    pub fn snapshot_revision(&self) -> i64 {
        self.revision.load(Ordering::Relaxed)
    }

    pub fn decode(&self, key: &[u8], value: Option<&[u8]>) -> Result<Option<Change>, StoreError> {
        self.codec.decode(key, value)
    }

    /// Whether `member` is still one to use (the watch moves off a member that is not).
    pub fn member_up(&self, member: &str) -> bool {
        self.members.is_up(member)
    }

    /// Watch the whole prefix from `revision` on a healthy member.
    pub async fn watch(&self, revision: i64) -> Result<MemberWatch, StoreError> {
        let member = self
            .members
            .pick()
            .ok_or_else(|| StoreError::Unavailable("etcd: no member can be reached".into()))?;
        let opts = WatchOptions::new()
            .with_prefix()
            .with_progress_notify()
            .with_start_revision(revision);
        let mut client = member.client;
        let why = match tokio::time::timeout(call::ATTEMPT, client.watch(self.prefix(), Some(opts)))
            .await
        {
            Ok(Ok((watcher, stream))) => {
                self.members.ok(&member.url);
                return Ok(MemberWatch {
                    member: member.url,
                    watcher,
                    stream,
                });
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "the watch was not created in time".to_string(),
        };
        self.members.down(&member.url, &why);
        Err(StoreError::Unavailable(format!(
            "etcd {}: {why}",
            member.url
        )))
    }

    /// Every change as etcd operations, with leases granted for challenges.
    async fn ops(&self, chunk: &[Change]) -> Result<Vec<TxnOp>, StoreError> {
        let now = crate::model::unix_now();
        let mut ops = Vec::with_capacity(chunk.len());
        for c in chunk {
            let lease = match c {
                Change::PutChallenge(ch) => {
                    let ttl = ch.expires_at.saturating_sub(now).max(1) as i64;
                    let granted = self
                        .call("granting a challenge lease", |c| async move {
                            c.lease_client().grant(ttl, None).await
                        })
                        .await?;
                    Some(granted.id())
                }
                _ => None,
            };
            ops.push(self.codec.op(c, lease));
        }
        Ok(ops)
    }

    /// The fence condition of `lock`: its key still exists with the revision that created it.
    fn fence(lock: &OrderLock) -> Compare {
        Compare::create_revision(lock.key.clone(), CompareOp::Equal, lock.fence)
    }

    /// Keep `lease` alive until the task is aborted or etcd says it is gone, moving to another member
    /// when the one it talks to fails (the lock survives a member going down).
    fn keep_alive(&self, lease: i64, ttl: i64) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        let every = Duration::from_secs((ttl / 3).max(1) as u64);
        tokio::spawn(async move {
            loop {
                let Some(member) = me.members.pick() else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                let url = member.url.clone();
                match me.keep_alive_on(member.client, lease, every).await {
                    Ok(()) => return, // the lease is gone: nothing left to keep
                    Err(e) => {
                        me.members.down(&url, &e);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        })
    }

    async fn keep_alive_on(
        &self,
        client: etcd_client::Client,
        lease: i64,
        every: Duration,
    ) -> Result<(), String> {
        let (mut keeper, mut stream) =
            tokio::time::timeout(KEEPALIVE_WAIT, client.lease_client().keep_alive(lease))
                .await
                .map_err(|_| "lease keep-alive not answered".to_string())?
                .map_err(|e| e.to_string())?;
        loop {
            keeper.keep_alive().await.map_err(|e| e.to_string())?;
            match tokio::time::timeout(KEEPALIVE_WAIT, stream.message()).await {
                Ok(Ok(Some(r))) if r.ttl() <= 0 => {
                    log::warn!("etcd lease {lease:x} expired");
                    return Ok(());
                }
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None)) => return Err("the keep-alive stream ended".into()),
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => return Err("lease keep-alive not answered".into()),
            }
            tokio::time::sleep(every).await;
        }
    }

    /// A challenge token this node has not seen (yet): read from etcd, so that a CA validation that
    /// lands on any node succeeds even if the watch has not delivered the token.
    pub async fn fetch_challenge(&self, token: &str) -> Option<Challenge> {
        let key = self.codec.key("challenges", token);
        let resp = self
            .call("reading a challenge", |c| {
                let key = key.clone();
                async move { c.kv_client().get(key, None).await }
            })
            .await
            .ok()?;
        let item = resp.kvs().first()?;
        match self.codec.decode(item.key(), Some(item.value())) {
            Ok(Some(Change::PutChallenge(c))) => Some(c),
            _ => None,
        }
    }
}

#[async_trait]
impl Store for EtcdStore {
    fn atomic_limit(&self) -> usize {
        MAX_TXN_OPS
    }

    async fn read_certificate(&self, host: &str) -> Result<Option<CertRecord>, StoreError> {
        let key = self.codec.key("certs", host);
        let resp = self
            .call("reading a certificate", |c| {
                let key = key.clone();
                async move { c.kv_client().get(key, None).await }
            })
            .await?;
        let Some(item) = resp.kvs().first() else {
            return Ok(None);
        };
        match self.codec.decode(item.key(), Some(item.value()))? {
            Some(Change::PutCertificate(rec)) => Ok(Some(rec)),
            _ => Ok(None),
        }
    }

    /// A linearizable read of the whole prefix (retried on another member: a read has no effect).
    async fn load(&self) -> Result<Snapshot, StoreError> {
        let prefix = self.prefix();
        let resp = self
            .call_within("loading the state", call::LOAD_ATTEMPT, false, |c| {
                let prefix = prefix.clone();
                async move {
                    c.kv_client()
                        .get(prefix, Some(GetOptions::new().with_prefix()))
                        .await
                }
            })
            .await?;
        let mut snap = Snapshot::default();
        for item in resp.kvs() {
            match self.codec.decode(item.key(), Some(item.value()))? {
                Some(Change::PutDomain(d)) => snap.domains.push(d),
                Some(Change::PutChallenge(c)) => snap.challenges.push(c),
                Some(Change::PutCertificate(r)) => snap.certificates.push(r),
                Some(Change::PutAcmeAccount(a)) => snap.acme_account = Some(a),
                Some(Change::PutAcmeBudget(b)) => snap.acme_budget = Some(b),
                _ => {}
            }
        }
        let revision = resp.header().map_or(0, |h| h.revision());
        self.revision.store(revision, Ordering::Relaxed);
        Ok(snap)
    }

    /// One transaction, exactly once (`write_once`): a resend after an unknown outcome cannot put a
    /// record back over a newer one written in between.
    async fn apply(&self, changes: &[Change]) -> Result<Revision, StoreError> {
        if changes.len() > MAX_TXN_OPS {
            return Err(StoreError::Unavailable(format!(
                "{} changes do not fit in one etcd transaction (at most {})",
                changes.len(),
                MAX_TXN_OPS
            )));
        }
        let ops = self.ops(changes).await?;
        match self.write_once("writing", vec![], ops, vec![]).await? {
            Written::Applied(revision) => Ok(Some(revision)),
            Written::Refused(_) => Err(StoreError::Unavailable(
                "etcd refused an unconditional write".into(),
            )),
        }
    }

    /// Create the lock key with a lease if it does not exist, exactly once: a resend after an unknown
    /// outcome finds its own marker and knows it holds the lock (the fence is the revision of that
    /// first write), instead of seeing "held by someone" and leaving a lock nobody uses.
    async fn lock_order(&self, name: &str, ttl: i64) -> Result<Option<OrderLock>, StoreError> {
        let key = self.codec.key("locks", name);
        let lease = self
            .call("granting the order lock's lease", |c| async move {
                c.lease_client().grant(ttl, None).await
            })
            .await?
            .id();
        let written = self
            .write_once(
                "taking an order lock",
                vec![Compare::create_revision(key.clone(), CompareOp::Equal, 0)],
                vec![TxnOp::put(
                    key.clone(),
                    std::process::id().to_string(),
                    Some(PutOptions::new().with_lease(lease)),
                )],
                vec![],
            )
            .await?;
        let fence = match written {
            Written::Applied(revision) => revision,
            Written::Refused(_) => {
                self.revoke(lease).await;
                return Ok(None);
            }
        };
        Ok(Some(OrderLock {
            key,
            fence,
            lease,
            keepalive: Some(self.keep_alive(lease, ttl)),
        }))
    }

    /// Fenced and exactly once: applied while the lock is held, never twice.
    async fn apply_fenced(
        &self,
        changes: &[Change],
        lock: &OrderLock,
    ) -> Result<Option<Revision>, StoreError> {
        let ops = self.ops(changes).await?;
        let written = self
            .write_once(
                "writing under the order lock",
                vec![Self::fence(lock)],
                ops,
                vec![],
            )
            .await?;
        Ok(match written {
            Written::Applied(revision) => Some(Some(revision)),
            Written::Refused(_) => None,
        })
    }

    /// Compare-and-swap on the budget key, so two nodes cannot both take the last order; exactly
    /// once, so a resend after an unknown outcome never takes a second order from the budget (it
    /// finds its marker and returns the record it wrote). A swap refused because another node changed
    /// the record reads it again and decides again.
    async fn update_budget(
        &self,
        _current: &Budget,
        update: &(dyn for<'b> Fn(&'b mut Budget) -> bool + Send + Sync),
    ) -> Result<Option<Budget>, StoreError> {
        let key = self.codec.key("acme", "budget");
        // The first read is serializable: answered by the member itself, without the leader. A
        // linearizable read needs a ReadIndex round trip to the leader, and etcd 3.4 parks every
        // later read on a member for its request timeout (7 s) when one such round trip is lost in a
        // leader change (etcd#9566). A stale answer costs nothing: the swap below compares the
        // revision, and a refused swap reads the current record in the same transaction.
        let resp = self
            .call("reading the order budget", |c| {
                let key = key.clone();
                let opts = GetOptions::new().with_serializable();
                async move { c.kv_client().get(key, Some(opts)).await }
            })
            .await?;
        let mut current = resp.kvs().first().cloned();
        // Another node's swap in between makes this one decide again on the record it found, for
        // as long as any other operation may retry.
        let deadline = std::time::Instant::now() + self.wait;
        while std::time::Instant::now() < deadline {
            let (mut budget, rev) = match &current {
                Some(item) => match self.codec.decode(item.key(), Some(item.value()))? {
                    Some(Change::PutAcmeBudget(b)) => (b, item.mod_revision()),
                    _ => (Default::default(), item.mod_revision()),
                },
                None => (Budget::default(), 0),
            };
            if !update(&mut budget) {
                return Ok(None);
            }
            let unchanged = if rev == 0 {
                Compare::create_revision(key.clone(), CompareOp::Equal, 0)
            } else {
                Compare::mod_revision(key.clone(), CompareOp::Equal, rev)
            };
            let put = self.codec.op(&Change::PutAcmeBudget(budget.clone()), None);
            let read = TxnOp::get(key.clone(), None);
            match self
                .write_once(
                    "updating the order budget",
                    vec![unchanged],
                    vec![put],
                    vec![read],
                )
                .await?
            {
                Written::Applied(_) => return Ok(Some(budget)),
                // No pause: each refusal means another swap was applied, and the record it wrote
                // came back with the refusal, so trying again at once is fair to the writer that
                // lost (the winner's next update starts with a read).
                Written::Refused(answers) => {
                    current = match answers.into_iter().next() {
                        Some(TxnOpResponse::Get(g)) => g.kvs().first().cloned(),
                        _ => None,
                    };
                }
            }
        }
        Err(StoreError::Unavailable(format!(
            "the shared order budget kept changing for {:?}; try again",
            self.wait
        )))
    }

    /// Delete the lock key if it is still ours (fenced), then revoke the lease: both may be resent.
    async fn unlock(&self, mut lock: OrderLock) {
        if let Some(k) = lock.keepalive.take() {
            k.abort();
        }
        let txn = etcd_client::Txn::new()
            .when(vec![Self::fence(&lock)])
            .and_then(vec![TxnOp::delete(lock.key.clone(), None)]);
        let deleted = self
            .call("releasing an order lock", |c| {
                let txn = txn.clone();
                async move { c.kv_client().txn(txn).await }
            })
            .await;
        if let Err(e) = deleted {
            log::warn!("{} (its lease expires by itself)", e.message);
        }
        self.revoke(lock.lease).await;
    }
}

impl EtcdStore {
    /// Revoke a lease; "not found" (an earlier copy revoked it, or it expired) is success.
    async fn revoke(&self, lease: i64) {
        let r = self
            .call("revoking a lease", |c| async move {
                match c.lease_client().revoke(lease).await {
                    Err(etcd_client::Error::GRpcStatus(s)) if s.code() == tonic::Code::NotFound => {
                        Ok(())
                    }
                    other => other.map(|_| ()),
                }
            })
            .await;
        if let Err(Failure { message, .. }) = r {
            log::warn!("{message} (it expires by itself)");
        }
    }
}
