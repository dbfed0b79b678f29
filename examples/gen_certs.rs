//! Fill a state directory with N ECDSA P-256 certificates (`host{i}.bench.test`), signed by one
//! throw-away CA, for the benchmarks. Usage: gen_certs STATE_DIR N [--upstream ADDR] [--challenges]
//! [--pem DIR] [--no-certs]. Writes STATE_DIR/certs/*.json (0600) in the state directory's format (and
//! domains, challenges, PEM files on request), and STATE_DIR/../ca.pem.

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
use openssl::x509::{X509Builder, X509NameBuilder, X509};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

fn key() -> PKey<Private> {
    let g = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&g).unwrap()).unwrap()
}

fn cert(cn: &str, serial: u32, k: &PKey<Private>, issuer: Option<(&X509, &PKey<Private>)>) -> X509 {
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&Asn1Integer::from_bn(&BigNum::from_u32(serial).unwrap()).unwrap())
        .unwrap();
    let mut n = X509NameBuilder::new().unwrap();
    n.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
    let n = n.build();
    b.set_subject_name(&n).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(90).unwrap())
        .unwrap();
    b.set_pubkey(k).unwrap();
    match issuer {
        None => {
            b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
                .unwrap();
            b.set_issuer_name(&n).unwrap();
            b.sign(k, MessageDigest::sha256()).unwrap();
        }
        Some((ca, ca_key)) => {
            let san = SubjectAlternativeName::new()
                .dns(cn)
                .build(&b.x509v3_context(Some(ca), None))
                .unwrap();
            b.append_extension(san).unwrap();
            b.set_issuer_name(ca.subject_name()).unwrap();
            b.sign(ca_key, MessageDigest::sha256()).unwrap();
        }
    }
    b.build()
}

/// Fill a state directory (and optionally PEM files for other proxies) with N bench domains.
#[derive(clap::Parser)]
struct Args {
    /// The state directory to fill; the CA goes to its parent as ca.pem.
    state_dir: PathBuf,
    /// How many hosts: host0.bench.test .. host{N-1}.bench.test.
    n: u32,
    /// Also write a domain record per host, routed to this upstream (tls: manual, or off with --no-certs).
    #[arg(long)]
    upstream: Option<String>,
    /// Also write a challenge token per host: tok{i} answered with "tok{i}.<thumbprint>".
    #[arg(long)]
    challenges: bool,
    /// Also write each certificate and its key as one PEM file, DIR/host{i}.bench.test.pem (HAProxy, nginx).
    #[arg(long)]
    pem: Option<PathBuf>,
    /// Write no certificates (domains and challenges only).
    #[arg(long)]
    no_certs: bool,
}

/// The key authorization served for token `tok{i}` in every benchmark.
fn key_authorization(i: u32) -> String {
    format!("tok{i}.Thumbprint_0123456789abcdefghijklmnopqrstuv")
}

fn write(path: &Path, bytes: &[u8], mode: u32) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    std::io::Write::write_all(&mut f, bytes).unwrap();
}

fn main() {
    let args = <Args as clap::Parser>::parse();
    let dir = &args.state_dir;
    for sub in ["certs", "domains", "challenges"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    if let Some(pem) = &args.pem {
        std::fs::create_dir_all(pem).unwrap();
    }
    let ca_key = key();
    let ca = cert("edgeward bench CA", 1, &ca_key, None);
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::write(parent.join("ca.pem"), ca.to_pem().unwrap()).unwrap();
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get()) as u32;
    let tls = if args.no_certs { "off" } else { "manual" };
    std::thread::scope(|s| {
        for t in 0..threads {
            let (ca, ca_key, args) = (&ca, &ca_key, &args);
            s.spawn(move || {
                for i in (t..args.n).step_by(threads as usize) {
                    let host = format!("host{i}.bench.test");
                    if let Some(up) = &args.upstream {
                        let d = serde_json::json!({"host": host, "upstreams": [up], "tls": tls,
                            "redirect_https": false, "acme_challenges": "intercept",
                            // The current form (a domain naming its certificate): no migration at start.
                            "certificate_host": null});
                        write(
                            &dir.join(format!("domains/{host}.json")),
                            d.to_string().as_bytes(),
                            0o644,
                        );
                    }
                    if args.challenges {
                        let c = serde_json::json!({"token": format!("tok{i}"), "host": host,
                            "key_authorization": key_authorization(i), "expires_at": u64::MAX / 2});
                        write(
                            &dir.join(format!("challenges/tok{i}.json")),
                            c.to_string().as_bytes(),
                            0o644,
                        );
                    }
                    if args.no_certs {
                        continue;
                    }
                    let k = key();
                    let c = cert(&host, 1000 + i, &k, Some((ca, ca_key)));
                    let chain = String::from_utf8(c.to_pem().unwrap()).unwrap();
                    let key_pem = String::from_utf8(k.private_key_to_pem_pkcs8().unwrap()).unwrap();
                    if let Some(pem) = &args.pem {
                        let both = format!("{chain}{key_pem}");
                        write(&pem.join(format!("{host}.pem")), both.as_bytes(), 0o600);
                    }
                    let record = serde_json::json!({
                        "host": host, "chain_pem": chain, "key_pem": key_pem, "source": "manual",
                    });
                    write(
                        &dir.join(format!("certs/{host}.json")),
                        record.to_string().as_bytes(),
                        0o600,
                    );
                }
            });
        }
    });
    eprintln!("wrote {} hosts to {}", args.n, dir.display());
}
