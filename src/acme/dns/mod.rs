//! DNS-01: the TXT record `_acme-challenge.<name>` holding the challenge's digest, written through RFC
//! 2136 updates (`rfc2136`) or an operator's command (`hook`). A CNAME at `_acme-challenge.<name>` (the
//! customer delegated it to a zone the platform controls) is followed and the record written at its
//! target, so customers never hand over DNS credentials. Before the CA is told to validate, every
//! configured resolver must answer the value (`wait_visible`); the record is removed after the order
//! whatever its outcome (`cleanup`).

pub mod hook;
pub mod query;
pub mod rfc2136;

use hickory_net::proto::rr::Name;
use query::text;
use std::net::SocketAddr;
use std::time::Duration;

/// How often the resolvers are asked while waiting for the record to be visible.
const POLL: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub enum Provider {
    Rfc2136(rfc2136::Rfc2136),
    Hook(hook::Hook),
}

/// The validated `edgeward.acme.dns01` section.
#[derive(Debug, Clone)]
pub struct Dns01 {
    pub provider: Provider,
    pub propagation_timeout: Duration,
    /// Asked for CNAMEs and checked for the record; empty: the RFC 2136 server (with a hook and no
    /// resolvers, nothing is checked and CNAMEs are not followed).
    pub resolvers: Vec<SocketAddr>,
}

/// A TXT record this node wrote, to remove after the order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub fqdn: String,
    pub value: String,
    /// The name being validated (`*.a.test` for a wildcard).
    pub domain: String,
    zone: Option<Name>,
}

impl Dns01 {
    fn lookup_servers(&self) -> Vec<SocketAddr> {
        match (&self.provider, self.resolvers.is_empty()) {
            (_, false) => self.resolvers.clone(),
            (Provider::Rfc2136(r), true) => vec![r.server],
            (Provider::Hook(_), true) => Vec::new(),
        }
    }

    /// Write `value` for `domain` (the order's identifier: `a.test`, or `*.a.test` whose record is
    /// the one of `a.test`).
    pub async fn present(&self, domain: &str, value: &str) -> Result<Placed, String> {
        let base = domain.strip_prefix("*.").unwrap_or(domain);
        let start = query::name(&format!("_acme-challenge.{base}"))?;
        let servers = self.lookup_servers();
        let fqdn = if servers.is_empty() {
            start.clone()
        } else {
            query::follow_cnames(&servers, &start).await?
        };
        if fqdn != start {
            log::info!(
                "{} is delegated to {}: the TXT record goes there",
                text(&start),
                text(&fqdn)
            );
        }
        let zone = match &self.provider {
            Provider::Rfc2136(r) => Some(r.present(&fqdn, value).await?),
            Provider::Hook(h) => {
                h.run("present", &text(&fqdn), value, domain).await?;
                None
            }
        };
        Ok(Placed {
            fqdn: text(&fqdn),
            value: value.to_string(),
            domain: domain.to_string(),
            zone,
        })
    }

    /// Wait until every lookup server answers the record, at most `propagation_timeout`.
    pub async fn wait_visible(&self, p: &Placed) -> Result<(), String> {
        let fqdn = query::name(&p.fqdn)?;
        let deadline = tokio::time::Instant::now() + self.propagation_timeout;
        for server in self.lookup_servers() {
            loop {
                let seen = query::has_txt(server, &fqdn, &p.value).await;
                if let Ok(true) = seen {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    let why = match seen {
                        Err(e) => e,
                        _ => "the record is not there".into(),
                    };
                    return Err(format!(
                        "TXT {} not visible at {server} within {} s: {why}",
                        p.fqdn,
                        self.propagation_timeout.as_secs()
                    ));
                }
                tokio::time::sleep(POLL).await;
            }
        }
        Ok(())
    }

    /// Remove a record written by `present`.
    pub async fn cleanup(&self, p: &Placed) -> Result<(), String> {
        match (&self.provider, &p.zone) {
            (Provider::Rfc2136(r), Some(zone)) => {
                r.cleanup(&query::name(&p.fqdn)?, zone, &p.value).await
            }
            (Provider::Hook(h), _) => h.run("cleanup", &p.fqdn, &p.value, &p.domain).await,
            (Provider::Rfc2136(_), None) => Ok(()),
        }
    }
}
