//! Hot-path lookups and the cost of one change, at 1k and 100k domains: the ratio between the two sizes
//! shows whether a cost grows with the number of domains.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use edgeward::control::Control;
use edgeward::model::{Challenge, ChallengeMode, Change, Domain, TlsMode};
use edgeward::pools::Pools;
use edgeward::state::{Challenges, Route, Routes, State};
use edgeward::store::DirStore;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const SIZES: [usize; 2] = [1_000, 100_000];
/// Domains share this many distinct upstream sets, as on a real edge.
const POOLS: usize = 1_000;

fn domain(i: usize) -> Domain {
    let port = 10_000 + (i % POOLS) as u16;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    Domain {
        host: format!("shop-{i}.customer-{}.example", i % 97),
        upstreams: vec![addr],
        tls: TlsMode::Off,
        redirect_https: false,
        acme_challenges: ChallengeMode::Intercept,
        certificate_host: Default::default(),
        upstream_timeouts: Default::default(),
        acme_challenge: None,
    }
}

fn filled_routes(pools: &Pools, n: usize) -> Routes {
    let routes = Routes::default();
    for i in 0..n {
        let d = domain(i);
        let pool = pools.get(&d.upstreams);
        routes.insert(Arc::new(Route { domain: d, pool }));
    }
    for i in 0..97 {
        let d = Domain {
            host: format!("*.wild-{i}.example"),
            ..domain(i)
        };
        let pool = pools.get(&d.upstreams);
        routes.insert(Arc::new(Route { domain: d, pool }));
    }
    routes
}

