//! Challenge tokens held in memory for the responder. The key authorization is turned into `Bytes` once,
//! at insert, so answering a challenge clones a refcount and nothing else.

use crate::model::Challenge;
use bytes::Bytes;
use dashmap::DashMap;

struct Entry {
    host: Box<str>,
    body: Bytes,
    expires_at: u64,
}

/// token -> (host, body, expiry). Lookups are one map probe; expiry is checked on read, and a sweeper
/// removes what has expired.
#[derive(Default)]
pub struct Challenges {
    map: DashMap<Box<str>, Entry>,
}

impl Challenges {
    pub fn insert(&self, c: &Challenge) {
        self.map.insert(
            c.token.as_str().into(),
            Entry {
                host: c.host.as_str().into(),
                body: Bytes::copy_from_slice(c.key_authorization.as_bytes()),
                expires_at: c.expires_at,
            },
        );
    }

    pub fn remove(&self, token: &str) -> bool {
        self.map.remove(token).is_some()
    }

    /// The response body for `token` if it was registered for `host` and has not expired.
    pub fn lookup(&self, token: &str, host: &str, now: u64) -> Option<Bytes> {
        let e = self.map.get(token)?;
        (&*e.host == host && e.expires_at > now).then(|| e.body.clone())
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
}
