//! `dpow bench --catch-up N`: how long a node joining from empty takes to hold a peer's N
//! receipts, over loopback, for docs/benchmarks.md.
//!
//! A network of its own (the test profile, one-day epochs) with a registrar and a funded
//! service; node A's books are filled directly with N receipts of the current epoch (made on
//! every core, taken as the event loop takes them), then A starts on them and registers the
//! service. Node B starts empty, dials A and catches up as any node does: digests, id pages,
//! fetches, and every receipt verified (three signatures, the work, the price) before it is
//! stored. Reported: B's time from start until it holds all N, its rate and its progress.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use dpow_keys::SecretKey;
use dpow_protocol::{Profile, TimePolicy};

use super::bench_ledger::{Keys, rss_mib, say};
use crate::genesis::Genesis;
use crate::net::{self, NodeConfig, now_ms};
use crate::output::Output;
use crate::store::{Books, Store};

/// The longest the catch-up may take before the benchmark gives up.
const LIMIT: Duration = Duration::from_secs(3600);

/// Run the benchmark with `n` receipts, the two nodes' databases under `dir`.
pub(super) fn run(n: u64, dir: &Path, out: &Output) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(catch_up(n, dir, out))
}

async fn catch_up(n: u64, dir: &Path, out: &Output) -> anyhow::Result<()> {
    let registrar = SecretKey::generate()?;
    let epoch_ms = 86_400_000;
    let mut genesis = Genesis {
        network: format!("bench-catch-up-{}", std::process::id()),
        profile: Profile::test(),
        registrars: vec![registrar.public()],
        bootstrap: vec![],
        time: TimePolicy::default(),
        epoch_ms,
        finality: dpow_protocol::Finality {
            epoch_ms,
            max_lifetime_ms: TimePolicy::default().max_lifetime_ms,
            grace_ms: dpow_protocol::Finality::DEFAULT_GRACE_MS,
        },
        volume: dpow_protocol::volume::VolumePolicy::default(),
        id: dpow_protocol::NetworkId([0; 32]),
    };
    genesis.seal()?;
    let service = SecretKey::generate()?;
    let keys = Keys::of(genesis.id, service.clone())?;

    // A's books: n receipts accepted a moment after they were asked for, now.
    let t0 = Instant::now();
    let store_a = Arc::new(Store::open(&dir.join("a"))?);
    let digest_time = {
        let mut books = Books::open(store_a.clone(), epoch_ms, genesis.id)?;
        let now = now_ms();
        let mut done = 0;
        while done < n {
            let end = (done + 65_536).min(n);
            for r in keys.receipts(done..end, now, now + 1, 0)? {
                books.ingest(&r)?;
            }
            books.sync()?;
            done = end;
        }
        // What a digest of one big epoch costs (it reads every id of the epoch): each
        // peer's catch-up and the statistics ask for it.
        let t = Instant::now();
        books.epoch_digest(dpow_protocol::ledger::epoch_of(now, epoch_ms))?;
        t.elapsed()
    };
    say(
        out,
        format!(
            "node A's books: {n} receipts made and stored in {:.0} s; the digest of their epoch takes {:.0} ms",
            t0.elapsed().as_secs_f64(),
            digest_time.as_secs_f64() * 1e3
        ),
    );

    let loopback: libp2p::Multiaddr = "/ip4/127.0.0.1/tcp/0".parse()?;
    let mut cfg = NodeConfig::new(genesis.clone(), SecretKey::generate()?);
    cfg.listen = vec![loopback.clone()];
    cfg.store = Some(store_a);
    let a = net::spawn(cfg).await?;
    let addr = a
        .listen_addrs(Duration::from_secs(10))
        .await?
        .into_iter()
        .next()
        .context("node A's address")?;
    for action in super::bench_ledger::funded(&service) {
        a.registry(action, registrar.clone()).await?;
    }

    let mut cfg = NodeConfig::new(genesis, SecretKey::generate()?);
    cfg.listen = vec![loopback];
    cfg.dial = vec![addr];
    cfg.store = Some(Arc::new(Store::open(&dir.join("b"))?));
    let t0 = Instant::now();
    let b = net::spawn(cfg).await?;
    let mut last = (Instant::now(), 0usize);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let held = b.stats().ledger_receipts;
        if held as u64 >= n {
            break;
        }
        if last.0.elapsed() >= Duration::from_secs(30) {
            say(
                out,
                format!(
                    "node B holds {held} of {n} after {:.0} s ({:.0}/s in the last 30 s)",
                    t0.elapsed().as_secs_f64(),
                    (held - last.1.min(held)) as f64 / last.0.elapsed().as_secs_f64()
                ),
            );
            last = (Instant::now(), held);
        }
        if t0.elapsed() > LIMIT {
            bail!("node B holds {held} of {n} after an hour: giving up");
        }
    }
    let t = t0.elapsed().as_secs_f64();
    let s = b.stats();
    say(
        out,
        format!(
            "node B caught up {n} receipts from empty in {t:.1} s ({:.0} receipts/s, every one verified, on {} cores); resident memory of both nodes and the bench {:.0} MiB",
            n as f64 / t,
            std::thread::available_parallelism().map_or(1, |c| c.get()),
            rss_mib().0
        ),
    );
    let sa = a.stats();
    say(
        out,
        format!(
            "node A answered {} sync requests ({:.0} MB), {} over its budget for B (Busy); node B refused {} verification jobs (queue full)",
            sa.sync_answered,
            sa.sync_answered_bytes as f64 / 1e6,
            sa.sync_throttled,
            s.verify_refused
        ),
    );
    b.shutdown().await?;
    a.shutdown().await?;
    Ok(())
}
