//! `dpow ledger pay`: pay each line of a checked payout report through a Nano node's wallet
//! RPC, journaled so that a crash or a failed line is finished by running the same command
//! again, and nothing is ever paid twice.
//!
//! The report is checked first, exactly as `check-report` does (offline, from the genesis
//! file), unless `--unsigned` says to pay one nobody signed. Each line is sent with `send` and
//! an `id` fixed by (network, epoch, account) ([`send_id`]): a Nano node that sees an id again
//! answers the block it made for it and sends nothing. The journal ([`journal`]) records each
//! line before and after its send. See docs/ledger.md, "Paying".

#[cfg(feature = "ledger")]
mod journal;
#[cfg(feature = "ledger")]
mod journaled;
mod rpc;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use dpow_keys::PublicKey;
use dpow_protocol::ledger::{PayoutLine, PayoutReport, format_raw_as_nano};
use serde_json::json;

use super::{MAX_REPORT_BYTES, read_signature, report};
use crate::config::Config;
use crate::genesis::{Genesis, read_small};
use crate::output::Output;
#[cfg(feature = "ledger")]
use journaled::pay;

/// Exit status when the command ran but some line is not paid (a re-run finishes it).
const EXIT_UNPAID: u8 = 1;

/// `dpow ledger pay`
#[derive(Debug, Args)]
pub struct PayArgs {
    /// The payout report, exactly as `payout --csv` printed it.
    #[arg(long, value_name = "FILE")]
    pub report: PathBuf,
    /// The registrar's signature over the report: 128 hex digits or a file holding them.
    #[arg(long, value_name = "HEX_OR_FILE", requires = "registrar")]
    pub signature: Option<String>,
    /// The registrar said to have signed (dpow_ key or hex); it must be in the genesis.
    #[arg(long, value_name = "KEY", requires = "signature")]
    pub registrar: Option<PublicKey>,
    /// Pay a report that no registrar signed (refused without this flag).
    #[arg(long, conflicts_with_all = ["signature", "registrar"])]
    pub unsigned: bool,
    /// Pay a report that names no registrar checkpoint of its epoch (refused without this
    /// flag: without one, nothing shows the books it was computed from were closed).
    #[arg(long)]
    pub no_checkpoint: bool,
    /// The Nano node's RPC (`http://HOST:PORT`; its `enable_control` must be on).
    #[arg(long, value_name = "URL")]
    pub rpc: Option<String>,
    /// The node wallet's id (64 hex digits) that holds the source account.
    #[arg(long, value_name = "ID")]
    pub wallet: Option<String>,
    /// The nano_ account the payouts are sent from.
    #[arg(long, value_name = "ACCOUNT")]
    pub source: String,
    /// Print what would be sent (and what the journal says is sent already); send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The pay journal's directory (default: DATA_DIR/pay-journal).
    #[arg(long, value_name = "DIR")]
    pub journal: Option<PathBuf>,
    /// The node's config file, to find its data directory as the node does.
    #[arg(long, env = "DPOW_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The node's data directory (default: as the config says, else ./dpow-data).
    #[arg(long, env = "DPOW_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Seconds to wait for each RPC call.
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    pub timeout: f64,
}

/// One line of the report, ready to send.
// A light build only dry-runs: the journal's key is not read there.
#[cfg_attr(not(feature = "ledger"), allow(dead_code))]
#[derive(Debug, Clone)]
struct Payment {
    /// The destination's public key (the journal's key).
    key: [u8; 32],
    /// The destination, as a `nano_` account.
    destination: String,
    /// Raw.
    amount: u128,
    /// The `send` id.
    id: String,
}

/// What happened to a line.
// A light build only dry-runs: it sends nothing, so nothing is sent or fails there.
#[cfg_attr(not(feature = "ledger"), allow(dead_code))]
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// `--dry-run`: it would be sent.
    WouldSend,
    /// Sent now: the block hash.
    Sent(String),
    /// Sent by an earlier run, per the journal: the block hash.
    AlreadySent(String),
    /// Zero raw: nothing to send.
    Zero,
    /// Not paid: why (a re-run tries again with the same id).
    Failed(String),
}

