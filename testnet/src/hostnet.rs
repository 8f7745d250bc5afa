//! A dpow network of `dpow` processes on a namespace [`Topology`], for the fault tests.
//!
//! [`HostNet::start`] makes keys and a genesis (10 s epochs, as `testnet/run.sh`), starts the
//! registrar/bootstrap, the service node, the relay and every worker of the topology on its
//! own host at a fixed address, registers and funds the service from the service's host, and
//! waits until every node knows the registry and every worker. Nodes can then be stopped,
//! restarted on the same address and data, or added; links cut with [`Topology::link_down`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::netns::{Layout, Topology};
use crate::procs::{Dpow, NodeProc, Place, dpow_json, start_node_at, wait_on_nodes};

/// How to build a [`HostNet`].
#[derive(Clone, Debug)]
pub struct HostOptions {
    /// The hosts.
    pub layout: Layout,
    /// Extra `dpow node` options for every node.
    pub all: Vec<String>,
    /// Extra options for the service node (e.g. `--fallback-after 1`, `--no-fallback`).
    pub service: Vec<String>,
    /// Extra options for each worker.
    pub worker: Vec<String>,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            layout: Layout {
                public_workers: 0,
                home_workers: 2,
            },
            // Compare ledger digests with a peer every 2 s, not every minute.
            all: vec!["--ledger-sync".into(), "2".into()],
            service: Vec::new(),
            worker: vec![
                "--threads".into(),
                "1".into(),
                "--status-interval".into(),
                "1".into(),
            ],
        }
    }
}

/// A running network on namespace hosts. Dropping it stops every node and removes the hosts.
pub struct HostNet {
    /// The nodes, by host name (`bootstrap`, `service`, `relay`, `pworker1`, `worker1`, ...).
    /// Declared before the topology: processes go before their namespaces.
    pub nodes: Vec<NodeProc>,
    /// The hosts.
    pub topo: Topology,
    /// The `dpow` binary.
    pub dpow: PathBuf,
    /// The genesis every node was started with (bootstrap = the bootstrap host).
    pub genesis: PathBuf,
    /// Whether nodes listen on QUIC too.
    pub quic: bool,
    /// Options the network was built with.
    pub options: HostOptions,
    /// Keys, data directories and logs (`NAME.log`): removed with the network, kept when a
    /// test fails (the failure names the path).
    dir: Option<tempfile::TempDir>,
}

impl Drop for HostNet {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(d) = self.dir.take()
        {
            let _ = d.keep();
        }
    }
}

