//! Reading request heads with the downstream limits: the whole head within `header_timeout`, an idle
//! keep-alive connection closed after `keepalive`, and at a graceful shutdown `request_wait` for a
//! request already on its way.
//!
//! Reads go through one scratch buffer per thread and only what arrived is copied into the
//! connection's buffer: a connection waiting for bytes holds no read buffer at all, and a half-sent
//! head holds its bytes and nothing more (an edge node holds 100k of them).

use bytes::BytesMut;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::Instant;

/// Size of the per-thread scratch buffer: one TLS record.
const SCRATCH: usize = 16 << 10;

thread_local! {
    static SCRATCH_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH].into_boxed_slice());
}

/// The downstream timeouts (`edgeward.downstream`, `edgeward.shutdown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The whole request head must arrive within this (from the accept for the first request of a
    /// connection, from its first byte for later ones).
    pub header_timeout: Duration,
    /// An idle keep-alive connection (no byte of a next request) is closed after this.
    pub keepalive: Duration,
    /// At a graceful shutdown or upgrade, how long a connection without a complete head waits for it.
    pub request_wait: Duration,
    /// Requests served on one connection before it is closed (`Connection: close` on the last); 0:
    /// no limit.
    pub keepalive_requests: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(60),
            request_wait: Duration::from_secs(1),
            keepalive_requests: 0,
        }
    }
}

/// What a read brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    Data,
    /// Closed or reset by the client, or the shutdown wait ended: close without an answer.
    Closed,
    /// No byte of a next request within the keep-alive timeout.
    Idle,
    /// The head did not arrive in time: 408 if any of it came.
    HeaderTimeout,
}

/// The deadlines of one connection's next request head.
#[derive(Debug)]
pub struct HeadClock {
    limits: Limits,
    /// Set once the head started (at the accept for the first request): its deadline.
    head: Option<Instant>,
    /// Set when this connection first sees the shutdown.
    shutdown: Option<Instant>,
}

impl HeadClock {
    /// For a connection just accepted: its first head is due within the header timeout.
    pub fn accepted(limits: Limits) -> Self {
        HeadClock {
            limits,
            head: Some(Instant::now() + limits.header_timeout),
            shutdown: None,
        }
    }

    /// A request was read whole: the next one starts with the keep-alive wait.
    pub fn next_request(&mut self) {
        self.head = None;
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }
}

/// Read more of the next request into `buf`, within the clock's deadlines.
pub async fn read_more(
    stream: &mut Stream,
    buf: &mut BytesMut,
    shutdown: &mut ShutdownWatch,
    clock: &mut HeadClock,
) -> Read {
    let (until, on_timeout) = match clock.head {
        Some(deadline) => (deadline, Read::HeaderTimeout),
        None if buf.is_empty() => (Instant::now() + clock.limits.keepalive, Read::Idle),
        // Bytes of a head that came with the previous one (pipelined): its clock starts now.
        None => (
            *clock
                .head
                .insert(Instant::now() + clock.limits.header_timeout),
            Read::HeaderTimeout,
        ),
    };
    let read = loop {
        if *shutdown.borrow() {
            let wait = *clock
                .shutdown
                .get_or_insert_with(|| Instant::now() + clock.limits.request_wait);
            match tokio::time::timeout_at(wait.min(until), append(stream, buf)).await {
                Err(_) if wait <= until => return Read::Closed,
                r => break r,
            }
        }
        tokio::select! {
            biased;
            // `append` is cancel safe: nothing is lost if the shutdown wins.
            r = tokio::time::timeout_at(until, append(stream, buf)) => break r,
            changed = shutdown.changed() => if changed.is_err() {
                return Read::Closed;
            },
        }
    };
    match read {
        Err(_) => on_timeout,
        Ok(Ok(n)) if n > 0 => {
            if clock.head.is_none() {
                clock.head = Some(Instant::now() + clock.limits.header_timeout);
            }
            Read::Data
        }
        Ok(_) => Read::Closed,
    }
}

/// Read once from `stream` and append what came to `buf` (0: end of stream).
pub fn append<'a>(stream: &'a mut Stream, buf: &'a mut BytesMut) -> Append<'a> {
    Append { stream, buf }
}

pub struct Append<'a> {
    stream: &'a mut Stream,
    buf: &'a mut BytesMut,
}

impl Future for Append<'_> {
    type Output = std::io::Result<usize>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        SCRATCH_BUF.with(|scratch| {
            // Borrowed within this poll only: no await while it is held.
            let mut scratch = scratch.borrow_mut();
            let mut rb = ReadBuf::new(&mut scratch[..]);
            match Pin::new(&mut *this.stream).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    let got = rb.filled();
                    this.buf.extend_from_slice(got);
                    Poll::Ready(Ok(got.len()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
    }
}
