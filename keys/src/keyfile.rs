//! Key files: one secret key per file, written `0600`, refused when others can read them.
//!
//! Format: the line `dpow-ed25519-secret-v1`, then the 32-byte seed as 64 hex digits.
//! A text format so that an operator can see what a file is; the seed line is the secret.

use std::fs;
use std::io::Write;
use std::path::Path;

use zeroize::Zeroizing;

use crate::{KeyError, SecretKey};

const HEADER: &str = "dpow-ed25519-secret-v1";
/// Largest key file we read: a key file is ~90 bytes; anything bigger is not ours.
const MAX_FILE_BYTES: u64 = 4096;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write `key` to a new file at `path` with mode `0600`. Refuses to overwrite.
pub fn write(path: &Path, key: &SecretKey) -> Result<(), KeyError> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            KeyError::AlreadyExists(path.to_path_buf())
        } else {
            KeyError::Io {
                path: path.to_path_buf(),
                source: e,
            }
        }
    })?;
    let body = Zeroizing::new(format!("{HEADER}\n{}\n", hex::encode(key.seed())));
    f.write_all(body.as_bytes()).map_err(io(path))?;
    f.sync_all().map_err(io(path))?;
    Ok(())
}

/// Read a key file, refusing it if group or others have any access to it.
pub fn read(path: &Path) -> Result<SecretKey, KeyError> {
    let meta = fs::metadata(path).map_err(io(path))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::InsecurePermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    let bad = |reason: &str| KeyError::BadKeyFile {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if meta.len() > MAX_FILE_BYTES {
        return Err(bad("file is too large"));
    }
    let text = Zeroizing::new(fs::read_to_string(path).map_err(io(path))?);
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Err(bad("missing the dpow-ed25519-secret-v1 header"));
    }
    let seed_hex = lines
        .next()
        .ok_or_else(|| bad("missing the key line"))?
        .trim();
    let mut seed = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(seed_hex, seed.as_mut_slice())
        .map_err(|_| bad("the key line is not 64 hex digits"))?;
    Ok(SecretKey::from_seed(*seed))
}

/// Read the key at `path`, or create a new one there if the file does not exist.
pub fn load_or_create(path: &Path) -> Result<(SecretKey, bool), KeyError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok((read(path)?, false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                fs::create_dir_all(dir).map_err(io(dir))?;
            }
            let key = SecretKey::generate()?;
            write(path, &key)?;
            Ok((key, true))
        }
        Err(e) => Err(KeyError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("k");
        let key = SecretKey::from_seed([9; 32]);
        write(&p, &key).expect("write");
        assert_eq!(read(&p).expect("read").public(), key.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert!(matches!(write(&p, &key), Err(KeyError::AlreadyExists(_))));
    }

    #[cfg(unix)]
    #[test]
    fn refuses_readable_by_others() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("k");
        write(&p, &SecretKey::from_seed([1; 32])).expect("write");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = read(&p).expect_err("must refuse");
        assert!(
            matches!(err, KeyError::InsecurePermissions { mode: 0o644, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"));
    }

    #[test]
    fn rejects_garbage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("k");
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        opts.open(&p)
            .expect("create")
            .write_all(b"dpow-ed25519-secret-v1\nnothex\n")
            .expect("w");
        assert!(matches!(read(&p), Err(KeyError::BadKeyFile { .. })));
    }

    #[test]
    fn load_or_create_is_stable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("sub/node.key");
        let (a, created) = load_or_create(&p).expect("create");
        assert!(created);
        let (b, created) = load_or_create(&p).expect("load");
        assert!(!created);
        assert_eq!(a.public(), b.public());
    }
}
