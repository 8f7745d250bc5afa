//! The event loop's ledger: receipts in, durable, out to peers that lack them.
//!
//! - **Ingest.** A receipt (gossip, DHT, sync, or signed here) is verified
//!   ([`dpow_protocol::validate::Validator::check_receipt`]), taken into the in-memory
//!   [`Ledger`], and queued. The queue goes to the store task (`disk.rs`) as one synced batch
//!   (group commit) when it reaches [`FLUSH_AT`] receipts or [`FLUSH_AFTER`] after its first
//!   receipt, and before anything reads the books (statistics, the `Ledger` command, sync
//!   answers). Only when the task reports the batch durable is a receipt acknowledged:
//!   forwarded on gossip, published and put into the DHT if it is this service's own. So a
//!   receipt anyone has seen acknowledged is on disk, and the event loop never waits for it.
//! - **DHT.** The service's node puts each receipt it signs as a Kademlia record (key: the
//!   receipt id) on the `replication` closest peers; inbound records are verified as receipts
//!   before they are stored, and ingested like gossip.
//! - **Catch-up.** On every new connection and every `ledger_sync` interval, a node asks a
//!   peer for its epoch digests; for every epoch whose digest differs it lists the peer's ids
//!   and fetches those it lacks, [`MAX_SYNC_FETCH`] at a time. The steps are the sans-IO
//!   [`Replication`] machine's; this file feeds it the answers and the books
//!   ([`replication::Books`]) and sends what it asks.

use std::time::{Duration, Instant};

use dpow_protocol::ledger::{Ingested, LedgerError};
use dpow_protocol::validate::{RejectReason, Rejected};
use dpow_protocol::{MessageId, Receipt, Signed};
use futures::FutureExt;
use libp2p::request_response;
use libp2p::{PeerId, gossipsub, kad};

use dpow_protocol::replication::{self, Ask, Out, Replication, Rule};

use super::super::Topic;
use super::super::behaviour::{
    EpochDigest, MAX_SYNC_CHECKPOINTS, MAX_SYNC_EPOCHS, MAX_SYNC_FETCH, SyncRequest, SyncResponse,
    serde_bytes_vec::Bytes,
};
use super::DIGEST_REFRESH;
use super::EventLoop;
use super::guard::Sent;
use crate::net::events::{Event, ReceiptFrom};
use crate::store::{IngestError, StoredReceipt};

/// Flush the receipt queue once it holds this many.
const FLUSH_AT: usize = 256;
/// ... or this long after its first receipt arrived.
const FLUSH_AFTER: Duration = Duration::from_millis(3);

/// What to do once a queued receipt is on disk.
pub(super) enum Ack {
    /// Tell gossipsub to forward it.
    Gossip {
        id: gossipsub::MessageId,
        from: PeerId,
    },
    /// This node's own receipt: publish it and put it into the DHT.
    Own,
    /// Nothing (sync, DHT, startup).
    Quiet,
}

/// Receipts taken into the ledger but not yet on disk.
#[derive(Default)]
pub(super) struct Queue {
    put: Vec<(StoredReceipt, Ack)>,
    since: Option<Instant>,
}

impl Queue {
    /// When the queue must be written, if it holds anything.
    pub(super) fn due(&self) -> Option<Instant> {
        self.since.map(|t| t + FLUSH_AFTER)
    }
}

/// A DHT lookup for one receipt.
pub(super) struct DhtGet {
    id: MessageId,
    reply: Option<tokio::sync::oneshot::Sender<Option<Signed<Receipt>>>>,
}

/// The ids a `Fetch` asks for: at most [`MAX_SYNC_FETCH`], none if malformed.
pub(super) fn fetch_ids(bytes: &[u8]) -> Vec<MessageId> {
    let mut ids = ids_of(bytes).unwrap_or_default();
    ids.truncate(MAX_SYNC_FETCH);
    ids
}

fn ids_of(bytes: &[u8]) -> Option<Vec<MessageId>> {
    if !bytes.len().is_multiple_of(32) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(32)
            .map(|c| {
                let mut id = [0u8; 32];
                id.copy_from_slice(c);
                MessageId(id)
            })
            .collect(),
    )
}

