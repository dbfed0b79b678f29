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

fn string(s: &str, out: &mut Vec<u8>) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
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

fn uint(mut x: u64, out: &mut Vec<u8>) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (x % 10) as u8;
        x /= 10;
        if x == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
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
            out.push(b'"');
            for (i, o) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                uint(o as u64, out);
            }
            out.push(b':');
            uint(v4.port() as u64, out);
            out.push(b'"');
        }
        Some(a) => string(&a.to_string(), out),
        None => out.extend_from_slice(b"null"),
    }
}
