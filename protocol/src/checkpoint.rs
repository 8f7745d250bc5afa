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

use std::collections::{BTreeMap, HashMap, HashSet};

use dpow_keys::{NanoAccount, PublicKey};
use serde::{Deserialize, Serialize};

use crate::envelope::{Message, MessageKind};
use crate::replication::MAX_VOUCHED;
use crate::{MessageId, ProtocolError, Signed};

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

/// Epochs whose checkpoints a node holds, at most (the oldest go first).
pub const MAX_HELD_EPOCHS: usize = 1024;
/// How long (ms) before a peer's digest of a final epoch that no held checkpoint matches makes
/// a node ask for that epoch's checkpoints again.
pub const REASK_MS: u64 = 600_000;
/// (Epoch, digest) pairs remembered as asked about, at most.
pub const MAX_ASKED: usize = 4096;

/// What a node holds of final epochs, without I/O or a clock: the newest checkpoint of each
/// registrar per epoch, the receipt ids those checkpoints vouch for (a peer's listing of an
/// epoch whose digest matched one, not fetched yet), and which unmatched digests it has
/// asked peers about lately. Every part is bounded: [`MAX_HELD_EPOCHS`], [`MAX_VOUCHED`] and
/// [`MAX_ASKED`]. Checking a checkpoint is the validator's; this keeps the checked ones.
///
/// [`MAX_VOUCHED`]: crate::replication::MAX_VOUCHED
#[derive(Debug, Default)]
pub struct HeldCheckpoints {
    by_epoch: BTreeMap<u64, BTreeMap<PublicKey, Signed<Checkpoint>>>,
    vouched: HashSet<MessageId>,
    /// When (ms) a peer was last asked about an (epoch, digest).
    asked: HashMap<(u64, [u8; 32]), u64>,
}

impl HeldCheckpoints {
    /// Whether an equal or newer checkpoint than `p` from its registrar is held.
    pub fn holds(&self, p: &Checkpoint) -> bool {
        self.by_epoch
            .get(&p.epoch)
            .and_then(|per| per.get(&p.registrar))
            .is_some_and(|old| old.payload().created_ms >= p.created_ms)
    }

    /// Keep `c` unless an equal or newer one from its registrar is held; beyond
    /// [`MAX_HELD_EPOCHS`] the oldest epoch goes. Returns whether it was new.
    pub fn insert(&mut self, c: Signed<Checkpoint>) -> bool {
        if self.holds(c.payload()) {
            return false;
        }
        let p = c.payload();
        self.by_epoch
            .entry(p.epoch)
            .or_default()
            .insert(p.registrar, c);
        while self.by_epoch.len() > MAX_HELD_EPOCHS {
            self.by_epoch.pop_first();
        }
        true
    }

    /// A checkpoint of `epoch` whose digest is `digest`, if one is held.
    pub fn matching(&self, epoch: u64, digest: &[u8; 32]) -> Option<&Signed<Checkpoint>> {
        self.by_epoch
            .get(&epoch)?
            .values()
            .find(|c| &c.payload().digest == digest)
    }

    /// The checkpoints held of `epoch`, one per registrar.
    pub fn of_epoch(&self, epoch: u64) -> impl Iterator<Item = &Signed<Checkpoint>> {
        self.by_epoch
            .get(&epoch)
            .into_iter()
            .flat_map(|m| m.values())
    }

    /// Every checkpoint held, oldest epoch first.
    pub fn all(&self) -> Vec<Signed<Checkpoint>> {
        self.by_epoch
            .values()
            .flat_map(|m| m.values().cloned())
            .collect()
    }

    /// The newest checkpoints, at most `n`.
    pub fn newest(&self, n: usize) -> Vec<Signed<Checkpoint>> {
        self.by_epoch
            .values()
            .rev()
            .flat_map(|m| m.values().cloned())
            .take(n)
            .collect()
    }

    /// Of final epochs whose peer digest (`unmatched`: epoch, digest) no held checkpoint
    /// matches, the ones to ask the peer about at `now_ms`: not asked about within
    /// [`REASK_MS`], at most `max`; they count as asked from `now_ms`. Asks nothing once
    /// [`MAX_ASKED`] recent pairs are remembered (a peer making up digests).
    pub fn ask_about(
        &mut self,
        unmatched: impl IntoIterator<Item = (u64, [u8; 32])>,
        max: usize,
        now_ms: u64,
    ) -> Vec<u64> {
        self.asked
            .retain(|_, at| now_ms.saturating_sub(*at) < REASK_MS);
        let mut epochs = Vec::new();
        for pair in unmatched {
            if epochs.len() >= max || self.asked.len() >= MAX_ASKED {
                break;
            }
            if self.asked.contains_key(&pair) {
                continue;
            }
            self.asked.insert(pair, now_ms);
            if !epochs.contains(&pair.0) {
                epochs.push(pair.0);
            }
        }
        epochs
    }

    /// A question about `epochs` went unanswered (the peer failed or stayed busy): forget it,
    /// so that the next digests that differ ask again.
    pub fn forget_asked(&mut self, epochs: &[u64]) {
        self.asked.retain(|(e, _), _| !epochs.contains(e));
    }

    /// Vouch for `ids` (a peer's listing of an epoch that matched a held checkpoint). Returns
    /// false when that would hold more than [`MAX_VOUCHED`](crate::replication::MAX_VOUCHED)
    /// (the ids before that are kept).
    pub fn vouch(&mut self, ids: impl IntoIterator<Item = MessageId>) -> bool {
        for id in ids {
            if self.vouched.len() >= MAX_VOUCHED {
                return false;
            }
            self.vouched.insert(id);
        }
        true
    }

