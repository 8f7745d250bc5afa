//! `dpow ledger`: the books, recomputed here from receipts that peers hand over and that this
//! command verifies itself (three signatures, the work, the price) before counting them.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use dpow_protocol::ledger::{self, PayoutReport};
use serde_json::json;

use super::client::ClientArgs;
use crate::net::now_ms;
use crate::output::Output;

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
    /// Split a pool over the workers in proportion to the credits they earned in an epoch.
    Payout {
        /// The epoch (days since 1970-01-01 UTC; default: the current one).
        #[arg(long)]
        epoch: Option<u64>,
        /// The pool: Nano (`1.5`, `1.5nano`) or raw (`1500raw`).
        #[arg(long)]
        pool: String,
        /// Print CSV (the bytes a registrar signs) instead of a table or JSON.
        #[arg(long)]
        csv: bool,
    },
    /// Credits granted, spent and left per service; earned per worker.
    Balances,
    /// The receipts held and the digest of each epoch, to compare with other nodes.
    Verify {
        /// Epochs to show (default: the current and the previous one).
        #[arg(long, value_delimiter = ',')]
        epoch: Vec<u64>,
    },
    /// One receipt, by id (64 hex digits).
    Show {
        /// The receipt id.
        id: String,
    },
}

/// Run `dpow ledger`.
pub(super) fn run(a: LedgerArgs, out: Output) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_async(a, out))
}

async fn run_async(a: LedgerArgs, out: Output) -> anyhow::Result<ExitCode> {
    // Parse what can be wrong before joining the network.
    let pool = match &a.command {
        LedgerCommand::Payout { pool, .. } => Some(ledger::parse_amount(pool)?),
        _ => None,
    };
    let node = a.client.connect(None).await?;
    // The sync answer carries the receipts; give stragglers on the receipts topic a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (books, registry) = node.ledger().await?;
    node.shutdown().await?;
    let current = ledger::epoch_of(now_ms(), books.epoch_ms());
    match a.command {
        LedgerCommand::Payout { epoch, csv, .. } => {
            let epoch = epoch.unwrap_or(current);
            let earned = books.earned_in_epoch(epoch);
            if earned.is_empty() {
                bail!(
                    "no credits were earned in epoch {epoch} as far as this network's peers know"
                );
            }
            let report = PayoutReport::new(epoch, &earned, pool.unwrap_or(0))?;
            if csv {
                use std::io::Write;
                std::io::stdout()
                    .lock()
                    .write_all(report.to_csv().as_bytes())?;
            } else {
                let js: serde_json::Value = serde_json::from_str(&report.to_json())?;
                out.emit(&report.to_table(), &js)?;
            }
        }
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
                    k.to_account(),
                    s.granted.0,
                    s.spent,
                    s.balance(),
                    if s.equivocations > 0 { "  FLAGGED" } else { "" }
                ));
                services.push(json!({
                    "service": k.to_account(),
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
                    k.to_account(),
                    w.earned,
                    w.receipts
                ));
                workers.push(json!({
                    "worker": k.to_account(),
                    "earned": w.earned.to_string(),
                    "receipts": w.receipts,
                }));
            }
            out.emit(&human, &json!({ "services": services, "workers": workers }))?;
        }
        LedgerCommand::Verify { epoch } => {
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
                .map(|k| k.to_account())
                .collect();
            for f in &flagged {
                human.push_str(&format!("flagged (two receipts for one request): {f}\n"));
            }
            out.emit(
                &human,
                &json!({ "receipts": books.len(), "epochs": rows, "flagged": flagged }),
            )?;
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
                req.service.to_account(),
                p.request.id(),
                req.root,
                req.difficulty,
                res.work,
                res.worker.to_account(),
                p.price.0,
                p.accepted_ms,
                books.is_counted(&r.id()),
            );
            let js = json!({
                "receipt": r.id().to_string(),
                "service": req.service.to_account(),
                "request": p.request.id().to_string(),
                "root": req.root.to_string(),
                "difficulty": req.difficulty.to_string(),
                "work": res.work.to_string(),
                "worker": res.worker.to_account(),
                "price": p.price.0,
                "accepted_ms": p.accepted_ms,
                "counted": books.is_counted(&r.id()),
            });
            out.emit(&human, &js)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
