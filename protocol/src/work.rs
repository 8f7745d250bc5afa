//! Nano work: roots, nonces, difficulties, multipliers and the arithmetic between them.
//!
//! `value = blake2b-64(nonce_le ‖ root)` read little-endian; work is valid for a difficulty
//! threshold iff `value >= threshold`. Multiplier and difficulty convert by
//! `m = (2^64 − base) / (2^64 − d)`, in IEEE doubles exactly as Nano's libraries do, so the
//! strings we print match what wallets and nodes print.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ProtocolError;
use crate::blake2b;

fn parse_hex<const N: usize>(s: &str, what: &'static str) -> Result<[u8; N], ProtocolError> {
    if s.len() != 2 * N {
        return Err(ProtocolError::WrongLength {
            what,
            expected: 2 * N,
            got: s.len(),
        });
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).map_err(|e| ProtocolError::BadHex {
        what,
        reason: e.to_string(),
    })?;
    Ok(out)
}

/// A block root (previous block hash, or the account's public key for an open block): 32 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Root(pub [u8; 32]);

impl Root {
    /// The root as the four little-endian message words the hash consumes.
    pub fn words(&self) -> [u64; 4] {
        blake2b::root_words(&self.0)
    }
}

impl fmt::Display for Root {
    /// 64 upper-case hex digits, as Nano prints block hashes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode_upper(self.0))
    }
}

impl fmt::Debug for Root {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Root({self})")
    }
}

impl FromStr for Root {
    type Err = ProtocolError;
    /// 64 hex digits, either case.
    fn from_str(s: &str) -> Result<Self, ProtocolError> {
        parse_hex::<32>(s, "root").map(Root)
    }
}

/// A work nonce. Nano prints it as 16 hex digits, big-endian (most significant first).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Work(pub u64);

impl fmt::Display for Work {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for Work {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Work({self})")
    }
}

impl FromStr for Work {
    type Err = ProtocolError;
    /// 16 hex digits, either case.
    fn from_str(s: &str) -> Result<Self, ProtocolError> {
        parse_hex::<8>(s, "work").map(|b| Work(u64::from_be_bytes(b)))
    }
}

/// A difficulty threshold (or a work value): higher is harder.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Difficulty(pub u64);

impl Difficulty {
    /// Nano epoch-2 threshold for send and change blocks.
    pub const EPOCH2_SEND: Difficulty = Difficulty(0xffff_fff8_0000_0000);
    /// Nano epoch-2 threshold for receive, open and epoch blocks.
    pub const EPOCH2_RECEIVE: Difficulty = Difficulty(0xffff_fe00_0000_0000);
    /// Nano epoch-1 threshold for every block.
    pub const EPOCH1: Difficulty = Difficulty(0xffff_ffc0_0000_0000);

    /// How many hashes a search needs on average: `2^64 / (2^64 − d)`.
    pub fn expected_hashes(self) -> f64 {
        18_446_744_073_709_551_616.0 / self.distance() as f64
    }

    /// `2^64 − d` as an exact integer (1 ..= 2^64). The probability that one hash meets the
    /// threshold is `distance / 2^64`.
    pub fn distance(self) -> u128 {
        (1u128 << 64) - u128::from(self.0)
    }

    /// This difficulty as a multiplier of `base`: `(2^64 − base) / (2^64 − self)`.
    pub fn to_multiplier(self, base: Difficulty) -> Multiplier {
        Multiplier(base.distance() as f64 / self.distance() as f64)
    }

    /// The difficulty `multiplier` times harder than `base`.
    ///
    /// Computed in doubles as nanolib and nanocurrency-js do (`2^64 − (2^64 − base) / m`), so
    /// the result matches what those libraries print; saturates at the ends of the range.
    pub fn from_multiplier(multiplier: Multiplier, base: Difficulty) -> Difficulty {
        let two64 = 18_446_744_073_709_551_616.0_f64;
        let d = two64 - base.distance() as f64 / multiplier.0;
        // `as` saturates: negative or NaN to 0, >= 2^64 to u64::MAX.
        Difficulty(d as u64)
    }
}

impl fmt::Display for Difficulty {
    /// 16 lower-case hex digits, as Nano prints difficulties.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for Difficulty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Difficulty({self})")
    }
}

impl FromStr for Difficulty {
    type Err = ProtocolError;
    /// 16 hex digits, either case.
    fn from_str(s: &str) -> Result<Self, ProtocolError> {
        parse_hex::<8>(s, "difficulty").map(|b| Difficulty(u64::from_be_bytes(b)))
    }
}

/// A difficulty multiplier relative to some base threshold: finite and positive.
#[derive(Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
pub struct Multiplier(pub(crate) f64);

