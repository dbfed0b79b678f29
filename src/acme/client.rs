//! The only code that talks to the CA (over `ca_http`'s transport): the directory's profiles, the
//! account (loaded from its stored credentials or created once), ARI windows, and `issue`, which runs
//! one order end to end with the HTTP-01, TLS-ALPN-01 or DNS-01 challenge the domain chose.

pub use super::ca_http::{parse_retry_after, scoped, CaAsked, CaHttp, MAX_RETRY_AFTER};
use super::AcmeConfig;
use crate::model::AcmeChallenge;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, CertificateIdentifier,
    ChallengeType, HttpClient, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::stack::Stack;
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509NameBuilder, X509ReqBuilder};
use rustls_pki_types::Der;
use std::time::Duration;

/// The profiles the directory lists (`meta.profiles`, draft-aaron-acme-profiles), sorted; empty when it
/// lists none.
pub async fn directory_profiles(http: &CaHttp, directory: &str) -> Result<Vec<String>, String> {
    let req = http::Request::get(directory)
        .body(BodyWrapper::from(Vec::new()))
        .map_err(|e| format!("{directory}: {e}"))?;
    let mut rsp = HttpClient::request(http, req)
        .await
        .map_err(|e| format!("{directory}: {e}"))?;
    if !rsp.parts.status.is_success() {
        return Err(format!("{directory} answered {}", rsp.parts.status));
    }
    let body = rsp
        .body
        .into_bytes()
        .await
        .map_err(|e| format!("{directory}: {e}"))?;
    let dir: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("{directory}: not a directory: {e}"))?;
    let mut names: Vec<String> = dir["meta"]["profiles"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    names.sort();
    Ok(names)
}

/// Why `profile` cannot be asked for at a directory offering `offered`, or `None` when it can.
pub fn profile_refusal(profile: &str, directory: &str, offered: &[String]) -> Option<String> {
    if offered.iter().any(|p| p == profile) {
        return None;
    }
    Some(if offered.is_empty() {
        format!("`{profile}`: the ACME directory {directory} offers no profiles")
    } else {
        format!(
            "`{profile}` is not offered by the ACME directory {directory} (it offers {})",
            offered.join(", ")
        )
    })
}

/// Load the account from stored credentials, or create it. Returns the account and, when created,
/// the credentials JSON to store.
pub async fn account(
    cfg: &AcmeConfig,
    http: &CaHttp,
    stored: Option<&str>,
) -> Result<(Account, Option<String>), instant_acme::Error> {
    if let Some(json) = stored {
        let creds: AccountCredentials = serde_json::from_str(json)?;
        let account = Account::builder_with_http(Box::new(http.clone()))
            .from_credentials(creds)
            .await?;
        return Ok((account, None));
    }
    let contact: Vec<&str> = cfg.contact.iter().map(String::as_str).collect();
    let (account, creds) = Account::builder_with_http(Box::new(http.clone()))
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            cfg.directory.clone(),
            None,
        )
        .await?;
    Ok((account, Some(serde_json::to_string(&creds)?)))
}

/// What a challenge needs published before the CA is told to validate it.
#[derive(Debug, Clone, Copy)]
pub enum Proof<'a> {
    /// HTTP-01: answer `key_authorization` at `/.well-known/acme-challenge/{token}` for `host`;
    /// TLS-ALPN-01: serve `host` a challenge certificate built from it on `acme-tls/1`.
    Token {
        kind: AcmeChallenge,
        token: &'a str,
        host: &'a str,
        key_authorization: &'a str,
    },
    /// DNS-01: put `value` in the TXT record `_acme-challenge.<domain>` (`*.` dropped).
    Txt { domain: &'a str, value: &'a str },
}

