//! Filling memory from the store: at start-up (memory only: start-up reads, it never writes), after a
//! lost watch or a gap in a followed log (`resync`: only differences are applied, so nothing stops
//! being served), and the writes a process owes once it owns the store (seed list, expired tokens).

use super::{AcmeStored, ApplyError, Control};
use crate::model::{unix_now, CertRecord, Change, Domain};
use crate::store::{Snapshot, StoreError};
use crate::tls::{self, CertBundle};
use std::collections::HashSet;
use std::sync::Arc;

/// The configuration's seed list while this process serves it before it may write it.
#[derive(Default)]
pub(super) struct SeedPreview {
    seeds: Vec<Domain>,
    /// Seeded hosts whose stored form may differ from the seed.
    unstored: HashSet<String>,
    /// Domains stored in the legacy form, resolved in memory (`migrate`), to be written back.
    legacy: Vec<String>,
}

impl Control {
    /// Fill memory from a loaded snapshot (start-up). Certificates are parsed in parallel on every
    /// core; one that does not parse stops start-up. Expired challenges are kept (never answered) until
    /// `expire_challenges` deletes them durably, once this process may write.
    pub fn restore(&self, mut snap: Snapshot) -> Result<(), StoreError> {
        let now = unix_now();
        *self.acme_stored_mut() = AcmeStored {
            account: snap.acme_account,
            budget: snap.acme_budget.unwrap_or_default(),
        };
        for b in parse_all(&snap.certificates)? {
            if b.not_after <= now as i64 {
                log::warn!(
                    "certificate for {} expired at {}",
                    b.host,
                    tls::rfc3339(b.not_after)
                );
            }
            self.state.certs.publish(Arc::new(b));
        }
        let legacy = self.resolve_legacy(&mut snap.domains);
        self.seeds_mut().legacy = legacy;
        for d in &snap.domains {
            self.put_route(d);
        }
        for c in &snap.challenges {
            self.put_challenge(c);
        }
        self.update_gauges();
        Ok(())
    }

    /// Make memory equal to `snap` (after a lost or compacted watch, or a gap in a followed log): apply
    /// what differs, drop what is gone. Unchanged entries are left alone.
    pub fn resync(&self, snap: Snapshot) {
        let hosts: HashSet<String> = snap.domains.iter().map(|d| d.host.clone()).collect();
        for d in snap.domains {
            if self.domain(&d.host).as_ref() != Some(&d) {
                self.put_route(&d);
            }
        }
        for d in self.domains() {
            if !hosts.contains(&d.host) {
                self.state.routes.remove(&d.host);
            }
        }
        let tokens: HashSet<String> = snap.challenges.iter().map(|c| c.token.clone()).collect();
        for c in &snap.challenges {
            self.put_challenge(c);
        }
        for t in self.state.challenges.expired(u64::MAX) {
            if !tokens.contains(&t) {
                self.state.challenges.remove(&t);
            }
        }
        let certs: HashSet<String> = snap.certificates.iter().map(|c| c.host.clone()).collect();
        for rec in snap.certificates {
            self.apply_memory(Change::PutCertificate(rec));
        }
        for b in self.certificates() {
            if !certs.contains(&b.host) {
                self.state.certs.remove(&b.host);
            }
        }
        *self.acme_stored_mut() = AcmeStored {
            account: snap.acme_account,
            budget: snap.acme_budget.unwrap_or_default(),
        };
        // The snapshot is the store; seeds not yet written are served from the file still.
        self.preview(&mut self.seeds_mut());
        self.acme_touch_all();
        self.wake_watchers();
    }

    /// Serve the configuration's seed list from memory at once (start-up, before this process may
    /// write): the file is their durable source, and the file wins over an API change to a seeded
    /// domain. `apply_seeds` makes them durable once this process owns the store.
    pub fn preview_seeds(&self, seeds: &[Domain]) {
        let mut preview = self.seeds_mut();
        preview.seeds = seeds.to_vec();
        self.preview(&mut preview);
    }

    /// Seeds that differ from memory go into memory, remembered as not in the store yet.
    fn preview(&self, p: &mut SeedPreview) {
        for d in &p.seeds {
            if self.domain(&d.host).as_ref() != Some(d) {
                p.unstored.insert(d.host.clone());
                self.put_route(d);
            }
        }
        self.update_gauges();
    }

    fn seeds_mut(&self) -> std::sync::MutexGuard<'_, SeedPreview> {
        self.seeds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Write the seed list where the store may differ (what memory shows after following the store,
    /// or what was previewed), in chunks the store writes atomically (each seed stands alone).
    pub async fn apply_seeds(self: &Arc<Self>) -> Result<usize, ApplyError> {
        let (changed, legacy): (Vec<Change>, Vec<Change>) = {
            let p = self.seeds_mut();
            let seeded: HashSet<&str> = p.seeds.iter().map(|d| d.host.as_str()).collect();
            let seeds = p
                .seeds
                .iter()
                .filter(|d| {
                    p.unstored.contains(&d.host) || self.domain(&d.host).as_ref() != Some(*d)
                })
                .cloned()
                .map(Change::PutDomain)
                .collect();
            // Legacy records written back as memory resolved them (unless a seed rewrites them).
            let legacy = p
                .legacy
                .iter()
                .filter(|h| !seeded.contains(h.as_str()))
                .filter_map(|h| self.domain(h))
                .map(Change::PutDomain)
                .collect();
            (seeds, legacy)
        };
        let n = changed.len();
        if n > 0 {
            log::info!("applying {n} domains from the configuration's seed list");
        }
        if !legacy.is_empty() {
            log::info!("writing back {} domains in the current form", legacy.len());
        }
        let changed: Vec<Change> = changed.into_iter().chain(legacy).collect();
        let chunk = self.atomic_limit().clamp(1, 1024);
        for part in changed.chunks(chunk) {
            self.apply(part.to_vec()).await?;
        }
        // From now on seeded domains are domains like any other.
        *self.seeds_mut() = SeedPreview::default();
        Ok(n)
    }

    /// Delete every challenge expired at `now`, durably. Returns how many went.
    pub async fn expire_challenges(self: &Arc<Self>, now: u64) -> Result<usize, ApplyError> {
        let expired: Vec<Change> = self
            .state
            .challenges
            .expired(now)
            .into_iter()
            .map(|token| Change::DeleteChallenge { token })
            .collect();
        let n = expired.len();
        for c in expired {
            // One by one: a token deleted through the API meanwhile is simply not found.
            match self.apply(vec![c]).await {
                Ok(()) | Err(ApplyError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }
}

/// Parse stored certificates on every core.
fn parse_all(records: &[CertRecord]) -> Result<Vec<CertBundle>, StoreError> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = records.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = records
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|r| {
                            tls::bundle::parse(r, 0, false).map_err(|e| StoreError::Corrupt {
                                path: format!("certificate of {}", r.host).into(),
                                message: e.to_string(),
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(records.len());
        for h in handles {
            out.extend(h.join().expect("certificate parsing does not panic")?);
        }
        Ok(out)
    })
}
