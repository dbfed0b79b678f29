//! The console: a web interface for the admin API, served by the admin listener under `/console/`.
//! Plain HTML, CSS and JavaScript modules embedded in the binary (no build step, no CDN, no request to
//! any other host). The assets hold no data, so they are served without the token; the page asks for
//! the token (a form, or `#token=` in the URL, read and removed), keeps it in `sessionStorage`, and
//! sends it as a bearer header on every API call: no cookie, so no CSRF surface. Everything the page
//! shows or changes goes through the public admin API.

use super::Reply;
use http::{Method, Response, StatusCode};

/// (path, content type, body).
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "/console/",
        "text/html; charset=utf-8",
        include_str!("console/index.html"),
    ),
    (
        "/console/app.js",
        "text/javascript; charset=utf-8",
        include_str!("console/app.js"),
    ),
    (
        "/console/views.js",
        "text/javascript; charset=utf-8",
        include_str!("console/views.js"),
    ),
    (
        "/console/domains.js",
        "text/javascript; charset=utf-8",
        include_str!("console/domains.js"),
    ),
    (
        "/console/ui.js",
        "text/javascript; charset=utf-8",
        include_str!("console/ui.js"),
    ),
    (
        "/console/api.js",
        "text/javascript; charset=utf-8",
        include_str!("console/api.js"),
    ),
    (
        "/console/style.css",
        "text/css; charset=utf-8",
        include_str!("console/style.css"),
    ),
];

/// Only what the page itself loads; API calls to the same origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; form-action 'none'; base-uri 'none'; frame-ancestors 'none'";

/// The answer for a console path, or `None` for any other path.
pub fn serve(method: &Method, path: &str) -> Option<Reply> {
    if path != "/console" && !path.starts_with("/console/") {
        return None;
    }
    if method != Method::GET && method != Method::HEAD {
        return Some(super::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "the console is read with GET",
        ));
    }
    if path == "/console" {
        return Some(
            Response::builder()
                .status(StatusCode::MOVED_PERMANENTLY)
                .header(http::header::LOCATION, "/console/")
                .header(http::header::CONTENT_LENGTH, 0)
                .body(Vec::new())
                .expect("static response"),
        );
    }
    let Some((_, kind, body)) = ASSETS.iter().find(|(p, _, _)| *p == path) else {
        return Some(super::error(StatusCode::NOT_FOUND, "no such console file"));
    };
    // HEAD: the length of what GET would send, no body.
    let length = body.len();
    let body = if method == Method::HEAD {
        Vec::new()
    } else {
        body.as_bytes().to_vec()
    };
    Some(
        Response::builder()
            .status(StatusCode::OK)
            .header(http::header::CONTENT_TYPE, *kind)
            .header(http::header::CONTENT_LENGTH, length)
            .header(http::header::CONTENT_SECURITY_POLICY, CSP)
            .header(http::header::X_CONTENT_TYPE_OPTIONS, "nosniff")
            .header(http::header::REFERRER_POLICY, "no-referrer")
            .header(http::header::X_FRAME_OPTIONS, "DENY")
            // A new binary brings new assets: always revalidate.
            .header(http::header::CACHE_CONTROL, "no-cache")
            .body(body)
            .expect("static response"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_its_assets_and_nothing_else() {
        let r = serve(&Method::GET, "/console/").unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(String::from_utf8_lossy(r.body()).contains("<title>edgeward"));
        assert_eq!(
            serve(&Method::GET, "/console").unwrap().status(),
            StatusCode::MOVED_PERMANENTLY
        );
        assert_eq!(
            serve(&Method::GET, "/console/../v1/domains")
                .unwrap()
                .status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            serve(&Method::POST, "/console/").unwrap().status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        let head = serve(&Method::HEAD, "/console/").unwrap();
        assert!(head.body().is_empty());
        assert_eq!(
            head.headers()[http::header::CONTENT_LENGTH],
            r.body().len().to_string().as_str()
        );
        assert!(serve(&Method::GET, "/v1/domains").is_none());
        assert!(serve(&Method::GET, "/consoles").is_none());
        // Every asset the page loads is embedded, and none loads anything from another host.
        for (path, _, body) in ASSETS {
            assert_eq!(serve(&Method::GET, path).unwrap().status(), StatusCode::OK);
            assert!(
                !body.contains("http://") && !body.contains("https://"),
                "{path}"
            );
        }
    }
}