/// What an order needs from the rest of edgeward: publish a challenge (and remember it, to remove it
/// when the order ends, however it ends), and say whether the domain still wants the certificate
/// (deleted or switched off `auto`: abandon).
#[async_trait::async_trait]
pub trait Responder: Send + Sync {
    async fn present(&self, proof: Proof<'_>) -> Result<(), String>;
    fn still_wanted(&self, host: &str) -> bool;
}

/// Why an order ended without a certificate.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("{0}")]
    Acme(#[from] instant_acme::Error),
    #[error("challenge for {host} failed: {detail}")]
    Invalid {
        host: String,
        detail: String,
        kind: String,
    },
    #[error("order abandoned: the domain no longer wants an ACME certificate")]
    Abandoned,
    #[error("{0}")]
    Local(String),
    #[error("the order did not finish within {0} s (the CA stopped answering)")]
    TimedOut(u64),
}

impl OrderError {
    /// A short label for metrics: the ACME problem type without its URN prefix, or the failure kind.
    pub fn kind(&self) -> String {
        match self {
            OrderError::Acme(instant_acme::Error::Api(p)) => p
                .r#type
                .as_deref()
                .map(|t| t.rsplit(':').next().unwrap_or(t).to_string())
                .unwrap_or_else(|| "problem".into()),
            OrderError::Acme(instant_acme::Error::Timeout(_)) => "timeout".into(),
            OrderError::Acme(_) => "connection".into(),
            OrderError::Invalid { kind, .. } => kind.clone(),
            OrderError::Abandoned => "abandoned".into(),
            OrderError::Local(_) => "local".into(),
            OrderError::TimedOut(_) => "timeout".into(),
        }
    }
}

/// A new certificate: PEM chain and PEM key.
pub struct Issued {
    pub chain_pem: String,
    pub key_pem: String,
}

/// The ARI identifier of a certificate (RFC 9773 section 4.1): its AKI keyIdentifier and the DER
/// content octets of its serial number.
pub fn cert_id(leaf: &openssl::x509::X509Ref) -> Option<CertificateIdentifier<'static>> {
    let aki = leaf.authority_key_id()?.as_slice().to_vec();
    let mut serial = leaf.serial_number().to_bn().ok()?.to_vec();
    if serial.first().is_some_and(|b| b & 0x80 != 0) {
        serial.insert(0, 0); // positive INTEGER: a leading zero octet when the high bit is set
    }
    Some(
        CertificateIdentifier::new(Der::from(aki.as_slice()), Der::from(serial.as_slice()))
            .into_owned(),
    )
}

