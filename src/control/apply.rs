//! Durable changes into memory, and the checks a change must pass against memory before it is written.

use super::{ApplyError, Control, Kind};
use crate::metrics;
use crate::model::{Challenge, Change, Domain, TlsMode};
use crate::state::Route;
use crate::tls;
use std::collections::HashMap;
use std::sync::Arc;

/// Certificates of one commit recorded one event each; above this, one event for the commit.
const SWAP_EVENTS_PER_COMMIT: usize = 16;

impl Control {
    /// Changes another writer made durable (the fleet watch, the log of another process): memory only.
    pub fn apply_followed(&self, changes: Vec<Change>) {
        self.commit_memory(changes, false);
    }

    /// A change the fleet watch delivered at `revision`: applied unless memory already holds a
    /// newer write of this node's for its key (`fresh`).
    pub fn apply_watched(&self, change: Change, revision: i64) {
        let mut fresh = self.fresh.lock().unwrap_or_else(|p| p.into_inner());
        if fresh.followed(change.key(), revision) {
            self.commit_memory(vec![change], false);
        }
    }

    /// The fleet watch has applied every event up to `revision`.
    pub fn watched(&self, revision: i64) {
        self.fresh
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .watched(revision);
    }

    /// This node's own write, durable at `revision` (fleet) or in the directory (`None`): live now,
    /// unless the fleet watch already went past it (memory holds it, or something newer).
    pub(super) fn commit_own(&self, changes: Vec<Change>, revision: crate::store::Revision) {
        let Some(revision) = revision else {
            return self.commit_memory(changes, true);
        };
        let mut fresh = self.fresh.lock().unwrap_or_else(|p| p.into_inner());
        if !fresh.own_write(revision) {
            for c in &changes {
                metrics::ADMIN_CHANGES.with_label_values(&[c.kind()]).inc();
            }
            return;
        }
        for c in &changes {
            fresh.record(c.key(), revision);
        }
        self.commit_memory(changes, true);
    }

    /// Make durable changes live: memory, gauges, and a wake-up for the ACME manager when a domain
    /// wants a certificate. `local`: made here (counted as admin changes).
    pub(super) fn commit_memory(&self, changes: Vec<Change>, local: bool) {
        let wake = changes
            .iter()
            .any(|c| matches!(c, Change::PutDomain(d) if d.tls == TlsMode::Auto));
        // A large batch of certificates (an import) is one event, not one per certificate.
        let certs = changes
            .iter()
            .filter(|c| matches!(c, Change::PutCertificate(_)))
            .count();
        let each = certs <= SWAP_EVENTS_PER_COMMIT;
        for c in changes {
            if local {
                metrics::ADMIN_CHANGES.with_label_values(&[c.kind()]).inc();
            }
            // A new certificate (not the same record again) is an event once it is served.
            let cert = match &c {
                _ if !each => None,
                Change::PutCertificate(r)
                    if !self
                        .state
                        .certs
                        .get(&r.host)
                        .is_some_and(|b| b.is_stored_as(r)) =>
                {
                    Some(r.host.clone())
                }
                _ => None,
            };
            self.apply_memory(c);
            if let Some(host) = cert {
                self.swapped(&host);
            }
        }
        if !each {
            self.events.record(
                Kind::CertificateSwapped,
                None,
                format!("{certs} certificates stored and served in one batch"),
                None,
            );
        }
        self.update_gauges();
        if wake {
            self.wake_watchers();
        }
    }

    /// A live certificate change is an event (not the ones loaded at start-up).
    fn swapped(&self, host: &str) {
        if let Some(b) = self.state.certs.get(host) {
            let source = match b.source {
                crate::model::CertSource::Acme => "Let's Encrypt (ACME)",
                crate::model::CertSource::Manual => "an upload",
            };
            self.events.record(
                Kind::CertificateSwapped,
                Some(host),
                format!(
                    "now serving serial {} from {source}, valid until {}",
                    b.serial,
                    tls::rfc3339(b.not_after)
                ),
                None,
            );
        }
    }

    pub(super) fn apply_memory(&self, c: Change) {
        match &c {
            Change::PutDomain(d) => self.acme_touch(&d.host),
            Change::DeleteDomain { host } | Change::DeleteCertificate { host } => {
                self.acme_touch(host)
            }
            Change::PutCertificate(rec) => self.acme_touch(&rec.host),
            Change::PutAcmeBudget(b) => {
                // Back-offs set or cleared (by this node or another): those hosts move in the queue.
                let old = self.acme_stored_mut().budget.backoff.clone();
                for host in old.keys().chain(b.backoff.keys()) {
                    self.acme_touch(host);
                }
            }
            _ => {}
        }
        match c {
            Change::PutDomain(d) => self.put_route(&d),
            Change::DeleteDomain { host } => {
                self.state.routes.remove(&host);
            }
            Change::PutChallenge(ch) => self.put_challenge(&ch),
            Change::DeleteChallenge { token } => {
                self.state.challenges.remove(&token);
            }
            Change::PutCertificate(rec) => {
                let same = self
                    .state
                    .certs
                    .get(&rec.host)
                    .is_some_and(|b| b.is_stored_as(&rec));
                if !same {
                    match tls::bundle::parse(&rec, 0, false) {
                        Ok(b) => self.state.certs.publish(Arc::new(b)),
                        Err(e) => {
                            log::error!("stored certificate for {} does not parse: {e}", rec.host)
                        }
                    }
                }
            }
            Change::DeleteCertificate { host } => {
                self.state.certs.remove(&host);
            }
            Change::PutAcmeAccount(a) => self.acme_stored_mut().account = Some(a),
            Change::PutAcmeBudget(b) => self.acme_stored_mut().budget = b,
        }
    }

    /// Check that every delete names something present, taking earlier ops of the batch into account.
    pub(super) fn check(&self, changes: &[Change]) -> Result<(), ApplyError> {
        // (kind, key) -> present after the ops seen so far.
        let mut present: HashMap<(&str, &str), bool> = HashMap::new();
        for (i, c) in changes.iter().enumerate() {
            let key = c.key();
            let (kind, name) = key;
            let deleting = matches!(
                c,
                Change::DeleteDomain { .. }
                    | Change::DeleteChallenge { .. }
                    | Change::DeleteCertificate { .. }
            );
            if deleting {
                let here = *present.entry(key).or_insert_with(|| match c {
                    Change::DeleteDomain { host } => self.state.routes.get(host).is_some(),
                    Change::DeleteChallenge { token } => self.state.challenges.contains(token),
                    _ => self.state.certs.get(name).is_some(),
                });
                if !here {
                    let what = match kind {
                        "certificate" => "certificate",
                        "challenge" => "challenge",
                        _ => "domain",
                    };
                    let m = format!("{what} `{name}` not found");
                    return Err(ApplyError::NotFound(if changes.len() > 1 {
                        format!("ops[{i}]: {m}")
                    } else {
                        m
                    }));
                }
            }
            present.insert(key, !deleting);
        }
        Ok(())
    }

    pub(super) fn put_route(&self, d: &Domain) {
        let pool = self.pools.get(&d.upstreams);
        let domain = self.keep_resolved(d).unwrap_or_else(|| d.clone());
        self.state.routes.insert(Arc::new(Route { domain, pool }));
    }

    pub(super) fn put_challenge(&self, c: &Challenge) {
        self.state.challenges.insert(c);
    }
}
