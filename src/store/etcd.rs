//! etcd backend for a fleet of edge nodes: every domain, challenge, certificate and ACME record is a key
//! under one prefix. A batch is one etcd transaction, so at most `MAX_TXN_OPS` (etcd's default limit)
//! changes: a larger one is refused, never split. `decode` maps a key/value (or a delete event) back to
//! a `Change`, for start-up and for the watch.

use super::OrderLock;
use super::{Change, Snapshot, Store, StoreError};
use crate::model::{Budget, CertRecord, Challenge, Domain};
use async_trait::async_trait;
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// etcd's default `--max-txn-ops`.
pub const MAX_TXN_OPS: usize = 128;

/// `edgeward.state.etcd`. Debug output leaves the password and the encryption key out.
#[derive(Clone)]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub user: Option<(String, String)>,
    /// 32 bytes: private keys and account credentials are stored AES-256-GCM encrypted.
    pub encryption_key: Option<[u8; 32]>,
    pub tls: Option<EtcdTls>,
}

impl std::fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("user", &self.user.as_ref().map(|(u, _)| u))
            .field("encryption", &self.encryption_key.is_some())
            .field("tls", &self.tls)
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
    client: Client,
    prefix: Arc<str>,
    sealer: Option<Arc<Sealer>>,
    /// The revision of the last snapshot: the watch starts after it.
    revision: Arc<AtomicI64>,
}

fn unavailable(e: etcd_client::Error) -> StoreError {
    StoreError::Unavailable(format!("etcd: {e}"))
}

impl EtcdStore {
    /// Every change as etcd operations, with leases granted for challenges.
    async fn ops(&self, chunk: &[Change]) -> Result<Vec<TxnOp>, StoreError> {
        let mut leases = self.client.lease_client();
        let now = crate::model::unix_now();
        let mut ops = Vec::with_capacity(chunk.len());
        for c in chunk {
            let lease = match c {
                Change::PutChallenge(ch) => {
                    let ttl = ch.expires_at.saturating_sub(now).max(1) as i64;
                    Some(leases.grant(ttl, None).await.map_err(unavailable)?.id())
                }
                _ => None,
            };
            ops.push(self.op(c, lease));
        }
        Ok(ops)
    }

    pub async fn connect(cfg: &EtcdConfig) -> Result<Self, StoreError> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(3))
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
        let client = Client::connect(&cfg.endpoints, Some(opts))
            .await
            .map_err(unavailable)?;
        Ok(EtcdStore {
            client,
            prefix: cfg.prefix.trim_end_matches('/').into(),
            sealer: cfg.encryption_key.map(|k| Arc::new(Sealer(k))),
            revision: Arc::default(),
        })
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub fn prefix(&self) -> String {
        format!("{}/", self.prefix)
    }

    pub fn snapshot_revision(&self) -> i64 {
        self.revision.load(Ordering::Relaxed)
    }

    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}/{kind}/{name}", self.prefix)
    }

    /// The etcd operation for a change; challenges carry a lease so etcd drops them at expiry.
    fn op(&self, c: &Change, lease: Option<i64>) -> TxnOp {
        let json = |v: serde_json::Result<Vec<u8>>| v.expect("state objects always serialize");
        match c {
            Change::PutDomain(d) => TxnOp::put(
                self.key("domains", &d.host),
                json(serde_json::to_vec(d)),
                None,
            ),
            Change::DeleteDomain { host } => TxnOp::delete(self.key("domains", host), None),
            Change::PutChallenge(ch) => TxnOp::put(
                self.key("challenges", &ch.token),
                json(serde_json::to_vec(ch)),
                lease.map(|id| PutOptions::new().with_lease(id)),
            ),
            Change::DeleteChallenge { token } => TxnOp::delete(self.key("challenges", token), None),
            Change::PutCertificate(r) => {
                let mut r = r.clone();
                if let Some(s) = &self.sealer {
                    r.key_pem = s.seal(&r.key_pem);
                }
                TxnOp::put(
                    self.key("certs", &r.host),
                    json(serde_json::to_vec(&r)),
                    None,
                )
            }
            Change::DeleteCertificate { host } => TxnOp::delete(self.key("certs", host), None),
            Change::PutAcmeAccount(a) => {
                let mut a = a.clone();
                if let Some(s) = &self.sealer {
                    a.credentials = s.seal(&a.credentials);
                }
                TxnOp::put(
                    self.key("acme", "account"),
                    json(serde_json::to_vec(&a)),
                    None,
                )
            }
            Change::PutAcmeBudget(b) => TxnOp::put(
                self.key("acme", "budget"),
                json(serde_json::to_vec(b)),
                None,
            ),
        }
    }

    /// A stored key (and its value, `None` for a delete event) as the change it represents.
    pub fn decode(&self, key: &[u8], value: Option<&[u8]>) -> Result<Option<Change>, StoreError> {
        let key = String::from_utf8_lossy(key);
        let corrupt = |m: String| StoreError::Corrupt {
            path: format!("etcd key {key}").into(),
            message: m,
        };
        let Some(rest) = key
            .strip_prefix(&*self.prefix)
            .and_then(|r| r.strip_prefix('/'))
        else {
            return Ok(None);
        };
        let Some((kind, name)) = rest.split_once('/') else {
            return Ok(None);
        };
        if kind == "locks" {
            return Ok(None); // coordination only, not state
        }
        let parse = |v: &[u8]| -> Result<Change, StoreError> {
            let change = match kind {
                "domains" => Change::PutDomain(
                    serde_json::from_slice::<Domain>(v).map_err(|e| corrupt(e.to_string()))?,
                ),
                "challenges" => Change::PutChallenge(
                    serde_json::from_slice::<Challenge>(v).map_err(|e| corrupt(e.to_string()))?,
                ),
                "certs" => Change::PutCertificate(
                    serde_json::from_slice::<CertRecord>(v).map_err(|e| corrupt(e.to_string()))?,
                ),
                "acme" if name == "account" => Change::PutAcmeAccount(
                    serde_json::from_slice(v).map_err(|e| corrupt(e.to_string()))?,
                ),
                "acme" if name == "budget" => Change::PutAcmeBudget(
                    serde_json::from_slice(v).map_err(|e| corrupt(e.to_string()))?,
                ),
                _ => return Err(corrupt("unknown key".into())),
            };
            Ok(change)
        };
        let change = match value {
            Some(v) => self.unseal(parse(v)?).map_err(corrupt)?,
            None => match kind {
                "domains" => Change::DeleteDomain { host: name.into() },
                "challenges" => Change::DeleteChallenge { token: name.into() },
                "certs" => Change::DeleteCertificate { host: name.into() },
                _ => return Ok(None),
            },
        };
        // The object must belong under its key.
        let matches = match &change {
            Change::PutDomain(d) => d.host == name,
            Change::PutChallenge(c) => c.token == name,
            Change::PutCertificate(r) => r.host == name,
            _ => true,
        };
        if !matches {
            return Err(corrupt("the object does not match its key".into()));
        }
        Ok(Some(change))
    }
}

