//! Garbage and replay floods from peers that are not registered, against a relay that an
//! honest service reaches the network through.
//!
//! Each flood comes from a fresh bare gossipsub peer (nothing checks what it sends on its own
//! side) and goes on until the victim cuts it off or it has sent its quota:
//! - random bytes on every dpow topic: undecodable, penalised; gossipsub's score and the
//!   node's strikes (`max_penalties`) cut the peer off after a few;
//! - well-formed envelopes signed by keys nobody registered (requests of an unknown service,
//!   results for requests nobody made, receipts of an unknown service): ignored, one strike
//!   each, and the peer is blocked once its strikes run out;
//! - well-formed messages whose signature is corrupted (fresh requests of the registered
//!   service, statuses of fresh worker keys): penalised as bad signatures;
//! - replays of the honest request, result and receipt the victim already accepted: gossipsub
//!   drops a message it has seen before (its id is a hash of the bytes) before any check, so
//!   the victim neither judges nor forwards them again.
//!
//! Meanwhile the honest service keeps asking for work through the victim; every request is
//! answered. A bare observer beside the victim counts what the victim forwards.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dpow_keys::SecretKey;
use dpow_node::net::{self, BudgetConfig, NodeHandle, NodeStats, Rate, now_ms};
use dpow_protocol::{
    Credits, Difficulty, Priority, Receipt, Root, Signed, Work, WorkRequest, WorkResult,
    WorkerStatus,
};
use dpow_testnet::local::{LocalNet, LocalOptions, wait_for};
use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, Swarm, gossipsub};

use super::common::{
    Background, Observer, TOPICS, bare_gossip, figure, honest_load, join, mib, p50_p99, rss_bytes,
    service_through,
};

const T: Duration = Duration::from_secs(30);
/// The victim's strikes: ignored messages it takes from one peer before blocking it.
const STRIKES: f64 = 300.0;
/// Messages a flooder may have on the wire when it is blocked, judged all the same.
const IN_FLIGHT: f64 = 32.0;
/// The most any one flood sends.
const QUOTA: u64 = 3_000;
/// Copies of each honest message replayed.
const REPLAYS: u64 = 200;

/// What one flood did, as the attacker saw it.
#[derive(Debug, Default)]
struct Flood {
    /// Messages handed to gossipsub until the attacker saw its connection closed.
    sent: u64,
    cut_off: bool,
    elapsed: Duration,
}

/// Dial `victim`, then publish `make(i)` (topic index, bytes) until cut off or `max` sent
/// (and then, if `expect_cut`, until cut off or `T` has passed).
async fn flood(
    swarm: &mut Swarm<gossipsub::Behaviour>,
    net: &LocalNet,
    victim: &Multiaddr,
    max: u64,
    expect_cut: bool,
    mut make: impl FnMut(u64) -> (usize, Vec<u8>),
) -> Flood {
    join(swarm, victim).await;
    let topics: Vec<gossipsub::IdentTopic> = TOPICS
        .iter()
        .map(|t| gossipsub::IdentTopic::new(net.genesis.topic(t)))
        .collect();
    let mut out = Flood::default();
    let t0 = Instant::now();
    let mut next = None;
    while out.sent < max && !out.cut_off {
        let (topic, bytes) = next.take().unwrap_or_else(|| make(out.sent));
        match swarm
            .behaviour_mut()
            .publish(topics[topic].clone(), bytes.clone())
        {
            Ok(_) => out.sent += 1,
            Err(gossipsub::PublishError::AllQueuesFull(_)) => {
                // The connection's queue is full: let it drain, then try the same message.
                next = Some((topic, bytes));
                match tokio::time::timeout(T, swarm.select_next_some()).await {
                    Ok(ev) => out.cut_off |= closed(&ev),
                    Err(_) => panic!("the attacker's queue never drained"),
                }
            }
            // No peer left to send to: the victim is gone.
            Err(_) => out.cut_off = true,
        }
        // Take whatever the swarm has ready, without waiting.
        while let Ok(ev) = tokio::time::timeout(Duration::ZERO, swarm.select_next_some()).await {
            out.cut_off |= closed(&ev);
        }
    }
    // Past the quota, a flood that is to be cut off waits for it (what is in flight may
    // still bring it).
    let deadline = tokio::time::Instant::now() + T;
    while expect_cut && !out.cut_off {
        match tokio::time::timeout_at(deadline, swarm.select_next_some()).await {
            Ok(ev) => out.cut_off |= closed(&ev),
            Err(_) => break,
        }
    }
    out.elapsed = t0.elapsed();
    out
}

