//! Nano account addresses: `nano_` + 52 base-32 characters of the public key + 8 of checksum.
//!
//! The key is read as 260 bits (four zero bits, then the 256 key bits) and written five bits to
//! a character in Nano's alphabet; the checksum is the 5-byte blake2b digest of the key, bytes
//! reversed, written the same way. The legacy `xrb_` prefix is accepted on input.

use blake2::digest::consts::U5;
use blake2::{Blake2b, Digest};

use crate::KeyError;

const ALPHABET: &[u8; 32] = b"13456789abcdefghijkmnopqrstuwxyz";
const KEY_CHARS: usize = 52;
const CHECK_CHARS: usize = 8;

fn checksum(key: &[u8; 32]) -> [u8; 5] {
    let mut out = [0u8; 5];
    out.copy_from_slice(&Blake2b::<U5>::digest(key));
    out.reverse();
    out
}

fn char_value(c: u8) -> Option<u8> {
    ALPHABET.iter().position(|&a| a == c).map(|p| p as u8)
}

/// Write `bits` (big-endian, `nchars * 5` bits, right-aligned in `bytes`) as base-32.
fn encode_bits(bytes: &[u8], nchars: usize, out: &mut String) {
    let total_bits = bytes.len() * 8;
    let pad = nchars * 5 - total_bits; // leading zero bits
    for i in 0..nchars {
        let mut v = 0u8;
        for j in 0..5 {
            let bit = i * 5 + j;
            let b = if bit < pad {
                0
            } else {
                let k = bit - pad;
                (bytes[k / 8] >> (7 - k % 8)) & 1
            };
            v = (v << 1) | b;
        }
        out.push(ALPHABET[v as usize] as char);
    }
}

/// Read base-32 `chars` into `out` (big-endian); the `pad` leading bits must be zero.
fn decode_bits(chars: &[u8], out: &mut [u8]) -> Result<(), KeyError> {
    let pad = chars.len() * 5 - out.len() * 8;
    for (i, &c) in chars.iter().enumerate() {
        let v = char_value(c).ok_or_else(|| {
            KeyError::BadAddress(format!(
                "character '{}' is not in the Nano alphabet",
                c as char
            ))
        })?;
        for j in 0..5 {
            let bit = i * 5 + j;
            let b = (v >> (4 - j)) & 1;
            if bit < pad {
                if b != 0 {
                    return Err(KeyError::BadAddress(
                        "first character must be 1 or 3".to_string(),
                    ));
                }
            } else {
                let k = bit - pad;
                out[k / 8] |= b << (7 - k % 8);
            }
        }
    }
    Ok(())
}

/// The `nano_` account for a 32-byte public key.
pub fn encode_account(key: &[u8; 32]) -> String {
    let mut s = String::with_capacity(5 + KEY_CHARS + CHECK_CHARS);
    s.push_str("nano_");
    encode_bits(key, KEY_CHARS, &mut s);
    encode_bits(&checksum(key), CHECK_CHARS, &mut s);
    s
}

/// Decode a `nano_` (or legacy `xrb_`) account to its public key, checking its checksum.
pub fn decode_account(account: &str) -> Result<[u8; 32], KeyError> {
    let body = account
        .strip_prefix("nano_")
        .or_else(|| account.strip_prefix("xrb_"))
        .ok_or_else(|| KeyError::BadAddress("prefix must be nano_ or xrb_".to_string()))?;
    let body = body.as_bytes();
    if body.len() != KEY_CHARS + CHECK_CHARS {
        return Err(KeyError::BadAddress(format!(
            "wrong length: {} characters after the prefix, expected {}",
            body.len(),
            KEY_CHARS + CHECK_CHARS
        )));
    }
    let mut key = [0u8; 32];
    decode_bits(&body[..KEY_CHARS], &mut key)?;
    let mut check = [0u8; 5];
    decode_bits(&body[KEY_CHARS..], &mut check)?;
    if check != checksum(&key) {
        return Err(KeyError::BadAddress("checksum does not match".to_string()));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(key in any::<[u8; 32]>()) {
            let acc = encode_account(&key);
            prop_assert_eq!(acc.len(), 65);
            prop_assert!(acc.starts_with("nano_1") || acc.starts_with("nano_3"));
            prop_assert_eq!(decode_account(&acc).expect("own encoding decodes"), key);
        }

        #[test]
        fn any_single_character_change_is_caught(key in any::<[u8; 32]>(), pos in 5usize..65, c in 0usize..32) {
            let acc = encode_account(&key);
            let mut bytes = acc.clone().into_bytes();
            prop_assume!(bytes[pos] != ALPHABET[c]);
            bytes[pos] = ALPHABET[c];
            let changed = String::from_utf8(bytes).expect("ascii");
            prop_assert!(decode_account(&changed).is_err());
        }
    }
}
