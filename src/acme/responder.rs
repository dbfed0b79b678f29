//! Challenges published for an order: HTTP-01 tokens and TLS-ALPN-01 challenges go through `Control`
//! like any change (durable, then live on every listener and, in a fleet, on every node); DNS-01 TXT
//! records go to DNS (`dns`). The responder remembers everything it published, so that whatever ends
//! the order (its result, a timeout, the hand-over of a graceful upgrade) `remove_all` removes it
//! instead of leaving it until it expires.

use super::client::{Proof, Responder};
use super::dns::{Dns01, Placed};
use crate::control::{unix_now, ApplyError, Control};
use crate::model::{AcmeChallenge, Challenge, Change, TlsMode};
use async_trait::async_trait;
use std::sync::{Arc, Mutex};

/// How long a token stays registered if an order dies without removing it.
const TOKEN_TTL: u64 = 3600;

/// Something an order published.
enum Published {
    Token(String),
    Txt(Placed),
}

pub struct ControlResponder {
    control: Arc<Control>,
    dns: Option<Arc<Dns01>>,
    published: Mutex<Vec<Published>>,
}

impl ControlResponder {
    pub fn new(control: Arc<Control>, dns: Option<Arc<Dns01>>) -> Self {
        ControlResponder {
            control,
            dns,
            published: Mutex::default(),
        }
    }

    fn published(&self) -> std::sync::MutexGuard<'_, Vec<Published>> {
        self.published.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remove everything this order published and has not removed yet.
    pub async fn remove_all(&self) {
        let all = std::mem::take(&mut *self.published());
        for p in all {
            match p {
                Published::Token(t) => self.remove_token(&t).await,
                Published::Txt(placed) => {
                    if let Some(dns) = &self.dns {
                        if let Err(e) = dns.cleanup(&placed).await {
                            log::warn!("{e} (remove it by hand)");
                        }
                    }
                }
            }
        }
    }

    async fn put_token(
        &self,
        token: &str,
        host: &str,
        key_authorization: &str,
        kind: AcmeChallenge,
    ) -> Result<(), String> {
        let c = Challenge {
            token: token.to_string(),
            host: host.to_string(),
            key_authorization: key_authorization.to_string(),
            expires_at: unix_now() + TOKEN_TTL,
            kind,
        };
        // Remembered before the write: a write cut short by a stop may still have landed.
        self.published().push(Published::Token(token.to_string()));
        self.control
            .apply(vec![Change::PutChallenge(c)])
            .await
            .map_err(|e| format!("registering the challenge: {e}"))
    }

    async fn remove_token(&self, token: &str) {
        let change = Change::DeleteChallenge {
            token: token.to_string(),
        };
        match self.control.apply(vec![change]).await {
            Ok(()) | Err(ApplyError::NotFound(_)) => {}
            Err(e) => log::warn!("removing a challenge failed (it expires anyway): {e}"),
        }
    }
}

#[async_trait]
impl Responder for ControlResponder {
    async fn present(&self, proof: Proof<'_>) -> Result<(), String> {
        match proof {
            Proof::Token {
                kind,
                token,
                host,
                key_authorization,
            } => self.put_token(token, host, key_authorization, kind).await,
            Proof::Txt { domain, value } => {
                let dns = self
                    .dns
                    .as_ref()
                    .ok_or("dns-01 needs an `edgeward.acme.dns01` section on this node")?;
                let placed = dns.present(domain, value).await?;
                self.published().push(Published::Txt(placed.clone()));
                dns.wait_visible(&placed).await
            }
        }
    }

    fn still_wanted(&self, host: &str) -> bool {
        self.control
            .domain(host)
            .is_some_and(|d| d.tls == TlsMode::Auto)
    }
}
