//! Integration tests: the real edgeward binary, real upstreams, real HTTP clients, on loopback.

mod access_log;
mod acme;
mod acme_limits;
mod admin;
mod certs;
mod challenges;
mod cli;
mod durability;
mod edge;
mod etcd;
mod fleet;
mod fleet_ha;
mod haproxy;
mod harness;
mod health;
mod import;
mod lists;
mod openapi;
mod pebble;
mod proxy_protocol;
mod restart;
mod routing;
mod systemd;
mod tls;
mod upgrade;
