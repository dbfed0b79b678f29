//! The file schema, exactly as operators write it. Unknown keys are refused; nothing here is validated
//! beyond types: `super::validate` turns this into the model.

use crate::model::DomainInput;
use serde::Deserialize;

/// The whole file: Pingora's keys at the top level (checked against `ServerConf`), ours under `edgeward`.
#[derive(Debug, Deserialize)]
pub struct FileRoot {
    #[serde(default)]
    pub edgeward: Option<EdgewardFile>,
    #[serde(flatten)]
    pub pingora: serde_yaml::Mapping,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgewardFile {
    #[serde(default = "default_http")]
    pub http: Vec<ListenerFile>,
    #[serde(default)]
    pub https: Vec<ListenerFile>,
    #[serde(default = "yes")]
    pub intercept_acme_challenges: bool,
    #[serde(default)]
    pub admin: AdminFile,
    #[serde(default)]
    pub state: StateFile,
    #[serde(default)]
    pub domains: Vec<DomainInput>,
    #[serde(default)]
    pub challenges: ChallengesFile,
    #[serde(default)]
    pub upstreams: UpstreamsFile,
    #[serde(default)]
    pub tls: TlsFile,
    #[serde(default)]
    pub acme: Option<AcmeFile>,
    #[serde(default)]
    pub shutdown: ShutdownFile,
    #[serde(default)]
    pub downstream: DownstreamFile,
    /// Peers whose `X-Forwarded-For` / `Forwarded` / `X-Real-IP` are kept (CIDRs).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Off when absent.
    #[serde(default)]
    pub access_log: Option<AccessLogFile>,
    /// The port `redirect_https` sends clients to (behind port mapping); default: the first HTTPS
    /// listener's.
    #[serde(default)]
    pub https_redirect_port: Option<u16>,
}

/// `edgeward.access_log`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogFile {
    /// A file, or `-` for stdout.
    pub path: String,
    #[serde(default = "default_access_log_format")]
    pub format: crate::access_log::Format,
}

fn default_access_log_format() -> crate::access_log::Format {
    crate::access_log::Format::Json
}

/// Limits on the client side of the proxy listeners.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownstreamFile {
    #[serde(default = "default_request_header_timeout_ms")]
    pub request_header_timeout_ms: u64,
    #[serde(default = "default_keepalive_seconds")]
    pub keepalive_timeout_seconds: u64,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Requests per client connection before it is closed; 0: no limit.
    #[serde(default)]
    pub keepalive_request_limit: u32,
}

impl Default for DownstreamFile {
    fn default() -> Self {
        DownstreamFile {
            request_header_timeout_ms: default_request_header_timeout_ms(),
            keepalive_timeout_seconds: default_keepalive_seconds(),
            max_connections: default_max_connections(),
            keepalive_request_limit: 0,
        }
    }
}

fn default_request_header_timeout_ms() -> u64 {
    10_000
}
fn default_keepalive_seconds() -> u64 {
    60
}
fn default_max_connections() -> usize {
    100_000
}

/// A graceful shutdown or upgrade.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownFile {
    /// How long a connection without a request in progress is kept for one to arrive.
    #[serde(default = "default_request_wait_ms")]
    pub request_wait_ms: u64,
}

impl Default for ShutdownFile {
    fn default() -> Self {
        ShutdownFile {
            request_wait_ms: default_request_wait_ms(),
        }
    }
}

