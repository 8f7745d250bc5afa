//! A deterministic simulation of the request path on a gossip mesh of 100 to 3,000 peers.
//!
//! See `engine.rs` for what is modelled. The sizes run come from `DPOW_SIM_NODES` (a comma
//! list; default `100,300`) and the seed from `DPOW_SIM_SEED` (default 1); docs/benchmarks.md
//! records the table for 100 to 3,000 with
//! `DPOW_SIM_NODES=100,300,1000,3000 cargo test --workspace --all-features --locked --test mesh_sim -- --nocapture`.
#![allow(clippy::print_stderr)] // the simulation reports its figures

mod engine;

use dpow_protocol::Difficulty;
use engine::{Report, Scenario, simulate};

fn sizes() -> Vec<usize> {
    let list = std::env::var("DPOW_SIM_NODES").unwrap_or_else(|_| "100,300".into());
    list.split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("DPOW_SIM_NODES: a comma list of sizes")
        })
        .collect()
}

fn seed() -> u64 {
    std::env::var("DPOW_SIM_SEED").map_or(1, |s| s.parse().expect("DPOW_SIM_SEED: a number"))
}

fn row(sc: &Scenario, steady: &Report, split: &Report, wall: std::time::Duration) -> String {
    format!(
        "| {} | {} | {}/{}, {}/{} | {} / {} ms | {:.2} / {} | {:.2} | {:.1}% | {:.1}% | {} | {}, {} | {}, {} | {:.1} s |",
        sc.nodes,
        sc.workers,
        steady.completed,
        steady.requests,
        split.completed,
        split.requests,
        steady.latency_p50_ms,
        steady.latency_p99_ms,
        steady.mean_hops(),
        steady.hops_max,
        steady.duplicates_per_message(),
        100.0 * steady.wasted(),
        100.0 * split.wasted(),
        split
            .convergence_ms
            .map_or("never".to_string(), |ms| format!(
                "{:.1} s",
                ms as f64 / 1e3
            )),
        split.sync_requests,
        split.sync_fetched,
        steady.events,
        split.events,
        wall.as_secs_f64(),
    )
}

/// Each size twice: a steady run (loss, crashes, churn) and the same with a 15 s partition.
#[test]
fn every_size_answers_every_request_and_the_books_converge() {
    eprintln!(
        "\n| peers | workers | answered (steady, split) | latency p50 / p99 | hops mean / max | duplicates per message | hashing wasted | wasted with the split | convergence after heal | catch-up requests, receipts fetched (split) | events (steady, split) | wall |"
    );
    eprintln!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for n in sizes() {
        let sc = Scenario::standard(seed(), n);
        let began = std::time::Instant::now();
        let steady = simulate(sc.clone());
        let split = simulate(Scenario::partitioned(seed(), n));
        eprintln!("{}", row(&sc, &steady, &split, began.elapsed()));
        for r in [&steady, &split] {
            // Even the half cut from the services leaves the other half to answer everything.
            assert_eq!(r.completed, r.requests, "{n} peers: {r:?}");
            assert!(r.workers_crashed > 0 && r.workers_joined > 0 && r.lost > 0);
            // A message reaches most peers in a handful of hops on a mesh of degree 6 to 12.
            assert!(r.mean_hops() < 8.0, "{n} peers: {:.2} hops", r.mean_hops());
            // Every peer forwards to its neighbours: copies are bounded by the degree.
            assert!(r.duplicates_per_message() < sc.degree.1 as f64);
        }
        assert_eq!(
            steady.convergence_ms, None,
            "no partition, nothing to converge after"
        );
        // Every live peer ends up with every receipt issued before the partition healed,
        // fetched by the replication machine: gossip never repeats what the partition cut.
        assert!(
            split.convergence_ms.is_some(),
            "{n} peers: the books never met"
        );
        assert!(split.sync_fetched > 0, "{n} peers: {split:?}");
        // The news that a request is answered crosses the mesh in a few hops; hashing until
        // then is lost (about a tenth at every size). A stop that never spread would lose far
        // more.
        assert!(
            steady.wasted() < 0.25,
            "{n} peers: wasted {:.3}",
            steady.wasted()
        );
    }
}

