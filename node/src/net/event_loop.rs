//! The one task that owns the swarm.
//!
//! This file holds the loop's state and its turn: one `select!` over the swarm, the node's
//! commands, the solver thread, the verification pool, the store task and its timers, each
//! handed to the part that deals with it. The request path's logic is `dpow_protocol::peer`
//! (sans-IO); the parts here translate between it and the I/O: `inbound` (every message from
//! the network), `work` and `service` (the two flows' actions), `books`, `checkpoints`,
//! `sync` and `disk` (the ledger, its replication and its writes), `delivery` (results sent
//! point-to-point), `registry`, `guard`, `reach`, `foreign` (browser workers), `probe`,
//! `report` and `turns` (statistics), `setup` (construction).

mod books;
mod checkpoints;
mod delivery;
mod disk;
mod foreign;
mod guard;
mod inbound;
mod probe;
mod reach;
mod registry;
mod report;
mod service;
mod setup;
mod sync;
mod turns;
mod work;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dpow_keys::SecretKey;
use dpow_protocol::peer::Peer;
use dpow_protocol::registry::Registry;
use dpow_protocol::validate::{Rejected, Validator};
use dpow_protocol::{RequestId, Signed, WorkRequest, WorkResult, WorkerStatus};
use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, gossipsub, identify, kad, request_response};
use tokio::sync::{mpsc, oneshot, watch};

use super::behaviour::{Behaviour, BehaviourEvent, SyncRequest, SyncResponse};
use super::events::Event;
use super::{Command, NodeStats, SubmitError, Topic};
use crate::genesis::Genesis;
use crate::store::writer::{Done, Job, Writer};
use crate::store::{NodeLedger, Store};
use service::Pending;
use turns::{TurnTimes, swarm_kind};
use work::{Solved, Worker};

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

/// Big books: how often the digests of epochs that took receipts are recomputed (off the
/// event loop); a digest answered or shown is at most this much (and one computation) old.
const DIGEST_REFRESH: Duration = Duration::from_secs(5);
/// What a peer asking for digests while they are computed at start-up is told to wait.
const WARMING_RETRY_MS: u64 = 1_000;
/// Peers' digests set aside while this node's are computed at start-up (each at most 4,096
/// epochs); the catch-up with a peer past them ends, and the periodic round comes back to it.
const MAX_DEFERRED_DIGESTS: usize = 32;

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

    // ---- commands and timers (the worker side is in `work`, the service side in
    // `service`, the ledger sync protocol in `sync`) ----

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
