//! Edge safety with real peers on loopback: an upstream that accepts and never answers, an upstream
//! that is not there, clients that trickle their heads or sit idle, more connections than allowed,
//! malformed heads carrying secrets (both kinds of listener), and Host headers that are not hosts.

use crate::harness::{eventually, Edgeward, Upstream};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An upstream that accepts connections, reads what comes, and never answers.
struct Silent {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Silent {
    async fn start() -> Silent {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut s, _)) = l.accept().await {
                held.push(tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
                }));
            }
        });
        Silent { addr, task }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Everything the server sends until it closes (or `limit` passes: then what came so far).
async fn read_to_close(s: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let closed = tokio::time::timeout(limit, s.read_to_end(&mut out))
        .await
        .is_ok();
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// The status of a complete response in `text`.
fn status_of(text: &str) -> Option<u16> {
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

fn metric(text: &str, line_start: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_silent_upstream_gets_504_after_the_read_timeout_and_a_missing_one_502() {
    let mut e = Edgeward::new("");
    e.upstreams_extra = "    read_timeout_ms: 1500\n".into();
    e.spawn().await;
    let silent = Silent::start().await;
    e.put_domain("silent.test", &[silent.addr], "").await;
    // A domain's own timeout overrides the configuration's.
    e.put_domain(
        "quick.test",
        &[silent.addr],
        r#", "upstream_timeouts": {"read_timeout_ms": 300}"#,
    )
    .await;
    let gone = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    e.put_domain("gone.test", &[gone], "").await;

    let t0 = Instant::now();
    let (status, _) = e.get("silent.test", "/").await;
    let took = t0.elapsed();
    assert_eq!(status, 504);
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(10),
        "{took:?}"
    );
    let t0 = Instant::now();
    let (status, _) = e.get("quick.test", "/").await;
    assert_eq!(status, 504);
    assert!(
        t0.elapsed() < Duration::from_millis(1400),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(e.get("gone.test", "/").await.0, 502);

    let text = e.metrics().await;
    assert_eq!(
        metric(
            &text,
            "edgeward_upstream_errors_total{reason=\"ReadTimedout\",status=\"504\"}"
        ),
        2,
        "{text}"
    );
    // Refused at connect, or already marked down by the health check: a 502 either way.
    let refused = metric(
        &text,
        "edgeward_upstream_errors_total{reason=\"ConnectRefused\",status=\"502\"}",
    ) + metric(
        &text,
        "edgeward_upstream_errors_total{reason=\"NoBackend\",status=\"502\"}",
    );
    assert!(refused >= 1, "{text}");
    // A bad override is refused, naming the field.
    let (status, v) = e
        .api(
            "PUT",
            "/v1/domains/x.test",
            Some(r#"{"upstreams": ["127.0.0.1:9"], "upstream_timeouts": {"read_timeout_ms": 0}}"#),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(v["field"], "upstream_timeouts.read_timeout_ms");
}

#[tokio::test]
async fn trickled_heads_get_408_and_idle_connections_close() {
    let up = Upstream::start("up").await;
    let e = Edgeward::start(
        "  downstream: {request_header_timeout_ms: 1000, keepalive_timeout_seconds: 1}\n",
    )
    .await;
    e.put_domain("slow.test", &[up.addr], "").await;
    let head = b"GET / HTTP/1.1\r\nHost: slow.test\r\nX-Pad: aaaaaaaaaaaaaaaaaaaa\r\n\r\n";

    // One byte every 150 ms: each read is quick, the whole head is not.
    let mut s = TcpStream::connect(("127.0.0.1", e.http)).await.unwrap();
    let t0 = Instant::now();
    let mut answer = Vec::new();
    for b in head.iter() {
        if s.write_all(&[*b]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        let mut byte = [0u8; 512];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::ZERO, s.read(&mut byte)).await {
            answer.extend_from_slice(&byte[..n]);
            if n == 0 {
                break;
            }
        }
        if t0.elapsed() > Duration::from_secs(8) {
            break;
        }
    }
    let (rest, closed) = read_to_close(&mut s, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&answer).into_owned() + &rest;
    assert_eq!(status_of(&text), Some(408), "{text}");
    assert!(closed, "the connection is closed after the 408");
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());

    // A later request on a kept-alive connection has the same deadline from its first byte.
    let mut s = TcpStream::connect(("127.0.0.1", e.http)).await.unwrap();
    s.write_all(head).await.unwrap();
    let mut first = vec![0u8; 4096];
    let n = s.read(&mut first).await.unwrap();
    assert_eq!(status_of(&String::from_utf8_lossy(&first[..n])), Some(200));
    s.write_all(b"GET / HTTP/1.1\r\nHost: slow").await.unwrap();
    let (text, closed) = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert_eq!(status_of(&text), Some(408), "{text}");
    assert!(closed);

    // An idle keep-alive connection is closed after the keep-alive timeout, without an answer.
    let mut s = TcpStream::connect(("127.0.0.1", e.http)).await.unwrap();
    s.write_all(head).await.unwrap();
    let n = s.read(&mut first).await.unwrap();
    assert!(n > 0);
    let t0 = Instant::now();
    let (text, closed) = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(closed && text.is_empty(), "{text}");
    let idle = t0.elapsed();
    assert!(idle >= Duration::from_millis(900), "{idle:?}");

    // A connection that sends nothing at all is closed at the header deadline, silently.
    let mut s = TcpStream::connect(("127.0.0.1", e.http)).await.unwrap();
    let (text, closed) = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(closed && text.is_empty(), "{text}");

    let text = e.metrics().await;
    assert!(
        metric(
            &text,
            "edgeward_downstream_timeouts_total{kind=\"request_header\"}"
        ) >= 3,
        "{text}"
    );
    assert!(
        metric(
            &text,
            "edgeward_downstream_timeouts_total{kind=\"keepalive\"}"
        ) >= 1,
        "{text}"
    );
    assert!(metric(&text, "edgeward_refused_requests_total{status=\"408\"}") >= 2);
}

#[tokio::test]
async fn past_max_connections_new_ones_are_refused_and_open_ones_served() {
    let up = Upstream::start("up").await;
    let e = Edgeward::start("  downstream: {max_connections: 3}\n").await;
    e.put_domain("full.test", &[up.addr], "").await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(TcpStream::connect(("127.0.0.1", e.http)).await.unwrap());
    }
    eventually("three connections counted", || async {
        (metric(&e.metrics().await, "edgeward_downstream_connections ") == 3).then_some(())
    })
    .await;
    // The fourth is accepted by the kernel and closed at once, without a byte.
    let mut extra = TcpStream::connect(("127.0.0.1", e.http)).await.unwrap();
    let _ = extra
        .write_all(b"GET / HTTP/1.1\r\nHost: full.test\r\n\r\n")
        .await;
    let (text, closed) = read_to_close(&mut extra, Duration::from_secs(5)).await;
    assert!(closed && text.is_empty(), "{text}");
    // The open ones are served.
    for s in open.iter_mut() {
        s.write_all(b"GET / HTTP/1.1\r\nHost: full.test\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        assert_eq!(status_of(&String::from_utf8_lossy(&buf[..n])), Some(200));
    }
    assert!(
        metric(
            &e.metrics().await,
            "edgeward_downstream_connections_refused_total"
        ) >= 1
    );
    // A closed one makes room.
    drop(open);
    eventually("a new connection served", || async {
        let mut s = TcpStream::connect(("127.0.0.1", e.http)).await.ok()?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: full.test\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let (text, _) = read_to_close(&mut s, Duration::from_secs(5)).await;
        (status_of(&text) == Some(200)).then_some(())
    })
    .await;
}

/// Malformed heads, each carrying secrets in its header values.
const SECRET: &str = "s3cret-0f-the-tenant";

fn malformed() -> Vec<Vec<u8>> {
    let auth = format!("Authorization: Bearer {SECRET}\r\nCookie: session={SECRET}\r\n");
    [
        format!("GET /x HTTP/1.1\r\nHost: a.test\r\n{auth}Bad Header: x\r\n\r\n"),
        format!("GET /x HTTP/1.1\r\nHost: a.test\r\n{auth}X: a\x01b\r\n\r\n"),
        format!("GET /x HTTP/1.1\r\n{auth}X: y\r\n folded {SECRET}\r\n\r\n"),
        format!("GET /x?token={SECRET} HTTP/1.1\r\nHost: a.test\r\n{auth}\x00\r\n\r\n"),
        format!("GET /x HTTP/1.1\r\nHost: a.test\r\n{auth}Content-Length: abc\r\n\r\n"),
        format!(
            "POST /x HTTP/1.1\r\nHost: a.test\r\n{auth}Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"
        ),
        format!("GET /x HTTP/1.1\r\nHost: a.test\r\n{auth}X: {}\r\n\r\n", "a".repeat(70_000)),
        format!("GET /x HTTP/1.1\r\nHost: a.test\r\n{auth}{}\r\n", "X: y\r\n".repeat(300)),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect()
}

#[tokio::test]
async fn malformed_heads_are_refused_and_no_header_value_reaches_the_log() {
    let up = Upstream::start("up").await;
    let mut e = Edgeward::new("");
    e.env.push(("RUST_LOG".into(), "info".into()));
    e.spawn().await;
    e.put_domain("a.test", &[up.addr], "").await;
    for port in [e.http, e.http_raw, e.admin] {
        for req in malformed() {
            let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let _ = s.write_all(&req).await;
            let (text, _) = read_to_close(&mut s, Duration::from_secs(5)).await;
            let status = status_of(&text);
            assert!(
                matches!(status, Some(400 | 431)),
                "port {port} (http {} raw {} admin {}): {status:?} {text:?} for {:?}",
                e.http,
                e.http_raw,
                e.admin,
                String::from_utf8_lossy(&req[..req.len().min(80)])
            );
            assert!(!text.contains(SECRET), "{text}");
        }
    }
    // A well-formed request still works, and the log has what happened, without the secrets.
    assert_eq!(e.get("a.test", "/").await.0, 200);
    let log = e.log_of();
    assert!(log.contains("400") && log.contains("GET /x"), "{log}");
    assert!(
        !log.contains(SECRET),
        "a header value reached the log:\n{log}"
    );
    assert!(!log.contains("token="), "a query reached the log");
    assert!(!log.contains(&crate::harness::TOKEN.to_string()));
}

#[tokio::test]
async fn hosts_that_are_not_hosts_get_400_and_are_never_reflected() {
    let up = Upstream::start("up").await;
    let e = Edgeward::start("").await;
    e.put_domain("r.test", &[up.addr], r#", "redirect_https": true"#)
        .await;
    let (status, _) = e.get("r.test", "/p").await;
    assert_eq!(status, 308);
    for bad in [
        "r.test\"><script>x</script>",
        "r.test/evil.test",
        "r.test@evil.test",
        "r.test:99999",
        "r.test:",
        "r..test",
    ] {
        let mut s = TcpStream::connect(("127.0.0.1", e.http)).await.unwrap();
        let req = format!("GET /p HTTP/1.1\r\nHost: {bad}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let (text, _) = read_to_close(&mut s, Duration::from_secs(5)).await;
        assert_eq!(status_of(&text), Some(400), "{bad}: {text}");
        assert!(!text.contains("Location"), "{text}");
        assert!(!text.contains("evil") && !text.contains("script"), "{text}");
    }
}

/// `downstream.keepalive_request_limit`: the last request a connection may carry is answered with
/// `Connection: close` and the connection ends; challenge answers from the front count too.
#[tokio::test]
async fn a_connection_closes_after_keepalive_request_limit_requests() {
    let up = Upstream::start("up").await;
    let e = Edgeward::start("  downstream: {keepalive_request_limit: 3}\n").await;
    e.put_domain("site.test", &[up.addr], "").await;
    let body = r#"{"host": "site.test", "key_authorization": "kt.k"}"#;
    assert_eq!(e.api("PUT", "/v1/challenges/kt", Some(body)).await.0, 200);
    let mut s = TcpStream::connect(("127.0.0.1", e.http)).await.unwrap();
    let mut seen = Vec::new();
    for path in ["/1", "/.well-known/acme-challenge/kt", "/3"] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: site.test\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        // One response at a time: read until its body is complete.
        let mut got = Vec::new();
        let done = |b: &[u8]| {
            let t = String::from_utf8_lossy(b);
            let Some((head, body)) = t.split_once("\r\n\r\n") else {
                return false;
            };
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            body.len() >= len
        };
        while !done(&got) {
            let mut b = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut b))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "closed early after {seen:?}");
            got.extend_from_slice(&b[..n]);
        }
        seen.push(String::from_utf8_lossy(&got).to_lowercase());
    }
    assert!(
        seen.iter().all(|r| r.starts_with("http/1.1 200")),
        "{seen:?}"
    );
    assert!(!seen[0].contains("connection: close") && !seen[1].contains("connection: close"));
    assert!(seen[2].contains("connection: close"), "{}", seen[2]);
    let (rest, closed) = read_to_close(&mut s, Duration::from_secs(10)).await;
    assert!(closed && rest.is_empty(), "{rest}");
}

/// `https_redirect_port`: behind port mapping, redirects name the public HTTPS port; 443 none.
#[tokio::test]
async fn redirects_name_the_configured_https_port() {
    let up = Upstream::start("up").await;
    for (port, want) in [
        ("8443", "https://r.test:8443/x?y=1"),
        ("443", "https://r.test/x?y=1"),
    ] {
        let e = Edgeward::start(&format!("  https_redirect_port: {port}\n")).await;
        e.put_domain("r.test", &[up.addr], r#", "redirect_https": true"#)
            .await;
        let resp = e
            .client
            .get(format!("http://127.0.0.1:{}/x?y=1", e.http))
            .header("host", "r.test")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 308);
        assert_eq!(resp.headers()["location"], want);
    }
    let e = Edgeward::new("  https_redirect_port: 0\n");
    assert!(e.refused(&["-t"]).contains("edgeward.https_redirect_port"));
}
