//! One network: two networks (different genesis) whose registrar, service and worker reuse
//! the same keys. Everything signed on network A and replayed into network B (registry
//! entries, requests, results, statuses, cancels, receipts) is refused by B as a bad signature,
//! and a node of A that dials B is dropped at identify (counted in `peers_wrong_network` by the
//! side that reads the other's identify first).

use std::time::Duration;

use dpow_keys::SecretKey;
use dpow_node::net::{self, NodeStats, Topic, WorkAsk, now_ms};
use dpow_protocol::{
    Difficulty, Priority, RegistryAction, Root, Signed, WorkCancel, WorkRequest, WorkerStatus,
};
use dpow_testnet::local::{LocalKeys, LocalNet, LocalOptions, wait_for, wait_nodes};

use super::common::{Background, figure, honest_load, mib, p50_p99, rss_bytes};

const T: Duration = Duration::from_secs(60);

async fn start(name: &str, keys: &LocalKeys) -> LocalNet {
    LocalNet::start(LocalOptions {
        workers: 1,
        network: name.into(),
        keys: Some(keys.clone()),
        // The replaying node must not be cut off before every replay has been judged.
        max_penalties: 1_000,
        ..LocalOptions::default()
    })
    .await
    .expect("network starts")
}

fn rejected(s: &NodeStats, reason: &str) -> u64 {
    s.rejected.get(reason).copied().unwrap_or(0)
}

/// How B refuses A's messages: most for their signature (the signing input names the
/// network). Some before that, at no signature check: a result or cancel for a request B
/// never had (A's request ids hash A's network in), a receipt whose result names another
/// request than the one it carries (for the same reason), and a worker status no newer
/// than, or too soon after, the one B holds for that key (its own worker's, the same key).
const REFUSALS: [&str; 5] = [
    "bad_signature",
    "unknown_request",
    "undecodable",
    "stale",
    "too_frequent",
];

