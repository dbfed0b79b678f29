//! The forwarded headers sent upstream. A customer's application reads the client address from
//! `X-Forwarded-For` (usually its first entry), `Forwarded` or `X-Real-IP`, so from a peer that is not
//! a trusted proxy (`edgeward.trusted_proxies`) none of what the client sent survives: the chain
//! starts at the peer. From a trusted proxy (a load balancer in front) the peer is appended.

use http::HeaderValue;
use ipnet::IpNet;
use pingora_error::Result;
use pingora_http::RequestHeader;
use std::io::Write;
use std::net::IpAddr;

/// A header value built here as Pingora's error (it cannot be invalid: an address, or a chain of
/// values that were valid headers).
fn checked(
    v: std::result::Result<HeaderValue, http::header::InvalidHeaderValue>,
) -> Result<HeaderValue> {
    use pingora_error::OrErr;
    v.or_err(
        pingora_error::ErrorType::InvalidHTTPHeader,
        "forwarded header value",
    )
}

#[derive(Debug, Clone, Default)]
pub struct Forwarding {
    trusted: Vec<IpNet>,
}

impl Forwarding {
    pub fn new(trusted: Vec<IpNet>) -> Self {
        Forwarding { trusted }
    }

    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.trusted.iter().any(|n| n.contains(&ip))
    }

    /// Set `X-Forwarded-For`, `X-Real-IP`, `X-Forwarded-Proto` and `X-Forwarded-Host` on the request
    /// to the upstream; drop a client's `Forwarded` unless it came through a trusted proxy.
    pub fn apply(
        &self,
        upstream: &mut RequestHeader,
        peer: Option<IpAddr>,
        proto: &'static str,
        host: Option<HeaderValue>,
    ) -> Result<()> {
        let trusted = peer.is_some_and(|ip| self.is_trusted(ip));
        if !trusted {
            upstream.remove_header("forwarded");
            upstream.remove_header("x-real-ip");
        }
        match peer.map(canonical) {
            Some(ip) => {
                // The address is formatted once, on the stack, for both headers.
                let mut text = [0u8; 64];
                let len = {
                    let mut w = &mut text[..];
                    let _ = write!(w, "{ip}");
                    64 - w.len()
                };
                let ip_text = &text[..len];
                let existing = upstream.headers.get("x-forwarded-for");
                let xff =
                    forwarded_for(existing.filter(|_| trusted).map(|v| v.as_bytes()), ip_text);
                upstream.insert_header("x-forwarded-for", checked(xff)?)?;
                if !trusted || !upstream.headers.contains_key("x-real-ip") {
                    let real = checked(HeaderValue::from_bytes(ip_text))?;
                    upstream.insert_header("x-real-ip", real)?;
                }
            }
            None => {
                // A Unix socket peer: nothing to state, and nothing from the client kept.
                if !trusted {
                    upstream.remove_header("x-forwarded-for");
                }
            }
        }
        upstream.insert_header("x-forwarded-proto", HeaderValue::from_static(proto))?;
        if let Some(host) = host {
            upstream.insert_header("x-forwarded-host", host)?;
        }
        Ok(())
    }
}

/// An IPv4 peer on a dual-stack socket (`::ffff:a.b.c.d`) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Add `ip` (its text) to an `X-Forwarded-For` chain; a chain that is not UTF-8 is not kept.
pub fn forwarded_for(
    existing: Option<&[u8]>,
    ip: &[u8],
) -> std::result::Result<HeaderValue, http::header::InvalidHeaderValue> {
    let chain = existing.filter(|v| std::str::from_utf8(v).is_ok());
    match chain.map(<[u8]>::trim_ascii).filter(|v| !v.is_empty()) {
        Some(chain) => HeaderValue::from_bytes(&[chain, b", ", ip].concat()),
        None => HeaderValue::from_bytes(ip),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn get<'a>(r: &'a RequestHeader, k: &str) -> Option<&'a str> {
        r.headers.get(k).map(|v| v.to_str().unwrap())
    }

    #[test]
    fn forwarded_for_appends() {
        let ip = b"1.2.3.4";
        let f = |existing| forwarded_for(existing, ip).unwrap();
        assert_eq!(f(None), "1.2.3.4");
        assert_eq!(f(Some(b" 9.9.9.9 ")), "9.9.9.9, 1.2.3.4");
        assert_eq!(f(Some(b"")), "1.2.3.4");
        assert_eq!(f(Some(b"9.9.9.9\xff")), "1.2.3.4");
    }

    #[test]
    fn an_untrusted_peer_cannot_spoof_and_a_trusted_one_is_appended() {
        let f = Forwarding::new(vec!["10.0.0.0/8".parse().unwrap()]);
        let spoofed = [
            ("x-forwarded-for", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
        ];
        let mut r = req(&spoofed);
        f.apply(&mut r, Some("203.0.113.9".parse().unwrap()), "http", None)
            .unwrap();
        assert_eq!(get(&r, "x-forwarded-for"), Some("203.0.113.9"));
        assert_eq!(get(&r, "x-real-ip"), Some("203.0.113.9"));
        assert_eq!(get(&r, "forwarded"), None);
        assert_eq!(get(&r, "x-forwarded-proto"), Some("http"));

        let mut r = req(&spoofed);
        let lb: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        f.apply(&mut r, Some(lb), "https", None).unwrap();
        assert_eq!(get(&r, "x-forwarded-for"), Some("6.6.6.6, 10.1.2.3"));
        assert_eq!(get(&r, "x-real-ip"), Some("6.6.6.6"));
        assert_eq!(get(&r, "forwarded"), Some("for=6.6.6.6"));
    }
}
