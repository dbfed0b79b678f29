//! Test peers started on loopback: edgeward itself (the real binary), plain HTTP upstreams that echo
//! what they received, and an HTTP client. Readiness is polled with a deadline; nothing sleeps blindly.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "test-admin-token";
/// Generous: the whole suite runs in parallel on 2 cores with several Pebbles and etcd clusters.
pub const DEADLINE: Duration = Duration::from_secs(45);

/// A port that was free a moment ago (Pingora binds by address, so tests pick the port), never the
/// same one twice in this test process: tests running in parallel would otherwise race for it.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<BTreeSet<u16>> = std::sync::Mutex::new(BTreeSet::new());
    loop {
        let port = StdListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if GIVEN.lock().unwrap().insert(port) {
            return port;
        }
    }
}

/// Poll `f` until it returns `Some`, or panic with `what` after the deadline.
pub async fn eventually<T, F, Fut>(what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_within(what, DEADLINE, f).await
}

/// `eventually` with its own deadline, for waits bounded by a peer's clock (certificate lifetimes).
pub async fn eventually_within<T, F, Fut>(what: &str, deadline: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An HTTP/1.1 upstream that answers every request with JSON: its name, the path and the headers.
pub struct Upstream {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    pub async fn start(name: &str) -> Upstream {
        use http_body_util::Full;
        use hyper::service::service_fn;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let name = name.to_string();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let name = name.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let headers: BTreeMap<String, String> = req
                            .headers()
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                            .collect();
                        let body = serde_json::json!({
                            "upstream": name,
                            "path": req.uri().path(),
                            "headers": headers,
                        });
                        async move {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                bytes::Bytes::from(body.to_string()),
                            )))
                        }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                });
            }
        });
        Upstream { addr, task }
    }
}

/// A running edgeward process with its own ports and state directory.
pub struct Edgeward {
    pub dir: PathBuf,
    pub http: u16,
    pub http_raw: u16,
    pub https: u16,
    pub admin: u16,
    pub extra: String,
    /// Appended under `edgeward.state` (e.g. an `etcd:` block).
    pub state_extra: String,
    /// Extra keys under `edgeward.upstreams` (two spaces of indent more than `extra`'s).
    pub upstreams_extra: String,
    /// Environment of the edgeward process (e.g. `EDGEWARD_FAULTS`).
    pub env: Vec<(String, String)>,
    /// More listener items (YAML flow objects) under `http` and `https`.
    pub more_http: Vec<String>,
    pub more_https: Vec<String>,
    /// No HTTP listener at all (`http: []`).
    pub no_http: bool,
    child: Option<Child>,
    pub client: reqwest::Client,
}

impl Drop for Edgeward {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("edgeward log ({}):\n{}", self.dir.display(), self.log_of());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn items(list: &[String]) -> String {
    list.iter().map(|l| format!("    - {l}\n")).collect()
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_edgeward")
}

impl Edgeward {
    /// Start with a fresh state directory. `extra` is appended under `edgeward:` (indented 2).
    pub async fn start(extra: &str) -> Edgeward {
        let mut e = Edgeward::new(extra);
        e.spawn().await;
        e
    }

    /// Ports and directory chosen, not started yet (a peer may need the ports first).
    pub fn new(extra: &str) -> Edgeward {
        let dir = tempfile::tempdir().unwrap().keep();
        Edgeward {
            dir,
            http: free_port(),
            http_raw: free_port(),
            https: free_port(),
            admin: free_port(),
            extra: extra.to_string(),
            state_extra: String::new(),
            upstreams_extra: String::new(),
            env: Vec::new(),
            more_http: Vec::new(),
            more_https: Vec::new(),
            no_http: false,
            child: None,
            // A hung answer fails the test instead of hanging the suite.
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(DEADLINE)
                .build()
                .unwrap(),
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("edgeward.yaml")
    }

    pub fn write_config(&self) {
        let http = if self.no_http {
            "  http: []\n".to_string()
        } else {
            format!(
                "  http:\n    - \"127.0.0.1:{}\"\n    - {{listen: \"127.0.0.1:{}\", intercept_acme_challenges: false}}\n{}",
                self.http,
                self.http_raw,
                items(&self.more_http)
            )
        };
        let yaml = format!(
            "version: 1\nthreads: 1\npid_file: {dir}/edgeward.pid\nupgrade_sock: {dir}/upgrade.sock\n\
             grace_period_seconds: 1\ngraceful_shutdown_timeout_seconds: 1\n\
             edgeward:\n{http}  https:\n    - \"127.0.0.1:{https}\"\n{more_https}\
             \x20 admin:\n    listen: \"127.0.0.1:{admin}\"\n    token_file: \"{dir}/admin.token\"\n\
             \x20 state:\n    dir: \"{dir}/state\"\n{state_extra}  upstreams:\n    health_check_interval_seconds: 1\n{upstreams_extra}\
             \x20 shutdown:\n    request_wait_ms: 500\n{extra}",
            dir = self.dir.display(),
            https = self.https,
            admin = self.admin,
            extra = self.extra,
            state_extra = self.state_extra,
            upstreams_extra = self.upstreams_extra,
            more_https = items(&self.more_https),
        );
        std::fs::write(self.config_path(), yaml).unwrap();
    }

    pub async fn spawn(&mut self) {
        self.write_config();
        std::fs::write(self.dir.join("admin.token"), TOKEN).unwrap();
        self.child = Some(self.command(&[]));
        self.wait_ready().await;
    }

    /// The pid of the running process (the new one after an upgrade).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn command(&self, extra_args: &[&str]) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("edgeward.log"))
            .unwrap();
        Command::new(bin())
            .args(extra_args)
            .arg("-c")
            .arg(self.config_path())
            .env_remove("EDGEWARD_ADMIN_TOKEN")
            .env_remove("EDGEWARD_FAULTS")
            .env("RUST_LOG", "warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start edgeward")
    }

