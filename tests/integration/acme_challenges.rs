//! ACME beyond HTTP-01, end to end: DNS-01 against a real BIND (RFC 2136 with TSIG, CNAME delegation,
//! a refusing zone, a hook script using `nsupdate`) with Pebble validating through that BIND, and
//! TLS-ALPN-01 on a node with no HTTP listener at all.

use crate::acme::cert_state;
use crate::bind::{Bind, Zone, KEY_NAME};
use crate::certs::{connect, peer_serial};
use crate::harness::{eventually, free_port, Edgeward, Upstream};
use crate::pebble::{Pebble, PebbleOpts};
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};

const RETRY: &str = "    retry: {min_seconds: 1, max_seconds: 8}\n";

async fn until_state(e: &Edgeward, host: &str, state: &str) -> serde_json::Value {
    eventually(&format!("{host} to be {state}"), || async {
        let s = cert_state(e, host).await;
        (s["state"] == state).then_some(s)
    })
    .await
}

/// Serial and SANs served on a verified handshake for `sni`, chained to Pebble's current root.
async fn served(e: &Edgeward, p: &Pebble, sni: &str) -> (String, Vec<String>) {
    let root = p.issuing_root().await;
    let (port, sni) = (e.https, sni.to_string());
    tokio::task::spawn_blocking(move || {
        let s = connect(port, Some(&sni), &root).unwrap_or_else(|e| panic!("{sni}: {e}"));
        let names = s
            .ssl()
            .peer_certificate()
            .unwrap()
            .subject_alt_names()
            .unwrap()
            .iter()
            .filter_map(|n| n.dnsname().map(str::to_string))
            .collect();
        (peer_serial(&s), names)
    })
    .await
    .unwrap()
}