impl Multiplier {
    /// A multiplier, if `m` is finite and positive.
    pub fn new(m: f64) -> Result<Self, ProtocolError> {
        if m.is_finite() && m > 0.0 {
            Ok(Multiplier(m))
        } else {
            Err(ProtocolError::BadMultiplier(m.to_string()))
        }
    }

    /// The value.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl fmt::Display for Multiplier {
    /// The shortest decimal string that reads back to the same double ("1", "1.5", "0.125").
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for Multiplier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Multiplier({self})")
    }
}

impl FromStr for Multiplier {
    type Err = ProtocolError;
    /// A decimal number, finite and positive ("1", "1.5", "64.0").
    fn from_str(s: &str) -> Result<Self, ProtocolError> {
        let m: f64 = s
            .trim()
            .parse()
            .map_err(|_| ProtocolError::BadMultiplier(s.to_string()))?;
        Multiplier::new(m).map_err(|_| ProtocolError::BadMultiplier(s.to_string()))
    }
}

/// The work value of `work` for `root`: the number compared against a difficulty threshold.
pub fn work_value(root: &Root, work: Work) -> Difficulty {
    Difficulty(blake2b::work_value_words(work.0, &root.words()))
}

/// Whether `work` meets `threshold` for `root`.
pub fn is_valid(root: &Root, work: Work, threshold: Difficulty) -> bool {
    work_value(root, work) >= threshold
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn constants_and_printing() {
        assert_eq!(Difficulty::EPOCH2_SEND.to_string(), "fffffff800000000");
        assert_eq!(
            Difficulty::EPOCH2_RECEIVE.expected_hashes(),
            (1u64 << 23) as f64
        );
        assert_eq!(
            Difficulty::EPOCH2_SEND.expected_hashes(),
            (1u64 << 29) as f64
        );
        assert_eq!(
            Difficulty::EPOCH2_SEND
                .to_multiplier(Difficulty::EPOCH2_RECEIVE)
                .to_string(),
            "64"
        );
        assert_eq!(Work(0x749abbcce9e02586).to_string(), "749abbcce9e02586");
        assert_eq!(
            "749ABBCCE9E02586".parse::<Work>().expect("work"),
            Work(0x749abbcce9e02586)
        );
    }

    #[test]
    fn parse_errors_say_what() {
        let e = "abc".parse::<Root>().expect_err("short");
        assert!(matches!(
            e,
            ProtocolError::WrongLength {
                what: "root",
                expected: 64,
                got: 3
            }
        ));
        let e = "zz00000000000000".parse::<Work>().expect_err("bad hex");
        assert!(matches!(e, ProtocolError::BadHex { what: "work", .. }));
        for bad in ["0", "-1", "nan", "inf", "x"] {
            assert!(bad.parse::<Multiplier>().is_err(), "{bad}");
        }
    }

    #[test]
    fn extreme_multipliers_saturate() {
        let base = Difficulty::EPOCH2_SEND;
        assert_eq!(
            Difficulty::from_multiplier(Multiplier(1e-30), base),
            Difficulty(0)
        );
        assert_eq!(
            Difficulty::from_multiplier(Multiplier(1e30), base),
            Difficulty(u64::MAX)
        );
    }

    proptest! {
        #[test]
        fn hex_round_trips(bytes in any::<[u8; 32]>(), w in any::<u64>()) {
            let r = Root(bytes);
            prop_assert_eq!(r.to_string().parse::<Root>().expect("root"), r);
            prop_assert_eq!(r.to_string().to_lowercase().parse::<Root>().expect("root"), r);
            prop_assert_eq!(Work(w).to_string().parse::<Work>().expect("work"), Work(w));
            prop_assert_eq!(Difficulty(w).to_string().parse::<Difficulty>().expect("d"), Difficulty(w));
        }

        #[test]
        fn multiplier_round_trip_is_close(d in 0xffff_0000_0000_0000u64..=0xffff_ffff_ff00_0000) {
            // Doubles carry 53 bits; near 2^64 the difficulty survives to within 2^11 + rounding.
            let base = Difficulty::EPOCH2_RECEIVE;
            let m = Difficulty(d).to_multiplier(base);
            let back = Difficulty::from_multiplier(m, base);
            prop_assert!(back.0.abs_diff(d) <= 4096, "{d:x} -> {m} -> {:x}", back.0);
        }

        #[test]
        fn multiplier_is_monotonic(a in any::<u64>(), b in any::<u64>()) {
            let base = Difficulty::EPOCH2_SEND;
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(Difficulty(lo).to_multiplier(base).get() <= Difficulty(hi).to_multiplier(base).get());
        }
    }
}
