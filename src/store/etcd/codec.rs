//! How state is laid out in etcd: every domain, challenge, certificate and ACME record is a JSON value
//! under `PREFIX/KIND/NAME`; private keys and account credentials are sealed with AES-256-GCM when an
//! encryption key is configured. `decode` maps a key/value (or a delete event) back to a `Change`, for
//! start-up and for the watch. Keys under `PREFIX/locks/` (order locks, write markers) are
//! coordination only and decode to nothing, in this and in earlier versions.

use super::super::{Change, StoreError};
use crate::model::{CertRecord, Challenge, Domain};
use etcd_client::{PutOptions, TxnOp};

pub struct Codec {
    prefix: String,
    sealer: Option<Sealer>,
}

impl Codec {
    pub fn new(prefix: &str, key: Option<[u8; 32]>) -> Self {
        Codec {
            prefix: prefix.trim_end_matches('/').into(),
            sealer: key.map(Sealer),
        }
    }

    /// `PREFIX/`: everything stored, and what the watch follows.
    pub fn prefix(&self) -> String {
        format!("{}/", self.prefix)
    }

    pub fn key(&self, kind: &str, name: &str) -> String {
        format!("{}/{kind}/{name}", self.prefix)
    }

    /// The etcd operation for a change; challenges carry a lease so etcd drops them at expiry.
    pub fn op(&self, c: &Change, lease: Option<i64>) -> TxnOp {
        let json = |v: serde_json::Result<Vec<u8>>| v.expect("state objects always serialize");
        match c {
            Change::PutDomain(d) => TxnOp::put(
                self.key("domains", &d.host),
                json(serde_json::to_vec(d)),
                None,
            ),
            Change::DeleteDomain { host } => TxnOp::delete(self.key("domains", host), None),
            Change::PutChallenge(ch) => TxnOp::put(
                self.key("challenges", &ch.token),
                json(serde_json::to_vec(ch)),
                lease.map(|id| PutOptions::new().with_lease(id)),
            ),
            Change::DeleteChallenge { token } => TxnOp::delete(self.key("challenges", token), None),
            Change::PutCertificate(r) => {
                let mut r = r.clone();
                if let Some(s) = &self.sealer {
                    r.key_pem = s.seal(&r.key_pem);
                }
                TxnOp::put(
                    self.key("certs", &r.host),
                    json(serde_json::to_vec(&r)),
                    None,
                )
            }
            Change::DeleteCertificate { host } => TxnOp::delete(self.key("certs", host), None),
            Change::PutAcmeAccount(a) => {
                let mut a = a.clone();
                if let Some(s) = &self.sealer {
                    a.credentials = s.seal(&a.credentials);
                }
                TxnOp::put(
                    self.key("acme", "account"),
                    json(serde_json::to_vec(&a)),
                    None,
                )
            }
            Change::PutAcmeBudget(b) => TxnOp::put(
                self.key("acme", "budget"),
                json(serde_json::to_vec(b)),
                None,
            ),
        }
    }

    /// A stored key (and its value, `None` for a delete event) as the change it represents.
    pub fn decode(&self, key: &[u8], value: Option<&[u8]>) -> Result<Option<Change>, StoreError> {
        let key = String::from_utf8_lossy(key);
        let corrupt = |m: String| StoreError::Corrupt {
            path: format!("etcd key {key}").into(),
            message: m,
        };
        let Some(rest) = key
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix('/'))
        else {
            return Ok(None);
        };
        let Some((kind, name)) = rest.split_once('/') else {
            return Ok(None);
        };
        if kind == "locks" {
            return Ok(None); // coordination only, not state
        }
        let parse = |v: &[u8]| -> Result<Change, StoreError> {
            let change = match kind {
                "domains" => Change::PutDomain(
                    serde_json::from_slice::<Domain>(v).map_err(|e| corrupt(e.to_string()))?,
                ),
                "challenges" => Change::PutChallenge(
                    serde_json::from_slice::<Challenge>(v).map_err(|e| corrupt(e.to_string()))?,
                ),
                "certs" => Change::PutCertificate(
                    serde_json::from_slice::<CertRecord>(v).map_err(|e| corrupt(e.to_string()))?,
                ),
                "acme" if name == "account" => Change::PutAcmeAccount(
                    serde_json::from_slice(v).map_err(|e| corrupt(e.to_string()))?,
                ),
                "acme" if name == "budget" => Change::PutAcmeBudget(
                    serde_json::from_slice(v).map_err(|e| corrupt(e.to_string()))?,
                ),
                _ => return Err(corrupt("unknown key".into())),
            };
            Ok(change)
        };
        let change = match value {
            Some(v) => self.unseal(parse(v)?).map_err(corrupt)?,
            None => match kind {
                "domains" => Change::DeleteDomain { host: name.into() },
                "challenges" => Change::DeleteChallenge { token: name.into() },
                "certs" => Change::DeleteCertificate { host: name.into() },
                _ => return Ok(None),
            },
        };
        // The object must belong under its key.
        let matches = match &change {
            Change::PutDomain(d) => d.host == name,
            Change::PutChallenge(c) => c.token == name,
            Change::PutCertificate(r) => r.host == name,
            _ => true,
        };
        if !matches {
            return Err(corrupt("the object does not match its key".into()));
        }
        Ok(Some(change))
    }
}

