//! edgeward: an edge reverse proxy on Pingora for hosting platforms with many thousands of domains.
//!
//! Data flows left to right, I/O stays at the edges:
//! admin API / seed list / ACME -> `control` (checks, then `store` for durability) -> `state` (routes,
//! challenges, certificates) -> `proxy` and the TLS callback (lookups only).
//!
//! Layers, bottom up (imports point down):
//! - `model`: the records everyone shares (`Domain`, `Challenge`, `CertRecord`, ACME account and
//!   budget, `Change`) and their validation.
//! - `store`: the durable truth (`DirStore`: a write-ahead log and object files; `EtcdStore` for a
//!   fleet). Imports only `model` (and `metrics`, a leaf that imports nothing of ours).
//! - `pools`, `tls`: upstream pools with their health, certificates parsed once when published.
//! - `state`: the tables the hot paths read, with read-only handles (`state::Reader`).
//! - `proxy`: Pingora's `ProxyHttp`, with `proxy::front` reading each HTTP/1 request head first
//!   (after the PROXY protocol header, `proxy::proxy_protocol`); `access_log` writes a line per
//!   request from a thread of its own.
//! - `control`: the single writer (commit, apply, restore, the upgrade hand-over, the fleet watch);
//!   it keeps `events`, the ring of recent activity the API and the console show.
//! - `acme`, `admin` (the JSON API), `client` (the operator CLI), `config` (the YAML file).
//! - `app`: assembling the Pingora server.

pub mod access_log;
pub mod acme;
pub mod admin;
pub mod app;
pub mod client;
pub mod config;
pub mod control;
pub mod events;
pub mod http1;
pub mod import;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod pools;
pub mod proxy;
pub mod state;
pub mod store;
pub mod tls;
