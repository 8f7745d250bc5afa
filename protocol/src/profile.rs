//! Block kinds and difficulty profiles.
//!
//! A network's genesis names one profile: the threshold each block kind must meet, and the
//! bounds on explicit difficulties the network accepts (so nobody can ask the swarm for
//! absurd amounts of hashing, nor for work too weak to be of any use).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Difficulty, Multiplier, ProtocolError};

/// The kinds of Nano block whose work thresholds can differ.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockKind {
    /// Sends value (state block subtype send).
    Send,
    /// Receives a pending send.
    Receive,
    /// The first block of an account (a receive that opens it).
    Open,
    /// Changes the representative only.
    Change,
    /// An epoch upgrade block.
    Epoch,
}

impl BlockKind {
    /// Every kind, in a fixed order.
    pub const ALL: [BlockKind; 5] = [
        BlockKind::Send,
        BlockKind::Receive,
        BlockKind::Open,
        BlockKind::Change,
        BlockKind::Epoch,
    ];

    /// The lower-case name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            BlockKind::Send => "send",
            BlockKind::Receive => "receive",
            BlockKind::Open => "open",
            BlockKind::Change => "change",
            BlockKind::Epoch => "epoch",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for BlockKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BlockKind {
    type Err = ProtocolError;
    fn from_str(s: &str) -> Result<Self, ProtocolError> {
        BlockKind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| ProtocolError::UnknownName {
                what: "block kind",
                name: s.to_string(),
                expected: "send, receive, open, change, epoch".to_string(),
            })
    }
}

/// A difficulty profile: per-kind thresholds and the bounds a network accepts.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Profile {
    /// The profile's name ("nano", "banano", ...).
    pub name: String,
    /// Thresholds in [`BlockKind::ALL`] order: send, receive, open, change, epoch.
    pub thresholds: [Difficulty; 5],
    /// The easiest difficulty the network accepts in a request.
    pub min: Difficulty,
    /// The hardest difficulty the network accepts in a request.
    pub max: Difficulty,
}

/// How far above the hardest block-kind threshold built-in profiles accept (as a multiplier).
const MAX_MULTIPLIER_OVER_HARDEST: f64 = 64.0;

/// Names of the built-in profiles, for help texts and errors.
pub const BUILTIN_PROFILES: &[&str] = &["nano", "banano", "multiplier-proposal", "test"];

impl Profile {
    /// Build a profile from thresholds, with bounds from the easiest threshold up to 64× the
    /// hardest.
    pub fn from_thresholds(name: &str, thresholds: [Difficulty; 5]) -> Profile {
        let min = thresholds.iter().copied().min().unwrap_or(Difficulty(0));
        let hardest = thresholds.iter().copied().max().unwrap_or(Difficulty(0));
        let max = Difficulty::from_multiplier(Multiplier(MAX_MULTIPLIER_OVER_HARDEST), hardest);
        Profile {
            name: name.to_string(),
            thresholds,
            min,
            max,
        }
    }

    /// A custom profile: each kind's multiplier over `base`, in [`BlockKind::ALL`] order.
    pub fn from_multipliers(name: &str, base: Difficulty, multipliers: [Multiplier; 5]) -> Profile {
        let t = multipliers.map(|m| Difficulty::from_multiplier(m, base));
        Profile::from_thresholds(name, t)
    }

    /// Nano since epoch 2: send and change `fffffff800000000`, receive, open and epoch
    /// `fffffe0000000000`.
    pub fn nano() -> Profile {
        let (s, r) = (Difficulty::EPOCH2_SEND, Difficulty::EPOCH2_RECEIVE);
        Profile::from_thresholds("nano", [s, r, r, s, r])
    }

    /// Banano: one threshold, `fffffe0000000000`, for every kind.
    pub fn banano() -> Profile {
        Profile::from_thresholds("banano", [Difficulty::EPOCH2_RECEIVE; 5])
    }

    /// The per-kind multipliers proposed in Nano's PoW-multiplier discussion, over the
    /// epoch-2 receive threshold: receive 1×, change 2×, send 4×, open 10× (epoch 1×).
    pub fn multiplier_proposal() -> Profile {
        let m = Multiplier;
        Profile::from_multipliers(
            "multiplier-proposal",
            Difficulty::EPOCH2_RECEIVE,
            [m(4.0), m(1.0), m(10.0), m(2.0), m(1.0)],
        )
    }

    /// A low-difficulty profile for local test networks: receive `ffff000000000000`
    /// (~65 thousand hashes), send `fffff00000000000` (~1 million).
    pub fn test() -> Profile {
        let (s, r) = (
            Difficulty(0xffff_f000_0000_0000),
            Difficulty(0xffff_0000_0000_0000),
        );
        let mut p = Profile::from_thresholds("test", [s, r, r, s, r]);
        // Tests also ask for explicitly easy work.
        p.min = Difficulty(0xff00_0000_0000_0000);
        p
    }

