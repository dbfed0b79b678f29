//! Challenge tokens go through `Control` like any change: durable, then live on every listener. An
//! order's responder remembers the tokens it registered, so that an order stopped from outside (the
//! hand-over of a graceful upgrade) removes them instead of leaving them until they expire.

use super::client::Responder;
use crate::control::{unix_now, ApplyError, Control};
use crate::model::{Challenge, Change, TlsMode};
use async_trait::async_trait;
use std::sync::{Arc, Mutex};

/// How long an HTTP-01 token stays registered if an order dies without removing it.
const TOKEN_TTL: u64 = 3600;

pub struct ControlResponder {
    control: Arc<Control>,
    registered: Mutex<Vec<String>>,
}

impl ControlResponder {
    pub fn new(control: Arc<Control>) -> Self {
        ControlResponder {
            control,
            registered: Mutex::default(),
        }
    }

    fn registered(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.registered.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remove every token this order registered and has not removed yet.
    pub async fn remove_all(&self) {
        let tokens = std::mem::take(&mut *self.registered());
        for t in tokens {
            self.remove_token(&t).await;
        }
    }
}

#[async_trait]
impl Responder for ControlResponder {
    async fn put_token(
        &self,
        token: &str,
        host: &str,
        key_authorization: &str,
    ) -> Result<(), String> {
        let c = Challenge {
            token: token.to_string(),
            host: host.to_string(),
            key_authorization: key_authorization.to_string(),
            expires_at: unix_now() + TOKEN_TTL,
        };
        // Remembered before the write: a write cut short by a stop may still have landed.
        self.registered().push(token.to_string());
        self.control
            .apply(vec![Change::PutChallenge(c)])
            .await
            .map_err(|e| format!("registering the challenge token: {e}"))
    }

    async fn remove_token(&self, token: &str) {
        self.registered().retain(|t| t != token);
        let change = Change::DeleteChallenge {
            token: token.to_string(),
        };
        match self.control.apply(vec![change]).await {
            Ok(()) | Err(ApplyError::NotFound(_)) => {}
            Err(e) => log::warn!("removing challenge token failed (it expires anyway): {e}"),
        }
    }

    fn still_wanted(&self, host: &str) -> bool {
        self.control
            .domain(host)
            .is_some_and(|d| d.tls == TlsMode::Auto)
    }
}
