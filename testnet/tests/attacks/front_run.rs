//! The front-running relay (from the money issue): a node on the path of every message, with
//! a worker key that "solves" by replaying nonces already paid, re-signs every result it sees
//! under its own key and publishes the copies. It earns nothing: a service node takes the
//! first valid result for a request and refuses the rest as answered, a paid nonce is refused
//! as a replay, and every receipt names the honest worker that found the work.
//!
//! Honest latency is measured on the same network before the thief joins and while it works.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dpow_keys::{NanoAccount, PublicKey, SecretKey};
use dpow_node::net::{self, NodeHandle, Topic, WorkAsk, WorkerConfig};
use dpow_protocol::{Difficulty, Receipt, Root, Signed, Work, WorkResult};
use dpow_solver::{Control, SolveError, Solver};
use dpow_testnet::local::{LocalNet, LocalOptions, LocalTransport, wait_for};

use super::common::{figure, honest_ask, honest_load, mib, p50_p99, rss_bytes};

const T: Duration = Duration::from_secs(30);

fn account(key: &SecretKey) -> NanoAccount {
    NanoAccount::from_bytes(key.public().0).expect("not the burn account")
}

/// The `i`th root of the rounds, asked again in the second.
fn ask(i: u32, lifetime: Duration) -> WorkAsk {
    WorkAsk {
        lifetime,
        ..honest_ask(0x3a, i)
    }
}

/// A node's key, from its statistics.
fn key_of(node: &NodeHandle) -> PublicKey {
    node.stats().account.parse().expect("a node key")
}

/// A worker that does no work: it answers at once with a nonce it saw paid for the same root,
/// and otherwise waits until told to stop.
struct Replayer {
    seen: Arc<Mutex<HashMap<Root, Work>>>,
    tries: Arc<Mutex<u64>>,
}

impl Solver for Replayer {
    fn name(&self) -> String {
        "replayer".into()
    }

