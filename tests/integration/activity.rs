//! The API the console is built on: `GET /v1/events` (the activity ring), `POST
//! /v1/domains/{host}/renew` refused where it cannot apply, certificates soonest expiry first, and
//! the console's assets (no token, no data, a strict content security policy). Every bad parameter
//! is a 400 naming it.

use crate::certs::{Key, Pki};
use crate::harness::{Edgeward, Upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_renew_and_expiry_order_through_the_api() {
    let up = Upstream::start("up").await;
    let e = Edgeward::start("").await;
    let (_, empty) = e.api("GET", "/v1/events", None).await;
    assert_eq!(
        (empty["last_id"].as_u64(), empty["missed"].as_u64()),
        (Some(0), Some(0))
    );

    e.put_domain("a.test", &[up.addr], r#", "tls": "manual""#)
        .await;
    let pki = Pki::new();
    // Two certificates, the later-expiring one under the host that sorts first.
    let long = pki.leaf_valid(&["a.test"], Key::Ecdsa, (-1, 300));
    let short = pki.leaf_valid(&["b.test"], Key::Ecdsa, (-1, 10));
    e.put_certificate("a.test", &long).await;
    e.put_certificate("b.test", &short).await;
    let (status, _) = e.api("DELETE", "/v1/certificates/b.test", None).await;
    assert_eq!(status, 204);
    e.put_certificate("b.test", &short).await;

    let (status, page) = e.api("GET", "/v1/events?after=0", None).await;
    assert_eq!(status, 200);
    let kinds: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ev| ev["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "domain.put",
            "certificate.swapped",
            "certificate.uploaded",
            "certificate.swapped",
            "certificate.uploaded",
            "certificate.deleted",
            "certificate.swapped",
            "certificate.uploaded"
        ]
    );
    let last = page["last_id"].as_u64().unwrap();
    assert_eq!(last, 8);
    // The cursor: only what came after; a limit.
    let (_, tail) = e.api("GET", "/v1/events?after=6", None).await;
    assert_eq!(tail["events"].as_array().unwrap().len(), 2);
    assert_eq!(tail["events"][0]["id"], 7);
    let (_, one) = e.api("GET", "/v1/events?after=0&limit=1", None).await;
    assert_eq!(one["events"].as_array().unwrap().len(), 1);
    let swap = &page["events"][1];
    assert_eq!(
        (swap["host"].as_str(), swap["source"].as_str()),
        (Some("a.test"), Some("tls"))
    );
    assert!(
        swap["message"].as_str().unwrap().contains(&long.serial),
        "{swap}"
    );

    // Soonest expiry first, paged through its cursor.
    let (_, by_expiry) = e
        .api("GET", "/v1/certificates?sort=not_after&limit=1", None)
        .await;
    assert_eq!(by_expiry["items"][0]["host"], "b.test");
    let next = by_expiry["next"].as_str().unwrap().to_string();
    let (_, second) = e
        .api(
            "GET",
            &format!("/v1/certificates?sort=not_after&limit=1&after={next}"),
            None,
        )
        .await;
    assert_eq!(second["items"][0]["host"], "a.test");
    assert!(second["next"].is_null());
    let (_, by_host) = e.api("GET", "/v1/certificates?sort=host", None).await;
    assert_eq!(by_host[0]["host"], "a.test");
    // A manual domain shows the state and expiry of its certificate.
    let (_, d) = e.api("GET", "/v1/domains/a.test", None).await;
    assert_eq!(d["certificate"]["state"], "valid");
    assert!(d["certificate"]["not_after"].is_string(), "{d}");

    // Renew where it cannot apply: named, nothing recorded.
    for (path, status, words) in [
        (
            "/v1/domains/a.test/renew",
            409,
            "does not use Let's Encrypt",
        ),
        ("/v1/domains/nobody.test/renew", 404, "not found"),
        ("/v1/domains/bad%20host/renew", 400, "host"),
    ] {
        let (s, v) = e.api("POST", path, None).await;
        assert_eq!(s, status, "{path}: {v}");
        assert!(v["error"].as_str().unwrap().contains(words), "{path}: {v}");
    }
    let (s, _) = e.api("GET", "/v1/domains/a.test/renew", None).await;
    assert_eq!(s, 405);
    let (_, after) = e.api("GET", "/v1/events", None).await;
    assert_eq!(after["last_id"].as_u64(), Some(last));

    // A batch of 20 certificates (an import): one batch event and one swap event, not 20.
    let ops: Vec<serde_json::Value> = (0..20)
        .map(|i| {
            let h = format!("c{i}.test");
            let l = pki.leaf(&[&h], Key::Ecdsa);
            serde_json::json!({"op": "put_certificate", "host": h, "chain_pem": l.chain_pem, "key_pem": l.key_pem})
        })
        .collect();
    let (s, v) = e
        .api(
            "POST",
            "/v1/batch",
            Some(&serde_json::json!({ "ops": ops }).to_string()),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (_, batch) = e
        .api("GET", &format!("/v1/events?after={last}"), None)
        .await;
    let got: Vec<(&str, &str)> = batch["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ev| {
            (
                ev["kind"].as_str().unwrap(),
                ev["message"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].0, "certificate.swapped");
    assert!(got[0].1.starts_with("20 certificates"), "{got:?}");
    assert_eq!(
        got[1],
        ("batch", "batch of 20 changes applied (20 put_certificate)")
    );

    // Bad parameters: 400 naming each.
    for (query, field) in [
        ("/v1/events?after=abc", "after"),
        ("/v1/events?after=-1", "after"),
        ("/v1/events?limit=0", "limit"),
        ("/v1/events?limit=1001", "limit"),
        ("/v1/events?since=3", "since"),
        ("/v1/certificates?sort=expiry", "sort"),
        ("/v1/domains?sort=not_after", "sort"),
    ] {
        let (s, v) = e.api("GET", query, None).await;
        assert_eq!((s, v["field"].as_str()), (400, Some(field)), "{query}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_assets_need_no_token_and_hold_no_data() {
    let up = Upstream::start("up").await;
    let e = Edgeward::start("").await;
    e.put_domain("secret-customer.test", &[up.addr], "").await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = |p: &str| format!("http://127.0.0.1:{}{p}", e.admin);
    let r = http.get(url("/console")).send().await.unwrap();
    assert_eq!(r.status(), 301);
    assert_eq!(r.headers()["location"], "/console/");
    for (path, kind) in [
        ("/console/", "text/html"),
        ("/console/app.js", "text/javascript"),
        ("/console/api.js", "text/javascript"),
        ("/console/ui.js", "text/javascript"),
        ("/console/views.js", "text/javascript"),
        ("/console/domains.js", "text/javascript"),
        ("/console/style.css", "text/css"),
    ] {
        let r = http.get(url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers().clone();
        assert!(
            h["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
            "{csp}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert!(h.get("set-cookie").is_none());
        let body = r.text().await.unwrap();
        assert!(!body.contains("secret-customer"), "{path} holds data");
    }
    let r = http.head(url("/console/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let length: usize = r.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(length > 500, "{length}");
    let r = http.get(url("/console/nope.js")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = http.post(url("/console/")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    // The data itself still needs the token.
    let r = http.get(url("/v1/domains")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http.get(url("/v1/events")).send().await.unwrap();
    assert_eq!(r.status(), 401);
}
