//! systemd's readiness protocol (`Type=notify`, `sd_notify(3)`): once this process holds its
//! listening sockets (at start, or taken over from the old process in a graceful upgrade) it sends
//! `READY=1` and `MAINPID=<its pid>` to `$NOTIFY_SOCKET`. In an upgrade started by `ExecReload`, the
//! new process thereby becomes the service's main process before the old one exits, so systemd does
//! not take the old one's exit for the service's end (the unit needs `NotifyAccess=all`). Without
//! `$NOTIFY_SOCKET` (not under systemd) nothing is sent.

use std::os::unix::net::UnixDatagram;

/// Tell systemd this process is ready and is the main one; errors are logged, never fatal.
pub fn ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let msg = format!("READY=1\nMAINPID={}\n", std::process::id());
    let sent = UnixDatagram::unbound().and_then(|s| {
        let bytes = path.as_encoded_bytes();
        match bytes.strip_prefix(b"@") {
            // An abstract socket (systemd's usual choice is a path; both are allowed).
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                s.send_to_addr(msg.as_bytes(), &addr)
            }
            None => s.send_to(msg.as_bytes(), &path),
        }
    });
    if let Err(e) = sent {
        log::warn!("cannot notify systemd at {}: {e}", path.to_string_lossy());
    }
}
