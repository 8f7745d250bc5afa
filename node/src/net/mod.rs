//! The swarm: one event loop owns the libp2p swarm, the registry, the validator and the
//! request state machines; everything else talks to it through a bounded command channel.
//!
//! ```text
//!   NodeHandle ──commands──▶ EventLoop ◀──events── Swarm (tcp+noise+yamux, quic, relay
//!                               │  ▲                 circuits: identify, autonat, relay,
//!                               │  │                 dcutr, kad, gossipsub, sync, results,
//!                               │  │                 limits, block list)
//!                     solve jobs│  │answers
//!                               ▼  │
//!                        solver thread (Dispatcher over CPU and GPUs)
//! ```
//!
//! Every gossip message is validated before gossipsub may forward it
//! ([`dpow_protocol::validate`]); the verdict goes back to gossipsub (accept, ignore, or reject,
//! which costs the sender score), is counted in [`NodeStats`], and costs its sender strikes:
//! a peer out of them (many ignored messages, or `max_penalties` rejections) is blocked for a
//! while. Sync answers are metered per peer and `Hello` is paged ([`BudgetConfig`]);
//! connections are limited in total, per peer, per IP and by memory ([`ConnectionCaps`]).

mod behaviour;
mod bridge;
mod budget;
mod event_loop;
mod events;
pub mod history;
mod limits;
mod records;
mod stats;
mod verify;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use dpow_keys::{PublicKey, SecretKey};
use dpow_protocol::flow::FlowConfig;
use dpow_protocol::{BlockKind, Difficulty, Priority, RegistryAction, Root, Work};
use dpow_solver::Solver;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot, watch};

use crate::genesis::Genesis;
pub use behaviour::{
    AutoNatTuning, DEFAULT_HELLO_PAGE_BYTES, DEFAULT_REPLICATION, NetTuning, Reachability,
};
pub use budget::{BudgetConfig, Rate};
pub use limits::ConnectionCaps;
/// The request-response messages peers exchange (sync and result delivery) and their codecs:
/// the wire types, public so that their decoders can be fuzzed from outside the crate.
pub mod wire {
    pub use super::behaviour::serde_bytes_vec::Bytes;
    pub use super::behaviour::{
        EpochDigest, ResultAck, ResultCodec, ResultDelivery, SyncCodec, SyncRequest, SyncResponse,
    };
}
pub use bridge::{BRIDGE_QUEUE, BridgeEvent, ForeignKind};
pub use events::{EVENT_QUEUE, Event, EventStream, Missed, ReceiptFrom};
pub use stats::{
    CREDIT_EPOCHS, DeviceRate, EpochCredits, MAX_AWAITED_RESULTS, NodeStats, OwnReject,
    OwnWorkerStats, Percentiles, ServiceStat, WorkerStat, percentile,
};

/// Unix time in milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The time a node goes by: Unix milliseconds from the system clock plus an offset that only a
/// test moves. Clones share the offset, so every node of an in-process network given one
/// clock sees the same time, and a test makes an epoch close by advancing it instead of
/// sleeping until it does. Nodes poll their deadlines at least twice a second, so what an
/// advance makes due happens within half a second of it.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    ahead_ms: Arc<std::sync::atomic::AtomicU64>,
}

