//! The renewal queue: every `tls: "auto"` domain not being ordered, by the time it is next due (first
//! certificate, renewal, retry after a back-off). The manager wakes for the earliest only; what is due
//! moves to `ready`, ordered by certificate expiry (none first), so that when the budget is short the
//! certificates that expire soonest are ordered first. O(log n) per change, nothing scanned.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    due: i64,
    /// `i64::MIN` without a certificate: the most urgent.
    expiry: i64,
    ready: bool,
}

#[derive(Debug, Default)]
pub struct Queue {
    due: BTreeSet<(i64, Arc<str>)>,
    ready: BTreeSet<(i64, Arc<str>)>,
    at: HashMap<Arc<str>, Entry>,
}

impl Queue {
    /// Schedule `host` at `due` (unix seconds); `expiry` of its certificate, if any. Replaces where it
    /// was.
    pub fn set(&mut self, host: &str, due: i64, expiry: Option<i64>) {
        let expiry = expiry.unwrap_or(i64::MIN);
        let key: Arc<str> = match self.at.get_key_value(host) {
            Some((_, e)) if e.due == due && e.expiry == expiry => return,
            Some((k, _)) => k.clone(),
            None => host.into(),
        };
        self.unlink(&key);
        self.due.insert((due, key.clone()));
        self.at.insert(
            key,
            Entry {
                due,
                expiry,
                ready: false,
            },
        );
    }

    /// Forget `host` (deleted, no longer `auto`, or its order started).
    pub fn remove(&mut self, host: &str) {
        if let Some((key, _)) = self.at.get_key_value(host) {
            let key = key.clone();
            self.unlink(&key);
            self.at.remove(host);
        }
    }

    fn unlink(&mut self, key: &Arc<str>) {
        if let Some(e) = self.at.get(key) {
            if e.ready {
                self.ready.remove(&(e.expiry, key.clone()));
            } else {
                self.due.remove(&(e.due, key.clone()));
            }
        }
    }

    /// Move everything due at or before `now` to `ready`.
    pub fn promote(&mut self, now: i64) {
        while let Some((due, key)) = self.due.first().cloned() {
            if due > now {
                break;
            }
            self.due.pop_first();
            if let Some(e) = self.at.get_mut(&key) {
                e.ready = true;
                self.ready.insert((e.expiry, key));
            }
        }
    }

    /// The ready host whose certificate expires soonest (or that has none).
    pub fn first_ready(&self) -> Option<Arc<str>> {
        self.ready.first().map(|(_, k)| k.clone())
    }

    /// When the earliest host not yet ready is due.
    pub fn next_due(&self) -> Option<i64> {
        self.due.first().map(|(d, _)| *d)
    }

    pub fn ready_len(&self) -> usize {
        self.ready.len()
    }

    pub fn len(&self) -> usize {
        self.at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    pub fn contains(&self, host: &str) -> bool {
        self.at.contains_key(host)
    }

    pub fn clear(&mut self) {
        *self = Queue::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn due_hosts_are_ready_soonest_expiry_first() {
        let mut q = Queue::default();
        q.set("late.test", 500, Some(9_000));
        q.set("soon.test", 100, Some(3_000));
        q.set("sooner.test", 200, Some(2_000));
        q.set("new.test", 300, None);
        assert_eq!(q.next_due(), Some(100));
        q.promote(250);
        assert_eq!(q.first_ready().as_deref(), Some("sooner.test"));
        assert_eq!(q.next_due(), Some(300));
        q.promote(400);
        assert_eq!(
            q.first_ready().as_deref(),
            Some("new.test"),
            "no certificate first"
        );
        q.remove("new.test");
        q.remove("sooner.test");
        assert_eq!(q.first_ready().as_deref(), Some("soon.test"));
        // Rescheduled (a back-off): out of ready, due again later.
        q.set("soon.test", 1_000, Some(3_000));
        assert_eq!(q.first_ready(), None);
        assert_eq!((q.next_due(), q.len()), (Some(500), 2));
    }

    proptest! {
        /// Against a model (a map host -> (due, expiry)): after any sequence of sets, removes and
        /// promotions, the queue holds exactly the model's hosts, `next_due` is the earliest of those not
        /// promoted, and `first_ready` the soonest-expiring of those promoted.
        #[test]
        fn matches_a_model(ops in proptest::collection::vec((0u8..3, 0u8..20, 0i64..50, proptest::option::of(0i64..50)), 1..200)) {
            let mut q = Queue::default();
            let mut model: HashMap<String, (i64, i64, bool)> = HashMap::new();
            let mut now = 0;
            for (op, h, t, exp) in ops {
                let host = format!("h{h}");
                match op {
                    0 => {
                        q.set(&host, t, exp);
                        let e = exp.unwrap_or(i64::MIN);
                        let ready = model.get(&host).is_some_and(|m| m.0 == t && m.1 == e && m.2);
                        model.insert(host, (t, e, ready));
                    }
                    1 => {
                        q.remove(&host);
                        model.remove(&host);
                    }
                    _ => {
                        now = now.max(t);
                        q.promote(now);
                        for m in model.values_mut() {
                            if m.0 <= now {
                                m.2 = true;
                            }
                        }
                    }
                }
                prop_assert_eq!(q.len(), model.len());
                let next = model.values().filter(|m| !m.2).map(|m| m.0).min();
                prop_assert_eq!(q.next_due(), next);
                let first = model.iter().filter(|(_, m)| m.2).map(|(h, m)| (m.1, h.clone())).min();
                prop_assert_eq!(q.first_ready().map(|k| k.to_string()), first.map(|f| f.1));
            }
        }
    }
}
