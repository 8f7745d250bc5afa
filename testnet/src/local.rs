//! A dpow network inside one process, on loopback TCP or libp2p's in-process memory transport:
//! for tests.

use std::time::Duration;

use anyhow::{Context, bail};
use dpow_keys::SecretKey;
use dpow_node::genesis::Genesis;
use dpow_node::net::{self, NodeConfig, NodeHandle, NodeStats, WorkerConfig};
use dpow_protocol::ledger::Ledger;
use dpow_protocol::registry::Registry;
use dpow_protocol::{Credits, Profile, RegistryAction, TimePolicy};
use dpow_solver::CpuSolver;
use libp2p::Multiaddr;

pub use dpow_protocol::flow::FlowConfig;

/// How to build a [`LocalNet`].
#[derive(Clone, Debug)]
pub struct LocalOptions {
    /// Workers to start.
    pub workers: usize,
    /// The difficulty profile.
    pub profile: Profile,
    /// CPU threads per worker.
    pub threads: usize,
    /// Announced hash rate per worker (measured when `None`).
    pub rate: Option<u64>,
    /// Register (and fund) the service key at start.
    pub register_service: bool,
    /// The workers' request state machine settings.
    pub flow: FlowConfig,
    /// Penalised rejections before a peer is blocked.
    pub max_penalties: u32,
    /// The ledger's epoch length.
    pub epoch_ms: u64,
    /// The longest request lifetime (also how long after an epoch ends its books stay open).
    pub max_lifetime_ms: u64,
    /// The finality grace after that.
    pub grace_ms: u64,
    /// Let nodes find each other through the DHT (and so replicate receipts in it). Off by
    /// default: most tests decide who connects to whom.
    pub discovery: bool,
    /// The network's name in its genesis (two nets of one name still differ by their keys).
    pub network: String,
    /// Keys to use instead of fresh ones (to reuse keys on two networks).
    pub keys: Option<LocalKeys>,
    /// How the nodes reach each other.
    pub transport: LocalTransport,
}

/// How the nodes of a [`LocalNet`] reach each other.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LocalTransport {
    /// TCP on loopback: `dpow` processes and other swarms can dial these nodes too.
    #[default]
    Tcp,
    /// QUIC on loopback.
    Quic,
    /// libp2p's in-process memory transport (`/memory/N`), under the same noise and yamux: no
    /// ports and no kernel sockets, but only nodes in this process can reach the network.
    Memory,
}

/// Keys a [`LocalNet`] uses instead of generating its own.
#[derive(Clone)]
pub struct LocalKeys {
    /// The registrar (the genesis's only one).
    pub registrar: SecretKey,
    /// The service key.
    pub service: SecretKey,
    /// Worker node keys, in start order; workers beyond these get fresh keys.
    pub workers: Vec<SecretKey>,
}

impl std::fmt::Debug for LocalKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKeys")
            .field("registrar", &self.registrar.public())
            .field("service", &self.service.public())
            .field("workers", &self.workers.len())
            .finish()
    }
}

impl LocalKeys {
    /// Fresh keys for a registrar, a service and `workers` workers.
    pub fn generate(workers: usize) -> anyhow::Result<LocalKeys> {
        Ok(LocalKeys {
            registrar: SecretKey::generate()?,
            service: SecretKey::generate()?,
            workers: (0..workers)
                .map(|_| SecretKey::generate())
                .collect::<Result<_, _>>()?,
        })
    }
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            workers: 2,
            profile: Profile::test(),
            threads: 1,
            rate: Some(20_000_000),
            register_service: true,
            flow: FlowConfig::default(),
            max_penalties: 3,
            epoch_ms: dpow_protocol::ledger::DEFAULT_EPOCH_MS,
            max_lifetime_ms: TimePolicy::default().max_lifetime_ms,
            grace_ms: dpow_protocol::Finality::DEFAULT_GRACE_MS,
            discovery: false,
            network: "local-test".into(),
            keys: None,
            transport: LocalTransport::default(),
        }
    }
}

/// A running local network. Nodes stop when it is dropped.
pub struct LocalNet {
    /// The genesis every node shares (bootstrap = the first node).
    pub genesis: Genesis,
    /// The registrar's key.
    pub registrar: SecretKey,
    /// The service key (registered if the options said so).
    pub service: SecretKey,
    /// The bootstrap node (relay only).
    pub bootstrap: NodeHandle,
    /// Its address.
    pub bootstrap_addr: Multiaddr,
    /// Worker nodes, in start order.
    pub workers: Vec<NodeHandle>,
    /// The clock every node of this network goes by (each one [`LocalNet::config`] makes):
    /// advance it to make epochs close without waiting for them.
    pub clock: net::Clock,
    options: LocalOptions,
}

/// A fast heartbeat and no DHT walks: tests decide who connects to whom.
pub fn test_tuning() -> net::NetTuning {
    net::NetTuning {
        heartbeat: Duration::from_millis(100),
        discovery: false,
        // Every node is on loopback: public, and AutoNAT (for the nodes a test sets to
        // `Auto`) counts loopback addresses and asks soon.
        reachability: net::Reachability::Public,
        autonat: net::AutoNatTuning {
            private_ips: true,
            boot_delay: Duration::from_millis(300),
            retry: Duration::from_secs(2),
            ..net::AutoNatTuning::default()
        },
        ..net::NetTuning::default()
    }
}