fn closed(ev: &SwarmEvent<gossipsub::Event>) -> bool {
    matches!(
        ev,
        SwarmEvent::ConnectionClosed {
            num_established: 0,
            ..
        }
    )
}

/// A small deterministic generator for the garbage.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self) -> Vec<u8> {
        let n = 16 + (self.next() % 400) as usize;
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// The difficulty of every request here: the test profile's easiest band.
const EASY: Difficulty = Difficulty(0xffff_0000_0000_0000);

/// A fresh root for the `i`th message.
fn fresh_root(i: u64) -> Root {
    let mut root = [0xeeu8; 32];
    root[..8].copy_from_slice(&i.to_le_bytes());
    root[8..16].copy_from_slice(&now_ms().to_le_bytes());
    Root(root)
}

/// A current request of `service` for `root`.
fn request(service: &SecretKey, net: &LocalNet, i: u64, root: Root) -> Signed<WorkRequest> {
    let now = now_ms();
    Signed::sign(
        WorkRequest {
            service: service.public(),
            root,
            difficulty: EASY,
            kind: None,
            account: None,
            nonce: i,
            created_ms: now,
            expires_ms: now + 60_000,
            priority: Priority::Normal,
            node: service.public(),
        },
        service,
        &net.genesis.id,
    )
    .expect("signs")
}

/// Envelopes signed by keys nobody registered: a request of an unknown service, a result for
/// a request nobody published, a receipt of an unknown service (for `solved`, a root and
/// valid work for it: a receipt must carry valid work to be signed at all), in turn.
fn unregistered(net: &LocalNet, i: u64, solved: (Root, Work)) -> (usize, Vec<u8>) {
    let service = SecretKey::generate().expect("key");
    let worker = SecretKey::generate().expect("key");
    let root = if i % 3 == 2 { solved.0 } else { fresh_root(i) };
    let req = request(&service, net, i, root);
    let result = || {
        Signed::sign(
            WorkResult {
                request: req.id(),
                root,
                work: if i % 3 == 2 { solved.1 } else { Work(i) },
                worker: worker.public(),
                payout: None,
            },
            &worker,
            &net.genesis.id,
        )
        .expect("signs")
    };
    match i % 3 {
        0 => (0, req.bytes().to_vec()),
        1 => (1, result().bytes().to_vec()),
        _ => {
            let receipt = Receipt {
                request: req.clone(),
                result: result(),
                price: Credits::price(req.payload().difficulty),
                accepted_ms: now_ms(),
            };
            let signed = Signed::sign(receipt, &service, &net.genesis.id).expect("signs");
            (5, signed.bytes().to_vec())
        }
    }
}

/// Well-formed messages with their signature's last byte flipped: fresh requests of the
/// registered service and statuses of fresh worker keys, in turn.
fn corrupted(net: &LocalNet, i: u64) -> (usize, Vec<u8>) {
    let (topic, mut bytes) = if i.is_multiple_of(2) {
        (
            0,
            request(&net.service, net, i, fresh_root(i))
                .bytes()
                .to_vec(),
        )
    } else {
        let worker = SecretKey::generate().expect("key");
        let st = WorkerStatus {
            worker: worker.public(),
            hash_rate: 1_000_000,
            queue: 0,
            payout: None,
            created_ms: now_ms(),
        };
        let signed = Signed::sign(st, &worker, &net.genesis.id).expect("signs");
        (3, signed.bytes().to_vec())
    };
    if let Some(last) = bytes.last_mut() {
        *last ^= 0x01;
    }
    (topic, bytes)
}

fn total(m: &BTreeMap<String, u64>) -> u64 {
    m.values().sum()
}

/// Per-reason growth of a counter map between two statistics.
fn grew(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0);
            (d > 0).then(|| (k.clone(), d))
        })
        .collect()
}

