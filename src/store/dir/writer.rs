//! The one process that writes a state directory: it holds an exclusive `flock` on `lock` and appends
//! to `journal.log`. A write is acknowledged only after its record and `\n` are synced; a record that
//! could not be written completely is cut off again (durably) before anything is answered, so the log
//! never holds a fragment that a later record would follow. Rotation (`journal.log` -> `journal.old`)
//! happens after a write is durable and never fails one: a failed step is logged and retried on a later
//! write, and until it succeeds records keep going to the file they went to before.

use super::checkpoint::Checkpoint;
use super::faults::Fs;
use super::files::Layout;
use super::journal::{self, LOG, OLD_LOG};
use crate::model::Change;
use crate::store::StoreError;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Log size that starts a checkpoint: a few thousand changes.
pub const CHECKPOINT_BYTES: u64 = 1 << 20;
const LOCK: &str = "lock";
/// Wait between two attempts at a failed rotation step.
const ROTATION_RETRY: Duration = Duration::from_secs(1);

/// The directory's write lock (an exclusive `flock`), released when dropped (the file is closed).
#[derive(Debug)]
pub struct Lock(#[allow(dead_code)] File);

fn flock(file: &File, op: libc::c_int) -> std::io::Result<()> {
    // SAFETY: `file` is an open descriptor for the duration of the call; flock touches no memory.
    match unsafe { libc::flock(file.as_raw_fd(), op) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

impl Lock {
    fn file(root: &Path) -> Result<File, StoreError> {
        std::fs::create_dir_all(root).map_err(|e| StoreError::io(root, e))?;
        let path = root.join(LOCK);
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))
    }

    /// The lock if nobody holds it.
    pub fn try_take(root: &Path) -> Result<Option<Lock>, StoreError> {
        let f = Lock::file(root)?;
        match flock(&f, libc::LOCK_EX | libc::LOCK_NB) {
            Ok(()) => Ok(Some(Lock(f))),
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(None),
            Err(e) => Err(StoreError::io(root.join(LOCK), e)),
        }
    }

    /// The lock, waiting as long as another process holds it.
    pub fn take(root: &Path) -> Result<Lock, StoreError> {
        let f = Lock::file(root)?;
        flock(&f, libc::LOCK_EX).map_err(|e| StoreError::io(root.join(LOCK), e))?;
        Ok(Lock(f))
    }
}

/// A rotation under way: `journal.log` was renamed `journal.old`, its successor not in use yet.
enum Rotation {
    Idle,
    Renamed { next: Option<File> },
}

pub struct Writer {
    _lock: Lock,
    layout: Layout,
    fs: Fs,
    /// Where records go: `journal.log`, or the same file renamed `journal.old` mid-rotation.
    log: File,
    /// Complete records in `log`.
    len: u64,
    /// A failed append may have left bytes after `len`: cut them before the next write.
    cut_pending: bool,
    rotation: Rotation,
    rotation_retry_at: Option<Instant>,
    checkpoint: Option<Checkpoint>,
    pub checkpoint_bytes: u64,
    /// Wait before a failed rotation step is tried again (shorter in tests).
    pub rotation_retry: Duration,
}

impl Writer {
    /// Start writing under `lock`: cut a torn tail off `journal.log` durably and carry over the batch
    /// journal of earlier versions. A checkpoint left behind is the caller's to start.
    pub fn open(lock: Lock, layout: Layout, fs: Fs) -> Result<Writer, StoreError> {
        layout.create()?;
        layout.sweep_temp_files();
        let path = layout.root.join(LOG);
        let log = open_log(&fs, &path)?;
        let (complete, size) = journal::complete_len(&log).map_err(|e| StoreError::io(&path, e))?;
        let mut w = Writer {
            _lock: lock,
            layout,
            fs,
            log,
            len: complete,
            cut_pending: complete < size,
            rotation: Rotation::Idle,
            rotation_retry_at: None,
            checkpoint: None,
            checkpoint_bytes: CHECKPOINT_BYTES,
            rotation_retry: ROTATION_RETRY,
        };
        if w.cut_pending {
            log::warn!(
                "{}: cutting off a torn last write of {} bytes (never acknowledged)",
                path.display(),
                size - complete
            );
            w.cut()?;
        }
        w.carry_over_legacy()?;
        Ok(w)
    }

    fn log_path(&self) -> PathBuf {
        self.layout.root.join(match self.rotation {
            Rotation::Idle => LOG,
            Rotation::Renamed { .. } => OLD_LOG,
        })
    }

    /// `journal.json` of versions before the log: its batch becomes one record, then it goes.
    fn carry_over_legacy(&mut self) -> Result<(), StoreError> {
        let legacy = self.layout.root.join(journal::LEGACY);
        if !legacy.exists() {
            return Ok(());
        }
        let pending: Vec<Change> = super::files::read_json(&legacy)?;
        log::warn!(
            "replaying {} changes of an interrupted batch from {}",
            pending.len(),
            legacy.display()
        );
        self.append(&pending)?;
        self.fs
            .remove(&legacy)
            .map_err(|e| StoreError::io(&legacy, e))?;
        self.fs
            .sync_dir(&self.layout.root)
            .map_err(|e| StoreError::io(&self.layout.root, e))
    }

    /// Cut the log back to its complete records and make that durable.
    fn cut(&mut self) -> Result<(), StoreError> {
        let path = self.log_path();
        self.fs
            .set_len(&self.log, &path, self.len)
            .and_then(|()| self.fs.sync_data(&self.log, &path))
            .map_err(|e| StoreError::io(&path, e))?;
        self.cut_pending = false;
        Ok(())
    }

    /// Append one record and sync it. `Ok` means durable; `Err` means not written (a partial record
    /// is cut off before returning; while that fails, this keeps trying and does not answer).
    pub fn append(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        if self.cut_pending {
            self.cut()?;
        }
        let line = journal::encode(changes);
        let path = self.log_path();
        let written = self
            .fs
            .write_all(&mut self.log, &path, &line)
            .and_then(|()| self.fs.sync_data(&self.log, &path));
        if let Err(e) = written {
            crate::metrics::STATE_WRITE_ERRORS
                .with_label_values(&["append"])
                .inc();
            self.cut_pending = true;
            self.cut_until_done();
            return Err(StoreError::io(&path, e));
        }
        self.len += line.len() as u64;
        self.rotate_if_due();
        Ok(())
    }

    /// After a failed append: its bytes must be gone before it is answered as failed, or a restart
    /// could find the record and apply a change the client was told failed.
    fn cut_until_done(&mut self) {
        let mut delay = Duration::from_millis(10);
        while let Err(e) = self.cut() {
            crate::metrics::STATE_WRITE_ERRORS
                .with_label_values(&["cut"])
                .inc();
            log::error!("cannot cut a failed write off the journal, retrying in {delay:?}: {e}");
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }

    /// Move on to a fresh log once this one is large, and checkpoint the old one in the background.
    fn rotate_if_due(&mut self) {
        if self.rotation_retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let result = match self.rotation {
            Rotation::Renamed { .. } => self.finish_rotation(),
            Rotation::Idle if self.len >= self.checkpoint_bytes => self.start_rotation(),
            Rotation::Idle => Ok(()),
        };
        if let Err(e) = result {
            crate::metrics::STATE_WRITE_ERRORS
                .with_label_values(&["rotate"])
                .inc();
            log::error!(
                "journal rotation failed, writes go on into {} and it is tried again: {e}",
                self.log_path().display()
            );
            self.rotation_retry_at = Some(Instant::now() + self.rotation_retry);
        } else {
            self.rotation_retry_at = None;
        }
    }

    fn start_rotation(&mut self) -> Result<(), StoreError> {
        let old = self.layout.root.join(OLD_LOG);
        if self.checkpoint.as_ref().is_some_and(Checkpoint::running) || old.exists() {
            // The previous rotation's checkpoint is not done (or failed and retries).
            self.start_leftover_checkpoint();
            return Ok(());
        }
        let log = self.layout.root.join(LOG);
        self.fs
            .rename(&log, &old)
            .map_err(|e| StoreError::io(&old, e))?;
        self.rotation = Rotation::Renamed { next: None };
        self.finish_rotation()
    }

    /// Create the next log and make the directory durable before the first record goes there: until
    /// the rename and the creation are on disk, records stay in the renamed file.
    fn finish_rotation(&mut self) -> Result<(), StoreError> {
        let path = self.layout.root.join(LOG);
        let Rotation::Renamed { next } = &mut self.rotation else {
            return Ok(());
        };
        if next.is_none() {
            *next = Some(open_log(&self.fs, &path)?);
        }
        self.fs
            .sync_dir(&self.layout.root)
            .map_err(|e| StoreError::io(&self.layout.root, e))?;
        let Rotation::Renamed { next } = std::mem::replace(&mut self.rotation, Rotation::Idle)
        else {
            unreachable!("matched above")
        };
        self.log = next.expect("created above");
        self.len = 0;
        self.start_leftover_checkpoint();
        Ok(())
    }

    /// Checkpoint `journal.old` in the background if one is there and no checkpoint runs.
    pub fn start_leftover_checkpoint(&mut self) {
        if self.checkpoint.as_ref().is_some_and(Checkpoint::running) {
            return;
        }
        let old = self.layout.root.join(OLD_LOG);
        if matches!(self.rotation, Rotation::Idle) && old.exists() {
            match Checkpoint::start(self.layout.clone(), self.fs.clone(), old) {
                Ok(c) => self.checkpoint = Some(c),
                Err(e) => log::error!("cannot start the state checkpoint, trying again later: {e}"),
            }
        }
    }

    #[cfg(test)]
    pub fn checkpoint_running(&self) -> bool {
        self.checkpoint.as_ref().is_some_and(Checkpoint::running)
    }

    /// Give up writing: stop the checkpoint at its next object (the successor finishes it), then
    /// close the log and the lock.
    pub fn close(mut self) {
        if let Some(c) = self.checkpoint.take() {
            c.stop();
        }
    }
}

pub fn open_log(fs: &Fs, path: &Path) -> Result<File, StoreError> {
    let mut opts = OpenOptions::new();
    opts.append(true).read(true).create(true).mode(0o600); // holds private keys, like the certificate files
    fs.open(path, &opts).map_err(|e| StoreError::io(path, e))
}
