//! `dpow request`: ask the network for work as a registered service, once or many times.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use blake2::digest::consts::U8;
use blake2::{Blake2b, Digest};
use clap::Args;
use dpow_keys::keyfile;
use dpow_protocol::{BlockKind, Difficulty, Multiplier, Priority, Root, Work};
use serde_json::json;

use super::client::ClientArgs;
use crate::genesis::Genesis;
use crate::net::{SubmitError, WorkAsk, percentile};
use crate::output::Output;

/// `dpow request`
#[derive(Debug, Args)]
pub struct RequestArgs {
    /// The service key that signs the requests (registered by a registrar).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// The block root; with --count, roots are random unless this is given.
    #[arg(long, value_name = "HASH")]
    pub hash: Option<Root>,
    /// Block kinds, comma-separated; with --count they are used in turn.
    #[arg(long, value_delimiter = ',', value_name = "KIND,..", group = "target")]
    pub kind: Vec<BlockKind>,
    /// Explicit threshold, 16 hex digits.
    #[arg(long, value_name = "HEX", group = "target")]
    pub difficulty: Option<Difficulty>,
    /// Multiplier over the network profile's send threshold.
    #[arg(long, value_name = "X", group = "target")]
    pub multiplier: Option<Multiplier>,
    /// How many requests to make (one at a time unless --concurrency).
    #[arg(long, default_value_t = 1)]
    pub count: u32,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 1)]
    pub concurrency: u32,
    /// Low priority (precache).
    #[arg(long)]
    pub precache: bool,
    /// Seconds each request stays valid.
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    pub timeout: f64,
    /// How to reach the network.
    #[command(flatten)]
    pub client: ClientArgs,
}

struct Done {
    kind: Option<BlockKind>,
    root: Root,
    difficulty: Difficulty,
    work: Work,
    worker: String,
    latency: Duration,
}

/// blake2b-64(nonce_le ‖ root) with the general-purpose `blake2` crate: a check independent of
/// the protocol crate's own hash.
fn reference_value(root: &Root, work: Work) -> u64 {
    let mut h = Blake2b::<U8>::new();
    h.update(work.0.to_le_bytes());
    h.update(root.0);
    let mut v = [0u8; 8];
    v.copy_from_slice(&h.finalize());
    u64::from_le_bytes(v)
}

fn random_root(i: u32) -> Root {
    let mut r = [0u8; 32];
    for (k, chunk) in r.chunks_mut(8).enumerate() {
        let x = dpow_solver::random_start() ^ ((i as u64) << 32 | k as u64);
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    Root(r)
}

/// Run `dpow request`.
pub(super) fn run(a: RequestArgs, out: Output) -> anyhow::Result<ExitCode> {
    if a.count == 0 || a.concurrency == 0 {
        bail!("--count and --concurrency must be at least 1");
    }
    if !(a.timeout.is_finite() && a.timeout > 0.0) {
        bail!("--timeout must be a positive number of seconds");
    }
    let genesis = Genesis::load(&a.client.genesis)?;
    let key = keyfile::read(&a.key)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_async(a, genesis, key, out))
}

async fn run_async(
    a: RequestArgs,
    genesis: Genesis,
    key: dpow_keys::SecretKey,
    out: Output,
) -> anyhow::Result<ExitCode> {
    let profile = genesis.profile.clone();
    let node = a.client.connect(Some(key)).await?;
    let node = std::sync::Arc::new(node);
    let base = profile.threshold(BlockKind::Send);
    let ask_for = |i: u32| {
        let kind = if a.kind.is_empty() {
            None
        } else {
            Some(a.kind[i as usize % a.kind.len()])
        };
        let difficulty = match (a.difficulty, a.multiplier, kind) {
            (Some(d), _, _) => d,
            (_, Some(m), _) => Difficulty::from_multiplier(m, base),
            (_, _, Some(k)) => profile.threshold(k),
            _ => base,
        };
        let root = match a.hash {
            Some(h) if a.count == 1 => h,
            Some(h) => {
                // Distinct roots, derived from the one given.
                let mut r = h.0;
                r[..4].copy_from_slice(&i.to_le_bytes());
                Root(r)
            }
            None => random_root(i),
        };
        WorkAsk {
            root,
            difficulty,
            kind,
            account: None,
            priority: if a.precache {
                Priority::Precache
            } else {
                Priority::Normal
            },
            lifetime: Duration::from_secs_f64(a.timeout),
        }
    };
    let started = Instant::now();
    let mut done: Vec<Done> = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    let mut receipts = Vec::new();
    let mut next = 0u32;
    let mut in_flight = tokio::task::JoinSet::new();
    while next < a.count || !in_flight.is_empty() {
        while next < a.count && in_flight.len() < a.concurrency as usize {
            let ask = ask_for(next);
            let node = node.clone();
            in_flight.spawn(async move {
                let r = node.submit(ask.clone()).await;
                (ask, r)
            });
            next += 1;
        }
        let Some(joined) = in_flight.join_next().await else {
            break;
        };
        let (ask, r) = joined.context("a request task failed")?;
        match r {
            Ok(ans) => {
                receipts.extend(ans.receipt);
                let value = reference_value(&ask.root, ans.work);
                if value < ask.difficulty.0 {
                    bail!(
                        "the network returned work {} for {} below its difficulty {} — this is a bug",
                        ans.work,
                        ask.root,
                        ask.difficulty
                    );
                }
                let d = Done {
                    kind: ask.kind,
                    root: ask.root,
                    difficulty: ask.difficulty,
                    work: ans.work,
                    worker: ans.worker.to_string(),
                    latency: ans.latency,
                };
                out.progress(&format!(
                    "{}/{} answered, last in {:.1} ms",
                    done.len() + 1,
                    a.count,
                    d.latency.as_secs_f64() * 1e3
                ));
                done.push(d);
            }
            Err(e @ (SubmitError::Expired | SubmitError::Refused(_))) => {
                failed.push(format!("{}: {e}", ask.root));
            }
            Err(e) => return Err(e.into()),
        }
    }
    out.progress_done();
    let elapsed = started.elapsed();
    // This short-lived node keeps no store: once it is gone no peer can fetch its receipts
    // from it, so it stays until peers hold every one it signed.
    let unheld = super::confirm::receipts_unheld(
        &node,
        &genesis.id,
        &receipts,
        super::confirm::CONFIRM_LIMIT,
    )
    .await?;
    if !unheld.is_empty() {
        tracing::warn!(
            "{} of {} receipts are held by no peer after {:?}; they may be lost, and the workers unpaid for that work",
            unheld.len(),
            receipts.len(),
            super::confirm::CONFIRM_LIMIT
        );
    }
    if let Ok(node) = std::sync::Arc::try_unwrap(node) {
        node.shutdown().await?;
    }
    let held = receipts.len() - unheld.len();
    report(
        &a,
        &profile,
        &done,
        &failed,
        elapsed,
        (receipts.len(), held),
        out,
    )?;
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_ERROR)
    })
}

