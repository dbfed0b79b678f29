//! Configuration: read the file, parse it (types, unknown keys), validate it into the model. Three
//! steps, three functions; every error names the key it is about.

mod acme;
mod etcd;
mod limits;
mod schema;

use crate::model::{Domain, DomainPolicy, FieldError};
use crate::tls::{bundle, CertBundle, CertSource};
use pingora_core::server::configuration::ServerConf;
use schema::{EdgewardFile, FileRoot, ListenerFile};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {key}: {message}")]
    Key {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("{path}: {message}")]
    Other { path: PathBuf, message: String },
}

/// A listener, whether it terminates TLS, and whether it answers ACME challenges itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub addr: SocketAddr,
    pub tls: bool,
    pub intercept_acme_challenges: bool,
    /// Connections start with a PROXY protocol header, whose source is the client.
    pub proxy_protocol: bool,
}

/// The validated configuration.
#[derive(Debug)]
pub struct Config {
    pub path: PathBuf,
    pub server: ServerConf,
    /// HTTP listeners first, then HTTPS ones.
    pub listeners: Vec<Listener>,
    /// The port redirects to HTTPS point at (the first HTTPS listener's), when not 443.
    pub https_redirect_port: Option<u16>,
    pub default_certificate: Option<std::sync::Arc<CertBundle>>,
    pub admin_listen: SocketAddr,
    pub admin_token_file: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub checkpoint_bytes: u64,
    pub seeds: Vec<Domain>,
    pub challenge_ttl_seconds: u64,
    pub upstream_timeouts: crate::model::UpstreamTimeouts,
    pub health: crate::pools::health::HealthConfig,
    pub policy: DomainPolicy,
    pub acme: Option<crate::acme::AcmeConfig>,
    pub etcd: Option<crate::store::etcd::EtcdConfig>,
    /// Client-side timeouts: the request head, keep-alive, and at a graceful shutdown or upgrade how
    /// long a connection without a request in progress waits for one (then served with
    /// `Connection: close`).
    pub downstream: crate::http1::Limits,
    pub max_connections: usize,
    /// Peers whose forwarded headers are kept (appended to); from anyone else they are replaced.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub access_log: Option<crate::access_log::AccessLogConfig>,
}

/// Read, parse and validate `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let (root, server) = parse(&text).map_err(|(key, message)| err(path, key, message))?;
    validate(path, root, server)
}

fn err(path: &Path, key: String, message: String) -> ConfigError {
    if key.is_empty() || key == "." {
        ConfigError::Other {
            path: path.to_path_buf(),
            message,
        }
    } else {
        ConfigError::Key {
            path: path.to_path_buf(),
            key,
            message,
        }
    }
}

/// Parse the text into our schema and Pingora's `ServerConf`; errors are (key, message).
fn parse(text: &str) -> Result<(EdgewardFile, ServerConf), (String, String)> {
    let de = serde_yaml::Deserializer::from_str(text);
    let root: FileRoot = serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        (key, strip_location(&e.into_inner().to_string()))
    })?;
    let known = pingora_keys();
    for key in root.pingora.keys() {
        let name = key.as_str().unwrap_or("?");
        if !known.iter().any(|k| k == name) {
            return Err((
                name.to_string(),
                "unknown top-level key (Pingora's server keys stay at the top level; edgeward's \
                 settings go under `edgeward:`)"
                    .into(),
            ));
        }
    }
    let server = ServerConf::from_yaml(text).map_err(|e| (String::new(), e.to_string()))?;
    let edgeward = root
        .edgeward
        .ok_or_else(|| ("edgeward".to_string(), "section is missing".to_string()))?;
    Ok((edgeward, server))
}

