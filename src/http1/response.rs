//! Upstream HTTP/1 response framing (RFC 9112 section 6.3): where a response head ends, how its body
//! is delimited, and where a chunked body ends, without reading a byte past it (the upstream connection
//! is reused for the next request). The first part of issue 17's fast path, tested on its own: a
//! property test against a model encoder and a fuzz run of arbitrary bytes in arbitrary pieces.
//!
//! Stricter than a lenient parser where leniency enables request smuggling or response splitting:
//! differing `Content-Length` values, an empty or non-hex chunk size, a bare LF or any control byte in a
//! chunk-size line, data not followed by CRLF, oversized trailers: all are errors (the caller answers
//! 502 and closes both connections).

/// Longest response head; longer is an error (Pingora's limit for heads is the same order).
pub const MAX_RESPONSE_HEAD: usize = 64 << 10;
/// More header lines than this in a response head: an error.
pub const MAX_RESPONSE_HEADERS: usize = 128;
/// Longest chunk-size line (size and extensions) and longest trailer section.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 << 10;

/// How the body after a response head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: answer to HEAD, 1xx, 204, 304. After a 1xx other than 101 the final response follows
    /// on the same connection; a 101 turns it into a tunnel (the caller decides whether it asked for
    /// one).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    Chunked,
    /// Until the upstream closes the connection (which then cannot be reused).
    UntilClose,
}

/// A complete response head at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    /// Bytes of the head, its empty line included.
    pub len: usize,
    pub framing: Framing,
    /// The upstream connection may carry another request after this response's body.
    pub reusable: bool,
}

/// What the start of a buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// Not a complete head yet: read more.
    Partial,
    Head(ResponseHead),
    Invalid(&'static str),
}

/// Parse the response head at the start of `buf`, for a request whose method was HEAD or not.
pub fn parse_head(buf: &[u8], head_request: bool) -> Parsed {
    // Uninitialised: 128 empty headers would be 4 KiB to zero per response.
    let mut headers =
        [const { std::mem::MaybeUninit::<httparse::Header>::uninit() }; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let parser = httparse::ParserConfig::default();
    let len = match parser.parse_response_with_uninit_headers(&mut resp, buf, &mut headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_RESPONSE_HEAD => return Parsed::Partial,
        Ok(httparse::Status::Partial) => return Parsed::Invalid("response head too large"),
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Invalid("too many response headers")
        }
        Err(_) => return Parsed::Invalid("malformed response head"),
    };
    if len > MAX_RESPONSE_HEAD {
        return Parsed::Invalid("response head too large");
    }
    let (Some(status), Some(version)) = (resp.code, resp.version) else {
        return Parsed::Invalid("malformed response head");
    };
    let mut length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut chunked_last = false;
    let mut connection = super::ConnectionOptions::default();
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            // `5, 5` and two equal fields are one length (RFC 9110 section 8.6); anything else is not.
            for v in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                let Some(n) = decimal(v) else {
                    return Parsed::Invalid("invalid Content-Length");
                };
                if length.is_some_and(|l| l != n) {
                    return Parsed::Invalid("differing Content-Length values");
                }
                length = Some(n);
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
            for coding in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if !coding.is_empty() {
                    chunked_last = coding.eq_ignore_ascii_case(b"chunked");
                }
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            connection.add(h.value);
        }
    }
    let persistent = if version >= 1 {
        !connection.close
    } else {
        connection.keep_alive && !connection.close
    };
    let no_body = head_request || (100..200).contains(&status) || status == 204 || status == 304;
    let (framing, reusable) = if no_body {
        (Framing::Empty, persistent)
    } else if transfer_encoding && version == 0 {
        // HTTP/1.0 has no transfer codings: the framing cannot be trusted.
        return Parsed::Invalid("Transfer-Encoding in an HTTP/1.0 response");
    } else if transfer_encoding && chunked_last {
        // With a Content-Length too, the coding wins and the connection is not reused (RFC 9112 6.3).
        (Framing::Chunked, persistent && length.is_none())
    } else if transfer_encoding {
        (Framing::UntilClose, false)
    } else if let Some(n) = length {
        (Framing::Length(n), persistent)
    } else {
        (Framing::UntilClose, false)
    };
    Parsed::Head(ResponseHead {
        status,
        len,
        framing,
        reusable,
    })
}