impl Outcome {
    fn status(&self) -> &'static str {
        match self {
            Outcome::WouldSend => "would send",
            Outcome::Sent(_) => "sent",
            Outcome::AlreadySent(_) => "already sent",
            Outcome::Zero => "nothing to send",
            Outcome::Failed(_) => "not paid",
        }
    }

    fn block(&self) -> Option<&str> {
        match self {
            Outcome::Sent(b) | Outcome::AlreadySent(b) => Some(b),
            _ => None,
        }
    }

    fn paid(&self) -> bool {
        matches!(
            self,
            Outcome::Sent(_) | Outcome::AlreadySent(_) | Outcome::Zero
        )
    }
}

/// The `send` id of `account`'s payout for `epoch` on `network`: the same on every run, so a
/// Nano node never pays a line twice (ids are unique per node, across its wallets).
pub(crate) fn send_id(network: &str, epoch: u64, account: &str) -> String {
    format!("dpow-{network}-{epoch}-{account}")
}

/// The destination of a report line, as text (the seam to the report's account type).
fn payee(line: &PayoutLine) -> String {
    line.address.to_string()
}

/// A `nano_` account that can receive funds: a valid checksum, not the burn account. Returns
/// its public key and its `nano_` spelling.
fn receivable_account(text: &str, what: &str) -> anyhow::Result<([u8; 32], String)> {
    let account: dpow_keys::NanoAccount = text
        .trim()
        .parse()
        .with_context(|| format!("{what} {text:?} is not an account funds can be sent to"))?;
    Ok((*account.as_bytes(), account.to_string()))
}

/// The report, checked as `check-report` checks it, or (with `--unsigned`) only parsed and
/// recomputed by the payout rule.
fn checked_report(a: &PayArgs, genesis: &Genesis) -> anyhow::Result<PayoutReport> {
    let csv = read_small(&a.report, MAX_REPORT_BYTES)?;
    let checked = match (&a.signature, &a.registrar, a.unsigned) {
        (Some(signature), Some(registrar), false) => {
            let signature = read_signature(signature)?;
            report::verify_report(
                &csv,
                &signature,
                registrar,
                &genesis.registrars,
                &genesis.id,
            )
        }
        (None, None, true) => report::parse_report(&csv).and_then(|p| report::recompute(&p, &csv)),
        _ => bail!(
            "{} is not signed: give --signature and --registrar (a genesis registrar's signature over it, as `payout --sign-key` writes) so that only a report the registrar vouched for is paid, or --unsigned to pay it as it stands",
            a.report.display()
        ),
    };
    let report = checked.with_context(|| format!("report {}", a.report.display()))?;
    match report.checkpoint() {
        Some(c) if !genesis.registrars.contains(&c.registrar) => bail!(
            "report {} names a checkpoint by {}, which is not a registrar of this network",
            a.report.display(),
            c.registrar
        ),
        Some(_) => {}
        None if a.no_checkpoint => {
            tracing::warn!("paying a report that names no registrar checkpoint (--no-checkpoint)");
        }
        None => bail!(
            "report {} names no registrar checkpoint of epoch {}: compute it with `dpow ledger payout` once a registrar has checkpointed the epoch (`dpow registry checkpoint`), or pass --no-checkpoint to pay it anyway",
            a.report.display(),
            report.epoch()
        ),
    }
    Ok(report)
}

