//! TLS termination: certificates are parsed and validated when published (`bundle`), kept by SNI name
//! (`certs`, one of the tables in `state`), and attached in Pingora's certificate callback (`accept`)
//! with lookups and refcount bumps only.

pub mod accept;
pub mod bundle;
pub mod certs;
pub mod ossl;

pub use bundle::{CertBundle, CertError, CertRecord, CertSource};
pub use certs::{CertReader, CertStore};

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
