//! The one task that owns the swarm.

mod books;
mod checkpoints;
mod delivery;
mod disk;
mod foreign;
mod guard;
mod inbound;
mod probe;
mod reach;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use dpow_keys::SecretKey;
use dpow_protocol::flow::{ServiceAction, ServiceConfig, WorkerAction, WorkerFlow};
use dpow_protocol::peer::Peer;
use dpow_protocol::registry::{Registry, RegistryError};
use dpow_protocol::validate::{RejectReason, Rejected, Validator, ValidatorConfig};
use dpow_protocol::{
    Difficulty, RegistryEntry, RequestId, Root, Signed, Work, WorkCancel, WorkRequest, WorkResult,
    WorkerStatus,
};
use dpow_solver::{Control, Solver};
use futures::{FutureExt, StreamExt};
use libp2p::swarm::SwarmEvent;
use libp2p::{
    Multiaddr, PeerId, Swarm, gossipsub, identify, kad, noise, request_response, tcp, yamux,
};
use tokio::sync::{mpsc, oneshot, watch};

use super::behaviour::{
    Behaviour, BehaviourEvent, MAX_SYNC_ITEMS, SyncRequest, SyncResponse, identity_of, topic_score,
};
use super::events::Event;
use super::stats::{OwnReject, OwnTally, Percentiles, ServiceStat, WorkerStat};
use super::{Command, NodeConfig, NodeStats, SubmitError, Topic, WorkAnswer, WorkerConfig};
use crate::genesis::Genesis;
use crate::store::writer::{Done, Job, Writer};
use crate::store::{NodeLedger, Store};

/// `Fetch` and `Ids` answers read on blocking threads at once, at most
/// ([`EventLoop::fetch_jobs`]).
const MAX_FETCH_JOBS: usize = 4;

/// A peer's `Fetch` or `Ids` read off the event loop: who asked, where the answer goes, the
/// answer.
type FetchDone = (
    PeerId,
    request_response::ResponseChannel<SyncResponse>,
    SyncResponse,
);

/// An epoch and its digest.
type DigestOf = (u64, [u8; 32]);

/// Turns whose time the statistics keep.
const TURNS_KEPT: usize = 4096;

/// The event loop's turn times: the last [`TURNS_KEPT`] (µs) and the longest since start.
#[derive(Default)]
struct TurnTimes {
    /// Microseconds, and what woke the loop.
    last: VecDeque<(u32, &'static str)>,
    max_us: u64,
    max_kind: &'static str,
}

impl TurnTimes {
    fn record(&mut self, took: Duration, kind: &'static str) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        if us > self.max_us {
            self.max_us = us;
            self.max_kind = kind;
        }
        if self.last.len() == TURNS_KEPT {
            self.last.pop_front();
        }
        self.last
            .push_back((u32::try_from(us).unwrap_or(u32::MAX), kind));
    }

    /// Percentiles in milliseconds over the turns kept, and what woke the loop for the
    /// slowest 1% of them.
    fn percentiles(&self) -> (Percentiles, BTreeMap<String, u64>) {
        let ms: Vec<f64> = self
            .last
            .iter()
            .map(|(us, _)| f64::from(*us) / 1e3)
            .collect();
        let mut by_time: Vec<&(u32, &'static str)> = self.last.iter().collect();
        by_time.sort_unstable_by_key(|t| std::cmp::Reverse(t.0));
        let mut slow = BTreeMap::new();
        for (_, kind) in by_time.into_iter().take(self.last.len().div_ceil(100)) {
            *slow.entry((*kind).to_string()).or_insert(0) += 1;
        }
        (Percentiles::of(&ms), slow)
    }
}

/// What a swarm event is, for the turn statistics.
fn swarm_kind(event: &SwarmEvent<BehaviourEvent>) -> &'static str {
    use libp2p::request_response::{Event as Rr, Message};
    match event {
        SwarmEvent::Behaviour(BehaviourEvent::Sync(Rr::Message { message, .. })) => match message {
            Message::Request { request, .. } => match request {
                SyncRequest::Hello { .. } => "sync request: hello",
                SyncRequest::Digests => "sync request: digests",
                SyncRequest::Ids { .. } => "sync request: ids",
                SyncRequest::Fetch { .. } => "sync request: fetch",
                SyncRequest::Checkpoints { .. } => "sync request: checkpoints",
            },
            Message::Response { response, .. } => match response {
                SyncResponse::Hello { .. } => "sync answer: hello",
                SyncResponse::Digests { .. } => "sync answer: digests",
                SyncResponse::Ids { .. } => "sync answer: ids",
                SyncResponse::Receipts(_) => "sync answer: receipts",
                SyncResponse::Checkpoints(_) => "sync answer: checkpoints",
                SyncResponse::Busy { .. } => "sync answer: busy",
            },
        },
        SwarmEvent::Behaviour(BehaviourEvent::Sync(_)) => "sync: other",
        SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(libp2p::gossipsub::Event::Message {
            ..
        })) => "gossip message",
        SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(_)) => "gossip: other",
        SwarmEvent::Behaviour(BehaviourEvent::Results(_)) => "result delivery",
        SwarmEvent::Behaviour(BehaviourEvent::Kad(_)) => "kademlia",
        SwarmEvent::Behaviour(_) => "swarm: other behaviour",
        SwarmEvent::ConnectionEstablished { .. } | SwarmEvent::ConnectionClosed { .. } => {
            "connection"
        }
        _ => "swarm: other",
    }
}

/// Big books: how often the digests of epochs that took receipts are recomputed (off the
/// event loop); a digest answered or shown is at most this much (and one computation) old.
const DIGEST_REFRESH: Duration = Duration::from_secs(5);
/// What a peer asking for digests while they are computed at start-up is told to wait.
const WARMING_RETRY_MS: u64 = 1_000;
/// Peers' digests set aside while this node's are computed at start-up (each at most 4,096
/// epochs); the catch-up with a peer past them ends, and the periodic round comes back to it.
const MAX_DEFERRED_DIGESTS: usize = 32;

/// A solve in progress on the solver thread.
struct Solving {
    request: RequestId,
    control: Arc<Control>,
}

/// What the solver thread reports.
struct Solved {
    request: RequestId,
    /// What was asked, to check the answer against before it leaves the node.
    root: Root,
    difficulty: Difficulty,
    outcome: Result<Option<Work>, String>,
    hashes: u64,
    elapsed: Duration,
}

struct Worker {
    solver: Arc<dyn Solver>,
    key: SecretKey,
    payout: Option<dpow_keys::NanoAccount>,
    rate: u64,
    solving: Option<Solving>,
    next_status: Instant,
    /// This worker's own figures: devices, results and what became of them, credits.
    own: OwnTally,
}

struct Pending {
    reply: oneshot::Sender<Result<WorkAnswer, SubmitError>>,
    /// When the caller asked: latency is measured from here, to the microsecond.
    asked: Instant,
    /// The request's root, for cancelling by root.
    root: Root,
}