impl Clock {
    /// The time now on this clock, in Unix milliseconds.
    pub fn now_ms(&self) -> u64 {
        now_ms().saturating_add(self.ahead_ms.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Move this clock, and every clone of it, `by` ahead. It never goes back.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        let _ = self.ahead_ms.fetch_update(
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
            |ahead| Some(ahead.saturating_add(ms)),
        );
    }

    /// How far ahead of the system clock this clock runs.
    pub fn ahead(&self) -> Duration {
        Duration::from_millis(self.ahead_ms.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// Commands waiting for the event loop; senders wait when it is full.
const COMMAND_QUEUE: usize = 256;

/// What a node does beside relaying and validating.
pub struct WorkerConfig {
    /// The devices that solve (CPU pool, GPUs).
    pub solver: Box<dyn Solver>,
    /// Where this worker's earnings go: named in every result it signs. `None` leaves its
    /// credits unclaimed.
    pub payout: Option<dpow_keys::NanoAccount>,
    /// The hash rate to announce; measured from the solver at start when `None`.
    pub rate: Option<u64>,
}

/// Everything a node needs to start.
pub struct NodeConfig {
    /// The network.
    pub genesis: Genesis,
    /// The node's key: its libp2p identity and, if it works, its worker key.
    pub key: SecretKey,
    /// Addresses to listen on (`/ip4/127.0.0.1/tcp/0` picks a free port).
    pub listen: Vec<Multiaddr>,
    /// Peers to dial besides the genesis bootstrap list.
    pub dial: Vec<Multiaddr>,
    /// Solve requests (a worker) with these devices.
    pub worker: Option<WorkerConfig>,
    /// Sign requests submitted through [`Client::submit`] with this service key.
    pub service_key: Option<SecretKey>,
    /// The request state machine's settings.
    pub flow: FlowConfig,
    /// How often a worker announces its status.
    pub status_interval: Duration,
    /// Penalised rejections (within `tuning.budgets.strikes`' window) after which a peer is
    /// blocked for `tuning.budgets.block_for`.
    pub max_penalties: u32,
    /// Network tuning.
    pub tuning: NetTuning,
    /// The node's database (receipts, DHT records); `None` keeps everything in memory, for
    /// short-lived clients and tests.
    pub store: Option<Arc<crate::store::Store>>,
}

impl NodeConfig {
    /// A relay-only node with default settings.
    pub fn new(genesis: Genesis, key: SecretKey) -> NodeConfig {
        NodeConfig {
            genesis,
            key,
            listen: vec![],
            dial: vec![],
            worker: None,
            service_key: None,
            flow: FlowConfig::default(),
            status_interval: Duration::from_secs(5),
            max_penalties: 5,
            tuning: NetTuning::default(),
            store: None,
        }
    }
}

/// Which gossip topic, for [`Client::publish_raw`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topic {
    /// Work requests.
    Requests,
    /// Work results.
    Results,
    /// Cancels.
    Cancels,
    /// Worker statuses.
    Status,
    /// Registry entries.
    Registry,
    /// Receipts: the ledger.
    Receipts,
    /// Registrars' checkpoints of final epochs.
    Checkpoints,
}

impl Topic {
    const ALL: [Topic; 7] = [
        Topic::Requests,
        Topic::Results,
        Topic::Cancels,
        Topic::Status,
        Topic::Registry,
        Topic::Receipts,
        Topic::Checkpoints,
    ];

    fn name(self) -> &'static str {
        match self {
            Topic::Requests => "requests",
            Topic::Results => "results",
            Topic::Cancels => "cancels",
            Topic::Status => "status",
            Topic::Registry => "registry",
            Topic::Receipts => "receipts",
            Topic::Checkpoints => "checkpoints",
        }
    }
}

/// What a service asks for.
#[derive(Clone, Debug)]
pub struct WorkAsk {
    /// The block root.
    pub root: Root,
    /// The threshold.
    pub difficulty: Difficulty,
    /// The block kind, if known.
    pub kind: Option<BlockKind>,
    /// The account, if known.
    pub account: Option<PublicKey>,
    /// Priority class.
    pub priority: Priority,
    /// How long the request stays valid.
    pub lifetime: Duration,
}

/// Valid work, as the network delivered it.
#[derive(Clone, Debug)]
pub struct WorkAnswer {
    /// The request's id (hex).
    pub request: String,
    /// The work.
    pub work: Work,
    /// The worker that solved it.
    pub worker: PublicKey,
    /// From publishing the request to holding validated work.
    pub latency: Duration,
    /// The receipt this node signed for it (`None` if it signed none).
    pub receipt: Option<dpow_protocol::MessageId>,
}

/// Why a submitted request did not get work.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The node has no service key.
    #[error("this node has no service key to sign requests with")]
    NoServiceKey,
    /// The network refused or never answered.
    #[error("{0}")]
    Refused(String),
    /// The caller withdrew the request.
    #[error("cancelled")]
    Cancelled,
    /// Nobody answered before the request expired.
    #[error("no valid work arrived before the request expired")]
    Expired,
    /// The node stopped.
    #[error("the node stopped")]
    Stopped,
}

enum Command {
    Submit {
        ask: WorkAsk,
        reply: oneshot::Sender<Result<WorkAnswer, SubmitError>>,
    },
    CancelRoot {
        root: Root,
        reply: oneshot::Sender<usize>,
    },
    Registry {
        action: RegistryAction,
        key: Box<SecretKey>,
        /// The sequence number to sign (`None`: the next this node expects).
        seq: Option<u64>,
        reply: oneshot::Sender<anyhow::Result<u64>>,
    },
    Ledger {
        reply: oneshot::Sender<(
            dpow_protocol::ledger::Ledger,
            dpow_protocol::registry::Registry,
        )>,
    },
    AccountCredits {
        reply: oneshot::Sender<std::collections::BTreeMap<dpow_keys::NanoAccount, (u128, u64)>>,
    },
    Checkpoints {
        reply: oneshot::Sender<Vec<dpow_protocol::Signed<dpow_protocol::Checkpoint>>>,
    },
    PublishCheckpoint {
        bytes: Vec<u8>,
        reply: oneshot::Sender<anyhow::Result<()>>,
    },
    RegistryEntries {
        reply: oneshot::Sender<Vec<dpow_protocol::Signed<dpow_protocol::RegistryEntry>>>,
    },
    PublishRaw {
        topic: Topic,
        bytes: Vec<u8>,
        reply: oneshot::Sender<anyhow::Result<()>>,
    },
    Dial(Multiaddr),
    Peers {
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    Probe {
        peer: PeerId,
        request: wire::SyncRequest,
        reply: oneshot::Sender<Result<wire::SyncResponse, String>>,
    },
    Foreign {
        kind: ForeignKind,
        bytes: Vec<u8>,
        reply: oneshot::Sender<Result<(), dpow_protocol::validate::Rejected>>,
    },
    Subscribe {
        reply: oneshot::Sender<(
            Vec<dpow_protocol::Signed<dpow_protocol::WorkRequest>>,
            tokio::sync::broadcast::Receiver<BridgeEvent>,
        )>,
    },
    Dht {
        id: dpow_protocol::MessageId,
        network: bool,
        reply: oneshot::Sender<Option<dpow_protocol::Signed<dpow_protocol::Receipt>>>,
    },
}

/// Direct questions to peers ([`Client::probe`]) waiting for their answer at most.
pub const MAX_PROBES: usize = 64;

/// Reads a node's statistics from any task, and waits for them to change.
#[derive(Clone)]
pub struct StatsReader {
    stats: Arc<Mutex<NodeStats>>,
    /// Bumped by the event loop after each event it handled (the statistics may have
    /// changed); closed when it stops.
    turns: watch::Receiver<u64>,
    /// The node's events, for readers that want to know what changed.
    events: tokio::sync::broadcast::WeakSender<Event>,
}

impl StatsReader {
    /// Statistics that never change: for tests of what serves them.
    #[doc(hidden)]
    pub fn fixed(stats: NodeStats) -> StatsReader {
        StatsReader {
            stats: Arc::new(Mutex::new(stats)),
            turns: watch::channel(0).1,
            // A node that never runs: its stream ends at once.
            events: tokio::sync::broadcast::channel(1).0.downgrade(),
        }
    }