fn refused(s: &NodeStats) -> u64 {
    REFUSALS.iter().map(|r| rejected(s, r)).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_of_another_network_with_the_same_keys_are_refused_and_its_nodes_dropped() {
    let keys = LocalKeys::generate(1).expect("keys");
    let a = start("net-a", &keys).await;
    let b = start("net-b", &keys).await;
    assert_ne!(a.genesis.id, b.genesis.id);
    assert_eq!(a.registrar.public(), b.registrar.public());

    // Network A at work: one request answered, so A holds a receipt, and a ban entry.
    let service_a = a.service_node().await.expect("service node on A");
    a.wait_all(T, |s| s.live_workers >= 1)
        .await
        .expect("A's worker known");
    let answer = tokio::time::timeout(
        T,
        service_a.submit(WorkAsk {
            root: Root([0x5a; 32]),
            difficulty: Difficulty(0xffff_0000_0000_0000),
            kind: None,
            account: None,
            priority: Priority::Normal,
            lifetime: Duration::from_secs(60),
        }),
    )
    .await
    .expect("answered in time")
    .expect("answered");
    wait_for(&a.bootstrap, T, |s| s.ledger_receipts >= 1)
        .await
        .expect("A's receipt");
    a.bootstrap
        .registry(
            RegistryAction::BanService {
                service: keys.service.public(),
                reason: "only on A".into(),
            },
            keys.registrar.clone(),
        )
        .await
        .expect("A bans its service");
    let entries = a.bootstrap.registry_entries().await.expect("A's entries");
    assert_eq!(entries.len(), 3);
    let (ledger, _) = a.bootstrap.ledger().await.expect("A's ledger");
    let receipt = ledger.counted().next().expect("a receipt").clone();
    assert_eq!(
        receipt.payload().result.payload().work,
        answer.work,
        "the receipt of A's answer"
    );
    // What else the shared keys sign on A: a fresh request, a status, a cancel.
    let now = now_ms();
    let request = Signed::sign(
        WorkRequest {
            service: keys.service.public(),
            root: Root([0x5b; 32]),
            difficulty: Difficulty(0xffff_0000_0000_0000),
            kind: None,
            account: None,
            nonce: 1,
            created_ms: now,
            expires_ms: now + 60_000,
            priority: Priority::Normal,
            node: keys.service.public(),
        },
        &keys.service,
        &a.genesis.id,
    )
    .expect("signs");
    let status = Signed::sign(
        WorkerStatus {
            worker: keys.workers[0].public(),
            hash_rate: 1_000_000_000_000,
            queue: 0,
            payout: None,
            created_ms: now,
        },
        &keys.workers[0],
        &a.genesis.id,
    )
    .expect("signs");
    let cancel = Signed::sign(
        WorkCancel {
            service: keys.service.public(),
            request: request.id(),
            created_ms: now,
        },
        &keys.service,
        &a.genesis.id,
    )
    .expect("signs");

    // B's own service asks for work before and while the replays come.
    let service_b = std::sync::Arc::new(b.service_node().await.expect("service node on B"));
    b.wait_all(T, |s| s.live_workers >= 1)
        .await
        .expect("B's worker known");
    let quiet = honest_load(&service_b, 50, 1).await;
    let before = wait_for(&b.bootstrap, T, |s| s.ledger_receipts >= quiet.len())
        .await
        .expect("B's receipts of the quiet run");
    let rss_before = rss_bytes();
    let load = Background::start(service_b.clone(), 10, 2);

    // Replay all of it into B, each message from a fresh node of B's: gossipsub stops
    // listening to a peer after two invalid messages, and each replay must be judged.
    let mut replays: Vec<(Topic, Vec<u8>)> = entries
        .iter()
        .map(|e| (Topic::Registry, e.bytes().to_vec()))
        .collect();
    replays.extend([
        (Topic::Requests, request.bytes().to_vec()),
        (Topic::Requests, receipt.payload().request.bytes().to_vec()),
        (Topic::Results, receipt.payload().result.bytes().to_vec()),
        (Topic::Status, status.bytes().to_vec()),
        (Topic::Cancels, cancel.bytes().to_vec()),
        (Topic::Receipts, receipt.bytes().to_vec()),
    ]);
    let n = replays.len() as u64;
    for (i, (topic, bytes)) in replays.into_iter().enumerate() {
        let was = refused(&b.bootstrap.stats());
        let replayer = net::spawn(b.config(SecretKey::generate().expect("key")))
            .await
            .expect("replayer starts");
        replayer
            .wait_for_peers(1, T)
            .await
            .expect("replayer connects");
        replayer.wait_synced(T).await.expect("replayer synced");
        replayer.publish_raw(topic, bytes).await.expect("published");
        wait_for(&b.bootstrap, T, |s| refused(s) > was)
            .await
            .unwrap_or_else(|e| panic!("replay {i} ({topic:?}) refused: {e}"));
        replayer.shutdown().await.expect("replayer stops");
    }
    let during = load.stop().await;
    let rss_after = rss_bytes();
    figure(format_args!(
        "networks: B's honest service {} quiet, {} under the replays; rss {} -> {} MiB",
        p50_p99(&quiet),
        p50_p99(&during),
        mib(rss_before),
        mib(rss_after)
    ));
    let honest = during.len();
    // The last receipts reach B's bootstrap before their service node stops.
    let after = wait_for(&b.bootstrap, T, |s| {
        s.ledger_receipts >= before.ledger_receipts + honest
    })
    .await
    .expect("B's receipts of the honest load");
    std::sync::Arc::into_inner(service_b)
        .expect("the load let go of the service node")
        .shutdown()
        .await
        .expect("B's service stops");
    assert_eq!(
        refused(&after),
        refused(&before) + n,
        "{:?}",
        after.rejected
    );
    assert!(
        rejected(&after, "bad_signature") >= rejected(&before, "bad_signature") + 5,
        "registry entries and requests fail on their signatures: {:?}",
        after.rejected
    );
    assert_eq!(after.registry_entries, 2, "A's ban never reaches B");
    assert!(after.service_list.iter().all(|s| !s.banned));
    assert_eq!(
        after.ledger_receipts,
        before.ledger_receipts + honest,
        "no receipt of A's, one per honest request of B's"
    );
    let (ledger_b, _) = b.bootstrap.ledger().await.expect("B's ledger");
    assert!(ledger_b.get(&receipt.id()).is_none(), "A's receipt on B");
    // B's own traffic (its worker's statuses, its service's requests) goes on; none of the
    // replays was accepted.
    let count = |s: &NodeStats, kind: &str| s.accepted.get(kind).copied().unwrap_or(0);
    assert_eq!(
        count(&after, "registry"),
        count(&before, "registry"),
        "registry accepted"
    );
    // The service cancels what it has been answered (the other workers may stop).
    for kind in ["work-request", "work-cancel", "receipt"] {
        assert_eq!(
            count(&after, kind),
            count(&before, kind) + honest as u64,
            "{kind} accepted: B's own only"
        );
    }
    assert!(count(&after, "work-result") <= count(&before, "work-result") + honest as u64);

    // A node of A dialing B: dropped at identify, on both sides, and no connection stays.
    let stray = net::spawn(a.config(SecretKey::generate().expect("key")))
        .await
        .expect("A's node starts");
    stray.wait_for_peers(1, T).await.expect("A's node joins A");
    // B's bootstrap is left with its worker once the replayers are gone.
    wait_for(&b.bootstrap, T, |s| s.connected_peers == 1)
        .await
        .expect("replayers gone");
    stray.dial(b.bootstrap_addr.clone()).await.expect("dials");
    // Whichever side reads the other's identify first closes the connection and counts it
    // (usually B, the dialed side; under load sometimes A's node first).
    let count = || b.bootstrap.stats().peers_wrong_network + stray.stats().peers_wrong_network;
    wait_nodes(&[&b.bootstrap, &stray], T, || (count() >= 1).then_some(())).await;
    let counted = count();
    assert!((1..=2).contains(&counted), "dropped at identify: {counted}");
    wait_for(&b.bootstrap, T, |s| s.connected_peers == 1)
        .await
        .expect("no connection to A's node stays on B");
    wait_for(&stray, T, |s| s.connected_peers == 1)
        .await
        .expect("A's node keeps only A's bootstrap");
}