fn listen_addr(transport: LocalTransport) -> Multiaddr {
    let addr = match transport {
        LocalTransport::Tcp => "/ip4/127.0.0.1/tcp/0",
        LocalTransport::Quic => "/ip4/127.0.0.1/udp/0/quic-v1",
        // Port 0: the transport picks a free one.
        LocalTransport::Memory => "/memory/0",
    };
    addr.parse().unwrap_or_else(|_| Multiaddr::empty())
}

impl LocalNet {
    /// Start a bootstrap node and the workers, register the service, and wait until every node
    /// knows the registry and every worker.
    pub async fn start(options: LocalOptions) -> anyhow::Result<LocalNet> {
        let (registrar, service) = match &options.keys {
            Some(k) => (k.registrar.clone(), k.service.clone()),
            None => (SecretKey::generate()?, SecretKey::generate()?),
        };
        let time = TimePolicy {
            max_lifetime_ms: options.max_lifetime_ms,
            ..TimePolicy::default()
        };
        let mut genesis = Genesis {
            network: options.network.clone(),
            profile: options.profile.clone(),
            registrars: vec![registrar.public()],
            bootstrap: vec![],
            time,
            epoch_ms: options.epoch_ms,
            finality: dpow_protocol::Finality {
                epoch_ms: options.epoch_ms,
                max_lifetime_ms: options.max_lifetime_ms,
                grace_ms: options.grace_ms,
            },
            volume: options.flow.volume.clone(),
            id: dpow_protocol::NetworkId([0; 32]),
        };
        genesis.seal()?;
        let mut cfg = NodeConfig::new(genesis.clone(), SecretKey::generate()?);
        cfg.listen = vec![listen_addr(options.transport)];
        cfg.tuning = test_tuning();
        cfg.tuning.discovery = options.discovery;
        cfg.max_penalties = options.max_penalties;
        let clock = cfg.tuning.clock.clone();
        let bootstrap = net::spawn(cfg).await?;
        let bootstrap_addr = bootstrap
            .listen_addrs(Duration::from_secs(10))
            .await?
            .into_iter()
            .next()
            .context("bootstrap address")?;
        genesis.bootstrap = vec![bootstrap_addr.clone()];
        let mut net = LocalNet {
            genesis,
            registrar,
            service,
            bootstrap,
            bootstrap_addr,
            workers: Vec::new(),
            clock,
            options: options.clone(),
        };
        for _ in 0..options.workers {
            net.add_worker().await?;
        }
        if options.register_service {
            net.bootstrap
                .wait_for_peers(1, Duration::from_secs(10))
                .await
                .ok();
            let svc = net.service.public();
            net.bootstrap
                .registry(
                    RegistryAction::RegisterService {
                        service: svc,
                        name: "test service".into(),
                    },
                    net.registrar.clone(),
                )
                .await?;
            net.bootstrap
                .registry(
                    RegistryAction::GrantCredits {
                        service: svc,
                        credits: Credits(1_000_000),
                    },
                    net.registrar.clone(),
                )
                .await?;
        }
        let want_entries = if options.register_service { 2 } else { 0 };
        let n = options.workers;
        net.wait_all(Duration::from_secs(20), |s| {
            s.registry_entries >= want_entries && s.live_workers >= n
        })
        .await
        .context("waiting for the network to settle")?;
        Ok(net)
    }

