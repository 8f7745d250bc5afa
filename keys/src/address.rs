//! Nano account addresses: `nano_` + 52 base-32 characters of the public key + 8 of checksum.
//!
//! The key is read as 260 bits (four zero bits, then the 256 key bits) and written five bits to
//! a character in Nano's alphabet; the checksum is the 5-byte blake2b digest of the key, bytes
//! reversed, written the same way. The legacy `xrb_` prefix is accepted on input.
//!
//! dpow's own keys (node, service, registrar) are written the same way under the prefix
//! [`KEY_PREFIX`] (`dpow_`), never `nano_`: they are ed25519 keys with SHA-512, which no Nano
//! wallet can sign for, so funds sent to their `nano_` form would be lost. Only a
//! [`NanoAccount`], a worker's payout account from its own wallet, is printed as `nano_`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

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

/// The prefix of a dpow key (node, service, registrar) in text.
pub const KEY_PREFIX: &str = "dpow_";

/// The Nano burn account's key (all zeros): nothing sent there can ever be spent.
const BURN: [u8; 32] = [0; 32];

fn encode_with(prefix: &str, key: &[u8; 32]) -> String {
    let mut s = String::with_capacity(prefix.len() + KEY_CHARS + CHECK_CHARS);
    s.push_str(prefix);
    encode_bits(key, KEY_CHARS, &mut s);
    encode_bits(&checksum(key), CHECK_CHARS, &mut s);
    s
}

/// The `nano_` account for a 32-byte public key.
pub fn encode_account(key: &[u8; 32]) -> String {
    encode_with("nano_", key)
}

/// The `dpow_` text of a dpow key: the same base-32 and checksum as a Nano account under
/// another prefix, so it cannot be pasted into a wallet as a destination.
pub fn encode_key(key: &[u8; 32]) -> String {
    encode_with(KEY_PREFIX, key)
}

/// Decode a `dpow_` key text, checking its checksum.
pub fn decode_key(text: &str) -> Result<[u8; 32], KeyError> {
    let body = text
        .strip_prefix(KEY_PREFIX)
        .ok_or_else(|| KeyError::BadAddress(format!("a dpow key starts with {KEY_PREFIX}")))?;
    decode_body(body)
}

/// Decode a `nano_` (or legacy `xrb_`) account to its public key, checking its checksum.
pub fn decode_account(account: &str) -> Result<[u8; 32], KeyError> {
    let body = account
        .strip_prefix("nano_")
        .or_else(|| account.strip_prefix("xrb_"))
        .ok_or_else(|| KeyError::BadAddress("prefix must be nano_ or xrb_".to_string()))?;
    decode_body(body)
}

fn decode_body(body: &str) -> Result<[u8; 32], KeyError> {
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

/// A real Nano account, from the holder's own wallet: where a worker's credits are paid.
///
/// Parsing checks the prefix (`nano_`, or legacy `xrb_`), the alphabet, the length and the
/// checksum, and refuses the burn account (the all-zero key). On the wire it is the account's
/// 32-byte public key; in text, always `nano_`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct NanoAccount([u8; 32]);

impl NanoAccount {
    /// The account for a public key, unless it is the burn account.
    pub fn from_bytes(key: [u8; 32]) -> Result<NanoAccount, KeyError> {
        if key == BURN {
            return Err(KeyError::BadAddress(
                "that is the burn account: nothing sent there can ever be spent".to_string(),
            ));
        }
        Ok(NanoAccount(key))
    }

    /// The account's public key.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for NanoAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&encode_account(&self.0))
    }
}

impl fmt::Debug for NanoAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NanoAccount({})", encode_account(&self.0))
    }
}

impl FromStr for NanoAccount {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        if s.starts_with(KEY_PREFIX) {
            return Err(KeyError::BadAddress(
                "that is a dpow key, not a Nano account: name an account from your own Nano wallet"
                    .to_string(),
            ));
        }
        NanoAccount::from_bytes(decode_account(s)?)
    }
}

impl<'de> Deserialize<'de> for NanoAccount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let key = <[u8; 32]>::deserialize(d)?;
        NanoAccount::from_bytes(key).map_err(serde::de::Error::custom)
    }
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

        #[test]
        fn keys_and_accounts_never_pass_for_each_other(key in any::<[u8; 32]>()) {
            let text = encode_key(&key);
            prop_assert!(text.starts_with("dpow_"));
            prop_assert_eq!(decode_key(&text).expect("own encoding decodes"), key);
            prop_assert!(decode_account(&text).is_err());
            prop_assert!(decode_key(&encode_account(&key)).is_err());
        }
    }

    #[test]
    fn the_burn_account_is_refused() {
        let burn = "nano_1111111111111111111111111111111111111111111111111111hifc8npp";
        assert_eq!(decode_account(burn).expect("valid checksum"), [0; 32]);
        let err = burn.parse::<NanoAccount>().expect_err("burn refused");
        assert!(err.to_string().contains("burn"), "{err}");
        let wire = postcard_like_zero();
        assert!(serde_json::from_str::<NanoAccount>(&wire).is_err());
    }

    fn postcard_like_zero() -> String {
        serde_json::to_string(&[0u8; 32]).expect("json")
    }
}
