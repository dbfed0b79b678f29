//! The console in a real headless Chromium: sign-in (form and `#token=`), search and paging over
//! 2,000 domains, adding and editing a domain (a bad upstream shows its field error and changes
//! nothing), a certificate upload, delete with confirmation, Let's Encrypt switched on against
//! Pebble until the state turns valid on screen, renew now (console and CLI), the activity view.
//! Every test saves screenshots under `target/console-screenshots/`.

use crate::browser::{Browser, Kind};
use crate::certs::{Key, Pki};
use crate::harness::{bin, eventually, Edgeward, Upstream, TOKEN};
use crate::pebble::Pebble;
use serde_json::{json, Value};

fn console(e: &Edgeward) -> String {
    format!("http://127.0.0.1:{}/console/", e.admin)
}

/// Signed in through the URL fragment, as an operator's link would.
async fn signed_in(e: &Edgeward, kind: Kind) -> Browser {
    let b = Browser::start_kind(kind).await;
    b.goto(&format!("{}#token={TOKEN}", console(e))).await;
    b.find("#overview-cards .card").await;
    b
}

/// The hosts in the domains table, read in one step (the table is re-rendered as it pages).
async fn rows(b: &Browser) -> Vec<String> {
    let v = b
        .eval("return [...document.querySelectorAll('#domains tbody td.host')].map(e => e.textContent)")
        .await;
    serde_json::from_value(v).unwrap()
}

