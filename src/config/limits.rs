//! The timeouts and limits on both sides of the proxy: `edgeward.upstreams` (per-domain overrides
//! live in the domain object), `edgeward.downstream`, `edgeward.shutdown.request_wait_ms` and
//! `edgeward.trusted_proxies`. Errors are (key, message).

use super::schema::{DownstreamFile, ShutdownFile, UpstreamsFile};
use crate::http1::Limits;
use crate::model::upstream::{check_range, MAX_IDLE_SECONDS, MAX_TIMEOUT_MS};
use crate::model::UpstreamTimeouts;
use ipnet::IpNet;
use std::time::Duration;

/// Longest `shutdown.request_wait_ms`: a minute.
const MAX_REQUEST_WAIT_MS: u64 = 60_000;
/// Longest `downstream.request_header_timeout_ms`: ten minutes.
const MAX_HEADER_TIMEOUT_MS: u64 = 600_000;
/// Longest `downstream.keepalive_timeout_seconds`: an hour.
const MAX_KEEPALIVE_SECONDS: u64 = 3_600;

type KeyError = (String, String);

fn in_range(key: &str, v: u64, max: u64) -> Result<(), KeyError> {
    let (at, name) = key.rsplit_once('.').unwrap_or(("", key));
    check_range(at, name, Some(v), max).map_err(|e| (e.field, e.message))
}

pub fn upstreams(f: &UpstreamsFile) -> Result<UpstreamTimeouts, KeyError> {
    let k = "edgeward.upstreams";
    in_range(
        &format!("{k}.connect_timeout_ms"),
        f.connect_timeout_ms,
        MAX_TIMEOUT_MS,
    )?;
    in_range(
        &format!("{k}.read_timeout_ms"),
        f.read_timeout_ms,
        MAX_TIMEOUT_MS,
    )?;
    in_range(
        &format!("{k}.write_timeout_ms"),
        f.write_timeout_ms,
        MAX_TIMEOUT_MS,
    )?;
    in_range(
        &format!("{k}.idle_timeout_seconds"),
        f.idle_timeout_seconds,
        MAX_IDLE_SECONDS,
    )?;
    in_range(
        &format!("{k}.health_check_interval_seconds"),
        f.health_check_interval_seconds,
        MAX_IDLE_SECONDS,
    )?;
    Ok(UpstreamTimeouts {
        connect: Duration::from_millis(f.connect_timeout_ms),
        read: Duration::from_millis(f.read_timeout_ms),
        write: Duration::from_millis(f.write_timeout_ms),
        idle: Duration::from_secs(f.idle_timeout_seconds),
    })
}

/// The downstream timeouts and `max_connections`.
pub fn downstream(f: &DownstreamFile, s: &ShutdownFile) -> Result<(Limits, usize), KeyError> {
    let k = "edgeward.downstream";
    in_range(
        &format!("{k}.request_header_timeout_ms"),
        f.request_header_timeout_ms,
        MAX_HEADER_TIMEOUT_MS,
    )?;
    // 0 turns keep-alive off: every response closes its connection.
    if f.keepalive_timeout_seconds > MAX_KEEPALIVE_SECONDS {
        return Err((
            format!("{k}.keepalive_timeout_seconds"),
            format!("must be between 0 (no keep-alive) and {MAX_KEEPALIVE_SECONDS}"),
        ));
    }
    if f.max_connections == 0 {
        return Err((format!("{k}.max_connections"), "must be at least 1".into()));
    }
    if s.request_wait_ms > MAX_REQUEST_WAIT_MS {
        return Err((
            "edgeward.shutdown.request_wait_ms".into(),
            format!("must be at most {MAX_REQUEST_WAIT_MS}"),
        ));
    }
    let limits = Limits {
        header_timeout: Duration::from_millis(f.request_header_timeout_ms),
        keepalive: Duration::from_secs(f.keepalive_timeout_seconds),
        request_wait: Duration::from_millis(s.request_wait_ms),
        keepalive_requests: f.keepalive_request_limit,
    };
    Ok((limits, f.max_connections))
}

/// `trusted_proxies`: CIDRs, or single addresses (a /32 or /128).
pub fn trusted_proxies(list: &[String]) -> Result<Vec<IpNet>, KeyError> {
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            let s = s.trim();
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| {
                    (
                        format!("edgeward.trusted_proxies[{i}]"),
                        format!("`{s}` is not a CIDR (e.g. 10.0.0.0/8, 2001:db8::/32) or an IP"),
                    )
                })
        })
        .collect()
}

/// `upstreams.health_check` (or the TCP check of `health_check_interval_seconds` without it).
pub fn health(f: &UpstreamsFile) -> Result<crate::pools::health::HealthConfig, KeyError> {
    use crate::pools::health::{parse_expect, HealthConfig};
    let connect = Duration::from_millis(f.connect_timeout_ms);
    let Some(h) = &f.health_check else {
        let interval = Duration::from_secs(f.health_check_interval_seconds);
        return Ok(HealthConfig::tcp(interval, connect));
    };
    let k = "edgeward.upstreams.health_check";
    let path = match &h.http_path {
        Some(p) if !p.starts_with('/') || p.bytes().any(|b| !b.is_ascii_graphic()) => {
            return Err((
                format!("{k}.http_path"),
                format!("`{p}` must be an absolute path without spaces (or null for a TCP check)"),
            ))
        }
        p => p.clone(),
    };
    if !crate::model::host::valid_request_host(&h.host) {
        return Err((
            format!("{k}.host"),
            format!("`{}` is not a host name", h.host),
        ));
    }
    let expect = parse_expect(&h.expect_status).ok_or_else(|| {
        (
            format!("{k}.expect_status"),
            format!(
                "`{}` must be a status or a range such as 200-399",
                h.expect_status
            ),
        )
    })?;
    in_range(
        &format!("{k}.interval_seconds"),
        h.interval_seconds,
        MAX_IDLE_SECONDS,
    )?;
    in_range(&format!("{k}.timeout_ms"), h.timeout_ms, MAX_TIMEOUT_MS)?;
    for (name, v) in [("rise", h.rise), ("fall", h.fall)] {
        if !(1..=100).contains(&v) {
            return Err((format!("{k}.{name}"), "must be between 1 and 100".into()));
        }
    }
    Ok(HealthConfig {
        http_path: path,
        host: h.host.clone(),
        expect,
        interval: Duration::from_secs(h.interval_seconds),
        timeout: Duration::from_millis(h.timeout_ms),
        rise: h.rise,
        fall: h.fall,
        passive: h.passive,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_proxies_take_cidrs_and_addresses() {
        let n = trusted_proxies(&["10.0.0.0/8".into(), " ::1 ".into(), "192.168.1.7/24".into()])
            .unwrap();
        assert_eq!(n[1].to_string(), "::1/128");
        assert_eq!(n[2].to_string(), "192.168.1.0/24");
        let e = trusted_proxies(&["10.0.0.0/8".into(), "10.0.0.0/33".into()]).unwrap_err();
        assert_eq!(e.0, "edgeward.trusted_proxies[1]");
    }
}
