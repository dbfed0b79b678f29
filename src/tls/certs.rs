//! The certificates, by the host they are stored under. A certificate belongs to its domain: the TLS
//! callback finds the domain an SNI name routes to (`state::Reader::cert_for`), then the certificate
//! that domain names (its own, or a shared one it points at), and serves it only if it covers the
//! name. So the names listed in an upload never reach beyond the domains that point at it: another
//! tenant's name routes to another domain, and a name no domain owns gets the default certificate.

use super::bundle::CertBundle;
use arc_swap::ArcSwapOption;
use dashmap::DashMap;
use std::sync::Arc;

#[derive(Default)]
pub struct CertStore {
    records: DashMap<Box<str>, Arc<CertBundle>>,
    default: ArcSwapOption<CertBundle>,
}

impl CertStore {
    pub fn default_cert(&self) -> Option<Arc<CertBundle>> {
        self.default.load_full()
    }

    pub fn set_default(&self, bundle: Option<Arc<CertBundle>>) {
        self.default.store(bundle);
    }

    /// The certificate stored under `host`.
    pub fn get(&self, host: &str) -> Option<Arc<CertBundle>> {
        self.records.get(host).map(|b| b.clone())
    }

    pub fn all(&self) -> Vec<Arc<CertBundle>> {
        let mut v: Vec<_> = self.records.iter().map(|b| b.clone()).collect();
        v.sort_by(|a, b| a.host.cmp(&b.host));
        v
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Store `bundle` under its host, replacing the one there: a handshake sees the old or the new.
    pub fn publish(&self, bundle: Arc<CertBundle>) {
        self.records.insert(bundle.host.as_str().into(), bundle);
    }

    /// Remove the certificate stored under `host`.
    pub fn remove(&self, host: &str) -> Option<Arc<CertBundle>> {
        self.records.remove(host).map(|(_, b)| b)
    }

    /// The soonest `not_after` of all stored certificates.
    pub fn soonest_expiry(&self) -> Option<i64> {
        self.records.iter().map(|b| b.not_after).min()
    }
}
