//! Nothing acknowledged is lost or wedged, checked with the real binary on a real state directory:
//! a torn journal tail at every byte offset, `kill -9` at random moments under mixed load against a
//! model of what was acknowledged, `-t` beside a running server, and file system faults injected
//! into rotations, checkpoints and appends.

use crate::certs::{Key, Leaf, Pki};
use crate::harness::{bin, Edgeward, Upstream, DEADLINE};
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

async fn hosts(e: &Edgeward) -> BTreeSet<String> {
    let (status, v) = e.api("GET", "/v1/domains", None).await;
    assert_eq!(status, 200, "{v}");
    v.as_array()
        .unwrap()
        .iter()
        .map(|d| d["host"].as_str().unwrap().to_string())
        .collect()
}

/// (a) The journal's last record cut at every byte: start never fails, the next write is kept, and a
/// restart after it finds everything acknowledged. Offsets are split over parallel lanes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_torn_tail_at_every_offset_never_stops_start_up_nor_loses_a_write() {
    const LANES: usize = 3;
    let up = Upstream::start("up").await;
    let mut lanes = Vec::new();
    for lane in 0..LANES {
        let addr = up.addr;
        lanes.push(tokio::spawn(async move {
            torn_tail_lane(lane, LANES, addr).await
        }));
    }
    let mut offsets = 0;
    for l in lanes {
        offsets += l.await.unwrap();
    }
    assert!(offsets > 100, "only {offsets} offsets tried");
}

async fn torn_tail_lane(lane: usize, lanes: usize, up: SocketAddr) -> usize {
    let mut e = Edgeward::start("").await;
    e.put_domain("kept.test", &[up], "").await;
    // The last record: a domain with two upstreams and options, as the platform writes them.
    e.put_domain(
        "last.example.test",
        &[up, "127.0.0.1:9".parse().unwrap()],
        r#", "redirect_https": true, "acme_challenges": "passthrough""#,
    )
    .await;
    e.kill();
    let log = e.state_dir().join("journal.log");
    let full = std::fs::read(&log).unwrap();
    let start = full[..full.len() - 1]
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let mut tried = 0;
    for cut in (start..full.len()).filter(|c| c % lanes == lane) {
        std::fs::write(&log, &full[..cut]).unwrap();
        e.spawn().await; // panics if the process exits during start-up
        let after = format!("w{cut}.test");
        e.put_domain(&after, &[up], "").await;
        e.restart().await;
        let found = hosts(&e).await;
        let expected: BTreeSet<String> = ["kept.test".to_string(), after].into();
        assert_eq!(found, expected, "last record cut at byte {}", cut - start);
        assert_eq!(e.upstream_for("kept.test").await.as_deref(), Some("up"));
        e.kill();
        std::fs::write(&log, &full).unwrap();
        tried += 1;
    }
    tried
}

/// What a key holds: a domain's upstream port, a token's key authorization, a certificate's serial.
type Value = Option<String>;

/// The model of acknowledged state, and the ops whose outcome a kill made unknown.
#[derive(Default)]
struct Model {
    known: BTreeMap<String, Value>,
    /// Keys of one op in flight at the kill, with the value each has if the op was applied: either
    /// all of them or none.
    in_flight: Vec<Vec<(String, Value)>>,
}

enum Op {
    PutDomain(String, u16),
    DeleteDomain(String),
    PutChallenge(String, String),
    DeleteChallenge(String),
    PutCert(String, usize),
    DeleteCert(String),
    /// Several domains at once, all with the same port.
    Batch(Vec<String>, u16),
}

struct Writer {
    id: usize,
    leaves: HashMap<String, Vec<Leaf>>,
}

impl Writer {
    fn domains(&self) -> Vec<String> {
        (0..5).map(|k| format!("d{}-{k}.test", self.id)).collect()
    }

    fn batch(&self) -> Vec<String> {
        (0..4).map(|k| format!("b{}-{k}.test", self.id)).collect()
    }

    fn tokens(&self) -> Vec<String> {
        (0..3).map(|k| format!("t{}x{k}", self.id)).collect()
    }

    fn pick(&self, rng: &mut impl Rng, model: &Model) -> Op {
        let present = |k: &str| model.known.get(k).is_some_and(Option::is_some);
        match rng.gen_range(0..10) {
            0..=2 => Op::PutDomain(pick(rng, &self.domains()), rng.gen_range(1000..9000)),
            3 => {
                let d = pick(rng, &self.domains());
                if present(&format!("domain:{d}")) {
                    Op::DeleteDomain(d)
                } else {
                    Op::PutDomain(d, 1001)
                }
            }
            4 | 5 => {
                let t = pick(rng, &self.tokens());
                Op::PutChallenge(t.clone(), format!("{t}.k{}", rng.gen_range(0..1_000_000)))
            }
            6 => {
                let t = pick(rng, &self.tokens());
                if present(&format!("challenge:{t}")) {
                    Op::DeleteChallenge(t)
                } else {
                    Op::PutChallenge(t.clone(), format!("{t}.first"))
                }
            }
            7 => {
                let h = format!("c{}.test", self.id);
                let n = rng.gen_range(0..self.leaves[&h].len());
                if rng.gen_bool(0.2) && present(&format!("cert:{h}")) {
                    Op::DeleteCert(h)
                } else {
                    Op::PutCert(h, n)
                }
            }
            _ => Op::Batch(self.batch(), rng.gen_range(1000..9000)),
        }
    }

