//! What the attack cases share: the honest load that runs beside an attack and its latency
//! percentiles, the test process's memory, and the bare libp2p peers an attacker speaks
//! through (no dpow node behind them, so nothing they send is checked on their side).

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use dpow_node::net::{NodeHandle, WorkAsk};
use dpow_protocol::{Difficulty, Priority, Root};
use dpow_testnet::local::LocalNet;
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, gossipsub, noise, tcp, yamux};

/// How long one honest request may take before the case fails.
pub(crate) const HONEST_T: Duration = Duration::from_secs(60);

/// The test process's resident memory (every node of a case lives in it).
pub(crate) fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Bytes as whole MiB, for the figures.
pub(crate) fn mib(bytes: u64) -> u64 {
    bytes >> 20
}

/// The `p`th percentile of sorted latencies, in milliseconds (the largest for p99 of fewer
/// than a hundred).
pub(crate) fn pct(sorted: &[Duration], p: usize) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = (sorted.len() * p / 100).min(sorted.len() - 1);
    sorted[i].as_secs_f64() * 1e3
}

/// "p50/p99 A/B ms (n N)" for sorted latencies.
pub(crate) fn p50_p99(sorted: &[Duration]) -> String {
    format!(
        "p50/p99 {:.1}/{:.1} ms (n {})",
        pct(sorted, 50),
        pct(sorted, 99),
        sorted.len()
    )
}

/// One figure line on stderr (shown with `--nocapture`).
pub(crate) fn figure(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// An easy honest request: root `[tag, i (4 bytes), 0x3c...]`, the test profile's easiest
/// difficulty band, valid for a minute.
pub(crate) fn honest_ask(tag: u8, i: u32) -> WorkAsk {
    let mut r = [0x3cu8; 32];
    r[0] = tag;
    r[1..5].copy_from_slice(&i.to_le_bytes());
    WorkAsk {
        root: Root(r),
        difficulty: Difficulty(0xffff_0000_0000_0000),
        kind: None,
        account: None,
        priority: Priority::Normal,
        lifetime: Duration::from_secs(60),
    }
}

/// `n` honest requests through `service`, one after another; every one must be answered.
/// Their latencies, sorted.
pub(crate) async fn honest_load(service: &NodeHandle, n: u32, tag: u8) -> Vec<Duration> {
    let mut lat = Vec::new();
    for i in 0..n {
        lat.push(honest_one(service, tag, i).await);
    }
    lat.sort();
    lat
}

async fn honest_one(service: &NodeHandle, tag: u8, i: u32) -> Duration {
    let t0 = Instant::now();
    tokio::time::timeout(HONEST_T, service.submit(honest_ask(tag, i)))
        .await
        .unwrap_or_else(|_| panic!("honest request {tag:#x}/{i} answered in time"))
        .unwrap_or_else(|e| panic!("honest request {tag:#x}/{i} answered: {e}"));
    t0.elapsed()
}

/// Honest requests sent one after another in the background while an attack runs.
pub(crate) struct Background {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Duration>>,
}

impl Background {
    /// Start sending; at least `min` requests are sent whenever it is stopped.
    pub(crate) fn start(service: Arc<NodeHandle>, min: u32, tag: u8) -> Background {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0;
            while i < min || !flag.load(Ordering::SeqCst) {
                lat.push(honest_one(&service, tag, i).await);
                i += 1;
            }
            lat.sort();
            lat
        });
        Background { stop, task }
    }

    /// Stop after the request under way (and at least the minimum); the latencies, sorted.
    pub(crate) async fn stop(self) -> Vec<Duration> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("the honest load panicked")
    }
}

/// A service node that reaches the network only through `via` (its one peer), so that every
/// honest request and its answer cross that node.
pub(crate) async fn service_through(net: &LocalNet, via: &Multiaddr) -> NodeHandle {
    let mut cfg = net.config(dpow_keys::SecretKey::generate().expect("key"));
    cfg.service_key = Some(net.service.clone());
    cfg.genesis.bootstrap = vec![];
    cfg.dial = vec![via.clone()];
    let node = dpow_node::net::spawn(cfg)
        .await
        .expect("service node starts");
    node.wait_synced(HONEST_T).await.expect("service synced");
    node.wait_for_peers(1, HONEST_T)
        .await
        .expect("service connects");
    dpow_testnet::local::wait_for(&node, HONEST_T, |s| s.live_workers >= 1)
        .await
        .expect("the service hears of a worker");
    node
}

/// The peer an address names.
pub(crate) fn peer_of(addr: &Multiaddr) -> PeerId {
    addr.iter()
        .find_map(|p| match p {
            libp2p::multiaddr::Protocol::P2p(id) => Some(id),
            _ => None,
        })
        .expect("the address names its peer")
}

