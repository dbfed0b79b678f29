//! Assembly: from a validated `Config` to a Pingora `Server` with the proxy listeners, the admin API and
//! the background services.
//!
//! Start-up reads and never writes before Pingora has taken the listening sockets (`bootstrap`): the
//! state is loaded (`prepare`), followed on a thread while bootstrap waits for the process an upgrade
//! replaces, and written only by the `StateWriter` service once this process owns the store. `-t` is
//! `prepare` alone.

use crate::admin::listener::AdminService;
use crate::admin::{self, auth, AdminApp};
use crate::config::Config;
use crate::control::handover::{Follower, Handover, StateWriter};
use crate::control::Control;
use crate::model::Challenge;
use crate::pools::Pools;
use crate::proxy::forwarded::Forwarding;
use crate::proxy::front::{Challenges, Front};
use crate::proxy::limit::Connections;
use crate::proxy::read_through::ReadThroughGate;
use crate::proxy::{EdgeProxy, ReadThrough};
use crate::store::etcd::EtcdStore;
use crate::store::{DirStore, Store};
use crate::tls::accept::SniResolver;
use anyhow::Context;
use async_trait::async_trait;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::listeners::{ListenerConfig, Listeners};
use pingora_core::protocols::l4::stream::L4BufferSettings;
use pingora_core::server::configuration::Opt;
use pingora_core::server::{ExecutionPhase, Server, ShutdownWatch};
use pingora_core::services::background::{background_service, BackgroundService};
use pingora_core::services::listening::Service;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What `prepare` loaded: the control plane, how it follows the store, and in fleet mode the etcd
/// store to watch.
pub struct Prepared {
    pub control: Arc<Control>,
    pub follower: Follower,
    pub etcd: Option<EtcdStore>,
}

/// The runtime that owns the etcd client's connections for the life of the process (the client's
/// channel tasks must outlive start-up, and Pingora gives each service its own runtime).
fn etcd_runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("etcd")
            .enable_all()
            .build()
            .expect("a tokio runtime for etcd")
    })
}

/// Open the store and load it into memory, reading only: everything `-t` checks and `run` needs.
pub fn prepare(config: &Config) -> anyhow::Result<Prepared> {
    let started = std::time::Instant::now();
    let (control, follower, etcd) = match &config.etcd {
        Some(cfg) => {
            let s = etcd_runtime()
                .block_on(EtcdStore::connect(cfg))
                .with_context(|| format!("connecting to etcd at {:?}", cfg.endpoints))?;
            let snap = etcd_runtime().block_on(s.load())?;
            let control = new_control(config, Arc::new(s.clone()));
            control.restore(snap)?;
            let follower = Follower::fleet(control.clone());
            (control, follower, Some(s))
        }
        None => {
            let s =
                DirStore::open(&config.state_dir)?.with_checkpoint_bytes(config.checkpoint_bytes);
            let (snap, tail) = s.snapshot()?;
            let control = new_control(config, Arc::new(s.clone()));
            control.restore(snap)?;
            let follower = Follower::dir(control.clone(), s, tail);
            (control, follower, None)
        }
    };
    let state = control.state();
    log::info!(
        "loaded {} domains, {} challenges and {} certificates from {} in {:?}",
        state.routes.len(),
        state.challenges.len(),
        state.certs.len(),
        config.state_dir.display(),
        started.elapsed()
    );
    release_freed_memory();
    Ok(Prepared {
        control,
        follower,
        etcd,
    })
}

fn new_control(config: &Config, store: Arc<dyn Store>) -> Arc<Control> {
    let control = Arc::new(Control::new(store, Pools::with_health(&config.health)));
    control
        .state()
        .certs
        .set_default(config.default_certificate.clone());
    control
}

