//! The credit ledger: receipts in; balances, epoch digests and payouts out.
//!
//! A [`Receipt`] is the unit of account: the service's signature over its own signed request,
//! the worker's signed result and the price. [`Ledger`] holds verified receipts in memory and
//! answers from them alone, so two nodes that hold the same receipts compute the same balances,
//! the same [`Ledger::epoch_digest`] and, with [`payout`], the same report bytes. Storage
//! (RocksDB), replication between nodes and the `dpow ledger` command belong to the node; this
//! module has no I/O and no clock. The rules are written out in `docs/ledger.md`.
//!
//! # One request, one receipt
//!
//! A service signs one receipt per request. Two different receipts for one request prove that
//! the service equivocated: both are kept as evidence, the service is flagged, and only one of
//! them counts toward balances, the one with the **lowest receipt id** (byte order). The choice
//! depends on the set of receipts held, never on the order they arrived in, so nodes that saw
//! them in different orders agree. Two receipts are all the proof needed, so at most two are
//! kept per request (the two lowest ids); a third with a higher id is refused
//! ([`LedgerError::AlreadyProven`]), one with a lower id replaces the highest.
//!
//! # Sums
//!
//! A price is a `u64` ([`Credits`]); sums of prices are `u128`, which no sequence of fewer than
//! 2^64 receipts can overflow, so every total here is exact.

mod amount;
mod payout;

use std::collections::{BTreeMap, BTreeSet};

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use dpow_keys::{NanoAccount, PublicKey};

use crate::ProtocolError;
use crate::envelope::{Message, MessageId, Signed};
use crate::messages::{Credits, Receipt, RequestId};
use crate::registry::Registry;

pub use amount::{RAW_PER_NANO, format_raw_as_nano, parse_amount};
pub use payout::{CheckpointRef, PayoutLine, PayoutReport, payout, report_signing_input};

/// The length of a payout epoch unless a network says otherwise: one day, in milliseconds.
pub const DEFAULT_EPOCH_MS: u64 = 86_400_000;

/// The epoch a receipt accepted at `accepted_ms` belongs to: `accepted_ms / epoch_ms`.
/// Epochs count from the unix epoch; an `epoch_ms` of 0 is taken as 1.
pub fn epoch_of(accepted_ms: u64, epoch_ms: u64) -> u64 {
    accepted_ms / epoch_ms.max(1)
}

/// The digest of an epoch holding the receipts `ids` (ascending, no repeats): blake2b-256 over
/// the domain tag `dpow/1/ledger-epoch\0`, the epoch length and number and the number of ids
/// (u64 big-endian each), then the ids. A node checks a peer's id list against a registrar's
/// checkpoint with it before fetching a final epoch's receipts.
pub fn digest_of_ids(epoch_ms: u64, epoch: u64, ids: &[MessageId]) -> [u8; 32] {
    let mut h = Blake2b::<U32>::new();
    h.update(b"dpow/1/ledger-epoch\0");
    h.update(epoch_ms.max(1).to_be_bytes());
    h.update(epoch.to_be_bytes());
    h.update((ids.len() as u64).to_be_bytes());
    for id in ids {
        h.update(id.0);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(&h.finalize());
    out
}

/// What taking in receipt `id` for a request does to the receipts held for that request
/// ([`admit`]): the rule of "one request, one receipt" (module docs), shared by every ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    /// The receipt that counts afterwards: the lowest id held.
    pub counted: MessageId,
    /// The other receipt held afterwards, when the request has two (an equivocation).
    pub evidence: Option<MessageId>,
    /// A receipt held before that no longer counts (the new one has a lower id).
    pub uncounted: Option<MessageId>,
    /// A receipt held before that is let go of (with two held, the new one has a lower id than
    /// the higher of them).
    pub dropped: Option<MessageId>,
}

