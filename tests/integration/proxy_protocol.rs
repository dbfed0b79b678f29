//! The PROXY protocol on plain and TLS listeners: HAProxy from Debian as the sender (`send-proxy`,
//! `send-proxy-v2`, TLS passed through in TCP mode), and raw sockets for what a broken or hostile
//! sender does.

use crate::certs::{Key, Pki};
use crate::haproxy::HaProxy;
use crate::harness::{eventually, free_port, Edgeward, Upstream};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// HAProxy in TCP mode: each (listen port, edgeward port, server option) a frontend/backend pair.
fn haproxy_in_front(dir: &Path, routes: &[(u16, u16, &str)]) -> HaProxy {
    let mut cfg = String::from(
        "global\n  maxconn 100\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n",
    );
    for (i, (listen, to, option)) in routes.iter().enumerate() {
        cfg += &format!(
            "listen l{i}\n  bind 127.0.0.1:{listen}\n  server e 127.0.0.1:{to} {option}\n"
        );
    }
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg).unwrap();
    HaProxy::start(&path)
}

/// A PROXY-protocol listener of each kind on `e` (not started yet): (plain port, TLS port).
fn proxy_protocol_listeners(e: &mut Edgeward) -> (u16, u16) {
    let (http, https) = (free_port(), free_port());
    e.more_http.push(format!(
        "{{listen: \"127.0.0.1:{http}\", proxy_protocol: true}}"
    ));
    e.more_https.push(format!(
        "{{listen: \"127.0.0.1:{https}\", proxy_protocol: true}}"
    ));
    (http, https)
}

/// A client whose connections come from 127.0.0.2 (HAProxy then connects to edgeward from
/// 127.0.0.1); with a PKI, `site.test` is HAProxy's TLS listener on `tls_port`.
fn client_from_127_0_0_2(pki: Option<&Pki>, tls_port: u16) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .timeout(Duration::from_secs(10));
    if let Some(pki) = pki {
        b = b
            .add_root_certificate(reqwest::Certificate::from_pem(&pki.root_pem()).unwrap())
            .resolve("site.test", ([127, 0, 0, 1], tls_port).into())
            .http1_only();
    }
    b.build().unwrap()
}

#[tokio::test]
async fn haproxy_send_proxy_v1_and_v2_name_the_client_on_plain_and_tls_listeners() {
    let pki = Arc::new(Pki::new());
    let up = Upstream::start("up").await;
    let mut e = Edgeward::new("");
    let log = e.dir.join("access.log");
    e.extra = format!("  access_log: {{path: \"{}\"}}\n", log.display());
    let (pp_http, pp_https) = proxy_protocol_listeners(&mut e);
    e.spawn().await;
    e.put_domain("site.test", &[up.addr], "").await;
    e.put_certificate("site.test", &pki.leaf(&["site.test"], Key::Ecdsa))
        .await;
    let (v1, v2, v2_tls) = (free_port(), free_port(), free_port());
    let _haproxy = haproxy_in_front(
        &e.dir,
        &[
            (v1, pp_http, "send-proxy"),
            (v2, pp_http, "send-proxy-v2"),
            (v2_tls, pp_https, "send-proxy-v2"),
        ],
    );
    let plain = client_from_127_0_0_2(None, 0);
    let tls = client_from_127_0_0_2(Some(&pki), v2_tls);
    for (client, url) in [
        (&plain, format!("http://127.0.0.1:{v1}/v1")),
        (&plain, format!("http://127.0.0.1:{v2}/v2")),
        (&tls, format!("https://site.test:{v2_tls}/v2-tls")),
    ] {
        let resp = eventually("HAProxy to pass the request", || async {
            let req = client.get(&url).header("host", "site.test");
            req.send().await.ok().filter(|r| r.status() == 200)
        })
        .await;
        let seen: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(
            seen["headers"]["x-forwarded-for"], "127.0.0.2",
            "{url}: {seen}"
        );
        assert_eq!(seen["headers"]["x-real-ip"], "127.0.0.2", "{url}: {seen}");
    }
    // The access log names the client the header named, and the TLS line its SNI.
    let path_line = |p: &'static str| {
        let log = log.clone();
        async move {
            eventually("the access-log line", || async {
                std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .lines()
                    .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                    .find(|l| l["path"] == p)
            })
            .await
        }
    };
    for p in ["/v1", "/v2", "/v2-tls"] {
        let l = path_line(p).await;
        assert!(
            l["client"].as_str().unwrap().starts_with("127.0.0.2:"),
            "{l}"
        );
    }
    assert_eq!(path_line("/v2-tls").await["sni"], "site.test");
}

