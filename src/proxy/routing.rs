//! Host routing and upstream selection: the request's host picks a route, the route's shared pool picks
//! a backend round robin, skipping unhealthy ones and the ones this request already failed to reach.

use crate::state::Route;
use pingora_error::{Error, ErrorType, Result};
use pingora_proxy::Session;
use std::net::SocketAddr;
use std::sync::Arc;

/// The host a request is for: `Host`, else the URI authority (HTTP/2 `:authority`, absolute form).
pub fn request_host(session: &Session) -> Option<&str> {
    let req = session.req_header();
    match req.headers.get(http::header::HOST) {
        Some(h) => h.to_str().ok(),
        None => req.uri.authority().map(|a| a.as_str()),
    }
}

/// Pick the next backend for this request, or fail with 502 when none is left.
pub fn pick(route: &Arc<Route>, tried: &mut Vec<SocketAddr>) -> Result<SocketAddr> {
    match route.pool.select(tried) {
        Some(addr) => {
            tried.push(addr);
            Ok(addr)
        }
        None => Error::e_explain(
            ErrorType::HTTPStatus(502),
            format!("no reachable upstream for {}", route.domain.host),
        ),
    }
}
