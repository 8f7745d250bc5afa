//! Money among strangers, on loopback: closed books stay closed, and a service that takes
//! work without paying is noticed. (The front-running relay that earns nothing is a case of
//! the attack suite: `tests/attacks/front_run.rs`.)
//!
//! - A receipt backdated into a final epoch is refused by every node, and the epoch's digest
//!   stays the registrar's checkpointed one; a node that joins later still catches up on the
//!   closed epoch, vouched for by the checkpoint; a light ledger that joins keeps it as the
//!   checkpoint alone.
//! - A service node that signs no receipts is counted against by the worker that won, and
//!   past the limit the worker refuses its requests.

use std::time::Duration;

use dpow_keys::{NanoAccount, SecretKey};
use dpow_node::net::{self, NodeHandle, SubmitError, Topic, WorkAsk, WorkerConfig};
use dpow_node::store::{Books, Store};
use dpow_protocol::flow::ExhaustedPolicy;
use dpow_protocol::{
    BlockKind, Checkpoint, Credits, Priority, Receipt, Root, Signed, Work, WorkRequest, WorkResult,
};
use dpow_testnet::local::{LocalNet, LocalOptions, LocalTransport, wait_books, wait_for};

const T: Duration = Duration::from_secs(30);

fn account(key: &SecretKey) -> NanoAccount {
    NanoAccount::from_bytes(key.public().0).expect("not the burn account")
}

fn root(i: u32) -> Root {
    let mut r = [0x3au8; 32];
    r[..4].copy_from_slice(&i.to_be_bytes());
    Root(r)
}

fn ask(i: u32, lifetime: Duration) -> WorkAsk {
    WorkAsk {
        root: root(i),
        difficulty: dpow_protocol::Profile::test().threshold(BlockKind::Receive),
        kind: Some(BlockKind::Receive),
        account: None,
        priority: Priority::Normal,
        lifetime,
    }
}

/// Sign what `node`'s books say about `epoch` as the registrar's checkpoint.
async fn checkpoint(net: &LocalNet, node: &NodeHandle, epoch: u64) -> Signed<Checkpoint> {
    let (books, _) = node.ledger().await.expect("ledger");
    let claims = books.claims_in_epoch(epoch);
    let c = Checkpoint {
        registrar: net.registrar.public(),
        epoch,
        epoch_ms: books.epoch_ms(),
        digest: books.epoch_digest(epoch),
        receipts: books.receipt_ids_in_epoch(epoch).len() as u64,
        credits: claims.accounts.into_iter().collect(),
        unclaimed: claims.unclaimed,
        created_ms: net.clock.now_ms(),
    };
    Signed::sign(c, &net.registrar, &net.genesis.id).expect("sign")
}

/// The epoch length of the networks whose epochs these tests close.
const EPOCH_MS: u64 = 2_000;

/// A network on the memory transport with `workers` workers and short epochs, final soon
/// after they end.
async fn short_epochs(workers: usize) -> LocalNet {
    LocalNet::start(LocalOptions {
        transport: LocalTransport::Memory,
        workers,
        epoch_ms: EPOCH_MS,
        max_lifetime_ms: 1_500,
        grace_ms: 300,
        ..LocalOptions::default()
    })
    .await
    .expect("network starts")
}

