//! The stored form of a certificate: PEM text and where it came from. Parsing and validation live in
//! `tls::bundle`; this is only the record the store and the API exchange.

use serde::{Deserialize, Serialize};

/// Who put the certificate there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertSource {
    Manual,
    Acme,
}

/// The stored form: PEM text and where it came from (kept 0600 on disk: it holds the key).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertRecord {
    pub host: String,
    pub chain_pem: String,
    pub key_pem: String,
    pub source: CertSource,
}

impl std::fmt::Debug for CertRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertRecord")
            .field("host", &self.host)
            .field("source", &self.source)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}
