//! `redirect_https`: plain HTTP requests get a 308 to `https://` with the same host, path and query.
//! ACME challenge paths are exempt (the caller checks), so certificates can be issued before HTTPS works.

use bytes::Bytes;
use http::uri::PathAndQuery;
use pingora_error::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

/// The redirect target for a normalised `host` (no port) and the request's path and query.
pub fn location(host: &str, port: Option<u16>, pq: Option<&PathAndQuery>) -> String {
    let pq = pq.map(|p| p.as_str()).unwrap_or("/");
    match port {
        Some(p) => format!("https://{host}:{p}{pq}"),
        None => format!("https://{host}{pq}"),
    }
}

pub async fn send(session: &mut Session, location: String, head: bool) -> Result<()> {
    let body = Bytes::from(format!("redirecting to {location}\n"));
    let mut resp = ResponseHeader::build(308, Some(3))?;
    resp.insert_header(http::header::LOCATION, location)?;
    super::write(session, resp, body, head).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_path_and_query() {
        let pq: PathAndQuery = "/a/b?x=1&y=2".parse().unwrap();
        assert_eq!(
            location("shop.test", None, Some(&pq)),
            "https://shop.test/a/b?x=1&y=2"
        );
        assert_eq!(
            location("shop.test", Some(8443), None),
            "https://shop.test:8443/"
        );
    }
}
