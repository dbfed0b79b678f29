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

/// How a `tls: "auto"` domain proves control of its name to the CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AcmeChallenge {
    /// A token answered on the HTTP listeners (port 80).
    #[serde(rename = "http-01")]
    Http01,
    /// A challenge certificate for the `acme-tls/1` protocol on the HTTPS listeners (RFC 8737).
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    /// A TXT record at `_acme-challenge.<name>` (wildcards need it).
    #[serde(rename = "dns-01")]
    Dns01,
}

impl AcmeChallenge {
    pub fn as_str(self) -> &'static str {
        match self {
            AcmeChallenge::Http01 => "http-01",
            AcmeChallenge::TlsAlpn01 => "tls-alpn-01",
            AcmeChallenge::Dns01 => "dns-01",
        }
    }
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
    /// The challenge its orders use; set for every `tls: "auto"` domain (records written before the
    /// field existed: HTTP-01).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acme_challenge: Option<AcmeChallenge>,
}

impl Domain {
    /// The challenge an order for this domain uses.
    pub fn challenge(&self) -> AcmeChallenge {
        self.acme_challenge.unwrap_or(AcmeChallenge::Http01)
    }
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
    /// `http-01` (default), `tls-alpn-01` or `dns-01` (the default, and the only one, for wildcards).
    #[serde(default)]
    pub acme_challenge: Option<AcmeChallenge>,
}

/// What the domain validation needs to know about the running configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct DomainPolicy {
    /// `tls: "auto"` needs an ACME section.
    pub acme_enabled: bool,
    /// `dns-01` needs `edgeward.acme.dns01`.
    pub dns01: bool,
    /// `tls-alpn-01` needs an HTTPS listener.
    pub tls_alpn01: bool,
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
        let acme_challenge = acme_challenge(&host, tls, self.acme_challenge, policy)?;
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
            acme_challenge,
        })
    }
}

/// The challenge of a domain: the one asked for, else the default for its host (DNS-01 for a
/// wildcard, HTTP-01 otherwise), checked against what the host and the configuration allow.
fn acme_challenge(
    host: &str,
    tls: TlsMode,
    asked: Option<AcmeChallenge>,
    policy: DomainPolicy,
) -> Result<Option<AcmeChallenge>, FieldError> {
    let wildcard = host.starts_with("*.");
    let field = if asked.is_some() {
        "acme_challenge"
    } else {
        "tls"
    };
    let chosen = match (asked, wildcard) {
        (Some(c), _) => c,
        (None, true) => AcmeChallenge::Dns01,
        (None, false) => AcmeChallenge::Http01,
    };
    if asked.is_none() && tls != TlsMode::Auto {
        return Ok(None);
    }
    if wildcard && chosen != AcmeChallenge::Dns01 {
        return Err(FieldError::new(
            "acme_challenge",
            format!(
                "`{}` cannot validate a wildcard name: only \"dns-01\" can",
                chosen.as_str()
            ),
        ));
    }
    match chosen {
        AcmeChallenge::Dns01 if !policy.dns01 => Err(FieldError::new(
            field,
            if wildcard && asked.is_none() {
                "\"auto\" for a wildcard uses DNS-01, which needs an `edgeward.acme.dns01` section in \
                 the configuration (or upload a certificate: \"manual\")"
            } else {
                "\"dns-01\" needs an `edgeward.acme.dns01` section in the configuration"
            },
        )),
        AcmeChallenge::TlsAlpn01 if !policy.tls_alpn01 => Err(FieldError::new(
            "acme_challenge",
            "\"tls-alpn-01\" needs an HTTPS listener (`edgeward.https`)",
        )),
        _ => Ok(Some(chosen)),
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
        acme_challenge: None,
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
    fn challenge_defaults_and_refusals() {
        let all = DomainPolicy {
            acme_enabled: true,
            dns01: true,
            tls_alpn01: true,
        };
        let ok = |host: &str, extra: &str, p: DomainPolicy| {
            input(&format!(r#"{{"upstreams": ["127.0.0.1:1"]{extra}}}"#)).validate(Some(host), p)
        };
        let auto = r#", "tls": "auto""#;
        assert_eq!(
            ok("a.test", auto, all).unwrap().acme_challenge,
            Some(AcmeChallenge::Http01)
        );
        assert_eq!(
            ok("*.a.test", auto, all).unwrap().acme_challenge,
            Some(AcmeChallenge::Dns01)
        );
        assert_eq!(ok("a.test", "", all).unwrap().acme_challenge, None);
        for c in ["tls-alpn-01", "dns-01", "http-01"] {
            let d = ok(
                "a.test",
                &format!(r#"{auto}, "acme_challenge": "{c}""#),
                all,
            )
            .unwrap();
            assert_eq!(d.challenge().as_str(), c);
        }
        let field =
            |host: &str, extra: &str, p: DomainPolicy| ok(host, extra, p).unwrap_err().field;
        for c in ["http-01", "tls-alpn-01"] {
            let extra = format!(r#"{auto}, "acme_challenge": "{c}""#);
            assert_eq!(field("*.a.test", &extra, all), "acme_challenge");
        }
        let no_dns = DomainPolicy {
            dns01: false,
            ..all
        };
        assert_eq!(field("*.a.test", auto, no_dns), "tls");
        let dns = format!(r#"{auto}, "acme_challenge": "dns-01""#);
        assert_eq!(field("a.test", &dns, no_dns), "acme_challenge");
        let no_alpn = DomainPolicy {
            tls_alpn01: false,
            ..all
        };
        let alpn = format!(r#"{auto}, "acme_challenge": "tls-alpn-01""#);
        assert_eq!(field("a.test", &alpn, no_alpn), "acme_challenge");
        assert!(serde_json::from_str::<DomainInput>(r#"{"acme_challenge": "dns-02"}"#).is_err());
        // Stored records without the field (older ones) order with HTTP-01.
        let stored = serde_json::to_value(ok("a.test", "", all).unwrap()).unwrap();
        assert!(stored.get("acme_challenge").is_none());
        let back: Domain = serde_json::from_value(stored).unwrap();
        assert_eq!(back.challenge(), AcmeChallenge::Http01);
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
