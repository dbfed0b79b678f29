//! TLS termination: certificates are parsed and validated when published (`bundle`), kept by SNI name
//! (`certs`, one of the tables in `state`), and attached in Pingora's certificate callback (`accept`)
//! with lookups and refcount bumps only.

pub mod accept;
pub mod alpn;
pub mod bundle;
pub mod certs;
pub mod ossl;

pub use bundle::{CertBundle, CertError, CertRecord, CertSource};
pub use certs::CertStore;

/// Unix seconds as RFC 3339 (UTC).
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// What `GET /v1/certificates/{host}` shows: never the key.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CertInfo {
    pub host: String,
    pub names: Vec<String>,
    pub not_before: String,
    pub not_after: String,
    pub issuer: String,
    pub serial: String,
    pub source: CertSource,
}

impl From<&CertBundle> for CertInfo {
    fn from(b: &CertBundle) -> Self {
        CertInfo {
            host: b.host.clone(),
            names: b.names.clone(),
            not_before: rfc3339(b.not_before),
            not_after: rfc3339(b.not_after),
            issuer: b.issuer.clone(),
            serial: b.serial.clone(),
            source: b.source,
        }
    }
}

/// A self-signed certificate for unit tests: (chain PEM, key PEM), valid for a day.
#[cfg(test)]
pub(crate) mod test_cert {
    use openssl::asn1::Asn1Time;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::x509::extension::SubjectAlternativeName;
    use openssl::x509::{X509NameBuilder, X509};

    pub fn self_signed(name: &str) -> (String, String) {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let mut subject = X509NameBuilder::new().unwrap();
        subject.append_entry_by_nid(Nid::COMMONNAME, name).unwrap();
        let subject = subject.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&subject).unwrap();
        b.set_issuer_name(&subject).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        let san = SubjectAlternativeName::new()
            .dns(name)
            .build(&b.x509v3_context(None, None))
            .unwrap();
        b.append_extension(san).unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        let chain = String::from_utf8(b.build().to_pem().unwrap()).unwrap();
        let key = String::from_utf8(key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        (chain, key)
    }
}
