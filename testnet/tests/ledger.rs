//! The ledger across real nodes on loopback: receipts on disk, catch-up of older epochs by
//! digests, DHT replication that survives losing k−1 of a receipt's k holders, bad receipts
//! refused everywhere, and a node process killed with SIGKILL while it ingests.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dpow_keys::SecretKey;
use dpow_node::net::{self, Event, NodeHandle, Topic, WorkAsk, now_ms};
use dpow_node::store::Store;
use dpow_protocol::ledger::Ledger;
use dpow_protocol::{
    BlockKind, Credits, Difficulty, Priority, Receipt, Root, Signed, Work, WorkRequest, WorkResult,
};
use dpow_testnet::local::{LocalNet, LocalOptions, wait_for};
use dpow_testnet::procs::NodeProc;
use futures::FutureExt;

const T: Duration = Duration::from_secs(30);

/// Wait until one of the nodes behind `streams` keeps a DHT record or a receipt (its own are
/// records too), or missed events; false when one of them stopped.
async fn next_kept(streams: &mut [net::EventStream]) -> bool {
    loop {
        let next = streams.iter_mut().map(|s| Box::pin(s.next()));
        match futures::future::select_all(next).await.0 {
            None => return false,
            Some(
                Ok(Event::RecordKept { .. } | Event::ReceiptStored { .. } | Event::Synced { .. })
                | Err(_),
            ) => return true,
            Some(Ok(_)) => {}
        }
    }
}

fn root(i: u32) -> Root {
    let mut r = [0x42u8; 32];
    r[..4].copy_from_slice(&i.to_be_bytes());
    Root(r)
}

fn ask(i: u32) -> WorkAsk {
    WorkAsk {
        root: root(i),
        difficulty: dpow_protocol::Profile::test().threshold(BlockKind::Receive),
        kind: Some(BlockKind::Receive),
        account: None,
        priority: Priority::Normal,
        lifetime: Duration::from_secs(60),
    }
}

/// Every epoch's digest, from a node's ledger.
async fn digests(node: &NodeHandle) -> BTreeMap<u64, [u8; 32]> {
    let (ledger, _) = node.ledger().await.expect("ledger");
    digests_of(&ledger)
}

fn digests_of(ledger: &Ledger) -> BTreeMap<u64, [u8; 32]> {
    ledger
        .epochs()
        .into_iter()
        .map(|(e, _)| (e, ledger.epoch_digest(e)))
        .collect()
}

fn open_store(dir: &Path) -> Arc<Store> {
    Arc::new(Store::open(&dir.join("db")).expect("store opens"))
}

/// A node of `net` with a store, dialling `dial` (the bootstrap when empty).
async fn stored_node(
    net: &LocalNet,
    store: Arc<Store>,
    service: bool,
    dial: Vec<libp2p::Multiaddr>,
) -> NodeHandle {
    let mut cfg = net.config(SecretKey::generate().expect("key"));
    cfg.store = Some(store);
    if service {
        cfg.service_key = Some(net.service.clone());
    }
    if !dial.is_empty() {
        cfg.genesis.bootstrap = vec![];
        cfg.dial = dial;
    }
    let node = net::spawn(cfg).await.expect("node starts");
    node.wait_synced(T).await.expect("node syncs");
    node
}

