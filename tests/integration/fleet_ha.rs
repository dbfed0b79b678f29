//! Fleet high availability on a real 3-member etcd: one member down (killed, in turn, at random, or
//! the leader) changes nothing. Eight writers keep changing domains through two nodes' admin APIs
//! while members die and come back; every write must be acknowledged, and what was acknowledged
//! is checked against a model: in etcd itself, and in both nodes' memory.

use crate::etcd::Etcd;
use crate::fleet::{node, node_with_env};
use crate::harness::{eventually, Edgeward, TOKEN};
use edgeward::store::etcd::{EtcdConfig, EtcdStore};
use edgeward::store::Store;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WRITERS: usize = 8;
const HOSTS_PER_WRITER: usize = 6;

/// What the writers were told: host -> the version of its last acknowledged put (`None`: deleted),
/// hosts whose last write failed (unknown outcome), every failure, latencies. The version is the
/// domain's `upstream_timeouts.read_timeout_ms` (every domain has the same one upstream, so the
/// nodes do not health-check thousands of addresses).
#[derive(Default)]
struct Load {
    model: Mutex<BTreeMap<String, Option<u64>>>,
    uncertain: Mutex<BTreeSet<String>>,
    failures: Mutex<Vec<String>>,
    latencies_us: Mutex<Vec<u64>>,
    acked: AtomicU64,
    stop: AtomicBool,
    /// Each kill waits for it (`Settle::settled`).
    settle: Settle,
}

/// Kills spaced so that each write sees at most one leader change: a writer notes the epoch when
/// it begins a write (`began`) and, once finished, that it finished one begun then (`finished`);
/// `settled` bumps the epoch and waits until every writer has finished a write begun after it.
/// `leader_wait` (5 s) bounds one election, not leaders killed faster than a write can retry (seen
/// in the soak: three leader kills 1.5 s apart, each election ~1-1.5 s, failed one write after 5 s).
#[derive(Default)]
struct Settle {
    epoch: AtomicU64,
    done: [AtomicU64; WRITERS],
}

impl Settle {
    fn began(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    fn finished(&self, writer: usize, began: u64) {
        self.done[writer].store(began, Ordering::SeqCst);
    }

    async fn settled(&self) {
        let now = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        eventually(
            "every writer to finish a write begun after the change",
            || async {
                self.done
                    .iter()
                    .all(|d| d.load(Ordering::SeqCst) >= now)
                    .then_some(())
            },
        )
        .await;
    }
}

/// An error with its causes: reqwest's own text does not say what the connection met.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text += &format!(": {c}");
        cause = c.source();
    }
    text
}

impl Load {
    /// Start the writers, spread over `admins` (admin ports), writer `i` owning its own hosts.
    fn start(admins: &[u16]) -> (Arc<Load>, Vec<tokio::task::JoinHandle<()>>) {
        let load = Arc::new(Load::default());
        let tasks = (0..WRITERS)
            .map(|i| {
                let (load, admin) = (load.clone(), admins[i % admins.len()]);
                tokio::spawn(async move { load.write(i, admin).await })
            })
            .collect();
        (load, tasks)
    }

