//! The ACME certificate manager: domains with `tls: "auto"` get a certificate from the CA through
//! edgeward's own HTTP-01 responder, and keep it renewed. `client` is the only code talking to the CA;
//! `schedule` is pure (when to renew, when to retry); the persisted account and new-order budget
//! are records (`model::acme`); `manager` is the background service that ties them together.

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
