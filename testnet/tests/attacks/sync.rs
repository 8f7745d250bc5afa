//! Sync amplification and cheap floods: a stranger that asks for `Hello`, `Ids`, `Fetch` and
//! `Digests` as fast as it can is metered, then cut off; one that floods messages the victim
//! ignores is blocked for a while and let back in; connections past the limits are refused.
//! An honest peer syncing from the victim meanwhile gets everything, page by page. A DHT
//! record put again and again is dropped unread after the first, with no write to disk.

use std::time::{Duration, Instant};

use dpow_keys::SecretKey;
use dpow_node::net::wire::{Bytes, SyncRequest, SyncResponse};
use dpow_node::net::{self, BudgetConfig, NodeHandle, NodeStats, Rate, Topic, now_ms};
use dpow_protocol::{RegistryAction, Signed};
use dpow_testnet::local::{LocalNet, LocalOptions, wait_for};
use futures::StreamExt;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, StreamProtocol, Swarm, kad};

use super::common::{
    Background, bare_swarm, figure, honest_load, mib, p50_p99, peer_of, rss_bytes, service_through,
};

/// How long any one wait may take.
const T: Duration = Duration::from_secs(30);
/// The victim's `Hello` page: small, so that its registry takes several pages.
const PAGE: usize = 1024;

type SyncBehaviour = request_response::cbor::Behaviour<SyncRequest, SyncResponse>;

/// Budgets small enough for a test to exhaust in a second or two.
fn tight() -> BudgetConfig {
    BudgetConfig {
        sync_requests: Rate {
            per_sec: 20.0,
            burst: 40.0,
        },
        sync_bytes: Rate {
            per_sec: 32.0 * 1024.0,
            burst: 64.0 * 1024.0,
        },
        strikes: Rate::per_window(200.0, Duration::from_secs(60)),
        block_for: Duration::from_secs(600),
        ..BudgetConfig::default()
    }
}

/// Figures go to the log: `RUST_LOG=info cargo test ... --test attacks -- --nocapture`.
fn log() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A network with many registry entries (several `Hello` pages) and a victim with tight
/// budgets that has synced from it.
async fn victim_on(
    services: usize,
    budgets: BudgetConfig,
    tune: impl FnOnce(&mut net::NodeConfig),
) -> (LocalNet, NodeHandle, Multiaddr) {
    let net = LocalNet::start(LocalOptions {
        workers: 1,
        ..LocalOptions::default()
    })
    .await
    .expect("network starts");
    for i in 0..services {
        let key = SecretKey::generate().expect("key");
        net.bootstrap
            .registry(
                RegistryAction::RegisterService {
                    service: key.public(),
                    name: format!("padding service number {i}, named at length to fill pages"),
                },
                net.registrar.clone(),
            )
            .await
            .expect("registered");
    }
    let entries = net.bootstrap.stats().registry_entries;
    let mut cfg = net.config(SecretKey::generate().expect("key"));
    cfg.tuning.budgets = budgets;
    cfg.tuning.hello_page_bytes = PAGE;
    tune(&mut cfg);
    let victim = net::spawn(cfg).await.expect("victim starts");
    victim.wait_synced(T).await.expect("victim synced");
    wait_for(&victim, T, |s| s.registry_entries >= entries)
        .await
        .expect("victim holds the registry");
    let addr = victim.listen_addrs(T).await.expect("listens")[0].clone();
    (net, victim, addr)
}

/// A bare libp2p peer that speaks only the sync protocol (under `net`'s id): the attacker.
fn attacker(net: &LocalNet) -> Swarm<SyncBehaviour> {
    let sync = StreamProtocol::try_from_owned(net.genesis.protocol("sync/4")).expect("name");
    bare_swarm(|_| {
        request_response::cbor::Behaviour::new(
            [(sync.clone(), ProtocolSupport::Outbound)],
            request_response::Config::default()
                .with_request_timeout(Duration::from_secs(10))
                .with_max_concurrent_streams(256),
        )
    })
}