    async fn write(&self, i: usize, admin: u16) {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(i as u64);
        let hosts: Vec<String> = (0..HOSTS_PER_WRITER)
            .map(|k| format!("w{i}-{k}.ha.test"))
            .collect();
        let mut n = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            let host = &hosts[rng.gen_range(0..hosts.len())];
            let url = format!("http://127.0.0.1:{admin}/v1/domains/{host}");
            let exists = matches!(self.model.lock().unwrap().get(host), Some(Some(_)));
            let delete = exists && rng.gen_bool(0.25);
            n += 1;
            let version = 1 + (i as u64) * 100_000 + n;
            let req = if delete {
                client.delete(&url)
            } else {
                client
                    .put(&url)
                    .body(format!(
                        r#"{{"upstreams": ["127.0.0.1:9"], "upstream_timeouts": {{"read_timeout_ms": {version}}}}}"#
                    ))
            };
            let began = self.settle.began();
            let started = Instant::now();
            let result = req.bearer_auth(TOKEN).send().await;
            let took = started.elapsed();
            let (status, body) = match result {
                Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
                Err(e) => (0, error_chain(&e)),
            };
            let want = if delete { 204 } else { 200 };
            if status == want {
                self.latencies_us
                    .lock()
                    .unwrap()
                    .push(took.as_micros() as u64);
                self.acked.fetch_add(1, Ordering::Relaxed);
                self.uncertain.lock().unwrap().remove(host);
                self.model
                    .lock()
                    .unwrap()
                    .insert(host.clone(), (!delete).then_some(version));
            } else {
                self.uncertain.lock().unwrap().insert(host.clone());
                self.failures.lock().unwrap().push(format!(
                    "{} {host}: {status} after {took:?}: {body}",
                    if delete { "DELETE" } else { "PUT" }
                ));
            }
            self.settle.finished(i, began);
        }
    }

    /// Stop the writers and wait for their last requests.
    async fn finish(&self, tasks: Vec<tokio::task::JoinHandle<()>>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
    }

    /// Acknowledged writes so far.
    fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Wait until `n` more writes were acknowledged (the load is really running).
    async fn progress(&self, n: u64) {
        let target = self.acked() + n;
        eventually("the writers to make progress", || async {
            (self.acked() >= target).then_some(())
        })
        .await;
    }

    /// The model's expected domains (certain hosts only): host -> version.
    fn expected(&self) -> BTreeMap<String, u64> {
        let uncertain = self.uncertain.lock().unwrap();
        self.model
            .lock()
            .unwrap()
            .iter()
            .filter(|(h, _)| !uncertain.contains(*h))
            .filter_map(|(h, p)| p.map(|p| (h.clone(), p)))
            .collect()
    }

    fn ignored(&self) -> BTreeSet<String> {
        self.uncertain.lock().unwrap().clone()
    }

    /// No write failed, and what was acknowledged is what etcd holds and what every node serves.
    async fn check(&self, etcd: &Etcd, nodes: &[&Edgeward]) {
        let failures = self.failures.lock().unwrap().clone();
        assert!(
            failures.is_empty(),
            "{} of {} writes failed: {failures:#?}\nthe nodes' errors: {:#?}",
            failures.len(),
            self.acked() as usize + failures.len(),
            node_errors(nodes)
        );
        let expected = self.expected();
        assert!(expected.len() > WRITERS, "the load wrote too little");
        let truth = stored_domains(etcd).await;
        assert_eq!(truth, expected, "etcd against the acknowledged writes");
        for n in nodes {
            eventually("every node to serve what was acknowledged", || async {
                (node_domains(n, &self.ignored()).await == expected).then_some(())
            })
            .await;
        }
    }

    fn latency_summary(&self) -> String {
        let mut l = self.latencies_us.lock().unwrap().clone();
        l.sort_unstable();
        let at = |q: f64| l.get(((l.len() as f64 * q) as usize).min(l.len().saturating_sub(1)));
        format!(
            "{} writes, p50 {:?} us, p99 {:?} us, max {:?} us",
            l.len(),
            at(0.5),
            at(0.99),
            l.last()
        )
    }
}

/// The first error and panic lines of the nodes' logs, for the failure message itself (a CI summary
/// cuts the full logs printed after it).
fn node_errors(nodes: &[&Edgeward]) -> Vec<String> {
    nodes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| {
            n.log_of()
                .lines()
                .filter(|l| l.contains("ERROR") || l.contains("panicked"))
                .map(|l| format!("node {i}: {l}"))
                .collect::<Vec<_>>()
        })
        .take(20)
        .collect()
}

/// The domains of the load as etcd holds them, read by a client of our own.
async fn stored_domains(etcd: &Etcd) -> BTreeMap<String, u64> {
    let running: Vec<String> = (0..etcd.members.len())
        .filter(|&i| etcd.is_running(i))
        .map(|i| etcd.endpoint(i))
        .collect();
    let store = EtcdStore::connect(&EtcdConfig::new(running, "/edgeward-test"))
        .await
        .unwrap();
    let snap = store.load().await.unwrap();
    snap.domains
        .into_iter()
        .filter(|d| d.host.ends_with(".ha.test"))
        .map(|d| {
            let version = d.upstream_timeouts.read_timeout_ms.unwrap_or(0);
            (d.host.clone(), version)
        })
        .collect()
}

