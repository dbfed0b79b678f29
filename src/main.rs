//! The `edgeward` binary: run the server (`-c FILE`, Pingora's `-t -d -u`), or talk to a running one
//! (`domain`, `challenge`). No logic here: parse, load, build, run.

use clap::{Args, Parser, Subcommand};
use edgeward::{app, client, config};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc instead of glibc malloc: the proxy path allocates per request inside Pingora, and glibc's
/// malloc/free were 14% of the CPU of a proxied request (benches/compare.sh, BENCHMARKS.md). OpenSSL's
/// own allocations are routed to it too, first thing in `main` (`tls::ossl`).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "edgeward",
    version,
    about = "Edge reverse proxy with built-in ACME"
)]
struct Cli {
    /// The configuration file.
    #[arg(short = 'c', long = "conf", global = true)]
    conf: Option<PathBuf>,
    /// Check the configuration and the state directory, then exit.
    #[arg(short = 't', long = "test")]
    test: bool,
    /// Run in the background (Pingora daemon mode).
    #[arg(short = 'd', long = "daemon")]
    daemon: bool,
    /// Take over the listening sockets of a running edgeward (graceful upgrade).
    #[arg(short = 'u', long = "upgrade")]
    upgrade: bool,
    #[command(flatten)]
    admin: AdminArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Args)]
