//! Fleet mode: edgeward nodes sharing one etcd (Debian `etcd-server`) started by the test on loopback.
//! First increment of the fleet issue: propagation through the watch, and etcd outages.

pub use crate::etcd::Etcd;
use crate::harness::{eventually, free_port, Edgeward, Upstream};
use std::process::{Command, Stdio};

/// A node on every member of `etcd`.
pub async fn node(etcd: &Etcd) -> Edgeward {
    node_with_env(etcd, &[]).await
}

/// `node`, its process started with these environment variables too (e.g. `RUST_LOG`).
pub async fn node_with_env(etcd: &Etcd, env: &[(&str, &str)]) -> Edgeward {
    let mut e = Edgeward::new("");
    e.state_extra = etcd.state_yaml();
    e.env
        .extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    e.spawn().await;
    e
}

/// Node B, the one Pebble's validation reaches, and node A, the only one running the ACME manager.
pub async fn acme_nodes(etcd: &Etcd) -> (crate::pebble::Pebble, Edgeward, Edgeward) {
    let mut b = Edgeward::new("");
    b.state_extra = etcd.state_yaml();
    let pebble = crate::pebble::Pebble::start(b.http, None).await;
    b.spawn().await;
    let mut a = Edgeward::new(&pebble.acme_yaml("    retry: {min_seconds: 1, max_seconds: 8}\n"));
    a.state_extra = etcd.state_yaml();
    a.spawn().await;
    (pebble, a, b)
}

