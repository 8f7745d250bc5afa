/// Everything the protocol can reject, each saying what was wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProtocolError {
    /// A hex field had the wrong number of digits.
    #[error("wrong length for {what}: expected {expected} hex digits, got {got}")]
    WrongLength {
        /// The field.
        what: &'static str,
        /// Digits required.
        expected: usize,
        /// Digits given.
        got: usize,
    },
    /// A hex field held something that is not hex.
    #[error("bad hex in {what}: {reason}")]
    BadHex {
        /// The field.
        what: &'static str,
        /// What the decoder said.
        reason: String,
    },
    /// A multiplier was not a finite positive number.
    #[error("bad multiplier {0:?}: must be a finite number greater than 0")]
    BadMultiplier(String),
    /// A difficulty outside what the network's profile accepts.
    #[error("difficulty {difficulty} is outside the profile's bounds {min}..={max}")]
    DifficultyOutOfBounds {
        /// The difficulty asked for.
        difficulty: String,
        /// The profile's lowest accepted difficulty.
        min: String,
        /// The profile's highest accepted difficulty.
        max: String,
    },
    /// An unknown profile or block kind name.
    #[error("unknown {what} {name:?}; expected one of: {expected}")]
    UnknownName {
        /// "profile" or "block kind".
        what: &'static str,
        /// The name given.
        name: String,
        /// The accepted names.
        expected: String,
    },
    /// A profile definition that contradicts itself.
    #[error("invalid profile: {0}")]
    BadProfile(String),
    /// An encoded message is longer than the limit for its kind.
    #[error("{kind} message is {got} bytes, over the limit of {limit}")]
    Oversized {
        /// The message kind.
        kind: &'static str,
        /// Its size.
        got: usize,
        /// The limit.
        limit: usize,
    },
    /// An encoded message ended before it was complete.
    #[error("{kind} message is truncated")]
    Truncated {
        /// The message kind.
        kind: &'static str,
    },
    /// An encoded message did not decode.
    #[error("{kind} message does not decode: {reason}")]
    Malformed {
        /// The message kind.
        kind: &'static str,
        /// What the decoder said.
        reason: String,
    },
    /// An encoded message has bytes after its end.
    #[error("{kind} message has {extra} trailing bytes")]
    TrailingBytes {
        /// The message kind.
        kind: &'static str,
        /// How many.
        extra: usize,
    },
    /// An encoding that is valid but not the one canonical encoding of its value.
    #[error("{kind} message is not canonically encoded")]
    NonCanonical {
        /// The message kind.
        kind: &'static str,
    },
    /// A version this node does not speak.
    #[error("unknown {kind} version {got}; this node speaks version {supported}")]
    UnknownVersion {
        /// The message kind.
        kind: &'static str,
        /// The version in the message.
        got: u8,
        /// The version we speak.
        supported: u8,
    },
    /// A signed envelope carries a different domain than the one expected.
    #[error("wrong signing domain: expected {expected}, got {got}")]
    WrongDomain {
        /// The domain expected.
        expected: String,
        /// The domain found.
        got: String,
    },
    /// A signature that does not verify.
    #[error("bad signature on {kind}")]
    BadSignature {
        /// The message kind.
        kind: &'static str,
    },
    /// A message whose validity window has ended.
    #[error("{kind} expired at {expires_ms} (now {now_ms})")]
    Expired {
        /// The message kind.
        kind: &'static str,
        /// When it expired (unix ms).
        expires_ms: u64,
        /// The time of the check (unix ms).
        now_ms: u64,
    },
    /// A message dated too far in the future.
    #[error("{kind} is not yet valid: created at {created_ms}, now {now_ms}")]
    NotYetValid {
        /// The message kind.
        kind: &'static str,
        /// Its creation time (unix ms).
        created_ms: u64,
        /// The time of the check (unix ms).
        now_ms: u64,
    },
    /// A field whose value breaks a rule of the message (the text says which).
    #[error("invalid {kind}: {reason}")]
    Invalid {
        /// The message kind.
        kind: &'static str,
        /// The rule broken.
        reason: String,
    },
    /// Work that does not reach the difficulty it claims to.
    #[error("work {work} for root {root} has value {value}, below the threshold {threshold}")]
    InsufficientWork {
        /// The root.
        root: String,
        /// The nonce.
        work: String,
        /// Its value.
        value: String,
        /// The threshold it had to meet.
        threshold: String,
    },
}
