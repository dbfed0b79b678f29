//! When this process writes the state, and when it stops.
//!
//! Start-up only reads: the state is loaded, then followed (`Follower`: what the current writer
//! appends is applied to memory within a few milliseconds), first on a thread of its own while
//! Pingora takes the listening sockets over (`FollowThread`), then by the `StateWriter` service. That
//! service takes the directory's lock (waiting while the process an upgrade replaces still holds
//! it), reads the last records under the lock, opens the gate, and only then writes what this process
//! owes: the configuration's seed list (served from memory since start-up) and the expiry of old
//! challenge tokens.
//!
//! In the process being replaced, the hand-over starts when Pingora has sent the listening sockets
//! (`Handover::sockets_sent`): the admin listener stops accepting and answers what it has, the ACME
//! manager stops, the last write in progress completes, the gate closes and the lock is released.
//! From then on this process follows what its successor writes, until it exits.

use super::{Control, Writes};
use crate::metrics;
use crate::model::unix_now;
use crate::store::dir::{DirStore, Followed, Lock, Tail};
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// How often a follower looks at the log: the lag between the writer's answer and this process
/// serving the change is at most about this plus the time to apply it.
pub const FOLLOW_EVERY: Duration = Duration::from_millis(5);
/// Expired challenge tokens are deleted this often.
const EXPIRY_EVERY: Duration = Duration::from_secs(30);

/// Memory kept equal to what another process writes.
pub struct Follower {
    control: Arc<Control>,
    /// `None` with etcd: its watch follows (`fleet`), and there is no lock to wait for.
    dir: Option<(DirStore, Tail)>,
    /// Do not log the same follow error every few milliseconds.
    failing: bool,
}

impl Follower {
    pub fn dir(control: Arc<Control>, store: DirStore, tail: Tail) -> Self {
        Follower {
            control,
            dir: Some((store, tail)),
            failing: false,
        }
    }

    pub fn fleet(control: Arc<Control>) -> Self {
        Follower {
            control,
            dir: None,
            failing: false,
        }
    }

    /// Apply what the writer appended since the last poll.
    pub fn poll(&mut self) {
        let Some((_, tail)) = self.dir.as_mut() else {
            return;
        };
        match tail.poll() {
            Ok(found) => {
                self.failing = false;
                apply(&self.control, found);
            }
            Err(e) if !self.failing => {
                self.failing = true;
                log::error!("cannot follow the state directory (retrying): {e}");
            }
            Err(_) => {}
        }
    }

    /// Poll on a thread of its own until `FollowThread::stop` (while Pingora's bootstrap waits for the
    /// old process's sockets, before any runtime runs). With etcd there is nothing to poll.
    pub fn spawn_thread(mut self) -> FollowThread {
        if self.dir.is_none() {
            return FollowThread::Idle(self);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("state-follow".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    self.poll();
                    std::thread::sleep(FOLLOW_EVERY);
                }
                self
            })
            .expect("a thread to follow the state");
        FollowThread::Running { stop, handle }
    }
}

/// Changes the follower found, into memory.
fn apply(control: &Control, found: Followed) {
    match found {
        Followed::Changes(changes) if changes.is_empty() => {}
        Followed::Changes(changes) => {
            metrics::STATE_FOLLOWED_CHANGES.inc_by(changes.len() as u64);
            control.apply_followed(changes);
        }
        Followed::Resync(snap) => control.resync(snap),
    }
}

pub enum FollowThread {
    Running {
        stop: Arc<AtomicBool>,
        handle: std::thread::JoinHandle<Follower>,
    },
    Idle(Follower),
}

impl FollowThread {
    /// Stop polling; the follower goes on from the same position elsewhere.
    pub fn stop(self) -> Follower {
        match self {
            FollowThread::Running { stop, handle } => {
                stop.store(true, Ordering::Relaxed);
                handle.join().expect("the follow thread does not panic")
            }
            FollowThread::Idle(f) => f,
        }
    }
}

/// The graceful upgrade's hand-over, as the services of the process being replaced see it.
///
/// Pingora's new process polls for the sockets only once a second, so "the sockets were sent" is not
/// "the new process serves". The new process says when its admin listener runs, by writing its pid
/// to `ready_file` (next to Pingora's `upgrade_sock`, a path both processes share); the old one
/// starts handing over when it reads another live pid there (`successor_serves`), or when its own
/// shutdown starts, whichever is first.
pub struct Handover {
    ready_file: Option<std::path::PathBuf>,
    /// Pingora sent the listening sockets to the new process.
    sockets_sent: watch::Sender<bool>,
    /// The admin listener stopped accepting and answered what it had accepted.
    admin_drained: watch::Sender<bool>,
    /// No ACME order runs (true without an ACME manager).
    acme_stopped: watch::Sender<bool>,
}

