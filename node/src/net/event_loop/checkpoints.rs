//! Final epochs and registrars' checkpoints of them (see `dpow_protocol::checkpoint`).
//!
//! - A receipt for a final epoch is refused ([`RejectReason::FinalEpoch`]) unless it is
//!   **vouched for**: its id is in a peer's id list for that epoch whose digest equals a
//!   checkpoint this node holds. That is how a node that was away catches up on closed books,
//!   and the only way: nothing can be added to or backdated into a checkpointed epoch.
//! - Checkpoints arrive on their gossip topic and in `Hello`; each is checked (a genesis
//!   registrar's signature, this network's epoch length, an epoch that is final) and kept on
//!   disk, the newest per registrar and epoch. A node whose digest for the epoch differs
//!   starts a catch-up to fetch the difference.
//! - Gossip does not repeat itself: a checkpoint published while a node was cut off never
//!   reaches it that way, and the connections that outlive a cut send no new `Hello`. So
//!   when a peer's digest of a final epoch differs from this node's and no checkpoint held
//!   matches it, the node asks that peer for its checkpoints of the epoch (`Checkpoints`),
//!   at most once per epoch and digest every [`REASK`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use dpow_keys::PublicKey;
use dpow_protocol::validate::{RejectReason, Rejected};
use dpow_protocol::{Checkpoint, MessageId, Signed};
use libp2p::PeerId;

use super::EventLoop;

/// Epochs whose checkpoints are held, at most (the oldest go first).
const MAX_EPOCHS: usize = 1024;
/// Receipt ids vouched for and not yet fetched, at most.
pub(super) use dpow_protocol::replication::MAX_VOUCHED;
/// Checkpoints offered in a `Hello` answer, newest first.
pub(super) const HELLO_CHECKPOINTS: usize = 16;
/// How long before a peer's digest of a final epoch that no checkpoint matches makes this
/// node ask for the epoch's checkpoints again.
pub(super) const REASK: Duration = Duration::from_secs(600);
/// (Epoch, digest) pairs remembered as asked, at most.
const MAX_ASKED: usize = 4096;

/// The checkpoints held and the ids they vouch for.
#[derive(Default)]
pub(super) struct Checkpoints {
    by_epoch: BTreeMap<u64, BTreeMap<PublicKey, Signed<Checkpoint>>>,
    vouched: HashSet<MessageId>,
    /// When this node last asked for checkpoints of an epoch because of a digest of it.
    asked: HashMap<(u64, [u8; 32]), Instant>,
}

impl Checkpoints {
    /// Whether an equal or newer checkpoint than `p` from its registrar is held.
    fn holds(&self, p: &Checkpoint) -> bool {
        self.by_epoch
            .get(&p.epoch)
            .and_then(|per| per.get(&p.registrar))
            .is_some_and(|old| old.payload().created_ms >= p.created_ms)
    }

    /// Keep `c` unless an equal or newer one from its registrar is held. Returns whether
    /// it was new.
    fn insert(&mut self, c: Signed<Checkpoint>) -> bool {
        if self.holds(c.payload()) {
            return false;
        }
        let p = c.payload();
        self.by_epoch
            .entry(p.epoch)
            .or_default()
            .insert(p.registrar, c);
        while self.by_epoch.len() > MAX_EPOCHS {
            self.by_epoch.pop_first();
        }
        true
    }

    /// A checkpoint of `epoch` whose digest is `digest`, if one is held.
    pub(super) fn matching(&self, epoch: u64, digest: &[u8; 32]) -> Option<&Signed<Checkpoint>> {
        self.by_epoch
            .get(&epoch)?
            .values()
            .find(|c| &c.payload().digest == digest)
    }

    /// The checkpoints held of `epoch`, one per registrar.
    pub(super) fn of_epoch(&self, epoch: u64) -> impl Iterator<Item = &Signed<Checkpoint>> {
        self.by_epoch
            .get(&epoch)
            .into_iter()
            .flat_map(|m| m.values())
    }

