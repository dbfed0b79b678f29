//! Fleet mode: a challenge token another node registered may not have reached this node's memory yet,
//! so a miss is looked up in the store before answering 404. Requests for challenge paths need no
//! authentication, so the lookups are bounded: only for hosts this node routes, at most
//! `MAX_IN_FLIGHT` at a time (a miss beyond that answers 404 without touching the store), and a
//! token found missing is not looked up again for `NEGATIVE_TTL`.

use super::ReadThrough;
use crate::metrics;
use crate::model::unix_now;
use bytes::Bytes;
use dashmap::DashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Store reads in flight at once for challenge misses.
pub const MAX_IN_FLIGHT: usize = 16;
/// How long a miss is remembered.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(2);
/// A store read taking longer than this counts as a miss (a slow or silent member must not hold
/// requests).
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Remembered misses at most; past it the memory is cleared (it is only an optimisation).
const MAX_REMEMBERED: usize = 10_000;

pub struct ReadThroughGate {
    source: Arc<dyn ReadThrough>,
    in_flight: Semaphore,
    misses: DashMap<(Box<str>, Box<str>), Instant>,
}

/// Why a lookup did not reach the store, or what it found.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    Found(Bytes),
    Missing,
    /// Skipped: recently missing, or too many lookups in flight.
    Skipped,
}

impl ReadThroughGate {
    pub fn new(source: Arc<dyn ReadThrough>) -> Self {
        ReadThroughGate {
            source,
            in_flight: Semaphore::new(MAX_IN_FLIGHT),
            misses: DashMap::new(),
        }
    }

    /// Look `token` up for `host` (a host this node routes: the caller checks).
    pub async fn fetch(&self, token: &str, host: &str) -> Lookup {
        let key = (Box::<str>::from(token), Box::<str>::from(host));
        if let Some(until) = self.misses.get(&key).map(|e| *e) {
            if until > Instant::now() {
                metrics::CHALLENGE_READ_THROUGH
                    .with_label_values(&["cached_miss"])
                    .inc();
                return Lookup::Skipped;
            }
            self.misses.remove(&key);
        }
        let Ok(_permit) = self.in_flight.try_acquire() else {
            metrics::CHALLENGE_READ_THROUGH
                .with_label_values(&["busy"])
                .inc();
            return Lookup::Skipped;
        };
        metrics::CHALLENGE_READ_THROUGH_IN_FLIGHT.inc();
        let found = tokio::time::timeout(READ_TIMEOUT, self.source.fetch(token))
            .await
            .ok()
            .flatten();
        metrics::CHALLENGE_READ_THROUGH_IN_FLIGHT.dec();
        match found {
            Some(c)
                if c.host == host
                    && c.expires_at > unix_now()
                    && c.kind == crate::model::AcmeChallenge::Http01 =>
            {
                metrics::CHALLENGE_READ_THROUGH
                    .with_label_values(&["found"])
                    .inc();
                Lookup::Found(Bytes::from(c.key_authorization))
            }
            _ => {
                metrics::CHALLENGE_READ_THROUGH
                    .with_label_values(&["missing"])
                    .inc();
                if self.misses.len() >= MAX_REMEMBERED {
                    self.misses.clear();
                }
                self.misses.insert(key, Instant::now() + NEGATIVE_TTL);
                Lookup::Missing
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Challenge;
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A store that counts its reads and holds each one until released.
    struct Counting {
        reads: AtomicUsize,
        release: tokio::sync::Notify,
        hold: bool,
    }

    #[async_trait]
    impl ReadThrough for Counting {
        async fn fetch(&self, token: &str) -> Option<Challenge> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            if self.hold {
                self.release.notified().await;
            }
            (token == "known").then(|| Challenge {
                token: token.into(),
                host: "a.test".into(),
                key_authorization: "known.x".into(),
                expires_at: u64::MAX,
                kind: crate::model::AcmeChallenge::Http01,
            })
        }
    }

    fn store(hold: bool) -> Arc<Counting> {
        Arc::new(Counting {
            reads: AtomicUsize::new(0),
            release: tokio::sync::Notify::new(),
            hold,
        })
    }

    #[tokio::test]
    async fn misses_are_remembered_and_hits_are_not() {
        let s = store(false);
        let g = ReadThroughGate::new(s.clone());
        assert_eq!(g.fetch("nope", "a.test").await, Lookup::Missing);
        assert_eq!(g.fetch("nope", "a.test").await, Lookup::Skipped);
        assert_eq!(s.reads.load(Ordering::SeqCst), 1);
        for _ in 0..2 {
            assert_eq!(
                g.fetch("known", "a.test").await,
                Lookup::Found(Bytes::from_static(b"known.x"))
            );
        }
        // The token of another host is a miss.
        assert_eq!(g.fetch("known", "b.test").await, Lookup::Missing);
        assert_eq!(s.reads.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn lookups_beyond_the_bound_do_not_reach_the_store() {
        let s = store(true);
        let g = Arc::new(ReadThroughGate::new(s.clone()));
        let mut held = Vec::new();
        for i in 0..MAX_IN_FLIGHT {
            let g = g.clone();
            held.push(tokio::spawn(async move {
                g.fetch(&format!("t{i}"), "a.test").await
            }));
        }
        while s.reads.load(Ordering::SeqCst) < MAX_IN_FLIGHT {
            tokio::task::yield_now().await;
        }
        assert_eq!(g.fetch("one-more", "a.test").await, Lookup::Skipped);
        assert_eq!(s.reads.load(Ordering::SeqCst), MAX_IN_FLIGHT);
        s.release.notify_waiters();
        for h in held {
            assert_eq!(h.await.unwrap(), Lookup::Missing);
        }
    }
}
