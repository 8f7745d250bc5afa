//! Paying with the journal: every line is recorded before its send and after it, each synced
//! to disk, so that a crash at any point leaves a journal from which a re-run finishes the
//! epoch with the same ids (see the parent module).

use std::path::Path;

use anyhow::bail;
use dpow_keys::encode_account;

use super::journal::{Entry, Journal, State};
use super::rpc::Rpc;
use super::{Outcome, Payment};

/// Refuse a report that is not the one the journal was started with: an amount or an id that
/// differs for an account, or an account of the epoch that the report no longer lists.
fn check_against(journal: &Journal, epoch: u64, payments: &[Payment]) -> anyhow::Result<()> {
    let changed = |what: String| -> anyhow::Result<()> {
        bail!(
            "the pay journal {} disagrees with this report for epoch {epoch}: {what}; the report changed since paying began, so nothing was sent",
            journal.path().display()
        )
    };
    for (account, entry) in journal.epoch(epoch)? {
        let Some(p) = payments.iter().find(|p| p.key == account) else {
            return changed(format!(
                "it holds {} (state {:?}), which the report does not list",
                encode_account(&account),
                entry.state
            ));
        };
        if entry.amount != p.amount.to_string() {
            return changed(format!(
                "{} is {} raw in the journal, {} raw in the report",
                p.destination, entry.amount, p.amount
            ));
        }
        if entry.id != p.id {
            return changed(format!(
                "{} was sent with id {:?}, this run would use {:?} (another network's genesis?)",
                p.destination, entry.id, p.id
            ));
        }
    }
    Ok(())
}

/// Send every line not yet sent, through `rpc` from `source` in `wallet`, journaled.
pub(super) fn pay(
    journal_dir: &Path,
    epoch: u64,
    payments: &[Payment],
    rpc: &Rpc,
    wallet: &str,
    source: &str,
) -> anyhow::Result<Vec<Outcome>> {
    let journal = Journal::open(journal_dir)?;
    check_against(&journal, epoch, payments)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut outcomes = Vec::with_capacity(payments.len());
    for p in payments {
        if p.amount == 0 {
            outcomes.push(Outcome::Zero);
            continue;
        }
        let before = journal.get(epoch, &p.key)?;
        if let Some(Entry {
            state: State::Sent,
            block: Some(block),
            ..
        }) = &before
        {
            outcomes.push(Outcome::AlreadySent(block.clone()));
            continue;
        }
        let mut entry = Entry {
            state: State::Planned,
            destination: p.destination.clone(),
            amount: p.amount.to_string(),
            id: p.id.clone(),
            block: None,
            error: before.as_ref().and_then(|e| e.error.clone()),
            attempts: before.as_ref().map_or(0, |e| e.attempts).saturating_add(1),
        };
        // On disk before the money moves.
        journal.put(epoch, &p.key, &entry)?;
        let sent = runtime.block_on(rpc.send(wallet, source, &p.destination, p.amount, &p.id));
        let outcome = match sent {
            Ok(block) => {
                tracing::info!(epoch, account = %p.destination, raw = %p.amount, %block, "sent");
                entry.state = State::Sent;
                entry.block = Some(block.clone());
                entry.error = None;
                Outcome::Sent(block)
            }
            Err(e) => {
                tracing::info!(epoch, account = %p.destination, error = %e, "not paid");
                entry.error = Some(e.to_string());
                Outcome::Failed(e.to_string())
            }
        };
        journal.put(epoch, &p.key, &entry)?;
        outcomes.push(outcome);
    }
    Ok(outcomes)
}
