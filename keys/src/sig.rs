//! ed25519 keys and signatures as dpow uses them.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::KeyError;

/// An ed25519 secret key (the 32-byte seed). Zeroized on drop; `Debug` never shows it.
///
/// It keeps the expanded signing key and its public key (ed25519-dalek's `SigningKey`, which
/// zeroizes its secret on drop), so `public` is a copy and `sign` one scalar multiplication:
/// deriving them from the seed on every call tripled the cost of each signature.
#[derive(Clone)]
pub struct SecretKey {
    signing: SigningKey,
}

// `SigningKey` zeroizes its secret when dropped.
impl ZeroizeOnDrop for SecretKey {}

impl SecretKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self::from_seed(*seed))
    }

    /// A key from a 32-byte seed (tests and deterministic simulations).
    pub fn from_seed(mut seed: [u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(&seed);
        seed.zeroize();
        Self { signing }
    }

    /// The seed bytes; handle with care.
    pub fn seed(&self) -> &[u8; 32] {
        self.signing.as_bytes()
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key().to_bytes())
    }

    /// Sign `msg`.
    pub fn sign(&self, msg: &[u8]) -> Signature {
        Signature(self.signing.sign(msg).to_bytes())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// A [`PublicKey`] decompressed once ([`PublicKey::prepare`]); its checks are the same.
#[derive(Clone, Debug)]
pub struct PreparedKey(VerifyingKey);

impl PreparedKey {
    /// Verify `sig` over `msg` with strict rules, as [`PublicKey::verify`].
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> Result<(), KeyError> {
        let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
        self.0
            .verify_strict(msg, &sig)
            .map_err(|_| KeyError::BadSignature)
    }
}

/// An ed25519 public key: how a service, worker or registrar is named on the network.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// Verify `sig` over `msg` with strict rules (no malleable signatures, no weak keys).
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> Result<(), KeyError> {
        self.prepare()?.verify(msg, sig)
    }

    /// The key decompressed, to check many signatures of one signer: decompressing the point
    /// is about a tenth of a signature check.
    pub fn prepare(&self) -> Result<PreparedKey, KeyError> {
        VerifyingKey::from_bytes(&self.0)
            .map(PreparedKey)
            .map_err(|_| KeyError::InvalidPublicKey)
    }

    /// The key as `dpow_` text (see [`crate::address::KEY_PREFIX`]); the same as `Display`.
    pub fn to_key_string(&self) -> String {
        crate::address::encode_key(&self.0)
    }

    /// Upper-case hex, as Nano prints public keys.
    pub fn to_hex(&self) -> String {
        hex::encode_upper(self.0)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_key_string())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", &self.to_hex()[..16])
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;

    /// Accepts `dpow_` text or 64 hex digits (either case). A `nano_` account is refused:
    /// dpow keys are not Nano wallet keys (see [`crate::address`]).
    fn from_str(s: &str) -> Result<Self, KeyError> {
        if s.starts_with(crate::address::KEY_PREFIX) {
            return crate::address::decode_key(s).map(PublicKey);
        }
        if s.starts_with("nano_") || s.starts_with("xrb_") {
            return Err(KeyError::BadAddress(format!(
                "{s:.12}… is a Nano account; dpow keys are written {}… or as 64 hex digits",
                crate::address::KEY_PREFIX
            )));
        }
        let bytes = hex::decode(s).map_err(|e| KeyError::BadHex(e.to_string()))?;
        let arr: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::WrongLength {
                what: "public key",
                expected: 32,
                got: bytes.len(),
            })?;
        Ok(PublicKey(arr))
    }
}

/// An ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}..)", hex::encode(&self.0[..8]))
    }
}

impl Serialize for Signature {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Serde has no impl for [u8; 64]; a tuple of fixed length keeps it canonical.
        use serde::ser::SerializeTuple;
        let mut t = s.serialize_tuple(64)?;
        for b in &self.0 {
            t.serialize_element(b)?;
        }
        t.end()
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Signature;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 signature bytes")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Signature, A::Error> {
                let mut out = [0u8; 64];
                for (i, b) in out.iter_mut().enumerate() {
                    *b = seq
                        .next_element()?
                        .ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
                }
                Ok(Signature(out))
            }
        }
        d.deserialize_tuple(64, V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_tamper() {
        let sk = SecretKey::from_seed([7; 32]);
        let pk = sk.public();
        let sig = sk.sign(b"hello");
        pk.verify(b"hello", &sig).expect("valid signature");
        assert!(matches!(
            pk.verify(b"hellp", &sig),
            Err(KeyError::BadSignature)
        ));
        let mut bad = sig;
        bad.0[3] ^= 1;
        assert!(matches!(
            pk.verify(b"hello", &bad),
            Err(KeyError::BadSignature)
        ));
    }

    #[test]
    fn debug_hides_secret() {
        let sk = SecretKey::from_seed([0xAB; 32]);
        let shown = format!("{sk:?}");
        assert_eq!(shown, "SecretKey(..)");
        assert!(!shown.to_lowercase().contains("abab"));
    }

    #[test]
    fn public_key_parses_hex_and_its_own_text_never_a_nano_account() {
        let pk = SecretKey::from_seed([1; 32]).public();
        assert_eq!(pk.to_hex().parse::<PublicKey>().expect("hex"), pk);
        assert_eq!(
            pk.to_hex()
                .to_lowercase()
                .parse::<PublicKey>()
                .expect("lower hex"),
            pk
        );
        assert!(pk.to_string().starts_with("dpow_"));
        assert_eq!(pk.to_string().parse::<PublicKey>().expect("dpow_ text"), pk);
        let err = crate::encode_account(&pk.0)
            .parse::<PublicKey>()
            .expect_err("a nano_ account is not a dpow key");
        assert!(err.to_string().contains("Nano account"), "{err}");
        assert!(matches!(
            "abcd".parse::<PublicKey>(),
            Err(KeyError::WrongLength { .. })
        ));
        assert!(matches!(
            "zz".parse::<PublicKey>(),
            Err(KeyError::BadHex(_))
        ));
    }

    #[test]
    fn signature_serde_round_trip() {
        let sig = SecretKey::from_seed([3; 32]).sign(b"x");
        let json = serde_json::to_string(&sig).expect("encode");
        let back: Signature = serde_json::from_str(&json).expect("decode");
        assert_eq!(back, sig);
    }
}
