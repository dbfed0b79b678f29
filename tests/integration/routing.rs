//! Host routing, load balancing and forwarded headers through the real proxy.

use crate::harness::{Edgeward, Upstream};
use std::collections::HashMap;

#[tokio::test]
async fn routes_exact_wildcard_port_case_and_unknown_hosts() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let e = Edgeward::start("").await;
    e.put_domain("*.example.com", &[a.addr], "").await;
    e.put_domain("www.example.com", &[b.addr], "").await;

    assert_eq!(
        e.upstream_for("shop.example.com").await.as_deref(),
        Some("a")
    );
    assert_eq!(
        e.upstream_for("www.example.com").await.as_deref(),
        Some("b"),
        "exact wins"
    );
    assert_eq!(
        e.upstream_for("WWW.Example.COM").await.as_deref(),
        Some("b"),
        "case-insensitive"
    );
    assert_eq!(
        e.upstream_for("www.example.com:8443").await.as_deref(),
        Some("b"),
        "port ignored"
    );
    assert_eq!(
        e.upstream_for("www.example.com.").await.as_deref(),
        Some("b"),
        "trailing dot"
    );
    assert_eq!(
        e.upstream_for("Shop.Example.com.:80").await.as_deref(),
        Some("a")
    );

    for host in ["a.b.example.com", "example.com", "unknown.test"] {
        let (status, body) = e.get(host, "/").await;
        assert_eq!((status, body.as_str()), (404, "unknown host\n"), "{host}");
    }
}

/// The headers the upstream sees for a request claiming to come from 203.0.113.9 via a proxy.
async fn forwarded_as_seen_upstream(e: &Edgeward) -> serde_json::Value {
    let resp = e
        .client
        .get(format!("http://127.0.0.1:{}/some/path?q=1", e.http))
        .header("host", "App.test:8080")
        .header("x-forwarded-for", "203.0.113.9")
        .header("forwarded", "for=203.0.113.9")
        .header("x-real-ip", "203.0.113.9")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["path"], "/some/path");
    v["headers"].clone()
}

#[tokio::test]
async fn forwarded_headers_are_set_and_host_preserved() {
    let up = Upstream::start("a").await;
    // An untrusted client (no trusted_proxies): nothing it claims reaches the upstream.
    let e = Edgeward::start("").await;
    e.put_domain("app.test", &[up.addr], "").await;
    let h = forwarded_as_seen_upstream(&e).await;
    assert_eq!(
        h["host"], "App.test:8080",
        "Host is passed as the client sent it"
    );
    assert_eq!(
        h["x-forwarded-for"], "127.0.0.1",
        "the spoofed chain is replaced"
    );
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert!(h.get("forwarded").is_none(), "{h}");
    assert_eq!(
        h["x-forwarded-proto"], "http",
        "the client's claim is overwritten"
    );
    assert_eq!(h["x-forwarded-host"], "App.test:8080");
    drop(e);

    // Behind a trusted load balancer (here: loopback), its chain is kept and the peer appended.
    let e = Edgeward::start("  trusted_proxies: [\"127.0.0.0/8\"]\n").await;
    e.put_domain("app.test", &[up.addr], "").await;
    let h = forwarded_as_seen_upstream(&e).await;
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-real-ip"], "203.0.113.9");
    assert_eq!(h["forwarded"], "for=203.0.113.9");
    assert_eq!(h["x-forwarded-proto"], "http");
}

#[tokio::test]
async fn round_robin_skips_dead_backends_and_502_when_none_left() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let dead = {
        let gone = Upstream::start("gone").await;
        gone.addr
    }; // dropped: nothing listens there any more
    let e = Edgeward::start("").await;

    e.put_domain("rr.test", &[a.addr, b.addr], "").await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..6 {
        *seen
            .entry(e.upstream_for("rr.test").await.unwrap())
            .or_default() += 1;
    }
    assert_eq!(
        (seen["a"], seen["b"]),
        (3, 3),
        "round robin alternates: {seen:?}"
    );

    // A dead backend in the pool: every request still succeeds, on the live ones only.
    e.put_domain("rr.test", &[a.addr, dead, b.addr], "").await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..9 {
        let who = e
            .upstream_for("rr.test")
            .await
            .expect("a live backend answers");
        *seen.entry(who).or_default() += 1;
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen["a"] >= 3 && seen["b"] >= 3, "{seen:?}");

    // The TCP health check marks the dead backend down (one probe per address, shared by pools).
    let down = crate::harness::eventually("the dead backend to be marked down", || async {
        let (_, v) = e.api("GET", "/v1/upstreams", None).await;
        let list = v.as_array()?.clone();
        let state = |addr: std::net::SocketAddr| {
            list.iter()
                .find(|u| u["addr"] == addr.to_string())
                .map(|u| u["healthy"].as_bool().unwrap())
        };
        (state(dead) == Some(false)).then_some((state(a.addr), state(b.addr)))
    })
    .await;
    assert_eq!(down, (Some(true), Some(true)));

    // Nothing reachable: 502.
    e.put_domain("down.test", &[dead], "").await;
    assert_eq!(e.get("down.test", "/").await.0, 502);
}