    /// Pingora's graceful upgrade: start a new process with `-u`, SIGQUIT the old one, and return once
    /// the old one has exited; the new one is then this node's process.
    pub async fn upgrade(&mut self) {
        let old = self.begin_upgrade();
        self.finish_upgrade(old).await;
    }

    /// The first half of `upgrade`: the new process started with `-u`, the old one sent SIGQUIT.
    /// Returns the old one, still running its hand-over and shutdown.
    pub fn begin_upgrade(&mut self) -> Child {
        let new = self.command(&["-u"]);
        let old = self.child.replace(new).expect("running");
        // SAFETY: kill(2) on a child this harness started; no memory involved.
        unsafe { libc::kill(old.id() as i32, libc::SIGQUIT) };
        old
    }

    /// The second half: the old process has exited and the new one is ready.
    pub async fn finish_upgrade(&mut self, mut old: Child) {
        let start = Instant::now();
        loop {
            // SIGQUIT until the old process hands its sockets over and exits.
            unsafe { libc::kill(old.id() as i32, libc::SIGQUIT) };
            if old.try_wait().unwrap().is_some() {
                break;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "old process did not hand over: {}",
                self.log_of()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let url = format!("http://127.0.0.1:{}/v1/health", self.admin);
        let ports = match self.no_http {
            true => vec![self.https],
            false => vec![self.http, self.http_raw, self.https],
        };
        let client = self.client.clone();
        let child = self.child.as_mut().unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "edgeward exited during start-up ({status}): {}",
                    self.log_of()
                );
            }
            let admin_ok = matches!(client.get(&url).send().await, Ok(r) if r.status() == 200);
            let proxy_ok = ports
                .iter()
                .all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok());
            if admin_ok && proxy_ok {
                return;
            }
            assert!(start.elapsed() < DEADLINE, "edgeward did not become ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log_of(&self) -> String {
        std::fs::read_to_string(self.dir.join("edgeward.log")).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGKILL (nothing flushed at exit) and start again on the same directory and ports.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin)
    }

    /// An admin call with the token; returns (status, JSON body or Null).
    pub async fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let mut req = self
            .client
            .request(method.parse().unwrap(), self.admin_url(path))
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }

    pub async fn metrics(&self) -> String {
        let resp = self
            .client
            .get(self.admin_url("/metrics"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        resp.text().await.unwrap()
    }

    pub async fn put_domain(&self, host: &str, upstreams: &[SocketAddr], extra: &str) {
        let ups: Vec<String> = upstreams.iter().map(|a| format!("\"{a}\"")).collect();
        let body = format!("{{\"upstreams\": [{}]{extra}}}", ups.join(","));
        let (status, v) = self
            .api("PUT", &format!("/v1/domains/{host}"), Some(&body))
            .await;
        assert_eq!(status, 200, "{v}");
    }

    /// Upload `leaf` as the certificate of `host`; the upload must succeed.
    pub async fn put_certificate(&self, host: &str, leaf: &crate::certs::Leaf) {
        let path = format!("/v1/certificates/{host}");
        let (status, v) = self.api("PUT", &path, Some(&leaf.upload_body())).await;
        assert_eq!(status, 200, "{v}");
    }

    /// Run edgeward on this configuration with `args` (`-t` for a check only) and expect it to
    /// refuse: its error output.
    pub fn refused(&self, args: &[&str]) -> String {
        self.write_config();
        let out = Command::new(bin())
            .args(args)
            .arg("-c")
            .arg(self.config_path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "accepted: {}",
            self.config_path().display()
        );
        err
    }

    /// A GET on the intercepting HTTP listener with this Host header: (status, body).
    pub async fn get(&self, host: &str, path: &str) -> (u16, String) {
        self.get_on(self.http, host, path).await
    }

    pub async fn get_on(&self, port: u16, host: &str, path: &str) -> (u16, String) {
        let resp = self
            .client
            .get(format!("http://127.0.0.1:{port}{path}"))
            .header("host", host)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    /// The upstream name that answered, if an upstream answered.
    pub async fn upstream_for(&self, host: &str) -> Option<String> {
        let (status, body) = self.get(host, "/").await;
        if status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["upstream"].as_str().map(str::to_string)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// The state directory's content as the next start would load it (files plus the write-ahead
    /// log), read without writing anything, even while edgeward runs.
    pub fn stored(&self) -> edgeward::store::Snapshot {
        edgeward::store::DirStore::open(self.state_dir())
            .and_then(|s| s.read_only_snapshot())
            .expect("readable state directory")
    }

    /// Stopped: write the write-ahead log into the state files (a checkpoint), so a test can edit them.
    pub fn settle_state(&self) {
        assert!(
            self.child.is_none(),
            "stop edgeward before settling its state"
        );
        edgeward::store::DirStore::open(self.state_dir())
            .and_then(|s| s.compact())
            .expect("compactable state directory");
    }
}
