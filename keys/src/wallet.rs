//! Nano wallet accounts derived from a seed, the way every Nano wallet derives them:
//! `private = blake2b-256(seed ‖ index as u32 big-endian)`, and the public key is ed25519 with
//! blake2b-512 in place of SHA-512.
//!
//! dpow never holds anyone's wallet. This exists so that test networks (`testnet/run.sh`) and
//! tests can name payout accounts that a real wallet (Nault, Natrium, a Nano node) opens from
//! the same seed, and so that the difference between a Nano account and a dpow key is tested
//! rather than asserted.

use blake2::digest::consts::U32;
use blake2::{Blake2b, Blake2b512, Digest};
use ed25519_dalek::VerifyingKey;
use ed25519_dalek::hazmat::ExpandedSecretKey;
use zeroize::Zeroizing;

use crate::{KeyError, NanoAccount};

/// The account at `index` of the Nano wallet seed `seed`.
pub fn account_from_seed(seed: &[u8; 32], index: u32) -> Result<NanoAccount, KeyError> {
    let mut h = Blake2b::<U32>::new();
    h.update(seed);
    h.update(index.to_be_bytes());
    let private = Zeroizing::new(<[u8; 32]>::from(h.finalize()));
    account_from_private(&private)
}

/// The account of a Nano private key.
pub fn account_from_private(private: &[u8; 32]) -> Result<NanoAccount, KeyError> {
    let expanded = Zeroizing::new(<[u8; 64]>::from(Blake2b512::digest(private)));
    let secret = ExpandedSecretKey::from_bytes(&expanded);
    NanoAccount::from_bytes(VerifyingKey::from(&secret).to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_zero_seed_gives_the_account_every_wallet_gives() {
        // Published by several Nano libraries (and Nano's own documentation examples).
        let account = account_from_seed(&[0; 32], 0).expect("account");
        assert_eq!(
            account.to_string(),
            "nano_3i1aq1cchnmbn9x5rsbap8b15akfh7wj7pwskuzi7ahz8oq6cobd99d4r3b7"
        );
        assert_eq!(
            hex::encode_upper(account.as_bytes()),
            "C008B814A7D269A1FA3C6528B19201A24D797912DB9996FF02A1FF356E45552B"
        );
        let mut private = [0u8; 32];
        hex::decode_to_slice(
            "9F0E444C69F77A49BD0BE89DB92C38FE713E0963165CCA12FAF5712D7657120F",
            &mut private,
        )
        .expect("hex");
        assert_eq!(account_from_private(&private).expect("account"), account);
        let next = account_from_seed(&[0; 32], 1).expect("account");
        assert_eq!(
            next.to_string(),
            "nano_3rrf6cus8pye6o1kzi5n6wwjof8bjb7ff4xcgesi3njxid6x64pms6onw1f9"
        );
    }

    #[test]
    fn a_dpow_key_from_the_same_secret_is_another_key() {
        // The same 32 secret bytes as a dpow (SHA-512) key and as a Nano (blake2b) private
        // key give different public keys: sending to the dpow key's bytes would be lost.
        let secret = [7u8; 32];
        let dpow = crate::SecretKey::from_seed(secret).public();
        let nano = account_from_private(&secret).expect("account");
        assert_ne!(&dpow.0, nano.as_bytes());
    }
}