impl Default for Handover {
    fn default() -> Self {
        Handover {
            ready_file: None,
            sockets_sent: watch::channel(false).0,
            admin_drained: watch::channel(false).0,
            acme_stopped: watch::channel(true).0,
        }
    }
}

/// Longest wait, after the sockets were sent, for the new process to say it serves: Pingora starts
/// this process's shutdown five seconds after sending them.
const READY_WAIT: Duration = Duration::from_millis(4500);

impl Handover {
    /// A hand-over that announces and watches readiness in `ready_file`.
    pub fn with_ready_file(path: std::path::PathBuf) -> Self {
        Handover {
            ready_file: Some(path),
            ..Handover::default()
        }
    }

    /// This process serves (its admin listener accepts): tell a process it replaces.
    pub fn announce_ready(&self) {
        let Some(path) = &self.ready_file else { return };
        let tmp = path.with_extension("ready.tmp");
        let written = std::fs::write(&tmp, std::process::id().to_string())
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            log::warn!(
                "{}: cannot announce readiness for upgrades: {e}",
                path.display()
            );
        }
    }

    /// The announcement is this process's and it writes now: remove it (a later process announces
    /// its own).
    fn withdraw_ready(&self) {
        let Some(path) = &self.ready_file else { return };
        if successor_pid(path) == Some(std::process::id()) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Pingora sent the sockets: wait until the new process serves (bounded), then hand over.
    pub async fn sockets_sent_then_ready(&self) {
        if let Some(path) = &self.ready_file {
            let deadline = tokio::time::Instant::now() + READY_WAIT;
            loop {
                let other = successor_pid(path).filter(|p| *p != std::process::id() && alive(*p));
                if other.is_some() || tokio::time::Instant::now() >= deadline {
                    if other.is_none() {
                        log::warn!("the new process did not say it serves within {READY_WAIT:?}");
                    }
                    break;
                }
                tokio::time::sleep(FOLLOW_EVERY).await;
            }
        }
        self.sockets_sent();
    }

    pub fn sockets_sent(&self) {
        self.sockets_sent.send_replace(true);
    }

    pub fn on_sockets_sent(&self) -> watch::Receiver<bool> {
        self.sockets_sent.subscribe()
    }

    pub fn admin_drained(&self) {
        self.admin_drained.send_replace(true);
    }

    /// An ACME manager runs: the hand-over waits for `acme_stopped`.
    pub fn acme_running(&self) {
        self.acme_stopped.send_replace(false);
    }

    pub fn acme_stopped(&self) {
        self.acme_stopped.send_replace(true);
    }

    /// Wait (at most `limit`) for the admin listener and the ACME manager to finish their writes.
    async fn wait_writers_done(&self, limit: Duration) {
        let (mut admin, mut acme) = (
            self.admin_drained.subscribe(),
            self.acme_stopped.subscribe(),
        );
        let both = async {
            until_set(&mut admin).await;
            until_set(&mut acme).await;
        };
        if tokio::time::timeout(limit, both).await.is_err() {
            log::warn!(
                "admin connections or ACME orders still busy after {limit:?}; handing the state over anyway"
            );
        }
    }
}

/// The background service that owns the writer role of this process.
pub struct StateWriter {
    pub follower: Mutex<Option<Follower>>,
    pub handover: Arc<Handover>,
    /// How long the admin listener may take to answer its last requests at the hand-over.
    pub drain_limit: Duration,
}

