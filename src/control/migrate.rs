//! Domains stored before a domain named its certificate (`certificate_host` absent: `CertRef::Legacy`).
//! Then, every name listed in any stored certificate was served that certificate, so a domain without
//! a certificate of its own was served the one covering its host. That is kept, once: at load, each
//! such domain is resolved by those rules over the certificates stored then (its own, else the one
//! with its exact name, else the wildcard covering it, the most recent first) and written back with
//! the result once this process owns the store. From then on only the reference counts: a
//! certificate uploaded later never reaches a domain that does not point at it.

use super::Control;
use crate::model::host::wildcard_parent;
use crate::model::{CertRef, Domain};
use crate::tls::CertBundle;
use std::collections::HashMap;
use std::sync::Arc;

/// Which stored certificates listed each name, built once for a load that has legacy domains.
pub(super) struct LegacyIndex {
    by_name: HashMap<String, Vec<Arc<CertBundle>>>,
}

impl LegacyIndex {
    pub(super) fn new(certs: &[Arc<CertBundle>]) -> Self {
        let mut by_name: HashMap<String, Vec<Arc<CertBundle>>> = HashMap::new();
        for b in certs {
            for n in &b.names {
                by_name.entry(n.clone()).or_default().push(b.clone());
            }
        }
        LegacyIndex { by_name }
    }

    /// What a legacy domain on `host` was served, as a reference.
    pub(super) fn resolve(&self, host: &str, has_own: bool) -> CertRef {
        if has_own {
            return CertRef::Own;
        }
        let best = |name: &str| {
            self.by_name.get(name).and_then(|list| {
                // The certificate stored under the name itself first, then the most recent.
                list.iter()
                    .find(|b| b.host == name)
                    .or_else(|| list.iter().max_by_key(|b| b.not_before))
                    .cloned()
            })
        };
        let found = best(host).or_else(|| {
            if host.starts_with("*.") {
                return None;
            }
            wildcard_parent(host).and_then(|p| best(&format!("*.{p}")))
        });
        match found {
            Some(b) if b.host != host => CertRef::Shared(b.host.clone()),
            _ => CertRef::Own,
        }
    }
}

impl Control {
    /// Resolve the legacy domains of a load in place; returns their hosts (to be written back).
    pub(super) fn resolve_legacy(&self, domains: &mut [Domain]) -> Vec<String> {
        if !domains
            .iter()
            .any(|d| d.certificate_host == CertRef::Legacy)
        {
            return Vec::new();
        }
        let index = LegacyIndex::new(&self.state.certs.all());
        let mut hosts = Vec::new();
        for d in domains
            .iter_mut()
            .filter(|d| d.certificate_host == CertRef::Legacy)
        {
            let has_own = self.state.certs.get(&d.host).is_some();
            d.certificate_host = index.resolve(&d.host, has_own);
            if let CertRef::Shared(h) = &d.certificate_host {
                log::warn!(
                    "domain {} had no certificate of its own and was served the one stored under \
                     {h}, which lists its name: it now points at it explicitly (\"certificate_host\": \
                     \"{h}\"); remove the reference if that is not wanted",
                    d.host
                );
            }
            hosts.push(d.host.clone());
        }
        log::info!(
            "{} domains stored before domains named their certificate: resolved, and written back \
             once this process may write",
            hosts.len()
        );
        hosts
    }

    /// A legacy record arriving from the store after the load (a followed change, a resync before the
    /// write-back): it keeps what memory resolved for it, else its own certificate.
    pub(super) fn keep_resolved(&self, d: &Domain) -> Option<Domain> {
        if d.certificate_host != CertRef::Legacy {
            return None;
        }
        let resolved = self
            .state
            .routes
            .get(&d.host)
            .map(|r| r.domain.certificate_host.clone())
            .filter(|c| *c != CertRef::Legacy)
            .unwrap_or(CertRef::Own);
        Some(Domain {
            certificate_host: resolved,
            ..d.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::bundle::parse_pem;
    use crate::tls::CertSource;

    fn bundle(host: &str, names: &[&str], not_before: i64) -> Arc<CertBundle> {
        let (chain, key) = crate::tls::test_cert::self_signed(names[0].trim_start_matches("*."));
        let mut b = parse_pem(host.into(), &chain, &key, CertSource::Manual).unwrap();
        b.names = names.iter().map(|n| n.to_string()).collect();
        b.not_before = not_before;
        Arc::new(b)
    }

    #[test]
    fn legacy_domains_keep_what_they_were_served() {
        let certs = [
            bundle("shop.test", &["shop.test", "www.shop.test"], 1),
            bundle("other.test", &["other.test", "www.shop.test"], 2),
            bundle("*.v.test", &["*.v.test"], 1),
            bundle("evil.test", &["evil.test", "*.v.test"], 9),
        ];
        let ix = LegacyIndex::new(&certs);
        assert_eq!(ix.resolve("shop.test", true), CertRef::Own);
        // The most recent certificate listing the name.
        assert_eq!(
            ix.resolve("www.shop.test", false),
            CertRef::Shared("other.test".into())
        );
        // The certificate stored under the wildcard wins over a newer one listing it.
        assert_eq!(
            ix.resolve("a.v.test", false),
            CertRef::Shared("*.v.test".into())
        );
        assert_eq!(ix.resolve("nobody.test", false), CertRef::Own);
    }
}
