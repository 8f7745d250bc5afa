//! The ledger on disk: receipts, their indexes and running tallies in RocksDB, so a node's
//! memory does not grow with its books and a restart reads nothing back.
//!
//! [`Books`] applies the same rules as [`dpow_protocol::ledger::Ledger`] (the pure,
//! in-memory ledger that tests and `dpow ledger` recompute with): one request, one receipt,
//! through the shared [`admit`], and answers the same questions (balances, an epoch's claims
//! and digest, equivocations) from indexes and tallies instead of a scan of every receipt.
//!
//! | family | key | value |
//! |---|---|---|
//! | `receipts-v1` | `accepted_ms` ‖ id | the receipt envelope (the one copy) |
//! | `receipt-ids-v1` | id | `accepted_ms` |
//! | `epoch-ids-v1` | epoch ‖ id | `accepted_ms` |
//! | `requests-v1` | request id | the one or two receipt ids held for it, ascending |
//! | `tallies-v1` | kind ‖ (epoch) ‖ (key) | credits (i128) ‖ receipts (i64), little-endian, summed by a merge operator |
//! | `equivocations-v1` | service ‖ request | empty |
//!
//! Every receipt taken in is one atomic write batch (receipt, indexes, tallies), so the
//! tallies always equal a recomputation from the receipts, across crashes too. The batch is
//! written without waiting for the disk: the caller makes it durable with [`Books::sync`]
//! (the node's store task does, before anything is acknowledged), so the event loop never waits
//! on a synced write. [`Books::check`] recomputes everything from the receipts, re-verifying
//! signatures if asked (`dpow ledger verify --full`), and [`Books::rebuild`] repairs indexes
//! and tallies from the receipts.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use dpow_keys::{NanoAccount, PublicKey};
use dpow_protocol::ledger::{
    Balances, Claims, Dropped, Equivocation, Ingested, Ledger, LedgerError, ServiceBalance, admit,
    digest_of_ids, epoch_of,
};
use dpow_protocol::registry::Registry;
use dpow_protocol::{
    Checkpoint, Credits, Message, MessageId, NetworkId, Receipt, SignatureCache, Signed, Unverified,
};
use rocksdb::{Direction, IteratorMode, MergeOperands, WriteBatch, WriteOptions};

use super::rocks::{
    CF_EPOCH_IDS, CF_EQUIVOCATIONS, CF_META, CF_RECEIPT_IDS, CF_RECEIPTS, CF_REQUESTS, CF_TALLIES,
};
use super::{Store, StoreError};

/// The meta key naming the epoch length the indexes were built for.
const INDEXED: &str = "ledger-indexed-epoch-ms";
/// Receipts deleted per atomic batch when pruning.
pub const PRUNE_CHUNK: usize = 4096;
/// The meta key prefix of a pruned epoch (‖ epoch, big-endian): see [`PrunedEpoch`].
const PRUNED: &[u8] = b"pruned-epoch-";

/// Tally kinds: the first byte of a `tallies-v1` key.
mod kind {
    /// `‖ epoch`: receipts held in the epoch (evidence included).
    pub(super) const EPOCH_HELD: u8 = 0;
    /// `‖ epoch ‖ account`: credits claimed by a payout account.
    pub(super) const ACCOUNT: u8 = 1;
    /// `‖ epoch`: credits of results that named no account.
    pub(super) const UNCLAIMED: u8 = 2;
    /// `‖ epoch ‖ worker`: credits a worker earned in the epoch.
    pub(super) const WORKER_EPOCH: u8 = 3;
    /// `‖ epoch ‖ service`: credits a service spent in the epoch.
    pub(super) const SERVICE_EPOCH: u8 = 4;
    /// `‖ worker`: credits a worker earned in all.
    pub(super) const WORKER: u8 = 5;
    /// `‖ service`: credits a service spent in all.
    pub(super) const SERVICE: u8 = 6;
    /// (nothing): receipts held in all.
    pub(super) const HELD: u8 = 7;
}

/// A tally: credits and receipts, as stored (24 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Credits (may be negative inside a merge; never once every operand is in).
    pub credits: i128,
    /// Receipts.
    pub receipts: i64,
}

impl Tally {
    const LEN: usize = 24;

    fn encode(self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..16].copy_from_slice(&self.credits.to_le_bytes());
        out[16..].copy_from_slice(&self.receipts.to_le_bytes());
        out
    }

    fn decode(v: &[u8]) -> Option<Tally> {
        if v.len() != Self::LEN {
            return None;
        }
        let mut c = [0u8; 16];
        c.copy_from_slice(&v[..16]);
        let mut r = [0u8; 8];
        r.copy_from_slice(&v[16..]);
        Some(Tally {
            credits: i128::from_le_bytes(c),
            receipts: i64::from_le_bytes(r),
        })
    }

    fn add(self, other: Tally) -> Tally {
        Tally {
            credits: self.credits.wrapping_add(other.credits),
            receipts: self.receipts.wrapping_add(other.receipts),
        }
    }

    /// Credits as an unsigned sum (a negative tally is corruption; read as 0).
    fn credits(self) -> u128 {
        u128::try_from(self.credits).unwrap_or(0)
    }

    fn receipts(self) -> u64 {
        u64::try_from(self.receipts).unwrap_or(0)
    }
}

/// The merge operator of `tallies-v1`: the sum of the stored value and every operand.
/// `None` (a value of the wrong length) makes RocksDB report the key as corrupt.
pub fn merge_tallies(
    _key: &[u8],
    existing: Option<&[u8]>,
    operands: &MergeOperands,
) -> Option<Vec<u8>> {
    let mut sum = match existing {
        Some(v) => Tally::decode(v)?,
        None => Tally::default(),
    };
    for op in operands {
        sum = sum.add(Tally::decode(op)?);
    }
    Some(sum.encode().to_vec())
}

/// Tallies to add, summed per key (a key sorts as RocksDB sorts it).
#[derive(Default)]
struct Sums(BTreeMap<Vec<u8>, Tally>);

impl Sums {
    fn add(&mut self, tallies: impl IntoIterator<Item = (Vec<u8>, Tally)>) {
        for (k, t) in tallies {
            let sum = self.0.entry(k).or_default();
            *sum = sum.add(t);
        }
    }
}

/// Receipts staged for one atomic write: their rows, their tallies summed per key, and the
/// receipts and requests they name (a receipt that names one of those goes into the next
/// write, so every check a receipt makes reads the disk, never a write still to come).
#[derive(Default)]
struct Group {
    batch: WriteBatch,
    tallies: Sums,
    ids: std::collections::HashSet<MessageId>,
    requests: std::collections::HashSet<MessageId>,
}

impl Group {
    /// Whether `r` names a receipt or request already staged here.
    fn touches(&self, r: &Signed<Receipt>) -> bool {
        self.ids.contains(&r.id()) || self.requests.contains(&r.payload().request.id())
    }
}

fn tally_key(kind: u8, epoch: Option<u64>, key: Option<&[u8; 32]>) -> Vec<u8> {
    let mut k = Vec::with_capacity(41);
    k.push(kind);
    if let Some(e) = epoch {
        k.extend_from_slice(&e.to_be_bytes());
    }
    if let Some(key) = key {
        k.extend_from_slice(key);
    }
    k
}

fn epoch_id_key(epoch: u64, id: &MessageId) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..8].copy_from_slice(&epoch.to_be_bytes());
    k[8..].copy_from_slice(&id.0);
    k
}

fn u64_of(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

fn id_of(v: &[u8]) -> Option<MessageId> {
    Some(MessageId(v.try_into().ok()?))
}

fn corrupt(family: &'static str, why: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        family,
        why: why.into(),
    }
}

/// The tallies a counted receipt adds to (`sign` = 1) or takes from (`sign` = -1).
fn counted_tallies(epoch_ms: u64, r: &Receipt, sign: i8) -> [(Vec<u8>, Tally); 5] {
    let e = epoch_of(r.accepted_ms, epoch_ms);
    let t = Tally {
        credits: i128::from(r.price.0) * i128::from(sign),
        receipts: i64::from(sign),
    };
    let worker = r.result.payload().worker.0;
    let service = r.request.payload().service.0;
    let claim = match r.result.payload().payout {
        Some(a) => tally_key(kind::ACCOUNT, Some(e), Some(a.as_bytes())),
        None => tally_key(kind::UNCLAIMED, Some(e), None),
    };
    [
        (claim, t),
        (tally_key(kind::WORKER_EPOCH, Some(e), Some(&worker)), t),
        (tally_key(kind::SERVICE_EPOCH, Some(e), Some(&service)), t),
        (tally_key(kind::WORKER, None, Some(&worker)), t),
        (tally_key(kind::SERVICE, None, Some(&service)), t),
    ]
}

/// The tallies one held receipt of epoch `e` (counted or not) adds to or takes from.
fn held_tallies(e: u64, sign: i8) -> [(Vec<u8>, Tally); 2] {
    let t = Tally {
        credits: 0,
        receipts: i64::from(sign),
    };
    [
        (tally_key(kind::EPOCH_HELD, Some(e), None), t),
        (tally_key(kind::HELD, None, None), t),
    ]
}

/// A stored receipt decoded, its signatures checked again if given a cache of signers' keys
/// (only keys: no statement is remembered there, so every signature is checked), and its id
/// checked against the one it is stored under.
fn decode_stored(
    s: &super::StoredReceipt,
    net: &NetworkId,
    signatures: Option<&SignatureCache>,
) -> Result<Signed<Receipt>, String> {
    let u = Unverified::<Receipt>::decode(&s.bytes, net).map_err(|e| e.to_string())?;
    let r = match signatures {
        Some(keys) => u.verify_with(keys).map_err(|e| e.to_string())?,
        None => u.trust_stored(),
    };
    if r.id() != s.id {
        return Err(format!("stored under {} but its id is {}", s.id, r.id()));
    }
    Ok(r)
}

/// Why [`Books::ingest`] did not take a receipt.
#[derive(Debug, thiserror::Error)]
pub enum BooksError {
    /// The ledger's rules refused it (a duplicate, a third receipt for a request, ...).
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// It belongs to an epoch these books archived and pruned, or answers a request whose
    /// receipt was pruned: those books are closed for good.
    #[error("receipt {receipt} {why}")]
    Pruned {
        /// The receipt refused.
        receipt: MessageId,
        /// Which: its epoch, or its request.
        why: String,
    },
    /// The store failed (disk full, I/O error, corruption): nothing of it was written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What [`Books::check`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Receipts read.
    pub receipts: u64,
    /// Receipts that do not decode, fail their signatures (when checked), or are stored under
    /// another id: `(accepted_ms, id, why)`.
    pub bad_receipts: Vec<(u64, MessageId, String)>,
    /// Index entries that disagree with the receipts (missing, extra or wrong).
    pub index_errors: u64,
    /// Tallies that differ from a recomputation: `(key, stored, recomputed)`.
    pub tally_errors: Vec<(Vec<u8>, Tally, Tally)>,
}