/// Wait for the domains table to show exactly `want` (first, last, count).
async fn wait_rows(b: &Browser, first: &str, last: &str, n: usize) {
    eventually(&format!("rows {first}..{last} ({n})"), || async {
        let r = rows(b).await;
        (r.len() == n && r[0] == first && r[n - 1] == last).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signs_in_searches_and_pages_over_2000_domains() {
    signs_in_searches_and_pages_over_2000_domains_in(Kind::Chromium).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firefox_signs_in_searches_and_pages_over_2000_domains() {
    signs_in_searches_and_pages_over_2000_domains_in(Kind::Firefox).await;
}

async fn signs_in_searches_and_pages_over_2000_domains_in(kind: Kind) {
    let up = Upstream::start("up").await;
    let mut e = Edgeward::new("");
    e.env.push(("RUST_LOG".into(), "info".into()));
    e.spawn().await;
    let ops: Vec<Value> = (0..2000)
        .map(|i| json!({"op": "put_domain", "host": format!("d{i:04}.example.test"), "upstreams": [up.addr.to_string()]}))
        .collect();
    let (status, _) = e
        .api("POST", "/v1/batch", Some(&json!({"ops": ops}).to_string()))
        .await;
    assert_eq!(status, 200);
    // Start-up logs where the console is, never with the token.
    let log = e.log_of();
    assert!(log.contains(&format!("console: {}", console(&e))), "{log}");
    assert!(!log.contains(TOKEN));

    let b = Browser::start_kind(kind).await;
    b.goto(&console(&e)).await;
    b.find("#login").await;
    // Without a token: the form and no data.
    assert_eq!(
        b.eval("return document.getElementById('nav').hidden").await,
        true
    );
    assert_eq!(b.count("table, .card").await, 0);
    b.screenshot("login").await;
    b.fill("#token", "not-the-token").await;
    b.click("#login button[type=submit]").await;
    b.wait_text("#login-error", "the refusal", |t| t.contains("refused"))
        .await;
    assert_eq!(b.count(".card").await, 0);
    // The keyboard is enough: type the token, press Enter.
    b.fill("#token", TOKEN).await;
    b.find("#token").await.send_keys("\u{E007}").await.unwrap();
    b.wait_text("#overview-cards", "the domain count", |t| {
        t.contains("2000")
    })
    .await;
    assert_eq!(
        b.eval("return sessionStorage.getItem('edgeward.token')")
            .await,
        TOKEN
    );
    assert_eq!(b.eval("return document.cookie").await, "");
    b.screenshot("overview").await;

    b.click("nav a[data-view=domains]").await;
    wait_rows(&b, "d0000.example.test", "d0049.example.test", 50).await;
    b.click("#next").await;
    wait_rows(&b, "d0050.example.test", "d0099.example.test", 50).await;
    b.click("#next").await;
    wait_rows(&b, "d0100.example.test", "d0149.example.test", 50).await;
    b.click("#prev").await;
    wait_rows(&b, "d0050.example.test", "d0099.example.test", 50).await;
    b.fill("#search", "d19").await;
    wait_rows(&b, "d1900.example.test", "d1949.example.test", 50).await;
    b.click("#next").await;
    wait_rows(&b, "d1950.example.test", "d1999.example.test", 50).await;
    assert!(
        b.find("#next")
            .await
            .attr("disabled")
            .await
            .unwrap()
            .is_some(),
        "the last page has no next"
    );
    b.fill("#search", "nothing-like-this").await;
    b.wait_text("main .empty", "the empty state", |t| {
        t.contains("No domain matches")
    })
    .await;
    b.fill("#search", "d000").await;
    wait_rows(&b, "d0000.example.test", "d0009.example.test", 10).await;
    b.screenshot("domains").await;
    // A phone: nothing wider than the screen.
    b.client.set_window_size(390, 844).await.unwrap();
    let wide = b
        .eval("return document.documentElement.scrollWidth - window.innerWidth")
        .await;
    assert!(
        wide.as_i64().unwrap() <= 0,
        "page wider than a phone by {wide}px"
    );
    b.screenshot("domains-phone").await;

    // Signing out forgets the token; a `#token=` link signs in and leaves the address bar clean.
    b.click("#signout").await;
    b.find("#login").await;
    assert_eq!(
        b.eval("return sessionStorage.getItem('edgeward.token')")
            .await,
        Value::Null
    );
    b.goto(&format!("{}#token={TOKEN}", console(&e))).await;
    b.wait_text("#overview-cards", "the domain count", |t| {
        t.contains("2000")
    })
    .await;
    let url = b.client.current_url().await.unwrap().to_string();
    assert!(!url.contains(TOKEN), "{url}");
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adds_edits_uploads_and_deletes_a_domain() {
    adds_edits_uploads_and_deletes_a_domain_in(Kind::Chromium).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firefox_adds_edits_uploads_and_deletes_a_domain() {
    adds_edits_uploads_and_deletes_a_domain_in(Kind::Firefox).await;
}

async fn adds_edits_uploads_and_deletes_a_domain_in(kind: Kind) {
    let up = Upstream::start("up").await;
    let e = Edgeward::start("").await;
    let b = signed_in(&e, kind).await;
    let host = "new.example.test";

    b.goto(&format!("{}#/domain/", console(&e))).await;
    b.fill("#f-host", host).await;
    b.fill("#f-upstreams", &up.addr.to_string()).await;
    b.select("#f-tls", "manual").await;
    b.click("#save").await;
    b.wait_text("h1", "the domain page", |t| t == host).await;
    let (status, d) = e.api("GET", &format!("/v1/domains/{host}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(d["upstreams"], json!([up.addr.to_string()]));
    assert_eq!(d["tls"], "manual");

    // A bad upstream: its error next to the field, nothing changed.
    b.fill("#f-upstreams", "nonsense").await;
    b.click("#save").await;
    let msg = b
        .wait_text("[data-error-for=upstreams]", "the upstream's error", |t| {
            !t.is_empty()
        })
        .await;
    assert!(msg.contains("nonsense") || msg.contains("address"), "{msg}");
    assert_eq!(
        e.api("GET", &format!("/v1/domains/{host}"), None).await.1,
        d
    );
    b.screenshot("field-error").await;

    // A certificate that is not one: the API's error next to the chain, nothing stored.
    let pki = Pki::new();
    let leaf = pki.leaf(&[host], Key::Ecdsa);
    b.fill(
        "#f-chain",
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    )
    .await;
    b.fill("#f-key", &leaf.key_pem).await;
    b.click("#upload").await;
    b.wait_text("[data-error-for=chain_pem]", "the chain's error", |t| {
        !t.is_empty()
    })
    .await;
    let (status, _) = e
        .api("GET", &format!("/v1/certificates/{host}"), None)
        .await;
    assert_eq!(status, 404);
    // The real one, the chain pasted and the key from a file: served, and shown.
    b.fill("#f-chain", &leaf.chain_pem).await;
    let key_file = e.dir.join("upload-key.pem");
    std::fs::write(&key_file, &leaf.key_pem).unwrap();
    b.fill("#f-key", "").await;
    b.find("#f-key-file")
        .await
        .send_keys(key_file.to_str().unwrap())
        .await
        .unwrap();
    eventually("the key file read into the field", || async {
        let v = b
            .eval("return document.getElementById('f-key').value")
            .await;
        (v.as_str() == Some(leaf.key_pem.as_str())).then_some(())
    })
    .await;
    b.click("#upload").await;
    b.wait_text("#cert-status", "the uploaded certificate", |t| {
        t.contains(&leaf.serial) && t.contains("valid")
    })
    .await;
    let (_, info) = e
        .api("GET", &format!("/v1/certificates/{host}"), None)
        .await;
    assert_eq!(info["serial"], leaf.serial.as_str());
    b.screenshot("domain").await;

    b.goto(&format!("{}#/certificates", console(&e))).await;
    b.wait_text("#certificates", "the certificate list", |t| {
        t.contains(host)
    })
    .await;
    b.screenshot("certificates").await;

    // Delete, confirmed in the dialog.
    b.goto(&format!("{}#/domain/{host}", console(&e))).await;
    b.click("#delete").await;
    b.click("#confirm-delete #confirm").await;
    b.wait_text("h1", "the domain list", |t| t == "Domains")
        .await;
    let (status, _) = e.api("GET", &format!("/v1/domains/{host}"), None).await;
    assert_eq!(status, 404);

    b.goto(&format!("{}#/activity", console(&e))).await;
    let events = b
        .wait_text("#events", "the activity", |t| t.contains("domain.deleted"))
        .await;
    for kind in ["domain.put", "certificate.uploaded", "certificate.swapped"] {
        assert!(events.contains(kind), "{kind} in {events}");
    }
    b.screenshot("activity").await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switches_lets_encrypt_on_and_renews_now() {
    switches_lets_encrypt_on_and_renews_now_in(Kind::Chromium).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firefox_switches_lets_encrypt_on_and_renews_now() {
    switches_lets_encrypt_on_and_renews_now_in(Kind::Firefox).await;
}

async fn switches_lets_encrypt_on_and_renews_now_in(kind: Kind) {
    let up = Upstream::start("up").await;
    let mut e = Edgeward::new("");
    // Validated with TLS-ALPN-01, chosen in the form, on edgeward's HTTPS listener.
    let p = Pebble::start_with(crate::pebble::PebbleOpts {
        http_port: e.http,
        tls_port: Some(e.https),
        ..Default::default()
    })
    .await;
    e.extra = p.acme_yaml("    retry: {min_seconds: 1, max_seconds: 8}\n");
    e.spawn().await;
    let host = "le.test";
    e.put_domain(host, &[up.addr], "").await;
    let b = signed_in(&e, kind).await;
    b.goto(&format!("{}#/domain/{host}", console(&e))).await;
    b.find("#f-tls").await;
    assert!(!b.find("#renew").await.is_displayed().await.unwrap());
    b.select("#f-tls", "auto").await;
    // DNS-01 is not configured on this node: refused, next to the field.
    b.select("#f-acme-challenge", "dns-01").await;
    b.click("#save").await;
    let msg = b
        .wait_text(
            "[data-error-for=acme_challenge]",
            "the challenge's error",
            |t| !t.is_empty(),
        )
        .await;
    assert!(msg.contains("dns01"), "{msg}");
    b.select("#f-acme-challenge", "tls-alpn-01").await;
    b.click("#save").await;
    b.wait_text("#cert-state", "the certificate to turn valid", |t| {
        t == "valid"
    })
    .await;
    let serial = |v: &Value| v["serial"].as_str().unwrap_or("").to_string();
    let first = serial(
        &e.api("GET", &format!("/v1/certificates/{host}"), None)
            .await
            .1,
    );
    b.wait_text("#cert-status", "the serial shown", |t| t.contains(&first))
        .await;
    b.screenshot("lets-encrypt-valid").await;
    let (_, d) = e.api("GET", &format!("/v1/domains/{host}"), None).await;
    assert_eq!(d["acme_challenge"], "tls-alpn-01", "{d}");

    b.click("#renew").await;
    let second = eventually("the renewed certificate", || async {
        let s = serial(
            &e.api("GET", &format!("/v1/certificates/{host}"), None)
                .await
                .1,
        );
        (!s.is_empty() && s != first).then_some(s)
    })
    .await;
    b.wait_text("#cert-status", "the new serial on screen", |t| {
        t.contains(&second)
    })
    .await;
    b.screenshot("renewed").await;

    // The CLI does the same through the same API.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(bin())
            .args([
                "--admin",
                &format!("127.0.0.1:{}", e.admin),
                "--token",
                TOKEN,
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let shown: Value = serde_json::from_str(&cli(&["domain", "renew", host])).unwrap();
    assert_eq!(shown["host"], host);
    eventually("the second renewal", || async {
        let s = serial(
            &e.api("GET", &format!("/v1/certificates/{host}"), None)
                .await
                .1,
        );
        (!s.is_empty() && s != first && s != second).then_some(())
    })
    .await;
    let events = eventually("three issued orders in the events", || async {
        let out = cli(&["events"]);
        (out.matches("order.issued").count() >= 3).then_some(out)
    })
    .await;
    assert!(events.contains("renewal.requested"), "{events}");
    assert!(
        events
            .lines()
            .any(|l| l.contains("order.started") && l.contains(host)),
        "{events}"
    );
    b.goto(&format!("{}#/activity", console(&e))).await;
    b.wait_text("#events", "the renewals in the activity", |t| {
        t.matches("order.issued").count() >= 3
    })
    .await;
    b.close().await;
}