    /// Of final epochs whose peer digest (`unmatched`: epoch, digest) no checkpoint held
    /// matches, the ones to ask the peer about now: not asked about within [`REASK`], at
    /// most `max`; they count as asked from `now`. Asks nothing once [`MAX_ASKED`] recent
    /// pairs are remembered.
    pub(super) fn ask_about(
        &mut self,
        unmatched: impl IntoIterator<Item = (u64, [u8; 32])>,
        max: usize,
        now: Instant,
    ) -> Vec<u64> {
        self.asked
            .retain(|_, at| now.saturating_duration_since(*at) < REASK);
        let mut epochs = Vec::new();
        for pair in unmatched {
            if epochs.len() >= max || self.asked.len() >= MAX_ASKED {
                break;
            }
            if self.asked.contains_key(&pair) {
                continue;
            }
            self.asked.insert(pair, now);
            if !epochs.contains(&pair.0) {
                epochs.push(pair.0);
            }
        }
        epochs
    }

    /// A question about `epochs` went unanswered (the peer failed or stayed busy): forget it,
    /// so that the next digests that differ ask again.
    fn forget_asked(&mut self, epochs: &[u64]) {
        self.asked.retain(|(e, _), _| !epochs.contains(e));
    }

    /// Every checkpoint held, oldest epoch first.
    pub(super) fn all(&self) -> Vec<Signed<Checkpoint>> {
        self.by_epoch
            .values()
            .flat_map(|m| m.values().cloned())
            .collect()
    }

    /// The newest checkpoints, at most `n`.
    pub(super) fn newest(&self, n: usize) -> Vec<Signed<Checkpoint>> {
        self.by_epoch
            .values()
            .rev()
            .flat_map(|m| m.values().cloned())
            .take(n)
            .collect()
    }

    /// Vouch for `ids` (a listing that matched a checkpoint). Returns false when that would
    /// hold more than [`MAX_VOUCHED`].
    pub(super) fn vouch(&mut self, ids: impl IntoIterator<Item = MessageId>) -> bool {
        for id in ids {
            if self.vouched.len() >= MAX_VOUCHED {
                return false;
            }
            self.vouched.insert(id);
        }
        true
    }
}

impl EventLoop {
    /// Load the checkpoints kept on disk (verified again).
    pub(super) fn load_checkpoints(&mut self) {
        let Some(store) = &self.store else { return };
        let stored = match store.checkpoints() {
            Ok(v) => v,
            Err(e) => {
                tracing::error!("stored checkpoints not read: {e}");
                return;
            }
        };
        let now = self.clock.now_ms();
        let mut n = 0usize;
        for bytes in stored {
            match self.validator.check_checkpoint(&bytes, &self.registry, now) {
                Ok(c) => n += usize::from(self.checkpoints.insert(c)),
                Err(e) => tracing::warn!("stored checkpoint skipped: {e}"),
            }
        }
        if n > 0 {
            tracing::info!(checkpoints = n, "checkpoints loaded from the store");
        }
    }

    /// A checkpoint from a `Hello` page: screened, verified here, taken.
    pub(super) fn on_checkpoint(&mut self, bytes: &[u8], from: PeerId) -> Result<(), Rejected> {
        let c = self
            .screen_checkpoint(bytes)?
            .verify_with(&self.signatures)?;
        self.take_checkpoint(c, from)
    }

    /// A checkpoint from the network but for its signature: the validator's checks, and not
    /// one held already (or an older one of its registrar's).
    pub(super) fn screen_checkpoint(
        &self,
        bytes: &[u8],
    ) -> Result<dpow_protocol::Unverified<Checkpoint>, Rejected> {
        let c = self
            .validator
            .screen_checkpoint(bytes, &self.registry, self.clock.now_ms())?;
        if self.checkpoints.holds(c.payload()) {
            return Err(Rejected::new(
                RejectReason::Replay,
                "checkpoint already held",
            ));
        }
        Ok(c)
    }

    /// A request for the checkpoints of `epochs` failed: ask again when digests next differ.
    pub(super) fn checkpoints_unanswered(&mut self, epochs: &[u64]) {
        tracing::debug!(?epochs, "checkpoints asked for and not answered");
        self.checkpoints.forget_asked(epochs);
    }

