//! Durability and hand-over, measured (not timed tests): `cargo bench --bench durability`.
//!
//! 1. Follow lag: a real edgeward process writes domains through its admin API; beside it, the
//!    `Follower` an upgrade's new process runs while it waits for the sockets (same code, same poll
//!    interval) applies its journal. Measured from the writer's answer to the route being in the
//!    follower's table, paced and as fast as the writer answers.
//! 2. Start-up replay: a journal of 0, 1 and 8 MiB on top of 100k domains (the difference is the
//!    replay, linear in the journal's length), the same over 100k object files, and the real binary's
//!    start on it.
//! 3. `-t` at 10k domains beside the running server that holds the lock.
//! 4. Admin writes across a real graceful upgrade (`-u` + SIGQUIT): how long the slowest waited.
//!
//! Without `--bench` (as `cargo test --benches` runs it) every part runs once, small.

use edgeward::control::handover::Follower;
use edgeward::control::Control;
use edgeward::model::{ChallengeMode, Change, Domain, TlsMode};
use edgeward::pools::Pools;
use edgeward::store::DirStore;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOKEN: &str = "bench-token";

fn full() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn domain(host: &str, port: u16) -> Domain {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    Domain {
        host: host.into(),
        upstreams: vec![addr],
        tls: TlsMode::Off,
        redirect_https: false,
        acme_challenges: ChallengeMode::Intercept,
        certificate_host: Default::default(),
        upstream_timeouts: Default::default(),
        acme_challenge: None,
    }
}

/// An edgeward process on its own ports and directory.
struct Node {
    dir: PathBuf,
    admin: u16,
    child: Option<Child>,
}

