//! The etcd members this node talks to, one client (one HTTP/2 connection) per member, with their
//! health. Requests are spread round-robin over the members that answered last; a member that fails
//! at the transport level (refused, reset, silent past the attempt timeout) or that has no leader is
//! skipped until the prober (`maintenance.status`, every `PROBE_EVERY`, all due members at once) sees
//! it healthy again: a member that does not answer is probed with an exponential back-off, one that
//! answers without a leader (an election) at every round, and while no member is healthy requests go
//! to the answering ones first (a write held during an election is not the member's fault). The
//! member list starts from `state.etcd.endpoints` and is replaced by the cluster's own list
//! (`member_list`, every `refresh`), so adding or replacing a member needs no restart.
//!
//! etcd-client's own balanced channel cannot do this: it picks endpoints at random, dead or alive,
//! which failed one request in three with one member of three down.

use etcd_client::{Client, ConnectOptions};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often down members are probed (each at most once per its back-off).
const PROBE_EVERY: Duration = Duration::from_millis(250);
/// How long a probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest a down member waits between probes.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

struct Member {
    url: String,
    /// `None` until a client could be built (with user auth, building one authenticates).
    client: Option<Client>,
    /// `Some`: down, next probe not before then.
    down_until: Option<Instant>,
    failures: u32,
    /// It answered the last time it was asked (a probe or a request), with or without a leader.
    /// Only members that did not answer at all back off exponentially; one that answers without a
    /// leader (an election) is asked again at every probe round, and is picked before the silent
    /// ones when no member is healthy.
    answering: bool,
}

impl Member {
    fn up(&self) -> bool {
        self.client.is_some() && self.down_until.is_none()
    }
}

pub struct Members {
    list: Mutex<Vec<Member>>,
    next: AtomicUsize,
    options: ConnectOptions,
    refresh: Duration,
}

/// One member as handed to a request: report how it went with `Members::ok` / `Members::down`.
pub struct Picked {
    pub url: String,
    pub client: Client,
}

/// `http://` unless the endpoint names a scheme; etcd's member list always does.
fn normalise(endpoint: &str, tls: bool) -> String {
    let e = endpoint.trim_end_matches('/');
    if e.contains("://") {
        e.to_string()
    } else if tls {
        format!("https://{e}")
    } else {
        format!("http://{e}")
    }
}

