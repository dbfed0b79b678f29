//! Where each `tls: "auto"` domain stands in the manager's renewal queue: computed when something about
//! it changed (`Control::take_acme_changes`: its domain, certificate, back-off, a renewal request) or
//! its own order ended, never by scanning. ARI windows are fetched from their own queue, a few at a
//! time, and move the domain when they arrive.

use super::manager::{Manager, Track};
use super::schedule::{ari_renew_at, jitter_of, renew_at};
use crate::model::TlsMode;
use crate::tls::CertBundle;
use std::collections::HashSet;
use std::sync::Arc;

impl Manager {
    /// Rebuild the queue from every domain (the first look, or a restored snapshot).
    pub(super) fn rebuild(self: &Arc<Self>, now: i64) {
        let auto: HashSet<String> = self
            .control
            .domains()
            .into_iter()
            .filter(|d| d.tls == TlsMode::Auto)
            .map(|d| d.host)
            .collect();
        self.queue().clear();
        self.tracks()
            .retain(|h, t| t.in_flight || auto.contains(h.as_str()));
        self.control.retain_acme_status(|h| auto.contains(h));
        for host in &auto {
            self.schedule(host, now);
        }
    }

    /// Put `host` where it belongs: queued at its next due time, or out of the queue (gone, not
    /// `auto`, or its order running: looked at again when the order ends).
    pub(super) fn schedule(self: &Arc<Self>, host: &str, now: i64) {
        let wanted = self
            .control
            .domain(host)
            .is_some_and(|d| d.tls == TlsMode::Auto);
        if !wanted {
            self.queue().remove(host);
            self.ari_queue().remove(host);
            let in_flight = {
                let mut tracks = self.tracks();
                let in_flight = tracks.get(host).is_some_and(|t| t.in_flight);
                if !in_flight {
                    tracks.remove(host);
                }
                in_flight
            };
            if !in_flight {
                self.control.forget_acme_status(host);
            }
            return;
        }
        let track = self.merged_track(host);
        if track.in_flight {
            self.queue().remove(host);
            return;
        }
        let bundle = self.control.certificate(host);
        let renew = bundle.as_ref().map(|b| self.renew_time(host, b, now));
        let asked = self.control.renewal_requested(host);
        let due = if asked { now } else { renew.unwrap_or(now) }.max(track.next_attempt);
        self.queue()
            .set(host, due, bundle.as_ref().map(|b| b.not_after));
        self.publish_status(host, &track, now);
    }

    /// This node's track of `host`, with a back-off stored by this node before a restart, or by
    /// another node, taken in: shown and obeyed.
    fn merged_track(&self, host: &str) -> Track {
        let stored = self.control.acme_backoff(host);
        let mut tracks = self.tracks();
        let mut track = tracks.get(host).cloned().unwrap_or_default();
        if let Some(b) = stored.filter(|b| b.until > track.next_attempt) {
            track.next_attempt = b.until;
            track.failures = track.failures.max(b.failures);
            track.last_error = track.last_error.or(b.last_error);
            tracks.insert(host.to_string(), track.clone());
        }
        track
    }

    /// When to renew `b` (`renew_at`), with a missing or stale ARI window queued for fetching: its
    /// arrival reschedules the host.
    pub(super) fn renew_time(&self, host: &str, b: &CertBundle, now: i64) -> i64 {
        if self.ari_offered() {
            let refetch = self
                .ari_window(host, &b.serial)
                .map_or(now, |w| w.refetch_at);
            self.ari_queue().set(host, refetch, None);
        }
        self.renew_at(host, b)
    }

    /// Start the ARI fetches that are due, as many as may run at once; when the next one is due.
    pub(super) fn fetch_due_windows(self: &Arc<Self>, now: i64) -> Option<i64> {
        if !self.ari_offered() {
            self.ari_queue().clear();
            return None;
        }
        loop {
            let host = {
                let mut q = self.ari_queue();
                q.promote(now);
                q.first_ready()
            };
            let Some(host) = host else { break };
            let Ok(permit) = self.ari_fetching.clone().try_acquire_owned() else {
                return Some(now + 1);
            };
            self.ari_queue().remove(&host);
            let Some(b) = self.control.certificate(&host) else {
                continue;
            };
            let Some(id) = super::client::cert_id(&b.leaf) else {
                continue;
            };
            let (me, serial) = (self.clone(), b.serial.clone());
            tokio::spawn(async move {
                me.fetch_window(&host, serial, id).await;
                drop(permit);
            });
        }
        self.ari_queue().next_due()
    }

    /// When to renew `b`: inside the CA's ARI window once it is fetched, else when
    /// `renew_before_fraction` of the lifetime remains. What the API shows as `renew_at`.
    pub(super) fn renew_at(&self, host: &str, b: &CertBundle) -> i64 {
        match self.ari_window(host, &b.serial) {
            Some(w) => ari_renew_at(w.start, w.end, jitter_of(host)),
            None => renew_at(
                b.not_before,
                b.not_after,
                self.cfg.renew_before_fraction,
                jitter_of(host),
            ),
        }
    }
}