pub(super) struct EventLoop {
    /// The time this node goes by ([`NetTuning::clock`](super::NetTuning::clock)).
    clock: super::Clock,
    swarm: Swarm<Behaviour>,
    genesis: Genesis,
    topics: Vec<(Topic, gossipsub::IdentTopic)>,
    commands: mpsc::Receiver<Command>,
    stats: Arc<Mutex<NodeStats>>,
    listen_tx: watch::Sender<Vec<Multiaddr>>,
    sub_tx: watch::Sender<usize>,
    synced_tx: watch::Sender<usize>,
    /// Bumped after each event handled, once the statistics are published.
    turns_tx: watch::Sender<u64>,
    /// What happened, told to the node's readers.
    events: super::events::Events,
    registry: Registry,
    validator: Validator,
    /// The request path's state: requests heard and answered, statuses, work paid, both
    /// flows ([`dpow_protocol::peer`]). This loop feeds it and carries out what it says.
    peer: Peer,
    worker: Option<Worker>,
    solved_tx: mpsc::Sender<Solved>,
    solved_rx: mpsc::Receiver<Solved>,
    /// Signature checks off the event loop ([`super::verify`]).
    verifier: super::verify::Verifier<inbound::Origin>,
    /// Signatures this node verified and expects to meet again (its own: nodes sharing a
    /// process never take each other's word); its verification jobs read it too.
    signatures: dpow_protocol::SignatureCache,
    /// Results and cancels waiting for their request's signature check.
    waiting: inbound::Waiting,
    service_key: Option<SecretKey>,
    pending: HashMap<RequestId, Pending>,
    /// Per-peer budgets, timed blocks, and this node's own sync requests in flight.
    guard: guard::Guard,
    status_interval: Duration,
    request_subscribers: HashSet<PeerId>,
    discovery: bool,
    next_discovery: Instant,
    started: Instant,
    /// When full statistics (lists, rates) were last rebuilt.
    last_full_stats: Instant,
    /// Accept times of recent requests (ms), for the request rate.
    recent_requests: VecDeque<u64>,
    /// Latencies of this node's own completed requests, most recent last.
    latencies: VecDeque<f64>,
    /// Requests seen per service.
    per_service: HashMap<dpow_keys::PublicKey, u64>,
    /// Receipts this node has verified: balances and payouts are computed from them.
    ledger: NodeLedger,
    /// Where receipts (and Kademlia records) are kept; `None` for short-lived clients.
    store: Option<Arc<Store>>,
    /// Receipts in the ledger not yet handed to the store task.
    receipts_queue: books::Queue,
    /// The store task, which does every write (none when there is no store).
    writer: Option<Writer>,
    /// Its reports.
    store_done: Option<mpsc::Receiver<Done>>,
    /// Writes handed over and not yet durable, by ticket, with what to do once they are.
    unwritten: HashMap<u64, Vec<books::Ack>>,
    /// Writes waiting for room in the store task's queue, in order.
    backlog: VecDeque<Job>,
    next_ticket: u64,
    /// Receipts in the ledger not yet durable (queued, in the backlog or being written).
    unwritten_receipts: usize,
    /// Since when the disk refuses receipts, and how many it refused (logged once when it
    /// starts and once when it takes them again, not per receipt).
    disk_refusing: Option<(Instant, u64)>,
    /// Ledger catch-ups in progress, per peer, and when to start the next.
    replication: dpow_protocol::replication::Replication<PeerId>,
    /// DHT lookups for receipts in flight.
    dht_gets: HashMap<kad::QueryId, books::DhtGet>,
    /// Direct questions to peers ([`super::Client::probe`]), answered to the caller only.
    probes: HashMap<request_response::OutboundRequestId, probe::Probe>,
    catch_up_ledger: bool,
    /// Keep only this node's own receipts ([`super::NetTuning::light`]).
    light: bool,
    /// Epoch digests and the epochs held, cached until a receipt of that epoch comes or goes
    /// (on big books: refreshed off the event loop, [`EventLoop::refresh_digests`]).
    digests: HashMap<u64, [u8; 32]>,
    epochs_held: Option<Vec<(u64, usize)>>,
    /// Big books: epochs whose cached digest is older than the books.
    stale_digests: BTreeSet<u64>,
    /// When the last digest job started.
    digest_job_at: Instant,
    /// Digests being computed on a blocking thread (big books), with their epochs.
    digest_job: Option<tokio::task::JoinHandle<Vec<DigestOf>>>,
    /// Books of at least this many receipts get their digests off the event loop.
    inline_digest_below: usize,
    /// The books hold at least `inline_digest_below` receipts (as of the last statistics).
    big_books: bool,
    /// Big books at start-up: the digest cache starts empty and every epoch's digest is
    /// being computed off the event loop (the first digest job). Until it is back, `Digests`
    /// questions are answered `Busy` and peers' digests are set aside
    /// ([`EventLoop::digests_warm`]), so that no question computes a year of digests here.
    digests_warming: bool,
    /// Peers' digests that came while warming (peer, epoch length, digests), compared once
    /// this node's are in (at most [`MAX_DEFERRED_DIGESTS`]; a catch-up past it ends).
    deferred_digests: Vec<books::PeerDigests>,
    /// How long the last turns took, from the event to the end of its handling.
    turn_times: TurnTimes,
    /// Peers' `Fetch` requests being read from the books on blocking threads.
    fetch_jobs: futures::stream::FuturesUnordered<tokio::task::JoinHandle<FetchDone>>,
    /// This node's key (its libp2p identity): requests of its service name it.
    node_key: dpow_keys::PublicKey,
    /// Results sent to service nodes, and wins awaiting their receipts.
    deliveries: delivery::Deliveries,
    receipt_wait_ms: u64,
    unreceipted_limit: u64,
    /// Registrars' checkpoints and the receipts of final epochs they vouch for.
    checkpoints: dpow_protocol::checkpoint::HeldCheckpoints,
    /// When epochs close.
    finality: dpow_protocol::Finality,
    /// Reads closed books without checkpoints ([`super::NetTuning::auditor`]).
    auditor: bool,
    /// A light ledger ([`super::NetTuning::adopt_checkpoints`]).
    adopt_checkpoints: bool,
    /// Fault injection ([`super::NetTuning::withhold_receipts`]).
    withhold_receipts: bool,
    /// Fault injection ([`super::NetTuning::drop_registry_gossip`]).
    drop_registry_gossip: bool,
    /// `Hello` walks asked to fetch registry entries a peer's digests showed missing.
    registry_repairs: u64,
    /// The browser workers this node carries: their request feed and keys.
    browsers: foreign::Browsers,
    /// Whether peers can dial this node; relay reservations and relayed connections.
    reach: reach::Reach,
    /// This network's Kademlia protocol: a peer that lists it in identify serves the DHT.
    kad_protocol: libp2p::StreamProtocol,
}

/// What the event loop tells the node's handle as it changes.
pub(super) struct Watches {
    /// The addresses it listens on.
    pub(super) listen: watch::Sender<Vec<Multiaddr>>,
    /// Request subscribers (browser bridges).
    pub(super) subscribed: watch::Sender<usize>,
    /// First catch-ups done.
    pub(super) synced: watch::Sender<usize>,
    /// Events handled ([`super::StatsReader::wait_until`]).
    pub(super) turns: watch::Sender<u64>,
    /// What happened, for the node's readers ([`super::Client::events`]).
    pub(super) events: super::events::Events,
}

impl EventLoop {
    pub(super) async fn new(
        config: NodeConfig,
        commands: mpsc::Receiver<Command>,
        stats: Arc<Mutex<NodeStats>>,
        watches: Watches,
    ) -> anyhow::Result<EventLoop> {
        let Watches {
            listen: listen_tx,
            subscribed: sub_tx,
            synced: synced_tx,
            turns: turns_tx,
            events,
        } = watches;
        let identity = identity_of(&config.key)?;
        let genesis = config.genesis.clone();
        let tuning = config.tuning.clone();
        let store = config.store.clone();
        let ledger = match &store {
            Some(s) => NodeLedger::Disk(crate::store::Books::open_for_node(
                s.clone(),
                config.genesis.epoch_ms,
                config.genesis.id,
                config.tuning.verify_store,
            )?),
            None => NodeLedger::Memory(dpow_protocol::ledger::Ledger::new(config.genesis.epoch_ms)),
        };
        let (writer, store_done) = match &store {
            Some(s) => {
                let (w, d) = Writer::start(s.clone()).context("starting the store task")?;
                (Some(w), Some(d))
            }
            None => (None, None),
        };
        let records_store = store.clone();
        let reachability = tuning.reachability;
        // TCP and QUIC, and circuits through relays for a private node; a peer's addresses of
        // every kind are dialed together and the first to connect wins. `/memory/N` addresses
        // (libp2p's in-process transport, with the same noise and yamux on top) reach only
        // nodes in this process: tests run whole networks on it without ports.
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(identity)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .context("building the tcp transport")?
            .with_quic()
            .with_other_transport(|key| {
                use libp2p::core::transport::{MemoryTransport, Transport, upgrade};
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                    MemoryTransport::default()
                        .upgrade(upgrade::Version::V1)
                        .authenticate(noise::Config::new(key)?)
                        .multiplex(yamux::Config::default()),
                )
            })
            .context("building the in-process transport")?
            .with_relay_client(noise::Config::new, yamux::Config::default)
            .context("building the relay transport")?
            .with_behaviour(|key, relay_client| {
                let records =
                    super::records::Records::new(key.public().to_peer_id(), records_store);
                Behaviour::new(key, &genesis, &tuning, reachability, records, relay_client)
                    .map_err(|e| e.into_boxed_dyn_error())
            })
            .map_err(|e| anyhow::anyhow!("building the node's behaviours: {e}"))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
            .build();

        let mut topics = Vec::new();
        for t in Topic::ALL {
            let topic = gossipsub::IdentTopic::new(config.genesis.topic(t.name()));
            swarm
                .behaviour_mut()
                .gossipsub
                .subscribe(&topic)
                .with_context(|| format!("subscribing to {topic}"))?;
            swarm
                .behaviour_mut()
                .gossipsub
                .set_topic_params(topic.clone(), topic_score())
                .map_err(|e| anyhow::anyhow!("topic score for {topic}: {e}"))?;
            topics.push((t, topic));
        }
        for addr in &config.listen {
            swarm
                .listen_on(addr.clone())
                .with_context(|| format!("listening on {addr}"))?;
        }
        // Each known peer is dialed once with all its addresses (TCP, QUIC, relayed): libp2p
        // tries them together and keeps the first that connects, so one transport blocked on
        // the way (UDP often is) costs nothing but its attempt.
        let mut by_peer: Vec<(PeerId, Vec<Multiaddr>)> = Vec::new();
        for addr in config.genesis.bootstrap.iter().chain(&config.dial) {
            let Some(peer) = peer_of(addr) else {
                if let Err(e) = swarm.dial(addr.clone()) {
                    tracing::warn!(%addr, "cannot dial bootstrap peer: {e}");
                }
                continue;
            };
            if peer == *swarm.local_peer_id() {
                continue;
            }
            if config.tuning.discovery {
                swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
            }
            match by_peer.iter_mut().find(|(p, _)| *p == peer) {
                Some((_, addrs)) => addrs.push(addr.clone()),
                None => by_peer.push((peer, vec![addr.clone()])),
            }
        }
        for (peer, addrs) in by_peer {
            let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                .addresses(addrs)
                .build();
            if let Err(e) = swarm.dial(opts) {
                tracing::warn!(%peer, "cannot dial bootstrap peer: {e}");
            }
        }

