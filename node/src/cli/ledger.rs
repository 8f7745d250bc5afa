//! `dpow ledger`: the books, recomputed here from receipts that peers hand over and that this
//! command verifies itself (three signatures, the work, the price) before counting them.
//!
//! A genesis registrar signs a payout report with `payout --sign-key`; anyone checks such a
//! signature offline with `check-report` ([`report`]), and `pay` sends a checked report's lines
//! through a Nano node's wallet RPC ([`pay`]).

mod pay;
mod report;
pub(crate) mod retention;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use dpow_keys::{PublicKey, Signature, keyfile};
use dpow_protocol::ledger::{self, PayoutReport};
use serde_json::json;

use super::client::ClientArgs;
use crate::genesis::{Genesis, read_small};
use crate::net::now_ms;
use crate::output::Output;

/// Longest report CSV `check-report` reads, in bytes (a line is about 130 bytes).
const MAX_REPORT_BYTES: u64 = 64 * 1024 * 1024;
/// Longest signature file `check-report` reads, in bytes (128 hex digits and a line end).
const MAX_SIGNATURE_FILE_BYTES: u64 = 1024;

/// `dpow ledger ...`
#[derive(Debug, Args)]
pub struct LedgerArgs {
    /// What to compute.
    #[command(subcommand)]
    pub command: LedgerCommand,
    /// How to reach the network.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Ledger commands.
#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Split a pool over the payout accounts named in an epoch's receipts, in proportion to
    /// the credits they earned. Only a final epoch (its books closed) is paid; the report
    /// names the registrar checkpoint that matches these books.
    Payout {
        /// The epoch (days since 1970-01-01 UTC with the default epoch length; default: the
        /// newest final one, or with `--preview` the current one).
        #[arg(long)]
        epoch: Option<u64>,
        /// Show an epoch that is not final yet (its books may still change; never pay it).
        #[arg(long)]
        preview: bool,
        /// The pool: Nano (`1.5`, `1.5nano`) or raw (`1500raw`).
        #[arg(long)]
        pool: String,
        /// Print CSV (the bytes a registrar signs) instead of a table or JSON.
        #[arg(long)]
        csv: bool,
        /// Sign the report with this registrar key file (one of the genesis registrars).
        #[arg(long, value_name = "FILE")]
        sign_key: Option<PathBuf>,
        /// Also write the signature (128 hex digits) to this file; required with `--csv`,
        /// whose stdout is the CSV alone.
        #[arg(long, value_name = "FILE", requires = "sign_key")]
        signature_out: Option<PathBuf>,
    },
    /// Check a registrar's signature over a payout report's CSV, offline: only the genesis
    /// file is read, the network is never joined.
    CheckReport {
        /// The report, exactly as `payout --csv` printed it.
        #[arg(long, value_name = "FILE")]
        csv: PathBuf,
        /// The signature: 128 hex digits, or a file holding them (`--signature-out`).
        #[arg(long, value_name = "HEX_OR_FILE")]
        signature: String,
        /// The registrar said to have signed (nano_ account or hex); it must be in the genesis.
        #[arg(long, value_name = "KEY")]
        registrar: PublicKey,
    },
    /// Pay a checked report through a Nano node's wallet RPC, journaled and resumable: a
    /// re-run after a crash or an error pays what is left and nothing twice. Offline from
    /// the network: only the genesis file, the report and the RPC are used.
    Pay(Box<pay::PayArgs>),
    /// Credits granted, spent and left per service; earned per worker key and per payout
    /// account (with the unclaimed credits of results that named none).
    Balances,
    /// The receipts held and the digest of each epoch, to compare with other nodes. With
    /// `--full`: check a stopped node's own database instead, offline.
    Verify {
        /// Epochs to show (default: the current and the previous one).
        #[arg(long, value_delimiter = ',', conflicts_with = "full")]
        epoch: Vec<u64>,
        /// Check the database of the node whose data directory is `--data-dir` (stop that
        /// node first): every stored receipt's signatures again, on every core, and every
        /// index and tally against a recomputation from the receipts. Exits 1 if anything is
        /// wrong, saying what.
        #[arg(long)]
        full: bool,
        /// With `--full`: mend what is wrong — delete receipts that fail, rebuild the indexes
        /// and tallies from the rest (the node fetches lost receipts from peers again).
        #[arg(long, requires = "full")]
        repair: bool,
        /// With `--full`: the node's data directory (its database is `DIR/db`).
        #[arg(
            long,
            value_name = "DIR",
            default_value = "dpow-data",
            requires = "full"
        )]
        data_dir: PathBuf,
    },
    /// Write one epoch's receipts and the checkpoints held for it to an archive file, from a
    /// stopped node's database (`verify-archive` checks it anywhere, offline).
    Export {
        /// The epoch.
        #[arg(long)]
        epoch: u64,
        /// The archive to write (default: `epoch-E.dpowarc` here).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// The node's database.
        #[command(flatten)]
        data: retention::DataDir,
    },
    /// Archive, then delete from a stopped node's database, the receipts of old epochs that
    /// are final and that a registrar's checkpoint held there vouches for. Balances, payouts
    /// and digests stay exact; the node then takes no more receipts of those epochs.
    Prune(retention::PruneArgs),
    /// Check an epoch archive offline: every receipt's signatures, the digest, and which
    /// registrar checkpoints in it agree with the receipts. Exits 1 unless one does.
    VerifyArchive {
        /// The archive file.
        file: PathBuf,
    },
    /// The registrars' checkpoints of final epochs that the network's peers hold.
    Checkpoints,
    /// One receipt, by id (64 hex digits).
    Show {
        /// The receipt id.
        id: String,
    },
}

