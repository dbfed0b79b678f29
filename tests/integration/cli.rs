//! The binary's command line: `-t`, config errors, and the operator commands over the admin API.

use crate::harness::{bin, Edgeward, Upstream};
use std::process::Command;

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin())
        .args(args)
        .env_remove("EDGEWARD_ADMIN_TOKEN")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn config_check_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("e.yaml");
    let state = dir.path().join("state");
    let cases = [
        ("edgeward:\n  admin:\n    listn: \"127.0.0.1:1\"\n", "listn"),
        ("edgeward:\n  bogus: true\n", "bogus"),
        ("treads: 2\nedgeward: {}\n", "treads"),
        ("edgeward:\n  http: [\"8080\"]\n", "edgeward.http[0]"),
        (
            "edgeward:\n  domains:\n    - {host: \"a.test\", upstreams: [\"x\"]}\n",
            "edgeward.domains[0].upstreams[0]",
        ),
        ("edgeward: [\n", "line"),
    ];
    for (yaml, key) in cases {
        let yaml = format!("{yaml}\n").replace(
            "edgeward: {}",
            &format!("edgeward: {{state: {{dir: \"{}\"}}}}", state.display()),
        );
        std::fs::write(&file, &yaml).unwrap();
        let (ok, _, err) = run(&["-t", "-c", file.to_str().unwrap()]);
        assert!(!ok, "{yaml}");
        assert!(err.contains(key), "{yaml} -> {err}");
    }
    let good = format!(
        "threads: 1\nedgeward:\n  http: [\"127.0.0.1:1\"]\n  state: {{dir: \"{}\"}}\n  admin: {{token_file: \"{}/t\"}}\n",
        state.display(),
        dir.path().display()
    );
    std::fs::write(&file, good).unwrap();
    let (ok, out, err) = run(&["-t", "-c", file.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("configuration OK"), "{out}");
    let (ok, _, err) = run(&[
        "-t",
        "-c",
        dir.path().join("missing.yaml").to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("missing.yaml"), "{err}");
}

#[tokio::test]
async fn operator_commands_drive_the_admin_api() {
    let up = Upstream::start("up").await;
    let e = Edgeward::start("").await;
    let conf = e.config_path();
    let c = conf.to_str().unwrap();
    let addr = up.addr.to_string();
    let (ok, out, err) = run(&[
        "domain",
        "put",
        "cli.test",
        "--upstream",
        &addr,
        "-c",
        c,
        "--passthrough-challenges",
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("\"acme_challenges\": \"passthrough\""),
        "{out}"
    );
    assert_eq!(e.upstream_for("cli.test").await.as_deref(), Some("up"));

    let (ok, out, _) = run(&["domain", "ls", "-c", c]);
    assert!(ok);
    assert!(out.starts_with("HOST"), "{out}");
    assert!(out.contains("cli.test") && out.contains(&addr), "{out}");

    let (ok, _, err) = run(&[
        "challenge",
        "put",
        "clitok",
        "--host",
        "cli.test",
        "--key-authorization",
        "clitok.k",
        "-c",
        c,
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        e.get("cli.test", "/.well-known/acme-challenge/clitok")
            .await
            .1,
        "clitok.k"
    );

    // Errors from the API reach the operator.
    let (ok, _, err) = run(&["domain", "put", "cli.test", "--upstream", "nope", "-c", c]);
    assert!(!ok && err.contains("upstreams[0]"), "{err}");
    let addr = up.addr.to_string();
    let put = ["domain", "put", "cli2.test", "--upstream", &addr, "-c", c];
    let (ok, _, err) = run(&[&put[..], &["--acme-challenge", "dns-01"]].concat());
    assert!(
        !ok && err.contains("acme_challenge"),
        "no dns01 section here: {err}"
    );
    let (ok, out, err) = run(&[&put[..], &["--acme-challenge", "tls-alpn-01"]].concat());
    assert!(
        ok && out.contains("\"acme_challenge\": \"tls-alpn-01\""),
        "{out}{err}"
    );
    let (ok, _, err) = run(&["domain", "rm", "cli2.test", "-c", c]);
    assert!(ok, "{err}");
    let (ok, _, err) = run(&["domain", "ls", "-c", c, "--token", "wrong"]);
    assert!(!ok && err.contains("401"), "{err}");

    let (ok, _, err) = run(&["domain", "rm", "cli.test", "-c", c]);
    assert!(ok, "{err}");
    assert_eq!(e.get("cli.test", "/").await.0, 404);
    // Flags work without a config file.
    let (ok, out, err) = run(&[
        "domain",
        "ls",
        "--json",
        "--admin",
        &format!("127.0.0.1:{}", e.admin),
        "--token",
        "test-admin-token",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "[]");
}

#[tokio::test]
async fn cert_commands_upload_list_and_remove() {
    let pki = crate::certs::Pki::new();
    let e = Edgeward::start("").await;
    let c = e.config_path();
    let c = c.to_str().unwrap();
    let leaf = pki.leaf(&["cli-cert.test"], crate::certs::Key::Ecdsa);
    let dir = tempfile::tempdir().unwrap();
    let (chain, key) = (dir.path().join("chain.pem"), dir.path().join("key.pem"));
    std::fs::write(&chain, &leaf.chain_pem).unwrap();
    std::fs::write(&key, &leaf.key_pem).unwrap();
    let (chain, key) = (chain.to_str().unwrap(), key.to_str().unwrap());

    let (ok, out, err) = run(&[
        "cert",
        "put",
        "cli-cert.test",
        "--chain",
        chain,
        "--key",
        key,
        "-c",
        c,
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains(&leaf.serial) && !out.contains("PRIVATE"),
        "{out}"
    );
    let (ok, out, _) = run(&["cert", "ls", "-c", c]);
    assert!(
        ok && out.starts_with("HOST") && out.contains("cli-cert.test"),
        "{out}"
    );
    // A key that does not match: the API's reason reaches the operator.
    let other = pki.leaf(&["cli-cert.test"], crate::certs::Key::Ecdsa);
    std::fs::write(dir.path().join("other.key"), &other.key_pem).unwrap();
    let other_key = dir.path().join("other.key");
    let (ok, _, err) = run(&[
        "cert",
        "put",
        "cli-cert.test",
        "--chain",
        chain,
        "--key",
        other_key.to_str().unwrap(),
        "-c",
        c,
    ]);
    assert!(!ok && err.contains("does not match"), "{err}");
    let (ok, _, err) = run(&[
        "cert",
        "put",
        "cli-cert.test",
        "--chain",
        "/nonexistent.pem",
        "--key",
        key,
        "-c",
        c,
    ]);
    assert!(!ok && err.contains("/nonexistent.pem"), "{err}");
    let (ok, _, err) = run(&["cert", "rm", "cli-cert.test", "-c", c]);
    assert!(ok, "{err}");
    let (ok, out, _) = run(&["cert", "ls", "--json", "-c", c]);
    assert!(ok && out.trim() == "[]", "{out}");
}
