//! DNS-01 records written with RFC 2136 dynamic updates, signed with TSIG (RFC 8945), to the primary
//! of the zone: BIND, Knot, PowerDNS and most managed DNS services accept them.

use super::query::{self, text};
use hickory_net::client::ClientHandle;
use hickory_net::proto::op::ResponseCode;
use hickory_net::proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_net::proto::rr::rdata::TXT;
use hickory_net::proto::rr::{Name, RData, Record, RecordSet, TSigner};
use std::net::SocketAddr;

/// TTL of the TXT records: validations read them within seconds; a short TTL keeps caches honest.
const TXT_TTL: u32 = 60;
/// Clock difference TSIG tolerates (RFC 8945 recommends 300 s).
const FUDGE: u16 = 300;

/// The validated `edgeward.acme.dns01.rfc2136` section.
#[derive(Clone)]
pub struct Rfc2136 {
    pub server: SocketAddr,
    pub key_name: String,
    signer: TSigner,
}

impl std::fmt::Debug for Rfc2136 {
    // Never the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rfc2136")
            .field("server", &self.server)
            .field("key_name", &self.key_name)
            .finish_non_exhaustive()
    }
}

/// The algorithms hickory signs with.
pub const ALGORITHMS: [&str; 3] = ["hmac-sha256", "hmac-sha384", "hmac-sha512"];

impl Rfc2136 {
    /// `secret` is the key file's text: the base64 secret alone, or a BIND `key "..." { ... };` clause
    /// as `tsig-keygen` prints it. Errors name what is wrong, never the secret.
    pub fn new(
        server: SocketAddr,
        key_name: &str,
        algorithm: &str,
        secret: &str,
    ) -> Result<Self, (&'static str, String)> {
        let alg = match algorithm.to_ascii_lowercase().as_str() {
            "hmac-sha256" => TsigAlgorithm::HmacSha256,
            "hmac-sha384" => TsigAlgorithm::HmacSha384,
            "hmac-sha512" => TsigAlgorithm::HmacSha512,
            other => {
                return Err((
                    "tsig_algorithm",
                    format!("`{other}` is not one of {}", ALGORITHMS.join(", ")),
                ))
            }
        };
        let key = parse_secret(secret).map_err(|m| ("tsig_secret_file", m))?;
        let name = query::name(key_name).map_err(|m| ("tsig_key_name", m))?;
        let signer =
            TSigner::new(key, alg, name, FUDGE).map_err(|e| ("tsig_algorithm", e.to_string()))?;
        Ok(Rfc2136 {
            server,
            key_name: key_name.to_string(),
            signer,
        })
    }

    /// Add `value` to the TXT records at `fqdn`, in the zone the server says `fqdn` is in; returns
    /// the zone (for the removal).
    pub async fn present(&self, fqdn: &Name, value: &str) -> Result<Name, String> {
        let zone = query::zone_of(self.server, fqdn).await?;
        let mut c = query::client(self.server, Some(self.signer.clone()));
        let rsp = c
            .append(txt(fqdn, value), zone.clone(), false)
            .await
            .map_err(|e| self.failed("adding", fqdn, &e.to_string()))?;
        self.check(rsp.response_code, "adding", fqdn)?;
        Ok(zone)
    }

    /// Remove exactly `value` from the TXT records at `fqdn` (others, e.g. a concurrent order's, stay).
    pub async fn cleanup(&self, fqdn: &Name, zone: &Name, value: &str) -> Result<(), String> {
        let mut c = query::client(self.server, Some(self.signer.clone()));
        let rsp = c
            .delete_by_rdata(txt(fqdn, value), zone.clone())
            .await
            .map_err(|e| self.failed("removing", fqdn, &e.to_string()))?;
        self.check(rsp.response_code, "removing", fqdn)
    }

    fn check(&self, code: ResponseCode, what: &str, fqdn: &Name) -> Result<(), String> {
        // The mnemonic operators know from dig and the server's log (REFUSED, NOTAUTH), then its text.
        let named = format!("{} ({code})", format!("{code:?}").to_uppercase());
        match code {
            ResponseCode::NoError => Ok(()),
            ResponseCode::Refused | ResponseCode::NotAuth => Err(self.failed(
                what,
                fqdn,
                &format!(
                    "the server answered {named}: does key `{}` have `allow-update` (or \
                     `update-policy`) on the zone?",
                    self.key_name
                ),
            )),
            _ => Err(self.failed(what, fqdn, &format!("the server answered {named}"))),
        }
    }

    fn failed(&self, what: &str, fqdn: &Name, why: &str) -> String {
        format!(
            "DNS update {what} TXT {} at {} failed: {why}",
            text(fqdn),
            self.server
        )
    }
}

fn txt(fqdn: &Name, value: &str) -> RecordSet {
    RecordSet::from(Record::from_rdata(
        fqdn.clone(),
        TXT_TTL,
        RData::TXT(TXT::new(vec![value.to_string()])),
    ))
}

/// The TSIG secret from a key file: base64 alone, or the `secret "...";` of a BIND key clause.
pub fn parse_secret(file: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    let b64 = match file.find("secret") {
        Some(i) => {
            let rest = &file[i + "secret".len()..];
            let open = rest
                .find('"')
                .ok_or("the key clause has no quoted `secret \"...\"`")?;
            let rest = &rest[open + 1..];
            let close = rest
                .find('"')
                .ok_or("the key clause's secret has no closing quote")?;
            &rest[..close]
        }
        None => file.trim(),
    };
    let key = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| "the secret is not base64 (as `tsig-keygen` prints it)".to_string())?;
    if key.is_empty() {
        return Err("the secret is empty".into());
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_from_base64_or_a_bind_key_clause() {
        assert_eq!(parse_secret("c2VjcmV0\n").unwrap(), b"secret");
        let clause = "key \"edgeward\" {\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0\";\n};\n";
        assert_eq!(parse_secret(clause).unwrap(), b"secret");
        assert!(parse_secret("not base64!").is_err());
        assert!(parse_secret("").is_err());
        assert!(parse_secret("key \"x\" { secret \"c2Vj").is_err());
    }

    #[test]
    fn errors_name_the_key_and_never_the_secret() {
        let addr = "127.0.0.1:53".parse().unwrap();
        let e = Rfc2136::new(addr, "k", "hmac-md5", "c2VjcmV0").unwrap_err();
        assert_eq!(e.0, "tsig_algorithm");
        let e = Rfc2136::new(addr, "k", "hmac-sha256", "%%%").unwrap_err();
        assert_eq!(e.0, "tsig_secret_file");
        let ok = Rfc2136::new(addr, "edgeward", "HMAC-SHA256", "c2VjcmV0").unwrap();
        assert!(!format!("{ok:?}").contains("c2VjcmV0"));
    }
}
