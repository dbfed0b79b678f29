//! The route table the proxy reads: exact hosts in one map, one-level wildcards in another keyed by their
//! parent (`*.example.com` under `example.com`), so a lookup is at most two probes and never allocates.
//! Exact wins over wildcard. Each host lives in exactly one of the two maps, decided by its form.
//! The admin API's paged lists read a sorted index of the host names beside them (never the proxy):
//! a change costs O(log n) there, a page O(log n + page).

use crate::model::host::wildcard_parent;
use crate::model::Domain;
use crate::pools::Pool;
use dashmap::DashMap;
use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::{Arc, RwLock};

/// A domain and the pool its requests go to.
pub struct Route {
    pub domain: Domain,
    pub pool: Arc<Pool>,
}

#[derive(Default)]
pub struct Routes {
    exact: DashMap<Box<str>, Arc<Route>>,
    wildcard: DashMap<Box<str>, Arc<Route>>,
    /// Every host, sorted; changed by the single writer with the maps (a page read in between may
    /// see a host whose route is gone: it is skipped).
    names: RwLock<BTreeSet<Box<str>>>,
}

impl Routes {
    /// The route for a normalised request host.
    pub fn lookup(&self, host: &str) -> Option<Arc<Route>> {
        if let Some(r) = self.exact.get(host) {
            return Some(r.clone());
        }
        let parent = wildcard_parent(host)?;
        self.wildcard.get(parent).map(|r| r.clone())
    }

    /// The route stored under exactly this host name (`*.a.com` for a wildcard).
    pub fn get(&self, host: &str) -> Option<Arc<Route>> {
        match host.strip_prefix("*.") {
            Some(parent) => self.wildcard.get(parent).map(|r| r.clone()),
            None => self.exact.get(host).map(|r| r.clone()),
        }
    }

    pub fn insert(&self, route: Arc<Route>) -> Option<Arc<Route>> {
        let host: Box<str> = route.domain.host.as_str().into();
        let old = match host.strip_prefix("*.") {
            Some(parent) => self.wildcard.insert(parent.into(), route),
            None => self.exact.insert(host.clone(), route),
        };
        if old.is_none() {
            self.names_mut().insert(host);
        }
        old
    }

    pub fn remove(&self, host: &str) -> Option<Arc<Route>> {
        let old = match host.strip_prefix("*.") {
            Some(parent) => self.wildcard.remove(parent).map(|(_, r)| r),
            None => self.exact.remove(host).map(|(_, r)| r),
        };
        if old.is_some() {
            self.names_mut().remove(host);
        }
        old
    }

    fn names_mut(&self) -> std::sync::RwLockWriteGuard<'_, BTreeSet<Box<str>>> {
        self.names.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The routes of the hosts after `after` (all with `None`) that start with `prefix`, in host
    /// order, to `visit` until it returns false.
    pub fn scan(
        &self,
        after: Option<&str>,
        prefix: &str,
        mut visit: impl FnMut(Arc<Route>) -> bool,
    ) {
        let names = self.names.read().unwrap_or_else(|p| p.into_inner());
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded(a),
            _ => Bound::Included(prefix),
        };
        let range = names.range::<str, _>((start, Bound::Unbounded));
        for host in range.take_while(|h| h.starts_with(prefix)) {
            if let Some(route) = self.get(host) {
                if !visit(route) {
                    return;
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every domain, sorted by host.
    pub fn domains(&self) -> Vec<Domain> {
        let mut v: Vec<Domain> = self
            .exact
            .iter()
            .chain(self.wildcard.iter())
            .map(|r| r.domain.clone())
            .collect();
        v.sort_by(|a, b| a.host.cmp(&b.host));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ChallengeMode, TlsMode};
    use crate::pools::Pools;
    use std::time::Duration;

    fn route(pools: &Pools, host: &str, port: u16) -> Arc<Route> {
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        Arc::new(Route {
            domain: Domain {
                host: host.into(),
                upstreams: vec![addr],
                tls: TlsMode::Off,
                redirect_https: false,
                acme_challenges: ChallengeMode::Intercept,
                ..crate::model::domain::test_domain(host)
            },
            pool: pools.get(&[addr]),
        })
    }

    #[test]
    fn exact_beats_wildcard_and_wildcards_are_one_level() {
        let pools = Pools::new(Duration::from_secs(1));
        let t = Routes::default();
        t.insert(route(&pools, "*.example.com", 1));
        t.insert(route(&pools, "www.example.com", 2));
        let port = |h: &str| t.lookup(h).map(|r| r.domain.upstreams[0].port());
        assert_eq!(port("www.example.com"), Some(2));
        assert_eq!(port("shop.example.com"), Some(1));
        assert_eq!(port("a.b.example.com"), None);
        assert_eq!(port("example.com"), None);
        assert_eq!(t.len(), 2);
        assert!(t.remove("*.example.com").is_some());
        assert_eq!(port("shop.example.com"), None);
        assert_eq!(t.domains().len(), 1);
    }

    #[test]
    fn scans_follow_the_sorted_index() {
        let pools = Pools::new(Duration::from_secs(1));
        let t = Routes::default();
        for h in ["c.test", "*.b.test", "a.test", "b.test", "ba.test"] {
            t.insert(route(&pools, h, 1));
        }
        t.insert(route(&pools, "a.test", 2)); // a replacement is not a second name
        t.remove("c.test");
        let scan = |after: Option<&str>, prefix: &str| {
            let mut v = Vec::new();
            t.scan(after, prefix, |r| {
                v.push(r.domain.host.clone());
                true
            });
            v
        };
        assert_eq!(scan(None, ""), ["*.b.test", "a.test", "b.test", "ba.test"]);
        assert_eq!(scan(Some("a.test"), ""), ["b.test", "ba.test"]);
        assert_eq!(scan(None, "b"), ["b.test", "ba.test"]);
        assert_eq!(scan(Some("b.test"), "b"), ["ba.test"]);
        assert_eq!(scan(Some("0"), "b"), ["b.test", "ba.test"]);
    }
}
