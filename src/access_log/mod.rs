//! The access log: one line per request on every proxy listener (`edgeward.access_log`), challenge
//! answers from the front included. A line is formatted on the request's thread straight into one
//! shared buffer (a short lock, no allocation, no wake-up); a
//! writer thread (`writer`) takes the whole buffer every `writer::TICK` and appends it to the file with
//! one write. A buffer past `MAX_BUFFERED` drops the line instead of waiting: the proxy never blocks
//! on the disk. Drops are counted (`edgeward_access_log_dropped_total`) and reported once per second.
//!
//! No header value is written (the house rule for every log): the `combined` format's referer and
//! user agent are `-`.

mod json;
pub mod line;
pub mod writer;

use crate::metrics;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};

pub use line::Entry;

/// Bytes of lines waiting for the writer at most (about 30,000 lines); past that, lines are dropped.
pub const MAX_BUFFERED: usize = 8 << 20;
/// A buffer this full wakes the writer before its tick.
const WAKE_AT: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Json,
    Combined,
}

/// Where lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stdout,
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogConfig {
    pub target: Target,
    pub format: Format,
}

/// Lines not written yet, shared by the proxies and the writer.
#[derive(Default)]
pub struct Pending {
    pub(crate) lines: Mutex<Vec<u8>>,
    pub(crate) full: Condvar,
}

/// The proxies' end.
pub struct AccessLog {
    pending: Arc<Pending>,
    format: Format,
}

impl AccessLog {
    /// The handle, and the buffer for `writer::Writer`.
    pub fn new(config: &AccessLogConfig) -> (Arc<AccessLog>, Arc<Pending>) {
        let pending = Arc::new(Pending::default());
        let log = AccessLog {
            pending: pending.clone(),
            format: config.format,
        };
        (Arc::new(log), pending)
    }

    /// Queue one line; never waits for the disk. The line is formatted straight into the shared
    /// buffer (a few hundred nanoseconds under the lock, no copy and no scratch buffer) and cut off
    /// again when it does not fit.
    pub fn log(&self, entry: &Entry) {
        let mut lines = self.pending.lines.lock().unwrap_or_else(|p| p.into_inner());
        let before = lines.len();
        match self.format {
            Format::Json => entry.json(&mut lines),
            Format::Combined => entry.combined(&mut lines),
        }
        if lines.len() > MAX_BUFFERED {
            lines.truncate(before);
            drop(lines);
            metrics::ACCESS_LOG_DROPPED.inc();
            return;
        }
        let wake = before < WAKE_AT && lines.len() >= WAKE_AT;
        drop(lines);
        if wake {
            self.pending.full.notify_one();
        }
    }
}

/// A request id: 128 random bits in hex, ready to be sent upstream as `X-Request-Id` (one
/// allocation, shared by the header and the log line).
pub fn request_id() -> http::HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut x = rand::random::<u128>();
    let mut b = [0u8; 32];
    for c in b.iter_mut().rev() {
        *c = HEX[(x & 15) as usize];
        x >>= 4;
    }
    http::HeaderValue::from_bytes(&b).expect("hex digits are a valid header value")
}