        let mut registry = Registry::new(config.genesis.registrars.iter().copied());
        let validator = Validator::new(ValidatorConfig {
            time: config.genesis.time,
            finality: config.genesis.finality,
            volume: config.genesis.volume.clone(),
            ..ValidatorConfig::new(config.genesis.profile.clone(), config.genesis.id)
        });
        if let Some(s) = &store {
            // The registry as this node last knew it, each entry verified again.
            let mut loaded = 0usize;
            for bytes in s.registry_entries()? {
                match validator.check_registry(&bytes, &registry, tuning.clock.now_ms()) {
                    Ok(e) => loaded += registry.apply(e).map(|a| a.len()).unwrap_or(0),
                    Err(e) => tracing::warn!("stored registry entry skipped: {e}"),
                }
            }
            tracing::info!(entries = loaded, "registry loaded from the store");
        }
        let (solved_tx, solved_rx) = mpsc::channel(16);
        let worker = match config.worker {
            Some(w) => {
                // The anti-spam classes are the network's, so every worker orders alike.
                let flow = dpow_protocol::flow::FlowConfig {
                    volume: config.genesis.volume.clone(),
                    ..config.flow.clone()
                };
                Some(start_worker(w, config.key.clone(), flow)?)
            }
            None => None,
        };
        let (worker, worker_flow) = match worker {
            Some((w, f)) => (Some(w), Some(f)),
            None => (None, None),
        };
        let peer = Peer::new(
            worker_flow,
            ServiceConfig::default(),
            // Statuses are bounded as the sync answers that carry them are.
            dpow_protocol::peer::Limits {
                statuses: MAX_SYNC_ITEMS,
                ..dpow_protocol::peer::Limits::default()
            },
        );
        {
            let mut s = stats
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            s.peer_id = swarm.local_peer_id().to_string();
            s.account = config.key.public().to_string();
            s.network = config.genesis.network.clone();
            s.network_id = config.genesis.id.short();
            s.hash_rate = worker.as_ref().map_or(0, |w| w.rate);
            s.kad_mode = match swarm.behaviour().kad.mode() {
                kad::Mode::Server => "server",
                kad::Mode::Client => "client",
            }
            .to_string();
            // What the store held at start, before the first statistics rebuild.
            s.ledger_receipts = ledger.len();
        }
        let finality = config.genesis.finality;
        let kad_mode = swarm.behaviour().kad.mode();
        let kad_protocol = super::behaviour::kad_protocol(&config.genesis)?;
        let signatures = dpow_protocol::SignatureCache::new();
        let big_books = ledger.len() >= config.tuning.inline_digest_below;
        // Big books compute every epoch's digest in the first digest job, at once.
        let stale_digests: BTreeSet<u64> = if big_books {
            ledger.epochs().into_iter().map(|(e, _)| e).collect()
        } else {
            BTreeSet::new()
        };
        let mut event_loop = EventLoop {
            swarm,
            genesis: config.genesis,
            topics,
            commands,
            stats,
            listen_tx,
            sub_tx,
            synced_tx,
            turns_tx,
            events,
            registry,
            validator,
            peer,
            worker,
            solved_tx,
            solved_rx,
            verifier: super::verify::Verifier::new(signatures.clone()),
            signatures,
            waiting: inbound::Waiting::default(),
            service_key: config.service_key,
            pending: HashMap::new(),
            guard: guard::Guard::new(
                config.tuning.budgets.clone(),
                config.max_penalties,
                config.tuning.hello_page_bytes,
            ),
            status_interval: config.status_interval,
            request_subscribers: HashSet::new(),
            discovery: config.tuning.discovery,
            next_discovery: Instant::now() + Duration::from_secs(1),
            started: Instant::now(),
            last_full_stats: Instant::now() - Duration::from_secs(10),
            recent_requests: VecDeque::new(),
            latencies: VecDeque::new(),
            per_service: HashMap::new(),
            ledger,
            store,
            receipts_queue: books::Queue::default(),
            writer,
            store_done,
            unwritten: HashMap::new(),
            backlog: VecDeque::new(),
            next_ticket: 0,
            unwritten_receipts: 0,
            disk_refusing: None,
            replication: {
                let ms = u64::try_from(config.tuning.ledger_sync.as_millis()).unwrap_or(u64::MAX);
                let mut r = dpow_protocol::replication::Replication::new(ms);
                // The first period counts from now.
                r.on_tick(tuning.clock.now_ms(), &[], 0);
                r
            },
            dht_gets: HashMap::new(),
            probes: HashMap::new(),
            catch_up_ledger: config.tuning.ledger,
            clock: tuning.clock.clone(),
            light: config.tuning.light,
            digests: HashMap::new(),
            epochs_held: None,
            stale_digests,
            digests_warming: big_books,
            deferred_digests: Vec::new(),
            digest_job_at: Instant::now()
                .checked_sub(DIGEST_REFRESH)
                .unwrap_or_else(Instant::now),
            digest_job: None,
            inline_digest_below: config.tuning.inline_digest_below,
            big_books,
            turn_times: TurnTimes::default(),
            fetch_jobs: futures::stream::FuturesUnordered::new(),
            node_key: config.key.public(),
            deliveries: delivery::Deliveries::default(),
            receipt_wait_ms: config.tuning.receipt_wait.as_millis() as u64,
            unreceipted_limit: config.tuning.unreceipted_limit,
            checkpoints: dpow_protocol::checkpoint::HeldCheckpoints::default(),
            finality,
            auditor: config.tuning.auditor && config.store.is_none(),
            adopt_checkpoints: config.tuning.adopt_checkpoints,
            withhold_receipts: config.tuning.withhold_receipts,
            drop_registry_gossip: config.tuning.drop_registry_gossip,
            registry_repairs: 0,
            browsers: foreign::Browsers::default(),
            reach: reach::Reach::new(reachability, kad_mode),
            kad_protocol,
        };
        event_loop.load_checkpoints();
        event_loop.seed_standings();
        Ok(event_loop)
    }

    pub(super) fn peer_id(&self) -> PeerId {
        *self.swarm.local_peer_id()
    }

    pub(super) async fn run(mut self, mut shutdown: oneshot::Receiver<()>) -> anyhow::Result<()> {
        tracing::info!(peer = %self.peer_id(), network = %self.genesis.network, "node started");
        /// What woke the loop: waited for, then handled (and timed) outside the `select!`.
        enum Woke<S, C, D, V, W, F> {
            Swarm(S),
            Command(C),
            Solved(D),
            Verified(V),
            Stored(W),
            Fetched(F),
            Tick,
        }
        loop {
            let wake = self.next_wake();
            let woke = tokio::select! {
                event = self.swarm.select_next_some() => Woke::Swarm(event),
                cmd = self.commands.recv() => match cmd {
                    Some(c) => Woke::Command(c),
                    None => break,
                },
                Some(done) = self.solved_rx.recv() => Woke::Solved(done),
                Some(done) = self.verifier.next_done() => Woke::Verified(done),
                Some(done) = disk::next_done(&mut self.store_done) => Woke::Stored(done),
                Some(done) = self.fetch_jobs.next(), if !self.fetch_jobs.is_empty() => {
                    Woke::Fetched(done)
                }
                _ = tokio::time::sleep_until(wake.into()) => Woke::Tick,
                _ = &mut shutdown => break,
            };
            let turn = Instant::now();
            let kind = match &woke {
                Woke::Swarm(event) => swarm_kind(event),
                Woke::Command(_) => "command",
                Woke::Solved(_) => "solved",
                Woke::Verified(_) => "verified",
                Woke::Stored(_) => "stored",
                Woke::Fetched(_) => "fetched",
                Woke::Tick => "tick",
            };
            match woke {
                Woke::Swarm(event) => self.on_swarm_event(event),
                Woke::Command(c) => self.on_command(c),
                Woke::Solved(done) => self.on_solved(done),
                Woke::Verified(done) => self.on_verified_all(done),
                Woke::Stored(done) => self.on_store_done(done),
                Woke::Fetched(done) => self.fetched(done),
                Woke::Tick => self.on_tick(),
            }
            if self
                .receipts_queue
                .due()
                .is_some_and(|t| t <= Instant::now())
            {
                self.flush_receipts();
            }
            self.publish_stats();
            self.turn_times.record(turn.elapsed(), kind);
            self.turns_tx.send_modify(|n| *n = n.wrapping_add(1));
        }
        if let Some(w) = &self.worker
            && let Some(s) = &w.solving
        {
            s.control.cancel();
        }
        self.drain_store().await;
        let peer = self.peer_id();
        // Let go of the database before saying so: the store task ends once every handle
        // (ours and the DHT record store's, inside the swarm) is gone.
        let mut done = self.store_done.take();
        drop(self);
        if let Some(rx) = &mut done {
            let _ = tokio::time::timeout(Duration::from_secs(10), async {
                while rx.recv().await.is_some() {}
            })
            .await;
        }
        tracing::info!(%peer, "node stopped");
        Ok(())
    }

    fn next_wake(&self) -> Instant {
        let now = Instant::now();
        let now_ms = self.clock.now_ms();
        let mut wake = now + Duration::from_secs(1);
        let mut consider = |ms: Option<u64>| {
            if let Some(ms) = ms {
                let at = now + Duration::from_millis(ms.saturating_sub(now_ms));
                wake = wake.min(at);
            }
        };
        consider(self.peer.next_deadline());
        if let Some(w) = &self.worker {
            wake = wake.min(w.next_status);
        }
        if self.discovery {
            wake = wake.min(self.next_discovery);
        }
        if let Some(t) = self.receipts_queue.due() {
            wake = wake.min(t);
        }
        if self.catch_up_ledger
            && let Some(next) = self.replication.next_tick_ms()
        {
            let wait = Duration::from_millis(next.saturating_sub(now_ms));
            wake = wake.min(Instant::now() + wait);
        }
        if let Some(t) = self.guard.next_due() {
            wake = wake.min(t);
        }
        // Statistics lists are rebuilt at most twice a second, and at least that often.
        wake = wake.min(self.last_full_stats + Duration::from_millis(500));
        wake.max(now + Duration::from_millis(1))
    }

    /// A peer told us who it is: a connection to one of another network (another protocol
    /// version, i.e. another genesis) is closed and its addresses never enter the DHT; ours
    /// feed the DHT if discovery is on. Only that connection closes: a key reused on two
    /// networks is one peer id on both, and its connection on ours stays.
    fn on_identified(
        &mut self,
        peer_id: PeerId,
        connection: libp2p::swarm::ConnectionId,
        info: identify::Info,
    ) {
        let ours = self.genesis.identify_version();
        if info.protocol_version != ours {
            tracing::info!(
                peer = %peer_id,
                theirs = %info.protocol_version,
                %ours,
                "peer of another network disconnected"
            );
            self.stats().peers_wrong_network += 1;
            self.swarm.close_connection(connection);
            return;
        }
        self.reach_identified(peer_id, &info.protocols);
        // Only DHT servers go in the routing table: a peer in client mode (private, or light)
        // would be asked for records it does not serve, at addresses nobody may reach.
        if self.discovery && info.protocols.contains(&self.kad_protocol) {
            for addr in info.listen_addrs {
                self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
            }
        }
    }

    fn topic(&self, t: Topic) -> gossipsub::IdentTopic {
        self.topics
            .iter()
            .find(|(k, _)| *k == t)
            .map(|(_, topic)| topic.clone())
            .unwrap_or_else(|| gossipsub::IdentTopic::new(self.genesis.topic(t.name())))
    }

    fn which_topic(&self, hash: &gossipsub::TopicHash) -> Option<Topic> {
        self.topics
            .iter()
            .find(|(_, topic)| topic.hash() == *hash)
            .map(|(k, _)| *k)
    }

    fn publish(&mut self, t: Topic, bytes: Vec<u8>) -> Result<(), gossipsub::PublishError> {
        let topic = self.topic(t);
        match self.swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
            Ok(id) => {
                tracing::trace!(topic = t.name(), %id, "published");
                Ok(())
            }
            Err(e) => {
                tracing::debug!(topic = t.name(), "publish failed: {e}");
                Err(e)
            }
        }
    }

    /// Tell the node's readers what happened; `make` runs only if someone reads.
    fn emit(&self, make: impl FnOnce() -> Event) {
        self.events.emit(make);
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, NodeStats> {
        self.stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Big books: bring cached digests up to date off the event loop. A digest reads every
    /// id of its epoch (0.3 s for a million), and an epoch taking receipts changes all the
    /// time, so instead of recomputing it at each question (every peer's catch-up, the
    /// statistics) the epochs changed since are recomputed on a blocking thread at most
    /// every [`DIGEST_REFRESH`], and questions meanwhile get the digest last computed. The
    /// statistics' `current` epoch is computed there too the first time. Takes a finished
    /// job's digests.
    fn refresh_digests(&mut self, current: u64) {
        if let Some(job) = &self.digest_job {
            if !job.is_finished() {
                return;
            }
            let done = self
                .digest_job
                .take()
                .and_then(|j| j.now_or_never())
                .and_then(Result::ok)
                .unwrap_or_default();
            self.stats().digests_off_loop += done.len() as u64;
            for (epoch, digest) in done {
                // Not an epoch dropped from the cache meanwhile (adopted from a checkpoint).
                if self.digests_warming || self.digests.contains_key(&epoch) || epoch == current {
                    self.digests.insert(epoch, digest);
                }
            }
            if self.digests_warming {
                self.digests_warm();
            }
        }
        if !self.digests.contains_key(&current) {
            self.stale_digests.insert(current);
        }
        if self.stale_digests.is_empty() || self.digest_job_at.elapsed() < DIGEST_REFRESH {
            return;
        }
        let epochs = std::mem::take(&mut self.stale_digests);
        let jobs: Option<Vec<_>> = epochs
            .iter()
            .map(|e| self.ledger.epoch_digest_job(*e).map(|job| (*e, job)))
            .collect();
        let Some(jobs) = jobs else {
            // Books in memory: computed when next asked for.
            for e in epochs {
                self.digests.remove(&e);
            }
            if self.digests_warming {
                self.digests_warm();
            }
            return;
        };
        self.digest_job_at = Instant::now();
        self.digest_job = Some(tokio::task::spawn_blocking(move || {
            jobs.into_iter().map(|(e, job)| (e, job())).collect()
        }));
    }

    /// After every event: the cheap gauges now, everything that walks the worker table or
    /// the registry at most twice a second ([`Self::full_stats`]).
    fn publish_stats(&mut self) {
        let now = self.clock.now_ms();
        self.full_stats(now);
        let (queue, solving) = match &self.worker {
            Some(w) => (
                self.peer.worker().map_or(0, WorkerFlow::queue_len),
                w.solving.as_ref().map(|s| s.request.to_string()),
            ),
            None => (0, None),
        };
        let pool = self.verifier.stats();
        let queued = self.verifier.pending();
        let mut s = self.stats();
        s.queue = queue;
        s.solving = solving;
        s.signature_checks = pool.signature_checks;
        s.verify_jobs = pool.jobs;
        s.verify_queued = queued;
    }

    /// A valid request (this node's service's own if `own`): told, and counted for the
    /// request rate.
    fn count_request(&mut self, req: &Signed<WorkRequest>, own: bool, now: u64) {
        self.emit(|| Event::RequestSeen {
            request: req.id(),
            service: req.payload().service,
            own,
        });
        self.recent_requests.push_back(now);
        while self
            .recent_requests
            .front()
            .is_some_and(|t| now.saturating_sub(*t) > 60_000)
            || self.recent_requests.len() > 1_000_000
        {
            self.recent_requests.pop_front();
        }
        let service = req.payload().service;
        if self.per_service.len() < 100_000 || self.per_service.contains_key(&service) {
            *self.per_service.entry(service).or_default() += 1;
        }
    }

    /// A valid result (from gossip, delivered to this service node, or carried for a
    /// browser): told, and counted by its request's block kind.
    fn count_result(&mut self, res: &Signed<WorkResult>) {
        self.emit(|| Event::Answered {
            request: res.payload().request,
            worker: res.payload().worker,
        });
        let kind = self
            .peer
            .request(&res.payload().request)
            .and_then(|r| r.payload().kind)
            .map_or("unspecified", |k| k.as_str());
        if !self.peer.is_answered(&res.payload().request) {
            *self
                .stats()
                .work_by_kind
                .entry(kind.to_string())
                .or_default() += 1;
        }
    }

    /// Lists and rates: rebuilt at most twice a second, they cost O(workers + services).
    fn full_stats(&mut self, now: u64) {
        if self.last_full_stats.elapsed() < Duration::from_millis(500) {
            return;
        }
        self.last_full_stats = Instant::now();
        // What the statistics show of the books is on disk.
        self.flush_receipts();
        self.update_exhausted(now);
        if let (Some(w), Some(flow)) = (&mut self.worker, self.peer.worker()) {
            let mine = flow.standings().receipts(&w.key.public());
            w.own.set_standing(mine);
        }
        let live = self.live_statuses(now);
        let network_rate = super::stats::summed_rate(live.iter().map(|s| s.payload().hash_rate));
        let (live_workers, proven_workers) = match self.peer.worker() {
            Some(f) => (f.live_workers(now), f.proven_workers(now)),
            None => (live.len(), 0),
        };
        let window = now.saturating_sub(self.recent_requests.front().copied().unwrap_or(now));
        let span_s = (window as f64 / 1e3).clamp(1.0, 60.0);
        let rps = self.recent_requests.len() as f64 / span_s;
        let lat: Vec<f64> = self.latencies.iter().copied().collect();
        let mut workers: Vec<WorkerStat> = live
            .iter()
            .map(|s| {
                let p = s.payload();
                WorkerStat {
                    account: p.worker.to_string(),
                    hash_rate: p.hash_rate,
                    queue: p.queue,
                    payout: p.payout.map(|a| a.to_string()).unwrap_or_default(),
                    credits: u64::try_from(self.ledger.earned(&p.worker)).unwrap_or(u64::MAX),
                    browser: self.browsers.is_browser(&p.worker),
                }
            })
            .collect();
        workers.sort_by(|a, b| {
            b.hash_rate
                .cmp(&a.hash_rate)
                .then(a.account.cmp(&b.account))
        });
        workers.truncate(1000);
        let mut services: Vec<ServiceStat> = self
            .registry
            .services()
            .map(|(k, info)| ServiceStat {
                account: k.to_string(),
                name: info.name.clone(),
                requests: self.per_service.get(k).copied().unwrap_or(0),
                banned: info.banned.is_some(),
                granted: info.granted.0,
                spent: u64::try_from(self.ledger.spent(k)).unwrap_or(u64::MAX),
                unreceipted_wins: self.deliveries.unreceipted().get(k).copied().unwrap_or(0),
            })
            .collect();
        let unreceipted = self
            .deliveries
            .unreceipted()
            .iter()
            .map(|(k, n)| (k.to_string(), *n))
            .collect();
        services.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.account.cmp(&b.account)));
        services.truncate(1000);
        let connected = self.swarm.connected_peers().count();
        let connections = self
            .swarm
            .network_info()
            .connection_counters()
            .num_established();
        self.reach_stats(connections as usize);
        let entries = self.registry.len();
        let service_count = self.registry.services().count();
        let uptime = self.started.elapsed().as_secs();
        let epoch = dpow_protocol::ledger::epoch_of(now, self.ledger.epoch_ms());
        let receipts = self.ledger.len();
        self.big_books = receipts >= self.inline_digest_below;
        let digest = if self.big_books {
            self.refresh_digests(epoch);
            self.digests.get(&epoch).map(hex::encode)
        } else {
            Some(hex::encode(self.digest_of(epoch)))
        };
        let earned = self.worker.as_ref().map_or(0, |w| {
            u64::try_from(self.ledger.earned(&w.key.public())).unwrap_or(u64::MAX)
        });
        let own = self.worker.as_mut().map(|w| {
            w.own.refresh_credits(&self.ledger, &w.key.public(), now);
            w.own.snapshot()
        });
        let flagged: Vec<String> = self
            .ledger
            .flagged_services()
            .iter()
            .map(|k| k.to_string())
            .collect();
        let mut s = self.stats();
        s.connected_peers = connected;
        s.live_workers = live_workers;
        s.proven_workers = proven_workers;
        s.network_hash_rate = network_rate;
        s.registry_entries = entries;
        s.registry_repairs = self.registry_repairs;
        s.services = service_count;
        s.ledger_receipts = receipts;
        s.ledger_epoch = epoch;
        if let Some(d) = digest {
            s.ledger_digest = d;
        }
        s.credits_earned = earned;
        s.worker = own;
        s.flagged_services = flagged;
        s.uptime_s = uptime;
        s.requests_per_second = rps;
        s.latency_ms = Percentiles::of(&lat);
        (s.turn_ms, s.turn_slow_kinds) = self.turn_times.percentiles();
        s.turn_max_ms = self.turn_times.max_us as f64 / 1e3;
        s.turn_max_kind = self.turn_times.max_kind.to_string();
        s.worker_list = workers;
        s.service_list = services;
        s.unreceipted_wins = unreceipted;
    }

    /// Tell the worker which services have spent their credits (it de-prioritises or refuses
    /// their requests, as configured), when that set changes.
    fn update_exhausted(&mut self, now: u64) {
        let Some(flow) = self.peer.worker() else {
            return;
        };
        let mut exhausted: HashSet<dpow_keys::PublicKey> = self
            .registry
            .services()
            .map(|(k, _)| *k)
            .filter(|k| {
                self.ledger
                    .service_balance(&self.registry, k)
                    .is_exhausted()
            })
            .collect();
        // Services that took this worker's work and signed no receipt are treated alike.
        exhausted.extend(self.unpaying());
        if &exhausted == flow.exhausted() {
            return;
        }
        tracing::info!(services = exhausted.len(), "services out of credits");
        self.stats().exhausted_services = exhausted.len();
        if let Some(flow) = self.peer.worker_mut() {
            let actions = flow.set_exhausted(exhausted);
            self.worker_actions(actions, now);
        }
    }

    fn live_statuses(&self, now: u64) -> Vec<&Signed<WorkerStatus>> {
        self.peer
            .statuses()
            .filter(|s| {
                now.saturating_sub(s.payload().created_ms)
                    < dpow_protocol::validate::STATUS_MAX_AGE_MS
            })
            .collect()
    }

    // ---- swarm events ----

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                // A relayed address already ends with this node's id.
                let full = match address.iter().last() {
                    Some(libp2p::multiaddr::Protocol::P2p(_)) => address,
                    _ => address.with(libp2p::multiaddr::Protocol::P2p(self.peer_id())),
                };
                tracing::info!(addr = %full, "listening");
                self.listen_tx.send_modify(|v| v.push(full));
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                tracing::debug!(peer = %peer_id, addr = %endpoint.get_remote_address(), "connected");
                self.reach_connected(connection_id, peer_id, &endpoint);
                if num_established.get() == 1 {
                    self.emit(|| Event::PeerConnected { peer: peer_id });
                    self.send_sync(peer_id, SyncRequest::Hello { from: 0 });
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                self.reach_closed(connection_id, peer_id, num_established);
                if num_established > 0 {
                    return;
                }
                tracing::debug!(peer = %peer_id, "disconnected");
                self.emit(|| Event::PeerDisconnected { peer: peer_id });
                self.request_subscribers.remove(&peer_id);
                self.sub_tx.send_replace(self.request_subscribers.len());
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(peer = ?peer_id, "dial failed: {error}");
            }
            SwarmEvent::IncomingConnectionError {
                error: libp2p::swarm::ListenError::Denied { cause },
                send_back_addr,
                ..
            } => {
                tracing::debug!(addr = %send_back_addr, "inbound connection refused: {cause}");
                self.stats().connections_denied += 1;
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                connection_id,
                info,
            })) => self.on_identified(peer_id, connection_id, info),
            SwarmEvent::ListenerClosed { listener_id, .. } => {
                self.reach_listener_closed(listener_id)
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                tracing::info!(%address, "external address confirmed");
            }
            SwarmEvent::Behaviour(BehaviourEvent::Autonat(ev)) => self.on_autonat_event(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Relay(ev)) => self.on_relay_server_event(ev),
            SwarmEvent::Behaviour(BehaviourEvent::RelayClient(ev)) => {
                self.on_relay_client_event(ev)
            }
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(ev)) => self.on_dcutr_event(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::ModeChanged { new_mode })) => {
                self.on_kad_mode(new_mode)
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(ev)) => self.on_gossip_event(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Sync(ev)) => self.on_sync_event(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Results(ev)) => self.on_results_event(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                result: kad::QueryResult::Bootstrap(Err(e)),
                ..
            })) => {
                tracing::debug!("dht bootstrap: {e:?}");
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::PutRecord {
                        source,
                        record: Some(record),
                        ..
                    },
            })) => self.on_inbound_record(source, record),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                result: kad::QueryResult::PutRecord(r),
                stats,
                ..
            })) => match r {
                Ok(ok) => tracing::debug!(
                    receipt = %hex::encode(ok.key.as_ref()),
                    peers = stats.num_successes(),
                    "receipt replicated in the DHT"
                ),
                Err(e) => tracing::debug!("receipt not replicated in the DHT: {e:?}"),
            },
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                result: kad::QueryResult::GetClosestPeers(r),
                ..
            })) => match r {
                Ok(ok) => self.on_closest_peers(ok.peers),
                Err(kad::GetClosestPeersError::Timeout { key, peers }) => {
                    self.on_closest_peers(peers);
                    self.lookup_failed(&key);
                }
            },
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::GetRecord(r),
                step,
                ..
            })) => self.on_dht_get(id, r, step.last),
            _ => {}
        }
    }

    fn on_gossip_event(&mut self, ev: gossipsub::Event) {
        match ev {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => {
                tracing::trace!(from = %propagation_source, id = %message_id, topic = %message.topic, "gossip message");
                self.on_gossip_message(propagation_source, message_id, message);
            }
            gossipsub::Event::Subscribed { peer_id, topic } => {
                if self.which_topic(&topic) == Some(Topic::Requests) {
                    self.request_subscribers.insert(peer_id);
                    self.sub_tx.send_replace(self.request_subscribers.len());
                }
                if self.which_topic(&topic) == Some(Topic::Status)
                    && let Some(w) = &mut self.worker
                {
                    // Let the newcomer know us now rather than at the next interval.
                    w.next_status = w
                        .next_status
                        .min(Instant::now() + Duration::from_millis(50));
                }
            }
            gossipsub::Event::Unsubscribed { peer_id, topic }
                if self.which_topic(&topic) == Some(Topic::Requests) =>
            {
                self.request_subscribers.remove(&peer_id);
                self.sub_tx.send_replace(self.request_subscribers.len());
            }
            _ => {}
        }
    }

    /// An ignored or rejected message from `peer`: counted, and it costs the peer strikes
    /// (see `guard`): enough of them and it is blocked for a while.
    fn on_rejected(&mut self, peer: PeerId, r: &Rejected) {
        self.stats().reject(r.reason.as_str());
        let penalised = r.reason.penalise();
        self.emit(|| Event::Refused {
            peer,
            reason: r.reason,
            penalised,
            detail: r.detail.clone(),
        });
        if penalised {
            tracing::warn!(%peer, "rejected message: {r}");
        } else {
            tracing::debug!(%peer, "ignored message: {r}");
        }
        self.strike(peer, penalised);
    }

    /// The service side's first valid result: sign its receipt, keep it, spread it. Its id,
    /// if one was signed.
    fn issue_receipt(
        &mut self,
        request: RequestId,
        result: Signed<WorkResult>,
        now: u64,
    ) -> Option<dpow_protocol::MessageId> {
        let (Some(key), Some(req)) = (&self.service_key, self.peer.request(&request)) else {
            return None;
        };
        if self.withhold_receipts {
            tracing::warn!(%request, "withholding the receipt (fault injection)");
            return None;
        }
        let receipt = dpow_protocol::Receipt {
            request: req.clone(),
            result,
            price: dpow_protocol::Credits::price(req.payload().difficulty),
            accepted_ms: now,
        };
        match Signed::sign(receipt, key, &self.genesis.id) {
            Ok(r) => {
                let id = r.id();
                // Published (and put into the DHT) once it is on disk: a service that lost its
                // receipt could sign a second one for the same request.
                if let Err(e) = self.take_receipt(r, books::Ack::Own) {
                    tracing::warn!("own receipt not kept: {e}");
                }
                Some(id)
            }
            Err(e) => {
                tracing::error!("cannot sign a receipt: {e}");
                None
            }
        }
    }

    fn on_status(&mut self, st: Signed<WorkerStatus>, now: u64) -> Result<(), Rejected> {
        // Make room by forgetting the stalest worker with no receipt; a proven worker gives
        // way only to another proven one (fresh keys cost nothing to make).
        let ledger = &self.ledger;
        self.peer.on_status(st, now, |k| ledger.earned(k) > 0)
    }

    /// What the ledger loaded at start shows of each worker, for assignment
    /// ([`dpow_protocol::standing`]).
    fn seed_standings(&mut self) {
        let Some(flow) = self.peer.worker_mut() else {
            return;
        };
        // Standings keep a worker's newest samples: the last two epochs' receipts give them.
        let since = dpow_protocol::ledger::epoch_of(self.clock.now_ms(), self.ledger.epoch_ms())
            .saturating_sub(1)
            .saturating_mul(self.ledger.epoch_ms());
        for r in self.ledger.counted_since(since) {
            flow.on_counted(r.payload());
        }
    }

    fn on_registry(&mut self, e: Signed<RegistryEntry>) -> Result<(), Rejected> {
        let (registrar, seq, bytes) = (e.payload().registrar, e.payload().seq, e.bytes().to_vec());
        let equivocations = self.registry.equivocation_count();
        let outcome = self.registry.apply(e);
        if self.registry.equivocation_count() > equivocations {
            self.stats().registry_equivocations = self.registry.equivocation_count();
        }
        match outcome {
            Ok(applied) => {
                if self.registry.equivocation_count() > equivocations {
                    // It beat an entry with its number: keep it in place of the other.
                    tracing::warn!(
                        %registrar,
                        seq,
                        "registrar equivocation: two entries with one number; keeping the one with the smaller id"
                    );
                }
                self.store_registry_entry(&registrar, seq, &bytes);
                tracing::info!(
                    applied = applied.len(),
                    total = self.registry.len(),
                    "registry updated"
                );
                Ok(())
            }
            Err(RegistryError::Duplicate { .. }) => Err(Rejected::new(
                RejectReason::Replay,
                "registry entry already applied",
            )),
            Err(e @ RegistryError::Conflict { .. }) => {
                tracing::warn!("registrar equivocation: {e}");
                Err(Rejected::new(RejectReason::Replay, e.to_string()))
            }
            Err(e) => Err(Rejected::new(RejectReason::UnknownRegistrar, e.to_string())),
        }
    }

    /// Keep an applied (or pending) registry entry for the next start.
    fn store_registry_entry(&mut self, registrar: &dpow_keys::PublicKey, seq: u64, bytes: &[u8]) {
        let write = crate::store::writer::Write::Registry {
            registrar: registrar.0,
            seq,
            bytes: bytes.to_vec(),
        };
        self.store_write(write, Vec::new());
    }

    fn on_request(&mut self, req: Signed<WorkRequest>, now: u64) {
        let Some(actions) = self.peer.on_request(&req, now) else {
            return;
        };
        self.browsers.request(&req);
        // A browser this node carries delivers through it, as its own worker does.
        if self.worker.is_some() || self.browsers.listening() {
            self.reach_service_node(&req.payload().node);
        }
        if let Some(flow) = self.peer.worker() {
            tracing::trace!(request = %req.id(), role = ?flow.role(req.id()), ?actions, "request queued");
        }
        self.worker_actions(actions, now);
    }

    fn on_result(&mut self, res: Signed<WorkResult>, now: u64) {
        let id = res.payload().request;
        let out = self.peer.on_result(&res, now);
        self.service_actions(out.service, now);
        self.browsers.done(id);
        self.worker_actions(out.worker, now);
    }

    /// A request is finished (answered or cancelled): stop working on it.
    fn on_done(&mut self, id: RequestId, now: u64) {
        self.browsers.done(id);
        let actions = self.peer.on_done(id, now);
        self.worker_actions(actions, now);
    }

    // ---- worker side ----

    /// The ledger counted a receipt for `request` naming `worker`: won or lost, if this
    /// worker sent a result for it.
    fn own_receipt(&mut self, request: &RequestId, worker: &dpow_keys::PublicKey) {
        if let Some(w) = &mut self.worker {
            w.own.receipt(request, worker, &w.key.public());
        }
    }

    fn worker_actions(&mut self, actions: Vec<WorkerAction>, now: u64) {
        for a in actions {
            match a {
                WorkerAction::Solve {
                    request,
                    root,
                    difficulty,
                } => self.start_solve(request, root, difficulty, now),
                WorkerAction::Stop { request } => {
                    if let Some(w) = &self.worker
                        && let Some(s) = &w.solving
                        && s.request == request
                    {
                        s.control.cancel();
                    }
                }
                WorkerAction::Publish {
                    request,
                    root,
                    work,
                } => self.publish_result(request, root, work, now),
                WorkerAction::Dropped { request } => {
                    tracing::warn!(%request, "dropped a request (queue full, or its service is out of credits)");
                    self.stats().dropped += 1;
                }
            }
        }
    }

    fn start_solve(&mut self, request: RequestId, root: Root, difficulty: Difficulty, now: u64) {
        let role = self.peer.worker().and_then(|f| f.role(request));
        let Some(w) = &mut self.worker else { return };
        w.own.started(role, now);
        if let Some(s) = &w.solving {
            // The flow solves one request at a time; a new Solve replaces the old one.
            s.control.cancel();
        }
        let control = Arc::new(Control::new());
        w.solving = Some(Solving {
            request,
            control: control.clone(),
        });
        let solver = w.solver.clone();
        let tx = self.solved_tx.clone();
        tracing::debug!(%request, %difficulty, "solving");
        let spawned = std::thread::Builder::new()
            .name("dpow-solve".into())
            .spawn(move || {
                let began = Instant::now();
                let outcome = solver
                    .solve(&root, difficulty, &control)
                    .map_err(|e| e.to_string());
                let _ = tx.blocking_send(Solved {
                    request,
                    root,
                    difficulty,
                    outcome,
                    hashes: control.hashes(),
                    elapsed: began.elapsed(),
                });
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start a solver thread: {e}");
            w.solving = None;
        }
    }

    fn on_solved(&mut self, done: Solved) {
        let now = self.clock.now_ms();
        // Why an answer found now would come too late, if it would.
        let late = if self.peer.is_answered(&done.request) {
            Some(OwnReject::AlreadyAnswered)
        } else if self
            .peer
            .request(&done.request)
            .is_some_and(|r| now >= r.payload().expires_ms)
        {
            Some(OwnReject::Expired)
        } else {
            None
        };
        let (Some(w), Some(flow)) = (&mut self.worker, self.peer.worker_mut()) else {
            return;
        };
        if w.solving
            .as_ref()
            .is_some_and(|s| s.request == done.request)
        {
            w.solving = None;
        }
        w.own.job_done(w.solver.as_ref(), done.hashes, done.elapsed);
        // Whatever the solver says, work leaves this node only if it meets the request's
        // threshold: every peer would refuse it (and penalise this node) otherwise.
        let outcome = match done.outcome {
            Ok(Some(work)) if !dpow_protocol::is_valid(&done.root, work, done.difficulty) => Err((
                OwnReject::InvalidWork,
                format!(
                    "work {work} for root {} does not meet {}",
                    done.root, done.difficulty
                ),
            )),
            Ok(found) => Ok(found),
            Err(e) => Err((OwnReject::SolverError, e)),
        };
        {
            let mut s = self
                .stats
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            s.hashes += done.hashes;
            // Won as far as this node can tell: no answer arrived before ours.
            if matches!(outcome, Ok(Some(_))) && late.is_none() {
                s.hashes_won += done.hashes;
            }
        }
        let actions = match outcome {
            Ok(Some(work)) => {
                let mut actions = flow.on_solved(done.request, work, now);
                let publishes = |a: &WorkerAction| matches!(a, WorkerAction::Publish { request, .. } if *request == done.request);
                if late == Some(OwnReject::Expired) {
                    // Still queued until the next tick, but every peer would refuse it now.
                    actions.retain(|a| !publishes(a));
                }
                if actions.iter().any(publishes) {
                    self.events.emit(|| Event::Solved {
                        request: done.request,
                        hashes: done.hashes,
                        ms: done.elapsed.as_secs_f64() * 1e3,
                    });
                } else {
                    w.own.reject(late.unwrap_or(OwnReject::Cancelled));
                }
                actions
            }
            // Stopped: the flow already knows why.
            Ok(None) => Vec::new(),
            Err((reason, e)) => {
                tracing::error!(request = %done.request, reason = reason.as_str(), "solver failed: {e}");
                w.own.reject(reason);
                flow.on_solve_failed(done.request, now)
            }
        };
        self.worker_actions(actions, now);
        // The flow may have more queued work now that the solver is free.
        if let Some(flow) = self.peer.worker_mut() {
            let more = flow.on_tick(now);
            self.worker_actions(more, now);
        }
    }

    fn publish_result(&mut self, request: RequestId, root: Root, work: Work, now: u64) {
        let Some(w) = &self.worker else { return };
        let result = WorkResult {
            request,
            root,
            work,
            worker: w.key.public(),
            payout: w.payout,
        };
        let signed = match Signed::sign(result, &w.key, &self.genesis.id) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot sign a result: {e}");
                return;
            }
        };
        self.stats().solved += 1;
        self.deliver_result(signed, now);
    }

    fn publish_status(&mut self, now: u64) {
        let Some(w) = &mut self.worker else { return };
        w.next_status = Instant::now() + self.status_interval;
        let status = WorkerStatus {
            worker: w.key.public(),
            hash_rate: w.rate,
            queue: self.peer.worker().map_or(0, WorkerFlow::queue_len) as u32,
            payout: w.payout,
            created_ms: now,
        };
        let signed = match Signed::sign(status, &w.key, &self.genesis.id) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot sign a status: {e}");
                return;
            }
        };
        self.peer.own_status(signed.clone(), now);
        let _ = self.publish(Topic::Status, signed.bytes().to_vec());
    }

    // ---- service side ----

    fn service_actions(&mut self, actions: Vec<ServiceAction>, now: u64) {
        for a in actions {
            match a {
                ServiceAction::Publish(req) => {
                    let _ = self.publish(Topic::Requests, req.bytes().to_vec());
                }
                ServiceAction::Cancel { request } => self.publish_cancel(request, now),
                ServiceAction::Completed {
                    request, result, ..
                } => {
                    self.stats().completed += 1;
                    let receipt = self.issue_receipt(request, result.clone(), now);
                    if let Some(p) = self.pending.remove(&request) {
                        self.emit(|| Event::Completed {
                            request,
                            worker: result.payload().worker,
                            latency_ms: p.asked.elapsed().as_secs_f64() * 1e3,
                        });
                        self.latencies
                            .push_back(p.asked.elapsed().as_secs_f64() * 1e3);
                        if self.latencies.len() > 1000 {
                            self.latencies.pop_front();
                        }
                        let _ = p.reply.send(Ok(WorkAnswer {
                            request: request.to_string(),
                            work: result.payload().work,
                            worker: result.payload().worker,
                            latency: p.asked.elapsed(),
                            receipt,
                        }));
                    }
                }
                ServiceAction::Expired { request } => {
                    self.stats().expired += 1;
                    if let Some(p) = self.pending.remove(&request) {
                        self.emit(|| Event::Expired { request });
                        let _ = p.reply.send(Err(SubmitError::Expired));
                    }
                }
            }
        }
    }

    fn publish_cancel(&mut self, request: RequestId, now: u64) {
        let Some(key) = &self.service_key else { return };
        let cancel = WorkCancel {
            service: key.public(),
            request,
            created_ms: now,
        };
        match Signed::sign(cancel, key, &self.genesis.id) {
            Ok(c) => {
                let _ = self.publish(Topic::Cancels, c.bytes().to_vec());
            }
            Err(e) => tracing::error!("cannot sign a cancel: {e}"),
        }
        self.on_done(request, now);
    }

    fn submit(
        &mut self,
        ask: super::WorkAsk,
        reply: oneshot::Sender<Result<WorkAnswer, SubmitError>>,
    ) {
        let now = self.clock.now_ms();
        let asked = Instant::now();
        let Some(key) = &self.service_key else {
            let _ = reply.send(Err(SubmitError::NoServiceKey));
            return;
        };
        let request = WorkRequest {
            service: key.public(),
            root: ask.root,
            difficulty: ask.difficulty,
            kind: ask.kind,
            account: ask.account,
            nonce: dpow_solver::random_start(),
            created_ms: now,
            expires_ms: now + ask.lifetime.as_millis() as u64,
            priority: ask.priority,
            node: self.node_key,
        };
        let signed = match Signed::sign(request, key, &self.genesis.id) {
            Ok(s) => s,
            Err(e) => {
                let _ = reply.send(Err(SubmitError::Refused(e.to_string())));
                return;
            }
        };
        // The same checks every peer will apply: fail here with the reason, not by silence.
        let signed = match self
            .validator
            .check_request(signed.bytes(), &self.registry, now)
        {
            Ok(s) => s,
            Err(r) => {
                let _ = reply.send(Err(SubmitError::Refused(r.to_string())));
                return;
            }
        };
        let id = signed.id();
        let actions = match self.peer.submit(signed.clone(), now) {
            Ok(a) => a,
            Err(e) => {
                let _ = reply.send(Err(SubmitError::Refused(e.to_string())));
                return;
            }
        };
        self.stats().submitted += 1;
        self.count_request(&signed, true, now);
        let root = signed.payload().root;
        self.pending.insert(id, Pending { reply, asked, root });
        self.service_actions(actions, now);
        // A service node that also works takes its own request like any other.
        self.on_request(signed, now);
    }

    // ---- commands, sync, timers ----

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Submit { ask, reply } => self.submit(ask, reply),
            Command::CancelRoot { root, reply } => {
                let now = self.clock.now_ms();
                let ids: Vec<RequestId> = self
                    .pending
                    .iter()
                    .filter(|(_, p)| p.root == root)
                    .map(|(id, _)| *id)
                    .collect();
                for id in &ids {
                    let actions = self.peer.cancel(*id, now);
                    self.service_actions(actions, now);
                    if let Some(p) = self.pending.remove(id) {
                        let _ = p.reply.send(Err(SubmitError::Cancelled));
                    }
                }
                let _ = reply.send(ids.len());
            }
            Command::Registry {
                action,
                key,
                seq,
                reply,
            } => {
                let _ = reply.send(self.sign_registry(action, &key, seq));
            }
            Command::RegistryEntries { reply } => {
                let _ = reply.send(self.registry.entries());
            }
            Command::Checkpoints { reply } => {
                let _ = reply.send(self.checkpoints.all());
            }
            Command::PublishCheckpoint { bytes, reply } => {
                let _ = reply.send(self.publish_checkpoint(bytes));
            }
            Command::Ledger { reply } => {
                self.flush_receipts();
                let _ = reply.send((self.ledger.snapshot(), self.registry.clone()));
            }
            Command::AccountCredits { reply } => {
                let _ = reply.send(self.ledger.account_credits());
            }
            Command::PublishRaw {
                topic,
                bytes,
                reply,
            } => {
                let r = self
                    .publish(topic, bytes)
                    .map_err(|e| anyhow::anyhow!("publish on {}: {e}", topic.name()));
                let _ = reply.send(r);
            }
            Command::Dht { id, network, reply } => self.dht_receipt(id, network, reply),
            Command::Foreign { kind, bytes, reply } => {
                let _ = reply.send(self.on_foreign(kind, &bytes));
            }
            Command::Subscribe { reply } => {
                let _ = reply.send(self.subscribe_browser());
            }
            Command::Peers { reply } => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
            Command::Probe {
                peer,
                request,
                reply,
            } => self.send_probe(peer, request, reply),
            Command::Dial(addr) => {
                if let Err(e) = self.swarm.dial(addr.clone()) {
                    tracing::warn!(%addr, "dial: {e}");
                }
            }
        }
    }

    fn sign_registry(
        &mut self,
        action: dpow_protocol::RegistryAction,
        key: &SecretKey,
        want: Option<u64>,
    ) -> anyhow::Result<u64> {
        let registrar = key.public();
        if !self.registry.is_registrar(&registrar) {
            anyhow::bail!(
                "{} is not a registrar of network {}",
                registrar,
                self.genesis.network
            );
        }
        let next = self.registry.next_seq(&registrar);
        let seq = match want {
            None => next,
            Some(seq) if seq < next => anyhow::bail!(
                "entry #{} of registrar {registrar} is already on the network: another machine may be signing with this key",
                next - 1
            ),
            Some(seq) => seq,
        };
        let entry = RegistryEntry {
            registrar,
            seq,
            created_ms: self.clock.now_ms(),
            action,
        };
        let signed = Signed::sign(entry, key, &self.genesis.id)?;
        self.registry
            .apply(signed.clone())
            .map_err(|e| anyhow::anyhow!("applying the entry: {e}"))?;
        self.store_registry_entry(&registrar, seq, signed.bytes());
        match self.publish(Topic::Registry, signed.bytes().to_vec()) {
            Ok(()) => {}
            // Applied here; peers get it in the sync when they connect.
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {
                tracing::info!(seq, "no peers yet: the entry spreads when they connect");
            }
            Err(e) => anyhow::bail!("publishing the entry: {e}"),
        }
        Ok(seq)
    }

    fn on_sync_event(&mut self, ev: request_response::Event<SyncRequest, SyncResponse>) {
        // The answer to a probe goes to whoever asked, not into this node's state.
        let Some(ev) = self.take_probe_answer(ev) else {
            return;
        };
        match ev {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => self.answer_sync(peer, request, channel),
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Response {
                        request_id,
                        response: SyncResponse::Busy { retry_ms },
                    },
                ..
            } => {
                let sent = self.sync_answered(&request_id);
                self.on_busy(peer, sent, retry_ms);
            }
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Response {
                        request_id,
                        response:
                            SyncResponse::Hello {
                                registry,
                                statuses,
                                checkpoints,
                                next,
                            },
                    },
                ..
            } => {
                let sent = self.sync_answered(&request_id);
                let now = self.clock.now_ms();
                let (mut ok, mut bad) = (0usize, 0usize);
                for b in registry.iter().take(MAX_SYNC_ITEMS) {
                    match self
                        .validator
                        .check_registry(&b.0, &self.registry, now)
                        .and_then(|e| self.on_registry(e))
                    {
                        Ok(()) => ok += 1,
                        Err(r) if r.reason == RejectReason::Replay => {}
                        Err(r) => {
                            bad += 1;
                            self.on_rejected(peer, &r);
                        }
                    }
                }
                for b in statuses.iter().take(MAX_SYNC_ITEMS) {
                    // Cheap first: a status no newer than the one held costs no signature.
                    let st = self
                        .validator
                        .screen_status(&b.0, &self.registry, now)
                        .and_then(|u| self.peer.refuse_old_status(u.payload()).map(|()| u))
                        .and_then(|u| Ok(u.verify_with(&self.signatures)?));
                    if let Ok(st) = st {
                        let _ = self.on_status(st, now);
                    }
                }
                for b in checkpoints.iter().take(checkpoints::HELLO_CHECKPOINTS) {
                    match self.on_checkpoint(&b.0, peer) {
                        Ok(()) => {}
                        Err(r) if r.reason.penalise() => self.on_rejected(peer, &r),
                        Err(_) => {}
                    }
                }
                tracing::debug!(%peer, registry = ok, bad, "synced a page from peer");
                let first = sent.as_ref().is_none_or(|s| !s.repair);
                // A repair wants the registry, which the pages list first: it ends with the
                // first page that holds anything else.
                let next =
                    next.filter(|_| first || (statuses.is_empty() && checkpoints.is_empty()));
                if self.next_hello_page(sent, next) && first {
                    self.hello_done(peer);
                }
            }
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                self.sync_answered(&request_id);
                self.on_ledger_response(peer, response);
            }
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                let sent = self.sync_answered(&request_id);
                self.on_sync_failure(peer, sent, &error);
            }
            _ => {}
        }
    }

    /// The `Hello` walk with `peer` is over: then the books, counted as synced once they
    /// match the peer's.
    fn hello_done(&mut self, peer: PeerId) {
        if self.catch_up_ledger {
            self.start_catch_up(peer, true);
        } else {
            self.synced_tx.send_modify(|c| *c += 1);
            self.emit(|| Event::Synced { peer, receipts: 0 });
        }
    }

    fn on_tick(&mut self) {
        let now = self.clock.now_ms();
        self.guard_tick();
        self.check_unreceipted(now);
        let out = self.peer.on_tick(now);
        self.service_actions(out.service, now);
        self.worker_actions(out.worker, now);
        if self
            .worker
            .as_ref()
            .is_some_and(|w| Instant::now() >= w.next_status)
        {
            self.publish_status(now);
        }
        if self.catch_up_ledger {
            self.periodic_catch_up();
        }
        if self.discovery && Instant::now() >= self.next_discovery {
            self.next_discovery = Instant::now() + Duration::from_secs(30);
            if let Err(e) = self.swarm.behaviour_mut().kad.bootstrap() {
                tracing::debug!("dht bootstrap: {e}");
            }
        }
    }
}