/// The abuse: every kind of request, for nothing the victim holds or for everything at once.
fn abusive(i: u64) -> SyncRequest {
    match i % 5 {
        0 => SyncRequest::Hello { from: 0 },
        // Checkpoints of epochs nobody holds, the most a request may name.
        3 => SyncRequest::Checkpoints {
            epochs: (0..16).map(|k| 1_000_000 + i * 16 + k).collect(),
        },
        // Epochs nobody holds: the victim must not cache a list for each.
        1 => SyncRequest::Ids {
            epoch: 1_000_000 + i,
            after: None,
        },
        2 => SyncRequest::Fetch {
            ids: Bytes(
                (0..512u64)
                    .flat_map(|k| {
                        let mut id = [0u8; 32];
                        id[..8].copy_from_slice(&(i * 512 + k).to_le_bytes());
                        id
                    })
                    .collect(),
            ),
        },
        _ => SyncRequest::Digests,
    }
}

/// What the attacker got.
#[derive(Debug, Default)]
struct Outcome {
    sent: u64,
    answered: u64,
    busy: u64,
    failed: u64,
    /// Bytes of envelopes, ids and digests in the answers.
    bytes: u64,
    elapsed: Duration,
    cut_off: bool,
}

fn payload_bytes(r: &SyncResponse) -> u64 {
    let list = |l: &[Bytes]| l.iter().map(|b| b.0.len() as u64).sum::<u64>();
    match r {
        SyncResponse::Hello {
            registry,
            statuses,
            checkpoints,
            ..
        } => list(registry) + list(statuses) + list(checkpoints),
        SyncResponse::Digests { epochs, .. } => epochs.len() as u64 * 48,
        SyncResponse::Ids { ids, .. } => ids.0.len() as u64,
        SyncResponse::Receipts(l) | SyncResponse::Checkpoints(l) => list(l),
        SyncResponse::Busy { .. } => 0,
    }
}

