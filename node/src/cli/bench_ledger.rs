//! `dpow bench --ledger N`: ledger figures for docs/benchmarks.md.
//!
//! 1. ingest per core: what a node does with each receipt from the network, on one thread —
//!    verify (`Validator::check_receipt`: three signatures, one hash, price, registration,
//!    times), take into the `Ledger`, and write to RocksDB in synced batches of 256 (the
//!    node's group commit);
//! 2. recompute over N receipts: a node's start-up (read every receipt from RocksDB and
//!    verify it again, in parallel), then balances and an epoch's payout over all of them;
//! 3. RocksDB bytes per receipt, after compaction.

use std::path::Path;
use std::time::Instant;

use anyhow::bail;
use dpow_keys::SecretKey;
use dpow_protocol::ledger::Ledger;
use dpow_protocol::registry::Registry;
use dpow_protocol::validate::{Validator, ValidatorConfig};
use dpow_protocol::{
    Credits, NetworkId, Priority, Profile, Receipt, RegistryAction, RegistryEntry, Root, Signed,
    Work, WorkRequest, WorkResult,
};
use serde_json::json;

use crate::output::Output;
use crate::store::{Store, StoredReceipt};

fn say(out: &Output, line: String) {
    if let Err(e) = out.emit(&line, &json!({ "line": line })) {
        tracing::warn!("writing the report: {e}");
    }
}

const EPOCH_MS: u64 = 86_400_000;

/// The benchmark's own network (no genesis file: any id will do, as long as it is one).
fn bench_net() -> NetworkId {
    NetworkId::of_canonical_genesis(b"dpow bench --ledger")
}

/// Receipt `i`: its own root, one of 64 workers, accepted now-ish.
fn receipt(
    service: &SecretKey,
    workers: &[SecretKey],
    i: u64,
    now: u64,
) -> Result<Signed<Receipt>, dpow_protocol::ProtocolError> {
    let net = bench_net();
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
        &net,
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
        &net,
    )?;
    Signed::sign(
        Receipt {
            request: req,
            result: res,
            price: Credits::price(d),
            accepted_ms: now + 1,
        },
        service,
        &net,
    )
}

