//! Pingora's TLS certificate callback: SNI -> the domain it routes to -> that domain's pre-parsed
//! bundle (if it covers the name) -> attached to the handshake. Lookups and refcount bumps only: no
//! parsing, no I/O, no await. No certificate found: the default one, else nothing is attached and the
//! handshake fails cleanly with an alert. A ClientHello offering only `acme-tls/1` gets the name's
//! TLS-ALPN-01 challenge certificate instead (`alpn`), or nothing.

use crate::metrics;
use crate::state::Reader;
use async_trait::async_trait;
use openssl::ssl::NameType;
use pingora_core::listeners::TlsAccept;
use pingora_core::protocols::tls::TlsRef;
use pingora_core::tls::ext;
use std::any::Any;
use std::sync::Arc;

pub struct SniResolver {
    pub state: Reader,
}

#[async_trait]
impl TlsAccept for SniResolver {
    async fn certificate_callback(&self, ssl: &mut TlsRef) {
        let state = &self.state;
        if super::alpn::offers_only_acme_tls(ssl) {
            return self.attach_challenge(ssl);
        }
        let bundle = match ssl.servername(NameType::HOST_NAME) {
            Some(sni) => {
                let sni = sni.trim_end_matches('.');
                let found = if sni.bytes().any(|b| b.is_ascii_uppercase()) {
                    state.cert_for(&sni.to_ascii_lowercase())
                } else {
                    state.cert_for(sni)
                };
                if found.is_none() {
                    metrics::TLS_SNI_MISSES.inc();
                }
                found.or_else(|| state.default_cert())
            }
            None => state.default_cert(),
        };
        let Some(b) = bundle else {
            metrics::TLS_HANDSHAKES
                .with_label_values(&["no_certificate"])
                .inc();
            return;
        };
        let attached = ext::ssl_use_certificate(ssl, &b.leaf)
            .and_then(|_| ext::ssl_use_private_key(ssl, &b.key))
            .and_then(|_| {
                b.chain
                    .iter()
                    .try_for_each(|c| ext::ssl_add_chain_cert(ssl, c))
            });
        if let Err(e) = attached {
            metrics::TLS_HANDSHAKES
                .with_label_values(&["attach_failed"])
                .inc();
            log::error!("attaching the certificate of {} failed: {e}", b.host);
        }
    }

    /// The SNI the client sent, kept with the connection for the access log (`Sni`).
    async fn handshake_complete_callback(
        &self,
        ssl: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        metrics::TLS_HANDSHAKES.with_label_values(&["ok"]).inc();
        let sni = ssl.servername(NameType::HOST_NAME)?;
        Some(Arc::new(Sni(sni.into())))
    }
}

impl SniResolver {
    /// A TLS-ALPN-01 validation: the challenge certificate of the name, or nothing (the handshake fails:
    /// `acme-tls/1` never gets the site's certificate).
    fn attach_challenge(&self, ssl: &mut TlsRef) {
        let found = ssl.servername(NameType::HOST_NAME).and_then(|sni| {
            let sni = sni.trim_end_matches('.').to_ascii_lowercase();
            self.state.alpn_challenge(&sni, crate::model::unix_now())
        });
        let Some(a) = found else {
            metrics::TLS_HANDSHAKES
                .with_label_values(&["no_challenge"])
                .inc();
            return;
        };
        let attached = ext::ssl_use_certificate(ssl, &a.cert.cert)
            .and_then(|_| ext::ssl_use_private_key(ssl, &a.cert.key));
        if let Err(e) = attached {
            log::error!("attaching a tls-alpn-01 challenge certificate failed: {e}");
        }
    }
}

/// The server name a TLS connection asked for, in the session's `SslDigest` extension.
pub struct Sni(pub Box<str>);

/// The TLS version and SNI of a connection, if it is TLS.
pub fn describe(
    digest: Option<&pingora_core::protocols::tls::SslDigest>,
) -> (Option<&str>, Option<&str>) {
    match digest {
        Some(d) => (
            Some(d.version.as_ref()),
            d.extension.get::<Sni>().map(|s| &*s.0),
        ),
        None => (None, None),
    }
}
