//! edgeward: an edge reverse proxy on Pingora for hosting platforms with many thousands of domains.
//!
//! Data flows left to right, I/O stays at the edges:
//! admin API / seed list -> `control` (checks, then `store` for durability) -> in-memory `State`
//! (`routes`, `challenges`) -> `proxy` (challenge responder, Host routing, upstream `pools`).
//!
//! - `config`: the YAML file (Pingora keys at the top, ours under `edgeward:`), validated.
//! - `host`, `domain`, `challenges`: the objects and their validation.
//! - `routes`, `pools`: what the proxy reads per request; lookups only.
//! - `proxy`: Pingora's `ProxyHttp`, with `proxy::front` answering challenge hits on HTTP/1 connections
//!   before Pingora's session and handing everything else to it.
//! - `control`: the single writer; every change is durable before it is live.
//! - `store`: the durable truth (`DirStore` by default).
//! - `tls`: certificates parsed once when published, picked per SNI in the TLS callback.
//! - `admin`: the JSON API; `client`: the operator CLI that talks to it.
//! - `app`: assembling the Pingora server.

pub mod acme;
pub mod admin;
pub mod app;
pub mod challenges;
pub mod client;
pub mod config;
pub mod control;
pub mod domain;
pub mod host;
pub mod metrics;
pub mod pools;
pub mod proxy;
pub mod routes;
pub mod store;
pub mod tls;
