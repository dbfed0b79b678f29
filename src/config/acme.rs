//! The `edgeward.acme` section: the CA, the budget and schedule, and DNS-01 (`dns01`: RFC 2136 with a
//! TSIG key from a file, or a hook command; the resolvers checked before validation).

use super::schema;
use crate::acme::dns::{hook::Hook, rfc2136::Rfc2136, Dns01, Provider};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The validated `edgeward.acme` section.
pub fn acme(a: &schema::AcmeFile) -> Result<crate::acme::AcmeConfig, (String, String)> {
    let k = |s: &str| format!("edgeward.acme.{s}");
    if !a.directory.starts_with("https://") {
        return Err((
            k("directory"),
            format!("`{}` is not an https:// URL", a.directory),
        ));
    }
    for (i, c) in a.contact.iter().enumerate() {
        if !c.starts_with("mailto:") {
            return Err((
                format!("edgeward.acme.contact[{i}]"),
                format!("`{c}` must be a mailto: URL"),
            ));
        }
    }
    let ca_bundle = match &a.ca_bundle {
        Some(p) => Some(std::fs::read(p).map_err(|err| (k("ca_bundle"), format!("{p}: {err}")))?),
        None => None,
    };
    if !(a.renew_before_fraction > 0.0 && a.renew_before_fraction < 1.0) {
        return Err((
            k("renew_before_fraction"),
            "must be between 0 and 1 (exclusive)".into(),
        ));
    }
    if a.max_orders_per_window == 0 {
        return Err((k("max_orders_per_window"), "must be at least 1".into()));
    }
    if a.order_window_seconds <= 0 {
        return Err((k("order_window_seconds"), "must be above 0".into()));
    }
    if a.max_concurrent_orders == 0 {
        return Err((k("max_concurrent_orders"), "must be at least 1".into()));
    }
    if a.retry.min_seconds == 0 || a.retry.min_seconds > a.retry.max_seconds {
        return Err((k("retry"), "needs 0 < min_seconds <= max_seconds".into()));
    }
    if a.order_timeout_seconds == 0 {
        return Err((k("order_timeout_seconds"), "must be above 0".into()));
    }
    Ok(crate::acme::AcmeConfig {
        directory: a.directory.clone(),
        contact: a.contact.clone(),
        ca_bundle,
        key_type: a.key_type,
        renew_before_fraction: a.renew_before_fraction,
        max_orders_per_window: a.max_orders_per_window,
        order_window_seconds: a.order_window_seconds,
        max_concurrent_orders: a.max_concurrent_orders,
        retry_min_seconds: a.retry.min_seconds,
        retry_max_seconds: a.retry.max_seconds,
        order_timeout_seconds: a.order_timeout_seconds,
        dns01: a.dns01.as_ref().map(dns01).transpose()?.map(Arc::new),
        profile: profile(a.profile.as_deref())?,
    })
}