impl EtcdStore {
    /// Decrypt what `op` sealed; a sealed value without the key (or with another key) is an error.
    fn unseal(&self, c: Change) -> Result<Change, String> {
        let open = |v: String| -> Result<String, String> {
            match (v.strip_prefix(SEALED), &self.sealer) {
                (None, _) => Ok(v),
                (Some(_), None) => {
                    Err("encrypted, but no encryption_key_file is configured".into())
                }
                (Some(_), Some(s)) => s.open(&v),
            }
        };
        Ok(match c {
            Change::PutCertificate(mut r) => {
                r.key_pem = open(r.key_pem)?;
                Change::PutCertificate(r)
            }
            Change::PutAcmeAccount(mut a) => {
                a.credentials = open(a.credentials)?;
                Change::PutAcmeAccount(a)
            }
            other => other,
        })
    }
}

const SEALED: &str = "enc:v1:";

/// AES-256-GCM with a random 96-bit nonce per value: `enc:v1:` + hex(nonce | ciphertext | tag).
struct Sealer([u8; 32]);

impl Sealer {
    fn seal(&self, plain: &str) -> String {
        use openssl::symm::{encrypt_aead, Cipher};
        let mut nonce = [0u8; 12];
        openssl::rand::rand_bytes(&mut nonce).expect("randomness");
        let mut tag = [0u8; 16];
        let ct = encrypt_aead(
            Cipher::aes_256_gcm(),
            &self.0,
            Some(&nonce),
            b"edgeward",
            plain.as_bytes(),
            &mut tag,
        )
        .expect("AES-GCM encryption does not fail on valid input");
        let mut out = nonce.to_vec();
        out.extend(ct);
        out.extend(tag);
        format!("{SEALED}{}", hex::encode(out))
    }

    fn open(&self, sealed: &str) -> Result<String, String> {
        use openssl::symm::{decrypt_aead, Cipher};
        let raw =
            hex::decode(&sealed[SEALED.len()..]).map_err(|e| format!("encrypted value: {e}"))?;
        if raw.len() < 28 {
            return Err("encrypted value too short".into());
        }
        let (nonce, rest) = raw.split_at(12);
        let (ct, tag) = rest.split_at(rest.len() - 16);
        let plain = decrypt_aead(
            Cipher::aes_256_gcm(),
            &self.0,
            Some(nonce),
            b"edgeward",
            ct,
            tag,
        )
        .map_err(|_| {
            "cannot decrypt: wrong encryption key, or the value was altered".to_string()
        })?;
        String::from_utf8(plain).map_err(|e| e.to_string())
    }
}

#[async_trait]
impl Store for EtcdStore {
    fn atomic_limit(&self) -> usize {
        MAX_TXN_OPS
    }

