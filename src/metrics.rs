//! Every Prometheus metric edgeward exports, registered in one place on the default registry (the one
//! pingora-prometheus encodes for `GET /metrics`).

use prometheus::{
    register_int_counter, register_int_counter_vec, register_int_gauge, register_int_gauge_vec,
    IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
};
use std::sync::LazyLock;

static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "edgeward_requests_total",
        "Requests answered on the proxy listeners, by status class",
        &["class"]
    )
    .expect("metric registers once")
});

const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

/// One counter per status class, resolved once: `with_label_values` hashes the label and takes a lock,
/// which is too much for every request.
static REQUESTS_BY_CLASS: LazyLock<[IntCounter; 6]> =
    LazyLock::new(|| CLASSES.map(|c| REQUESTS.with_label_values(&[c])));

/// Count one answered request by its status class.
pub fn count_request(status: u16) {
    let i = match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        500..=599 => 4,
        _ => 5,
    };
    REQUESTS_BY_CLASS[i].inc();
}

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
        "TLS handshakes by result: ok (completed), no_certificate (refused), no_challenge (acme-tls/1 for a name with no TLS-ALPN-01 challenge), attach_failed",
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

pub static ACME_ORDERS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "edgeward_acme_orders_total",
        "ACME orders by result: ok, failed, abandoned",
        &["result"]
    )
    .expect("metric registers once")
});

pub static ACME_RENEWALS: LazyLock<IntCounter> = LazyLock::new(|| {
    prometheus::register_int_counter!(
        "edgeward_acme_renewals_total",
        "Certificates renewed (an order that replaced a served certificate)"
    )
    .expect("metric registers once")
});

pub static ACME_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "edgeward_acme_failures_total",
        "Failed ACME orders by error type (ACME problem type, or connection/timeout/local)",
        &["type"]
    )
    .expect("metric registers once")
});

pub static ACME_BUDGET_LEFT: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "edgeward_acme_order_budget_left",
        "New orders left in the current window"
    )
    .expect("metric registers once")
});

pub static ACME_EXPIRING_7D: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "edgeward_acme_certificates_expiring_7d",
        "tls auto domains whose certificate expires within 7 days"
    )
    .expect("metric registers once")
});

pub static ACME_CERT_STATES: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "edgeward_acme_certificates",
        "tls auto domains by certificate state (pending, valid, renewing, failed)",
        &["state"]
    )
    .expect("metric registers once")
});

pub static ACME_IN_FLIGHT: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "edgeward_acme_orders_in_flight",
        "ACME orders placed and not finished"
    )
    .expect("metric registers once")
});

pub static STATE_WRITE_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "edgeward_state_write_errors_total",
        "Failed state directory operations, by stage (append: a write answered as failed; cut: \
         removing a failed write's bytes; rotate, checkpoint: retried in the background)",
        &["stage"]
    )
    .expect("metric registers once")
});

pub static STATE_FOLLOWED_CHANGES: LazyLock<IntCounter> = LazyLock::new(|| {
    prometheus::register_int_counter!(
        "edgeward_state_followed_changes_total",
        "Changes read from another process's journal (graceful upgrade) and applied to memory"
    )
    .expect("metric registers once")
});

pub static STATE_FOLLOW_RESYNCS: LazyLock<IntCounter> = LazyLock::new(|| {
    prometheus::register_int_counter!(
        "edgeward_state_follow_resyncs_total",
        "Times a followed journal could not prove continuity and the whole state was read again"
    )
    .expect("metric registers once")
});

pub static STATE_WRITER: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "edgeward_state_writer",
        "1 while this process writes the state (0: waiting for, or handed over to, another process)"
    )
    .expect("metric registers once")
});

pub static DOWNSTREAM_TIMEOUTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "edgeward_downstream_timeouts_total",
        "Client connections closed by a timeout: request_header (the head was late), keepalive (idle)",
        &["kind"]
    )
    .expect("metric registers once")
});

pub static REFUSED_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "edgeward_refused_requests_total",
        "Request heads answered before routing: 400 malformed, 408 too slow, 431 too large",
        &["status"]
    )
    .expect("metric registers once")
});

pub static CONNECTIONS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "edgeward_downstream_connections",
        "Client connections open on the proxy listeners"
    )
    .expect("metric registers once")
});

pub static CONNECTIONS_REFUSED: LazyLock<IntCounter> = LazyLock::new(|| {
    prometheus::register_int_counter!(
        "edgeward_downstream_connections_refused_total",
        "Client connections closed at once because edgeward.downstream.max_connections were open"
    )
    .expect("metric registers once")
});

pub static UPSTREAM_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "edgeward_upstream_errors_total",
        "Failed upstream attempts by reason (Pingora's error type, e.g. ConnectTimedout, \
         ConnectRefused, ReadTimedout) and the status answered (0: none, the response had started)",
        &["reason", "status"]
    )
    .expect("metric registers once")
});

