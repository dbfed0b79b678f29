//! The fleet watch: every change any node makes in etcd reaches this node's memory incrementally. It
//! watches the prefix from the snapshot's revision. When its member fails (or stops being healthy),
//! the watch resumes from the last revision it applied on another member: nothing is missed and
//! nothing reloaded. Only a compacted revision forces a resync from a fresh snapshot (applying only
//! differences, so serving never stops). Both are counted (`edgeward_etcd_watch_resumptions_total`,
//! `edgeward_etcd_watch_resyncs_total`).

use super::Control;
use crate::store::etcd::{EtcdStore, MemberWatch};
use crate::store::Store;
use async_trait::async_trait;
use etcd_client::EventType;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;

pub struct FleetWatch {
    pub store: EtcdStore,
    pub control: Arc<Control>,
}

enum Ended {
    Shutdown,
    /// The member or the stream failed: watch again from the same revision.
    Resume(String),
    /// The revision is gone (compacted) or the watch was refused: reload everything.
    Resync(String),
}

/// How often the watch checks that its member is still healthy.
const HEALTH_EVERY: Duration = Duration::from_secs(1);

impl FleetWatch {
    /// Apply events after `revision` (advanced as they are applied) until the watch ends.
    async fn follow(
        &self,
        w: MemberWatch,
        revision: &mut i64,
        shutdown: &mut ShutdownWatch,
    ) -> Ended {
        let MemberWatch {
            member,
            watcher: _watcher,
            mut stream,
        } = w;
        let mut health = tokio::time::interval(HEALTH_EVERY);
        loop {
            let msg = tokio::select! {
                _ = shutdown.changed() => return Ended::Shutdown,
                _ = health.tick() => {
                    if !self.store.member_up(&member) {
                        return Ended::Resume(format!("member {member} is not healthy"));
                    }
                    continue;
                }
                m = stream.message() => m,
            };
            let resp = match msg {
                Ok(Some(r)) => r,
                Ok(None) => return Ended::Resume(format!("the watch on {member} ended")),
                Err(e) => return Ended::Resume(format!("the watch on {member} failed: {e}")),
            };
            if resp.compact_revision() > 0 {
                return Ended::Resync(format!("revision {} was compacted", *revision + 1));
            }
            if resp.canceled() {
                return Ended::Resync(format!("the watch was canceled: {}", resp.cancel_reason()));
            }
            if resp.events().is_empty() && !resp.created() {
                // A progress notification: every event up to its revision has been sent.
                if let Some(h) = resp.header() {
                    *revision = (*revision).max(h.revision());
                    self.control.watched(*revision);
                }
                continue;
            }
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                let value = match ev.event_type() {
                    EventType::Put => Some(kv.value()),
                    EventType::Delete => None,
                };
                match self.store.decode(kv.key(), value) {
                    Ok(Some(change)) => self.control.apply_watched(change, kv.mod_revision()),
                    Ok(None) => {}
                    Err(e) => log::error!("ignoring a change from etcd: {e}"),
                }
                *revision = (*revision).max(kv.mod_revision());
            }
            // All events of a revision come in one response: memory now holds every one up to it.
            self.control.watched(*revision);
        }
    }

    /// Reload the whole state (after a compaction), retrying until it works or the process ends.
    async fn resync(&self, revision: &mut i64, shutdown: &mut ShutdownWatch) -> bool {
        crate::metrics::ETCD_WATCH_RESYNCS.inc();
        let mut delay = Duration::from_millis(200);
        loop {
            match self.store.load().await {
                Ok(snap) => {
                    self.control.resync(snap);
                    *revision = self.store.snapshot_revision();
                    self.control.watched(*revision);
                    return true;
                }
                Err(e) => {
                    delay = (delay * 2).min(Duration::from_secs(10));
                    log::warn!("fleet resync failed, retrying in {delay:?}: {e}");
                }
            }
            tokio::select! {
                _ = shutdown.changed() => return false,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }
}

#[async_trait]
impl BackgroundService for FleetWatch {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut revision = self.store.snapshot_revision();
        self.control.watched(revision);
        let mut delay = Duration::from_millis(50);
        loop {
            let w = match self.store.watch(revision + 1).await {
                Ok(w) => w,
                Err(e) => {
                    log::warn!("fleet watch: {e}; trying again in {delay:?}");
                    tokio::select! {
                        _ = shutdown.changed() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            delay = Duration::from_millis(50);
            match self.follow(w, &mut revision, &mut shutdown).await {
                Ended::Shutdown => return,
                Ended::Resume(why) => {
                    crate::metrics::ETCD_WATCH_RESUMPTIONS.inc();
                    log::warn!("fleet watch: {why}; resuming after revision {revision}");
                }
                Ended::Resync(why) => {
                    log::warn!("fleet watch: {why}; resyncing from a snapshot");
                    if !self.resync(&mut revision, &mut shutdown).await {
                        return;
                    }
                }
            }
        }
    }
}
