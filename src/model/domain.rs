//! The domain object: what the admin API, the config seed list and the store all exchange.
//! Input is parsed into `DomainInput` (every field optional, unknown fields refused) and validated into
//! `Domain`, with errors that name the field.

use super::cert::CertRef;
pub use super::field::FieldError;
use super::host::parse_host;
use super::upstream::TimeoutOverrides;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    #[default]
    Off,
    Manual,
    Auto,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ChallengeMode {
    #[default]
    Intercept,
    Passthrough,
}

/// A stored, validated domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Domain {
    pub host: String,
    pub upstreams: Vec<SocketAddr>,
    pub tls: TlsMode,
    pub redirect_https: bool,
    pub acme_challenges: ChallengeMode,
    /// The certificate its names are served with: the one stored under this host (`null`: its own).
    #[serde(default = "CertRef::legacy")]
    pub certificate_host: CertRef,
    #[serde(default, skip_serializing_if = "TimeoutOverrides::is_empty")]
    pub upstream_timeouts: TimeoutOverrides,
}

/// The body of `PUT /v1/domains/{host}` (and of a `put_domain` op, a seed entry).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainInput {
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub upstreams: Option<Vec<String>>,
    #[serde(default)]
    pub tls: Option<TlsMode>,
    #[serde(default)]
    pub redirect_https: Option<bool>,
    #[serde(default)]
    pub acme_challenges: Option<ChallengeMode>,
    /// The host whose stored certificate serves this domain (a multi-SAN certificate shared by
    /// several domains); absent or `null`: its own.
    #[serde(default)]
    pub certificate_host: Option<String>,
    #[serde(default)]
    pub upstream_timeouts: Option<TimeoutOverrides>,
}

/// What the domain validation needs to know about the running configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct DomainPolicy {
    /// `tls: "auto"` needs an ACME section.
    pub acme_enabled: bool,
}

pub const MAX_UPSTREAMS: usize = 64;

impl DomainInput {
    /// Validate into a `Domain`. `path_host` is the host from the URL, if any; a body `host` must match it.
    pub fn validate(
        self,
        path_host: Option<&str>,
        policy: DomainPolicy,
    ) -> Result<Domain, FieldError> {
        let host = match (path_host, self.host.as_deref()) {
            (Some(p), Some(b)) => {
                let (p, b) = (parse_host(p, true), parse_host(b, true));
                match (p, b) {
                    (Ok(p), Ok(b)) if p == b => p,
                    (Err(e), _) => return Err(FieldError::new("host", e.to_string())),
                    (_, Err(e)) => return Err(FieldError::new("host", e.to_string())),
                    _ => return Err(FieldError::new("host", "differs from the host in the URL")),
                }
            }
            (Some(h), None) | (None, Some(h)) => {
                parse_host(h, true).map_err(|e| FieldError::new("host", e.to_string()))?
            }
            (None, None) => return Err(FieldError::new("host", "is required")),
        };
        let raw = self
            .upstreams
            .ok_or_else(|| FieldError::new("upstreams", "is required"))?;
        let upstreams = parse_upstreams(&raw)?;
        let tls = self.tls.unwrap_or_default();
        if tls == TlsMode::Auto && !policy.acme_enabled {
            return Err(FieldError::new(
                "tls",
                "\"auto\" needs an `edgeward.acme` section in the configuration",
            ));
        }
        if tls == TlsMode::Auto && host.starts_with("*.") {
            return Err(FieldError::new(
                "tls",
                "\"auto\" uses HTTP-01, which cannot issue wildcard certificates: upload one (\"manual\")",
            ));
        }
        let certificate_host = match self.certificate_host.as_deref() {
            None => CertRef::Own,
            Some(c) => {
                let c = parse_host(c, true)
                    .map_err(|e| FieldError::new("certificate_host", e.to_string()))?;
                if tls == TlsMode::Auto {
                    return Err(FieldError::new(
                        "certificate_host",
                        "a domain with tls \"auto\" is served the certificate issued for it: leave \
                         `certificate_host` out",
                    ));
                }
                if c == host {
                    CertRef::Own
                } else {
                    CertRef::Shared(c)
                }
            }
        };
        let upstream_timeouts = self.upstream_timeouts.unwrap_or_default();
        upstream_timeouts.validate("upstream_timeouts")?;
        Ok(Domain {
            host,
            upstreams,
            tls,
            redirect_https: self.redirect_https.unwrap_or(false),
            acme_challenges: self.acme_challenges.unwrap_or_default(),
            certificate_host,
            upstream_timeouts,
        })
    }
}

/// Upstreams are `IP:port` (`[v6]:port`): resolved once by the operator, never on the request path.
pub fn parse_upstreams(raw: &[String]) -> Result<Vec<SocketAddr>, FieldError> {
    if raw.is_empty() {
        return Err(FieldError::new("upstreams", "needs at least one address"));
    }
    if raw.len() > MAX_UPSTREAMS {
        return Err(FieldError::new(
            "upstreams",
            format!("at most {MAX_UPSTREAMS} addresses"),
        ));
    }
    let mut out = Vec::with_capacity(raw.len());
    for (i, s) in raw.iter().enumerate() {
        let addr: SocketAddr = s.trim().parse().map_err(|_| {
            FieldError::new(
                format!("upstreams[{i}]"),
                format!("`{s}` is not an IP:port address (e.g. 127.0.0.1:3000 or [::1]:3000)"),
            )
        })?;
        if addr.port() == 0 {
            return Err(FieldError::new(
                format!("upstreams[{i}]"),
                "port 0 is not allowed",
            ));
        }
        if out.contains(&addr) {
            return Err(FieldError::new(
                format!("upstreams[{i}]"),
                format!("`{s}` is listed twice"),
            ));
        }
        out.push(addr);
    }
    Ok(out)
}

