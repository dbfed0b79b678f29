//! Upstream health: an HTTP check that takes out a backend which listens but answers 503, the check
//! results in `GET /v1/upstreams`, and passive health (5xx answers of live traffic take a backend out
//! until its next good check).

use crate::harness::{eventually, Edgeward, Upstream};
use http_body_util::Full;
use hyper::service::service_fn;
use serde_json::Value;
use std::net::SocketAddr;

/// A backend that answers every request with `status` (and its name).
struct Fixed {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fixed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Fixed {
    async fn start(status: u16) -> Fixed {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let svc = service_fn(
                        move |_req: hyper::Request<hyper::body::Incoming>| async move {
                            let body = format!("{{\"upstream\": \"fixed-{status}\"}}");
                            let mut r = hyper::Response::new(Full::new(bytes::Bytes::from(body)));
                            *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(r)
                        },
                    );
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                });
            }
        });
        Fixed { addr, task }
    }
}

async fn backend(e: &Edgeward, addr: SocketAddr) -> Value {
    let (status, v) = e.api("GET", "/v1/upstreams", None).await;
    assert_eq!(status, 200, "{v}");
    v.as_array()
        .unwrap()
        .iter()
        .find(|b| b["addr"] == addr.to_string())
        .cloned()
        .unwrap_or(Value::Null)
}

async fn served_by(e: &Edgeward) -> String {
    let (_, body) = e.get("site.test", "/").await;
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    v["upstream"].as_str().unwrap_or("?").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_check_takes_out_a_backend_that_answers_503() {
    let good = Upstream::start("good").await;
    let sick = Fixed::start(503).await;
    let mut e = Edgeward::new("");
    e.upstreams_extra = "    health_check: {http_path: \"/healthz\", expect_status: \"200-399\", \
                         interval_seconds: 1, timeout_ms: 500, rise: 1, fall: 1, host: \"hc.local\"}\n"
        .into();
    e.spawn().await;
    e.put_domain("site.test", &[good.addr, sick.addr], "").await;
    let b = eventually("the check to see the 503", || async {
        let b = backend(&e, sick.addr).await;
        (b["last_check"]["ok"] == false && b["healthy"] == false).then_some(b)
    })
    .await;
    let err = b["last_check"]["error"].as_str().unwrap();
    assert!(err.contains("503"), "{b}");
    let g = backend(&e, good.addr).await;
    assert_eq!(
        (g["healthy"].as_bool(), g["last_check"]["ok"].as_bool()),
        (Some(true), Some(true)),
        "{g}"
    );
    for _ in 0..20 {
        assert_eq!(served_by(&e).await, "good");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundreds_from_traffic_take_a_backend_out_until_its_next_good_check() {
    let good = Upstream::start("good").await;
    let bad = Fixed::start(502).await;
    let mut e = Edgeward::new("");
    // TCP checks (the bad backend passes them): only traffic can tell it is broken.
    e.upstreams_extra =
        "    health_check: {http_path: null, interval_seconds: 2, rise: 1, fall: 2}\n".into();
    e.spawn().await;
    e.put_domain("site.test", &[good.addr, bad.addr], "").await;
    eventually("both backends to pass their checks", || async {
        let b = backend(&e, bad.addr).await;
        (b["check_healthy"] == true && backend(&e, good.addr).await["check_healthy"] == true)
            .then_some(())
    })
    .await;
    // Rounds until one where no check ran between taking the backend out and the last request.
    let mut proven = false;
    for _ in 0..10 {
        eventually("traffic to take the bad backend out", || async {
            let _ = served_by(&e).await;
            (backend(&e, bad.addr).await["passive_down"] == true).then_some(())
        })
        .await;
        let before = backend(&e, bad.addr).await;
        let mut seen = Vec::new();
        for _ in 0..6 {
            seen.push(served_by(&e).await);
        }
        let after = backend(&e, bad.addr).await;
        if before["last_check"]["checks"] == after["last_check"]["checks"] {
            assert!(seen.iter().all(|s| s == "good"), "{seen:?}");
            assert_eq!(after["passive_down"], true);
            assert_eq!(after["healthy"], false);
            proven = true;
            break;
        }
    }
    assert!(proven, "a check ran inside every round");
    // The next good check brings it back.
    eventually("the next good check", || async {
        (backend(&e, bad.addr).await["passive_down"] == false).then_some(())
    })
    .await;
    let m = e.metrics().await;
    assert!(m.contains("edgeward_requests_total"), "{m}");
}

#[tokio::test]
async fn bad_health_check_settings_are_refused_naming_the_key() {
    for (yaml, key) in [
        ("{http_path: \"healthz\"}", "health_check.http_path"),
        ("{http_path: \"/a b\"}", "health_check.http_path"),
        ("{expect_status: \"2xx\"}", "health_check.expect_status"),
        ("{expect_status: \"399-200\"}", "health_check.expect_status"),
        ("{interval_seconds: 0}", "health_check.interval_seconds"),
        ("{timeout_ms: 0}", "health_check.timeout_ms"),
        ("{rise: 0}", "health_check.rise"),
        ("{fall: 101}", "health_check.fall"),
        ("{host: \"a b\"}", "health_check.host"),
        ("{path: \"/x\"}", "health_check"),
    ] {
        let mut e = Edgeward::new("");
        e.upstreams_extra = format!("    health_check: {yaml}\n");
        let err = e.refused(&["-t"]);
        assert!(err.contains(key), "{yaml}: {err}");
    }
}

/// Without `upstreams.health_check`, a backend's 5xx answers never change routing (as before the
/// section existed): a single backend answering 502 keeps receiving every request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_section_5xx_answers_change_no_routing() {
    let bad = Fixed::start(502).await;
    let e = Edgeward::start("").await;
    e.put_domain("site.test", &[bad.addr], "").await;
    for _ in 0..10 {
        assert_eq!(served_by(&e).await, "fixed-502");
    }
    assert_eq!(backend(&e, bad.addr).await["passive_down"], false);
}