impl Members {
    /// Clients for `endpoints` (connections are made lazily, so dead members do not fail this unless
    /// user auth is configured and no member answers).
    pub async fn connect(
        endpoints: &[String],
        options: ConnectOptions,
        tls: bool,
        refresh: Duration,
    ) -> Result<Arc<Members>, etcd_client::Error> {
        let members = Arc::new(Members {
            list: Mutex::new(Vec::new()),
            next: AtomicUsize::new(0),
            options,
            refresh,
        });
        let mut last_error = None;
        for e in endpoints {
            let url = normalise(e, tls);
            if members.lock().iter().any(|m| m.url == url) {
                continue;
            }
            let client = match members.client_for(&url).await {
                Ok(c) => Some(c),
                Err(e) => {
                    log::warn!("etcd member {url}: {e}");
                    last_error = Some(e);
                    None
                }
            };
            members.lock().push(Member {
                url,
                down_until: client.is_none().then(Instant::now),
                answering: client.is_some(),
                client,
                failures: 0,
            });
        }
        if members.lock().iter().all(|m| m.client.is_none()) {
            return Err(last_error
                .unwrap_or_else(|| etcd_client::Error::InvalidArgs("no endpoints".into())));
        }
        members.publish();
        Ok(members)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Member>> {
        self.list.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn client_for(&self, url: &str) -> Result<Client, etcd_client::Error> {
        Client::connect([url], Some(self.options.clone())).await
    }

    /// The next member to use: round-robin over the healthy ones; when none is, one that still
    /// answers (during an election, every member is down for want of a leader), the one due to be
    /// probed first among those; else the one due first (a request is never refused without trying).
    pub fn pick(&self) -> Option<Picked> {
        let list = self.lock();
        let n = list.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let chosen = (0..n)
            .map(|i| &list[(start + i) % n])
            .find(|m| m.up())
            .or_else(|| {
                list.iter()
                    .filter(|m| m.client.is_some())
                    .min_by_key(|m| (!m.answering, m.down_until))
            })?;
        Some(Picked {
            url: chosen.url.clone(),
            client: chosen.client.clone()?,
        })
    }

    /// A request on `url` succeeded.
    pub fn ok(&self, url: &str) {
        crate::metrics::ETCD_REQUESTS
            .with_label_values(&[url, "ok"])
            .inc();
        let mut list = self.lock();
        let mut changed = false;
        if let Some(m) = list.iter_mut().find(|m| m.url == url) {
            if m.down_until.take().is_some() {
                log::info!("etcd member {url} is answering again");
                changed = true;
            }
            m.failures = 0;
            m.answering = true;
        }
        drop(list);
        if changed {
            self.publish();
        }
    }

    /// `url` failed at the transport level, or did not answer in time: skip it until a probe says
    /// otherwise. A silent member may only be waiting for a leader (a write held by a follower
    /// during an election): its first probe comes at the next round, and says which.
    pub fn down(&self, url: &str, why: &str) {
        crate::metrics::ETCD_REQUESTS
            .with_label_values(&[url, "error"])
            .inc();
        let mut list = self.lock();
        let mut changed = false;
        if let Some(m) = list.iter_mut().find(|m| m.url == url) {
            // Requests in flight when a member fails all fail together: one episode, the first
            // back-off. It grows with failed probes, not with the number of requests that noticed.
            // A member that failed again is pushed back (so that a request with no healthy
            // member tries the next one), by the same back-off.
            if m.down_until.is_none() {
                log::warn!("etcd member {url} is down, using the others: {why}");
                changed = true;
                m.failures = m.failures.saturating_add(1);
                m.down_until = Some(Instant::now());
            } else {
                m.answering = false;
                m.down_until = Some(Instant::now() + backoff(m.failures));
            }
        }
        drop(list);
        if changed {
            self.publish();
        }
    }

    /// A request on `url` failed for a reason of the cluster's, not the member's (no leader yet).
    pub fn failed(&self, url: &str) {
        crate::metrics::ETCD_REQUESTS
            .with_label_values(&[url, "error"])
            .inc();
    }

    /// Whether `url` is still healthy (the watch moves when its member is not).
    pub fn is_up(&self, url: &str) -> bool {
        self.lock().iter().any(|m| m.url == url && m.up())
    }

    pub fn healthy(&self) -> usize {
        self.lock().iter().filter(|m| m.up()).count()
    }

    /// The member list as a gauge per endpoint (1 up, 0 down); members that left are removed from
    /// it by `refresh_list`.
    fn publish(&self) {
        let list = self.lock();
        let g = &*crate::metrics::ETCD_MEMBER_UP;
        for m in list.iter() {
            g.with_label_values(&[&m.url]).set(m.up() as i64);
        }
    }

    /// Probe down members, and refresh the member list from the cluster, until the process ends.
    pub async fn maintain(self: Arc<Self>) {
        let mut refreshed: Option<Instant> = None; // the first refresh at once
        loop {
            self.probe_due().await;
            if refreshed.is_none_or(|t| t.elapsed() >= self.refresh) {
                refreshed = Some(Instant::now());
                if let Err(e) = self.refresh_list().await {
                    log::warn!("cannot refresh the etcd member list: {e}");
                }
            }
            tokio::time::sleep(PROBE_EVERY).await;
        }
    }

    /// Probe every member that is due, all at once (a silent one must not delay the others).
    async fn probe_due(&self) {
        let now = Instant::now();
        let due: Vec<(String, Option<Client>)> = self
            .lock()
            .iter()
            .filter(|m| m.down_until.is_some_and(|t| t <= now))
            .map(|m| (m.url.clone(), m.client.clone()))
            .collect();
        if due.is_empty() {
            return;
        }
        let probes = due.into_iter().map(|(url, client)| async move {
            let result = tokio::time::timeout(PROBE_TIMEOUT, self.probe(&url, client)).await;
            (url, result.unwrap_or(Err(Probe::Silent)))
        });
        for (url, result) in futures_util::future::join_all(probes).await {
            let mut list = self.lock();
            if let Some(m) = list.iter_mut().find(|m| m.url == url) {
                match result {
                    Ok(c) => {
                        log::info!("etcd member {url} is healthy again");
                        m.client = Some(c);
                        m.down_until = None;
                        m.failures = 0;
                        m.answering = true;
                    }
                    // An election: asked again at the next round, picked before silent members.
                    Err(Probe::NoLeader(c)) => {
                        log::debug!("etcd member {url} still down: no leader");
                        m.client = Some(*c);
                        m.answering = true;
                        m.down_until = Some(Instant::now());
                    }
                    Err(e) => {
                        log::debug!("etcd member {url} still down: {e}");
                        m.answering = false;
                        m.failures = m.failures.saturating_add(1);
                        m.down_until = Some(Instant::now() + backoff(m.failures));
                    }
                }
            }
            drop(list);
        }
        self.publish();
    }

    /// Healthy: it answers `status` and knows a leader.
    async fn probe(&self, url: &str, client: Option<Client>) -> Result<Client, Probe> {
        let client = match client {
            Some(c) => c,
            None => self
                .client_for(url)
                .await
                .map_err(|e| Probe::Failed(e.to_string()))?,
        };
        let status = client
            .maintenance_client()
            .status()
            .await
            .map_err(|e| Probe::Failed(e.to_string()))?;
        if status.leader() == 0 {
            return Err(Probe::NoLeader(Box::new(client)));
        }
        Ok(client)
    }

    /// Replace the list by the cluster's members (their client URLs), keeping the clients and the
    /// health of those already known. A new member is used once a probe found it healthy; a member
    /// no longer listed is dropped only while a listed one is up (a cluster that advertises URLs this
    /// node cannot reach never costs it the endpoints that work).
    async fn refresh_list(&self) -> Result<(), String> {
        let picked = self.pick().ok_or("no member to ask")?;
        let resp =
            tokio::time::timeout(PROBE_TIMEOUT, picked.client.cluster_client().member_list())
                .await
                .map_err(|_| "member_list timed out".to_string())?
                .map_err(|e| e.to_string())?;
        let urls: Vec<String> = resp
            .members()
            .iter()
            .flat_map(|m| m.client_urls().iter())
            .map(|u| u.trim_end_matches('/').to_string())
            .collect();
        if urls.is_empty() {
            return Err("the cluster listed no client URL".into());
        }
        let known: Vec<String> = self.lock().iter().map(|m| m.url.clone()).collect();
        let mut added = Vec::new();
        for url in urls.iter().filter(|u| !known.contains(u)) {
            log::info!("etcd member {url} joined the list");
            added.push(Member {
                url: url.clone(),
                down_until: Some(Instant::now()),
                client: None,
                failures: 0,
                answering: false,
            });
        }
        let mut list = self.lock();
        let listed_up = list.iter().any(|m| m.up() && urls.contains(&m.url));
        list.retain(|m| {
            if !listed_up {
                return true;
            }
            let keep = urls.contains(&m.url);
            if !keep {
                log::info!("etcd member {} left the cluster's list", m.url);
                let _ = crate::metrics::ETCD_MEMBER_UP.remove_label_values(&[&m.url]);
            }
            keep
        });
        list.extend(added);
        drop(list);
        self.publish();
        Ok(())
    }
}

/// Why a probe did not find a member healthy.
enum Probe {
    /// It answers, but knows no leader (yet).
    NoLeader(Box<Client>),
    /// It refused, failed or could not be connected.
    Failed(String),
    /// No answer within `PROBE_TIMEOUT`.
    Silent,
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Probe::NoLeader(_) => f.write_str("no leader"),
            Probe::Failed(e) => f.write_str(e),
            Probe::Silent => write!(f, "no answer within {PROBE_TIMEOUT:?}"),
        }
    }
}