/// Apply the rule of "one request, one receipt" to a new receipt `id`, given the ids `held`
/// for its request (ascending, at most two, not containing `id`). `None`: two are held and
/// `id` is higher than both, so it adds nothing ([`LedgerError::AlreadyProven`]).
pub fn admit(held: &[MessageId], id: MessageId) -> Option<Admission> {
    let Some(&before) = held.first() else {
        return Some(Admission {
            counted: id,
            evidence: None,
            uncounted: None,
            dropped: None,
        });
    };
    let dropped = match held.get(1..).and_then(|rest| rest.last()) {
        Some(&highest) if id > highest => return None,
        Some(&highest) => Some(highest),
        None => None,
    };
    // Whatever was held, the request now has exactly `before` and the new receipt.
    let (counted, evidence) = (before.min(id), before.max(id));
    Some(Admission {
        counted,
        evidence: Some(evidence),
        uncounted: (counted != before).then_some(before),
        dropped,
    })
}

/// Why the ledger refused a receipt, or why a payout or an amount could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LedgerError {
    /// The receipt is already held (harmless: receipts travel more than once).
    #[error("receipt {receipt} is already in the ledger")]
    Duplicate {
        /// The receipt's id.
        receipt: MessageId,
    },
    /// The ledger already holds two different receipts for this request, which prove the
    /// service equivocated; this third one has a higher id than both and adds nothing.
    #[error(
        "receipt {receipt} is a further receipt for request {request}, whose service {service} is already proven to have signed two; not kept"
    )]
    AlreadyProven {
        /// The service that signed all of them.
        service: PublicKey,
        /// The request they answer.
        request: RequestId,
        /// The receipt refused.
        receipt: MessageId,
    },
    /// The receipt breaks one of its own rules (cannot happen for a receipt that came through
    /// [`Signed::decode`] or [`Signed::sign`]; checked again because balances depend on it).
    #[error("receipt refused: {0}")]
    Invalid(#[from] ProtocolError),
    /// A payout over workers who earned nothing.
    #[error("no credits were earned, so there is nothing to divide the pool by")]
    NothingEarned,
    /// A payout of an empty pool.
    #[error("the pool is 0 raw: there is nothing to pay")]
    ZeroPool,
    /// Credits that add up to more than a `u128` holds.
    #[error("credits add up to more than 2^128 - 1")]
    CreditsOverflow,
    /// An amount that does not parse.
    #[error("bad amount {input:?}: {reason}")]
    BadAmount {
        /// The text given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// One epoch's credits by payout account ([`Ledger::claims_in_epoch`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Claims {
    /// Credits per Nano account named in results.
    pub accounts: BTreeMap<NanoAccount, u128>,
    /// Credits of results that named no account: earned, reported, never paid.
    pub unclaimed: u128,
}

/// What [`Ledger::ingest`] did with a receipt it kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ingested {
    /// The first receipt for its request: it counts.
    Counted {
        /// The request it answers.
        request: RequestId,
    },
    /// A second receipt for a request: evidence that the service equivocated. Kept; see the
    /// module docs for which of the two counts.
    Equivocation {
        /// The proof, as it stands after this receipt.
        proof: Equivocation,
        /// A receipt the ledger no longer holds: with two already held, the new one had a
        /// lower id than the higher of them, which was dropped (the node deletes it from
        /// storage too).
        dropped: Option<Dropped>,
    },
}

/// A receipt [`Ledger::ingest`] let go of, with what storage needs to find it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dropped {
    /// The receipt's id.
    pub id: MessageId,
    /// Its `accepted_ms`.
    pub accepted_ms: u64,
}

/// Two receipts a service signed for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Equivocation {
    /// The service that signed both.
    pub service: PublicKey,
    /// The request.
    pub request: RequestId,
    /// The receipt that counts toward balances: the lower id.
    pub counted: MessageId,
    /// The other receipt, kept as evidence only.
    pub evidence: MessageId,
}

/// A service's account.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ServiceBalance {
    /// Credits granted by registrars (the registry's [`crate::registry::ServiceInfo::granted`]).
    pub granted: Credits,
    /// Credits spent: the sum of the prices of its counted receipts.
    pub spent: u128,
    /// How many of its receipts count.
    pub receipts: u64,
    /// Requests for which it signed two receipts.
    pub equivocations: u64,
}

impl ServiceBalance {
    /// `granted − spent`, negative when the service has spent more than it was granted.
    pub fn balance(&self) -> i128 {
        let spent = i128::try_from(self.spent).unwrap_or(i128::MAX);
        i128::from(self.granted.0).saturating_sub(spent)
    }

    /// The credits left, 0 once they are spent (or overspent).
    pub fn remaining(&self) -> u128 {
        u128::from(self.granted.0).saturating_sub(self.spent)
    }

