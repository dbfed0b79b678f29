//! TLS termination with real clients: the certificate per SNI, wildcard, default, refusal, h2, hot swap
//! on a live connection, bad uploads, restart, redirect to HTTPS.

use crate::certs::{connect, get, peer_serial, Key, Pki};
use crate::harness::{Edgeward, Upstream};
use std::sync::Arc;

/// Upload a certificate under `host`, creating a domain for it first if there is none (a certificate
/// is served only for names that route to a domain pointing at it).
async fn upload(e: &Edgeward, host: &str, body: &str) -> (u16, serde_json::Value) {
    let domain = format!("/v1/domains/{host}");
    if e.api("GET", &domain, None).await.0 == 404 {
        let body = r#"{"upstreams": ["127.0.0.1:9"], "tls": "manual"}"#;
        e.api("PUT", &domain, Some(body)).await;
    }
    e.api("PUT", &format!("/v1/certificates/{host}"), Some(body))
        .await
}

/// A domain on `host` served the certificate stored under `cert_host`.
async fn point_at(e: &Edgeward, host: &str, cert_host: &str) {
    let body = format!(
        r#"{{"upstreams": ["127.0.0.1:9"], "tls": "manual", "certificate_host": "{cert_host}"}}"#
    );
    let (status, v) = e
        .api("PUT", &format!("/v1/domains/{host}"), Some(&body))
        .await;
    assert_eq!(status, 200, "{v}");
}

