//! `dpow node`: run a node of a network until Ctrl-C.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use dpow_keys::{PublicKey, keyfile};
use libp2p::Multiaddr;
use serde::Deserialize;
use serde_json::json;

use crate::devices::DeviceArgs;
use crate::gateway::{Gateway, GatewayConfig};
use crate::genesis::{Genesis, read_small};
use crate::net::{self, NodeConfig, WorkerConfig};
use crate::output::{Output, rate};
use crate::store::Store;

/// A node's role besides relaying and validating.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Solve requests and earn credits.
    Worker,
    /// Submit requests signed with a service key (see `--service-key`).
    Service,
}

/// What a worker does with requests from services whose credits are spent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Exhausted {
    /// Solve them only when nothing else waits (the default).
    Deprioritise,
    /// Ignore them.
    Refuse,
}

/// Options of `dpow node`; each can also come from the `--config` TOML file (flags win).
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The network's genesis file (TOML).
    #[arg(long, value_name = "FILE")]
    pub genesis: Option<PathBuf>,
    /// A TOML file with any of the options below (names as the flags, `_` for `-`).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where the node keeps its key and data (default: ./dpow-data).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The node key (created if missing; default: DATA_DIR/node.key).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// libp2p listen address, repeatable (default: /ip4/0.0.0.0/tcp/7075).
    #[arg(long, value_name = "MULTIADDR")]
    pub listen: Vec<Multiaddr>,
    /// Extra peers to dial besides the genesis bootstrap list, repeatable.
    #[arg(long, value_name = "MULTIADDR")]
    pub dial: Vec<Multiaddr>,
    /// Roles, comma-separated: worker, service.
    #[arg(long, value_delimiter = ',', value_name = "ROLE,..")]
    pub role: Vec<Role>,
    /// The service key requests are signed with (service role).
    #[arg(long, value_name = "FILE")]
    pub service_key: Option<PathBuf>,
    /// Where a worker's earnings go: a nano_ account (default: the node key's account).
    #[arg(long, value_name = "ACCOUNT")]
    pub payout: Option<String>,
    /// HTTP server address for statistics (default: 127.0.0.1:7076; `off` to disable).
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
    /// Seconds between a worker's status announcements.
    #[arg(long, value_name = "SECS")]
    pub status_interval: Option<f64>,
    /// Announce this hash rate instead of measuring it (H/s).
    #[arg(long, value_name = "H/S")]
    pub announce_rate: Option<u64>,
    /// Do not walk the DHT for more peers (stay with the bootstrap and dialled peers).
    #[arg(long)]
    pub no_discovery: bool,
    /// Worker role: what to do with requests of services whose credits are spent.
    #[arg(long, value_enum, value_name = "POLICY")]
    pub exhausted: Option<Exhausted>,
    /// Peers that hold each receipt as a DHT record (the Kademlia replication factor).
    #[arg(long, value_name = "K")]
    pub replication: Option<usize>,
    /// Seconds between comparing ledger digests with a random peer (besides on connecting).
    #[arg(long, value_name = "SECS")]
    pub ledger_sync: Option<f64>,
    /// Service role: bearer token the work API requires (needed when --http is not loopback).
    #[arg(
        long,
        env = "DPOW_HTTP_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub http_token: Option<String>,
    /// Service role: seconds to wait for the network before solving locally as well.
    #[arg(long, value_name = "SECS")]
    pub fallback_after: Option<f64>,
    /// Service role: CPU threads for local fallback (0 = every core).
    #[arg(long, value_name = "N")]
    pub fallback_threads: Option<usize>,
    /// Service role: never solve locally; wait for the network.
    #[arg(long)]
    pub no_fallback: bool,
    /// Service role: a Nano node's websocket (e.g. ws://127.0.0.1:7078); confirmed blocks of
    /// accounts seen in calls get their next work precached.
    #[arg(long, value_name = "URL")]
    pub nano_websocket: Option<String>,
    /// Worker devices.
    #[command(flatten)]
    pub devices: DeviceArgs,
}

/// The `--config` file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    genesis: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    key: Option<PathBuf>,
    #[serde(default)]
    listen: Vec<String>,
    #[serde(default)]
    dial: Vec<String>,
    #[serde(default)]
    role: Vec<Role>,
    service_key: Option<PathBuf>,
    payout: Option<String>,
    http: Option<String>,
    status_interval: Option<f64>,
    announce_rate: Option<u64>,
    threads: Option<usize>,
    #[serde(default)]
    gpu: Vec<String>,
    no_discovery: Option<bool>,
    replication: Option<usize>,
    ledger_sync: Option<f64>,
    exhausted: Option<Exhausted>,
    fallback_after: Option<f64>,
    fallback_threads: Option<usize>,
    no_fallback: Option<bool>,
}

fn parse_addrs(v: &[String], what: &str) -> anyhow::Result<Vec<Multiaddr>> {
    v.iter()
        .map(|a| a.parse().with_context(|| format!("{what} address {a:?}")))
        .collect()
}

