//! Every etcd request goes through `EtcdStore::call`: on a healthy member, retried on another one when
//! a member fails and after a pause while the cluster elects a leader, for at most `wait`
//! (`state.etcd.leader_wait_ms`) in all. Past it the caller gets `Unavailable` (503 with
//! `Retry-After` at the admin API).
//!
//! A retry resends the same request after an error that may have come after etcd applied it, so
//! every request sent through here must be safe to apply twice:
//! - reads (`load`, a challenge read-through, the budget's first read, `status`, `member_list`): no
//!   effect;
//! - writes (`apply`, `apply_fenced`, the budget compare-and-swap, taking an order lock): made
//!   exactly-once by `write_once` below, whatever they contain;
//! - `unlock` (a delete fenced by the lock's revision) and lease revocation: applying them again
//!   finds nothing left to delete (a revoked lease answers "not found", taken as done);
//! - lease grants: a retry may grant a second lease; the one not used expires on its TTL with
//!   nothing attached.

use super::EtcdStore;
use crate::store::StoreError;
use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse, TxnResponse};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tonic::Code;

/// The longest one attempt may take on one member before it is sent to the next. Short: a write
/// sent to a follower while the leader is dead hangs until etcd's own request timeout (7 s), when
/// a new leader is usually elected within a second or two; resending is safe (see above).
pub const ATTEMPT: Duration = Duration::from_secs(1);
/// The longest one attempt of a read of the whole state may take (100k domains and certificates).
pub const LOAD_ATTEMPT: Duration = Duration::from_secs(60);

/// Why a request failed, which says what to do next.
#[derive(Debug, PartialEq)]
pub enum Fault {
    /// This member cannot serve (refused, reset, silent): try another, skip it until it is healthy.
    Member,
    /// The cluster cannot serve yet (no leader, leader changed, proposal dropped, timed out in
    /// raft): wait a moment, ask another member.
    Cluster,
    /// The request itself is wrong (bad argument, permission, unknown lease): retrying cannot help.
    Fatal,
}

pub fn classify(e: &etcd_client::Error) -> Fault {
    match e {
        etcd_client::Error::GRpcStatus(s) => match s.code() {
            Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::Unimplemented => Fault::Fatal,
            _ if s.message().starts_with("etcdserver:") || s.message().contains("raft") => {
                Fault::Cluster
            }
            _ => Fault::Member,
        },
        etcd_client::Error::TransportError(_)
        | etcd_client::Error::IoError(_)
        | etcd_client::Error::WatchError(_)
        | etcd_client::Error::LeaseKeepAliveError(_) => Fault::Member,
        _ => Fault::Fatal,
    }
}

fn is_lease_not_found(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s)
        if s.code() == Code::NotFound && s.message().contains("lease not found"))
}

/// A failed call: what to tell the caller, and whether etcd said a lease was gone.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub lease_not_found: bool,
}

impl From<Failure> for StoreError {
    fn from(f: Failure) -> Self {
        StoreError::Unavailable(f.message)
    }
}