impl Node {
    fn new(dir: &Path) -> Node {
        let (http, admin) = (port(), port());
        let yaml = format!(
            "version: 1\nthreads: 1\npid_file: {d}/e.pid\nupgrade_sock: {d}/upgrade.sock\n\
             grace_period_seconds: 1\ngraceful_shutdown_timeout_seconds: 1\nedgeward:\n  http: [\"127.0.0.1:{http}\"]\n\
             \x20 admin: {{listen: \"127.0.0.1:{admin}\", token_file: \"{d}/token\"}}\n  state: {{dir: \"{d}/state\"}}\n",
            d = dir.display()
        );
        std::fs::write(dir.join("e.yaml"), yaml).unwrap();
        std::fs::write(dir.join("token"), TOKEN).unwrap();
        Node {
            dir: dir.into(),
            admin,
            child: None,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_edgeward"));
        c.args(args)
            .arg("-c")
            .arg(self.dir.join("e.yaml"))
            .env("RUST_LOG", "error")
            .env_remove("EDGEWARD_FAULTS")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }

    /// Start and wait until the admin API answers; returns how long that took.
    async fn start(&mut self) -> Duration {
        let started = Instant::now();
        self.child = Some(self.command(&[]).spawn().unwrap());
        self.wait_writer(None).await;
        started.elapsed()
    }

    /// Poll `/v1/health` until a process (other than `not`) reports that it writes.
    async fn wait_writer(&self, not: Option<u32>) {
        let client = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{}/v1/health", self.admin);
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            if let Ok(r) = client.get(&url).send().await {
                if let Ok(v) = r.json::<serde_json::Value>().await {
                    let pid = v["pid"].as_u64().map(|p| p as u32);
                    if v["writer"] == "open" && (not.is_none() || pid != not) {
                        return;
                    }
                }
            }
            assert!(Instant::now() < deadline, "edgeward did not start");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    fn put_url(&self, host: &str) -> String {
        format!("http://127.0.0.1:{}/v1/domains/{host}", self.admin)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

fn percentiles(mut v: Vec<Duration>) -> String {
    v.sort();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    format!(
        "p50 {:>8.2?}  p90 {:>8.2?}  p99 {:>8.2?}  max {:>8.2?}  (n={})",
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0),
        v.len()
    )
}

async fn put(client: &reqwest::Client, url: &str) {
    let r = client
        .put(url)
        .bearer_auth(TOKEN)
        .body(r#"{"upstreams": ["127.0.0.1:9"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// 1. From the writer's answer to the change in the follower's table.
async fn follow_lag(writes: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::new(dir.path());
    node.start().await;
    let store = DirStore::open(node.state()).unwrap();
    let (snap, tail) = store.snapshot().unwrap();
    let control = Arc::new(Control::new(
        Arc::new(store.clone()),
        Pools::new(Duration::from_secs(1)),
    ));
    control.restore(snap).unwrap();
    let following = Follower::dir(control.clone(), store, tail).spawn_thread();
    let reader = control.state().reader();
    let client = reqwest::Client::new();
    for (name, pace) in [
        ("paced, 200 writes/s", Some(Duration::from_millis(5))),
        ("back to back", None),
    ] {
        let mut lags = Vec::with_capacity(writes);
        let mut next = Instant::now();
        for i in 0..writes {
            let host = format!("lag-{}-{i}.test", lags.capacity() + name.len());
            put(&client, &node.put_url(&host)).await;
            let acked = Instant::now();
            while reader.route(&host).is_none() {
                std::thread::sleep(Duration::from_micros(50));
            }
            lags.push(acked.elapsed());
            if let Some(p) = pace {
                next += p;
                tokio::time::sleep_until(next.into()).await;
            }
        }
        println!("follow lag, {name:<20} {}", percentiles(lags));
    }
    following.stop();
}

fn host(i: usize) -> String {
    format!("shop-{i}.customer-{}.example", i % 97)
}

/// A state directory of `n` domain files and a journal of about `journal` bytes of puts on them.
fn state_dir(root: &Path, n: usize, journal: usize) {
    let domains = root.join("domains");
    std::fs::create_dir_all(&domains).unwrap();
    for i in 0..n {
        let d = domain(&host(i), 10_000);
        std::fs::write(
            domains.join(format!("{}.json", d.host)),
            serde_json::to_vec_pretty(&d).unwrap(),
        )
        .unwrap();
    }
    std::fs::write(root.join("journal.log"), updates(n, journal)).unwrap();
}

/// About `bytes` of journal records, each a put of one of `n` existing domains.
fn updates(n: usize, bytes: usize) -> Vec<u8> {
    let mut log = Vec::new();
    let mut i = 0;
    while log.len() < bytes {
        record(&mut log, domain(&host(i % n), 20_000));
        i += 1;
    }
    log
}

fn record(log: &mut Vec<u8>, d: Domain) {
    log.extend(serde_json::to_vec(&[Change::PutDomain(d)]).unwrap());
    log.push(b'\n');
}

/// Part 2, the replay: 100k domains in `journal.old` (parsed, no file per domain to read) and 0, 1 or
/// 8 MiB of updates in `journal.log`; the difference is the replay over a 100k-domain state. Then the
/// same journal over 100k object files, as a start-up reads it. Rounds interleave the directories.
fn replay(n: usize, rounds: usize) {
    let dirs: Vec<_> = [0usize, 1, 8]
        .into_iter()
        .map(|mib| {
            let dir = tempfile::tempdir().unwrap();
            journal_only(dir.path(), n, mib << 20);
            (
                format!("{n} domains in journal.old + {mib} MiB journal.log"),
                dir,
            )
        })
        .chain([0usize, 1].into_iter().map(|mib| {
            let dir = tempfile::tempdir().unwrap();
            state_dir(dir.path(), n, mib << 20);
            (format!("{n} domain files + {mib} MiB journal.log"), dir)
        }))
        .collect();
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); dirs.len()];
    for _ in 0..rounds {
        for (i, (_, dir)) in dirs.iter().enumerate() {
            let store = DirStore::open(dir.path()).unwrap();
            let t = Instant::now();
            let snap = store.read_only_snapshot().unwrap();
            times[i].push(t.elapsed());
            assert_eq!(snap.domains.len(), n);
        }
    }
    let medians: Vec<Duration> = times
        .into_iter()
        .map(|mut t| {
            t.sort();
            t[t.len() / 2]
        })
        .collect();
    for (i, (name, _)) in dirs.iter().enumerate() {
        let base = if i < 3 { medians[0] } else { medians[3] };
        let extra = if i == 0 || i == 3 {
            String::new()
        } else {
            format!("  (+{:.1?})", medians[i].saturating_sub(base))
        };
        println!(
            "read state, {name}: median {:.1?} of {rounds}{extra}",
            medians[i]
        );
    }
}

/// `n` domains put in `journal.old`, `journal` bytes of updates on them in `journal.log`.
fn journal_only(root: &Path, n: usize, journal: usize) {
    std::fs::create_dir_all(root).unwrap();
    let mut old = Vec::new();
    for i in 0..n {
        record(&mut old, domain(&host(i), 10_000));
    }
    std::fs::write(root.join("journal.old"), old).unwrap();
    std::fs::write(root.join("journal.log"), updates(n, journal)).unwrap();
}

/// 2b. The real binary: start to a writing admin API, with a 1 MiB journal over `n` domains.
async fn binary_start(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::new(dir.path());
    state_dir(&node.state(), n, 1 << 20);
    let took = node.start().await;
    println!("edgeward start, {n} domains + 1 MiB journal: {took:.1?} to a writing admin API");
}

/// 3. `-t` beside the running server.
async fn check_mode(n: usize, rounds: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::new(dir.path());
    state_dir(&node.state(), n, 0);
    node.start().await;
    let mut times: Vec<Duration> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            let out = node.command(&["-t"]).output().unwrap();
            assert!(out.status.success());
            t.elapsed()
        })
        .collect();
    times.sort();
    println!(
        "-t beside the server, {n} domains: median {:.1?}, max {:.1?} of {rounds}",
        times[times.len() / 2],
        times[times.len() - 1]
    );
}

/// 4. Admin writes across a real upgrade: two writers back to back, the slowest answers.
async fn upgrade_writes(rounds: usize) {
    for round in 0..rounds {
        let dir = tempfile::tempdir().unwrap();
        let mut node = Node::new(dir.path());
        node.start().await;
        let admin = node.admin;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..2 {
            let stop = stop.clone();
            writers.push(tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut lat = Vec::new();
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let url = format!("http://127.0.0.1:{admin}/v1/domains/w{w}-{i}.test");
                    let t = Instant::now();
                    put(&client, &url).await;
                    lat.push(t.elapsed());
                    i += 1;
                }
                lat
            }));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let old = node.child.take().unwrap();
        let old_pid = old.id();
        node.child = Some(node.command(&["-u"]).spawn().unwrap());
        // As an operator does: SIGQUIT once the new process is up, waiting for the sockets (else
        // Pingora's sender retries a second later).
        let sock = node.dir.join("upgrade.sock");
        while !sock.exists() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let sent = Instant::now();
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(old_pid as i32, libc::SIGQUIT) };
        node.wait_writer(Some(old_pid)).await;
        let writer_after = sent.elapsed();
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut all = Vec::new();
        for w in writers {
            all.extend(w.await.unwrap());
        }
        let mut old = old;
        let _ = old.kill();
        let _ = old.wait();
        println!(
            "upgrade {round}: new process writing {writer_after:.1?} after SIGQUIT; admin writes {}",
            percentiles(all)
        );
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let big = full();
    rt.block_on(async {
        follow_lag(if big { 2000 } else { 50 }).await;
        replay(if big { 100_000 } else { 2_000 }, if big { 15 } else { 1 });
        binary_start(if big { 100_000 } else { 2_000 }).await;
        check_mode(if big { 10_000 } else { 1_000 }, if big { 9 } else { 1 }).await;
        upgrade_writes(if big { 3 } else { 1 }).await;
    });
}
