//! The ACME manager's durable records: the account it orders with, and the new-order budget (at most
//! `max` orders per sliding `window`; Let's Encrypt: 300 per account per 3 hours), persisted so that a
//! restart does not reset it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The stored ACME account: which directory it belongs to and instant-acme's credentials (secret).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountRecord {
    pub directory: String,
    pub credentials: String,
}

impl std::fmt::Debug for AccountRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountRecord")
            .field("directory", &self.directory)
            .field("credentials", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Unix seconds of the orders placed within the window, oldest first.
    pub placed: Vec<i64>,
    /// Hosts backing off after failed orders (the CA's `Retry-After` for that name, or the
    /// exponential back-off), kept here so that a restart does not forget them. Only hosts whose
    /// orders failed are listed; an entry goes when its host succeeds or its time has passed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub backoff: BTreeMap<String, Backoff>,
    /// The account is paused until then (unix seconds): a limit on the account (new orders per
    /// account) or the CA unavailable (503), as its `Retry-After` said.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub paused_until: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// One host's back-off after failed orders.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    /// No new order before this (unix seconds).
    pub until: i64,
    /// Failures in a row.
    pub failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl Budget {
    fn prune(&mut self, now: i64, window: i64) {
        self.placed.retain(|t| *t > now - window);
    }

    /// Record `host`'s back-off (and the account's pause, if any); entries whose time is over go.
    pub fn set_backoff(&mut self, host: &str, b: Option<Backoff>, paused_until: i64, now: i64) {
        self.backoff.retain(|_, e| e.until > now);
        match b {
            Some(b) => {
                self.backoff.insert(host.to_string(), b);
            }
            None => {
                self.backoff.remove(host);
            }
        }
        if paused_until > now {
            self.paused_until = self.paused_until.max(paused_until);
        } else if self.paused_until <= now {
            self.paused_until = 0;
        }
    }

    /// Orders left in the window at `now`.
    pub fn left(&self, now: i64, max: usize, window: i64) -> usize {
        let used = self.placed.iter().filter(|t| **t > now - window).count();
        max.saturating_sub(used)
    }

    /// Take one order if the budget allows; returns whether it did.
    pub fn take(&mut self, now: i64, max: usize, window: i64) -> bool {
        self.prune(now, window);
        if self.placed.len() >= max {
            return false;
        }
        self.placed.push(now);
        true
    }

    /// When the next order becomes possible (now if one is left).
    pub fn next_free(&self, now: i64, max: usize, window: i64) -> i64 {
        if self.left(now, max, window) > 0 {
            return now;
        }
        let live: Vec<i64> = self
            .placed
            .iter()
            .copied()
            .filter(|t| *t > now - window)
            .collect();
        live.get(live.len().saturating_sub(max))
            .map_or(now, |t| t + window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_window() {
        let mut b = Budget::default();
        assert!(b.take(100, 2, 50));
        assert!(b.take(110, 2, 50));
        assert!(!b.take(120, 2, 50));
        assert_eq!(b.left(120, 2, 50), 0);
        assert_eq!(b.next_free(120, 2, 50), 150);
        assert_eq!(b.left(150, 2, 50), 1, "the first order left the window");
        assert!(b.take(151, 2, 50));
        assert_eq!(b.placed, vec![110, 151]);
    }

    #[test]
    fn backoffs_are_per_host_and_expire() {
        let mut b = Budget::default();
        let entry = |until| Backoff {
            until,
            failures: 1,
            last_error: None,
        };
        b.set_backoff("a.test", Some(entry(200)), 0, 100);
        b.set_backoff("b.test", Some(entry(150)), 0, 100);
        assert_eq!(b.backoff.len(), 2);
        // b's time passed: it goes at the next write; a succeeded: it goes too.
        b.set_backoff("a.test", None, 500, 160);
        assert!(b.backoff.is_empty());
        assert_eq!(b.paused_until, 500);
        b.set_backoff("c.test", None, 0, 600);
        assert_eq!(b.paused_until, 0);
        // The stored form of a budget without any is unchanged.
        let json = serde_json::to_string(&Budget::default()).unwrap();
        assert_eq!(json, r#"{"placed":[]}"#);
    }
}