fn backoff(failures: u32) -> Duration {
    (Duration::from_millis(100) * 2u32.saturating_pow(failures.min(10))).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_get_a_scheme_and_lose_a_trailing_slash() {
        assert_eq!(normalise("127.0.0.1:2379", false), "http://127.0.0.1:2379");
        assert_eq!(normalise("etcd1:2379", true), "https://etcd1:2379");
        assert_eq!(normalise("http://a:1/", true), "http://a:1");
    }

    /// Members of no cluster (clients connect lazily, so none is needed to build them).
    async fn three() -> Arc<Members> {
        let endpoints: Vec<String> = (1..=3).map(|p| format!("127.0.0.1:{p}")).collect();
        Members::connect(
            &endpoints,
            ConnectOptions::new(),
            false,
            Duration::from_secs(60),
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn with_no_healthy_member_an_answering_one_is_picked_before_silent_ones() {
        let m = three().await;
        let url = |i: usize| format!("http://127.0.0.1:{i}");
        // First failure: probed at the next round; a second one (it was picked again and failed)
        // pushes it back and counts it as silent.
        m.down(&url(1), "no answer");
        assert!(m.lock()[0].down_until.unwrap() <= Instant::now());
        m.down(&url(1), "no answer");
        assert!(!m.lock()[0].answering);
        assert!(m.lock()[0].down_until.unwrap() > Instant::now());
        m.down(&url(2), "no answer");
        m.down(&url(3), "connection refused");
        m.down(&url(3), "connection refused");
        assert_eq!(m.healthy(), 0);
        {
            // Member 2 answered its last probe without a leader; it is due later than the silent ones.
            let mut list = m.lock();
            list[1].answering = true;
            list[1].down_until = Some(Instant::now() + Duration::from_secs(3));
            list[0].down_until = Some(Instant::now());
            list[2].down_until = Some(Instant::now());
        }
        for _ in 0..3 {
            assert_eq!(m.pick().unwrap().url, url(2));
        }
        // Once it answers with a leader it is healthy again, and the only one picked.
        m.ok(&url(2));
        assert_eq!(m.healthy(), 1);
        for _ in 0..3 {
            assert_eq!(m.pick().unwrap().url, url(2));
        }
        // With no answering member either, the one due first.
        m.lock()[1].answering = false;
        m.lock()[1].down_until = Some(Instant::now() + Duration::from_secs(3));
        m.lock()[2].down_until = Some(Instant::now() + Duration::from_secs(1));
        assert_eq!(m.pick().unwrap().url, url(1));
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        assert!(backoff(1) < backoff(2));
        assert_eq!(backoff(30), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
