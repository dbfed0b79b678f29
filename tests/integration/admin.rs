//! The admin API: authentication, bad input (400, nothing changed), batches, metrics.

use crate::harness::{Edgeward, Upstream};
use serde_json::json;

#[tokio::test]
async fn every_call_but_health_needs_the_token() {
    let e = Edgeward::start("").await;
    let health = e
        .client
        .get(e.admin_url("/v1/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    for (method, path) in [
        ("GET", "/v1/domains"),
        ("GET", "/metrics"),
        ("PUT", "/v1/domains/a.test"),
        ("DELETE", "/v1/domains/a.test"),
        ("PUT", "/v1/challenges/t"),
        ("POST", "/v1/batch"),
    ] {
        for auth in [None, Some("Bearer wrong"), Some("test-admin-token")] {
            let mut req = e.client.request(method.parse().unwrap(), e.admin_url(path));
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let resp = req
                .body(r#"{"upstreams": ["127.0.0.1:1"]}"#)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 401, "{method} {path} with {auth:?}");
            assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        }
    }
    assert_eq!(
        e.api("GET", "/v1/domains", None).await.1,
        json!([]),
        "nothing was changed"
    );
}

#[tokio::test]
async fn bad_inputs_get_400_naming_the_field_and_change_nothing() {
    let e = Edgeward::start("").await;
    let good = r#"{"upstreams": ["127.0.0.1:3000"], "redirect_https": true}"#;
    assert_eq!(
        e.api("PUT", "/v1/domains/keep.test", Some(good)).await.0,
        200
    );
    let before = e.api("GET", "/v1/domains", None).await.1;

    let cases: &[(&str, &str, &str)] = &[
        ("/v1/domains/keep.test", "{not json", "body"),
        ("/v1/domains/keep.test", "", "body"),
        ("/v1/domains/keep.test", "{}", "upstreams"),
        ("/v1/domains/keep.test", r#"{"upstreams": []}"#, "upstreams"),
        (
            "/v1/domains/keep.test",
            r#"{"upstreams": "127.0.0.1:1"}"#,
            "upstreams",
        ),
        (
            "/v1/domains/keep.test",
            r#"{"upstreams": ["localhost:80"]}"#,
            "upstreams[0]",
        ),
        (
            "/v1/domains/keep.test",
            r#"{"upstreams": ["127.0.0.1:1", "127.0.0.1:0"]}"#,
            "upstreams[1]",
        ),
        (
            "/v1/domains/keep.test",
            r#"{"upstreams": ["127.0.0.1:1"], "tls": "on"}"#,
            "tls",
        ),
        (
            "/v1/domains/keep.test",
            r#"{"upstreams": ["127.0.0.1:1"], "tls": "auto"}"#,
            "tls",
        ),
        (
            "/v1/domains/keep.test",
            r#"{"upstreams": ["127.0.0.1:1"], "redirect_https": 1}"#,
            "redirect_https",
        ),
        (
            "/v1/domains/keep.test",
            r#"{"upstreams": ["127.0.0.1:1"], "acme_challenges": "x"}"#,
            "acme_challenges",
        ),
        (
            "/v1/domains/keep.test",
            r#"{"upstreams": ["127.0.0.1:1"], "colour": "red"}"#,
            "colour",
        ),
        (
            "/v1/domains/keep.test",
            r#"{"upstreams": ["127.0.0.1:1"], "host": "other.test"}"#,
            "host",
        ),
        (
            "/v1/domains/a.*.test",
            r#"{"upstreams": ["127.0.0.1:1"]}"#,
            "host",
        ),
        (
            "/v1/domains/keep.test:80",
            r#"{"upstreams": ["127.0.0.1:1"]}"#,
            "host",
        ),
        (
            "/v1/domains/bad_name.test",
            r#"{"upstreams": ["127.0.0.1:1"]}"#,
            "host",
        ),
        (
            "/v1/challenges/bad.token",
            r#"{"host": "a.test", "key_authorization": "bad.token.x"}"#,
            "token",
        ),
        (
            "/v1/challenges/tok",
            r#"{"key_authorization": "tok.x"}"#,
            "host",
        ),
        (
            "/v1/challenges/tok",
            r#"{"host": "*.a.test", "key_authorization": "tok.x"}"#,
            "host",
        ),
        (
            "/v1/challenges/tok",
            r#"{"host": "a.test"}"#,
            "key_authorization",
        ),
        (
            "/v1/challenges/tok",
            r#"{"host": "a.test", "key_authorization": "nottok.x"}"#,
            "key_authorization",
        ),
        (
            "/v1/challenges/tok",
            r#"{"host": "a.test", "key_authorization": "tok.x", "ttl_seconds": -1}"#,
            "ttl_seconds",
        ),
        (
            "/v1/challenges/tok",
            r#"{"host": "a.test", "key_authorization": "tok.x", "ttl_seconds": 0}"#,
            "ttl_seconds",
        ),
    ];
    for (path, body, field) in cases {
        let (status, v) = e.api("PUT", path, Some(body)).await;
        assert_eq!(status, 400, "PUT {path} {body}: {v}");
        assert_eq!(v["field"], *field, "PUT {path} {body}: {v}");
        assert!(v["error"].as_str().unwrap().contains(field), "{v}");
    }
    assert_eq!(
        e.api("GET", "/v1/domains", None).await.1,
        before,
        "nothing changed"
    );
    assert_eq!(e.api("GET", "/v1/challenges/tok", None).await.0, 404);
    assert_eq!(e.stored().challenges.len(), 0, "nothing stored");

    assert_eq!(e.api("GET", "/v1/domains/absent.test", None).await.0, 404);
    assert_eq!(
        e.api("DELETE", "/v1/domains/absent.test", None).await.0,
        404
    );
    assert_eq!(e.api("DELETE", "/v1/challenges/absent", None).await.0, 404);
    assert_eq!(e.api("GET", "/v1/nothing", None).await.0, 404);
    assert_eq!(
        e.api("POST", "/v1/domains/keep.test", Some(good)).await.0,
        405
    );
}

#[tokio::test]
async fn domain_objects_round_trip_with_defaults_and_idna() {
    let e = Edgeward::start("").await;
    let (status, v) = e
        .api(
            "PUT",
            "/v1/domains/B%C3%BCcher.Example.",
            Some(r#"{"upstreams": ["127.0.0.1:3000"]}"#),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let want = json!({
        "host": "xn--bcher-kva.example",
        "upstreams": ["127.0.0.1:3000"],
        "tls": "off",
        "redirect_https": false,
        "acme_challenges": "intercept",
        "certificate_host": null,
    });
    assert_eq!(v, want);
    assert_eq!(
        e.api("GET", "/v1/domains/xn--bcher-kva.example", None)
            .await
            .1,
        want
    );
    assert_eq!(e.api("GET", "/v1/domains", None).await.1, json!([want]));
    assert_eq!(
        e.api("DELETE", "/v1/domains/b%C3%BCcher.example", None)
            .await
            .0,
        204
    );
    assert_eq!(e.api("GET", "/v1/domains", None).await.1, json!([]));
}

#[tokio::test]
async fn batches_are_all_or_nothing() {
    let up = Upstream::start("up").await;
    let e = Edgeward::start("").await;
    e.put_domain("old.test", &[up.addr], "").await;
    let a = up.addr.to_string();

    // One invalid op: 400 naming it, nothing applied.
    let bad = json!({"ops": [
        {"op": "put_domain", "host": "new1.test", "upstreams": [a]},
        {"op": "delete_domain", "host": "old.test"},
        {"op": "put_domain", "host": "new2.test", "upstreams": ["nope"]},
    ]});
    let (status, v) = e.api("POST", "/v1/batch", Some(&bad.to_string())).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["field"], "ops[2].upstreams[0]");
    // A delete of something absent: 404, nothing applied.
    let absent = json!({"ops": [
        {"op": "put_domain", "host": "new1.test", "upstreams": [a]},
        {"op": "delete_domain", "host": "never.test"},
    ]});
    let (status, v) = e.api("POST", "/v1/batch", Some(&absent.to_string())).await;
    assert_eq!(status, 404, "{v}");
    assert!(v["error"].as_str().unwrap().contains("ops[1]"), "{v}");
    let hosts = |v: serde_json::Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|d| d["host"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        hosts(e.api("GET", "/v1/domains", None).await.1),
        ["old.test"]
    );
    assert_eq!(e.upstream_for("old.test").await.as_deref(), Some("up"));
    assert_eq!(e.get("new1.test", "/").await.0, 404);

    // A good batch: everything at once, including ops that depend on earlier ones.
    let good = json!({"ops": [
        {"op": "put_domain", "host": "new1.test", "upstreams": [a]},
        {"op": "put_domain", "host": "*.new2.test", "upstreams": [a], "acme_challenges": "passthrough"},
        {"op": "delete_domain", "host": "old.test"},
        {"op": "put_challenge", "token": "bt", "host": "new1.test", "key_authorization": "bt.k"},
        {"op": "put_domain", "host": "tmp.test", "upstreams": [a]},
        {"op": "delete_domain", "host": "tmp.test"},
    ]});
    let (status, v) = e.api("POST", "/v1/batch", Some(&good.to_string())).await;
    assert_eq!((status, v), (200, json!({"applied": 6})));
    assert_eq!(
        hosts(e.api("GET", "/v1/domains", None).await.1),
        ["*.new2.test", "new1.test"]
    );
    assert_eq!(e.upstream_for("x.new2.test").await.as_deref(), Some("up"));
    assert_eq!(e.get("old.test", "/").await.0, 404);
    assert_eq!(
        e.get("new1.test", "/.well-known/acme-challenge/bt").await.1,
        "bt.k"
    );
}

#[tokio::test]
async fn metrics_count_requests_challenges_domains_and_changes() {
    let up = Upstream::start("up").await;
    let e = Edgeward::start("").await;
    e.put_domain("m.test", &[up.addr], "").await;
    e.put_domain("n.test", &[up.addr], "").await;
    let body = r#"{"host": "m.test", "key_authorization": "mt.k"}"#;
    assert_eq!(e.api("PUT", "/v1/challenges/mt", Some(body)).await.0, 200);
    assert_eq!(e.get("m.test", "/").await.0, 200);
    assert_eq!(
        e.get("m.test", "/.well-known/acme-challenge/mt").await.0,
        200
    );
    assert_eq!(
        e.get("m.test", "/.well-known/acme-challenge/nope").await.0,
        404
    );
    assert_eq!(e.get("zzz.test", "/").await.0, 404);

    // Request counters are bumped in the logging phase, after the response went out: poll.
    let text = crate::harness::eventually("request counters", || async {
        let text = e.metrics().await;
        let done = metric(&text, "edgeward_requests_total{class=\"2xx\"}") == 2.0
            && metric(&text, "edgeward_requests_total{class=\"4xx\"}") == 2.0;
        done.then_some(text)
    })
    .await;
    let value = |name: &str| metric(&text, name);
    assert_eq!(value("edgeward_domains"), 2.0);
    assert_eq!(
        value("edgeward_acme_challenge_requests_total{result=\"hit\"}"),
        1.0
    );
    assert_eq!(
        value("edgeward_acme_challenge_requests_total{result=\"miss\"}"),
        1.0
    );
    assert_eq!(value("edgeward_requests_total{class=\"2xx\"}"), 2.0);
    assert_eq!(value("edgeward_requests_total{class=\"4xx\"}"), 2.0);
    assert_eq!(
        value("edgeward_admin_changes_total{kind=\"put_domain\"}"),
        2.0
    );
    assert_eq!(
        value("edgeward_admin_changes_total{kind=\"put_challenge\"}"),
        1.0
    );
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .unwrap_or_else(|| panic!("{name} missing in:\n{text}"))
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}
