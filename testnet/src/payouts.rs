//! The testnet's books closed and paid: each worker is paid at a real Nano account (from a
//! published test wallet seed), the epochs of the run become final, the registrar signs a
//! checkpoint of each, and the payout of each is computed, signed and dry-run paid.
#![allow(clippy::print_stdout)] // part of the console program behind run.sh: printing is its job

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use dpow_keys::NanoAccount;
use serde_json::Value;

use crate::procs::{Dpow, dpow_json, dpow_text};

/// The wallet seed of the testnet's payout accounts: the blake2b-256 of a public phrase, so
/// anyone can open the same accounts in a Nano wallet. Test accounts only: never fund them.
pub fn test_wallet_seed() -> [u8; 32] {
    use blake2::digest::consts::U32;
    use blake2::{Blake2b, Digest};
    Blake2b::<U32>::digest(b"dpow testnet payout wallet: test accounts, never fund them").into()
}

/// Worker `i`'s payout account: index `i` of [`test_wallet_seed`].
pub fn worker_account(i: u32) -> anyhow::Result<NanoAccount> {
    Ok(dpow_keys::wallet::account_from_seed(
        &test_wallet_seed(),
        i,
    )?)
}

/// The genesis settings that let the run's epochs close soon after it ends: 10 s epochs,
/// 15 s request lifetimes, 2 s grace.
pub const GENESIS_TIMES: &str =
    "epoch_ms = 10000\nmax_request_lifetime_ms = 15000\nfinality_grace_ms = 2000\n";
/// The lifetime `dpow request` gives the run's requests, in seconds (the genesis maximum).
pub const REQUEST_LIFETIME_S: &str = "15";
const EPOCH_MS: u64 = 10_000;
const FINAL_AFTER_MS: u64 = 15_000 + 2_000;

/// Sign and publish the registrar's checkpoint of (final) `epoch` with key file `key`,
/// through the node at `dial`: what `dpow registry checkpoint --json` printed.
pub fn checkpoint(
    dpow: &Dpow,
    genesis: &str,
    dial: &str,
    key: &str,
    epoch: u64,
) -> anyhow::Result<Value> {
    dpow_json(
        dpow,
        &[
            "registry",
            "--genesis",
            genesis,
            "--dial",
            dial,
            "checkpoint",
            "--key",
            key,
            "--epoch",
            &epoch.to_string(),
        ],
    )
}

/// The epoch (of [`GENESIS_TIMES`]) that unix time `ms` falls in.
pub fn epoch_of(ms: u64) -> u64 {
    ms / EPOCH_MS
}

/// When (unix ms) `epoch` of [`GENESIS_TIMES`] becomes final: its end, plus the request
/// lifetime and the grace.
pub fn final_at(epoch: u64) -> u64 {
    (epoch + 1) * EPOCH_MS + FINAL_AFTER_MS
}

/// Close the run's books and show them paid. `dial` is a node to go through; `epochs` the
/// epochs the run's receipts fell in; `accounts` the workers' payout accounts.
pub fn summary(
    dpow: &Dpow,
    dir: &Path,
    genesis: &str,
    dial: &str,
    registrar: &str,
    epochs: &BTreeSet<u64>,
    accounts: &[NanoAccount],
) -> anyhow::Result<()> {
    let Some(&last) = epochs.last() else {
        bail!("no receipts, so no epoch to close");
    };
    println!(
        "\n== payouts (workers paid at accounts of the test wallet seed {}: open it in any Nano wallet to see them; never fund them)",
        hex::encode_upper(test_wallet_seed())
    );
    let due = final_at(last);
    let now = dpow_node::net::now_ms();
    if due > now {
        println!(
            "waiting {:.1} s for epoch {last} to be final (epoch end + request lifetime + grace), when no receipt can enter it any more",
            (due - now) as f64 / 1000.0
        );
        // A point on the clock, not an event.
        std::thread::sleep(Duration::from_millis(due - now + 100));
    }
    let key = dir.join("registrar.key").to_string_lossy().into_owned();
    let mut paid: BTreeSet<String> = BTreeSet::new();
    for &epoch in epochs {
        let e = epoch.to_string();
        let c = checkpoint(dpow, genesis, dial, &key, epoch)?;
        println!(
            "checkpoint of epoch {epoch}: {} receipts, digest {}, {} accounts, {} credits, {} unclaimed, signed by the registrar",
            c["receipts"],
            c["digest"].as_str().unwrap_or("?"),
            c["accounts"],
            c["claimed"].as_str().unwrap_or("?"),
            c["unclaimed"].as_str().unwrap_or("?")
        );
        if c["receipts"] == 0 {
            continue;
        }
        // The node asked for the payout must have it first.
        wait_for_checkpoint(dpow, genesis, dial, epoch)?;
        let csv = dir.join(format!("payout-{epoch}.csv"));
        let sig = dir.join(format!("payout-{epoch}.sig"));
        let text = dpow_text(
            dpow,
            &[
                "ledger",
                "--genesis",
                genesis,
                "--dial",
                dial,
                "payout",
                "--epoch",
                &e,
                "--pool",
                "1",
                "--csv",
                "--sign-key",
                &key,
                "--signature-out",
                &sig.to_string_lossy(),
            ],
        )?;
        std::fs::write(&csv, &text).with_context(|| format!("writing {}", csv.display()))?;
        if !text.lines().any(|l| l.starts_with("checkpoint,")) {
            bail!("the payout report of epoch {epoch} names no checkpoint:\n{text}");
        }
        println!(
            "payout of a 1 Nano pool for epoch {epoch}, signed by the registrar ({}):",
            csv.display()
        );
        for line in text.lines().skip(1) {
            println!("  {line}");
            if let Some(account) = line.split(',').nth(1)
                && account.starts_with("nano_")
            {
                paid.insert(account.to_string());
            }
        }
        // What paying it through a Nano node's wallet would send (no node here: a dry run).
        let pool = worker_account(1_000_000)?.to_string();
        let dry = dpow_text(
            dpow,
            &[
                "ledger",
                "--genesis",
                genesis,
                "pay",
                "--report",
                &csv.to_string_lossy(),
                "--signature",
                &sig.to_string_lossy(),
                "--registrar",
                registrar,
                "--source",
                &pool,
                "--journal",
                &dir.join("pay-journal").to_string_lossy(),
                "--dry-run",
            ],
        )?;
        println!("dpow ledger pay --dry-run:");
        for line in dry.lines() {
            println!("  {line}");
        }
    }
    let ours: BTreeSet<String> = accounts.iter().map(ToString::to_string).collect();
    if !paid.is_subset(&ours) {
        bail!("a payout line names an account that is no worker's: {paid:?} vs {ours:?}");
    }
    println!(
        "every payout line is a worker's own account ({} of {} workers earned)",
        paid.len(),
        ours.len()
    );
    Ok(())
}

/// Wait until the node at `dial` holds the registrar's checkpoint of `epoch`.
fn wait_for_checkpoint(dpow: &Dpow, genesis: &str, dial: &str, epoch: u64) -> anyhow::Result<()> {
    let t0 = Instant::now();
    loop {
        let v: Value = dpow_json(
            dpow,
            &[
                "ledger",
                "--genesis",
                genesis,
                "--dial",
                dial,
                "checkpoints",
            ],
        )?;
        let held = v["checkpoints"]
            .as_array()
            .is_some_and(|a| a.iter().any(|c| c["epoch"] == epoch));
        if held {
            return Ok(());
        }
        if t0.elapsed() > Duration::from_secs(30) {
            bail!("the checkpoint of epoch {epoch} never reached {dial}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
