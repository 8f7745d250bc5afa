//! Building the event loop from a node's configuration.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use dpow_protocol::flow::ServiceConfig;
use dpow_protocol::peer::Peer;
use dpow_protocol::registry::Registry;
use dpow_protocol::validate::{Validator, ValidatorConfig};
use libp2p::{Multiaddr, PeerId, gossipsub, kad, noise, tcp, yamux};
use tokio::sync::mpsc;

use crate::net::behaviour::{Behaviour, MAX_SYNC_ITEMS, identity_of, topic_score};
use crate::net::{Command, NodeConfig, NodeStats, Topic};
use crate::store::NodeLedger;
use crate::store::writer::Writer;

use super::turns::TurnTimes;
use super::work::start_worker;
use super::{
    DIGEST_REFRESH, EventLoop, Watches, books, delivery, foreign, guard, inbound, peer_of, reach,
};

impl EventLoop {
    pub(in crate::net) async fn new(
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
                    crate::net::records::Records::new(key.public().to_peer_id(), records_store);
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
        let kad_protocol = crate::net::behaviour::kad_protocol(&config.genesis)?;
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
            verifier: crate::net::verify::Verifier::new(signatures.clone()),
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
}
