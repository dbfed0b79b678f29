//! The admin listener's own accept loop. Pingora's listeners accept until the process shuts down,
//! which during an upgrade is seconds after the new process took the sockets over; admin writes must
//! reach the new process as soon as it can take the writer role. So at the hand-over (the sockets are
//! sent) this loop stops accepting at once, its open connections answer the request they have (or
//! one that arrives within `request_wait`) with `Connection: close`, and when the last one is done it
//! tells the state writer, which then hands the state over (an idle connection waits at most 200 ms).
//! The listening socket itself is the one Pingora passes between processes (`ListenFds`), so the new
//! process accepts on the same socket.

use super::AdminApp;
use crate::control::handover::{until_set, Handover};
use crate::http1::{self, read_head, HeadClock, Limits};
use async_trait::async_trait;
use bytes::BytesMut;
use pingora_core::apps::HttpServerApp;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::Stream;
use pingora_core::server::{ListenFds, ShutdownWatch};
use pingora_core::services::Service;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Longest wait, at the hand-over, for a request on an idle admin connection: enough for one already
/// on its way (admin clients are local or in the data centre), short because the new process's
/// writes wait for this drain.
const IDLE_WAIT: Duration = Duration::from_millis(200);

pub struct AdminService {
    pub app: Arc<AdminApp>,
    pub addr: std::net::SocketAddr,
    pub handover: Arc<Handover>,
    /// The downstream timeouts (`request_wait`, at the hand-over, at most `IDLE_WAIT`).
    pub limits: Limits,
}

impl AdminService {
    /// The listening socket: the one passed by the process an upgrade replaces, or a new one, which
    /// is then registered to be passed on at the next upgrade.
    fn listener(&self, fds: Option<ListenFds>) -> std::io::Result<tokio::net::TcpListener> {
        let key = self.addr.to_string();
        let inherited = fds.as_ref().and_then(|f| f.lock().get(&key).copied());
        let std_listener = match inherited {
            // SAFETY: the fd table owns this descriptor for the life of the process; `dup` gives us
            // our own descriptor for the same socket, closed when our listener is dropped.
            Some(fd) => unsafe {
                let own = libc::dup(fd);
                if own < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                std::net::TcpListener::from_raw_fd(own)
            },
            None => {
                let l = std::net::TcpListener::bind(self.addr)?;
                let ours = l.try_clone()?;
                if let Some(f) = &fds {
                    // The table keeps the original open for the next process; we accept on a dup.
                    f.lock().add(key, l.into_raw_fd());
                } else {
                    drop(l);
                }
                ours
            }
        };
        std_listener.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(std_listener)
    }
}

#[async_trait]
impl Service for AdminService {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        mut shutdown: ShutdownWatch,
        _listeners_per_fd: usize,
    ) {
        let listener = match self.listener(fds) {
            Ok(l) => l,
            Err(e) => {
                log::error!("admin listener {}: {e}", self.addr);
                std::process::exit(1);
            }
        };
        log::debug!("admin API on {} (fd {})", self.addr, listener.as_raw_fd());
        // The token is never in the URL logged: the page asks for it (or reads `#token=` itself).
        log::info!("console: http://{}/console/", self.addr);
        self.handover.announce_ready();
        // Set once this process stops taking admin requests: hand-over or shutdown.
        let (stop_tx, stop) = watch::channel(false);
        let (busy, mut idle) = mpsc::channel::<()>(1);
        let mut sent = self.handover.on_sockets_sent();
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = until_set(&mut sent) => break,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => {
                        // As Pingora's listeners: a response is not held back for an ACK.
                        let _ = tcp.set_nodelay(true);
                        let (app, stop, busy) = (self.app.clone(), stop.clone(), busy.clone());
                        let limits = Limits {
                            request_wait: self.limits.request_wait.min(IDLE_WAIT),
                            ..self.limits
                        };
                        tokio::spawn(async move {
                            serve(app, Box::new(L4Stream::from(tcp)), stop, limits).await;
                            drop(busy);
                        });
                    }
                    Err(e) => {
                        log::warn!("admin accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        drop(listener);
        stop_tx.send_replace(true);
        drop(busy);
        // Every connection holds a sender: `recv` returns `None` once the last one is done.
        let _ = idle.recv().await;
        self.handover.admin_drained();
    }

    fn name(&self) -> &str {
        "edgeward admin"
    }

    fn threads(&self) -> Option<usize> {
        Some(1)
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        Some(vec![self.addr.to_string()])
    }
}

/// One admin connection: request after request while keep-alive lasts; after `stop`, the request
/// that is there (or arrives within `request_wait`) is answered with `Connection: close`.
async fn serve(app: Arc<AdminApp>, mut stream: Stream, mut stop: ShutdownWatch, limits: Limits) {
    let mut buf = BytesMut::new();
    let mut clock = HeadClock::accepted(limits);
    loop {
        let head = read_head(&mut stream, &mut buf, &mut stop, &mut clock, "admin").await;
        if let http1::Head::Done = head {
            return;
        }
        let mut session = ServerSession::new_http1(stream);
        session.set_pipelined_prefix(buf.split());
        // Keep-alive is turned off for sessions read after `stop` (see `ServeHttp`'s app).
        let Some(reused) = app.process_new_http(session, &stop).await else {
            return;
        };
        stream = reused.consume().0;
        buf = BytesMut::new();
        clock.next_request();
    }
}