/// Send `bytes` on a fresh connection to `port`; what came back before the close (on a blocking
/// thread: the upstream runs on the test's runtime).
async fn exchange(port: u16, bytes: &[u8]) -> Vec<u8> {
    let bytes = bytes.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        s.write_all(&bytes).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        out
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn missing_malformed_and_oversized_headers_close_the_connection() {
    let up = Upstream::start("up").await;
    let mut e = Edgeward::new("  downstream: {request_header_timeout_ms: 1000}\n");
    let (pp_http, pp_https) = proxy_protocol_listeners(&mut e);
    e.spawn().await;
    e.put_domain("site.test", &[up.addr], "").await;
    let get = b"GET / HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n";

    // A good v1 header from a raw socket: its address is the client's.
    let mut req = b"PROXY TCP4 203.0.113.9 127.0.0.1 4711 80\r\n".to_vec();
    req.extend_from_slice(get);
    let out = String::from_utf8(exchange(pp_http, &req).await).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("\"x-forwarded-for\":\"203.0.113.9\""), "{out}");
    // v2 with a TLV, and LOCAL (the balancer's own check: the socket's address stays).
    let v2 = |command: u8, tlv: &[u8]| {
        let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        h.push(0x20 | command);
        h.push(0x11); // TCP over IPv4
        let len = 12 + 3 + tlv.len();
        h.extend_from_slice(&(len as u16).to_be_bytes());
        h.extend_from_slice(&[198, 51, 100, 7, 127, 0, 0, 1, 0x12, 0x67, 0, 80]);
        h.push(0x04); // PP2_TYPE_NOOP
        h.extend_from_slice(&(tlv.len() as u16).to_be_bytes());
        h.extend_from_slice(tlv);
        h
    };
    for (command, want) in [(1, "198.51.100.7"), (0, "127.0.0.1")] {
        let mut req = v2(command, &[0xab; 40]);
        req.extend_from_slice(get);
        let out = String::from_utf8(exchange(pp_http, &req).await).unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(
            out.contains(&format!("\"x-forwarded-for\":\"{want}\"")),
            "{out}"
        );
    }

    // Closed without an answer, plain and TLS alike: no header, a malformed one, an oversized one.
    let long = format!("PROXY TCP4 {}\r\n", "1".repeat(300));
    let mut oversized_v2 = v2(1, &[]);
    oversized_v2[14..16].copy_from_slice(&4000u16.to_be_bytes());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("missing", get.to_vec()),
        (
            "malformed",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 80\r\n".to_vec(),
        ),
        ("too_long", long.into_bytes()),
        ("too_long", oversized_v2),
    ];
    for port in [pp_http, pp_https] {
        for (reason, bytes) in &cases {
            let mut bytes = bytes.clone();
            bytes.extend_from_slice(get);
            assert_eq!(exchange(port, &bytes).await, b"", "{reason} on {port}");
        }
    }
    // A sender that never finishes its header is closed at the request-head deadline.
    assert_eq!(exchange(pp_http, b"PROXY TCP4 1.2.3.4").await, b"");
    let m = e.metrics().await;
    for (reason, n) in [
        ("missing", 2),
        ("malformed", 2),
        ("too_long", 4),
        ("timeout", 1),
    ] {
        let line = format!("edgeward_proxy_protocol_refused_total{{reason=\"{reason}\"}} {n}");
        assert!(m.contains(&line), "{line}\n{m}");
    }
    // The ordinary listeners are unaffected.
    assert_eq!(e.get("site.test", "/").await.0, 200);
}
