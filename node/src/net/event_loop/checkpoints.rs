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

use std::collections::{BTreeMap, HashSet};

use dpow_keys::PublicKey;
use dpow_protocol::validate::{RejectReason, Rejected};
use dpow_protocol::{Checkpoint, MessageId, Signed};
use libp2p::PeerId;

use super::EventLoop;
use crate::net::now_ms;

/// Epochs whose checkpoints are held, at most (the oldest go first).
const MAX_EPOCHS: usize = 1024;
/// Receipt ids vouched for and not yet fetched, at most.
pub(super) const MAX_VOUCHED: usize = 1 << 20;
/// Checkpoints offered in a `Hello` answer, newest first.
pub(super) const HELLO_CHECKPOINTS: usize = 16;

/// The checkpoints held and the ids they vouch for.
#[derive(Default)]
pub(super) struct Checkpoints {
    by_epoch: BTreeMap<u64, BTreeMap<PublicKey, Signed<Checkpoint>>>,
    vouched: HashSet<MessageId>,
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
        let now = now_ms();
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
        let c = self.screen_checkpoint(bytes)?.verify()?;
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
            .screen_checkpoint(bytes, &self.registry, now_ms())?;
        if self.checkpoints.holds(c.payload()) {
            return Err(Rejected::new(
                RejectReason::Replay,
                "checkpoint already held",
            ));
        }
        Ok(c)
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
        let mine = self.digest_of(epoch);
        if mine == digest {
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
        self.validator.check_open_at(accepted_ms, now_ms())
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
        self.finality.is_final(epoch, now_ms())
    }

    /// Publish a registrar's checkpoint (`dpow registry checkpoint`) after checking it as
    /// any peer would.
    pub(super) fn publish_checkpoint(&mut self, bytes: Vec<u8>) -> anyhow::Result<()> {
        let c = self
            .validator
            .check_checkpoint(&bytes, &self.registry, now_ms())
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
