//! Request bodies of the admin API turned into validated store changes. Errors name the field, with its
//! position in a batch (`ops[3].upstreams[0]`).

use crate::model::host::parse_host;
use crate::model::{
    unix_now, CertRecord, CertSource, ChallengeInput, Change, DomainInput, DomainPolicy, FieldError,
};
use crate::tls;
use serde::de::DeserializeOwned;
use serde::Deserialize;

pub const MAX_BATCH_OPS: usize = 100_000;

/// What validation needs from the running configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub policy: DomainPolicy,
    pub challenge_ttl: u64,
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum OpInput {
    PutDomain(DomainInput),
    DeleteDomain(HostOnly),
    PutChallenge(ChallengeInput),
    DeleteChallenge(TokenOnly),
    PutCertificate(CertOp),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CertOp {
    host: String,
    chain_pem: String,
    key_pem: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HostOnly {
    host: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenOnly {
    token: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchInput {
    ops: Vec<serde_json::Value>,
}

/// Parse JSON with an error that names the path of the bad field.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, FieldError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let msg = e.into_inner().to_string();
        field_error_at(&path, msg)
    })
}

/// serde reports a missing field at the parent's path; name the field itself.
fn field_error_at(path: &str, msg: String) -> FieldError {
    let parent = if path == "." || path == "?" { "" } else { path };
    let missing = msg
        .strip_prefix("missing field `")
        .and_then(|r| r.split('`').next())
        .map(str::to_string);
    match (parent, missing) {
        ("", Some(f)) => FieldError::new(f, msg),
        (p, Some(f)) => FieldError::new(format!("{p}.{f}"), msg),
        ("", None) => FieldError::new("body", msg),
        (p, None) => FieldError::new(p, msg),
    }
}

pub fn put_domain(host: &str, body: &[u8], l: Limits) -> Result<Change, FieldError> {
    let input: DomainInput = parse_json(body)?;
    Ok(Change::PutDomain(input.validate(Some(host), l.policy)?))
}

pub fn put_challenge(token: &str, body: &[u8], l: Limits) -> Result<Change, FieldError> {
    let input: ChallengeInput = parse_json(body)?;
    Ok(Change::PutChallenge(input.validate(
        Some(token),
        l.challenge_ttl,
        unix_now(),
    )?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CertInput {
    chain_pem: String,
    key_pem: String,
}

/// A manual certificate upload: parsed and fully validated here, before anything is stored.
pub fn put_certificate(host: &str, body: &[u8]) -> Result<Change, FieldError> {
    let input: CertInput = parse_json(body)?;
    certificate(host, input.chain_pem, input.key_pem)
}

/// A manual certificate for `host`, parsed and checked as an upload is.
fn certificate(host: &str, chain_pem: String, key_pem: String) -> Result<Change, FieldError> {
    let host = domain_host(host)?;
    let record = CertRecord {
        host,
        chain_pem,
        key_pem,
        source: CertSource::Manual,
    };
    let bundle = tls::bundle::parse(&record, unix_now() as i64, true)
        .map_err(|e| FieldError::new(e.field(), e.to_string()))?;
    // Stored in the form that loads fastest at start-up (same key).
    let key_pem = tls::bundle::storable_key(&bundle.key).unwrap_or(record.key_pem.clone());
    Ok(Change::PutCertificate(CertRecord { key_pem, ..record }))
}

pub fn domain_host(host: &str) -> Result<String, FieldError> {
    parse_host(host, true).map_err(|e| FieldError::new("host", e.to_string()))
}

/// A batch, all or nothing: refused when it holds more than the store writes atomically (`atomic`:
/// one etcd transaction) rather than written in parts.
pub fn batch(body: &[u8], l: Limits, atomic: usize) -> Result<Vec<Change>, FieldError> {
    let b: BatchInput = parse_json(body)?;
    if b.ops.is_empty() {
        return Err(FieldError::new("ops", "is empty"));
    }
    if b.ops.len() > MAX_BATCH_OPS {
        return Err(FieldError::new(
            "ops",
            format!("at most {MAX_BATCH_OPS} operations per batch"),
        ));
    }
    if b.ops.len() > atomic {
        return Err(FieldError::new(
            "ops",
            format!(
                "{} operations, but the state store applies at most {atomic} atomically (one etcd \
                 transaction): split the batch",
                b.ops.len()
            ),
        ));
    }
    let now = unix_now();
    b.ops
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let at = format!("ops[{i}]");
            let op: OpInput = serde_path_to_error::deserialize(v).map_err(|e| {
                let path = e.path().to_string();
                let fe = field_error_at(&path, e.into_inner().to_string());
                if fe.field == "body" {
                    FieldError::new(at.clone(), fe.message)
                } else {
                    fe.within(&at)
                }
            })?;
            let change = match op {
                OpInput::PutDomain(d) => d.validate(None, l.policy).map(Change::PutDomain),
                OpInput::DeleteDomain(h) => {
                    domain_host(&h.host).map(|host| Change::DeleteDomain { host })
                }
                OpInput::PutChallenge(c) => c
                    .validate(None, l.challenge_ttl, now)
                    .map(Change::PutChallenge),
                OpInput::DeleteChallenge(t) => Ok(Change::DeleteChallenge { token: t.token }),
                OpInput::PutCertificate(c) => certificate(&c.host, c.chain_pem, c.key_pem),
            };
            change.map_err(|e| e.within(&at))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits {
        policy: DomainPolicy {
            acme_enabled: false,
            dns01: false,
            tls_alpn01: false,
        },
        challenge_ttl: 3600,
    };

    #[test]
    fn batch_errors_carry_the_op_index() {
        let e = batch(br#"{"ops": [{"op": "put_domain", "host": "a.com", "upstreams": ["127.0.0.1:1"]}, {"op": "put_domain", "host": "b.com", "upstreams": [1]}]}"#, L, usize::MAX).unwrap_err();
        assert!(e.field.starts_with("ops[1]"), "{e}");
        let e = batch(br#"{"ops": [{"op": "nuke"}]}"#, L, usize::MAX).unwrap_err();
        assert_eq!(e.field, "ops[0].op", "{e}");
        let e = batch(
            br#"{"ops": [{"op": "delete_domain", "host": "a.com", "x": 1}]}"#,
            L,
            usize::MAX,
        )
        .unwrap_err();
        assert!(e.field.starts_with("ops[0]"), "{e}");
        let e = batch(br#"{"operations": []}"#, L, usize::MAX).unwrap_err();
        assert!(e.message.contains("operations"), "{e}");
        let e = batch(br#"{"ops": []}"#, L, usize::MAX).unwrap_err();
        assert_eq!(e.field, "ops");
        let two = br#"{"ops": [{"op": "delete_challenge", "token": "t"}, {"op": "put_challenge", "token": "t", "host": "a.com", "key_authorization": "t.x"}]}"#;
        assert_eq!(batch(two, L, usize::MAX).unwrap().len(), 2);
        // More than the store writes atomically: refused whole, naming `ops` and the limit.
        let e = batch(two, L, 1).unwrap_err();
        assert_eq!(e.field, "ops");
        assert!(e.message.contains("at most 1"), "{e}");
    }

    #[test]
    fn json_errors_name_the_field() {
        let e = put_domain("a.com", br#"{"upstreams": "127.0.0.1:1"}"#, L).unwrap_err();
        assert_eq!(e.field, "upstreams");
        let e = put_domain(
            "a.com",
            br#"{"upstreams": ["127.0.0.1:1"], "redirect_https": "yes"}"#,
            L,
        )
        .unwrap_err();
        assert_eq!(e.field, "redirect_https");
        let e = put_domain("a.com", b"{not json", L).unwrap_err();
        assert_eq!(e.field, "body");
    }
}