    /// A verified checkpoint from the network; `Ok` means forward it.
    pub(super) fn take_checkpoint(
        &mut self,
        c: Signed<Checkpoint>,
        from: PeerId,
    ) -> Result<(), Rejected> {
        let (epoch, digest, registrar) = {
            let p = c.payload();
            (p.epoch, p.digest, p.registrar)
        };
        if !self.checkpoints.insert(c.clone()) {
            return Err(Rejected::new(
                RejectReason::Replay,
                "checkpoint already held",
            ));
        }
        let write = crate::store::writer::Write::Checkpoint {
            epoch,
            registrar: registrar.0,
            bytes: c.bytes().to_vec(),
        };
        self.store_write(write, Vec::new());
        // Big books just opened compute their digests off the event loop; meanwhile the
        // comparison is the catch-up's, once they are in.
        let mine = if self.digests_warming && !self.digests.contains_key(&epoch) {
            None
        } else {
            Some(self.digest_of(epoch))
        };
        if mine == Some(digest) {
            tracing::info!(epoch, %registrar, "checkpoint matches these books");
        } else if self.catch_up_ledger && !self.light {
            tracing::info!(epoch, %registrar, "checkpoint differs from these books: fetching the difference");
            self.start_catch_up(from, false);
        }
        Ok(())
    }

    /// A verified receipt may enter the books: its epoch is open, or a checkpoint vouches
    /// for it.
    /// Checked before its signatures; the vouch is used up once they verify
    /// ([`Self::vouch_used`]).
    pub(super) fn check_open(&self, id: &MessageId, accepted_ms: u64) -> Result<(), Rejected> {
        if self.checkpoints.vouched.contains(id) {
            return Ok(());
        }
        self.validator
            .check_open_at(accepted_ms, self.clock.now_ms())
    }

    /// A verified receipt was taken: the vouch for it, if any, is spent.
    pub(super) fn vouch_used(&mut self, id: &MessageId) {
        self.checkpoints.vouched.remove(id);
    }

    /// A short-lived client that reads the books ([`crate::net::NetTuning::auditor`]): it may
    /// fetch the receipts of final epochs without a checkpoint, to compute one or a payout.
    pub(super) fn is_auditor(&self) -> bool {
        self.auditor
    }

    /// Whether `epoch` is final now.
    pub(super) fn is_final(&self, epoch: u64) -> bool {
        self.finality.is_final(epoch, self.clock.now_ms())
    }

    /// Publish a registrar's checkpoint (`dpow registry checkpoint`) after checking it as
    /// any peer would.
    pub(super) fn publish_checkpoint(&mut self, bytes: Vec<u8>) -> anyhow::Result<()> {
        let c = self
            .validator
            .check_checkpoint(&bytes, &self.registry, self.clock.now_ms())
            .map_err(|r| anyhow::anyhow!("checkpoint refused: {r}"))?;
        let epoch = c.payload().epoch;
        self.checkpoints.insert(c);
        match self.publish(crate::net::Topic::Checkpoints, bytes) {
            Ok(()) => Ok(()),
            Err(libp2p::gossipsub::PublishError::NoPeersSubscribedToTopic) => {
                tracing::info!(
                    epoch,
                    "no peers yet: the checkpoint spreads when they connect"
                );
                Ok(())
            }
            Err(e) => Err(anyhow::anyhow!("publishing the checkpoint: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(epoch: u64, d: u8) -> (u64, [u8; 32]) {
        (epoch, [d; 32])
    }

    #[test]
    fn an_unmatched_digest_is_asked_about_once_per_reask() {
        let mut c = Checkpoints::default();
        let t0 = Instant::now();
        assert_eq!(c.ask_about([pair(7, 1), pair(8, 1)], 16, t0), vec![7, 8]);
        // The same digests again, from this peer or another: nothing to ask.
        assert!(c.ask_about([pair(7, 1), pair(8, 1)], 16, t0).is_empty());
        assert!(
            c.ask_about([pair(7, 1)], 16, t0 + REASK - Duration::from_millis(1))
                .is_empty()
        );
        // Another digest of epoch 7 (another peer's books) is a new question.
        assert_eq!(c.ask_about([pair(7, 2), pair(7, 3)], 16, t0), vec![7]);
        // An unanswered question is forgotten: the same digest is asked about at once.
        assert!(c.ask_about([pair(8, 1)], 16, t0).is_empty());
        c.forget_asked(&[8]);
        assert_eq!(c.ask_about([pair(8, 1)], 16, t0), vec![8]);
        // Once REASK has passed, the first is asked again.
        assert_eq!(c.ask_about([pair(7, 1)], 16, t0 + REASK), vec![7]);
    }

    #[test]
    fn asks_at_most_max_epochs_and_remembers_a_bounded_number() {
        let mut c = Checkpoints::default();
        let t0 = Instant::now();
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
            c.ask_about([pair(5_000_000, 1)], 16, t0 + REASK),
            vec![5_000_000]
        );
    }
}
