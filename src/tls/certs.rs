//! Certificates for the TLS callback: SNI name -> pre-parsed bundle. Exact names in one map, wildcard
//! names in another keyed by parent, so a lookup is at most two probes. A certificate with several names is
//! published name by name; the old bundle stays until the new one replaces it, so a handshake always finds
//! one. Writers (one at a time, under `Control`) also keep `records` (host -> bundle, the truth) and
//! `by_name` (which records cover a name) to re-point a name when the certificate holding it goes.

use super::bundle::CertBundle;
use crate::model::host::wildcard_parent;
use arc_swap::ArcSwapOption;
use dashmap::DashMap;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

/// Read-only access for the TLS callback: lookups, no publishing.
#[derive(Clone)]
pub struct CertReader(Arc<CertStore>);

impl CertReader {
    pub fn new(store: Arc<CertStore>) -> Self {
        CertReader(store)
    }

    /// The bundle for an SNI name (lowercase): exact, then one-level wildcard. No default here.
    pub fn lookup(&self, sni: &str) -> Option<Arc<CertBundle>> {
        self.0.lookup(sni)
    }

    pub fn default_cert(&self) -> Option<Arc<CertBundle>> {
        self.0.default_cert()
    }
}

#[derive(Default)]
pub struct CertStore {
    exact: DashMap<Box<str>, Arc<CertBundle>>,
    wildcard: DashMap<Box<str>, Arc<CertBundle>>,
    default: ArcSwapOption<CertBundle>,
    records: DashMap<Box<str>, Arc<CertBundle>>,
    by_name: Mutex<HashMap<String, BTreeSet<String>>>,
}

impl CertStore {
    /// The bundle for an SNI name (lowercase): exact, then one-level wildcard. No default here.
    pub fn lookup(&self, sni: &str) -> Option<Arc<CertBundle>> {
        if let Some(b) = self.exact.get(sni) {
            return Some(b.clone());
        }
        self.wildcard.get(wildcard_parent(sni)?).map(|b| b.clone())
    }

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

    /// Publish `bundle` under its host and every name it covers. A name keeps the certificate stored
    /// under that very name when there is one.
    pub fn publish(&self, bundle: Arc<CertBundle>) {
        let host = bundle.host.clone();
        let old = self.records.insert(host.as_str().into(), bundle.clone());
        let mut by_name = self.by_name.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = &old {
            for n in &old.names {
                if !bundle.names.contains(n) {
                    self.forget(&mut by_name, n, &host);
                }
            }
        }
        for n in &bundle.names {
            by_name.entry(n.clone()).or_default().insert(host.clone());
            self.repoint(&by_name, n);
        }
    }

    /// Remove the certificate stored under `host`; names it served fall back to another certificate
    /// covering them, if any.
    pub fn remove(&self, host: &str) -> Option<Arc<CertBundle>> {
        let (_, old) = self.records.remove(host)?;
        let mut by_name = self.by_name.lock().unwrap_or_else(|p| p.into_inner());
        for n in &old.names {
            self.forget(&mut by_name, n, host);
        }
        Some(old)
    }

    fn forget(&self, by_name: &mut HashMap<String, BTreeSet<String>>, name: &str, host: &str) {
        if let Some(hosts) = by_name.get_mut(name) {
            hosts.remove(host);
            if hosts.is_empty() {
                by_name.remove(name);
            }
        }
        self.repoint(by_name, name);
    }

    /// Point `name` at the best certificate covering it: the one stored under `name`, else the most
    /// recently published of the others; remove it when none covers it.
    fn repoint(&self, by_name: &HashMap<String, BTreeSet<String>>, name: &str) {
        let best = by_name.get(name).and_then(|hosts| {
            if hosts.contains(name) {
                return self.get(name);
            }
            hosts
                .iter()
                .filter_map(|h| self.get(h))
                .max_by_key(|b| b.not_before)
        });
        let (map, key) = match name.strip_prefix("*.") {
            Some(parent) => (&self.wildcard, parent),
            None => (&self.exact, name),
        };
        match best {
            Some(b) => {
                map.insert(key.into(), b);
            }
            None => {
                map.remove(key);
            }
        }
    }

    /// The soonest `not_after` of all stored certificates.
    pub fn soonest_expiry(&self) -> Option<i64> {
        self.records.iter().map(|b| b.not_after).min()
    }
}
