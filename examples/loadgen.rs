//! The load generator of `benches/compare.sh`, for what wrk cannot do: a fixed request rate with the
//! latency of every request measured from the moment it was scheduled (a stall counts against every
//! request it delayed: no coordinated omission), a random Host per request, full TLS handshakes with a
//! random SNI per connection (no session resumption), and admin API changes at a fixed rate.
//! Hosts are `host{i}.bench.test`, tokens `tok{i}`, as written by the `gen_certs` example.
//! Prints one JSON line: counts, achieved rate and latency percentiles in milliseconds.
//!
//!   loadgen http --addr 127.0.0.1:8080 --hosts 100000 --rate 20000 --duration 10
//!   loadgen tls --addr 127.0.0.1:8443 --hosts 100000 --duration 10            (closed loop: max rate)
//!   loadgen tls --addr 127.0.0.1:8443 --hosts 100 --rate 500 --request        (open loop, one request)
//!   loadgen changes --addr 127.0.0.1:9900 --token T --upstream 127.0.0.1:8081 --rate 1000

use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use rand::Rng;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
    /// Seconds to run.
    #[arg(long, global = true, default_value_t = 10.0)]
    duration: f64,
    /// Requests (or connections) per second, scheduled at even intervals; without it, as fast as the
    /// connections go (closed loop).
    #[arg(long, global = true)]
    rate: Option<f64>,
    /// Concurrent connections.
    #[arg(long, global = true, default_value_t = 64)]
    conns: usize,
}

#[derive(Subcommand)]
enum Cmd {
    /// HTTP/1.1 keep-alive requests with a random host among `hosts`.
    Http {
        #[arg(long)]
        addr: String,
        #[arg(long, default_value_t = 100_000)]
        hosts: u32,
        #[arg(long, value_enum, default_value_t = Kind::Proxy)]
        kind: Kind,
    },
    /// A new TCP connection and a full TLS handshake per iteration, random SNI among `hosts`.
    Tls {
        #[arg(long)]
        addr: String,
        #[arg(long, default_value_t = 100_000)]
        hosts: u32,
        /// Also send one `GET /` on each connection and wait for a 200.
        #[arg(long)]
        request: bool,
    },
    /// `PUT /v1/domains/chg{j}.bench.test` on edgeward's admin API.
    Changes {
        #[arg(long)]
        addr: String,
        #[arg(long)]
        token: String,
        /// The upstream of the new domains.
        #[arg(long)]
        upstream: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    /// `GET /` with Host: host{i}.bench.test.
    Proxy,
    /// `GET /.well-known/acme-challenge/tok{i}` with Host: host{i}.bench.test.
    Challenge,
}

/// Hands out the scheduled start of each request: even intervals at `rate`, or "now" in a closed loop.
struct Pacer {
    start: Instant,
    end: Instant,
    interval: Option<Duration>,
    next: AtomicU64,
}

impl Pacer {
    async fn next(&self) -> Option<Instant> {
        let Some(interval) = self.interval else {
            let now = Instant::now();
            return (now < self.end).then_some(now);
        };
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        let at = self.start + interval.mul_f64(i as f64);
        if at >= self.end {
            return None;
        }
        tokio::time::sleep_until(at.into()).await;
        Some(at)
    }
}

/// One connection's tally, merged at the end.
struct Tally {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    latency_us: Histogram<u64>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            ok: 0,
            errors: 0,
            first_error: None,
            latency_us: Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds"),
        }
    }

    fn record(&mut self, scheduled: Instant, result: Result<(), String>) {
        match result {
            Ok(()) => {
                self.ok += 1;
                let us = scheduled.elapsed().as_micros() as u64;
                self.latency_us.saturating_record(us.max(1));
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }
}

fn random_host(hosts: u32) -> u32 {
    rand::thread_rng().gen_range(0..hosts)
}

async fn http_conn(addr: &str) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (send, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(send)
}

/// Send one request on the connection (opened or reopened as needed) and expect `expect`.
async fn exchange(
    conn: &mut Option<SendRequest<Full<Bytes>>>,
    addr: &str,
    req: http::Request<Full<Bytes>>,
    expect: u16,
) -> Result<(), String> {
    if conn.as_ref().is_none_or(|c| c.is_closed()) {
        *conn = Some(http_conn(addr).await?);
    }
    let send = conn.as_mut().expect("just opened");
    let result = async {
        send.ready().await.map_err(|e| e.to_string())?;
        let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        resp.into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        if status == expect {
            Ok(())
        } else {
            Err(format!("status {status}"))
        }
    }
    .await;
    if result.is_err() {
        *conn = None;
    }
    result
}

fn http_request(kind: Kind, i: u32) -> http::Request<Full<Bytes>> {
    let path = match kind {
        Kind::Proxy => "/".to_string(),
        Kind::Challenge => format!("/.well-known/acme-challenge/tok{i}"),
    };
    http::Request::get(path)
        .header("host", format!("host{i}.bench.test"))
        .body(Full::new(Bytes::new()))
        .expect("valid request")
}

fn change_request(token: &str, upstream: &str, j: u64) -> http::Request<Full<Bytes>> {
    let body = format!(r#"{{"upstreams": ["{upstream}"]}}"#);
    http::Request::put(format!("/v1/domains/chg{j}.bench.test"))
        .header("host", "admin")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("valid request")
}

/// Accepts any server certificate and signature: the client only drives handshakes, and skipping the
/// verification keeps its CPU cost below the server's.
#[derive(Debug)]
struct AcceptAny(rustls::crypto::WebPkiSupportedAlgorithms);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.verify_tls12_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_schemes()
    }
}