async fn node_domains(n: &Edgeward, ignored: &BTreeSet<String>) -> BTreeMap<String, u64> {
    let (_, v) = n.api("GET", "/v1/domains", None).await;
    v.as_array()
        .unwrap()
        .iter()
        .filter_map(|d| {
            let host = d["host"].as_str()?.to_string();
            let version = d["upstream_timeouts"]["read_timeout_ms"]
                .as_u64()
                .unwrap_or(0);
            (host.ends_with(".ha.test") && !ignored.contains(&host)).then_some((host, version))
        })
        .collect()
}

/// `count` domain puts `PREFIX{k}.ha.test` through `n`, each answered 200.
async fn put_all(n: &Edgeward, prefix: &str, count: usize) {
    for k in 0..count {
        let (s, v) = n
            .api(
                "PUT",
                &format!("/v1/domains/{prefix}{k}.ha.test"),
                Some(r#"{"upstreams": ["127.0.0.1:9"]}"#),
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }
}

/// The value of a counter or gauge line (`name{labels} value`) in a metrics text, 0 when absent.
fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn member_up_line(etcd: &Etcd, i: usize) -> String {
    format!(
        "edgeward_etcd_member_up{{endpoint=\"{}\"}}",
        etcd.endpoint(i)
    )
}

fn requests_ok_line(etcd: &Etcd, i: usize) -> String {
    format!(
        "edgeward_etcd_requests_total{{endpoint=\"{}\",result=\"ok\"}}",
        etcd.endpoint(i)
    )
}

/// Wait until `n` sees member `i` as up (`true`) or down, by its own gauge.
async fn member_seen(n: &Edgeward, etcd: &Etcd, i: usize, up: bool) {
    let line = member_up_line(etcd, i);
    eventually("the node to see the member's state", || async {
        let m = n.metrics().await;
        (m.contains(&line) && (metric(&m, &line) == 1.0) == up).then_some(())
    })
    .await;
}

/// Each member in turn killed and restarted while eight writers run through two nodes: no write
/// fails, none is lost; a restarted member is used again; the watch resumes, never resyncs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_member_killed_in_turn_fails_and_loses_no_write() {
    let mut etcd = Etcd::cluster(3).await;
    let (a, b) = (node(&etcd).await, node(&etcd).await);
    let (load, tasks) = Load::start(&[a.admin, b.admin]);
    load.progress(40).await;
    for i in 0..3 {
        load.settle.settled().await;
        etcd.stop_member(i);
        load.progress(60).await;
        member_seen(&a, &etcd, i, false).await;
        etcd.start_member(i).await;
        // Used again: the node sees it healthy and sends it requests that succeed.
        member_seen(&a, &etcd, i, true).await;
        let line = requests_ok_line(&etcd, i);
        let before = metric(&a.metrics().await, &line);
        load.progress(40).await;
        eventually("the restarted member to serve requests", || async {
            (metric(&a.metrics().await, &line) > before).then_some(())
        })
        .await;
    }
    load.finish(tasks).await;
    eprintln!("member kills: {}", load.latency_summary());
    load.check(&etcd, &[&a, &b]).await;
    for n in [&a, &b] {
        let m = n.metrics().await;
        assert_eq!(metric(&m, "edgeward_etcd_watch_resyncs_total"), 0.0, "{m}");
        assert!(
            metric(&m, "edgeward_etcd_watch_resumptions_total") >= 1.0,
            "{m}"
        );
    }
}

/// The leader killed under the same load: writes issued during the election wait for the new
/// leader instead of failing (`leader_wait_ms`, default 5 s). Then quorum lost: 503 with
/// `Retry-After` once the wait passed, and nothing of that write applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_under_load_fails_and_loses_no_write() {
    let mut etcd = Etcd::cluster(3).await;
    let (a, b) = (node(&etcd).await, node(&etcd).await);
    let (load, tasks) = Load::start(&[a.admin, b.admin]);
    load.progress(40).await;
    for _ in 0..2 {
        load.settle.settled().await;
        let leader = etcd.leader().await;
        etcd.stop_member(leader);
        load.progress(60).await;
        let new = etcd.leader().await;
        assert_ne!(new, leader);
        etcd.start_member(leader).await;
        load.progress(20).await;
    }
    load.finish(tasks).await;
    eprintln!("leader kills: {}", load.latency_summary());
    load.check(&etcd, &[&a, &b]).await;
    assert!(metric(&a.metrics().await, "edgeward_etcd_retries_total") >= 1.0);

    // Two of three down: no quorum. The write waits leader_wait_ms, then 503 + Retry-After.
    let leader = etcd.leader().await;
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    etcd.stop_member(others[0]);
    etcd.stop_member(leader);
    let started = Instant::now();
    let resp = a
        .client
        .put(a.admin_url("/v1/domains/noquorum.ha.test"))
        .bearer_auth(TOKEN)
        .body(r#"{"upstreams": ["127.0.0.1:9"]}"#)
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(resp.status().as_u16(), 503);
    assert!(resp.headers().get("retry-after").is_some());
    let body = resp.text().await.unwrap();
    assert!(body.contains("etcd"), "{body}");
    assert!(
        took >= Duration::from_millis(4900) && took < Duration::from_secs(15),
        "answered after {took:?}"
    );
    etcd.start_member(others[0]).await;
    etcd.start_member(leader).await;
    assert!(!stored_domains(&etcd).await.contains_key("noquorum.ha.test"));
}

/// The order budget's compare-and-swap through leader kills: 8 tasks increment it concurrently
/// through the store; every increment is acknowledged and counted exactly once (a resend after an
/// unknown outcome finds its write marker instead of taking a second order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_updates_count_once_through_leader_kills() {
    let _ = env_logger::builder().format_timestamp_millis().try_init();
    let mut etcd = Etcd::cluster(3).await;
    let eps = (0..3).map(|i| etcd.endpoint(i)).collect();
    let store = EtcdStore::connect(&EtcdConfig::new(eps, "/edgeward-budget"))
        .await
        .unwrap();
    let acked = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    // Each kill is one leader change for every write: a kill waits until every writer has finished
    // an update it began after the previous change was over (`Settle`).
    let settle = Arc::new(Settle::default());
    let tasks: Vec<_> = (0..WRITERS)
        .map(|i| {
            let (store, acked, failed, stop) =
                (store.clone(), acked.clone(), failed.clone(), stop.clone());
            let settle = settle.clone();
            tokio::spawn(async move {
                let add = |b: &mut edgeward::model::Budget| {
                    b.placed.push(0);
                    true
                };
                while !stop.load(Ordering::Relaxed) {
                    let began = settle.began();
                    match store.update_budget(&Default::default(), &add).await {
                        Ok(Some(_)) => {
                            acked.fetch_add(1, Ordering::Relaxed);
                            settle.finished(i, began);
                        }
                        other => failed.lock().unwrap().push(format!("{other:?}")),
                    }
                }
            })
        })
        .collect();
    let progress = |n: u64| {
        let acked = acked.clone();
        async move {
            let target = acked.load(Ordering::Relaxed) + n;
            eventually("budget updates", || async {
                (acked.load(Ordering::Relaxed) >= target).then_some(())
            })
            .await
        }
    };
    progress(30).await;
    for _ in 0..3 {
        let leader = etcd.leader().await;
        etcd.stop_member(leader);
        progress(30).await;
        etcd.start_member(leader).await;
        let _ = etcd.leader().await;
        settle.settled().await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(failed.lock().unwrap().as_slice(), &[] as &[String]);
    let snap = store.load().await.unwrap();
    let counted = snap.acme_budget.unwrap().placed.len() as u64;
    assert_eq!(counted, acked.load(Ordering::Relaxed), "counted once each");
}

/// A node told about one member finds the others (the member list is read from the cluster), keeps
/// working when that one member dies, and follows a replaced member without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_discovered_and_a_replacement_is_followed() {
    let mut etcd = Etcd::cluster(3).await;
    let mut n = Edgeward::new("");
    n.state_extra = etcd.state_yaml_with(&[0], ", member_refresh_seconds: 1");
    n.spawn().await;
    for i in 0..3 {
        member_seen(&n, &etcd, i, true).await;
    }
    eprintln!("discovery: all three members seen; killing member 0");
    etcd.stop_member(0);
    put_all(&n, "d", 20).await;
    etcd.start_member(0).await;

    // Replace member 2 by a new member 3.
    eprintln!("discovery: replacing member 2");
    etcd.remove_member(2).await;
    let new = etcd.add_member().await;
    eprintln!("discovery: member {new} added");
    member_seen(&n, &etcd, new, true).await;
    let gone = member_up_line(&etcd, 2);
    eventually("the removed member to leave the node's list", || async {
        (!n.metrics().await.contains(&gone)).then_some(())
    })
    .await;
    // With member 1 down, the cluster is 0 and the new member: both must be used.
    eprintln!("discovery: killing member 1");
    etcd.stop_member(1);
    // Once an election the kill may cause is over, the new member is healthy and takes its share.
    etcd.leader().await;
    member_seen(&n, &etcd, new, true).await;
    let line = requests_ok_line(&etcd, new);
    let before = metric(&n.metrics().await, &line);
    put_all(&n, "r", 20).await;
    assert!(metric(&n.metrics().await, &line) > before);
    let stored = stored_domains(&etcd).await;
    assert_eq!(stored.len(), 40, "{stored:?}");
}