/// Serial seen by a new handshake with `sni` (Err: the handshake failed).
async fn serial_for(e: &Edgeward, pki: &Arc<Pki>, sni: Option<&str>) -> Result<String, String> {
    let (port, pki, sni) = (e.https, pki.clone(), sni.map(str::to_string));
    tokio::task::spawn_blocking(move || {
        connect(port, sni.as_deref(), &pki.root).map(|s| peer_serial(&s))
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn each_name_gets_its_certificate_wildcard_and_multi_san_included() {
    let pki = Arc::new(Pki::new());
    let up = Upstream::start("up").await;
    let e = Edgeward::start("").await;
    let mut expected = Vec::new();
    for i in 0..12 {
        let host = format!("site{i}.test");
        let key = if i % 3 == 0 { Key::Rsa } else { Key::Ecdsa };
        let leaf = pki.leaf(&[&host], key);
        let (status, v) = upload(&e, &host, &leaf.upload_body()).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["serial"], leaf.serial);
        assert_eq!(v["source"], "manual");
        assert!(v.get("key_pem").is_none());
        expected.push((host, leaf.serial));
    }
    let multi = pki.leaf(
        &["multi.test", "alias-one.test", "alias-two.test"],
        Key::Ecdsa,
    );
    assert_eq!(upload(&e, "multi.test", &multi.upload_body()).await.0, 200);
    // One certificate stored once, attached to each of the customer's domains explicitly.
    point_at(&e, "alias-one.test", "multi.test").await;
    point_at(&e, "alias-two.test", "multi.test").await;
    let wild = pki.leaf(&["*.wild.test"], Key::Ecdsa);
    assert_eq!(upload(&e, "*.wild.test", &wild.upload_body()).await.0, 200);
    let www = pki.leaf(&["www.wild.test"], Key::Ecdsa);
    assert_eq!(upload(&e, "www.wild.test", &www.upload_body()).await.0, 200);

    for (host, serial) in &expected {
        assert_eq!(
            serial_for(&e, &pki, Some(host)).await.as_ref(),
            Ok(serial),
            "{host}"
        );
    }
    for name in ["multi.test", "alias-one.test", "alias-two.test"] {
        assert_eq!(
            serial_for(&e, &pki, Some(name)).await,
            Ok(multi.serial.clone()),
            "{name}"
        );
    }
    assert_eq!(
        serial_for(&e, &pki, Some("shop.wild.test")).await,
        Ok(wild.serial.clone())
    );
    assert_eq!(
        serial_for(&e, &pki, Some("www.wild.test")).await,
        Ok(www.serial.clone()),
        "exact wins"
    );
    assert!(
        serial_for(&e, &pki, Some("a.b.wild.test")).await.is_err(),
        "one level only"
    );
    assert!(
        serial_for(&e, &pki, Some("unknown.test")).await.is_err(),
        "no default: refused"
    );
    assert!(
        serial_for(&e, &pki, None).await.is_err(),
        "no SNI, no default: refused"
    );

    // The listing shows every certificate, never a key.
    let (_, list) = e.api("GET", "/v1/certificates", None).await;
    assert_eq!(list.as_array().unwrap().len(), 15);
    assert!(!list.to_string().contains("PRIVATE KEY"));
    let (_, one) = e.api("GET", "/v1/certificates/multi.test", None).await;
    assert_eq!(
        one["names"],
        serde_json::json!(["alias-one.test", "alias-two.test", "multi.test"])
    );
    assert!(one["not_after"].as_str().unwrap().ends_with('Z'));
    assert!(one["issuer"]
        .as_str()
        .unwrap()
        .contains("edgeward test intermediate"));

    // Requests over TLS are routed, with X-Forwarded-Proto https.
    e.put_domain("site1.test", &[up.addr], "").await;
    let (port, root) = (e.https, pki.root.clone());
    let (status, body) = tokio::task::spawn_blocking(move || {
        let mut s = connect(port, Some("site1.test"), &root).unwrap();
        get(&mut s, "site1.test", "/over-tls")
    })
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("\"x-forwarded-proto\":\"https\""), "{body}");

    // Handshakes are counted by result; refused ones too.
    let text = e.metrics().await;
    assert!(
        text.contains("edgeward_tls_handshakes_total{result=\"no_certificate\"} 3"),
        "{text}"
    );
    assert!(text.contains("edgeward_tls_sni_misses_total 2"), "{text}");
    assert!(text.contains("edgeward_certificates 15"), "{text}");
    assert!(
        !text.contains("edgeward_tls_handshakes_total{result=\"ok\"} 0"),
        "{text}"
    );

    // Deleting a certificate stops serving it; a name it shared falls back to nothing.
    assert_eq!(
        e.api("DELETE", "/v1/certificates/multi.test", None).await.0,
        204
    );
    assert!(serial_for(&e, &pki, Some("alias-one.test")).await.is_err());
    assert_eq!(
        e.api("DELETE", "/v1/certificates/multi.test", None).await.0,
        404
    );
}

#[tokio::test]
async fn default_certificate_serves_unknown_and_missing_sni() {
    let pki = Arc::new(Pki::new());
    let dir = tempfile::tempdir().unwrap();
    let def = pki.leaf(&["default.invalid"], Key::Ecdsa);
    std::fs::write(dir.path().join("d.pem"), &def.chain_pem).unwrap();
    std::fs::write(dir.path().join("d.key"), &def.key_pem).unwrap();
    let extra = format!(
        "  tls:\n    default_certificate: {{chain: \"{0}/d.pem\", key: \"{0}/d.key\"}}\n",
        dir.path().display()
    );
    let e = Edgeward::start(&extra).await;
    let known = pki.leaf(&["known.test"], Key::Ecdsa);
    assert_eq!(upload(&e, "known.test", &known.upload_body()).await.0, 200);
    // Hostname checks are the client's business: use no-SNI connections to see the default.
    assert_eq!(serial_for(&e, &pki, None).await, Ok(def.serial.clone()));
    assert_eq!(
        serial_for(&e, &pki, Some("known.test")).await,
        Ok(known.serial.clone())
    );
    // An unknown SNI gets the default; a verifying client then refuses the name.
    let err = serial_for(&e, &pki, Some("stranger.test"))
        .await
        .unwrap_err();
    assert!(
        err.to_lowercase().contains("hostname") || err.contains("verify"),
        "{err}"
    );
    let text = e.metrics().await;
    assert!(text.contains("edgeward_tls_sni_misses_total 1"), "{text}");
}

#[tokio::test]
async fn h2_is_negotiated_and_routed() {
    let pki = Arc::new(Pki::new());
    let up = Upstream::start("up").await;
    let e = Edgeward::start("").await;
    let leaf = pki.leaf(&["h2.test"], Key::Ecdsa);
    assert_eq!(upload(&e, "h2.test", &leaf.upload_body()).await.0, 200);
    e.put_domain("h2.test", &[up.addr], "").await;
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pki.root_pem()).unwrap())
        .resolve("h2.test", ([127, 0, 0, 1], e.https).into())
        .build()
        .unwrap();
    let resp = client
        .get(format!("https://h2.test:{}/via-h2", e.https))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        (v["upstream"].as_str(), v["path"].as_str()),
        (Some("up"), Some("/via-h2"))
    );

    // Challenges are answered over TLS too: HTTP/2 by Pingora's session, HTTP/1.1 in front of it.
    let body = r#"{"host": "h2.test", "key_authorization": "tls-tok.k"}"#;
    assert_eq!(
        e.api("PUT", "/v1/challenges/tls-tok", Some(body)).await.0,
        200
    );
    let h1 = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pki.root_pem()).unwrap())
        .resolve("h2.test", ([127, 0, 0, 1], e.https).into())
        .http1_only()
        .build()
        .unwrap();
    for (client, version) in [
        (&client, reqwest::Version::HTTP_2),
        (&h1, reqwest::Version::HTTP_11),
    ] {
        let resp = client
            .get(format!(
                "https://h2.test:{}/.well-known/acme-challenge/tls-tok",
                e.https
            ))
            .send()
            .await
            .unwrap();
        assert_eq!((resp.version(), resp.status().as_u16()), (version, 200));
        assert_eq!(resp.text().await.unwrap(), "tls-tok.k");
    }
}