impl CheckReport {
    /// Whether everything agreed.
    pub fn is_clean(&self) -> bool {
        self.bad_receipts.is_empty() && self.index_errors == 0 && self.tally_errors.is_empty()
    }
}

/// An epoch whose receipts were archived (`dpow ledger prune`) and deleted from the books.
/// Its tallies stay, so balances and its payout stay exact; its digest and receipt count
/// stay, so peers see the same books; the ids of its requests stay (64 bytes each), so no
/// request is ever paid twice; and receipts that prove an equivocation stay as evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrunedEpoch {
    /// The epoch.
    pub epoch: u64,
    /// Its digest when it was pruned.
    pub digest: [u8; 32],
    /// Receipts it held then (evidence included).
    pub receipts: u64,
    /// False while its receipts are being deleted (a prune interrupted by a crash, which
    /// [`Books::open`] finishes).
    pub done: bool,
    /// Never held here: a light ledger adopted it from a registrar's checkpoint
    /// ([`Books::adopt`]), so its tallies are the checkpoint's (credits per payout account
    /// and unclaimed; none per worker or service, no receipt count per account).
    pub adopted: bool,
}

impl PrunedEpoch {
    fn key(epoch: u64) -> Vec<u8> {
        [PRUNED, &epoch.to_be_bytes()[..]].concat()
    }

    fn encode(&self) -> Vec<u8> {
        let mut v = self.digest.to_vec();
        v.extend_from_slice(&self.receipts.to_be_bytes());
        v.push(u8::from(self.done));
        v.push(u8::from(self.adopted));
        v
    }

    /// 41 bytes as first written (pruned here), 42 since a light ledger may adopt epochs.
    fn decode(epoch: u64, v: &[u8]) -> Option<PrunedEpoch> {
        if v.len() != 41 && v.len() != 42 {
            return None;
        }
        Some(PrunedEpoch {
            epoch,
            digest: v[..32].try_into().ok()?,
            receipts: u64_of(&v[32..40])?,
            done: v[40] == 1,
            adopted: v.get(41) == Some(&1),
        })
    }
}

/// What [`Books::prune`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Receipts deleted.
    pub deleted: u64,
    /// Receipts kept as evidence of an equivocation.
    pub kept: u64,
}

/// The ledger on disk. Reads take `&self`; only [`Books::ingest`] and the repairs change it.
#[derive(Clone, Debug)]
pub struct Books {
    store: Arc<Store>,
    epoch_ms: u64,
    net: NetworkId,
}

impl Books {
    /// The books in `store`, for epochs of `epoch_ms` on network `net`. A store whose indexes
    /// were never built (one written by an older dpow) or were built for another epoch length
    /// has them built now from its receipts (logged, with progress); otherwise nothing is read
    /// but a few tallies ([`Books::quick_check`]).
    pub fn open(store: Arc<Store>, epoch_ms: u64, net: NetworkId) -> Result<Books, StoreError> {
        let books = Books {
            store,
            epoch_ms: epoch_ms.max(1),
            net,
        };
        let indexed = books.store.meta(INDEXED)?.and_then(|v| u64_of(&v));
        if indexed != Some(books.epoch_ms) {
            if books.store.receipts().next().is_some() {
                tracing::info!(
                    "the ledger's indexes are missing or were built for other epochs: building them from the stored receipts"
                );
            }
            books.rebuild(false, &|_, _| {})?;
        }
        for p in books.pruned_epochs()? {
            if !p.done {
                tracing::info!(
                    epoch = p.epoch,
                    "finishing the prune of an epoch that a stop interrupted"
                );
                books.prune(p.epoch, PRUNE_CHUNK, &|_| {})?;
            }
        }
        Ok(books)
    }

    /// [`Books::open`] for a starting node: with `verify` (`dpow node --verify-store`) every
    /// stored receipt's signatures are checked again, in parallel, and the indexes rebuilt
    /// without the receipts that fail.
    pub fn open_for_node(
        store: Arc<Store>,
        epoch_ms: u64,
        net: NetworkId,
        verify: bool,
    ) -> Result<Books, StoreError> {
        let t0 = std::time::Instant::now();
        let books = Books::open(store, epoch_ms, net)?;
        if verify {
            books.rebuild(true, &|done, total| {
                tracing::info!(done, total, "verifying the stored receipts");
            })?;
        }
        tracing::info!(
            receipts = books.len()?,
            signatures_checked = verify,
            ms = t0.elapsed().as_millis() as u64,
            "ledger opened"
        );
        Ok(books)
    }

