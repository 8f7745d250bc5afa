//! 1,000 fresh worker keys announce statuses with enormous hash rates and never solve.
//!
//! Without standings (`probation_receipts = 0`, no rate cap) a plan ranks every live worker
//! alike and sizes the primary set by announced rates, so for nearly every request one Sybil
//! key is the only primary and the honest workers wait their turn as backups. With standings
//! (the default) workers with receipts rank first and the crowd only queues behind them.

use std::time::Duration;

use dpow_keys::SecretKey;
use dpow_node::net::{self, NodeHandle, Topic, now_ms};
use dpow_protocol::{Signed, WorkerStatus};
use dpow_testnet::local::{FlowConfig, LocalNet, LocalOptions, wait_for, wait_nodes};

use super::common::{figure, honest_load, mib, pct, rss_bytes};

const T: Duration = Duration::from_secs(60);
const SYBILS: usize = 1000;

/// Sum of a counter over the workers' own statistics.
fn started(net: &LocalNet) -> (u64, u64) {
    net.workers.iter().fold((0, 0), |(p, b), w| {
        let s = w.stats().worker.unwrap_or_default();
        (p + s.started_primary, b + s.started_backup)
    })
}

/// The workers' starts once their statistics count at least `n` more than `since` (each
/// request was started by some worker; statistics refresh about once a second), or after 15 s
/// what they count then. Asked again after each of the workers' turns, not on a timer.
async fn started_after(net: &LocalNet, since: (u64, u64), n: u64) -> (u64, u64) {
    let workers: Vec<&NodeHandle> = net.workers.iter().collect();
    let enough = || {
        let now = started(net);
        ((now.0 + now.1).saturating_sub(since.0 + since.1) >= n).then_some(now)
    };
    let now = wait_nodes(&workers, Duration::from_secs(15), enough)
        .await
        .unwrap_or_else(|| started(net));
    (now.0 - since.0, now.1 - since.1)
}

/// Publish one status for each of `SYBILS` fresh keys from a node of the attacker's, and wait
/// until every worker counts them live.
///
/// In batches that every worker has counted before the next goes out: a node verifies at most
/// `MAX_QUEUED_PER_PEER` messages from one peer at a time and drops the rest as busy, so a
/// single burst of a thousand reaches every worker only on a machine fast enough to keep up
/// (on CI's two loaded cores some were dropped and the wait never ended).
async fn flood(net: &LocalNet) -> NodeHandle {
    const BATCH: usize = 100;
    let attacker = net::spawn(net.config(SecretKey::generate().expect("key")))
        .await
        .expect("attacker starts");
    attacker
        .wait_for_peers(1, T)
        .await
        .expect("attacker connects");
    attacker.wait_synced(T).await.expect("attacker synced");
    let now = now_ms();
    let mut sent = 0;
    while sent < SYBILS {
        for _ in 0..BATCH.min(SYBILS - sent) {
            let k = SecretKey::generate().expect("key");
            let st = Signed::sign(
                WorkerStatus {
                    worker: k.public(),
                    hash_rate: 1_000_000_000_000,
                    queue: 0,
                    payout: None,
                    created_ms: now,
                },
                &k,
                &net.genesis.id,
            )
            .expect("signs");
            attacker
                .publish_raw(Topic::Status, st.bytes().to_vec())
                .await
                .expect("published");
            sent += 1;
        }
        for w in &net.workers {
            let heard = wait_for(w, T, |s| s.live_workers >= sent + net.workers.len()).await;
            assert!(
                heard.is_ok(),
                "every worker hears the crowd: {} of {sent} counted, {} messages dropped as busy",
                w.stats().live_workers,
                w.stats().verify_refused
            );
        }
    }
    attacker
}

async fn network(flow: FlowConfig) -> (LocalNet, NodeHandle) {
    let net = LocalNet::start(LocalOptions {
        workers: 2,
        flow,
        ..LocalOptions::default()
    })
    .await
    .expect("network starts");
    let service = net.service_node().await.expect("service node");
    net.wait_all(T, |s| s.live_workers >= 2)
        .await
        .expect("workers known");
    (net, service)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_sybil_keys_take_no_primary_place_from_proven_workers() {
    let (net, service) = network(FlowConfig::default()).await;
    let n = 20;
    let before = honest_load(&service, n, 1).await;
    // The answers' receipts made the workers that won them proven, in every worker's view.
    for w in &net.workers {
        wait_for(w, T, |s| s.proven_workers >= 1)
            .await
            .expect("a proven worker");
    }
    let rss_before = rss_bytes();
    let _attacker = flood(&net).await;
    let since = started(&net);
    let during = honest_load(&service, n, 2).await;
    let (primary, backup) = started_after(&net, since, u64::from(n)).await;
    let rss_after = rss_bytes();
    figure(format_args!(
        "sybil: {SYBILS} keys; without the crowd p50 {:.1} ms p99 {:.1} ms; with it p50 {:.1} ms \
         p99 {:.1} ms; solves started as primary {}, as backup {}; rss {} -> {} MiB",
        pct(&before, 50),
        pct(&before, 99),
        pct(&during, 50),
        pct(&during, 99),
        primary,
        backup,
        mib(rss_before),
        mib(rss_after),
    ));
    // Every request had an honest primary that started at once: none waited for a Sybil.
    assert!(primary >= u64::from(n), "primary starts {primary} of {n}");
    for w in &net.workers {
        let s = w.stats();
        assert_eq!(
            s.live_workers,
            SYBILS + 2,
            "the crowd is live but ranks last"
        );
        assert!(s.proven_workers >= 1 && s.proven_workers <= 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_standings_the_sybil_keys_take_the_primary_places() {
    let (net, service) = network(FlowConfig {
        probation_receipts: 0,
        rate_cap_factor: 0,
        ..FlowConfig::default()
    })
    .await;
    let _ = honest_load(&service, 4, 1).await;
    let _attacker = flood(&net).await;
    let since = started(&net);
    let n = 8;
    let during = honest_load(&service, n, 2).await;
    let (primary, backup) = started_after(&net, since, u64::from(n)).await;
    figure(format_args!(
        "sybil, no standings: p50 {:.1} ms p99 {:.1} ms; solves started as primary {}, as \
         backup {}",
        pct(&during, 50),
        pct(&during, 99),
        primary,
        backup
    ));
    // Two honest keys among a thousand and two lead a request's ranking rarely: the honest
    // workers start almost every request only as backups, once a Sybil primary's time is up.
    assert!(backup >= u64::from(n) / 2, "backup starts {backup}");
    assert!(primary < u64::from(n) / 2, "primary starts {primary}");
}
