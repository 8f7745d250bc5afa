//! `dpow node`: run a node of a network until Ctrl-C.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use dpow_keys::{NanoAccount, keyfile};
use serde_json::json;

use crate::config::{Config, Exhausted, ReachabilityArg, Role};
use crate::gateway::{Gateway, GatewayConfig};
use crate::genesis::Genesis;
use crate::net::{self, NodeConfig, WorkerConfig};
use crate::output::{Output, rate};

/// `dpow node`: run a node, or act on a node's data directory.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct NodeArgs {
    /// Act on a node's data instead of running it.
    #[command(subcommand)]
    pub action: Option<NodeAction>,
    /// The node's options: flags over `DPOW_*` variables over the `--config` file.
    #[command(flatten)]
    pub config: Config,
}

/// What `dpow node` can do besides running.
#[derive(Debug, Subcommand)]
pub enum NodeAction {
    /// Back up a node's data directory (its key and a consistent RocksDB checkpoint of its
    /// database), while the node runs or not. DIR must not exist yet.
    Backup(super::backup::BackupArgs),
}

/// The longest a stopping service node waits for the work API calls it took (a call lives a
/// minute at most).
const WORK_API_DRAIN: Duration = Duration::from_secs(65);

/// Wait for Ctrl-C or SIGTERM.
async fn wait_for_stop() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}

