//! The TLS hot path and its writer: SNI lookup (the route of the name, then its domain's certificate)
//! with 1k and 100k domains and certificates loaded, publishing one certificate with that many
//! present, and the one-time parse cost of a certificate + key.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use edgeward::model::{ChallengeMode, Domain, TlsMode};
use edgeward::pools::Pools;
use edgeward::state::{Route, State};
use edgeward::tls::bundle::{parse, CertBundle};
use edgeward::tls::{CertRecord, CertSource};
use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509Builder, X509NameBuilder};
use std::sync::Arc;

const SIZES: [usize; 2] = [1_000, 100_000];

/// One real self-signed ECDSA certificate for `host`, as a stored record.
fn record(host: &str, key: &PKey<Private>, serial: u32) -> CertRecord {
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&Asn1Integer::from_bn(&BigNum::from_u32(serial).unwrap()).unwrap())
        .unwrap();
    let mut n = X509NameBuilder::new().unwrap();
    n.append_entry_by_nid(Nid::COMMONNAME, host).unwrap();
    let n = n.build();
    b.set_subject_name(&n).unwrap();
    b.set_issuer_name(&n).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(90).unwrap())
        .unwrap();
    b.set_pubkey(key).unwrap();
    let san = SubjectAlternativeName::new()
        .dns(host)
        .build(&b.x509v3_context(None, None))
        .unwrap();
    b.append_extension(san).unwrap();
    b.sign(key, MessageDigest::sha256()).unwrap();
    CertRecord {
        host: host.into(),
        chain_pem: String::from_utf8(b.build().to_pem().unwrap()).unwrap(),
        key_pem: edgeward::tls::bundle::storable_key(key).unwrap(),
        source: CertSource::Manual,
    }
}

fn ec_key() -> PKey<Private> {
    let g = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&g).unwrap()).unwrap()
}

/// `n` domains, each with its certificate; bundles share their OpenSSL objects (parsing 100k is the
/// start-up bench's job, not this one's).
fn filled(n: usize, template: &CertRecord, pools: &Pools) -> Arc<State> {
    let state = Arc::new(State::default());
    let parsed = parse(template, 0, false).unwrap();
    for i in 0..n {
        add(
            &state,
            pools,
            &parsed,
            &format!("shop-{i}.customer.example"),
        );
    }
    state
}

fn add(state: &State, pools: &Pools, parsed: &CertBundle, host: &str) {
    state.certs.publish(Arc::new(renamed(parsed, host)));
    let addr = "127.0.0.1:1".parse().unwrap();
    state.routes.insert(Arc::new(Route {
        domain: Domain {
            host: host.into(),
            upstreams: vec![addr],
            tls: TlsMode::Manual,
            redirect_https: false,
            acme_challenges: ChallengeMode::Intercept,
            certificate_host: Default::default(),
            upstream_timeouts: Default::default(),
            acme_challenge: None,
        },
        pool: pools.get(&[addr]),
    }));
}

/// The same parsed certificate published under another name (served only for names it lists).
fn renamed(b: &CertBundle, host: &str) -> CertBundle {
    let mut c = b.clone();
    c.host = host.into();
    c.names = vec![host.into()];
    c
}

fn sni(c: &mut Criterion) {
    let key = ec_key();
    let template = record("template.example", &key, 1);
    let parsed = parse(&template, 0, false).unwrap();
    let pools = Pools::new(std::time::Duration::from_secs(1));
    let mut g = c.benchmark_group("sni_lookup");
    for n in SIZES {
        let state = filled(n, &template, &pools);
        add(&state, &pools, &parsed, "*.wild.example");
        let reader = state.reader();
        let name = format!("shop-{}.customer.example", n / 2);
        g.bench_with_input(BenchmarkId::new("exact", n), &n, |b, _| {
            b.iter(|| reader.cert_for(black_box(&name)).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("wildcard", n), &n, |b, _| {
            b.iter(|| reader.cert_for(black_box("www.wild.example")).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("miss", n), &n, |b, _| {
            b.iter(|| reader.cert_for(black_box("nothing.example")))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("publish_one_certificate");
    for n in SIZES {
        let store = &filled(n, &template, &pools).certs;
        let one = Arc::new(renamed(&parsed, "new.customer.example"));
        g.bench_with_input(BenchmarkId::new("replace", n), &n, |b, _| {
            b.iter(|| store.publish(one.clone()))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("certificate_parse");
    g.bench_function("ecdsa_p256_pem_validate", |b| {
        b.iter(|| parse(black_box(&template), 0, false).unwrap())
    });
    g.bench_function("x509_from_pem", |b| {
        b.iter(|| {
            openssl::x509::X509::stack_from_pem(black_box(template.chain_pem.as_bytes())).unwrap()
        })
    });
    g.bench_function("pkey_from_pem", |b| {
        b.iter(|| PKey::private_key_from_pem(black_box(template.key_pem.as_bytes())).unwrap())
    });
    let ec_pem = key.ec_key().unwrap().private_key_to_pem().unwrap();
    g.bench_function("eckey_from_pem_legacy", |b| {
        b.iter(|| EcKey::private_key_from_pem(black_box(&ec_pem)).unwrap())
    });
    let der = key.private_key_to_der().unwrap();
    g.bench_function("pkey_from_der", |b| {
        b.iter(|| PKey::private_key_from_der(black_box(&der)).unwrap())
    });
    let x509_der = openssl::x509::X509::from_pem(template.chain_pem.as_bytes())
        .unwrap()
        .to_der()
        .unwrap();
    g.bench_function("x509_from_der", |b| {
        b.iter(|| openssl::x509::X509::from_der(black_box(&x509_der)).unwrap())
    });
    let p8 = key.private_key_to_pkcs8().unwrap();
    g.bench_function("pkey_from_pkcs8_der", |b| {
        b.iter(|| PKey::private_key_from_pkcs8(black_box(&p8)).unwrap())
    });
    let ec_der = key.ec_key().unwrap().private_key_to_der().unwrap();
    g.bench_function("eckey_from_der", |b| {
        b.iter(|| EcKey::private_key_from_der(black_box(&ec_der)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, sni);
criterion_main!(benches);
