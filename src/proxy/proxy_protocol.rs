//! The PROXY protocol (v1 text and v2 binary, as HAProxy and L4 load balancers send it) on listeners
//! with `proxy_protocol: true`. The header is required there: a connection without one, or with a
//! malformed or oversized one, is closed without reading further. Its source address becomes the
//! connection's client address everywhere (forwarded headers, access log, metrics). v2 TLVs are
//! skipped (their length is checked, their content is not used); `LOCAL` (the balancer's own health
//! check) and `UNKNOWN` keep the socket's peer address. Parsing is the `ppp` crate's.
//!
//! Plain listeners read the header into the connection's head buffer (the bytes after it are the first
//! request's); TLS listeners read it before the handshake (Pingora's pre-TLS hook) exactly, byte by
//! byte from the listener's read buffer, so no byte of the ClientHello is taken.

use crate::metrics;
use async_trait::async_trait;
use bytes::{Buf, BytesMut};
use pingora_core::listeners::PreTlsProcess;
use pingora_core::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{GetSocketDigest, SocketDigest};
use pingora_error::{Error, ErrorType, Result};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 line, CRLF included (the specification's limit).
pub const V1_MAX: usize = 107;
/// The longest v2 header accepted: the 16 fixed bytes, IPv6 addresses and a few hundred bytes of
/// TLVs (what AWS, GCP and HAProxy send is far less).
pub const V2_MAX: usize = 16 + 36 + 1024;

/// What the bytes at the start of a connection are.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    Incomplete,
    /// A header of `len` bytes; the client address it names (`None`: keep the socket's).
    Header {
        len: usize,
        source: Option<SocketAddr>,
    },
    /// Close the connection; the reason is a label of `edgeward_proxy_protocol_refused_total`.
    Refused(&'static str),
}

fn starts_like(buf: &[u8], prefix: &[u8]) -> bool {
    let n = buf.len().min(prefix.len());
    buf[..n] == prefix[..n]
}

/// Look at the start of a connection. Pure: tested without a socket.
pub fn parse(buf: &[u8]) -> Parsed {
    if buf.is_empty() {
        return Parsed::Incomplete;
    }
    if starts_like(buf, V2_SIGNATURE) {
        if buf.len() < 16 {
            return Parsed::Incomplete;
        }
        let len = 16 + u16::from_be_bytes([buf[14], buf[15]]) as usize;
        if len > V2_MAX {
            return Parsed::Refused("too_long");
        }
        if buf.len() < len {
            return Parsed::Incomplete;
        }
        return match ppp::v2::Header::try_from(&buf[..len]) {
            Ok(h) => Parsed::Header {
                len,
                source: v2_source(&h),
            },
            Err(_) => Parsed::Refused("malformed"),
        };
    }
    if starts_like(buf, V1_PREFIX) {
        let window = &buf[..buf.len().min(V1_MAX)];
        let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
            return if buf.len() >= V1_MAX {
                Parsed::Refused("too_long")
            } else {
                Parsed::Incomplete
            };
        };
        let len = end + 2;
        let text = match std::str::from_utf8(&buf[..len]) {
            Ok(t) => t,
            Err(_) => return Parsed::Refused("malformed"),
        };
        return match ppp::v1::Header::try_from(text) {
            Ok(h) => Parsed::Header {
                len,
                source: v1_source(&h.addresses),
            },
            Err(_) => Parsed::Refused("malformed"),
        };
    }
    Parsed::Refused("missing")
}

fn v1_source(a: &ppp::v1::Addresses) -> Option<SocketAddr> {
    match a {
        ppp::v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v1::Addresses::Unknown => None,
    }
}

fn v2_source(h: &ppp::v2::Header) -> Option<SocketAddr> {
    if h.command == ppp::v2::Command::Local {
        return None;
    }
    match h.addresses {
        ppp::v2::Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v2::Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v2::Addresses::Unspecified | ppp::v2::Addresses::Unix(_) => None,
    }
}

