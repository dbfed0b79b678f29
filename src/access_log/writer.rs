//! The writer thread: every `TICK` (or sooner when a megabyte is waiting) takes every pending line
//! and appends them to the file (or stdout) with one write, reopens the file on `SIGUSR1` (after
//! logrotate renamed it), and reports the lines dropped in the last second. Started as a background
//! service, so after Pingora's `-d` fork. At most one `TICK` of lines is lost when the process is
//! killed.

use super::{AccessLogConfig, Pending, Target};
use crate::metrics;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
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

/// Open the target for appending (created 0640).
pub fn open(target: &Target) -> std::io::Result<Box<dyn Write + Send>> {
    Ok(match target {
        Target::Stdout => Box::new(std::io::stdout()),
        Target::File(path) => Box::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o640)
                .open(path)?,
        ),
    })
}

struct Sink {
    target: Target,
    out: BufWriter<Box<dyn Write + Send>>,
    /// Write errors since the last report (a full disk): reported once per second.
    errors: u64,
}

impl Sink {
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
    }

    fn reopen(&mut self) {
        self.flush();
        match open(&self.target) {
            Ok(f) => {
                self.out = BufWriter::with_capacity(64 * 1024, f);
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
        let out = match open(&self.config.target) {
            Ok(out) => out,
            Err(e) => {
                log::error!("access log: cannot open {:?}: {e}", self.config.target);
                return;
            }
        };
        let reopen = Arc::new(AtomicBool::new(false));
        if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGUSR1, reopen.clone()) {
            log::error!("access log: cannot handle SIGUSR1 (no reopen): {e}");
        }
        let sink = Sink {
            target: self.config.target.clone(),
            out: BufWriter::with_capacity(64 * 1024, out),
            errors: 0,
        };
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