    /// The node's events from now on ([`Event`]); an ended stream if the node stopped.
    pub fn events(&self) -> EventStream {
        events::subscribe(&self.events)
    }

    /// A copy of the statistics now.
    pub fn snapshot(&self) -> NodeStats {
        self.stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// `look` applied to the statistics now, in place (no copy).
    pub fn check<T>(&self, look: impl FnOnce(&NodeStats) -> T) -> T {
        look(
            &self
                .stats
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Wait until the statistics satisfy `ok`, checked again after each event the node
    /// handles (no polling): `Ok` with the statistics that did, or `Err` with the last ones
    /// once `timeout` passes or the node stops.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        ok: impl Fn(&NodeStats) -> bool,
    ) -> Result<NodeStats, NodeStats> {
        // Judged in place: the statistics (lists of every worker among them) are copied once,
        // when they pass, not after every event.
        let look = || self.check(|s| ok(s).then(|| s.clone()));
        wait_on(std::slice::from_ref(self), timeout, look)
            .await
            .ok_or_else(|| self.snapshot())
    }
}

/// Wait until `look` answers `Some`, asking again after each event any of the nodes behind
/// `readers` handles (`None` once `timeout` passes or one of them stops). `look` should only
/// read statistics: a command to a node is itself an event, and would wake the wait at once.
pub async fn wait_on<T>(
    readers: &[StatsReader],
    timeout: Duration,
    mut look: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut turns: Vec<watch::Receiver<u64>> = readers.iter().map(|r| r.turns.clone()).collect();
    loop {
        // Marked seen before the look, so a change made after it wakes the wait.
        for t in &mut turns {
            t.borrow_and_update();
        }
        if let Some(v) = look() {
            return Some(v);
        }
        let any =
            libp2p::futures::future::select_all(turns.iter_mut().map(|t| Box::pin(t.changed())));
        match tokio::time::timeout_at(deadline, any).await {
            Ok((Ok(()), _, _)) => {}
            _ => return None,
        }
    }
}

/// A running node: its [`Client`] (through `Deref`), and the power to stop it.
pub struct NodeHandle {
    client: Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl std::ops::Deref for NodeHandle {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

/// What every part of a process that uses a node holds (the gateway, the HTTP routes, the
/// browser bridge, tests): ask it things ([`Client::submit`] and the rest, each one command
/// and its answer), read its statistics, follow its [`Client::events`]. Cheap to clone;
/// clones do not keep the node running: it stops when its [`NodeHandle`] says so or is
/// dropped, and from then on every question answers that the node stopped.
#[derive(Clone)]
pub struct Client {
    peer_id: PeerId,
    commands: mpsc::Sender<Command>,
    stats: StatsReader,
    listen: watch::Receiver<Vec<Multiaddr>>,
    subscribed: watch::Receiver<usize>,
    synced: watch::Receiver<usize>,
}

impl NodeHandle {
    /// A client of this node, to hand to the parts of a process that use it.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Stop the node and wait for its event loop to finish.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.stop_now();
        match self.task.take() {
            Some(t) => t.await.context("the node's task panicked")?,
            None => Ok(()),
        }
    }

    /// Take the power to stop the node out of this handle, for a process that must still
    /// wait, at the end, for the node to write what it holds: from here on, dropping the
    /// handle stops nothing; [`NodeStopper::stop`] (or dropping the stopper) does.
    pub fn stopper(&mut self) -> NodeStopper {
        NodeStopper {
            shutdown: self.shutdown.take(),
            task: self.task.take(),
        }
    }

    /// Wait until the node stops by itself (an error) or `shutdown` is called elsewhere.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        match self.task.take() {
            Some(t) => t.await.context("the node's task panicked")?,
            None => Ok(()),
        }
    }

    fn stop_now(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
    }
}

impl Client {
    /// The node's events from now on: see [`Event`]. Each call is a reader of its own.
    pub fn events(&self) -> EventStream {
        self.stats.events()
    }

