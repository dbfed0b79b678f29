//! A real etcd cluster (Debian `etcd-server`) on loopback for the fleet tests: members killed
//! (SIGKILL), frozen (SIGSTOP), restarted, removed and added, and the leader found through etcd's
//! own HTTP gateway.

use crate::harness::{eventually, free_port};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A client for etcd's HTTP endpoints that gives up: a member still joining, or frozen, may accept
/// a connection and never answer.
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap()
}

/// An etcd cluster of `n` members on loopback.
pub struct Etcd {
    /// (client port, peer port) of each member ever started, by index.
    pub members: Vec<(u16, u16)>,
    dir: tempfile::TempDir,
    children: Vec<Option<Child>>,
    /// Members removed from the cluster (their index stays taken).
    removed: Vec<bool>,
    /// Members added after the start join an existing cluster.
    joined: Vec<bool>,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        // A failed test keeps the members' logs for whoever reads its output.
        if std::thread::panicking() {
            let kept =
                std::env::temp_dir().join(format!("edgeward-etcd-logs-{}", std::process::id()));
            let _ = std::fs::create_dir_all(&kept);
            for i in 0..self.members.len() {
                let name = format!("etcd{i}.log");
                let _ = std::fs::copy(self.dir.path().join(&name), kept.join(&name));
            }
            eprintln!("etcd logs kept in {}", kept.display());
        }
    }
}

impl Etcd {
    pub async fn start() -> Etcd {
        Etcd::cluster(1).await
    }

    pub async fn cluster(n: usize) -> Etcd {
        Etcd::cluster_in(n, tempfile::tempdir().unwrap()).await
    }