/// A peer's digests set aside while this node's own are computed at start-up: the peer, its
/// epoch length, and (epoch, digest) pairs.
pub(super) type PeerDigests = (PeerId, u64, Vec<(u64, [u8; 32])>);

/// Where an `Ids` page starts: after the id the asker sent (the last of its previous page).
pub(super) fn page_after(after: Option<Bytes>) -> Option<MessageId> {
    after
        .and_then(|b| ids_of(&b.0))
        .and_then(|v| v.first().copied())
}

pub(super) fn id_bytes(ids: &[MessageId]) -> Bytes {
    Bytes(ids.iter().flat_map(|id| id.0).collect())
}

impl EventLoop {
    /// The ledger changed in the epoch of `accepted_ms`: its cached digest is stale (on big
    /// books kept until refreshed off the event loop: [`EventLoop::refresh_digests`]).
    fn books_changed(&mut self, accepted_ms: u64) {
        let epoch = dpow_protocol::ledger::epoch_of(accepted_ms, self.ledger.epoch_ms());
        if self.big_books && (self.digests_warming || self.digests.contains_key(&epoch)) {
            self.stale_digests.insert(epoch);
        } else {
            self.digests.remove(&epoch);
        }
        self.epochs_held = None;
    }

    /// An epoch's digest, computed here once per change of the epoch (a digest reads every
    /// id of the epoch; statistics and every peer's catch-up ask for it), or on big books
    /// once, then refreshed off the event loop.
    pub(super) fn digest_of(&mut self, epoch: u64) -> [u8; 32] {
        if let Some(d) = self.digests.get(&epoch) {
            return *d;
        }
        let d = self.ledger.epoch_digest(epoch);
        self.digests.insert(epoch, d);
        self.stats().digests_inline += 1;
        d
    }

    /// The epochs held, with their receipt counts (cached until the ledger changes).
    fn epochs_held(&mut self) -> Vec<(u64, usize)> {
        self.epochs_held
            .get_or_insert_with(|| self.ledger.epochs())
            .clone()
    }

    /// A receipt says its request is answered: stop working on it, drop later results for
    /// it, and the win it pays is no longer awaited.
    fn request_receipted(&mut self, r: &Signed<Receipt>) {
        let request = r.payload().request.id();
        self.deliveries.receipted(&request);
        let now = self.clock.now_ms();
        let receipt = r.payload();
        if let Some(actions) = self
            .peer
            .on_receipt(&receipt.request, receipt.result.payload(), now)
        {
            self.browsers.done(request);
            self.worker_actions(actions, now);
        }
    }

    /// A receipt counts for its worker's standing in assignment
    /// ([`dpow_protocol::standing`]); called once per request, for the receipt that counts.
    fn stand(&mut self, r: &Signed<Receipt>) {
        if let Some(flow) = self.peer.worker_mut() {
            flow.on_counted(r.payload());
        }
    }

    /// Take a verified receipt into the ledger and queue it for disk; `ack` happens once it is
    /// there. Copies already held are refused as replays.
    pub(super) fn take_receipt(&mut self, r: Signed<Receipt>, ack: Ack) -> Result<(), Rejected> {
        self.take_receipts(vec![(r, ack)])
            .pop()
            .unwrap_or_else(|| Err(Rejected::new(RejectReason::Undecodable, "no receipt")))
    }

