//! `dpow bench --ledger N`: ledger figures for docs/benchmarks.md.
//!
//! 1. ingest per core: what a node does with each receipt from the network, on one thread —
//!    verify (`Validator::check_receipt`: three signatures, one hash, price, registration,
//!    times), take into the books on disk (`Books::ingest`: what the event loop does), and sync
//!    the write-ahead log every 256 receipts (the store task's group commit);
//! 2. fill: the other receipts, spread over a year of daily epochs, generated and taken in
//!    chunks so the benchmark's own memory stays flat; then RocksDB bytes per receipt;
//! 3. in a fresh process (`--ledger-reopen`), as a restarting node: open the books, answer
//!    balances and the busiest epoch's payout, take 100,000 live receipts; its resident memory
//!    idle and its peak while ingesting, and the p99 of one `Books::ingest` call;
//! 4. `dpow ledger verify --full`'s pass: every receipt re-verified, every tally recomputed
//!    (up to N = 1,000,000);
//! 5. retention: the oldest epoch exported to an archive, the archive verified offline, the
//!    epoch pruned (`dpow ledger prune`'s steps), and the answers compared before and after.

use std::path::Path;
use std::time::Instant;

use anyhow::bail;
use dpow_keys::SecretKey;
use dpow_protocol::registry::Registry;
use dpow_protocol::validate::{Validator, ValidatorConfig};
use dpow_protocol::{
    Credits, NetworkId, Priority, Profile, Receipt, RegistryAction, RegistryEntry, Root, Signed,
    Work, WorkRequest, WorkResult,
};
use serde_json::json;

use crate::output::Output;
use crate::store::{Books, Store};

pub(super) fn say(out: &Output, line: String) {
    if let Err(e) = out.emit(&line, &json!({ "line": line })) {
        tracing::warn!("writing the report: {e}");
    }
}

const EPOCH_MS: u64 = 86_400_000;

/// The benchmark's own network (no genesis file: any id will do, as long as it is one).
fn bench_net() -> NetworkId {
    NetworkId::of_canonical_genesis(b"dpow bench --ledger")
}

/// Receipt `i`: its own root, one of 64 workers, accepted at `accepted_ms`, requested at
/// `now`.
fn receipt(
    net: &NetworkId,
    service: &SecretKey,
    workers: &[SecretKey],
    i: u64,
    now: u64,
    accepted_ms: u64,
) -> Result<Signed<Receipt>, dpow_protocol::ProtocolError> {
    let mut r = [0u8; 32];
    r[..8].copy_from_slice(&i.to_le_bytes());
    let root = Root(r);
    // The test profile's easiest difficulty (256 expected hashes): a million receipts cost
    // mostly their signatures to make.
    let d = Profile::test().min;
    let work = (0u64..)
        .map(Work)
        .find(|w| dpow_protocol::work_value(&root, *w) >= d)
        .unwrap_or(Work(0));
    let req = Signed::sign(
        WorkRequest {
            service: service.public(),
            root,
            difficulty: d,
            kind: None,
            account: None,
            nonce: i,
            created_ms: now,
            expires_ms: now + 30_000,
            priority: Priority::Normal,
            node: dpow_keys::PublicKey([7; 32]),
        },
        service,
        net,
    )?;
    let worker = &workers[(i % workers.len() as u64) as usize];
    let res = Signed::sign(
        WorkResult {
            request: req.id(),
            root,
            work,
            worker: worker.public(),
            // Each worker names an account of its own (its key's bytes, any 32 bytes will do
            // for a benchmark).
            payout: dpow_keys::NanoAccount::from_bytes(worker.public().0).ok(),
        },
        worker,
        net,
    )?;
    Signed::sign(
        Receipt {
            request: req,
            result: res,
            price: Credits::price(d),
            accepted_ms,
        },
        service,
        net,
    )
}

/// The registrar's entries that register `service` and give it credits for any benchmark.
pub(super) fn funded(service: &SecretKey) -> [RegistryAction; 2] {
    [
        RegistryAction::RegisterService {
            service: service.public(),
            name: "bench".into(),
        },
        RegistryAction::GrantCredits {
            service: service.public(),
            credits: Credits(u64::MAX / 2),
        },
    ]
}

/// Receipts to a write when the node takes several at once (`Books::ingest_all`): what one
/// verification job holds.
const INGEST_BATCH: usize = 32;

/// A year of daily epochs.
const SPAN_MS: u64 = 365 * EPOCH_MS;

/// Receipts generated and taken per chunk while filling.
const CHUNK: u64 = 65_536;

