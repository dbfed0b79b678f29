//! Upstream timeouts: the configuration's (`edgeward.upstreams`) and a domain's overrides of them
//! (`upstream_timeouts` in the domain object).

use super::field::FieldError;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Longest timeout in milliseconds that may be configured: an hour.
pub const MAX_TIMEOUT_MS: u64 = 3_600_000;
/// Longest idle time of a pooled upstream connection.
pub const MAX_IDLE_SECONDS: u64 = 3_600;

/// The timeouts every request to an upstream gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamTimeouts {
    /// TCP connect.
    pub connect: Duration,
    /// Each read from the upstream; before the response head, expiry answers 504.
    pub read: Duration,
    /// Each write to the upstream (the request and its body).
    pub write: Duration,
    /// How long an idle upstream connection stays in the pool.
    pub idle: Duration,
}

impl Default for UpstreamTimeouts {
    fn default() -> Self {
        UpstreamTimeouts {
            connect: Duration::from_millis(1000),
            read: Duration::from_millis(60_000),
            write: Duration::from_millis(60_000),
            idle: Duration::from_secs(60),
        }
    }
}

impl UpstreamTimeouts {
    /// These timeouts with a domain's overrides applied.
    pub fn with(&self, o: &TimeoutOverrides) -> UpstreamTimeouts {
        let ms = |v: Option<u64>, d: Duration| v.map_or(d, Duration::from_millis);
        UpstreamTimeouts {
            connect: ms(o.connect_timeout_ms, self.connect),
            read: ms(o.read_timeout_ms, self.read),
            write: ms(o.write_timeout_ms, self.write),
            idle: o
                .idle_timeout_seconds
                .map_or(self.idle, Duration::from_secs),
        }
    }
}

/// A domain's own upstream timeouts; an absent one is the configuration's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_seconds: Option<u64>,
}

impl TimeoutOverrides {
    pub fn is_empty(&self) -> bool {
        *self == TimeoutOverrides::default()
    }

    /// Every value in range; errors name the field under `at` (`upstream_timeouts`).
    pub fn validate(&self, at: &str) -> Result<(), FieldError> {
        for (name, v) in [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("read_timeout_ms", self.read_timeout_ms),
            ("write_timeout_ms", self.write_timeout_ms),
        ] {
            check_range(at, name, v, MAX_TIMEOUT_MS)?;
        }
        check_range(
            at,
            "idle_timeout_seconds",
            self.idle_timeout_seconds,
            MAX_IDLE_SECONDS,
        )
    }
}

/// `v`, if given, is within 1..=max.
pub fn check_range(at: &str, name: &str, v: Option<u64>, max: u64) -> Result<(), FieldError> {
    match v {
        Some(v) if v == 0 || v > max => Err(FieldError::new(
            format!("{at}.{name}"),
            format!("must be between 1 and {max}"),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_only_what_they_name() {
        let base = UpstreamTimeouts::default();
        let o = TimeoutOverrides {
            read_timeout_ms: Some(5),
            ..Default::default()
        };
        let t = base.with(&o);
        assert_eq!(t.read, Duration::from_millis(5));
        assert_eq!(
            (t.connect, t.write, t.idle),
            (base.connect, base.write, base.idle)
        );
        assert!(TimeoutOverrides::default().is_empty() && !o.is_empty());
    }

    #[test]
    fn out_of_range_values_name_their_field() {
        let o = TimeoutOverrides {
            write_timeout_ms: Some(0),
            ..Default::default()
        };
        let e = o.validate("upstream_timeouts").unwrap_err();
        assert_eq!(e.field, "upstream_timeouts.write_timeout_ms");
        let o = TimeoutOverrides {
            idle_timeout_seconds: Some(MAX_IDLE_SECONDS + 1),
            ..Default::default()
        };
        assert!(o.validate("x").is_err());
        let ok = TimeoutOverrides {
            read_timeout_ms: Some(MAX_TIMEOUT_MS),
            ..Default::default()
        };
        assert!(ok.validate("x").is_ok());
    }
}
