//! `dpow bench --live RATE`: a node taking live receipts from gossip at a steady rate, and
//! what that does to its event loop's turns, for docs/benchmarks.md.
//!
//! A network of its own (the test profile, one-day epochs) with a registrar and a funded
//! service. Node A, with the registry, publishes receipts made beforehand on the receipts
//! topic at `RATE` a second for `--live-seconds`; node B, its books on disk, takes them as
//! from any peer: screened, three signatures checked in its verification pool (B met neither
//! their requests nor their results before), the work and the price checked, stored. Reported:
//! how many B held when the last was published and how long it took to hold them all, B's
//! turns over its last 4,096 (all under the load: read as the last receipt is published), and
//! what B refused. A does not hold what it publishes, so what B refuses (its verification
//! queue full) or A's gossip cannot queue is lost here, where a real publisher would offer it
//! again at the next catch-up.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use dpow_keys::SecretKey;

use super::bench_ledger::{Keys, rss_mib, say};
use crate::net::{self, Topic, now_ms};
use crate::output::Output;

/// How long node B may take to hold or refuse everything once publishing ends.
const DRAIN: Duration = Duration::from_secs(120);

/// Run the benchmark: `rate` receipts a second for `seconds`, node B's database under `dir`.
pub(super) fn run(rate: u64, seconds: u64, dir: &Path, out: &Output) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(live(rate, seconds, dir, out))
}

async fn live(rate: u64, seconds: u64, dir: &Path, out: &Output) -> anyhow::Result<()> {
    let (genesis, registrar) = super::bench_catchup::network("live")?;
    let service = SecretKey::generate()?;
    let keys = Keys::of(genesis.id, service.clone())?;
    let n = rate * seconds;
    let t = Instant::now();
    let now = now_ms();
    let receipts = keys.receipts(0..n, now, now + 1, 0)?;
    say(
        out,
        format!(
            "made {n} receipts in {:.0} s; node A publishes them at {rate}/s for {seconds} s",
            t.elapsed().as_secs_f64()
        ),
    );

    let (a, addr) = super::bench_catchup::node_a(&genesis, None, &service, &registrar).await?;
    let entries = super::bench_ledger::funded(&service).len();
    let b = net::spawn(super::bench_catchup::node_b(genesis, addr, &dir.join("b"))?).await?;
    b.wait_stats(Duration::from_secs(60), |s| {
        s.registry_entries >= entries && s.connected_peers >= 1
    })
    .await
    .map_err(|_| anyhow::anyhow!("node B never learnt the registry from node A"))?;

    let start = Instant::now();
    let mut sent = 0usize;
    // Receipts node A's gossip could not queue for B (its queue to B full): lost here, as A
    // does not hold them in its books to offer again.
    let mut unsent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut reported = Instant::now();
    while sent < receipts.len() {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as usize).min(receipts.len());
        while sent < due {
            if let Err(e) = a
                .publish_raw(Topic::Receipts, receipts[sent].bytes().to_vec())
                .await
            {
                if unsent == 0 {
                    say(out, format!("node A could not publish a receipt: {e:#}"));
                }
                unsent += 1;
            }
            sent += 1;
        }
        if reported.elapsed() >= Duration::from_secs(5) {
            let s = b.stats();
            say(
                out,
                format!(
                    "after {:.0} s: published {sent}, node B holds {}; B's last 4096 turns p50 {:.2} ms, p99 {:.2} ms",
                    start.elapsed().as_secs_f64(),
                    s.ledger_receipts,
                    s.turn_ms.p50,
                    s.turn_ms.p99
                ),
            );
            reported = Instant::now();
        }
    }
    let published = start.elapsed().as_secs_f64();
    let loaded = b.stats();
    // Every receipt published is held or was refused (one verification job each), and
    // nothing waits to be verified.
    let all = b
        .wait_stats(DRAIN, |s| {
            s.ledger_receipts as u64 + s.verify_refused >= n - unsent && s.verify_queued == 0
        })
        .await;
    let held_all = start.elapsed().as_secs_f64();
    let done = match &all {
        Ok(s) | Err(s) => s.clone(),
    };
    say(
        out,
        format!(
            "published {} of {n} in {published:.1} s ({:.0}/s; {unsent} not queued by A's gossip); node B held {} of them then, {} after {:.1} s ({:.0}/s taken over the whole run)",
            n - unsent,
            (n - unsent) as f64 / published,
            loaded.ledger_receipts,
            done.ledger_receipts,
            held_all,
            done.ledger_receipts as f64 / held_all
        ),
    );
    say(
        out,
        format!(
            "node B's event loop under the load, last {} turns: p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, the slowest 1% {:?}; longest turn since start {:.1} ms ({})",
            loaded.turn_ms.samples,
            loaded.turn_ms.p50,
            loaded.turn_ms.p95,
            loaded.turn_ms.p99,
            loaded.turn_slow_kinds,
            loaded.turn_max_ms,
            loaded.turn_max_kind
        ),
    );
    say(
        out,
        format!(
            "node B: {} signature checks ({:.2} a receipt), {} verification jobs refused (queue full), refused {:?}; resident memory of both nodes, the bench and its receipts {:.0} MiB",
            done.signature_checks,
            done.signature_checks as f64 / (done.ledger_receipts.max(1)) as f64,
            done.verify_refused,
            done.rejected,
            rss_mib().0
        ),
    );
    b.shutdown().await?;
    a.shutdown().await?;
    if all.is_err() {
        bail!(
            "node B held {} of {n} receipts and had refused {} {} s after the last was published",
            done.ledger_receipts,
            done.verify_refused,
            DRAIN.as_secs()
        );
    }
    Ok(())
}