    async fn load(&self) -> Result<Snapshot, StoreError> {
        let mut kv = self.client.kv_client();
        let resp = kv
            .get(self.prefix(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(unavailable)?;
        let mut snap = Snapshot::default();
        for item in resp.kvs() {
            match self.decode(item.key(), Some(item.value()))? {
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

    async fn apply(&self, changes: &[Change]) -> Result<(), StoreError> {
        if changes.len() > MAX_TXN_OPS {
            return Err(StoreError::Unavailable(format!(
                "{} changes do not fit in one etcd transaction (at most {MAX_TXN_OPS})",
                changes.len()
            )));
        }
        let ops = self.ops(changes).await?;
        self.client
            .kv_client()
            .txn(Txn::new().and_then(ops))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn lock_order(&self, name: &str, ttl: i64) -> Result<Option<OrderLock>, StoreError> {
        let key = self.key("locks", name);
        let mut leases = self.client.lease_client();
        let lease = leases.grant(ttl, None).await.map_err(unavailable)?.id();
        let txn = Txn::new()
            .when(vec![Compare::create_revision(
                key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then(vec![TxnOp::put(
                key.clone(),
                std::process::id().to_string(),
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let resp = self
            .client
            .kv_client()
            .txn(txn)
            .await
            .map_err(unavailable)?;
        if !resp.succeeded() {
            let _ = leases.revoke(lease).await;
            return Ok(None);
        }
        let fence = resp.header().map_or(0, |h| h.revision());
        // Keep the lease alive while the order runs; if this node stalls or dies, it expires.
        let (mut keeper, mut stream) = leases.keep_alive(lease).await.map_err(unavailable)?;
        let every = Duration::from_secs((ttl / 3).max(1) as u64);
        let keepalive = tokio::spawn(async move {
            loop {
                if keeper.keep_alive().await.is_err() {
                    return;
                }
                if stream.message().await.is_err() {
                    return;
                }
                tokio::time::sleep(every).await;
            }
        });
        Ok(Some(OrderLock {
            key,
            fence,
            lease,
            keepalive: Some(keepalive),
        }))
    }

    async fn apply_fenced(&self, changes: &[Change], lock: &OrderLock) -> Result<bool, StoreError> {
        let ops = self.ops(changes).await?;
        let txn = Txn::new()
            .when(vec![Compare::create_revision(
                lock.key.clone(),
                CompareOp::Equal,
                lock.fence,
            )])
            .and_then(ops);
        let resp = self
            .client
            .kv_client()
            .txn(txn)
            .await
            .map_err(unavailable)?;
        Ok(resp.succeeded())
    }

    /// Compare-and-swap on the budget key, so two nodes cannot both take the last order.
    async fn update_budget(
        &self,
        _current: &Budget,
        update: &(dyn for<'b> Fn(&'b mut Budget) -> bool + Send + Sync),
    ) -> Result<Option<Budget>, StoreError> {
        let key = self.key("acme", "budget");
        let mut kv = self.client.kv_client();
        for _ in 0..20 {
            let resp = kv.get(key.clone(), None).await.map_err(unavailable)?;
            let (mut budget, rev) = match resp.kvs().first() {
                Some(item) => match self.decode(item.key(), Some(item.value()))? {
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
            let put = self.op(&Change::PutAcmeBudget(budget.clone()), None);
            let txn = Txn::new().when(vec![unchanged]).and_then(vec![put]);
            if kv.txn(txn).await.map_err(unavailable)?.succeeded() {
                return Ok(Some(budget));
            }
        }
        Err(StoreError::Unavailable(
            "the shared order budget kept changing; try again".into(),
        ))
    }

    async fn unlock(&self, mut lock: OrderLock) {
        if let Some(k) = lock.keepalive.take() {
            k.abort();
        }
        let txn = Txn::new()
            .when(vec![Compare::create_revision(
                lock.key.clone(),
                CompareOp::Equal,
                lock.fence,
            )])
            .and_then(vec![TxnOp::delete(lock.key.clone(), None)]);
        let _ = self.client.kv_client().txn(txn).await;
        let _ = self.client.lease_client().revoke(lock.lease).await;
    }
}

impl EtcdStore {
    /// A challenge token this node has not seen (yet): read from etcd, so that a CA validation that
    /// lands on any node succeeds even if the watch has not delivered the token.
    pub async fn fetch_challenge(&self, token: &str) -> Option<Challenge> {
        let mut kv = self.client.kv_client();
        let resp = kv.get(self.key("challenges", token), None).await.ok()?;
        let item = resp.kvs().first()?;
        match self.decode(item.key(), Some(item.value())) {
            Ok(Some(Change::PutChallenge(c))) => Some(c),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealing_round_trips_and_detects_the_wrong_key() {
        let s = Sealer([7u8; 32]);
        let sealed = s.seal("-----BEGIN PRIVATE KEY-----\nabc\n");
        assert!(sealed.starts_with(SEALED) && !sealed.contains("PRIVATE"));
        assert_ne!(
            sealed,
            s.seal("-----BEGIN PRIVATE KEY-----\nabc\n"),
            "a fresh nonce each time"
        );
        assert_eq!(
            s.open(&sealed).unwrap(),
            "-----BEGIN PRIVATE KEY-----\nabc\n"
        );
        assert!(Sealer([8u8; 32]).open(&sealed).is_err());
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push('0');
        assert!(s.open(&tampered).is_err() || tampered == sealed);
    }
}