/// Keys the benchmark signs with: a service and 64 workers, of one network.
pub(super) struct Keys {
    net: NetworkId,
    service: SecretKey,
    workers: Vec<SecretKey>,
}

impl Keys {
    fn new() -> anyhow::Result<Keys> {
        Keys::of(bench_net(), SecretKey::generate()?)
    }

    /// Receipts of `service` on network `net`.
    pub(super) fn of(net: NetworkId, service: SecretKey) -> anyhow::Result<Keys> {
        Ok(Keys {
            net,
            service,
            workers: (0..64)
                .map(|_| SecretKey::generate())
                .collect::<Result<_, _>>()?,
        })
    }

    /// Receipts `range`, the i-th requested at `now` and accepted at `start + i * step`.
    pub(super) fn receipts(
        &self,
        range: std::ops::Range<u64>,
        now: u64,
        start: u64,
        step: u64,
    ) -> anyhow::Result<Vec<Signed<Receipt>>> {
        self.made(range, |i| (now, start + i * step))
    }

    /// Receipts `range`, receipt `i` requested at `start + i * step` and accepted a
    /// millisecond later (for books made of the past, every receipt as a peer would take it).
    pub(super) fn past_receipts(
        &self,
        range: std::ops::Range<u64>,
        start: u64,
        step: u64,
    ) -> anyhow::Result<Vec<Signed<Receipt>>> {
        self.made(range, |i| (start + i * step, start + i * step + 1))
    }

    /// Receipts `range`, made in parallel, receipt `i` requested and accepted at `at(i)`.
    fn made(
        &self,
        range: std::ops::Range<u64>,
        at: impl Fn(u64) -> (u64, u64) + Sync,
    ) -> anyhow::Result<Vec<Signed<Receipt>>> {
        use rayon::prelude::*;
        Ok(range
            .into_par_iter()
            .map(|i| {
                let (asked, accepted) = at(i);
                receipt(&self.net, &self.service, &self.workers, i, asked, accepted)
            })
            .collect::<Result<_, _>>()?)
    }
}