    /// Take verified receipts as [`Self::take_receipt`] takes each, in order, with an answer
    /// for each; the books write them in as few atomic writes as they allow
    /// ([`crate::store::NodeLedger::ingest_all`]).
    pub(super) fn take_receipts(
        &mut self,
        list: Vec<(Signed<Receipt>, Ack)>,
    ) -> Vec<Result<(), Rejected>> {
        let mut out = Vec::with_capacity(list.len());
        let mut taking = Vec::with_capacity(list.len());
        let mut receipts = Vec::with_capacity(list.len());
        for (r, ack) in list {
            let stored = StoredReceipt {
                accepted_ms: r.payload().accepted_ms,
                id: r.id(),
                bytes: r.bytes().to_vec(),
            };
            self.request_receipted(&r);
            if self.light && !self.is_own(&r) {
                // Gossip hands a light node each receipt once; it keeps no ledger to count by.
                self.stand(&r);
                // Verified, so forwarded; a light node holds only the receipts that concern it
                // (this one may still say that another worker won a request it answered).
                self.own_receipt(
                    &r.payload().request.id(),
                    &r.payload().result.payload().worker,
                );
                self.acknowledge(stored, ack);
                out.push(Ok(()));
                continue;
            }
            if self.store.is_some()
                && let Err(e) = self.check_room()
            {
                out.push(Err(e));
                continue;
            }
            // Copies (gossip, DHT and catch-up bring the same receipt) then cost a hash.
            r.remember_verified(&self.signatures);
            taking.push((out.len(), stored, ack, r.clone()));
            receipts.push(r);
            // Answered once the books have.
            out.push(Ok(()));
        }
        let answers = self.ledger.ingest_all(receipts);
        for ((i, stored, ack, r), answer) in taking.into_iter().zip(answers) {
            out[i] = self.took(stored, ack, &r, answer);
        }
        out
    }

    /// What the books answered for receipt `r`: counted, flagged, or refused.
    fn took(
        &mut self,
        stored: StoredReceipt,
        ack: Ack,
        r: &Signed<Receipt>,
        answer: Result<Ingested, IngestError>,
    ) -> Result<(), Rejected> {
        let worker = r.payload().result.payload().worker;
        match answer {
            Ok(Ingested::Counted { request }) => {
                self.disk_takes_again();
                self.stand(r);
                self.books_changed(stored.accepted_ms);
                self.own_receipt(&request, &worker);
            }
            Ok(Ingested::Equivocation { proof, dropped }) => {
                self.disk_takes_again();
                self.books_changed(stored.accepted_ms);
                // Kept and forwarded: every node should hold the evidence.
                tracing::warn!(
                    service = %proof.service.to_string(),
                    request = %proof.request,
                    "service signed two receipts for one request: flagged"
                );
                if let Some(d) = dropped {
                    // The books deleted it in the same write.
                    self.books_changed(d.accepted_ms);
                }
            }
            Err(IngestError::Ledger(
                LedgerError::Duplicate { .. } | LedgerError::AlreadyProven { .. },
            )) => {
                return Err(Rejected::new(RejectReason::Replay, "receipt already held"));
            }
            Err(IngestError::Ledger(e)) => {
                return Err(Rejected::new(RejectReason::Undecodable, e.to_string()));
            }
            Err(IngestError::Pruned { .. }) => {
                // Books this node archived: a peer that has them still may offer them.
                return Err(Rejected::new(
                    RejectReason::Replay,
                    "receipt of books archived here",
                ));
            }
            Err(IngestError::Store(e)) => {
                // Disk full or failing: refuse what is new, keep serving what is held; the
                // receipt comes back by gossip, the DHT or catch-up once the disk takes it.
                // RocksDB resumes writes by itself once the space is back (it checks every
                // 5 s and wants a memtable's worth free, store/rocks.rs).
                match &mut self.disk_refusing {
                    Some((_, refused)) => *refused += 1,
                    None => {
                        tracing::error!(
                            receipt = %stored.id,
                            "the store cannot write, so new receipts are refused: {e}; the node keeps serving what it holds and takes receipts again once space is back (free at least 8 MiB, or mend the disk)"
                        );
                        self.disk_refusing = Some((Instant::now(), 1));
                    }
                }
                self.stats().store_refusals += 1;
                return Err(Rejected::new(
                    RejectReason::Busy,
                    "the disk refused the receipt",
                ));
            }
        }
        if self.store.is_none() {
            // No disk (a short-lived client): nothing to wait for.
            self.acknowledge(stored, ack);
            return Ok(());
        }
        self.unwritten_receipts += 1;
        let q = &mut self.receipts_queue;
        q.put.push((stored, ack));
        q.since.get_or_insert_with(Instant::now);
        if q.put.len() >= FLUSH_AT {
            self.flush_receipts();
        }
        Ok(())
    }