/// Run `dpow node`.
pub(super) fn run(args: NodeArgs, out: Output) -> anyhow::Result<ExitCode> {
    if let Some(NodeAction::Backup(b)) = args.action {
        return super::backup::run(b, out);
    }
    let a = args.config.merged()?.with_defaults();
    if a.print_config {
        out.emit(&a.to_toml(), &redacted_json(&a))?;
        return Ok(ExitCode::SUCCESS);
    }
    let Some(genesis_path) = &a.genesis else {
        bail!(
            "--genesis (or `genesis` in --config, or DPOW_GENESIS) is required: the network to join"
        );
    };
    let genesis = Genesis::load(genesis_path)?;
    // A bad payout account stops the node before anything else happens.
    let payout = match &a.payout {
        Some(p) => Some(p.trim().parse::<NanoAccount>().with_context(|| {
            format!("--payout {p:?}: name a nano_ account from your own wallet")
        })?),
        None => None,
    };
    let data_dir = a.data_dir.clone().unwrap_or_default();
    let key_path = a.key.clone().unwrap_or_else(|| data_dir.join("node.key"));
    let (key, created) = keyfile::load_or_create(&key_path)?;
    if created {
        tracing::info!(path = %key_path.display(), "created a new node key");
    }
    let mut config = NodeConfig::new(genesis, key.clone());
    config.listen = a.listen.clone();
    config.dial = a.dial.clone();
    config.tuning.discovery = !a.no_discovery;
    config.tuning.reachability =
        crate::net::Reachability::from(a.reachability.unwrap_or(ReachabilityArg::Auto))
            .given_listen(&config.listen);
    config.tuning.relay_server = !a.no_relay;
    config.tuning.autonat.private_ips = a.lan;
    config.tuning.verify_store = a.verify_store;
    config.tuning.adopt_checkpoints = a.adopt_checkpoints;
    if let Some(k) = a.replication {
        config.tuning.replication = std::num::NonZeroUsize::new(k)
            .filter(|k| k.get() <= 20)
            .context("--replication must be between 1 and 20")?;
    }
    if let Some(s) = a.ledger_sync {
        if !(s.is_finite() && (1.0..=86400.0).contains(&s)) {
            bail!("--ledger-sync must be between 1 and 86400 seconds");
        }
        config.tuning.ledger_sync = Duration::from_secs_f64(s);
    }
    config.flow.exhausted = match a.exhausted {
        Some(Exhausted::Refuse) => dpow_protocol::flow::ExhaustedPolicy::Refuse,
        Some(Exhausted::Deprioritise) | None => dpow_protocol::flow::ExhaustedPolicy::Deprioritise,
    };
    let store = open_store(&data_dir, &mut config)?;
    if let Some(s) = &store
        && let Err(e) = crate::control::serve(&data_dir, s.clone())
    {
        // Everything else works without it; only `dpow node backup` needs the node stopped.
        tracing::warn!("no control socket: {e:#}");
    }
    if let Some(s) = a.status_interval {
        if !(s.is_finite() && (0.1..=3600.0).contains(&s)) {
            bail!("--status-interval must be between 0.1 and 3600 seconds");
        }
        config.status_interval = Duration::from_secs_f64(s);
    }
    if a.role.contains(&Role::Worker) {
        if payout.is_none() {
            tracing::warn!(
                "no --payout account: this worker's credits will be recorded as unclaimed and never paid"
            );
        }
        config.worker = Some(WorkerConfig {
            solver: Box::new(a.devices.dispatcher()?),
            payout,
            rate: a.announce_rate,
        });
    }
    let http: Option<SocketAddr> = match a.http.as_deref() {
        Some("off") => None,
        Some(s) => Some(s.parse().with_context(|| format!("--http {s:?}"))?),
        None => Some(crate::config::DEFAULT_HTTP.parse()?),
    };
    let stats_token = match http {
        Some(addr) => crate::http::stats_token(addr, a.http_token.as_deref(), a.public_stats)?,
        None => None,
    };
    let gateway = if a.role.contains(&Role::Service) {
        let Some(p) = &a.service_key else {
            bail!("the service role needs --service-key");
        };
        config.service_key = Some(keyfile::read(p)?);
        let Some(addr) = http else {
            bail!("the service role serves the work API over HTTP: --http cannot be off");
        };
        if !addr.ip().is_loopback() && a.http_token.as_deref().is_none_or(str::is_empty) {
            bail!(
                "--http {addr} is reachable from other machines: set --http-token (or DPOW_HTTP_TOKEN) so the work API requires it"
            );
        }
        let fallback_after = a
            .fallback_after
            .unwrap_or(crate::config::DEFAULT_FALLBACK_AFTER);
        if !(fallback_after.is_finite() && (0.0..=600.0).contains(&fallback_after)) {
            bail!("--fallback-after must be between 0 and 600 seconds");
        }
        let fallback: Option<std::sync::Arc<dyn dpow_solver::Solver>> = if a.no_fallback {
            None
        } else {
            Some(std::sync::Arc::new(
                dpow_solver::CpuSolver::new(a.fallback_threads.unwrap_or(0))
                    .context("starting the fallback solver")?,
            ))
        };
        Some(GatewayConfig {
            profile: config.genesis.profile.clone(),
            fallback,
            fallback_after: Duration::from_secs_f64(fallback_after),
            // A minute, or less where the network lets requests live less long.
            request_lifetime: Duration::from_secs(60)
                .min(Duration::from_millis(config.genesis.time.max_lifetime_ms)),
            token: a.http_token.clone().filter(|t| !t.is_empty()),
            store: store.clone(),
        })
    } else {
        None
    };
    let roles: Vec<&str> = a.role.iter().map(|r| r.as_str()).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    if let Some(u) = &a.nano_websocket
        && !u.starts_with("ws://")
    {
        bail!(
            "--nano-websocket must be a ws:// URL (wss:// is not built in: use a local proxy), got {u:?}"
        );
    }
    let websocket = a.nano_websocket.clone();
    let browser = if a.browser_workers {
        if http.is_none() {
            bail!("--browser-workers serves a page over HTTP: --http cannot be off");
        }
        if !crate::browser_assets::has_browser_worker() {
            tracing::warn!(
                "this binary has no WebAssembly kernel ({}): the page will say so",
                crate::browser_assets::WASM_MISSING.unwrap_or("not built")
            );
        }
        for p in &a.browser_peers {
            if !(p.starts_with("http://") || p.starts_with("https://")) {
                bail!("--browser-peers takes http:// or https:// base URLs, got {p:?}");
            }
        }
        Some(crate::browser::BrowserConfig {
            peers: a.browser_peers.clone(),
            ..Default::default()
        })
    } else {
        None
    };
    let http = http.map(|addr| (addr, stats_token));
    runtime.block_on(serve(
        config, http, gateway, websocket, browser, roles, &key_path, out,
    ))
}

/// The merged configuration as JSON, the token shown only as set.
fn redacted_json(c: &Config) -> serde_json::Value {
    let mut v = serde_json::to_value(c).unwrap_or_default();
    if let Some(t) = v.get_mut("http_token")
        && !t.is_null()
    {
        *t = json!("(set, not shown)");
    }
    v
}

/// Open the node's database under DATA_DIR/db for the ledger, the DHT records and the
/// precache. A light build (without the `ledger` feature) keeps no ledger: it keeps only the
/// receipts that pay it, in memory, and stores nothing.
#[cfg(feature = "ledger")]
fn open_store(
    data_dir: &Path,
    config: &mut NodeConfig,
) -> anyhow::Result<Option<std::sync::Arc<crate::store::Store>>> {
    let db = data_dir.join("db");
    let store = std::sync::Arc::new(crate::store::Store::open(&db)?);
    tracing::info!(path = %db.display(), "store opened");
    config.store = Some(store.clone());
    Ok(Some(store))
}

