//! The access log: one line per request on every proxy listener (`edgeward.access_log`), challenge
//! answers from the front included. A line is formatted on the request's thread (one buffer, no other
//! allocation) and handed to a bounded queue; a writer thread (`writer`) appends the lines to the file.
//! A full queue drops the line instead of waiting: the proxy never blocks on the disk. Drops are
//! counted (`edgeward_access_log_dropped_total`) and reported once per second.
//!
//! No header value is written (the house rule for every log): the `combined` format's referer and
//! user agent are `-`.

pub mod line;
pub mod writer;

use crate::metrics;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

pub use line::Entry;

/// Lines waiting for the writer at most; past that, lines are dropped.
pub const QUEUE_LINES: usize = 65_536;

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

/// The proxies' end of the queue.
#[derive(Clone)]
pub struct AccessLog {
    tx: SyncSender<Vec<u8>>,
    format: Format,
}

impl AccessLog {
    /// The handle, and the queue's other end for `writer::Writer`.
    pub fn new(config: &AccessLogConfig) -> (Arc<AccessLog>, Receiver<Vec<u8>>) {
        let (tx, rx) = sync_channel(QUEUE_LINES);
        let log = AccessLog {
            tx,
            format: config.format,
        };
        (Arc::new(log), rx)
    }

    /// Queue one line; never waits.
    pub fn log(&self, entry: &Entry) {
        let mut out = Vec::with_capacity(384);
        match self.format {
            Format::Json => entry.json(&mut out),
            Format::Combined => entry.combined(&mut out),
        }
        match self.tx.try_send(out) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                metrics::ACCESS_LOG_DROPPED.inc();
            }
        }
    }
}

/// A request id: 128 random bits in hex (also sent upstream as `X-Request-Id`).
pub fn request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}