/// Make `epoch` final: the network's clock moves past its finality instead of the test
/// waiting for it.
fn close_epoch(net: &LocalNet, epoch: u64) {
    let wait = net
        .genesis
        .finality
        .final_at(epoch)
        .saturating_sub(net.clock.now_ms());
    net.clock.advance(Duration::from_millis(wait + 50));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receipt_backdated_into_a_final_epoch_is_refused_everywhere() {
    let mut net = short_epochs(2).await;
    let service = net.service_node().await.expect("service node");
    wait_for(&service, T, |s| s.live_workers >= 2)
        .await
        .expect("workers heard");
    for i in 0..4 {
        service
            .submit(ask(100 + i, Duration::from_millis(1_200)))
            .await
            .expect("work");
    }
    let (books, _) = service.ledger().await.expect("ledger");
    let epoch = books.epochs().last().expect("an epoch with receipts").0;
    // Every node holds the receipts before the epoch closes (one still on its way after that
    // would be refused as late, and the digests would differ).
    let n = books.len();
    for node in net.workers.iter().chain([&net.bootstrap]) {
        wait_for(node, T, |s| s.ledger_receipts >= n)
            .await
            .expect("every node holds the receipts");
    }
    close_epoch(&net, epoch);
    let (books, _) = service.ledger().await.expect("ledger");
    let held = books.receipt_ids_in_epoch(epoch).len();
    assert!(held > 0, "the epoch holds receipts");

    let cp = checkpoint(&net, &service, epoch).await;
    let digest = cp.payload().digest;
    let everyone: Vec<&NodeHandle> = net
        .workers
        .iter()
        .chain([&service, &net.bootstrap])
        .collect();
    // Each node tells when it keeps the checkpoint, and that its books match it.
    let mut told: Vec<_> = everyone.iter().map(|n| n.events()).collect();
    net.bootstrap
        .publish_checkpoint(cp.bytes().to_vec())
        .await
        .expect("checkpoint published");
    for (node, events) in everyone.iter().zip(&mut told) {
        let matches = events
            .wait_for(T, |e| match e {
                net::Event::Checkpoint {
                    epoch: e, matches, ..
                } if *e == epoch => Some(*matches),
                _ => None,
            })
            .await
            .expect("every node keeps the checkpoint");
        assert!(matches, "every node's books match the checkpoint");
        assert_eq!(node.checkpoints().await.expect("checkpoints").len(), 1);
    }

    // The service signs a receipt dated inside the closed epoch.
    let created = epoch * EPOCH_MS + 100;
    let req = Signed::sign(
        WorkRequest {
            service: net.service.public(),
            root: root(999),
            difficulty: dpow_protocol::Profile::test().threshold(BlockKind::Receive),
            kind: Some(BlockKind::Receive),
            account: None,
            nonce: 7,
            created_ms: created,
            expires_ms: created + 1_000,
            priority: Priority::Normal,
            node: net.service.public(),
        },
        &net.service,
        &net.genesis.id,
    )
    .expect("request");
    let d = req.payload().difficulty;
    let work = (0u64..)
        .map(Work)
        .find(|w| dpow_protocol::work_value(&root(999), *w) >= d)
        .expect("work");
    let worker = SecretKey::generate().expect("key");
    let res = Signed::sign(
        WorkResult {
            request: req.id(),
            root: root(999),
            work,
            worker: worker.public(),
            payout: Some(account(&worker)),
        },
        &worker,
        &net.genesis.id,
    )
    .expect("result");
    let late = Signed::sign(
        Receipt {
            price: Credits::price(d),
            request: req,
            result: res,
            accepted_ms: created + 200,
        },
        &net.service,
        &net.genesis.id,
    )
    .expect("receipt");
    // The bootstrap, which every node is connected to, sends it to each of them.
    net.bootstrap
        .publish_raw(Topic::Receipts, late.bytes().to_vec())
        .await
        .expect("published");
    let others: Vec<&NodeHandle> = net.workers.iter().chain([&service]).collect();
    for node in &others {
        wait_for(node, T, |s| s.rejected_for("final_epoch") >= 1)
            .await
            .expect("every node refuses the backdated receipt as final");
    }
    for node in &everyone {
        let (l, _) = node.ledger().await.expect("ledger");
        assert!(
            l.get(&late.id()).is_none(),
            "a node took the backdated receipt"
        );
        assert_eq!(
            l.epoch_digest(epoch),
            digest,
            "the checkpointed digest moved"
        );
    }

    // A node that joins now catches up on the closed epoch: its list matches the checkpoint.
    net.add_worker().await.expect("late worker");
    let late_node = net.workers.last().expect("late worker");
    let caught_up = wait_books(late_node, T, |l, _| {
        (l.epoch_digest(epoch) == digest).then(|| l.receipt_ids_in_epoch(epoch).len())
    })
    .await
    .expect("the late node catches up on the closed epoch");
    assert_eq!(caught_up, held);

    // A light ledger that joins now keeps the closed epoch as the checkpoint alone: the
    // same digest and payout, none of its receipts fetched.
    let dir = tempfile::tempdir().expect("dir");
    let store = std::sync::Arc::new(Store::open(&dir.path().join("db")).expect("store opens"));
    let mut cfg = net.config(SecretKey::generate().expect("key"));
    cfg.store = Some(store.clone());
    cfg.tuning.adopt_checkpoints = true;
    let light = net::spawn(cfg).await.expect("light node starts");
    light.wait_synced(T).await.expect("light node syncs");
    wait_for(&light, T, |s| s.epochs_adopted >= 1)
        .await
        .expect("the light node adopts the checkpointed epoch");
    let books = Books::open(store, EPOCH_MS, net.genesis.id).expect("books open");
    let kept = books
        .pruned_epoch(epoch)
        .expect("books read")
        .expect("the closed epoch is held as its checkpoint");
    assert!(kept.adopted);
    assert_eq!(kept.receipts, held as u64);
    assert_eq!(books.epoch_digest(epoch).expect("digest"), digest);
    assert!(
        books.receipt_ids_in_epoch(epoch).expect("ids").is_empty(),
        "a receipt of the adopted epoch was fetched"
    );
    let claims = books.claims_in_epoch(epoch).expect("claims");
    assert_eq!(claims.unclaimed, cp.payload().unclaimed);
    assert_eq!(
        claims.accounts.into_iter().collect::<Vec<_>>(),
        cp.payload().credits
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_that_signs_no_receipts_is_counted_and_then_refused() {
    // Discovery on, so the worker delivers to the service node directly and hears its word.
    let net = LocalNet::start(LocalOptions {
        transport: LocalTransport::Memory,
        workers: 0,
        discovery: true,
        flow: dpow_protocol::flow::FlowConfig {
            exhausted: ExhaustedPolicy::Refuse,
            ..Default::default()
        },
        ..LocalOptions::default()
    })
    .await
    .expect("network starts");
    // One worker that gives up on a receipt quickly.
    let key = SecretKey::generate().expect("key");
    let mut cfg = net.config(key.clone());
    cfg.tuning.receipt_wait = Duration::from_millis(300);
    cfg.tuning.unreceipted_limit = 2;
    cfg.worker = Some(WorkerConfig {
        solver: Box::new(dpow_solver::CpuSolver::new(1).expect("cpu")),
        payout: Some(account(&key)),
        rate: Some(20_000_000),
    });
    let worker = net::spawn(cfg).await.expect("worker starts");
    worker.wait_synced(T).await.expect("worker syncs");
    // The dishonest service node.
    let mut cfg = net.config(SecretKey::generate().expect("key"));
    cfg.service_key = Some(net.service.clone());
    cfg.tuning.withhold_receipts = true;
    let service = net::spawn(cfg).await.expect("service starts");
    service.wait_synced(T).await.expect("service syncs");
    // The worker knows where the service node listens (as the DHT would tell it).
    let addr = service
        .listen_addrs(T)
        .await
        .expect("service listens")
        .into_iter()
        .next()
        .expect("an address");
    worker.dial(addr).await.expect("dial");
    wait_for(&service, T, |s| s.live_workers >= 1)
        .await
        .expect("the worker is heard");

    for i in 0..2 {
        service
            .submit(ask(200 + i, Duration::from_secs(10)))
            .await
            .expect("the worker serves the service at first");
    }
    let svc = net.service.public().to_string();
    wait_for(&worker, T, |s| {
        s.unreceipted_wins.get(&svc).copied().unwrap_or(0) >= 2
    })
    .await
    .expect("the worker counts its unreceipted wins");
    let row = worker.stats();
    assert_eq!(row.unreceipted_wins.get(&svc), Some(&2), "{row:?}");
    let (ledger, _) = worker.ledger().await.expect("ledger");
    assert_eq!(ledger.len(), 0, "no receipt was ever signed");

    // Past the limit, the worker refuses the service's requests: they expire unanswered.
    match service.submit(ask(300, Duration::from_millis(1_500))).await {
        Err(SubmitError::Expired) => {}
        other => panic!("expected the request to go unanswered, got {other:?}"),
    }
    assert_eq!(worker.stats().solved, 2, "nothing more was solved for it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_checkpoint_published_through_a_node_is_still_held_after_its_restart() {
    let net = short_epochs(0).await;
    let dir = tempfile::tempdir().expect("dir");
    let store = std::sync::Arc::new(Store::open(&dir.path().join("db")).expect("store opens"));
    let config = || {
        let mut cfg = net.config(SecretKey::generate().expect("key"));
        cfg.store = Some(store.clone());
        cfg
    };
    let node = net::spawn(config()).await.expect("node starts");
    let epoch = net.clock.now_ms() / EPOCH_MS;
    close_epoch(&net, epoch);
    let cp = checkpoint(&net, &node, epoch).await;
    let mut events = node.events();
    node.publish_checkpoint(cp.bytes().to_vec())
        .await
        .expect("checkpoint published");
    events
        .wait_for(T, |e| {
            matches!(e, net::Event::Checkpoint { epoch: e, .. } if *e == epoch).then_some(())
        })
        .await
        .expect("the node keeps the checkpoint it published");
    node.shutdown().await.expect("stops");

    // Started again on the same store, with no peer to hear it from: it offers it still.
    let mut cfg = config();
    cfg.genesis.bootstrap = vec![];
    let again = net::spawn(cfg).await.expect("node starts again");
    let held = again.checkpoints().await.expect("checkpoints");
    assert_eq!(
        held.iter().map(|c| c.bytes()).collect::<Vec<_>>(),
        vec![cp.bytes()],
        "the published checkpoint, from its own disk"
    );
    again.shutdown().await.expect("stops");
}
