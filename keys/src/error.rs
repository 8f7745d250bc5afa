use std::path::PathBuf;

/// Everything that can go wrong with keys, key files and addresses.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A hex string did not decode.
    #[error("bad hex: {0}")]
    BadHex(String),
    /// A byte string had the wrong length for what it should hold.
    #[error("wrong length for {what}: expected {expected} bytes, got {got}")]
    WrongLength {
        /// What was being decoded.
        what: &'static str,
        /// The length required.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// The bytes are not a valid ed25519 public key (not a curve point, or a weak key).
    #[error("not a valid ed25519 public key")]
    InvalidPublicKey,
    /// A signature did not verify against the message and key.
    #[error("signature does not verify")]
    BadSignature,
    /// An address was malformed; the text says how.
    #[error("invalid nano address: {0}")]
    BadAddress(String),
    /// A key file is readable or writable by users other than its owner.
    #[error("key file {path} is accessible by other users (mode {mode:o}); run `chmod 600 {path}`")]
    InsecurePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A key file's contents are not a dpow key.
    #[error("key file {path} is not a dpow secret key: {reason}")]
    BadKeyFile {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A key file already exists where a new one was to be written.
    #[error("key file {0} already exists; refusing to overwrite it")]
    AlreadyExists(PathBuf),
    /// An I/O error reading or writing a key file.
    #[error("key file {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The operating system's random source failed.
    #[error("no randomness available: {0}")]
    Random(String),
}