/// A plain-HTTP domain on one placeholder upstream, for the unit tests of other modules.
#[cfg(test)]
pub(crate) fn test_domain(host: &str) -> Domain {
    Domain {
        host: host.into(),
        upstreams: vec!["127.0.0.1:1".parse().expect("valid address")],
        tls: TlsMode::Off,
        redirect_https: false,
        acme_challenges: ChallengeMode::Intercept,
        certificate_host: CertRef::Own,
        upstream_timeouts: TimeoutOverrides::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(json: &str) -> DomainInput {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn defaults_and_required_fields() {
        let d = input(r#"{"upstreams": ["127.0.0.1:3000"]}"#)
            .validate(Some("Shop.Example.com"), DomainPolicy::default())
            .unwrap();
        assert_eq!(d.host, "shop.example.com");
        assert_eq!(d.tls, TlsMode::Off);
        assert!(!d.redirect_https);
        assert_eq!(d.acme_challenges, ChallengeMode::Intercept);
        let e = input("{}")
            .validate(Some("a.com"), DomainPolicy::default())
            .unwrap_err();
        assert_eq!(e.field, "upstreams");
    }

    #[test]
    fn bad_fields_are_named() {
        let p = DomainPolicy::default();
        let e = input(r#"{"upstreams": ["127.0.0.1:1", "nope"]}"#).validate(Some("a.com"), p);
        assert_eq!(e.unwrap_err().field, "upstreams[1]");
        let e =
            input(r#"{"upstreams": ["127.0.0.1:1", "127.0.0.1:1"]}"#).validate(Some("a.com"), p);
        assert_eq!(e.unwrap_err().field, "upstreams[1]");
        let e = input(r#"{"upstreams": []}"#).validate(Some("a.com"), p);
        assert_eq!(e.unwrap_err().field, "upstreams");
        let e =
            input(r#"{"upstreams": ["127.0.0.1:1"], "tls": "auto"}"#).validate(Some("a.com"), p);
        assert_eq!(e.unwrap_err().field, "tls");
        let e =
            input(r#"{"upstreams": ["127.0.0.1:1"], "host": "b.com"}"#).validate(Some("a.com"), p);
        assert_eq!(e.unwrap_err().field, "host");
        let e = input(r#"{"upstreams": ["127.0.0.1:1"]}"#).validate(Some("a.*.com"), p);
        assert_eq!(e.unwrap_err().field, "host");
        assert!(serde_json::from_str::<DomainInput>(r#"{"upstream": []}"#).is_err());
        assert!(serde_json::from_str::<DomainInput>(r#"{"tls": "on"}"#).is_err());
        let e = input(r#"{"upstreams": ["127.0.0.1:1"], "certificate_host": "a b"}"#)
            .validate(Some("a.com"), p);
        assert_eq!(e.unwrap_err().field, "certificate_host");
        let e =
            input(r#"{"upstreams": ["127.0.0.1:1"], "upstream_timeouts": {"read_timeout_ms": 0}}"#)
                .validate(Some("a.com"), p);
        assert_eq!(e.unwrap_err().field, "upstream_timeouts.read_timeout_ms");
        assert!(serde_json::from_str::<DomainInput>(
            r#"{"upstream_timeouts": {"read_timeout": 1}}"#
        )
        .is_err());
    }

    #[test]
    fn certificate_references_and_their_stored_form() {
        let p = DomainPolicy::default();
        let d = input(r#"{"upstreams": ["127.0.0.1:1"], "certificate_host": "Shop.Test"}"#)
            .validate(Some("www.shop.test"), p)
            .unwrap();
        assert_eq!(d.certificate_host, CertRef::Shared("shop.test".into()));
        assert_eq!(d.certificate_host.host(&d.host), "shop.test");
        let own = input(r#"{"upstreams": ["127.0.0.1:1"], "certificate_host": "www.shop.test"}"#)
            .validate(Some("www.shop.test"), p)
            .unwrap();
        assert_eq!(own.certificate_host, CertRef::Own);
        // Stored: `null` for its own, the host for a shared one; absent (older records): legacy.
        let json = serde_json::to_value(&own).unwrap();
        assert!(json["certificate_host"].is_null() && json.get("upstream_timeouts").is_none());
        let back: Domain = serde_json::from_value(serde_json::to_value(&d).unwrap()).unwrap();
        assert_eq!(back, d);
        let mut old = json.clone();
        old.as_object_mut().unwrap().remove("certificate_host");
        let old: Domain = serde_json::from_value(old).unwrap();
        assert_eq!(old.certificate_host, CertRef::Legacy);
    }
}