/// The CA's suggested renewal window for a certificate (unix seconds) and when to ask again, or
/// `Ok(None)` when the directory offers no ARI.
pub async fn renewal_window(
    account: &Account,
    id: &CertificateIdentifier<'_>,
) -> Result<Option<(i64, i64, Duration)>, instant_acme::Error> {
    match account.renewal_info(id).await {
        Ok((info, again)) => Ok(Some((
            info.suggested_window.start.unix_timestamp(),
            info.suggested_window.end.unix_timestamp(),
            again,
        ))),
        Err(instant_acme::Error::Unsupported(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

fn challenge_type(kind: AcmeChallenge) -> ChallengeType {
    match kind {
        AcmeChallenge::Http01 => ChallengeType::Http01,
        AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        AcmeChallenge::Dns01 => ChallengeType::Dns01,
    }
}

/// Run one order for `host` with the challenge `kind`, published through `responder`; `replaces`
/// names the certificate being renewed when the CA offers ARI. The caller removes what the responder
/// published once this returns (or is dropped on a timeout).
pub async fn issue(
    account: &Account,
    cfg: &AcmeConfig,
    http: &CaHttp,
    host: &str,
    kind: AcmeChallenge,
    replaces: Option<CertificateIdentifier<'static>>,
    responder: &dyn Responder,
) -> Result<Issued, OrderError> {
    let ids = [Identifier::Dns(host.to_string())];
    let plain = || match cfg.profile.as_deref() {
        Some(p) => NewOrder::new(&ids).profile(p),
        None => NewOrder::new(&ids),
    };
    let sent_replaces = replaces.is_some() && http.sends_replaces();
    let new_order = match replaces.filter(|_| sent_replaces) {
        Some(id) => plain().replaces(id),
        None => plain(),
    };
    let mut order = match account.new_order(&new_order).await {
        // The CA took the order but dropped `replaces` (acme2certifier 0.46 does): instant-acme
        // refuses such an order, so order again without it, and stop sending it to this CA.
        Err(instant_acme::Error::Other(e))
            if sent_replaces && e.to_string().starts_with("replaces field mismatch") =>
        {
            log::warn!(
                "the CA does not reflect `replaces` in its orders (RFC 9773 section 5); renewals \
                 no longer send it"
            );
            http.note_replaces_ignored();
            account.new_order(&plain()).await?
        }
        r => r?,
    };
    let mut authzs = order.authorizations();
    while let Some(authz) = authzs.next().await {
        let mut authz = authz?;
        if authz.status != AuthorizationStatus::Pending {
            continue;
        }
        let mut ch = authz.challenge(challenge_type(kind)).ok_or_else(|| {
            OrderError::Local(format!("the CA offered no {} challenge", kind.as_str()))
        })?;
        let token = ch.token.clone();
        let ka = ch.key_authorization();
        let dns_value = ka.dns_value();
        let proof = match kind {
            AcmeChallenge::Dns01 => Proof::Txt {
                domain: host,
                value: &dns_value,
            },
            _ => Proof::Token {
                kind,
                token: &token,
                host,
                key_authorization: ka.as_str(),
            },
        };
        responder.present(proof).await.map_err(OrderError::Local)?;
        if !responder.still_wanted(host) {
            return Err(OrderError::Abandoned);
        }
        ch.set_ready().await?;
    }
    let retry = RetryPolicy::new().timeout(Duration::from_secs(cfg.order_timeout_seconds));
    let status = order.poll_ready(&retry).await?;
    if status != OrderStatus::Ready {
        return Err(invalid_reason(&mut order, host, kind).await);
    }
    if !responder.still_wanted(host) {
        return Err(OrderError::Abandoned);
    }
    let (key, csr) = csr(host, cfg.key_type).map_err(|e| OrderError::Local(e.to_string()))?;
    order.finalize_csr(&csr).await?;
    let chain_pem = order.poll_certificate(&retry).await?;
    let key_pem = crate::tls::bundle::storable_key(&key)
        .ok_or_else(|| OrderError::Local("cannot encode the new private key".into()))?;
    Ok(Issued { chain_pem, key_pem })
}

/// The error of the first invalid authorization's challenge, for `last_error`.
async fn invalid_reason(
    order: &mut instant_acme::Order,
    host: &str,
    kind: AcmeChallenge,
) -> OrderError {
    let mut authzs = order.authorizations();
    while let Some(Ok(mut a)) = authzs.next().await {
        if a.status == AuthorizationStatus::Invalid {
            if let Some(ch) = a.challenge(challenge_type(kind)) {
                if let Some(p) = ch.error.as_ref() {
                    let kind = p
                        .r#type
                        .as_deref()
                        .map(|t| t.rsplit(':').next().unwrap_or(t).to_string())
                        .unwrap_or_else(|| "invalid".into());
                    return OrderError::Invalid {
                        host: host.into(),
                        detail: format!(
                            "{}: {}",
                            p.r#type.as_deref().unwrap_or("problem"),
                            p.detail.as_deref().unwrap_or("")
                        ),
                        kind,
                    };
                }
            }
        }
    }
    OrderError::Invalid {
        host: host.into(),
        detail: "the order became invalid".into(),
        kind: "invalid".into(),
    }
}

/// A new private key of `key_type` and a CSR (DER) for `host`.
pub fn csr(
    host: &str,
    key_type: super::KeyType,
) -> Result<(PKey<Private>, Vec<u8>), openssl::error::ErrorStack> {
    let key = match key_type {
        super::KeyType::EcdsaP256 => PKey::from_ec_key(EcKey::generate(
            EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?.as_ref(),
        )?)?,
        super::KeyType::Rsa2048 => PKey::from_rsa(Rsa::generate(2048)?)?,
    };
    let mut req = X509ReqBuilder::new()?;
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_nid(Nid::COMMONNAME, host)?;
    req.set_subject_name(&name.build())?;
    req.set_pubkey(&key)?;
    let mut exts = Stack::new()?;
    exts.push(
        SubjectAlternativeName::new()
            .dns(host)
            .build(&req.x509v3_context(None))?,
    )?;
    req.add_extensions(&exts)?;
    req.sign(&key, MessageDigest::sha256())?;
    Ok((key, req.build().to_der()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_not_offered_are_refused_with_what_is() {
        let offered = vec!["classic".to_string(), "shortlived".to_string()];
        assert_eq!(
            profile_refusal("shortlived", "https://ca/dir", &offered),
            None
        );
        let e = profile_refusal("tlsserver", "https://ca/dir", &offered).unwrap();
        assert!(e.contains("classic, shortlived"), "{e}");
        let e = profile_refusal("tlsserver", "https://ca/dir", &[]).unwrap();
        assert!(e.contains("offers no profiles"), "{e}");
    }

    #[test]
    fn ari_identifier_matches_rfc_9773_example() {
        // RFC 9773 section 4.1: keyIdentifier 69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:AE:2C:DE:01:C8:D4,
        // serial 00:87:65:43:21 -> "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE".
        let id = CertificateIdentifier::new(
            Der::from(
                &[
                    0x69, 0x88, 0x5B, 0x6B, 0x87, 0x46, 0x40, 0x41, 0xE1, 0xB3, 0x7B, 0x84, 0x7B,
                    0xA0, 0xAE, 0x2C, 0xDE, 0x01, 0xC8, 0xD4,
                ][..],
            ),
            Der::from(&[0x00, 0x87, 0x65, 0x43, 0x21][..]),
        );
        assert_eq!(id.to_string(), "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE");
    }

    #[test]
    fn csr_names_the_host_for_both_key_types() {
        for kt in [
            super::super::KeyType::EcdsaP256,
            super::super::KeyType::Rsa2048,
        ] {
            let (_key, der) = csr("shop.test", kt).unwrap();
            let req = openssl::x509::X509Req::from_der(&der).unwrap();
            let cn = req
                .subject_name()
                .entries()
                .next()
                .unwrap()
                .data()
                .to_string()
                .unwrap();
            assert_eq!(cn, "shop.test");
        }
    }
}