/// A network of one worker and one-second epochs, and a service node on it.
async fn one_second_epochs() -> (LocalNet, NodeHandle) {
    let net = LocalNet::start(LocalOptions {
        workers: 1,
        epoch_ms: 1000,
        ..LocalOptions::default()
    })
    .await
    .expect("network starts");
    let service = net.service_node().await.expect("service node");
    (net, service)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_node_catches_up_older_epochs_and_keeps_them_across_a_restart() {
    let (net, service) = one_second_epochs().await;
    // Requests spread over at least four one-second epochs: the network's clock moves on
    // between them, so the test need not wait for the epochs to pass.
    let n = 9u32;
    for i in 0..n {
        service.submit(ask(i)).await.expect("work");
        net.clock.advance(Duration::from_millis(450));
    }
    wait_for(&service, T, |s| s.ledger_receipts == n as usize)
        .await
        .expect("the service holds its receipts");
    let want = digests(&service).await;
    assert!(want.len() >= 4, "receipts span {} epochs", want.len());

    let dir = tempfile::tempdir().expect("dir");
    let late = stored_node(&net, open_store(dir.path()), false, vec![]).await;
    assert_eq!(
        digests(&late).await,
        want,
        "after catch-up, every epoch's digest is the service's"
    );
    late.shutdown().await.expect("stops");

    // Restarted alone (no peers at all), the node has every receipt from its own disk.
    let mut cfg = net.config(SecretKey::generate().expect("key"));
    cfg.genesis.bootstrap = vec![];
    cfg.store = Some(open_store(dir.path()));
    let alone = net::spawn(cfg).await.expect("restarts");
    assert_eq!(digests(&alone).await, want, "the store kept every receipt");
    // And the registry: it knows the service without asking anyone.
    wait_for(&alone, T, |s| s.registry_entries >= 2 && s.services >= 1)
        .await
        .expect("the store kept the registry");
    // A node that knows only it catches up from its disk: the ids pages it asks for and the
    // receipts it fetches are read off the event loop.
    let addrs = alone.listen_addrs(T).await.expect("its addresses");
    let dir2 = tempfile::tempdir().expect("dir");
    let third = stored_node(&net, open_store(dir2.path()), false, addrs).await;
    assert_eq!(
        digests(&third).await,
        want,
        "caught up from the restarted node"
    );
    let s = alone.stats();
    assert!(
        s.fetches_off_loop >= 1,
        "the receipts were read on the event loop"
    );
    assert!(
        s.ids_pages_off_loop >= 1,
        "the epochs' ids were read on the event loop"
    );
    third.shutdown().await.expect("stops");
    alone.shutdown().await.expect("stops");
}

/// What `node` answers a peer that asks for its digests: epoch → digest.
async fn answered_digests(asker: &NodeHandle, node: &NodeHandle) -> BTreeMap<u64, Vec<u8>> {
    let peer: libp2p::PeerId = node.stats().peer_id.parse().expect("peer id");
    match asker
        .probe(peer, net::wire::SyncRequest::Digests)
        .await
        .expect("digests answered")
    {
        net::wire::SyncResponse::Digests { epochs, .. } => {
            epochs.into_iter().map(|e| (e.epoch, e.digest.0)).collect()
        }
        other => panic!("asked for digests, got {other:?}"),
    }
}

/// Big books (here: any, the threshold set to 0) compute an epoch's digest on the event loop
/// once, then off it as receipts come: the statistics show the books' own digest, and so do
/// the answers to peers' catch-ups once the books have settled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_statistics_show_the_digest_of_big_books_computed_off_the_event_loop() {
    let net = LocalNet::start(LocalOptions {
        workers: 1,
        ..LocalOptions::default()
    })
    .await
    .expect("network starts");
    let service = net.service_node().await.expect("service node");
    let n = 3;
    for i in 0..n {
        service.submit(ask(i)).await.expect("work");
    }
    let dir = tempfile::tempdir().expect("dir");
    let mut cfg = net.config(SecretKey::generate().expect("key"));
    cfg.store = Some(open_store(dir.path()));
    cfg.tuning.inline_digest_below = 0;
    let node = net::spawn(cfg).await.expect("node starts");
    node.wait_synced(T).await.expect("node syncs");
    let (ledger, _) = node.ledger().await.expect("ledger");
    assert_eq!(ledger.len(), n as usize, "caught up");
    let epoch = dpow_protocol::ledger::epoch_of(now_ms(), ledger.epoch_ms());
    assert_eq!(
        ledger.receipt_ids_in_epoch(epoch).len(),
        n as usize,
        "this epoch's"
    );
    // The epoch shown's digest, as the books have it (an epoch may end meanwhile).
    wait_for(&node, T, |s| {
        s.digests_off_loop >= 1
            && s.ledger_digest == hex::encode(ledger.epoch_digest(s.ledger_epoch))
    })
    .await
    .expect("the digest computed off the event loop is shown");

    // More receipts of the epoch come by gossip: its digest is not computed on the event
    // loop again, yet what peers are answered comes to match the books.
    let inline = node.stats().digests_inline;
    for i in n..2 * n {
        service.submit(ask(i)).await.expect("work");
    }
    let t0 = Instant::now();
    loop {
        let (ledger, _) = node.ledger().await.expect("ledger");
        let s = node.stats();
        let want: BTreeMap<u64, Vec<u8>> = ledger
            .epochs()
            .into_iter()
            .map(|(e, _)| (e, ledger.epoch_digest(e).to_vec()))
            .collect();
        if ledger.len() == 2 * n as usize
            && s.ledger_digest == hex::encode(ledger.epoch_digest(s.ledger_epoch))
            && answered_digests(&net.bootstrap, &node).await == want
        {
            assert!(s.turn_ms.samples > 0 && s.turn_max_ms > 0.0, "turns timed");
            assert!(!s.turn_max_kind.is_empty(), "the longest turn is named");
            assert!(
                s.turn_slow_kinds.values().sum::<u64>() >= 1,
                "the slowest turns are counted: {:?}",
                s.turn_slow_kinds
            );
            if s.ledger_epoch == epoch {
                assert_eq!(
                    s.digests_inline, inline,
                    "an epoch's digest was computed on the event loop again"
                );
            }
            break;
        }
        assert!(
            t0.elapsed() < T,
            "the node's answers never showed its books: {} receipts",
            ledger.len()
        );
        // Until a receipt comes or a refresh of the digests ends.
        let (held, off) = (s.ledger_receipts, s.digests_off_loop);
        wait_for(&node, T, |s| {
            s.ledger_receipts != held || s.digests_off_loop > off
        })
        .await
        .expect("more receipts or digests refreshed");
    }
    node.shutdown().await.expect("stops");
}

