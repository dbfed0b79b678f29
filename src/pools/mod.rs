//! Upstream pools, shared by every domain that lists the same upstream set. Health is tracked per backend
//! address in one pingora `HealthRegistry` probed by one `HealthCheckService`, so 100k domains over a few
//! thousand backends cost a few thousand probes, and a domain change never starts or stops a task.
//! `health`: the HTTP check, the record of each check, passive health from live traffic.

pub mod health;

use health::{CheckResult, HealthConfig, Observed, Recording};

use dashmap::DashMap;
use futures_util::FutureExt;
use pingora_load_balancing::discovery::Static;
use pingora_load_balancing::selection::RoundRobin;
use pingora_load_balancing::{Backend, Backends, HealthCheckService, HealthRegistry, LoadBalancer};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// A round-robin pool over one upstream set.
pub struct Pool {
    key: Box<[SocketAddr]>,
    lb: LoadBalancer<RoundRobin>,
    owner: Weak<PoolsInner>,
    observed: Arc<Observed>,
}

impl Pool {
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.key
    }

    /// The next healthy backend in round-robin order that is not in `exclude` (already tried) and
    /// that live traffic has not taken out.
    pub fn select(&self, exclude: &[SocketAddr]) -> Option<SocketAddr> {
        let max = self.key.len() * 2 + 1;
        self.lb
            .select_with(b"", max, |b, healthy| {
                healthy
                    && b.addr
                        .as_inet()
                        .is_some_and(|a| !exclude.contains(a) && !self.observed.passive_down(a))
            })
            .and_then(|b| b.addr.as_inet().copied())
    }

    /// Live traffic's verdict on a backend: `ok` false for a failed connect or a 5xx.
    pub fn report(&self, addr: SocketAddr, ok: bool) {
        if ok {
            self.observed.answered(addr)
        } else {
            self.observed.failed(addr)
        }
    }
}

impl Pool {
    /// Each backend and whether the health checks currently consider it up.
    pub fn health(&self) -> Vec<(SocketAddr, bool)> {
        self.lb
            .backends()
            .get_backend()
            .iter()
            .filter_map(|b| b.addr.as_inet().map(|a| (*a, self.lb.backends().ready(b))))
            .collect()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if let Some(owner) = self.owner.upgrade() {
            owner
                .by_key
                .remove_if(&self.key, |_, w| w.strong_count() == 0);
        }
    }
}

struct PoolsInner {
    registry: Arc<HealthRegistry>,
    by_key: DashMap<Box<[SocketAddr]>, Weak<Pool>>,
    observed: Arc<Observed>,
    interval: Duration,
}

/// One backend as `GET /v1/upstreams` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackendHealth {
    pub addr: SocketAddr,
    /// Up for the checks and not taken out by traffic.
    pub healthy: bool,
    pub check_healthy: bool,
    pub passive_down: bool,
    pub last_check: Option<CheckResult>,
}

/// The pool registry: upstream set -> shared pool.
#[derive(Clone)]
pub struct Pools {
    inner: Arc<PoolsInner>,
}

impl Pools {
    /// TCP checks every 5 s (tests).
    pub fn new(connect_timeout: Duration) -> Self {
        Pools::with_health(&HealthConfig::tcp(Duration::from_secs(5), connect_timeout))
    }

    pub fn with_health(c: &HealthConfig) -> Self {
        let registry = Arc::new(HealthRegistry::new());
        let observed = Observed::new(if c.passive { c.fall } else { 0 });
        registry.set_health_check(Box::new(Recording::new(c, observed.clone())));
        Pools {
            inner: Arc::new(PoolsInner {
                registry,
                by_key: DashMap::new(),
                observed,
                interval: c.interval,
            }),
        }
    }

    /// The background service that probes every distinct backend once per interval.
    pub fn health_service(&self) -> HealthCheckService {
        let mut svc = HealthCheckService::new(self.inner.registry.clone());
        svc.health_check_frequency = Some(self.inner.interval);
        svc.parallel_health_check = true;
        svc
    }

    /// The pool for `upstreams` (order does not matter), created on first use.
    pub fn get(&self, upstreams: &[SocketAddr]) -> Arc<Pool> {
        let mut key: Vec<SocketAddr> = upstreams.to_vec();
        key.sort_unstable();
        key.dedup();
        let key = key.into_boxed_slice();
        if let Some(p) = self.inner.by_key.get(&key).and_then(|w| w.upgrade()) {
            return p;
        }
        match self.inner.by_key.entry(key.clone()) {
            dashmap::Entry::Occupied(mut e) => {
                if let Some(p) = e.get().upgrade() {
                    return p;
                }
                let p = self.build(key);
                e.insert(Arc::downgrade(&p));
                p
            }
            dashmap::Entry::Vacant(e) => {
                let p = self.build(key);
                e.insert(Arc::downgrade(&p));
                p
            }
        }
    }

    fn build(&self, key: Box<[SocketAddr]>) -> Arc<Pool> {
        let set: BTreeSet<Backend> = key
            .iter()
            .map(|a| Backend::new(&a.to_string()).expect("a SocketAddr always parses"))
            .collect();
        let backends =
            Backends::new_with_health_registry(Static::new(set), self.inner.registry.clone());
        let lb = LoadBalancer::from_backends(backends);
        // Static discovery never awaits: the pool is ready when this returns.
        lb.update()
            .now_or_never()
            .expect("static discovery completes at once")
            .expect("static discovery cannot fail");
        Arc::new(Pool {
            key,
            lb,
            owner: Arc::downgrade(&self.inner),
            observed: self.inner.observed.clone(),
        })
    }

    /// Number of live pools.
    pub fn len(&self) -> usize {
        self.inner.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.by_key.is_empty()
    }

    /// Every distinct backend with its checks' and traffic's verdicts, sorted by address.
    pub fn backends(&self) -> Vec<BackendHealth> {
        self.health()
            .into_iter()
            .map(|(addr, up)| {
                let passive_down = self.inner.observed.passive_down(&addr);
                BackendHealth {
                    addr,
                    healthy: up && !passive_down,
                    check_healthy: up,
                    passive_down,
                    last_check: self.inner.observed.last_check(&addr),
                }
            })
            .collect()
    }

    /// Every distinct backend address and its health, sorted by address.
    pub fn health(&self) -> Vec<(SocketAddr, bool)> {
        let pools: Vec<Arc<Pool>> = self
            .inner
            .by_key
            .iter()
            .filter_map(|w| w.upgrade())
            .collect();
        let mut all: std::collections::BTreeMap<SocketAddr, bool> = Default::default();
        for p in pools {
            for (addr, up) in p.health() {
                all.insert(addr, up);
            }
        }
        all.into_iter().collect()
    }

    /// Distinct backend addresses under health checks.
    pub fn backend_count(&self) -> usize {
        self.inner.registry.target_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_are_shared_and_dropped() {
        let pools = Pools::new(Duration::from_secs(1));
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let p1 = pools.get(&[a, b]);
        let p2 = pools.get(&[b, a]);
        assert!(Arc::ptr_eq(&p1, &p2));
        assert_eq!(pools.len(), 1);
        let first = p1.select(&[]).unwrap();
        let second = p1.select(&[]).unwrap();
        assert_ne!(first, second, "round robin alternates");
        assert_eq!(p1.select(&[a]), Some(b));
        assert_eq!(p1.select(&[a, b]), None);
        drop(p1);
        drop(p2);
        assert_eq!(pools.len(), 0);
    }
}