    /// A cluster whose data directories are in memory (`/dev/shm`, else the usual temporary
    /// directory): its WAL `fsync`s do not wait behind the other tests' disk writes. For the long soak,
    /// which tests edgeward through member kills, not etcd's disk.
    pub async fn cluster_in_memory(n: usize) -> Etcd {
        let dir = tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir());
        Etcd::cluster_in(n, dir.unwrap()).await
    }

    async fn cluster_in(n: usize, dir: tempfile::TempDir) -> Etcd {
        let mut e = Etcd {
            members: (0..n).map(|_| (free_port(), free_port())).collect(),
            dir,
            children: (0..n).map(|_| None).collect(),
            removed: vec![false; n],
            joined: vec![false; n],
        };
        for i in 0..n {
            e.spawn_member(i);
        }
        for i in 0..n {
            e.wait_healthy(i).await;
        }
        e
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.removed[*i])
            .map(|(i, (_, p))| format!("n{i}=http://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn_member(&mut self, i: usize) {
        let (c, p) = self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("etcd{i}.log")))
            .unwrap();
        self.children[i] = Some(
            Command::new("etcd")
                .args(["--name", &format!("n{i}"), "--data-dir"])
                .arg(self.dir.path().join(format!("data{i}")))
                .args(["--listen-client-urls", &format!("http://127.0.0.1:{c}")])
                .args(["--advertise-client-urls", &format!("http://127.0.0.1:{c}")])
                .args(["--listen-peer-urls", &format!("http://127.0.0.1:{p}")])
                .args([
                    "--initial-advertise-peer-urls",
                    &format!("http://127.0.0.1:{p}"),
                ])
                .args(["--initial-cluster", &self.initial_cluster()])
                .args(["--initial-cluster-token", "edgeward-test"])
                // As etcd 3.5+ does by default and README's fleet section asks of 3.4 clusters:
                // without it, a member whose log is behind (restarted a moment ago) keeps starting
                // elections it cannot win, each resetting the up-to-date member's timer, and the
                // cluster stayed without a leader for 5 s (seen in the soak, raft's known case).
                .arg("--pre-vote")
                .args([
                    "--initial-cluster-state",
                    if self.joined[i] { "existing" } else { "new" },
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .spawn()
                .expect("etcd (Debian package etcd-server)"),
        );
    }

    async fn wait_healthy(&self, i: usize) {
        let url = format!("http://127.0.0.1:{}/health", self.members[i].0);
        eventually("etcd to be healthy", || async {
            let r = http().get(&url).send().await.ok()?;
            r.text()
                .await
                .ok()
                .filter(|t| t.contains("true"))
                .map(|_| ())
        })
        .await;
    }

    /// Freeze (SIGSTOP) or thaw (SIGCONT) member `i`: a silent peer that keeps its connections.
    pub fn freeze_member(&self, i: usize, frozen: bool) {
        let pid = self.children[i].as_ref().expect("running").id();
        let sig = if frozen { "-STOP" } else { "-CONT" };
        let ok = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    /// Kill member `i` (SIGKILL: no goodbye to its peers or clients).
    pub fn stop_member(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start member `i` again (after `stop_member`) and wait until it is healthy.
    pub async fn start_member(&mut self, i: usize) {
        self.spawn_member(i);
        self.wait_healthy(i).await;
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.children[i].is_some()
    }

    /// `http://127.0.0.1:PORT` of member `i`, as it advertises itself.
    pub fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].0)
    }

    /// etcd's HTTP gateway on a running member other than `not` (uint64s come back as strings);
    /// `None` when it did not answer.
    async fn gateway(
        &self,
        not: Option<usize>,
        path: &str,
        body: serde_json::Value,
    ) -> Option<serde_json::Value> {
        let i = (0..self.members.len())
            .find(|&i| Some(i) != not && self.is_running(i))
            .expect("a running member");
        let r = http()
            .post(format!("{}{path}", self.endpoint(i)))
            .json(&body)
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }

    /// A membership change, sent again while etcd refuses it as unsafe for now ("unhealthy
    /// cluster": a member restarted a moment ago does not count as active yet).
    async fn reconfigure(&self, not: Option<usize>, path: &str, body: serde_json::Value) {
        eventually("etcd to accept the membership change", || async {
            let v = self.gateway(not, path, body.clone()).await?;
            match v.get("error") {
                None => Some(()),
                Some(e) => {
                    assert!(e.to_string().contains("unhealthy"), "{path}: {v}");
                    None
                }
            }
        })
        .await;
    }

    /// Member `i`'s id and the leader it knows (0: none).
    async fn status(&self, i: usize) -> Option<(String, String)> {
        let v: serde_json::Value = http()
            .post(format!("{}/v3/maintenance/status", self.endpoint(i)))
            .json(&serde_json::json!({}))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        Some((
            v["header"]["member_id"].as_str()?.to_string(),
            v["leader"].as_str().unwrap_or("0").to_string(),
        ))
    }

    /// The member that leads now (waits for an election to finish).
    pub async fn leader(&self) -> usize {
        eventually("etcd to have a leader", || async {
            for i in (0..self.members.len()).filter(|&i| self.is_running(i)) {
                if let Some((id, leader)) = self.status(i).await {
                    if id == leader {
                        return Some(i);
                    }
                }
            }
            None
        })
        .await
    }

    /// Remove member `i` from the cluster (through another member), then stop it.
    pub async fn remove_member(&mut self, i: usize) {
        let (id, _) = self
            .status(i)
            .await
            .expect("the member to remove is running");
        let body = serde_json::json!({ "ID": id });
        self.reconfigure(Some(i), "/v3/cluster/member/remove", body)
            .await;
        self.removed[i] = true;
        self.stop_member(i);
    }

    /// Add a new member to the running cluster and start it; its index.
    pub async fn add_member(&mut self) -> usize {
        let (c, p) = (free_port(), free_port());
        let body = serde_json::json!({ "peerURLs": [format!("http://127.0.0.1:{p}")] });
        self.reconfigure(None, "/v3/cluster/member/add", body).await;
        self.members.push((c, p));
        self.children.push(None);
        self.removed.push(false);
        self.joined.push(true);
        let i = self.members.len() - 1;
        self.start_member(i).await;
        i
    }

    pub fn stop(&mut self) {
        for i in 0..self.members.len() {
            self.stop_member(i);
        }
    }

    pub async fn restart(&mut self) {
        self.stop();
        let live: Vec<usize> = (0..self.members.len())
            .filter(|&i| !self.removed[i])
            .collect();
        for &i in &live {
            self.spawn_member(i);
        }
        for &i in &live {
            self.wait_healthy(i).await;
        }
    }

    pub fn state_yaml(&self) -> String {
        let all: Vec<usize> = (0..self.members.len()).collect();
        self.state_yaml_with(&all, "")
    }

    /// `edgeward.state.etcd` naming only `members`, with `extra` keys (`, key: value`).
    pub fn state_yaml_with(&self, members: &[usize], extra: &str) -> String {
        // The first as etcdctl takes it (host:port), the others as URLs.
        let eps: Vec<String> = members
            .iter()
            .enumerate()
            .map(|(n, &i)| match n {
                0 => format!("\"127.0.0.1:{}\"", self.members[i].0),
                _ => format!("\"{}\"", self.endpoint(i)),
            })
            .collect();
        format!(
            "    etcd: {{endpoints: [{}], prefix: \"/edgeward-test\"{extra}}}\n",
            eps.join(", ")
        )
    }
}
