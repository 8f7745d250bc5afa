//! End-to-end figures of a swarm in one process, for docs/benchmarks.md:
//!
//! 1. overhead: latency of requests whose solve takes microseconds (difficulty ff00..., 256
//!    expected hashes), so what is measured is signing, gossip, validation, scheduling and the
//!    answer's way back — minus the pure solve time measured on the same solver;
//! 2. sustained throughput and lost hashing with 8 workers at the test profile's send
//!    threshold (2^20 expected hashes), against this machine's solver rate.
//!
//! The nodes reach each other over libp2p's in-process memory transport (noise and yamux as on
//! any link, no kernel sockets); `-- tcp` puts them on loopback TCP instead.
//!
//! `cargo bench -p dpow-testnet --bench swarm` (add `-- quick` for a shorter run, `-- tcp` for
//! loopback TCP, `-- difficulty=fffffc0000000000` for another threshold in part 2).
#![allow(clippy::print_stdout)] // a benchmark report

use std::sync::Arc;
use std::time::{Duration, Instant};

use dpow_node::net::WorkAsk;
use dpow_node::net::percentile;
use dpow_protocol::{Difficulty, Priority, Root};
use dpow_solver::{Control, CpuSolver, Solver};
use dpow_testnet::local::{LocalNet, LocalOptions, LocalTransport};

fn root(i: u32, salt: u8) -> Root {
    let mut r = [salt; 32];
    r[..4].copy_from_slice(&i.to_le_bytes());
    Root(r)
}

