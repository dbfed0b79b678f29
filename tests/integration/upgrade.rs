//! Pingora's graceful upgrade (`-u` + SIGQUIT) under continuous admin writes and traffic: the new
//! process follows what the old one writes until it owns the state, so no acknowledged write is
//! missing from it, and no request fails (no client retries: connections the old process accepted
//! are served, admin writes wait for the hand-over of the writer role).

use crate::harness::{eventually, Edgeward, Upstream, TOKEN};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Admin writers and proxy clients running until stopped, counting what succeeded and what failed.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<BTreeSet<String>>>,
    requests: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    slowest_write: Arc<Mutex<Duration>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(e: &Edgeward, host: &str, upstream: std::net::SocketAddr) -> Load {
        let mut load = Load {
            stop: Arc::default(),
            acked: Arc::default(),
            requests: Arc::default(),
            failures: Arc::default(),
            slowest_write: Arc::default(),
            tasks: Vec::new(),
        };
        for w in 0..4 {
            load.writer(e.admin_url(""), w, upstream);
        }
        let url = format!("http://127.0.0.1:{}/", e.http);
        for fresh in [true, true, false, false] {
            load.client(url.clone(), host.to_string(), fresh);
        }
        load
    }

    /// PUT a new domain after another, on one kept-alive connection, as a platform's sync does.
    fn writer(&mut self, admin: String, w: usize, upstream: std::net::SocketAddr) {
        let (stop, acked, failures, slowest) = (
            self.stop.clone(),
            self.acked.clone(),
            self.failures.clone(),
            self.slowest_write.clone(),
        );
        self.tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let body = format!("{{\"upstreams\": [\"{upstream}\"]}}");
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let host = format!("u{w}-{i}.test");
                let started = Instant::now();
                let r = client
                    .put(format!("{admin}/v1/domains/{host}"))
                    .bearer_auth(TOKEN)
                    .body(body.clone())
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        acked.lock().unwrap().insert(host);
                    }
                    other => failures
                        .lock()
                        .unwrap()
                        .push(format!("PUT {host}: {other:?}")),
                }
                let took = started.elapsed();
                let mut s = slowest.lock().unwrap();
                *s = (*s).max(took);
                i += 1;
            }
        }));
    }

    /// GET through the proxy: a new connection per request (`fresh`), or one kept alive.
    fn client(&mut self, url: String, host: String, fresh: bool) {
        let (stop, requests, failures) = (
            self.stop.clone(),
            self.requests.clone(),
            self.failures.clone(),
        );
        self.tasks.push(tokio::spawn(async move {
            let mut builder = reqwest::Client::builder();
            if fresh {
                builder = builder.pool_max_idle_per_host(0);
            }
            let client = builder.build().unwrap();
            while !stop.load(Ordering::Relaxed) {
                match client.get(&url).header("host", &host).send().await {
                    Ok(r) if r.status() == 200 => {
                        requests.fetch_add(1, Ordering::Relaxed);
                    }
                    other => failures
                        .lock()
                        .unwrap()
                        .push(format!("GET {host}: {other:?}")),
                }
            }
        }));
    }

    async fn wait_for_progress(&self) {
        let (writes, reqs) = (
            self.acked.lock().unwrap().len(),
            self.requests.load(Ordering::Relaxed),
        );
        eventually("load to make progress", || async {
            (self.acked.lock().unwrap().len() > writes + 20
                && self.requests.load(Ordering::Relaxed) > reqs + 20)
                .then_some(())
        })
        .await;
    }

    async fn stop(self) -> (BTreeSet<String>, usize, Vec<String>, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let acked = self.acked.lock().unwrap().clone();
        let failures = self.failures.lock().unwrap().clone();
        let slowest = *self.slowest_write.lock().unwrap();
        (
            acked,
            self.requests.load(Ordering::Relaxed),
            failures,
            slowest,
        )
    }
}

async fn metric(e: &Edgeward, name: &str) -> f64 {
    e.metrics()
        .await
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn domains(e: &Edgeward) -> BTreeSet<String> {
    let (_, v) = e.api("GET", "/v1/domains", None).await;
    v.as_array()
        .unwrap()
        .iter()
        .map(|d| d["host"].as_str().unwrap().to_string())
        .collect()
}

/// Run an upgrade under load; `before_upgrade` may change the configuration the new process reads.
async fn upgrade_under_load(e: &mut Edgeward, up: &Upstream) {
    e.put_domain("live.test", &[up.addr], "").await;
    let load = Load::start(e, "live.test", up.addr);
    load.wait_for_progress().await;
    let old = e.pid();
    e.upgrade().await;
    assert_ne!(e.pid(), old);
    load.wait_for_progress().await;
    let (acked, requests, failures, slowest) = load.stop().await;
    eprintln!(
        "upgrade under load: {} writes acknowledged, {requests} proxied requests, slowest write {slowest:?}",
        acked.len()
    );
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    // The old process acknowledged writes while the new one was loaded and following it.
    assert!(
        metric(e, "edgeward_state_followed_changes_total").await > 0.0,
        "the new process followed nothing: the test did not exercise the hand-over"
    );
    let live = domains(e).await;
    let missing: Vec<_> = acked.difference(&live).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but missing in the new process: {missing:?}"
    );
    for host in acked.iter().rev().take(20) {
        assert_eq!(e.upstream_for(host).await.as_deref(), Some("up"), "{host}");
    }
    assert_eq!(
        metric(e, "edgeward_state_writer").await,
        1.0,
        "the new process writes"
    );
}