    /// The node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// A cheap, cloneable reader of the node's statistics (for the HTTP server).
    pub fn stats_reader(&self) -> StatsReader {
        self.stats.clone()
    }

    /// Record the work API's precache figures in the statistics (the gateway calls it).
    pub fn set_precache_stats(&self, entries: usize, evicted: u64) {
        let mut s = self
            .stats
            .stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.precached = entries;
        s.precache_evicted = evicted;
    }

    /// A copy of the node's statistics.
    pub fn stats(&self) -> NodeStats {
        self.stats.snapshot()
    }

    /// Wait until the node's statistics satisfy `ok` ([`StatsReader::wait_until`]).
    pub async fn wait_stats(
        &self,
        timeout: Duration,
        ok: impl Fn(&NodeStats) -> bool,
    ) -> Result<NodeStats, NodeStats> {
        self.stats.wait_until(timeout, ok).await
    }

    /// The addresses it listens on, each with `/p2p/PEER_ID`, once known.
    pub async fn listen_addrs(&self, timeout: Duration) -> anyhow::Result<Vec<Multiaddr>> {
        let mut rx = self.listen.clone();
        tokio::time::timeout(timeout, rx.wait_for(|a| !a.is_empty()))
            .await
            .context("the node did not start listening in time")?
            .context("the node stopped")?;
        let addrs = rx.borrow().clone();
        Ok(addrs)
    }

