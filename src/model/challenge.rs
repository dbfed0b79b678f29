//! The ACME challenge record: a token, the host it was registered for and the key authorization (the
//! HTTP-01 response body, or what a TLS-ALPN-01 challenge certificate is built from), with the
//! validation of what the admin API and the ACME manager put.

use super::domain::AcmeChallenge;
use super::field::FieldError;
use super::host::parse_host;
use serde::{Deserialize, Serialize};

pub const MAX_TOKEN_LEN: usize = 255;
pub const MAX_KEY_AUTHORIZATION_LEN: usize = 1024;

/// A stored challenge: the token, the host it was registered for and the exact response body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Challenge {
    pub token: String,
    pub host: String,
    pub key_authorization: String,
    /// Unix seconds after which the token is no longer answered.
    pub expires_at: u64,
    /// HTTP-01 (answered on the HTTP listeners; records without the field) or TLS-ALPN-01 (a
    /// challenge certificate for `host` on the HTTPS listeners). Stored as `challenge`: `kind` is the
    /// tag of the `Change` a challenge travels in.
    #[serde(
        rename = "challenge",
        default = "http01",
        skip_serializing_if = "is_http01"
    )]
    pub kind: AcmeChallenge,
}

fn http01() -> AcmeChallenge {
    AcmeChallenge::Http01
}

fn is_http01(k: &AcmeChallenge) -> bool {
    *k == AcmeChallenge::Http01
}

/// The body of `PUT /v1/challenges/{token}` (and of a `put_challenge` op).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengeInput {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub key_authorization: Option<String>,
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

/// Longest TTL accepted: an order's authorization lives at most a few days.
pub const MAX_TTL_SECONDS: u64 = 7 * 24 * 3600;

impl ChallengeInput {
    pub fn validate(
        self,
        path_token: Option<&str>,
        default_ttl: u64,
        now: u64,
    ) -> Result<Challenge, FieldError> {
        let token = match (path_token, self.token.as_deref()) {
            (Some(p), Some(b)) if p != b => {
                return Err(FieldError::new(
                    "token",
                    "differs from the token in the URL",
                ))
            }
            (Some(t), _) | (None, Some(t)) => t.to_string(),
            (None, None) => return Err(FieldError::new("token", "is required")),
        };
        if !valid_token(&token) {
            return Err(FieldError::new(
                "token",
                "must be 1 to 255 characters of A-Z a-z 0-9 _ -",
            ));
        }
        let host = self
            .host
            .ok_or_else(|| FieldError::new("host", "is required"))?;
        let host = parse_host(&host, false).map_err(|e| FieldError::new("host", e.to_string()))?;
        let ka = self
            .key_authorization
            .ok_or_else(|| FieldError::new("key_authorization", "is required"))?;
        let thumbprint = ka
            .strip_prefix(token.as_str())
            .and_then(|r| r.strip_prefix('.'));
        match thumbprint {
            Some(t) if !t.is_empty() && t.len() <= MAX_KEY_AUTHORIZATION_LEN && valid_b64url(t) => {
            }
            _ => {
                return Err(FieldError::new(
                    "key_authorization",
                    "must be `<token>.<base64url account thumbprint>` (RFC 8555 section 8.1)",
                ))
            }
        }
        let ttl = self.ttl_seconds.unwrap_or(default_ttl);
        if ttl == 0 || ttl > MAX_TTL_SECONDS {
            return Err(FieldError::new(
                "ttl_seconds",
                format!("must be between 1 and {MAX_TTL_SECONDS}"),
            ));
        }
        Ok(Challenge {
            token,
            host,
            key_authorization: ka,
            expires_at: now + ttl,
            kind: AcmeChallenge::Http01,
        })
    }
}

/// `[A-Za-z0-9_-]{1,255}`: the token alphabet of RFC 8555 (base64url, no padding).
pub fn valid_token(token: &str) -> bool {
    !token.is_empty() && token.len() <= MAX_TOKEN_LEN && valid_b64url(token)
}

fn valid_b64url(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(token: &str, host: &str, ka: &str) -> ChallengeInput {
        ChallengeInput {
            token: None,
            host: Some(host.into()),
            key_authorization: Some(ka.into()),
            ttl_seconds: None,
        }
        .with_token(token)
    }

    impl ChallengeInput {
        fn with_token(mut self, t: &str) -> Self {
            self.token = Some(t.into());
            self
        }
    }

    #[test]
    fn a_tls_alpn_challenge_round_trips_inside_a_change() {
        let c = Challenge {
            token: "t".into(),
            host: "a.com".into(),
            key_authorization: "t.x".into(),
            expires_at: 5,
            kind: AcmeChallenge::TlsAlpn01,
        };
        let json = serde_json::to_string(&crate::model::Change::PutChallenge(c.clone())).unwrap();
        assert!(json.contains(r#""challenge":"tls-alpn-01""#), "{json}");
        match serde_json::from_str(&json).unwrap() {
            crate::model::Change::PutChallenge(back) => assert_eq!(back, c),
            other => panic!("{other:?}"),
        }
        // Records written before the field existed are HTTP-01.
        let old: Challenge = serde_json::from_str(
            r#"{"token": "t", "host": "a.com", "key_authorization": "t.x", "expires_at": 5}"#,
        )
        .unwrap();
        assert_eq!(old.kind, AcmeChallenge::Http01);
    }

    #[test]
    fn validation_names_fields() {
        let ok = input("tok_1-A", "Example.com", "tok_1-A.thumb_print-x").validate(None, 3600, 100);
        let c = ok.unwrap();
        assert_eq!((c.host.as_str(), c.expires_at), ("example.com", 3700));
        let bad = |i: ChallengeInput| i.validate(None, 3600, 0).unwrap_err().field;
        assert_eq!(bad(input("a/b", "a.com", "a/b.x")), "token");
        assert_eq!(bad(input(&"a".repeat(256), "a.com", "x")), "token");
        assert_eq!(bad(input("tok", "a.com:80", "tok.x")), "host");
        assert_eq!(bad(input("tok", "*.a.com", "tok.x")), "host");
        assert_eq!(bad(input("tok", "a.com", "other.x")), "key_authorization");
        assert_eq!(bad(input("tok", "a.com", "tok.")), "key_authorization");
        assert_eq!(bad(input("tok", "a.com", "tok.a b")), "key_authorization");
        let mut ttl = input("tok", "a.com", "tok.x");
        ttl.ttl_seconds = Some(0);
        assert_eq!(bad(ttl), "ttl_seconds");
    }
}
