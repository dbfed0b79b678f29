//! `edgeward import haproxy` on a generated HAProxy configuration of 10k domains (a map, an ACL rule,
//! four backends, a crt-list) that HAProxy itself accepts and serves: the dry run lists what would
//! change and changes nothing, the import applies it in one batch and lists what it could not
//! translate, and then HAProxy and edgeward send the same requests to the same backends.

use crate::certs::{Key, Pki};
use crate::haproxy::HaProxy;
use crate::harness::{bin, eventually, free_port, Edgeward, Upstream, TOKEN};
use serde_json::Value;
use std::process::Command;

const N: usize = 10_000;

fn host(i: usize) -> String {
    format!("site{i}.import.test")
}

fn import(e: &Edgeward, args: &[&str]) -> Value {
    let out = Command::new(bin())
        .args(["import", "haproxy"])
        .args(args)
        .args([
            "--admin",
            &format!("http://127.0.0.1:{}", e.admin),
            "--token",
            TOKEN,
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|err| panic!("{err}: {stderr}"))
}

async fn upstream_of(client: &reqwest::Client, port: u16, host: &str) -> Option<String> {
    let r = client
        .get(format!("http://127.0.0.1:{port}/"))
        .header("host", host)
        .send()
        .await
        .ok()?;
    let v: Value = r.json().await.ok()?;
    v["upstream"].as_str().map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10k_domain_haproxy_config_is_imported_and_routed_the_same() {
    let pki = Pki::new();
    let ups = [
        Upstream::start("u0").await,
        Upstream::start("u1").await,
        Upstream::start("u2").await,
        Upstream::start("u3").await,
    ];
    let e = Edgeward::start("").await;
    let dir = e.dir.join("haproxy");
    std::fs::create_dir_all(&dir).unwrap();
    // The map: 10k hosts over four backends; three ACL-routed hosts; three certificates.
    let map: String = (0..N)
        .map(|i| format!("{} be{}\n", host(i), i % 4))
        .collect();
    std::fs::write(dir.join("hosts.map"), map).unwrap();
    let mut crt_list = String::new();
    for i in [1, 2, 3] {
        let leaf = pki.leaf(&[&host(i)], Key::Ecdsa);
        let pem = dir.join(format!("{}.pem", host(i)));
        std::fs::write(&pem, format!("{}{}", leaf.chain_pem, leaf.key_pem)).unwrap();
        crt_list += &format!("{}\n", pem.display());
    }
    std::fs::write(dir.join("crt-list"), &crt_list).unwrap();
    let (http, https) = (free_port(), free_port());
    let mut cfg = format!(
        "global\n  maxconn 1000\ndefaults\n  mode http\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n\
         frontend fe\n  bind 127.0.0.1:{http}\n  bind 127.0.0.1:{https} ssl crt-list {crt}\n\
         \x20 acl is_shop hdr(host) -i shop.import.test www.shop.import.test\n\
         \x20 http-request set-header X-Edge haproxy\n\
         \x20 use_backend be3 if is_shop\n\
         \x20 use_backend %[req.hdr(host),lower,map({map},be0)]\n\
         \x20 default_backend be0\n",
        crt = dir.join("crt-list").display(),
        map = dir.join("hosts.map").display(),
    );
    for (i, u) in ups.iter().enumerate() {
        cfg += &format!("backend be{i}\n  server s{i} {} check\n", u.addr);
    }
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg).unwrap();
    // HAProxy itself accepts the configuration, and serves it.
    let _haproxy = HaProxy::start(&path);
    let cfg_arg = path.display().to_string();
    let list_arg = dir.join("crt-list").display().to_string();

    // Dry run: everything would be added, nothing is.
    let dry = import(
        &e,
        &["--config", &cfg_arg, "--crt-list", &list_arg, "--dry-run"],
    );
    assert_eq!(
        dry["add"].as_array().unwrap().len(),
        N + 2,
        "{}",
        dry["summary"]
    );
    assert_eq!(dry["change"].as_array().unwrap().len(), 0);
    assert_eq!(dry["summary"]["certificates"], 3);
    assert_eq!(
        e.api("GET", "/v1/domains?limit=1", None).await.1["items"],
        serde_json::json!([])
    );

    // The import: one batch.
    let done = import(&e, &["--config", &cfg_arg, "--crt-list", &list_arg]);
    assert_eq!(done["applied"], N + 2 + 3, "{done}");
    let why = done["summary"]["untranslated"].to_string();
    assert!(
        why.contains("default_backend") && why.contains("http-request"),
        "{why}"
    );
    let (s, d) = e
        .api("GET", &format!("/v1/domains/{}", host(2)), None)
        .await;
    assert_eq!((s, d["tls"].as_str()), (200, Some("manual")), "{d}");
    assert_eq!(
        e.api("GET", &format!("/v1/certificates/{}", host(2)), None)
            .await
            .0,
        200
    );
    // A second dry run: nothing left to change.
    let again = import(&e, &["--config", &cfg_arg, "--dry-run"]);
    assert_eq!(
        (
            again["add"].as_array().unwrap().len(),
            again["unchanged"].as_u64()
        ),
        (0, Some(N as u64 + 2))
    );

    // The same requests reach the same backends through both.
    let client = reqwest::Client::new();
    eventually("HAProxy to answer", || async {
        upstream_of(&client, http, &host(0)).await
    })
    .await;
    let mut sample: Vec<String> = (0..N).step_by(37).map(host).collect();
    sample.extend([
        "shop.import.test".to_string(),
        "www.shop.import.test".to_string(),
    ]);
    for h in &sample {
        let a = upstream_of(&client, http, h).await;
        let b = upstream_of(&client, e.http, h).await;
        assert!(a.is_some() && a == b, "{h}: haproxy {a:?}, edgeward {b:?}");
    }
}

#[test]
fn a_missing_config_or_map_is_a_clear_error() {
    let out = Command::new(bin())
        .args([
            "import",
            "haproxy",
            "--config",
            "/nonexistent/haproxy.cfg",
            "--dry-run",
        ])
        .args(["--admin", "http://127.0.0.1:9", "--token", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/haproxy.cfg"));
}
