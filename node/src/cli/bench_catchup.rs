//! `dpow bench --catch-up N`: how long a node joining from empty takes to hold a peer's N
//! receipts, over loopback, for docs/benchmarks.md.
//!
//! A network of its own (the test profile, one-day epochs) with a registrar and a funded
//! service; node A's books are filled directly with N receipts of the current epoch (made on
//! every core, taken as the event loop takes them), then A starts on them and registers the
//! service. Node B starts empty, dials A and catches up as any node does: digests, id pages,
//! fetches, and every receipt verified (three signatures, the work, the price) before it is
//! stored. Reported: B's time from start until it holds all N, its rate and its progress.
//!
//! With `--history` the receipts are spread over 30 closed days instead (final epochs, each
//! checkpointed by the registrar, the checkpoints held by A): B fetches each day's id list
//! whole, checks it against the checkpoint, then fetches and verifies its receipts. With
//! `--light` B is a light ledger and keeps each day as its checkpoint.

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

/// Days of closed books with `--history`.
const HISTORY_DAYS: u64 = 30;

/// When node A's receipts were accepted, and how node B keeps closed books.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum History {
    /// Every receipt today (an open epoch).
    None,
    /// Over 30 closed, checkpointed days; B fetches them all.
    Full,
    /// Over 30 closed, checkpointed days; B is a light ledger.
    Light,
}

/// Run the benchmark with `n` receipts, the two nodes' databases under `dir`.
pub(super) fn run(n: u64, history: History, dir: &Path, out: &Output) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(catch_up(n, history, dir, out))
}

/// A network of the bench's own: the test profile, one-day epochs, one registrar (returned
/// with it).
pub(super) fn network(name: &str) -> anyhow::Result<(Genesis, SecretKey)> {
    let registrar = SecretKey::generate()?;
    let epoch_ms = 86_400_000;
    let mut genesis = Genesis {
        network: format!("bench-{name}-{}", std::process::id()),
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
    Ok((genesis, registrar))
}

/// Node A of a two-node bench: on loopback, on `store` (memory books if none), the service
/// registered and funded by the registrar. With its address.
pub(super) async fn node_a(
    genesis: &Genesis,
    store: Option<Arc<Store>>,
    service: &SecretKey,
    registrar: &SecretKey,
) -> anyhow::Result<(net::NodeHandle, libp2p::Multiaddr)> {
    let mut cfg = NodeConfig::new(genesis.clone(), SecretKey::generate()?);
    cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse()?];
    cfg.store = store;
    let a = net::spawn(cfg).await?;
    let addr = a
        .listen_addrs(Duration::from_secs(10))
        .await?
        .into_iter()
        .next()
        .context("node A's address")?;
    for action in super::bench_ledger::funded(service) {
        a.registry(action, registrar.clone()).await?;
    }
    Ok((a, addr))
}

/// Node B's configuration: on loopback, dialling node A at `a`, its books on disk at `dir`.
pub(super) fn node_b(
    genesis: Genesis,
    a: libp2p::Multiaddr,
    dir: &Path,
) -> anyhow::Result<NodeConfig> {
    let mut cfg = NodeConfig::new(genesis, SecretKey::generate()?);
    cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse()?];
    cfg.dial = vec![a];
    cfg.store = Some(Arc::new(Store::open(dir)?));
    Ok(cfg)
}

async fn catch_up(n: u64, history: History, dir: &Path, out: &Output) -> anyhow::Result<()> {
    let (genesis, registrar) = network("catch-up")?;
    let epoch_ms = genesis.epoch_ms;
    let service = SecretKey::generate()?;
    let keys = Keys::of(genesis.id, service.clone())?;

    // A's books: n receipts accepted a moment after they were asked for, now (or over the
    // 30 days before yesterday, with the registrar's checkpoint of each).
    let t0 = Instant::now();
    let store_a = Arc::new(Store::open(&dir.join("a"))?);
    let mut checkpoints = Vec::new();
    let digest_time = {
        let mut books = Books::open(store_a.clone(), epoch_ms, genesis.id)?;
        let now = now_ms();
        let today = now - now % epoch_ms;
        let start = today.saturating_sub((HISTORY_DAYS + 1) * epoch_ms);
        let step = HISTORY_DAYS * epoch_ms / n;
        let mut done = 0;
        while done < n {
            let end = (done + 65_536).min(n);
            let made = match history {
                History::None => keys.receipts(done..end, now, now + 1, 0)?,
                History::Full | History::Light => keys.past_receipts(done..end, start, step)?,
            };
            for r in made {
                books.ingest(&r)?;
            }
            books.sync()?;
            done = end;
        }
        if history != History::None {
            for (epoch, receipts) in books.epochs()? {
                let claims = books.claims_in_epoch(epoch)?;
                let c = dpow_protocol::Checkpoint {
                    registrar: registrar.public(),
                    epoch,
                    epoch_ms,
                    digest: books.epoch_digest(epoch)?,
                    receipts,
                    credits: claims.accounts.into_iter().collect(),
                    unclaimed: claims.unclaimed,
                    created_ms: now,
                };
                checkpoints.push(dpow_protocol::Signed::sign(c, &registrar, &genesis.id)?);
            }
        }
        // What a digest of one big epoch costs (it reads every id of the epoch): each
        // peer's catch-up and the statistics ask for it.
        let biggest = books
            .epochs()?
            .into_iter()
            .max_by_key(|(_, held)| *held)
            .map_or(0, |(e, _)| e);
        let t = Instant::now();
        books.epoch_digest(biggest)?;
        t.elapsed()
    };
    say(
        out,
        format!(
            "node A's books: {n} receipts made and stored in {:.0} s; the digest of its biggest epoch takes {:.0} ms",
            t0.elapsed().as_secs_f64(),
            digest_time.as_secs_f64() * 1e3
        ),
    );

    let (a, addr) = node_a(&genesis, Some(store_a), &service, &registrar).await?;
    for c in &checkpoints {
        a.publish_checkpoint(c.bytes().to_vec()).await?;
    }
    if !checkpoints.is_empty() {
        say(
            out,
            format!(
                "node A's receipts span {} closed days, each checkpointed by the registrar",
                checkpoints.len()
            ),
        );
    }

    let mut cfg = node_b(genesis, addr, &dir.join("b"))?;
    cfg.tuning.adopt_checkpoints = history == History::Light;
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
    if history == History::Light {
        say(
            out,
            format!(
                "node B, a light ledger, holds the books of {n} receipts from empty after {t:.1} s: {} closed days kept as their checkpoints; node A answered {} sync requests ({:.3} MB); resident memory of both nodes and the bench {:.0} MiB",
                s.epochs_adopted,
                a.stats().sync_answered,
                a.stats().sync_answered_bytes as f64 / 1e6,
                rss_mib().0
            ),
        );
        b.shutdown().await?;
        a.shutdown().await?;
        return Ok(());
    }
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
    // The last 4,096 turns: the end of the catch-up, on books of n receipts.
    for (name, st) in [("A", &sa), ("B", &s)] {
        say(
            out,
            format!(
                "node {name}'s event loop, last {} turns: p50 {:.2} ms, p99 {:.2} ms, the slowest 1% {:?}; longest turn since start {:.1} ms ({}); digests computed on it {}, off it {}",
                st.turn_ms.samples,
                st.turn_ms.p50,
                st.turn_ms.p99,
                st.turn_slow_kinds,
                st.turn_max_ms,
                st.turn_max_kind,
                st.digests_inline,
                st.digests_off_loop
            ),
        );
    }
    b.shutdown().await?;
    a.shutdown().await?;
    Ok(())
}