/// Connect to `victim` and send up to `max` requests of `make`, `in_flight` at a time, until
/// the victim closes the connection or every answer is in.
async fn spam(
    swarm: &mut Swarm<SyncBehaviour>,
    victim: &Multiaddr,
    max: u64,
    in_flight: u64,
    make: impl Fn(u64) -> SyncRequest,
) -> Outcome {
    let peer = peer_of(victim);
    swarm.dial(victim.clone()).expect("dial");
    let mut out = Outcome::default();
    let t0 = Instant::now();
    let mut connected = false;
    let mut waiting = 0u64;
    loop {
        if connected {
            while waiting < in_flight && out.sent < max {
                swarm.behaviour_mut().send_request(&peer, make(out.sent));
                out.sent += 1;
                waiting += 1;
            }
            if waiting == 0 {
                break;
            }
        }
        let ev = tokio::time::timeout(T, swarm.select_next_some())
            .await
            .expect("the attacker hears something in time");
        match ev {
            SwarmEvent::ConnectionEstablished { .. } => connected = true,
            SwarmEvent::ConnectionClosed {
                num_established: 0, ..
            } if connected => {
                out.cut_off = true;
                break;
            }
            SwarmEvent::OutgoingConnectionError { .. } if !connected => {
                out.cut_off = true;
                break;
            }
            SwarmEvent::Behaviour(request_response::Event::Message {
                message: request_response::Message::Response { response, .. },
                ..
            }) => {
                waiting -= 1;
                match &response {
                    SyncResponse::Busy { .. } => out.busy += 1,
                    r => {
                        out.answered += 1;
                        out.bytes += payload_bytes(r);
                    }
                }
            }
            SwarmEvent::Behaviour(request_response::Event::OutboundFailure { .. }) => {
                waiting = waiting.saturating_sub(1);
                out.failed += 1;
            }
            _ => {}
        }
    }
    out.elapsed = t0.elapsed();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sync_spammer_is_metered_then_cut_off_while_an_honest_peer_syncs() {
    log();
    let budgets = tight();
    let (net, victim, addr) = victim_on(24, budgets.clone(), |_| {}).await;
    let entries = victim.stats().registry_entries;
    let rss_before = rss_bytes();

    let mut swarm = attacker(&net);
    let attacker_id = swarm.local_peer_id().to_string();
    let target = addr.clone();
    let attack = tokio::spawn(async move { spam(&mut swarm, &target, 20_000, 64, abusive).await });

    // An honest newcomer that knows only the victim syncs meanwhile, page by page.
    let mut cfg = net.config(SecretKey::generate().expect("key"));
    cfg.genesis.bootstrap = vec![];
    cfg.dial = vec![addr.clone()];
    let honest = net::spawn(cfg).await.expect("honest peer starts");
    honest.wait_synced(T).await.expect("the honest peer synced");
    let got = wait_for(&honest, T, |s| s.registry_entries >= entries)
        .await
        .expect("the honest peer got every registry entry");
    assert_eq!(got.registry_entries, entries);

    let out = attack.await.expect("attack task");
    let s = wait_for(&victim, T, |s| s.blocked_peers.contains(&attacker_id))
        .await
        .expect("the victim blocks the spammer");
    let rss_after = rss_bytes();
    tracing::info!(
        "sync spam: {out:?}; victim answered {} requests ({} bytes), throttled {}, \
         budget peers {}; rss {} -> {} MiB",
        s.sync_answered,
        s.sync_answered_bytes,
        s.sync_throttled,
        s.budget_peers,
        rss_before >> 20,
        rss_after >> 20
    );
    assert!(out.cut_off, "the victim closed the spammer's connection");
    assert!(out.busy >= 1 && s.sync_throttled >= out.busy);
    assert!(s.peers_blocked >= 1);
    assert!(
        out.sent > out.answered + out.busy,
        "requests past the cut-off went unanswered: {out:?}"
    );
    // The meter: at most the burst, the rate over the time it took, and one answer.
    let bound = budgets.sync_bytes.burst
        + budgets.sync_bytes.per_sec * out.elapsed.as_secs_f64()
        + 64.0 * 1024.0;
    assert!(
        (out.bytes as f64) <= bound,
        "the spammer got {} bytes, over {bound}",
        out.bytes
    );
    let admitted_bound = budgets.sync_requests.burst
        + budgets.sync_requests.per_sec * out.elapsed.as_secs_f64()
        + 1.0;
    assert!(
        (out.answered as f64) <= admitted_bound,
        "{} answers, over {admitted_bound}",
        out.answered
    );
    assert!(s.budget_peers <= budgets.max_peers);
    // Every node of this test lives in this process; a victim that cached an id list per
    // epoch asked, or buffered answers, would grow by far more.
    assert!(
        rss_after.saturating_sub(rss_before) < 256 << 20,
        "memory grew by {} MiB",
        rss_after.saturating_sub(rss_before) >> 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blocked_peer_is_let_back_in_after_its_block() {
    let budgets = BudgetConfig {
        strikes: Rate::per_window(20.0, Duration::from_secs(60)),
        block_for: Duration::from_secs(1),
        ..tight()
    };
    let (lnet, victim, addr) = victim_on(0, budgets, |_| {}).await;
    let mut swarm = attacker(&lnet);
    let me = swarm.local_peer_id().to_string();
    let out = spam(&mut swarm, &addr, 5_000, 64, |_| SyncRequest::Digests).await;
    assert!(out.cut_off, "cut off: {out:?}");
    wait_for(&victim, T, |s| s.blocked_peers.contains(&me))
        .await
        .expect("blocked");
    let s = wait_for(&victim, T, |s| !s.blocked_peers.contains(&me))
        .await
        .expect("the block ends");
    assert_eq!(s.peers_blocked_now, 0);
    // Back in: answered again, within the budget.
    let again = spam(&mut swarm, &addr, 1, 1, |_| SyncRequest::Digests).await;
    assert_eq!(again.answered, 1, "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_flooding_ignored_messages_is_blocked_for_a_while() {
    let budgets = BudgetConfig {
        strikes: Rate::per_window(50.0, Duration::from_secs(600)),
        ..tight()
    };
    let (net, victim, addr) = victim_on(0, budgets, |_| {}).await;
    // A real node, connected to the victim alone, publishing worker statuses an hour old:
    // each is ignored (stale), never penalised, and each used to cost the sender nothing.
    let mut cfg = net.config(SecretKey::generate().expect("key"));
    cfg.genesis.bootstrap = vec![];
    cfg.dial = vec![addr];
    let flooder = net::spawn(cfg).await.expect("flooder starts");
    flooder.wait_synced(T).await.expect("flooder synced");
    let me = flooder.peer_id().to_string();
    let worker = SecretKey::generate().expect("key");
    let old = now_ms() - 3_600_000;
    for i in 0..200u64 {
        let st = dpow_testkit::builders::status(&worker, old + i);
        let bytes = Signed::sign(st, &worker, &net.genesis.id)
            .expect("sign")
            .bytes()
            .to_vec();
        // Refused once the victim has cut it off: that is the point.
        if flooder.publish_raw(Topic::Status, bytes).await.is_err() {
            break;
        }
    }
    let s = wait_for(&victim, T, |s| s.blocked_peers.contains(&me))
        .await
        .expect("the victim blocks the flooder");
    assert!(s.rejected_for("stale") >= 50, "{:?}", s.rejected);
    wait_for(&flooder, T, |s: &NodeStats| s.connected_peers == 0)
        .await
        .expect("the flooder is disconnected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_past_the_limit_are_refused() {
    let (net, victim, addr) = victim_on(0, tight(), |cfg| {
        cfg.tuning.limits.max_established = 3;
    })
    .await;
    let mut peers = Vec::new();
    for _ in 0..5 {
        let mut cfg = net.config(SecretKey::generate().expect("key"));
        cfg.genesis.bootstrap = vec![];
        cfg.dial = vec![addr.clone()];
        peers.push(net::spawn(cfg).await.expect("peer starts"));
    }
    let s = wait_for(&victim, T, |s| s.connections_denied >= 1)
        .await
        .expect("the victim refuses connections past its limit");
    assert!(s.connected_peers <= 3, "{} peers", s.connected_peers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_default_budgets_a_sync_spammer_is_cut_off_too() {
    log();
    let budgets = BudgetConfig::default();
    let (lnet, victim, addr) = victim_on(24, budgets.clone(), |cfg| {
        cfg.tuning.hello_page_bytes = net::DEFAULT_HELLO_PAGE_BYTES;
    })
    .await;
    // An honest service that reaches the network through the victim keeps asking for work.
    let service = std::sync::Arc::new(service_through(&lnet, &addr).await);
    let quiet = honest_load(&service, 50, 1).await;
    let rss_before = rss_bytes();
    let load = Background::start(service.clone(), 10, 2);
    let mut swarm = attacker(&lnet);
    let me = swarm.local_peer_id().to_string();
    let out = spam(&mut swarm, &addr, 50_000, 64, abusive).await;
    let during = load.stop().await;
    let s = wait_for(&victim, T, |s| s.blocked_peers.contains(&me))
        .await
        .expect("the victim blocks the spammer");
    let rss_after = rss_bytes();
    figure(format_args!(
        "sync spam, default budgets: honest {} quiet, {} under the spam; rss {} -> {} MiB",
        p50_p99(&quiet),
        p50_p99(&during),
        mib(rss_before),
        mib(rss_after)
    ));
    tracing::info!(
        "sync spam, default budgets: {out:?}; victim answered {} requests ({} bytes), \
         throttled {}; rss {} -> {} MiB",
        s.sync_answered,
        s.sync_answered_bytes,
        s.sync_throttled,
        rss_before >> 20,
        rss_after >> 20
    );
    assert!(out.cut_off, "{out:?}");
    // Out of strikes after about `strikes.burst` busy answers (plus what refilled meanwhile).
    let refilled = budgets.strikes.per_sec * out.elapsed.as_secs_f64();
    assert!(
        (out.busy as f64) <= budgets.strikes.burst + refilled + 1.0,
        "{out:?}"
    );
    let bound = budgets.sync_bytes.burst
        + budgets.sync_bytes.per_sec * out.elapsed.as_secs_f64()
        + net::DEFAULT_HELLO_PAGE_BYTES as f64;
    assert!((out.bytes as f64) <= bound, "{out:?}");
    assert!(
        rss_after.saturating_sub(rss_before) < 256 << 20,
        "memory grew by {} MiB",
        rss_after.saturating_sub(rss_before) >> 20
    );
}

/// A bare libp2p peer that speaks only Kademlia, knowing only the victim.
fn dht_attacker(
    net: &LocalNet,
    victim: &Multiaddr,
) -> Swarm<kad::Behaviour<kad::store::MemoryStore>> {
    let kad_name = StreamProtocol::try_from_owned(net.genesis.protocol("kad/1")).expect("name");
    let mut swarm = bare_swarm(|key| {
        let me = key.public().to_peer_id();
        let mut cfg = kad::Config::new(kad_name.clone());
        cfg.set_query_timeout(Duration::from_secs(10));
        let mut kad = kad::Behaviour::with_config(me, kad::store::MemoryStore::new(me), cfg);
        kad.set_mode(Some(kad::Mode::Server));
        kad
    });
    swarm
        .behaviour_mut()
        .add_address(&peer_of(victim), victim.clone());
    swarm
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dht_record_replays_are_dropped_without_a_write() {
    log();
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        std::sync::Arc::new(dpow_node::store::Store::open(&dir.path().join("db")).expect("store"));
    let (net, victim, addr) = victim_on(0, tight(), move |cfg| cfg.store = Some(store)).await;
    // One real receipt: a request through the network.
    let service = net.service_node().await.expect("service node");
    let root = dpow_protocol::Root([0x42; 32]);
    service
        .submit(net::WorkAsk {
            root,
            difficulty: dpow_protocol::Difficulty(0xffff_f000_0000_0000),
            kind: None,
            account: None,
            priority: dpow_protocol::Priority::Normal,
            lifetime: Duration::from_secs(60),
        })
        .await
        .expect("work");
    wait_for(&victim, T, |s| s.ledger_receipts >= 1)
        .await
        .expect("the victim holds the receipt");
    let (ledger, _) = service.ledger().await.expect("ledger");
    let receipt = ledger
        .epochs()
        .into_iter()
        .flat_map(|(e, _)| ledger.receipt_ids_in_epoch(e))
        .find_map(|id| ledger.get(&id).cloned())
        .expect("a receipt");
    let record = kad::Record::new(
        kad::RecordKey::new(&receipt.id().0),
        receipt.bytes().to_vec(),
    );

    // The same valid record put again and again.
    const PUTS: u64 = 100;
    let mut swarm = dht_attacker(&net, &addr);
    let mut done = 0u64;
    let mut queued = 0u64;
    while done < PUTS {
        while queued < PUTS && queued - done < 8 {
            swarm
                .behaviour_mut()
                .put_record(record.clone(), kad::Quorum::One)
                .expect("put");
            queued += 1;
        }
        let ev = tokio::time::timeout(T, swarm.select_next_some())
            .await
            .expect("the attacker hears something in time");
        if let SwarmEvent::Behaviour(kad::Event::OutboundQueryProgressed {
            result: kad::QueryResult::PutRecord(_),
            step,
            ..
        }) = ev
            && step.last
        {
            done += 1;
        }
    }
    // The first put is verified and written; the copies cost a read each, no write.
    let s = wait_for(&victim, T, |s| s.dht_duplicates >= PUTS - 1)
        .await
        .expect("copies dropped");
    tracing::info!(puts = PUTS, duplicates = s.dht_duplicates, "dht replays");
    assert!(s.dht_duplicates <= PUTS);
    let held = victim
        .dht_receipt(receipt.id(), false)
        .await
        .expect("lookup")
        .expect("the record is held");
    assert_eq!(held.id(), receipt.id());
    // Close the database before the process ends.
    victim.shutdown().await.expect("stops");
}
