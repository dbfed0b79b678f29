//! Every Prometheus metric edgeward exports, registered in one place on the default registry (the one
//! pingora-prometheus encodes for `GET /metrics`).

use prometheus::{
    register_int_counter_vec, register_int_gauge, IntCounter, IntCounterVec, IntGauge,
};
use std::sync::LazyLock;

pub static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "edgeward_requests_total",
        "Requests answered on the proxy listeners, by status class",
        &["class"]
    )
    .expect("metric registers once")
});

static CHALLENGES_SERVED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "edgeward_acme_challenge_requests_total",
        "Requests under /.well-known/acme-challenge/ answered by edgeward, by result",
        &["result"]
    )
    .expect("metric registers once")
});

pub static CHALLENGE_HITS: LazyLock<IntCounter> =
    LazyLock::new(|| CHALLENGES_SERVED.with_label_values(&["hit"]));
pub static CHALLENGE_MISSES: LazyLock<IntCounter> =
    LazyLock::new(|| CHALLENGES_SERVED.with_label_values(&["miss"]));

pub static DOMAINS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("edgeward_domains", "Domains in the route table")
        .expect("metric registers once")
});

pub static CHALLENGE_TOKENS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "edgeward_acme_challenge_tokens",
        "Challenge tokens held in memory"
    )
    .expect("metric registers once")
});

pub static POOLS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("edgeward_upstream_pools", "Distinct upstream pools")
        .expect("metric registers once")
});

pub static BACKENDS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "edgeward_upstream_backends",
        "Distinct upstream addresses under health checks"
    )
    .expect("metric registers once")
});

pub static ADMIN_CHANGES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "edgeward_admin_changes_total",
        "Changes applied through the admin API, by kind",
        &["kind"]
    )
    .expect("metric registers once")
});

pub static TLS_HANDSHAKES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "edgeward_tls_handshakes_total",
        "TLS handshakes by result: ok (completed), no_certificate (refused), attach_failed",
        &["result"]
    )
    .expect("metric registers once")
});

pub static TLS_SNI_MISSES: LazyLock<IntCounter> = LazyLock::new(|| {
    prometheus::register_int_counter!(
        "edgeward_tls_sni_misses_total",
        "Handshakes whose SNI matched no certificate (the default certificate, if any, was used)"
    )
    .expect("metric registers once")
});

pub static CERTIFICATES: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("edgeward_certificates", "Certificates loaded")
        .expect("metric registers once")
});

pub static CERT_SOONEST_EXPIRY: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "edgeward_certificate_soonest_not_after_seconds",
        "Unix time of the soonest not_after among loaded certificates (0: none)"
    )
    .expect("metric registers once")
});

/// Status class label for a response status.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    }
}

/// Make every metric visible in the exposition from start-up, at zero.
pub fn init() {
    for class in ["2xx", "3xx", "4xx", "5xx"] {
        REQUESTS.with_label_values(&[class]);
    }
    for m in [&*CHALLENGE_HITS, &*CHALLENGE_MISSES] {
        m.inc_by(0);
    }
    for result in ["ok", "no_certificate"] {
        TLS_HANDSHAKES.with_label_values(&[result]);
    }
    TLS_SNI_MISSES.inc_by(0);
    for g in [
        &*DOMAINS,
        &*CHALLENGE_TOKENS,
        &*POOLS,
        &*BACKENDS,
        &*CERTIFICATES,
        &*CERT_SOONEST_EXPIRY,
    ] {
        g.add(0);
    }
    for kind in [
        "put_domain",
        "delete_domain",
        "put_challenge",
        "delete_challenge",
    ] {
        ADMIN_CHANGES.with_label_values(&[kind]);
    }
}