    /// Whether a receipt pays this node's worker or was signed by this node's service.
    fn is_own(&self, r: &Signed<Receipt>) -> bool {
        let p = r.payload();
        self.worker
            .as_ref()
            .is_some_and(|w| w.key.public() == p.result.payload().worker)
            || self
                .service_key
                .as_ref()
                .is_some_and(|k| k.public() == p.request.payload().service)
    }

    /// Ask the store task to make the receipts taken since the last call durable (one sync of
    /// the write-ahead log for them all: group commit); they are
    /// acknowledged when it reports them durable ([`Self::on_store_done`]).
    pub(super) fn flush_receipts(&mut self) {
        let q = std::mem::take(&mut self.receipts_queue);
        if q.put.is_empty() {
            return;
        }
        let (put, acks): (Vec<_>, Vec<_>) = q.put.into_iter().unzip();
        let write = crate::store::writer::Write::Receipts { put };
        self.store_write(write, acks);
    }

    pub(super) fn acknowledge(&mut self, stored: StoredReceipt, ack: Ack) {
        match ack {
            Ack::Gossip { id, from } => {
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(
                        &id,
                        &from,
                        gossipsub::MessageAcceptance::Accept,
                    );
                self.stats().accept("receipt");
                self.emit(|| Event::ReceiptStored {
                    receipt: stored.id,
                    from: ReceiptFrom::Gossip,
                });
            }
            Ack::Own => {
                self.emit(|| Event::ReceiptStored {
                    receipt: stored.id,
                    from: ReceiptFrom::Own,
                });
                let record = kad::Record::new(kad::RecordKey::new(&stored.id.0), stored.bytes);
                let _ = self.publish(Topic::Receipts, record.value.clone());
                if let Err(e) = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .put_record(record, kad::Quorum::One)
                {
                    tracing::warn!(receipt = %stored.id, "receipt not put into the DHT: {e:?}");
                }
            }
            Ack::Quiet => {}
        }
    }

    /// A record a peer asks this node to hold: it must be a valid receipt under its own id.
    /// One already held byte for byte is dropped unread (and costs no strike: a peer that
    /// published a receipt may well meet a node that already has it by gossip).
    pub(super) fn on_inbound_record(&mut self, from: PeerId, record: kad::Record) {
        {
            use kad::store::RecordStore;
            let held = self
                .swarm
                .behaviour_mut()
                .kad
                .store_mut()
                .get(&record.key)
                .is_some_and(|r| r.value == record.value);
            if held {
                self.stats().dht_duplicates += 1;
                return;
            }
        }
        // A receipt this node holds under the record's key needs no second check.
        let held = self
            .ledger
            .get(&MessageId(
                record.key.as_ref().try_into().unwrap_or([0; 32]),
            ))
            .filter(|r| r.bytes() == record.value.as_slice());
        if let Some(r) = held {
            return self.take_record(from, record, r);
        }
        let screened = self
            .validator
            .screen_receipt(&record.value, &self.registry, self.clock.now_ms())
            .and_then(|r| {
                if record.key.as_ref() == r.id().0.as_slice() {
                    Ok(r)
                } else {
                    Err(Rejected::new(
                        RejectReason::Undecodable,
                        "record key is not the receipt's id",
                    ))
                }
            });
        match screened {
            Ok(u) => self.verify(
                from,
                crate::net::verify::Job::Receipts(vec![u]),
                super::inbound::Origin::Record(record),
            ),
            Err(r) => self.on_rejected(from, &r),
        }
    }

    /// A verified receipt a peer put into the DHT: taken into the books, then kept as a
    /// record (on disk, the record store serves it from the books: nothing more is written).
    pub(super) fn take_record(&mut self, from: PeerId, record: kad::Record, r: Signed<Receipt>) {
        use kad::store::RecordStore;
        let receipt = r.id();
        match self.take_receipt(r, Ack::Quiet) {
            Ok(())
            | Err(Rejected {
                reason: RejectReason::Replay,
                ..
            }) => {}
            Err(r) => return self.on_rejected(from, &r),
        }
        match self.swarm.behaviour_mut().kad.store_mut().put(record) {
            Ok(()) => self.emit(|| Event::RecordKept { receipt }),
            Err(e) => tracing::debug!("kad record not kept: {e:?}"),
        }
    }