#[tokio::test]
async fn swap_keeps_live_connections_and_new_handshakes_see_the_new_serial() {
    let pki = Arc::new(Pki::new());
    let up = Upstream::start("up").await;
    let e = Edgeward::start("").await;
    e.put_domain("swap.test", &[up.addr], "").await;
    let old = pki.leaf(&["swap.test"], Key::Ecdsa);
    assert_eq!(upload(&e, "swap.test", &old.upload_body()).await.0, 200);

    let (port, root) = (e.https, pki.root.clone());
    let mut live = tokio::task::spawn_blocking(move || {
        let mut s = connect(port, Some("swap.test"), &root).unwrap();
        assert_eq!(get(&mut s, "swap.test", "/before").0, 200);
        s
    })
    .await
    .unwrap();
    assert_eq!(peer_serial(&live), old.serial);

    let new = pki.leaf(&["swap.test"], Key::Rsa);
    let (status, v) = upload(&e, "swap.test", &new.upload_body()).await;
    assert_eq!(
        (status, v["serial"].as_str()),
        (200, Some(new.serial.as_str()))
    );

    let live = tokio::task::spawn_blocking(move || {
        let (status, body) = get(&mut live, "swap.test", "/after");
        assert_eq!(
            status, 200,
            "the connection opened before the swap still works"
        );
        assert!(body.contains("/after"));
        live
    })
    .await
    .unwrap();
    assert_eq!(
        peer_serial(&live),
        old.serial,
        "same connection, same handshake"
    );
    assert_eq!(
        serial_for(&e, &pki, Some("swap.test")).await,
        Ok(new.serial.clone())
    );
}