/// A `Content-Length` value: 1 to 19 ASCII digits, nothing else.
fn decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Where a chunked body ends, fed in pieces as they arrive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chunked {
    state: State,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum State {
    /// At a chunk-size line.
    #[default]
    Size,
    /// Inside a chunk's data: this many bytes left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines, this many bytes of them so far.
    Trailers(usize),
    Done,
}

/// What one `Chunked::feed` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fed {
    /// Bytes of `buf` that belong to the body (all of `buf` unless the body ended inside it).
    pub used: usize,
    pub done: bool,
}

impl Chunked {
    /// Take the body bytes at the start of `buf`, calling `data` with each piece of chunk data. Bytes
    /// of a line not complete yet are not used: feed them again with more.
    pub fn feed(&mut self, buf: &[u8], mut data: impl FnMut(&[u8])) -> Result<Fed, &'static str> {
        let mut at = 0;
        loop {
            let rest = &buf[at..];
            match self.state {
                State::Done => {
                    return Ok(Fed {
                        used: at,
                        done: true,
                    })
                }
                State::Size => {
                    let Some(line) = line(rest, MAX_CHUNK_LINE)? else {
                        return Ok(Fed {
                            used: at,
                            done: false,
                        });
                    };
                    if !rest[0].is_ascii_hexdigit() {
                        return Err("invalid chunk size");
                    }
                    let size = match httparse::parse_chunk_size(&rest[..line]) {
                        Ok(httparse::Status::Complete((_, size))) => size,
                        _ => return Err("invalid chunk size"),
                    };
                    at += line;
                    self.state = if size == 0 {
                        State::Trailers(0)
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(left) => {
                    if rest.is_empty() {
                        return Ok(Fed {
                            used: at,
                            done: false,
                        });
                    }
                    let n = (left.min(rest.len() as u64)) as usize;
                    data(&rest[..n]);
                    at += n;
                    self.state = match left - n as u64 {
                        0 => State::DataEnd,
                        left => State::Data(left),
                    };
                }
                State::DataEnd => {
                    if rest.len() < 2 {
                        if rest.first().is_some_and(|&b| b != b'\r') {
                            return Err("chunk data not followed by CRLF");
                        }
                        return Ok(Fed {
                            used: at,
                            done: false,
                        });
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err("chunk data not followed by CRLF");
                    }
                    at += 2;
                    self.state = State::Size;
                }
                State::Trailers(seen) => {
                    let Some(line) = line(rest, MAX_TRAILERS - seen)? else {
                        return Ok(Fed {
                            used: at,
                            done: false,
                        });
                    };
                    at += line;
                    self.state = if line == 2 {
                        State::Done
                    } else if !trailer_field(&rest[..line - 2]) {
                        return Err("malformed trailer field");
                    } else {
                        State::Trailers(seen + line)
                    };
                }
            }
        }
    }

    pub fn done(&self) -> bool {
        self.state == State::Done
    }
}

/// The length of the CRLF-terminated line at the start of `buf` (CRLF included), `None` if it is not
/// complete yet; an error for a bare LF, another control byte (HTAB aside) or a line over `max`.
fn line(buf: &[u8], max: usize) -> Result<Option<usize>, &'static str> {
    for (i, &b) in buf.iter().enumerate() {
        if i >= max {
            return Err("chunk line too long");
        }
        match b {
            b'\r' => {
                return match buf.get(i + 1) {
                    Some(b'\n') => Ok(Some(i + 2)),
                    Some(_) => Err("CR not followed by LF"),
                    None => Ok(None),
                }
            }
            b'\n' => return Err("bare LF in a chunked body"),
            b'\t' => {}
            b if b < 0x20 || b == 0x7f => return Err("control byte in a chunked body line"),
            _ => {}
        }
    }
    Ok(None)
}