/// `tls: "auto"` with the first endpoint's member dead: the order lock, the budget, the challenge
/// and the certificate all go to the live members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_order_completes_with_a_member_down() {
    let up = crate::harness::Upstream::start("up").await;
    let mut etcd = Etcd::cluster(3).await;
    let (pebble, a, b) = crate::fleet::acme_nodes(&etcd).await;
    etcd.stop_member(0);
    b.put_domain("ha-auto.test", &[up.addr], r#", "tls": "auto""#)
        .await;
    let serial = crate::fleet::certificate_serial(&b, "ha-auto.test").await;
    let root = pebble.issuing_root().await;
    for n in [&a, &b] {
        let (port, root) = (n.https, root.clone());
        let served = eventually("the certificate served", || {
            let root = root.clone();
            async move {
                tokio::task::spawn_blocking(move || {
                    crate::certs::connect(port, Some("ha-auto.test"), &root)
                        .map(|s| crate::certs::peer_serial(&s))
                        .ok()
                })
                .await
                .unwrap()
            }
        })
        .await;
        assert_eq!(served, serial);
    }
    assert!(!a.log_of().contains("cannot take the order lock"));
}

/// A fleet node whose log tells, on a failure, what each etcd request attempt met.
async fn verbose_node(etcd: &Etcd) -> Edgeward {
    node_with_env(etcd, &[("RUST_LOG", "warn,edgeward::store::etcd=debug")]).await
}

