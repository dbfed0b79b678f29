//! ARI (RFC 9773) and profiles end to end, against acme2certifier (Pebble 2.4 has neither): the renewal
//! time comes from the CA's suggested window, a window that says "now" renews at once, and every order
//! asks for the configured profile.

use crate::a2c::{A2c, Window};
use crate::harness::{eventually, Edgeward, Upstream};

fn unix(v: &serde_json::Value) -> Option<i64> {
    let t =
        time::OffsetDateTime::parse(v.as_str()?, &time::format_description::well_known::Rfc3339);
    t.ok().map(|t| t.unix_timestamp())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_follows_the_ca_window_and_orders_carry_the_profile() {
    let mut a = A2c::start(Window::Threshold(85), 10).await;
    let mut e = Edgeward::new("");
    e.extra = a.acme_yaml(
        "    profile: shortlived\n    retry: {min_seconds: 1, max_seconds: 8}\n    max_orders_per_window: 4\n",
    );
    e.spawn().await;
    let up = Upstream::start("up").await;
    e.put_domain("ari.test", &[up.addr], r#", "tls": "auto""#)
        .await;

    // A 10-day certificate is short-lived: by its lifetime it would renew at half (day 5). The CA's
    // window starts at 85% (day 8.5): the renewal time shown is inside it.
    let (renew, not_before, not_after) =
        eventually("a certificate renewed by the CA's window", || async {
            let (_, d) = e.api("GET", "/v1/domains/ari.test", None).await;
            let (_, c) = e.api("GET", "/v1/certificates/ari.test", None).await;
            let s = &d["certificate"];
            let (nb, na, renew) = (
                unix(&c["not_before"])?,
                unix(&c["not_after"])?,
                unix(&s["renew_at"])?,
            );
            let window_start = nb + (na - nb) * 85 / 100;
            (s["state"] == "valid" && renew >= window_start - 120).then_some((renew, nb, na))
        })
        .await;
    assert!(renew <= not_after, "{renew} {not_after}");
    let (_, first) = e.api("GET", "/v1/certificates/ari.test", None).await;
    let profiles = a.order_profiles();
    assert!(
        !profiles.is_empty() && profiles.iter().all(|p| p == "shortlived"),
        "{profiles:?}"
    );
    assert!(not_after - not_before > 9 * 86_400);

    // The CA now says to renew at once: the restarted node asks again, and renews.
    a.run(Window::Now, 10).await;
    e.restart().await;
    let renewed = eventually("the renewal the window asks for", || async {
        let (_, c) = e.api("GET", "/v1/certificates/ari.test", None).await;
        (c["serial"] != first["serial"] && c["serial"].is_string()).then_some(c)
    })
    .await;
    assert_eq!(renewed["source"], "acme");
    let metrics = e.metrics().await;
    assert!(
        !metrics.contains("edgeward_acme_renewals_total 0"),
        "{metrics}"
    );
    // acme2certifier takes `replaces` without reflecting it: the renewal went through without it.
    assert!(
        e.log_of().contains("does not reflect `replaces`"),
        "{}",
        e.log_of()
    );
    assert!(a.order_profiles().iter().all(|p| p == "shortlived"));
}