fn ask(root: Root, d: Difficulty) -> WorkAsk {
    WorkAsk {
        root,
        difficulty: d,
        kind: None,
        account: None,
        priority: Priority::Normal,
        lifetime: Duration::from_secs(60),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "quick");
    let (transport, over) = if std::env::args().any(|a| a == "tcp") {
        (LocalTransport::Tcp, "loopback TCP")
    } else {
        (LocalTransport::Memory, "the memory transport")
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    // The machine's solver rate, the throughput's yardstick: measured first, while nothing
    // else of this benchmark runs (right after a network is dropped, its nodes are still
    // winding down and the figure came out 10-15% low, and varied as much).
    let machine = CpuSolver::new(0)?;
    let rate = dpow_solver::dispatch::measure_rate(&machine, Duration::from_secs(3))?;
    drop(machine);

    // --- 1. overhead ---
    let easy = Difficulty(0xff00_0000_0000_0000);
    let n = if quick { 50 } else { 300 };
    let solver = CpuSolver::new(1)?;
    let mut solve_ms = Vec::new();
    for i in 0..n {
        let c = Control::new();
        let t = Instant::now();
        solver.solve(&root(i, 0xee), easy, &c)?;
        solve_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    solve_ms.sort_by(f64::total_cmp);
    let net = LocalNet::start(LocalOptions {
        workers: 4,
        threads: 1,
        rate: None,
        transport,
        ..LocalOptions::default()
    })
    .await?;
    let service = net.service_node().await?;
    let mut lat = Vec::new();
    for i in 0..n {
        let ans = tokio::time::timeout(
            Duration::from_secs(5),
            service.submit(ask(root(i, 0x01), easy)),
        )
        .await
        .map_err(|_| anyhow::anyhow!("request {i} unanswered after 5 s"))??;
        lat.push(ans.latency.as_secs_f64() * 1e3);
    }
    lat.sort_by(f64::total_cmp);
    let solve50 = percentile(&solve_ms, 50.0);
    println!(
        "== overhead: {n} sequential requests at {easy} (256 expected hashes), 4 workers, over {over}"
    );
    println!(
        "pure solve  p50 {:.3} ms  p99 {:.3} ms",
        solve50,
        percentile(&solve_ms, 99.0)
    );
    println!(
        "end to end  p50 {:.2} ms  p95 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        percentile(&lat, 50.0),
        percentile(&lat, 95.0),
        percentile(&lat, 99.0),
        lat[lat.len() - 1]
    );
    println!(
        "overhead    p50 {:.2} ms  p99 {:.2} ms (end to end minus the pure solve p50)",
        percentile(&lat, 50.0) - solve50,
        percentile(&lat, 99.0) - solve50
    );
    drop(service);
    drop(net);

    // --- 2. throughput and lost hashing, 8 workers ---
    // `-- difficulty=HEX`: another threshold for this part (the nodes' cost per work stays,
    // the work per request changes: how the share of the cores they take scales).
    let d = match std::env::args().find_map(|a| a.strip_prefix("difficulty=").map(String::from)) {
        Some(hex) => Difficulty(
            u64::from_str_radix(&hex, 16)
                .map_err(|e| anyhow::anyhow!("difficulty={hex}: not 16 hex digits: {e}"))?,
        ),
        None => Difficulty(0xffff_f000_0000_0000),
    };
    let expected = d.expected_hashes();
    let ideal = rate / expected;
    let m: u32 = if quick { 100 } else { 400 };
    let mut flow = dpow_testnet::local::FlowConfig::default();
    if let Ok(f) = std::env::var("DPOW_BENCH_BACKUP_FACTOR") {
        flow.backup_after_factor = f.parse()?;
    }
    if let Ok(g) = std::env::var("DPOW_BENCH_BACKUP_GRACE_MS") {
        flow.backup_grace_ms = g.parse()?;
    }
    if let Ok(t) = std::env::var("DPOW_BENCH_IDLE_START_TIERS") {
        flow.idle_start_tiers = t.parse()?;
    }
    println!(
        "\nflow: backup tier i starts after {} x i x expected + {} ms; idle start up to tier {}",
        flow.backup_after_factor, flow.backup_grace_ms, flow.idle_start_tiers
    );
    let net = LocalNet::start(LocalOptions {
        workers: 8,
        threads: 1,
        rate: None,
        flow,
        transport,
        ..LocalOptions::default()
    })
    .await?;
    let service = Arc::new(net.service_node().await?);
    let t0 = Instant::now();
    let cpu0 = cpu_seconds();
    let mut set = tokio::task::JoinSet::new();
    let mut next = 0u32;
    let mut done = 0u32;
    let concurrency = 16;
    while done < m {
        while next < m && set.len() < concurrency {
            let s = service.clone();
            let r = root(next, 0x02);
            set.spawn(async move { s.submit(ask(r, d)).await });
            next += 1;
        }
        if let Some(r) = set.join_next().await {
            r??;
            done += 1;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu1 = cpu_seconds();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut hashes, mut won) = (0u64, 0u64);
    for w in &net.workers {
        let s = w.stats();
        hashes += s.hashes;
        won += s.hashes_won;
    }
    let works = f64::from(m) / secs;
    println!(
        "\n== throughput: {m} requests at {d} (2^{:.1} expected hashes), 8 workers x 1 thread on {cores} cores, {concurrency} in flight, over {over}",
        expected.log2()
    );
    println!(
        "machine solver rate {:.1} MH/s => ideal {:.1} works/s",
        rate / 1e6,
        ideal
    );
    println!(
        "sustained   {works:.1} works/s = {:.0}% of ideal",
        100.0 * works / ideal
    );
    println!(
        "hashing     {:.1}M hashes for {:.1}M expected; {:.1}% on requests another worker answered first",
        hashes as f64 / 1e6,
        f64::from(m) * expected / 1e6,
        100.0 * (hashes - won.min(hashes)) as f64 / hashes.max(1) as f64
    );
    // The figure above carries the luck of the draw: a request needs a geometric number of
    // hashes, so 400 of them need their expected total give or take 5% (one standard
    // deviation), and the run's time with them. Hashes per second over the machine's rate is
    // the same measure without that luck: the share of the machine's hashing the swarm used.
    println!(
        "capacity    {:.1} MH/s hashed over the run = {:.0}% of the machine's rate (the sustained figure without the luck of the draw)",
        hashes as f64 / secs / 1e6,
        100.0 * hashes as f64 / secs / rate
    );
    // Where the cores went, by thread: the solvers' (`dpow-cpu-*`) and everything else (the
    // ten nodes' gossip, signature checks, ledger, the runtime).
    if let (Some((solving0, total0)), Some((solving1, total1))) = (cpu0, cpu1) {
        let (solving, total) = (solving1 - solving0, total1 - total0);
        let span = secs * cores as f64;
        println!(
            "cores       of the {cores} cores' time: solvers {:.1}%, everything else {:.1}%; \
             hashing at {:.1} MH/s while solving (the machine's rate over its cores: {:.1})",
            100.0 * solving / span,
            100.0 * (total - solving) / span,
            hashes as f64 / solving.max(1e-9) / 1e6,
            rate / cores as f64 / 1e6,
        );
    }
    Ok(())
}

/// This process's CPU time so far, user and system, in seconds: its solver threads'
/// (`dpow-cpu-*`, alive now) and the whole process's (threads gone included). `None` where
/// /proc is not there.
fn cpu_seconds() -> Option<(f64, f64)> {
    // utime and stime are the 14th and 15th fields of a stat line, in clock ticks (100 a
    // second on Linux); the name before them is in parentheses and may hold spaces.
    fn ticks(stat: &str) -> Option<(String, f64)> {
        let (head, rest) = stat.rsplit_once(')')?;
        let name = head.split_once('(')?.1.to_string();
        let f: Vec<&str> = rest.split_whitespace().collect();
        let t = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
        Some((name, t / 100.0))
    }
    let total = ticks(&std::fs::read_to_string("/proc/self/stat").ok()?)?.1;
    let mut solving = 0.0;
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        if let Some((name, t)) = ticks(&stat)
            && name.starts_with("dpow-cpu-")
        {
            solving += t;
        }
    }
    Some((solving, total))
}