    /// The length of an epoch, in milliseconds.
    pub fn epoch_ms(&self) -> u64 {
        self.epoch_ms
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Make every write so far durable (sync the write-ahead log).
    pub fn sync(&self) -> Result<(), StoreError> {
        Ok(self.store.db().flush_wal(true)?)
    }

    fn unsynced() -> WriteOptions {
        let mut w = WriteOptions::default();
        w.set_sync(false);
        w
    }

    fn tally(&self, key: &[u8]) -> Result<Tally, StoreError> {
        let db = self.store.db();
        match db.get_pinned_cf(self.store.cf(CF_TALLIES), key)? {
            None => Ok(Tally::default()),
            Some(v) => {
                Tally::decode(&v).ok_or_else(|| corrupt(CF_TALLIES, "a tally of the wrong length"))
            }
        }
    }

    /// Every tally whose key starts with `prefix`, the prefix cut off, zero tallies skipped.
    fn tallies(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Tally)>, StoreError> {
        let db = self.store.db();
        let mut out = Vec::new();
        let it = db.iterator_cf(
            self.store.cf(CF_TALLIES),
            IteratorMode::From(prefix, Direction::Forward),
        );
        for item in it {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            let t = Tally::decode(&v)
                .ok_or_else(|| corrupt(CF_TALLIES, "a tally of the wrong length"))?;
            if t != Tally::default() {
                out.push((k[prefix.len()..].to_vec(), t));
            }
        }
        Ok(out)
    }

    /// When receipt `id` was accepted, if it is held.
    fn accepted_ms(&self, id: &MessageId) -> Result<Option<u64>, StoreError> {
        match self
            .store
            .db()
            .get_pinned_cf(self.store.cf(CF_RECEIPT_IDS), id.0)?
        {
            None => Ok(None),
            Some(v) => u64_of(&v)
                .map(Some)
                .ok_or_else(|| corrupt(CF_RECEIPT_IDS, "a time of the wrong length")),
        }
    }

    /// Whether receipt `id` is held.
    pub fn contains(&self, id: &MessageId) -> Result<bool, StoreError> {
        Ok(self.accepted_ms(id)?.is_some())
    }

    /// Whether each of `ids` is held ([`Books::contains`] of each), in one batched read:
    /// what a catch-up asks of every page of a peer's ids (4,096 at most, ascending, which
    /// RocksDB reads fastest).
    pub fn contains_each(&self, ids: &[MessageId]) -> Result<Vec<bool>, StoreError> {
        let ascending = ids.windows(2).all(|w| w[0] < w[1]);
        self.store
            .db()
            .batched_multi_get_cf(
                self.store.cf(CF_RECEIPT_IDS),
                ids.iter().map(|id| &id.0),
                ascending,
            )
            .into_iter()
            .map(|r| Ok(r?.is_some()))
            .collect()
    }

    /// The envelope bytes of a held receipt.
    pub fn get_bytes(&self, id: &MessageId) -> Result<Option<Vec<u8>>, StoreError> {
        self.store.receipt_bytes(id)
    }

    /// A held receipt, decoded (its signatures were checked before it was written).
    pub fn get(&self, id: &MessageId) -> Result<Option<Signed<Receipt>>, StoreError> {
        let Some(bytes) = self.get_bytes(id)? else {
            return Ok(None);
        };
        let r = Unverified::<Receipt>::decode(&bytes, &self.net)
            .map_err(|e| corrupt(CF_RECEIPTS, format!("receipt {id}: {e}")))?
            .trust_stored();
        if r.id() != *id {
            return Err(corrupt(
                CF_RECEIPTS,
                format!("stored under {id} but its id is {}", r.id()),
            ));
        }
        Ok(Some(r))
    }

    /// The ids held for `request`, ascending (none, one, or two for an equivocation).
    fn held_for(&self, request: &MessageId) -> Result<Vec<MessageId>, StoreError> {
        let Some(v) = self
            .store
            .db()
            .get_pinned_cf(self.store.cf(CF_REQUESTS), request.0)?
        else {
            return Ok(Vec::new());
        };
        if v.is_empty() || v.len() % 32 != 0 || v.len() > 64 {
            return Err(corrupt(CF_REQUESTS, format!("{} bytes of ids", v.len())));
        }
        Ok(v.chunks(32).filter_map(id_of).collect())
    }

    /// The receipt that counts for `request`, if any is held.
    pub fn counted_for(&self, request: &MessageId) -> Result<Option<MessageId>, StoreError> {
        Ok(self.held_for(request)?.first().copied())
    }

    /// Take in a verified receipt, as [`dpow_protocol::ledger::Ledger::ingest`] does, in one
    /// atomic write (not yet synced: see [`Books::sync`]). A receipt dropped from an
    /// equivocation pair is deleted in the same write.
    pub fn ingest(&mut self, receipt: &Signed<Receipt>) -> Result<Ingested, BooksError> {
        let mut g = Group::default();
        let outcome = self.stage(&mut g, receipt)?;
        self.write_group(g).map_err(StoreError::from)?;
        Ok(outcome)
    }

    /// Take in verified receipts, in order, with the answer [`Books::ingest`] would give each
    /// one after the other, in as few atomic writes as they allow: receipts go into one write
    /// until one names a receipt or a request already in it (a copy, an equivocation), which
    /// starts the next; the write's tallies are summed per key first, so a batch of receipts
    /// of one epoch and service adds to those tallies once. A receipt is answered `Ok` only
    /// once its write is in (not yet synced: see [`Books::sync`]); a failed write answers
    /// every receipt in it with the store's error, and nothing of them is held.
    pub fn ingest_all(
        &mut self,
        receipts: &[Signed<Receipt>],
    ) -> Vec<Result<Ingested, BooksError>> {
        let mut out: Vec<Result<Ingested, BooksError>> = Vec::with_capacity(receipts.len());
        let mut g = Group::default();
        // Indexes into `out` of the receipts staged in `g`.
        let mut staged: Vec<usize> = Vec::new();
        for r in receipts {
            if g.touches(r) {
                self.settle(std::mem::take(&mut g), &mut staged, &mut out);
            }
            let answer = self.stage(&mut g, r);
            if answer.is_ok() {
                staged.push(out.len());
            }
            out.push(answer);
        }
        self.settle(g, &mut staged, &mut out);
        out
    }

    /// Write group `g`; if the write fails, every receipt staged in it (`staged`, indexes
    /// into `out`) is answered with the store's error instead.
    fn settle(&self, g: Group, staged: &mut Vec<usize>, out: &mut [Result<Ingested, BooksError>]) {
        if let Err(e) = self.write_group(g) {
            for &i in staged.iter() {
                out[i] = Err(BooksError::Store(StoreError::Db(e.clone())));
            }
        }
        staged.clear();
    }

    /// Write a group of staged receipts in one atomic batch (RocksDB's error is the only one).
    fn write_group(&self, g: Group) -> Result<(), rocksdb::Error> {
        if g.ids.is_empty() {
            return Ok(());
        }
        let Group {
            mut batch, tallies, ..
        } = g;
        let cf = self.store.cf(CF_TALLIES);
        for (k, t) in tallies.0 {
            if t != Tally::default() {
                batch.merge_cf(cf, k, t.encode());
            }
        }
        self.store.db().write_opt(batch, &Self::unsynced())
    }

    /// Check a receipt as [`Books::ingest`] does and stage its writes in `g`, whose receipts
    /// and requests it must not touch ([`Group::touches`]): the checks read the disk only.
    fn stage(&self, g: &mut Group, receipt: &Signed<Receipt>) -> Result<Ingested, BooksError> {
        let id = receipt.id();
        if self.contains(&id)? {
            return Err(LedgerError::Duplicate { receipt: id }.into());
        }
        let e = epoch_of(receipt.payload().accepted_ms, self.epoch_ms);
        if self.pruned_epoch(e)?.is_some() {
            return Err(BooksError::Pruned {
                receipt: id,
                why: format!("is of epoch {e}, archived and pruned here"),
            });
        }
        self.take_into(g, receipt, true, true)
    }

    /// [`Books::stage`] written at once, without the duplicate check (a rebuild's).
    fn take(
        &self,
        receipt: &Signed<Receipt>,
        store_receipt: bool,
        tally: bool,
    ) -> Result<Ingested, BooksError> {
        let mut g = Group::default();
        let outcome = self.take_into(&mut g, receipt, store_receipt, tally)?;
        self.write_group(g).map_err(StoreError::from)?;
        Ok(outcome)
    }

    /// Stage a receipt's writes in `g` without the duplicate check, the receipt itself only
    /// if `store_receipt` (a rebuild reads it from where it already is) and its tallies only
    /// if `tally` (a pruned epoch's tallies are kept as they were). Nothing is staged unless
    /// the receipt is taken.
    fn take_into(
        &self,
        g: &mut Group,
        receipt: &Signed<Receipt>,
        store_receipt: bool,
        tally: bool,
    ) -> Result<Ingested, BooksError> {
        let id = receipt.id();
        let r = receipt.payload();
        r.check().map_err(LedgerError::Invalid)?;
        let request = r.request.id();
        let service = receipt.signer();
        let held = self.held_for(&request)?;
        for h in &held {
            if self.accepted_ms(h)?.is_none() {
                return Err(BooksError::Pruned {
                    receipt: id,
                    why: format!(
                        "answers request {request}, whose receipt {h} was archived and pruned here"
                    ),
                });
            }
        }
        let admission = admit(&held, id).ok_or(LedgerError::AlreadyProven {
            service,
            request,
            receipt: id,
        })?;
        // Every read first: once the first write is staged, nothing can fail.
        let gone = match admission.dropped {
            // The higher of two held: evidence only, never counted.
            Some(gone) => Some(Dropped {
                id: gone,
                accepted_ms: self.accepted_ms(&gone)?.ok_or_else(|| {
                    corrupt(CF_REQUESTS, format!("names {gone}, which is not held"))
                })?,
            }),
            None => None,
        };
        let uncounted = match admission.uncounted {
            Some(before) if tally && admission.evidence.is_some() => {
                Some(self.get(&before)?.ok_or_else(|| {
                    corrupt(CF_REQUESTS, format!("names {before}, which is not held"))
                })?)
            }
            _ => None,
        };
        let e = epoch_of(r.accepted_ms, self.epoch_ms);
        let ms = r.accepted_ms.to_be_bytes();
        g.ids.insert(id);
        g.requests.insert(request);
        let b = &mut g.batch;
        if store_receipt {
            b.put_cf(
                self.store.cf(CF_RECEIPTS),
                Store::receipt_key(r.accepted_ms, &id),
                receipt.bytes(),
            );
        }
        b.put_cf(self.store.cf(CF_RECEIPT_IDS), id.0, ms);
        b.put_cf(self.store.cf(CF_EPOCH_IDS), epoch_id_key(e, &id), ms);
        if tally {
            g.tallies.add(held_tallies(e, 1));
        }
        let mut now_held: Vec<MessageId> = held
            .iter()
            .copied()
            .filter(|h| Some(*h) != admission.dropped)
            .chain([id])
            .collect();
        now_held.sort_unstable();
        let ids: Vec<u8> = now_held.iter().flat_map(|i| i.0).collect();
        g.batch.put_cf(self.store.cf(CF_REQUESTS), request.0, ids);
        if let Some(d) = &gone {
            let b = &mut g.batch;
            b.delete_cf(
                self.store.cf(CF_RECEIPTS),
                Store::receipt_key(d.accepted_ms, &d.id),
            );
            b.delete_cf(self.store.cf(CF_RECEIPT_IDS), d.id.0);
            let gone_e = epoch_of(d.accepted_ms, self.epoch_ms);
            b.delete_cf(self.store.cf(CF_EPOCH_IDS), epoch_id_key(gone_e, &d.id));
            if tally {
                g.tallies.add(held_tallies(gone_e, -1));
            }
        }
        Ok(match admission.evidence {
            None => {
                if tally {
                    g.tallies.add(counted_tallies(self.epoch_ms, r, 1));
                }
                Ingested::Counted { request }
            }
            Some(evidence) => {
                if let Some(old) = uncounted {
                    g.tallies
                        .add(counted_tallies(self.epoch_ms, old.payload(), -1));
                    g.tallies.add(counted_tallies(self.epoch_ms, r, 1));
                }
                let mut k = [0u8; 64];
                k[..32].copy_from_slice(&service.0);
                k[32..].copy_from_slice(&request.0);
                g.batch.put_cf(self.store.cf(CF_EQUIVOCATIONS), k, []);
                Ingested::Equivocation {
                    proof: Equivocation {
                        service,
                        request,
                        counted: admission.counted,
                        evidence,
                    },
                    dropped: gone,
                }
            }
        })
    }

    /// How many receipts are held, evidence included.
    pub fn len(&self) -> Result<u64, StoreError> {
        Ok(self.tally(&tally_key(kind::HELD, None, None))?.receipts())
    }

    /// Whether no receipt is held.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }

    /// The epochs holding receipts, ascending, with how many each (evidence included).
    pub fn epochs(&self) -> Result<Vec<(u64, u64)>, StoreError> {
        Ok(self
            .tallies(&[kind::EPOCH_HELD])?
            .into_iter()
            .filter_map(|(k, t)| Some((u64_of(&k)?, t.receipts())))
            .filter(|(_, n)| *n > 0)
            .collect())
    }

    /// The ids of every receipt held in `epoch`, ascending; none for a pruned epoch (its
    /// digest stays: [`Books::epoch_digest`]).
    pub fn receipt_ids_in_epoch(&self, epoch: u64) -> Result<Vec<MessageId>, StoreError> {
        if self.pruned_epoch(epoch)?.is_some() {
            return Ok(Vec::new());
        }
        self.ids_in_epoch(epoch)
    }

    /// Up to `limit` ids of `epoch`'s receipts, ascending, after `after` (from the first
    /// without), and whether more follow: one page read straight from the index, so a page
    /// deep into a big epoch costs what the first one does. None for a pruned epoch.
    pub fn receipt_ids_page(
        &self,
        epoch: u64,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<(Vec<MessageId>, bool), StoreError> {
        if self.pruned_epoch(epoch)?.is_some() {
            return Ok((Vec::new(), false));
        }
        let from = match &after {
            Some(a) => epoch_id_key(epoch, a).to_vec(),
            None => epoch.to_be_bytes().to_vec(),
        };
        let mut out = Vec::new();
        for id in self.epoch_ids_from(epoch, &from) {
            let id = id?;
            if Some(id) == after {
                continue;
            }
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push(id);
        }
        Ok((out, false))
    }

    /// Every id indexed in `epoch`, pruned or not.
    fn ids_in_epoch(&self, epoch: u64) -> Result<Vec<MessageId>, StoreError> {
        self.epoch_ids_from(epoch, &epoch.to_be_bytes()).collect()
    }

    /// The ids indexed in `epoch` from index key `from` on, ascending.
    fn epoch_ids_from<'a>(
        &'a self,
        epoch: u64,
        from: &[u8],
    ) -> impl Iterator<Item = Result<MessageId, StoreError>> + 'a {
        let prefix = epoch.to_be_bytes();
        self.store
            .db()
            .iterator_cf(
                self.store.cf(CF_EPOCH_IDS),
                IteratorMode::From(from, Direction::Forward),
            )
            // Errors go on, to be reported.
            .take_while(move |item| match item {
                Ok((k, _)) => k.starts_with(&prefix),
                Err(_) => true,
            })
            .map(|item| {
                let (k, _) = item?;
                id_of(&k[8..]).ok_or_else(|| corrupt(CF_EPOCH_IDS, "a key of the wrong length"))
            })
    }

    /// The digest of `epoch` ([`digest_of_ids`] of its receipt ids; a pruned epoch's as it
    /// was when pruned).
    pub fn epoch_digest(&self, epoch: u64) -> Result<[u8; 32], StoreError> {
        if let Some(p) = self.pruned_epoch(epoch)? {
            return Ok(p.digest);
        }
        Ok(digest_of_ids(
            self.epoch_ms,
            epoch,
            &self.receipt_ids_in_epoch(epoch)?,
        ))
    }

    /// The same books, to read from another thread (the store is shared; the caller keeps
    /// writing through its own).
    fn reader(&self) -> Books {
        Books {
            store: self.store.clone(),
            epoch_ms: self.epoch_ms,
            net: self.net,
        }
    }

