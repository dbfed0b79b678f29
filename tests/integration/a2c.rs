//! acme2certifier (PyPI, pinned by `scripts/test` into `target/tools/a2c`): an ACME server that offers
//! renewal information (ARI, RFC 9773) and profiles, which Pebble 2.4 does not. Served over TLS by a
//! small Python runner (its WSGI app on wsgiref), issuing from its own CA (made with `cryptography`,
//! which it depends on) through its OpenSSL CA handler, keeping orders in SQLite.
//!
//! Its challenge validation is switched off (`challenge_validation_disable`, with the break-glass
//! variable it asks for): the challenges are tested against Pebble; this peer is for ARI and profiles.

use crate::harness::{eventually, free_port};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

const RUNNER: &str = r#"
import datetime, os, ssl, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

d, port = sys.argv[1], int(sys.argv[2])
now = datetime.datetime.now(datetime.timezone.utc)
day = datetime.timedelta(days=1)

def pem(obj):
    return obj.public_bytes(serialization.Encoding.PEM)

def keypem(k):
    return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                           serialization.NoEncryption())

if not os.path.exists(os.path.join(d, "ca.pem")):
    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a2c test CA")])
    ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - day).not_valid_after(now + 30 * day)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    crl = (x509.CertificateRevocationListBuilder().issuer_name(name).last_update(now)
           .next_update(now + 30 * day).sign(ca_key, hashes.SHA256()))
    tls_key = ec.generate_private_key(ec.SECP256R1())
    tls = (x509.CertificateBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
           .issuer_name(name).public_key(tls_key.public_key())
           .serial_number(x509.random_serial_number())
           .not_valid_before(now - day).not_valid_after(now + 30 * day)
           .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
           .sign(ca_key, hashes.SHA256()))
    for f, b in [("ca.key", keypem(ca_key)), ("crl.pem", pem(crl)), ("tls.key", keypem(tls_key)),
                 ("tls.pem", pem(tls)), ("ca.pem", pem(ca))]:
        with open(os.path.join(d, f), "wb") as out:
            out.write(b)

from wsgiref.simple_server import make_server
from acme2certifier.share import acme2certifier_wsgi as a2c

def app(environ, start_response):
    # It builds its URLs from the request's scheme; wsgiref does not know about the TLS below it.
    environ["wsgi.url_scheme"] = "https"
    return a2c.application(environ, start_response)

srv = make_server("127.0.0.1", port, app, handler_class=a2c.get_handler_cls())
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(os.path.join(d, "tls.pem"), os.path.join(d, "tls.key"))
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print("serving", flush=True)
srv.serve_forever()
"#;

/// What its renewal information says.
pub enum Window {
    /// From this percentage of the lifetime to the end (its `renewalthreshold_pctg`).
    Threshold(u32),
    /// Renew now (its `renewal_force`: a window that started a year ago).
    Now,
}

pub struct A2c {
    pub dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

impl Drop for A2c {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.join("a2c.log")).unwrap_or_default();
            let tail: String = log.lines().rev().take(60).collect::<Vec<_>>().join("\n");
            eprintln!(
                "acme2certifier log, last lines reversed ({}):\n{tail}",
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn python() -> String {
    std::env::var("A2C_PYTHON").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/tools/a2c/bin/python").into()
    })
}

impl A2c {
    /// Issuing certificates of `validity_days`, listing the `classic` and `shortlived` profiles.
    pub async fn start(window: Window, validity_days: u32) -> A2c {
        let mut a = A2c {
            dir: tempfile::tempdir().unwrap().keep(),
            port: free_port(),
            child: None,
        };
        std::fs::write(a.dir.join("run.py"), RUNNER).unwrap();
        a.run(window, validity_days).await;
        a
    }

    /// (Re)start with `window`, keeping the CA and the database.
    pub async fn run(&mut self, window: Window, validity_days: u32) {
        self.stop();
        let d = self.dir.display();
        let renewal = match window {
            Window::Threshold(p) => format!("renewal_force: False\nrenewalthreshold_pctg: {p}"),
            Window::Now => "renewal_force: True".to_string(),
        };
        let cfg = format!(
            "[DEFAULT]\ndebug: True\n\n[Nonce]\nnonce_check_disable: False\n\n\
             [CAhandler]\nhandler_module: acme2certifier.cahandlers.openssl_ca_handler\n\
             issuing_ca_key: {d}/ca.key\nissuing_ca_cert: {d}/ca.pem\nissuing_ca_crl: {d}/crl.pem\n\
             ca_cert_chain_list: []\ncert_validity_days: {validity_days}\ncert_save_path: {d}/certs\n\n\
             [DBhandler]\nhandler_module: acme2certifier.dbhandlers.wsgi_handler\ndbfile: {d}/acme_srv.db\n\n\
             [Challenge]\nchallenge_validation_disable: True\n\n[Renewalinfo]\n{renewal}\n\n\
             [Order]\ntnauthlist_support: False\n\
             profiles: {{\"classic\": \"the default\", \"shortlived\": \"a few days\"}}\n\
             profiles_check_disable: False\n"
        );
        std::fs::create_dir_all(self.dir.join("certs")).unwrap();
        std::fs::write(self.dir.join("acme_srv.cfg"), cfg).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("a2c.log"))
            .unwrap();
        self.child = Some(
            Command::new(python())
                .arg(self.dir.join("run.py"))
                .arg(&self.dir)
                .arg(self.port.to_string())
                .env("ACME_SRV_CONFIGFILE", self.dir.join("acme_srv.cfg"))
                .env("ACME2CERTIFIER_I_KNOW_THE_RISK", "1")
                .stdout(Stdio::from(log.try_clone().unwrap()))
                .stderr(Stdio::from(log))
                .spawn()
                .expect("acme2certifier's Python (scripts/test installs it in target/tools/a2c)"),
        );
        let ca = self.dir.join("ca.pem");
        let url = self.directory();
        eventually("acme2certifier to serve its directory", || async {
            let pem = std::fs::read(&ca).ok()?;
            let client = reqwest::Client::builder()
                .add_root_certificate(reqwest::Certificate::from_pem(&pem).ok()?)
                .build()
                .ok()?;
            let r = client.get(&url).send().await.ok()?;
            (r.status() == 200).then_some(())
        })
        .await;
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn directory(&self) -> String {
        format!("https://localhost:{}/directory", self.port)
    }

    /// The `edgeward.acme` section for this server (indented under `edgeward:`).
    pub fn acme_yaml(&self, extra: &str) -> String {
        format!(
            "  acme:\n    directory: \"{}\"\n    contact: [\"mailto:ops@edgeward.test\"]\n    ca_bundle: \"{}\"\n{extra}",
            self.directory(),
            self.dir.join("ca.pem").display()
        )
    }

    /// The profile of every order it received, oldest first (from its database).
    pub fn order_profiles(&self) -> Vec<String> {
        let out = Command::new(python())
            .arg("-c")
            .arg(
                "import sqlite3, sys\n\
                 for (p,) in sqlite3.connect(sys.argv[1]).execute('select profile from orders order by id'):\n\
                 \x20   print(p)",
            )
            .arg(self.dir.join("acme_srv.db"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }
}
