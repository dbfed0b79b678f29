//! `edgeward import haproxy`: what a hosting platform's HAProxy holds, as edgeward domains.
//!
//! Read: `backend` (and `listen`) sections' `server NAME IP:PORT ...` lines; host routing in
//! `frontend`/`listen` sections as `use_backend BE if { hdr(host) -i H... }`, `use_backend BE if ACL`
//! with `acl ACL hdr(host) -i H...` (also `req.hdr(host)`, `hdr_str`), and map lookups
//! `use_backend %[req.hdr(host),lower,map(FILE[,DEFAULT])]` (also `map_str`) with the map's `host
//! backend` lines; certificates from a `crt-list` (each line's PEM holds the chain and the key).
//! Everything else that affects routing is listed as not translated, never dropped silently: a
//! `default_backend`, ACLs that are not exact host matches, servers named by DNS name, server options
//! edgeward has no equivalent for, unknown backends.

use openssl::nid::Nid;
use openssl::x509::X509;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// What was read, and what could not be translated.
#[derive(Debug, Default)]
pub struct Plan {
    /// host -> upstreams.
    pub domains: BTreeMap<String, Vec<SocketAddr>>,
    /// host -> (chain PEM, key PEM), for hosts that are domains.
    pub certificates: BTreeMap<String, (String, String)>,
    /// `file:line: text: why`.
    pub untranslated: Vec<String>,
}

impl Plan {
    /// The admin batch: domains (tls manual where a certificate came with them), then certificates.
    pub fn ops(&self) -> Vec<Value> {
        let mut ops: Vec<Value> = self
            .domains
            .iter()
            .map(|(host, ups)| {
                let tls = if self.certificates.contains_key(host) {
                    "manual"
                } else {
                    "off"
                };
                let ups: Vec<String> = ups.iter().map(|a| a.to_string()).collect();
                json!({"op": "put_domain", "host": host, "upstreams": ups, "tls": tls})
            })
            .collect();
        ops.extend(self.certificates.iter().map(|(host, (chain, key))| {
            json!({"op": "put_certificate", "host": host, "chain_pem": chain, "key_pem": key})
        }));
        ops
    }
}

/// Where map files named by the configuration are read from: `--map FILE` wins for its file name.
pub struct Inputs<'a> {
    pub config: &'a Path,
    pub maps: &'a [PathBuf],
    pub crt_list: Option<&'a Path>,
}

struct Line<'a> {
    no: usize,
    words: Vec<&'a str>,
    text: &'a str,
}

fn lines(text: &str) -> impl Iterator<Item = Line<'_>> {
    text.lines().enumerate().filter_map(|(i, l)| {
        let t = l.split_once('#').map_or(l, |(a, _)| a).trim();
        (!t.is_empty()).then(|| Line {
            no: i + 1,
            words: t.split_whitespace().collect(),
            text: t,
        })
    })
}

const HOST_FETCHES: [&str; 3] = ["hdr(host)", "req.hdr(host)", "hdr_str(host)"];
/// Server options that change nothing edgeward would do differently (health checks are edgeward's own).
const HARMLESS: [&str; 6] = ["check", "inter", "rise", "fall", "maxconn", "resolvers"];

