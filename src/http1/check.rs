//! Request heads are checked here before Pingora parses them. Pingora logs a head it cannot parse at
//! ERROR with its raw bytes (`InvalidHTTPHeader ... buf:`), which puts `Authorization` and `Cookie`
//! values into the log; so a head is handed to Pingora only when Pingora's parser (httparse, the same
//! limits) accepts it. Anything else is answered here and logged with the method, the path (no query,
//! truncated) and the error: never a header value.

use bytes::BytesMut;
use percent_encoding::{percent_encode, AsciiSet, CONTROLS};

/// Pingora's limit on the number of request headers.
const MAX_HEADERS: usize = 256;
/// Longest path written to a log line.
const LOGGED_PATH: usize = 64;
/// The characters Pingora percent-encodes in a request target httparse refuses.
const URI_ESCAPE: &AsciiSet = &CONTROLS.add(b' ').add(b'<').add(b'>').add(b'"');

/// Why a head is answered here instead of proxied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub error: String,
}

/// Check the complete head `buf[..end]`. `Ok` when Pingora accepts it; a request target Pingora
/// would percent-encode is encoded in `buf` here, as Pingora would.
pub fn check_head(buf: &mut BytesMut, end: usize) -> Result<(), Refusal> {
    match parse(&buf[..end]) {
        Ok(()) => Ok(()),
        Err(httparse::Error::Token | httparse::Error::Version) => {
            let Some(escaped) = escape_target(&buf[..end]) else {
                return Err(bad(httparse::Error::Token));
            };
            parse(&escaped).map_err(bad)?;
            let rest = buf.split_off(end);
            buf.clear();
            buf.extend_from_slice(&escaped);
            buf.unsplit(rest);
            Ok(())
        }
        Err(e) => Err(bad(e)),
    }
}

fn parse(head: &[u8]) -> Result<(), httparse::Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(head)?;
    // A body length that is not a number, or two that differ: the framing is ambiguous (request
    // smuggling), refused here like a malformed header.
    let mut length: Option<&[u8]> = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = h.value.trim_ascii();
            if v.is_empty() || !v.iter().all(u8::is_ascii_digit) || length.is_some_and(|l| l != v) {
                return Err(httparse::Error::HeaderValue);
            }
            length = Some(v);
        }
    }
    Ok(())
}

fn bad(e: httparse::Error) -> Refusal {
    let status = if e == httparse::Error::TooManyHeaders {
        431
    } else {
        400
    };
    Refusal {
        status,
        error: e.to_string(),
    }
}

/// A head that never ended within the limit.
pub fn too_large(limit: usize) -> Refusal {
    Refusal {
        status: 431,
        error: format!("request head larger than {limit} bytes"),
    }
}

/// The request line with its target percent-encoded (Pingora's `escape_illegal_request_line`), if it
/// looks like `METHOD TARGET HTTP/x`.
fn escape_target(head: &[u8]) -> Option<Vec<u8>> {
    let start = head.iter().position(|b| !matches!(b, b'\r' | b'\n'))?;
    let line_end = start + memchr::memchr(b'\n', &head[start..])?;
    let line = &head[start..line_end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let method = line.iter().position(|&b| b == b' ')?;
    if method == 0
        || !line[..method]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
    {
        return None;
    }
    let version = memchr::memmem::rfind(line, b" HTTP/")?;
    if version <= method + 1 || !line.get(version + 6).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    let target = &line[method + 1..version];
    let mut out = Vec::with_capacity(head.len() + 32);
    out.extend_from_slice(&head[..start + method + 1]);
    for part in percent_encode(target, URI_ESCAPE) {
        out.extend_from_slice(part.as_bytes());
    }
    out.extend_from_slice(&head[start + version..]);
    Some(out)
}

/// What a log line may say about a request: its method and path (no query), printable and
/// truncated. Never header values.
pub fn describe(head: &[u8]) -> String {
    let line = head
        .iter()
        .skip_while(|b| matches!(b, b'\r' | b'\n'))
        .take_while(|&&b| b != b'\n' && b != b'\r')
        .copied()
        .collect::<Vec<u8>>();
    let mut parts = line.splitn(3, |&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    let clip = |s: &[u8], n: usize| {
        let mut t: String = s
            .iter()
            .take(n)
            .flat_map(|b| b.escape_ascii())
            .map(char::from)
            .collect();
        if s.len() > n {
            t.push_str("...");
        }
        t
    };
    format!("{} {}", clip(method, 16), clip(path, LOGGED_PATH))
}

/// The response for a refused head; the connection closes after it.
pub fn refusal_response(status: u16) -> Vec<u8> {
    let reason = match status {
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        _ => "Bad Request",
    };
    let body = format!("{status} {reason}\n");
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(s: &[u8]) -> Result<Vec<u8>, Refusal> {
        let mut buf = BytesMut::from(s);
        let end = super::super::head_end(&buf).expect("complete head");
        check_head(&mut buf, end).map(|_| buf.to_vec())
    }

    #[test]
    fn accepts_what_pingora_parses_and_refuses_the_rest() {
        let ok = b"GET /a?b=1 HTTP/1.1\r\nHost: a.test\r\nAuthorization: Bearer s3cret\r\n\r\nBODY";
        assert_eq!(check(ok).unwrap(), ok.to_vec());
        let same_twice = b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n";
        assert!(check(same_twice).is_ok());
        for bad in [
            &b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\x01b\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: y\r\n folded\r\n\r\n",
            b"\x16\x03\x01 garbage\r\n\r\n",
            b"GET / HTTP/9\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        ] {
            let e = check(bad).unwrap_err();
            assert_eq!(e.status, 400, "{bad:?}");
        }
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "X: y\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(check(many.as_bytes()).unwrap_err().status, 431);
    }

    #[test]
    fn escapes_a_target_as_pingora_does() {
        let got = check(b"GET /a b\"c HTTP/1.1\r\nHost: a\r\n\r\nrest").unwrap();
        assert_eq!(
            got,
            b"GET /a%20b%22c HTTP/1.1\r\nHost: a\r\n\r\nrest".to_vec()
        );
    }

    #[test]
    fn descriptions_hold_no_header_value_nor_query() {
        let d = describe(b"POST /login?token=s3cret HTTP/1.1\r\nCookie: s3cret\r\n\r\n");
        assert_eq!(d, "POST /login");
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(200));
        assert!(describe(long.as_bytes()).ends_with("..."));
        assert_eq!(describe(b"\x00\xff /x\r\n"), "\\x00\\xff /x");
    }
}