    /// Whether the service has spent all it was granted: workers de-prioritise its requests.
    pub fn is_exhausted(&self) -> bool {
        self.remaining() == 0
    }
}

/// A worker's earnings.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct WorkerBalance {
    /// Credits earned in all: the sum of the prices of the counted receipts naming it.
    pub earned: u128,
    /// Credits earned per epoch (only epochs in which it earned something).
    pub by_epoch: BTreeMap<u64, u128>,
    /// How many counted receipts name it.
    pub receipts: u64,
}

/// Every account the ledger and the registry know of, in key order.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Balances {
    /// Registered services and every service with a receipt.
    pub services: BTreeMap<PublicKey, ServiceBalance>,
    /// Every worker named by a counted receipt.
    pub workers: BTreeMap<PublicKey, WorkerBalance>,
}

/// The receipts a node holds, and what follows from them. See the module docs.
#[derive(Clone, Debug)]
pub struct Ledger {
    epoch_ms: u64,
    receipts: BTreeMap<MessageId, Signed<Receipt>>,
    /// The receipts held for each request (one, or two for an equivocation); the first counts.
    by_request: BTreeMap<RequestId, BTreeSet<MessageId>>,
    /// Every receipt held, by `(accepted_ms, id)`: what epoch queries walk.
    by_time: BTreeSet<(u64, MessageId)>,
    /// Running totals of counted receipts per service and per worker, kept for quick
    /// look-ups; `balances` recomputes them from the receipts.
    spent: BTreeMap<PublicKey, Tally>,
    earned: BTreeMap<PublicKey, Tally>,
    /// `(service, request)` of every request with two receipts.
    equivocating: BTreeSet<(PublicKey, RequestId)>,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger::new(DEFAULT_EPOCH_MS)
    }
}

fn id_floor(at: u64) -> (u64, MessageId) {
    (at, MessageId([0; 32]))
}

fn add(totals: &mut BTreeMap<PublicKey, u128>, key: PublicKey, credits: Credits) {
    let t = totals.entry(key).or_default();
    *t = t.saturating_add(u128::from(credits.0));
}

/// Credits and receipts counted for one key.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    credits: u128,
    receipts: u64,
}

/// Add (`on`) or take away one receipt of `price` to or from `key`'s tally.
fn tally(totals: &mut BTreeMap<PublicKey, Tally>, key: PublicKey, price: Credits, on: bool) {
    let t = totals.entry(key).or_default();
    let price = u128::from(price.0);
    if on {
        t.credits = t.credits.saturating_add(price);
        t.receipts = t.receipts.saturating_add(1);
    } else {
        t.credits = t.credits.saturating_sub(price);
        t.receipts = t.receipts.saturating_sub(1);
    }
    if t.receipts == 0 {
        totals.remove(&key);
    }
}

impl Ledger {
    /// An empty ledger whose epochs last `epoch_ms` milliseconds (a network-wide setting;
    /// 0 is taken as 1).
    pub fn new(epoch_ms: u64) -> Self {
        Ledger {
            epoch_ms: epoch_ms.max(1),
            receipts: BTreeMap::new(),
            by_request: BTreeMap::new(),
            by_time: BTreeSet::new(),
            spent: BTreeMap::new(),
            earned: BTreeMap::new(),
            equivocating: BTreeSet::new(),
        }
    }

    /// The length of an epoch, in milliseconds.
    pub fn epoch_ms(&self) -> u64 {
        self.epoch_ms
    }

