//! One access-log line, in JSON (one object per line) or nginx's `combined` format.

use std::cell::RefCell;
use std::io::Write;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// What is logged about a request. Borrowed from the session: formatting is the only copy.
#[derive(Debug)]
pub struct Entry<'a> {
    /// Written as `time`: RFC 3339 in UTC, milliseconds.
    pub at: SystemTime,
    /// The client: after the PROXY protocol header, if the listener takes one.
    pub client: Option<SocketAddr>,
    /// The local address the request came in on.
    pub listener: Option<SocketAddr>,
    pub tls: Option<&'a str>,
    pub sni: Option<&'a str>,
    pub method: &'a str,
    pub host: &'a str,
    /// Path and query, as sent.
    pub path: &'a str,
    pub protocol: &'a str,
    /// 0: no response was sent (the client left, or the exchange broke before a status).
    pub status: u16,
    pub bytes_sent: usize,
    pub request_bytes: usize,
    pub duration_ms: f64,
    pub upstream: Option<SocketAddr>,
    /// From choosing the backend to its response head.
    pub upstream_ms: Option<f64>,
    pub retries: usize,
    pub request_id: &'a str,
    /// Why, for a 5xx (Pingora's error type, or `NoBackend`).
    pub error: Option<&'a str>,
}

thread_local! {
    /// The formatted second, reused until the clock moves past it.
    static SECOND: RefCell<(u64, String, String)> = const { RefCell::new((u64::MAX, String::new(), String::new())) };
}

/// (seconds since the epoch, milliseconds within the second).
fn split(at: SystemTime) -> (u64, u32) {
    let d = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    (d.as_secs(), d.subsec_millis())
}

/// Run `f` with `at`'s second as RFC 3339 (`2026-12-02T17:43:19`) and as nginx's `time_local`
/// (`02/Dec/2026:17:43:19 +0000`), formatted once per second per thread.
pub(super) fn with_second<R>(at: SystemTime, f: impl FnOnce(&str, &str) -> R) -> R {
    let (secs, _) = split(at);
    SECOND.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            let t = time::OffsetDateTime::from_unix_timestamp(secs as i64)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            let rfc =
                time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
            let local = time::macros::format_description!(
                "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000"
            );
            *c = (
                secs,
                t.format(rfc).unwrap_or_default(),
                t.format(local).unwrap_or_default(),
            );
        }
        f(&c.1, &c.2)
    })
}

impl Entry<'_> {
    /// One JSON object and a newline.
    pub fn json(&self, out: &mut Vec<u8>) {
        super::json::write(self, out)
    }

    /// nginx's `combined`: `client - - [time] "request" status bytes "-" "-"` (no referer or user
    /// agent: header values are not logged), then the host and the duration in seconds.
    pub fn combined(&self, out: &mut Vec<u8>) {
        let client = self.client.map(|a| a.ip().to_string());
        with_second(self.at, |_, local| {
            let _ = writeln!(
                out,
                "{} - - [{local}] \"{} {} {}\" {} {} \"-\" \"-\" \"{}\" {:.3}",
                client.as_deref().unwrap_or("-"),
                self.method,
                escape(self.path),
                self.protocol,
                self.status,
                self.bytes_sent,
                escape(self.host),
                self.duration_ms / 1000.0,
            );
        })
    }
}

/// Quotes and control bytes as `\xHH`, as nginx escapes its log variables.
fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    let plain = |b: u8| b != b'"' && b != b'\\' && (0x20..0x7f).contains(&b);
    if s.bytes().all(plain) {
        return s.into();
    }
    let mut o = String::with_capacity(s.len() + 8);
    for b in s.bytes() {
        if plain(b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("\\x{b:02X}"));
        }
    }
    o.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn entry(at: SystemTime) -> Entry<'static> {
        Entry {
            at,
            client: Some("192.0.2.7:4711".parse().unwrap()),
            listener: Some("127.0.0.1:8080".parse().unwrap()),
            tls: Some("TLSv1.3"),
            sni: Some("shop.test"),
            method: "GET",
            host: "shop.test",
            path: "/a?b=\"c\"",
            protocol: "HTTP/1.1",
            status: 502,
            bytes_sent: 12,
            request_bytes: 3,
            duration_ms: 1.5,
            upstream: Some("127.0.0.1:9000".parse().unwrap()),
            upstream_ms: Some(0.25),
            retries: 1,
            request_id: "abc",
            error: Some("ConnectRefused"),
        }
    }

    #[test]
    fn json_lines_carry_every_field() {
        let at = UNIX_EPOCH + Duration::from_millis(1_764_697_399_042);
        let mut out = Vec::new();
        entry(at).json(&mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["time"], "2025-12-02T17:43:19.042Z");
        assert_eq!(v["client"], "192.0.2.7:4711");
        assert_eq!(v["path"], "/a?b=\"c\"");
        assert_eq!(v["status"], 502);
        assert_eq!(v["upstream_ms"], 0.25);
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["listener"], "127.0.0.1:8080");
        assert_eq!(v["tls"], "TLSv1.3");
        assert_eq!(v["retries"], 1);
        assert_eq!(v["request_id"], "abc");
        let mut e = entry(at);
        e.path = "/\u{1}\"\\é?x";
        e.tls = None;
        e.upstream_ms = None;
        let mut out = Vec::new();
        e.json(&mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["path"], "/\u{1}\"\\é?x");
        assert_eq!(
            (v["tls"].is_null(), v["upstream_ms"].is_null()),
            (true, true)
        );
        assert_eq!(v["error"], "ConnectRefused");
        assert_eq!(v.as_object().unwrap().len(), 18);
        for a in [
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "10.0.0.1:80",
            "[2001:db8::1]:443",
        ] {
            let mut e = entry(at);
            e.client = Some(a.parse().unwrap());
            let mut out = Vec::new();
            e.json(&mut out);
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v["client"], a);
        }
    }

    #[test]
    fn combined_lines_parse_as_nginx_writes_them() {
        let at = UNIX_EPOCH + Duration::from_secs(1_764_697_399);
        let mut out = Vec::new();
        entry(at).combined(&mut out);
        let line = String::from_utf8(out).unwrap();
        assert_eq!(
            line,
            "192.0.2.7 - - [02/Dec/2025:17:43:19 +0000] \"GET /a?b=\\x22c\\x22 HTTP/1.1\" 502 12 \
             \"-\" \"-\" \"shop.test\" 0.002\n"
        );
    }
}