/// The peer an address leads to: its last `/p2p/` (a relayed address names the relay first).
fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter()
        .filter_map(|p| match p {
            libp2p::multiaddr::Protocol::P2p(id) => Some(id),
            _ => None,
        })
        .last()
}

fn start_worker(
    w: WorkerConfig,
    key: SecretKey,
    flow: dpow_protocol::flow::FlowConfig,
) -> anyhow::Result<(Worker, WorkerFlow)> {
    let solver: Arc<dyn Solver> = Arc::from(w.solver);
    let rate = match w.rate {
        Some(r) => r,
        None => {
            let r =
                dpow_solver::dispatch::measure_rate(solver.as_ref(), Duration::from_millis(300))
                    .context("measuring the solver's hash rate")?;
            r as u64
        }
    }
    .max(1);
    tracing::info!(rate, "worker ready");
    let own = OwnTally::new(w.payout.as_ref(), solver.as_ref(), rate);
    let flow = WorkerFlow::new(key.public(), rate, flow);
    let worker = Worker {
        solver,
        key,
        payout: w.payout,
        rate,
        solving: None,
        next_status: Instant::now(),
        own,
    };
    Ok((worker, flow))
}

#[cfg(test)]
mod turn_tests {
    use super::*;

    #[test]
    fn the_slow_turns_are_counted_by_what_woke_the_loop_and_the_longest_is_named() {
        let mut t = TurnTimes::default();
        for i in 0..TURNS_KEPT + 100 {
            t.record(Duration::from_micros(10 + (i % 7) as u64), "gossip message");
        }
        // The slowest 1% of the window is 41 turns: these 21 and 20 of the others.
        for _ in 0..20 {
            t.record(Duration::from_millis(30), "sync request: ids");
        }
        t.record(Duration::from_millis(300), "sync request: digests");
        let (p, slow) = t.percentiles();
        assert_eq!(p.samples, TURNS_KEPT);
        assert_eq!(slow.get("sync request: ids"), Some(&20));
        assert_eq!(slow.get("sync request: digests"), Some(&1));
        assert_eq!(slow.get("gossip message"), Some(&20));
        assert_eq!(slow.values().sum::<u64>(), 41);
        assert_eq!(t.max_kind, "sync request: digests");
        assert_eq!(t.max_us, 300_000);
    }
}