    /// Take in a verified receipt. Its signatures, work and price were checked when it was
    /// decoded; its rules are checked again here (one hash). Returns whether it counts or is
    /// evidence of equivocation; refuses duplicates and receipts that add nothing.
    pub fn ingest(&mut self, receipt: Signed<Receipt>) -> Result<Ingested, LedgerError> {
        let id = receipt.id();
        if self.receipts.contains_key(&id) {
            return Err(LedgerError::Duplicate { receipt: id });
        }
        // The envelope's signer is by definition the request's service (`Receipt::signer`),
        // so the signature already binds the receipt to that service; the rest is re-checked.
        receipt.payload().check()?;
        let request = receipt.payload().request.id();
        let service = receipt.signer();
        let held = self.by_request.entry(request).or_default();
        let ids: Vec<MessageId> = held.iter().copied().collect();
        let admission = admit(&ids, id).ok_or(LedgerError::AlreadyProven {
            service,
            request,
            receipt: id,
        })?;
        if let Some(gone) = admission.dropped {
            held.remove(&gone);
        }
        held.insert(id);
        self.insert(id, receipt);
        let Some(evidence) = admission.evidence else {
            self.count(&id, true);
            return Ok(Ingested::Counted { request });
        };
        let dropped = admission.dropped.and_then(|gone| {
            let accepted_ms = self.receipts.remove(&gone)?.payload().accepted_ms;
            self.by_time.remove(&(accepted_ms, gone));
            Some(Dropped {
                id: gone,
                accepted_ms,
            })
        });
        if let Some(before) = admission.uncounted {
            self.count(&before, false);
            self.count(&admission.counted, true);
        }
        self.equivocating.insert((service, request));
        Ok(Ingested::Equivocation {
            proof: Equivocation {
                service,
                request,
                counted: admission.counted,
                evidence,
            },
            dropped,
        })
    }

    fn insert(&mut self, id: MessageId, receipt: Signed<Receipt>) {
        self.by_time.insert((receipt.payload().accepted_ms, id));
        self.receipts.insert(id, receipt);
    }

    /// Add (`on`) or remove a held receipt's price to or from the running totals.
    fn count(&mut self, id: &MessageId, on: bool) {
        let Some(r) = self.receipts.get(id) else {
            return;
        };
        let r = r.payload();
        let service = r.request.payload().service;
        let worker = r.result.payload().worker;
        tally(&mut self.spent, service, r.price, on);
        tally(&mut self.earned, worker, r.price, on);
    }

    /// The epochs this ledger holds receipts in, ascending, with how many (counted and
    /// evidence) each.
    pub fn epochs(&self) -> Vec<(u64, usize)> {
        let mut out: Vec<(u64, usize)> = Vec::new();
        for (ms, _) in &self.by_time {
            let e = epoch_of(*ms, self.epoch_ms);
            match out.last_mut() {
                Some((last, n)) if *last == e => *n += 1,
                _ => out.push((e, 1)),
            }
        }
        out
    }

    /// A held receipt.
    pub fn get(&self, id: &MessageId) -> Option<&Signed<Receipt>> {
        self.receipts.get(id)
    }

    /// How many receipts are held, evidence included.
    pub fn len(&self) -> usize {
        self.receipts.len()
    }

    /// Whether no receipt is held.
    pub fn is_empty(&self) -> bool {
        self.receipts.is_empty()
    }

    /// The receipt that counts for `request`, if any is held.
    pub fn counted_for(&self, request: &RequestId) -> Option<MessageId> {
        self.by_request.get(request)?.first().copied()
    }

    /// Whether the receipt `id` is held and counts toward balances.
    pub fn is_counted(&self, id: &MessageId) -> bool {
        self.receipts
            .get(id)
            .and_then(|r| self.counted_for(&r.payload().request.id()))
            == Some(*id)
    }

    /// Every counted receipt, in request-id order.
    pub fn counted(&self) -> impl Iterator<Item = &Signed<Receipt>> {
        self.by_request
            .values()
            .filter_map(|ids| self.receipts.get(ids.first()?))
    }

    /// Credits `service` has spent (a running total; O(log n)).
    pub fn spent(&self, service: &PublicKey) -> u128 {
        self.spent.get(service).map_or(0, |t| t.credits)
    }

    /// Credits `worker` has earned in all (a running total; O(log n)).
    pub fn earned(&self, worker: &PublicKey) -> u128 {
        self.earned.get(worker).map_or(0, |t| t.credits)
    }

    /// One service's account, for a scheduler deciding whether to serve it.
    pub fn service_balance(&self, registry: &Registry, service: &PublicKey) -> ServiceBalance {
        let equivocations = self
            .equivocating
            .range((*service, MessageId([0; 32]))..)
            .take_while(|(s, _)| s == service)
            .count();
        let t = self.spent.get(service).copied().unwrap_or_default();
        ServiceBalance {
            granted: registry.service(service).map_or(Credits(0), |s| s.granted),
            spent: t.credits,
            receipts: t.receipts,
            equivocations: equivocations as u64,
        }
    }

