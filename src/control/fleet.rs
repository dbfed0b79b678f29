//! The fleet watch: every change any node makes in etcd reaches this node's memory incrementally. It
//! watches the prefix from the snapshot's revision; a lost or compacted watch resyncs from a fresh
//! snapshot (applying only differences, so serving never stops) and watches again from there.

use super::Control;
use crate::store::etcd::EtcdStore;
use crate::store::Store;
use async_trait::async_trait;
use etcd_client::{EventType, WatchOptions};
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
    Resync(String),
}

impl FleetWatch {
    async fn watch_from(&self, revision: &mut i64, shutdown: &mut ShutdownWatch) -> Ended {
        let mut client = self.store.client();
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(*revision + 1);
        let (_watcher, mut stream) = match client.watch(self.store.prefix(), Some(opts)).await {
            Ok(w) => w,
            Err(e) => return Ended::Resync(format!("cannot watch: {e}")),
        };
        loop {
            let msg = tokio::select! {
                _ = shutdown.changed() => return Ended::Shutdown,
                m = stream.message() => m,
            };
            let resp = match msg {
                Ok(Some(r)) => r,
                Ok(None) => return Ended::Resync("the watch stream ended".into()),
                Err(e) => return Ended::Resync(format!("the watch failed: {e}")),
            };
            if resp.compact_revision() > 0 {
                return Ended::Resync(format!("revision {} was compacted", *revision + 1));
            }
            if resp.canceled() {
                return Ended::Resync(format!("the watch was canceled: {}", resp.cancel_reason()));
            }
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                let value = match ev.event_type() {
                    EventType::Put => Some(kv.value()),
                    EventType::Delete => None,
                };
                match self.store.decode(kv.key(), value) {
                    Ok(Some(change)) => self.control.apply_followed(vec![change]),
                    Ok(None) => {}
                    Err(e) => log::error!("ignoring a change from etcd: {e}"),
                }
                *revision = (*revision).max(kv.mod_revision());
            }
        }
    }
}

#[async_trait]
impl BackgroundService for FleetWatch {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut revision = self.store.snapshot_revision();
        let mut delay = Duration::from_millis(200);
        loop {
            let why = match self.watch_from(&mut revision, &mut shutdown).await {
                Ended::Shutdown => return,
                Ended::Resync(why) => why,
            };
            log::warn!("fleet watch: {why}; resyncing from a snapshot");
            loop {
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                match self.store.load().await {
                    Ok(snap) => {
                        self.control.resync(snap);
                        revision = self.store.snapshot_revision();
                        delay = Duration::from_millis(200);
                        break;
                    }
                    Err(e) => {
                        delay = (delay * 2).min(Duration::from_secs(10));
                        log::warn!("fleet resync failed, retrying in {delay:?}: {e}");
                    }
                }
            }
        }
    }
}