/// Big books reopened: the digest cache starts empty, and every epoch's digest is computed in
/// one job off the event loop. A peer that asks meanwhile is told to wait, the peers' digests
/// that come meanwhile are compared once the job is back: no digest is computed on the event
/// loop, and a node that catches up from the reopened one gets every epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reopened_big_books_compute_their_digests_off_the_event_loop() {
    let (net, service) = one_second_epochs().await;
    let n = 4u32;
    for i in 0..n {
        service.submit(ask(200 + i)).await.expect("work");
    }
    wait_for(&service, T, |s| s.ledger_receipts == n as usize)
        .await
        .expect("the service holds its receipts");
    let want = digests(&service).await;
    let dir = tempfile::tempdir().expect("dir");
    let first = stored_node(&net, open_store(dir.path()), false, vec![]).await;
    assert_eq!(digests(&first).await, want, "caught up before the restart");
    first.shutdown().await.expect("stops");

    let mut cfg = net.config(SecretKey::generate().expect("key"));
    cfg.store = Some(open_store(dir.path()));
    cfg.tuning.inline_digest_below = 0;
    let big = net::spawn(cfg).await.expect("reopens");
    big.wait_synced(T).await.expect("syncs");
    let addrs = big.listen_addrs(T).await.expect("its addresses");
    let dir2 = tempfile::tempdir().expect("dir");
    let third = stored_node(&net, open_store(dir2.path()), false, addrs).await;
    assert_eq!(
        digests(&third).await,
        want,
        "caught up from the reopened node"
    );
    let s = big.stats();
    assert_eq!(
        s.digests_inline, 0,
        "a digest was computed on the event loop of reopened big books"
    );
    assert!(
        s.digests_off_loop >= want.len() as u64,
        "{} digests off the loop for {} epochs",
        s.digests_off_loop,
        want.len()
    );
    third.shutdown().await.expect("stops");
    big.shutdown().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_any_k_minus_1_of_a_receipts_k_holders_loses_nothing() {
    let k = net::DEFAULT_REPLICATION.get();
    assert_eq!(k, 3, "the test builds k = 3 holders");
    for survivor in 0..k {
        let mut net = LocalNet::start(LocalOptions {
            workers: 1,
            discovery: true,
            ..LocalOptions::default()
        })
        .await
        .expect("network starts");
        let service = net.service_node().await.expect("service node");
        // The holders' events, from before the first receipt: a record kept wakes the wait
        // below, and each one is told.
        let mut told: Vec<net::EventStream> = [&net.bootstrap, &net.workers[0], &service]
            .iter()
            .map(|h| h.events())
            .collect();
        let mut ids = Vec::new();
        for i in 0..3 {
            service.submit(ask(100 + i)).await.expect("work");
        }
        let (ledger, _) = service.ledger().await.expect("ledger");
        ids.extend(ledger.counted().map(|r| r.id()));
        assert_eq!(ids.len(), 3);

        // The k holders: the bootstrap, the worker and the service each hold every receipt,
        // in their ledger and as a DHT record.
        let dir = tempfile::tempdir().expect("dir");
        let mut newcomer_cfg = net.config(SecretKey::generate().expect("key"));
        newcomer_cfg.store = Some(open_store(dir.path()));
        newcomer_cfg.genesis.bootstrap = vec![];
        let worker = net.workers.remove(0);
        let mut holders = vec![net.bootstrap, worker, service];
        let deadline = tokio::time::Instant::now() + T;
        for h in &holders {
            wait_for(h, T, |s| s.ledger_receipts == 3)
                .await
                .expect("every holder's books take the receipts");
        }
        loop {
            let mut all = true;
            for h in &holders {
                for id in &ids {
                    all &= h.dht_receipt(*id, false).await.expect("dht").is_some();
                }
            }
            if all {
                break;
            }
            let woke = tokio::time::timeout_at(deadline, next_kept(&mut told)).await;
            assert!(
                woke.is_ok_and(|open| open),
                "receipts never reached all {k} holders"
            );
        }
        // The bootstrap and the worker took each receipt as a record the service put, and
        // said so.
        for (name, stream) in ["bootstrap", "worker"].iter().zip(&mut told) {
            let mut kept = std::collections::HashSet::new();
            while let Some(Some(e)) = stream.next().now_or_never() {
                if let Ok(Event::RecordKept { receipt }) = e {
                    kept.insert(receipt);
                }
            }
            assert!(
                ids.iter().all(|id| kept.contains(id)),
                "the {name} told {} of the 3 records it keeps",
                kept.len()
            );
        }
        let want = digests(&holders[survivor]).await;

        // Lose the other k−1.
        let kept = holders.remove(survivor);
        for h in holders {
            h.shutdown().await.expect("stops");
        }
        newcomer_cfg.dial = kept.listen_addrs(T).await.expect("addr");
        let newcomer = net::spawn(newcomer_cfg).await.expect("newcomer starts");
        newcomer.wait_synced(T).await.expect("newcomer syncs");
        assert_eq!(
            digests(&newcomer).await,
            want,
            "survivor {survivor}: books recovered"
        );
        for id in &ids {
            let found = newcomer.dht_receipt(*id, true).await.expect("lookup");
            assert_eq!(
                found.map(|r| r.id()),
                Some(*id),
                "survivor {survivor}: {id} in the DHT"
            );
        }
        newcomer.shutdown().await.expect("stops");
        kept.shutdown().await.expect("stops");
    }
}

