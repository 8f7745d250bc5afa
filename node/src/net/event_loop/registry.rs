//! Registry entries: taken from peers, signed by this node's registrar key, kept on disk.

use dpow_keys::SecretKey;
use dpow_protocol::registry::RegistryError;
use dpow_protocol::validate::{RejectReason, Rejected};
use dpow_protocol::{RegistryEntry, Signed};
use libp2p::gossipsub;

use crate::net::Topic;

use super::EventLoop;

impl EventLoop {
    pub(super) fn on_registry(&mut self, e: Signed<RegistryEntry>) -> Result<(), Rejected> {
        let (registrar, seq, bytes) = (e.payload().registrar, e.payload().seq, e.bytes().to_vec());
        let equivocations = self.registry.equivocation_count();
        let outcome = self.registry.apply(e);
        if self.registry.equivocation_count() > equivocations {
            self.stats().registry_equivocations = self.registry.equivocation_count();
        }
        match outcome {
            Ok(applied) => {
                if self.registry.equivocation_count() > equivocations {
                    // It beat an entry with its number: keep it in place of the other.
                    tracing::warn!(
                        %registrar,
                        seq,
                        "registrar equivocation: two entries with one number; keeping the one with the smaller id"
                    );
                }
                self.store_registry_entry(&registrar, seq, &bytes);
                tracing::info!(
                    applied = applied.len(),
                    total = self.registry.len(),
                    "registry updated"
                );
                Ok(())
            }
            Err(RegistryError::Duplicate { .. }) => Err(Rejected::new(
                RejectReason::Replay,
                "registry entry already applied",
            )),
            Err(e @ RegistryError::Conflict { .. }) => {
                tracing::warn!("registrar equivocation: {e}");
                Err(Rejected::new(RejectReason::Replay, e.to_string()))
            }
            Err(e) => Err(Rejected::new(RejectReason::UnknownRegistrar, e.to_string())),
        }
    }

    /// Keep an applied (or pending) registry entry for the next start.
    pub(super) fn store_registry_entry(
        &mut self,
        registrar: &dpow_keys::PublicKey,
        seq: u64,
        bytes: &[u8],
    ) {
        let write = crate::store::writer::Write::Registry {
            registrar: registrar.0,
            seq,
            bytes: bytes.to_vec(),
        };
        self.store_write(write, Vec::new());
    }

    pub(super) fn sign_registry(
        &mut self,
        action: dpow_protocol::RegistryAction,
        key: &SecretKey,
        want: Option<u64>,
    ) -> anyhow::Result<u64> {
        let registrar = key.public();
        if !self.registry.is_registrar(&registrar) {
            anyhow::bail!(
                "{} is not a registrar of network {}",
                registrar,
                self.genesis.network
            );
        }
        let next = self.registry.next_seq(&registrar);
        let seq = match want {
            None => next,
            Some(seq) if seq < next => anyhow::bail!(
                "entry #{} of registrar {registrar} is already on the network: another machine may be signing with this key",
                next - 1
            ),
            Some(seq) => seq,
        };
        let entry = RegistryEntry {
            registrar,
            seq,
            created_ms: self.clock.now_ms(),
            action,
        };
        let signed = Signed::sign(entry, key, &self.genesis.id)?;
        self.registry
            .apply(signed.clone())
            .map_err(|e| anyhow::anyhow!("applying the entry: {e}"))?;
        self.store_registry_entry(&registrar, seq, signed.bytes());
        match self.publish(Topic::Registry, signed.bytes().to_vec()) {
            Ok(()) => {}
            // Applied here; peers get it in the sync when they connect.
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {
                tracing::info!(seq, "no peers yet: the entry spreads when they connect");
            }
            Err(e) => anyhow::bail!("publishing the entry: {e}"),
        }
        Ok(seq)
    }
}