    fn solve(
        &self,
        root: &Root,
        _difficulty: Difficulty,
        control: &Control,
    ) -> Result<Option<Work>, SolveError> {
        loop {
            let known = self
                .seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(root)
                .copied();
            if let Some(w) = known {
                *self
                    .tries
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) += 1;
                return Ok(Some(w));
            }
            if control.is_cancelled() {
                return Ok(None);
            }
            // A solver polls its cancel flag; this one has nothing else to do.
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Re-sign, under `thief`, every result found in the receipts `node` holds, and publish the
/// copies and the originals again. Returns how many it sent.
async fn front_run(
    node: &NodeHandle,
    thief: &SecretKey,
    seen: &Arc<Mutex<HashMap<Root, Work>>>,
    done: &mut HashSet<dpow_protocol::MessageId>,
    net: &dpow_protocol::NetworkId,
) -> usize {
    let Ok((ledger, _)) = node.ledger().await else {
        return 0;
    };
    let mut sent = 0;
    for r in ledger.counted() {
        if !done.insert(r.id()) {
            continue;
        }
        let p = r.payload();
        let res = p.result.payload();
        seen.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(res.root, res.work);
        let stolen = WorkResult {
            request: p.request.id(),
            root: res.root,
            work: res.work,
            worker: thief.public(),
            payout: Some(account(thief)),
        };
        let signed = Signed::sign(stolen, thief, net).expect("sign");
        for bytes in [signed.bytes().to_vec(), p.result.bytes().to_vec()] {
            if node.publish_raw(Topic::Results, bytes).await.is_ok() {
                sent += 1;
            }
        }
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_front_running_relay_earns_nothing_and_honest_workers_keep_every_credit() {
    // Discovery on: workers find the service node's addresses through the DHT and deliver to
    // it directly, as on a real network.
    let net = LocalNet::start(LocalOptions {
        transport: LocalTransport::Memory,
        workers: 2,
        discovery: true,
        // Every worker a primary of every request: with standings the thief, holding no
        // receipt, would only ever be a late backup, and by rendezvous alone it would miss all
        // six repeated roots one run in eleven; this test is about what stops it when it
        // does replay a nonce.
        flow: dpow_testnet::local::FlowConfig {
            probation_receipts: 0,
            min_primaries: 3,
            ..Default::default()
        },
        ..LocalOptions::default()
    })
    .await
    .expect("network starts");
    let honest: Vec<PublicKey> = net.workers.iter().map(key_of).collect();
    let service = net.service_node().await.expect("service node");
    wait_for(&service, T, |s| s.live_workers >= 2)
        .await
        .expect("the service hears of the honest workers");
    // The same number of requests as the two rounds below, before the thief joins.
    let quiet = honest_load(&service, 12, 0x01).await;
    let rss_before = rss_bytes();

    // The thief: a node on the path of every message, with a worker key that "solves" by
    // replaying paid nonces.
    let thief = SecretKey::generate().expect("key");
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let tries = Arc::new(Mutex::new(0u64));
    let mut cfg = net.config(thief.clone());
    cfg.worker = Some(WorkerConfig {
        solver: Box::new(Replayer {
            seen: seen.clone(),
            tries: tries.clone(),
        }),
        payout: Some(account(&thief)),
        rate: Some(20_000_000),
    });
    let relay = net::spawn(cfg).await.expect("thief starts");
    relay.wait_synced(T).await.expect("thief syncs");
    wait_for(&service, T, |s| s.live_workers >= 3)
        .await
        .expect("the service hears of every worker");

    // Round one: fresh roots. Round two: the same roots again, so that paid nonces are valid
    // work for the new requests and replaying them is tempting.
    let mut done = HashSet::new();
    let mut sent = 0;
    let n = 6u32;
    let mut during = Vec::new();
    for round in 0..2 {
        for i in 0..n {
            let t0 = std::time::Instant::now();
            let answer = service
                .submit(ask(i, Duration::from_secs(20)))
                .await
                .unwrap_or_else(|e| panic!("round {round} request {i}: {e}"));
            during.push(t0.elapsed());
            assert!(
                honest.contains(&answer.worker),
                "round {round} request {i} answered by {} (not an honest worker)",
                answer.worker
            );
            sent += front_run(&relay, &thief, &seen, &mut done, &net.genesis.id).await;
        }
    }
    sent += front_run(&relay, &thief, &seen, &mut done, &net.genesis.id).await;
    during.sort();
    let rss_after = rss_bytes();
    figure(format_args!(
        "front-running relay: honest {} without the thief, {} with it; {sent} copies \
         published; rss {} -> {} MiB",
        p50_p99(&quiet),
        p50_p99(&during),
        mib(rss_before),
        mib(rss_after)
    ));
    assert!(sent > 0, "the thief published its copies");
    assert!(
        *tries.lock().expect("lock") > 0,
        "the thief replayed paid nonces for the repeated roots"
    );

    let (ledger, _) = service.ledger().await.expect("ledger");
    let receipts: Vec<&Signed<Receipt>> = ledger.counted().collect();
    assert_eq!(
        receipts.len(),
        quiet.len() + 2 * n as usize,
        "one receipt per request"
    );
    assert_eq!(
        ledger.earned(&thief.public()),
        0,
        "the thief earned nothing"
    );
    let total: u128 = receipts
        .iter()
        .map(|r| u128::from(r.payload().price.0))
        .sum();
    let honest_total: u128 = honest.iter().map(|k| ledger.earned(k)).sum();
    assert_eq!(honest_total, total, "every credit went to an honest worker");
    let mut nonces = HashSet::new();
    for r in &receipts {
        let res = r.payload().result.payload();
        assert!(
            nonces.insert((res.root, res.work)),
            "a nonce was paid twice"
        );
        assert_ne!(res.payout, Some(account(&thief)));
    }
    // Results reached the service node directly; every node refused the copies, and none
    // of them holds a receipt naming the thief.
    let s = service.stats();
    assert!(s.results_direct > 0, "no result was delivered directly");
    assert!(
        s.rejected_for("answered") + s.rejected_for("replay") > 0,
        "the service refused the thief's results: {:?}",
        s.rejected
    );
    for node in net.workers.iter().chain([&relay, &net.bootstrap]) {
        let (l, _) = node.ledger().await.expect("ledger");
        assert_eq!(l.earned(&thief.public()), 0);
    }
}