fn report(
    a: &RequestArgs,
    profile: &dpow_protocol::Profile,
    done: &[Done],
    failed: &[String],
    elapsed: Duration,
    (signed, held): (usize, usize),
    out: Output,
) -> anyhow::Result<()> {
    let base = profile.threshold(BlockKind::Send);
    let mut lat: Vec<f64> = done.iter().map(|d| d.latency.as_secs_f64() * 1e3).collect();
    lat.sort_by(f64::total_cmp);
    let mut wins: BTreeMap<&str, u32> = BTreeMap::new();
    for d in done {
        *wins.entry(d.worker.as_str()).or_default() += 1;
    }
    let per_sec = done.len() as f64 / elapsed.as_secs_f64().max(1e-9);
    let mut human = String::new();
    if a.count == 1 {
        if let Some(d) = done.first() {
            let value = Difficulty(reference_value(&d.root, d.work));
            human.push_str(&format!(
                "work        {}\n\
                 difficulty  {value}  (threshold {})\n\
                 multiplier  {}\n\
                 latency     {:.1} ms\n\
                 worker      {}\n",
                d.work,
                d.difficulty,
                value.to_multiplier(base),
                d.latency.as_secs_f64() * 1e3,
                d.worker
            ));
        }
    } else {
        human.push_str(&format!(
            "requests  {} answered, {} failed, in {:.2} s ({per_sec:.1} works/s)\n\
             latency   p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms\n\
             wins      ",
            done.len(),
            failed.len(),
            elapsed.as_secs_f64(),
            percentile(&lat, 50.0),
            percentile(&lat, 95.0),
            percentile(&lat, 99.0),
            lat.last().copied().unwrap_or(0.0),
        ));
        let w: Vec<String> = wins
            .iter()
            .map(|(k, v)| format!("{}…{v}", &k[..13]))
            .collect();
        human.push_str(&w.join(", "));
        human.push('\n');
    }
    if a.count > 1 {
        human.push_str(&format!(
            "receipts  {signed} signed, {held} held by peers\n"
        ));
    }
    for f in failed {
        human.push_str(&format!("failed    {f}\n"));
    }
    let results: Vec<_> = done
        .iter()
        .map(|d| {
            let value = Difficulty(reference_value(&d.root, d.work));
            json!({
                "hash": d.root.to_string(),
                "kind": d.kind.map(|k| k.as_str()),
                "work": d.work.to_string(),
                "difficulty": value.to_string(),
                "threshold": d.difficulty.to_string(),
                "multiplier": value.to_multiplier(base).to_string(),
                "latency_ms": d.latency.as_secs_f64() * 1e3,
                "worker": d.worker,
            })
        })
        .collect();
    let js = json!({
        "answered": done.len(),
        "failed": failed,
        "elapsed_s": elapsed.as_secs_f64(),
        "works_per_second": per_sec,
        "latency_ms": {
            "p50": percentile(&lat, 50.0),
            "p95": percentile(&lat, 95.0),
            "p99": percentile(&lat, 99.0),
            "max": lat.last().copied().unwrap_or(0.0),
        },
        "wins": wins,
        "receipts": { "signed": signed, "held_by_peers": held },
        "results": results,
    });
    out.emit(&human, &js)?;
    Ok(())
}