    /// The request for `op`, and what each key holds once it is applied.
    fn request(&self, op: &Op) -> (&'static str, String, Option<String>, Vec<(String, Value)>) {
        let up = |p: u16| json!({"upstreams": [format!("127.0.0.1:{p}")]}).to_string();
        match op {
            Op::PutDomain(h, p) => (
                "PUT",
                format!("/v1/domains/{h}"),
                Some(up(*p)),
                vec![(format!("domain:{h}"), Some(p.to_string()))],
            ),
            Op::DeleteDomain(h) => (
                "DELETE",
                format!("/v1/domains/{h}"),
                None,
                vec![(format!("domain:{h}"), None)],
            ),
            Op::PutChallenge(t, ka) => (
                "PUT",
                format!("/v1/challenges/{t}"),
                Some(json!({"host": "ch.test", "key_authorization": ka}).to_string()),
                vec![(format!("challenge:{t}"), Some(ka.clone()))],
            ),
            Op::DeleteChallenge(t) => (
                "DELETE",
                format!("/v1/challenges/{t}"),
                None,
                vec![(format!("challenge:{t}"), None)],
            ),
            Op::PutCert(h, n) => {
                let leaf = &self.leaves[h][*n];
                (
                    "PUT",
                    format!("/v1/certificates/{h}"),
                    Some(leaf.upload_body()),
                    vec![(format!("cert:{h}"), Some(leaf.serial.clone()))],
                )
            }
            Op::DeleteCert(h) => (
                "DELETE",
                format!("/v1/certificates/{h}"),
                None,
                vec![(format!("cert:{h}"), None)],
            ),
            Op::Batch(hosts, p) => {
                let ops: Vec<_> = hosts
                    .iter()
                    .map(|h| json!({"op": "put_domain", "host": h, "upstreams": [format!("127.0.0.1:{p}")]}))
                    .collect();
                (
                    "POST",
                    "/v1/batch".into(),
                    Some(json!({ "ops": ops }).to_string()),
                    hosts
                        .iter()
                        .map(|h| (format!("domain:{h}"), Some(p.to_string())))
                        .collect(),
                )
            }
        }
    }
}

fn pick(rng: &mut impl Rng, from: &[String]) -> String {
    from[rng.gen_range(0..from.len())].clone()
}

/// Everything the node holds now, as model keys and values (through the admin API: memory).
async fn observed(e: &Edgeward) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let (_, domains) = e.api("GET", "/v1/domains", None).await;
    for d in domains.as_array().unwrap() {
        let port = d["upstreams"][0]
            .as_str()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap();
        out.insert(
            format!("domain:{}", d["host"].as_str().unwrap()),
            Some(port.to_string()),
        );
    }
    let (_, certs) = e.api("GET", "/v1/certificates", None).await;
    for c in certs.as_array().unwrap() {
        out.insert(
            format!("cert:{}", c["host"].as_str().unwrap()),
            Some(c["serial"].as_str().unwrap().to_string()),
        );
    }
    for w in 0..WRITERS {
        for k in 0..3 {
            let t = format!("t{w}x{k}");
            let (status, v) = e.api("GET", &format!("/v1/challenges/{t}"), None).await;
            if status == 200 {
                out.insert(
                    format!("challenge:{t}"),
                    Some(v["key_authorization"].as_str().unwrap().to_string()),
                );
            }
        }
    }
    out
}

/// The same read from the state directory's files and logs (what the next start would load).
fn stored(e: &Edgeward) -> BTreeMap<String, Value> {
    let snap = e.stored();
    let mut out = BTreeMap::new();
    for d in snap.domains {
        out.insert(
            format!("domain:{}", d.host),
            Some(d.upstreams[0].port().to_string()),
        );
    }
    for c in snap.challenges {
        out.insert(format!("challenge:{}", c.token), Some(c.key_authorization));
    }
    for c in snap.certificates {
        let cert = openssl::x509::X509::from_pem(c.chain_pem.as_bytes()).unwrap();
        let serial = cert.serial_number().to_bn().unwrap().to_hex_str().unwrap();
        out.insert(format!("cert:{}", c.host), Some(serial.to_lowercase()));
    }
    out
}

