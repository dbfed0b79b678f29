//! Durable state: SIGKILL and start again on the same directory; corrupt files are reported.

use crate::harness::{bin, Edgeward, Upstream};
use serde_json::json;

#[tokio::test]
async fn a_killed_node_restores_every_domain_and_unexpired_challenge() {
    let up = Upstream::start("up").await;
    let mut e = Edgeward::start("").await;
    e.put_domain("kept.test", &[up.addr], r#", "redirect_https": true"#)
        .await;
    e.put_domain(
        "*.wild.test",
        &[up.addr],
        r#", "acme_challenges": "passthrough""#,
    )
    .await;
    e.put_domain("gone.test", &[up.addr], "").await;
    assert_eq!(e.api("DELETE", "/v1/domains/gone.test", None).await.0, 204);
    let ch = r#"{"host": "kept.test", "key_authorization": "keep.k"}"#;
    assert_eq!(e.api("PUT", "/v1/challenges/keep", Some(ch)).await.0, 200);
    let batch = json!({"ops": [
        {"op": "put_domain", "host": "batched.test", "upstreams": [up.addr.to_string()]},
        {"op": "put_challenge", "token": "bt", "host": "batched.test", "key_authorization": "bt.k"},
    ]});
    assert_eq!(
        e.api("POST", "/v1/batch", Some(&batch.to_string())).await.0,
        200
    );
    let domains = e.api("GET", "/v1/domains", None).await.1;

    e.restart().await;

    assert_eq!(e.api("GET", "/v1/domains", None).await.1, domains);
    assert_eq!(
        e.get("kept.test", "/").await.0,
        308,
        "redirect_https restored"
    );
    assert_eq!(e.upstream_for("a.wild.test").await.as_deref(), Some("up"));
    assert_eq!(e.upstream_for("batched.test").await.as_deref(), Some("up"));
    assert_eq!(e.get("gone.test", "/").await.0, 404);
    assert_eq!(
        e.get("kept.test", "/.well-known/acme-challenge/keep")
            .await
            .1,
        "keep.k"
    );
    assert_eq!(
        e.get("batched.test", "/.well-known/acme-challenge/bt")
            .await
            .1,
        "bt.k"
    );
}

#[tokio::test]
async fn expired_challenges_are_not_restored() {
    let mut e = Edgeward::start("").await;
    let ch = r#"{"host": "a.test", "key_authorization": "brief.k", "ttl_seconds": 3600}"#;
    assert_eq!(e.api("PUT", "/v1/challenges/brief", Some(ch)).await.0, 200);
    e.kill();
    // Age the stored token instead of waiting for it to expire.
    e.settle_state();
    let file = e.state_dir().join("challenges/brief.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    v["expires_at"] = json!(1);
    std::fs::write(&file, v.to_string()).unwrap();
    e.restart().await;
    assert_eq!(
        e.get("a.test", "/.well-known/acme-challenge/brief").await.0,
        404
    );
    assert_eq!(e.api("GET", "/v1/challenges/brief", None).await.0, 404);
    assert!(
        e.stored().challenges.iter().all(|c| c.token != "brief"),
        "the expired token was removed from the stored state"
    );
}

#[tokio::test]
async fn a_corrupt_state_file_stops_start_up_with_its_path() {
    let up = Upstream::start("up").await;
    let mut e = Edgeward::start("").await;
    e.put_domain("fine.test", &[up.addr], "").await;
    e.kill();
    let bad = e.state_dir().join("domains/broken.test.json");
    std::fs::write(&bad, b"{\"host\": \"broken.test\", \"upstre").unwrap();
    let out = std::process::Command::new(bin())
        .arg("-c")
        .arg(e.config_path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&bad.display().to_string()), "{err}");
    assert!(err.contains("corrupt"), "{err}");
    // `-t` reports it the same way.
    let out = std::process::Command::new(bin())
        .args(["-t", "-c"])
        .arg(e.config_path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&bad.display().to_string()));
    // The good file is untouched, and removing the bad one lets the node start with it.
    std::fs::remove_file(&bad).unwrap();
    e.restart().await;
    assert_eq!(e.upstream_for("fine.test").await.as_deref(), Some("up"));
}
