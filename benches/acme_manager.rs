//! The ACME manager with 100k `tls: "auto"` domains, all holding a valid certificate (the steady state
//! of an edge node): what one wake-up costs when nothing or one domain changed, and the memory the
//! manager's bookkeeping takes. `cargo bench --bench acme_manager`; without `--bench` (as `cargo test
//! --benches` runs it) it runs once on 2,000 domains.
//!
//! No CA is contacted: the directory is an address where nothing listens, and nothing is due.

use edgeward::acme::manager::Manager;
use edgeward::acme::{AcmeConfig, KeyType};
use edgeward::control::Control;
use edgeward::model::{CertRecord, CertSource, ChallengeMode, Domain, TlsMode};
use edgeward::pools::Pools;
use edgeward::store::{DirStore, Snapshot};
use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509Builder, X509NameBuilder};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn full() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// The system allocator, counting the bytes live on the heap: memory as the manager holds it,
/// whatever the allocator keeps cached.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new, Ordering::Relaxed);
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        System.realloc(p, l, new)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// `n` auto domains, each with a self-signed 90-day certificate (one key for all: the key is not
/// what is measured).
fn snapshot(n: usize) -> Snapshot {
    let key = PKey::from_ec_key(
        EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
    )
    .unwrap();
    let key_pem = String::from_utf8(key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let mut s = Snapshot::default();
    for i in 0..n {
        let host = format!("host{i}.bench.test");
        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        let serial = BigNum::from_u32(i as u32 + 1).unwrap();
        b.set_serial_number(&Asn1Integer::from_bn(&serial).unwrap())
            .unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_nid(Nid::COMMONNAME, &host).unwrap();
        let name = name.build();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(90).unwrap())
            .unwrap();
        b.set_pubkey(&key).unwrap();
        let san = SubjectAlternativeName::new()
            .dns(&host)
            .build(&b.x509v3_context(None, None))
            .unwrap();
        b.append_extension(san).unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        let chain_pem = String::from_utf8(b.build().to_pem().unwrap()).unwrap();
        s.domains.push(Domain {
            host: host.clone(),
            upstreams: vec!["127.0.0.1:9".parse().unwrap()],
            tls: TlsMode::Auto,
            redirect_https: false,
            acme_challenges: ChallengeMode::Intercept,
            certificate_host: Default::default(),
            upstream_timeouts: Default::default(),
            acme_challenge: None,
        });
        s.certificates.push(CertRecord {
            host,
            chain_pem,
            key_pem: key_pem.clone(),
            source: CertSource::Acme,
        });
    }
    s
}

fn config() -> AcmeConfig {
    AcmeConfig {
        directory: "https://127.0.0.1:9/dir".into(),
        contact: Vec::new(),
        ca_bundle: None,
        key_type: KeyType::EcdsaP256,
        renew_before_fraction: 0.33,
        max_orders_per_window: 300,
        order_window_seconds: 10_800,
        max_concurrent_orders: 8,
        retry_min_seconds: 60,
        retry_max_seconds: 21_600,
        order_timeout_seconds: 90,
        dns01: None,
        profile: None,
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n = if full() { 100_000 } else { 2_000 };
    let rounds = if full() { 15 } else { 3 };
    let t = Instant::now();
    let snap = snapshot(n);
    let dir = tempfile::tempdir().unwrap();
    let store = DirStore::open_writer(dir.path()).unwrap();
    let control = Arc::new(Control::new(
        Arc::new(store),
        Pools::new(Duration::from_secs(1)),
    ));
    control.restore(snap).unwrap();
    control.open_writes();
    println!(
        "{n} auto domains with certificates loaded in {:.1?}",
        t.elapsed()
    );

    let before = live();
    let manager = Manager::new(config(), control.clone()).unwrap();
    let t = Instant::now();
    manager.wake_once().await;
    let first = t.elapsed();
    let grown = live().saturating_sub(before);
    println!(
        "first wake-up (builds the bookkeeping): {first:.1?}; heap grown by {} KiB ({:.0} B per domain)",
        grown / 1024,
        grown as f64 / n as f64
    );

    let mut idle = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        manager.wake_once().await;
        idle.push(t.elapsed());
    }
    println!(
        "wake-up, nothing changed: median {:.2?} of {rounds}",
        median(idle)
    );

    let mut one = Vec::new();
    for i in 0..rounds {
        // One domain changed (its upstream), as an admin write does.
        let mut d = control.domain(&format!("host{i}.bench.test")).unwrap();
        d.upstreams = vec![format!("127.0.0.1:{}", 10 + i).parse().unwrap()];
        control
            .apply(vec![edgeward::model::Change::PutDomain(d)])
            .await
            .unwrap();
        let t = Instant::now();
        manager.wake_once().await;
        one.push(t.elapsed());
    }
    println!(
        "wake-up, one domain changed: median {:.2?} of {rounds}",
        median(one)
    );
}