impl EtcdStore {
    /// Run `f` against a healthy member until it succeeds, fails for good, or `wait` has passed;
    /// each attempt at most `ATTEMPT`.
    pub(super) async fn call<T, F, Fut>(&self, what: &str, f: F) -> Result<T, Failure>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        self.call_within(what, ATTEMPT, true, f).await
    }

    /// `call` with attempts of up to `attempt`, cut at the end of `wait` when `capped` (an uncapped
    /// attempt may run past it: no new one starts after it).
    pub(super) async fn call_within<T, F, Fut>(
        &self,
        what: &str,
        attempt: Duration,
        capped: bool,
        mut f: F,
    ) -> Result<T, Failure>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + self.wait;
        let mut pause = Duration::from_millis(25);
        let mut attempts = 0u32;
        loop {
            let Some(member) = self.members.pick() else {
                return Err(Failure {
                    message: format!("etcd: {what}: no member can be reached"),
                    lease_not_found: false,
                });
            };
            attempts += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            let limit = if capped { left.min(attempt) } else { attempt };
            let error = match tokio::time::timeout(limit, f(member.client)).await {
                Ok(Ok(v)) => {
                    self.members.ok(&member.url);
                    return Ok(v);
                }
                Ok(Err(e)) => {
                    let fault = classify(&e);
                    match fault {
                        Fault::Fatal => {
                            self.members.failed(&member.url);
                            return Err(Failure {
                                lease_not_found: is_lease_not_found(&e),
                                message: format!("etcd: {what}: {e}"),
                            });
                        }
                        Fault::Member => self.members.down(&member.url, &e.to_string()),
                        Fault::Cluster => self.members.failed(&member.url),
                    }
                    (fault, e.to_string())
                }
                Err(_) => {
                    let why = format!("no answer within {limit:?}");
                    self.members.down(&member.url, &why);
                    (Fault::Member, why)
                }
            };
            let (fault, message) = error;
            log::debug!(
                "etcd: {what}: attempt {attempts} on {}: {message}",
                member.url
            );
            // Another healthy member is tried at once; otherwise (or while there is no leader)
            // wait a little, doubling up to half a second.
            if fault == Fault::Cluster || self.members.healthy() == 0 {
                let left = deadline.saturating_duration_since(Instant::now());
                tokio::time::sleep(pause.min(left)).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            if Instant::now() >= deadline {
                return Err(Failure {
                    message: format!(
                        "etcd: {what}: {message} ({attempts} attempts in {:?})",
                        self.wait
                    ),
                    lease_not_found: false,
                });
            }
            crate::metrics::ETCD_RETRIES.inc();
        }
    }
}

/// What a `write_once` did.
pub enum Written {
    /// Applied (by this attempt or an earlier one of the same write), at this revision.
    Applied(i64),
    /// Not applied: a condition failed. Holds the answers to the reads the caller asked for in
    /// that case (`write_once`'s `otherwise`), read in the same transaction.
    Refused(Vec<TxnOpResponse>),
}

/// Write markers: each write carries a fresh key `PREFIX/locks/txn/WRITER/SEQ`, created in the same
/// transaction and required absent by it. Resending the write after an unknown outcome therefore
/// applies it at most once (the second copy finds the marker), and the marker tells whether the
/// earlier copy was applied. Markers carry a lease of `MARKER_TTL`, so they expire by themselves.
pub struct Markers {
    prefix: String,
    seq: AtomicU64,
    lease: Mutex<Option<(i64, Instant)>>,
}

/// How long a marker outlives its write: far longer than any retry.
const MARKER_TTL: i64 = 300;
/// A marker lease is used for new writes this long, then a new one is granted.
const MARKER_LEASE_USE: Duration = Duration::from_secs(60);

impl Markers {
    pub fn new(prefix: String) -> Self {
        let writer: u64 = rand::random();
        Markers {
            prefix: format!("{prefix}{writer:016x}/"),
            seq: AtomicU64::new(0),
            lease: Mutex::new(None),
        }
    }