/// Read the configuration, the maps it uses and the crt-list into a plan.
pub fn plan(inputs: &Inputs) -> Result<Plan, String> {
    let path = inputs.config.display().to_string();
    let text = std::fs::read_to_string(inputs.config).map_err(|e| format!("{path}: {e}"))?;
    let mut plan = Plan::default();
    let mut note = |no: usize, line: &str, why: &str| {
        plan.untranslated
            .push(format!("{path}:{no}: {line}: {why}"));
    };
    let mut backends: BTreeMap<String, Vec<SocketAddr>> = BTreeMap::new();
    // (backend, host) in order of appearance; the first rule for a host wins, as in HAProxy.
    let mut routes: Vec<(String, String, usize)> = Vec::new();
    let mut acls: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut section = ("", String::new());
    for l in lines(&text) {
        let w = &l.words;
        match w[0] {
            "global" | "defaults" | "frontend" | "backend" | "listen" | "userlist" | "peers"
            | "resolvers" | "cache" | "program" | "http-errors" | "ring" | "mailers" => {
                section = (w[0], w.get(1).unwrap_or(&"").to_string());
                if matches!(w[0], "backend" | "listen") {
                    backends.entry(section.1.clone()).or_default();
                }
                if matches!(w[0], "frontend" | "listen") {
                    acls.clear();
                }
                continue;
            }
            _ => {}
        }
        let (kind, name) = (section.0, section.1.clone());
        match (kind, w[0]) {
            ("backend" | "listen", "server") => {
                let Some(addr) = w.get(2) else {
                    note(l.no, l.text, "a server without an address");
                    continue;
                };
                match addr.parse::<SocketAddr>() {
                    Ok(a) => backends.entry(name).or_default().push(a),
                    Err(_) => note(
                        l.no,
                        l.text,
                        "not an IP:port (edgeward resolves no names on the request path)",
                    ),
                }
                let odd: Vec<&str> = w[3..]
                    .iter()
                    .copied()
                    .filter(|o| o.chars().next().is_some_and(|c| c.is_ascii_alphabetic()))
                    .filter(|o| !HARMLESS.contains(o) && o.parse::<f64>().is_err())
                    .collect();
                if !odd.is_empty()
                    && w.len() > 3
                    && odd.iter().any(|o| {
                        matches!(
                            *o,
                            "backup"
                                | "weight"
                                | "ssl"
                                | "send-proxy"
                                | "send-proxy-v2"
                                | "disabled"
                        )
                    })
                {
                    note(l.no, l.text, "server options without an equivalent (backup, weight, ssl, send-proxy, disabled)");
                }
            }
            ("frontend" | "listen", "acl") if w.len() >= 4 => {
                let (fetch, rest) = (w[2], &w[3..]);
                let hosts: Vec<String> = rest
                    .iter()
                    .filter(|x| !x.starts_with('-'))
                    .map(|h| h.to_ascii_lowercase())
                    .collect();
                if HOST_FETCHES.contains(&fetch) && !hosts.is_empty() {
                    acls.insert(w[1].to_string(), hosts);
                } else if fetch.contains("host") {
                    note(
                        l.no,
                        l.text,
                        "a host match that is not exact (hdr_dom, hdr_end, regex...)",
                    );
                }
            }
            ("frontend" | "listen", "use_backend") if w.len() >= 2 => {
                let target = w[1];
                if let Some(map) = map_lookup(target) {
                    match read_map(&map, inputs.maps) {
                        Ok(entries) => {
                            for (host, be) in entries {
                                routes.push((be, host, l.no));
                            }
                        }
                        Err(e) => note(l.no, l.text, &e),
                    }
                    continue;
                }
                let cond = &w[2..];
                let hosts = match cond {
                    ["if", "{", fetch, rest @ .., "}"] if HOST_FETCHES.contains(fetch) => Some(
                        rest.iter()
                            .filter(|x| !x.starts_with('-'))
                            .map(|h| h.to_ascii_lowercase())
                            .collect::<Vec<_>>(),
                    ),
                    ["if", acl] => acls.get(*acl).cloned(),
                    _ => None,
                };
                match hosts {
                    Some(hs) => {
                        routes.extend(hs.into_iter().map(|h| (target.to_string(), h, l.no)))
                    }
                    None => note(l.no, l.text, "a condition other than an exact Host match"),
                }
            }
            ("frontend" | "listen", "default_backend") => note(
                l.no,
                l.text,
                "edgeward routes only known hosts (others get 404)",
            ),
            (
                "frontend" | "listen",
                "http-request" | "http-response" | "redirect" | "tcp-request",
            ) => note(l.no, l.text, "request or response rules are not translated"),
            _ => {}
        }
    }
    for (be, host, no) in routes {
        if plan.domains.contains_key(&host) {
            continue;
        }
        match backends.get(&be) {
            Some(ups) if !ups.is_empty() => {
                plan.domains.insert(host, ups.clone());
            }
            Some(_) => plan.untranslated.push(format!(
                "{path}:{no}: {host} -> {be}: the backend has no usable server"
            )),
            None => plan
                .untranslated
                .push(format!("{path}:{no}: {host} -> {be}: no such backend")),
        }
    }
    if let Some(list) = inputs.crt_list {
        read_crt_list(list, &mut plan)?;
    }
    Ok(plan)
}

/// `%[req.hdr(host),lower,map(/etc/haproxy/hosts.map,be_default)]` -> the map's path.
fn map_lookup(target: &str) -> Option<String> {
    let inner = target.strip_prefix("%[")?.strip_suffix(']')?;
    let at = inner.find("map(").or_else(|| inner.find("map_str("))?;
    let args = &inner[at..];
    let args = &args[args.find('(')? + 1..args.find(')')?];
    Some(args.split(',').next()?.trim().to_string())
}

/// The map file named `name`: the `--map` file with the same file name, else the path itself.
fn read_map(name: &str, overrides: &[PathBuf]) -> Result<Vec<(String, String)>, String> {
    let file = Path::new(name).file_name();
    let path = overrides
        .iter()
        .find(|p| p.file_name() == file)
        .cloned()
        .unwrap_or_else(|| PathBuf::from(name));
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("map {}: {e}", path.display()))?;
    Ok(lines(&text)
        .filter(|l| l.words.len() >= 2)
        .map(|l| (l.words[0].to_ascii_lowercase(), l.words[1].to_string()))
        .collect())
}

