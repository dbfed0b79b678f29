//! The durable truth. Every accepted change goes through a `Store` before it touches memory; start-up
//! loads a `Snapshot` from it. The state directory (`dir`) is the default backend, etcd (`etcd`) the
//! one for a fleet. Imports only `model`: policy (budgets, locking rules) stays with its owner, the
//! store offers generic primitives (atomic batches, compare-and-swap, leases).

pub mod dir;
pub mod etcd;

pub use crate::model::Change;
pub use dir::DirStore;

/// Write a secret file atomically with mode 0600.
pub fn write_secret(path: &std::path::Path, bytes: &[u8]) -> Result<(), StoreError> {
    dir::write_atomic(path, bytes, 0o600)
}

use crate::model::{AccountRecord, Budget, CertRecord, Challenge, Domain};
use async_trait::async_trait;
use std::path::PathBuf;

/// Everything a node needs to serve, as loaded at start-up.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub domains: Vec<Domain>,
    pub challenges: Vec<Challenge>,
    pub certificates: Vec<CertRecord>,
    pub acme_account: Option<AccountRecord>,
    pub acme_budget: Option<Budget>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path}: corrupt state file: {message} (fix or remove it; nothing was loaded from it)"
    )]
    Corrupt { path: PathBuf, message: String },
    #[error("state store unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// The same error for another waiter of a group commit (`io::Error` is not `Clone`).
    pub fn duplicate(&self) -> Self {
        match self {
            StoreError::Io { path, source } => StoreError::Io {
                path: path.clone(),
                source: match source.raw_os_error() {
                    Some(code) => std::io::Error::from_raw_os_error(code),
                    None => std::io::Error::new(source.kind(), source.to_string()),
                },
            },
            StoreError::Corrupt { path, message } => StoreError::Corrupt {
                path: path.clone(),
                message: message.clone(),
            },
            StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.into(),
            source,
        }
    }
}

/// The store revision a write was made at: `Some` in a fleet store (etcd), whose watch delivers the
/// write again later; `None` for the state directory.
pub type Revision = Option<i64>;

/// A fleet-wide lock on ordering one certificate. `fence` is the lock key's creation revision: a write
/// made under the lock is applied only while that same key still exists, so a node that lost its lock
/// (lease expired while it was stalled) can never overwrite the new holder's certificate.
pub struct OrderLock {
    pub key: String,
    pub fence: i64,
    pub lease: i64,
    pub(crate) keepalive: Option<tokio::task::JoinHandle<()>>,
}

impl OrderLock {
    /// The lock of a single node: there is nobody to exclude.
    pub fn local() -> Self {
        OrderLock {
            key: String::new(),
            fence: 0,
            lease: 0,
            keepalive: None,
        }
    }
}

impl Drop for OrderLock {
    fn drop(&mut self) {
        if let Some(k) = self.keepalive.take() {
            k.abort();
        }
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Everything stored. A file or key that cannot be read is an error naming it, never skipped.
    async fn load(&self) -> Result<Snapshot, StoreError>;
    /// Make `changes` durable, all or nothing, before returning. At most `atomic_limit` changes.
    /// A fleet store says at which revision (what its watch will report for them).
    async fn apply(&self, changes: &[Change]) -> Result<Revision, StoreError>;
    /// Most changes one `apply` writes atomically; a larger batch is refused, never split. Group
    /// commit never combines requests beyond it.
    fn atomic_limit(&self) -> usize {
        usize::MAX
    }
    /// Take the lock on ordering `name`'s certificate, held `ttl` seconds past this node's last sign of
    /// life; `None` when another node holds it. A single node always gets it.
    async fn lock_order(&self, _name: &str, _ttl: i64) -> Result<Option<OrderLock>, StoreError> {
        Ok(Some(OrderLock::local()))
    }
    /// Apply `changes` only while `lock` is held; `Ok(None)` when it was lost.
    async fn apply_fenced(
        &self,
        changes: &[Change],
        _lock: &OrderLock,
    ) -> Result<Option<Revision>, StoreError> {
        self.apply(changes).await.map(Some)
    }
    /// Release a lock taken with `lock_order`.
    async fn unlock(&self, _lock: OrderLock) {}
    /// The certificate stored for `host`, read from the store itself now (a fleet store: a
    /// linearizable read, newer than what its watch may have delivered). `None` from a store whose
    /// writer's memory is the store (a single node), or when none is stored.
    async fn read_certificate(&self, _host: &str) -> Result<Option<CertRecord>, StoreError> {
        Ok(None)
    }
    /// Change the persisted ACME budget record (the new-order window and the back-offs) with `update`
    /// (`current` is this node's copy): the new record when `update` says it changed it, `None` when
    /// it refused (the window is spent). A fleet store does it atomically (compare-and-swap, `update`
    /// run again on the fresh record when another node changed it meanwhile).
    async fn update_budget(
        &self,
        current: &Budget,
        update: &(dyn for<'b> Fn(&'b mut Budget) -> bool + Send + Sync),
    ) -> Result<Option<Budget>, StoreError> {
        let mut b = current.clone();
        if !update(&mut b) {
            return Ok(None);
        }
        self.apply(&[Change::PutAcmeBudget(b.clone())]).await?;
        Ok(Some(b))
    }
}
