//! A real Pebble (Debian `pebble`) with `pebble-challtestsrv` as its DNS, started on loopback for a test.
//! Its HTTP-01 validations go to edgeward's HTTP listener; its HTTPS certificate comes from the test PKI.

use crate::certs::{Key, Pki};
use crate::harness::{eventually, free_port};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub struct Pebble {
    pub dir: PathBuf,
    pub acme_port: u16,
    pub mgmt_port: u16,
    pub cts_port: u16,
    pub pki: Pki,
    /// Where Pebble resolves names (`-dnsserver`): the challenge test server, or a BIND.
    pub dns_server: u16,
    pebble: Option<Child>,
    dns: Option<Child>,
}

/// How a Pebble is started: where it validates HTTP-01 and TLS-ALPN-01, the lifetime of its
/// certificates, and its DNS (default: `pebble-challtestsrv`, every name at 127.0.0.1).
#[derive(Default)]
pub struct PebbleOpts {
    pub http_port: u16,
    pub tls_port: Option<u16>,
    pub validity: Option<u64>,
    pub dns_server: Option<u16>,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for c in [self.pebble.take(), self.dns.take()].into_iter().flatten() {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Pebble {
    /// Start Pebble validating HTTP-01 on `http_port`; `validity` in seconds for short-lived certificates.
    pub async fn start(http_port: u16, validity: Option<u64>) -> Pebble {
        Pebble::start_with(PebbleOpts {
            http_port,
            validity,
            ..PebbleOpts::default()
        })
        .await
    }

    pub async fn start_with(o: PebbleOpts) -> Pebble {
        let (http_port, validity) = (o.http_port, o.validity);
        let dir = tempfile::tempdir().unwrap().keep();
        let pki = Pki::new();
        let tls = pki.leaf(&["localhost"], Key::Ecdsa);
        std::fs::write(dir.join("cert.pem"), &tls.chain_pem).unwrap();
        std::fs::write(dir.join("key.pem"), &tls.key_pem).unwrap();
        std::fs::write(dir.join("ca.pem"), pki.root_pem()).unwrap();
        let (acme_port, mgmt_port, dns_port, cts_port) =
            (free_port(), free_port(), free_port(), free_port());
        let mut cfg = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{acme_port}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt_port}"),
            "certificate": dir.join("cert.pem"),
            "privateKey": dir.join("key.pem"),
            "httpPort": http_port,
            "tlsPort": o.tls_port.unwrap_or_else(free_port),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        if let Some(v) = validity {
            cfg["pebble"]["certificateValidityPeriod"] = v.into();
        }
        std::fs::write(dir.join("pebble.json"), cfg.to_string()).unwrap();
        let mut p = Pebble {
            dir,
            acme_port,
            mgmt_port,
            cts_port,
            pki,
            dns_server: o.dns_server.unwrap_or(dns_port),
            pebble: None,
            dns: None,
        };
        let log = std::fs::File::create(p.dir.join("dns.log")).unwrap();
        p.dns = Some(
            Command::new("pebble-challtestsrv")
                .args([
                    "-http01",
                    "",
                    "-https01",
                    "",
                    "-tlsalpn01",
                    "",
                    "-defaultIPv6",
                    "",
                ])
                .args(["-defaultIPv4", "127.0.0.1"])
                .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
                .args(["-management", &format!("127.0.0.1:{cts_port}")])
                .stdout(Stdio::from(log.try_clone().unwrap()))
                .stderr(Stdio::from(log))
                .spawn()
                .expect("pebble-challtestsrv (Debian package pebble)"),
        );
        p.start_pebble().await;
        p
    }

    pub async fn start_pebble(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("pebble.log"))
            .unwrap();
        self.pebble = Some(
            Command::new("pebble")
                .arg("-config")
                .arg(self.dir.join("pebble.json"))
                .args(["-dnsserver", &format!("127.0.0.1:{}", self.dns_server)])
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", "0")
                .env("PEBBLE_AUTHZREUSE", "0")
                .stdout(Stdio::from(log.try_clone().unwrap()))
                .stderr(Stdio::from(log))
                .spawn()
                .expect("pebble (Debian package pebble)"),
        );
        let client = self.client();
        let url = self.directory();
        eventually("pebble to serve its directory", || async {
            client
                .get(&url)
                .send()
                .await
                .ok()
                .filter(|r| r.status() == 200)
                .map(|_| ())
        })
        .await;
    }

    /// SIGSTOP Pebble: it keeps its sockets and answers nothing (a CA that stopped answering).
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, sig: i32) {
        let pid = self.pebble.as_ref().expect("running").id() as i32;
        // SAFETY: kill(2) on a child this harness started; no memory involved.
        unsafe { libc::kill(pid, sig) };
    }

    pub fn stop_pebble(&mut self) {
        if let Some(mut c) = self.pebble.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&self.pki.root_pem()).unwrap())
            .build()
            .unwrap()
    }

    pub fn directory(&self) -> String {
        format!("https://localhost:{}/dir", self.acme_port)
    }

    /// The root that issued edgeward's certificates (it changes at every Pebble start).
    pub async fn issuing_root(&self) -> openssl::x509::X509 {
        let pem = self
            .client()
            .get(format!("https://localhost:{}/roots/0", self.mgmt_port))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        openssl::x509::X509::from_pem(&pem).unwrap()
    }

    /// Make `host` resolve to an address where nothing answers HTTP-01.
    pub async fn misdirect(&self, host: &str) {
        self.point(host, "127.0.0.2").await
    }

    /// Make `host` resolve to `addr` for Pebble's validations (replacing any earlier answer).
    pub async fn point(&self, host: &str, addr: &str) {
        let clear = serde_json::json!({"host": format!("{host}.")});
        reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}/clear-a", self.cts_port))
            .body(clear.to_string())
            .send()
            .await
            .unwrap();
        let body = serde_json::json!({"host": format!("{host}."), "addresses": [addr]});
        let r = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}/add-a", self.cts_port))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }

    /// The `edgeward.acme` section for this Pebble (indented under `edgeward:`).
    pub fn acme_yaml(&self, extra: &str) -> String {
        format!(
            "  acme:\n    directory: \"{}\"\n    contact: [\"mailto:ops@edgeward.test\"]\n    ca_bundle: \"{}\"\n{extra}",
            self.directory(),
            self.dir.join("ca.pem").display()
        )
    }
}
