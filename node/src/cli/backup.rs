//! `dpow node backup DIR`: a copy of a node's data directory that a node can run from.
//!
//! DIR gets the node key (mode 0600) and `db/`, a RocksDB checkpoint of the database: a
//! consistent copy taken in one step (files hard-linked on the same filesystem, copied
//! otherwise). While the node runs, the checkpoint is taken by the node itself through its
//! control socket ([`crate::control`]); when it does not, the database is opened here.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::Args;

use crate::output::Output;
#[cfg(feature = "ledger")]
use {
    crate::config::Config,
    crate::control::{self, Reply, Request},
    crate::store::Store,
    anyhow::Context,
    dpow_keys::keyfile,
    serde_json::json,
    std::time::Duration,
};

/// The longest a running node may take to write a checkpoint (a copy to another filesystem
/// of a large ledger).
#[cfg(feature = "ledger")]
const BACKUP_TIMEOUT: Duration = Duration::from_secs(3600);

/// Options of `dpow node backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The new directory to write the backup to (it must not exist).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// The node's config file, to find its data directory and key as the node does.
    #[arg(long, env = "DPOW_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The node's data directory (default: as the config says, else ./dpow-data).
    #[arg(long, env = "DPOW_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The node key (default: as the config says, else DATA_DIR/node.key).
    #[arg(long, env = "DPOW_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,
}

/// Run `dpow node backup`.
#[cfg(not(feature = "ledger"))]
pub(super) fn run(_a: BackupArgs, _out: Output) -> anyhow::Result<ExitCode> {
    bail!(
        "this light build keeps no database: its data is the node key alone (DATA_DIR/node.key); copy that file"
    )
}

/// Run `dpow node backup`.
#[cfg(feature = "ledger")]
pub(super) fn run(a: BackupArgs, out: Output) -> anyhow::Result<ExitCode> {
    let c = Config {
        config: a.config,
        data_dir: a.data_dir,
        key: a.key,
        ..Config::default()
    }
    .merged()?
    .with_defaults();
    let data_dir = c.data_dir.unwrap_or_default();
    let key_path = c.key.unwrap_or_else(|| data_dir.join("node.key"));
    let dir = std::path::absolute(&a.dir).with_context(|| format!("{}", a.dir.display()))?;
    if std::fs::symlink_metadata(&dir).is_ok() {
        bail!("{} exists already: name a new directory", dir.display());
    }
    if !data_dir.join("db").is_dir() {
        bail!(
            "{} holds no node database (db/): give the node's --data-dir or --config",
            data_dir.display()
        );
    }
    let key = keyfile::read(&key_path)?;
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let written = write_backup(&data_dir, &dir, &key);
    let (running, receipts, bytes) = match written {
        Ok(w) => w,
        Err(e) => {
            // Leave nothing half-written that could pass for a backup.
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    out.emit(
        &format!(
            "backed up {} to {}\n  key       node.key\n  database  db/ ({receipts} receipts, {:.1} MB)\n  taken     {}",
            data_dir.display(),
            dir.display(),
            bytes as f64 / 1e6,
            if running {
                "by the running node (a checkpoint)"
            } else {
                "from the stopped node's database"
            }
        ),
        &json!({
            "data_dir": data_dir,
            "backup": dir,
            "receipts": receipts,
            "bytes": bytes,
            "node_running": running,
        }),
    )?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "ledger")]
/// Write the key and the checkpoint, then open the copy to count what it holds. Returns
/// whether the node was running, the receipts and the database's bytes.
fn write_backup(
    data_dir: &std::path::Path,
    dir: &std::path::Path,
    key: &dpow_keys::SecretKey,
) -> anyhow::Result<(bool, usize, u64)> {
    keyfile::write(&dir.join("node.key"), key)?;
    let db = dir.join("db");
    let request = Request::Backup { dir: db.clone() };
    let running = match control::request(data_dir, &request, BACKUP_TIMEOUT)? {
        Some(Reply { ok: true, .. }) => true,
        Some(Reply { error, .. }) => bail!(
            "the running node could not write the backup: {}",
            error.unwrap_or_default()
        ),
        None => {
            let store = Store::open(&data_dir.join("db")).context(
                "no node answered on the control socket, and the database cannot be opened here",
            )?;
            control::backup(&store, &db)?;
            false
        }
    };
    let copy = Store::open(&db).context("the backup does not open as a database")?;
    let receipts = copy
        .receipts()
        .try_fold(0usize, |n, r| r.map(|_| n + 1))
        .context("reading the backup's receipts")?;
    Ok((running, receipts, copy.disk_bytes()))
}