/// The serial of `host`'s certificate once node `n` lists it.
pub async fn certificate_serial(n: &Edgeward, host: &str) -> String {
    eventually("node A to obtain the certificate", || async {
        let (s, v) = n
            .api("GET", &format!("/v1/certificates/{host}"), None)
            .await;
        (s == 200).then(|| v["serial"].as_str().unwrap().to_string())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_on_one_node_reach_the_others_and_survive_an_etcd_outage() {
    let up = Upstream::start("up").await;
    let mut etcd = Etcd::cluster(3).await;
    let nodes = [node(&etcd).await, node(&etcd).await, node(&etcd).await];

    nodes[0].put_domain("fleet.test", &[up.addr], "").await;
    for n in &nodes {
        let who = eventually("the domain on every node", || async {
            n.upstream_for("fleet.test").await
        })
        .await;
        assert_eq!(who, "up");
    }
    // A challenge put on node 2 is answered by node 3.
    let body = r#"{"host": "fleet.test", "key_authorization": "ft.k"}"#;
    assert_eq!(
        nodes[1].api("PUT", "/v1/challenges/ft", Some(body)).await.0,
        200
    );
    let answer = eventually("the token on node 3", || async {
        let (s, b) = nodes[2]
            .get("fleet.test", "/.well-known/acme-challenge/ft")
            .await;
        (s == 200).then_some(b)
    })
    .await;
    assert_eq!(answer, "ft.k");
    // A delete on node 3 reaches node 1.
    assert_eq!(
        nodes[2]
            .api("DELETE", "/v1/domains/fleet.test", None)
            .await
            .0,
        204
    );
    eventually("the delete on node 1", || async {
        (nodes[0].get("fleet.test", "/").await.0 == 404).then_some(())
    })
    .await;

    // etcd down: nodes keep serving what they hold; writes fail with 503 and change nothing.
    nodes[0].put_domain("kept.test", &[up.addr], "").await;
    for n in &nodes {
        eventually("kept.test everywhere", || async {
            n.upstream_for("kept.test").await
        })
        .await;
    }
    etcd.stop();
    let (status, v) = nodes[1]
        .api(
            "PUT",
            "/v1/domains/lost.test",
            Some(&format!("{{\"upstreams\": [\"{}\"]}}", up.addr)),
        )
        .await;
    assert_eq!(status, 503, "{v}");
    assert!(v["error"].as_str().unwrap().contains("etcd"), "{v}");
    for n in &nodes {
        assert_eq!(n.upstream_for("kept.test").await.as_deref(), Some("up"));
        assert_eq!(n.get("lost.test", "/").await.0, 404, "no local-only write");
    }

    // etcd back: writes work again and reach every node.
    etcd.restart().await;
    eventually("writes to work again", || async {
        let body = format!("{{\"upstreams\": [\"{}\"]}}", up.addr);
        (nodes[1]
            .api("PUT", "/v1/domains/after.test", Some(&body))
            .await
            .0
            == 200)
            .then_some(())
    })
    .await;
    for n in &nodes {
        eventually("after.test everywhere", || async {
            n.upstream_for("after.test").await
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_member_cluster_propagation_and_a_member_down() {
    let up = Upstream::start("up").await;
    let mut etcd = Etcd::cluster(3).await;
    let nodes = [node(&etcd).await, node(&etcd).await, node(&etcd).await];
    let body = format!("{{\"upstreams\": [\"{}\"]}}", up.addr);

    // Propagation latency: a change on node 1 until node 2's admin API has it, over 1000 changes.
    let mut lat = Vec::with_capacity(1000);
    for i in 0..1000 {
        let host = format!("p{i}.fleet.test");
        let t0 = std::time::Instant::now();
        assert_eq!(
            nodes[0]
                .api("PUT", &format!("/v1/domains/{host}"), Some(&body))
                .await
                .0,
            200
        );
        let path = format!("/v1/domains/{host}");
        eventually("propagation", || async {
            (nodes[1].api("GET", &path, None).await.0 == 200).then_some(())
        })
        .await;
        lat.push(t0.elapsed());
    }
    lat.sort();
    let (p50, p99) = (lat[500], lat[990]);
    eprintln!("fleet propagation over 1000 changes (debug build, write + watch + poll): p50 {p50:?}, p99 {p99:?}");
    let (_, all) = nodes[2].api("GET", "/v1/domains", None).await;
    assert_eq!(
        all.as_array().unwrap().len(),
        1000,
        "node 3 has every change"
    );

    // One member down changes nothing: writes work and reach every node.
    etcd.stop_member(0);
    eventually("a write with a member down", || async {
        (nodes[2]
            .api("PUT", "/v1/domains/onedown.fleet.test", Some(&body))
            .await
            .0
            == 200)
            .then_some(())
    })
    .await;
    for n in &nodes {
        eventually("onedown everywhere", || async {
            n.upstream_for("onedown.fleet.test").await
        })
        .await;
    }

    // All members down: every node keeps serving, writes answer 503; all back: resync, writes work.
    etcd.stop();
    let (status, _) = nodes[0]
        .api("PUT", "/v1/domains/nowhere.fleet.test", Some(&body))
        .await;
    assert_eq!(status, 503);
    for n in &nodes {
        assert_eq!(
            n.upstream_for("onedown.fleet.test").await.as_deref(),
            Some("up")
        );
        assert_eq!(
            n.upstream_for("p999.fleet.test").await.as_deref(),
            Some("up")
        );
    }
    etcd.restart().await;
    eventually("writes after the cluster is back", || async {
        (nodes[1]
            .api("PUT", "/v1/domains/back.fleet.test", Some(&body))
            .await
            .0
            == 200)
            .then_some(())
    })
    .await;
    for n in &nodes {
        eventually("back everywhere", || async {
            n.upstream_for("back.fleet.test").await
        })
        .await;
        assert_eq!(n.get("nowhere.fleet.test", "/").await.0, 404);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_by_one_node_is_validated_through_another_and_served_by_all() {
    let up = Upstream::start("up").await;
    let etcd = Etcd::cluster(3).await;
    let (pebble, a, b) = acme_nodes(&etcd).await;
    let c = node(&etcd).await;

    b.put_domain("shared.test", &[up.addr], r#", "tls": "auto""#)
        .await;
    let serial = certificate_serial(&c, "shared.test").await;
    let hits = b.metrics().await;
    assert!(
        !hits.contains("edgeward_acme_challenge_requests_total{result=\"hit\"} 0"),
        "B answered: {hits}"
    );
    let root = pebble.issuing_root().await;
    for n in [&a, &b, &c] {
        let (port, root) = (n.https, root.clone());
        let served = tokio::task::spawn_blocking(move || {
            crate::certs::connect(port, Some("shared.test"), &root)
                .map(|s| crate::certs::peer_serial(&s))
        })
        .await
        .unwrap();
        assert_eq!(served, Ok(serial.clone()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_due_for_the_same_certificate_place_one_order() {
    let up = Upstream::start("up").await;
    let etcd = Etcd::cluster(3).await;
    let mut a = Edgeward::new("");
    let pebble = crate::pebble::Pebble::start(a.http, None).await;
    let acme = pebble.acme_yaml("    retry: {min_seconds: 1, max_seconds: 8}\n");
    a.extra = acme.clone();
    a.state_extra = etcd.state_yaml();
    a.spawn().await;
    let mut b = Edgeward::new(&acme);
    b.state_extra = etcd.state_yaml();
    b.spawn().await;

    // Several domains at once: both managers see every one of them due at the same moment.
    for i in 0..4 {
        a.put_domain(&format!("once{i}.test"), &[up.addr], r#", "tls": "auto""#)
            .await;
    }
    for i in 0..4 {
        let path = format!("/v1/certificates/once{i}.test");
        eventually("every certificate", || async {
            (b.api("GET", &path, None).await.0 == 200).then_some(())
        })
        .await;
    }
    let ok = |m: &str| -> u64 {
        m.lines()
            .find(|l| l.starts_with("edgeward_acme_orders_total{result=\"ok\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let total = ok(&a.metrics().await) + ok(&b.metrics().await);
    assert_eq!(total, 4, "one order per certificate across the fleet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_keys_are_encrypted_in_etcd_when_a_key_file_is_set() {
    let etcd = Etcd::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("etcd.key");
    std::fs::write(
        &key_file,
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
    )
    .unwrap();
    let state = etcd.state_yaml().replace(
        "prefix:",
        &format!("encryption_key_file: \"{}\", prefix:", key_file.display()),
    );
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let mut n = Edgeward::new("");
        n.state_extra = state.clone();
        n.spawn().await;
        nodes.push(n);
    }
    let pki = std::sync::Arc::new(crate::certs::Pki::new());
    let leaf = pki.leaf(&["sealed.test"], crate::certs::Key::Ecdsa);
    let up: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    nodes[0]
        .put_domain("sealed.test", &[up], r#", "tls": "manual""#)
        .await;
    nodes[0].put_certificate("sealed.test", &leaf).await;
    let (port, root) = (nodes[1].https, pki.root.clone());
    let serial = eventually("node 2 to serve the certificate", || {
        let root = root.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                crate::certs::connect(port, Some("sealed.test"), &root)
                    .ok()
                    .map(|s| crate::certs::peer_serial(&s))
            })
            .await
            .unwrap()
        }
    })
    .await;
    assert_eq!(serial, leaf.serial);
    // What etcd holds: the key only in sealed form.
    let key = openssl::base64::encode_block(b"/edgeward-test/certs/sealed.test");
    let raw: serde_json::Value = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/v3/kv/range",
            etcd.members[0].0
        ))
        .body(serde_json::json!({ "key": key }).to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let value = openssl::base64::decode_block(raw["kvs"][0]["value"].as_str().unwrap()).unwrap();
    let value = String::from_utf8(value).unwrap();
    assert!(
        value.contains("enc:v1:") && !value.contains("PRIVATE KEY"),
        "{value}"
    );
    assert!(
        value.contains("BEGIN CERTIFICATE"),
        "the certificate itself stays readable"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_lock_holder_mid_order_lets_another_node_finish() {
    let up = Upstream::start("up").await;
    let etcd = Etcd::cluster(3).await;
    let mut b = Edgeward::new("");
    let pebble = crate::pebble::Pebble::start(b.http, None).await;
    let acme = pebble
        .acme_yaml("    retry: {min_seconds: 1, max_seconds: 4}\n    order_timeout_seconds: 10\n");
    b.extra = acme.clone();
    b.state_extra = etcd.state_yaml();
    let mut a = Edgeward::new(&acme);
    a.state_extra = etcd.state_yaml();
    a.spawn().await;

    // Pebble's validation of slow.test goes to a listener that accepts and never answers: A's order
    // hangs mid-way, holding the lock.
    let hole = std::net::TcpListener::bind(("127.0.0.2", b.http)).unwrap();
    hole.set_nonblocking(true).unwrap();
    pebble.misdirect("slow.test").await;
    a.put_domain("slow.test", &[up.addr], r#", "tls": "auto""#)
        .await;
    let mut held = Vec::new();
    eventually("Pebble to be validating through the black hole", || {
        if let Ok((s, _)) = hole.accept() {
            held.push(s);
        }
        let n = held.len();
        async move { (n > 0).then_some(()) }
    })
    .await;

    a.kill();
    drop(held);
    drop(hole);
    pebble.point("slow.test", "127.0.0.1").await;
    b.spawn().await;
    let serial = crate::harness::eventually_within(
        "B to take over once A's lease expires",
        std::time::Duration::from_secs(60),
        || async {
            let (s, v) = b.api("GET", "/v1/certificates/slow.test", None).await;
            (s == 200).then(|| v["serial"].as_str().unwrap().to_string())
        },
    )
    .await;
    let root = pebble.issuing_root().await;
    let port = b.https;
    let served = tokio::task::spawn_blocking(move || {
        crate::certs::connect(port, Some("slow.test"), &root).map(|s| crate::certs::peer_serial(&s))
    })
    .await
    .unwrap();
    assert_eq!(served, Ok(serial));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_over_mutual_tls() {
    let up = Upstream::start("up").await;
    let pki = crate::certs::Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = pki.leaf(&["localhost"], crate::certs::Key::Ecdsa);
    let client = pki.leaf(&["edgeward-node"], crate::certs::Key::Ecdsa);
    for (name, body) in [
        ("ca.pem", String::from_utf8(pki.root_pem()).unwrap()),
        ("server.pem", server.chain_pem.clone()),
        ("server.key", server.key_pem.clone()),
        ("client.pem", client.chain_pem.clone()),
        ("client.key", client.key_pem.clone()),
    ] {
        std::fs::write(d.join(name), body).unwrap();
    }
    let (c, p) = (free_port(), free_port());
    let mut etcd = Command::new("etcd")
        .args(["--name", "tls", "--data-dir"])
        .arg(d.join("data"))
        .args(["--listen-client-urls", &format!("https://127.0.0.1:{c}")])
        .args(["--advertise-client-urls", &format!("https://localhost:{c}")])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{p}")])
        .args([
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{p}"),
        ])
        .args(["--initial-cluster", &format!("tls=http://127.0.0.1:{p}")])
        .arg("--cert-file")
        .arg(d.join("server.pem"))
        .arg("--key-file")
        .arg(d.join("server.key"))
        .arg("--trusted-ca-file")
        .arg(d.join("ca.pem"))
        .arg("--client-cert-auth")
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(d.join("etcd.log")).unwrap(),
        ))
        .spawn()
        .expect("etcd");
    let state = format!(
        "    etcd:\n      endpoints: [\"https://localhost:{c}\"]\n      prefix: \"/edgeward-tls\"\n      tls: {{ca: \"{0}/ca.pem\", cert: \"{0}/client.pem\", key: \"{0}/client.key\"}}\n",
        d.display()
    );
    let mut e = Edgeward::new("");
    e.state_extra = state;
    // etcd takes a moment to serve TLS: start edgeward until it connects.
    let started = std::time::Instant::now();
    loop {
        e.write_config();
        let check = Command::new(crate::harness::bin())
            .args(["-t", "-c"])
            .arg(e.config_path())
            .output()
            .unwrap();
        if check.status.success() {
            break;
        }
        assert!(
            started.elapsed() < crate::harness::DEADLINE,
            "{}",
            String::from_utf8_lossy(&check.stderr)
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    e.spawn().await;
    e.put_domain("tls-etcd.test", &[up.addr], "").await;
    assert_eq!(e.upstream_for("tls-etcd.test").await.as_deref(), Some("up"));
    let _ = etcd.kill();
    let _ = etcd.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_through_finds_a_token_in_etcd_with_its_lease() {
    use edgeward::model::Challenge;
    use edgeward::store::{etcd::EtcdConfig, etcd::EtcdStore, Change, Store};
    let etcd = Etcd::start().await;
    let store = EtcdStore::connect(&EtcdConfig::new(
        vec![format!("http://127.0.0.1:{}", etcd.members[0].0)],
        "/edgeward-rt",
    ))
    .await
    .unwrap();
    let now = edgeward::control::unix_now();
    let c = Challenge {
        token: "rt-token".into(),
        host: "rt.test".into(),
        key_authorization: "rt-token.k".into(),
        expires_at: now + 2,
        kind: edgeward::model::AcmeChallenge::Http01,
    };
    store
        .apply(&[Change::PutChallenge(c.clone())])
        .await
        .unwrap();
    assert_eq!(store.fetch_challenge("rt-token").await, Some(c));
    assert_eq!(store.fetch_challenge("other").await, None);
    // The lease makes etcd itself drop the token at expiry.
    eventually("etcd to expire the token", || async {
        store
            .fetch_challenge("rt-token")
            .await
            .is_none()
            .then_some(())
    })
    .await;
}

/// A batch is one etcd transaction: one that fits is applied whole on every node, a larger one is
/// refused naming `ops` and the limit, and nothing of it is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_one_transaction_or_refused() {
    let etcd = Etcd::start().await;
    let (a, b) = (node(&etcd).await, node(&etcd).await);
    let batch = |prefix: &str, n: usize| {
        let ops: Vec<_> = (0..n)
            .map(|i| serde_json::json!({"op": "put_domain", "host": format!("{prefix}{i}.test"), "upstreams": ["127.0.0.1:9"]}))
            .collect();
        serde_json::json!({ "ops": ops }).to_string()
    };
    // etcd's 128 operations per transaction, one of them the write marker.
    let (status, v) = a.api("POST", "/v1/batch", Some(&batch("big", 128))).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["field"], "ops", "{v}");
    assert!(v["error"].as_str().unwrap().contains("127"), "{v}");
    let (status, v) = a.api("POST", "/v1/batch", Some(&batch("fit", 127))).await;
    assert_eq!((status, v["applied"].as_u64()), (200, Some(127)), "{v}");
    eventually("the batch on the other node", || async {
        (count(&b, "fit").await == 127).then_some(())
    })
    .await;
    assert_eq!(count(&a, "big").await, 0);
    assert_eq!(count(&b, "big").await, 0);
}

/// Domains `e` serves whose host starts with `prefix`.
async fn count(e: &crate::harness::Edgeward, prefix: &str) -> usize {
    let (_, v) = e.api("GET", "/v1/domains", None).await;
    v.as_array()
        .unwrap()
        .iter()
        .filter(|d| d["host"].as_str().unwrap().starts_with(prefix))
        .count()
}

/// Challenge misses cost etcd reads only for routed hosts, once per token for a while, and at most
/// 16 at a time: with etcd frozen, the 17th miss is answered 404 at once without touching it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn challenge_misses_reach_etcd_only_within_bounds() {
    let etcd = Etcd::start().await;
    let e = node(&etcd).await;
    let up: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    e.put_domain("routed.test", &[up], "").await;
    let count = |text: &str, result: &str| -> u64 {
        let line = format!("edgeward_acme_challenge_read_through_total{{result=\"{result}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let path = |t: &str| format!("/.well-known/acme-challenge/{t}");
    // A host this node does not route: 404 with no store read.
    for i in 0..20 {
        assert_eq!(
            e.get("unrouted.test", &path(&format!("tok{i}"))).await.0,
            404
        );
    }
    let text = e.metrics().await;
    for r in ["found", "missing", "cached_miss", "busy"] {
        assert_eq!(count(&text, r), 0, "{r}: {text}");
    }
    // A routed host: read once, then remembered as missing.
    assert_eq!(e.get("routed.test", &path("again")).await.0, 404);
    assert_eq!(e.get("routed.test", &path("again")).await.0, 404);
    let text = e.metrics().await;
    assert_eq!(
        (count(&text, "missing"), count(&text, "cached_miss")),
        (1, 1),
        "{text}"
    );

    // etcd silent: 16 lookups wait for it, the next ones are answered at once.
    etcd.freeze_member(0, true);
    let mut waiting = Vec::new();
    for i in 0..16 {
        let (port, p) = (e.http, path(&format!("slow{i}")));
        waiting.push(tokio::spawn(async move {
            reqwest::Client::new()
                .get(format!("http://127.0.0.1:{port}{p}"))
                .header("host", "routed.test")
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    eventually("16 lookups in flight", || async {
        let text = e.metrics().await;
        text.contains("edgeward_acme_challenge_read_through_in_flight 16")
            .then_some(())
    })
    .await;
    let t0 = std::time::Instant::now();
    assert_eq!(e.get("routed.test", &path("one-more")).await.0, 404);
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(1),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(count(&e.metrics().await, "busy"), 1);
    etcd.freeze_member(0, false);
    for w in waiting {
        assert_eq!(w.await.unwrap().unwrap(), 404);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_alpn_order_by_one_node_is_validated_through_another() {
    let up = Upstream::start("up").await;
    let etcd = Etcd::cluster(1).await;
    let mut b = Edgeward::new("");
    b.state_extra = etcd.state_yaml();
    let pebble = crate::pebble::Pebble::start_with(crate::pebble::PebbleOpts {
        http_port: free_port(), // nothing there: only TLS-ALPN-01 can succeed
        tls_port: Some(b.https),
        ..Default::default()
    })
    .await;
    b.spawn().await;
    let mut a = Edgeward::new(&pebble.acme_yaml("    retry: {min_seconds: 1, max_seconds: 4}\n"));
    a.state_extra = etcd.state_yaml();
    a.spawn().await;
    // B has no `acme` section: as a fleet node it accepts the challenge the issuing nodes use.
    b.put_domain(
        "alpn-fleet.test",
        &[up.addr],
        r#", "tls": "auto", "acme_challenge": "tls-alpn-01""#,
    )
    .await;
    let serial = certificate_serial(&b, "alpn-fleet.test").await;
    let metrics = b.metrics().await;
    assert!(
        !metrics.contains("edgeward_tls_handshakes_total{result=\"ok\"} 0"),
        "B completed Pebble's acme-tls/1 handshake: {metrics}"
    );
    let (_, order) = a.api("GET", "/v1/domains/alpn-fleet.test", None).await;
    assert_eq!(order["certificate"]["state"], "valid", "{order}");
    let root = pebble.issuing_root().await;
    let port = b.https;
    let served = tokio::task::spawn_blocking(move || {
        crate::certs::connect(port, Some("alpn-fleet.test"), &root)
            .map(|s| crate::certs::peer_serial(&s))
    })
    .await
    .unwrap();
    assert_eq!(served, Ok(serial));
    assert_eq!(
        b.api("GET", "/v1/challenges", None).await.1,
        serde_json::json!([])
    );
}