impl HostNet {
    /// Build the hosts and start the network on them.
    pub fn start(dpow: &Path, options: HostOptions) -> anyhow::Result<HostNet> {
        let topo = Topology::new(options.layout)?;
        let dir = tempfile::Builder::new()
            .prefix("dpow-netns.")
            .tempdir()
            .context("creating the data directory")?;
        let mut net = HostNet {
            nodes: Vec::new(),
            topo,
            dpow: dpow.to_path_buf(),
            genesis: dir.path().join("genesis.toml"),
            quic: crate::netns::supports_quic(dpow),
            options,
            dir: Some(dir),
        };
        let here = Dpow::here(dpow);
        let d = net.dir().to_path_buf();
        let key = |name: &str| -> anyhow::Result<String> {
            let v = dpow_json(
                &here,
                &["keys", "new", "--out", &d.join(name).to_string_lossy()],
            )?;
            crate::procs::field(&v, "key")
        };
        let registrar = key("registrar.key")?;
        let service = key("service.key")?;
        let genesis_text = |bootstrap: &str| {
            format!(
                "network = \"dpow-netns\"\nprofile = \"test\"\nregistrars = [\"{registrar}\"]\nbootstrap = [{bootstrap}]\n{}",
                crate::payouts::GENESIS_TIMES
            )
        };
        let alone = d.join("genesis-bootstrap.toml");
        std::fs::write(&alone, genesis_text(""))?;
        net.start_node("bootstrap", "registrar/bootstrap", &alone, &[])?;
        let boot = net.node("bootstrap")?.listen.clone();
        std::fs::write(&net.genesis, genesis_text(&format!("\"{boot}\"")))?;
        let genesis = net.genesis.clone();
        let mut svc = vec![
            "--role".to_string(),
            "service".into(),
            "--service-key".into(),
            d.join("service.key").to_string_lossy().into_owned(),
        ];
        svc.extend(net.options.service.clone());
        net.start_node("service", "service", &genesis, &svc)?;
        net.start_node("relay", "relay", &genesis, &[])?;
        let workers: Vec<String> = net
            .topo
            .hosts
            .iter()
            .filter(|h| h.name.contains("worker"))
            .map(|h| h.name.clone())
            .collect();
        for (i, name) in workers.iter().enumerate() {
            net.start_worker(name, i as u32, &genesis, &[])?;
        }
        let cli = net.cli()?;
        let g = genesis.to_string_lossy().into_owned();
        let rk = d.join("registrar.key").to_string_lossy().into_owned();
        crate::procs::register_service(&cli, &g, &rk, &service, "netns service")?;
        let n = workers.len() as u64;
        net.wait_all(
            "the registry and worker announcements to spread",
            Duration::from_secs(60),
            |p, s| {
                num(s, "registry_entries") >= 2
                    && (p.role != "worker" || num(s, "live_workers") >= n)
            },
        )?;
        // A node that judges its reachability (AutoNAT) dials other peers and serves the DHT
        // only once it knows: wait for every verdict before anything is done to the network.
        net.wait_all(
            "every node to learn its reachability",
            Duration::from_secs(90),
            |_, s| settled(s),
        )?;
        Ok(net)
    }

    /// Start a node on host `name` (which the topology must have).
    pub fn start_node(
        &mut self,
        name: &str,
        role: &str,
        genesis: &Path,
        extra: &[String],
    ) -> anyhow::Result<&NodeProc> {
        let host = self.topo.host(name)?;
        let place = Place {
            netns: Some(host.ns.clone()),
            listen: host.listen(self.quic),
            http: crate::netns::HTTP.into(),
        };
        let mut args = crate::netns::node_flags(&self.dpow);
        args.extend(self.options.all.clone());
        args.extend_from_slice(extra);
        let p = start_node_at(&self.dpow, self.dir(), name, role, genesis, &place, &args)?;
        self.nodes.push(p);
        self.nodes.last().context("just started")
    }

    /// Start a worker on host `name`, paid at test-wallet account `index`, with `genesis`.
    pub fn start_worker(
        &mut self,
        name: &str,
        index: u32,
        genesis: &Path,
        extra: &[String],
    ) -> anyhow::Result<&NodeProc> {
        let account = crate::payouts::worker_account(index)?;
        let mut args = vec![
            "--role".to_string(),
            "worker".into(),
            "--payout".into(),
            account.to_string(),
        ];
        args.extend(self.options.worker.clone());
        args.extend_from_slice(extra);
        self.start_node(name, "worker", genesis, &args)
    }

    /// The node on host `name`.
    pub fn node(&self, name: &str) -> anyhow::Result<&NodeProc> {
        self.nodes
            .iter()
            .find(|p| p.name() == name)
            .with_context(|| format!("no node {name}"))
    }

    /// The node on host `name`, to stop or restart.
    pub fn node_mut(&mut self, name: &str) -> anyhow::Result<&mut NodeProc> {
        self.nodes
            .iter_mut()
            .find(|p| p.name() == name)
            .with_context(|| format!("no node {name}"))
    }

    /// The `dpow` command line, run on the service's host.
    pub fn cli(&self) -> anyhow::Result<Dpow> {
        Ok(Dpow {
            bin: self.dpow.clone(),
            netns: Some(self.topo.host("service")?.ns.clone()),
        })
    }

