//! The writer thread: every `TICK` (or sooner when a megabyte is waiting) takes every pending line
//! and appends them to the file (or stdout) with one write, reopens the file on `SIGUSR1` (after
//! logrotate renamed it), and reports the lines dropped in the last second. Started as a background
//! service, so after Pingora's `-d` fork. At most one `TICK` of lines is lost when the process is
//! killed.
//!
//! A file's written lines leave the page cache (`Cache`): their writeback is started right after the
//! write and, a tick later, the pages are dropped. A log is written once and rarely read back, so its
//! pages would only push useful ones out; and new page-cache pages are what most of a log's kernel time
//! goes to (on a VM whose free memory is handed back to the host, 2-5x more than reusing freed pages:
//! BENCHMARKS.md, "Access log").

use super::{AccessLogConfig, Pending, Target};
use crate::metrics;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::fs::File;
use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often pending lines are written (and the reopen flag looked at).
pub const TICK: Duration = Duration::from_millis(100);

pub struct Writer {
    pub config: AccessLogConfig,
    pub pending: Mutex<Option<Arc<Pending>>>,
}

/// Open the target for appending (created 0640); a file also as a `Cache` of its own.
pub fn open(target: &Target) -> std::io::Result<(Box<dyn Write + Send>, Option<Cache>)> {
    Ok(match target {
        Target::Stdout => (Box::new(std::io::stdout()), None),
        Target::File(path) => {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o640)
                .open(path)?;
            let cache = Cache::new(file.try_clone()?);
            (Box::new(file), Some(cache))
        }
    })
}

/// Keeps a log file's written pages out of the page cache: `written` starts the writeback of what
/// was appended since the last call and drops the pages of the call before (written back by then,
/// a tick later; a page still being written is left, the kernel's advice skips it). Advice only:
/// a failure changes nothing written.
pub struct Cache {
    file: File,
    /// Where the pages not dropped yet start, and where those not sent to the disk yet start.
    dropped: u64,
    started: u64,
}

impl Cache {
    fn new(file: File) -> Cache {
        let end = file.metadata().map_or(0, |m| m.len());
        Cache {
            file,
            dropped: end,
            started: end,
        }
    }

    fn written(&mut self) {
        let Ok(end) = self.file.metadata().map(|m| m.len()) else {
            return;
        };
        if end < self.started {
            // Truncated by someone else (logrotate's copytruncate): start again from its end.
            (self.dropped, self.started) = (end, end);
            return;
        }
        let fd = self.file.as_raw_fd();
        // SAFETY: plain system calls on an fd this struct owns; no memory is passed.
        unsafe {
            if self.started > self.dropped {
                libc::posix_fadvise(
                    fd,
                    self.dropped as libc::off_t,
                    (self.started - self.dropped) as libc::off_t,
                    libc::POSIX_FADV_DONTNEED,
                );
            }
            if end > self.started {
                libc::sync_file_range(
                    fd,
                    self.started as libc::off64_t,
                    (end - self.started) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
        }
        (self.dropped, self.started) = (self.started, end);
    }
}

struct Sink {
    target: Target,
    out: BufWriter<Box<dyn Write + Send>>,
    cache: Option<Cache>,
    /// Write errors since the last report (a full disk): reported once per second.
    errors: u64,
}

impl Sink {
    fn new(target: Target, (out, cache): (Box<dyn Write + Send>, Option<Cache>)) -> Sink {
        Sink {
            target,
            out: BufWriter::with_capacity(64 * 1024, out),
            cache,
            errors: 0,
        }
    }

    fn write(&mut self, line: &[u8]) {
        if self.out.write_all(line).is_err() {
            self.errors += 1;
            metrics::ACCESS_LOG_ERRORS.inc();
        }
    }

    fn flush(&mut self) {
        if self.out.flush().is_err() {
            self.errors += 1;
            metrics::ACCESS_LOG_ERRORS.inc();
        }
        if let Some(c) = self.cache.as_mut() {
            c.written();
        }
    }

    fn reopen(&mut self) {
        self.flush();
        match open(&self.target) {
            Ok(opened) => {
                *self = Sink {
                    errors: self.errors,
                    ..Sink::new(self.target.clone(), opened)
                };
                log::info!("access log reopened");
            }
            Err(e) => log::error!("access log: cannot reopen {:?}: {e}", self.target),
        }
    }
}

fn run(mut sink: Sink, pending: Arc<Pending>, reopen: Arc<AtomicBool>) {
    let mut reported = Instant::now();
    let mut dropped_before = metrics::ACCESS_LOG_DROPPED.get();
    let mut batch = Vec::new();
    loop {
        {
            let mut lines = pending.lines.lock().unwrap_or_else(|p| p.into_inner());
            if lines.len() < super::WAKE_AT {
                lines = pending
                    .full
                    .wait_timeout(lines, TICK)
                    .map(|(l, _)| l)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            // The buffer the proxies fill next is the one just written (its capacity kept).
            std::mem::swap(&mut *lines, &mut batch);
        }
        if !batch.is_empty() {
            sink.write(&batch);
            sink.flush();
            batch.clear();
        }
        if reopen.swap(false, Ordering::Relaxed) {
            sink.reopen();
        }
        if reported.elapsed() >= Duration::from_secs(1) {
            reported = Instant::now();
            let dropped = metrics::ACCESS_LOG_DROPPED.get();
            if dropped > dropped_before {
                log::warn!(
                    "access log: {} lines dropped in the last second (the writer could not keep up)",
                    dropped - dropped_before
                );
                dropped_before = dropped;
            }
            if sink.errors > 0 {
                log::error!(
                    "access log: {} writes to {:?} failed in the last second",
                    sink.errors,
                    sink.target
                );
                sink.errors = 0;
            }
        }
    }
}

#[async_trait]
impl BackgroundService for Writer {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(pending) = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return;
        };
        let opened = match open(&self.config.target) {
            Ok(opened) => opened,
            Err(e) => {
                log::error!("access log: cannot open {:?}: {e}", self.config.target);
                return;
            }
        };
        let reopen = Arc::new(AtomicBool::new(false));
        if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGUSR1, reopen.clone()) {
            log::error!("access log: cannot handle SIGUSR1 (no reopen): {e}");
        }
        let sink = Sink::new(self.config.target.clone(), opened);
        let thread = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || run(sink, pending, reopen));
        if let Err(e) = thread {
            log::error!("access log: cannot start the writer thread: {e}");
        }
        let _ = shutdown.changed().await;
    }
}