    /// Run one input through the replication machine ([`Replication`]) with these books,
    /// then carry out what it asks.
    pub(super) fn replicate(&mut self, input: impl FnOnce(&mut Replication<PeerId>, &mut Self)) {
        let mut machine = std::mem::take(&mut self.replication);
        input(&mut machine, self);
        let out = machine.take_outputs();
        self.replication = machine;
        for o in out {
            match o {
                Out::Send { peer, ask } => self.send_sync(peer, sync_request(ask)),
                Out::Ended { peer, got, first } => {
                    if got > 0 {
                        tracing::info!(%peer, receipts = got, "ledger caught up with peer");
                    }
                    if first {
                        self.synced_tx.send_modify(|n| *n += 1);
                    }
                    if first || got > 0 {
                        self.emit(|| Event::Synced {
                            peer,
                            receipts: got as u64,
                        });
                    }
                }
                Out::Misbehaved { peer, why } => {
                    self.on_rejected(peer, &Rejected::new(RejectReason::Undecodable, why));
                }
                Out::Incompatible { peer, epoch_ms } => {
                    tracing::warn!(%peer, epoch_ms, "peer uses another epoch length: no catch-up");
                }
                Out::Unvouched { peer, epochs } => {
                    // A checkpoint this node missed (published while it was cut off) may
                    // vouch for the peer's books: ask for them. An answer that does lists
                    // them in this catch-up, or starts one (`take_checkpoint`).
                    let now = self.clock.now_ms();
                    let ask = self
                        .checkpoints
                        .ask_about(epochs, MAX_SYNC_CHECKPOINTS, now);
                    if !ask.is_empty() {
                        tracing::debug!(%peer, epochs = ?ask, "final epochs differ with no checkpoint held to match: asking the peer's");
                        self.send_sync(peer, SyncRequest::Checkpoints { epochs: ask });
                    }
                }
            }
        }
    }

    /// Start comparing digests with `peer` (a no-op if already doing so).
    pub(super) fn start_catch_up(&mut self, peer: PeerId, first: bool) {
        self.replicate(|r, _| r.start(peer, first));
    }

    /// The digests computed at start-up are in: compare the peers' digests that came
    /// meanwhile (of catch-ups still running).
    pub(super) fn digests_warm(&mut self) {
        self.digests_warming = false;
        tracing::info!(epochs = self.digests.len(), "epoch digests computed");
        for (peer, epoch_ms, offered) in std::mem::take(&mut self.deferred_digests) {
            if self.replication.is_catching_up(&peer) {
                self.replicate(|r, books| r.on_digests(peer, epoch_ms, &offered, books));
            }
        }
    }

    /// Every `ledger_sync`: catch up with one connected peer, picked at random.
    pub(super) fn periodic_catch_up(&mut self) {
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        let now = self.clock.now_ms();
        self.replicate(|r, _| r.on_tick(now, &peers, now));
    }