fn challenge_lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("challenge_lookup");
    for n in SIZES {
        let map = Challenges::default();
        for i in 0..n {
            map.insert(&Challenge {
                token: format!("token-{i}-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
                host: format!("shop-{i}.example"),
                key_authorization: format!("token-{i}-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.thumbprint_0123456789abcdefghijklmnopq"),
                expires_at: u64::MAX,
                kind: edgeward::model::AcmeChallenge::Http01,
            });
        }
        let token = format!("token-{}-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", n / 2);
        let host = format!("shop-{}.example", n / 2);
        g.bench_with_input(BenchmarkId::new("hit", n), &n, |b, _| {
            b.iter(|| map.lookup(black_box(&token), black_box(&host), 1).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("miss", n), &n, |b, _| {
            b.iter(|| map.lookup(black_box("no-such-token"), black_box(&host), 1))
        });
    }
    g.finish();
}

/// The challenge front's per-request work on a request head as wrk sends it: a hit (examine + the
/// answer's bytes), and the prefix check every other request pays before going to Pingora.
fn challenge_front(c: &mut Criterion) {
    use edgeward::proxy::front::{examine, write_answer, Head};
    let mut g = c.benchmark_group("challenge_front");
    for n in SIZES {
        let state = Arc::new(State::default());
        for i in 0..n {
            state.challenges.insert(&Challenge {
                token: format!("tok{i}"),
                host: format!("host{i}.bench.test"),
                key_authorization: format!("tok{i}.Thumbprint_0123456789abcdefghijklmnopqrstuv"),
                expires_at: u64::MAX,
                kind: edgeward::model::AcmeChallenge::Http01,
            });
        }
        let hit = format!(
            "GET /.well-known/acme-challenge/tok{i} HTTP/1.1\r\nHost: host{i}.bench.test\r\n\r\n",
            i = n / 2
        );
        let mut out = Vec::with_capacity(512);
        let state = state.reader();
        g.bench_with_input(BenchmarkId::new("hit_and_answer", n), &n, |b, _| {
            b.iter(|| match examine(&state, black_box(hit.as_bytes()), 1) {
                Head::Answer {
                    body,
                    head_only,
                    keep_alive,
                    ..
                } => {
                    out.clear();
                    write_answer(&mut out, &body, head_only, keep_alive);
                    out.len()
                }
                other => panic!("{other:?}"),
            })
        });
        let other = "GET / HTTP/1.1\r\nHost: host1.bench.test\r\n\r\n";
        g.bench_with_input(BenchmarkId::new("not_a_challenge", n), &n, |b, _| {
            b.iter(|| examine(&state, black_box(other.as_bytes()), 1))
        });
        // What every request handed to Pingora pays on top: finding the end of its head, for a head
        // as a browser sends it (about 450 bytes, 9 header lines).
        let browser = "GET /shop/cart?id=42 HTTP/1.1\r\nHost: host1.bench.test\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36\r\nAccept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\nAccept-Language: en-US,en;q=0.9\r\nAccept-Encoding: gzip, deflate, br\r\nCookie: session=0123456789abcdef0123456789abcdef; theme=dark\r\nConnection: keep-alive\r\nUpgrade-Insecure-Requests: 1\r\n\r\n";
        g.bench_with_input(BenchmarkId::new("head_end_browser_head", n), &n, |b, _| {
            b.iter(|| edgeward::http1::head_end(black_box(browser.as_bytes())))
        });
    }
    g.finish();
}

fn route_lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("route_lookup");
    let pools = Pools::new(Duration::from_secs(1));
    for n in SIZES {
        let routes = filled_routes(&pools, n);
        let exact = domain(n / 2).host;
        g.bench_with_input(BenchmarkId::new("exact", n), &n, |b, _| {
            b.iter(|| routes.lookup(black_box(&exact)).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("wildcard", n), &n, |b, _| {
            b.iter(|| routes.lookup(black_box("www.wild-42.example")).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("miss", n), &n, |b, _| {
            b.iter(|| routes.lookup(black_box("nothing.here.example")))
        });
    }
    g.finish();
}

fn one_change(c: &mut Criterion) {
    let mut g = c.benchmark_group("one_change");
    g.sample_size(30);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    for n in SIZES {
        // In memory: what the proxy sees change (pool reuse + route insert).
        let pools = Pools::new(Duration::from_secs(1));
        let routes = filled_routes(&pools, n);
        let mut i = 0usize;
        g.bench_with_input(BenchmarkId::new("memory_put_domain", n), &n, |b, _| {
            b.iter(|| {
                i += 1;
                let d = domain(n + (i % 1000));
                let pool = pools.get(&d.upstreams);
                routes.insert(Arc::new(Route { domain: d, pool }))
            })
        });

        // The whole admin path: checks, durable write (fsync) to a state directory, memory.
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(DirStore::open_writer(dir.path()).unwrap());
        let control = std::sync::Arc::new(Control::new(store, Pools::new(Duration::from_secs(1))));
        control.open_writes();
        rt.block_on(async {
            let all: Vec<Change> = (0..n).map(|i| Change::PutDomain(domain(i))).collect();
            for chunk in all.chunks(10_000) {
                control.apply(chunk.to_vec()).await.unwrap();
            }
        });
        let mut j = 0usize;
        g.bench_with_input(BenchmarkId::new("durable_put_domain", n), &n, |b, _| {
            b.iter(|| {
                j += 1;
                let d = domain(n + (j % 1000));
                rt.block_on(control.apply(vec![Change::PutDomain(d)]))
                    .unwrap()
            })
        });
    }
    g.finish();
}

/// The forwarded headers of one proxied request (`upstream_request_filter`), on a browser's head as
/// Pingora parses it (with its map of header-name case), from an untrusted peer.
fn forwarded_headers(c: &mut Criterion) {
    use edgeward::proxy::forwarded::Forwarding;
    use pingora_http::RequestHeader;
    let mut g = c.benchmark_group("forwarded_headers");
    let mut base = RequestHeader::build("GET", b"/shop/cart?id=42", Some(10)).unwrap();
    for (k, v) in [
        ("Host", "host1.bench.test"),
        (
            "User-Agent",
            "Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0 Safari/537.36",
        ),
        (
            "Accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        ("Accept-Language", "en-US,en;q=0.9"),
        (
            "Cookie",
            "session=0123456789abcdef0123456789abcdef; theme=dark",
        ),
        ("Connection", "keep-alive"),
    ] {
        base.append_header(k.to_string(), v).unwrap();
    }
    let f = Forwarding::new(vec!["10.0.0.0/8".parse().unwrap()]);
    let peer = Some("203.0.113.9".parse().unwrap());
    let host = base.headers.get("host").cloned();
    g.bench_function("apply_untrusted_peer", |b| {
        b.iter_batched_ref(
            || base.clone(),
            |r| f.apply(r, peer, "http", host.clone()).unwrap(),
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// Upstream response framing (the fast path's `http1::response`): a typical response head, and where a
/// chunked body of 4 KiB in 4 chunks ends.
fn response_framing(c: &mut Criterion) {
    use edgeward::http1::response::{parse_head, Chunked};
    let mut g = c.benchmark_group("response_framing");
    let head = b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: 4096\r\nCache-Control: max-age=60\r\nDate: Thu, 03 Dec 2026 13:00:00 GMT\r\nServer: app\r\nSet-Cookie: s=0123456789abcdef; Path=/; HttpOnly\r\n\r\n";
    g.bench_function("parse_head", |b| {
        b.iter(|| parse_head(black_box(head), false))
    });
    let mut body = Vec::new();
    for _ in 0..4 {
        body.extend_from_slice(b"400\r\n");
        body.extend_from_slice(&[b'x'; 1024]);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    g.bench_function("chunked_4k", |b| {
        b.iter(|| {
            let mut c = Chunked::default();
            c.feed(black_box(&body), |_| {}).unwrap()
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    response_framing,
    challenge_lookup,
    challenge_front,
    forwarded_headers,
    route_lookup,
    one_change
);
criterion_main!(benches);