/// Check `found` against the model: every key as acknowledged, except the keys of an op in flight,
/// which all hold either their old or their new value. Then the model becomes what was found.
fn check_and_settle(model: &mut Model, found: &BTreeMap<String, Value>, cycle: usize, what: &str) {
    let get = |k: &str| found.get(k).cloned().flatten();
    let mut uncertain = BTreeSet::new();
    for op in &model.in_flight {
        let applied = op.iter().all(|(k, v)| get(k) == *v);
        let not_applied = op
            .iter()
            .all(|(k, _)| get(k) == model.known.get(k).cloned().flatten());
        assert!(
            applied || not_applied,
            "cycle {cycle} ({what}): an op in flight was applied in part: {op:?}, found {:?}",
            op.iter().map(|(k, _)| (k, get(k))).collect::<Vec<_>>()
        );
        uncertain.extend(op.iter().map(|(k, _)| k.clone()));
    }
    let keys: BTreeSet<&String> = model.known.keys().chain(found.keys()).collect();
    for k in keys {
        if uncertain.contains(k) {
            continue;
        }
        assert_eq!(
            get(k),
            model.known.get(k).cloned().flatten(),
            "cycle {cycle} ({what}): {k} differs from what was acknowledged"
        );
    }
    for (k, v) in found {
        model.known.insert(k.clone(), v.clone());
    }
    for op in std::mem::take(&mut model.in_flight) {
        for (k, _) in op {
            if !found.contains_key(&k) {
                model.known.insert(k, None);
            }
        }
    }
}

const WRITERS: usize = 4;

/// (b) `kill -9` at random moments of a mixed load, 20 times: after each restart, memory and the
/// files hold every acknowledged op, nothing never sent, and an op in flight wholly or not at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_mixed_load_loses_nothing_acknowledged() {
    let seed: u64 = std::env::var("EDGEWARD_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("kill -9 test seed: {seed} (EDGEWARD_TEST_SEED to repeat)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let pki = Pki::new();
    let writers: Vec<Arc<Writer>> = (0..WRITERS)
        .map(|id| {
            let h = format!("c{id}.test");
            let leaves = (0..3).map(|_| pki.leaf(&[&h], Key::Ecdsa)).collect();
            Arc::new(Writer {
                id,
                leaves: HashMap::from([(h, leaves)]),
            })
        })
        .collect();
    let mut e = Edgeward::new("");
    // Small logs: rotations and checkpoints happen all the time, so kills land inside them too.
    e.state_extra = "    checkpoint_bytes: 16384\n".into();
    e.spawn().await;
    let model = Arc::new(Mutex::new(Model::default()));
    let mut acknowledged = 0;
    for cycle in 0..20 {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for w in &writers {
            let (w, model, stop) = (w.clone(), model.clone(), stop.clone());
            // A client per cycle: no pooled connection to the killed process.
            let client = reqwest::Client::new();
            let url = e.admin_url("");
            let mut wrng = rand::rngs::StdRng::seed_from_u64(rng.gen());
            tasks.push(tokio::spawn(async move {
                let mut acked = 0;
                while !stop.load(Ordering::Relaxed) {
                    let op = w.pick(&mut wrng, &model.lock().unwrap());
                    let (method, path, body, effect) = w.request(&op);
                    let mut req = client
                        .request(method.parse().unwrap(), format!("{url}{path}"))
                        .bearer_auth(crate::harness::TOKEN);
                    if let Some(b) = body {
                        req = req.body(b);
                    }
                    match req.send().await {
                        Ok(r) if r.status().is_success() => {
                            let mut m = model.lock().unwrap();
                            m.known.extend(effect);
                            acked += 1;
                        }
                        Ok(r) => panic!("{method} {path}: {} {:?}", r.status(), r.text().await),
                        Err(_) => {
                            // Killed while in flight: applied or not, not known.
                            model.lock().unwrap().in_flight.push(effect);
                            return acked;
                        }
                    }
                }
                acked
            }));
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(30..400))).await;
        e.kill();
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            acknowledged += t.await.unwrap();
        }
        // What the next start loads, read from the files before it starts...
        let files = stored(&e);
        e.spawn().await;
        // ...and what the started node serves.
        let memory = observed(&e).await;
        assert_eq!(
            memory, files,
            "cycle {cycle}: memory differs from the state directory"
        );
        check_and_settle(&mut model.lock().unwrap(), &memory, cycle, "after restart");
    }
    assert!(acknowledged > 200, "only {acknowledged} ops acknowledged");
}