fn refused(reason: &'static str) -> Box<Error> {
    metrics::PROXY_PROTOCOL_REFUSED
        .with_label_values(&[reason])
        .inc();
    log::debug!("PROXY protocol: connection closed ({reason})");
    Error::explain(ErrorType::AcceptError, "PROXY protocol header refused")
}

/// Read the header at the start of a plain connection into `buf`, leaving in it what follows.
pub async fn read_into<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    within: Duration,
) -> Result<Option<SocketAddr>> {
    let read = async {
        loop {
            match parse(buf) {
                Parsed::Header { len, source } => {
                    buf.advance(len);
                    return Ok(source);
                }
                Parsed::Refused(reason) => return Err(refused(reason)),
                Parsed::Incomplete => {
                    buf.reserve(V1_MAX);
                    match stream.read_buf(buf).await {
                        Ok(0) | Err(_) => return Err(refused("missing")),
                        Ok(_) => {}
                    }
                }
            }
        }
    };
    match tokio::time::timeout(within, read).await {
        Ok(r) => r,
        Err(_) => Err(refused("timeout")),
    }
}

/// Read exactly the header's bytes (v2: the fixed part, then its length; v1: up to the CRLF).
async fn read_exact_header<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Option<SocketAddr>> {
    let mut buf = Vec::with_capacity(64);
    loop {
        let want = match parse(&buf) {
            Parsed::Header { source, .. } => return Ok(source),
            Parsed::Refused(reason) => return Err(refused(reason)),
            Parsed::Incomplete if buf.len() >= 16 && buf.starts_with(V2_SIGNATURE) => {
                16 + u16::from_be_bytes([buf[14], buf[15]]) as usize - buf.len()
            }
            Parsed::Incomplete if buf.len() < V1_PREFIX.len() => V1_PREFIX.len() - buf.len(),
            Parsed::Incomplete if buf.starts_with(V2_SIGNATURE[..6].as_ref()) => 16 - buf.len(),
            Parsed::Incomplete => 1,
        };
        let at = buf.len();
        buf.resize(at + want, 0);
        if stream.read_exact(&mut buf[at..]).await.is_err() {
            return Err(refused("missing"));
        }
    }
}

/// The connection's client address is `source` from now on.
pub fn set_client(stream: &mut dyn GetSocketDigest, fd: i32, source: SocketAddr) {
    let local = stream
        .get_socket_digest()
        .and_then(|d| d.local_addr().cloned());
    let digest = SocketDigest::from_raw_fd(fd);
    let _ = digest.peer_addr.set(Some(PingoraAddr::Inet(source)));
    let _ = digest.local_addr.set(local);
    stream.set_socket_digest(digest);
}

/// Pingora's pre-TLS hook on the TLS listeners that take a PROXY header.
pub struct PreTls {
    pub within: Duration,
}

