//! A real BIND (Debian `bind9`) on loopback, authoritative for test zones: some accept dynamic updates
//! signed with a TSIG key made by `tsig-keygen`, some refuse every update. It also answers recursive
//! queries (for its own zones only: the network is closed), so that, like the resolvers of a real CA,
//! it follows a CNAME from one zone into another. Queried with `dig` and
//! updated with `nsupdate` (Debian `bind9-dnsutils`), so the tests check DNS with tools that are not
//! edgeward's own.

use crate::harness::{eventually, free_port};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub const KEY_NAME: &str = "edgeward-test";

pub struct Bind {
    pub dir: PathBuf,
    pub port: u16,
    /// The `key "..." { ... };` clause `tsig-keygen` printed (the TSIG secret file edgeward reads).
    pub key_clause: String,
    /// The base64 secret alone.
    pub secret: String,
    child: Option<Child>,
}

impl Drop for Bind {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.join("named.log")).unwrap_or_default();
            eprintln!("named log ({}):\n{log}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A zone: its name, whether the key may update it, and extra records (zone-file lines).
pub struct Zone<'a> {
    pub name: &'a str,
    pub updatable: bool,
    pub records: &'a [&'a str],
}

impl Bind {
    pub async fn start(zones: &[Zone<'_>]) -> Bind {
        let dir = tempfile::tempdir().unwrap().keep();
        let port = free_port();
        let out = Command::new("tsig-keygen")
            .args(["-a", "hmac-sha256", KEY_NAME])
            .output()
            .expect("tsig-keygen (Debian package bind9)");
        assert!(out.status.success(), "tsig-keygen failed");
        let key_clause = String::from_utf8(out.stdout).unwrap();
        let secret = key_clause
            .split('"')
            .nth(3)
            .expect("secret in the key clause")
            .to_string();
        let mut conf = format!(
            "options {{\n  directory \"{d}\";\n  pid-file \"{d}/named.pid\";\n  \
             listen-on port {port} {{ 127.0.0.1; }};\n  listen-on-v6 {{ none; }};\n  \
             recursion yes;\n  allow-recursion {{ 127.0.0.1; }};\n  dnssec-validation no;\n  allow-query {{ any; }};\n  \
             notify no;\n}};\ncontrols {{ }};\n{key_clause}\n",
            d = dir.display()
        );
        for z in zones {
            let update = if z.updatable {
                format!("allow-update {{ key \"{KEY_NAME}\"; }};")
            } else {
                "allow-update { none; };".to_string()
            };
            conf.push_str(&format!(
                "zone \"{n}\" {{ type primary; file \"{d}/{n}.db\"; {update} }};\n",
                n = z.name,
                d = dir.display()
            ));
            let mut db = format!(
                "$TTL 60\n@ IN SOA ns.{n}. admin.{n}. 1 60 60 600 60\n@ IN NS ns.{n}.\nns IN A 127.0.0.1\n",
                n = z.name
            );
            for r in z.records {
                db.push_str(r);
                db.push('\n');
            }
            std::fs::write(dir.join(format!("{}.db", z.name)), db).unwrap();
        }
        std::fs::write(dir.join("named.conf"), conf).unwrap();
        let log = std::fs::File::create(dir.join("named.log")).unwrap();
        let child = Command::new("named")
            .args(["-g", "-c"])
            .arg(dir.join("named.conf"))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("named (Debian package bind9)");
        let b = Bind {
            dir,
            port,
            key_clause,
            secret,
            child: Some(child),
        };
        let first = zones[0].name;
        eventually("named to answer", || async {
            b.dig(first, "SOA").await.first().map(|_| ())
        })
        .await;
        b
    }

    /// The key clause in a file, as `tsig_secret_file`.
    pub fn key_file(&self) -> PathBuf {
        let p = self.dir.join("tsig.key");
        std::fs::write(&p, &self.key_clause).unwrap();
        p
    }

    /// `dig +short` answers for `name` of `rtype` (TXT values keep their quotes stripped).
    pub async fn dig(&self, name: &str, rtype: &str) -> Vec<String> {
        let out = tokio::process::Command::new("dig")
            .args([
                "@127.0.0.1",
                "-p",
                &self.port.to_string(),
                "+short",
                "+norecurse",
            ])
            .args(["+time=2", "+tries=1", name, rtype])
            .output()
            .await
            .expect("dig (Debian package bind9-dnsutils)");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with(";;"))
            .map(|l| l.trim_matches('"').to_string())
            .collect()
    }

    /// A hook script for `edgeward.acme.dns01.hook` that writes with `nsupdate` and the key, and
    /// records each call in `hook.calls`.
    pub fn hook_script(&self) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.join("dns-hook");
        let script = format!(
            "#!/bin/sh\nset -e\nstep=$1 fqdn=$2 value=$3\n\
             case $step in\n  present) cmd=\"update add $fqdn 60 TXT \\\"$value\\\"\" ;;\n  \
             cleanup) cmd=\"update delete $fqdn TXT \\\"$value\\\"\" ;;\n  *) echo \"unknown step $step\" >&2; exit 2 ;;\nesac\n\
             printf 'server 127.0.0.1 {port}\\n%s\\nsend\\n' \"$cmd\" | nsupdate -y hmac-sha256:{KEY_NAME}:{secret}\n\
             echo \"$step $fqdn $EDGEWARD_DNS_DOMAIN\" >> {dir}/hook.calls\n",
            port = self.port,
            secret = self.secret,
            dir = self.dir.display()
        );
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// The hook calls so far, one line each: `step fqdn domain`.
    pub fn hook_calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("hook.calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}