pub static ACCESS_LOG_DROPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "edgeward_access_log_dropped_total",
        "Access-log lines dropped because the writer's queue was full"
    )
    .expect("metric registers once")
});

pub static ACCESS_LOG_ERRORS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "edgeward_access_log_write_errors_total",
        "Failed writes to the access log (a full disk, a removed file system)"
    )
    .expect("metric registers once")
});

pub static PROXY_PROTOCOL_REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "edgeward_proxy_protocol_refused_total",
        "Connections closed on a PROXY-protocol listener, by reason (missing, malformed, too_long, timeout)",
        &["reason"]
    )
    .expect("metric registers once")
});

pub static CHALLENGE_READ_THROUGH: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "edgeward_acme_challenge_read_through_total",
        "Fleet mode: challenge misses looked up in the store, by result: found, missing, \
         cached_miss (not looked up: missing moments ago), busy (not looked up: too many in flight)",
        &["result"]
    )
    .expect("metric registers once")
});

pub static CHALLENGE_READ_THROUGH_IN_FLIGHT: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "edgeward_acme_challenge_read_through_in_flight",
        "Fleet mode: challenge misses being looked up in the store now"
    )
    .expect("metric registers once")
});

pub static ETCD_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "edgeward_etcd_requests_total",
        "Fleet mode: requests to each etcd member, by result (ok, error)",
        &["endpoint", "result"]
    )
    .expect("metric registers once")
});

pub static ETCD_MEMBER_UP: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "edgeward_etcd_member_up",
        "Fleet mode: the etcd members this node knows, 1 when it uses the member, 0 while it skips it",
        &["endpoint"]
    )
    .expect("metric registers once")
});

pub static ETCD_RETRIES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "edgeward_etcd_retries_total",
        "Fleet mode: etcd requests sent again after a member failure or during a leader election"
    )
    .expect("metric registers once")
});

pub static ETCD_WATCH_RESUMPTIONS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "edgeward_etcd_watch_resumptions_total",
        "Fleet mode: the watch resumed from its last revision (on another member) after it broke"
    )
    .expect("metric registers once")
});

pub static ETCD_WATCH_RESYNCS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "edgeward_etcd_watch_resyncs_total",
        "Fleet mode: full reloads of the state because the watch's revision was compacted"
    )
    .expect("metric registers once")
});

/// Make every metric visible in the exposition from start-up, at zero.
pub fn init() {
    LazyLock::force(&REQUESTS_BY_CLASS);
    for m in [&*CHALLENGE_HITS, &*CHALLENGE_MISSES] {
        m.inc_by(0);
    }
    for result in ["ok", "no_certificate"] {
        TLS_HANDSHAKES.with_label_values(&[result]);
    }
    TLS_SNI_MISSES.inc_by(0);
    for result in ["ok", "failed", "abandoned"] {
        ACME_ORDERS.with_label_values(&[result]);
    }
    ACME_RENEWALS.inc_by(0);
    for stage in ["append", "cut", "rotate", "checkpoint"] {
        STATE_WRITE_ERRORS.with_label_values(&[stage]);
    }
    STATE_FOLLOWED_CHANGES.inc_by(0);
    for kind in ["request_header", "keepalive"] {
        DOWNSTREAM_TIMEOUTS.with_label_values(&[kind]);
    }
    for status in ["400", "408", "431"] {
        REFUSED_REQUESTS.with_label_values(&[status]);
    }
    CONNECTIONS_REFUSED.inc_by(0);
    ACCESS_LOG_DROPPED.inc_by(0);
    ACCESS_LOG_ERRORS.inc_by(0);
    for reason in ["missing", "malformed", "too_long", "timeout"] {
        PROXY_PROTOCOL_REFUSED.with_label_values(&[reason]);
    }
    for result in ["found", "missing", "cached_miss", "busy"] {
        CHALLENGE_READ_THROUGH.with_label_values(&[result]);
    }
    STATE_FOLLOW_RESYNCS.inc_by(0);
    for c in [
        &*ETCD_RETRIES,
        &*ETCD_WATCH_RESUMPTIONS,
        &*ETCD_WATCH_RESYNCS,
    ] {
        c.inc_by(0);
    }
    for g in [
        &*DOMAINS,
        &*CHALLENGE_TOKENS,
        &*POOLS,
        &*BACKENDS,
        &*CERTIFICATES,
        &*CERT_SOONEST_EXPIRY,
        &*ACME_BUDGET_LEFT,
        &*ACME_EXPIRING_7D,
        &*STATE_WRITER,
        &*CONNECTIONS,
        &*CHALLENGE_READ_THROUGH_IN_FLIGHT,
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
