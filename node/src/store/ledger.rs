//! The node's ledger: on disk ([`Books`]) when the node has a store, in memory
//! ([`Ledger`]) when it has none (a short-lived client, a light build). The event loop asks
//! this one type; both answer alike (`store::books` tests that they do).
//!
//! Reads from the disk cannot fail on a healthy store; when one does (a corrupt entry, an I/O
//! error) it is logged as an error and answered as "nothing held", which makes this node's
//! digests differ from its peers' and so fetches the receipts again; `dpow ledger verify
//! --full --repair` mends the store itself.

use std::collections::{BTreeMap, BTreeSet};

use dpow_keys::{NanoAccount, PublicKey};
use dpow_protocol::ledger::{Ingested, Ledger, LedgerError, ServiceBalance};
use dpow_protocol::registry::Registry;
use dpow_protocol::{MessageId, Receipt, Signed};

use super::{Books, BooksError, StoreError};

/// Why a receipt was not taken.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The ledger's rules refused it.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The disk refused it (full, failing): nothing of it was written.
    #[error("the store refused the receipt: {0}")]
    Store(StoreError),
    /// It belongs to books this node archived and pruned.
    #[error("receipt {receipt} {why}")]
    Pruned {
        /// The receipt refused.
        receipt: MessageId,
        /// Which epoch or request.
        why: String,
    },
}

impl From<BooksError> for IngestError {
    fn from(e: BooksError) -> Self {
        match e {
            BooksError::Ledger(e) => IngestError::Ledger(e),
            BooksError::Store(e) => IngestError::Store(e),
            BooksError::Pruned { receipt, why } => IngestError::Pruned { receipt, why },
        }
    }
}

/// The node's ledger. See the module docs.
#[derive(Debug)]
pub enum NodeLedger {
    /// No store: every receipt in memory.
    Memory(Ledger),
    /// The store's books.
    Disk(Books),
}

fn logged<T: Default>(what: &str, r: Result<T, StoreError>) -> T {
    r.unwrap_or_else(|e| {
        tracing::error!("reading the ledger ({what}): {e}");
        T::default()
    })
}

impl NodeLedger {
    /// The length of an epoch, in milliseconds.
    pub fn epoch_ms(&self) -> u64 {
        match self {
            NodeLedger::Memory(l) => l.epoch_ms(),
            NodeLedger::Disk(b) => b.epoch_ms(),
        }
    }

    /// Whether the books are on disk (writes then need [`super::writer::Write::Receipts`] to
    /// become durable).
    pub fn on_disk(&self) -> bool {
        matches!(self, NodeLedger::Disk(_))
    }

    /// Take in a verified receipt (on disk: written, not yet synced).
    pub fn ingest(&mut self, r: Signed<Receipt>) -> Result<Ingested, IngestError> {
        match self {
            NodeLedger::Memory(l) => Ok(l.ingest(r)?),
            NodeLedger::Disk(b) => b.ingest(&r).map_err(IngestError::from),
        }
    }

    /// Take in verified receipts, in order, with the answer [`NodeLedger::ingest`] would give
    /// each; on disk in as few atomic writes as they allow ([`Books::ingest_all`]).
    pub fn ingest_all(&mut self, rs: Vec<Signed<Receipt>>) -> Vec<Result<Ingested, IngestError>> {
        match self {
            NodeLedger::Memory(l) => rs.into_iter().map(|r| Ok(l.ingest(r)?)).collect(),
            NodeLedger::Disk(b) => b
                .ingest_all(&rs)
                .into_iter()
                .map(|a| a.map_err(IngestError::from))
                .collect(),
        }
    }

    /// A held receipt.
    pub fn get(&self, id: &MessageId) -> Option<Signed<Receipt>> {
        match self {
            NodeLedger::Memory(l) => l.get(id).cloned(),
            NodeLedger::Disk(b) => logged("get", b.get(id)),
        }
    }

    /// A held receipt's envelope bytes.
    pub fn get_bytes(&self, id: &MessageId) -> Option<Vec<u8>> {
        match self {
            NodeLedger::Memory(l) => l.get(id).map(|r| r.bytes().to_vec()),
            NodeLedger::Disk(b) => logged("get", b.get_bytes(id)),
        }
    }