    /// Whether a held checkpoint vouches for the receipt `id`.
    pub fn vouches_for(&self, id: &MessageId) -> bool {
        self.vouched.contains(id)
    }

    /// The receipt `id` was taken: its vouch, if any, is spent.
    pub fn spend(&mut self, id: &MessageId) {
        self.vouched.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(epoch: u64, d: u8) -> (u64, [u8; 32]) {
        (epoch, [d; 32])
    }

    fn signed(
        key: &dpow_keys::SecretKey,
        epoch: u64,
        digest: u8,
        created_ms: u64,
    ) -> Signed<Checkpoint> {
        let c = Checkpoint {
            registrar: key.public(),
            epoch,
            epoch_ms: 1000,
            digest: [digest; 32],
            receipts: 1,
            credits: Vec::new(),
            unclaimed: 1,
            created_ms,
        };
        Signed::sign(c, key, &crate::NetworkId([7; 32])).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_newest_checkpoint_of_each_registrar_is_kept_and_the_oldest_epochs_go_first() {
        let (a, b) = (
            dpow_keys::SecretKey::from_seed([1; 32]),
            dpow_keys::SecretKey::from_seed([2; 32]),
        );
        let mut held = HeldCheckpoints::default();
        assert!(held.insert(signed(&a, 5, 1, 100)));
        // The same or an older one from that registrar is not new; a newer one replaces it.
        assert!(!held.insert(signed(&a, 5, 1, 100)));
        assert!(!held.insert(signed(&a, 5, 2, 99)));
        assert!(held.matching(5, &[1; 32]).is_some());
        assert!(held.insert(signed(&a, 5, 3, 101)));
        assert!(held.matching(5, &[1; 32]).is_none());
        assert!(held.matching(5, &[3; 32]).is_some());
        // Another registrar's checkpoint of the epoch sits beside it.
        assert!(held.insert(signed(&b, 5, 4, 50)));
        assert_eq!(held.of_epoch(5).count(), 2);
        assert!(held.matching(6, &[3; 32]).is_none());
        // Bounded by epochs: the oldest go first, and the newest are listed first.
        for e in 0..(MAX_HELD_EPOCHS as u64) {
            held.insert(signed(&a, 1000 + e, 1, 1));
        }
        assert_eq!(held.of_epoch(5).count(), 0, "epoch 5 was the oldest");
        assert_eq!(held.all().len(), MAX_HELD_EPOCHS);
        let newest = held.newest(2);
        assert_eq!(newest[0].payload().epoch, 1000 + MAX_HELD_EPOCHS as u64 - 1);
        assert_eq!(newest.len(), 2);
    }

    #[test]
    fn vouches_are_bounded_and_spent_once() {
        let mut held = HeldCheckpoints::default();
        let id = |n: u32| {
            let mut b = [0u8; 32];
            b[..4].copy_from_slice(&n.to_le_bytes());
            MessageId(b)
        };
        assert!(held.vouch((0..10).map(id)));
        assert!(held.vouches_for(&id(3)));
        held.spend(&id(3));
        assert!(!held.vouches_for(&id(3)));
        assert!(!held.vouches_for(&id(10)));
        // A listing past the bound keeps what fits and says it did not all fit.
        assert!(!held.vouch((10..(MAX_VOUCHED as u32 + 20)).map(id)));
        assert_eq!(held.vouched.len(), MAX_VOUCHED);
        assert!(held.vouches_for(&id(10)));
    }

    #[test]
    fn an_unmatched_digest_is_asked_about_once_per_reask() {
        let mut c = HeldCheckpoints::default();
        let t0 = 1_000_000;
        assert_eq!(c.ask_about([pair(7, 1), pair(8, 1)], 16, t0), vec![7, 8]);
        // The same digests again, from this peer or another: nothing to ask.
        assert!(c.ask_about([pair(7, 1), pair(8, 1)], 16, t0).is_empty());
        assert!(c.ask_about([pair(7, 1)], 16, t0 + REASK_MS - 1).is_empty());
        // Another digest of epoch 7 (another peer's books) is a new question.
        assert_eq!(c.ask_about([pair(7, 2), pair(7, 3)], 16, t0), vec![7]);
        // An unanswered question is forgotten: the same digest is asked about at once.
        assert!(c.ask_about([pair(8, 1)], 16, t0).is_empty());
        c.forget_asked(&[8]);
        assert_eq!(c.ask_about([pair(8, 1)], 16, t0), vec![8]);
        // Once REASK_MS has passed, the first is asked again.
        assert_eq!(c.ask_about([pair(7, 1)], 16, t0 + REASK_MS), vec![7]);
    }

    #[test]
    fn asks_at_most_max_epochs_and_remembers_a_bounded_number() {
        let mut c = HeldCheckpoints::default();
        let t0 = 1_000_000;
        let ask = c.ask_about((0..100).map(|e| pair(e, 1)), 16, t0);
        assert_eq!(ask, (0..16).collect::<Vec<_>>());
        // The ones left out were not marked: the next answer asks about them.
        assert_eq!(c.ask_about((0..100).map(|e| pair(e, 1)), 16, t0)[0], 16);
        // A peer that makes up digests fills the memory, then gets no more questions.
        for e in 0..(MAX_ASKED as u64) {
            c.ask_about([pair(1000 + e, 9)], 16, t0);
        }
        assert_eq!(c.asked.len(), MAX_ASKED);
        assert!(c.ask_about([pair(5_000_000, 1)], 16, t0).is_empty());
        // They age out.
        assert_eq!(
            c.ask_about([pair(5_000_000, 1)], 16, t0 + REASK_MS),
            vec![5_000_000]
        );
    }

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