/// `name: value` with a token name (trailer fields are checked, then dropped or passed as they are).
fn trailer_field(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    colon > 0
        && line[..colon]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn head(s: &str) -> ResponseHead {
        match parse_head(s.as_bytes(), false) {
            Parsed::Head(h) => h,
            other => panic!("{s:?}: {other:?}"),
        }
    }

    fn invalid(s: &str, head_request: bool) -> &'static str {
        match parse_head(s.as_bytes(), head_request) {
            Parsed::Invalid(why) => why,
            other => panic!("{s:?}: {other:?}"),
        }
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!(
            (h.len, h.framing, h.reusable),
            (38, Framing::Length(5), true)
        );
        let cases = [
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
                Framing::Length(5),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
                Framing::Length(5),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                Framing::Chunked,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n",
                Framing::Chunked,
                true,
            ),
            // Both: the coding wins, the connection is not reused.
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                Framing::Chunked,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                Framing::UntilClose,
                false,
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", Framing::UntilClose, false),
            ("HTTP/1.1 204 No Content\r\n\r\n", Framing::Empty, true),
            (
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
                Framing::Length(5),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n",
                Framing::Length(5),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n",
                Framing::Length(5),
                true,
            ),
        ];
        for (s, framing, reusable) in cases {
            let h = head(s);
            assert_eq!((h.framing, h.reusable), (framing, reusable), "{s:?}");
        }
        // A HEAD request's answer has no body whatever it announces.
        let s = "HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n";
        assert!(
            matches!(parse_head(s.as_bytes(), true), Parsed::Head(h) if h.framing == Framing::Empty)
        );
    }

    #[test]
    fn ambiguous_framing_is_an_error() {
        for (s, why) in [
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                "differing Content-Length values",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
                "differing Content-Length values",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
                "invalid Content-Length",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\n",
                "invalid Content-Length",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
                "invalid Content-Length",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
                "invalid Content-Length",
            ),
            (
                "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                "Transfer-Encoding in an HTTP/1.0 response",
            ),
            (
                "HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
                "malformed response head",
            ),
            (
                "HTTP/1.1 200 OK\r\n Folded: x\r\n\r\n",
                "malformed response head",
            ),
            ("HTTP/2 200 OK\r\n\r\n", "malformed response head"),
        ] {
            assert_eq!(invalid(s, false), why, "{s:?}");
        }
        let many = format!(
            "HTTP/1.1 200 OK\r\n{}\r\n",
            "X: y\r\n".repeat(MAX_RESPONSE_HEADERS + 1)
        );
        assert_eq!(invalid(&many, false), "too many response headers");
        let long = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(MAX_RESPONSE_HEAD));
        assert_eq!(invalid(&long, false), "response head too large");
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Le", false),
            Parsed::Partial
        );
    }

    /// Feed `body` in pieces cut at `cuts`, as reads would deliver it; (bytes used, done, data).
    fn feed_in_pieces(body: &[u8], cuts: &[usize]) -> Result<(usize, bool, Vec<u8>), &'static str> {
        let mut c = Chunked::default();
        let (mut data, mut used, mut end) = (Vec::new(), 0, 0);
        let mut ends: Vec<usize> = cuts.iter().map(|&x| x % (body.len() + 1)).collect();
        ends.push(body.len());
        ends.sort_unstable();
        for e in ends {
            end = end.max(e);
            let fed = c.feed(&body[used..end], |d| data.extend_from_slice(d))?;
            used += fed.used;
            if fed.done {
                return Ok((used, true, data));
            }
        }
        Ok((used, false, data))
    }

    #[test]
    fn a_chunked_body_ends_where_it_ends_and_nothing_more_is_read() {
        let body =
            b"4\r\nRust\r\n5;ext=\"a b\"\r\n is f\r\n0\r\nX-Sum: 1\r\n\r\nHTTP/1.1 200 OK\r\n";
        let (used, done, data) = feed_in_pieces(body, &[1, 7, 20, 33]).unwrap();
        assert!(done);
        assert_eq!(&body[used..], b"HTTP/1.1 200 OK\r\n");
        assert_eq!(data, b"Rust is f");
        let (_, done, _) = feed_in_pieces(b"4\r\nRust\r\n0\r\n", &[]).unwrap();
        assert!(!done, "no end of the trailer section yet");
    }

    #[test]
    fn smuggling_shapes_of_chunked_bodies_are_errors() {
        for body in [
            &b"\r\n"[..],                   // empty size
            b"; ext\r\n",                   // no size at all
            b"4\nRust\r\n0\r\n\r\n",        // bare LF after the size
            b"4;a\nb\r\nRust\r\n0\r\n\r\n", // bare LF inside an extension
            b"4\r\nRustX\r\n0\r\n\r\n",     // data longer than its size
            b"4\r\nRust\n0\r\n\r\n",        // bare LF after the data
            b"g\r\n",                       // not hex
            b"-1\r\n",
            b"4\x00\r\n",             // control byte
            b"4\rx\r\n",              // CR without LF
            b"10000000000000000\r\n", // 17 hex digits: overflow
            b"0\r\nno colon\r\n\r\n", // malformed trailer
            b"0\r\n: empty name\r\n\r\n",
        ] {
            assert!(
                feed_in_pieces(body, &[]).is_err(),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        let long = format!("1;{}\r\n", "e".repeat(MAX_CHUNK_LINE));
        assert_eq!(
            feed_in_pieces(long.as_bytes(), &[]),
            Err("chunk line too long")
        );
    }

    /// A chunked body as a server would write it: chunks of data with optional extensions, trailers.
    fn encode(chunks: &[(Vec<u8>, bool)], trailers: &[(String, String)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (data, ext) in chunks.iter().filter(|(d, _)| !d.is_empty()) {
            out.extend_from_slice(format!("{:x}", data.len()).as_bytes());
            if *ext {
                out.extend_from_slice(b";name=\"v\"");
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n");
        for (k, v) in trailers {
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Against the encoder: whatever the read boundaries, the body ends exactly at its end, the
        /// data is the data, and the bytes after it (the next response) are never used.
        #[test]
        fn chunked_bodies_match_the_model(
            chunks in prop::collection::vec((prop::collection::vec(any::<u8>(), 0..300), any::<bool>()), 0..8),
            trailers in prop::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,10}", "[ -~]{0,20}"), 0..3),
            cuts in prop::collection::vec(any::<usize>(), 0..6),
            after in prop::collection::vec(any::<u8>(), 0..40),
        ) {
            let body = encode(&chunks, &trailers);
            let mut wire = body.clone();
            wire.extend_from_slice(&after);
            let (used, done, data) = feed_in_pieces(&wire, &cuts).unwrap();
            prop_assert!(done);
            prop_assert_eq!(used, body.len());
            let expected: Vec<u8> = chunks.iter().flat_map(|(d, _)| d.clone()).collect();
            prop_assert_eq!(data, expected);
        }

        /// Arbitrary bytes in arbitrary pieces: never a panic, never more used than given.
        #[test]
        fn arbitrary_bytes_never_panic(
            wire in prop::collection::vec(any::<u8>(), 0..600),
            cuts in prop::collection::vec(any::<usize>(), 0..6),
            head_request in any::<bool>(),
        ) {
            if let Ok((used, _, _)) = feed_in_pieces(&wire, &cuts) {
                prop_assert!(used <= wire.len());
            }
            if let Parsed::Head(h) = parse_head(&wire, head_request) {
                prop_assert!(h.len <= wire.len());
            }
            let mut framed = b"HTTP/1.1 200 OK\r\n".to_vec();
            framed.extend_from_slice(&wire);
            let _ = parse_head(&framed, head_request);
        }
    }
}
