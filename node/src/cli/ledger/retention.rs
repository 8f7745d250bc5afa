//! `dpow ledger export`, `prune` and `verify-archive`: retention of old final epochs. The first
//! two read a stopped node's database; the third needs only the genesis file. See
//! [`crate::archive`] for the file and ledger.md, "Retention", for the rules.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::bail;
use clap::Args;
use serde_json::json;

use crate::archive;
use crate::genesis::Genesis;
use crate::output::Output;

/// Where a stopped node's database is.
#[derive(Debug, Args)]
pub struct DataDir {
    /// The node's data directory (its database is `DIR/db`); stop the node first.
    #[arg(long, value_name = "DIR", default_value = "dpow-data")]
    pub data_dir: PathBuf,
}

/// `dpow ledger prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Prune final epochs that ended more than this many days ago.
    #[arg(long, value_name = "DAYS", conflicts_with = "before_epoch")]
    pub older_than_days: Option<u64>,
    /// Prune final epochs before this one.
    #[arg(long, value_name = "EPOCH")]
    pub before_epoch: Option<u64>,
    /// Where each epoch's archive is written (`epoch-E.dpowarc`) before it is pruned.
    #[arg(long, value_name = "DIR")]
    pub archive_dir: PathBuf,
    /// Say what would be pruned, and why not the others, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The node's database.
    #[command(flatten)]
    pub data: DataDir,
}