    /// The envelope bytes of those of `ids` held, as a job for another thread (two look-ups
    /// each); a read that fails is logged and left out.
    pub fn receipts_job(
        &self,
        ids: Vec<MessageId>,
    ) -> impl FnOnce() -> Vec<Vec<u8>> + Send + 'static {
        let books = self.reader();
        move || {
            ids.iter()
                .filter_map(|id| {
                    books.get_bytes(id).unwrap_or_else(|e| {
                        tracing::error!(receipt = %id, "reading a receipt: {e}");
                        None
                    })
                })
                .collect()
        }
    }

    /// [`Books::receipt_ids_page`] as a job for another thread (it walks the epoch's index).
    pub fn receipt_ids_page_job(
        &self,
        epoch: u64,
        after: Option<MessageId>,
        limit: usize,
    ) -> impl FnOnce() -> Result<(Vec<MessageId>, bool), StoreError> + Send + 'static {
        let books = self.reader();
        move || books.receipt_ids_page(epoch, after, limit)
    }

    /// [`Books::epoch_digest`] as a job for another thread (it reads every id of the epoch).
    pub fn epoch_digest_job(
        &self,
        epoch: u64,
    ) -> impl FnOnce() -> Result<[u8; 32], StoreError> + Send + 'static {
        let books = self.reader();
        move || books.epoch_digest(epoch)
    }

    /// Credits earned in `epoch` per payout account (the input to a payout).
    pub fn claims_in_epoch(&self, epoch: u64) -> Result<Claims, StoreError> {
        let mut out = Claims::default();
        for (k, t) in self.tallies(&tally_key(kind::ACCOUNT, Some(epoch), None))? {
            let a = id_of(&k)
                .and_then(|a| NanoAccount::from_bytes(a.0).ok())
                .ok_or_else(|| corrupt(CF_TALLIES, "an account key that is no account"))?;
            out.accounts.insert(a, t.credits());
        }
        out.unclaimed = self
            .tally(&tally_key(kind::UNCLAIMED, Some(epoch), None))?
            .credits();
        Ok(out)
    }

    fn per_key(&self, prefix: &[u8]) -> Result<BTreeMap<PublicKey, Tally>, StoreError> {
        self.tallies(prefix)?
            .into_iter()
            .map(|(k, t)| {
                let k =
                    id_of(&k).ok_or_else(|| corrupt(CF_TALLIES, "a key of the wrong length"))?;
                Ok((PublicKey(k.0), t))
            })
            .collect()
    }

    /// Credits and counted results per payout account over every epoch.
    pub fn account_credits(&self) -> Result<BTreeMap<NanoAccount, (u128, u64)>, StoreError> {
        let mut out: BTreeMap<NanoAccount, (u128, u64)> = BTreeMap::new();
        for (k, t) in self.tallies(&[kind::ACCOUNT])? {
            let a = k
                .get(8..)
                .and_then(id_of)
                .and_then(|a| NanoAccount::from_bytes(a.0).ok())
                .ok_or_else(|| corrupt(CF_TALLIES, "an account key that is no account"))?;
            let e = out.entry(a).or_default();
            e.0 = e.0.saturating_add(t.credits());
            e.1 = e.1.saturating_add(t.receipts());
        }
        Ok(out)
    }

    /// Credits earned by each worker key in `epoch`.
    pub fn earned_in_epoch(&self, epoch: u64) -> Result<BTreeMap<PublicKey, u128>, StoreError> {
        Ok(self
            .per_key(&tally_key(kind::WORKER_EPOCH, Some(epoch), None))?
            .into_iter()
            .map(|(k, t)| (k, t.credits()))
            .collect())
    }

    /// Credits spent by each service in `epoch`.
    pub fn spent_in_epoch(&self, epoch: u64) -> Result<BTreeMap<PublicKey, u128>, StoreError> {
        Ok(self
            .per_key(&tally_key(kind::SERVICE_EPOCH, Some(epoch), None))?
            .into_iter()
            .map(|(k, t)| (k, t.credits()))
            .collect())
    }

    /// Credits `service` has spent in all.
    pub fn spent(&self, service: &PublicKey) -> Result<u128, StoreError> {
        Ok(self
            .tally(&tally_key(kind::SERVICE, None, Some(&service.0)))?
            .credits())
    }

    /// Credits `worker` has earned in all.
    pub fn earned(&self, worker: &PublicKey) -> Result<u128, StoreError> {
        Ok(self
            .tally(&tally_key(kind::WORKER, None, Some(&worker.0)))?
            .credits())
    }

    /// Every proven equivocation, by service then request.
    pub fn equivocations(&self) -> Result<Vec<Equivocation>, StoreError> {
        self.equivocations_from(&[])
    }

    fn equivocations_from(&self, prefix: &[u8]) -> Result<Vec<Equivocation>, StoreError> {
        let mut out = Vec::new();
        let it = self.store.db().iterator_cf(
            self.store.cf(CF_EQUIVOCATIONS),
            IteratorMode::From(prefix, Direction::Forward),
        );
        for item in it {
            let (k, _) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            let (Some(s), Some(request)) =
                (k.get(..32).and_then(id_of), k.get(32..).and_then(id_of))
            else {
                return Err(corrupt(CF_EQUIVOCATIONS, "a key of the wrong length"));
            };
            let held = self.held_for(&request)?;
            if let [counted, evidence] = held[..] {
                out.push(Equivocation {
                    service: PublicKey(s.0),
                    request,
                    counted,
                    evidence,
                });
            }
        }
        Ok(out)
    }

    /// The services proven to have signed two receipts for one request.
    pub fn flagged_services(&self) -> Result<BTreeSet<PublicKey>, StoreError> {
        Ok(self
            .equivocations()?
            .into_iter()
            .map(|e| e.service)
            .collect())
    }

    /// One service's account.
    pub fn service_balance(
        &self,
        registry: &Registry,
        service: &PublicKey,
    ) -> Result<ServiceBalance, StoreError> {
        let t = self.tally(&tally_key(kind::SERVICE, None, Some(&service.0)))?;
        Ok(ServiceBalance {
            granted: registry.service(service).map_or(Credits(0), |s| s.granted),
            spent: t.credits(),
            receipts: t.receipts(),
            equivocations: self.equivocations_from(&service.0)?.len() as u64,
        })
    }

    /// Every account, from the tallies and the registry's grants.
    pub fn balances(&self, registry: &Registry) -> Result<Balances, StoreError> {
        let mut out = Balances::default();
        for (key, info) in registry.services() {
            out.services.entry(*key).or_default().granted = info.granted;
        }
        for (k, t) in self.per_key(&[kind::SERVICE])? {
            let s = out.services.entry(k).or_default();
            s.spent = t.credits();
            s.receipts = t.receipts();
        }
        for (k, t) in self.per_key(&[kind::WORKER])? {
            let w = out.workers.entry(k).or_default();
            w.earned = t.credits();
            w.receipts = t.receipts();
        }
        for (k, t) in self.tallies(&[kind::WORKER_EPOCH])? {
            let (Some(e), Some(w)) = (k.get(..8).and_then(u64_of), k.get(8..).and_then(id_of))
            else {
                return Err(corrupt(CF_TALLIES, "a key of the wrong length"));
            };
            out.workers
                .entry(PublicKey(w.0))
                .or_default()
                .by_epoch
                .insert(e, t.credits());
        }
        for e in self.equivocations()? {
            out.services.entry(e.service).or_default().equivocations += 1;
        }
        Ok(out)
    }

    /// Counted receipts accepted at or after `since_ms`, in time order.
    pub fn counted_since(&self, since_ms: u64) -> Result<Vec<Signed<Receipt>>, StoreError> {
        let mut out = Vec::new();
        for s in self.store.receipts_between(since_ms, u64::MAX) {
            let r = decode_stored(&s?, &self.net, None).map_err(|why| corrupt(CF_RECEIPTS, why))?;
            if self.counted_for(&r.payload().request.id())? == Some(r.id()) {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Every held receipt in an in-memory [`Ledger`] (reads them all).
    pub fn to_memory(&self) -> Result<Ledger, StoreError> {
        let mut l = Ledger::new(self.epoch_ms);
        for s in self.store.receipts() {
            let r = decode_stored(&s?, &self.net, None).map_err(|why| corrupt(CF_RECEIPTS, why))?;
            // The stored set passed these rules once; held in time order, it passes again.
            if let Err(e) = l.ingest(r) {
                tracing::error!("stored receipt not taken into the snapshot: {e}");
            }
        }
        Ok(l)
    }

    /// Walk every stored receipt in time order with its decoding ([`decode_stored`], done in
    /// parallel chunks of 4,096), calling `progress(done, total)` every 65,536. Returns how
    /// many were read.
    fn each_stored(
        &self,
        signatures: bool,
        progress: &dyn Fn(u64, u64),
        mut f: impl FnMut(
            &super::StoredReceipt,
            Result<Signed<Receipt>, String>,
        ) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        use rayon::prelude::*;
        let total = self
            .store
            .db()
            .property_int_value_cf(self.store.cf(CF_RECEIPTS), "rocksdb.estimate-num-keys")?
            .unwrap_or(0);
        let mut done = 0u64;
        let keys = signatures.then(SignatureCache::new);
        let mut stored = self.store.receipts().peekable();
        while stored.peek().is_some() {
            let chunk: Vec<super::StoredReceipt> =
                stored.by_ref().take(4096).collect::<Result<_, _>>()?;
            let decoded: Vec<_> = chunk
                .par_iter()
                .map(|s| decode_stored(s, &self.net, keys.as_ref()))
                .collect();
            for (s, r) in chunk.iter().zip(decoded) {
                f(s, r)?;
                done += 1;
                if done.is_multiple_of(65_536) {
                    progress(done, total.max(done));
                }
            }
        }
        Ok(done)
    }

    /// Every pruned epoch, ascending.
    pub fn pruned_epochs(&self) -> Result<Vec<PrunedEpoch>, StoreError> {
        let db = self.store.db();
        let mut out = Vec::new();
        let it = db.iterator_cf(
            self.store.cf(CF_META),
            IteratorMode::From(PRUNED, Direction::Forward),
        );
        for item in it {
            let (k, v) = item?;
            if !k.starts_with(PRUNED) {
                break;
            }
            let p = u64_of(&k[PRUNED.len()..])
                .and_then(|e| PrunedEpoch::decode(e, &v))
                .ok_or_else(|| corrupt(CF_META, "a pruned epoch of the wrong length"))?;
            out.push(p);
        }
        Ok(out)
    }

    /// `epoch`, if pruned (or being pruned).
    pub fn pruned_epoch(&self, epoch: u64) -> Result<Option<PrunedEpoch>, StoreError> {
        match self
            .store
            .db()
            .get_pinned_cf(self.store.cf(CF_META), PrunedEpoch::key(epoch))?
        {
            None => Ok(None),
            Some(v) => PrunedEpoch::decode(epoch, &v)
                .map(Some)
                .ok_or_else(|| corrupt(CF_META, "a pruned epoch of the wrong length")),
        }
    }

    fn set_pruned(&self, p: &PrunedEpoch) -> Result<(), StoreError> {
        self.store
            .put_synced(CF_META, PrunedEpoch::key(p.epoch), p.encode())
    }

    /// Delete `epoch`'s receipts from the books, keeping its tallies, its digest and count, the
    /// ids its requests were answered by, and receipts that prove an equivocation (see
    /// [`PrunedEpoch`]). The caller has archived them first and made sure the epoch is final
    /// and checkpointed (`dpow ledger prune`). From the first write on the epoch counts as
    /// pruned: nothing more is taken into it. Receipts go in atomic batches of `chunk`; a
    /// prune that a crash interrupts is finished by [`Books::open`] (or by calling this again).
    /// `progress(deleted)` is called after each batch.
    pub fn prune(
        &self,
        epoch: u64,
        chunk: usize,
        progress: &dyn Fn(u64),
    ) -> Result<PruneReport, StoreError> {
        let p = match self.pruned_epoch(epoch)? {
            Some(p) if p.done => return Ok(PruneReport::default()),
            Some(p) => p,
            None => {
                let p = PrunedEpoch {
                    epoch,
                    digest: self.epoch_digest(epoch)?,
                    receipts: self
                        .tally(&tally_key(kind::EPOCH_HELD, Some(epoch), None))?
                        .receipts(),
                    done: false,
                    adopted: false,
                };
                self.set_pruned(&p)?;
                p
            }
        };
        let db = self.store.db();
        let mut report = PruneReport::default();
        let ids = self.ids_in_epoch(epoch)?;
        for page in ids.chunks(chunk.max(1)) {
            let mut b = WriteBatch::default();
            for id in page {
                let Some(ms) = self.accepted_ms(id)? else {
                    // An epoch index entry without its receipt: nothing to keep.
                    b.delete_cf(self.store.cf(CF_EPOCH_IDS), epoch_id_key(epoch, id));
                    continue;
                };
                let key = Store::receipt_key(ms, id);
                if let Some(bytes) = db.get_cf(self.store.cf(CF_RECEIPTS), key)? {
                    let stored = super::StoredReceipt {
                        accepted_ms: ms,
                        id: *id,
                        bytes,
                    };
                    let r = decode_stored(&stored, &self.net, None)
                        .map_err(|why| corrupt(CF_RECEIPTS, why))?;
                    if self.held_for(&r.payload().request.id())?.len() > 1 {
                        report.kept += 1;
                        continue;
                    }
                }
                b.delete_cf(self.store.cf(CF_RECEIPTS), key);
                b.delete_cf(self.store.cf(CF_RECEIPT_IDS), id.0);
                b.delete_cf(self.store.cf(CF_EPOCH_IDS), epoch_id_key(epoch, id));
                report.deleted += 1;
            }
            db.write_opt(b, &Self::unsynced())?;
            progress(report.deleted);
        }
        self.sync()?;
        self.set_pruned(&PrunedEpoch { done: true, ..p })?;
        Ok(report)
    }

    /// Hold final epoch `cp.epoch` as the registrar checkpoint `cp` states it, without its
    /// receipts (a light ledger; the caller has checked `cp`'s signature, that it is the
    /// network's registrar's, and that the epoch is final). It is kept as a pruned epoch
    /// ([`PrunedEpoch::adopted`]): its digest and count are the checkpoint's, so peers see the
    /// same books and catch-up takes none of its receipts; its credits per payout account
    /// and unclaimed credits are the checkpoint's, so balances per account and its payout
    /// are exact. What a checkpoint does not state is not known here: credits per worker key
    /// and per service, receipts per account, which requests the epoch answered. Written
    /// at once and synced. `false` (nothing written) for an epoch these books hold receipts
    /// of or pruned already, or a checkpoint in other terms (another epoch length, no
    /// receipts, a figure out of range).
    pub fn adopt(&self, cp: &Checkpoint) -> Result<bool, StoreError> {
        let e = cp.epoch;
        let held = self.tally(&tally_key(kind::EPOCH_HELD, Some(e), None))?;
        let Ok(receipts) = i64::try_from(cp.receipts) else {
            return Ok(false);
        };
        if cp.epoch_ms != self.epoch_ms
            || receipts == 0
            || held.receipts() != 0
            || self.pruned_epoch(e)?.is_some()
        {
            return Ok(false);
        }
        let count = Tally {
            credits: 0,
            receipts,
        };
        let mut tallies = vec![
            (tally_key(kind::EPOCH_HELD, Some(e), None), count),
            (tally_key(kind::HELD, None, None), count),
        ];
        let claims = cp
            .credits
            .iter()
            .map(|(a, c)| (tally_key(kind::ACCOUNT, Some(e), Some(a.as_bytes())), *c))
            .chain([(tally_key(kind::UNCLAIMED, Some(e), None), cp.unclaimed)]);
        for (k, c) in claims.filter(|(_, c)| *c > 0) {
            let Ok(credits) = i128::try_from(c) else {
                return Ok(false);
            };
            tallies.push((
                k,
                Tally {
                    credits,
                    receipts: 0,
                },
            ));
        }
        let mut b = WriteBatch::default();
        for (k, t) in tallies {
            b.merge_cf(self.store.cf(CF_TALLIES), k, t.encode());
        }
        let marker = PrunedEpoch {
            epoch: e,
            digest: cp.digest,
            receipts: cp.receipts,
            done: true,
            adopted: true,
        };
        b.put_cf(self.store.cf(CF_META), PrunedEpoch::key(e), marker.encode());
        self.store.db().write_opt(b, &Self::unsynced())?;
        self.sync()?;
        Ok(true)
    }

    /// The stored tallies of every pruned epoch, and what they add to the all-time tallies
    /// (per worker, per service, held): what a rebuild keeps and a check takes as given, since
    /// the receipts behind them are gone.
    fn pruned_tallies(&self) -> Result<Vec<(Vec<u8>, Tally)>, StoreError> {
        let mut out = Vec::new();
        for p in self.pruned_epochs()? {
            for k in [
                kind::EPOCH_HELD,
                kind::ACCOUNT,
                kind::UNCLAIMED,
                kind::WORKER_EPOCH,
                kind::SERVICE_EPOCH,
            ] {
                let prefix = tally_key(k, Some(p.epoch), None);
                for (rest, t) in self.tallies(&prefix)? {
                    let total = match (k, id_of(&rest)) {
                        (kind::EPOCH_HELD, _) => Some(tally_key(kind::HELD, None, None)),
                        (kind::WORKER_EPOCH, Some(w)) => {
                            Some(tally_key(kind::WORKER, None, Some(&w.0)))
                        }
                        (kind::SERVICE_EPOCH, Some(s)) => {
                            Some(tally_key(kind::SERVICE, None, Some(&s.0)))
                        }
                        _ => None,
                    };
                    out.push(([prefix.as_slice(), &rest].concat(), t));
                    if let Some(total) = total {
                        out.push((total, t));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Delete the request entries that name a held receipt (a rebuild makes them again), and
    /// keep those of pruned receipts; in batches, before the receipt index goes.
    fn forget_held_requests(&self) -> Result<(), StoreError> {
        let db = self.store.db();
        let mut b = WriteBatch::default();
        for item in db.iterator_cf(self.store.cf(CF_REQUESTS), IteratorMode::Start) {
            let (k, v) = item?;
            let mut any_held = false;
            for id in v.chunks(32).filter_map(id_of) {
                any_held |= self.accepted_ms(&id)?.is_some();
            }
            if any_held {
                b.delete_cf(self.store.cf(CF_REQUESTS), k);
            }
            if b.len() >= PRUNE_CHUNK {
                db.write_opt(std::mem::take(&mut b), &Self::unsynced())?;
            }
        }
        Ok(db.write_opt(b, &Self::unsynced())?)
    }

    /// Delete every index and tally and build them again from the stored receipts, in time
    /// order; receipts that do not decode (or, with `signatures`, do not verify: checked in
    /// parallel), or lose to other receipts of their request, are deleted and logged.
    /// `progress(done, total)` is called every 65,536 receipts. Returns the receipts read.
    pub fn rebuild(
        &self,
        signatures: bool,
        progress: &dyn Fn(u64, u64),
    ) -> Result<u64, StoreError> {
        let db = self.store.db();
        // What pruned epochs leave behind has no receipt to be rebuilt from: their tallies,
        // and the requests their receipts answered (entries naming no held receipt).
        let pruned: BTreeSet<u64> = self.pruned_epochs()?.iter().map(|p| p.epoch).collect();
        let kept_tallies = self.pruned_tallies()?;
        let mut wipe = vec![CF_RECEIPT_IDS, CF_EPOCH_IDS, CF_TALLIES, CF_EQUIVOCATIONS];
        if pruned.is_empty() {
            wipe.push(CF_REQUESTS);
        } else {
            self.forget_held_requests()?;
        }
        for cf in wipe {
            let cf = self.store.cf(cf);
            db.delete_range_cf(cf, &[0u8; 0][..], &[0xffu8; 80][..])?;
        }
        let mut b = WriteBatch::default();
        for (k, t) in kept_tallies {
            b.merge_cf(self.store.cf(CF_TALLIES), k, t.encode());
        }
        db.write_opt(b, &Self::unsynced())?;
        let mut stale = Vec::new();
        let done = self.each_stored(signatures, progress, |s, r| {
            let taken = r.and_then(|r| {
                let e = epoch_of(r.payload().accepted_ms, self.epoch_ms);
                self.take(&r, false, !pruned.contains(&e))
                    .map_err(|e| e.to_string())
            });
            if let Err(e) = taken {
                tracing::error!(receipt = %s.id, "stored receipt deleted: {e}");
                stale.push((s.accepted_ms, s.id));
            }
            Ok(())
        })?;
        self.store.write_receipts(&[], &stale)?;
        self.store.set_meta(INDEXED, &self.epoch_ms.to_be_bytes())?;
        self.sync()?;
        Ok(done)
    }

    /// Recompute everything from the stored receipts and compare: every receipt decodes (and,
    /// with `signatures`, verifies: in parallel on every core) and is stored under its id, the
    /// indexes match the receipts, and every tally equals its recomputation. Reads the whole
    /// store; changes nothing. `progress(done, total)` is called every 65,536 receipts.
    pub fn check(
        &self,
        signatures: bool,
        progress: &dyn Fn(u64, u64),
    ) -> Result<CheckReport, StoreError> {
        let db = self.store.db();
        let mut report = CheckReport::default();
        let mut expected: BTreeMap<Vec<u8>, Tally> = BTreeMap::new();
        let mut add = |k: Vec<u8>, t: Tally| {
            let e = expected.entry(k).or_default();
            *e = e.add(t);
        };
        let mut equivocating = BTreeSet::new();
        let pruned: BTreeSet<u64> = self.pruned_epochs()?.iter().map(|p| p.epoch).collect();
        for (k, t) in self.pruned_tallies()? {
            add(k, t);
        }
        let receipts = self.each_stored(signatures, progress, |s, r| {
            let r = match r {
                Ok(r) => r,
                Err(why) => {
                    report.bad_receipts.push((s.accepted_ms, s.id, why));
                    return Ok(());
                }
            };
            let p = r.payload();
            let e = epoch_of(p.accepted_ms, self.epoch_ms);
            if self.accepted_ms(&s.id)? != Some(s.accepted_ms) {
                report.index_errors += 1;
            }
            if db
                .get_pinned_cf(self.store.cf(CF_EPOCH_IDS), epoch_id_key(e, &s.id))?
                .is_none()
            {
                report.index_errors += 1;
            }
            let request = p.request.id();
            let held = self.held_for(&request)?;
            if !held.contains(&s.id) {
                report.index_errors += 1;
            }
            if held.len() == 2 {
                equivocating.insert((r.signer(), request));
            }
            if pruned.contains(&e) {
                // Its tallies are the pruned epoch's, taken as they are above.
                return Ok(());
            }
            for (k, t) in held_tallies(e, 1) {
                add(k, t);
            }
            if held.first() == Some(&s.id) {
                for (k, t) in counted_tallies(self.epoch_ms, p, 1) {
                    add(k, t);
                }
            }
            Ok(())
        })?;
        report.receipts = receipts;
        // Index entries that name no stored receipt.
        let indexed = db
            .iterator_cf(self.store.cf(CF_RECEIPT_IDS), IteratorMode::Start)
            .count() as u64;
        let good = report.receipts - report.bad_receipts.len() as u64;
        report.index_errors += indexed.saturating_sub(good);
        let found: BTreeSet<_> = self
            .equivocations()?
            .into_iter()
            .map(|e| (e.service, e.request))
            .collect();
        report.index_errors += found.symmetric_difference(&equivocating).count() as u64;
        let mut stored_tallies: BTreeMap<Vec<u8>, Tally> = self.tallies(&[])?.into_iter().collect();
        for (k, want) in expected.into_iter().filter(|(_, t)| *t != Tally::default()) {
            let have = stored_tallies.remove(&k).unwrap_or_default();
            if have != want {
                report.tally_errors.push((k, have, want));
            }
        }
        for (k, have) in stored_tallies {
            report.tally_errors.push((k, have, Tally::default()));
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use dpow_protocol::{WorkRequest, WorkResult};
    use dpow_testkit::builders::{self, NET, NOW, account, key, sign};
    use dpow_testkit::rng::Rng;

    use super::*;

    const EPOCH_MS: u64 = 1_000;

    /// A stream of receipts from 2 services and 4 workers over 6 epochs, for 120 requests,
    /// so that some requests get two, three or four receipts (equivocations, refusals).
    fn receipts(seed: u64, n: usize) -> Vec<Signed<Receipt>> {
        let mut rng = Rng::new(seed);
        let services = [key(10), key(11)];
        let workers = [key(20), key(21), key(22), key(23)];
        (0..n)
            .map(|_| {
                let nonce = rng.below(120) as u64;
                let service = &services[(nonce % 2) as usize];
                let req = sign(
                    WorkRequest {
                        nonce,
                        ..builders::request(service)
                    },
                    service,
                );
                let worker = &workers[rng.below(4)];
                let work = builders::solved(&req, worker).payload().work;
                let payout = match rng.below(3) {
                    0 => None,
                    n => Some(account(n as u8)),
                };
                let res = sign(
                    WorkResult {
                        payout,
                        ..builders::result(&req, worker, work)
                    },
                    worker,
                );
                let at = NOW + rng.below(6 * EPOCH_MS as usize) as u64;
                builders::receipt(service, &req, res, at)
            })
            .collect()
    }

    /// Every question both ledgers answer, asked of both.
    fn assert_same(books: &Books, ledger: &Ledger) {
        let registry = Registry::new([]);
        assert_eq!(books.len().unwrap(), ledger.len() as u64);
        let epochs: Vec<(u64, u64)> = ledger
            .epochs()
            .into_iter()
            .map(|(e, n)| (e, n as u64))
            .collect();
        assert_eq!(books.epochs().unwrap(), epochs);
        for (e, _) in &epochs {
            let all = ledger.receipt_ids_in_epoch(*e);
            assert_eq!(books.receipt_ids_in_epoch(*e).unwrap(), all);
            // Paged from the index, 7 at a time: the same ids, "more" on all but the last.
            let (mut paged, mut after) = (Vec::new(), None);
            loop {
                let (page, more) = books.receipt_ids_page(*e, after, 7).unwrap();
                assert!(page.len() <= 7);
                paged.extend_from_slice(&page);
                after = page.last().copied();
                if !more {
                    break;
                }
                assert_eq!(page.len(), 7, "a full page before more");
            }
            assert_eq!(paged, all);
            // After an id the epoch does not hold: the ids above it.
            let mut between = all[0];
            between.0[31] ^= 1;
            let above: Vec<MessageId> = all.iter().copied().filter(|id| *id > between).collect();
            let (page, more) = books.receipt_ids_page(*e, Some(between), 7).unwrap();
            assert_eq!(page, above[..above.len().min(7)]);
            assert_eq!(more, above.len() > 7);
            assert_eq!(books.epoch_digest(*e).unwrap(), ledger.epoch_digest(*e));
            assert_eq!(
                books.claims_in_epoch(*e).unwrap(),
                ledger.claims_in_epoch(*e)
            );
            assert_eq!(
                books.earned_in_epoch(*e).unwrap(),
                ledger.earned_in_epoch(*e)
            );
        }
        assert_eq!(
            books.balances(&registry).unwrap(),
            ledger.balances(&registry)
        );
        assert_eq!(books.equivocations().unwrap(), ledger.equivocations());
        assert_eq!(books.flagged_services().unwrap(), ledger.flagged_services());
        for s in [key(10), key(11)] {
            assert_eq!(
                books.service_balance(&registry, &s.public()).unwrap(),
                ledger.service_balance(&registry, &s.public())
            );
        }
    }

    fn open(dir: &std::path::Path) -> Books {
        let store = Arc::new(Store::open(dir).unwrap());
        Books::open(store, EPOCH_MS, NET).unwrap()
    }

    #[test]
    fn books_on_disk_answer_as_the_ledger_in_memory_does() {
        let dir = tempfile::tempdir().unwrap();
        for seed in [1, 2, 3] {
            let sub = dir.path().join(seed.to_string());
            let mut books = open(&sub);
            let mut ledger = Ledger::new(EPOCH_MS);
            let stream = receipts(seed, 400);
            let mut equivocations = 0;
            for r in stream.iter().chain(stream.iter().take(20)) {
                let want = ledger.ingest(r.clone());
                let got = books.ingest(r);
                match (&want, &got) {
                    (Ok(w), Ok(g)) => assert_eq!(w, g),
                    (Err(w), Err(BooksError::Ledger(g))) => assert_eq!(w, g),
                    _ => panic!("in memory {want:?}, on disk {got:?}"),
                }
                if let Ok(Ingested::Equivocation { .. }) = want {
                    equivocations += 1;
                }
                if let Some(id) = books.epochs().unwrap().first() {
                    assert!(id.1 > 0);
                }
            }
            assert!(equivocations > 10, "the stream holds equivocations");
            assert!(ledger.equivocations().len() > 5);
            assert_same(&books, &ledger);
            for r in &stream {
                let held = ledger.get(&r.id()).is_some();
                assert_eq!(books.contains(&r.id()).unwrap(), held);
                if held {
                    assert_eq!(books.get(&r.id()).unwrap().unwrap().bytes(), r.bytes());
                }
            }
            // Asked of many at once (in stream order, then ascending as a peer's page comes,
            // with an id never seen): the same answers.
            let mut ids: Vec<MessageId> = stream.iter().map(|r| r.id()).collect();
            ids.push(MessageId([0xee; 32]));
            for _ in 0..2 {
                let each: Vec<bool> = ids.iter().map(|id| ledger.get(id).is_some()).collect();
                assert!(each.contains(&true) && each.contains(&false));
                assert_eq!(books.contains_each(&ids).unwrap(), each);
                ids.sort_unstable();
            }
            assert!(books.check(true, &|_, _| {}).unwrap().is_clean());
            books.sync().unwrap();
            drop(books);
            // Reopened: the same answers, read from disk, nothing rebuilt.
            let books = open(&sub);
            assert_same(&books, &ledger);
        }
    }

    #[test]
    fn ingest_all_answers_as_one_at_a_time_and_leaves_the_same_books() {
        let dir = tempfile::tempdir().unwrap();
        for seed in [4, 5, 6] {
            let mut books = open(&dir.path().join(seed.to_string()));
            let mut ledger = Ledger::new(EPOCH_MS);
            let stream = receipts(seed, 400);
            // Copies and equivocations inside one call and across calls; calls of every size.
            let mut all: Vec<Signed<Receipt>> = stream.clone();
            all.extend(stream.iter().step_by(7).cloned());
            all.extend(stream.iter().take(30).cloned());
            let mut rng = Rng::new(seed);
            let (mut at, mut split, mut equivocations) = (0, 0, 0);
            while at < all.len() {
                let n = [1, 2, 7, 32, 100][rng.below(5)].min(all.len() - at);
                let part = &all[at..at + n];
                let got = books.ingest_all(part);
                assert_eq!(got.len(), n);
                let mut seen = std::collections::HashSet::new();
                for (r, got) in part.iter().zip(&got) {
                    if !seen.insert(r.payload().request.id()) {
                        split += 1;
                    }
                    let want = ledger.ingest(r.clone());
                    match (&want, got) {
                        (Ok(w), Ok(g)) => assert_eq!(w, g),
                        (Err(w), Err(BooksError::Ledger(g))) => assert_eq!(w, g),
                        _ => panic!("in memory {want:?}, on disk {got:?}"),
                    }
                    if let Ok(Ingested::Equivocation { .. }) = want {
                        equivocations += 1;
                    }
                }
                at += n;
            }
            assert!(split > 10, "calls named one request twice ({split})");
            assert!(equivocations > 10, "the stream holds equivocations");
            assert_same(&books, &ledger);
            assert!(books.check(true, &|_, _| {}).unwrap().is_clean());
        }
    }

    #[test]
    fn check_finds_a_corrupt_tally_and_a_corrupt_receipt_and_rebuild_repairs_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut books = open(dir.path());
        let mut ledger = Ledger::new(EPOCH_MS);
        for r in receipts(7, 200) {
            let _ = ledger.ingest(r.clone());
            let _ = books.ingest(&r);
        }
        assert!(books.check(true, &|_, _| {}).unwrap().is_clean());

        // A tally off by one credit.
        let worker = key(20).public();
        let bump = Tally {
            credits: 1,
            receipts: 0,
        }
        .encode();
        let db = books.store.db();
        db.merge_cf(
            books.store.cf(CF_TALLIES),
            tally_key(kind::WORKER, None, Some(&worker.0)),
            bump,
        )
        .unwrap();
        assert_eq!(books.earned(&worker).unwrap(), ledger.earned(&worker) + 1);
        let report = books.check(false, &|_, _| {}).unwrap();
        assert_eq!(report.tally_errors.len(), 1, "{report:?}");
        assert!(report.bad_receipts.is_empty());

        // A counted receipt whose signature no longer verifies (one byte of it flipped).
        let victim = ledger.counted().next().unwrap().clone();
        let ms = victim.payload().accepted_ms;
        let mut bytes = victim.bytes().to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        db.put_cf(
            books.store.cf(CF_RECEIPTS),
            Store::receipt_key(ms, &victim.id()),
            &bytes,
        )
        .unwrap();
        let quick = books.check(false, &|_, _| {}).unwrap();
        assert!(
            quick.bad_receipts.is_empty(),
            "only a signature check sees it"
        );
        let full = books.check(true, &|_, _| {}).unwrap();
        assert_eq!(full.bad_receipts.len(), 1, "{full:?}");
        assert_eq!(full.bad_receipts[0].1, victim.id());

        // Repair: the bad receipt goes, the tallies are recomputed.
        books.rebuild(true, &|_, _| {}).unwrap();
        assert!(books.check(true, &|_, _| {}).unwrap().is_clean());
        assert!(!books.contains(&victim.id()).unwrap());
        // What remains is what was held less the victim, and the books say so.
        let mut expect = Ledger::new(EPOCH_MS);
        for r in receipts(7, 200) {
            if r.id() != victim.id() && ledger.get(&r.id()).is_some() {
                expect.ingest(r).unwrap();
            }
        }
        assert_same(&books, &expect);
        assert_ne!(
            books.balances(&Registry::new([])).unwrap(),
            ledger.balances(&Registry::new([]))
        );
    }
}

/// Test `name` of this test binary run again as a child process, with `env` naming `dir`:
/// its stdin and stdout piped to the caller, its stderr dropped. The `kill -9` tests' child.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
fn child_process(name: &str, env: &str, dir: &std::path::Path) -> std::process::Child {
    use std::process::{Command, Stdio};
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(env, dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// `kill -9` while receipts are being written: the test runs itself again as a child that
/// takes receipts and says which are durable, kills it mid-stream, and checks the store.
#[cfg(test)]
mod crash {
    #![allow(clippy::unwrap_used)]
    use std::io::{BufRead, BufReader, Write as _};

    use dpow_protocol::WorkRequest;
    use dpow_testkit::builders::{self, NET, NOW, key, sign};

    use super::*;

    const CHILD: &str = "DPOW_BOOKS_CRASH_CHILD";
    const EPOCH_MS: u64 = 1_000;
    const BATCH: u64 = 64;

    /// Receipt `i` of the stream: the same bytes in both processes (fixed keys, deterministic
    /// signatures); every fifth one a second receipt for the request before it (evidence).
    fn receipt(i: u64) -> Signed<Receipt> {
        let (service, worker) = (key(10), key(20));
        let nonce = if i % 5 == 4 { i - 1 } else { i };
        let req = sign(
            WorkRequest {
                nonce,
                ..builders::request(&service)
            },
            &service,
        );
        let res = builders::solved(&req, &worker);
        builders::receipt(&service, &req, res, NOW + i * 7)
    }

    /// The child: take receipts forever, syncing every BATCH and then printing how many are
    /// durable (what the node acknowledges).
    fn child(dir: &str) {
        let store = Arc::new(Store::open(std::path::Path::new(dir)).unwrap());
        let mut books = Books::open(store, EPOCH_MS, NET).unwrap();
        let mut out = std::io::stdout();
        for i in 0.. {
            // Those a killed child made durable come again as duplicates.
            match books.ingest(&receipt(i)) {
                Ok(_) | Err(BooksError::Ledger(LedgerError::Duplicate { .. })) => {}
                Err(e) => panic!("receipt {i}: {e}"),
            }
            if i % BATCH == BATCH - 1 {
                books.sync().unwrap();
                writeln!(out, "durable {}", i + 1).unwrap();
                out.flush().unwrap();
            }
        }
    }

    #[test]
    fn kill_9_while_writing_loses_nothing_acknowledged_and_tallies_stay_exact() {
        if let Ok(dir) = std::env::var(CHILD) {
            child(&dir);
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        for round in 0..3u64 {
            let mut c = child_process(
                "store::books::crash::kill_9_while_writing_loses_nothing_acknowledged_and_tallies_stay_exact",
                CHILD,
                dir.path(),
            );
            // Kill it at a different point each round, after some batches are durable.
            let mut acked = 0u64;
            let want = 4 + round * 3;
            let mut lines = BufReader::new(c.stdout.take().unwrap()).lines();
            let mut seen = 0;
            while seen < want {
                let line = lines.next().unwrap().unwrap();
                if let Some(n) = line.strip_prefix("durable ") {
                    acked = n.parse().unwrap();
                    seen += 1;
                }
            }
            c.kill().unwrap(); // SIGKILL
            c.wait().unwrap();

            let store = Arc::new(Store::open(dir.path()).unwrap());
            let books = Books::open(store, EPOCH_MS, NET).unwrap();
            // Each round's child starts again from receipt 0 (those held are duplicates).
            for i in 0..acked {
                let r = receipt(i);
                assert!(
                    books.contains(&r.id()).unwrap(),
                    "round {round}: receipt {i} of {acked} acknowledged was lost"
                );
            }
            let report = books.check(false, &|_, _| {}).unwrap();
            assert!(report.is_clean(), "round {round}: {report:?}");
            assert!(books.len().unwrap() >= acked);
        }
    }
}

/// Pruning an epoch: what stays exact, what is refused after, and a prune killed half-way.
#[cfg(test)]
mod prune {
    #![allow(clippy::unwrap_used)]
    use std::io::{BufRead, BufReader, Write as _};

    use dpow_protocol::WorkRequest;
    use dpow_testkit::builders::{self, NET, NOW, account, key, sign};

    use super::*;

    const CHILD: &str = "DPOW_BOOKS_PRUNE_CHILD";
    const EPOCH_MS: u64 = 1_000;
    const RECEIPTS: u64 = 600;

    /// Receipt `i`: 143 per epoch, over about four epochs; every fifth a second receipt for
    /// the request before it (evidence); payouts to two accounts and none.
    fn receipt(i: u64, at: u64) -> Signed<Receipt> {
        let (service, worker) = (key(10), key(20 + (i % 3) as u8));
        let nonce = if i % 5 == 4 { i - 1 } else { i };
        let req = sign(
            WorkRequest {
                nonce,
                ..builders::request(&service)
            },
            &service,
        );
        let work = builders::solved(&req, &worker).payload().work;
        let res = sign(
            dpow_protocol::WorkResult {
                payout: (!i.is_multiple_of(3)).then(|| account((i % 2) as u8 + 1)),
                ..builders::result(&req, &worker, work)
            },
            &worker,
        );
        builders::receipt(&service, &req, res, at)
    }

    fn fill(dir: &std::path::Path) -> (Books, u64) {
        let store = Arc::new(Store::open(dir).unwrap());
        let mut books = Books::open(store, EPOCH_MS, NET).unwrap();
        for i in 0..RECEIPTS {
            books.ingest(&receipt(i, NOW + i * 7)).unwrap();
        }
        books.sync().unwrap();
        // The first whole epoch.
        (books, epoch_of(NOW, EPOCH_MS) + 1)
    }

    /// Everything a pruned epoch must keep answering.
    #[derive(Debug, PartialEq)]
    struct Answers {
        balances: Balances,
        epochs: Vec<(u64, u64)>,
        digest: [u8; 32],
        claims: Claims,
        earned: BTreeMap<PublicKey, u128>,
        spent: BTreeMap<PublicKey, u128>,
        flagged: BTreeSet<PublicKey>,
    }

    fn answers(books: &Books, e: u64) -> Answers {
        Answers {
            balances: books.balances(&Registry::new([])).unwrap(),
            epochs: books.epochs().unwrap(),
            digest: books.epoch_digest(e).unwrap(),
            claims: books.claims_in_epoch(e).unwrap(),
            earned: books.earned_in_epoch(e).unwrap(),
            spent: books.spent_in_epoch(e).unwrap(),
            flagged: books.flagged_services().unwrap(),
        }
    }

    /// After a prune of `e`: the same answers, only evidence left of its receipts, nothing
    /// more taken into it, the books check clean, and a rebuild keeps all of it.
    fn assert_pruned(books: &mut Books, e: u64, before: &Answers) {
        let p = books.pruned_epoch(e).unwrap().unwrap();
        assert!(p.done);
        assert_eq!(p.digest, before.digest);
        assert_eq!(&answers(books, e), before);
        assert!(books.receipt_ids_in_epoch(e).unwrap().is_empty());
        let mut kept = 0;
        for i in 0..RECEIPTS {
            let r = receipt(i, NOW + i * 7);
            let in_e = epoch_of(r.payload().accepted_ms, EPOCH_MS) == e;
            let held = books.contains(&r.id()).unwrap();
            let evidence = books.held_for(&r.payload().request.id()).unwrap().len() == 2;
            assert_eq!(held, !in_e || evidence, "receipt {i}");
            kept += usize::from(in_e && held);
        }
        assert!(kept > 0, "an equivocation's receipts stay as evidence");
        // Nothing more enters the pruned epoch, nor pays a request it answered.
        let late = receipt(RECEIPTS + 1, e * EPOCH_MS + 1);
        assert!(matches!(
            books.ingest(&late),
            Err(BooksError::Pruned { .. })
        ));
        let first = (0..RECEIPTS)
            .find(|i| {
                let r = receipt(*i, NOW + i * 7);
                epoch_of(r.payload().accepted_ms, EPOCH_MS) == e
                    && !books.contains(&r.id()).unwrap()
            })
            .unwrap();
        let again = receipt(first, (e + 2) * EPOCH_MS + 5);
        assert!(matches!(
            books.ingest(&again),
            Err(BooksError::Pruned { .. })
        ));
        assert_eq!(&answers(books, e), before, "refusals changed nothing");
        let report = books.check(true, &|_, _| {}).unwrap();
        assert!(report.is_clean(), "{report:?}");
        books.rebuild(false, &|_, _| {}).unwrap();
        assert_eq!(
            &answers(books, e),
            before,
            "a rebuild keeps what pruning kept"
        );
        assert!(books.check(false, &|_, _| {}).unwrap().is_clean());
    }

    #[test]
    fn a_pruned_epoch_keeps_its_books_exact_and_closed() {
        let dir = tempfile::tempdir().unwrap();
        let (mut books, e) = fill(dir.path());
        let before = answers(&books, e);
        assert!(before.epochs.len() >= 4);
        let r = books.prune(e, 16, &|_| {}).unwrap();
        assert!(r.deleted > 50 && r.kept > 0, "{r:?}");
        assert_eq!(books.prune(e, 16, &|_| {}).unwrap(), PruneReport::default());
        assert_pruned(&mut books, e, &before);
        // And across a restart.
        let store = books.store().clone();
        drop(books);
        let mut books = Books::open(store, EPOCH_MS, NET).unwrap();
        assert_eq!(books.pruned_epochs().unwrap().len(), 1);
        assert_pruned(&mut books, e, &before);
    }

    #[test]
    fn a_light_ledger_holds_an_adopted_epoch_as_its_checkpoint_states_it() {
        let full_dir = tempfile::tempdir().unwrap();
        let (full, e) = fill(full_dir.path());
        let before = answers(&full, e);
        let in_e = |r: &Signed<Receipt>| epoch_of(r.payload().accepted_ms, EPOCH_MS) == e;
        let all: Vec<Signed<Receipt>> = (0..RECEIPTS).map(|i| receipt(i, NOW + i * 7)).collect();
        let claims = full.claims_in_epoch(e).unwrap();
        let held = before.epochs.iter().find(|(x, _)| *x == e).unwrap().1;
        let cp = Checkpoint {
            digest: before.digest,
            receipts: held,
            credits: claims.accounts.clone().into_iter().collect(),
            unclaimed: claims.unclaimed,
            ..builders::checkpoint(&key(1), e, EPOCH_MS, NOW)
        };
        assert!(cp.unclaimed > 0 && cp.credits.len() == 2, "{cp:?}");

        // The light books take the other epochs' receipts (catch-up brings them) and none of e.
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let light = Books::open(store, EPOCH_MS, NET).unwrap();
        let mut light = light;
        for r in all.iter().filter(|r| !in_e(r)) {
            light.ingest(r).unwrap();
        }
        assert!(light.adopt(&cp).unwrap());
        assert!(!light.adopt(&cp).unwrap(), "an epoch is adopted once");
        let check = |books: &Books| {
            let p = books.pruned_epoch(e).unwrap().unwrap();
            assert!(p.adopted && p.done);
            // Peers see the same books: every epoch's count and digest.
            assert_eq!(books.epochs().unwrap(), before.epochs);
            assert_eq!(books.epoch_digest(e).unwrap(), before.digest);
            assert_eq!(books.len().unwrap(), full.len().unwrap());
            // Its payout is exact; no receipt of it is held.
            assert_eq!(books.claims_in_epoch(e).unwrap(), claims);
            assert!(books.receipt_ids_in_epoch(e).unwrap().is_empty());
            let credits = |b: &Books| -> BTreeMap<NanoAccount, u128> {
                b.account_credits()
                    .unwrap()
                    .into_iter()
                    .map(|(a, (c, _))| (a, c))
                    .collect()
            };
            assert_eq!(credits(books), credits(&full));
            // What a checkpoint does not state is not counted: per worker, per service.
            assert!(books.earned_in_epoch(e).unwrap().is_empty());
            assert!(books.spent_in_epoch(e).unwrap().is_empty());
            // The books check clean (the epoch's tallies are taken as given).
            assert!(books.check(false, &|_, _| {}).unwrap().is_clean());
        };
        check(&light);
        // None of its receipts is taken later.
        let late = all.iter().find(|r| in_e(r)).unwrap();
        assert!(matches!(light.ingest(late), Err(BooksError::Pruned { .. })));
        // A rebuild and a restart keep it.
        light.rebuild(false, &|_, _| {}).unwrap();
        check(&light);
        let store = light.store().clone();
        drop(light);
        check(&Books::open(store, EPOCH_MS, NET).unwrap());

        // Books that hold receipts of the epoch adopt nothing; nor does a checkpoint counted
        // in another epoch length, or of no receipts.
        assert!(!full.adopt(&cp).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let other = Books::open(Arc::new(Store::open(dir.path()).unwrap()), EPOCH_MS, NET).unwrap();
        for bad in [
            Checkpoint {
                epoch_ms: EPOCH_MS * 2,
                ..cp.clone()
            },
            Checkpoint {
                receipts: 0,
                ..cp.clone()
            },
        ] {
            assert!(!other.adopt(&bad).unwrap());
        }
        assert!(other.pruned_epochs().unwrap().is_empty());
        assert!(other.is_empty().unwrap());
    }

    /// The child: prune the prepared books in batches of 4, saying after each and going on
    /// only when told (so the parent kills it between two batches it chose).
    fn child(dir: &str) {
        // The test harness has begun a line ("test ... "): start a fresh one.
        writeln!(std::io::stdout()).unwrap();
        let store = Arc::new(Store::open(std::path::Path::new(dir)).unwrap());
        let books = Books::open(store, EPOCH_MS, NET).unwrap();
        let e = epoch_of(NOW, EPOCH_MS) + 1;
        books
            .prune(e, 4, &|n| {
                let mut out = std::io::stdout();
                writeln!(out, "deleted {n}").unwrap();
                out.flush().unwrap();
                let mut go = String::new();
                std::io::stdin().read_line(&mut go).unwrap();
            })
            .unwrap();
        writeln!(std::io::stdout(), "done").unwrap();
    }

    #[test]
    fn kill_9_while_pruning_is_finished_at_the_next_open() {
        if let Ok(dir) = std::env::var(CHILD) {
            child(&dir);
            return;
        }
        for (round, after) in [1usize, 6, 15].into_iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let (books, e) = fill(dir.path());
            let before = answers(&books, e);
            drop(books);
            let mut c = child_process(
                "store::books::prune::kill_9_while_pruning_is_finished_at_the_next_open",
                CHILD,
                dir.path(),
            );
            let mut go = c.stdin.take().unwrap();
            let mut lines = BufReader::new(c.stdout.take().unwrap()).lines();
            let mut batches = 0;
            loop {
                let line = lines.next().unwrap().unwrap();
                assert_ne!(line, "done", "round {round}: finished before the kill");
                if line.starts_with("deleted ") {
                    batches += 1;
                    if batches == after {
                        break;
                    }
                    writeln!(go, "go").unwrap();
                }
            }
            c.kill().unwrap(); // SIGKILL
            c.wait().unwrap();
            let store = Arc::new(Store::open(dir.path()).unwrap());
            // Opening finishes the prune.
            let mut books = Books::open(store, EPOCH_MS, NET).unwrap();
            assert_pruned(&mut books, e, &before);
        }
    }
}

/// A full disk: the books live on a small tmpfs mounted for the test (root with
/// `CAP_SYS_ADMIN`, as the namespace tests need; skipped elsewhere unless
/// `DPOW_REQUIRE_TMPFS` is set).
#[cfg(test)]
mod full_disk {
    #![allow(clippy::unwrap_used, clippy::print_stderr)]
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use dpow_protocol::WorkRequest;
    use dpow_testkit::builders::{self, NET, NOW, key, sign};

    use super::*;

    struct Tmpfs(PathBuf, #[allow(dead_code)] tempfile::TempDir);

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }

    fn tmpfs(bytes: u64) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "dpow-test"])
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(Tmpfs(path, dir));
        }
        assert!(
            std::env::var_os("DPOW_REQUIRE_TMPFS").is_none(),
            "DPOW_REQUIRE_TMPFS is set but mounting a tmpfs failed (needs root with CAP_SYS_ADMIN)"
        );
        eprintln!(
            "skipped: cannot mount a tmpfs here (set DPOW_REQUIRE_TMPFS=1 to make this an error)"
        );
        None
    }

    fn receipt(i: u64) -> Signed<Receipt> {
        let (service, worker) = (key(10), key(21));
        let req = sign(
            WorkRequest {
                nonce: i,
                ..builders::request(&service)
            },
            &service,
        );
        let res = builders::solved(&req, &worker);
        builders::receipt(&service, &req, res, NOW + i)
    }

    fn filler(dir: &Path, bytes: usize) -> PathBuf {
        let p = dir.join("filler");
        std::fs::write(&p, vec![0x5a; bytes]).unwrap();
        p
    }

    #[test]
    fn a_full_disk_refuses_receipts_keeps_serving_and_takes_them_once_space_returns() {
        let Some(fs) = tmpfs(24 << 20) else {
            return;
        };
        let fill = filler(&fs.0, 12 << 20);
        let store = Arc::new(Store::open(&fs.0.join("db")).unwrap());
        let mut books = Books::open(store, 1_000, NET).unwrap();
        let mut durable = 0u64;
        let mut i = 0u64;
        let refused = loop {
            match books.ingest(&receipt(i)) {
                Ok(_) => {}
                Err(BooksError::Store(e)) => break e,
                Err(e) => panic!("receipt {i}: {e}"),
            }
            i += 1;
            if i.is_multiple_of(32) {
                match books.sync() {
                    Ok(()) => durable = i,
                    Err(e) => break e,
                }
            }
            assert!(i < 200_000, "the disk never filled");
        };
        eprintln!("refused after {i} receipts ({durable} durable): {refused}");
        let said = refused.to_string();
        assert!(
            said.to_lowercase().contains("space"),
            "a clear error: {said}"
        );
        // Still serving what it holds.
        assert!(books.len().unwrap() >= durable);
        for n in (0..durable).step_by(97) {
            assert_eq!(
                books.get(&receipt(n).id()).unwrap().unwrap().id(),
                receipt(n).id()
            );
        }
        assert!(!books.epochs().unwrap().is_empty());
        // While the disk stays full, writes stay refused.
        assert!(matches!(
            books.ingest(&receipt(i)),
            Err(BooksError::Store(_))
        ));
        // And a batch: every receipt of it refused, none held.
        let batch: Vec<_> = (i + 1..i + 9).map(receipt).collect();
        for answer in books.ingest_all(&batch) {
            assert!(matches!(answer, Err(BooksError::Store(_))), "{answer:?}");
        }
        for r in &batch {
            assert!(!books.contains(&r.id()).unwrap());
        }
        // Space back: RocksDB's recovery (its file manager polls the free space every 5 s
        // and flushes what the memtables hold) lets writes through again, no restart.
        std::fs::remove_file(fill).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut tries = 0u32;
        loop {
            tries += 1;
            match books.ingest(&receipt(i)) {
                Ok(_) => break,
                Err(BooksError::Store(e)) => {
                    if std::time::Instant::now() >= deadline {
                        // RocksDB's own account of why it does not resume.
                        let log = std::fs::read_to_string(fs.0.join("db/LOG")).unwrap_or_default();
                        for line in log.lines().filter(|l| l.contains("[ERROR]")) {
                            eprintln!("{line}");
                        }
                    }
                    assert!(
                        std::time::Instant::now() < deadline,
                        "writes still refused 60 s after space came back: {e}"
                    );
                    std::thread::park_timeout(std::time::Duration::from_millis(100));
                }
                Err(e) => panic!("receipt {i} once space is back: {e}"),
            }
        }
        eprintln!("writes resumed after {tries} tries");
        books.sync().unwrap();
        let resumed = i + 1;
        for n in 0..durable {
            assert!(
                books.contains(&receipt(n).id()).unwrap(),
                "receipt {n} lost"
            );
        }
        assert!(books.check(false, &|_, _| {}).unwrap().is_clean());
        // And after a restart too: nothing acknowledged lost, the books check.
        drop(books);
        let store = Arc::new(Store::open(&fs.0.join("db")).unwrap());
        let mut books = Books::open(store, 1_000, NET).unwrap();
        for n in (0..durable).chain([i]) {
            assert!(
                books.contains(&receipt(n).id()).unwrap(),
                "receipt {n} lost"
            );
        }
        assert!(books.check(false, &|_, _| {}).unwrap().is_clean());
        let i = resumed;
        for n in i..i + 100 {
            match books.ingest(&receipt(n)) {
                Ok(_) | Err(BooksError::Ledger(LedgerError::Duplicate { .. })) => {}
                Err(e) => panic!("receipt {n} after the restart: {e}"),
            }
        }
        books.sync().unwrap();
        assert!(books.check(false, &|_, _| {}).unwrap().is_clean());
    }
}
