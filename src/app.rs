//! Assembly: from a validated `Config` to a Pingora `Server` with the proxy listeners, the admin API and
//! the background services. Loading state happens here, before Pingora forks or takes over sockets.

use crate::admin::{self, auth, AdminApp};
use crate::config::Config;
use crate::control::{unix_now, Control};
use crate::pools::Pools;
use crate::proxy::EdgeProxy;
use crate::store::{Change, DirStore, Store};
use crate::tls::accept::SniResolver;
use anyhow::Context;
use async_trait::async_trait;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::server::configuration::Opt;
use pingora_core::server::{Server, ShutdownWatch};
use pingora_core::services::background::{background_service, BackgroundService};
use pingora_core::services::listening::Service;
use std::sync::Arc;
use std::time::Duration;

/// What `prepare` opened: the control plane and, in fleet mode, the etcd store to watch.
pub struct Prepared {
    pub control: Arc<Control>,
    pub etcd: Option<crate::store::etcd::EtcdStore>,
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

/// Open the store, load it and apply the seed list: everything `-t` checks and `run` needs.
pub fn prepare(config: &Config) -> anyhow::Result<Prepared> {
    let (store, etcd): (Arc<dyn Store>, _) = match &config.etcd {
        Some(cfg) => {
            let s = etcd_runtime()
                .block_on(crate::store::etcd::EtcdStore::connect(cfg))
                .with_context(|| format!("connecting to etcd at {:?}", cfg.endpoints))?;
            (Arc::new(s.clone()), Some(s))
        }
        None => {
            let s = DirStore::open(&config.state_dir).with_context(|| {
                format!("opening state directory {}", config.state_dir.display())
            })?;
            (Arc::new(s), None)
        }
    };
    let control = Arc::new(Control::new(
        store.clone(),
        Pools::new(config.connect_timeout),
    ));
    control
        .state
        .certs
        .set_default(config.default_certificate.clone());
    let start_up;
    let rt = if etcd.is_some() {
        etcd_runtime()
    } else {
        start_up = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building the start-up runtime")?;
        &start_up
    };
    rt.block_on(async {
        let started = std::time::Instant::now();
        let snap = store.load().await?;
        let loaded = started.elapsed();
        let (domains, challenges, certs) = (
            snap.domains.len(),
            snap.challenges.len(),
            snap.certificates.len(),
        );
        control.restore(snap).await?;
        log::info!(
            "restored {domains} domains, {challenges} challenges and {certs} certificates from {} \
             (read {loaded:?}, total {:?})",
            config.state_dir.display(),
            started.elapsed()
        );
        let seeds: Vec<Change> = config
            .seeds
            .iter()
            .filter(|d| control.domain(&d.host).as_ref() != Some(*d))
            .cloned()
            .map(Change::PutDomain)
            .collect();
        if !seeds.is_empty() {
            log::info!(
                "applying {} domains from the configuration's seed list",
                seeds.len()
            );
            control.apply(seeds).await?;
        }
        anyhow::Ok(())
    })?;
    release_freed_memory();
    Ok(Prepared { control, etcd })
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
    let Prepared { control, etcd } = prepared;
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
    server.bootstrap();
    let conf = server.configuration.clone();

    // One proxy service per kind of listener: (TLS or not) x (intercepting challenges or not).
    for (tls, intercept) in [(false, true), (false, false), (true, true), (true, false)] {
        let group: Vec<_> = config
            .listeners
            .iter()
            .filter(|l| l.tls == tls && l.intercept_acme_challenges == intercept)
            .collect();
        if group.is_empty() {
            continue;
        }
        let proxy = EdgeProxy {
            state: control.state.clone(),
            intercept_acme_challenges: intercept,
            tls,
            https_redirect_port: config.https_redirect_port,
            connect_timeout: config.connect_timeout,
            read_through: etcd
                .clone()
                .map(|s| Arc::new(s) as Arc<dyn crate::challenges::ReadThrough>),
        };
        let name = format!(
            "edgeward {}{}",
            if tls { "https" } else { "http" },
            if intercept {
                ""
            } else {
                " (challenges proxied)"
            }
        );
        // Intercepting listeners: challenge requests are answered in front of Pingora's HTTP session.
        let proxy = pingora_proxy::http_proxy(&conf, proxy);
        if intercept {
            let front = crate::proxy::front::ChallengeFront {
                inner: Arc::new(proxy),
                state: control.state.clone(),
            };
            let mut svc = Service::new(name, front);
            add_listeners(&mut svc, &group, &control, &conf)?;
            server.add_service(svc);
        } else {
            let mut svc = Service::new(name, proxy);
            add_listeners(&mut svc, &group, &control, &conf)?;
            server.add_service(svc);
        }
    }

    let app = AdminApp {
        control: control.clone(),
        token,
        limits: admin::ops::Limits {
            policy: config.policy,
            challenge_ttl: config.challenge_ttl_seconds,
        },
    };
    let mut admin_svc = Service::new("edgeward admin".to_string(), app);
    admin_svc.threads = Some(1);
    admin_svc.add_tcp(&config.admin_listen.to_string());
    server.add_service(admin_svc);

    if let Some(acme) = config.acme.clone() {
        let manager = crate::acme::manager::Manager::new(acme, control.clone())
            .map_err(anyhow::Error::msg)?;
        server.add_service(background_service(
            "acme manager",
            crate::acme::manager::ManagerService(manager),
        ));
    }
    if let Some(store) = etcd {
        server.add_service(background_service(
            "fleet watch",
            crate::store::fleet::FleetWatch {
                store,
                control: control.clone(),
            },
        ));
    }
    let health = control.pools().health_service(config.health_check_interval);
    server.add_service(background_service("upstream health checks", health));
    server.add_service(background_service(
        "challenge expiry",
        ChallengeExpiry {
            control,
            every: Duration::from_secs(30),
        },
    ));
    Ok(server)
}

/// Removes expired challenge tokens from memory and the store.
struct ChallengeExpiry {
    control: Arc<Control>,
    every: Duration,
}

#[async_trait]
impl BackgroundService for ChallengeExpiry {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(self.every);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {
                    match self.control.expire_challenges(unix_now()).await {
                        Ok(0) => {}
                        Ok(n) => log::info!("expired {n} challenge tokens"),
                        Err(e) => log::warn!("challenge expiry failed, will retry: {e}"),
                    }
                }
            }
        }
    }
}

/// Bind a service to its listeners; TLS ones pick the certificate per SNI from memory.
fn add_listeners<A>(
    svc: &mut Service<A>,
    listeners: &[&crate::config::Listener],
    control: &Control,
    conf: &Arc<pingora_core::server::configuration::ServerConf>,
) -> anyhow::Result<()> {
    for l in listeners {
        let addr = l.addr.to_string();
        if l.tls {
            let resolver = SniResolver {
                state: control.state.clone(),
            };
            let mut settings = TlsSettings::with_callbacks(Box::new(resolver))
                .map_err(|e| anyhow::anyhow!("TLS settings for {addr}: {e}"))?;
            settings.enable_h2();
            settings.set_offload_threadpool_from_server_conf(conf);
            svc.add_tls_with_settings(&addr, None, settings);
        } else {
            svc.add_tcp(&addr);
        }
    }
    Ok(())
}