    /// Whether receipt `id` is held.
    pub fn contains(&self, id: &MessageId) -> bool {
        match self {
            NodeLedger::Memory(l) => l.get(id).is_some(),
            NodeLedger::Disk(b) => logged("contains", b.contains(id)),
        }
    }

    /// Those of `ids` not held (a read that fails counts as not held, as in
    /// [`NodeLedger::contains`]); on disk, one batched read.
    pub fn missing(&self, ids: &[MessageId]) -> Vec<MessageId> {
        match self {
            NodeLedger::Memory(l) => ids
                .iter()
                .filter(|id| l.get(id).is_none())
                .copied()
                .collect(),
            NodeLedger::Disk(b) => {
                let held = logged("contains", b.contains_each(ids));
                ids.iter()
                    .enumerate()
                    .filter(|(i, _)| !held.get(*i).copied().unwrap_or(false))
                    .map(|(_, id)| *id)
                    .collect()
            }
        }
    }

    /// Receipts held, evidence included.
    pub fn len(&self) -> usize {
        match self {
            NodeLedger::Memory(l) => l.len(),
            NodeLedger::Disk(b) => usize::try_from(logged("len", b.len())).unwrap_or(usize::MAX),
        }
    }

    /// Whether no receipt is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The epochs holding receipts, with how many each.
    pub fn epochs(&self) -> Vec<(u64, usize)> {
        match self {
            NodeLedger::Memory(l) => l.epochs(),
            NodeLedger::Disk(b) => logged("epochs", b.epochs())
                .into_iter()
                .map(|(e, n)| (e, usize::try_from(n).unwrap_or(usize::MAX)))
                .collect(),
        }
    }

    /// An epoch's receipt ids, ascending.
    pub fn receipt_ids_in_epoch(&self, epoch: u64) -> Vec<MessageId> {
        match self {
            NodeLedger::Memory(l) => l.receipt_ids_in_epoch(epoch),
            NodeLedger::Disk(b) => logged("epoch ids", b.receipt_ids_in_epoch(epoch)),
        }
    }

    /// One page ([`dpow_protocol::replication::MAX_SYNC_IDS`]) of an epoch's receipt ids after
    /// `after`, ascending, and whether more follow: the answer to a peer's `Ids`.
    pub fn receipt_ids_page(&self, epoch: u64, after: Option<MessageId>) -> (Vec<MessageId>, bool) {
        match self {
            NodeLedger::Memory(l) => {
                let all = l.receipt_ids_in_epoch(epoch);
                let (page, more) = dpow_protocol::replication::ids_page(&all, after);
                (page.to_vec(), more)
            }
            NodeLedger::Disk(b) => logged(
                "epoch ids",
                b.receipt_ids_page(epoch, after, dpow_protocol::replication::MAX_SYNC_IDS),
            ),
        }
    }

