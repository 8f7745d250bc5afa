//! A registered service floods the network with expensive requests while an honest one asks
//! for a little work now and then.
//!
//! Graduated anti-spam classes a service by its cost-weighted volume over rolling windows
//! (`dpow_protocol::volume`): the flooder passes its base at once and falls a class, so every
//! worker serves the honest service's requests first (preempting a flood solve). Without the
//! classes (a base no one reaches) workers serve requests by age and the honest ones wait
//! behind the flood.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dpow_keys::SecretKey;
use dpow_node::net::{self, NodeHandle, WorkAsk};
use dpow_protocol::volume::{VolumePolicy, Window};
use dpow_protocol::{Credits, Difficulty, Priority, RegistryAction, Root};
use dpow_testnet::local::{FlowConfig, LocalNet, LocalOptions, LocalTransport, wait_nodes};

use super::common::{figure, mib, pct, rss_bytes};

const T: Duration = Duration::from_secs(120);
const FLOOD: u32 = 60;
const HONEST: u32 = 6;

fn ask(tag: u8, i: u32, difficulty: u64) -> WorkAsk {
    let mut r = [0x71u8; 32];
    r[0] = tag;
    r[1..5].copy_from_slice(&i.to_le_bytes());
    WorkAsk {
        root: Root(r),
        difficulty: Difficulty(difficulty),
        kind: None,
        account: None,
        priority: Priority::Normal,
        lifetime: Duration::from_secs(110),
    }
}

/// A second registered, funded service and its node.
async fn flooder(net: &LocalNet) -> NodeHandle {
    let key = SecretKey::generate().expect("key");
    for action in [
        RegistryAction::RegisterService {
            service: key.public(),
            name: "flooder".into(),
        },
        RegistryAction::GrantCredits {
            service: key.public(),
            credits: Credits(1_000_000),
        },
    ] {
        net.bootstrap
            .registry(action, net.registrar.clone())
            .await
            .expect("registered");
    }
    let mut cfg = net.config(SecretKey::generate().expect("key"));
    cfg.service_key = Some(key);
    let node = net::spawn(cfg).await.expect("flooder starts");
    node.wait_synced(T).await.expect("synced");
    node.wait_for_peers(1, T).await.expect("connected");
    net.wait_all(T, |s| s.registry_entries >= 4)
        .await
        .expect("registry spread");
    node
}

/// Honest requests' latencies (sorted) and, for each, how many flood requests had been
/// answered when it was; the test process's memory before the flood and after it.
async fn scenario(volume: VolumePolicy) -> (Vec<Duration>, Vec<u64>, (u64, u64)) {
    let net = LocalNet::start(LocalOptions {
        transport: LocalTransport::Memory,
        workers: 2,
        flow: FlowConfig {
            volume,
            ..FlowConfig::default()
        },
        ..LocalOptions::default()
    })
    .await
    .expect("network");
    let honest = net.service_node().await.expect("service");
    let flood = Arc::new(flooder(&net).await);
    let rss_before = rss_bytes();
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..FLOOD {
        let (flood, done) = (flood.clone(), done.clone());
        // The test profile's hardest work: 2^20 expected hashes each.
        tasks.push(tokio::spawn(async move {
            let r = flood.submit(ask(0xf1, i, 0xffff_f000_0000_0000)).await;
            done.fetch_add(1, Ordering::SeqCst);
            r.is_ok()
        }));
    }
    // Let the flood fill the workers' queues first: every worker knows every flood request
    // not yet answered (the sum of the queues is not enough: each holds every request, as
    // primary or backup, and one may lag the other).
    let workers: Vec<&NodeHandle> = net.workers.iter().collect();
    let queued = || {
        let done = done.load(Ordering::SeqCst) as usize;
        net.workers
            .iter()
            .all(|w| w.stats().queue + done >= FLOOD as usize)
            .then_some(())
    };
    wait_nodes(&workers, T, queued)
        .await
        .expect("the flood never queued");
    let mut lat = Vec::new();
    let mut flood_done = Vec::new();
    for i in 0..HONEST {
        let t = Instant::now();
        tokio::time::timeout(T, honest.submit(ask(0x0a, i, 0xffff_0000_0000_0000)))
            .await
            .expect("in time")
            .expect("answered");
        lat.push(t.elapsed());
        flood_done.push(done.load(Ordering::SeqCst));
    }
    for t in tasks {
        assert!(t.await.expect("task"), "a flood request failed");
    }
    lat.sort();
    (lat, flood_done, (rss_before, rss_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flooding_service_falls_a_class_and_honest_requests_go_first() {
    // Class 1 from 8 credits a minute: the flood's 60 × 2^20-hash requests (price 1 each on
    // the test profile) pass it at once, the honest service's 6 never do.
    let tight = VolumePolicy {
        windows: vec![Window {
            window_ms: 60_000,
            base: 8,
        }],
        max_class: 2,
    };
    let (with, done_with, rss) = scenario(tight).await;
    let loose = VolumePolicy {
        windows: vec![Window {
            window_ms: 60_000,
            base: u64::MAX,
        }],
        max_class: 1,
    };
    let (without, done_without, _) = scenario(loose).await;
    figure(format_args!(
        "flood: {FLOOD} requests of 2^20 hashes; honest p50/p99 with classes {:.0}/{:.0} ms \
         (flood answered meanwhile {done_with:?}), without {:.0}/{:.0} ms ({done_without:?}); \
         rss with classes {} -> {} MiB",
        pct(&with, 50),
        pct(&with, 99),
        pct(&without, 50),
        pct(&without, 99),
        mib(rss.0),
        mib(rss.1),
    ));
    // With classes every honest request was answered while most of the flood still waited;
    // without them the honest service waited behind the flood (its first request may slip
    // in early as a backup, the next ones wait for the rest of the flood).
    let most = u64::from(FLOOD) / 2;
    assert!(
        done_with.iter().all(|d| *d < most),
        "flood answered before honest requests: {done_with:?}"
    );
    assert!(
        done_without.iter().any(|d| *d >= most),
        "without classes the honest requests should wait: {done_without:?}"
    );
}
