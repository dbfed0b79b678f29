//! A certificate bundle parsed and validated once, when it is published: leaf, chain and key as OpenSSL
//! objects ready to attach to a handshake, plus what the API shows. Nothing here runs per handshake.

use crate::model::host::parse_host;
pub use crate::model::{CertRecord, CertSource};
use openssl::asn1::Asn1Time;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Private};
use openssl::x509::X509;

impl std::fmt::Debug for CertBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertBundle")
            .field("host", &self.host)
            .field("names", &self.names)
            .field("not_after", &self.not_after)
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

/// The parsed, ready-to-serve form (a clone shares the OpenSSL objects).
#[derive(Clone)]
pub struct CertBundle {
    pub host: String,
    pub leaf: X509,
    pub chain: Vec<X509>,
    pub key: PKey<Private>,
    /// DNS names of the leaf (SANs, else the CN), lowercase.
    pub names: Vec<String>,
    pub not_before: i64,
    pub not_after: i64,
    pub issuer: String,
    pub serial: String,
    pub source: CertSource,
    /// SHA-256 of the record it was parsed from: tells a repeated publication of the same record (the
    /// fleet watch echoing this node's own write) from a new certificate, without re-encoding.
    record_digest: [u8; 32],
}

impl CertBundle {
    /// Was this bundle parsed from exactly `record`?
    pub fn is_stored_as(&self, record: &CertRecord) -> bool {
        self.host == record.host && self.record_digest == digest(record)
    }
}

fn digest(r: &CertRecord) -> [u8; 32] {
    let mut h = openssl::sha::Sha256::new();
    for part in [r.chain_pem.as_bytes(), b"\0", r.key_pem.as_bytes()] {
        h.update(part);
    }
    h.update(match r.source {
        CertSource::Manual => b"m",
        CertSource::Acme => b"a",
    });
    h.finish()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("chain_pem: {0}")]
    Chain(String),
    #[error("key_pem: {0}")]
    Key(String),
    #[error("key_pem: the private key does not match the leaf certificate")]
    KeyMismatch,
    #[error("chain_pem: the leaf certificate expired at {0}")]
    Expired(String),
    #[error("chain_pem: the leaf certificate's names {names:?} do not cover `{host}`")]
    NotCovered { host: String, names: Vec<String> },
    #[error("host: {0}")]
    Host(String),
}

impl CertError {
    /// The API field the error is about.
    pub fn field(&self) -> &'static str {
        match self {
            CertError::Chain(_) | CertError::Expired(_) | CertError::NotCovered { .. } => {
                "chain_pem"
            }
            CertError::Key(_) | CertError::KeyMismatch => "key_pem",
            CertError::Host(_) => "host",
        }
    }
}

/// Parse and validate. `now` is unix seconds; `check_expiry` is off when restoring from the store (an
/// expired certificate on disk is still loaded and reported, rather than refused at start-up).
pub fn parse(record: &CertRecord, now: i64, check_expiry: bool) -> Result<CertBundle, CertError> {
    let host = parse_host(&record.host, true).map_err(|e| CertError::Host(e.to_string()))?;
    let mut bundle = parse_pem(host, &record.chain_pem, &record.key_pem, record.source)?;
    bundle.record_digest = digest(record);
    if check_expiry && bundle.not_after <= now {
        return Err(CertError::Expired(crate::tls::rfc3339(bundle.not_after)));
    }
    if !covers(&bundle.names, &bundle.host) {
        return Err(CertError::NotCovered {
            host: bundle.host,
            names: bundle.names,
        });
    }
    Ok(bundle)
}

/// Parse PEM text and check the key matches the leaf; no name or expiry checks.
pub fn parse_pem(
    host: String,
    chain_pem: &str,
    key_pem: &str,
    source: CertSource,
) -> Result<CertBundle, CertError> {
    let certs = parse_chain(chain_pem)?;
    let mut certs = certs.into_iter();
    let leaf = certs
        .next()
        .ok_or_else(|| CertError::Chain("no certificate in the PEM text".into()))?;
    let chain: Vec<X509> = certs.collect();
    let key = parse_key(key_pem)?;
    if !matches!(key.id(), Id::RSA | Id::EC) {
        return Err(CertError::Key(
            "only RSA and ECDSA keys are supported".into(),
        ));
    }
    let public = leaf
        .public_key()
        .map_err(|e| CertError::Chain(format!("leaf public key unreadable ({e})")))?;
    if !public.public_eq(&key) {
        return Err(CertError::KeyMismatch);
    }
    let not_before = asn1_unix(leaf.not_before());
    let not_after = asn1_unix(leaf.not_after());
    let names = names_of(&leaf);
    let issuer = leaf
        .issuer_name()
        .entries()
        .map(|e| {
            let k = e.object().nid().short_name().unwrap_or("?");
            let v = e.data().to_string().unwrap_or_default();
            format!("{k}={v}")
        })
        .collect::<Vec<_>>()
        .join(", ");
    let serial = leaf
        .serial_number()
        .to_bn()
        .and_then(|b| b.to_hex_str().map(|s| s.to_lowercase()))
        .unwrap_or_default();
    Ok(CertBundle {
        host,
        leaf,
        chain,
        key,
        names,
        not_before,
        not_after,
        issuer,
        serial,
        source,
        record_digest: [0; 32],
    })
}