struct AdminArgs {
    /// Admin API address for client commands (default: the config's admin.listen).
    #[arg(long, global = true, env = "EDGEWARD_ADMIN_URL")]
    admin: Option<String>,
    /// Admin token for client commands (default: EDGEWARD_ADMIN_TOKEN or the config's token_file).
    #[arg(long = "token", global = true)]
    admin_token: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Manage domains (routes).
    #[command(subcommand)]
    Domain(DomainCmd),
    /// Manage ACME challenge tokens (for an external ACME client).
    #[command(subcommand)]
    Challenge(ChallengeCmd),
    /// Manage TLS certificates.
    #[command(subcommand)]
    Cert(CertCmd),
    /// Import another proxy's configuration through one admin batch.
    #[command(subcommand)]
    Import(ImportCmd),
    /// Print recent events (admin changes, ACME orders, renewals, certificate swaps), oldest first.
    Events {
        /// Only events after this id (the last id printed before).
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Keep printing new events as they happen (polls every 2 seconds).
        #[arg(long, short = 'f')]
        follow: bool,
        /// Print the API's JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ImportCmd {
    /// HAProxy: host -> backend rules and maps, backends' servers, a crt-list's certificates.
    Haproxy {
        /// The HAProxy configuration file.
        #[arg(long)]
        config: PathBuf,
        /// A map file used by a `use_backend %[...map(FILE)]` rule (matched by file name; default: the
        /// path in the configuration). May be given more than once.
        #[arg(long)]
        map: Vec<PathBuf>,
        /// A crt-list whose PEM files (chain and key) become the domains' certificates.
        #[arg(long)]
        crt_list: Option<PathBuf>,
        /// Print what would change, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum CertCmd {
    /// Upload a certificate (PEM chain, leaf first) and its private key for HOST.
    Put {
        host: String,
        #[arg(long)]
        chain: PathBuf,
        #[arg(long)]
        key: PathBuf,
    },
    /// List certificates.
    Ls {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one certificate (never the key).
    Get { host: String },
    /// Delete a certificate.
    Rm { host: String },
}

#[derive(Subcommand)]
enum DomainCmd {
    /// Create or replace a domain.
    Put {
        host: String,
        /// Upstream IP:port; repeat for several.
        #[arg(long = "upstream", required = true)]
        upstreams: Vec<String>,
        /// off, manual or auto.
        #[arg(long, default_value = "off")]
        tls: String,
        /// Redirect plain HTTP to HTTPS (challenges excepted).
        #[arg(long)]
        redirect_https: bool,
        /// Proxy ACME challenge paths to the upstreams instead of answering them.
        #[arg(long)]
        passthrough_challenges: bool,
        /// Serve the certificate stored under this host (a multi-SAN certificate shared by domains).
        #[arg(long)]
        certificate_host: Option<String>,
        /// Upstream read timeout for this domain (milliseconds).
        #[arg(long)]
        read_timeout_ms: Option<u64>,
        /// How tls auto proves the name: http-01, tls-alpn-01 or dns-01 (default: http-01, dns-01 for
        /// wildcards).
        #[arg(long)]
        acme_challenge: Option<String>,
    },
    /// List domains.
    Ls {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one domain.
    Get { host: String },
    /// Delete a domain.
    Rm { host: String },
    /// Order a new Let's Encrypt certificate now (tls auto; within the order budget and back-off).
    Renew { host: String },
}

#[derive(Subcommand)]
enum ChallengeCmd {
    /// Register a token to answer.
    Put {
        token: String,
        #[arg(long)]
        host: String,
        #[arg(long = "key-authorization")]
        key_authorization: String,
        /// Seconds until the token expires (default: the server's challenges.ttl_seconds).
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// Delete a token.
    Rm { token: String },
}

fn main() -> ExitCode {
    // Before anything touches OpenSSL.
    let openssl_on_mimalloc = edgeward::tls::ossl::allocate_with_mimalloc();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    if !openssl_on_mimalloc {
        log::warn!(
            "OpenSSL allocated before start-up could route it to mimalloc; it keeps glibc malloc"
        );
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Some(cmd) => run_client(cmd, cli.admin, cli.conf),
        None => run_server(cli.conf, cli.test, cli.daemon, cli.upgrade),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgeward: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_server(
    conf: Option<PathBuf>,
    test: bool,
    daemon: bool,
    upgrade: bool,
) -> anyhow::Result<()> {
    let path = conf.ok_or_else(|| anyhow::anyhow!("no configuration file: pass -c FILE"))?;
    let config = config::load(&path)?;
    // Reads only: `-t` never writes, never takes the state directory's lock, never waits for it.
    let prepared = app::prepare(&config)?;
    if test {
        println!(
            "{}: configuration OK, state OK ({} domains)",
            path.display(),
            prepared.control.state().routes.len()
        );
        return Ok(());
    }
    let opt = pingora_core::server::configuration::Opt {
        upgrade,
        daemon,
        ..Default::default()
    };
    let server = app::build(config, opt, prepared)?;
    server.run_forever()
}

/// Apply the plan (one batch), or with `dry_run` compare it with what the node holds.
async fn import_report(
    c: &client::Client,
    plan: &edgeward::import::haproxy::Plan,
    dry_run: bool,
) -> anyhow::Result<serde_json::Value> {
    let summary = json!({
        "domains": plan.domains.len(),
        "certificates": plan.certificates.len(),
        "untranslated": plan.untranslated,
    });
    if !dry_run {
        let applied = c.batch(plan.ops()).await?;
        return Ok(json!({"applied": applied["applied"], "summary": summary}));
    }
    let current: std::collections::BTreeMap<String, serde_json::Value> = c
        .domain_list()
        .await?
        .into_iter()
        .filter_map(|d| Some((d["host"].as_str()?.to_string(), d["upstreams"].clone())))
        .collect();
    let (mut add, mut change, mut same) = (Vec::new(), Vec::new(), 0);
    for (host, ups) in &plan.domains {
        let ups: Vec<String> = ups.iter().map(|a| a.to_string()).collect();
        match current.get(host) {
            None => add.push(json!({"host": host, "upstreams": ups})),
            Some(old) if *old != json!(ups) => {
                change.push(json!({"host": host, "from": old, "to": ups}))
            }
            Some(_) => same += 1,
        }
    }
    Ok(
        json!({"dry_run": true, "add": add, "change": change, "unchanged": same, "summary": summary}),
    )
}

fn run_client(cmd: Command, admin: AdminArgs, conf: Option<PathBuf>) -> anyhow::Result<()> {
    let c = client::Client::new(admin.admin, admin.admin_token, conf.as_deref())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let print = |v: serde_json::Value| println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        match cmd {
            Command::Domain(DomainCmd::Put { host, upstreams, tls, redirect_https, passthrough_challenges, certificate_host, read_timeout_ms, acme_challenge }) => {
                let mut body = json!({
                    "upstreams": upstreams,
                    "tls": tls,
                    "redirect_https": redirect_https,
                    "acme_challenges": if passthrough_challenges { "passthrough" } else { "intercept" },
                    "certificate_host": certificate_host,
                });
                if let Some(ms) = read_timeout_ms {
                    body["upstream_timeouts"] = json!({"read_timeout_ms": ms});
                }
                if let Some(c) = acme_challenge {
                    body["acme_challenge"] = json!(c);
                }
                print(c.domain_put(&host, body).await?);
            }
            Command::Domain(DomainCmd::Ls { json }) => {
                let list = c.domain_list().await?;
                if json {
                    print(serde_json::Value::Array(list));
                } else {
                    print!("{}", client::domain_table(&list));
                }
            }
            Command::Domain(DomainCmd::Get { host }) => print(c.domain_get(&host).await?),
            Command::Domain(DomainCmd::Rm { host }) => c.domain_rm(&host).await?,
            Command::Domain(DomainCmd::Renew { host }) => print(c.domain_renew(&host).await?),
            Command::Events { mut after, follow, json } => loop {
                let mut page = c.events(after).await?;
                if page["last_id"].as_u64().is_some_and(|last| last < after) {
                    // Ids count from 1 again in a new process (a restart or an upgrade).
                    eprintln!("(edgeward restarted: its events count from 1 again)");
                    after = 0;
                    page = c.events(0).await?;
                }
                if json {
                    print(page.clone());
                } else {
                    if let Some(n) = page["missed"].as_u64().filter(|n| *n > 0) {
                        eprintln!("({n} older events were dropped from the ring)");
                    }
                    for e in page["events"].as_array().into_iter().flatten() {
                        println!("{}", client::event_line(e));
                    }
                }
                after = page["last_id"].as_u64().unwrap_or(after);
                if !follow {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            },
            Command::Challenge(ChallengeCmd::Put { token, host, key_authorization, ttl }) => {
                print(c.challenge_put(&token, &host, &key_authorization, ttl).await?);
            }
            Command::Challenge(ChallengeCmd::Rm { token }) => c.challenge_rm(&token).await?,
            Command::Cert(CertCmd::Put { host, chain, key }) => {
                let read = |p: &PathBuf| {
                    std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
                };
                print(c.cert_put(&host, read(&chain)?, read(&key)?).await?);
            }
            Command::Cert(CertCmd::Ls { json }) => {
                let list = c.cert_list().await?;
                if json {
                    print(serde_json::Value::Array(list));
                } else {
                    print!("{}", client::cert_table(&list));
                }
            }
            Command::Cert(CertCmd::Get { host }) => print(c.cert_get(&host).await?),
            Command::Cert(CertCmd::Rm { host }) => c.cert_rm(&host).await?,
            Command::Import(ImportCmd::Haproxy { config, map, crt_list, dry_run }) => {
                let inputs = edgeward::import::haproxy::Inputs {
                    config: &config,
                    maps: &map,
                    crt_list: crt_list.as_deref(),
                };
                let plan = edgeward::import::haproxy::plan(&inputs).map_err(anyhow::Error::msg)?;
                print(import_report(&c, &plan, dry_run).await?);
            }
        }
        anyhow::Ok(())
    })
}
