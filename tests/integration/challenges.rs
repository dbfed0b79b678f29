//! The ACME HTTP-01 responder on the proxy listeners.

use crate::harness::{Edgeward, Upstream};

const PATH: &str = "/.well-known/acme-challenge/";

async fn put_challenge(e: &Edgeward, token: &str, host: &str) {
    let body = format!(r#"{{"host": "{host}", "key_authorization": "{token}.thumb"}}"#);
    let (status, v) = e
        .api("PUT", &format!("/v1/challenges/{token}"), Some(&body))
        .await;
    assert_eq!(status, 200, "{v}");
}

#[tokio::test]
async fn answers_for_its_host_only_with_exact_body() {
    let up = Upstream::start("up").await;
    let e = Edgeward::start("").await;
    e.put_domain("site.test", &[up.addr], "").await;
    put_challenge(&e, "tok-1_A", "site.test").await;

    let resp = e
        .client
        .get(format!("http://127.0.0.1:{}{PATH}tok-1_A?x=1", e.http))
        .header("host", "Site.Test:80")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/plain");
    assert_eq!(
        resp.text().await.unwrap(),
        "tok-1_A.thumb",
        "exact, no newline"
    );

    // A host with no domain at all still gets its challenge answered.
    put_challenge(&e, "orphan", "not-routed.test").await;
    assert_eq!(
        e.get("not-routed.test", &format!("{PATH}orphan")).await.0,
        200
    );

    // HEAD: headers only.
    let head = e
        .client
        .head(format!("http://127.0.0.1:{}{PATH}tok-1_A", e.http))
        .header("host", "site.test")
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "13");

    // Another host, an unknown token, a bad token, an empty token, another method: 404, never proxied.
    for (host, path) in [
        ("other.test", format!("{PATH}tok-1_A")),
        ("site.test", format!("{PATH}unknown")),
        ("site.test", format!("{PATH}bad.token")),
        ("site.test", format!("{PATH}{}", "a".repeat(256))),
        ("site.test", PATH.to_string()),
    ] {
        let (status, body) = e.get(host, &path).await;
        assert_eq!(status, 404, "{host}{path}");
        assert!(!body.contains("upstream"), "not proxied: {body}");
    }
    let post = e
        .client
        .post(format!("http://127.0.0.1:{}{PATH}tok-1_A", e.http))
        .header("host", "site.test")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 404);

    // Deleted: gone at once.
    let (status, _) = e.api("DELETE", "/v1/challenges/tok-1_A", None).await;
    assert_eq!(status, 204);
    assert_eq!(e.get("site.test", &format!("{PATH}tok-1_A")).await.0, 404);
}

#[tokio::test]
async fn passthrough_domains_and_non_intercepting_listeners_proxy_challenges() {
    let up = Upstream::start("up").await;
    let e = Edgeward::start("").await;
    e.put_domain(
        "own-acme.test",
        &[up.addr],
        r#", "acme_challenges": "passthrough""#,
    )
    .await;
    e.put_domain("ours.test", &[up.addr], "").await;
    put_challenge(&e, "known", "ours.test").await;

    // Passthrough domain: unknown tokens go to the customer's upstream.
    let (status, body) = e.get("own-acme.test", &format!("{PATH}their-token")).await;
    assert_eq!(status, 200);
    assert!(body.contains("\"upstream\":\"up\""), "{body}");

    // The non-intercepting listener proxies every challenge path, known tokens included.
    let (status, body) = e
        .get_on(e.http_raw, "ours.test", &format!("{PATH}known"))
        .await;
    assert_eq!(status, 200);
    assert!(
        body.contains(&format!("\"path\":\"{PATH}known\"")),
        "{body}"
    );
    // ...while the intercepting one answers it.
    assert_eq!(
        e.get("ours.test", &format!("{PATH}known")).await.1,
        "known.thumb"
    );
}

#[tokio::test]
async fn tokens_expire() {
    let e = Edgeward::start("").await;
    let body = r#"{"host": "a.test", "key_authorization": "short.thumb", "ttl_seconds": 2}"#;
    assert_eq!(
        e.api("PUT", "/v1/challenges/short", Some(body)).await.0,
        200
    );
    assert_eq!(e.get("a.test", &format!("{PATH}short")).await.0, 200);
    crate::harness::eventually("the token to expire", || async {
        (e.get("a.test", &format!("{PATH}short")).await.0 == 404).then_some(())
    })
    .await;
}