/// Start-up read every state file into memory before parsing it; hand that transient heap back to
/// the system so RSS reflects what is kept. Both allocators keep freed memory otherwise: mimalloc (the
/// binary's global allocator) and glibc's malloc (OpenSSL's objects).
fn release_freed_memory() {
    // SAFETY: mi_collect only frees or purges memory mimalloc no longer uses; no preconditions.
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Build the server with every service; the caller runs it.
pub fn build(config: Config, opt: Opt, prepared: Prepared) -> anyhow::Result<Server> {
    let Prepared {
        control,
        follower,
        etcd,
    } = prepared;
    if etcd.is_some() && opt.daemon {
        anyhow::bail!("-d with edgeward.state.etcd is not supported: run edgeward in the foreground (systemd)");
    }
    let (token, created) =
        auth::resolve(config.admin_token_file.as_deref()).map_err(anyhow::Error::msg)?;
    if created {
        if let Some(p) = &config.admin_token_file {
            log::warn!("created a new admin token in {}", p.display());
        }
    }
    crate::metrics::init();
    let mut server = Server::new_with_opt_and_conf(opt, config.server);
    let phases = server.watch_execution_phase();
    // Seeds are served from the file at once, and written once this process owns the store.
    control.preview_seeds(&config.seeds);
    // Take the sockets over (an upgrade: wait for the old process to send them) while following what
    // the old process still writes. The thread stops before Pingora may fork (`-d`).
    let following = follower.spawn_thread();
    server.bootstrap();
    // The listening sockets are ours now (taken over in an upgrade): systemd may follow this pid.
    crate::notify::ready();
    let follower = following.stop();
    let conf = server.configuration.clone();
    let handover = Arc::new(Handover::with_ready_file(
        format!("{}.ready", conf.upgrade_sock).into(),
    ));

    // One proxy service per kind of listener: (TLS or not) x (answering challenges or not).
    let read_through = etcd.clone().map(|s| {
        Arc::new(ReadThroughGate::new(
            Arc::new(EtcdReadThrough(s)) as Arc<dyn ReadThrough>
        ))
    });
    let access_log = match &config.access_log {
        Some(c) => {
            crate::access_log::writer::check(c).map_err(|e| {
                anyhow::anyhow!("edgeward.access_log.path: cannot open {:?}: {e}", c.target)
            })?;
            let (log, pending) = crate::access_log::AccessLog::new(c);
            server.add_service(background_service(
                "access log",
                crate::access_log::writer::Writer {
                    config: c.clone(),
                    pending: Mutex::new(Some(pending)),
                },
            ));
            Some(log)
        }
        None => None,
    };
    let connections = Connections::new(config.max_connections);
    let forwarding = Forwarding::new(config.trusted_proxies.clone());
    // One proxy service per kind of listener: (TLS or not) x (answering challenges or not) x (PROXY
    // protocol or not).
    let kinds = [false, true].into_iter().flat_map(|tls| {
        [Challenges::Answer, Challenges::Proxy]
            .into_iter()
            .flat_map(move |c| [false, true].map(|pp| (tls, c, pp)))
    });
    for (tls, challenges, proxy_protocol) in kinds {
        let intercept = challenges == Challenges::Answer;
        let group: Vec<_> = config
            .listeners
            .iter()
            .filter(|l| {
                l.tls == tls
                    && l.intercept_acme_challenges == intercept
                    && l.proxy_protocol == proxy_protocol
            })
            .collect();
        if group.is_empty() {
            continue;
        }
        let proxy = EdgeProxy {
            state: control.state().reader(),
            intercept_acme_challenges: intercept,
            tls,
            https_redirect_port: config.https_redirect_port,
            timeouts: config.upstream_timeouts,
            forwarding: forwarding.clone(),
            read_through: read_through.clone(),
            access_log: access_log.clone(),
        };
        let name = format!(
            "edgeward {}{}{}",
            if tls { "https" } else { "http" },
            if intercept {
                ""
            } else {
                " (challenges proxied)"
            },
            if proxy_protocol {
                " (PROXY protocol)"
            } else {
                ""
            }
        );
        // Every HTTP/1 request head is read in front of Pingora's session (challenge answers, and the
        // bounded wait for a request at a graceful shutdown).
        let front = Front {
            inner: Arc::new(pingora_proxy::http_proxy(&conf, proxy)),
            state: control.state().reader(),
            challenges,
            limits: config.downstream,
            connections: connections.clone(),
            name: name.clone(),
            access_log: access_log.clone(),
            // TLS listeners read the header before the handshake (below).
            proxy_protocol: proxy_protocol && !tls,
        };
        let mut listeners = Listeners::new();
        if proxy_protocol && tls {
            listeners.set_pre_tls_callback(Arc::new(crate::proxy::proxy_protocol::PreTls {
                within: config.downstream.header_timeout,
            }));
        }
        add_listeners(&mut listeners, &group, &control, &conf)?;
        server.add_service(Service::with_listeners(name, listeners, front));
    }

    let app = Arc::new(AdminApp {
        control: control.clone(),
        token,
        limits: admin::ops::Limits {
            policy: config.policy,
            challenge_ttl: config.challenge_ttl_seconds,
        },
        orders: config.acme.is_some(),
    });
    server.add_service(AdminService {
        app,
        addr: config.admin_listen,
        handover: handover.clone(),
        limits: config.downstream,
    });

    if let Some(acme) = config.acme.clone() {
        let manager = crate::acme::manager::Manager::new(acme, control.clone())
            .map_err(anyhow::Error::msg)?;
        if config.acme.as_ref().is_some_and(|a| a.profile.is_some()) {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(manager.check_profile())
                .map_err(anyhow::Error::msg)?;
        }
        server.add_service(background_service(
            "acme manager",
            crate::acme::manager::ManagerService {
                manager,
                handover: handover.clone(),
            },
        ));
    }
    if let Some(store) = etcd {
        server.add_service(background_service(
            "fleet watch",
            crate::control::fleet::FleetWatch {
                store,
                control: control.clone(),
            },
        ));
    }
    let health = control.pools().health_service();
    server.add_service(background_service("upstream health checks", health));
    server.add_service(background_service(
        "state writer",
        StateWriter {
            follower: Mutex::new(Some(follower)),
            handover: handover.clone(),
            drain_limit: config.downstream.request_wait + Duration::from_secs(2),
        },
    ));
    server.add_service(background_service(
        "upgrade hand-over",
        HandoverWatch {
            phases: Mutex::new(Some(phases)),
            handover,
        },
    ));
    Ok(server)
}

/// Fleet mode: a challenge token not in memory yet is read from etcd before answering 404.
struct EtcdReadThrough(EtcdStore);

#[async_trait]
impl ReadThrough for EtcdReadThrough {
    async fn fetch(&self, token: &str) -> Option<Challenge> {
        self.0.fetch_challenge(token).await
    }
}

/// Turns Pingora's "sockets sent to the new process" into the hand-over of this process's services.
struct HandoverWatch {
    phases: Mutex<Option<tokio::sync::broadcast::Receiver<ExecutionPhase>>>,
    handover: Arc<Handover>,
}

#[async_trait]
impl BackgroundService for HandoverWatch {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(mut phases) = self.phases.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        loop {
            let phase = tokio::select! {
                _ = shutdown.changed() => return,
                p = phases.recv() => p,
            };
            match phase {
                Ok(ExecutionPhase::GracefulUpgradeCloseTimeout) => {
                    log::info!("listening sockets sent to the new process");
                    self.handover.sockets_sent_then_ready().await;
                    return;
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

/// The L4 read buffer of a plain listener: none. Request heads are read through a per-thread scratch
/// buffer (`http1::read`), so a 64 KiB buffer per connection (Pingora's default) would only cost
/// memory: an idle keep-alive connection holds no read buffer at all.
const PLAIN_READ_BUFFER: usize = 0;
/// A TLS listener's: one TLS record and its header, so OpenSSL's small reads do not each cost a
/// syscall.
const TLS_READ_BUFFER: usize = 16 * 1024 + 512;

/// A service's listeners; TLS ones pick the certificate per SNI from memory.
fn add_listeners(
    svc: &mut Listeners,
    listeners: &[&crate::config::Listener],
    control: &Control,
    conf: &Arc<pingora_core::server::configuration::ServerConf>,
) -> anyhow::Result<()> {
    for l in listeners {
        let addr = l.addr.to_string();
        if l.tls {
            let resolver = SniResolver {
                state: control.state().reader(),
            };
            let mut settings = TlsSettings::with_callbacks(Box::new(resolver))
                .map_err(|e| anyhow::anyhow!("TLS settings for {addr}: {e}"))?;
            settings.enable_h2();
            // h2 before http/1.1 as enable_h2 does, and `acme-tls/1` for TLS-ALPN-01 validations.
            settings.set_alpn_select_callback(crate::tls::alpn::select);
            settings.set_client_hello_callback(crate::tls::alpn::client_hello);
            settings.set_offload_threadpool_from_server_conf(conf);
            let buffers = L4BufferSettings::default().read(TLS_READ_BUFFER);
            svc.add_listener(ListenerConfig::tcp(addr).tls(settings).l4_buffer(buffers));
        } else {
            // No write buffer either: the front's `WriteBuffer` holds one only while a response
            // is written.
            let buffers = L4BufferSettings::new(PLAIN_READ_BUFFER, 0);
            svc.add_listener(ListenerConfig::tcp(addr).l4_buffer(buffers));
        }
    }
    Ok(())
}