#[test]
fn the_same_seed_gives_the_same_numbers() {
    let a = simulate(Scenario::partitioned(7, 120));
    let b = simulate(Scenario::partitioned(7, 120));
    assert_eq!(a, b);
    let c = simulate(Scenario::partitioned(8, 120));
    assert_ne!(a.trace, c.trace, "another seed, another run");
}

#[test]
fn a_clean_network_loses_nothing() {
    let sc = Scenario {
        partition: None,
        loss: 0.0,
        crash: 0.0,
        join: 0.0,
        ..Scenario::standard(3, 150)
    };
    let r = simulate(sc);
    assert_eq!(r.completed, r.requests);
    assert_eq!(r.lost, 0);
    // Without loss a mesh hands each peer its first copy over the quickest path.
    assert!(r.hops_max < 16, "{} hops", r.hops_max);
}

/// Throughput against the ideal (every worker always hashing) and hashing against the
/// memoryless expectation, for a closed loop.
fn closed_loop_figures(sc: &Scenario, r: &Report) -> (f64, f64) {
    let d = sc.difficulty.expect("a closed loop has one difficulty");
    let rate = sc.rate.expect("and one rate") as f64;
    let span_s = (r.last_completed_ms - 1_000) as f64 / 1e3;
    let ideal = sc.workers as f64 * rate / d.expected_hashes();
    let throughput = r.completed as f64 / span_s;
    let expected = r.completed as f64 * d.expected_hashes();
    (throughput / ideal, r.hashes as f64 / expected - 1.0)
}

/// The swarm benchmark's shape (8 workers, 2^20 hashes a request, 16 outstanding) with each
/// worker on a core of its own, over a LAN and a WAN.
#[test]
fn a_closed_loop_keeps_the_workers_busy() {
    let d = Difficulty(0xffff_f000_0000_0000);
    // Over a WAN a request spends ~0.4 s in transit against 0.1 s solving: 16 outstanding
    // could keep only about three workers busy, so the WAN run keeps 64.
    for (name, latency, in_flight) in [("lan", (1, 2), 16), ("wan", (20, 150), 64)] {
        let sc = Scenario::closed_loop(seed(), 8, 10_000_000, d, in_flight, 400, latency);
        let r = simulate(sc.clone());
        let (share, extra) = closed_loop_figures(&sc, &r);
        eprintln!(
            "closed loop, {name}: {}/{} answered, throughput {:.1}% of ideal, hashing {:+.1}% against the expectation, latency p50 / p99 {} / {} ms",
            r.completed,
            r.requests,
            100.0 * share,
            100.0 * extra,
            r.latency_p50_ms,
            r.latency_p99_ms,
        );
        assert_eq!(r.completed, r.requests, "{name}: {r:?}");
        assert!(share > 0.5 && share <= 1.05, "{name}: {share}");
    }
}

/// What a stop sent straight to the solvers would save: the same steady runs with the
/// service's node also telling every worker solving a request that it is answered (an
/// oracle: a real node does not know who is solving).
#[test]
fn what_a_direct_stop_would_save() {
    for n in sizes() {
        let gossip = simulate(Scenario::standard(seed(), n));
        let direct = simulate(Scenario {
            direct_stop: true,
            ..Scenario::standard(seed(), n)
        });
        eprintln!(
            "{n} peers: hashing wasted {:.1}% with the stop by gossip, {:.1}% with a direct stop too; latency p50 / p99 {} / {} ms and {} / {} ms",
            100.0 * gossip.wasted(),
            100.0 * direct.wasted(),
            gossip.latency_p50_ms,
            gossip.latency_p99_ms,
            direct.latency_p50_ms,
            direct.latency_p99_ms,
        );
        // Stopping solvers early loses no request. (Whether it saves hashing is the figure
        // printed: a few points at most, within the run-to-run spread; benchmarks.md.)
        assert!(
            direct.direct_stops > 0,
            "{n} peers: no solver was stopped directly"
        );
        assert_eq!(direct.completed, direct.requests);
    }
}