/// A receipt for a request `service` signed, answered by `worker`.
fn receipt(
    service: &SecretKey,
    worker: &SecretKey,
    i: u32,
    d: Difficulty,
    created: u64,
    accepted: u64,
    net: &dpow_protocol::NetworkId,
) -> Signed<Receipt> {
    let req = Signed::sign(
        WorkRequest {
            service: service.public(),
            root: root(i),
            difficulty: d,
            kind: None,
            account: None,
            nonce: u64::from(i),
            created_ms: created,
            expires_ms: created + 30_000,
            priority: Priority::Normal,
            node: dpow_keys::PublicKey([7; 32]),
        },
        service,
        net,
    )
    .expect("request");
    let work = (0u64..)
        .map(Work)
        .find(|w| dpow_protocol::work_value(&root(i), *w) >= d)
        .expect("work");
    let res = Signed::sign(
        WorkResult {
            request: req.id(),
            root: root(i),
            work,
            worker: worker.public(),
            payout: None,
        },
        worker,
        net,
    )
    .expect("result");
    Signed::sign(
        Receipt {
            price: Credits::price(d),
            request: req,
            result: res,
            accepted_ms: accepted,
        },
        service,
        net,
    )
    .expect("receipt")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_receipts_are_refused_at_the_first_hop_and_never_stored() {
    let net = LocalNet::start(LocalOptions {
        workers: 1,
        max_penalties: 100,
        ..LocalOptions::default()
    })
    .await
    .expect("network starts");
    let bad = net::spawn(net.config(SecretKey::generate().expect("key")))
        .await
        .expect("attacker");
    bad.wait_synced(T).await.expect("synced");
    let boot = &net.bootstrap;
    let d = net.genesis.profile.threshold(BlockKind::Receive);
    let now = now_ms();
    let worker = SecretKey::generate().expect("key");
    let stranger = SecretKey::generate().expect("key");

    let genuine = receipt(&net.service, &worker, 1, d, now, now + 10, &net.genesis.id);
    let mut flipped = genuine.bytes().to_vec();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "undecodable",
            genuine.bytes()[..genuine.bytes().len() / 2].to_vec(),
        ),
        ("bad_signature", flipped),
        (
            "unknown_service",
            receipt(&stranger, &worker, 2, d, now, now + 10, &net.genesis.id)
                .bytes()
                .to_vec(),
        ),
        (
            "not_yet_valid",
            receipt(
                &net.service,
                &worker,
                3,
                d,
                now,
                now + 3_600_000,
                &net.genesis.id,
            )
            .bytes()
            .to_vec(),
        ),
        (
            "expired",
            receipt(
                &net.service,
                &worker,
                4,
                d,
                now - 120_000,
                now,
                &net.genesis.id,
            )
            .bytes()
            .to_vec(),
        ),
        // Last: its penalty brings the attacker's gossip score to the graylist.
        (
            "difficulty_out_of_profile",
            receipt(
                &net.service,
                &worker,
                5,
                Difficulty(1),
                now,
                now + 10,
                &net.genesis.id,
            )
            .bytes()
            .to_vec(),
        ),
    ];
    // Each refusal as the bootstrap tells it: the attacker named, and the reason.
    let mut told = boot.events();
    for (reason, bytes) in cases {
        let before = boot.stats().rejected.get(reason).copied().unwrap_or(0);
        bad.publish_raw(Topic::Receipts, bytes)
            .await
            .expect("published");
        told.wait_for(T, |e| match e {
            Event::Refused {
                peer, reason: r, ..
            } if *peer == bad.peer_id() && r.as_str() == reason => Some(()),
            _ => None,
        })
        .await
        .unwrap_or_else(|| panic!("{reason}: not refused as that"));
        // Counted by the time it is told.
        assert!(
            boot.stats().rejected.get(reason).copied().unwrap_or(0) > before,
            "{reason}"
        );
    }
    // The genuine one (from a peer in good standing) is taken, stored and spread.
    let honest = net::spawn(net.config(SecretKey::generate().expect("key")))
        .await
        .expect("honest peer");
    honest.wait_synced(T).await.expect("synced");
    honest.wait_for_peers(1, T).await.expect("peer");
    honest
        .publish_raw(Topic::Receipts, genuine.bytes().to_vec())
        .await
        .expect("published");
    net.wait_all(T, |s| s.ledger_receipts == 1)
        .await
        .expect("the genuine receipt spreads");
    // Nothing of the attacker's can still arrive: without discovery every node dials the
    // bootstrap alone, so the workers hear the attacker only through the bootstrap, which
    // judged each bad receipt (waited for above) before the honest peer even started; and
    // whatever the bootstrap forwarded before the genuine receipt reached the workers before
    // it (gossip keeps order on a connection).
    for w in &net.workers {
        assert_eq!(
            w.stats().connected_peers,
            1,
            "a worker's one peer is the bootstrap"
        );
    }
    for n in std::iter::once(boot).chain(&net.workers) {
        let (ledger, _) = n.ledger().await.expect("ledger");
        assert_eq!(ledger.len(), 1, "only the genuine receipt is held");
        assert!(ledger.get(&genuine.id()).is_some());
    }
    let penalties = boot.stats().rejected.values().sum::<u64>();
    assert!(penalties >= 6, "every bad receipt was counted: {penalties}");
}

