//! The canonical binary encoding: postcard, with strict decoding.
//!
//! postcard is maintained and has a written wire specification (bincode is unmaintained:
//! RUSTSEC-2025-0141). Decoding rejects truncated input, trailing bytes, and any encoding that
//! is not the one postcard itself would produce for the decoded value (e.g. over-long varints),
//! so one value has exactly one encoding and ids computed over bytes are stable.

use serde::{Deserialize, Serialize};

use crate::ProtocolError;

/// Encode `value`; `kind` names the message in errors.
pub fn encode<T: Serialize + ?Sized>(
    value: &T,
    kind: &'static str,
) -> Result<Vec<u8>, ProtocolError> {
    postcard::to_allocvec(value).map_err(|e| ProtocolError::Malformed {
        kind,
        reason: e.to_string(),
    })
}

/// Decode exactly one canonically encoded `T` from `bytes`.
pub fn decode_canonical<'a, T>(bytes: &'a [u8], kind: &'static str) -> Result<T, ProtocolError>
where
    T: Deserialize<'a> + Serialize,
{
    let (value, rest) = postcard::take_from_bytes::<T>(bytes).map_err(|e| match e {
        postcard::Error::DeserializeUnexpectedEnd => ProtocolError::Truncated { kind },
        other => ProtocolError::Malformed {
            kind,
            reason: other.to_string(),
        },
    })?;
    if !rest.is_empty() {
        return Err(ProtocolError::TrailingBytes {
            kind,
            extra: rest.len(),
        });
    }
    if encode(&value, kind)? != bytes {
        return Err(ProtocolError::NonCanonical { kind });
    }
    Ok(value)
}
