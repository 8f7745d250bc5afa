//! The node's control socket: a Unix socket at `DATA_DIR/control.sock` through which the
//! node's own user acts on the running node. The socket is created mode 0600 inside the data
//! directory, so the operating system, not a token, decides who may use it; nothing on it is
//! reachable over the network.
//!
//! One request per connection, one JSON line each way, handled one connection at a time:
//!
//! ```text
//! → {"Backup":{"dir":"/var/backups/dpow/2026-11-30/db"}}
//! ← {"ok":true,"error":null}
//! ```
//!
//! `Backup` writes a RocksDB checkpoint of the node's database into `dir` (which must not
//! exist) while the node keeps running: `dpow node backup` uses it.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::store::Store;

/// The socket's file name in the data directory.
pub const SOCKET: &str = "control.sock";
/// Longest request or reply line read, in bytes.
const MAX_LINE_BYTES: u64 = 4096;
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What a client asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Write a checkpoint of the database into `dir`, a directory that does not exist yet.
    Backup {
        /// The new directory (absolute: the node's working directory may differ).
        dir: PathBuf,
    },
}

/// The node's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// Whether the request was carried out.
    pub ok: bool,
    /// Why not, when it was not.
    pub error: Option<String>,
}

/// The socket's path for a data directory.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET)
}

/// Listen on `DATA_DIR/control.sock` and serve requests against `store` on a thread of its
/// own (a backup is disk work: it never runs on the async runtime). A socket file left by a
/// node that died is replaced: the caller holds the store's lock, so no other node runs on
/// this directory.
pub fn serve(data_dir: &Path, store: Arc<Store>) -> anyhow::Result<()> {
    let path = socket_path(data_dir);
    if std::fs::symlink_metadata(&path).is_ok() {
        std::fs::remove_file(&path)
            .with_context(|| format!("removing the old control socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(&path)
        .with_context(|| format!("creating the control socket {}", path.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {}", path.display()))?;
    }
    tracing::info!(path = %path.display(), "control socket ready");
    std::thread::Builder::new()
        .name("dpow-control".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(s) => {
                        if let Err(e) = handle(s, &store) {
                            tracing::warn!("control request: {e:#}");
                        }
                    }
                    Err(e) => {
                        tracing::warn!("control socket: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })
        .context("starting the control thread")?;
    Ok(())
}

/// Read one line of at most [`MAX_LINE_BYTES`].
fn read_line(stream: &UnixStream) -> anyhow::Result<String> {
    let mut line = String::new();
    BufReader::new(stream.take(MAX_LINE_BYTES)).read_line(&mut line)?;
    Ok(line)
}

fn handle(mut stream: UnixStream, store: &Store) -> anyhow::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    let line = read_line(&stream).context("reading the request")?;
    let outcome = match serde_json::from_str::<Request>(line.trim()) {
        Ok(Request::Backup { dir }) => {
            tracing::info!(dir = %dir.display(), "backup requested");
            let r = backup(store, &dir);
            if r.is_ok() {
                tracing::info!(dir = %dir.display(), "backup written");
            }
            r
        }
        Err(e) => Err(anyhow::anyhow!("not a control request: {e}")),
    };
    let reply = match outcome {
        Ok(()) => Reply {
            ok: true,
            error: None,
        },
        Err(e) => Reply {
            ok: false,
            error: Some(format!("{e:#}")),
        },
    };
    let mut text = serde_json::to_string(&reply)?;
    text.push('\n');
    stream.write_all(text.as_bytes())?;
    Ok(())
}

/// A checkpoint of `store` in the new directory `dir`.
pub fn backup(store: &Store, dir: &Path) -> anyhow::Result<()> {
    if !dir.is_absolute() {
        anyhow::bail!("the backup directory must be an absolute path");
    }
    if std::fs::symlink_metadata(dir).is_ok() {
        anyhow::bail!("{} exists already: name a new directory", dir.display());
    }
    store
        .checkpoint(dir)
        .with_context(|| format!("writing a checkpoint to {}", dir.display()))
}

/// Send one request to the node running on `data_dir` and wait up to `timeout` for its
/// answer; `None` when no node listens there.
pub fn request(data_dir: &Path, req: &Request, timeout: Duration) -> anyhow::Result<Option<Reply>> {
    let path = socket_path(data_dir);
    let mut stream = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => {
            return Err(e).with_context(|| format!("connecting to {}", path.display()));
        }
    };
    let mut text = serde_json::to_string(req)?;
    text.push('\n');
    stream.write_all(text.as_bytes())?;
    stream.set_read_timeout(Some(timeout))?;
    let line = read_line(&stream).context("reading the node's answer")?;
    let reply = serde_json::from_str(line.trim())
        .with_context(|| format!("the node's answer {:?}", line.trim()))?;
    Ok(Some(reply))
}
