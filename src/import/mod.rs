//! Migration from other proxies' configurations into one admin batch (`edgeward import ...`).

pub mod haproxy;
