//! The checkpoint: the latest version of every object a rotated log (`journal.old`) holds is written
//! to its object file (temp file, data sync, rename), each directory is synced once, and only then is
//! `journal.old` deleted. A failure anywhere leaves `journal.old` in place (its data is not in the
//! object files yet) and the thread tries again later; it runs at the lowest priority, beside the
//! proxy, and stops at the next object when its process hands the directory over.

use super::faults::Fs;
use super::files::Layout;
use super::journal;
use crate::model::Change;
use crate::store::StoreError;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct Checkpoint {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<()>,
}

impl Checkpoint {
    /// Checkpoint `old` on a thread of its own.
    pub fn start(layout: Layout, fs: Fs, old: PathBuf) -> std::io::Result<Checkpoint> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("state-checkpoint".into())
            .spawn(move || {
                lower_priority();
                let mut delay = Duration::from_secs(1);
                loop {
                    match checkpoint(&layout, &fs, &old, &flag) {
                        Ok(_) => return,
                        Err(e) => {
                            crate::metrics::STATE_WRITE_ERRORS
                                .with_label_values(&["checkpoint"])
                                .inc();
                            log::error!("state checkpoint failed, retrying in {delay:?}: {e}");
                        }
                    }
                    // Sleep in short steps so that a hand-over does not wait for the back-off.
                    let until = std::time::Instant::now() + delay;
                    while std::time::Instant::now() < until {
                        if flag.load(Ordering::Relaxed) {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    delay = (delay * 2).min(Duration::from_secs(60));
                }
            })?;
        Ok(Checkpoint { stop, handle })
    }

    pub fn running(&self) -> bool {
        !self.handle.is_finished()
    }

    /// Stop at the next object and wait for the thread: `journal.old` stays for the next writer.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.handle.join();
    }
}

/// Background work: the proxy threads of this process come first on a shared CPU.
fn lower_priority() {
    // SAFETY: setpriority on this thread's own id; no memory is involved.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 19);
    }
}

/// Write what `log` holds into the object files, make them durable, delete `log`. `Ok(false)`: stopped
/// before the end (nothing deleted).
pub fn checkpoint(
    layout: &Layout,
    fs: &Fs,
    log: &Path,
    stop: &AtomicBool,
) -> Result<bool, StoreError> {
    let mut latest: HashMap<(&'static str, String), Change> = HashMap::new();
    for c in journal::read_log(log)? {
        let (kind, key) = c.key();
        latest.insert((kind, key.to_string()), c);
    }
    for c in latest.values() {
        if stop.load(Ordering::Relaxed) {
            return Ok(false);
        }
        layout.write_change(fs, c)?;
    }
    layout.sync_dirs(fs)?;
    super::files::remove_entry(fs, log)?;
    fs.sync_dir(&layout.root)
        .map_err(|e| StoreError::io(&layout.root, e))?;
    Ok(true)
}