fn tls_connector() -> tokio_rustls::TlsConnector {
    let provider = rustls::crypto::ring::default_provider();
    let algs = provider.signature_verification_algorithms;
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(algs)))
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Connect, handshake with SNI host{i}, optionally one request; close.
async fn tls_once(
    tls: &tokio_rustls::TlsConnector,
    addr: &str,
    i: u32,
    request: bool,
) -> Result<(), String> {
    let host = format!("host{i}.bench.test");
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
    let mut s = tls.connect(name, stream).await.map_err(|e| e.to_string())?;
    if request {
        let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut resp = Vec::with_capacity(512);
        // Some servers end a `Connection: close` response without close_notify: keep what was read.
        let _ = s.read_to_end(&mut resp).await;
        if !resp.starts_with(b"HTTP/1.1 200") {
            let line = String::from_utf8_lossy(&resp[..resp.len().min(40)]).into_owned();
            return Err(format!("response `{line}`"));
        }
    }
    Ok(())
}

async fn worker(cmd: Arc<Cmd>, pacer: Arc<Pacer>, seq: Arc<AtomicU64>) -> Tally {
    let mut tally = Tally::new();
    let mut conn = None;
    let tls = matches!(&*cmd, Cmd::Tls { .. }).then(tls_connector);
    while let Some(at) = pacer.next().await {
        let result = match &*cmd {
            Cmd::Http { addr, hosts, kind } => {
                let req = http_request(*kind, random_host(*hosts));
                exchange(&mut conn, addr, req, 200).await
            }
            Cmd::Tls {
                addr,
                hosts,
                request,
            } => {
                let tls = tls.as_ref().expect("TLS connector");
                tls_once(tls, addr, random_host(*hosts), *request).await
            }
            Cmd::Changes {
                addr,
                token,
                upstream,
            } => {
                let j = seq.fetch_add(1, Ordering::Relaxed);
                exchange(&mut conn, addr, change_request(token, upstream, j), 200).await
            }
        };
        tally.record(at, result);
    }
    tally
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    let start = Instant::now() + Duration::from_millis(20);
    let pacer = Arc::new(Pacer {
        start,
        end: start + Duration::from_secs_f64(args.duration),
        interval: args.rate.map(|r| Duration::from_secs_f64(1.0 / r)),
        next: AtomicU64::new(0),
    });
    let cmd = Arc::new(args.cmd);
    let seq = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..args.conns)
        .map(|_| tokio::spawn(worker(cmd.clone(), pacer.clone(), seq.clone())))
        .collect();
    let mut all = Tally::new();
    for t in tasks {
        let t = t.await.expect("worker");
        all.ok += t.ok;
        all.errors += t.errors;
        all.latency_us.add(&t.latency_us).expect("same bounds");
        if all.first_error.is_none() {
            all.first_error = t.first_error;
        }
    }
    let secs = start.elapsed().as_secs_f64().min(args.duration).max(1e-9);
    let h = &all.latency_us;
    let out = serde_json::json!({
        "ok": all.ok,
        "errors": all.errors,
        "first_error": all.first_error,
        "per_second": (all.ok as f64 / secs).round(),
        "target_rate": args.rate,
        "p50_ms": ms(h, 0.50),
        "p99_ms": ms(h, 0.99),
        "p999_ms": ms(h, 0.999),
        "max_ms": h.max() as f64 / 1000.0,
    });
    println!("{out}");
}