fn dns01(d: &schema::Dns01File) -> Result<Dns01, (String, String)> {
    let k = |s: &str| format!("edgeward.acme.dns01.{s}");
    let provider = match (&d.rfc2136, &d.hook) {
        (Some(r), None) => {
            let kr = |s: &str| k(&format!("rfc2136.{s}"));
            let server = dns_server(&r.server).map_err(|m| (kr("server"), m))?;
            let secret = std::fs::read_to_string(&r.tsig_secret_file).map_err(|err| {
                (
                    kr("tsig_secret_file"),
                    format!("{}: {err}", r.tsig_secret_file),
                )
            })?;
            let r = Rfc2136::new(server, &r.tsig_key_name, &r.tsig_algorithm, &secret)
                .map_err(|(field, m)| (kr(field), m))?;
            Provider::Rfc2136(r)
        }
        (None, Some(h)) => {
            let path = std::path::PathBuf::from(&h.command);
            if !path.is_absolute() {
                return Err((
                    k("hook.command"),
                    format!("`{}` must be an absolute path", h.command),
                ));
            }
            if !(1..=600).contains(&h.timeout_seconds) {
                return Err((
                    k("hook.timeout_seconds"),
                    "must be between 1 and 600".into(),
                ));
            }
            Provider::Hook(Hook {
                command: path,
                timeout: Duration::from_secs(h.timeout_seconds),
            })
        }
        (Some(_), Some(_)) => {
            return Err((
                k("hook"),
                "`rfc2136` and `hook` are alternatives: configure one".into(),
            ))
        }
        (None, None) => {
            return Err((
                "edgeward.acme.dns01".into(),
                "needs `rfc2136` or `hook`".into(),
            ))
        }
    };
    if !(1..=3600).contains(&d.propagation_timeout_seconds) {
        return Err((
            k("propagation_timeout_seconds"),
            "must be between 1 and 3600".into(),
        ));
    }
    let resolvers = d
        .resolvers
        .iter()
        .enumerate()
        .map(|(i, r)| dns_server(r).map_err(|m| (k(&format!("resolvers[{i}]")), m)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Dns01 {
        provider,
        propagation_timeout: Duration::from_secs(d.propagation_timeout_seconds),
        resolvers,
    })
}

/// `IP:port`, or an IP alone for port 53.
fn dns_server(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    s.parse::<SocketAddr>()
        .or_else(|_| {
            s.parse::<std::net::IpAddr>()
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .map_err(|_| format!("`{s}` is not an IP or IP:port address (names are not resolved)"))
}

/// A profile name as RFC 8555 profiles (draft-aaron-acme-profiles) spell them.
fn profile(p: Option<&str>) -> Result<Option<String>, (String, String)> {
    match p {
        None => Ok(None),
        Some(p)
            if !p.is_empty()
                && p.len() <= 64
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            Ok(Some(p.to_string()))
        }
        Some(p) => Err((
            "edgeward.acme.profile".into(),
            format!("`{p}` is not a profile name (letters, digits, - and _)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> Result<crate::acme::AcmeConfig, (String, String)> {
        let file: schema::AcmeFile =
            serde_yaml::from_str(yaml).map_err(|e| ("parse".into(), e.to_string()))?;
        acme(&file)
    }

    #[test]
    fn dns01_settings_are_checked_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("tsig.key");
        std::fs::write(
            &key,
            "key \"k\" {\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0\";\n};\n",
        )
        .unwrap();
        let rfc = |extra: &str| {
            format!(
                "directory: \"https://x\"\ndns01:\n  rfc2136: {{server: \"127.0.0.1:5353\", tsig_key_name: \"k\", tsig_secret_file: \"{}\"{extra}}}\n",
                key.display()
            )
        };
        let c = check(&rfc("")).unwrap();
        let d = c.dns01.unwrap();
        assert!(matches!(&d.provider, Provider::Rfc2136(r) if r.server.port() == 5353));
        assert_eq!(d.propagation_timeout, Duration::from_secs(120));
        assert!(!format!("{d:?}").contains("c2VjcmV0"), "no secret in Debug");
        let field = |yaml: &str| check(yaml).unwrap_err().0;
        assert_eq!(
            field(&rfc(", tsig_algorithm: \"hmac-md5\"")),
            "edgeward.acme.dns01.rfc2136.tsig_algorithm"
        );
        let missing = "directory: \"https://x\"\ndns01:\n  rfc2136: {server: \"127.0.0.1\", tsig_key_name: \"k\", tsig_secret_file: \"/nonexistent\"}\n";
        assert_eq!(
            field(missing),
            "edgeward.acme.dns01.rfc2136.tsig_secret_file"
        );
        let bad_server = rfc("").replace("127.0.0.1:5353", "ns1.example");
        assert_eq!(field(&bad_server), "edgeward.acme.dns01.rfc2136.server");
        assert_eq!(
            field("directory: \"https://x\"\ndns01: {}\n"),
            "edgeward.acme.dns01"
        );
        let both = rfc("").replace("dns01:\n", "dns01:\n  hook: {command: \"/bin/true\"}\n");
        assert_eq!(field(&both), "edgeward.acme.dns01.hook");
        let relative = "directory: \"https://x\"\ndns01:\n  hook: {command: \"hook.sh\"}\n";
        assert_eq!(field(relative), "edgeward.acme.dns01.hook.command");
        let resolvers = "directory: \"https://x\"\ndns01:\n  hook: {command: \"/bin/true\"}\n  resolvers: [\"192.0.2.53\", \"x\"]\n";
        assert_eq!(field(resolvers), "edgeward.acme.dns01.resolvers[1]");
        let timeout = "directory: \"https://x\"\ndns01:\n  hook: {command: \"/bin/true\"}\n  propagation_timeout_seconds: 0\n";
        assert_eq!(
            field(timeout),
            "edgeward.acme.dns01.propagation_timeout_seconds"
        );
        let ok = check("directory: \"https://x\"\ndns01:\n  hook: {command: \"/bin/true\"}\n  resolvers: [\"192.0.2.53\"]\n").unwrap();
        assert_eq!(ok.dns01.unwrap().resolvers[0].port(), 53);
        assert!(
            check("directory: \"https://x\"\ndns01:\n  rfc2136: {server: \"127.0.0.1\"}\n")
                .is_err()
        );
    }

    #[test]
    fn profile_names_are_checked() {
        let c = check("directory: \"https://x\"\nprofile: shortlived\n").unwrap();
        assert_eq!(c.profile.as_deref(), Some("shortlived"));
        let e = check("directory: \"https://x\"\nprofile: \"short lived\"\n").unwrap_err();
        assert_eq!(e.0, "edgeward.acme.profile");
    }
}
