//! What the hot paths read: the route table, the challenge tokens and the certificates. `control` is
//! the only writer (it owns a `State`); the proxy and the TLS callback get a `Reader`, which offers
//! lookups and nothing else. Every lookup is a map probe or two and never allocates.

pub mod challenges;
pub mod routes;

pub use challenges::{AlpnChallenge, Challenges};
pub use routes::{Route, Routes};

use crate::tls::bundle::covers_name;
use crate::tls::{CertBundle, CertStore};
use bytes::Bytes;
use std::sync::Arc;

/// The tables, as their writer sees them.
#[derive(Default)]
pub struct State {
    pub routes: Routes,
    pub challenges: Challenges,
    pub certs: Arc<CertStore>,
}

impl State {
    /// A read-only handle for the proxy and the TLS callback.
    pub fn reader(self: &Arc<Self>) -> Reader {
        Reader(self.clone())
    }
}

/// Read-only access to the tables: what a request or a handshake may look up.
#[derive(Clone)]
pub struct Reader(Arc<State>);

impl Reader {
    /// The route for a normalised request host (exact, then one-level wildcard).
    pub fn route(&self, host: &str) -> Option<Arc<Route>> {
        self.0.routes.lookup(host)
    }

    /// The key authorization for `token` if it was registered for `host` and has not expired.
    pub fn challenge(&self, token: &str, host: &str, now: u64) -> Option<Bytes> {
        self.0.challenges.lookup(token, host, now)
    }

    /// The TLS-ALPN-01 challenge pending for an SNI name (lowercase, no trailing dot).
    pub fn alpn_challenge(&self, sni: &str, now: u64) -> Option<Arc<AlpnChallenge>> {
        self.0.challenges.alpn(sni, now)
    }

    /// The certificate for an SNI name (lowercase, no trailing dot): the one the domain the name
    /// routes to points at, if it covers the name. Never another domain's, whatever its SANs list.
    pub fn cert_for(&self, sni: &str) -> Option<Arc<CertBundle>> {
        let route = self.0.routes.lookup(sni)?;
        let d = &route.domain;
        let bundle = self.0.certs.get(d.certificate_host.host(&d.host))?;
        covers_name(&bundle.names, sni).then_some(bundle)
    }

    /// The configuration's default certificate (no SNI, or a name no certificate is served for).
    pub fn default_cert(&self) -> Option<Arc<CertBundle>> {
        self.0.certs.default_cert()
    }
}
