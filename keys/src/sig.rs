//! ed25519 keys and signatures as dpow uses them.

use std::fmt;
use std::str::FromStr;

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint, VartimeEdwardsPrecomputation};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::VartimePrecomputedMultiscalarMul;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512};
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

/// A [`PublicKey`] made ready to check many signatures ([`PublicKey::prepare`]): the point
/// decompressed once and tables of its multiples (and the base point's) for the check's
/// double-base multiplication, about 20 KB. Accepts exactly what [`PublicKey::verify`]
/// (ed25519-dalek's `verify_strict`) accepts, for about three quarters of the work:
///
/// `verify_strict` takes `s` only if canonical (< ℓ), decompresses `R` and refuses it or the
/// key if of small order, then accepts iff the encoding of `[s]B − [k]A` (k = SHA-512(R ‖ A ‖
/// M) mod ℓ) equals the signature's `R` bytes. Here the same point `P = [s]B + [k](−A)` is
/// computed (the same integer multiples; the tables change only how) and accepted iff its
/// encoding equals the `R` bytes and `P` is not of small order. The two agree: encodings are
/// canonical and decompressing `P`'s encoding gives `P` back, so when the bytes match, `R`
/// decompresses, to `P`, and its order is `P`'s; when they do not, both refuse. Skipped:
/// `R`'s decompression (a square root), and with [`PreparedKey::verify_all`] all but one of
/// the inversions that encode the points.
#[derive(Clone)]
pub struct PreparedKey(std::sync::Arc<Prepared>);

struct Prepared {
    /// The key's bytes, hashed into every check.
    compressed: [u8; 32],
    /// Of small order: `verify_strict` refuses every signature of such a key.
    weak: bool,
    /// Multiples of the base point and of the key's negation, in that order.
    tables: VartimeEdwardsPrecomputation,
}

impl fmt::Debug for PreparedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PreparedKey({})",
            hex::encode_upper(&self.0.compressed[..8])
        )
    }
}

impl PreparedKey {
    /// Verify `sig` over `msg` with strict rules, as [`PublicKey::verify`].
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> Result<(), KeyError> {
        Self::verify_all(&[(self, msg, sig)]).map_err(|_| KeyError::BadSignature)
    }

    /// Check each `(key, message, signature)` as [`PreparedKey::verify`] would, encoding the
    /// points with one inversion for all. `Err(i)`: the first that fails.
    pub fn verify_all(checks: &[(&PreparedKey, &[u8], &Signature)]) -> Result<(), usize> {
        let mut points = Vec::with_capacity(checks.len());
        // A check refused before its point is computed ends the batch there; an earlier one
        // may still fail below and is then the first.
        let mut refused = None;
        for (i, (key, msg, sig)) in checks.iter().enumerate() {
            match key.point(msg, sig) {
                Some(p) => points.push(p),
                None => {
                    refused = Some(i);
                    break;
                }
            }
        }
        let encoded: Vec<CompressedEdwardsY> = match points.len() {
            0 => Vec::new(),
            1 => vec![points[0].compress()],
            _ => EdwardsPoint::compress_batch_alloc(&points),
        };
        for (i, (p, e)) in points.iter().zip(&encoded).enumerate() {
            if e.as_bytes()[..] != checks[i].2.0[..32] || p.is_small_order() {
                return Err(i);
            }
        }
        refused.map_or(Ok(()), Err)
    }

    /// `[s]B + [k](−A)` for `sig` over `msg`, or `None` where `verify_strict` refuses before
    /// computing it (`s` not canonical, a key of small order).
    fn point(&self, msg: &[u8], sig: &Signature) -> Option<EdwardsPoint> {
        let key = &self.0;
        if key.weak {
            return None;
        }
        let (r, s) = sig.0.split_at(32);
        let s: [u8; 32] = s.try_into().ok()?;
        let s: Scalar = Option::from(Scalar::from_canonical_bytes(s))?;
        let mut h = Sha512::new();
        h.update(r);
        h.update(key.compressed);
        h.update(msg);
        let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
        Some(key.tables.vartime_multiscalar_mul([s, k]))
    }
}

/// An ed25519 public key: how a service, worker or registrar is named on the network.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// Verify `sig` over `msg` with strict rules (no malleable signatures, no weak keys):
    /// ed25519-dalek's `verify_strict`.
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> Result<(), KeyError> {
        self.verify_strict(msg, sig).map(|_| ())
    }

    /// ed25519-dalek's `verify_strict`, with the key it decompressed.
    fn verify_strict(&self, msg: &[u8], sig: &Signature) -> Result<VerifyingKey, KeyError> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| KeyError::InvalidPublicKey)?;
        key.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(&sig.0))
            .map_err(|_| KeyError::BadSignature)?;
        Ok(key)
    }

    /// Verify `sig` over `msg` with strict rules, and if it verifies, the key made ready for
    /// more ([`PublicKey::prepare`]): for a signer met for the first time.
    pub fn verify_and_prepare(&self, msg: &[u8], sig: &Signature) -> Result<PreparedKey, KeyError> {
        self.verify_strict(msg, sig).map(|key| Self::prepared(&key))
    }

    /// The key decompressed, with tables, to check many signatures of one signer
    /// ([`PreparedKey`]): about 20 µs and 20 KB, each check then about a quarter cheaper
    /// than [`PublicKey::verify`].
    pub fn prepare(&self) -> Result<PreparedKey, KeyError> {
        VerifyingKey::from_bytes(&self.0)
            .map(|k| Self::prepared(&k))
            .map_err(|_| KeyError::InvalidPublicKey)
    }

    fn prepared(key: &VerifyingKey) -> PreparedKey {
        let point = key.to_edwards();
        PreparedKey(std::sync::Arc::new(Prepared {
            compressed: key.to_bytes(),
            weak: point.is_small_order(),
            tables: VartimeEdwardsPrecomputation::new([ED25519_BASEPOINT_POINT, -point]),
        }))
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
