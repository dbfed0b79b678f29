//! The ACME manager's durable records: the account it orders with, and the new-order budget (at most
//! `max` orders per sliding `window`; Let's Encrypt: 300 per account per 3 hours), persisted so that a
//! restart does not reset it.

use serde::{Deserialize, Serialize};

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
}

impl Budget {
    fn prune(&mut self, now: i64, window: i64) {
        self.placed.retain(|t| *t > now - window);
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
}
