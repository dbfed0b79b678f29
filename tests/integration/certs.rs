//! Test PKI made with OpenSSL: a root, an intermediate, and leaves with chosen names, key types and
//! validity; plus a real TLS client (OpenSSL) that speaks HTTP/1.1 over a kept-alive connection.

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::ssl::{SslConnector, SslMethod, SslStream, SslVerifyMode};
use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
use openssl::x509::{X509Builder, X509NameBuilder, X509};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU32, Ordering};

static SERIAL: AtomicU32 = AtomicU32::new(1000);

#[derive(Clone, Copy)]
pub enum Key {
    Ecdsa,
    Rsa,
}

pub struct Pki {
    pub root: X509,
    inter: X509,
    inter_key: PKey<Private>,
}

/// A leaf as uploaded: PEM chain (leaf + intermediate), PEM key, and the serial in lowercase hex.
pub struct Leaf {
    pub chain_pem: String,
    pub key_pem: String,
    pub serial: String,
}

impl Leaf {
    pub fn upload_body(&self) -> String {
        serde_json::json!({"chain_pem": self.chain_pem, "key_pem": self.key_pem}).to_string()
    }
}

fn new_key(k: Key) -> PKey<Private> {
    match k {
        Key::Ecdsa => {
            let g = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
            PKey::from_ec_key(EcKey::generate(&g).unwrap()).unwrap()
        }
        Key::Rsa => PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap(),
    }
}

fn build(
    cn: &str,
    names: &[&str],
    key: &PKey<Private>,
    issuer: Option<(&X509, &PKey<Private>)>,
    ca: bool,
    days: (i64, i64),
) -> (X509, String) {
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
    let bn = BigNum::from_u32(serial).unwrap();
    b.set_serial_number(&Asn1Integer::from_bn(&bn).unwrap())
        .unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
    let name = name.build();
    b.set_subject_name(&name).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    b.set_not_before(&Asn1Time::from_unix(now + days.0 * 86400).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_unix(now + days.1 * 86400).unwrap())
        .unwrap();
    b.set_pubkey(key).unwrap();
    if ca {
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
    }
    if !names.is_empty() {
        let mut san = SubjectAlternativeName::new();
        for n in names {
            san.dns(n);
        }
        let ext = san
            .build(&b.x509v3_context(issuer.map(|i| i.0.as_ref()), None))
            .unwrap();
        b.append_extension(ext).unwrap();
    }
    match issuer {
        Some((cert, ikey)) => {
            b.set_issuer_name(cert.subject_name()).unwrap();
            b.sign(ikey, MessageDigest::sha256()).unwrap();
        }
        None => {
            b.set_issuer_name(&name).unwrap();
            b.sign(key, MessageDigest::sha256()).unwrap();
        }
    }
    let cert = b.build();
    let hex = cert
        .serial_number()
        .to_bn()
        .unwrap()
        .to_hex_str()
        .unwrap()
        .to_lowercase();
    (cert, hex)
}

impl Pki {
    pub fn new() -> Pki {
        let root_key = new_key(Key::Ecdsa);
        let (root, _) = build("edgeward test root", &[], &root_key, None, true, (-1, 3650));
        let inter_key = new_key(Key::Ecdsa);
        let (inter, _) = build(
            "edgeward test intermediate",
            &[],
            &inter_key,
            Some((&root, &root_key)),
            true,
            (-1, 3650),
        );
        Pki {
            root,
            inter,
            inter_key,
        }
    }

    pub fn root_pem(&self) -> Vec<u8> {
        self.root.to_pem().unwrap()
    }

    pub fn leaf(&self, names: &[&str], key: Key) -> Leaf {
        self.leaf_valid(names, key, (-1, 90))
    }

    /// A leaf valid from `days.0` to `days.1` days from now.
    pub fn leaf_valid(&self, names: &[&str], key: Key, days: (i64, i64)) -> Leaf {
        let k = new_key(key);
        let (cert, serial) = build(
            names[0],
            names,
            &k,
            Some((&self.inter, &self.inter_key)),
            false,
            days,
        );
        let mut chain = cert.to_pem().unwrap();
        chain.extend(self.inter.to_pem().unwrap());
        Leaf {
            chain_pem: String::from_utf8(chain).unwrap(),
            key_pem: String::from_utf8(k.private_key_to_pem_pkcs8().unwrap()).unwrap(),
            serial,
        }
    }
}

/// A TLS connection verified against the test root, with `sni` (None: no SNI, no name check).
pub fn connect(port: u16, sni: Option<&str>, root: &X509) -> Result<SslStream<TcpStream>, String> {
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.cert_store_mut().add_cert(root.clone()).unwrap();
    b.set_verify(SslVerifyMode::PEER);
    b.set_alpn_protos(b"\x08http/1.1").unwrap();
    let connector = b.build();
    let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    let mut cfg = connector.configure().unwrap();
    let name = match sni {
        Some(n) => n,
        None => {
            cfg = cfg.use_server_name_indication(false).verify_hostname(false);
            "unused"
        }
    };
    cfg.connect(name, tcp).map_err(|e| e.to_string())
}

/// The serial of the certificate the server presented, lowercase hex.
pub fn peer_serial(s: &SslStream<TcpStream>) -> String {
    let cert = s.ssl().peer_certificate().unwrap();
    let bn = cert.serial_number().to_bn().unwrap();
    bn.to_hex_str().unwrap().to_lowercase()
}

/// One HTTP/1.1 request on an open connection (kept alive): (status, body).
pub fn get<S: Read + Write>(s: &mut S, host: &str, path: &str) -> (u16, String) {
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).unwrap();
        assert!(n > 0, "connection closed before the response head");
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .expect("content-length");
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    (status, String::from_utf8(body).unwrap())
}
