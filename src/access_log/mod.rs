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

thread_local! {
    /// Each thread's id generator, seeded from the OS: an id must be unique, not unguessable (it
    /// grants nothing), so a small fast generator does (xoshiro256++, 2^256 - 1 period).
    static IDS: std::cell::RefCell<rand::rngs::SmallRng> =
        std::cell::RefCell::new(rand::SeedableRng::from_entropy());
}

/// A request id: 128 random bits in hex, ready to be sent upstream as `X-Request-Id` (one
/// allocation, shared by the header and the log line).
pub fn request_id() -> http::HeaderValue {
    // Two 64-bit draws (an array of bytes would be drawn byte by byte).
    let bits = IDS
        .with(|r| rand::Rng::gen::<u128>(&mut *r.borrow_mut()))
        .to_le_bytes();
    let mut b = [0u8; 32];
    hex::encode_to_slice(bits, &mut b).expect("32 hex digits for 16 bytes");
    // Owned by the `Bytes` itself: the clone for the upstream header is a reference count (a copied
    // slice would allocate again at its first clone).
    http::HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(b))
        .expect("hex digits are a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_32_hex_digits_and_distinct() {
        let ids: std::collections::HashSet<String> = (0..10_000)
            .map(|_| request_id().to_str().unwrap().to_string())
            .collect();
        assert_eq!(ids.len(), 10_000);
        for id in &ids {
            assert_eq!(id.len(), 32, "{id}");
            assert!(u128::from_str_radix(id, 16).is_ok(), "{id}");
            assert_eq!(id, &id.to_lowercase());
        }
        // Another thread has its own generator, seeded apart.
        let other = std::thread::spawn(|| request_id().to_str().unwrap().to_string())
            .join()
            .unwrap();
        assert!(!ids.contains(&other));
    }
}
