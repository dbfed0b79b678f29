//! Rate limits of the CA, per name and per account, against a small ACME server of our own (Pebble
//! 2.4 sends no `Retry-After`): the directory, nonces and accounts work; every new order is refused,
//! with a per-name limit for `limited.test`, an account limit for `account-limit.test`, and a plain
//! refusal without `Retry-After` for anything else. It records which names were ordered.

use crate::certs::{Key, Pki};
use crate::harness::{eventually, Edgeward};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustls_pki_types::pem::PemObject;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

struct StubCa {
    port: u16,
    ordered: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StubCa {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The identifiers of a JWS-wrapped newOrder body (the signature is not checked: this is a stub).
fn identifiers(body: &[u8]) -> Vec<String> {
    let jws: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let b64 = jws["payload"]
        .as_str()
        .unwrap_or("")
        .replace('-', "+")
        .replace('_', "/");
    let padded = format!("{b64}{}", "=".repeat((4 - b64.len() % 4) % 4));
    let payload = openssl::base64::decode_block(&padded).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_slice(&payload).unwrap_or_default();
    v["identifiers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i["value"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

impl StubCa {
    async fn start(pki: &Pki) -> StubCa {
        let leaf = pki.leaf(&["localhost"], Key::Ecdsa);
        let certs: Vec<_> =
            rustls_pki_types::CertificateDer::pem_slice_iter(leaf.chain_pem.as_bytes())
                .map(|c| c.unwrap())
                .collect();
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let ordered: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = ordered.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, seen) = (acceptor.clone(), seen.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let seen = seen.clone();
                            async move {
                                let path = req.uri().path().to_string();
                                let body = req
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                Ok::<_, std::convert::Infallible>(answer(port, &path, &body, &seen))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        StubCa {
            port,
            ordered,
            task,
        }
    }

    fn directory(&self) -> String {
        format!("https://localhost:{}/dir", self.port)
    }

    fn count(&self, host: &str) -> usize {
        self.ordered
            .lock()
            .unwrap()
            .iter()
            .filter(|h| *h == host)
            .count()
    }
}

fn answer(
    port: u16,
    path: &str,
    body: &[u8],
    seen: &Mutex<Vec<String>>,
) -> hyper::Response<Full<Bytes>> {
    let base = format!("https://localhost:{port}");
    let json = |status: u16, v: serde_json::Value| {
        hyper::Response::builder()
            .status(status)
            .header("Replay-Nonce", format!("n{}", rand_nonce()))
            .header(
                "Content-Type",
                if status >= 400 {
                    "application/problem+json"
                } else {
                    "application/json"
                },
            )
            .body(Full::new(Bytes::from(v.to_string())))
            .unwrap()
    };
    match path {
        "/dir" => json(
            200,
            serde_json::json!({
                "newNonce": format!("{base}/nonce"),
                "newAccount": format!("{base}/acct"),
                "newOrder": format!("{base}/order"),
            }),
        ),
        "/nonce" => json(200, serde_json::json!({})),
        "/acct" => {
            let mut r = json(201, serde_json::json!({"status": "valid"}));
            r.headers_mut()
                .insert("Location", format!("{base}/acct/1").parse().unwrap());
            r
        }
        "/order" => {
            let ids = identifiers(body);
            seen.lock().unwrap().extend(ids.iter().cloned());
            let limited = |retry: &str, detail: &str| {
                let mut r = json(
                    429,
                    serde_json::json!({
                        "type": "urn:ietf:params:acme:error:rateLimited",
                        "detail": detail,
                    }),
                );
                r.headers_mut()
                    .insert("Retry-After", retry.parse().unwrap());
                r
            };
            if ids.iter().any(|i| i == "limited.test") {
                limited(
                    "3600",
                    "too many certificates (5) already issued for this exact set of identifiers",
                )
            } else if ids.iter().any(|i| i == "account-limit.test") {
                limited(
                    "1800",
                    "too many new orders (300) from this account in the last 3h0m0s",
                )
            } else if ids.iter().any(|i| i == "huge.test") {
                limited(
                    "99999999999999999999",
                    "per-name limit with an absurd Retry-After",
                )
            } else {
                json(
                    400,
                    serde_json::json!({
                        "type": "urn:ietf:params:acme:error:rejectedIdentifier",
                        "detail": "the stub issues nothing",
                    }),
                )
            }
        }
        _ => json(
            404,
            serde_json::json!({"type": "urn:ietf:params:acme:error:malformed"}),
        ),
    }
}

fn rand_nonce() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

async fn auto(e: &Edgeward, host: &str) {
    let body = r#"{"upstreams": ["127.0.0.1:9"], "tls": "auto"}"#;
    let (status, v) = e
        .api("PUT", &format!("/v1/domains/{host}"), Some(body))
        .await;
    assert_eq!(status, 200, "{v}");
}

/// Seconds from now to the domain's next attempt, once the manager shows one.
async fn next_attempt_in(e: &Edgeward, host: &str) -> i64 {
    eventually(&format!("{host}'s next attempt"), || async {
        let (_, d) = e.api("GET", &format!("/v1/domains/{host}"), None).await;
        let at = d["certificate"]["next_attempt"].as_str()?.to_string();
        let t = time::OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339)
            .ok()?;
        Some(t.unix_timestamp() - time::OffsetDateTime::now_utc().unix_timestamp())
    })
    .await
}

async fn ordered(ca: &StubCa, host: &str) {
    eventually(&format!("an order for {host}"), || async {
        (ca.count(host) > 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_per_name_limit_delays_that_name_only_and_survives_a_restart() {
    let pki = Pki::new();
    let ca = StubCa::start(&pki).await;
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("ca.pem");
    std::fs::write(&bundle, pki.root_pem()).unwrap();
    let mut e = Edgeward::start(&format!(
        "  acme:\n    directory: \"{}\"\n    ca_bundle: \"{}\"\n",
        ca.directory(),
        bundle.display()
    ))
    .await;

    auto(&e, "limited.test").await;
    ordered(&ca, "limited.test").await;
    let wait = next_attempt_in(&e, "limited.test").await;
    assert!(
        (3000..=3700).contains(&wait),
        "the CA's Retry-After for the name: {wait}"
    );
    // Another name is ordered at once, not held by the first one's limit.
    auto(&e, "other.test").await;
    ordered(&ca, "other.test").await;
    let other = next_attempt_in(&e, "other.test").await;
    assert!(other < 600, "its own back-off only: {other}");
    // An absurd Retry-After is clamped, not a panic.
    auto(&e, "huge.test").await;
    ordered(&ca, "huge.test").await;
    let huge = next_attempt_in(&e, "huge.test").await;
    assert!(huge <= 7 * 86_400 + 60 && huge > 86_400, "{huge}");
    assert_eq!(ca.count("limited.test"), 1);

    // The back-off is stored: after a restart the name still waits while new names are ordered.
    let budget = e.stored().acme_budget.unwrap();
    assert!(budget.backoff.contains_key("limited.test"), "{budget:?}");
    e.restart().await;
    auto(&e, "third.test").await;
    ordered(&ca, "third.test").await;
    let wait = next_attempt_in(&e, "limited.test").await;
    assert!(wait > 3000, "{wait}");
    assert_eq!(
        ca.count("limited.test"),
        1,
        "not ordered again after the restart"
    );
    assert!(e.log_of().find("panicked").is_none());
}

#[tokio::test]
async fn an_account_limit_pauses_every_name() {
    let pki = Pki::new();
    let ca = StubCa::start(&pki).await;
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("ca.pem");
    std::fs::write(&bundle, pki.root_pem()).unwrap();
    let e = Edgeward::start(&format!(
        "  acme:\n    directory: \"{}\"\n    ca_bundle: \"{}\"\n",
        ca.directory(),
        bundle.display()
    ))
    .await;
    auto(&e, "account-limit.test").await;
    ordered(&ca, "account-limit.test").await;
    eventually("the account pause to be stored", || async {
        let b = e.stored().acme_budget?;
        (b.paused_until > 0).then_some(())
    })
    .await;
    auto(&e, "waits.test").await;
    let wait = next_attempt_in(&e, "waits.test").await;
    assert!((1500..=1900).contains(&wait), "{wait}");
    assert_eq!(ca.count("waits.test"), 0);
}