/// `dpow ledger verify-archive FILE`: offline.
pub(crate) fn verify_archive(genesis: &Path, file: &Path, out: Output) -> anyhow::Result<ExitCode> {
    let genesis = Genesis::load(genesis)?;
    let t0 = std::time::Instant::now();
    let v = archive::verify(file, &genesis.id, genesis.epoch_ms, &genesis.registrars)?;
    let h = &v.header;
    let mut human = format!(
        "epoch {}: {} receipts, every signature good ({:.1} s); digest {}{}\n",
        h.epoch,
        h.receipts,
        t0.elapsed().as_secs_f64(),
        hex::encode(v.digest),
        if v.digest == h.digest {
            ""
        } else {
            " (the header says another)"
        }
    );
    for r in &v.vouched_by {
        human.push_str(&format!("vouched for by registrar {r}\n"));
    }
    for (who, why) in &v.disagreeing {
        human.push_str(&format!("checkpoint of {who}: {why}\n"));
    }
    human.push_str(if v.is_vouched() {
        "the archive is the epoch's books as a registrar signed them\n"
    } else {
        "NOT vouched for: no registrar checkpoint in the archive agrees with its receipts\n"
    });
    out.emit(
        &human,
        &json!({
            "epoch": h.epoch,
            "receipts": h.receipts,
            "digest": hex::encode(v.digest),
            "credits": v.credits.iter().map(|(a, c)| json!({ "account": a.to_string(), "credits": c.to_string() })).collect::<Vec<_>>(),
            "unclaimed": v.unclaimed.to_string(),
            "vouched_by": v.vouched_by.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
            "disagreeing": v.disagreeing.iter().map(|(w, y)| json!({ "registrar": w, "why": y })).collect::<Vec<_>>(),
            "vouched": v.is_vouched(),
        }),
    )?;
    Ok(if v.is_vouched() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(feature = "ledger")]
mod disk {
    use std::sync::Arc;

    use dpow_protocol::ledger::epoch_of;
    use dpow_protocol::{Checkpoint, Signed};

    use anyhow::Context;

    use super::*;
    use crate::store::books::PRUNE_CHUNK;

    /// The archive file of `epoch` in `dir`.
    fn archive_path(dir: &Path, epoch: u64) -> PathBuf {
        dir.join(format!("epoch-{epoch}.dpowarc"))
    }
    use crate::store::{Books, Store};

    /// Open a stopped node's books (`verify --full`, `export`, `prune`).
    pub(crate) fn open_stopped(genesis: &Genesis, data_dir: &Path) -> anyhow::Result<Books> {
        let db = data_dir.join("db");
        if !db.is_dir() {
            bail!(
                "no database at {}: give the node's data directory with --data-dir",
                db.display()
            );
        }
        let store = Arc::new(Store::open(&db).with_context(|| {
            format!(
                "opening {} (is the node still running? stop it first)",
                db.display()
            )
        })?);
        Ok(Books::open(store, genesis.epoch_ms, genesis.id)?)
    }

    /// The checkpoints of `epoch` held in the store, verified, from genesis registrars.
    fn checkpoints_of(
        books: &Books,
        genesis: &Genesis,
        epoch: u64,
    ) -> anyhow::Result<Vec<Signed<Checkpoint>>> {
        Ok(books
            .store()
            .checkpoints()?
            .iter()
            .filter_map(|b| Signed::<Checkpoint>::decode(b, &genesis.id).ok())
            .filter(|c| c.payload().epoch == epoch && genesis.registrars.contains(&c.signer()))
            .collect())
    }

    /// Write epoch `epoch`'s archive to `path`, with the checkpoints of it held.
    fn export_epoch(
        books: &Books,
        genesis: &Genesis,
        epoch: u64,
        path: &Path,
    ) -> anyhow::Result<archive::ArchiveHeader> {
        let checkpoints = checkpoints_of(books, genesis, epoch)?
            .iter()
            .map(|c| c.bytes().to_vec())
            .collect();
        export_books(books, &genesis.id, epoch, checkpoints, path)
    }

    /// Write epoch `epoch`'s archive to `path`, with `checkpoints` (envelopes).
    pub(crate) fn export_books(
        books: &Books,
        net: &dpow_protocol::NetworkId,
        epoch: u64,
        checkpoints: Vec<Vec<u8>>,
        path: &Path,
    ) -> anyhow::Result<archive::ArchiveHeader> {
        if books.pruned_epoch(epoch)?.is_some() {
            bail!("epoch {epoch} was pruned here: its archive is where `ledger prune` wrote it");
        }
        let ids = books.receipt_ids_in_epoch(epoch)?;
        if ids.is_empty() {
            bail!("no receipt of epoch {epoch} is held here");
        }
        let header = archive::ArchiveHeader {
            network: net.0,
            epoch_ms: books.epoch_ms(),
            epoch,
            digest: books.epoch_digest(epoch)?,
            receipts: ids.len() as u64,
            checkpoints,
        };
        archive::write(
            path,
            &header,
            ids.iter().map(|id| {
                books
                    .get_bytes(id)?
                    .with_context(|| format!("receipt {id} is listed but not stored"))
            }),
        )?;
        Ok(header)
    }

    pub(crate) fn export(
        genesis: &Path,
        epoch: u64,
        file: Option<PathBuf>,
        data_dir: &Path,
        out: Output,
    ) -> anyhow::Result<ExitCode> {
        let genesis = Genesis::load(genesis)?;
        let books = open_stopped(&genesis, data_dir)?;
        let path = file.unwrap_or_else(|| archive_path(Path::new("."), epoch));
        let h = export_epoch(&books, &genesis, epoch, &path)?;
        out.emit(
            &format!(
                "epoch {epoch}: {} receipts and {} checkpoints written to {}\n",
                h.receipts,
                h.checkpoints.len(),
                path.display()
            ),
            &json!({ "epoch": epoch, "receipts": h.receipts, "checkpoints": h.checkpoints.len(), "file": path }),
        )?;
        Ok(ExitCode::SUCCESS)
    }

    /// Why epoch `e` (holding `n` receipts) may not be pruned now, if it may not.
    fn unprunable(
        books: &Books,
        genesis: &Genesis,
        e: u64,
        n: u64,
        now: u64,
    ) -> anyhow::Result<Option<String>> {
        // The next epoch final too: every request that could still answer in this one has
        // long expired, and a receipt of either is taken only when a checkpoint vouches.
        if !genesis.finality.is_final(e.saturating_add(1), now) {
            return Ok(Some("not final long enough".into()));
        }
        let digest = books.epoch_digest(e)?;
        let claims = books.claims_in_epoch(e)?;
        let agree = checkpoints_of(books, genesis, e)?.iter().any(|c| {
            let p = c.payload();
            p.digest == digest && p.receipts == n && p.states_claims(&claims)
        });
        Ok((!agree).then(|| "no registrar checkpoint held agrees with these books".into()))
    }

    pub(crate) fn prune(genesis: &Path, a: PruneArgs, out: Output) -> anyhow::Result<ExitCode> {
        let genesis = Genesis::load(genesis)?;
        let now = crate::net::now_ms();
        let before = match (a.before_epoch, a.older_than_days) {
            (Some(e), None) => e,
            (None, Some(days)) => epoch_of(
                now.saturating_sub(days.saturating_mul(86_400_000)),
                genesis.epoch_ms,
            ),
            _ => bail!("say which epochs: --older-than-days DAYS or --before-epoch EPOCH"),
        };
        let books = open_stopped(&genesis, &a.data.data_dir)?;
        if !a.dry_run {
            std::fs::create_dir_all(&a.archive_dir)
                .with_context(|| format!("creating {}", a.archive_dir.display()))?;
        }
        let mut human = String::new();
        let mut rows = Vec::new();
        for (e, n) in books.epochs()? {
            if e >= before || books.pruned_epoch(e)?.is_some() {
                continue;
            }
            if let Some(why) = unprunable(&books, &genesis, e, n, now)? {
                tracing::warn!(epoch = e, "not pruned: {why}");
                human.push_str(&format!("epoch {e}: {n} receipts, kept: {why}\n"));
                rows.push(json!({ "epoch": e, "receipts": n, "pruned": false, "why": why }));
                continue;
            }
            let path = archive_path(&a.archive_dir, e);
            if a.dry_run {
                human.push_str(&format!(
                    "epoch {e}: {n} receipts, would be archived to {} and pruned\n",
                    path.display()
                ));
                rows.push(json!({ "epoch": e, "receipts": n, "pruned": false, "file": path }));
                continue;
            }
            tracing::info!(epoch = e, receipts = n, file = %path.display(), "archiving");
            export_epoch(&books, &genesis, e, &path)?;
            // Read back and re-verified before anything is deleted.
            let v = archive::verify(&path, &genesis.id, genesis.epoch_ms, &genesis.registrars)?;
            if !v.is_vouched() {
                bail!(
                    "the archive of epoch {e} at {} does not verify against its checkpoints: nothing pruned",
                    path.display()
                );
            }
            let report = books.prune(e, PRUNE_CHUNK, &|done| {
                tracing::info!(epoch = e, deleted = done, "pruning");
            })?;
            human.push_str(&format!(
                "epoch {e}: {n} receipts archived to {}; {} deleted, {} kept as evidence\n",
                path.display(),
                report.deleted,
                report.kept
            ));
            rows.push(json!({
                "epoch": e, "receipts": n, "pruned": true, "file": path,
                "deleted": report.deleted, "kept": report.kept,
            }));
        }
        if rows.is_empty() {
            human.push_str(&format!("no epoch before {before} to prune\n"));
        }
        books.store().compact()?;
        out.emit(&human, &json!({ "before_epoch": before, "epochs": rows }))?;
        Ok(ExitCode::SUCCESS)
    }
}

#[cfg(feature = "ledger")]
pub(crate) use disk::{export, export_books, open_stopped, prune};

/// A light build has no database.
#[cfg(not(feature = "ledger"))]
pub(crate) fn export(
    _genesis: &Path,
    _epoch: u64,
    _file: Option<PathBuf>,
    _data_dir: &Path,
    _out: Output,
) -> anyhow::Result<ExitCode> {
    bail!("export reads a RocksDB ledger, which this light build leaves out")
}

/// A light build has no database.
#[cfg(not(feature = "ledger"))]
pub(crate) fn prune(_genesis: &Path, _a: PruneArgs, _out: Output) -> anyhow::Result<ExitCode> {
    bail!("prune changes a RocksDB ledger, which this light build leaves out")
}
