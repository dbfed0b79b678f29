//! ACME end to end against a real Pebble: issue, serve, renew under a live connection, restart without
//! re-ordering, CA outage with backoff, and a challenge that cannot be validated.

use crate::certs::{connect, get, peer_serial};
use crate::harness::{eventually, eventually_within, Edgeward, Upstream};
use crate::pebble::Pebble;
use std::time::Duration;

const RETRY: &str = "    retry: {min_seconds: 1, max_seconds: 8}\n";

/// Edgeward and Pebble wired to each other; `acme_extra` goes under `edgeward.acme`.
async fn pair(validity: Option<u64>, acme_extra: &str) -> (Edgeward, Pebble) {
    let mut e = Edgeward::new("");
    let p = Pebble::start(e.http, validity).await;
    e.extra = p.acme_yaml(acme_extra);
    e.spawn().await;
    (e, p)
}

pub async fn cert_state(e: &Edgeward, host: &str) -> serde_json::Value {
    e.api("GET", &format!("/v1/domains/{host}"), None).await.1["certificate"].clone()
}

/// Serial served on a new, verified handshake for `host`, chained to Pebble's current root.
async fn served_serial(e: &Edgeward, p: &Pebble, host: &str) -> Result<String, String> {
    let root = p.issuing_root().await;
    let (port, host) = (e.https, host.to_string());
    tokio::task::spawn_blocking(move || connect(port, Some(&host), &root).map(|s| peer_serial(&s)))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_domain_is_issued_served_and_not_reordered_after_restart() {
    let up = Upstream::start("up").await;
    let (mut e, p) = pair(None, RETRY).await;
    e.put_domain("auto.test", &[up.addr], r#", "tls": "auto""#)
        .await;
    let status = eventually("the certificate to be issued", || async {
        let s = cert_state(&e, "auto.test").await;
        (s["state"] == "valid").then_some(s)
    })
    .await;
    assert!(
        status["not_after"].is_string() && status["renew_at"].is_string(),
        "{status}"
    );
    assert!(status["last_error"].is_null(), "{status}");
    let serial = served_serial(&e, &p, "auto.test")
        .await
        .expect("chains to Pebble's root");
    let (_, info) = e.api("GET", "/v1/certificates/auto.test", None).await;
    assert_eq!(
        (info["serial"].as_str(), info["source"].as_str()),
        (Some(serial.as_str()), Some("acme"))
    );
    // The token was removed when the order ended.
    let stored = e.stored();
    assert_eq!(stored.challenges.len(), 0);
    let account = serde_json::to_string(&stored.acme_account.expect("account stored")).unwrap();

    e.restart().await;
    eventually("the manager to look at the domain", || async {
        (cert_state(&e, "auto.test").await["state"] == "valid").then_some(())
    })
    .await;
    let metrics = e.metrics().await;
    assert!(
        metrics.contains("edgeward_acme_orders_total{result=\"ok\"} 0"),
        "{metrics}"
    );
    assert_eq!(served_serial(&e, &p, "auto.test").await, Ok(serial));
    let stored = e.stored();
    assert_eq!(
        serde_json::to_string(&stored.acme_account.expect("account stored")).unwrap(),
        account,
        "account reused"
    );
    let budget = serde_json::to_value(stored.acme_budget.expect("budget stored")).unwrap();
    assert_eq!(
        budget["placed"].as_array().unwrap().len(),
        1,
        "one order placed, persisted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_swaps_the_certificate_under_a_live_connection() {
    let up = Upstream::start("up").await;
    let (e, p) = pair(
        Some(20),
        &format!("{RETRY}    renew_before_fraction: 0.5\n"),
    )
    .await;
    e.put_domain("renew.test", &[up.addr], r#", "tls": "auto""#)
        .await;
    eventually("the first certificate", || async {
        (cert_state(&e, "renew.test").await["state"] == "valid").then_some(())
    })
    .await;
    let first = served_serial(&e, &p, "renew.test").await.unwrap();
    let root = p.issuing_root().await;
    let port = e.https;
    let mut live =
        tokio::task::spawn_blocking(move || connect(port, Some("renew.test"), &root).unwrap())
            .await
            .unwrap();
    assert_eq!(peer_serial(&live), first);
    // Keep the connection busy while waiting for the renewal; every request must succeed.
    let renewed = eventually_within("the renewal", Duration::from_secs(40), || {
        let conn = &mut live;
        let (status, _) = get(conn, "renew.test", "/keepalive");
        assert_eq!(status, 200, "the pre-swap connection keeps working");
        async {
            let (_, info) = e.api("GET", "/v1/certificates/renew.test", None).await;
            let s = info["serial"].as_str().unwrap_or_default().to_string();
            (s != first).then_some(s)
        }
    })
    .await;
    assert_eq!(get(&mut live, "renew.test", "/after").0, 200);
    assert_eq!(peer_serial(&live), first, "same connection, same handshake");
    assert_eq!(served_serial(&e, &p, "renew.test").await, Ok(renewed));
    let metrics = e.metrics().await;
    assert!(
        !metrics.contains("edgeward_acme_renewals_total 0"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unvalidatable_domain_fails_with_the_acme_error() {
    let up = Upstream::start("up").await;
    let (e, p) = pair(None, RETRY).await;
    p.misdirect("nowhere.test").await;
    e.put_domain("nowhere.test", &[up.addr], r#", "tls": "auto""#)
        .await;
    e.put_domain("fine.test", &[up.addr], r#", "tls": "auto""#)
        .await;
    let s = eventually("the order to fail", || async {
        let s = cert_state(&e, "nowhere.test").await;
        (s["state"] == "failed").then_some(s)
    })
    .await;
    let err = s["last_error"].as_str().unwrap();
    assert!(err.contains("urn:ietf:params:acme:error:"), "{s}");
    assert!(s["next_attempt"].is_string(), "{s}");
    // The failing domain does not block the other one.
    eventually("the other domain's certificate", || async {
        (cert_state(&e, "fine.test").await["state"] == "valid").then_some(())
    })
    .await;
    let metrics = e.metrics().await;
    assert!(
        metrics.contains("edgeward_acme_failures_total{type="),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_outage_backs_off_keeps_serving_and_recovers() {
    let up = Upstream::start("up").await;
    let (e, mut p) = pair(None, RETRY).await;
    e.put_domain("before.test", &[up.addr], r#", "tls": "auto""#)
        .await;
    eventually("a certificate before the outage", || async {
        (cert_state(&e, "before.test").await["state"] == "valid").then_some(())
    })
    .await;
    let before = served_serial(&e, &p, "before.test").await.unwrap();
    let root = p.issuing_root().await;

    p.stop_pebble();
    e.put_domain("during.test", &[up.addr], r#", "tls": "auto""#)
        .await;
    // Collect successive scheduled attempts: the gaps between them grow.
    let mut attempts: Vec<i64> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    while attempts.len() < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "backoff attempts seen: {attempts:?}"
        );
        let s = cert_state(&e, "during.test").await;
        if let Some(n) = s["next_attempt"].as_str() {
            assert!(s["last_error"].is_string(), "{s}");
            assert_ne!(s["state"], "valid", "{s}");
            if attempts.last() != Some(&unix(n)) {
                attempts.push(unix(n));
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gaps: Vec<i64> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.last() > gaps.first(), "backoff grows: {gaps:?}");
    // Existing certificates are still served during the outage.
    let port = e.https;
    let served = tokio::task::spawn_blocking(move || {
        connect(port, Some("before.test"), &root).map(|s| peer_serial(&s))
    })
    .await
    .unwrap();
    assert_eq!(served, Ok(before));

    p.start_pebble().await;
    eventually_within("issuance to resume", Duration::from_secs(40), || async {
        (cert_state(&e, "during.test").await["state"] == "valid").then_some(())
    })
    .await;
    assert!(served_serial(&e, &p, "during.test").await.is_ok());
}

fn unix(rfc3339: &str) -> i64 {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .unwrap()
        .unix_timestamp()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_budget_is_enforced_and_survives_a_restart() {
    let up = Upstream::start("up").await;
    let budget = format!("{RETRY}    max_orders_per_window: 1\n    order_window_seconds: 3600\n");
    let (mut e, _p) = pair(None, &budget).await;
    e.put_domain("first.test", &[up.addr], r#", "tls": "auto""#)
        .await;
    eventually("the first certificate", || async {
        (cert_state(&e, "first.test").await["state"] == "valid").then_some(())
    })
    .await;
    // Renew now is bound by the budget too: asked for, shown, not ordered.
    let serial =
        || async { e.api("GET", "/v1/certificates/first.test", None).await.1["serial"].clone() };
    let before = serial().await;
    let (status, d) = e.api("POST", "/v1/domains/first.test/renew", None).await;
    assert_eq!(status, 202, "{d}");
    assert_eq!(d["certificate"]["renewal_requested"], true, "{d}");
    eventually("the renewal to wait for the budget", || async {
        let s = cert_state(&e, "first.test").await;
        let next = s["next_attempt"].as_str().map(unix)?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        (s["renewal_requested"] == true && s["state"] == "valid" && next > now + 3000).then_some(())
    })
    .await;
    assert_eq!(serial().await, before);
    let (_, events) = e.api("GET", "/v1/events", None).await;
    let started = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|ev| ev["kind"] == "order.started")
        .count();
    assert_eq!(started, 1, "{events}");
    e.put_domain("second.test", &[up.addr], r#", "tls": "auto""#)
        .await;
    let wait_for_budget = || async {
        let s = cert_state(&e, "second.test").await;
        let next = s["next_attempt"].as_str().map(unix)?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        (s["state"] == "pending" && next > now + 3000).then_some(())
    };
    eventually("the second order to wait for the budget", wait_for_budget).await;
    assert!(e
        .metrics()
        .await
        .contains("edgeward_acme_order_budget_left 0"));
    e.restart().await;
    eventually("the budget to still be spent after a restart", || async {
        let s = cert_state(&e, "second.test").await;
        let next = s["next_attempt"].as_str().map(unix)?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        (next > now + 3000).then_some(())
    })
    .await;
    assert!(e
        .metrics()
        .await
        .contains("edgeward_acme_orders_total{result=\"ok\"} 0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_off_auto_abandons_and_never_renews() {
    let up = Upstream::start("up").await;
    let (e, _p) = pair(None, RETRY).await;
    e.put_domain("fickle.test", &[up.addr], r#", "tls": "auto""#)
        .await;
    e.put_domain("fickle.test", &[up.addr], r#", "tls": "manual""#)
        .await;
    e.put_domain("steady.test", &[up.addr], r#", "tls": "auto""#)
        .await;
    eventually("the steady domain's certificate", || async {
        (cert_state(&e, "steady.test").await["state"] == "valid").then_some(())
    })
    .await;
    // Any order for the switched-off domain has ended by now (steady.test's went through the same CA).
    let metrics = e.metrics().await;
    assert!(
        metrics.contains("edgeward_acme_orders_total{result=\"failed\"} 0"),
        "{metrics}"
    );
    assert_eq!(
        e.api("GET", "/v1/certificates/fickle.test", None).await.0,
        404
    );
    let (_, d) = e.api("GET", "/v1/domains/fickle.test", None).await;
    // Shown as a manual domain without a certificate: nothing of the abandoned order is left.
    assert_eq!(
        d["certificate"],
        serde_json::json!({"state": "pending", "not_after": null}),
        "{d}"
    );
}

/// A TCP relay to `to` that holds new connections while paused: Pebble's validations go through it,
/// so a test decides when an order can complete.
struct ValidationGate {
    port: u16,
    open: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ValidationGate {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ValidationGate {
    async fn start(to: u16) -> ValidationGate {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (open, rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut rx = rx.clone();
                tokio::spawn(async move {
                    let _ = rx.wait_for(|o| *o).await;
                    if let Ok(mut out) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
        });
        ValidationGate { port, open, task }
    }
}

/// An order in flight in the old process at a graceful upgrade is left to the new one: the old one
/// removes its token before it lets go of the state, the new one orders, and one certificate is
/// served, with no token left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_in_flight_at_an_upgrade_is_picked_up_by_the_new_process() {
    let up = Upstream::start("up").await;
    let mut e = Edgeward::new("");
    let gate = ValidationGate::start(e.http).await;
    let p = Pebble::start(gate.port, None).await;
    e.extra = p.acme_yaml(RETRY);
    e.spawn().await;
    e.put_domain("handed.test", &[up.addr], r#", "tls": "auto""#)
        .await;
    // The old process's order waits for its validation, held at the gate, with its token stored.
    let first_token = eventually("the old process's order to register its token", || async {
        e.stored().challenges.first().map(|c| c.token.clone())
    })
    .await;
    e.upgrade().await;
    assert!(
        e.stored().challenges.iter().all(|c| c.token != first_token),
        "the old process left its token behind"
    );
    gate.open.send_replace(true);
    eventually("the new process to get the certificate", || async {
        (cert_state(&e, "handed.test").await["state"] == "valid").then_some(())
    })
    .await;
    served_serial(&e, &p, "handed.test")
        .await
        .expect("served, chained to Pebble's root");
    assert_eq!(e.stored().certificates.len(), 1);
    eventually("the new order's token to go", || async {
        e.stored().challenges.is_empty().then_some(())
    })
    .await;
}