/// Pingora's top-level keys, taken from `ServerConf` itself so they follow the Pingora version.
fn pingora_keys() -> Vec<String> {
    let conf = ServerConf::new().expect("pingora's default configuration parses");
    match serde_yaml::to_value(&conf) {
        Ok(serde_yaml::Value::Mapping(m)) => m
            .keys()
            .filter_map(|k| k.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

fn strip_location(msg: &str) -> String {
    // serde_yaml appends " at line L column C"; keep it, it helps, but drop duplicated prefixes.
    msg.trim().to_string()
}

fn validate(path: &Path, f: EdgewardFile, server: ServerConf) -> Result<Config, ConfigError> {
    let e = |key: String, message: String| err(path, key, message);
    let mut listeners: Vec<Listener> = Vec::new();
    for (tls, list, name) in [(false, &f.http, "http"), (true, &f.https, "https")] {
        for (i, l) in list.iter().enumerate() {
            let (addr, intercept, proxy_protocol, key) = match l {
                ListenerFile::Addr(a) => (a, None, false, format!("edgeward.{name}[{i}]")),
                ListenerFile::Full(o) => (
                    &o.listen,
                    o.intercept_acme_challenges,
                    o.proxy_protocol,
                    format!("edgeward.{name}[{i}].listen"),
                ),
            };
            let addr = parse_addr(addr).map_err(|m| e(key.clone(), m))?;
            if listeners.iter().any(|l| l.addr == addr) {
                return Err(e(key, format!("{addr} is listed twice")));
            }
            listeners.push(Listener {
                addr,
                tls,
                intercept_acme_challenges: intercept.unwrap_or(f.intercept_acme_challenges),
                proxy_protocol,
            });
        }
    }
    if listeners.is_empty() {
        return Err(e(
            "edgeward.http".into(),
            "no listener: give at least one address".into(),
        ));
    }
    if f.https_redirect_port == Some(0) {
        return Err(e(
            "edgeward.https_redirect_port".into(),
            "must be a port (1 to 65535)".into(),
        ));
    }
    let https_redirect_port = f
        .https_redirect_port
        .or_else(|| listeners.iter().find(|l| l.tls).map(|l| l.addr.port()))
        .filter(|p| *p != 443);
    let default_certificate = match &f.tls.default_certificate {
        Some(files) => Some(std::sync::Arc::new(
            load_default_cert(files).map_err(|(k, m)| e(k, m))?,
        )),
        None => None,
    };
    let admin_listen =
        parse_addr(&f.admin.listen).map_err(|m| e("edgeward.admin.listen".into(), m))?;
    if listeners.iter().any(|l| l.addr == admin_listen) {
        return Err(e(
            "edgeward.admin.listen".into(),
            format!("{admin_listen} is also a proxy listener"),
        ));
    }
    if f.state.dir.trim().is_empty() {
        return Err(e("edgeward.state.dir".into(), "must not be empty".into()));
    }
    let ttl = f.challenges.ttl_seconds;
    if ttl == 0 || ttl > crate::model::challenge::MAX_TTL_SECONDS {
        return Err(e(
            "edgeward.challenges.ttl_seconds".into(),
            format!(
                "must be between 1 and {}",
                crate::model::challenge::MAX_TTL_SECONDS
            ),
        ));
    }
    let upstream_timeouts = limits::upstreams(&f.upstreams).map_err(|(k, m)| e(k, m))?;
    let health = limits::health(&f.upstreams).map_err(|(k, m)| e(k, m))?;
    let (downstream, max_connections) =
        limits::downstream(&f.downstream, &f.shutdown).map_err(|(k, m)| e(k, m))?;
    let trusted_proxies = limits::trusted_proxies(&f.trusted_proxies).map_err(|(k, m)| e(k, m))?;
    let access_log = match &f.access_log {
        Some(a) => Some(access_log(a).map_err(|(k, m)| e(k, m))?),
        None => None,
    };
    if !(4096..=1 << 30).contains(&f.state.checkpoint_bytes) {
        return Err(e(
            "edgeward.state.checkpoint_bytes".into(),
            "must be between 4096 and 1073741824".into(),
        ));
    }
    let etcd = match &f.state.etcd {
        Some(x) => Some(etcd::etcd(x).map_err(|(k, m)| e(k, m))?),
        None => None,
    };
    let acme = match &f.acme {
        Some(a) => Some(acme::acme(a).map_err(|(k, m)| e(k, m))?),
        None => None,
    };
    // In a fleet, `tls: "auto"` is accepted on every node: the nodes with an `acme` section issue.
    // A fleet node without `acme` cannot know the issuing nodes' challenges: it accepts them all.
    let fleet_only = acme.is_none() && etcd.is_some();
    let policy = DomainPolicy {
        acme_enabled: acme.is_some() || etcd.is_some(),
        dns01: acme.as_ref().is_some_and(|a| a.dns01.is_some()) || fleet_only,
        tls_alpn01: listeners.iter().any(|l| l.tls) || fleet_only,
    };
    let mut seeds: Vec<Domain> = Vec::new();
    for (i, d) in f.domains.into_iter().enumerate() {
        let key = format!("edgeward.domains[{i}]");
        let domain = d.validate(None, policy).map_err(|fe: FieldError| {
            let fe = fe.within(&key);
            e(fe.field, fe.message)
        })?;
        if seeds.iter().any(|s| s.host == domain.host) {
            return Err(e(
                format!("{key}.host"),
                format!("`{}` is listed twice", domain.host),
            ));
        }
        seeds.push(domain);
    }
    Ok(Config {
        path: path.to_path_buf(),
        server,
        listeners,
        https_redirect_port,
        default_certificate,
        admin_listen,
        admin_token_file: f
            .admin
            .token_file
            .filter(|s| !s.is_empty())
            .map(PathBuf::from),
        state_dir: PathBuf::from(f.state.dir),
        checkpoint_bytes: f.state.checkpoint_bytes,
        seeds,
        challenge_ttl_seconds: ttl,
        upstream_timeouts,
        health,
        policy,
        acme,
        etcd,
        downstream,
        max_connections,
        trusted_proxies,
        access_log,
    })
}

fn access_log(
    a: &schema::AccessLogFile,
) -> Result<crate::access_log::AccessLogConfig, (String, String)> {
    use crate::access_log::{AccessLogConfig, Target};
    let path = a.path.trim();
    let target = match path {
        "" => {
            return Err((
                "edgeward.access_log.path".into(),
                "must name a file, or `-` for stdout".into(),
            ))
        }
        "-" => Target::Stdout,
        p if p.ends_with('/') => {
            return Err((
                "edgeward.access_log.path".into(),
                format!("`{p}` is a directory, not a file"),
            ))
        }
        p => Target::File(PathBuf::from(p)),
    };
    Ok(AccessLogConfig {
        target,
        format: a.format,
    })
}

/// Read and parse the default certificate; errors name `edgeward.tls.default_certificate.chain|key`.
fn load_default_cert(files: &schema::CertFiles) -> Result<CertBundle, (String, String)> {
    let key = "edgeward.tls.default_certificate";
    let read = |which: &str, path: &str| {
        std::fs::read_to_string(path)
            .map_err(|err| (format!("{key}.{which}"), format!("{path}: {err}")))
    };
    let (chain, private) = (read("chain", &files.chain)?, read("key", &files.key)?);
    let b = bundle::parse_pem("default".into(), &chain, &private, CertSource::Manual).map_err(
        |err| {
            let which = if err.field() == "key_pem" {
                "key"
            } else {
                "chain"
            };
            (format!("{key}.{which}"), err.to_string())
        },
    )?;
    if b.not_after <= crate::model::unix_now() as i64 {
        return Err((
            format!("{key}.chain"),
            format!(
                "the certificate expired at {}",
                crate::tls::rfc3339(b.not_after)
            ),
        ));
    }
    Ok(b)
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("`{s}` is not an IP:port address (e.g. 0.0.0.0:8080 or [::]:8080)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn check(yaml: &str) -> Result<Config, String> {
        let (root, server) = parse(yaml).map_err(|(k, m)| format!("{k}: {m}"))?;
        validate(Path::new("test.yaml"), root, server).map_err(|e| e.to_string())
    }

    #[test]
    fn etcd_settings_are_checked_and_named() {
        let ok = check(
            "edgeward:\n  state:\n    etcd: {endpoints: [\"http://127.0.0.1:2379\", \"etcd-2:2379\"]}\n",
        )
        .unwrap();
        let e = ok.etcd.unwrap();
        assert_eq!(e.leader_wait, Duration::from_secs(5));
        assert_eq!(e.member_refresh, Duration::from_secs(30));
        for (setting, key) in [
            ("endpoints: []", "edgeward.state.etcd.endpoints"),
            (
                "endpoints: [\"127.0.0.1\"]",
                "edgeward.state.etcd.endpoints[0]",
            ),
            (
                "endpoints: [\"etcd:2379\", \"unix://x:1\"]",
                "edgeward.state.etcd.endpoints[1]",
            ),
            (
                "endpoints: [\"http://a:0\"]",
                "edgeward.state.etcd.endpoints[0]",
            ),
            (
                "endpoints: [\"http://a:1\"], leader_wait_ms: 0",
                "edgeward.state.etcd.leader_wait_ms",
            ),
            (
                "endpoints: [\"http://a:1\"], leader_wait_ms: 600000",
                "edgeward.state.etcd.leader_wait_ms",
            ),
            (
                "endpoints: [\"http://a:1\"], member_refresh_seconds: 0",
                "edgeward.state.etcd.member_refresh_seconds",
            ),
            (
                "endpoints: [\"http://a:1\"], prefix: \"x\"",
                "edgeward.state.etcd.prefix",
            ),
            (
                "endpoints: [\"http://a:1\"], user: u",
                "edgeward.state.etcd.user",
            ),
        ] {
            let err =
                check(&format!("edgeward:\n  state:\n    etcd: {{{setting}}}\n")).unwrap_err();
            assert!(err.contains(key), "{setting}: {err}");
        }
        let c = check(
            "edgeward:\n  state:\n    etcd: {endpoints: [\"http://a:1\"], leader_wait_ms: 1500, member_refresh_seconds: 5}\n",
        )
        .unwrap()
        .etcd
        .unwrap();
        assert_eq!(
            (c.leader_wait, c.member_refresh),
            (Duration::from_millis(1500), Duration::from_secs(5))
        );
    }

    #[test]
    fn minimal_file_gets_defaults() {
        let c = check("threads: 2\nedgeward:\n  http: [\"127.0.0.1:8080\"]\n").unwrap();
        assert_eq!(c.server.threads, 2);
        assert_eq!(c.listeners[0].addr.port(), 8080);
        assert!(c.listeners[0].intercept_acme_challenges);
        assert_eq!(c.admin_listen.to_string(), "127.0.0.1:9900");
        assert_eq!(c.challenge_ttl_seconds, 3600);
    }

    #[test]
    fn listener_objects_override_interception() {
        let c = check(
            "edgeward:\n  intercept_acme_challenges: false\n  http:\n    - \"127.0.0.1:1\"\n    - {listen: \"127.0.0.1:2\", intercept_acme_challenges: true}\n",
        )
        .unwrap();
        assert!(!c.listeners[0].intercept_acme_challenges);
        assert!(c.listeners[1].intercept_acme_challenges);
    }

    #[test]
    fn errors_name_the_key() {
        let e = check("edgeward:\n  admin:\n    listn: x\n").unwrap_err();
        assert!(e.contains("listn"), "{e}");
        let e = check("edgeward:\n  bogus: 1\n").unwrap_err();
        assert!(e.contains("bogus"), "{e}");
        let e = check("thread: 2\nedgeward: {}\n").unwrap_err();
        assert!(e.starts_with("thread:"), "{e}");
        let e = check("edgeward:\n  http: [\"nope\"]\n").unwrap_err();
        assert!(e.contains("edgeward.http[0]"), "{e}");
        let e = check("edgeward:\n  admin: {listen: 5}\n").unwrap_err();
        assert!(e.contains("edgeward.admin.listen"), "{e}");
        let e =
            check("edgeward:\n  domains:\n    - {host: a.com, upstreams: [\"x\"]}\n").unwrap_err();
        assert!(e.contains("edgeward.domains[0].upstreams[0]"), "{e}");
        let e = check("edgeward:\n  domains:\n    - {upstreams: [\"127.0.0.1:1\"]}\n").unwrap_err();
        assert!(e.contains("edgeward.domains[0].host"), "{e}");
        let e = check("edgeward:\n  challenges: {ttl_seconds: 0}\n").unwrap_err();
        assert!(e.contains("edgeward.challenges.ttl_seconds"), "{e}");
        let e = check("edgeward:\n  acme: {directory: \"http://x\"}\n").unwrap_err();
        assert!(e.contains("edgeward.acme.directory"), "{e}");
        let e = check("edgeward:\n  acme: {directory: \"https://x\", key_type: \"dsa\"}\n")
            .unwrap_err();
        assert!(e.contains("edgeward.acme.key_type"), "{e}");
        let e =
            check("edgeward:\n  acme: {directory: \"https://x\", renew_before_fraction: 1.5}\n")
                .unwrap_err();
        assert!(e.contains("renew_before_fraction"), "{e}");
        let e = check("edgeward:\n  acme: {directory: \"https://x\", contact: [\"ops@x\"]}\n")
            .unwrap_err();
        assert!(e.contains("edgeward.acme.contact[0]"), "{e}");
        let e = check("edgeward:\n  acme: {directory: \"https://x\", retry: {min_seconds: 9, max_seconds: 1}}\n").unwrap_err();
        assert!(e.contains("edgeward.acme.retry"), "{e}");
        let c = check("edgeward:\n  acme: {directory: \"https://x\"}\n").unwrap();
        assert!(c.policy.acme_enabled);
        let e = check("edgeward:\n  state: {checkpoint_bytes: 100}\n").unwrap_err();
        assert!(e.contains("edgeward.state.checkpoint_bytes"), "{e}");
        let e = check("edgeward:\n  shutdown: {request_wait_ms: 60001}\n").unwrap_err();
        assert!(e.contains("edgeward.shutdown.request_wait_ms"), "{e}");
        let e = check("edgeward:\n  shutdown: {request_wait: 5}\n").unwrap_err();
        assert!(e.contains("request_wait"), "{e}");
        for (yaml, key) in [
            (
                "upstreams: {read_timeout_ms: 0}",
                "edgeward.upstreams.read_timeout_ms",
            ),
            (
                "upstreams: {write_timeout_ms: 3600001}",
                "edgeward.upstreams.write_timeout_ms",
            ),
            (
                "upstreams: {idle_timeout_seconds: 0}",
                "edgeward.upstreams.idle_timeout_seconds",
            ),
            (
                "upstreams: {connect_timeout_ms: 0}",
                "edgeward.upstreams.connect_timeout_ms",
            ),
            ("upstreams: {read_timeout: 5}", "read_timeout"),
            (
                "downstream: {request_header_timeout_ms: 0}",
                "edgeward.downstream.request_header_timeout_ms",
            ),
            (
                "downstream: {keepalive_timeout_seconds: 3601}",
                "edgeward.downstream.keepalive_timeout_seconds",
            ),
            (
                "downstream: {max_connections: 0}",
                "edgeward.downstream.max_connections",
            ),
            ("downstream: {max_connections: -1}", "max_connections"),
            (
                "trusted_proxies: [\"10.0.0.0/40\"]",
                "edgeward.trusted_proxies[0]",
            ),
            ("trusted_proxies: \"10.0.0.0/8\"", "trusted_proxies"),
        ] {
            let e = check(&format!("edgeward:\n  {yaml}\n")).unwrap_err();
            assert!(e.contains(key), "{yaml}: {e}");
        }
        let c = check(
            "edgeward:\n  upstreams: {read_timeout_ms: 1500}\n  downstream: {keepalive_timeout_seconds: 0}\n  trusted_proxies: [\"10.0.0.0/8\"]\n",
        )
        .unwrap();
        assert_eq!(c.upstream_timeouts.read, Duration::from_millis(1500));
        assert_eq!(c.downstream.keepalive, Duration::ZERO);
        assert_eq!(c.downstream.header_timeout, Duration::from_secs(10));
        assert_eq!(c.max_connections, 100_000);
        assert_eq!(c.trusted_proxies.len(), 1);
        let e = check("threads: 2\n").unwrap_err();
        assert!(e.contains("edgeward"), "{e}");
    }
}
