//! DNS-01 records written by an operator's command, for DNS services with their own API: called as
//! `COMMAND present FQDN VALUE` before validation and `COMMAND cleanup FQDN VALUE` after the order,
//! with `EDGEWARD_DNS_DOMAIN` set to the name being validated. A non-zero exit, or no exit within the
//! timeout, fails the step with the end of what the command wrote to stderr.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Most of stderr kept for the error message.
const STDERR_KEPT: usize = 400;

#[derive(Debug, Clone)]
pub struct Hook {
    pub command: PathBuf,
    pub timeout: Duration,
}

impl Hook {
    pub async fn run(
        &self,
        step: &str,
        fqdn: &str,
        value: &str,
        domain: &str,
    ) -> Result<(), String> {
        let what = format!("DNS hook `{} {step} {fqdn}`", self.command.display());
        let mut child = tokio::process::Command::new(&self.command)
            .args([step, fqdn, value])
            .env("EDGEWARD_DNS_DOMAIN", domain)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("{what}: cannot start: {e}"))?;
        let mut stderr = child.stderr.take();
        let run = async {
            let mut err = Vec::new();
            if let Some(s) = stderr.as_mut() {
                let _ = s.read_to_end(&mut err).await;
            }
            (child.wait().await, err)
        };
        let (status, err) = tokio::time::timeout(self.timeout, run)
            .await
            .map_err(|_| format!("{what}: no exit within {} s", self.timeout.as_secs()))?;
        let status = status.map_err(|e| format!("{what}: {e}"))?;
        if status.success() {
            return Ok(());
        }
        let err = String::from_utf8_lossy(&err);
        let err = err.trim();
        let tail = &err[err.len() - tail_len(err, STDERR_KEPT)..];
        Err(match status.code() {
            Some(c) => format!("{what} exited with {c}: {tail}"),
            None => format!("{what} was killed by a signal: {tail}"),
        })
    }
}

/// Bytes of the last at most `max` bytes of `s` that start on a character boundary.
fn tail_len(s: &str, max: usize) -> usize {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s.len() - start
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(script: &str) -> (tempfile::TempDir, Hook) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hook");
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let h = Hook {
            command: path,
            timeout: Duration::from_secs(5),
        };
        (dir, h)
    }

    #[tokio::test]
    async fn arguments_environment_and_failures() {
        let (dir, h) = hook("echo \"$1 $2 $3 $EDGEWARD_DNS_DOMAIN\" > \"$(dirname \"$0\")/seen\"");
        h.run("present", "_acme-challenge.a.test", "v4lue", "*.a.test")
            .await
            .unwrap();
        let seen = std::fs::read_to_string(dir.path().join("seen")).unwrap();
        assert_eq!(seen.trim(), "present _acme-challenge.a.test v4lue *.a.test");
        let (_d, h) = hook("echo 'zone not found' >&2; exit 3");
        let e = h.run("present", "x", "v", "x").await.unwrap_err();
        assert!(
            e.contains("exited with 3") && e.contains("zone not found"),
            "{e}"
        );
        let (_d, mut h) = hook("sleep 30");
        h.timeout = Duration::from_millis(200);
        let e = h.run("cleanup", "x", "v", "x").await.unwrap_err();
        assert!(e.contains("no exit within"), "{e}");
        let missing = Hook {
            command: "/nonexistent/hook".into(),
            timeout: Duration::from_secs(1),
        };
        let e = missing.run("present", "x", "v", "x").await.unwrap_err();
        assert!(e.contains("cannot start"), "{e}");
    }
}