fn default_request_wait_ms() -> u64 {
    1000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeFile {
    pub directory: String,
    #[serde(default)]
    pub contact: Vec<String>,
    #[serde(default)]
    pub ca_bundle: Option<String>,
    #[serde(default = "default_key_type")]
    pub key_type: crate::acme::KeyType,
    #[serde(default = "default_renew_fraction")]
    pub renew_before_fraction: f64,
    #[serde(default = "default_max_orders")]
    pub max_orders_per_window: usize,
    #[serde(default = "default_order_window")]
    pub order_window_seconds: i64,
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent_orders: usize,
    #[serde(default)]
    pub retry: RetryFile,
    #[serde(default = "default_order_timeout")]
    pub order_timeout_seconds: u64,
    /// DNS-01: how TXT records are written and where they are checked.
    #[serde(default)]
    pub dns01: Option<Dns01File>,
    /// The CA profile new orders ask for (`tlsserver`, `shortlived`), if the directory lists it.
    #[serde(default)]
    pub profile: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dns01File {
    #[serde(default)]
    pub rfc2136: Option<Rfc2136File>,
    #[serde(default)]
    pub hook: Option<HookFile>,
    #[serde(default = "default_propagation")]
    pub propagation_timeout_seconds: u64,
    #[serde(default)]
    pub resolvers: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rfc2136File {
    pub server: String,
    pub tsig_key_name: String,
    #[serde(default = "default_tsig_algorithm")]
    pub tsig_algorithm: String,
    pub tsig_secret_file: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookFile {
    pub command: String,
    #[serde(default = "default_hook_timeout")]
    pub timeout_seconds: u64,
}

fn default_propagation() -> u64 {
    120
}
fn default_tsig_algorithm() -> String {
    "hmac-sha256".into()
}
fn default_hook_timeout() -> u64 {
    60
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryFile {
    #[serde(default = "default_retry_min")]
    pub min_seconds: u64,
    #[serde(default = "default_retry_max")]
    pub max_seconds: u64,
}

impl Default for RetryFile {
    fn default() -> Self {
        RetryFile {
            min_seconds: default_retry_min(),
            max_seconds: default_retry_max(),
        }
    }
}

fn default_key_type() -> crate::acme::KeyType {
    crate::acme::KeyType::EcdsaP256
}
fn default_renew_fraction() -> f64 {
    0.33
}
fn default_max_orders() -> usize {
    300
}
fn default_order_window() -> i64 {
    10_800
}
fn default_max_concurrent() -> usize {
    8
}
fn default_order_timeout() -> u64 {
    90
}
fn default_retry_min() -> u64 {
    60
}
fn default_retry_max() -> u64 {
    21_600
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    /// Served when the SNI matches no certificate, or there is no SNI.
    #[serde(default)]
    pub default_certificate: Option<CertFiles>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertFiles {
    pub chain: String,
    pub key: String,
}

/// A listener: `"0.0.0.0:8080"` or `{listen: "0.0.0.0:8080", intercept_acme_challenges: false,
/// proxy_protocol: true}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ListenerFile {
    Addr(String),
    Full(ListenerObject),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerObject {
    pub listen: String,
    #[serde(default)]
    pub intercept_acme_challenges: Option<bool>,
    /// Every connection starts with a PROXY protocol header (v1 or v2), required.
    #[serde(default)]
    pub proxy_protocol: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    #[serde(default = "default_admin_listen")]
    pub listen: String,
    #[serde(default = "default_token_file")]
    pub token_file: Option<String>,
}

impl Default for AdminFile {
    fn default() -> Self {
        AdminFile {
            listen: default_admin_listen(),
            token_file: default_token_file(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateFile {
    #[serde(default = "default_state_dir")]
    pub dir: String,
    /// Journal size that starts a checkpoint into the object files.
    #[serde(default = "default_checkpoint_bytes")]
    pub checkpoint_bytes: u64,
    /// A fleet's shared store instead of the directory.
    #[serde(default)]
    pub etcd: Option<EtcdFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdFile {
    pub endpoints: Vec<String>,
    #[serde(default = "default_etcd_prefix")]
    pub prefix: String,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// A file with 64 hex characters (`openssl rand -hex 32`): private keys are encrypted in etcd.
    #[serde(default)]
    pub encryption_key_file: Option<String>,
    /// TLS to etcd (`https://` endpoints): the CA to trust, and a client certificate if etcd asks.
    #[serde(default)]
    pub tls: Option<EtcdTlsFile>,
    /// How long an operation keeps retrying through a member failure or a leader election before
    /// it fails (503 with `Retry-After` at the admin API).
    #[serde(default = "default_leader_wait_ms")]
    pub leader_wait_ms: u64,
    /// How often the member list is read again from the cluster.
    #[serde(default = "default_member_refresh_seconds")]
    pub member_refresh_seconds: u64,
}

fn default_leader_wait_ms() -> u64 {
    5_000
}

fn default_member_refresh_seconds() -> u64 {
    30
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdTlsFile {
    pub ca: String,
    #[serde(default)]
    pub cert: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
}

fn default_etcd_prefix() -> String {
    "/edgeward".into()
}

impl Default for StateFile {
    fn default() -> Self {
        StateFile {
            dir: default_state_dir(),
            checkpoint_bytes: default_checkpoint_bytes(),
            etcd: None,
        }
    }
}

fn default_checkpoint_bytes() -> u64 {
    crate::store::dir::CHECKPOINT_BYTES
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengesFile {
    /// How long a token put through the API is answered unless the call says otherwise.
    #[serde(default = "default_challenge_ttl")]
    pub ttl_seconds: u64,
}

impl Default for ChallengesFile {
    fn default() -> Self {
        ChallengesFile {
            ttl_seconds: default_challenge_ttl(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamsFile {
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    #[serde(default = "default_io_timeout_ms")]
    pub read_timeout_ms: u64,
    #[serde(default = "default_io_timeout_ms")]
    pub write_timeout_ms: u64,
    #[serde(default = "default_idle_timeout_seconds")]
    pub idle_timeout_seconds: u64,
    #[serde(default = "default_health_interval")]
    pub health_check_interval_seconds: u64,
    /// Absent: a TCP check every `health_check_interval_seconds`, one result flips the state.
    #[serde(default)]
    pub health_check: Option<HealthCheckFile>,
}

/// `edgeward.upstreams.health_check`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckFile {
    /// `null` (or absent): a TCP connect is the check.
    #[serde(default)]
    pub http_path: Option<String>,
    #[serde(default = "default_health_host")]
    pub host: String,
    #[serde(default = "default_expect_status")]
    pub expect_status: String,
    #[serde(default = "default_health_interval")]
    pub interval_seconds: u64,
    #[serde(default = "default_health_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_rise")]
    pub rise: usize,
    #[serde(default = "default_fall")]
    pub fall: usize,
    /// `fall` connect failures or 5xx answers of live traffic take a backend out too.
    #[serde(default = "yes")]
    pub passive: bool,
}

fn default_health_host() -> String {
    "localhost".into()
}
fn default_expect_status() -> String {
    "200-399".into()
}
fn default_health_timeout_ms() -> u64 {
    1000
}
fn default_rise() -> usize {
    2
}
fn default_fall() -> usize {
    3
}

impl Default for UpstreamsFile {
    fn default() -> Self {
        UpstreamsFile {
            connect_timeout_ms: default_connect_timeout_ms(),
            read_timeout_ms: default_io_timeout_ms(),
            write_timeout_ms: default_io_timeout_ms(),
            idle_timeout_seconds: default_idle_timeout_seconds(),
            health_check_interval_seconds: default_health_interval(),
            health_check: None,
        }
    }
}

fn default_io_timeout_ms() -> u64 {
    60_000
}
fn default_idle_timeout_seconds() -> u64 {
    60
}

fn yes() -> bool {
    true
}
fn default_http() -> Vec<ListenerFile> {
    vec![ListenerFile::Addr("0.0.0.0:8080".into())]
}
fn default_admin_listen() -> String {
    "127.0.0.1:9900".into()
}
fn default_token_file() -> Option<String> {
    Some("var/admin.token".into())
}
fn default_state_dir() -> String {
    "var/state".into()
}
fn default_challenge_ttl() -> u64 {
    3600
}
fn default_connect_timeout_ms() -> u64 {
    1000
}
fn default_health_interval() -> u64 {
    5
}