/// The node's options after merging the config file under the flags.
fn merge(mut a: NodeArgs) -> anyhow::Result<NodeArgs> {
    let Some(path) = a.config.clone() else {
        return Ok(a);
    };
    let text = read_small(&path, 64 * 1024)?;
    let c: ConfigFile =
        toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))?;
    a.genesis = a.genesis.or(c.genesis);
    a.data_dir = a.data_dir.or(c.data_dir);
    a.key = a.key.or(c.key);
    if a.listen.is_empty() {
        a.listen = parse_addrs(&c.listen, "listen")?;
    }
    if a.dial.is_empty() {
        a.dial = parse_addrs(&c.dial, "dial")?;
    }
    if a.role.is_empty() {
        a.role = c.role;
    }
    a.service_key = a.service_key.or(c.service_key);
    a.payout = a.payout.or(c.payout);
    a.http = a.http.or(c.http);
    a.status_interval = a.status_interval.or(c.status_interval);
    a.announce_rate = a.announce_rate.or(c.announce_rate);
    if a.devices.threads == 0 {
        a.devices.threads = c.threads.unwrap_or(0);
    }
    if a.devices.gpus.is_empty() {
        a.devices.gpus = c
            .gpu
            .iter()
            .map(|g| g.parse().with_context(|| format!("gpu {g:?}")))
            .collect::<anyhow::Result<_>>()?;
    }
    a.no_discovery |= c.no_discovery.unwrap_or(false);
    a.replication = a.replication.or(c.replication);
    a.exhausted = a.exhausted.or(c.exhausted);
    a.ledger_sync = a.ledger_sync.or(c.ledger_sync);
    a.fallback_after = a.fallback_after.or(c.fallback_after);
    a.fallback_threads = a.fallback_threads.or(c.fallback_threads);
    a.no_fallback |= c.no_fallback.unwrap_or(false);
    Ok(a)
}

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
    let a = merge(args)?;
    let Some(genesis_path) = &a.genesis else {
        bail!("--genesis (or `genesis` in --config) is required: the network to join");
    };
    let genesis = Genesis::load(genesis_path)?;
    let data_dir = a
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("dpow-data"));
    let key_path = a.key.clone().unwrap_or_else(|| data_dir.join("node.key"));
    let (key, created) = keyfile::load_or_create(&key_path)?;
    if created {
        tracing::info!(path = %key_path.display(), "created a new node key");
    }
    let mut config = NodeConfig::new(genesis, key.clone());
    config.listen = if a.listen.is_empty() {
        vec!["/ip4/0.0.0.0/tcp/7075".parse()?]
    } else {
        a.listen.clone()
    };
    config.dial = a.dial.clone();
    config.tuning.discovery = !a.no_discovery;
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
    let db = data_dir.join("db");
    let store = std::sync::Arc::new(Store::open(&db)?);
    tracing::info!(path = %db.display(), "store opened");
    config.store = Some(store.clone());
    if let Some(s) = a.status_interval {
        if !(s.is_finite() && (0.1..=3600.0).contains(&s)) {
            bail!("--status-interval must be between 0.1 and 3600 seconds");
        }
        config.status_interval = Duration::from_secs_f64(s);
    }
    if a.role.contains(&Role::Worker) {
        let payout = match &a.payout {
            Some(p) => p
                .trim()
                .parse::<PublicKey>()
                .with_context(|| format!("--payout {p:?}"))?,
            None => key.public(),
        };
        config.worker = Some(WorkerConfig {
            solver: Box::new(a.devices.dispatcher()?),
            payout,
            rate: a.announce_rate,
        });
    }
    let http: Option<SocketAddr> = match a.http.as_deref() {
        Some("off") => None,
        Some(s) => Some(s.parse().with_context(|| format!("--http {s:?}"))?),
        None => Some("127.0.0.1:7076".parse()?),
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
        let fallback_after = a.fallback_after.unwrap_or(5.0);
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
            request_lifetime: Duration::from_secs(60),
            token: a.http_token.clone().filter(|t| !t.is_empty()),
            store: Some(store.clone()),
        })
    } else {
        None
    };
    let roles: Vec<&str> = a
        .role
        .iter()
        .map(|r| match r {
            Role::Worker => "worker",
            Role::Service => "service",
        })
        .collect();
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
    runtime.block_on(serve(
        config, http, gateway, websocket, roles, &key_path, out,
    ))
}

async fn serve(
    config: NodeConfig,
    http: Option<SocketAddr>,
    gateway: Option<GatewayConfig>,
    websocket: Option<String>,
    roles: Vec<&str>,
    key_path: &Path,
    out: Output,
) -> anyhow::Result<ExitCode> {
    let network = config.genesis.network.clone();
    let account = config.key.public().to_account();
    let node = std::sync::Arc::new(net::spawn(config).await?);
    let addrs = node.listen_addrs(Duration::from_secs(10)).await?;
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let http_url = match http {
        Some(addr) => {
            let mut app = crate::http::router(node.stats_reader());
            if let Some(g) = gateway {
                let gw = Gateway::new(node.clone(), g);
                if let Some(url) = websocket.clone() {
                    tokio::spawn(gw.clone().follow_confirmations(url));
                }
                app = app.merge(gw.router());
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
        "dpow node on network {network}\n\
         peer id   {}\n\
         account   {account}\n\
         key       {}\n\
         roles     {}\n\
         rate      {}\n\
         listen    {}\n\
         http      {}",
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
    // The HTTP server holds a handle until it has stopped; dropping the last one stops the node.
    drop(node);
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(ExitCode::SUCCESS)
}