    /// Wait until the node listens on an address that `ok` accepts (a relayed one, say), and
    /// return it.
    pub async fn wait_listen_addr(
        &self,
        timeout: Duration,
        ok: impl Fn(&Multiaddr) -> bool,
    ) -> anyhow::Result<Multiaddr> {
        let mut rx = self.listen.clone();
        let addrs = tokio::time::timeout(timeout, rx.wait_for(|a| a.iter().any(&ok)))
            .await
            .context("the node did not listen on such an address in time")?
            .context("the node stopped")?;
        addrs
            .iter()
            .find(|a| ok(a))
            .cloned()
            .context("the address went away")
    }

    /// Wait until at least `n` peers subscribe to the request topic.
    pub async fn wait_for_peers(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        let mut rx = self.subscribed.clone();
        tokio::time::timeout(timeout, rx.wait_for(|&c| c >= n))
            .await
            .with_context(|| format!("fewer than {n} peers joined within {timeout:?}"))?
            .context("the node stopped")?;
        Ok(())
    }

    /// Wait until a first peer has answered this node's sync (registry, worker statuses) and
    /// the node has fetched the receipts that peer holds and it lacked (ledger catch-up).
    pub async fn wait_synced(&self, timeout: Duration) -> anyhow::Result<()> {
        let mut rx = self.synced.clone();
        tokio::time::timeout(timeout, rx.wait_for(|&c| c >= 1))
            .await
            .with_context(|| format!("no peer answered a sync within {timeout:?}"))?
            .context("the node stopped")?;
        Ok(())
    }

    /// Ask the network for work, signed with the node's service key; waits for valid work.
    pub async fn submit(&self, ask: WorkAsk) -> Result<WorkAnswer, SubmitError> {
        self.ask(|reply| Command::Submit { ask, reply })
            .await
            .map_err(|NodeStopped| SubmitError::Stopped)?
    }

    /// The one way to ask the event loop something: `command` wraps the reply channel; the
    /// answer comes back on it. Fails only when the node stopped, before or while answering.
    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NodeStopped> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| NodeStopped)?;
        rx.await.map_err(|_| NodeStopped)
    }

    /// Withdraw every outstanding request this node submitted for `root`: a signed cancel goes
    /// to the network and the waiting callers get [`SubmitError::Cancelled`]. Returns how many.
    pub async fn cancel_root(&self, root: Root) -> anyhow::Result<usize> {
        self.ask(|reply| Command::CancelRoot { root, reply })
            .await
            .map_err(Into::into)
    }

    /// Sign a registry entry with a registrar key (next sequence number), apply and publish it.
    /// Returns the entry's sequence number.
    pub async fn registry(&self, action: RegistryAction, key: SecretKey) -> anyhow::Result<u64> {
        self.sign_registry(action, key, None).await
    }

