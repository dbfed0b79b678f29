//! Integration tests: the real edgeward binary, real upstreams, real HTTP clients, on loopback.

mod admin;
mod certs;
mod challenges;
mod cli;
mod harness;
mod restart;
mod routing;
mod tls;
mod upgrade;