    /// Every account, recomputed from the counted receipts and the registry's grants.
    pub fn balances(&self, registry: &Registry) -> Balances {
        let mut out = Balances::default();
        for (key, info) in registry.services() {
            out.services.entry(*key).or_default().granted = info.granted;
        }
        for r in self.counted() {
            let r = r.payload();
            let price = u128::from(r.price.0);
            let s = out.services.entry(r.request.payload().service).or_default();
            s.spent = s.spent.saturating_add(price);
            s.receipts += 1;
            let w = out.workers.entry(r.result.payload().worker).or_default();
            w.earned = w.earned.saturating_add(price);
            w.receipts += 1;
            let e = w
                .by_epoch
                .entry(epoch_of(r.accepted_ms, self.epoch_ms))
                .or_default();
            *e = e.saturating_add(price);
        }
        for (service, _) in &self.equivocating {
            out.services.entry(*service).or_default().equivocations += 1;
        }
        out
    }

    /// The receipts held whose `accepted_ms` falls in `epoch`, evidence included, in time order.
    fn in_epoch(&self, epoch: u64) -> Vec<MessageId> {
        let Some(start) = epoch.checked_mul(self.epoch_ms) else {
            return Vec::new();
        };
        let ids = |(_, id): &(u64, MessageId)| *id;
        match start.checked_add(self.epoch_ms) {
            Some(end) => self
                .by_time
                .range(id_floor(start)..id_floor(end))
                .map(ids)
                .collect(),
            None => self.by_time.range(id_floor(start)..).map(ids).collect(),
        }
    }

    /// Credits earned in `epoch` per payout account named in the counted receipts' results:
    /// the input to [`payout`]. Results that named no account add to `unclaimed`.
    pub fn claims_in_epoch(&self, epoch: u64) -> Claims {
        let mut out = Claims::default();
        for id in self.in_epoch(epoch) {
            if !self.is_counted(&id) {
                continue;
            }
            if let Some(r) = self.receipts.get(&id) {
                let r = r.payload();
                let price = u128::from(r.price.0);
                match r.result.payload().payout {
                    Some(account) => {
                        let t = out.accounts.entry(account).or_default();
                        *t = t.saturating_add(price);
                    }
                    None => out.unclaimed = out.unclaimed.saturating_add(price),
                }
            }
        }
        out
    }

    /// Credits earned by each worker key in `epoch`, from counted receipts.
    pub fn earned_in_epoch(&self, epoch: u64) -> BTreeMap<PublicKey, u128> {
        let mut out = BTreeMap::new();
        for id in self.in_epoch(epoch) {
            if !self.is_counted(&id) {
                continue;
            }
            if let Some(r) = self.receipts.get(&id) {
                let r = r.payload();
                add(&mut out, r.result.payload().worker, r.price);
            }
        }
        out
    }

    /// The ids of every receipt held in `epoch` (evidence included), ascending: what a node
    /// offers a peer whose digest for the epoch differs from its own.
    pub fn receipt_ids_in_epoch(&self, epoch: u64) -> Vec<MessageId> {
        let mut ids = self.in_epoch(epoch);
        ids.sort_unstable();
        ids
    }

    /// A digest of the receipts held in `epoch` ([`digest_of_ids`] of
    /// [`Ledger::receipt_ids_in_epoch`]). Nodes holding the same receipts have the same digest;
    /// which of them count follows from the set, so the digest covers that too.
    pub fn epoch_digest(&self, epoch: u64) -> [u8; 32] {
        digest_of_ids(self.epoch_ms, epoch, &self.receipt_ids_in_epoch(epoch))
    }

    /// Every proven equivocation, by service then request.
    pub fn equivocations(&self) -> Vec<Equivocation> {
        self.equivocating
            .iter()
            .filter_map(|&(service, request)| {
                let mut ids = self.by_request.get(&request)?.iter().copied();
                Some(Equivocation {
                    service,
                    request,
                    counted: ids.next()?,
                    evidence: ids.next()?,
                })
            })
            .collect()
    }

    /// The services proven to have signed two receipts for one request.
    pub fn flagged_services(&self) -> BTreeSet<PublicKey> {
        self.equivocating.iter().map(|(s, _)| *s).collect()
    }
}
