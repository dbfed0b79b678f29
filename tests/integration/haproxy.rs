//! HAProxy from Debian as a test peer: a configuration `haproxy -c` must accept, then the process
//! in the foreground, killed when dropped.

use std::path::Path;
use std::process::{Child, Command, Stdio};

pub struct HaProxy(Child);

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl HaProxy {
    /// Check `config` with `haproxy -c` (failing the test with HAProxy's words), then run it.
    pub fn start(config: &Path) -> HaProxy {
        let check = Command::new("haproxy")
            .arg("-c")
            .arg("-f")
            .arg(config)
            .output()
            .expect("haproxy (Debian package haproxy)");
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stderr)
        );
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        HaProxy(child)
    }
}