#[tokio::test]
async fn bad_uploads_get_400_and_change_nothing() {
    let pki = Arc::new(Pki::new());
    let e = Edgeward::start("").await;
    let good = pki.leaf(&["bad.test"], Key::Ecdsa);
    assert_eq!(upload(&e, "bad.test", &good.upload_body()).await.0, 200);

    let other = pki.leaf(&["bad.test"], Key::Ecdsa);
    let wrong_key =
        serde_json::json!({"chain_pem": good.chain_pem, "key_pem": other.key_pem}).to_string();
    let expired = pki
        .leaf_valid(&["bad.test"], Key::Ecdsa, (-30, -1))
        .upload_body();
    let uncovered = pki.leaf(&["other.test"], Key::Ecdsa).upload_body();
    let garbage = serde_json::json!({"chain_pem": "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n", "key_pem": good.key_pem}).to_string();
    let garbage_key =
        serde_json::json!({"chain_pem": good.chain_pem, "key_pem": "not a key"}).to_string();
    let missing = serde_json::json!({"chain_pem": good.chain_pem}).to_string();
    let unknown = serde_json::json!({"chain_pem": good.chain_pem, "key_pem": good.key_pem, "x": 1})
        .to_string();
    let cases = [
        (wrong_key.as_str(), "key_pem", "does not match"),
        (expired.as_str(), "chain_pem", "expired"),
        (uncovered.as_str(), "chain_pem", "do not cover"),
        (garbage.as_str(), "chain_pem", "PEM"),
        (garbage_key.as_str(), "key_pem", "PEM"),
        (missing.as_str(), "key_pem", "missing"),
        (unknown.as_str(), "x", "unknown field"),
        ("{", "body", ""),
    ];
    for (body, field, why) in cases {
        let (status, v) = upload(&e, "bad.test", body).await;
        assert_eq!(status, 400, "{v}");
        assert_eq!(v["field"], field, "{v}");
        assert!(v["error"].as_str().unwrap().contains(why), "{v}");
    }
    let (status, v) = upload(&e, "bad..test", &good.upload_body()).await;
    assert_eq!((status, v["field"].as_str()), (400, Some("host")));
    let (_, v) = e.api("GET", "/v1/certificates/bad.test", None).await;
    assert_eq!(
        v["serial"], good.serial,
        "the stored certificate is unchanged"
    );
    assert_eq!(
        serial_for(&e, &pki, Some("bad.test")).await,
        Ok(good.serial.clone())
    );
    assert_eq!(
        e.api("GET", "/v1/certificates", None)
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn certificates_survive_a_restart_with_keys_kept_private() {
    use std::os::unix::fs::PermissionsExt;
    let pki = Arc::new(Pki::new());
    let mut e = Edgeward::start("").await;
    let a = pki.leaf(&["keep.test", "alias.keep.test"], Key::Ecdsa);
    let w = pki.leaf(&["*.keep.test"], Key::Rsa);
    assert_eq!(upload(&e, "keep.test", &a.upload_body()).await.0, 200);
    assert_eq!(upload(&e, "*.keep.test", &w.upload_body()).await.0, 200);
    let mode = |p: std::path::PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // The write-ahead log holds the keys until a checkpoint (or the next start) writes the files.
    assert_eq!(mode(e.state_dir().join("journal.log")), 0o600);
    e.kill();
    e.settle_state();
    let files: Vec<_> = std::fs::read_dir(e.state_dir().join("certs"))
        .unwrap()
        .map(|f| f.unwrap().path())
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    for f in files {
        assert_eq!(mode(f), 0o600);
    }
    e.restart().await;
    assert_eq!(
        serial_for(&e, &pki, Some("keep.test")).await,
        Ok(a.serial.clone())
    );
    // Listed by keep.test's certificate, but routed to the wildcard domain: served its certificate.
    assert_eq!(
        serial_for(&e, &pki, Some("alias.keep.test")).await,
        Ok(w.serial.clone())
    );
    assert_eq!(
        serial_for(&e, &pki, Some("x.keep.test")).await,
        Ok(w.serial.clone())
    );
    let text = e.metrics().await;
    assert!(text.contains("edgeward_certificates 2"), "{text}");
}

#[tokio::test]
async fn redirect_https_sends_308_but_never_for_challenges() {
    let up = Upstream::start("up").await;
    let e = Edgeward::start("").await;
    e.put_domain("secure.test", &[up.addr], r#", "redirect_https": true"#)
        .await;
    let body = r#"{"host": "secure.test", "key_authorization": "rt.k"}"#;
    assert_eq!(e.api("PUT", "/v1/challenges/rt", Some(body)).await.0, 200);
    let resp = e
        .client
        .get(format!("http://127.0.0.1:{}/a/b?x=1&y=2", e.http))
        .header("host", "Secure.test:80")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 308);
    let want = format!("https://secure.test:{}/a/b?x=1&y=2", e.https);
    assert_eq!(resp.headers()["location"], want.as_str());
    assert_eq!(
        e.get("secure.test", "/.well-known/acme-challenge/rt").await,
        (200, "rt.k".into())
    );
    assert_eq!(
        e.get("secure.test", "/.well-known/acme-challenge/nope")
            .await
            .0,
        404
    );
}

/// The serial `openssl s_client` is served for `sni` (None: the handshake sent no certificate).
async fn s_client_serial(port: u16, sni: &str) -> Option<String> {
    let out = tokio::process::Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-servername", sni, "-showcerts"])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("openssl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let start = text.find("-----BEGIN CERTIFICATE-----")?;
    let end = text[start..].find("-----END CERTIFICATE-----")? + start + 25;
    let cert = openssl::x509::X509::from_pem(text[start..end].as_bytes()).ok()?;
    let bn = cert.serial_number().to_bn().unwrap();
    Some(bn.to_hex_str().unwrap().to_lowercase())
}

#[tokio::test]
async fn certificates_stay_with_their_tenant_whatever_their_names_list() {
    let pki = Arc::new(Pki::new());
    let dir = tempfile::tempdir().unwrap();
    let def = pki.leaf(&["default.invalid"], Key::Ecdsa);
    std::fs::write(dir.path().join("d.pem"), &def.chain_pem).unwrap();
    std::fs::write(dir.path().join("d.key"), &def.key_pem).unwrap();
    let extra = format!(
        "  tls:\n    default_certificate: {{chain: \"{0}/d.pem\", key: \"{0}/d.key\"}}\n",
        dir.path().display()
    );
    let e = Edgeward::start(&extra).await;
    // Tenant A: `*.v.test` with its wildcard certificate.
    let wild = pki.leaf(&["*.v.test"], Key::Ecdsa);
    assert_eq!(upload(&e, "*.v.test", &wild.upload_body()).await.0, 200);
    // Tenant B: `evil.test`, whose upload also lists A's name and a name nobody owns.
    let evil = pki.leaf(&["evil.test", "shop.v.test", "nobody.test"], Key::Ecdsa);
    let (status, v) = upload(&e, "evil.test", &evil.upload_body()).await;
    assert_eq!(status, 200, "{v}");
    let port = e.https;
    assert_eq!(
        s_client_serial(port, "evil.test").await,
        Some(evil.serial.clone())
    );
    assert_eq!(
        s_client_serial(port, "shop.v.test").await,
        Some(wild.serial.clone()),
        "A's name keeps A's certificate"
    );
    assert_eq!(
        s_client_serial(port, "nobody.test").await,
        Some(def.serial.clone()),
        "a name no domain owns gets the default, not B's certificate"
    );
    // Even a domain B creates for `nobody.test` is not served B's certificate unless it points at
    // it; pointing at it serves it (B's own multi-SAN certificate, attached explicitly).
    let body = r#"{"upstreams": ["127.0.0.1:9"], "tls": "manual"}"#;
    e.api("PUT", "/v1/domains/nobody.test", Some(body)).await;
    assert_eq!(
        s_client_serial(port, "nobody.test").await,
        Some(def.serial.clone())
    );
    point_at(&e, "nobody.test", "evil.test").await;
    assert_eq!(
        s_client_serial(port, "nobody.test").await,
        Some(evil.serial.clone())
    );
    // A reference to a certificate that does not cover the name serves nothing of it.
    point_at(&e, "other.v2.test", "evil.test").await;
    assert_eq!(
        s_client_serial(port, "other.v2.test").await,
        Some(def.serial.clone())
    );
    // The reference is part of the domain object; a bad one is a 400 naming the field.
    let (_, d) = e.api("GET", "/v1/domains/nobody.test", None).await;
    assert_eq!(d["certificate_host"], "evil.test");
    let bad = r#"{"upstreams": ["127.0.0.1:9"], "certificate_host": "not a host"}"#;
    let (status, v) = e.api("PUT", "/v1/domains/x.test", Some(bad)).await;
    assert_eq!(
        (status, v["field"].as_str()),
        (400, Some("certificate_host")),
        "{v}"
    );
}

#[tokio::test]
async fn domains_stored_before_certificate_references_keep_what_they_were_served() {
    let pki = Arc::new(Pki::new());
    let mut e = Edgeward::start("").await;
    let shop = pki.leaf(&["shop.test", "www.shop.test"], Key::Ecdsa);
    assert_eq!(upload(&e, "shop.test", &shop.upload_body()).await.0, 200);
    let wild = pki.leaf(&["*.v.test"], Key::Ecdsa);
    assert_eq!(upload(&e, "*.v.test", &wild.upload_body()).await.0, 200);
    for host in ["www.shop.test", "a.v.test", "plain.test"] {
        let body = r#"{"upstreams": ["127.0.0.1:9"], "tls": "manual"}"#;
        let (status, _) = e
            .api("PUT", &format!("/v1/domains/{host}"), Some(body))
            .await;
        assert_eq!(status, 200);
    }
    // Make the stored domains look as an older edgeward wrote them: no `certificate_host`.
    e.kill();
    e.settle_state();
    let domains = e.state_dir().join("domains");
    for f in std::fs::read_dir(&domains).unwrap() {
        let path = f.unwrap().path();
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        v.as_object_mut().unwrap().remove("certificate_host");
        std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
    }
    e.spawn().await;
    // What the old rules served is served still, and written back as explicit references.
    let port = e.https;
    assert_eq!(
        s_client_serial(port, "www.shop.test").await,
        Some(shop.serial.clone())
    );
    assert_eq!(
        s_client_serial(port, "a.v.test").await,
        Some(wild.serial.clone())
    );
    let stored = crate::harness::eventually("the legacy domains to be written back", || async {
        let s = e.stored();
        let all_explicit = s
            .domains
            .iter()
            .all(|d| d.certificate_host != edgeward::model::CertRef::Legacy);
        all_explicit.then_some(s)
    })
    .await;
    let by_host = |h: &str| stored.domains.iter().find(|d| d.host == h).unwrap().clone();
    use edgeward::model::CertRef;
    assert_eq!(
        by_host("www.shop.test").certificate_host,
        CertRef::Shared("shop.test".into())
    );
    assert_eq!(
        by_host("a.v.test").certificate_host,
        CertRef::Shared("*.v.test".into())
    );
    assert_eq!(by_host("plain.test").certificate_host, CertRef::Own);
    // A certificate uploaded after the migration that lists `plain.test` is not served for it, even
    // after another restart.
    let evil = pki.leaf(&["evil.test", "plain.test"], Key::Ecdsa);
    assert_eq!(upload(&e, "evil.test", &evil.upload_body()).await.0, 200);
    e.restart().await;
    assert_eq!(s_client_serial(e.https, "plain.test").await, None);
    assert_eq!(
        s_client_serial(e.https, "www.shop.test").await,
        Some(shop.serial)
    );
}