/// A bounded soak: random single-member kills (the leader or not) and restarts under the same
/// load, for `EDGEWARD_SOAK_SECONDS` (default 100). Same guarantees. Run alone by `scripts/test`, after
/// the parallel tests (`cargo test -- --ignored`), its etcd data in memory, so that a failure is about
/// edgeward and etcd, not two cores shared with BIND, browsers and other clusters. Its failures
/// (about one run in four, a few writes past the 5 s `leader_wait`) were etcd 3.4 without
/// `--pre-vote` staying leaderless for 5 s (its logs: the restarted member's stale elections); the
/// cluster now runs with it. A later one was a write spanning three leader kills 1.5 s apart; a kill
/// now waits for every writer to finish a write begun after the previous one (`Settle`). Its
/// nodes log each etcd attempt, for the next failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long soak: scripts/test runs it alone after the other tests"]
async fn soak_of_random_member_kills_fails_and_loses_no_write() {
    let seconds: u64 = std::env::var("EDGEWARD_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let seed: u64 = std::env::var("EDGEWARD_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("soak: {seconds} s, EDGEWARD_SOAK_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut etcd = Etcd::cluster_in_memory(3).await;
    let (a, b) = (verbose_node(&etcd).await, verbose_node(&etcd).await);
    let (load, tasks) = Load::start(&[a.admin, b.admin]);
    load.progress(20).await;
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut kills = 0;
    while Instant::now() < end {
        load.settle.settled().await;
        let victim = if rng.gen_bool(0.4) {
            etcd.leader().await
        } else {
            rng.gen_range(0..3)
        };
        etcd.stop_member(victim);
        kills += 1;
        load.progress(rng.gen_range(10..60)).await;
        etcd.start_member(victim).await;
        load.progress(rng.gen_range(5..30)).await;
    }
    load.finish(tasks).await;
    eprintln!("soak: {kills} kills, {}", load.latency_summary());
    load.check(&etcd, &[&a, &b]).await;
    for n in [&a, &b] {
        let m = n.metrics().await;
        assert_eq!(metric(&m, "edgeward_etcd_watch_resyncs_total"), 0.0, "{m}");
    }
}
