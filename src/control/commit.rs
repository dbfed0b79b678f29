//! Making changes durable. Requests that arrive while a write is in progress are committed together by
//! the next writer (group commit): one durable write (one sync, one etcd transaction) for all of them,
//! each still checked on its own and answered for itself. Nothing is written unless the gate is open.

use super::{ApplyError, Control};
use crate::metrics;
use crate::model::Change;
use crate::store::{OrderLock, StoreError};
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Whether this process may write to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Writes {
    /// Loaded, following the current writer, not owning the store yet.
    Waiting,
    Open,
    /// A graceful upgrade's hand-over has started: the last writes are answered (admin requests
    /// already accepted, the ACME manager removing its orders' tokens), no new order starts.
    Closing,
    /// Handed over to a successor: this process writes nothing any more.
    Closed,
}

/// Most changes one group commit writes (a single larger batch still goes alone): bounds one write's
/// size and the wait of its first request.
const MAX_GROUP: usize = 1024;

/// How long an admin write waits for the gate to open before it is answered 503: an upgrade's new
/// process gets the writer role within about a second of the hand-over (an old process of an
/// earlier version keeps it until it exits).
pub const GATE_WAIT: Duration = Duration::from_secs(10);

/// A request waiting for the writer.
struct Pending {
    changes: Vec<Change>,
    done: tokio::sync::oneshot::Sender<Result<(), ApplyError>>,
}

pub(super) struct Committer {
    writer: tokio::sync::Mutex<()>,
    queue: std::sync::Mutex<VecDeque<Pending>>,
    gate: watch::Sender<Writes>,
}

impl Default for Committer {
    fn default() -> Self {
        Committer {
            writer: Default::default(),
            queue: Default::default(),
            gate: watch::channel(Writes::Waiting).0,
        }
    }
}

impl Committer {
    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Pending>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn not_writer(w: &Writes) -> ApplyError {
    ApplyError::NotWriter(match w {
        Writes::Waiting => "not writable yet: the previous edgeward process still holds the state \
                            (graceful upgrade in progress); retry"
            .into(),
        _ => "this edgeward process handed the state over to its successor (graceful upgrade); \
              retry, the new process answers"
            .into(),
    })
}

impl Control {
    /// Whether this process may write, and a way to wait for changes of that.
    pub fn writes(&self) -> watch::Receiver<Writes> {
        self.commit.gate.subscribe()
    }

    /// Start writing: the store is ours and memory has caught up with it.
    pub fn open_writes(&self) {
        self.commit.gate.send_replace(Writes::Open);
    }

    /// The hand-over starts: writes still go through, the ACME manager stops.
    pub fn begin_closing(&self) {
        self.commit.gate.send_if_modified(|w| {
            let open = *w == Writes::Open;
            if open {
                *w = Writes::Closing;
            }
            open
        });
    }

    /// Stop writing (hand-over to a successor): waits for the write in progress; everything queued
    /// after it is answered `NotWriter`.
    pub async fn close_writes(&self) {
        let _writer = self.commit.writer.lock().await;
        self.commit.gate.send_replace(Writes::Closed);
    }

    /// Wait, at most `limit`, until writes are open.
    pub async fn wait_writable(&self, limit: Duration) -> Result<(), ApplyError> {
        let mut rx = self.writes();
        let _ = tokio::time::timeout(limit, rx.wait_for(|w| *w != Writes::Waiting)).await;
        self.check_open()
    }

    fn check_open(&self) -> Result<(), ApplyError> {
        match &*self.commit.gate.borrow() {
            Writes::Open | Writes::Closing => Ok(()),
            w => Err(not_writer(w)),
        }
    }

    /// Apply a batch, all or nothing. Returns once the batch is durable and live. Waits (up to
    /// `GATE_WAIT`, in arrival order) while an upgrade hands the writer role over.
    pub async fn apply(self: &Arc<Self>, changes: Vec<Change>) -> Result<(), ApplyError> {
        if changes.is_empty() {
            return Ok(());
        }
        // Queued on arrival: requests that wait for the gate (an upgrade's hand-over) are committed
        // in the order they came.
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.commit.queue().push_back(Pending { changes, done: tx });
        // The write runs in its own task: a caller that stops waiting (a timeout, a dropped request)
        // cannot leave the requests grouped with its own unanswered or half applied. One task per
        // request, each committing one group, so every queued request is taken by some task.
        let me = self.clone();
        tokio::spawn(async move {
            // Each waits for the gate on its own (not holding the writer), so that no request waits
            // longer than `GATE_WAIT`; whichever task commits takes the queue from its front.
            // Answered `NotWriter` by `commit_group` if the gate stays shut.
            let _ = me.wait_writable(GATE_WAIT).await;
            let _writer = me.commit.writer.lock().await;
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
        let group = self.take_group();
        if let Err(e) = self.check_open() {
            let why = e.to_string();
            for p in group {
                let _ = p.done.send(Err(ApplyError::NotWriter(why.clone())));
            }
            return;
        }
        let (mut all, mut passed) = (Vec::new(), Vec::new());
        for p in group {
            match self.check(&p.changes) {
                Ok(()) => {
                    all.extend(p.changes.iter().cloned());
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
        // One atomic write (a journal line, an etcd transaction): it happened or it did not.
        let revision = match self.store.apply(&all).await {
            Ok(r) => r,
            Err(e) => {
                for p in passed {
                    let _ = p.done.send(Err(e.duplicate().into()));
                }
                return;
            }
        };
        for p in passed {
            self.commit_own(p.changes, revision);
            let _ = p.done.send(Ok(()));
        }
    }

    /// The queued requests one store write takes: in order, keys disjoint, within the atomic limit.
    fn take_group(&self) -> Vec<Pending> {
        let limit = self.store.atomic_limit().min(MAX_GROUP);
        let mut queue = self.commit.queue();
        let mut keys = HashSet::new();
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
    }

    /// `apply`, but written only while `lock` is still held (a node that lost it writes nothing).
    pub async fn apply_fenced(
        &self,
        changes: Vec<Change>,
        lock: &OrderLock,
    ) -> Result<(), ApplyError> {
        let _writer = self.commit.writer.lock().await;
        self.check_open()?;
        self.check(&changes)?;
        let Some(revision) = self.store.apply_fenced(&changes, lock).await? else {
            return Err(ApplyError::Fenced);
        };
        self.commit_own(changes, revision);
        Ok(())
    }

    /// Take one new order from the persisted budget (atomically across a fleet).
    pub async fn take_budget(&self, now: i64, max: usize, window: i64) -> Result<bool, ApplyError> {
        self.update_budget(&move |b| b.take(now, max, window)).await
    }

    /// Change the persisted budget record (see `Store::update_budget`); whether it changed.
    pub async fn update_budget(
        &self,
        update: &(dyn for<'b> Fn(&'b mut crate::model::Budget) -> bool + Send + Sync),
    ) -> Result<bool, ApplyError> {
        let _writer = self.commit.writer.lock().await;
        self.check_open()?;
        let current = self.acme_stored().budget;
        match self.store.update_budget(&current, update).await? {
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
}
