//! The sequence numbers a registrar key has signed, kept beside the key file (`KEY.seq`), so
//! that `dpow registry` numbers its next entry from what this machine knows it signed and not
//! only from what one peer says.
//!
//! The next number is `max(local, network) + 1`, where `local` is the last number recorded
//! here for the network and `network` the highest the peer holds. A network *ahead* of the
//! file means entries were signed with this key elsewhere: a second machine holding the same
//! key, or a file lost or restored from an old backup. Two machines signing with one key will
//! sooner or later give two entries one number (an equivocation), so that case is refused
//! unless the operator says they know why. A network *behind* the file means entries signed
//! here have not spread (yet); the new entry is numbered after them and waits behind them.
//!
//! The file is small TOML, one number per network, written atomically (a temporary file,
//! fsync, rename, fsync of the folder) after each entry is signed and handed to the network.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The state file of the key file at `key`: `KEY.seq` beside it.
pub(super) fn path_for(key: &Path) -> PathBuf {
    let mut name = key.file_name().unwrap_or_default().to_os_string();
    name.push(".seq");
    key.with_file_name(name)
}

/// The last sequence number signed with one registrar key, per network name.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct SeqFile {
    /// Network name -> the last sequence number signed for it with this key.
    #[serde(default)]
    pub(super) networks: BTreeMap<String, u64>,
}

impl SeqFile {
    /// Read the file at `path`; an empty record when there is none.
    pub(super) fn load(path: &Path) -> anyhow::Result<SeqFile> {
        match fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text)
                .with_context(|| format!("reading the sequence file {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SeqFile::default()),
            Err(e) => {
                Err(e).with_context(|| format!("reading the sequence file {}", path.display()))
            }
        }
    }

    /// Record `seq` as the last number signed on `network` (never moving backwards) and write
    /// the file atomically.
    pub(super) fn record(&mut self, path: &Path, network: &str, seq: u64) -> anyhow::Result<()> {
        let last = self.networks.entry(network.to_string()).or_default();
        *last = (*last).max(seq);
        let mut text = String::from(
            "# The last registry sequence number signed with this registrar key, per network.\n\
             # Written by `dpow registry`; keep it with the key (see docs/network.md).\n",
        );
        text.push_str(&toml::to_string(self).context("encoding the sequence file")?);
        write_atomically(path, text.as_bytes())
            .with_context(|| format!("writing the sequence file {}", path.display()))
    }
}

/// Write `bytes` to `path` so that a crash leaves either the old file or the new one: a
/// temporary file beside it, synced, renamed over it, and the folder synced.
pub(super) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    File::open(&dir)?.sync_all()
}

/// Why `dpow registry` refuses to sign.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum SeqError {
    /// The network holds entries of this key newer than the local record.
    #[error(
        "the network already holds entry #{network} of this registrar key, but its sequence file {file} records #{local} as the last signed here: another machine may be signing with the same key (two machines sharing a registrar key will sign two entries with one number). Check `dpow registry list`; if you know why (the file was lost or restored from an old backup), run again with --adopt-network-seq"
    )]
    NetworkAhead {
        /// The last number the file records.
        local: u64,
        /// The highest number the network holds.
        network: u64,
        /// The file.
        file: String,
    },
}

/// The number to sign next, and a note for the operator when the two sources disagree.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Next {
    /// The sequence number for the new entry.
    pub(super) seq: u64,
    /// What the operator should know, if anything.
    pub(super) note: Option<String>,
}

/// Choose the next sequence number from the local record (`None`: no record for this
/// network yet) and the highest number the network holds (0 for none).
pub(super) fn choose(
    local: Option<u64>,
    network: u64,
    adopt_network: bool,
    file: &Path,
) -> Result<Next, SeqError> {
    let Some(local) = local else {
        return Ok(Next {
            seq: network.saturating_add(1),
            note: (network > 0).then(|| {
                format!(
                    "no sequence file for this network yet: continuing from the network's entry #{network} and keeping the count in {}",
                    file.display()
                )
            }),
        });
    };
    if network > local && !adopt_network {
        return Err(SeqError::NetworkAhead {
            local,
            network,
            file: file.display().to_string(),
        });
    }
    let seq = local.max(network).saturating_add(1);
    let note = if local > network {
        Some(format!(
            "entries #{}..=#{local} signed here are not on the network (yet): entry #{seq} waits behind them until they arrive",
            network + 1
        ))
    } else if network > local {
        Some(format!(
            "adopting the network's entry #{network} over the sequence file's #{local}"
        ))
    } else {
        None
    };
    Ok(Next { seq, note })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_sits_beside_the_key() {
        assert_eq!(
            path_for(Path::new("/keys/registrar.key")),
            PathBuf::from("/keys/registrar.key.seq")
        );
        assert_eq!(
            path_for(Path::new("registrar.key")),
            PathBuf::from("registrar.key.seq")
        );
    }

    #[test]
    fn records_survive_a_reload_and_never_go_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.key.seq");
        let mut f = SeqFile::load(&path).expect("absent is empty");
        assert_eq!(f, SeqFile::default());
        f.record(&path, "main", 3).expect("write");
        f.record(&path, "test net", 9).expect("write");
        f.record(&path, "main", 2).expect("write");
        let back = SeqFile::load(&path).expect("read");
        assert_eq!(back.networks.get("main"), Some(&3));
        assert_eq!(back.networks.get("test net"), Some(&9));
        assert!(!dir.path().join("r.key.seq.tmp").exists());
        let text = fs::read_to_string(&path).expect("read");
        assert!(
            text.starts_with("# The last registry sequence number"),
            "{text}"
        );
        fs::write(&path, "networks = 5").expect("spoil");
        let e = SeqFile::load(&path).expect_err("not a table");
        assert!(format!("{e:#}").contains("sequence file"), "{e:#}");
    }

    #[test]
    fn the_next_number_follows_the_larger_count() {
        let file = Path::new("r.key.seq");
        // Nothing anywhere: entry 1. No file but a network: continue after it, with a note.
        assert_eq!(
            choose(None, 0, false, file),
            Ok(Next { seq: 1, note: None })
        );
        let n = choose(None, 7, false, file).expect("adopted");
        assert_eq!(n.seq, 8);
        assert!(n.note.expect("note").contains("no sequence file"));
        // In step.
        assert_eq!(
            choose(Some(7), 7, false, file),
            Ok(Next { seq: 8, note: None })
        );
        // Signed here but not spread yet: after the local count, with a note.
        let n = choose(Some(9), 7, false, file).expect("local ahead");
        assert_eq!(n.seq, 10);
        assert!(n.note.expect("note").contains("#8..=#9"));
        // The network ahead: another machine signs with this key. Refused unless adopted.
        let e = choose(Some(5), 7, false, file).expect_err("network ahead");
        assert_eq!(
            e,
            SeqError::NetworkAhead {
                local: 5,
                network: 7,
                file: "r.key.seq".into()
            }
        );
        assert!(e.to_string().contains("another machine"), "{e}");
        assert!(e.to_string().contains("--adopt-network-seq"), "{e}");
        let n = choose(Some(5), 7, true, file).expect("adopted");
        assert_eq!(n.seq, 8);
        assert!(n.note.expect("note").contains("adopting"));
    }
}
