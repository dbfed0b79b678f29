//! State-directory backend: one JSON file per domain, challenge and certificate, plus a write-ahead log.
//! A write (one change, a batch, or a group of requests committed together) is durable once appended as
//! one line to `journal.log` and that file `fdatasync`ed: one sync per write whatever its size (creating
//! and renaming a file per change cost several times more kernel time, on the proxy's CPU). The object
//! files are written later by a checkpoint (`checkpoint`), from a log rotated to `journal.old`.
//!
//! The state is the object files with `journal.json` (earlier versions), `journal.old` then
//! `journal.log` applied on top, complete lines in order, so a write is all or nothing.
//!
//! Roles: opening a directory only reads (`snapshot`, and a `Tail` to follow what the writer appends:
//! a graceful upgrade's new process and `-t` read while another process writes). Writing needs the
//! exclusive `flock` on `lock` (`lock` or `try_lock`, then `take_over`); `release` gives it up for a
//! successor.

mod checkpoint;
pub mod faults;
mod files;
mod follow;
mod journal;
mod writer;

pub use faults::Fs;
pub use follow::{Followed, Tail};
pub use writer::{Lock, CHECKPOINT_BYTES};

pub(crate) use files::write_atomic;

use super::{Snapshot, Store, StoreError};
use crate::model::Change;
use async_trait::async_trait;
use files::Layout;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use writer::Writer;

#[derive(Clone)]
pub struct DirStore {
    inner: Arc<Inner>,
}

struct Inner {
    layout: Layout,
    fs: Fs,
    checkpoint_bytes: u64,
    /// This process's right to write, once it has taken the lock.
    writer: Mutex<Option<Writer>>,
}

impl DirStore {
    /// A handle on a state directory. Nothing is created or written until `take_over`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let fs = Fs::from_env().map_err(StoreError::Unavailable)?;
        Ok(Self::with_fs(root, fs))
    }

    /// `open`, with the file operations of `fs` (faults injected by tests).
    pub fn with_fs(root: impl Into<PathBuf>, fs: Fs) -> Self {
        DirStore {
            inner: Arc::new(Inner {
                layout: Layout { root: root.into() },
                fs,
                checkpoint_bytes: CHECKPOINT_BYTES,
                writer: Mutex::new(None),
            }),
        }
    }

    /// Checkpoint once the journal reaches `n` bytes (before any clone of this handle).
    pub fn with_checkpoint_bytes(mut self, n: u64) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.checkpoint_bytes = n;
        }
        self
    }

    pub fn root(&self) -> &Path {
        &self.inner.layout.root
    }

    fn writer(&self) -> MutexGuard<'_, Option<Writer>> {
        self.inner.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state now, read without writing anything, and a tail that follows what is appended next.
    pub fn snapshot(&self) -> Result<(Snapshot, Tail), StoreError> {
        follow::snapshot(&self.inner.layout)
    }

    /// The state now, read without writing anything.
    pub fn read_only_snapshot(&self) -> Result<Snapshot, StoreError> {
        self.snapshot().map(|(s, _)| s)
    }

    /// The write lock if no other process holds it.
    pub fn try_lock(&self) -> Result<Option<Lock>, StoreError> {
        Lock::try_take(self.root())
    }

    /// The write lock, waiting while another process (the one an upgrade replaces) holds it.
    pub fn lock(&self) -> Result<Lock, StoreError> {
        Lock::take(self.root())
    }

    /// Become the writer under `lock`. `tail` follows the previous writer from where this process
    /// read; its last records are returned for memory, read now that nobody appends any more. Then a
    /// torn tail is cut off durably, and a checkpoint left behind is finished in the background.
    pub fn take_over(&self, lock: Lock, tail: &mut Tail) -> Result<Followed, StoreError> {
        let rest = tail.poll()?;
        let mut w = Writer::open(lock, self.inner.layout.clone(), self.inner.fs.clone())?;
        w.checkpoint_bytes = self.inner.checkpoint_bytes;
        w.start_leftover_checkpoint();
        *self.writer() = Some(w);
        Ok(rest)
    }

    /// Stop writing (the successor of a graceful upgrade takes over): the checkpoint stops at its
    /// next object, the log and the lock are closed. Returns a tail at the end of the log, to follow
    /// what the successor writes.
    pub fn release(&self) -> Result<Tail, StoreError> {
        if let Some(w) = self.writer().take() {
            w.close();
        }
        Tail::at_end(&self.inner.layout)
    }

    /// Open, take the lock (waiting for it) and take over: the one-step writer for tools, benches and
    /// tests that own the directory.
    pub fn open_writer(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let s = Self::open(root)?;
        s.take_writer()?;
        Ok(s)
    }

    fn take_writer(&self) -> Result<Followed, StoreError> {
        let lock = self.lock()?;
        let (_, mut tail) = self.snapshot()?;
        self.take_over(lock, &mut tail)
    }

    /// Does this process hold the write lock?
    pub fn is_writer(&self) -> bool {
        self.writer().is_some()
    }

    fn apply_sync(&self, changes: &[Change]) -> Result<(), StoreError> {
        match self.writer().as_mut() {
            Some(w) => w.append(changes),
            None => Err(StoreError::Unavailable(format!(
                "{}: this process does not hold the state directory's lock",
                self.root().display()
            ))),
        }
    }

    /// Stopped node only (tests, operators editing files): take the lock (waiting for it), write
    /// every logged change into the object files and empty the logs, then let go of the lock.
    /// Afterwards the files alone are the state.
    pub fn compact(&self) -> Result<(), StoreError> {
        let layout = &self.inner.layout;
        let fs = &self.inner.fs;
        let lock = self.lock()?;
        let w = Writer::open(lock, layout.clone(), fs.clone())?;
        let never = std::sync::atomic::AtomicBool::new(false);
        let old = layout.root.join(journal::OLD_LOG);
        // A checkpoint left behind first (in this thread, not in the background), then the log.
        checkpoint::checkpoint(layout, fs, &old, &never)?;
        let log = layout.root.join(journal::LOG);
        fs.rename(&log, &old).map_err(|e| StoreError::io(&old, e))?;
        fs.sync_dir(&layout.root)
            .map_err(|e| StoreError::io(&layout.root, e))?;
        checkpoint::checkpoint(layout, fs, &old, &never)?;
        drop(w);
        Ok(())
    }

    #[cfg(test)]
    fn set_checkpoint_bytes(&self, n: u64) {
        if let Some(w) = self.writer().as_mut() {
            w.checkpoint_bytes = n;
            w.rotation_retry = std::time::Duration::ZERO;
        }
    }

    #[cfg(test)]
    fn checkpoint_running(&self) -> bool {
        self.writer()
            .as_ref()
            .is_some_and(Writer::checkpoint_running)
    }
}

#[async_trait]
impl Store for DirStore {
    async fn load(&self) -> Result<Snapshot, StoreError> {
        let me = self.clone();
        blocking(move || me.read_only_snapshot()).await
    }

    async fn apply(&self, changes: &[Change]) -> Result<super::Revision, StoreError> {
        let me = self.clone();
        let changes = changes.to_vec();
        blocking(move || me.apply_sync(&changes))
            .await
            .map(|()| None)
    }
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(StoreError::Unavailable(format!("store task failed: {e}"))))
}

#[cfg(test)]
mod tests;