fn ledger_count(http: &str) -> Option<u64> {
    dpow_testnet::procs::http_get_json(&format!("{http}/api/stats"))
        .ok()
        .and_then(|v| v["ledger_receipts"].as_u64())
}

/// Start the `victim` node process (data in `dir/victim`) on `genesis`.
async fn start_victim(dpow: &Path, dir: &Path, genesis: &Path) -> NodeProc {
    let (dpow, dir, genesis) = (dpow.to_path_buf(), dir.to_path_buf(), genesis.to_path_buf());
    tokio::task::spawn_blocking(move || {
        dpow_testnet::procs::start_node(&dpow, &dir, "victim", "ledger", &genesis, &[])
    })
    .await
    .expect("join")
    .expect("the node process starts")
}

/// SIGKILL a node process and reap it.
fn stop(p: &mut NodeProc) {
    p.child.kill().expect("SIGKILL");
    p.child.wait().expect("reaped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_while_ingesting_loses_no_acknowledged_receipt() {
    let dpow = dpow_testnet::procs::dpow_binary().expect("dpow");
    let net = LocalNet::start(LocalOptions {
        workers: 1,
        ..LocalOptions::default()
    })
    .await
    .expect("network starts");
    let service = Arc::new(net.service_node().await.expect("service node"));
    let dir = tempfile::tempdir().expect("dir");
    let online = dir.path().join("genesis.toml");
    net.write_genesis(&online, true).expect("genesis");
    let offline = dir.path().join("genesis-alone.toml");
    net.write_genesis(&offline, false).expect("genesis");

    // Receipts keep coming while the child ingests them.
    let producing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let producer = {
        let (service, producing) = (service.clone(), producing.clone());
        tokio::spawn(async move {
            let mut i = 1000;
            while producing.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = service.submit(ask(i)).await;
                i += 1;
            }
        })
    };
    let mut child = start_victim(&dpow, dir.path(), &online).await;

    // Watch what the child acknowledges (its statistics show only receipts on disk), then
    // kill it mid-stream.
    let mut acked = 0;
    tokio::task::block_in_place(|| {
        dpow_testnet::procs::wait_on(&child.http, "the child to ingest receipts", T, || {
            acked = acked.max(ledger_count(&child.http).unwrap_or(0));
            acked >= 40
        })
    })
    .unwrap_or_else(|e| panic!("{e}: {acked} acknowledged"));
    acked = acked.max(ledger_count(&child.http).unwrap_or(0));
    stop(&mut child); // SIGKILL

    // Restarted with no peers: everything acknowledged is there, from disk alone.
    let mut alone = start_victim(&dpow, dir.path(), &offline).await;
    // It has no peer, so whatever it holds came from its own disk.
    let mut after = 0;
    // A timeout is the failure the assertion below reports.
    let _ = tokio::task::block_in_place(|| {
        dpow_testnet::procs::wait_on(
            &alone.http,
            "the books read back",
            Duration::from_secs(10),
            || {
                after = ledger_count(&alone.http).unwrap_or(0);
                after >= acked
            },
        )
    });
    assert!(
        after >= acked,
        "acknowledged {acked} receipts before the kill, {after} after the restart"
    );
    stop(&mut alone);

    // Back online, it converges to its peers' books.
    producing.store(false, std::sync::atomic::Ordering::Relaxed);
    producer.await.expect("producer");
    let mut back = start_victim(&dpow, dir.path(), &online).await;
    let converged = || {
        let v =
            dpow_testnet::procs::http_get_json(&format!("{}/api/stats", back.http)).expect("stats");
        let want = service.stats();
        v["ledger_digest"].as_str() == Some(want.ledger_digest.as_str())
            && v["ledger_receipts"].as_u64() == Some(want.ledger_receipts as u64)
    };
    tokio::task::block_in_place(|| {
        dpow_testnet::procs::wait_on(&back.http, "the child to converge", T, converged)
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}: child {:?}, service {} receipts",
            ledger_count(&back.http),
            service.stats().ledger_receipts
        )
    });
    stop(&mut back);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_refuses_a_service_whose_credits_are_spent_until_it_gets_more() {
    use dpow_protocol::RegistryAction;
    let net = LocalNet::start(LocalOptions {
        workers: 1,
        register_service: false,
        flow: dpow_testnet::local::FlowConfig {
            exhausted: dpow_protocol::flow::ExhaustedPolicy::Refuse,
            ..Default::default()
        },
        ..LocalOptions::default()
    })
    .await
    .expect("network starts");
    let grant = |credits: u64| RegistryAction::GrantCredits {
        service: net.service.public(),
        credits: Credits(credits),
    };
    net.bootstrap
        .registry(
            RegistryAction::RegisterService {
                service: net.service.public(),
                name: "one credit".into(),
            },
            net.registrar.clone(),
        )
        .await
        .expect("register");
    // One credit: exactly one receive-difficulty request (price 1).
    net.bootstrap
        .registry(grant(1), net.registrar.clone())
        .await
        .expect("grant");
    net.wait_all(T, |s| s.registry_entries >= 2)
        .await
        .expect("entries spread");
    let service = net.service_node().await.expect("service node");
    service.submit(ask(1)).await.expect("paid from the credit");
    wait_for(&net.workers[0], T, |s| s.ledger_receipts == 1)
        .await
        .expect("the worker holds the receipt");
    // The worker learns the balance at its next statistics rebuild (twice a second).
    wait_for(&net.workers[0], T, |s| s.exhausted_services == 1)
        .await
        .expect("the worker sees the service's credits spent");
    let refused = service
        .submit(WorkAsk {
            lifetime: Duration::from_secs(2),
            ..ask(2)
        })
        .await;
    assert!(
        matches!(refused, Err(net::SubmitError::Expired)),
        "a spent service is refused: {refused:?}"
    );
    net.bootstrap
        .registry(grant(10), net.registrar.clone())
        .await
        .expect("grant more");
    wait_for(&net.workers[0], T, |s| s.registry_entries >= 3)
        .await
        .expect("the grant reaches the worker");
    wait_for(&net.workers[0], T, |s| s.exhausted_services == 0)
        .await
        .expect("the worker sees the new credits");
    service
        .submit(ask(3))
        .await
        .expect("served again once credits are granted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn catch_up_pages_through_an_epoch_larger_than_one_answer() {
    let net = LocalNet::start(LocalOptions {
        workers: 0,
        ..LocalOptions::default()
    })
    .await
    .expect("network starts");
    let publisher = net::spawn(net.config(SecretKey::generate().expect("key")))
        .await
        .expect("publisher");
    publisher.wait_synced(T).await.expect("synced");
    publisher.wait_for_peers(1, T).await.expect("peer");
    // More receipts in one epoch than one `Ids` answer carries (4096), and than eight
    // `Fetch` requests (512 each).
    let n = 4500u32;
    // The profile's easiest difficulty (256 expected hashes), so making them is quick.
    let d = net.genesis.profile.min;
    let worker = SecretKey::generate().expect("key");
    let now = now_ms();
    // In chunks the bootstrap has taken before the next goes out: a node verifies at most
    // 256 messages from one peer at a time and drops the rest as busy.
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        for i in chunk {
            let r = receipt(
                &net.service,
                &worker,
                10_000 + i,
                d,
                now,
                now + 10,
                &net.genesis.id,
            );
            publisher
                .publish_raw(Topic::Receipts, r.bytes().to_vec())
                .await
                .expect("published");
        }
        let sent = chunk[chunk.len() - 1] as usize + 1;
        wait_for(&net.bootstrap, Duration::from_secs(60), |s| {
            s.ledger_receipts >= sent
        })
        .await
        .expect("the bootstrap takes the chunk");
    }
    wait_for(&net.bootstrap, Duration::from_secs(60), |s| {
        s.ledger_receipts == n as usize
    })
    .await
    .expect("the bootstrap holds them all");
    let want = digests(&net.bootstrap).await;
    assert_eq!(want.len(), 1, "one epoch");

    let dir = tempfile::tempdir().expect("dir");
    let late = stored_node(&net, open_store(dir.path()), false, vec![]).await;
    assert_eq!(digests(&late).await, want, "every page was fetched");
    late.shutdown().await.expect("stops");
}
