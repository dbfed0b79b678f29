//! What the ACME manager's renewal queue follows: the hosts whose domain, certificate, back-off or
//! renewal request changed since it last looked, from every source (admin API, seeds, a fleet's
//! watch, its own orders). Off until a manager follows it, so a node without ACME keeps nothing.

use super::Control;
use std::collections::HashSet;

#[derive(Default)]
pub(super) struct AcmeFeed {
    following: bool,
    /// Everything may have changed (a snapshot restored): the manager rebuilds its queue.
    all: bool,
    hosts: HashSet<String>,
}

impl AcmeFeed {
    pub(super) fn following(&self) -> bool {
        self.following
    }
}

impl Control {
    fn feed(&self) -> std::sync::MutexGuard<'_, AcmeFeed> {
        self.acme_feed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Start recording changes for the ACME manager (the first look is a full one).
    pub fn follow_acme(&self) {
        let mut f = self.feed();
        f.following = true;
        f.all = true;
    }

    /// `host` needs another look by the ACME manager.
    pub fn acme_touch(&self, host: &str) {
        let mut f = self.feed();
        if f.following && !f.all {
            f.hosts.insert(host.to_string());
        }
    }

    /// Every host needs another look.
    pub(super) fn acme_touch_all(&self) {
        let mut f = self.feed();
        if f.following {
            f.all = true;
            f.hosts.clear();
        }
    }

    /// What changed since the last call: `(true, _)` when everything may have.
    pub fn take_acme_changes(&self) -> (bool, Vec<String>) {
        let mut f = self.feed();
        let all = std::mem::take(&mut f.all);
        (all, f.hosts.drain().collect())
    }
}