impl Codec {
    /// Decrypt what `op` sealed; a sealed value without the key (or with another key) is an error.
    fn unseal(&self, c: Change) -> Result<Change, String> {
        let open = |v: String| -> Result<String, String> {
            match (v.strip_prefix(SEALED), &self.sealer) {
                (None, _) => Ok(v),
                (Some(_), None) => {
                    Err("encrypted, but no encryption_key_file is configured".into())
                }
                (Some(_), Some(s)) => s.open(&v),
            }
        };
        Ok(match c {
            Change::PutCertificate(mut r) => {
                r.key_pem = open(r.key_pem)?;
                Change::PutCertificate(r)
            }
            Change::PutAcmeAccount(mut a) => {
                a.credentials = open(a.credentials)?;
                Change::PutAcmeAccount(a)
            }
            other => other,
        })
    }
}

const SEALED: &str = "enc:v1:";

/// AES-256-GCM with a random 96-bit nonce per value: `enc:v1:` + hex(nonce | ciphertext | tag).
struct Sealer([u8; 32]);

impl Sealer {
    fn seal(&self, plain: &str) -> String {
        use openssl::symm::{encrypt_aead, Cipher};
        let mut nonce = [0u8; 12];
        openssl::rand::rand_bytes(&mut nonce).expect("randomness");
        let mut tag = [0u8; 16];
        let ct = encrypt_aead(
            Cipher::aes_256_gcm(),
            &self.0,
            Some(&nonce),
            b"edgeward",
            plain.as_bytes(),
            &mut tag,
        )
        .expect("AES-GCM encryption does not fail on valid input");
        let mut out = nonce.to_vec();
        out.extend(ct);
        out.extend(tag);
        format!("{SEALED}{}", hex::encode(out))
    }

    fn open(&self, sealed: &str) -> Result<String, String> {
        use openssl::symm::{decrypt_aead, Cipher};
        let raw =
            hex::decode(&sealed[SEALED.len()..]).map_err(|e| format!("encrypted value: {e}"))?;
        if raw.len() < 28 {
            return Err("encrypted value too short".into());
        }
        let (nonce, rest) = raw.split_at(12);
        let (ct, tag) = rest.split_at(rest.len() - 16);
        let plain = decrypt_aead(
            Cipher::aes_256_gcm(),
            &self.0,
            Some(nonce),
            b"edgeward",
            ct,
            tag,
        )
        .map_err(|_| {
            "cannot decrypt: wrong encryption key, or the value was altered".to_string()
        })?;
        String::from_utf8(plain).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealing_round_trips_and_detects_the_wrong_key() {
        let s = Sealer([7u8; 32]);
        let sealed = s.seal("-----BEGIN PRIVATE KEY-----\nabc\n");
        assert!(sealed.starts_with(SEALED) && !sealed.contains("PRIVATE"));
        assert_ne!(
            sealed,
            s.seal("-----BEGIN PRIVATE KEY-----\nabc\n"),
            "a fresh nonce each time"
        );
        assert_eq!(
            s.open(&sealed).unwrap(),
            "-----BEGIN PRIVATE KEY-----\nabc\n"
        );
        assert!(Sealer([8u8; 32]).open(&sealed).is_err());
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push('0');
        assert!(s.open(&tampered).is_err() || tampered == sealed);
    }
}
