//! A deterministic discrete-event simulation of the request lifecycle.
//!
//! A few hundred virtual workers each run a `WorkerFlow`; two services each run a
//! `ServiceFlow` (one of them sends most of the traffic and goes over its volume limit). A
//! gossip bus delivers every message to every node after a random delay, duplicates some
//! (late, so they arrive out of order) and loses some. Solving takes an exponentially
//! distributed time with mean `expected_hashes / rate`, as a memoryless search does; the work
//! values are not real (the flow never looks at them). Workers crash: some at random times,
//! some in the middle of a solve, and for some requests every primary dies the moment the
//! request is published, so only the backups can answer.
//!
//! Everything is driven by one seeded generator and one event queue ordered by (time, sequence
//! number), so a seed always replays the same run; the run's trace hash proves it.
#![allow(clippy::print_stderr)] // the simulation reports its figures

mod sim;

use dpow_protocol::flow::FlowConfig;

use sim::simulate;

/// What one run looks like.
#[derive(Clone, Debug)]
struct Scenario {
    seed: u64,
    workers: usize,
    requests: usize,
    /// Share of the requests sent by the heavy service (service 0).
    heavy_share: f64,
    /// Share of the requests that arrive in one one-second burst (so queues form).
    burst_share: f64,
    /// The flow settings every node uses.
    config: FlowConfig,
    /// Chance that a worker crashes during each solve it starts.
    crash_per_solve: f64,
    /// Share of the workers that crash at a random time in the first minute.
    crash_random: f64,
    /// Chance that every primary of a request crashes the instant it is published.
    kill_primaries: f64,
    /// Chance that a delivery to a worker is duplicated (the copy comes late).
    duplicate: f64,
    /// Chance that a delivery to a worker is lost.
    loss: f64,
    /// Chance that one worker misses one status announcement of another.
    status_loss: f64,
}

impl Scenario {
    fn standard(seed: u64, workers: usize, requests: usize) -> Self {
        Scenario {
            seed,
            workers,
            requests,
            heavy_share: 0.7,
            burst_share: 0.3,
            config: FlowConfig {
                // Low enough that the heavy service goes over it within the run.
                volume: dpow_protocol::volume::VolumePolicy {
                    windows: vec![dpow_protocol::volume::Window {
                        window_ms: 60_000,
                        base: 41,
                    }],
                    max_class: 4,
                },
                ..FlowConfig::default()
            },
            crash_per_solve: 0.02,
            crash_random: 0.05,
            kill_primaries: 0.1,
            duplicate: 0.05,
            loss: 0.01,
            status_loss: 0.02,
        }
    }
}

/// What a run measured. Integers only, so two runs compare exactly.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Report {
    requests: usize,
    completed: usize,
    completed_by_backup: usize,
    primaries_killed_requests: usize,
    primaries_killed_won_by_backup: usize,
    workers_crashed: usize,
    crashed_mid_solve: usize,
    backups_started: usize,
    max_solvers_on_one_request: usize,
    max_primaries_on_one_request: usize,
    /// The most workers whose liveness the nodes' views disputed when a request had more
    /// primaries than the configured maximum.
    max_disputed: usize,
    max_latency_ms: u64,
    /// Mean latency per service (heavy first).
    mean_latency_ms: [u64; 2],
    deliveries: usize,
    duplicates: usize,
    lost: usize,
    done_before_request: usize,
    stops_on_hearing: usize,
    republished: usize,
    hashes_total: u128,
    hashes_after_first_solution: u128,
    trace: u64,
}

impl Report {
    fn wasted(&self) -> f64 {
        self.hashes_after_first_solution as f64 / self.hashes_total.max(1) as f64
    }
}

fn summary(seed: u64, r: &Report) -> String {
    format!(
        "seed {seed}: {}/{} completed ({} by a backup), {} workers crashed ({} mid-solve), \
         {} requests lost all primaries ({} won by a backup), {} backups started, \
         max latency {} ms, mean latency heavy/light {:?} ms, max {} solvers ({} primaries) \
         on one request, {} deliveries, {} duplicated, {} lost, {} results before their \
         request, {} stops on hearing, {} republished, {:.2}% of hashing wasted",
        r.completed,
        r.requests,
        r.completed_by_backup,
        r.workers_crashed,
        r.crashed_mid_solve,
        r.primaries_killed_requests,
        r.primaries_killed_won_by_backup,
        r.backups_started,
        r.max_latency_ms,
        r.mean_latency_ms,
        r.max_solvers_on_one_request,
        r.max_primaries_on_one_request,
        r.deliveries,
        r.duplicates,
        r.lost,
        r.done_before_request,
        r.stops_on_hearing,
        r.republished,
        100.0 * r.wasted(),
    )
}

/// 220 workers, 150 requests, every fault on. Each seed is its own test so they run in
/// parallel.
fn faulty_run(seed: u64) {
    let sc = Scenario::standard(seed, 220, 150);
    let max_primaries = sc.config.max_primaries;
    let r = simulate(sc);
    eprintln!("{}", summary(seed, &r));
    // Every request answered, once, in time (the run panics on a second completion or an
    // expiry, and on any worker solving what it heard was done).
    assert_eq!(r.completed, r.requests);
    // The scenario really exercised what it claims to.
    assert!(r.crashed_mid_solve > 0, "no worker crashed mid-solve");
    assert!(
        r.primaries_killed_requests > 0,
        "no request lost its primaries"
    );
    assert!(r.duplicates > 0 && r.lost > 0 && r.done_before_request > 0);
    assert!(
        r.stops_on_hearing > 0,
        "nobody was stopped by news of a result"
    );
    // A request whose primaries all died can only have been answered by a backup.
    assert_eq!(
        r.primaries_killed_won_by_backup,
        r.primaries_killed_requests
    );
    // Views differ under status loss and crashes; only then may a request get more primaries.
    assert!(r.max_primaries_on_one_request <= max_primaries + r.max_disputed);
    // Parallel search costs nothing; only hashing after the first solution is waste.
    assert!(r.wasted() < 0.05, "wasted {:.3}", r.wasted());
}

#[test]
fn faulty_network_seed_1() {
    faulty_run(1);
}

#[test]
fn faulty_network_seed_2() {
    faulty_run(2);
}

#[test]
fn faulty_network_seed_3() {
    faulty_run(3);
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let a = simulate(Scenario::standard(7, 200, 40));
    let b = simulate(Scenario::standard(7, 200, 40));
    assert_eq!(a, b, "same seed, same trace and figures");
    let c = simulate(Scenario::standard(8, 200, 40));
    assert_ne!(a.trace, c.trace, "another seed, another run");
}

#[test]
fn without_faults_backups_rarely_start() {
    let sc = Scenario {
        crash_per_solve: 0.0,
        crash_random: 0.0,
        kill_primaries: 0.0,
        duplicate: 0.0,
        loss: 0.0,
        status_loss: 0.0,
        ..Scenario::standard(11, 200, 100)
    };
    let r = simulate(sc);
    eprintln!("{}", summary(11, &r));
    assert_eq!(r.completed, r.requests);
    assert_eq!(r.workers_crashed, 0);
    assert_eq!(r.lost, 0);
    // A backup tier starts only when its primaries take three times their expected time
    // (probability e^-3 for a memoryless search) or are busy with other work.
    assert!(
        r.completed_by_backup * 10 < r.completed,
        "{} of {} won by backups",
        r.completed_by_backup,
        r.completed
    );
}
