//! The ACME HTTP-01 responder: `GET`/`HEAD /.well-known/acme-challenge/<token>` answered from memory for
//! every domain, with no per-domain rule. Checked before routing and before any redirect. The decision is
//! a pure function of the request line, the host and the tables, so it is tested without a socket.

use crate::model::challenge::valid_token;
use crate::model::ChallengeMode;
use crate::state::{Reader, Route};
use bytes::Bytes;
use http::Method;
use std::sync::Arc;

pub const PREFIX: &str = "/.well-known/acme-challenge/";

/// What to do with a request under the challenge prefix.
pub enum Decision {
    /// 200 with this body (the key authorization).
    Answer(Bytes),
    /// 404: unknown token, wrong host, bad token, wrong method. Never forwarded.
    NotFound,
    /// The domain passes challenges through: proxy it to this route like any request.
    Proxy(Arc<Route>),
}

/// The token of a request that may be answered: `GET`/`HEAD` with a well-formed token.
pub fn answerable_token<'a>(method: &Method, path: &'a str) -> Option<&'a str> {
    let token = &path[PREFIX.len()..];
    let readable = method == Method::GET || method == Method::HEAD;
    (readable && valid_token(token)).then_some(token)
}

/// Decide for a request whose path starts with `PREFIX`. `host` is the normalised request host.
pub fn decide(state: &Reader, method: &Method, path: &str, host: &str, now: u64) -> Decision {
    if let Some(token) = answerable_token(method, path) {
        if let Some(body) = state.challenge(token, host, now) {
            return Decision::Answer(body);
        }
    }
    match state.route(host) {
        Some(r) if r.domain.acme_challenges == ChallengeMode::Passthrough => Decision::Proxy(r),
        _ => Decision::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Challenge, Domain, TlsMode};
    use crate::pools::Pools;
    use crate::state::State;
    use std::time::Duration;

    #[test]
    fn decisions() {
        let state = Arc::new(State::default());
        let pools = Pools::new(Duration::from_secs(1));
        let addr = "127.0.0.1:1".parse().unwrap();
        for (host, mode) in [
            ("own.test", ChallengeMode::Passthrough),
            ("ours.test", ChallengeMode::Intercept),
        ] {
            state.routes.insert(Arc::new(Route {
                domain: Domain {
                    host: host.into(),
                    upstreams: vec![addr],
                    tls: TlsMode::Off,
                    redirect_https: false,
                    acme_challenges: mode,
                    ..crate::model::domain::test_domain(host)
                },
                pool: pools.get(&[addr]),
            }));
        }
        state.challenges.insert(&Challenge {
            token: "tok".into(),
            host: "ours.test".into(),
            key_authorization: "tok.k".into(),
            expires_at: 100,
            kind: crate::model::AcmeChallenge::Http01,
        });
        let reader = state.reader();
        let d = |m: &Method, p: &str, h: &str, now| decide(&reader, m, p, h, now);
        let path = "/.well-known/acme-challenge/tok";
        assert!(
            matches!(d(&Method::GET, path, "ours.test", 1), Decision::Answer(b) if b == "tok.k")
        );
        assert!(matches!(
            d(&Method::HEAD, path, "ours.test", 1),
            Decision::Answer(_)
        ));
        assert!(
            matches!(d(&Method::GET, path, "ours.test", 100), Decision::NotFound),
            "expired"
        );
        assert!(matches!(
            d(&Method::POST, path, "ours.test", 1),
            Decision::NotFound
        ));
        assert!(matches!(
            d(&Method::GET, path, "other.test", 1),
            Decision::NotFound
        ));
        assert!(matches!(
            d(&Method::GET, path, "own.test", 1),
            Decision::Proxy(_)
        ));
        assert!(matches!(
            d(&Method::GET, "/.well-known/acme-challenge/", "ours.test", 1),
            Decision::NotFound
        ));
        assert!(matches!(
            d(
                &Method::GET,
                "/.well-known/acme-challenge/a/b",
                "own.test",
                1
            ),
            Decision::Proxy(_)
        ));
    }
}
