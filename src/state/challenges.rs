//! Challenges held in memory for the responders. An HTTP-01 key authorization is turned into `Bytes`
//! once, at insert, so answering a challenge clones a refcount and nothing else; a TLS-ALPN-01
//! challenge's certificate is built at insert too, so the TLS callback only looks it up.

use crate::model::{AcmeChallenge, Challenge};
use crate::tls::alpn::{challenge_cert, ChallengeCert};
use bytes::Bytes;
use dashmap::DashMap;
use std::sync::Arc;

struct Entry {
    host: Box<str>,
    body: Bytes,
    expires_at: u64,
    kind: AcmeChallenge,
}

/// A pending TLS-ALPN-01 challenge's certificate, served for its host.
pub struct AlpnChallenge {
    token: Box<str>,
    expires_at: u64,
    pub cert: ChallengeCert,
}

/// token -> (host, body, expiry), and host -> the certificate of its TLS-ALPN-01 challenge. Lookups are
/// one map probe; expiry is checked on read, and a sweeper removes what has expired.
#[derive(Default)]
pub struct Challenges {
    map: DashMap<Box<str>, Entry>,
    alpn: DashMap<Box<str>, Arc<AlpnChallenge>>,
}

impl Challenges {
    pub fn insert(&self, c: &Challenge) {
        if c.kind == AcmeChallenge::TlsAlpn01 {
            match challenge_cert(&c.host, &c.key_authorization) {
                Ok(cert) => {
                    let a = AlpnChallenge {
                        token: c.token.as_str().into(),
                        expires_at: c.expires_at,
                        cert,
                    };
                    self.alpn.insert(c.host.as_str().into(), Arc::new(a));
                }
                Err(e) => log::error!("building the tls-alpn-01 certificate of {}: {e}", c.host),
            }
        }
        let old = self.map.insert(
            c.token.as_str().into(),
            Entry {
                host: c.host.as_str().into(),
                body: Bytes::copy_from_slice(c.key_authorization.as_bytes()),
                expires_at: c.expires_at,
                kind: c.kind,
            },
        );
        if let Some(old) = old.filter(|o| *o.host != *c.host) {
            self.forget_alpn(&old.host, &c.token);
        }
    }

    pub fn remove(&self, token: &str) -> bool {
        match self.map.remove(token) {
            Some((_, e)) => {
                self.forget_alpn(&e.host, token);
                true
            }
            None => false,
        }
    }

    fn forget_alpn(&self, host: &str, token: &str) {
        self.alpn.remove_if(host, |_, a| &*a.token == token);
    }

    /// The response body for `token` if it was registered for `host` as an HTTP-01 challenge and has
    /// not expired.
    pub fn lookup(&self, token: &str, host: &str, now: u64) -> Option<Bytes> {
        let e = self.map.get(token)?;
        (&*e.host == host && e.expires_at > now && e.kind == AcmeChallenge::Http01)
            .then(|| e.body.clone())
    }

    /// The TLS-ALPN-01 challenge pending for `host`, if it has not expired.
    pub fn alpn(&self, host: &str, now: u64) -> Option<Arc<AlpnChallenge>> {
        let a = self.alpn.get(host)?;
        (a.expires_at > now).then(|| a.clone())
    }

    pub fn contains(&self, token: &str) -> bool {
        self.map.contains_key(token)
    }

    /// The stored challenge for `token`, expired or not.
    pub fn get(&self, token: &str) -> Option<Challenge> {
        self.map.get(token).map(|e| Challenge {
            token: token.to_string(),
            host: e.host.to_string(),
            key_authorization: String::from_utf8_lossy(&e.body).into_owned(),
            expires_at: e.expires_at,
            kind: e.kind,
        })
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Every token held.
    pub fn tokens(&self) -> Vec<String> {
        self.map.iter().map(|e| e.key().to_string()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Tokens whose expiry is at or before `now`.
    pub fn expired(&self, now: u64) -> Vec<String> {
        self.map
            .iter()
            .filter(|e| e.expires_at <= now)
            .map(|e| e.key().to_string())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_checks_host_and_expiry() {
        let m = Challenges::default();
        m.insert(&Challenge {
            token: "tok".into(),
            host: "a.com".into(),
            key_authorization: "tok.x".into(),
            expires_at: 110,
            kind: AcmeChallenge::Http01,
        });
        assert_eq!(
            m.lookup("tok", "a.com", 105).as_deref(),
            Some(&b"tok.x"[..])
        );
        assert!(m.lookup("tok", "b.com", 105).is_none());
        assert!(m.lookup("tok", "a.com", 110).is_none());
        assert_eq!(m.expired(110), vec!["tok".to_string()]);
        assert!(m.remove("tok"));
        assert!(m.lookup("tok", "a.com", 105).is_none());
    }

    #[test]
    fn tls_alpn_challenges_have_a_certificate_and_no_http_answer() {
        let m = Challenges::default();
        let c = Challenge {
            token: "t1".into(),
            host: "a.com".into(),
            key_authorization: "t1.x".into(),
            expires_at: 110,
            kind: AcmeChallenge::TlsAlpn01,
        };
        m.insert(&c);
        assert!(
            m.lookup("t1", "a.com", 105).is_none(),
            "not an HTTP-01 token"
        );
        assert!(m.alpn("a.com", 105).is_some());
        assert!(m.alpn("a.com", 110).is_none(), "expired");
        assert!(m.alpn("b.com", 105).is_none());
        assert_eq!(m.get("t1").unwrap(), c);
        // A newer challenge for the host replaces the certificate; removing the older token keeps it.
        m.insert(&Challenge {
            token: "t2".into(),
            ..c.clone()
        });
        assert!(m.remove("t1"));
        assert!(m.alpn("a.com", 105).is_some());
        assert!(m.remove("t2"));
        assert!(m.alpn("a.com", 105).is_none());
    }
}
