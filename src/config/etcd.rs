//! `edgeward.state.etcd`: the fleet's store. Errors are (key, message).

use super::schema::EtcdFile;
use crate::store::etcd::{EtcdConfig, EtcdTls};
use std::time::Duration;

type KeyError = (String, String);

/// Longest `leader_wait_ms`: a minute (an admin request waits that long at most).
const MAX_LEADER_WAIT_MS: u64 = 60_000;
/// Longest `member_refresh_seconds`: an hour.
const MAX_MEMBER_REFRESH_SECONDS: u64 = 3_600;

pub fn etcd(x: &EtcdFile) -> Result<EtcdConfig, KeyError> {
    if !(100..=MAX_LEADER_WAIT_MS).contains(&x.leader_wait_ms) {
        return Err((
            "edgeward.state.etcd.leader_wait_ms".into(),
            format!("must be between 100 and {MAX_LEADER_WAIT_MS}"),
        ));
    }
    if !(1..=MAX_MEMBER_REFRESH_SECONDS).contains(&x.member_refresh_seconds) {
        return Err((
            "edgeward.state.etcd.member_refresh_seconds".into(),
            format!("must be between 1 and {MAX_MEMBER_REFRESH_SECONDS}"),
        ));
    }
    if x.endpoints.is_empty() {
        return Err((
            "edgeward.state.etcd.endpoints".into(),
            "needs at least one endpoint".into(),
        ));
    }
    for (i, ep) in x.endpoints.iter().enumerate() {
        endpoint(ep).map_err(|m| (format!("edgeward.state.etcd.endpoints[{i}]"), m))?;
    }
    if !x.prefix.starts_with('/') || x.prefix.len() < 2 {
        return Err((
            "edgeward.state.etcd.prefix".into(),
            "must start with `/` and name something".into(),
        ));
    }
    let user = match (&x.user, &x.password) {
        (Some(u), Some(p)) => Some((u.clone(), p.clone())),
        (None, None) => None,
        _ => {
            return Err((
                "edgeward.state.etcd.user".into(),
                "user and password go together".into(),
            ))
        }
    };
    let encryption_key = match &x.encryption_key_file {
        Some(path) => {
            let key = "edgeward.state.etcd.encryption_key_file".to_string();
            let text = std::fs::read_to_string(path)
                .map_err(|err| (key.clone(), format!("{path}: {err}")))?;
            let bytes = hex::decode(text.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| {
                    (
                        key,
                        format!("{path}: must hold 64 hex characters (openssl rand -hex 32)"),
                    )
                })?;
            Some(bytes)
        }
        None => None,
    };
    let tls = match &x.tls {
        Some(t) => {
            let read = |name: &str, path: &str| {
                std::fs::read(path).map_err(|err| {
                    (
                        format!("edgeward.state.etcd.tls.{name}"),
                        format!("{path}: {err}"),
                    )
                })
            };
            let identity = match (&t.cert, &t.key) {
                (Some(c), Some(k)) => Some((read("cert", c)?, read("key", k)?)),
                (None, None) => None,
                _ => {
                    return Err((
                        "edgeward.state.etcd.tls.cert".into(),
                        "cert and key go together".into(),
                    ))
                }
            };
            Some(EtcdTls {
                ca: read("ca", &t.ca)?,
                identity,
            })
        }
        None => None,
    };
    Ok(EtcdConfig {
        endpoints: x.endpoints.clone(),
        prefix: x.prefix.clone(),
        user,
        encryption_key,
        tls,
        leader_wait: Duration::from_millis(x.leader_wait_ms),
        member_refresh: Duration::from_secs(x.member_refresh_seconds),
    })
}

/// An endpoint as etcdctl takes it: `host:port` (http, or https with `tls`), or an http(s):// URL.
fn endpoint(ep: &str) -> Result<(), String> {
    let authority = match ep.split_once("://") {
        Some(("http" | "https", rest)) => rest.trim_end_matches('/'),
        Some((scheme, _)) => return Err(format!("`{ep}`: scheme `{scheme}` is not http or https")),
        None => ep,
    };
    let port = authority
        .rsplit_once(':')
        .filter(|(host, _)| !host.is_empty() && !host.contains('/'))
        .and_then(|(_, port)| port.parse::<u16>().ok())
        .filter(|p| *p > 0);
    match port {
        Some(_) => Ok(()),
        None => Err(format!(
            "`{ep}` must be host:port or an http(s)://host:port URL"
        )),
    }
}
