//! Pingora's graceful upgrade (`-u` + SIGQUIT): the new process takes over the sockets with the state,
//! and traffic running across the switch sees no failed request.

use crate::harness::{Edgeward, Upstream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

#[tokio::test]
async fn upgrade_hands_over_sockets_without_failing_requests() {
    let up = Upstream::start("up").await;
    let mut e = Edgeward::start("").await;
    e.put_domain("live.test", &[up.addr], "").await;

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let retried = Arc::new(AtomicUsize::new(0));
    let load = {
        let (stop, ok, failed, errors, retried) = (
            stop.clone(),
            ok.clone(),
            failed.clone(),
            errors.clone(),
            retried.clone(),
        );
        let url = format!("http://127.0.0.1:{}/", e.http);
        tokio::spawn(async move {
            // New connection each time so that requests land on whichever process owns the socket.
            while !stop.load(Ordering::Relaxed) {
                let client = reqwest::Client::builder()
                    .pool_max_idle_per_host(0)
                    .build()
                    .unwrap();
                let send = || client.get(&url).header("host", "live.test").send();
                // Pingora drops a connection that has not delivered its request when shutdown starts
                // (the old process, at the hand-over). Nothing was processed, so an idempotent request
                // may be retried (RFC 9110 section 9.2.2), as browsers do: one retry, counted.
                let result = match send().await {
                    Err(e) if e.is_request() && !e.is_connect() => {
                        retried.fetch_add(1, Ordering::Relaxed);
                        send().await
                    }
                    other => other,
                };
                match result {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        errors.lock().unwrap().push(format!("{other:?}"));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        })
    };
    crate::harness::eventually("traffic before the upgrade", || async {
        (ok.load(Ordering::Relaxed) > 20).then_some(())
    })
    .await;
    let before = ok.load(Ordering::Relaxed);
    e.upgrade().await;
    crate::harness::eventually("traffic after the upgrade", || async {
        (ok.load(Ordering::Relaxed) > before + 20).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "{} ok, {} retried after a close before any response; errors: {:?}",
        ok.load(Ordering::Relaxed),
        retried.load(Ordering::Relaxed),
        errors.lock().unwrap()
    );
    // The new process has the state and a working admin API.
    assert_eq!(e.upstream_for("live.test").await.as_deref(), Some("up"));
    e.put_domain("after.test", &[up.addr], "").await;
    assert_eq!(e.upstream_for("after.test").await.as_deref(), Some("up"));
}