/// (e) `-t` beside a running server, with a seed list the state lacks: it answers at once, writes
/// nothing and does not touch the lock.
#[tokio::test]
async fn check_mode_beside_a_running_server_only_reads() {
    let up = Upstream::start("up").await;
    let mut e = Edgeward::start("").await;
    for i in 0..50 {
        e.put_domain(&format!("t{i}.test"), &[up.addr], "").await;
    }
    e.extra = format!(
        "  domains:\n    - {{host: seeded.test, upstreams: [\"{}\"]}}\n",
        up.addr
    );
    e.write_config();
    let before = listing(&e.state_dir());
    let (ok, out, took) = run_check(&e);
    assert!(ok, "{out}");
    assert!(out.contains("50 domains"), "{out}");
    eprintln!("-t beside a running server took {took:?}");
    assert_eq!(
        listing(&e.state_dir()),
        before,
        "-t changed the state directory"
    );
    assert!(
        edgeward::store::DirStore::open(e.state_dir())
            .unwrap()
            .try_lock()
            .unwrap()
            .is_none(),
        "the server still holds the lock"
    );
    assert!(
        hosts(&e).await.len() == 50,
        "the server did not apply the new seeds"
    );
    // A state file that does not parse: non-zero, naming it, still without waiting.
    let bad = e.state_dir().join("domains/broken.test.json");
    std::fs::write(&bad, b"{").unwrap();
    let (ok, out, _) = run_check(&e);
    assert!(!ok && out.contains("broken.test.json"), "{out}");
}

/// `edgeward -t` with a deadline: (success, output, time taken).
fn run_check(e: &Edgeward) -> (bool, String, Duration) {
    let started = Instant::now();
    let mut child = std::process::Command::new(bin())
        .args(["-t", "-c"])
        .arg(e.config_path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return (status.success(), text, started.elapsed());
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("-t did not return within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Every file under `dir` with its size, modification time and inode.
fn listing(dir: &std::path::Path) -> BTreeMap<String, (u64, i64, i64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let m = entry.metadata().unwrap();
            if m.is_dir() {
                stack.push(entry.path());
            }
            out.insert(
                entry.path().display().to_string(),
                (m.len(), m.mtime(), m.mtime_nsec(), m.ino()),
            );
        }
    }
    out
}

/// (f) Each failure a rotation, a checkpoint or an append can meet, injected into the real binary:
/// every write it answered 200 is there after a `kill -9` and a start without faults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_system_faults_never_fail_a_durable_write_nor_lose_one() {
    let up = Upstream::start("up").await;
    for (rule, stage) in [
        ("rename:journal.old:EIO:3", "rotate"),
        ("open:journal.log:EMFILE:3:1", "rotate"),
        ("dirsync:/state:EIO:3", "rotate"),
        ("rename:.json:ENOSPC:5", "checkpoint"),
        ("dirsync:domains:EIO:3", "checkpoint"),
        ("unlink:journal.old:EIO:2", "checkpoint"),
    ] {
        let mut e = Edgeward::new("");
        e.state_extra = "    checkpoint_bytes: 8192\n".into();
        e.env = vec![("EDGEWARD_FAULTS".into(), rule.into())];
        e.spawn().await;
        let mut written = BTreeSet::new();
        for i in 0..150 {
            let h = format!("f{i}.test");
            e.put_domain(&h, &[up.addr], "").await; // asserts 200
            written.insert(h);
        }
        // The checkpoint runs in the background at the lowest priority: wait for it to meet the fault.
        let line = format!("edgeward_state_write_errors_total{{stage=\"{stage}\"}} ");
        crate::harness::eventually(&format!("{rule} to happen"), || async {
            let metrics = e.metrics().await;
            let n = metrics
                .lines()
                .find_map(|l| l.strip_prefix(line.as_str()))?;
            (n.trim() != "0").then_some(())
        })
        .await;
        e.kill();
        e.env.clear();
        e.spawn().await;
        assert_eq!(hosts(&e).await, written, "{rule}");
    }
    // A failed append: answered as failed (507, the disk is full), absent after a restart, and the
    // writes after it work.
    let mut e = Edgeward::new("");
    e.env = vec![(
        "EDGEWARD_FAULTS".into(),
        "write:journal.log:ENOSPC:1:2".into(),
    )];
    e.spawn().await;
    e.put_domain("one.test", &[up.addr], "").await;
    e.put_domain("two.test", &[up.addr], "").await;
    let body = format!("{{\"upstreams\": [\"{}\"]}}", up.addr);
    let (status, v) = e.api("PUT", "/v1/domains/full.test", Some(&body)).await;
    assert_eq!(status, 507, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("nothing changed"),
        "{v}"
    );
    assert_eq!(e.get("full.test", "/").await.0, 404, "not live either");
    e.put_domain("three.test", &[up.addr], "").await;
    e.restart().await;
    let expected: BTreeSet<String> = ["one.test", "two.test", "three.test"]
        .map(String::from)
        .into();
    assert_eq!(hosts(&e).await, expected);
}