/// Open the file once at start-up, so that a path that cannot be written is refused before
/// listening (the writer opens it again after the fork).
pub fn check(config: &AccessLogConfig) -> std::io::Result<()> {
    open(&config.target).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: usize = 4096;

    /// Which of the file's first `pages` pages are in the page cache (`mincore` on a mapping that
    /// faults nothing in).
    fn resident(file: &File, pages: usize) -> Vec<bool> {
        let len = pages * PAGE;
        let mut vec = vec![0u8; pages];
        // SAFETY: a shared read-only mapping of `len` bytes of a file at least that long, unmapped
        // before return; `vec` holds one byte per page as mincore requires.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            assert_eq!(libc::mincore(p, len, vec.as_mut_ptr()), 0);
            libc::munmap(p, len);
        }
        vec.iter().map(|b| b & 1 == 1).collect()
    }

    fn on_tmpfs(file: &File) -> bool {
        // SAFETY: fstatfs fills the struct it is given.
        unsafe {
            let mut s: libc::statfs = std::mem::zeroed();
            libc::fstatfs(file.as_raw_fd(), &mut s) == 0 && s.f_type == libc::TMPFS_MAGIC
        }
    }

    #[test]
    fn written_pages_leave_the_cache_a_call_later_and_a_truncation_starts_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let (mut out, cache) = open(&Target::File(path.clone())).unwrap();
        let mut cache = cache.expect("a file has a cache");
        let probe = File::open(&path).unwrap();
        let chunk = vec![b'x'; 4 * PAGE];

        out.write_all(&chunk).unwrap();
        cache.written();
        assert_eq!((cache.dropped, cache.started), (0, 4 * PAGE as u64));
        probe.sync_data().unwrap(); // the writeback `written` started, finished
        out.write_all(&chunk).unwrap();
        cache.written();
        assert_eq!(
            (cache.dropped, cache.started),
            (4 * PAGE as u64, 8 * PAGE as u64)
        );
        if !on_tmpfs(&probe) {
            let r = resident(&probe, 8);
            assert_eq!(r[..4], [false; 4], "the first call's pages are dropped");
            assert_eq!(
                r[4..],
                [true; 4],
                "the last call's pages stay until the next"
            );
        }
        assert_eq!(
            std::fs::read(&path).unwrap().len(),
            8 * PAGE,
            "nothing lost"
        );

        // logrotate's copytruncate: offsets start again at the new end, nothing is advised past it.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        cache.written();
        assert_eq!((cache.dropped, cache.started), (0, 0));
        out.write_all(b"line\n").unwrap();
        cache.written();
        assert_eq!((cache.dropped, cache.started), (0, 5));
        assert_eq!(std::fs::read(&path).unwrap(), b"line\n");
    }

    #[test]
    fn stdout_has_no_cache() {
        assert!(open(&Target::Stdout).unwrap().1.is_none());
    }
}