#[async_trait]
impl PreTlsProcess for PreTls {
    async fn process(&self, stream: &mut L4Stream) -> Result<()> {
        let source = match tokio::time::timeout(self.within, read_exact_header(stream)).await {
            Ok(r) => r?,
            Err(_) => return Err(refused("timeout")),
        };
        if let Some(source) = source {
            let fd = std::os::unix::io::AsRawFd::as_raw_fd(stream);
            set_client(stream, fd, source);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ppp::v2::{Builder, Command, Protocol, Type, Version};

    fn v2(src: &str, dst: &str, command: Command, tlv: &[u8]) -> Vec<u8> {
        let a: SocketAddr = src.parse().unwrap();
        let b: SocketAddr = dst.parse().unwrap();
        let mut h = Builder::with_addresses(Version::Two | command, Protocol::Stream, (a, b));
        if !tlv.is_empty() {
            h = h.write_tlv(Type::NoOp, tlv).unwrap();
        }
        h.build().unwrap()
    }

    #[test]
    fn v1_headers_name_the_client() {
        let h = b"PROXY TCP4 192.0.2.7 198.51.100.1 4711 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(h),
            Parsed::Header {
                len: 44,
                source: Some("192.0.2.7:4711".parse().unwrap())
            }
        );
        let h = b"PROXY TCP6 2001:db8::7 2001:db8::1 4711 443\r\n";
        assert_eq!(
            parse(h),
            Parsed::Header {
                len: h.len(),
                source: Some("[2001:db8::7]:4711".parse().unwrap())
            }
        );
        let h = b"PROXY UNKNOWN\r\n";
        assert_eq!(
            parse(h),
            Parsed::Header {
                len: 15,
                source: None
            }
        );
        for cut in [1, 5, 6, 20, 43] {
            let h = b"PROXY TCP4 192.0.2.7 198.51.100.1 4711 443\r\n";
            assert_eq!(parse(&h[..cut]), Parsed::Incomplete, "{cut}");
        }
    }

    #[test]
    fn v2_headers_name_the_client_and_skip_tlvs() {
        let h = v2("192.0.2.7:4711", "198.51.100.1:443", Command::Proxy, &[]);
        let mut with_rest = h.clone();
        with_rest.extend_from_slice(b"\x16\x03\x01");
        let want = Parsed::Header {
            len: h.len(),
            source: Some("192.0.2.7:4711".parse().unwrap()),
        };
        assert_eq!(parse(&with_rest), want);
        let h = v2(
            "[2001:db8::7]:1",
            "[2001:db8::1]:443",
            Command::Proxy,
            &[7; 200],
        );
        assert_eq!(
            parse(&h),
            Parsed::Header {
                len: h.len(),
                source: Some("[2001:db8::7]:1".parse().unwrap())
            }
        );
        let local = v2("192.0.2.7:4711", "198.51.100.1:443", Command::Local, &[]);
        assert_eq!(
            parse(&local),
            Parsed::Header {
                len: local.len(),
                source: None
            }
        );
        for cut in [1, 11, 12, 15, 16, h.len() - 1] {
            assert_eq!(parse(&h[..cut]), Parsed::Incomplete, "{cut}");
        }
    }

    #[test]
    fn everything_else_is_refused_with_a_reason() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Parsed::Refused("missing"));
        assert_eq!(parse(b"\x16\x03\x01\x02\x00"), Parsed::Refused("missing"));
        assert_eq!(
            parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"),
            Parsed::Refused("malformed")
        );
        assert_eq!(parse(b"PROXY TCP9 x\r\n"), Parsed::Refused("malformed"));
        let long = format!("PROXY TCP4 {}", "1".repeat(200));
        assert_eq!(parse(long.as_bytes()), Parsed::Refused("too_long"));
        let mut big = v2("192.0.2.7:1", "198.51.100.1:2", Command::Proxy, &[]);
        big[14..16].copy_from_slice(&(V2_MAX as u16).to_be_bytes());
        assert_eq!(parse(&big), Parsed::Refused("too_long"));
        // A bad version nibble.
        let mut bad = v2("192.0.2.7:1", "198.51.100.1:2", Command::Proxy, &[]);
        bad[12] = 0x31;
        assert_eq!(parse(&bad), Parsed::Refused("malformed"));
    }

    #[tokio::test]
    async fn exact_reads_leave_what_follows() {
        for header in [
            b"PROXY TCP4 192.0.2.7 198.51.100.1 4711 443\r\n".to_vec(),
            b"PROXY UNKNOWN\r\n".to_vec(),
            v2(
                "192.0.2.7:4711",
                "198.51.100.1:443",
                Command::Proxy,
                &[1, 2, 3],
            ),
        ] {
            let mut input = header.clone();
            input.extend_from_slice(b"\x16\x03\x01rest");
            let mut r = std::io::Cursor::new(input);
            read_exact_header(&mut r).await.unwrap();
            assert_eq!(r.position() as usize, header.len());
        }
        let mut buf = BytesMut::new();
        let mut r = std::io::Cursor::new(b"PROXY UNKNOWN\r\nGET / HTTP/1.1\r\n".to_vec());
        let got = read_into(&mut r, &mut buf, Duration::from_secs(1)).await;
        assert_eq!(got.unwrap(), None);
        assert_eq!(&buf[..], b"GET / HTTP/1.1\r\n");
    }
}