/// Run `dpow ledger pay` with the network's genesis file.
pub(super) fn run(genesis: &Path, a: PayArgs, out: Output) -> anyhow::Result<ExitCode> {
    let genesis = Genesis::load(genesis)?;
    let (_, source) = receivable_account(&a.source, "--source")?;
    if !(a.timeout.is_finite() && (0.1..=3600.0).contains(&a.timeout)) {
        bail!("--timeout must be between 0.1 and 3600 seconds");
    }
    let report = checked_report(&a, &genesis)?;
    let epoch = report.epoch();
    let mut payments = Vec::with_capacity(report.lines().len());
    for line in report.lines() {
        let (key, destination) = receivable_account(&payee(line), "the report's account")
            .with_context(|| format!("report {}: nothing was sent", a.report.display()))?;
        let id = send_id(&genesis.network, epoch, &destination);
        payments.push(Payment {
            key,
            destination,
            amount: line.raw,
            id,
        });
    }
    let journal_dir = match &a.journal {
        Some(dir) => dir.clone(),
        None => {
            let c = Config {
                config: a.config.clone(),
                data_dir: a.data_dir.clone(),
                ..Config::default()
            }
            .merged()?
            .with_defaults();
            c.data_dir.unwrap_or_default().join("pay-journal")
        }
    };
    let target = if a.dry_run {
        None
    } else {
        let rpc = a
            .rpc
            .as_deref()
            .context("--rpc URL is needed to send (or --dry-run to see what would be sent)")?;
        let wallet = a
            .wallet
            .as_deref()
            .context("--wallet ID is needed to send (the node wallet holding --source)")?
            .trim();
        if wallet.len() != 64 || !wallet.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("--wallet {wallet:?} is not a Nano wallet id (64 hex digits)");
        }
        let rpc = rpc::Rpc::new(rpc, Duration::from_secs_f64(a.timeout))?;
        Some((rpc, wallet.to_ascii_uppercase()))
    };
    let outcomes = match &target {
        None => plan(&journal_dir, epoch, &payments)?,
        Some((rpc, wallet)) => pay(&journal_dir, epoch, &payments, rpc, wallet, &source)?,
    };
    print(
        &report,
        &payments,
        &outcomes,
        &source,
        target.as_ref().map(|(r, _)| r.url()),
        &journal_dir,
        out,
    )?;
    let unpaid = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Failed(_)))
        .count();
    if unpaid > 0 {
        crate::cli::report_error(&anyhow::anyhow!(
            "{unpaid} of {} lines not paid: run the same command again to finish them (each is sent with the same id, so nothing is paid twice)",
            payments.len()
        ));
        return Ok(ExitCode::from(EXIT_UNPAID));
    }
    Ok(ExitCode::SUCCESS)
}

/// `--dry-run`: each line's outcome as the journal (if any) says, sending nothing.
#[cfg(feature = "ledger")]
fn plan(journal_dir: &Path, epoch: u64, payments: &[Payment]) -> anyhow::Result<Vec<Outcome>> {
    let journal = journal::Journal::open_read_only(journal_dir)?;
    let mut out = Vec::with_capacity(payments.len());
    for p in payments {
        let entry = match &journal {
            Some(j) => j.get(epoch, &p.key)?,
            None => None,
        };
        out.push(match entry {
            _ if p.amount == 0 => Outcome::Zero,
            Some(journal::Entry {
                state: journal::State::Sent,
                block: Some(b),
                ..
            }) => Outcome::AlreadySent(b),
            _ => Outcome::WouldSend,
        });
    }
    Ok(out)
}

/// `--dry-run` in a light build: no journal to read.
#[cfg(not(feature = "ledger"))]
fn plan(_journal_dir: &Path, _epoch: u64, payments: &[Payment]) -> anyhow::Result<Vec<Outcome>> {
    Ok(payments
        .iter()
        .map(|p| {
            if p.amount == 0 {
                Outcome::Zero
            } else {
                Outcome::WouldSend
            }
        })
        .collect())
}

/// Paying needs the journal, which lives in RocksDB.
#[cfg(not(feature = "ledger"))]
fn pay(
    _journal_dir: &Path,
    _epoch: u64,
    _payments: &[Payment],
    _rpc: &rpc::Rpc,
    _wallet: &str,
    _source: &str,
) -> anyhow::Result<Vec<Outcome>> {
    bail!(
        "paying keeps a crash-safe journal in RocksDB, which this light build leaves out: use the full build (--dry-run works here)"
    )
}