    fn next(&self) -> String {
        format!(
            "{}{}",
            self.prefix,
            self.seq.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn current_lease(&self) -> Option<i64> {
        let l = self.lease.lock().unwrap_or_else(|p| p.into_inner());
        l.filter(|(_, at)| at.elapsed() < MARKER_LEASE_USE)
            .map(|(id, _)| id)
    }

    fn set_lease(&self, id: Option<i64>) {
        *self.lease.lock().unwrap_or_else(|p| p.into_inner()) = id.map(|id| (id, Instant::now()));
    }
}

impl EtcdStore {
    async fn marker_lease(&self) -> Result<i64, Failure> {
        if let Some(id) = self.markers.current_lease() {
            return Ok(id);
        }
        let id = self
            .call("granting a lease for write markers", |c| async move {
                c.lease_client().grant(MARKER_TTL, None).await
            })
            .await?
            .id();
        self.markers.set_lease(Some(id));
        Ok(id)
    }

    /// `ops` when every one of `when` holds, exactly once however often it is resent; when a
    /// condition fails, the reads in `otherwise` are answered instead (from the same revision).
    pub(super) async fn write_once(
        &self,
        what: &str,
        when: Vec<Compare>,
        ops: Vec<TxnOp>,
        otherwise: Vec<TxnOp>,
    ) -> Result<Written, Failure> {
        let marker = self.markers.next();
        let mut lease_renewed = false;
        loop {
            let lease = self.marker_lease().await?;
            let mut cond = when.clone();
            cond.push(Compare::create_revision(
                marker.clone(),
                CompareOp::Equal,
                0,
            ));
            let mut then = ops.clone();
            then.push(TxnOp::put(
                marker.clone(),
                "",
                Some(PutOptions::new().with_lease(lease)),
            ));
            let mut reads = vec![TxnOp::get(marker.clone(), None)];
            reads.extend(otherwise.iter().cloned());
            let txn = Txn::new().when(cond).and_then(then).or_else(reads);
            let resp = self
                .call(what, |c| {
                    let txn = txn.clone();
                    async move { c.kv_client().txn(txn).await }
                })
                .await;
            match resp {
                Ok(resp) => return Ok(outcome(resp)),
                // The marker lease expired (etcd was away for minutes): a new one, once.
                Err(f) if f.lease_not_found && !lease_renewed => {
                    lease_renewed = true;
                    self.markers.set_lease(None);
                }
                Err(f) => return Err(f),
            }
        }
    }
}

fn outcome(resp: TxnResponse) -> Written {
    let revision = resp.header().map_or(0, |h| h.revision());
    if resp.succeeded() {
        return Written::Applied(revision);
    }
    let mut answers = resp.op_responses().into_iter();
    match answers.next() {
        Some(TxnOpResponse::Get(g)) if !g.kvs().is_empty() => {
            Written::Applied(g.kvs()[0].create_revision())
        }
        _ => Written::Refused(answers.collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: Code, m: &str) -> etcd_client::Error {
        etcd_client::Error::GRpcStatus(tonic::Status::new(code, m))
    }

    #[test]
    fn errors_are_classified_by_who_can_fix_them() {
        assert_eq!(
            classify(&status(Code::Unavailable, "etcdserver: leader changed")),
            Fault::Cluster
        );
        assert_eq!(
            classify(&status(Code::Unavailable, "etcdserver: no leader")),
            Fault::Cluster
        );
        assert_eq!(
            classify(&status(Code::Unknown, "raft proposal dropped")),
            Fault::Cluster
        );
        assert_eq!(
            classify(&status(
                Code::Unavailable,
                "tcp connect error: Connection refused"
            )),
            Fault::Member
        );
        assert_eq!(
            classify(&status(Code::Cancelled, "Timeout expired")),
            Fault::Member
        );
        let lease = status(Code::NotFound, "etcdserver: requested lease not found");
        assert_eq!(classify(&lease), Fault::Fatal);
        assert!(is_lease_not_found(&lease));
        assert_eq!(
            classify(&status(
                Code::InvalidArgument,
                "etcdserver: too many operations in txn request"
            )),
            Fault::Fatal
        );
        assert_eq!(
            classify(&status(
                Code::PermissionDenied,
                "etcdserver: permission denied"
            )),
            Fault::Fatal
        );
    }

    #[test]
    fn markers_are_unique_per_writer_and_write() {
        let a = Markers::new("/p/locks/txn/".into());
        let b = Markers::new("/p/locks/txn/".into());
        let (a1, a2, b1) = (a.next(), a.next(), b.next());
        assert!(a1.starts_with("/p/locks/txn/"));
        assert_ne!(a1, a2);
        assert_ne!(a1, b1);
    }
}