/// A bare libp2p peer over TCP on loopback with a fresh identity and the behaviour `make`
/// builds: no dpow node behind it.
pub(crate) fn bare_swarm<B: NetworkBehaviour>(make: impl FnOnce(&Keypair) -> B) -> Swarm<B> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("tcp")
        .with_behaviour(make)
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

/// The gossipsub topics of `net`, by their short names.
pub(crate) const TOPICS: [&str; 7] = [
    "requests",
    "results",
    "cancels",
    "status",
    "registry",
    "receipts",
    "checkpoints",
];

/// A bare gossipsub peer on `net`'s topics. Every message gets an id of its own (a counter),
/// so it can publish the same bytes again and again, and hear every copy it is sent; it takes
/// no IHAVE gossip, so what it hears was pushed to it. It never validates or forwards.
pub(crate) fn bare_gossip(net: &LocalNet) -> Swarm<gossipsub::Behaviour> {
    let counter = Arc::new(AtomicU64::new(0));
    let mut swarm = bare_swarm(|_| {
        let config = gossipsub::ConfigBuilder::default()
            .heartbeat_interval(Duration::from_millis(100))
            .validation_mode(gossipsub::ValidationMode::Anonymous)
            .validate_messages()
            .max_ihave_messages_heartbeat(0)
            .message_id_fn(move |_| {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                gossipsub::MessageId::from(n.to_le_bytes().to_vec())
            })
            .build()
            .expect("gossipsub config");
        gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Anonymous, config)
            .expect("gossipsub")
    });
    for t in TOPICS {
        swarm
            .behaviour_mut()
            .subscribe(&gossipsub::IdentTopic::new(net.genesis.topic(t)))
            .expect("subscribe");
    }
    swarm
}

/// Dial `victim` and drive `swarm` until the victim has announced every topic to it.
pub(crate) async fn join(swarm: &mut Swarm<gossipsub::Behaviour>, victim: &Multiaddr) {
    swarm.dial(victim.clone()).expect("dial");
    let mut heard = 0;
    while heard < TOPICS.len() {
        let ev = tokio::time::timeout(HONEST_T, swarm.select_next_some())
            .await
            .expect("the victim subscribes in time");
        if let SwarmEvent::Behaviour(gossipsub::Event::Subscribed { .. }) = ev {
            heard += 1;
        }
    }
}

/// A short digest of a message's bytes, to count copies by.
pub(crate) fn digest(bytes: &[u8]) -> [u8; 32] {
    Blake2b::<U32>::digest(bytes).into()
}

/// A bare gossipsub peer connected to `victim` that counts every message pushed to it, by
/// digest, until dropped.
pub(crate) struct Observer {
    /// Copies heard of each message.
    pub(crate) heard: Arc<Mutex<HashMap<[u8; 32], u64>>>,
    /// Bumped after each message is counted.
    told: tokio::sync::watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Observer {
    pub(crate) async fn start(net: &LocalNet, victim: &Multiaddr) -> Observer {
        let mut swarm = bare_gossip(net);
        join(&mut swarm, victim).await;
        let heard = Arc::new(Mutex::new(HashMap::new()));
        let tally = heard.clone();
        let (tell, told) = tokio::sync::watch::channel(0u64);
        let task = tokio::spawn(async move {
            loop {
                if let SwarmEvent::Behaviour(gossipsub::Event::Message { message, .. }) =
                    swarm.select_next_some().await
                {
                    *tally
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .entry(digest(&message.data))
                        .or_insert(0) += 1;
                    tell.send_modify(|n| *n += 1);
                }
            }
        });
        Observer { heard, told, task }
    }

    /// Wait until `ok` holds of what was heard, looking again after each message; whether it
    /// did within `timeout`.
    pub(crate) async fn wait(&self, timeout: Duration, ok: impl Fn(&Observer) -> bool) -> bool {
        let mut told = self.told.clone();
        match tokio::time::timeout(timeout, told.wait_for(|_| ok(self))).await {
            Ok(Ok(_)) => true,
            // The observer stopped: what it heard is all there is.
            Ok(Err(_)) => ok(self),
            Err(_) => false,
        }
    }

    /// Copies heard of `bytes`.
    pub(crate) fn copies(&self, bytes: &[u8]) -> u64 {
        self.heard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&digest(bytes))
            .copied()
            .unwrap_or(0)
    }

    /// Messages heard in all.
    pub(crate) fn total(&self) -> u64 {
        self.heard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .sum()
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