    /// Sign and publish the registrar's checkpoint of (final) `epoch`, through the node on
    /// host `via`: what `dpow registry checkpoint --json` printed.
    pub fn checkpoint(&self, via: &str, epoch: u64) -> anyhow::Result<Value> {
        crate::payouts::checkpoint(
            &self.cli()?,
            &self.genesis.to_string_lossy(),
            &self.node(via)?.listen,
            &self.dir().join("registrar.key").to_string_lossy(),
            epoch,
        )
    }

    /// Wait until `ok` holds for every running node's statistics.
    pub fn wait_all(
        &self,
        what: &str,
        timeout: Duration,
        ok: impl Fn(&NodeProc, &Value) -> bool,
    ) -> anyhow::Result<()> {
        self.wait_nodes(what, timeout, &[], ok)
    }

    /// [`HostNet::wait_all`] leaving out the nodes named in `except` (stopped ones).
    pub fn wait_nodes(
        &self,
        what: &str,
        timeout: Duration,
        except: &[&str],
        ok: impl Fn(&NodeProc, &Value) -> bool,
    ) -> anyhow::Result<()> {
        let live = || self.nodes.iter().filter(|p| !except.contains(&p.name()));
        let waited: Vec<&NodeProc> = live().collect();
        let r = wait_on_nodes(&waited, what, timeout, || {
            live().all(|p| p.stats().is_ok_and(|s| ok(p, &s)))
        });
        if let Err(e) = r {
            let states: Vec<String> = live()
                .map(|p| match p.stats() {
                    Ok(s) => format!(
                        "{}: peers {} registry {} workers {} receipts {} digest {}",
                        p.name(),
                        num(&s, "connected_peers"),
                        num(&s, "registry_entries"),
                        num(&s, "live_workers"),
                        num(&s, "ledger_receipts"),
                        s["ledger_digest"]
                            .as_str()
                            .map_or("-", |d| &d[..d.len().min(12)])
                    ),
                    Err(e) => format!("{}: {e:#}", p.name()),
                })
                .collect();
            bail!(
                "{e:#}; logs in {}; {}",
                self.dir().display(),
                states.join("; ")
            );
        }
        Ok(())
    }

    /// Wait until `ok` holds, looking again at each event of any running node
    /// ([`wait_on_nodes`]): for conditions on several nodes' state.
    pub fn wait_on(
        &self,
        what: &str,
        timeout: Duration,
        ok: impl FnMut() -> bool,
    ) -> anyhow::Result<()> {
        let all: Vec<&NodeProc> = self.nodes.iter().collect();
        wait_on_nodes(&all, what, timeout, ok)
    }

    /// Every running node's (receipts, epoch, digest), by name.
    pub fn ledgers(&self, except: &[&str]) -> Vec<(String, u64, u64, String)> {
        self.nodes
            .iter()
            .filter(|p| !except.contains(&p.name()))
            .map(|p| {
                let s = p.stats().unwrap_or_default();
                (
                    p.name().to_string(),
                    num(&s, "ledger_receipts"),
                    num(&s, "ledger_epoch"),
                    s["ledger_digest"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    /// Whether every running node holds the same receipts: the same count and the same digest
    /// of the current epoch.
    pub fn ledgers_agree(&self, except: &[&str]) -> bool {
        let l = self.ledgers(except);
        l.windows(2)
            .all(|w| w[0].1 == w[1].1 && w[0].2 == w[1].2 && w[0].3 == w[1].3)
    }

    /// The directory of keys, genesis, data and logs.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new("."), |d| d.path())
    }
}

/// Whether a node knows its reachability (`public` or `private`; a node that does not report
/// it counts as knowing).
pub fn settled(s: &Value) -> bool {
    s.get("reachability")
        .and_then(Value::as_str)
        .is_none_or(|r| r != "unknown")
}

/// A number from a node's statistics (0 when absent: fields the node does not have yet).
pub fn num(s: &Value, k: &str) -> u64 {
    s.get(k).and_then(Value::as_u64).unwrap_or(0)
}