/// This process's resident memory now and at its peak, in MiB (Linux `/proc`).
pub(super) fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Run the ledger benchmark over `n` receipts, in a fresh database under `dir`.
pub(super) fn run(n: u64, dir: &Path, out: &Output) -> anyhow::Result<()> {
    if n < 1000 {
        bail!("--ledger needs at least 1000 receipts");
    }
    let net = bench_net();
    let registrar = SecretKey::generate()?;
    let keys = Keys::new()?;
    let service = &keys.service;
    let mut registry = Registry::new([registrar.public()]);
    for (seq, action) in funded(service).into_iter().enumerate() {
        let e = RegistryEntry {
            registrar: registrar.public(),
            seq: seq as u64 + 1,
            created_ms: 0,
            action,
        };
        registry
            .apply(Signed::sign(e, &registrar, &net)?)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let now = crate::net::now_ms();
    let validator = Validator::new(ValidatorConfig::new(Profile::test(), net));

    // 1. Ingest on one thread: verify, books, a WAL sync every 256. Cold: nothing about the
    // receipt seen before (catch-up). Warm: its request and result were verified when they
    // came by on gossip (a live receipt), so only the receipt's own signature is checked.
    let store = std::sync::Arc::new(Store::open(&dir.join("db"))?);
    let mut books = Books::open(store.clone(), EPOCH_MS, net)?;
    let sample = (n / 4).min(10_000);
    let live = keys.receipts(0..3 * sample, now, now + 1, 0)?;
    // What the node remembers as verified: the request and result it took on gossip.
    let seen = dpow_protocol::SignatureCache::new();
    let phases = [
        ("cold", 0..sample, 1),
        ("warm", sample..2 * sample, 1),
        ("warm", 2 * sample..3 * sample, INGEST_BATCH),
    ];
    for (name, range, batch) in phases {
        let part = &live[range.start as usize..range.end as usize];
        if name == "warm" {
            for r in part {
                r.payload().request.remember_verified(&seen);
                r.payload().result.remember_verified(&seen);
            }
        }
        let (mut t_verify, mut t_books, mut t_sync) = (0f64, 0f64, 0f64);
        let t0 = Instant::now();
        for (i, chunk) in part.chunks(batch).enumerate() {
            let a = Instant::now();
            let verified = chunk
                .iter()
                .map(|r| {
                    validator
                        .screen_receipt(r.bytes(), &registry, now + 10)
                        .map_err(|e| anyhow::anyhow!("{e}"))?
                        .verify_with(&seen)
                        .map_err(|e| anyhow::anyhow!("{e}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let b = Instant::now();
            if batch == 1 {
                books.ingest(&verified[0])?;
            } else {
                for answer in books.ingest_all(&verified) {
                    answer?;
                }
            }
            let c = Instant::now();
            if (i + 1) * batch % 256 < batch {
                books.sync()?;
            }
            t_verify += (b - a).as_secs_f64();
            t_books += (c - b).as_secs_f64();
            t_sync += c.elapsed().as_secs_f64();
        }
        books.sync()?;
        let total = t0.elapsed().as_secs_f64();
        let how = if batch == 1 {
            "one at a time".to_string()
        } else {
            format!("{batch} to a write")
        };
        say(
            out,
            format!(
                "ingest ({name}, {how}), one thread, {sample} receipts: {:.0}/s (verify {:.1} us, books {:.1} us, WAL sync {:.1} us per receipt)",
                sample as f64 / total,
                t_verify * 1e6 / sample as f64,
                t_books * 1e6 / sample as f64,
                t_sync * 1e6 / sample as f64
            ),
        );
    }
    drop(live);

    // 2. Fill: the rest over a year of epochs, in chunks (generated in parallel, not measured
    // apart from the books' time).
    let start = now.saturating_sub(SPAN_MS);
    let step = SPAN_MS / n;
    let (mut t_books, t0) = (0f64, Instant::now());
    let mut done = 3 * sample;
    while done < n {
        let end = (done + CHUNK).min(n);
        let chunk = keys.receipts(done..end, now, start, step)?;
        let t = Instant::now();
        for r in &chunk {
            books.ingest(r)?;
        }
        books.sync()?;
        t_books += t.elapsed().as_secs_f64();
        done = end;
        if done % (16 * CHUNK) < CHUNK || done == n {
            say(
                out,
                format!(
                    "filled {done} of {n} ({:.0} s; books {:.0}/s)",
                    t0.elapsed().as_secs_f64(),
                    (done - 3 * sample) as f64 / t_books.max(1e-9)
                ),
            );
        }
    }
    store.compact()?;
    let bytes = store.disk_bytes();
    say(
        out,
        format!(
            "RocksDB after compaction: {bytes} bytes for {n} receipts = {:.0} bytes/receipt (receipt, indexes and tallies; each receipt stored once in the ledger)",
            bytes as f64 / n as f64
        ),
    );
    drop(books);
    drop(store);

    // 3. A fresh process opens it as a restarting node would.
    let exe = std::env::current_exe()?;
    let status = std::process::Command::new(exe)
        .args(["bench", "--ledger-reopen"])
        .arg(dir.join("db"))
        .status()?;
    if !status.success() {
        bail!("the reopening process failed: {status}");
    }

    let store = std::sync::Arc::new(Store::open(&dir.join("db"))?);
    let books = Books::open(store, EPOCH_MS, net)?;
    // 4. `dpow ledger verify --full`'s pass (up to a million: beyond, it is that rate for longer).
    if n <= 1_000_000 {
        let t0 = Instant::now();
        let report = books.check(true, &|_, _| {})?;
        let t = t0.elapsed().as_secs_f64();
        if !report.is_clean() {
            bail!("the books do not check: {report:?}");
        }
        say(
            out,
            format!(
                "verify --full: {} receipts re-verified and every tally recomputed in {t:.1} s ({:.0}/s on {} threads): clean",
                report.receipts,
                report.receipts as f64 / t,
                rayon::current_num_threads()
            ),
        );
    }
    // 5. Retention: the oldest epoch archived, its archive verified, the epoch pruned.
    retention(&books, &registrar, dir, out)
}

/// `dpow ledger prune`'s work on the oldest epoch: export, verify-archive, prune, with a
/// registrar's checkpoint of the epoch as the command requires; the answers before and after.
fn retention(books: &Books, registrar: &SecretKey, dir: &Path, out: &Output) -> anyhow::Result<()> {
    let net = bench_net();
    let Some((epoch, held)) = books.epochs()?.first().copied() else {
        bail!("no epoch to prune");
    };
    let registry = Registry::new([]);
    let balances = books.balances(&registry)?;
    let claims = books.claims_in_epoch(epoch)?;
    let digest = books.epoch_digest(epoch)?;
    let checkpoint = Signed::sign(
        dpow_protocol::Checkpoint {
            registrar: registrar.public(),
            epoch,
            epoch_ms: EPOCH_MS,
            digest,
            receipts: held,
            credits: claims.accounts.iter().map(|(a, c)| (*a, *c)).collect(),
            unclaimed: claims.unclaimed,
            created_ms: crate::net::now_ms(),
        },
        registrar,
        &net,
    )?;
    let path = dir.join(format!("epoch-{epoch}.dpowarc"));
    let t0 = Instant::now();
    super::ledger::retention::export_books(
        books,
        &net,
        epoch,
        vec![checkpoint.bytes().to_vec()],
        &path,
    )?;
    let export = t0.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(&path)?.len();
    let t0 = Instant::now();
    let v = crate::archive::verify(&path, &net, EPOCH_MS, &[registrar.public()])?;
    let verify = t0.elapsed().as_secs_f64();
    if !v.is_vouched() {
        bail!("the archive does not verify: {v:?}");
    }
    let disk_before = books.store().disk_bytes();
    let t0 = Instant::now();
    let pruned = books.prune(epoch, crate::store::books::PRUNE_CHUNK, &|_| {})?;
    let prune = t0.elapsed().as_secs_f64();
    if books.balances(&registry)? != balances
        || books.claims_in_epoch(epoch)? != claims
        || books.epoch_digest(epoch)? != digest
    {
        bail!("pruning changed the answers");
    }
    books.store().compact()?;
    let freed = disk_before.saturating_sub(books.store().disk_bytes());
    say(
        out,
        format!(
            "retention, epoch {epoch} ({held} receipts): archive {:.0} bytes/receipt written in {:.2} s, verified offline in {:.2} s ({:.0}/s), pruned in {:.2} s ({} deleted, {} kept as evidence), {:.0} bytes/receipt freed after compaction; balances, payout and digest unchanged",
            bytes as f64 / held.max(1) as f64,
            export,
            verify,
            held as f64 / verify.max(1e-9),
            prune,
            pruned.deleted,
            pruned.kept,
            freed as f64 / held.max(1) as f64
        ),
    );
    Ok(())
}

/// The benchmark's third step, in its own process: see the module docs.
pub(super) fn reopen(db: &Path, out: &Output) -> anyhow::Result<()> {
    let net = bench_net();
    let (rss_before, _) = rss_mib();
    let t0 = Instant::now();
    let store = std::sync::Arc::new(Store::open(db)?);
    let mut books = Books::open_for_node(store, EPOCH_MS, net, false)?;
    let open = t0.elapsed().as_secs_f64();
    let held = books.len()?;
    let registry = Registry::new([]);
    let t0 = Instant::now();
    let balances = books.balances(&registry)?;
    let bal = t0.elapsed().as_secs_f64();
    let busiest = books
        .epochs()?
        .into_iter()
        .max_by_key(|(_, count)| *count)
        .map_or(0, |(e, _)| e);
    let t0 = Instant::now();
    let claims = books.claims_in_epoch(busiest)?;
    let report =
        dpow_protocol::ledger::PayoutReport::new(busiest, &claims.accounts, 10u128.pow(30))?;
    let pay = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let digest = books.epoch_digest(busiest)?;
    let dig = t0.elapsed().as_secs_f64();
    let (rss_idle, _) = rss_mib();
    say(
        out,
        format!(
            "reopened {held} receipts in {:.3} s (no receipt read, no signature checked); balances {:.1} ms ({} workers), payout of epoch {busiest} {:.1} ms ({} lines), its digest {:.1} ms ({}…); resident memory {rss_idle:.0} MiB (process alone {rss_before:.0} MiB)",
            open,
            bal * 1e3,
            balances.workers.len(),
            pay * 1e3,
            report.lines().len(),
            dig * 1e3,
            &hex::encode(digest)[..8]
        ),
    );
    // Live receipts, as the event loop takes them, with the store task's sync every 256.
    let keys = Keys::new()?;
    let now = crate::net::now_ms();
    let mut turns = Vec::with_capacity(100_000);
    let t0 = Instant::now();
    for part in 0..20u64 {
        let chunk = keys.receipts(part * 5_000..(part + 1) * 5_000, now, now, 0)?;
        for (i, r) in chunk.iter().enumerate() {
            let t = Instant::now();
            books.ingest(r)?;
            turns.push(t.elapsed().as_secs_f64() * 1e6);
            if i % 256 == 255 {
                books.sync()?;
            }
        }
    }
    books.sync()?;
    let total = t0.elapsed().as_secs_f64();
    turns.sort_by(f64::total_cmp);
    let (rss_after, peak) = rss_mib();
    say(
        out,
        format!(
            "took 100000 live receipts into {held}: Books::ingest p50 {:.0} us, p99 {:.0} us, max {:.0} us; resident memory {rss_after:.0} MiB, peak {peak:.0} MiB ({:.1} s with generating them)",
            percentile(&turns, 0.5),
            percentile(&turns, 0.99),
            percentile(&turns, 1.0),
            total
        ),
    );
    Ok(())
}
