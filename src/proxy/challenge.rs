//! The ACME HTTP-01 responder: `GET`/`HEAD /.well-known/acme-challenge/<token>` answered from memory for
//! every domain, with no per-domain rule. Checked before routing and before any redirect.

use super::respond;
use crate::challenges::valid_token;
use crate::control::State;
use crate::domain::ChallengeMode;
use crate::metrics;
use http::Method;
use pingora_error::Result;
use pingora_proxy::Session;

pub const PREFIX: &str = "/.well-known/acme-challenge/";

/// What the responder did with a request under the challenge prefix.
pub enum Outcome {
    /// A response was written.
    Answered,
    /// The domain passes challenges through to its upstreams: proxy it like any request.
    Proxy,
}

/// Answer a request whose path starts with `PREFIX`. `host` is the normalised request host.
pub async fn handle(state: &State, session: &mut Session, host: &str, now: u64) -> Result<Outcome> {
    let req = session.req_header();
    let method = req.method.clone();
    let token = &req.uri.path()[PREFIX.len()..];
    let readable = method == Method::GET || method == Method::HEAD;
    if readable && valid_token(token) {
        if let Some(body) = state.challenges.lookup(token, host, now) {
            metrics::CHALLENGE_HITS.inc();
            respond(session, 200, body, method == Method::HEAD).await?;
            return Ok(Outcome::Answered);
        }
    }
    let passthrough = state
        .routes
        .lookup(host)
        .is_some_and(|r| r.domain.acme_challenges == ChallengeMode::Passthrough);
    if passthrough {
        return Ok(Outcome::Proxy);
    }
    metrics::CHALLENGE_MISSES.inc();
    respond(
        session,
        404,
        bytes::Bytes::from_static(b"unknown challenge token\n"),
        method == Method::HEAD,
    )
    .await?;
    Ok(Outcome::Answered)
}