/// Edgeward (not started) and Pebble validating DNS-01 through `bind`.
async fn dns_pair(bind: &Bind, dns01: &str) -> (Edgeward, Pebble) {
    let mut e = Edgeward::new("");
    let p = Pebble::start_with(PebbleOpts {
        http_port: e.http,
        dns_server: Some(bind.port),
        ..PebbleOpts::default()
    })
    .await;
    e.extra = p.acme_yaml(&format!("{RETRY}    dns01:\n{dns01}"));
    e.spawn().await;
    (e, p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns01_rfc2136_issues_wildcards_and_delegated_names_and_reports_refusals() {
    let bind = Bind::start(&[
        Zone {
            name: "wild.test",
            updatable: true,
            records: &[],
        },
        // The platform's zone, where customers delegate their `_acme-challenge` names.
        Zone {
            name: "acme.test",
            updatable: true,
            records: &[],
        },
        // A customer's zone: the key may not touch it, only its CNAME leads to the platform's zone.
        Zone {
            name: "cust.test",
            updatable: false,
            records: &["_acme-challenge.shop IN CNAME shop.acme.test."],
        },
        Zone {
            name: "locked.test",
            updatable: false,
            records: &[],
        },
    ])
    .await;
    let dns01 = format!(
        "      rfc2136: {{server: \"127.0.0.1:{port}\", tsig_key_name: \"{KEY_NAME}\", tsig_secret_file: \"{key}\"}}\n      \
         propagation_timeout_seconds: 20\n      resolvers: [\"127.0.0.1:{port}\"]\n",
        port = bind.port,
        key = bind.key_file().display()
    );
    let (e, p) = dns_pair(&bind, &dns01).await;
    let up = Upstream::start("up").await;
    e.put_domain("*.wild.test", &[up.addr], r#", "tls": "auto""#)
        .await;
    e.put_domain(
        "shop.cust.test",
        &[up.addr],
        r#", "tls": "auto", "acme_challenge": "dns-01""#,
    )
    .await;
    e.put_domain("*.locked.test", &[up.addr], r#", "tls": "auto""#)
        .await;
    let (_, d) = e.api("GET", "/v1/domains/*.wild.test", None).await;
    assert_eq!(
        d["acme_challenge"], "dns-01",
        "the default for a wildcard: {d}"
    );

    until_state(&e, "*.wild.test", "valid").await;
    let (serial_a, names) = served(&e, &p, "a.wild.test").await;
    assert_eq!(names, ["*.wild.test"]);
    let (serial_b, _) = served(&e, &p, "b.wild.test").await;
    assert_eq!(
        serial_a, serial_b,
        "one wildcard certificate for both names"
    );
    until_state(&e, "shop.cust.test", "valid").await;
    let (_, names) = served(&e, &p, "shop.cust.test").await;
    assert_eq!(names, ["shop.cust.test"]);

    // The delegated record was written at the CNAME's target, and every record is gone again.
    let log = std::fs::read_to_string(bind.dir.join("named.log")).unwrap();
    assert!(
        log.contains("adding an RR at 'shop.acme.test' TXT"),
        "not written at the CNAME target:\n{log}"
    );
    assert!(log.contains("adding an RR at '_acme-challenge.wild.test' TXT"));
    for name in ["_acme-challenge.wild.test", "shop.acme.test"] {
        assert_eq!(bind.dig(name, "TXT").await, Vec::<String>::new(), "{name}");
    }
    assert_eq!(
        bind.dig("_acme-challenge.shop.cust.test", "CNAME").await,
        ["shop.acme.test."],
        "the customer's zone untouched"
    );

    // A zone that refuses the update: the order fails, and says why.
    let failed = until_state(&e, "*.locked.test", "failed").await;
    let err = failed["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("_acme-challenge.locked.test") && err.contains("REFUSED"),
        "{failed}"
    );
    assert!(
        err.contains(KEY_NAME) && err.contains("allow-update"),
        "{failed}"
    );
    assert!(!err.contains(&bind.secret), "the secret never shows");
    assert!(!e.log_of().contains(&bind.secret), "nor in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns01_hook_command_writes_and_removes_the_record() {
    let bind = Bind::start(&[Zone {
        name: "hook.test",
        updatable: true,
        records: &[],
    }])
    .await;
    let dns01 = format!(
        "      hook: {{command: \"{}\"}}\n      propagation_timeout_seconds: 20\n      resolvers: [\"127.0.0.1:{}\"]\n",
        bind.hook_script().display(),
        bind.port
    );
    let (e, p) = dns_pair(&bind, &dns01).await;
    let up = Upstream::start("up").await;
    e.put_domain("*.hook.test", &[up.addr], r#", "tls": "auto""#)
        .await;
    until_state(&e, "*.hook.test", "valid").await;
    let (_, names) = served(&e, &p, "www.hook.test").await;
    assert_eq!(names, ["*.hook.test"]);
    assert_eq!(
        bind.hook_calls(),
        [
            "present _acme-challenge.hook.test *.hook.test",
            "cleanup _acme-challenge.hook.test *.hook.test"
        ]
    );
    assert_eq!(
        bind.dig("_acme-challenge.hook.test", "TXT").await,
        Vec::<String>::new()
    );
}

/// A handshake offering only `acme-tls/1`: Ok(serial of what was served) or the handshake error.
fn acme_tls_handshake(port: u16, sni: &str) -> Result<String, String> {
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_verify(SslVerifyMode::NONE);
    b.set_alpn_protos(b"\x0aacme-tls/1").unwrap();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    let s = b
        .build()
        .configure()
        .unwrap()
        .verify_hostname(false)
        .connect(sni, tcp)
        .map_err(|e| e.to_string())?;
    assert_eq!(s.ssl().selected_alpn_protocol(), Some(&b"acme-tls/1"[..]));
    Ok(peer_serial(&s))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn01_order_on_a_node_without_http_listener() {
    let mut e = Edgeward::new("");
    e.no_http = true;
    let p = Pebble::start_with(PebbleOpts {
        // Nothing listens there: HTTP-01 could not succeed.
        http_port: free_port(),
        tls_port: Some(e.https),
        ..PebbleOpts::default()
    })
    .await;
    e.extra = p.acme_yaml(RETRY);
    e.spawn().await;
    let up = Upstream::start("up").await;

    // What this node cannot do is refused, naming the field.
    let bad = [
        (
            r#"{"upstreams": ["127.0.0.1:1"], "tls": "auto"}"#,
            "*.w.test",
            "tls",
        ),
        (
            r#"{"upstreams": ["127.0.0.1:1"], "tls": "auto", "acme_challenge": "dns-01"}"#,
            "a.test",
            "acme_challenge",
        ),
        (
            r#"{"upstreams": ["127.0.0.1:1"], "tls": "auto", "acme_challenge": "http-01"}"#,
            "*.w.test",
            "acme_challenge",
        ),
        (
            r#"{"upstreams": ["127.0.0.1:1"], "tls": "auto", "acme_challenge": "tls-alpn-01"}"#,
            "*.w.test",
            "acme_challenge",
        ),
    ];
    for (body, host, field) in bad {
        let (status, err) = e
            .api("PUT", &format!("/v1/domains/{host}"), Some(body))
            .await;
        assert_eq!(
            (status, err["field"].as_str()),
            (400, Some(field)),
            "{body}: {err}"
        );
    }
    let (status, err) = e
        .api(
            "PUT",
            "/v1/domains/a.test",
            Some(r#"{"upstreams": ["127.0.0.1:1"], "acme_challenge": "tls-alpn-02"}"#),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    assert!(err.to_string().contains("acme_challenge"), "{err}");
    assert_eq!(
        e.api("GET", "/v1/domains", None)
            .await
            .1
            .as_array()
            .map(Vec::len),
        Some(0)
    );

    e.put_domain(
        "alpn.test",
        &[up.addr],
        r#", "tls": "auto", "acme_challenge": "tls-alpn-01""#,
    )
    .await;
    until_state(&e, "alpn.test", "valid").await;
    let (serial, names) = served(&e, &p, "alpn.test").await;
    assert_eq!(names, ["alpn.test"]);
    // The challenge is gone: `acme-tls/1` now gets no certificate at all, never the site's.
    let port = e.https;
    let r = tokio::task::spawn_blocking(move || acme_tls_handshake(port, "alpn.test"))
        .await
        .unwrap();
    assert!(r.is_err(), "served {r:?} (site serial {serial})");
    assert_eq!(e.stored().challenges.len(), 0);
    let metrics = e.metrics().await;
    assert!(
        metrics.contains("edgeward_tls_handshakes_total{result=\"no_challenge\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_the_directory_does_not_list_is_refused_at_start_up() {
    let mut e = Edgeward::new("");
    let p = Pebble::start(e.http, None).await;
    // Pebble 2.4 lists no profiles at all.
    e.extra = p.acme_yaml("    profile: tlsserver\n");
    e.write_config();
    std::fs::write(e.dir.join("admin.token"), crate::harness::TOKEN).unwrap();
    let mut child = std::process::Command::new(crate::harness::bin())
        .arg("-c")
        .arg(e.config_path())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = eventually("edgeward to refuse to start", || {
        let s = child.try_wait().unwrap();
        async move { s }
    })
    .await;
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(
        err.contains("edgeward.acme.profile") && err.contains("offers no profiles"),
        "{err}"
    );
}

/// A listener that accepts and never answers: a validation sent there waits.
async fn black_hole(addr: &str) -> tokio::task::JoinHandle<()> {
    let l = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_cut_off_by_its_timeout_removes_its_challenge() {
    let mut e = Edgeward::new("");
    let p = Pebble::start(e.http, None).await;
    e.extra = p.acme_yaml(&format!("{RETRY}    order_timeout_seconds: 3\n"));
    e.spawn().await;
    let up = Upstream::start("up").await;
    // Pebble's validation of stuck.test waits on a black hole, so the order is still open when the CA
    // stops answering altogether.
    p.point("stuck.test", "127.0.0.3").await;
    let _hole = black_hole(&format!("127.0.0.3:{}", e.http)).await;
    e.put_domain("stuck.test", &[up.addr], r#", "tls": "auto""#)
        .await;
    eventually("the order to register its token", || async {
        let (_, c) = e.api("GET", "/v1/challenges", None).await;
        (c.as_array().map(Vec::len) == Some(1)).then_some(())
    })
    .await;
    p.freeze();
    let failed = until_state(&e, "stuck.test", "failed").await;
    p.thaw();
    assert!(
        failed["last_error"]
            .as_str()
            .is_some_and(|m| m.contains("did not finish within 6 s")),
        "{failed}"
    );
    let (_, c) = e.api("GET", "/v1/challenges", None).await;
    assert_eq!(c, serde_json::json!([]), "the token went with the order");
    assert_eq!(e.stored().challenges.len(), 0);
}