/// One flood against the victim from a fresh peer; the victim's rejections it caused.
async fn run(
    name: &str,
    net: &LocalNet,
    victim: &NodeHandle,
    addr: &Multiaddr,
    max: u64,
    expect_cut: bool,
    make: impl FnMut(u64) -> (usize, Vec<u8>),
) -> (Flood, BTreeMap<String, u64>) {
    let before = victim.stats();
    let mut swarm = bare_gossip(net);
    let me = swarm.local_peer_id().to_string();
    let out = flood(&mut swarm, net, addr, max, expect_cut, make).await;
    let after = if out.cut_off {
        wait_for(victim, T, |s| s.blocked_peers.contains(&me))
            .await
            .unwrap_or_else(|e| panic!("{name}: the victim blocks the flooder: {e}"))
    } else {
        victim.stats()
    };
    // What this flood left in the verification pool is judged now, not in the next flood.
    let after = wait_for(victim, T, |s| s.verify_queued == 0)
        .await
        .unwrap_or(after);
    let judged = grew(&before.rejected, &after.rejected);
    figure(format_args!(
        "garbage/{name}: sent {} in {:.0} ms, cut off {}; the victim judged {} ({judged:?}), \
         blocked peers {}",
        out.sent,
        out.elapsed.as_secs_f64() * 1e3,
        out.cut_off,
        total(&judged),
        after.peers_blocked,
    ));
    (out, judged)
}