    /// The answer to a ledger sync request (`Hello` is answered in `guard`, metered there
    /// like these).
    pub(super) fn answer_ledger(&mut self, request: SyncRequest) -> SyncResponse {
        // Hand what is queued to the store task first; the answer is the books as held.
        self.flush_receipts();
        match request {
            // Answered by `guard::hello_page`; never routed here.
            SyncRequest::Hello { .. } => SyncResponse::Busy { retry_ms: 0 },
            // Big books just opened: the digests are being computed off the event loop.
            SyncRequest::Digests if self.digests_warming => SyncResponse::Busy {
                retry_ms: super::WARMING_RETRY_MS,
            },
            SyncRequest::Digests => {
                // A light node's few receipts are held by full nodes too: it offers none.
                let epochs = if self.light {
                    Vec::new()
                } else {
                    self.epochs_held()
                };
                let skip = epochs.len().saturating_sub(MAX_SYNC_EPOCHS);
                SyncResponse::Digests {
                    registry: self.registry.heads(),
                    epoch_ms: self.ledger.epoch_ms(),
                    epochs: epochs
                        .into_iter()
                        .skip(skip)
                        .map(|(epoch, receipts)| EpochDigest {
                            epoch,
                            receipts: receipts as u64,
                            digest: Bytes(self.digest_of(epoch).to_vec()),
                        })
                        .collect(),
                }
            }
            SyncRequest::Ids { epoch, after } => {
                let after = page_after(after);
                // One page read from the index where it starts: a page costs the same deep
                // into an epoch as at its start, and while the epoch grows (a node asked by
                // the peer it catches up from, which catches up in return) as when it is still.
                let (page, more) = self.ledger.receipt_ids_page(epoch, after);
                SyncResponse::Ids {
                    ids: id_bytes(&page),
                    more,
                }
            }
            SyncRequest::Checkpoints { epochs } => {
                let mut epochs: Vec<u64> = epochs.into_iter().take(MAX_SYNC_CHECKPOINTS).collect();
                epochs.sort_unstable();
                epochs.dedup();
                let mut list: Vec<Bytes> = epochs
                    .iter()
                    .flat_map(|e| self.checkpoints.of_epoch(*e))
                    .map(|c| Bytes(c.bytes().to_vec()))
                    .take(MAX_SYNC_CHECKPOINTS)
                    .collect();
                let lens: Vec<usize> = list.iter().map(|b| b.0.len()).collect();
                list.truncate(super::guard::page(&lens, 0, self.guard.hello_page_bytes).end);
                SyncResponse::Checkpoints(list)
            }
            SyncRequest::Fetch { ids } => SyncResponse::Receipts(
                fetch_ids(&ids.0)
                    .iter()
                    .filter_map(|id| self.ledger.get_bytes(id))
                    .map(Bytes)
                    .collect(),
            ),
        }
    }

    /// A peer's answer during catch-up.
    pub(super) fn on_ledger_response(&mut self, peer: PeerId, response: SyncResponse) {
        match response {
            SyncResponse::Checkpoints(list) => {
                // Asked outside the catch-up's steps, answered whether or not it goes on.
                for b in list.iter().take(MAX_SYNC_CHECKPOINTS) {
                    match self.on_checkpoint(&b.0, peer) {
                        Err(r) if r.reason.penalise() => self.on_rejected(peer, &r),
                        _ => {}
                    }
                }
                self.replicate(|r, books| r.on_checkpoints(peer, books));
            }
            SyncResponse::Hello { .. } | SyncResponse::Busy { .. } => {}
            SyncResponse::Digests {
                epoch_ms,
                epochs,
                registry,
            } => {
                if self.registry.behind(&registry) {
                    self.repair_registry(peer);
                }
                // A digest of another length matches none and lists nothing.
                let offered: Vec<(u64, [u8; 32])> = epochs
                    .iter()
                    .take(MAX_SYNC_EPOCHS)
                    .filter_map(|d| {
                        Some((d.epoch, <[u8; 32]>::try_from(d.digest.0.as_slice()).ok()?))
                    })
                    .collect();
                if self.digests_warming {
                    // Compared once this node's own digests are in (`digests_warm`).
                    if self.deferred_digests.len() < super::MAX_DEFERRED_DIGESTS {
                        self.deferred_digests.push((peer, epoch_ms, offered));
                        return;
                    }
                    return self.replicate(|r, _| r.failed(peer));
                }
                self.replicate(|r, books| r.on_digests(peer, epoch_ms, &offered, books));
            }
            SyncResponse::Ids { ids, more } => {
                let Some(ids) = ids_of(&ids.0) else {
                    self.on_rejected(
                        peer,
                        &Rejected::new(RejectReason::Undecodable, "receipt id list"),
                    );
                    return self.replicate(|r, _| r.failed(peer));
                };
                self.replicate(|r, books| r.on_ids(peer, &ids, more, books));
            }
            SyncResponse::Receipts(list) => {
                if !self.replication.is_catching_up(&peer) {
                    return;
                }
                let n = list.len().min(MAX_SYNC_FETCH);
                self.verify_fetched(peer, &list[..n]);
            }
        }
    }

