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

/// Which stored certificate serves a domain's names. A certificate is only ever served for names that
/// route to a domain pointing at it, and only for the names among those it covers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CertRef {
    /// The certificate stored under the domain's own host (JSON `null`).
    #[default]
    Own,
    /// The certificate stored under another host: one multi-SAN certificate for several of a
    /// customer's domains, stored once (JSON: that host).
    Shared(String),
    /// A record stored before domains named their certificate (the field is absent). Resolved once
    /// at load by the rules of the time (`control::restore`), then written back as `Own` or `Shared`.
    Legacy,
}

impl CertRef {
    /// The host the certificate is stored under, for a domain on `host`.
    pub fn host<'a>(&'a self, host: &'a str) -> &'a str {
        match self {
            CertRef::Shared(h) => h,
            CertRef::Own | CertRef::Legacy => host,
        }
    }

    /// The serde default for an absent field.
    pub fn legacy() -> CertRef {
        CertRef::Legacy
    }
}

impl Serialize for CertRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            CertRef::Shared(h) => s.serialize_some(h),
            CertRef::Own | CertRef::Legacy => s.serialize_none(),
        }
    }
}

impl<'de> Deserialize<'de> for CertRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Option::<String>::deserialize(d)? {
            Some(h) => CertRef::Shared(h),
            None => CertRef::Own,
        })
    }
}