    /// Write this network's genesis as a file for `dpow` processes, listing the bootstrap
    /// node or (with `bootstrap` false) no peer at all, for a node that must start alone.
    pub fn write_genesis(&self, path: &std::path::Path, bootstrap: bool) -> anyhow::Result<()> {
        if bootstrap && self.options.transport == LocalTransport::Memory {
            bail!(
                "this network runs on the in-process memory transport, which a dpow process \
                 cannot dial: start it with LocalTransport::Tcp"
            );
        }
        let peers = if bootstrap {
            format!("\"{}\"", self.bootstrap_addr)
        } else {
            String::new()
        };
        let windows: Vec<String> = self
            .genesis
            .volume
            .windows
            .iter()
            .map(|w| format!("{{ window_ms = {}, base = {} }}", w.window_ms, w.base))
            .collect();
        let text = format!(
            "network = \"{}\"\nprofile = \"{}\"\nregistrars = [\"{}\"]\nbootstrap = [{peers}]\nepoch_ms = {}\nmax_request_lifetime_ms = {}\nfinality_grace_ms = {}\n\n[anti_spam]\nmax_class = {}\nwindows = [{}]\n",
            self.genesis.network,
            self.genesis.profile.name,
            self.registrar.public(),
            self.genesis.epoch_ms,
            self.genesis.finality.max_lifetime_ms,
            self.genesis.finality.grace_ms,
            self.genesis.volume.max_class,
            windows.join(", "),
        );
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// A node config for this network with test settings.
    pub fn config(&self, key: SecretKey) -> NodeConfig {
        let mut cfg = NodeConfig::new(self.genesis.clone(), key);
        cfg.listen = vec![listen_addr(self.options.transport)];
        cfg.tuning = test_tuning();
        cfg.tuning.discovery = self.options.discovery;
        cfg.tuning.clock = self.clock.clone();
        cfg.flow = self.options.flow.clone();
        cfg.status_interval = Duration::from_millis(500);
        cfg.max_penalties = self.options.max_penalties;
        cfg
    }

    /// Start one more worker.
    pub async fn add_worker(&mut self) -> anyhow::Result<&NodeHandle> {
        let given = self
            .options
            .keys
            .as_ref()
            .and_then(|k| k.workers.get(self.workers.len()).cloned());
        let key = match given {
            Some(k) => k,
            None => SecretKey::generate()?,
        };
        let mut cfg = self.config(key);
        let solver = CpuSolver::new(self.options.threads)?;
        cfg.worker = Some(WorkerConfig {
            solver: Box::new(solver),
            // An account of its own: 32 random bytes in the nano_ form (no wallet holds it;
            // `testnet/run.sh` derives real ones).
            payout: Some(dpow_keys::NanoAccount::from_bytes(
                SecretKey::generate()?.public().0,
            )?),
            rate: self.options.rate,
        });
        let node = net::spawn(cfg).await?;
        node.wait_synced(Duration::from_secs(10)).await?;
        self.workers.push(node);
        self.workers.last().context("just pushed")
    }

    /// A service node (no worker) that signs with the service key, connected to the bootstrap.
    pub async fn service_node(&self) -> anyhow::Result<NodeHandle> {
        let mut cfg = self.config(SecretKey::generate()?);
        cfg.service_key = Some(self.service.clone());
        let node = net::spawn(cfg).await?;
        node.wait_synced(Duration::from_secs(10)).await?;
        node.wait_for_peers(1, Duration::from_secs(10)).await?;
        Ok(node)
    }

    /// Wait until `ok` holds for the bootstrap's and every worker's statistics.
    pub async fn wait_all(
        &self,
        timeout: Duration,
        ok: impl Fn(&NodeStats) -> bool,
    ) -> anyhow::Result<()> {
        let nodes: Vec<&NodeHandle> = std::iter::once(&self.bootstrap)
            .chain(&self.workers)
            .collect();
        let all = || {
            nodes
                .iter()
                .all(|n| n.stats_reader().check(|s| ok(s)))
                .then_some(())
        };
        if wait_nodes(&nodes, timeout, all).await.is_some() {
            return Ok(());
        }
        let s: Vec<String> = nodes
            .iter()
            .map(|n| {
                let s = n.stats();
                format!(
                    "{}: registry {}, workers {}, peers {}",
                    &s.peer_id[s.peer_id.len().saturating_sub(6)..],
                    s.registry_entries,
                    s.live_workers,
                    s.connected_peers
                )
            })
            .collect();
        bail!("timed out or a node stopped; nodes: {}", s.join("; "));
    }
}

/// Wait until `look` answers `Some`, asking again after each event any of `nodes` handles
/// ([`net::wait_on`]): `None` once `timeout` passes or one of them stops.
pub async fn wait_nodes<T>(
    nodes: &[&NodeHandle],
    timeout: Duration,
    look: impl FnMut() -> Option<T>,
) -> Option<T> {
    let readers: Vec<_> = nodes.iter().map(|n| n.stats_reader()).collect();
    net::wait_on(&readers, timeout, look).await
}

/// Wait until `look` finds what it is after in `node`'s books (a copy of its ledger and
/// registry), asked again each time the node takes receipts (a `receipt_stored` or `synced`
/// event, or events missed), not on a timer. `None` after `timeout` or when the node stops.
pub async fn wait_books<T>(
    node: &net::Client,
    timeout: Duration,
    mut look: impl FnMut(&Ledger, &Registry) -> Option<T>,
) -> Option<T> {
    // Subscribed before the first look, so nothing taken after that look goes unnoticed.
    let mut events = node.events();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (ledger, registry) = node.ledger().await.ok()?;
        if let Some(found) = look(&ledger, &registry) {
            return Some(found);
        }
        loop {
            let next = tokio::time::timeout_at(deadline, events.next())
                .await
                .ok()??;
            match next {
                Ok(net::Event::ReceiptStored { .. } | net::Event::Synced { .. }) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}

/// Serve `app` on a free loopback port until the process ends (tests); its address.
pub async fn serve_http(app: axum::Router) -> std::net::SocketAddr {
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    dpow_node::http::serve(loopback, app, std::future::pending())
        .await
        .expect("an HTTP server binds a loopback port")
}

/// Wait until `ok` holds for one node's statistics.
pub async fn wait_for(
    node: &NodeHandle,
    timeout: Duration,
    ok: impl Fn(&NodeStats) -> bool,
) -> anyhow::Result<NodeStats> {
    node.wait_stats(timeout, ok)
        .await
        .map_err(|s| anyhow::anyhow!("timed out or stopped; stats: {s:?}"))
}