/// (c) An upgrade under continuous admin writes and traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upgrade_under_writes_and_traffic_loses_no_write_and_fails_no_request() {
    let up = Upstream::start("up").await;
    let mut e = Edgeward::new("");
    // Small logs: the follower crosses rotations during the hand-over.
    e.state_extra = "    checkpoint_bytes: 16384\n".into();
    e.spawn().await;
    upgrade_under_load(&mut e, &up).await;
    // And once more, from the new process to the next.
    upgrade_under_load(&mut e, &up).await;
}

/// (d) The same with a seed list the new configuration changes: the seeds are written by the new
/// process once it owns the state, and taking the sockets never waits for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upgrade_with_a_changed_seed_list_takes_the_sockets_and_applies_the_seeds() {
    let up = Upstream::start("up").await;
    let other = Upstream::start("other").await;
    let mut e = Edgeward::new(&format!(
        "  domains:\n    - {{host: seeded.test, upstreams: [\"{}\"]}}\n",
        up.addr
    ));
    e.spawn().await;
    assert_eq!(e.upstream_for("seeded.test").await.as_deref(), Some("up"));
    e.extra = format!(
        "  domains:\n    - {{host: seeded.test, upstreams: [\"{o}\"]}}\n    - {{host: new-seed.test, upstreams: [\"{o}\"]}}\n",
        o = other.addr
    );
    e.write_config();
    upgrade_under_load(&mut e, &up).await;
    assert_eq!(
        e.upstream_for("seeded.test").await.as_deref(),
        Some("other")
    );
    assert_eq!(
        e.upstream_for("new-seed.test").await.as_deref(),
        Some("other")
    );
    let stored: BTreeSet<String> = e.stored().domains.into_iter().map(|d| d.host).collect();
    assert!(stored.contains("new-seed.test"), "the seed is durable");
}

/// One HTTP/1.1 GET on a raw connection: (status, lower-cased head, body).
async fn exchange(s: &mut tokio::net::TcpStream, host: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head, body_start) = loop {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before a response");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break (String::from_utf8_lossy(&buf[..i]).to_lowercase(), i + 4);
        }
    };
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    while buf.len() < body_start + len {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed in the body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let status = head[9..12].parse().unwrap();
    let body = String::from_utf8_lossy(&buf[body_start..body_start + len]).into_owned();
    (status, head, body)
}

/// Connections the old process accepted, with no request in progress when its shutdown starts, are
/// served when their request arrives (then closed); and until it exits, the old process serves what
/// its successor writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_process_serves_its_connections_and_its_successors_writes_until_it_exits() {
    let up = Upstream::start("up").await;
    let mut e = Edgeward::new("");
    e.env = vec![("RUST_LOG".into(), "warn,pingora_core::server=info".into())];
    e.spawn().await;
    e.put_domain("live.test", &[up.addr], "").await;
    let old_pid = e.pid();
    // Opened before the upgrade, so the old process accepts them: one never used, one kept alive.
    let connect = || tokio::net::TcpStream::connect(("127.0.0.1", e.http));
    let (mut fresh, mut kept) = (connect().await.unwrap(), connect().await.unwrap());
    let (status, head, _) = exchange(&mut kept, "live.test").await;
    assert_eq!(status, 200);
    assert!(head.contains("connection: keep-alive"), "{head}");

    let old = e.begin_upgrade();
    let health = e.admin_url("/v1/health");
    eventually("the new process to take the writer role", || async {
        let v: serde_json::Value = e.client.get(&health).send().await.ok()?.json().await.ok()?;
        (v["pid"] != old_pid && v["writer"] == "open").then_some(())
    })
    .await;
    e.put_domain("after.test", &[up.addr], "").await;
    // The old process follows its successor: the new domain routes on its kept-alive connection.
    let mut routed = false;
    for _ in 0..100 {
        let (status, head, _) = exchange(&mut kept, "after.test").await;
        assert!(
            !head.contains("connection: close"),
            "the old process closed too early"
        );
        if status == 200 {
            routed = true;
            break;
        }
        assert_eq!(status, 404);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(routed, "the old process never served its successor's write");

    // Pingora starts the old process's shutdown five seconds after it sent the sockets.
    crate::harness::eventually_within(
        "the old process's shutdown",
        Duration::from_secs(20),
        || {
            let started = e.log_of().contains("Graceful shutdown started!");
            async move { started.then_some(()) }
        },
    )
    .await;
    for (name, conn) in [("never used", &mut fresh), ("kept alive", &mut kept)] {
        let (status, head, body) = exchange(conn, "live.test").await;
        assert_eq!(status, 200, "{name}: {body}");
        assert!(head.contains("connection: close"), "{name}: {head}");
        assert!(body.contains("\"upstream\":\"up\""), "{name}: {body}");
    }
    e.finish_upgrade(old).await;
    assert_eq!(e.upstream_for("after.test").await.as_deref(), Some("up"));
}
