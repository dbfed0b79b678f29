//! The manager's dealings with the CA outside an order: the account (loaded from the store or created
//! once, forgotten when the CA no longer knows it), the start-up check of `acme.profile`, and the ARI
//! renewal windows (RFC 9773) fetched per certificate.

use super::client::{self, OrderError};
use super::manager::{AriWindow, Manager};
use crate::control::unix_now;
use crate::model::{AccountRecord, Change};
use instant_acme::Account;
use std::sync::Arc;
use std::time::Duration;

impl Manager {
    /// The account: loaded from the store, or created once and stored (0600).
    pub(super) async fn account(&self) -> Result<Arc<Account>, OrderError> {
        let mut slot = self.account.lock().await;
        if let Some(a) = slot.as_ref() {
            return Ok(a.clone());
        }
        let stored = self
            .control
            .acme_stored()
            .account
            .filter(|a| a.directory == self.cfg.directory);
        let (account, created) = client::account(
            &self.cfg,
            &self.http,
            stored.as_ref().map(|a| a.credentials.as_str()),
        )
        .await?;
        if let Some(credentials) = created {
            log::info!(
                "created ACME account {} at {}",
                account.id(),
                self.cfg.directory
            );
            let record = AccountRecord {
                directory: self.cfg.directory.clone(),
                credentials,
            };
            self.control
                .apply(vec![Change::PutAcmeAccount(record)])
                .await
                .map_err(|e| OrderError::Local(format!("storing the ACME account: {e}")))?;
        }
        if let Some(p) = self.cfg.profile.as_deref() {
            let offered: Vec<String> = account.profiles().map(|m| m.name.to_string()).collect();
            if let Some(why) = client::profile_refusal(p, &self.cfg.directory, &offered) {
                return Err(OrderError::Local(format!("edgeward.acme.profile {why}")));
            }
        }
        let account = Arc::new(account);
        *slot = Some(account.clone());
        Ok(account)
    }

    /// The CA says the account does not exist (deactivated, or a test CA restarted): forget it so the
    /// next order registers a new one.
    pub(super) async fn forget_account(&self) {
        *self.account.lock().await = None;
        let mut stored = self.control.acme_stored();
        if stored.account.take().is_some() {
            log::warn!("the CA no longer knows the stored ACME account; a new one will be created");
            let record = AccountRecord {
                directory: String::new(),
                credentials: String::new(),
            };
            let _ = self
                .control
                .apply(vec![Change::PutAcmeAccount(record)])
                .await;
        }
    }

    /// At start-up, with `acme.profile` set: refuse a profile the directory does not list. A CA that
    /// does not answer within 10 s is not a reason to refuse to start (orders check again).
    pub async fn check_profile(&self) -> Result<(), String> {
        let Some(p) = self.cfg.profile.as_deref() else {
            return Ok(());
        };
        let dir = &self.cfg.directory;
        let listed = client::directory_profiles(&self.http, dir);
        match tokio::time::timeout(Duration::from_secs(10), listed).await {
            Ok(Ok(offered)) => match client::profile_refusal(p, dir, &offered) {
                Some(why) => Err(format!("edgeward.acme.profile: {why}")),
                None => Ok(()),
            },
            Ok(Err(e)) => {
                log::warn!("cannot check edgeward.acme.profile now ({e}); orders will");
                Ok(())
            }
            Err(_) => {
                log::warn!(
                    "{dir} did not answer within 10 s; edgeward.acme.profile checked by orders"
                );
                Ok(())
            }
        }
    }

    pub(super) fn ari_offered(&self) -> bool {
        self.ari_offered.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(super) fn ari_window(&self, host: &str, serial: &str) -> Option<AriWindow> {
        self.ari
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(host)
            .filter(|w| w.serial == serial)
            .cloned()
    }

    pub(super) async fn fetch_window(
        &self,
        host: &str,
        serial: String,
        id: instant_acme::CertificateIdentifier<'static>,
    ) {
        let now = unix_now() as i64;
        let result = match self.account().await {
            Ok(account) => client::renewal_window(&account, &id)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let window = match result {
            Ok(Some((start, end, again))) => AriWindow {
                serial,
                start,
                end,
                refetch_at: now + (again.as_secs() as i64).clamp(60, 86_400),
            },
            Ok(None) => {
                log::info!(
                    "the ACME directory offers no renewal information (ARI); renewing by lifetime"
                );
                self.ari_offered
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                return;
            }
            Err(e) => {
                log::debug!("renewal information for {host} unavailable, asking again later: {e}");
                self.ari_queue().set(host, now + 300, None);
                return;
            }
        };
        self.ari_queue().set(host, window.refetch_at, None);
        self.ari
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(host.to_string(), window);
        self.control.acme_touch(host);
        self.control.wake_watchers();
    }
}
