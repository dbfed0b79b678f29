//! The JSON line, written field by field: what serde's serializer costs per request (its state
//! machine, float and integer formatting through `fmt`) was most of the access log's share of a
//! request. Strings that need escaping (rare: quotes, backslashes, control bytes) still go through
//! serde_json.

use super::line::{with_second, Entry};
use std::net::SocketAddr;
use std::time::UNIX_EPOCH;

pub fn write(e: &Entry, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"time\":\"");
    let ms =
        e.at.duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_millis();
    with_second(e.at, |rfc, _| out.extend_from_slice(rfc.as_bytes()));
    out.push(b'.');
    out.extend_from_slice(&[
        b'0' + (ms / 100) as u8,
        b'0' + (ms / 10 % 10) as u8,
        b'0' + (ms % 10) as u8,
    ]);
    out.extend_from_slice(b"Z\",\"client\":");
    addr(e.client, out);
    out.extend_from_slice(b",\"listener\":");
    addr(e.listener, out);
    out.extend_from_slice(b",\"tls\":");
    opt_string(e.tls, out);
    out.extend_from_slice(b",\"sni\":");
    opt_string(e.sni, out);
    out.extend_from_slice(b",\"method\":");
    string(e.method, out);
    out.extend_from_slice(b",\"host\":");
    string(e.host, out);
    out.extend_from_slice(b",\"path\":");
    string(e.path, out);
    out.extend_from_slice(b",\"protocol\":");
    string(e.protocol, out);
    out.extend_from_slice(b",\"status\":");
    uint(e.status as u64, out);
    out.extend_from_slice(b",\"bytes_sent\":");
    uint(e.bytes_sent as u64, out);
    out.extend_from_slice(b",\"request_bytes\":");
    uint(e.request_bytes as u64, out);
    out.extend_from_slice(b",\"duration_ms\":");
    millis(e.duration_ms, out);
    out.extend_from_slice(b",\"upstream\":");
    addr(e.upstream, out);
    out.extend_from_slice(b",\"upstream_ms\":");
    match e.upstream_ms {
        Some(v) => millis(v, out),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"retries\":");
    uint(e.retries as u64, out);
    out.extend_from_slice(b",\"request_id\":");
    string(e.request_id, out);
    out.extend_from_slice(b",\"error\":");
    opt_string(e.error, out);
    out.extend_from_slice(b"}\n");
}

/// The bytes a JSON string cannot hold as they are: control bytes, `"` and `\` (one lookup per byte).
const ESCAPED: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// Does `b` hold a byte JSON must escape? Eight bytes per step (SWAR: a byte below 0x20, or equal to
/// `"` or `\`, sets its top bit in the mask; exact, since 0x20 <= 0x80), the rest by table.
fn needs_escape(b: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let mut words = b.chunks_exact(8);
    for w in &mut words {
        let v = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        let below = v.wrapping_sub(ONES * 0x20) & !v & HIGH;
        if below | zero_byte(v ^ (ONES * b'"' as u64)) | zero_byte(v ^ (ONES * b'\\' as u64)) != 0 {
            return true;
        }
    }
    words.remainder().iter().any(|&c| ESCAPED[c as usize])
}

fn string(s: &str, out: &mut Vec<u8>) {
    if !needs_escape(s.as_bytes()) {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else if serde_json::to_writer(&mut *out, s).is_err() {
        out.extend_from_slice(b"null");
    }
}

fn opt_string(s: Option<&str>, out: &mut Vec<u8>) {
    match s {
        Some(s) => string(s, out),
        None => out.extend_from_slice(b"null"),
    }
}

fn uint(x: u64, out: &mut Vec<u8>) {
    // Two digits per step (itoa): fewer instructions than one digit at a time (BENCHMARKS.md).
    out.extend_from_slice(itoa::Buffer::new().format(x).as_bytes());
}

/// Milliseconds with three decimals (microseconds).
fn millis(v: f64, out: &mut Vec<u8>) {
    let us = (v.max(0.0) * 1000.0).round() as u64;
    uint(us / 1000, out);
    let f = us % 1000;
    out.extend_from_slice(&[
        b'.',
        b'0' + (f / 100) as u8,
        b'0' + (f / 10 % 10) as u8,
        b'0' + (f % 10) as u8,
    ]);
}

fn addr(a: Option<SocketAddr>, out: &mut Vec<u8>) {
    match a {
        Some(SocketAddr::V4(v4)) => {
            // Into a stack buffer, one append: `"255.255.255.255:65535"` is 23 bytes.
            let mut buf = [0u8; 23];
            buf[0] = b'"';
            let mut n = 1;
            for (i, o) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                let (len, digits) = OCTETS[o as usize];
                buf[n..n + 3].copy_from_slice(&digits);
                n += len as usize;
            }
            buf[n] = b':';
            n += 1;
            let mut port = itoa::Buffer::new();
            let port = port.format(v4.port()).as_bytes();
            buf[n..n + port.len()].copy_from_slice(port);
            n += port.len();
            buf[n] = b'"';
            out.extend_from_slice(&buf[..=n]);
        }
        Some(a) => string(&a.to_string(), out),
        None => out.extend_from_slice(b"null"),
    }
}

/// `0` to `255` in decimal: (digits, the digits padded to 3 bytes).
const OCTETS: [(u8, [u8; 3]); 256] = {
    let mut t = [(0u8, [0u8; 3]); 256];
    let mut i = 0;
    while i < 256 {
        let (h, d, u) = (
            b'0' + (i / 100) as u8,
            b'0' + (i / 10 % 10) as u8,
            b'0' + (i % 10) as u8,
        );
        t[i] = if i >= 100 {
            (3, [h, d, u])
        } else if i >= 10 {
            (2, [d, u, 0])
        } else {
            (1, [u, 0, 0])
        };
        i += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        /// The eight-bytes-at-a-time check agrees with the table on every byte string.
        #[test]
        fn needs_escape_is_the_table(
            b in proptest::collection::vec(prop_oneof![9 => 0x20u8..=0xff, 1 => any::<u8>()], 0..40)
        ) {
            prop_assert_eq!(super::needs_escape(&b), b.iter().any(|&c| super::ESCAPED[c as usize]));
        }
    }

    #[test]
    fn strings_read_back_as_written_and_integers_as_decimal() {
        for s in [
            "plain",
            "q\"uote",
            "back\\slash",
            "tab\tnl\n\r",
            "\u{1}\u{1f}",
            "\u{7f}",
            "ünï",
            // Whole words of the eight-at-a-time check, and the byte to escape in the last word.
            "0123456789abcdef0123456789abcdef",
            "0123456789abcde\"",
            "01234567\u{7}",
        ] {
            let mut out = Vec::new();
            super::string(s, &mut out);
            assert_eq!(serde_json::from_slice::<String>(&out).unwrap(), s);
        }
        for x in [0, 7, 10, 99, 100, 65_535, u64::MAX] {
            let mut out = Vec::new();
            super::uint(x, &mut out);
            assert_eq!(out, x.to_string().as_bytes());
        }
        for a in [
            "0.0.0.0:0",
            "1.20.255.9:65535",
            "255.255.255.255:80",
            "[::1]:443",
        ] {
            let a: std::net::SocketAddr = a.parse().unwrap();
            let mut out = Vec::new();
            super::addr(Some(a), &mut out);
            assert_eq!(out, format!("\"{a}\"").as_bytes());
        }
    }
}