/// Run `dpow ledger`.
pub(super) fn run(a: LedgerArgs, out: Output) -> anyhow::Result<ExitCode> {
    if let LedgerCommand::CheckReport {
        csv,
        signature,
        registrar,
    } = &a.command
    {
        return check_report(&a.client.genesis, csv, signature, registrar, out);
    }
    if let LedgerCommand::Pay(p) = a.command {
        return pay::run(&a.client.genesis, *p, out);
    }
    match a.command {
        LedgerCommand::Export {
            epoch,
            out: file,
            data,
        } => {
            return retention::export(&a.client.genesis, epoch, file, &data.data_dir, out);
        }
        LedgerCommand::Prune(p) => return retention::prune(&a.client.genesis, p, out),
        LedgerCommand::VerifyArchive { file } => {
            return retention::verify_archive(&a.client.genesis, &file, out);
        }
        _ => {}
    }
    if let LedgerCommand::Verify {
        full: true,
        repair,
        data_dir,
        ..
    } = &a.command
    {
        return verify_full(&a.client.genesis, data_dir, *repair, out);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_async(a, out))
}

/// The longest `dpow ledger` waits for receipts already received to be verified.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

async fn run_async(a: LedgerArgs, out: Output) -> anyhow::Result<ExitCode> {
    // Parse what can be wrong before joining the network.
    let pool = match &a.command {
        LedgerCommand::Payout { pool, .. } => Some(ledger::parse_amount(pool)?),
        _ => None,
    };
    let signer = match &a.command {
        LedgerCommand::Payout {
            sign_key: Some(path),
            csv,
            signature_out,
            ..
        } => {
            if *csv && signature_out.is_none() {
                bail!(
                    "--csv with --sign-key needs --signature-out FILE: stdout carries the CSV alone, so the signature goes to a file"
                );
            }
            let key = keyfile::read(path)
                .with_context(|| format!("registrar key file {}", path.display()))?;
            let genesis = Genesis::load(&a.client.genesis)?;
            report::require_registrar(&key.public(), &genesis.registrars)?;
            Some((key, genesis.registrars, genesis.id))
        }
        _ => None,
    };
    // Caught up with a peer's books (every receipt verified here). Receipts that reached the
    // node by gossip meanwhile may still be in the verification pool: the books are read once
    // it has nothing left (bounded: on a busy network it may never be empty for long, and
    // what arrives later is the next run's).
    let genesis = Genesis::load(&a.client.genesis)?;
    let node = a.client.connect_with_books().await?;
    if node
        .wait_stats(DRAIN_LIMIT, |s| s.verify_queued == 0)
        .await
        .is_err()
    {
        tracing::warn!(
            "receipts were still being verified after {DRAIN_LIMIT:?}; reading the books as they are"
        );
    }
    let (books, registry) = node.ledger().await?;
    let checkpoints = node.checkpoints().await?;
    node.shutdown().await?;
    let current = ledger::epoch_of(now_ms(), books.epoch_ms());
    match a.command {
        LedgerCommand::Payout {
            epoch,
            preview,
            csv,
            signature_out,
            ..
        } => {
            let finality = genesis.finality;
            let now = now_ms();
            let epoch = match (epoch, preview) {
                (Some(e), _) => e,
                (None, true) => current,
                (None, false) => finality.last_final(now).ok_or_else(|| {
                    anyhow::anyhow!(
                        "no epoch of this network is final yet; --preview shows the current one"
                    )
                })?,
            };
            if !preview && !finality.is_final(epoch, now) {
                bail!(
                    "epoch {epoch} is not final until {} ms (unix time), when no receipt can enter it any more; --preview shows it as it stands",
                    finality.final_at(epoch)
                );
            }
            let claims = books.claims_in_epoch(epoch);
            if claims.accounts.is_empty() {
                bail!(
                    "no credits were earned by a payout account in epoch {epoch} as far as this network's peers know ({} unclaimed)",
                    claims.unclaimed
                );
            }
            let mut report = PayoutReport::new(epoch, &claims.accounts, pool.unwrap_or(0))?;
            if claims.unclaimed > 0 {
                tracing::warn!(
                    epoch,
                    credits = %claims.unclaimed,
                    "credits of results that named no payout account: unclaimed, not paid"
                );
            }
            if !preview {
                let digest = books.epoch_digest(epoch);
                let held: Vec<_> = checkpoints
                    .iter()
                    .filter(|c| c.payload().epoch == epoch)
                    .collect();
                match held.iter().find(|c| c.payload().digest == digest) {
                    Some(c) => {
                        let p = c.payload();
                        if !p.states_claims(&claims) {
                            bail!(
                                "registrar {}'s checkpoint of epoch {epoch} states other credits than its own digest's receipts give: refusing to pay from it",
                                p.registrar
                            );
                        }
                        report = report.with_checkpoint(ledger::CheckpointRef {
                            registrar: p.registrar,
                            digest: p.digest,
                            receipts: p.receipts,
                        });
                    }
                    None if !held.is_empty() => bail!(
                        "these books of epoch {epoch} (digest {}) differ from every registrar checkpoint of it ({}): wait for this node to catch up, then run it again",
                        hex::encode(digest),
                        held.iter()
                            .map(|c| hex::encode(c.payload().digest))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    None => tracing::warn!(
                        epoch,
                        "no registrar checkpoint of this epoch yet: the report names none, and `ledger pay` refuses it unless told otherwise"
                    ),
                }
            }
            let signature = match &signer {
                Some((key, registrars, net)) => Some((
                    key.public(),
                    report::sign_report(&report.to_csv(), key, registrars, net)?,
                )),
                None => None,
            };
            if let (Some(path), Some((_, sig))) = (&signature_out, &signature) {
                write_signature(path, sig)?;
            }
            print_payout(&report, signature.as_ref(), csv, out)?;
        }
        // Handled by `run` before any network is joined.
        LedgerCommand::CheckReport { .. } => bail!("check-report runs offline, not here"),
        LedgerCommand::Pay(_) => bail!("pay runs offline, not here"),
        LedgerCommand::Export { .. }
        | LedgerCommand::Prune(_)
        | LedgerCommand::VerifyArchive { .. } => bail!("retention runs offline, not here"),
        LedgerCommand::Balances => {
            let b = books.balances(&registry);
            let mut human = format!(
                "{:<66} {:>12} {:>12} {:>12}\n",
                "service", "granted", "spent", "balance"
            );
            let mut services = Vec::new();
            for (k, s) in &b.services {
                human.push_str(&format!(
                    "{:<66} {:>12} {:>12} {:>12}{}\n",
                    k.to_string(),
                    s.granted.0,
                    s.spent,
                    s.balance(),
                    if s.equivocations > 0 { "  FLAGGED" } else { "" }
                ));
                services.push(json!({
                    "service": k.to_string(),
                    "granted": s.granted.0.to_string(),
                    "spent": s.spent.to_string(),
                    "balance": s.balance().to_string(),
                    "receipts": s.receipts,
                    "equivocations": s.equivocations,
                }));
            }
            human.push_str(&format!(
                "\n{:<66} {:>12} {:>12}\n",
                "worker", "earned", "receipts"
            ));
            let mut workers = Vec::new();
            for (k, w) in &b.workers {
                human.push_str(&format!(
                    "{:<66} {:>12} {:>12}\n",
                    k.to_string(),
                    w.earned,
                    w.receipts
                ));
                workers.push(json!({
                    "worker": k.to_string(),
                    "earned": w.earned.to_string(),
                    "receipts": w.receipts,
                }));
            }
            // Credits by the payout account named in each counted receipt, every epoch held.
            let mut by_account: std::collections::BTreeMap<dpow_keys::NanoAccount, u128> =
                std::collections::BTreeMap::new();
            let mut unclaimed: u128 = 0;
            for (epoch, _) in books.epochs() {
                let c = books.claims_in_epoch(epoch);
                for (a, credits) in c.accounts {
                    let t = by_account.entry(a).or_default();
                    *t = t.saturating_add(credits);
                }
                unclaimed = unclaimed.saturating_add(c.unclaimed);
            }
            human.push_str(&format!("\n{:<66} {:>12}\n", "payout account", "earned"));
            let mut accounts = Vec::new();
            for (a, credits) in &by_account {
                human.push_str(&format!("{:<66} {credits:>12}\n", a.to_string()));
                accounts.push(json!({ "account": a.to_string(), "earned": credits.to_string() }));
            }
            human.push_str(&format!(
                "{:<66} {unclaimed:>12}\n",
                "unclaimed (results that named no account)"
            ));
            out.emit(
                &human,
                &json!({
                    "services": services,
                    "workers": workers,
                    "accounts": accounts,
                    "unclaimed": unclaimed.to_string(),
                }),
            )?;
        }
        LedgerCommand::Verify { epoch, .. } => {
            let epochs = if epoch.is_empty() {
                vec![current.saturating_sub(1), current]
            } else {
                epoch
            };
            let mut human = format!("{} receipts held\n", books.len());
            let mut rows = Vec::new();
            for e in epochs {
                let ids = books.receipt_ids_in_epoch(e);
                let digest = hex::encode(books.epoch_digest(e));
                human.push_str(&format!(
                    "epoch {e}: {} receipts, digest {digest}\n",
                    ids.len()
                ));
                rows.push(json!({ "epoch": e, "receipts": ids.len(), "digest": digest }));
            }
            let flagged: Vec<String> = books
                .flagged_services()
                .iter()
                .map(|k| k.to_string())
                .collect();
            for f in &flagged {
                human.push_str(&format!("flagged (two receipts for one request): {f}\n"));
            }
            out.emit(
                &human,
                &json!({ "receipts": books.len(), "epochs": rows, "flagged": flagged }),
            )?;
        }
        LedgerCommand::Checkpoints => {
            let mut human = String::new();
            let mut rows = Vec::new();
            for c in &checkpoints {
                let p = c.payload();
                let matches = books.epoch_digest(p.epoch) == p.digest;
                human.push_str(&format!(
                    "epoch {}: {} receipts, digest {}, {} accounts, {} credits, {} unclaimed, registrar {}{}\n",
                    p.epoch,
                    p.receipts,
                    hex::encode(p.digest),
                    p.credits.len(),
                    p.claimed(),
                    p.unclaimed,
                    p.registrar,
                    if matches { "" } else { "  (these books differ)" }
                ));
                rows.push(json!({
                    "epoch": p.epoch,
                    "registrar": p.registrar.to_string(),
                    "digest": hex::encode(p.digest),
                    "receipts": p.receipts,
                    "accounts": p.credits.len(),
                    "claimed": p.claimed().to_string(),
                    "unclaimed": p.unclaimed.to_string(),
                    "matches_books": matches,
                }));
            }
            if rows.is_empty() {
                human.push_str("no checkpoints held\n");
            }
            out.emit(&human, &json!({ "checkpoints": rows }))?;
        }
        LedgerCommand::Show { id } => {
            let mut raw = [0u8; 32];
            hex::decode_to_slice(id.trim(), &mut raw)
                .map_err(|e| anyhow::anyhow!("receipt id {id:?}: {e} (expected 64 hex digits)"))?;
            let Some(r) = books.get(&dpow_protocol::MessageId(raw)) else {
                bail!(
                    "no receipt {id} among the {} held by the network's peers",
                    books.len()
                );
            };
            let p = r.payload();
            let req = p.request.payload();
            let res = p.result.payload();
            let human = format!(
                "receipt     {}\nservice     {}\nrequest     {}\nroot        {}\ndifficulty  {}\nwork        {}\nworker      {}\nprice       {} credits\naccepted    {} ms\ncounted     {}",
                r.id(),
                req.service,
                p.request.id(),
                req.root,
                req.difficulty,
                res.work,
                res.worker,
                p.price.0,
                p.accepted_ms,
                books.is_counted(&r.id()),
            );
            let js = json!({
                "receipt": r.id().to_string(),
                "service": req.service.to_string(),
                "request": p.request.id().to_string(),
                "root": req.root.to_string(),
                "difficulty": req.difficulty.to_string(),
                "work": res.work.to_string(),
                "worker": res.worker.to_string(),
                "price": p.price.0,
                "accepted_ms": p.accepted_ms,
                "counted": books.is_counted(&r.id()),
            });
            out.emit(&human, &js)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Print a payout report: the CSV alone, its JSON (with `registrar` and `signature` added at
/// the end when signed), or the table (with a `signed by` line after it).
fn print_payout(
    report: &PayoutReport,
    signature: Option<&(PublicKey, Signature)>,
    csv: bool,
    out: Output,
) -> anyhow::Result<()> {
    let text = if csv {
        report.to_csv()
    } else if out.json {
        match signature {
            Some((registrar, sig)) => report::signed_json(report, registrar, sig),
            None => report.to_json(),
        }
    } else {
        let mut t = report.to_table();
        if let Some((registrar, sig)) = signature {
            t.push_str(&format!(
                "signed by {} : {}\n",
                registrar,
                report::signature_hex(sig)
            ));
        }
        t
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// Write a signature as 128 hex digits and a line end.
fn write_signature(path: &Path, signature: &Signature) -> anyhow::Result<()> {
    std::fs::write(path, format!("{}\n", report::signature_hex(signature)))
        .with_context(|| format!("writing the signature to {}", path.display()))
}

/// `--signature`: 128 hex digits, else a file holding them.
fn read_signature(arg: &str) -> anyhow::Result<Signature> {
    let text = arg.trim();
    if text.len() == 128 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(report::parse_signature(text)?);
    }
    let path = Path::new(arg);
    if path.is_file() {
        let content = read_small(path, MAX_SIGNATURE_FILE_BYTES)?;
        return report::parse_signature(&content)
            .with_context(|| format!("signature file {}", path.display()));
    }
    report::parse_signature(text)
        .context("--signature is neither 128 hex digits nor a file that exists")
}

/// `dpow ledger check-report`: verify offline, from the genesis file alone.
fn check_report(
    genesis: &Path,
    csv_path: &Path,
    signature: &str,
    registrar: &PublicKey,
    out: Output,
) -> anyhow::Result<ExitCode> {
    let genesis = Genesis::load(genesis)?;
    let signature = read_signature(signature)?;
    let csv = read_small(csv_path, MAX_REPORT_BYTES)?;
    let report = report::verify_report(
        &csv,
        &signature,
        registrar,
        &genesis.registrars,
        &genesis.id,
    )
    .with_context(|| format!("report {}", csv_path.display()))?;
    let human = format!(
        "report signature valid: epoch {}, {} accounts, {} raw, signed by registrar {}",
        report.epoch(),
        report.lines().len(),
        report.pool_raw(),
        registrar
    );
    out.emit(
        &human,
        &json!({
            "valid": true,
            "epoch": report.epoch(),
            "accounts": report.lines().len(),
            "pool_raw": report.pool_raw().to_string(),
            "total_credits": report.total_credits().to_string(),
            "registrar": registrar.to_string(),
        }),
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `dpow ledger verify --full [--repair]`: check (and mend) a stopped node's database.
#[cfg(feature = "ledger")]
fn verify_full(
    genesis: &std::path::Path,
    data_dir: &std::path::Path,
    repair: bool,
    out: Output,
) -> anyhow::Result<ExitCode> {
    let genesis = Genesis::load(genesis)?;
    let books = retention::open_stopped(&genesis, data_dir)?;
    let t0 = std::time::Instant::now();
    let progress = |done: u64, total: u64| {
        tracing::info!(
            "{done} of ~{total} receipts ({:.0}%, {:.0} s)",
            done as f64 * 100.0 / total.max(1) as f64,
            t0.elapsed().as_secs_f64()
        );
    };
    tracing::info!("checking every stored receipt's signatures and every tally...");
    let mut report = books.check(true, &progress)?;
    let mut repaired = false;
    if !report.is_clean() && repair {
        tracing::info!(
            "repairing: deleting the receipts that fail, rebuilding indexes and tallies..."
        );
        books.rebuild(true, &progress)?;
        report = books.check(true, &progress)?;
        repaired = true;
    }
    let mut human = format!(
        "{} receipts checked in {:.1} s: {} bad, {} index errors, {} tallies wrong\n",
        report.receipts,
        t0.elapsed().as_secs_f64(),
        report.bad_receipts.len(),
        report.index_errors,
        report.tally_errors.len()
    );
    for (ms, id, why) in report.bad_receipts.iter().take(20) {
        human.push_str(&format!("bad receipt {id} (accepted_ms {ms}): {why}\n"));
    }
    if report.is_clean() {
        human.push_str(if repaired {
            "repaired: the books are clean; start the node and it fetches any receipt it lost from its peers\n"
        } else {
            "clean\n"
        });
    } else {
        human.push_str("the books are not clean: run again with --repair (the node stopped)\n");
    }
    out.emit(
        &human,
        &json!({
            "receipts": report.receipts,
            "bad_receipts": report.bad_receipts.iter().map(|(ms, id, why)| json!({ "id": id.to_string(), "accepted_ms": ms, "why": why })).collect::<Vec<_>>(),
            "index_errors": report.index_errors,
            "tally_errors": report.tally_errors.len(),
            "repaired": repaired,
            "clean": report.is_clean(),
        }),
    )?;
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A light build has no database to check.
#[cfg(not(feature = "ledger"))]
fn verify_full(
    _genesis: &std::path::Path,
    _data_dir: &std::path::Path,
    _repair: bool,
    _out: Output,
) -> anyhow::Result<ExitCode> {
    bail!("--full checks a RocksDB ledger, which this light build leaves out")
}