impl StateWriter {
    /// Follow until the lock is ours, then read the rest under it. `None`: shut down meanwhile.
    async fn take_writer_role(&self, f: &mut Follower, shutdown: &mut ShutdownWatch) -> Option<()> {
        let Some((store, _)) = f.dir.as_ref() else {
            return Some(()); // etcd: nothing to take
        };
        let store = store.clone();
        let mut delay = Duration::from_millis(100);
        loop {
            let lock = self.wait_for_lock(&store, f, shutdown).await?;
            // The tail goes to the blocking thread and comes back with what it read under the lock.
            let (_, mut tail) = f.dir.take().expect("dir mode");
            let s = store.clone();
            let (tail, taken) = tokio::task::spawn_blocking(move || {
                let taken = s.take_over(lock, &mut tail);
                (tail, taken)
            })
            .await
            .expect("take-over does not panic");
            f.dir = Some((store.clone(), tail));
            match taken {
                Ok(found) => {
                    apply(&f.control, found);
                    return Some(());
                }
                Err(e) => {
                    log::error!(
                        "cannot start writing the state directory, retrying in {delay:?}: {e}"
                    );
                    tokio::select! {
                        _ = shutdown.changed() => return None,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// The lock, following the current writer while waiting for it.
    async fn wait_for_lock(
        &self,
        store: &DirStore,
        f: &mut Follower,
        shutdown: &mut ShutdownWatch,
    ) -> Option<Lock> {
        match store.try_lock() {
            Ok(Some(lock)) => return Some(lock),
            Ok(None) => log::info!(
                "{} is locked by another edgeward process (a graceful upgrade); following its \
                 writes until it hands over",
                store.root().display()
            ),
            Err(e) => log::error!("{e}"),
        }
        let s = store.clone();
        let mut waiting = tokio::task::spawn_blocking(move || s.lock());
        let mut tick = tokio::time::interval(FOLLOW_EVERY);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return None,
                _ = tick.tick() => f.poll(),
                r = &mut waiting => match r.expect("lock wait does not panic") {
                    Ok(lock) => return Some(lock),
                    Err(e) => {
                        log::error!("waiting for the state directory's lock: {e}; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        let s = store.clone();
                        waiting = tokio::task::spawn_blocking(move || s.lock());
                    }
                },
            }
        }
    }

    /// What this process owes the store once it writes: the seed list, then expired tokens; retried
    /// until done (a store can be unavailable for a while).
    async fn write_owed(&self, control: &Arc<Control>, shutdown: &mut ShutdownWatch) {
        let mut delay = Duration::from_millis(200);
        loop {
            match control.apply_seeds().await {
                Ok(_) => break,
                Err(e) => log::error!("applying the seed list failed, retrying in {delay:?}: {e}"),
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
        expire(control).await;
    }

    /// The process being replaced: let the admin listener answer, stop writing, release the lock.
    async fn hand_over(&self, f: &mut Follower) {
        log::info!("graceful upgrade: handing the state over to the new process");
        f.control.begin_closing();
        self.handover.wait_writers_done(self.drain_limit).await;
        f.control.close_writes().await;
        metrics::STATE_WRITER.set(0);
        if let Some((store, tail)) = f.dir.as_mut() {
            let s = store.clone();
            match tokio::task::spawn_blocking(move || s.release()).await {
                Ok(Ok(t)) => *tail = t,
                Ok(Err(e)) => log::error!("releasing the state directory: {e}"),
                Err(e) => log::error!("releasing the state directory: {e}"),
            }
        }
        log::info!("state handed over; following the new process until exit");
    }
}

async fn expire(control: &Arc<Control>) {
    match control.expire_challenges(unix_now()).await {
        Ok(0) => {}
        Ok(n) => log::info!("expired {n} challenge tokens"),
        Err(e) => log::warn!("challenge expiry failed, will retry: {e}"),
    }
}

#[async_trait]
impl BackgroundService for StateWriter {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut f = self
            .follower
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .expect("started once");
        let control = f.control.clone();
        if self.take_writer_role(&mut f, &mut shutdown).await.is_none() {
            return;
        }
        control.open_writes();
        metrics::STATE_WRITER.set(1);
        self.handover.withdraw_ready();
        self.write_owed(&control, &mut shutdown).await;
        let mut handed = self.handover.on_sockets_sent();
        let mut expiry = tokio::time::interval(EXPIRY_EVERY);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = until_set(&mut handed) => break,
                _ = expiry.tick() => expire(&control).await,
            }
        }
        self.hand_over(&mut f).await;
        let mut tick = tokio::time::interval(FOLLOW_EVERY);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => f.poll(),
            }
        }
    }
}

fn successor_pid(path: &std::path::Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists; nothing is sent.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

/// Resolves once `flag` is (or was) set, or its sender is gone.
pub async fn until_set(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|s| *s).await;
}

/// Wait until this process may write; `false` if it never will (handed over, or shutting down).
pub async fn until_writable(control: &Control, shutdown: &mut ShutdownWatch) -> bool {
    let mut w = control.writes();
    let opened = async move {
        let r = w.wait_for(|w| *w != Writes::Waiting).await;
        matches!(r.as_deref(), Ok(Writes::Open))
    };
    tokio::select! {
        _ = shutdown.changed() => false,
        open = opened => open,
    }
}

/// Resolves once the hand-over of this process's writer role has started.
pub async fn until_closing(control: &Control) {
    let mut w = control.writes();
    let _ = w
        .wait_for(|w| matches!(w, Writes::Closing | Writes::Closed))
        .await;
}
