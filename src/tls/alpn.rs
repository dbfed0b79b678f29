//! TLS-ALPN-01 (RFC 8737): a handshake that offers exactly the `acme-tls/1` protocol for a name with a
//! pending challenge gets that challenge's self-signed certificate and no application data. The
//! certificate is built when the challenge is registered (`challenge_cert`, from `state`), never in a
//! callback; the callbacks here only look at the ClientHello and set a flag.

use openssl::asn1::{Asn1Object, Asn1OctetString, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::{hash, MessageDigest};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{ClientHelloResponse, Ssl, SslAlert, SslRef};
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509Extension, X509NameBuilder, X509};
use std::sync::OnceLock;

/// The protocol name, as it appears on the wire in an ALPN list of one.
pub const ACME_TLS_1: &[u8] = b"acme-tls/1";
/// id-pe-acmeIdentifier.
const ACME_IDENTIFIER_OID: &str = "1.3.6.1.5.5.7.1.31";
/// The ALPN extension's type number.
const ALPN_EXTENSION: u32 = 16;

/// A challenge certificate and its key, ready to attach.
pub struct ChallengeCert {
    pub cert: X509,
    pub key: PKey<Private>,
}

/// The self-signed certificate RFC 8737 section 3 asks for: the name as its only SAN and the
/// critical acmeIdentifier extension holding the SHA-256 digest of the key authorization.
pub fn challenge_cert(
    host: &str,
    key_authorization: &str,
) -> Result<ChallengeCert, openssl::error::ErrorStack> {
    let key = PKey::from_ec_key(EcKey::generate(
        EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?.as_ref(),
    )?)?;
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_nid(Nid::COMMONNAME, "edgeward tls-alpn-01 challenge")?;
    let name = name.build();
    let mut b = X509::builder()?;
    b.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
    b.set_serial_number(serial.to_asn1_integer()?.as_ref())?;
    b.set_subject_name(&name)?;
    b.set_issuer_name(&name)?;
    b.set_pubkey(&key)?;
    b.set_not_before(Asn1Time::days_from_now(0)?.as_ref())?;
    b.set_not_after(Asn1Time::days_from_now(7)?.as_ref())?;
    let san = SubjectAlternativeName::new()
        .dns(host)
        .build(&b.x509v3_context(None, None))?;
    b.append_extension(san)?;
    // extnValue: an OCTET STRING whose content is the DER of `Authorization ::= OCTET STRING (SIZE (32))`.
    let digest = hash(MessageDigest::sha256(), key_authorization.as_bytes())?;
    let mut inner = vec![0x04, 0x20];
    inner.extend_from_slice(&digest);
    let oid = Asn1Object::from_str(ACME_IDENTIFIER_OID)?;
    let value = Asn1OctetString::new_from_bytes(&inner)?;
    b.append_extension(X509Extension::new_from_der(&oid, true, &value)?)?;
    b.sign(&key, MessageDigest::sha256())?;
    Ok(ChallengeCert {
        cert: b.build(),
        key,
    })
}

/// The per-connection flag: the ClientHello offered `acme-tls/1` and nothing else.
fn flag() -> openssl::ex_data::Index<Ssl, bool> {
    static INDEX: OnceLock<openssl::ex_data::Index<Ssl, bool>> = OnceLock::new();
    *INDEX.get_or_init(|| Ssl::new_ex_index().expect("an SSL ex_data index"))
}

/// Did this handshake's ClientHello offer exactly `acme-tls/1`? (Set by `client_hello`.)
pub fn offers_only_acme_tls(ssl: &SslRef) -> bool {
    ssl.ex_data(flag()).copied().unwrap_or(false)
}

/// The raw ALPN extension of the ClientHello being processed, if any. Only valid inside the
/// ClientHello callback.
fn client_hello_alpn(ssl: &SslRef) -> Option<&[u8]> {
    use foreign_types::ForeignTypeRef;
    let mut out: *const u8 = std::ptr::null();
    let mut len: usize = 0;
    // SAFETY: called from the ClientHello callback of this SSL; on success OpenSSL points `out` at
    // `len` bytes it owns for the rest of the handshake, which outlives the borrow of `ssl`.
    unsafe {
        if openssl_sys::SSL_client_hello_get0_ext(ssl.as_ptr(), ALPN_EXTENSION, &mut out, &mut len)
            == 1
            && !out.is_null()
        {
            Some(std::slice::from_raw_parts(out, len))
        } else {
            None
        }
    }
}

/// Is an ALPN extension body (a 2-byte list length, then length-prefixed names) the list of exactly
/// one name, `acme-tls/1`?
pub fn is_only_acme_tls(ext: &[u8]) -> bool {
    let n = ACME_TLS_1.len();
    ext.len() == 3 + n
        && ext[..2] == ((n + 1) as u16).to_be_bytes()
        && ext[2] as usize == n
        && &ext[3..] == ACME_TLS_1
}

/// The ClientHello callback: remembers whether the client offered only `acme-tls/1`.
pub fn client_hello(
    ssl: &mut SslRef,
    _alert: &mut SslAlert,
) -> Result<ClientHelloResponse, openssl::error::ErrorStack> {
    if client_hello_alpn(ssl).is_some_and(is_only_acme_tls) {
        ssl.set_ex_data(flag(), true);
    }
    Ok(ClientHelloResponse::SUCCESS)
}

/// The ALPN selection: `acme-tls/1` when it is all the client offers (its certificate callback
/// attached a challenge certificate, or nothing), else h2 before http/1.1 as Pingora does.
pub fn select<'a>(
    _ssl: &mut SslRef,
    offered: &'a [u8],
) -> Result<&'a [u8], openssl::ssl::AlpnError> {
    const PREFERENCE: &[u8] = b"\x02h2\x08http/1.1";
    if offered.len() == 1 + ACME_TLS_1.len() && &offered[1..] == ACME_TLS_1 {
        return Ok(&offered[1..]);
    }
    openssl::ssl::select_next_proto(PREFERENCE, offered).ok_or(openssl::ssl::AlpnError::NOACK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_challenge_certificate_carries_the_digest_in_a_critical_extension() {
        let c = challenge_cert("shop.test", "tok.thumb").unwrap();
        let der = c.cert.to_der().unwrap();
        let digest = hash(MessageDigest::sha256(), b"tok.thumb").unwrap();
        // OID 1.3.6.1.5.5.7.1.31, critical TRUE, OCTET STRING { OCTET STRING (32) digest }.
        let mut ext = vec![
            0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x1f, 0x01, 0x01, 0xff, 0x04,
            0x22, 0x04, 0x20,
        ];
        ext.extend_from_slice(&digest);
        assert!(
            der.windows(ext.len()).any(|w| w == ext),
            "extension missing"
        );
        let names: Vec<String> = c
            .cert
            .subject_alt_names()
            .unwrap()
            .iter()
            .filter_map(|n| n.dnsname().map(str::to_string))
            .collect();
        assert_eq!(names, ["shop.test"]);
        assert!(c.cert.public_key().unwrap().public_eq(&c.key));
    }

    #[test]
    fn only_a_list_of_exactly_acme_tls_counts() {
        assert!(is_only_acme_tls(b"\x00\x0b\x0aacme-tls/1"));
        assert!(!is_only_acme_tls(b"\x00\x0e\x0aacme-tls/1\x02h2"));
        assert!(!is_only_acme_tls(b"\x00\x03\x02h2"));
        assert!(!is_only_acme_tls(b"\x00\x0c\x0aacme-tls/1"));
        assert!(!is_only_acme_tls(b""));
    }
}