    /// `jobs` jobs of a catch-up answer from `peer` are about to go to the verification
    /// pool.
    pub(super) fn catch_up_verifying(&mut self, peer: PeerId, jobs: usize) {
        self.replicate(|r, _| r.on_receipts(peer, jobs));
    }

    /// One of them is back, `got` receipts taken: the catch-up goes on after the last.
    pub(super) fn catch_up_verified(&mut self, peer: PeerId, got: usize) {
        self.replicate(|r, _| r.verified(peer, got));
    }

    /// A sync request to `peer` failed: stop catching up with it.
    pub(super) fn on_sync_failure(
        &mut self,
        peer: PeerId,
        sent: Option<Sent>,
        error: &request_response::OutboundFailure,
    ) {
        tracing::debug!(%peer, "sync failed: {error}");
        match sent.map(|s| s.request) {
            Some(SyncRequest::Checkpoints { epochs }) => self.checkpoints_unanswered(&epochs),
            _ => self.end_catch_up(peer),
        }
    }

    /// The catch-up with `peer` is over (a request of it was given up).
    pub(super) fn end_catch_up(&mut self, peer: PeerId) {
        self.replicate(|r, _| r.failed(peer));
    }

    /// Look a receipt up in the DHT (or only in this node's record store).
    pub(super) fn dht_receipt(
        &mut self,
        id: MessageId,
        network: bool,
        reply: tokio::sync::oneshot::Sender<Option<Signed<Receipt>>>,
    ) {
        let key = kad::RecordKey::new(&id.0);
        if !network {
            use kad::store::RecordStore;
            let net = self.genesis.id;
            let found = self
                .swarm
                .behaviour_mut()
                .kad
                .store_mut()
                .get(&key)
                .and_then(|r| Signed::<Receipt>::decode(&r.value, &net).ok())
                .filter(|r| r.id() == id);
            let _ = reply.send(found);
            return;
        }
        let q = self.swarm.behaviour_mut().kad.get_record(key);
        self.dht_gets.insert(
            q,
            DhtGet {
                id,
                reply: Some(reply),
            },
        );
    }

    /// Progress of a DHT lookup: the first record that verifies as the receipt answers it.
    pub(super) fn on_dht_get(
        &mut self,
        q: kad::QueryId,
        r: Result<kad::GetRecordOk, kad::GetRecordError>,
        last: bool,
    ) {
        let Some(get) = self.dht_gets.get_mut(&q) else {
            return;
        };
        if let Ok(kad::GetRecordOk::FoundRecord(found)) = r
            && let Ok(receipt) = Signed::<Receipt>::decode(&found.record.value, &self.genesis.id)
            && receipt.id() == get.id
            && let Some(reply) = get.reply.take()
        {
            let _ = reply.send(Some(receipt));
            if let Some(mut query) = self.swarm.behaviour_mut().kad.query_mut(&q) {
                query.finish();
            }
        }
        if last
            && let Some(mut get) = self.dht_gets.remove(&q)
            && let Some(reply) = get.reply.take()
        {
            let _ = reply.send(None);
        }
    }
}

/// The sync request that asks for `ask`.
fn sync_request(ask: Ask) -> SyncRequest {
    match ask {
        Ask::Digests => SyncRequest::Digests,
        Ask::Ids { epoch, after } => SyncRequest::Ids {
            epoch,
            after: after.map(|a| Bytes(a.0.to_vec())),
        },
        Ask::Fetch(ids) => SyncRequest::Fetch {
            ids: id_bytes(&ids),
        },
    }
}

/// The node's books as replication reads and marks them.
impl replication::Books for EventLoop {
    fn epoch_ms(&self) -> u64 {
        self.ledger.epoch_ms()
    }

