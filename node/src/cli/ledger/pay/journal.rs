//! The pay journal: what `dpow ledger pay` meant to send and what came of it, per epoch and
//! account, in a RocksDB database of its own (default `DATA_DIR/pay-journal`), apart from the
//! node's database, so that paying works while the node runs and holds that one's lock.
//!
//! Each record is written and synced to disk before the send (`planned`: amount and id) and
//! after it (`sent` with the block hash, or still `planned` with the last error). A record is
//! never removed: the journal is the payer's own account of an epoch. Layout: column family
//! `pay-journal-v1`, key = epoch (8 bytes, big-endian) ‖ the account's public key (32 bytes),
//! value = the [`Entry`] as JSON.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rocksdb::{ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteOptions};
use serde::{Deserialize, Serialize};

/// The journal's one column family.
const CF_JOURNAL: &str = "pay-journal-v1";

/// Where a line stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum State {
    /// About to be sent, or sent without a block hash back (an error, a timeout, a crash).
    Planned,
    /// Sent: the node answered a block hash.
    Sent,
}

/// One (epoch, account) record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// Planned or sent.
    pub state: State,
    /// The destination, as sent.
    pub destination: String,
    /// Raw, in decimal.
    pub amount: String,
    /// The `send` id, the same on every attempt.
    pub id: String,
    /// The block hash, once sent.
    pub block: Option<String>,
    /// The last attempt's error, if it failed.
    pub error: Option<String>,
    /// Sends attempted.
    pub attempts: u32,
}

/// The journal database, open for writing (or reading only, for `--dry-run`).
pub(crate) struct Journal {
    db: DB,
    path: PathBuf,
}

fn key(epoch: u64, account: &[u8; 32]) -> Vec<u8> {
    let mut k = Vec::with_capacity(40);
    k.extend_from_slice(&epoch.to_be_bytes());
    k.extend_from_slice(account);
    k
}

impl Journal {
    /// Open (creating it if needed) the journal at `path`.
    pub(crate) fn open(path: &Path) -> anyhow::Result<Journal> {
        std::fs::create_dir_all(path)
            .with_context(|| format!("creating the pay journal {}", path.display()))?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let cf = ColumnFamilyDescriptor::new(CF_JOURNAL, Options::default());
        let db = DB::open_cf_descriptors(&opts, path, [cf]).with_context(|| {
            format!(
                "cannot open the pay journal {} (is another `dpow ledger pay` using it?)",
                path.display()
            )
        })?;
        Ok(Journal {
            db,
            path: path.to_path_buf(),
        })
    }

    /// Open an existing journal to read it only (no lock taken); `None` if there is none.
    pub(crate) fn open_read_only(path: &Path) -> anyhow::Result<Option<Journal>> {
        if !path.join("CURRENT").is_file() {
            return Ok(None);
        }
        let db = DB::open_cf_for_read_only(&Options::default(), path, [CF_JOURNAL], false)
            .with_context(|| format!("reading the pay journal {}", path.display()))?;
        Ok(Some(Journal {
            db,
            path: path.to_path_buf(),
        }))
    }

    /// Where it lives.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn cf(&self) -> anyhow::Result<&rocksdb::ColumnFamily> {
        self.db
            .cf_handle(CF_JOURNAL)
            .with_context(|| format!("{} has no {CF_JOURNAL} family", self.path.display()))
    }

    /// The record of `account` in `epoch`.
    pub(crate) fn get(&self, epoch: u64, account: &[u8; 32]) -> anyhow::Result<Option<Entry>> {
        let Some(bytes) = self.db.get_cf(self.cf()?, key(epoch, account))? else {
            return Ok(None);
        };
        let entry = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "corrupt pay journal record in {} (epoch {epoch})",
                self.path.display()
            )
        })?;
        Ok(Some(entry))
    }

    /// Every record of `epoch`, by account.
    pub(crate) fn epoch(&self, epoch: u64) -> anyhow::Result<Vec<([u8; 32], Entry)>> {
        let prefix = epoch.to_be_bytes();
        let mut out = Vec::new();
        let iter = self
            .db
            .iterator_cf(self.cf()?, IteratorMode::From(&prefix, Direction::Forward));
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            let account: [u8; 32] = k[8..]
                .try_into()
                .with_context(|| format!("a pay journal key of {} bytes", k.len()))?;
            let entry = serde_json::from_slice(&v)
                .with_context(|| format!("corrupt pay journal record (epoch {epoch})"))?;
            out.push((account, entry));
        }
        Ok(out)
    }

    /// Write a record and sync it to disk before returning.
    pub(crate) fn put(&self, epoch: u64, account: &[u8; 32], entry: &Entry) -> anyhow::Result<()> {
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        let value = serde_json::to_vec(entry)?;
        self.db
            .put_cf_opt(self.cf()?, key(epoch, account), value, &sync)
            .with_context(|| format!("writing the pay journal {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(state: State) -> Entry {
        Entry {
            state,
            destination: "nano_x".into(),
            amount: "5".into(),
            id: "dpow-t-1-nano_x".into(),
            block: None,
            error: None,
            attempts: 1,
        }
    }

    #[test]
    fn records_survive_reopening_and_stay_in_their_epoch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("j");
        assert!(Journal::open_read_only(&path).expect("absent").is_none());
        {
            let j = Journal::open(&path).expect("opens");
            j.put(7, &[1; 32], &entry(State::Planned)).expect("put");
            j.put(7, &[2; 32], &entry(State::Sent)).expect("put");
            j.put(8, &[1; 32], &entry(State::Sent)).expect("put");
            // A second writer is refused while the first holds the lock.
            assert!(Journal::open(&path).is_err());
        }
        let j = Journal::open_read_only(&path)
            .expect("reads")
            .expect("exists");
        assert_eq!(
            j.get(7, &[1; 32]).expect("get"),
            Some(entry(State::Planned))
        );
        assert_eq!(j.get(9, &[1; 32]).expect("get"), None);
        let seven = j.epoch(7).expect("epoch");
        assert_eq!(seven.len(), 2);
        assert_eq!(seven[1], ([2; 32], entry(State::Sent)));
    }
}