/// Run the ledger benchmark over `n` receipts, in a fresh database under `dir`.
pub(super) fn run(n: u64, dir: &Path, out: &Output) -> anyhow::Result<()> {
    if n < 1000 {
        bail!("--ledger needs at least 1000 receipts");
    }
    let net = bench_net();
    let registrar = SecretKey::generate()?;
    let service = SecretKey::generate()?;
    let workers: Vec<SecretKey> = (0..64)
        .map(|_| SecretKey::generate())
        .collect::<Result<_, _>>()?;
    let mut registry = Registry::new([registrar.public()]);
    for (seq, action) in [
        RegistryAction::RegisterService {
            service: service.public(),
            name: "bench".into(),
        },
        RegistryAction::GrantCredits {
            service: service.public(),
            credits: Credits(u64::MAX / 2),
        },
    ]
    .into_iter()
    .enumerate()
    {
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

    // Generate (in parallel; not measured).
    let t0 = Instant::now();
    let receipts: Vec<(dpow_protocol::MessageId, Vec<u8>)> = {
        use rayon::prelude::*;
        (0..n)
            .into_par_iter()
            .map(|i| {
                let r = receipt(&service, &workers, i, now)?;
                Ok((r.id(), r.bytes().to_vec()))
            })
            .collect::<Result<_, dpow_protocol::ProtocolError>>()?
    };
    say(
        out,
        format!(
            "generated {n} receipts in {:.1} s ({} bytes each on the wire, first one)",
            t0.elapsed().as_secs_f64(),
            receipts[0].1.len()
        ),
    );

    // 1. Ingest on one thread: verify, ledger, synced batches of 256. Cold: nothing about the
    // receipt seen before (catch-up). Warm: its request and result were verified when they
    // came by on gossip (a live receipt), so only the receipt's own signature is checked.
    let store = Store::open(&dir.join("db"))?;
    let sample = (receipts.len() / 4).min(10_000);
    let mut ledger = Ledger::new(EPOCH_MS);
    for (name, range) in [("cold", 0..sample), ("warm", sample..2 * sample)] {
        if name == "warm" {
            for (_, bytes) in &receipts[range.clone()] {
                let r = Signed::<Receipt>::decode(bytes, &net)?;
                r.payload().request.remember_verified();
                r.payload().result.remember_verified();
            }
        }
        let mut batch = Vec::with_capacity(256);
        let (mut t_verify, mut t_ledger, mut t_store) = (0f64, 0f64, 0f64);
        let t0 = Instant::now();
        for (_, bytes) in &receipts[range] {
            let a = Instant::now();
            let r = validator
                .check_receipt(bytes, &registry, now + 10)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let b = Instant::now();
            let stored = StoredReceipt {
                accepted_ms: r.payload().accepted_ms,
                id: r.id(),
                bytes: bytes.clone(),
            };
            ledger.ingest(r)?;
            let c = Instant::now();
            batch.push(stored);
            if batch.len() == 256 {
                store.write_receipts(&batch, &[])?;
                batch.clear();
            }
            t_verify += (b - a).as_secs_f64();
            t_ledger += (c - b).as_secs_f64();
            t_store += c.elapsed().as_secs_f64();
        }
        store.write_receipts(&batch, &[])?;
        let total = t0.elapsed().as_secs_f64();
        say(
            out,
            format!(
                "ingest ({name}), one thread, {sample} receipts: {:.0}/s (verify {:.1} us, ledger {:.1} us, store {:.1} us per receipt)",
                sample as f64 / total,
                t_verify * 1e6 / sample as f64,
                t_ledger * 1e6 / sample as f64,
                t_store * 1e6 / sample as f64
            ),
        );
    }
    drop(ledger);
    let sample = 2 * sample;

    // 2. Store all n (batches of 4096, synced), then recompute from disk as a node starts.
    let t0 = Instant::now();
    for chunk in receipts[sample..].chunks(4096) {
        let rows: Vec<StoredReceipt> = chunk
            .iter()
            .map(|(id, bytes)| StoredReceipt {
                accepted_ms: now + 1,
                id: *id,
                bytes: bytes.clone(),
            })
            .collect();
        store.write_receipts(&rows, &[])?;
    }
    say(
        out,
        format!(
            "stored the other {} receipts in {:.1} s",
            n as usize - sample,
            t0.elapsed().as_secs_f64()
        ),
    );
    drop(receipts);
    store.compact()?;
    let bytes = store.disk_bytes();
    say(
        out,
        format!(
            "RocksDB after compaction: {bytes} bytes for {n} receipts = {:.0} bytes/receipt",
            bytes as f64 / n as f64
        ),
    );

    // A node's start-up: every receipt decoded and checked, its signatures trusted.
    let t0 = Instant::now();
    let ledger = store.load_ledger(EPOCH_MS, &net, false)?;
    let load = t0.elapsed().as_secs_f64();
    drop(ledger);
    // `--verify-store`: the same with every signature checked again.
    let t0 = Instant::now();
    let ledger = store.load_ledger(EPOCH_MS, &net, true)?;
    let load_verified = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let balances = ledger.balances(&registry);
    let bal = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let epoch = dpow_protocol::ledger::epoch_of(now + 1, EPOCH_MS);
    let earned = ledger.claims_in_epoch(epoch).accounts;
    let report = dpow_protocol::ledger::PayoutReport::new(epoch, &earned, 10u128.pow(30))?;
    let pay = t0.elapsed().as_secs_f64();
    say(
        out,
        format!(
            "recompute over {} receipts: start-up load from RocksDB {:.1} s ({:.0}/s), with --verify-store {:.1} s ({:.0}/s), on {} threads; balances {:.3} s, epoch payout {:.3} s ({} lines; {} workers in balances)",
            ledger.len(),
            load,
            ledger.len() as f64 / load,
            load_verified,
            ledger.len() as f64 / load_verified,
            rayon::current_num_threads(),
            bal,
            pay,
            report.lines().len(),
            balances.workers.len()
        ),
    );
    Ok(())
}
