//! Host names. Two directions, two costs: what operators store is validated strictly once (IDNA to
//! punycode, label rules, `*` only as the whole leftmost label); what clients send in `Host` is only
//! normalised cheaply on the hot path (port and trailing dot dropped, ASCII lowercase).

use std::borrow::Cow;
use thiserror::Error;

/// Why a host name given by an operator was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HostError {
    #[error("host is empty")]
    Empty,
    #[error("host `{0}` must not carry a port, a path or a scheme")]
    NotAHost(String),
    #[error("host `{0}`: `*` is only allowed as the whole leftmost label (`*.example.com`)")]
    BadWildcard(String),
    #[error("host `{0}` is not allowed to be a wildcard here")]
    WildcardNotAllowed(String),
    #[error("host `{0}` is not a valid domain name: {1}")]
    Invalid(String, &'static str),
}

/// A validated, lowercase, punycode host; wildcards keep their `*.` prefix.
pub fn parse_host(input: &str, allow_wildcard: bool) -> Result<String, HostError> {
    let raw = input.trim();
    if raw.is_empty() {
        return Err(HostError::Empty);
    }
    if raw.contains([':', '/', '?', '#', '@', ' ']) {
        return Err(HostError::NotAHost(input.to_string()));
    }
    let raw = raw.strip_suffix('.').unwrap_or(raw);
    let (wildcard, rest) = match raw.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, raw),
    };
    if rest.contains('*') || (raw == "*") {
        return Err(HostError::BadWildcard(input.to_string()));
    }
    if wildcard && !allow_wildcard {
        return Err(HostError::WildcardNotAllowed(input.to_string()));
    }
    let ascii = idna::domain_to_ascii_strict(rest)
        .map_err(|_| HostError::Invalid(input.to_string(), "IDNA conversion failed"))?;
    check_labels(&ascii).map_err(|why| HostError::Invalid(input.to_string(), why))?;
    Ok(if wildcard {
        format!("*.{ascii}")
    } else {
        ascii
    })
}

fn check_labels(ascii: &str) -> Result<(), &'static str> {
    if ascii.is_empty() {
        return Err("empty name");
    }
    if ascii.len() > 253 {
        return Err("longer than 253 characters");
    }
    for label in ascii.split('.') {
        if label.is_empty() {
            return Err("empty label");
        }
        if label.len() > 63 {
            return Err("label longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err("labels may only hold letters, digits and `-`");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label may not start or end with `-`");
        }
    }
    Ok(())
}

/// Normalise a `Host` header (or `:authority`) for lookup: drop the port and a trailing dot, lowercase.
/// Allocates only when the name has uppercase letters.
pub fn normalize_request_host(raw: &str) -> Cow<'_, str> {
    let host = strip_port(raw.trim());
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // IPv6 literal: keep through the closing bracket.
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rfind(':') {
        Some(i) if !host[..i].contains(':') => &host[..i],
        _ => host,
    }
}

/// Is a client's `Host` (or `:authority`) a host name or IP literal with an optional port? Checked
/// before the host is used in a redirect or a log line: one scan, no allocation. Underscores pass (they
/// occur in real host names and nginx accepts them); anything that could end a header, a URL or a
/// log field does not.
pub fn valid_request_host(raw: &str) -> bool {
    let b = raw.as_bytes();
    if b.is_empty() || b.len() > 255 + 6 {
        return false;
    }
    let (name, port) = if b[0] == b'[' {
        // IPv6 literal.
        let Some(end) = b.iter().position(|&c| c == b']') else {
            return false;
        };
        let inner = &raw[1..end];
        if inner.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match &b[end + 1..] {
            [] => return true,
            [b':', port @ ..] => (&b[..0], port),
            _ => return false,
        }
    } else {
        match b.iter().rposition(|&c| c == b':') {
            Some(i) => (&b[..i], &b[i + 1..]),
            None => (b, &b[..0]),
        }
    };
    let port_ok = port.is_empty() && !raw.ends_with(':')
        || (port.len() <= 5
            && port.iter().all(u8::is_ascii_digit)
            && std::str::from_utf8(port)
                .ok()
                .and_then(|p| p.parse::<u16>().ok())
                .is_some());
    let name_ok = b[0] == b'['
        || (!name.is_empty()
            && name.len() <= 254
            && name
                .iter()
                .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'))
            && !name.starts_with(b".")
            && !name.windows(2).any(|w| w == b".."));
    port_ok && name_ok
}

/// The parent a one-level wildcard would be registered under: `a.example.com` -> `example.com`.
pub fn wildcard_parent(host: &str) -> Option<&str> {
    let dot = host.find('.')?;
    let parent = &host[dot + 1..];
    (!parent.is_empty()).then_some(parent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_hosts_are_validated_and_normalised() {
        assert_eq!(parse_host("Example.COM.", false).unwrap(), "example.com");
        assert_eq!(parse_host("*.Example.com", true).unwrap(), "*.example.com");
        assert_eq!(
            parse_host("bücher.example", false).unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(
            parse_host("*.bücher.example", true).unwrap(),
            "*.xn--bcher-kva.example"
        );
        assert!(matches!(parse_host("", false), Err(HostError::Empty)));
        assert!(matches!(
            parse_host("a.com:80", false),
            Err(HostError::NotAHost(_))
        ));
        assert!(matches!(
            parse_host("http://a.com", false),
            Err(HostError::NotAHost(_))
        ));
        assert!(matches!(
            parse_host("a.*.com", true),
            Err(HostError::BadWildcard(_))
        ));
        assert!(matches!(
            parse_host("*", true),
            Err(HostError::BadWildcard(_))
        ));
        assert!(matches!(
            parse_host("**.a.com", true),
            Err(HostError::BadWildcard(_))
        ));
        assert!(matches!(
            parse_host("*.a.com", false),
            Err(HostError::WildcardNotAllowed(_))
        ));
        assert!(parse_host("a..com", false).is_err());
        assert!(parse_host("-a.com", false).is_err());
        assert!(parse_host("a_b.com", false).is_err());
        assert!(parse_host(&format!("{}.com", "a".repeat(64)), false).is_err());
    }

    #[test]
    fn request_hosts_are_normalised_cheaply() {
        assert_eq!(normalize_request_host("Example.com:8080"), "example.com");
        assert_eq!(normalize_request_host("example.com."), "example.com");
        assert_eq!(normalize_request_host("example.com.:443"), "example.com");
        assert_eq!(normalize_request_host("[::1]:80"), "[::1]");
        assert!(matches!(normalize_request_host("a.b"), Cow::Borrowed(_)));
        assert_eq!(wildcard_parent("a.example.com"), Some("example.com"));
        assert_eq!(wildcard_parent("com"), None);
    }

    #[test]
    fn request_hosts_are_checked_before_use() {
        for ok in [
            "a.test",
            "A.Test:8080",
            "a.test.",
            "my_host.test",
            "127.0.0.1:80",
            "[::1]",
            "[2001:db8::1]:443",
            "localhost",
        ] {
            assert!(valid_request_host(ok), "{ok}");
        }
        for bad in [
            "",
            "a.test:",
            "a.test:99999",
            "a.test:8o",
            "evil.test/x",
            "a.test\\@b",
            "a test",
            "a.test\"><script>",
            "a..test",
            ".a.test",
            "[::1",
            "[zz]:80",
            "[::1]x",
            "a.test:80:80",
            "%61.test",
        ] {
            assert!(!valid_request_host(bad), "{bad:?}");
        }
    }
}
