//! Fleet mode: edgeward nodes sharing one etcd (Debian `etcd-server`) started by the test on loopback.
//! First increment of the fleet issue: propagation through the watch, and etcd outages.

use crate::harness::{eventually, free_port, Edgeward, Upstream};
use std::process::{Child, Command, Stdio};

/// A single-member etcd on loopback.
pub struct Etcd {
    pub client_port: u16,
    peer_port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Etcd {
    pub async fn start() -> Etcd {
        let mut e = Etcd {
            client_port: free_port(),
            peer_port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        e.spawn().await;
        e
    }

    async fn spawn(&mut self) {
        let (c, p) = (self.client_port, self.peer_port);
        let log = std::fs::File::create(self.dir.path().join("etcd.log")).unwrap();
        self.child = Some(
            Command::new("etcd")
                .args(["--name", "n1", "--data-dir"])
                .arg(self.dir.path().join("data"))
                .args(["--listen-client-urls", &format!("http://127.0.0.1:{c}")])
                .args(["--advertise-client-urls", &format!("http://127.0.0.1:{c}")])
                .args(["--listen-peer-urls", &format!("http://127.0.0.1:{p}")])
                .args([
                    "--initial-advertise-peer-urls",
                    &format!("http://127.0.0.1:{p}"),
                ])
                .args(["--initial-cluster", &format!("n1=http://127.0.0.1:{p}")])
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .spawn()
                .expect("etcd (Debian package etcd-server)"),
        );
        let url = format!("http://127.0.0.1:{c}/health");
        eventually("etcd to be healthy", || async {
            let r = reqwest::get(&url).await.ok()?;
            r.text()
                .await
                .ok()
                .filter(|t| t.contains("true"))
                .map(|_| ())
        })
        .await;
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    fn state_yaml(&self) -> String {
        format!(
            "    etcd: {{endpoints: [\"http://127.0.0.1:{}\"], prefix: \"/edgeward-test\"}}\n",
            self.client_port
        )
    }
}

async fn node(etcd: &Etcd) -> Edgeward {
    let mut e = Edgeward::new("");
    e.state_extra = etcd.state_yaml();
    e.spawn().await;
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_on_one_node_reach_the_others_and_survive_an_etcd_outage() {
    let up = Upstream::start("up").await;
    let mut etcd = Etcd::start().await;
    let nodes = [node(&etcd).await, node(&etcd).await, node(&etcd).await];

    nodes[0].put_domain("fleet.test", &[up.addr], "").await;
    for n in &nodes {
        let who = eventually("the domain on every node", || async {
            n.upstream_for("fleet.test").await
        })
        .await;
        assert_eq!(who, "up");
    }
    // A challenge put on node 2 is answered by node 3.
    let body = r#"{"host": "fleet.test", "key_authorization": "ft.k"}"#;
    assert_eq!(
        nodes[1].api("PUT", "/v1/challenges/ft", Some(body)).await.0,
        200
    );
    let answer = eventually("the token on node 3", || async {
        let (s, b) = nodes[2]
            .get("fleet.test", "/.well-known/acme-challenge/ft")
            .await;
        (s == 200).then_some(b)
    })
    .await;
    assert_eq!(answer, "ft.k");
    // A delete on node 3 reaches node 1.
    assert_eq!(
        nodes[2]
            .api("DELETE", "/v1/domains/fleet.test", None)
            .await
            .0,
        204
    );
    eventually("the delete on node 1", || async {
        (nodes[0].get("fleet.test", "/").await.0 == 404).then_some(())
    })
    .await;

    // etcd down: nodes keep serving what they hold; writes fail with 503 and change nothing.
    nodes[0].put_domain("kept.test", &[up.addr], "").await;
    for n in &nodes {
        eventually("kept.test everywhere", || async {
            n.upstream_for("kept.test").await
        })
        .await;
    }
    etcd.stop();
    let (status, v) = nodes[1]
        .api(
            "PUT",
            "/v1/domains/lost.test",
            Some(&format!("{{\"upstreams\": [\"{}\"]}}", up.addr)),
        )
        .await;
    assert_eq!(status, 503, "{v}");
    assert!(v["error"].as_str().unwrap().contains("etcd"), "{v}");
    for n in &nodes {
        assert_eq!(n.upstream_for("kept.test").await.as_deref(), Some("up"));
        assert_eq!(n.get("lost.test", "/").await.0, 404, "no local-only write");
    }

    // etcd back: writes work again and reach every node.
    etcd.restart().await;
    eventually("writes to work again", || async {
        let body = format!("{{\"upstreams\": [\"{}\"]}}", up.addr);
        (nodes[1]
            .api("PUT", "/v1/domains/after.test", Some(&body))
            .await
            .0
            == 200)
            .then_some(())
    })
    .await;
    for n in &nodes {
        eventually("after.test everywhere", || async {
            n.upstream_for("after.test").await
        })
        .await;
    }
}