    fn digests(&mut self) -> Vec<(u64, [u8; 32])> {
        self.epochs_held()
            .into_iter()
            .map(|(e, _)| (e, self.digest_of(e)))
            .collect()
    }

    fn holds(&self, id: &MessageId) -> bool {
        self.ledger.contains(id)
    }

    fn missing(&self, ids: &[MessageId]) -> Vec<MessageId> {
        self.ledger.missing(ids)
    }

    fn rule(&self, epoch: u64) -> Rule {
        if self.ledger.is_pruned(epoch) {
            Rule::Skip
        } else if self.is_final(epoch) && !self.is_auditor() {
            Rule::Vouched
        } else {
            Rule::Take
        }
    }

    fn vouches(&self, epoch: u64, digest: &[u8; 32]) -> bool {
        self.checkpoints.matching(epoch, digest).is_some()
    }

    fn vouch(&mut self, ids: &[MessageId]) -> bool {
        tracing::info!(
            missing = ids.len(),
            "a final epoch's list matches its checkpoint: fetching"
        );
        self.checkpoints.vouch(ids.iter().copied())
    }

    fn adopt(&mut self, epoch: u64, digest: &[u8; 32]) -> bool {
        if !self.adopt_checkpoints {
            return false;
        }
        let Some(cp) = self.checkpoints.matching(epoch, digest).cloned() else {
            return false;
        };
        // Registrars that disagree about the epoch: fetch it and see (every receipt checked).
        if self
            .checkpoints
            .of_epoch(epoch)
            .any(|c| &c.payload().digest != digest)
        {
            return false;
        }
        if !self.ledger.adopt(cp.payload()) {
            return false;
        }
        self.digests.remove(&epoch);
        self.stale_digests.remove(&epoch);
        self.epochs_held = None;
        self.stats().epochs_adopted += 1;
        tracing::info!(
            epoch,
            receipts = cp.payload().receipts,
            registrar = %cp.payload().registrar,
            "a final epoch kept as its checkpoint (light ledger): none of its receipts fetched"
        );
        true
    }
}

impl EventLoop {
    /// Big books: bring cached digests up to date off the event loop. A digest reads every
    /// id of its epoch (0.3 s for a million), and an epoch taking receipts changes all the
    /// time, so instead of recomputing it at each question (every peer's catch-up, the
    /// statistics) the epochs changed since are recomputed on a blocking thread at most
    /// every [`DIGEST_REFRESH`], and questions meanwhile get the digest last computed. The
    /// statistics' `current` epoch is computed there too the first time. Takes a finished
    /// job's digests.
    pub(super) fn refresh_digests(&mut self, current: u64) {
        if let Some(job) = &self.digest_job {
            if !job.is_finished() {
                return;
            }
            let done = self
                .digest_job
                .take()
                .and_then(|j| j.now_or_never())
                .and_then(Result::ok)
                .unwrap_or_default();
            self.stats().digests_off_loop += done.len() as u64;
            for (epoch, digest) in done {
                // Not an epoch dropped from the cache meanwhile (adopted from a checkpoint).
                if self.digests_warming || self.digests.contains_key(&epoch) || epoch == current {
                    self.digests.insert(epoch, digest);
                }
            }
            if self.digests_warming {
                self.digests_warm();
            }
        }
        if !self.digests.contains_key(&current) {
            self.stale_digests.insert(current);
        }
        if self.stale_digests.is_empty() || self.digest_job_at.elapsed() < DIGEST_REFRESH {
            return;
        }
        let epochs = std::mem::take(&mut self.stale_digests);
        let jobs: Option<Vec<_>> = epochs
            .iter()
            .map(|e| self.ledger.epoch_digest_job(*e).map(|job| (*e, job)))
            .collect();
        let Some(jobs) = jobs else {
            // Books in memory: computed when next asked for.
            for e in epochs {
                self.digests.remove(&e);
            }
            if self.digests_warming {
                self.digests_warm();
            }
            return;
        };
        self.digest_job_at = Instant::now();
        self.digest_job = Some(tokio::task::spawn_blocking(move || {
            jobs.into_iter().map(|(e, job)| (e, job())).collect()
        }));
    }
}
