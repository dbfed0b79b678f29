//! Fill a state directory with N ECDSA P-256 certificates (`host{i}.bench.test`), signed by one
//! throw-away CA, for the TLS start-up benchmark. Usage: gen_certs STATE_DIR N
//! Writes STATE_DIR/certs/*.json (0600) in the state directory's format, and STATE_DIR/../ca.pem.

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
use openssl::x509::{X509Builder, X509NameBuilder, X509};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

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

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: gen_certs STATE_DIR N");
    let n: u32 = args
        .next()
        .expect("usage: gen_certs STATE_DIR N")
        .parse()
        .unwrap();
    let certs = Path::new(&dir).join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let ca_key = key();
    let ca = cert("edgeward bench CA", 1, &ca_key, None);
    let parent = Path::new(&dir).parent().unwrap_or(Path::new("."));
    std::fs::write(parent.join("ca.pem"), ca.to_pem().unwrap()).unwrap();
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get()) as u32;
    std::thread::scope(|s| {
        for t in 0..threads {
            let (ca, ca_key, certs) = (&ca, &ca_key, &certs);
            s.spawn(move || {
                for i in (t..n).step_by(threads as usize) {
                    let host = format!("host{i}.bench.test");
                    let k = key();
                    let c = cert(&host, 1000 + i, &k, Some((ca, ca_key)));
                    let record = serde_json::json!({
                        "host": host,
                        "chain_pem": String::from_utf8(c.to_pem().unwrap()).unwrap(),
                        "key_pem": String::from_utf8(k.private_key_to_pem_pkcs8().unwrap()).unwrap(),
                        "source": "manual",
                    });
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(0o600)
                        .open(certs.join(format!("{host}.json")))
                        .unwrap();
                    std::io::Write::write_all(&mut f, record.to_string().as_bytes()).unwrap();
                }
            });
        }
    });
    eprintln!("wrote {n} certificates to {}", certs.display());
}