    /// A built-in profile by name.
    pub fn by_name(name: &str) -> Result<Profile, ProtocolError> {
        match name {
            "nano" => Ok(Profile::nano()),
            "banano" => Ok(Profile::banano()),
            "multiplier-proposal" => Ok(Profile::multiplier_proposal()),
            "test" => Ok(Profile::test()),
            _ => Err(ProtocolError::UnknownName {
                what: "profile",
                name: name.to_string(),
                expected: BUILTIN_PROFILES.join(", "),
            }),
        }
    }

    /// The threshold work for `kind` must meet.
    pub fn threshold(&self, kind: BlockKind) -> Difficulty {
        self.thresholds[kind.index()]
    }

    /// The easiest threshold of any kind: what a Nano node calls the base for validation.
    pub fn easiest(&self) -> Difficulty {
        self.thresholds.iter().copied().min().unwrap_or(self.min)
    }

    /// Accept `d` if it lies within the profile's bounds.
    pub fn check(&self, d: Difficulty) -> Result<(), ProtocolError> {
        if d < self.min || d > self.max {
            return Err(ProtocolError::DifficultyOutOfBounds {
                difficulty: d.to_string(),
                min: self.min.to_string(),
                max: self.max.to_string(),
            });
        }
        Ok(())
    }

    /// Check the profile is coherent: `min <= every threshold <= max`.
    pub fn validate(&self) -> Result<(), ProtocolError> {
        if self.name.is_empty() || self.name.len() > 64 {
            return Err(ProtocolError::BadProfile(
                "name must be 1 to 64 bytes".to_string(),
            ));
        }
        if self.min > self.max {
            return Err(ProtocolError::BadProfile(format!(
                "min {} is above max {}",
                self.min, self.max
            )));
        }
        for k in BlockKind::ALL {
            let t = self.threshold(k);
            if t < self.min || t > self.max {
                return Err(ProtocolError::BadProfile(format!(
                    "{k} threshold {t} is outside {}..={}",
                    self.min, self.max
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nano_thresholds_per_kind() {
        let p = Profile::nano();
        assert_eq!(p.threshold(BlockKind::Send), Difficulty::EPOCH2_SEND);
        assert_eq!(p.threshold(BlockKind::Change), Difficulty::EPOCH2_SEND);
        assert_eq!(p.threshold(BlockKind::Receive), Difficulty::EPOCH2_RECEIVE);
        assert_eq!(p.threshold(BlockKind::Open), Difficulty::EPOCH2_RECEIVE);
        assert_eq!(p.threshold(BlockKind::Epoch), Difficulty::EPOCH2_RECEIVE);
        assert_eq!(p.min, Difficulty::EPOCH2_RECEIVE);
        assert_eq!(p.max.to_multiplier(Difficulty::EPOCH2_SEND).get(), 64.0);
        p.validate().expect("coherent");
    }

    #[test]
    fn banano_has_one_threshold() {
        let p = Profile::banano();
        assert!(
            BlockKind::ALL
                .iter()
                .all(|&k| p.threshold(k) == Difficulty::EPOCH2_RECEIVE)
        );
    }

    #[test]
    fn proposal_multipliers() {
        let p = Profile::multiplier_proposal();
        let base = Difficulty::EPOCH2_RECEIVE;
        let m = |k| p.threshold(k).to_multiplier(base).get();
        assert_eq!(m(BlockKind::Receive), 1.0);
        assert_eq!(m(BlockKind::Change), 2.0);
        assert_eq!(m(BlockKind::Send), 4.0);
        // 10x is not a power of two: the double rounding of the difficulty leaves ~1e-8 of error.
        assert!((m(BlockKind::Open) - 10.0).abs() < 1e-6);
        p.validate().expect("coherent");
    }

    #[test]
    fn bounds_are_enforced() {
        let p = Profile::nano();
        assert!(p.check(Difficulty::EPOCH2_SEND).is_ok());
        let e = p
            .check(Difficulty(0xffff_0000_0000_0000))
            .expect_err("too easy");
        assert!(
            e.to_string().contains("outside the profile's bounds"),
            "{e}"
        );
        assert!(p.check(Difficulty(u64::MAX)).is_err());
    }

    #[test]
    fn names() {
        for n in BUILTIN_PROFILES {
            let p = Profile::by_name(n).expect("builtin");
            assert_eq!(p.name, *n);
            p.validate().expect("coherent");
        }
        let e = Profile::by_name("bitcoin").expect_err("unknown");
        assert!(e.to_string().contains("nano, banano"), "{e}");
        assert_eq!("SEND".parse::<BlockKind>().expect("kind"), BlockKind::Send);
        assert!("sned".parse::<BlockKind>().is_err());
    }

    #[test]
    fn incoherent_profile_is_refused() {
        let mut p = Profile::nano();
        p.min = Difficulty(u64::MAX);
        assert!(p.validate().is_err());
    }
}
