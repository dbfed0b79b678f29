//! Paged lists at 100k domains: every domain exactly once, in host order, through the cursor; prefix
//! and certificate filters; certificates and challenges paged the same way; bad parameters refused.

use crate::certs::{Key, Pki};
use crate::harness::Edgeward;
use serde_json::{json, Value};

const N: usize = 100_000;

fn host(i: usize) -> String {
    format!("h{i:06}.list.test")
}

async fn get(e: &Edgeward, path: &str) -> Value {
    let (status, v) = e.api("GET", path, None).await;
    assert_eq!(status, 200, "{path}: {v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_domains_page_through_the_cursor() {
    let pki = Pki::new();
    let e = Edgeward::start("").await;
    // In batches of 10,000 (one durable write each), in reverse order: the list sorts.
    for chunk in (0..N).rev().collect::<Vec<_>>().chunks(10_000) {
        let ops: Vec<Value> = chunk
            .iter()
            .map(|&i| json!({"op": "put_domain", "host": host(i), "upstreams": ["127.0.0.1:9"]}))
            .collect();
        let body = json!({ "ops": ops }).to_string();
        let (status, v) = e.api("POST", "/v1/batch", Some(&body)).await;
        assert_eq!(status, 200, "{v}");
    }
    // Every domain exactly once, in order, 1000 a page.
    let mut seen = Vec::with_capacity(N);
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/v1/domains?limit=1000&after={a}"),
            None => "/v1/domains?limit=1000".to_string(),
        };
        let v = get(&e, &path).await;
        let items = v["items"].as_array().unwrap();
        assert!(items.len() <= 1000);
        seen.extend(
            items
                .iter()
                .map(|d| d["host"].as_str().unwrap().to_string()),
        );
        match v["next"].as_str() {
            Some(n) => {
                assert_eq!(Some(n), seen.last().map(String::as_str));
                after = Some(n.to_string());
            }
            None => break,
        }
    }
    let want: Vec<String> = (0..N).map(host).collect();
    assert!(
        seen == want,
        "{} seen, first {:?}",
        seen.len(),
        seen.first()
    );
    // A prefix: h01234x = ten hosts.
    let v = get(&e, "/v1/domains?limit=100&prefix=h01234").await;
    let hosts: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["host"].as_str().unwrap())
        .collect();
    assert_eq!(hosts, (12340..12350).map(host).collect::<Vec<_>>());
    assert_eq!(v["next"], Value::Null);
    // Without `limit`: the whole array, as before.
    assert_eq!(
        get(&e, "/v1/domains?prefix=h09999")
            .await
            .as_array()
            .unwrap()
            .len(),
        10
    );

    // Certificate filters: three manual domains, one certificate expiring in 5 days.
    for (i, days) in [(7, 90), (8, 5), (9, 400)] {
        let h = host(i);
        let body = json!({"upstreams": ["127.0.0.1:9"], "tls": "manual"}).to_string();
        assert_eq!(
            e.api("PUT", &format!("/v1/domains/{h}"), Some(&body))
                .await
                .0,
            200
        );
        e.put_certificate(&h, &pki.leaf_valid(&[&h], Key::Ecdsa, (-1, days)))
            .await;
    }
    let hosts_of = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["host"].as_str().unwrap().to_string())
            .collect()
    };
    let valid = get(&e, "/v1/domains?limit=10&cert_state=valid").await;
    assert_eq!(hosts_of(&valid), [host(7), host(8), host(9)]);
    let soon = get(&e, "/v1/domains?limit=10&expiring_within_days=7").await;
    assert_eq!(hosts_of(&soon), [host(8)]);
    assert_eq!(
        hosts_of(&get(&e, "/v1/domains?limit=10&cert_state=failed").await),
        Vec::<String>::new()
    );
    // Certificates page the same way, challenges too.
    let c = get(&e, "/v1/certificates?limit=2").await;
    assert_eq!(c["items"].as_array().unwrap().len(), 2);
    let rest = get(
        &e,
        &format!(
            "/v1/certificates?limit=2&after={}",
            c["next"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(rest["items"][0]["host"], host(9));
    assert_eq!(rest["next"], Value::Null);
    for t in ["tok-b", "tok-a", "other"] {
        let body = json!({"host": host(1), "key_authorization": format!("{t}.k")}).to_string();
        assert_eq!(
            e.api("PUT", &format!("/v1/challenges/{t}"), Some(&body))
                .await
                .0,
            200
        );
    }
    let ch = get(&e, "/v1/challenges?limit=5&prefix=tok-").await;
    let tokens: Vec<&str> = ch["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["token"].as_str().unwrap())
        .collect();
    assert_eq!(tokens, ["tok-a", "tok-b"]);
    assert_eq!(get(&e, "/v1/challenges").await.as_array().unwrap().len(), 3);

    // Bad parameters: 400 naming the parameter.
    for (path, field) in [
        ("/v1/domains?limit=0", "limit"),
        ("/v1/domains?limit=5000", "limit"),
        ("/v1/domains?cert_state=great", "cert_state"),
        (
            "/v1/domains?expiring_within_days=soon",
            "expiring_within_days",
        ),
        ("/v1/domains?order=desc", "order"),
        ("/v1/certificates?cert_state=valid", "cert_state"),
        ("/v1/challenges?limit=-1", "limit"),
    ] {
        let (status, v) = e.api("GET", path, None).await;
        assert_eq!(status, 400, "{path}: {v}");
        assert_eq!(v["field"], field, "{path}: {v}");
    }
}
