//! The access log: one line per request on every listener, challenge answers included, the request
//! id sent upstream, and a reopen on SIGUSR1 after a logrotate-style rename.

use crate::certs::{Key, Pki};
use crate::harness::{eventually, free_port, Edgeward, Upstream};
use std::path::Path;
use std::sync::Arc;

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Wait for the line whose `path` is `path` (the writer is a thread of its own).
async fn line_for(file: &Path, path: &str) -> serde_json::Value {
    eventually("the access-log line", || async {
        lines(file).into_iter().find(|l| l["path"] == path)
    })
    .await
}

#[tokio::test]
async fn every_request_gets_a_json_line_with_its_request_id_sent_upstream() {
    let pki = Arc::new(Pki::new());
    let up = Upstream::start("up").await;
    let mut e = Edgeward::new("");
    let log = e.dir.join("access.log");
    e.extra = format!(
        "  access_log: {{path: \"{}\", format: json}}\n",
        log.display()
    );
    e.spawn().await;
    e.put_domain("site.test", &[up.addr], "").await;
    let dead = free_port();
    e.put_domain(
        "dead.test",
        &[format!("127.0.0.1:{dead}").parse().unwrap()],
        "",
    )
    .await;

    // Proxied: the upstream saw the request id of the line; a client's own id (not a trusted
    // proxy) is replaced.
    let resp = e
        .client
        .get(format!("http://127.0.0.1:{}/p?q=1", e.http))
        .header("host", "Site.Test")
        .header("x-request-id", "spoofed")
        .header("authorization", "Bearer secret-token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen: serde_json::Value = resp.json().await.unwrap();
    let l = line_for(&log, "/p?q=1").await;
    let id = l["request_id"].as_str().unwrap();
    assert_eq!(id.len(), 32, "{l}");
    assert_eq!(seen["headers"]["x-request-id"], id);
    assert_eq!(l["method"], "GET");
    assert_eq!(l["host"], "site.test");
    assert_eq!(l["protocol"], "HTTP/1.1");
    assert_eq!(l["status"], 200);
    assert_eq!(l["upstream"], up.addr.to_string());
    assert!(l["upstream_ms"].as_f64().unwrap() >= 0.0, "{l}");
    assert!(l["bytes_sent"].as_u64().unwrap() > 0, "{l}");
    assert_eq!(l["retries"], 0);
    assert_eq!(l["listener"], format!("127.0.0.1:{}", e.http));
    assert!(
        l["client"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{l}"
    );
    assert_eq!(l["tls"], serde_json::Value::Null);
    assert_eq!(l["error"], serde_json::Value::Null);
    let t = l["time"].as_str().unwrap();
    assert!(
        t.len() == 24 && t.ends_with('Z') && &t[19..20] == ".",
        "{t}"
    );

    // A challenge answered by the front, an unknown host, a 502 with its error kind, a POST body.
    let body = r#"{"host": "site.test", "key_authorization": "tok.k"}"#;
    assert_eq!(e.api("PUT", "/v1/challenges/tok", Some(body)).await.0, 200);
    assert_eq!(
        e.get("site.test", "/.well-known/acme-challenge/tok").await,
        (200, "tok.k".to_string())
    );
    let l = line_for(&log, "/.well-known/acme-challenge/tok").await;
    assert_eq!(
        (l["status"].as_u64(), l["bytes_sent"].as_u64()),
        (Some(200), Some(5))
    );
    assert_eq!(l["upstream"], serde_json::Value::Null);
    assert_eq!(e.get("nobody.test", "/unknown").await.0, 404);
    assert_eq!(line_for(&log, "/unknown").await["status"], 404);
    assert_eq!(e.get("dead.test", "/down").await.0, 502);
    let l = line_for(&log, "/down").await;
    assert_eq!(
        (l["status"].as_u64(), l["error"].as_str()),
        (Some(502), Some("ConnectRefused"))
    );
    let resp = e
        .client
        .post(format!("http://127.0.0.1:{}/upload", e.http))
        .header("host", "site.test")
        .body("0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(line_for(&log, "/upload").await["request_bytes"], 10);
    // A Host that is not a host name: refused, and never written as sent.
    assert_eq!(e.get("a..b.test", "/bad-host").await.0, 400);
    let l = line_for(&log, "/bad-host").await;
    assert_eq!(
        (l["status"].as_u64(), l["host"].as_str()),
        (Some(400), Some("-"))
    );

    // TLS: version and SNI.
    e.put_certificate("site.test", &pki.leaf(&["site.test"], Key::Ecdsa))
        .await;
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pki.root_pem()).unwrap())
        .resolve("site.test", ([127, 0, 0, 1], e.https).into())
        .http1_only()
        .build()
        .unwrap();
    let resp = client
        .get(format!("https://site.test:{}/secure", e.https))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let l = line_for(&log, "/secure").await;
    assert_eq!(
        (l["tls"].as_str(), l["sni"].as_str()),
        (Some("TLSv1.3"), Some("site.test"))
    );

    // No header value reaches the log.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains("secret-token") && !text.contains("spoofed"),
        "{text}"
    );
}

#[tokio::test]
async fn sigusr1_reopens_the_file_after_a_rename_and_combined_is_nginx_shaped() {
    let up = Upstream::start("up").await;
    let mut e = Edgeward::new("");
    let log = e.dir.join("access.log");
    e.extra = format!(
        "  access_log: {{path: \"{}\", format: combined}}\n",
        log.display()
    );
    e.spawn().await;
    e.put_domain("site.test", &[up.addr], "").await;
    assert_eq!(e.get("site.test", "/before").await.0, 200);
    let text = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    eventually("the first line", || async {
        text(&log).contains("/before").then_some(())
    })
    .await;
    // logrotate: rename, then tell the process; lines after the signal go to the new file.
    let rotated = e.dir.join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    let pid = e.pid().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-USR1", &pid])
        .status()
        .unwrap()
        .success());
    eventually("a line in the reopened file", || async {
        // Requests until the reopen has happened (a request before it lands in the old file).
        let _ = e.get("site.test", "/after").await;
        text(&log).contains("/after").then_some(())
    })
    .await;
    assert!(text(&rotated).contains("/before"));
    let line = text(&log).lines().next().unwrap().to_string();
    // 127.0.0.1 - - [02/Dec/2026:17:43:19 +0000] "GET /after HTTP/1.1" 200 N "-" "-" "site.test" 0.001
    let re_ok = line.starts_with("127.0.0.1 - - [")
        && line.contains(" +0000] \"GET /after HTTP/1.1\" 200 ")
        && line.contains(" \"-\" \"-\" \"site.test\" ");
    assert!(re_ok, "{line}");
    assert!(e
        .metrics()
        .await
        .contains("edgeward_access_log_dropped_total 0"));
}

#[tokio::test]
async fn bad_access_log_settings_are_refused_naming_the_key() {
    for (yaml, key) in [
        ("access_log: {path: \"\"}", "edgeward.access_log.path"),
        (
            "access_log: {path: \"/tmp/x\", format: xml}",
            "edgeward.access_log.format",
        ),
        (
            "access_log: {path: \"/tmp/x\", rotate: true}",
            "edgeward.access_log",
        ),
        (
            "access_log: {path: \"/nonexistent-dir/a.log\"}",
            "edgeward.access_log.path",
        ),
    ] {
        let e = Edgeward::new(&format!("  {yaml}\n"));
        // Not `-t`: whether the file opens is checked at start-up.
        let err = e.refused(&[]);
        assert!(err.contains(key), "{yaml}: {err}");
    }
}