/// PEM -> DER -> X509: OpenSSL 3's PEM reader goes through its generic decoder framework, which costs
/// more than the DER parse itself; decoding the base64 first is about 20% cheaper per certificate.
fn parse_chain(chain_pem: &str) -> Result<Vec<X509>, CertError> {
    let blocks = pem::parse_many(chain_pem)
        .map_err(|e| CertError::Chain(format!("not a PEM certificate chain ({e})")))?;
    blocks
        .iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| {
            X509::from_der(b.contents())
                .map_err(|e| CertError::Chain(format!("not a valid PEM certificate ({e})")))
        })
        .collect()
}

/// A private key from PEM. Stored keys are PKCS#8 (`storable_key`): those go to the one decoder for
/// their type (`ossl::private_key_from_pkcs8`, 1.5x cheaper); anything else, and any key that fast path
/// refuses, through OpenSSL's general PEM reader. (The legacy SEC1 `EcKey` path parses faster still,
/// but OpenSSL 3 converts a legacy key at its first handshake and keeps both: +2 KB per certificate.)
fn parse_key(key_pem: &str) -> Result<PKey<Private>, CertError> {
    if let Ok(block) = pem::parse(key_pem) {
        if block.tag() == "PRIVATE KEY" {
            if let Some(key) = super::ossl::private_key_from_pkcs8(block.contents()) {
                return Ok(key);
            }
        }
    }
    PKey::private_key_from_pem(key_pem.as_bytes())
        .map_err(|e| CertError::Key(format!("not a PEM private key ({e})")))
}

/// The form a key is stored in (PKCS#8 PEM).
pub fn storable_key(key: &PKey<Private>) -> Option<String> {
    String::from_utf8(key.private_key_to_pem_pkcs8().ok()?).ok()
}

fn asn1_unix(t: &openssl::asn1::Asn1TimeRef) -> i64 {
    let epoch = Asn1Time::from_unix(0).expect("the epoch is a valid time");
    epoch
        .diff(t)
        .map(|d| d.days as i64 * 86_400 + d.secs as i64)
        .unwrap_or(0)
}

/// DNS SANs, or the CN when there are none; lowercase.
fn names_of(leaf: &X509) -> Vec<String> {
    let mut names: Vec<String> = leaf
        .subject_alt_names()
        .map(|sans| {
            sans.iter()
                .filter_map(|n| {
                    n.dnsname()
                        .map(|s| s.trim_end_matches('.').to_ascii_lowercase())
                })
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        names = leaf
            .subject_name()
            .entries_by_nid(Nid::COMMONNAME)
            .filter_map(|e| e.data().to_string().ok().map(|s| s.to_ascii_lowercase()))
            .collect();
    }
    names.sort();
    names.dedup();
    names
}

/// Does a certificate with `names` serve `host`? An exact name, or a `*.parent` name for a host one
/// level under `parent`. A wildcard host needs the same wildcard name.
/// Does a certificate with `names` cover the SNI name `sni` (never a wildcard itself)? No allocation:
/// the TLS callback calls it.
pub fn covers_name(names: &[String], sni: &str) -> bool {
    let parent = crate::model::host::wildcard_parent(sni);
    names
        .iter()
        .any(|n| n == sni || (parent.is_some() && n.strip_prefix("*.") == parent))
}

pub fn covers(names: &[String], host: &str) -> bool {
    names.iter().any(|n| {
        n == host
            || (n.starts_with("*.")
                && !host.starts_with("*.")
                && crate::model::host::wildcard_parent(host) == Some(&n[2..]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_rules() {
        let names = vec!["*.a.com".to_string(), "b.com".to_string()];
        assert!(covers(&names, "x.a.com"));
        assert!(covers(&names, "*.a.com"));
        assert!(covers(&names, "b.com"));
        assert!(!covers(&names, "a.com"));
        assert!(!covers(&names, "y.x.a.com"));
        assert!(covers_name(&names, "x.a.com") && covers_name(&names, "b.com"));
        assert!(!covers_name(&names, "a.com") && !covers_name(&names, "y.x.a.com"));
        assert!(!covers_name(&names, "c.com"));
        assert!(!covers(&names, "*.b.com"));
    }
}