    /// As [`Client::registry`], numbered `seq`: refused if this node already holds an
    /// entry of the key numbered `seq` or later. A number past the next this node expects is
    /// signed and published anyway; the entry waits behind the gap (here and on peers) until
    /// the missing ones arrive.
    pub async fn registry_at(
        &self,
        action: RegistryAction,
        key: SecretKey,
        seq: u64,
    ) -> anyhow::Result<u64> {
        self.sign_registry(action, key, Some(seq)).await
    }

    async fn sign_registry(
        &self,
        action: RegistryAction,
        key: SecretKey,
        seq: Option<u64>,
    ) -> anyhow::Result<u64> {
        self.ask(|reply| Command::Registry {
            action,
            key: Box::new(key),
            seq,
            reply,
        })
        .await?
    }

    /// The registry entries this node has applied.
    pub async fn registry_entries(
        &self,
    ) -> anyhow::Result<Vec<dpow_protocol::Signed<dpow_protocol::RegistryEntry>>> {
        self.ask(|reply| Command::RegistryEntries { reply })
            .await
            .map_err(Into::into)
    }

    /// The registrars' checkpoints this node holds, oldest epoch first.
    pub async fn checkpoints(
        &self,
    ) -> anyhow::Result<Vec<dpow_protocol::Signed<dpow_protocol::Checkpoint>>> {
        self.ask(|reply| Command::Checkpoints { reply })
            .await
            .map_err(Into::into)
    }

    /// The peers connected now.
    pub async fn connected_peers(&self) -> anyhow::Result<Vec<PeerId>> {
        Ok(self.ask(|reply| Command::Peers { reply }).await?)
    }

    /// Ask `peer` one sync question directly and return its answer (or why none came): to
    /// confirm that something published reached it. The answer is not taken into this node's
    /// own state. At most [`MAX_PROBES`] wait at once.
    pub async fn probe(
        &self,
        peer: PeerId,
        request: wire::SyncRequest,
    ) -> anyhow::Result<wire::SyncResponse> {
        self.ask(|reply| Command::Probe {
            peer,
            request,
            reply,
        })
        .await?
        .map_err(|e| anyhow::anyhow!("asking {peer}: {e}"))
    }

    /// Check a signed checkpoint as every peer will, keep it, and publish it.
    pub async fn publish_checkpoint(&self, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.ask(|reply| Command::PublishCheckpoint { bytes, reply })
            .await?
    }

    /// A copy of the node's ledger and registry (to compute balances and payouts).
    pub async fn ledger(
        &self,
    ) -> anyhow::Result<(
        dpow_protocol::ledger::Ledger,
        dpow_protocol::registry::Registry,
    )> {
        self.ask(|reply| Command::Ledger { reply })
            .await
            .map_err(Into::into)
    }

    /// Credits and counted results per payout account, in all (from the books' tallies: no
    /// receipt is read on a node with a store).
    pub async fn account_credits(
        &self,
    ) -> anyhow::Result<std::collections::BTreeMap<dpow_keys::NanoAccount, (u128, u64)>> {
        self.ask(|reply| Command::AccountCredits { reply })
            .await
            .map_err(Into::into)
    }

    /// A receipt from the DHT by id: from this node's own record store (`network = false`)
    /// or by a Kademlia lookup (`network = true`). What comes back is verified.
    pub async fn dht_receipt(
        &self,
        id: dpow_protocol::MessageId,
        network: bool,
    ) -> anyhow::Result<Option<dpow_protocol::Signed<dpow_protocol::Receipt>>> {
        self.ask(|reply| Command::Dht { id, network, reply })
            .await
            .map_err(Into::into)
    }

    /// Publish bytes on a topic without validating them: for fault-injection tests and
    /// diagnostics. Peers still validate what they receive.
    pub async fn publish_raw(&self, topic: Topic, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.ask(|reply| Command::PublishRaw {
            topic,
            bytes,
            reply,
        })
        .await?
    }

