//! Before a short-lived node leaves: wait until a peer holds what it published.
//!
//! `dpow registry` starts a node, publishes one signed message on gossip and stops;
//! `dpow request` signs receipts for the work it was given, and keeps no store. Gossip
//! hands the message to the connections at once, but a node that leaves right after may take
//! the unsent bytes with it. So the command asks its peers directly (the sync protocol's
//! `Hello` pages for a registry entry, `Checkpoints` for a checkpoint) until one answers with
//! the very bytes published, and says which peer did, or that none did in time (for
//! receipts, `Fetch` until every one is held by some peer).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use dpow_protocol::replication::MAX_SYNC_FETCH;
use dpow_protocol::{MessageId, NetworkId, Receipt, Unverified};
use libp2p::PeerId;

use crate::net::NodeHandle;
use crate::net::wire::{Bytes, SyncRequest, SyncResponse};

/// How long to wait for a peer to hold what was published.
pub(super) const CONFIRM_LIMIT: Duration = Duration::from_secs(10);
/// The first pause between two rounds of questions; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(20);
const MAX_PAUSE: Duration = Duration::from_millis(500);
/// `Hello` pages walked at most per peer and round (registry entries come first in them).
const MAX_PAGES: usize = 64;

/// What was published, as the signed envelope's bytes.
#[derive(Clone, Copy, Debug)]
pub(super) enum Published<'a> {
    /// A registry entry.
    Entry(&'a [u8]),
    /// A registrar's checkpoint of `epoch`.
    Checkpoint {
        /// Its epoch.
        epoch: u64,
        /// Its envelope.
        bytes: &'a [u8],
    },
}

/// The first connected peer found holding `what`, asking each in turn and pausing between
/// rounds (gossip and the peer's signature check take a moment); `None` once `limit` passed.
pub(super) async fn held_by_a_peer(
    node: &NodeHandle,
    what: Published<'_>,
    limit: Duration,
) -> anyhow::Result<Option<PeerId>> {
    let deadline = Instant::now() + limit;
    let mut pause = FIRST_PAUSE;
    loop {
        for peer in node.connected_peers().await? {
            // A peer that never answers costs no more than the time left.
            match tokio::time::timeout_at(deadline.into(), holds(node, peer, what)).await {
                Ok(Ok(true)) => return Ok(Some(peer)),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::debug!(%peer, "no answer: {e:#}"),
                Err(_) => return Ok(None),
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        tokio::time::sleep(pause.min(left)).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// Of the receipts `ids` (signed by this node, network `net`), those no connected peer holds
/// after `limit`: each round asks every peer for those still missing (`Fetch`, at most
/// [`MAX_SYNC_FETCH`] ids a question), pausing between rounds.
pub(super) async fn receipts_unheld(
    node: &NodeHandle,
    net: &NetworkId,
    ids: &[MessageId],
    limit: Duration,
) -> anyhow::Result<Vec<MessageId>> {
    let deadline = Instant::now() + limit;
    let mut missing: BTreeSet<MessageId> = ids.iter().copied().collect();
    let mut pause = FIRST_PAUSE;
    while !missing.is_empty() {
        for peer in node.connected_peers().await? {
            let asked: Vec<MessageId> = missing.iter().copied().collect();
            for chunk in asked.chunks(MAX_SYNC_FETCH) {
                let ids = chunk.iter().flat_map(|id| id.0).collect::<Vec<u8>>();
                let ask = node.probe(peer, SyncRequest::Fetch { ids: Bytes(ids) });
                // A peer that never answers costs no more than the time left.
                let held = match tokio::time::timeout_at(deadline.into(), ask).await {
                    Ok(Ok(SyncResponse::Receipts(held))) => held,
                    Ok(Ok(_)) => continue,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, "no answer: {e:#}");
                        break;
                    }
                    Err(_) => return Ok(missing.into_iter().collect()),
                };
                for b in held {
                    if let Ok(r) = Unverified::<Receipt>::decode(&b.0, net) {
                        missing.remove(&r.id());
                    }
                }
            }
            if missing.is_empty() {
                break;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if missing.is_empty() || left.is_zero() {
            break;
        }
        tokio::time::sleep(pause.min(left)).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
    Ok(missing.into_iter().collect())
}

/// Whether `peer` answers with `what` now (`false` too when it says it is busy).
async fn holds(node: &NodeHandle, peer: PeerId, what: Published<'_>) -> anyhow::Result<bool> {
    match what {
        Published::Entry(bytes) => {
            let mut from = 0;
            for _ in 0..MAX_PAGES {
                match node.probe(peer, SyncRequest::Hello { from }).await? {
                    SyncResponse::Hello { registry, next, .. } => {
                        if registry.iter().any(|b| b.0 == bytes) {
                            return Ok(true);
                        }
                        // Past the registry's entries, or at the end.
                        match next {
                            Some(n) if !registry.is_empty() => from = n,
                            _ => return Ok(false),
                        }
                    }
                    SyncResponse::Busy { .. } => return Ok(false),
                    other => anyhow::bail!("answered {} to Hello", kind(&other)),
                }
            }
            Ok(false)
        }
        Published::Checkpoint { epoch, bytes } => {
            match node
                .probe(
                    peer,
                    SyncRequest::Checkpoints {
                        epochs: vec![epoch],
                    },
                )
                .await?
            {
                SyncResponse::Checkpoints(held) => Ok(held.iter().any(|b| b.0 == bytes)),
                SyncResponse::Busy { .. } => Ok(false),
                other => anyhow::bail!("answered {} to Checkpoints", kind(&other)),
            }
        }
    }
}

fn kind(r: &SyncResponse) -> &'static str {
    match r {
        SyncResponse::Hello { .. } => "Hello",
        SyncResponse::Digests { .. } => "Digests",
        SyncResponse::Ids { .. } => "Ids",
        SyncResponse::Receipts(_) => "Receipts",
        SyncResponse::Checkpoints(_) => "Checkpoints",
        SyncResponse::Busy { .. } => "Busy",
    }
}