/// Each crt-list line's PEM (chain and key in one file) for the domains its names cover.
fn read_crt_list(list: &Path, plan: &mut Plan) -> Result<(), String> {
    let text = std::fs::read_to_string(list).map_err(|e| format!("{}: {e}", list.display()))?;
    let base = list.parent().unwrap_or(Path::new("."));
    for l in lines(&text) {
        let p = Path::new(l.words[0]);
        let p = if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        };
        let where_ = format!("{}:{}", list.display(), l.no);
        let pem = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) => {
                plan.untranslated
                    .push(format!("{where_}: {}: {e}", p.display()));
                continue;
            }
        };
        let (chain, key) = split_pem(&pem);
        let names = match X509::from_pem(chain.as_bytes()) {
            Ok(c) => cert_names(&c),
            Err(e) => {
                plan.untranslated
                    .push(format!("{where_}: {}: not a certificate: {e}", p.display()));
                continue;
            }
        };
        if key.is_empty() {
            plan.untranslated.push(format!(
                "{where_}: {}: no private key in the file",
                p.display()
            ));
            continue;
        }
        let covered: Vec<String> = plan
            .domains
            .keys()
            .filter(|h| names.iter().any(|n| covers(n, h)))
            .filter(|h| !plan.certificates.contains_key(*h))
            .cloned()
            .collect();
        if covered.is_empty() {
            plan.untranslated.push(format!(
                "{where_}: {}: covers no imported domain",
                p.display()
            ));
        }
        for h in covered {
            plan.certificates.insert(h, (chain.clone(), key.clone()));
        }
    }
    Ok(())
}

fn split_pem(pem: &str) -> (String, String) {
    let (mut chain, mut key) = (String::new(), String::new());
    let mut cur: Option<&mut String> = None;
    for line in pem.lines() {
        if line.starts_with("-----BEGIN") {
            cur = Some(if line.contains("PRIVATE KEY") {
                &mut key
            } else {
                &mut chain
            });
        }
        if let Some(c) = cur.as_deref_mut() {
            c.push_str(line);
            c.push('\n');
        }
        if line.starts_with("-----END") {
            cur = None;
        }
    }
    (chain, key)
}

fn cert_names(c: &X509) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = c
        .subject_alt_names()
        .into_iter()
        .flatten()
        .filter_map(|n| n.dnsname().map(|d| d.to_ascii_lowercase()))
        .collect();
    if names.is_empty() {
        for e in c.subject_name().entries_by_nid(Nid::COMMONNAME) {
            names.insert(String::from_utf8_lossy(e.data().as_slice()).to_ascii_lowercase());
        }
    }
    names
}

fn covers(name: &str, host: &str) -> bool {
    if name == host {
        return true;
    }
    match name.strip_prefix("*.") {
        Some(parent) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && label != "*" && rest == parent),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_acls_maps_and_what_is_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let map = dir.path().join("hosts.map");
        std::fs::write(
            &map,
            "# host backend\nMapped.test be_a\nother.test be_b\nlost.test be_none\n",
        )
        .unwrap();
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(
            &cfg,
            format!(
                "global\n  maxconn 100\nfrontend fe\n  bind :80\n  acl is_shop hdr(host) -i shop.test www.shop.test\n\
                 acl fuzzy hdr_dom(host) -i example.test\n  use_backend be_a if is_shop\n\
                 use_backend be_b if {{ hdr(host) -i inline.test }}\n  use_backend be_b if fuzzy\n\
                 use_backend %[req.hdr(host),lower,map({},be_a)]\n  default_backend be_a\n\
                 http-request set-header X-A b\nbackend be_a\n  server a1 127.0.0.1:3001 check inter 2s\n\
                 server a2 127.0.0.1:3002 weight 10\nbackend be_b\n  server b1 backend.internal:80\n  server b2 10.0.0.2:80\n",
                map.display()
            ),
        )
        .unwrap();
        let p = plan(&Inputs {
            config: &cfg,
            maps: &[],
            crt_list: None,
        })
        .unwrap();
        let hosts: Vec<&str> = p.domains.keys().map(String::as_str).collect();
        assert_eq!(
            hosts,
            [
                "inline.test",
                "mapped.test",
                "other.test",
                "shop.test",
                "www.shop.test"
            ]
        );
        assert_eq!(p.domains["shop.test"].len(), 2);
        assert_eq!(
            p.domains["other.test"],
            vec!["10.0.0.2:80".parse().unwrap()]
        );
        let why = p.untranslated.join("\n");
        for want in [
            "hdr_dom",
            "default_backend",
            "http-request",
            "backend.internal",
            "weight",
            "lost.test -> be_none",
        ] {
            assert!(why.contains(want), "{want}: {why}");
        }
        assert_eq!(p.ops().len(), 5);
    }

    #[test]
    fn wildcards_cover_one_label() {
        assert!(covers("*.a.test", "x.a.test"));
        assert!(!covers("*.a.test", "a.test"));
        assert!(!covers("*.a.test", "x.y.a.test"));
        assert!(covers("a.test", "a.test"));
    }
}
