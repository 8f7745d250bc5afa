//! Finality and registrar checkpoints: when an epoch's books close, and the signed record of
//! what they hold.
//!
//! An epoch is **final** once `epoch end + longest request lifetime + grace` has passed
//! ([`Finality::is_final`]): by then every request dated inside the epoch has expired, and the
//! grace covers clock skew and receipts still travelling. A node refuses a receipt for a final
//! epoch unless a registrar's [`Checkpoint`] for that epoch vouches for it (catch-up of a node
//! that was away), so nothing can be added to, or backdated into, books that were paid.
//!
//! A checkpoint is a registrar's signature over an epoch's digest, its receipt count and its
//! credits per payout account; a payout report names the checkpoint it was computed against.

use dpow_keys::{NanoAccount, PublicKey};
use serde::{Deserialize, Serialize};

use crate::ProtocolError;
use crate::envelope::{Message, MessageKind};

/// When epochs close. All times in unix milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Finality {
    /// The length of an epoch.
    pub epoch_ms: u64,
    /// The longest validity window of a request (`expires_ms - created_ms`).
    pub max_lifetime_ms: u64,
    /// Extra time after the last request of the epoch could have expired.
    pub grace_ms: u64,
}

impl Finality {
    /// The grace when a network's genesis names none: ten minutes.
    pub const DEFAULT_GRACE_MS: u64 = 10 * 60 * 1000;

    /// The first instant at which `epoch` is final.
    pub fn final_at(&self, epoch: u64) -> u64 {
        epoch
            .saturating_add(1)
            .saturating_mul(self.epoch_ms.max(1))
            .saturating_add(self.max_lifetime_ms)
            .saturating_add(self.grace_ms)
    }

    /// Whether `epoch` is final at `now_ms`.
    pub fn is_final(&self, epoch: u64, now_ms: u64) -> bool {
        now_ms >= self.final_at(epoch)
    }

    /// The newest epoch that is final at `now_ms`, if any.
    pub fn last_final(&self, now_ms: u64) -> Option<u64> {
        let closed_before = now_ms
            .saturating_sub(self.max_lifetime_ms)
            .saturating_sub(self.grace_ms);
        // Epoch e is final iff (e + 1) × epoch_ms <= closed_before.
        (closed_before / self.epoch_ms.max(1)).checked_sub(1)
    }
}

/// The most payout accounts one checkpoint lists (it must fit one gossip message).
pub const MAX_CHECKPOINT_ACCOUNTS: usize = 1000;

/// A registrar's signed statement of a final epoch's books.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The registrar (signer).
    pub registrar: PublicKey,
    /// The epoch.
    pub epoch: u64,
    /// The network's epoch length (part of the digest).
    pub epoch_ms: u64,
    /// `Ledger::epoch_digest` of the epoch.
    pub digest: [u8; 32],
    /// Receipts held in the epoch (counted and evidence).
    pub receipts: u64,
    /// Credits per payout account, ascending by account, none zero.
    pub credits: Vec<(NanoAccount, u128)>,
    /// Credits of results that named no payout account.
    pub unclaimed: u128,
    /// When the registrar signed it.
    pub created_ms: u64,
}

impl Checkpoint {
    /// Whether it states exactly `claims`: the same credits per payout account and the same
    /// unclaimed credits.
    pub fn states_claims(&self, claims: &crate::ledger::Claims) -> bool {
        self.unclaimed == claims.unclaimed
            && self.credits.len() == claims.accounts.len()
            && self
                .credits
                .iter()
                .all(|(a, c)| claims.accounts.get(a) == Some(c))
    }

    /// The credits of all payout accounts together.
    pub fn claimed(&self) -> u128 {
        self.credits
            .iter()
            .fold(0u128, |t, (_, c)| t.saturating_add(*c))
    }
}

impl Message for Checkpoint {
    const KIND: MessageKind = MessageKind::Checkpoint;
    const MAX_BYTES: usize = 60 * 1024;
    fn signer(&self) -> PublicKey {
        self.registrar
    }
    fn check(&self) -> Result<(), ProtocolError> {
        let invalid = |reason: &str| ProtocolError::Invalid {
            kind: Self::KIND.domain(),
            reason: reason.to_string(),
        };
        if self.credits.len() > MAX_CHECKPOINT_ACCOUNTS {
            return Err(invalid("more payout accounts than a checkpoint may list"));
        }
        if self.credits.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(invalid("payout accounts are not in ascending order"));
        }
        if self.credits.iter().any(|(_, c)| *c == 0) {
            return Err(invalid("a payout account with zero credits"));
        }
        if self.epoch_ms == 0 {
            return Err(invalid("an epoch length of zero"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_states_claims_only_when_every_credit_agrees() {
        use crate::ledger::Claims;
        let account = |n: u8| NanoAccount::from_bytes([n; 32]).unwrap_or_else(|_| unreachable!());
        let c = Checkpoint {
            registrar: PublicKey([1; 32]),
            epoch: 5,
            epoch_ms: 1000,
            digest: [9; 32],
            receipts: 2,
            credits: vec![(account(1), 5), (account(2), 7)],
            unclaimed: 3,
            created_ms: 0,
        };
        let claims = Claims {
            accounts: [(account(1), 5), (account(2), 7)].into_iter().collect(),
            unclaimed: 3,
        };
        assert!(c.states_claims(&claims));
        let mut other = claims.clone();
        other.unclaimed = 4;
        assert!(!c.states_claims(&other));
        let mut other = claims.clone();
        other.accounts.insert(account(2), 8);
        assert!(!c.states_claims(&other));
        let mut other = claims.clone();
        other.accounts.insert(account(3), 1);
        assert!(!c.states_claims(&other));
        other.accounts.remove(&account(3));
        other.accounts.remove(&account(1));
        assert!(!c.states_claims(&other));
    }

    #[test]
    fn an_epoch_closes_after_its_last_request_could_expire_and_the_grace() {
        let f = Finality {
            epoch_ms: 1000,
            max_lifetime_ms: 300,
            grace_ms: 200,
        };
        assert_eq!(f.final_at(0), 1500);
        assert!(!f.is_final(0, 1499));
        assert!(f.is_final(0, 1500));
        assert_eq!(f.last_final(1499), None);
        assert_eq!(f.last_final(1500), Some(0));
        assert_eq!(f.last_final(2499), Some(0));
        assert_eq!(f.last_final(2500), Some(1));
        for now in [0, 1, 999, 1500, 2499, 2500, 10_000, u64::MAX / 2] {
            if let Some(e) = f.last_final(now) {
                assert!(f.is_final(e, now));
                assert!(!f.is_final(e + 1, now), "now {now}");
            } else {
                assert!(!f.is_final(0, now));
            }
        }
    }
}