/// Print each line with its outcome: a table, or JSON.
fn print(
    report: &PayoutReport,
    payments: &[Payment],
    outcomes: &[Outcome],
    source: &str,
    rpc: Option<&str>,
    journal: &Path,
    out: Output,
) -> anyhow::Result<()> {
    let paid_raw: u128 = payments
        .iter()
        .zip(outcomes)
        .filter(|(_, o)| o.block().is_some())
        .map(|(p, _)| p.amount)
        .sum();
    let raw_width = payments
        .iter()
        .map(|p| p.amount.to_string().len())
        .max()
        .unwrap_or(0)
        .max(3);
    let mut human = format!(
        "epoch {}: {} line{}, {} raw ({} Nano) from {source}{}\n",
        report.epoch(),
        payments.len(),
        if payments.len() == 1 { "" } else { "s" },
        report.pool_raw(),
        format_raw_as_nano(report.pool_raw()),
        match rpc {
            Some(url) => format!(" through {url}"),
            None => " (dry run: nothing sent)".to_string(),
        }
    );
    human.push_str(&format!(
        "{:<65}  {:>raw_width$}  {:<15}  block / error\n",
        "account", "raw", "status"
    ));
    let mut lines = Vec::with_capacity(payments.len());
    for (p, o) in payments.iter().zip(outcomes) {
        let detail = match o {
            Outcome::Sent(b) | Outcome::AlreadySent(b) => b.clone(),
            Outcome::Failed(e) => e.clone(),
            Outcome::WouldSend => format!("id {}", p.id),
            Outcome::Zero => String::new(),
        };
        human.push_str(&format!(
            "{:<65}  {:>raw_width$}  {:<15}  {detail}\n",
            p.destination,
            p.amount,
            o.status()
        ));
        lines.push(json!({
            "account": p.destination,
            "raw": p.amount.to_string(),
            "id": p.id,
            "status": o.status(),
            "block": o.block(),
            "error": match o { Outcome::Failed(e) => Some(e.as_str()), _ => None },
        }));
    }
    let unpaid = outcomes.iter().filter(|o| !o.paid()).count();
    human.push_str(&format!(
        "paid {paid_raw} of {} raw; journal {}\n",
        report.pool_raw(),
        journal.display()
    ));
    out.emit(
        &human,
        &json!({
            "epoch": report.epoch(),
            "source": source,
            "rpc": rpc,
            "dry_run": rpc.is_none(),
            "journal": journal,
            "total_raw": report.pool_raw().to_string(),
            "paid_raw": paid_raw.to_string(),
            "unpaid": unpaid,
            "lines": lines,
        }),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_fixed_by_network_epoch_and_account() {
        let a = dpow_keys::encode_account(&[7; 32]);
        assert_eq!(send_id("main", 20_422, &a), format!("dpow-main-20422-{a}"));
        assert_ne!(send_id("main", 20_422, &a), send_id("main", 20_423, &a));
        assert_ne!(send_id("main", 20_422, &a), send_id("test", 20_422, &a));
    }

    #[test]
    fn burn_and_malformed_accounts_are_refused() {
        let burn = dpow_keys::encode_account(&[0; 32]);
        assert_eq!(
            burn,
            "nano_1111111111111111111111111111111111111111111111111111hifc8npp"
        );
        let err = receivable_account(&burn, "--source").expect_err("burn");
        assert!(format!("{err:#}").contains("burn account"), "{err:#}");
        let good = dpow_keys::encode_account(&[9; 32]);
        let mut bad = good.clone().into_bytes();
        bad[10] = if bad[10] == b'3' { b'4' } else { b'3' };
        let bad = String::from_utf8(bad).expect("ascii");
        let err = receivable_account(&bad, "--source").expect_err("checksum");
        assert!(format!("{err:#}").contains("checksum"), "{err:#}");
        let xrb = good.replacen("nano_", "xrb_", 1);
        assert_eq!(
            receivable_account(&xrb, "x").expect("legacy prefix").1,
            good
        );
    }
}
