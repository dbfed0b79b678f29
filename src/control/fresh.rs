//! Fleet mode: a node's own writes and the watch both change its memory, and must never move a key
//! backwards. A write is applied to memory when etcd acknowledges it (read-your-writes), and the
//! watch delivers it again later, possibly after older events for the same key (from before a
//! member failure, or another node's). `Freshness` records, per key, the revision of this node's
//! own write already in memory; a watch event older than it is skipped, and an own write the
//! watch has already gone past is not applied (memory has it, or something newer). Entries go as
//! soon as the watch passes their revision, so the map holds only writes the watch has not
//! delivered yet.

use std::collections::HashMap;

#[derive(Default)]
pub struct Freshness {
    /// Every event up to this revision has been applied by the watch.
    watched: i64,
    /// (kind, key) -> revision of this node's own write applied to memory.
    own: HashMap<(&'static str, String), i64>,
}

impl Freshness {
    /// Whether an own write committed at `revision` should be applied to memory now.
    pub fn own_write(&self, revision: i64) -> bool {
        revision > self.watched
    }

    /// Record an own write of `key` applied to memory at `revision`.
    pub fn record(&mut self, key: (&'static str, &str), revision: i64) {
        let e = self
            .own
            .entry((key.0, key.1.to_string()))
            .or_insert(revision);
        *e = (*e).max(revision);
    }

    /// Whether a watch event for `key` at `revision` should be applied (false: memory already holds
    /// a newer write of this node's).
    pub fn followed(&mut self, key: (&'static str, &str), revision: i64) -> bool {
        match self.own.get(&(key.0, key.1.to_string())) {
            Some(&own) if own > revision => false,
            Some(_) => {
                self.own.remove(&(key.0, key.1.to_string()));
                true
            }
            None => true,
        }
    }

    /// The watch has applied every event up to `revision`.
    pub fn watched(&mut self, revision: i64) {
        if revision > self.watched {
            self.watched = revision;
            if !self.own.is_empty() {
                self.own.retain(|_, r| *r > revision);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_event_never_undoes_an_own_write() {
        let mut f = Freshness::default();
        let k = ("domain", "a.test");
        assert!(f.own_write(105));
        f.record(k, 105);
        // The watch delivers an older delete first: skipped; then the write itself.
        assert!(!f.followed(k, 100));
        f.watched(100);
        assert!(f.followed(k, 105));
        f.watched(105);
        // Later events of other nodes apply.
        assert!(f.followed(k, 110));
    }

    #[test]
    fn an_own_write_the_watch_went_past_is_not_applied() {
        let mut f = Freshness::default();
        f.watched(120);
        assert!(!f.own_write(110), "memory already has 110 and maybe newer");
        assert!(f.own_write(121));
    }

    #[test]
    fn entries_go_once_the_watch_passes_them() {
        let mut f = Freshness::default();
        f.record(("domain", "a"), 5);
        f.record(("domain", "b"), 9);
        f.watched(6);
        assert_eq!(f.own.len(), 1);
        assert!(f.followed(("domain", "a"), 4), "a's entry is gone");
    }
}