    /// The envelope bytes of those of `ids` held, read on a blocking thread: books on disk
    /// only (a ledger in memory answers at once). Ids not held are left out.
    pub fn receipts_job(
        &self,
        ids: Vec<MessageId>,
    ) -> Option<impl FnOnce() -> Vec<Vec<u8>> + Send + 'static> {
        match self {
            NodeLedger::Memory(_) => None,
            NodeLedger::Disk(b) => Some(b.receipts_job(ids)),
        }
    }

    /// [`NodeLedger::receipt_ids_page`] as a job for a blocking thread: books on disk only (a
    /// ledger in memory answers at once).
    pub fn receipt_ids_page_job(
        &self,
        epoch: u64,
        after: Option<MessageId>,
    ) -> Option<impl FnOnce() -> (Vec<MessageId>, bool) + Send + 'static> {
        match self {
            NodeLedger::Memory(_) => None,
            NodeLedger::Disk(b) => {
                let job =
                    b.receipt_ids_page_job(epoch, after, dpow_protocol::replication::MAX_SYNC_IDS);
                Some(move || logged("epoch ids", job()))
            }
        }
    }

    /// [`NodeLedger::epoch_digest`] as a job for a blocking thread: books on disk only (a
    /// ledger in memory answers at once).
    pub fn epoch_digest_job(
        &self,
        epoch: u64,
    ) -> Option<impl FnOnce() -> [u8; 32] + Send + 'static> {
        match self {
            NodeLedger::Memory(_) => None,
            NodeLedger::Disk(b) => {
                let job = b.epoch_digest_job(epoch);
                Some(move || logged("epoch digest", job()))
            }
        }
    }

    /// An epoch's digest.
    pub fn epoch_digest(&self, epoch: u64) -> [u8; 32] {
        match self {
            NodeLedger::Memory(l) => l.epoch_digest(epoch),
            NodeLedger::Disk(b) => logged("epoch digest", b.epoch_digest(epoch)),
        }
    }

    /// Whether `epoch` was archived and pruned here (`dpow ledger prune`).
    pub fn is_pruned(&self, epoch: u64) -> bool {
        match self {
            NodeLedger::Memory(_) => false,
            NodeLedger::Disk(b) => {
                logged("pruned epochs", b.pruned_epoch(epoch).map(|p| p.is_some()))
            }
        }
    }

    /// Hold final epoch `cp.epoch` as the checkpoint states it, without its receipts
    /// ([`Books::adopt`]); the books in memory never do.
    pub fn adopt(&mut self, cp: &dpow_protocol::Checkpoint) -> bool {
        match self {
            NodeLedger::Memory(_) => false,
            NodeLedger::Disk(b) => logged("adopting a checkpoint", b.adopt(cp)),
        }
    }

    /// Credits `worker` earned in all.
    pub fn earned(&self, worker: &PublicKey) -> u128 {
        match self {
            NodeLedger::Memory(l) => l.earned(worker),
            NodeLedger::Disk(b) => logged("earned", b.earned(worker)),
        }
    }

    /// Credits `service` spent in all.
    pub fn spent(&self, service: &PublicKey) -> u128 {
        match self {
            NodeLedger::Memory(l) => l.spent(service),
            NodeLedger::Disk(b) => logged("spent", b.spent(service)),
        }
    }

    /// Credits each worker earned in `epoch`.
    pub fn earned_in_epoch(&self, epoch: u64) -> BTreeMap<PublicKey, u128> {
        match self {
            NodeLedger::Memory(l) => l.earned_in_epoch(epoch),
            NodeLedger::Disk(b) => logged("earned in epoch", b.earned_in_epoch(epoch)),
        }
    }

    /// One service's account.
    pub fn service_balance(&self, registry: &Registry, service: &PublicKey) -> ServiceBalance {
        match self {
            NodeLedger::Memory(l) => l.service_balance(registry, service),
            NodeLedger::Disk(b) => logged("balance", b.service_balance(registry, service)),
        }
    }

    /// Services proven to have signed two receipts for one request.
    pub fn flagged_services(&self) -> BTreeSet<PublicKey> {
        match self {
            NodeLedger::Memory(l) => l.flagged_services(),
            NodeLedger::Disk(b) => logged("flagged", b.flagged_services()),
        }
    }

    /// Credits and counted results per payout account, in all.
    pub fn account_credits(&self) -> BTreeMap<NanoAccount, (u128, u64)> {
        match self {
            NodeLedger::Memory(l) => {
                let mut by: BTreeMap<NanoAccount, (u128, u64)> = BTreeMap::new();
                for r in l.counted() {
                    let r = r.payload();
                    if let Some(a) = r.result.payload().payout {
                        let e = by.entry(a).or_default();
                        e.0 = e.0.saturating_add(u128::from(r.price.0));
                        e.1 += 1;
                    }
                }
                by
            }
            NodeLedger::Disk(b) => logged("account credits", b.account_credits()),
        }
    }

    /// Counted receipts accepted at or after `since_ms`, in time order (in memory: every
    /// counted receipt), to seed workers' standings at start.
    pub fn counted_since(&self, since_ms: u64) -> Vec<Signed<Receipt>> {
        match self {
            NodeLedger::Memory(l) => l.counted().cloned().collect(),
            NodeLedger::Disk(b) => logged("recent receipts", b.counted_since(since_ms)),
        }
    }

    /// The whole ledger in memory: for `dpow ledger`, tests and small networks (on disk this
    /// reads every receipt).
    pub fn snapshot(&self) -> Ledger {
        match self {
            NodeLedger::Memory(l) => l.clone(),
            NodeLedger::Disk(b) => b.to_memory().unwrap_or_else(|e| {
                tracing::error!("reading the ledger (snapshot): {e}");
                Ledger::new(b.epoch_ms())
            }),
        }
    }
}
