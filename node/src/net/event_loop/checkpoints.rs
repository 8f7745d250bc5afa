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
//!   at most once per epoch and digest every
//!   [`REASK_MS`](dpow_protocol::checkpoint::REASK_MS).
//!
//! What is held (checkpoints, vouches, questions asked) is the sans-IO
//! [`HeldCheckpoints`](dpow_protocol::checkpoint::HeldCheckpoints); this file feeds it what the
//! network and the store bring and acts on its answers.

use dpow_protocol::validate::{RejectReason, Rejected};
use dpow_protocol::{Checkpoint, MessageId, Signed};
use libp2p::PeerId;

use super::EventLoop;

/// Checkpoints offered in a `Hello` answer, newest first.
pub(super) const HELLO_CHECKPOINTS: usize = 16;

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
        let (epoch, registrar) = (c.payload().epoch, c.payload().registrar);
        let Some(matches) = self.keep_checkpoint(c) else {
            return Err(Rejected::new(
                RejectReason::Replay,
                "checkpoint already held",
            ));
        };
        if matches {
            tracing::info!(epoch, %registrar, "checkpoint matches these books");
        } else if self.catch_up_ledger && !self.light {
            tracing::info!(epoch, %registrar, "checkpoint differs from these books: fetching the difference");
            self.start_catch_up(from, false);
        }
        Ok(())
    }

    /// Hold a checked checkpoint, write it to the store for the next start and tell it
    /// (`Event::Checkpoint`). `None` when it (or a newer one of its registrar's) was held
    /// already; otherwise whether these books match it.
    fn keep_checkpoint(&mut self, c: Signed<Checkpoint>) -> Option<bool> {
        let (epoch, digest, registrar) = {
            let p = c.payload();
            (p.epoch, p.digest, p.registrar)
        };
        let write = crate::store::writer::Write::Checkpoint {
            epoch,
            registrar: registrar.0,
            bytes: c.bytes().to_vec(),
        };
        if !self.checkpoints.insert(c) {
            return None;
        }
        self.store_write(write, Vec::new());
        let matches = self.books_match(epoch, &digest);
        self.emit(|| crate::net::Event::Checkpoint {
            epoch,
            registrar,
            matches,
        });
        Some(matches)
    }

    /// Whether these books of `epoch` have `digest`. Big books just opened compute their
    /// digests off the event loop; until then this says no, and the comparison is the
    /// catch-up's, once they are in.
    fn books_match(&mut self, epoch: u64, digest: &[u8; 32]) -> bool {
        if self.digests_warming && !self.digests.contains_key(&epoch) {
            return false;
        }
        self.digest_of(epoch) == *digest
    }

    /// A verified receipt may enter the books: its epoch is open, or a checkpoint vouches
    /// for it.
    /// Checked before its signatures; the vouch is used up once they verify
    /// ([`Self::vouch_used`]).
    pub(super) fn check_open(&self, id: &MessageId, accepted_ms: u64) -> Result<(), Rejected> {
        if self.checkpoints.vouches_for(id) {
            return Ok(());
        }
        self.validator
            .check_open_at(accepted_ms, self.clock.now_ms())
    }

    /// A verified receipt was taken: the vouch for it, if any, is spent.
    pub(super) fn vouch_used(&mut self, id: &MessageId) {
        self.checkpoints.spend(id);
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
        // Kept like one from a peer: on disk too, so that this node still offers it after a
        // restart.
        self.keep_checkpoint(c);
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
