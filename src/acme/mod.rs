//! The ACME certificate manager: domains with `tls: "auto"` get a certificate from the CA, proved with
//! HTTP-01 or TLS-ALPN-01 (answered by edgeward itself, `responder`) or DNS-01 (`dns`: RFC 2136 or a
//! hook), and keep it renewed. `client` (over `ca_http`) is the only code talking to the CA;
//! `schedule` is pure (when to renew, when to retry); `queue` orders the domains by when they are due
//! and `plan` places them; `manager` is the background service, `order` one order's life and `ca` the
//! account, the profile check and ARI. The persisted account and budget are records (`model::acme`).

mod ca;
pub mod ca_http;
pub mod client;
pub mod dns;
pub mod manager;
mod order;
mod plan;
pub mod queue;
mod responder;
pub mod schedule;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyType {
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
    #[serde(rename = "rsa-2048")]
    Rsa2048,
}

/// The validated `edgeward.acme` section.
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    pub directory: String,
    pub contact: Vec<String>,
    /// Extra PEM roots to trust for the ACME server (Pebble, private CAs).
    pub ca_bundle: Option<Vec<u8>>,
    pub key_type: KeyType,
    pub renew_before_fraction: f64,
    pub max_orders_per_window: usize,
    pub order_window_seconds: i64,
    pub max_concurrent_orders: usize,
    pub retry_min_seconds: u64,
    pub retry_max_seconds: u64,
    /// How long one order may wait for the CA (validation, issuance).
    pub order_timeout_seconds: u64,
    /// DNS-01, when configured.
    pub dns01: Option<std::sync::Arc<dns::Dns01>>,
    /// The CA profile new orders ask for.
    pub profile: Option<String>,
}

/// What `GET /v1/domains/{host}` shows under `certificate` for a `tls: "auto"` domain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CertStatus {
    pub state: CertState,
    pub not_after: Option<String>,
    pub renew_at: Option<String>,
    pub last_error: Option<String>,
    pub next_attempt: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CertState {
    #[default]
    Pending,
    Valid,
    Renewing,
    Failed,
}