/// A network, a victim relay with a small strike budget, and an honest service that reaches
/// the network only through the victim.
async fn setup() -> (LocalNet, NodeHandle, Multiaddr, Arc<NodeHandle>) {
    let net = LocalNet::start(LocalOptions {
        workers: 2,
        ..LocalOptions::default()
    })
    .await
    .expect("network starts");
    let mut cfg = net.config(SecretKey::generate().expect("key"));
    cfg.tuning.budgets = BudgetConfig {
        strikes: Rate::per_window(STRIKES, Duration::from_secs(60)),
        block_for: Duration::from_secs(600),
        ..BudgetConfig::default()
    };
    let victim = net::spawn(cfg).await.expect("victim starts");
    victim.wait_synced(T).await.expect("victim synced");
    victim.wait_for_peers(1, T).await.expect("victim connects");
    let addr = victim.listen_addrs(T).await.expect("listens")[0].clone();
    let service = Arc::new(service_through(&net, &addr).await);
    (net, victim, addr, service)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_and_replay_floods_from_strangers_are_cut_off_and_honest_work_goes_on() {
    let (net, victim, addr, service) = setup().await;
    let observer = Observer::start(&net, &addr).await;
    let quiet = honest_load(&service, 50, 0x01).await;

    // The honest request, result and receipt the victim has accepted and forwarded.
    let (ledger, _) = service.ledger().await.expect("ledger");
    let receipt = ledger.counted().next().expect("an honest receipt").clone();
    let honest = [
        (0usize, receipt.payload().request.bytes().to_vec()),
        (1, receipt.payload().result.bytes().to_vec()),
        (5, receipt.bytes().to_vec()),
    ];
    wait_for(&victim, T, |s| s.ledger_receipts >= quiet.len())
        .await
        .expect("the victim holds the honest receipts");
    // The victim forwarded the honest request and receipt to the observer (results may go
    // straight to the service).
    let heard_honest = |o: &Observer| o.copies(&honest[0].1) > 0 && o.copies(&honest[2].1) > 0;
    assert!(
        observer.wait(T, heard_honest).await,
        "the observer never heard the honest messages"
    );
    let heard_before: Vec<u64> = honest.iter().map(|(_, b)| observer.copies(b)).collect();
    let observed = observer.total();
    let start = victim.stats();

    let rss_before = rss_bytes();
    let load = Background::start(service.clone(), 20, 0x02);
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let (junk, junk_judged) = run("random bytes", &net, &victim, &addr, QUOTA, true, |i| {
        let mut bytes = rng.bytes();
        // Every other one behind the current envelope version, to reach the decoder.
        if i % 2 == 1 {
            bytes[0] = 2;
        }
        ((i % TOPICS.len() as u64) as usize, bytes)
    })
    .await;
    let root = fresh_root(u64::MAX);
    let solved = (root, dpow_testkit::reference::find_work(&root, EASY));
    let (unreg, unreg_judged) = run(
        "unregistered keys",
        &net,
        &victim,
        &addr,
        QUOTA,
        true,
        |i| unregistered(&net, i, solved),
    )
    .await;
    let (bad, bad_judged) = run(
        "corrupted signatures",
        &net,
        &victim,
        &addr,
        QUOTA,
        true,
        |i| corrupted(&net, i),
    )
    .await;
    let (replay, replay_judged) = run(
        "replays",
        &net,
        &victim,
        &addr,
        REPLAYS * honest.len() as u64,
        false,
        |i| honest[(i % honest.len() as u64) as usize].clone(),
    )
    .await;
    let during = load.stop().await;
    let rss_after = rss_bytes();
    let end = victim.stats();

    figure(format_args!(
        "garbage: honest {} quiet, {} under the floods; rss {} -> {} MiB; victim accepted \
         during the floods {:?}",
        p50_p99(&quiet),
        p50_p99(&during),
        mib(rss_before),
        mib(rss_after),
        grew(&start.accepted, &end.accepted),
    ));

    // Floods of penalised or ignored messages: cut off, the victim judged no more than was
    // sent, and each flood cost it at least one rejection.
    for (name, out, judged) in [
        ("random bytes", &junk, &junk_judged),
        ("unregistered keys", &unreg, &unreg_judged),
        ("corrupted signatures", &bad, &bad_judged),
    ] {
        assert!(out.cut_off, "{name}: the flooder was cut off: {out:?}");
        assert!(
            (1..=out.sent).contains(&total(judged)),
            "{name}: judged {judged:?} of {}",
            out.sent
        );
    }
    // The garbage was refused before any signature check (an unknown version costs a strike,
    // an oversized or undecodable message is penalised), the corrupted messages were bad
    // signatures (penalised): a handful cut the peer off. The unregistered ones cost a strike
    // each.
    assert!(
        junk_judged
            .keys()
            .all(|k| ["oversized", "undecodable", "unknown_version"].contains(&k.as_str())),
        "{junk_judged:?}"
    );
    assert!(bad_judged.contains_key("bad_signature"), "{bad_judged:?}");
    // About one strike's worth each: the strikes, what refilled meanwhile, and what was
    // already on its way when the block came.
    let refilled = unreg.elapsed.as_secs_f64() * STRIKES / 60.0;
    assert!(
        (total(&unreg_judged) as f64) <= STRIKES + refilled + IN_FLIGHT,
        "{unreg_judged:?}"
    );
    // Replays: a copy of a message the victim has seen is dropped unread (gossipsub's
    // duplicate cache); one it has not (a result delivered straight to the service) is
    // judged answered or a replay: ignored, never forwarded. The observer hears no copy.
    assert!(replay.sent >= REPLAYS, "the replays were sent: {replay:?}");
    assert!(
        replay_judged
            .keys()
            .all(|k| k == "answered" || k == "replay"),
        "replays judged: {replay_judged:?}"
    );
    assert!(observed >= 1, "the observer hears the victim's traffic");
    for ((_, b), was) in honest.iter().zip(&heard_before) {
        assert!(
            *was <= 1,
            "the observer heard {was} copies before the replays"
        );
        assert_eq!(observer.copies(b), *was, "a replay was forwarded");
    }
    // Nothing of the floods was accepted: one request and one receipt per honest request.
    let end = wait_for(&victim, T, |s| {
        s.ledger_receipts >= start.ledger_receipts + during.len()
    })
    .await
    .expect("the victim holds the honest receipts");
    assert_eq!(
        end.ledger_receipts,
        start.ledger_receipts + during.len(),
        "one receipt per honest request, none from the floods"
    );
    let requests = |s: &NodeStats| s.accepted.get("work-request").copied().unwrap_or(0);
    assert_eq!(requests(&end), requests(&start) + during.len() as u64);
    assert!(
        rss_after.saturating_sub(rss_before) < 256 << 20,
        "memory grew by {} MiB",
        mib(rss_after.saturating_sub(rss_before))
    );
}
