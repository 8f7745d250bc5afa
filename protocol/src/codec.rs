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
    if !encodes_to(&value, bytes) {
        return Err(ProtocolError::NonCanonical { kind });
    }
    Ok(value)
}

/// Whether `value` encodes to exactly `bytes`: its encoding compared as it is made, byte by
/// byte, with no buffer (an envelope's decode checks every nested level this way).
fn encodes_to<T: Serialize + ?Sized>(value: &T, bytes: &[u8]) -> bool {
    postcard::serialize_with_flavor(
        value,
        Compare {
            expected: bytes,
            at: 0,
        },
    )
    .unwrap_or(false)
}

/// A postcard output that holds nothing and fails at the first byte that differs from
/// `expected`; it finishes `true` when all of `expected` was made.
struct Compare<'a> {
    expected: &'a [u8],
    at: usize,
}

impl postcard::ser_flavors::Flavor for Compare<'_> {
    type Output = bool;

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.try_extend(&[data])
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        let end = self.at + data.len();
        match self.expected.get(self.at..end) {
            Some(want) if want == data => {
                self.at = end;
                Ok(())
            }
            _ => Err(postcard::Error::SerializeBufferFull),
        }
    }

    fn finalize(self) -> postcard::Result<bool> {
        Ok(self.at == self.expected.len())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_comparison_says_what_encoding_and_comparing_says() {
        let value: (u64, Vec<u8>, Option<u32>, bool) = (300, vec![1, 2, 3], Some(7), true);
        let bytes = encode(&value, "test").unwrap();
        assert!(encodes_to(&value, &bytes));
        for i in 0..bytes.len() {
            let mut other = bytes.clone();
            other[i] ^= 1;
            assert!(!encodes_to(&value, &other), "byte {i} changed");
            assert!(!encodes_to(&value, &bytes[..i]), "cut to {i} bytes");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(!encodes_to(&value, &longer));
        // 300 written with an extra, empty varint byte decodes to the same value but is not
        // its encoding.
        let mut overlong = vec![0xac, 0x82, 0x00];
        overlong.extend_from_slice(&bytes[2..]);
        assert!(matches!(
            decode_canonical::<(u64, Vec<u8>, Option<u32>, bool)>(&overlong, "test"),
            Err(ProtocolError::NonCanonical { .. })
        ));
        assert_eq!(
            decode_canonical::<(u64, Vec<u8>, Option<u32>, bool)>(&bytes, "test").unwrap(),
            value
        );
    }
}
