//! The systemd unit (`conf/edgeward.service`) passes `systemd-analyze verify` without a warning, and
//! the readiness protocol it relies on works: `READY=1` and `MAINPID=` at start, and the new process's
//! `MAINPID=` in a graceful upgrade (so systemd follows the new process when the old one exits).

use crate::harness::{eventually, Edgeward, Upstream};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// `systemd-analyze verify` on `unit` with the binary paths pointed at the built binary: its output
/// (empty when the unit is clean) and whether it succeeded.
fn verify(dir: &Path, unit: &str) -> (String, bool) {
    let unit = unit.replace("/usr/local/bin/edgeward", crate::harness::bin());
    let path = dir.join("edgeward.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (text, out.status.success())
}

#[test]
fn the_unit_verifies_cleanly_and_a_broken_one_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/conf/edgeward.service"
    ))
    .unwrap();
    let (text, ok) = verify(dir.path(), &unit);
    assert!(ok && text.trim().is_empty(), "{text}");
    for want in [
        "Type=notify",
        "NotifyAccess=all",
        "LimitNOFILE=",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/edgeward",
    ] {
        assert!(unit.contains(want), "{want}");
    }
    assert!(unit.contains(" -u -c ") && unit.contains("kill -QUIT $MAINPID"));
    // The check can fail: an unknown key is reported.
    let (text, _) = verify(
        dir.path(),
        &unit.replace("NotifyAccess=all", "NotifyAcess=all"),
    );
    assert!(text.contains("NotifyAcess"), "{text}");
}

fn recv_pid(sock: &UnixDatagram) -> u32 {
    let mut buf = [0u8; 256];
    let n = sock
        .recv(&mut buf)
        .expect("a notification within the timeout");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.contains("READY=1\n"), "{msg}");
    msg.lines()
        .find_map(|l| l.strip_prefix("MAINPID="))
        .unwrap_or_else(|| panic!("{msg}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_and_the_new_main_pid_of_an_upgrade_reach_notify_socket() {
    let up = Upstream::start("up").await;
    let mut e = Edgeward::new("");
    let path = e.dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    e.env
        .push(("NOTIFY_SOCKET".into(), path.display().to_string()));
    e.spawn().await;
    assert_eq!(recv_pid(&sock), e.pid());
    e.put_domain("site.test", &[up.addr], "").await;
    let old = e.pid();
    e.upgrade().await;
    let new = recv_pid(&sock);
    assert_eq!(new, e.pid());
    assert_ne!(new, old);
    eventually("the new process to serve", || async {
        (e.get("site.test", "/").await.0 == 200).then_some(())
    })
    .await;
}