    /// Carry a message signed by a worker that is not this node (a browser on the
    /// `/contribute` bridge): it is validated like any peer's, then a status is published and
    /// a result delivered exactly as this node's own (to the service node, gossip as the
    /// fallback). `Ok(Err(_))` says why it was refused.
    pub async fn carry(
        &self,
        kind: ForeignKind,
        bytes: Vec<u8>,
    ) -> anyhow::Result<Result<(), dpow_protocol::validate::Rejected>> {
        self.ask(|reply| Command::Foreign { kind, bytes, reply })
            .await
            .map_err(Into::into)
    }

    /// The requests open now (valid, unanswered, not expired) and a feed of those that come
    /// and go from here on, for the browser bridge. The feed closes when the node stops; a
    /// reader that falls [`BRIDGE_QUEUE`] events behind is told it lagged.
    pub async fn subscribe_requests(
        &self,
    ) -> anyhow::Result<(
        Vec<dpow_protocol::Signed<dpow_protocol::WorkRequest>>,
        tokio::sync::broadcast::Receiver<BridgeEvent>,
    )> {
        self.ask(|reply| Command::Subscribe { reply })
            .await
            .map_err(Into::into)
    }

    /// Dial a peer.
    pub async fn dial(&self, addr: Multiaddr) -> anyhow::Result<()> {
        self.commands
            .send(Command::Dial(addr))
            .await
            .map_err(|_| anyhow::anyhow!("the node stopped"))
    }
}

impl Drop for NodeHandle {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// Stops a node whose handle is shared ([`NodeHandle::stopper`]).
pub struct NodeStopper {
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl NodeStopper {
    /// Stop the node and wait until its event loop has finished: what it holds written, its
    /// store closed.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        match self.task.take() {
            Some(t) => t.await.context("the node's task panicked")?,
            None => Ok(()),
        }
    }
}

impl Drop for NodeStopper {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
    }
}

/// The node's event loop is gone: it was shut down or failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the node stopped")]
pub struct NodeStopped;

/// Start a node on the current tokio runtime.
pub async fn spawn(config: NodeConfig) -> anyhow::Result<NodeHandle> {
    let (commands, rx) = mpsc::channel(COMMAND_QUEUE);
    let (shutdown, shutdown_rx) = oneshot::channel();
    let (listen_tx, listen) = watch::channel(Vec::new());
    let (sub_tx, subscribed) = watch::channel(0usize);
    let (synced_tx, synced) = watch::channel(0usize);
    let (turns_tx, turns) = watch::channel(0u64);
    let stats = Arc::new(Mutex::new(NodeStats::default()));
    let events = events::Events::new();
    let events_source = events.source();
    let watches = event_loop::Watches {
        listen: listen_tx,
        subscribed: sub_tx,
        synced: synced_tx,
        turns: turns_tx,
        events,
    };
    let ev = event_loop::EventLoop::new(config, rx, stats.clone(), watches).await?;
    let peer_id = ev.peer_id();
    let task = tokio::spawn(ev.run(shutdown_rx));
    Ok(NodeHandle {
        client: Client {
            peer_id,
            commands,
            stats: StatsReader {
                stats,
                turns,
                events: events_source,
            },
            listen,
            subscribed,
            synced,
        },
        shutdown: Some(shutdown),
        task: Some(task),
    })
}

#[cfg(test)]
mod clock_tests {
    use super::Clock;
    use std::time::Duration;

    #[test]
    fn clones_of_a_clock_share_its_advances_and_it_saturates() {
        let clock = Clock::default();
        let other = clock.clone();
        let before = other.now_ms();
        clock.advance(Duration::from_secs(3_600));
        assert_eq!(other.ahead(), Duration::from_secs(3_600));
        assert!(other.now_ms() >= before + 3_600_000);
        // A fresh clock is the system's.
        assert_eq!(Clock::default().ahead(), Duration::ZERO);
        clock.advance(Duration::MAX);
        assert_eq!(other.ahead(), Duration::from_millis(u64::MAX));
        assert_eq!(other.now_ms(), u64::MAX);
    }
}
