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

/// One HTTP/1.1 response read off a raw connection: (status line, headers lowercased, body).
async fn read_response(
    conn: &mut tokio::io::BufReader<tokio::net::TcpStream>,
    head_only: bool,
) -> (String, std::collections::HashMap<String, String>, String) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut status = String::new();
    conn.read_line(&mut status).await.unwrap();
    let mut headers = std::collections::HashMap::new();
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).await.unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(": ").unwrap();
        headers.insert(k.to_ascii_lowercase(), v.to_string());
    }
    let len: usize = headers["content-length"].parse().unwrap();
    let mut body = vec![0; if head_only { 0 } else { len }];
    conn.read_exact(&mut body).await.unwrap();
    (
        status.trim_end().to_string(),
        headers,
        String::from_utf8(body).unwrap(),
    )
}

#[tokio::test]
async fn one_connection_mixes_answers_proxied_requests_and_pipelined_challenges() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = Upstream::start("up").await;
    let e = Edgeward::start("").await;
    e.put_domain("site.test", &[up.addr], "").await;
    put_challenge(&e, "tok", "site.test").await;
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", e.http))
        .await
        .unwrap();
    stream.set_nodelay(true).unwrap();
    let mut conn = tokio::io::BufReader::new(stream);
    let get = format!("GET {PATH}tok HTTP/1.1\r\nHost: site.test\r\n\r\n");

    // A head arriving in pieces.
    for piece in [&get[..3], &get[3..30], &get[30..]] {
        conn.get_mut().write_all(piece.as_bytes()).await.unwrap();
        conn.get_mut().flush().await.unwrap();
    }
    let (status, headers, body) = read_response(&mut conn, false).await;
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("HTTP/1.1 200 OK", "tok.thumb")
    );
    assert_eq!(headers["connection"], "keep-alive");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["content-type"], "text/plain");
    assert!(headers.contains_key("date"));

    // A proxied request on the same connection, then challenges again.
    conn.get_mut()
        .write_all(b"GET /after HTTP/1.1\r\nHost: site.test\r\n\r\n")
        .await
        .unwrap();
    let (status, _, body) = read_response(&mut conn, false).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains(r#""upstream":"up""#), "{body}");

    // Pipelined: a GET, a HEAD and a miss in one write, answered in order.
    let head = format!("HEAD {PATH}tok HTTP/1.1\r\nHost: site.test\r\n\r\n");
    let miss = format!("GET {PATH}unknown HTTP/1.1\r\nHost: site.test\r\n\r\n");
    conn.get_mut()
        .write_all(format!("{get}{head}{miss}").as_bytes())
        .await
        .unwrap();
    assert_eq!(read_response(&mut conn, false).await.2, "tok.thumb");
    let (status, headers, body) = read_response(&mut conn, true).await;
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", ""));
    assert_eq!(headers["content-length"], "9");
    let (status, _, body) = read_response(&mut conn, false).await;
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("HTTP/1.1 404 Not Found", "unknown challenge token\n")
    );

    // `Connection: close` is honoured: the answer, then the end of the connection.
    conn.get_mut()
        .write_all(
            format!("GET {PATH}tok HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let (_, headers, body) = read_response(&mut conn, false).await;
    assert_eq!(
        (headers["connection"].as_str(), body.as_str()),
        ("close", "tok.thumb")
    );
    let mut rest = Vec::new();
    assert_eq!(conn.read_to_end(&mut rest).await.unwrap(), 0);

    // HTTP/1.0 closes unless asked to keep the connection.
    let mut old = tokio::net::TcpStream::connect(("127.0.0.1", e.http))
        .await
        .unwrap();
    old.write_all(format!("GET {PATH}tok HTTP/1.0\r\nHost: site.test\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut all = String::new();
    old.read_to_string(&mut all).await.unwrap();
    assert!(
        all.contains("Connection: close\r\n") && all.ends_with("\r\n\r\ntok.thumb"),
        "{all}"
    );

    // A malformed head that starts like a challenge goes to Pingora, which refuses it.
    let mut bad = tokio::net::TcpStream::connect(("127.0.0.1", e.http))
        .await
        .unwrap();
    bad.write_all(
        format!("GET {PATH}tok HTTP/1.1\r\nHost: site.test\r\nBad Header\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut all = String::new();
    bad.read_to_string(&mut all).await.unwrap();
    assert!(all.starts_with("HTTP/1.1 400 "), "{all}");

    // Every answer and the miss are counted, whichever path answered them.
    let text = e.metrics().await;
    assert!(
        text.contains(r#"edgeward_acme_challenge_requests_total{result="hit"} 5"#),
        "{text}"
    );
    assert!(
        text.contains(r#"edgeward_acme_challenge_requests_total{result="miss"} 1"#),
        "{text}"
    );
}