#[cfg(not(feature = "ledger"))]
fn open_store(
    _data_dir: &Path,
    config: &mut NodeConfig,
) -> anyhow::Result<Option<std::sync::Arc<crate::store::Store>>> {
    tracing::info!("light build: no ledger is kept, only this node's own receipts in memory");
    config.tuning.ledger = false;
    config.tuning.light = true;
    Ok(None)
}

#[allow(clippy::too_many_arguments)] // the parsed pieces of the command line, passed once
async fn serve(
    config: NodeConfig,
    http: Option<(SocketAddr, Option<String>)>,
    gateway: Option<GatewayConfig>,
    websocket: Option<String>,
    browser: Option<crate::browser::BrowserConfig>,
    roles: Vec<&str>,
    key_path: &Path,
    out: Output,
) -> anyhow::Result<ExitCode> {
    let network = config.genesis.network.clone();
    let genesis = config.genesis.clone();
    let account = config.key.public().to_string();
    let mut node = net::spawn(config).await?;
    // The HTTP routes and the gateway hold clients of the node; stopping waits for the node
    // itself, through the stopper.
    let stopper = node.stopper();
    let node = node.client();
    let addrs = node.listen_addrs(Duration::from_secs(10)).await?;
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut work_api = None;
    let http_url = match http {
        Some((addr, stats_token)) => {
            let mut app = crate::http::router(node.stats_reader());
            if let Some(token) = stats_token {
                app = crate::http::behind_token(app, token);
            }
            if let Some(g) = gateway {
                let gw = Gateway::new(node.clone(), g);
                work_api = Some(gw.clone());
                if let Some(url) = websocket.clone() {
                    tokio::spawn(gw.clone().follow_confirmations(url));
                }
                app = app.merge(gw.router());
            }
            if let Some(b) = browser {
                app = app.merge(crate::browser::router(node.clone(), &genesis, b));
            }
            let bound = crate::http::serve(addr, app, async {
                let _ = http_stopped.await;
            })
            .await?;
            Some(format!("http://{bound}"))
        }
        None => None,
    };
    let stats = node.stats();
    let human = format!(
        "dpow node on network {network} (id {})\n\
         peer id   {}\n\
         account   {account}\n\
         key       {}\n\
         roles     {}\n\
         rate      {}\n\
         listen    {}\n\
         http      {}",
        genesis.id.short(),
        node.peer_id(),
        key_path.display(),
        if roles.is_empty() {
            "relay".to_string()
        } else {
            roles.join(", ")
        },
        rate(stats.hash_rate as f64),
        addrs
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(" "),
        http_url.as_deref().unwrap_or("off"),
    );
    let js = json!({
        "network": network,
        "network_id": genesis.id.to_string(),
        "peer_id": node.peer_id().to_string(),
        "account": account,
        "roles": roles,
        "hash_rate": stats.hash_rate,
        "listen": addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "http": http_url,
    });
    out.emit(&human, &js)?;
    let is_worker = roles.contains(&"worker");
    let live = async {
        // A worker's terminal shows a live line; logs and --json output stay clean.
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            if is_worker {
                let s = node.stats();
                // This worker's results; the gossip this node refused (any peer's) apart.
                let own = s.worker.clone().unwrap_or_default();
                let refused: u64 = s.rejected.values().sum();
                out.progress(&format!(
                    "{}  sent {}  won {}  lost {}  rejected {}  credits {}  queue {}  peers {}  workers {}  gossip refused {}",
                    rate(s.hash_rate as f64),
                    own.sent,
                    own.won,
                    own.lost,
                    own.rejected_total(),
                    own.credits,
                    s.queue,
                    s.connected_peers,
                    s.live_workers,
                    refused
                ));
            }
        }
    };
    tokio::select! {
        r = wait_for_stop() => r?,
        () = live => {}
    }
    out.progress_done();
    tracing::info!("stopping");
    let _ = stop_http.send(());
    // New connections are refused now; the work API's calls already taken (a work_generate
    // waiting for the network) are answered before the node goes: a restart loses none.
    if let Some(gw) = work_api
        && tokio::time::timeout(WORK_API_DRAIN, gw.idle())
            .await
            .is_err()
    {
        tracing::warn!("work API calls still open after {WORK_API_DRAIN:?}: stopping anyway");
    }
    // Stop the node and wait until it has written what it holds and closed its store (its
    // own drain is bounded); the HTTP routes' handles no longer keep it alive.
    drop(node);
    stopper.stop().await?;
    Ok(ExitCode::SUCCESS)
}
