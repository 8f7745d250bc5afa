//! The event loop's guard: what peers may cost it ([`super::super::budget`]).
//!
//! - **Sync answers** are metered per peer (requests and bytes per second). A request over
//!   budget is answered [`SyncResponse::Busy`] with a retry hint, costs the asker a strike and
//!   is counted (`sync_throttled`). Every answer's bytes are counted (`sync_answered_bytes`).
//! - **`Hello` is paged**: registry entries, statuses and checkpoints as one sequence, at most
//!   `hello_page_bytes` of envelopes per answer; the asking side follows `next` until done.
//! - **Asking**: every sync request this node sends is remembered until answered, so a `Busy`
//!   answer is retried after its hint (a few times), then given up like a failure.
//! - **Strikes**: every ignored or rejected message costs its sender; a penalised rejection
//!   weighs `1 / max_penalties` of the budget. A peer out of strikes is blocked (disconnected
//!   and refused) for `block_for`, then let back in.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::request_response::{OutboundRequestId, ResponseChannel};

use super::super::behaviour::{MAX_SYNC_ITEMS, SyncRequest, SyncResponse, serde_bytes_vec::Bytes};
use super::super::budget::{Blocks, BudgetConfig, Budgets, Strike};
use super::super::events::Event;
use super::books::{self, fetch_ids};
use super::{EventLoop, FetchDone, MAX_FETCH_JOBS, checkpoints};

/// Times one request is asked again after `Busy` answers before the node gives up on it.
const MAX_BUSY_RETRIES: u8 = 5;
/// Retries waiting at once; past it a `Busy` answer ends the exchange.
const MAX_RETRIES_QUEUED: usize = 1024;
/// Sync requests of this node awaiting their answers (each also has a libp2p timeout).
const MAX_SENT_TRACKED: usize = 4096;
/// `Hello` pages followed from one peer before the node stops asking it for more.
pub(super) const MAX_HELLO_PAGES: u32 = 512;
/// Bytes an answer costs beyond its envelopes (framing, per item).
const OVERHEAD_PER_ITEM: usize = 8;

/// A sync request this node sent, until its answer comes.
pub(super) struct Sent {
    pub(super) peer: PeerId,
    pub(super) request: SyncRequest,
    tries: u8,
    /// `Hello` pages taken from this peer so far in this walk.
    pub(super) pages: u32,
    /// A `Hello` walk asked because the peer's digests showed registry entries this node
    /// lacks, not the one on connecting: its end starts nothing.
    pub(super) repair: bool,
}

/// The guard's state.
pub(super) struct Guard {
    budgets: Budgets<PeerId>,
    blocks: Blocks<PeerId>,
    /// Strikes one penalised rejection costs.
    penalty_cost: f64,
    pub(super) hello_page_bytes: usize,
    sent: HashMap<OutboundRequestId, Sent>,
    retries: VecDeque<(Instant, Sent)>,
}

impl Guard {
    pub(super) fn new(config: BudgetConfig, max_penalties: u32, hello_page_bytes: usize) -> Guard {
        // Just over `burst / max_penalties`: `max_penalties` of them empty the bucket even
        // after it refills a little between them.
        let penalty_cost = config.strikes.burst / (f64::from(max_penalties.max(1)) - 0.5);
        Guard {
            blocks: Blocks::new(config.max_blocked),
            budgets: Budgets::new(config),
            penalty_cost,
            hello_page_bytes: hello_page_bytes.max(1),
            sent: HashMap::new(),
            retries: VecDeque::new(),
        }
    }

    /// When the next retry or unblocking is due.
    pub(super) fn next_due(&self) -> Option<Instant> {
        let retry = self.retries.iter().map(|(t, _)| *t).min();
        match (retry, self.blocks.next_due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The positions of `lens` (item sizes) that one page starting at `from` holds: items in
/// order while their sizes fit `max_bytes`, and always at least one.
pub(super) fn page(lens: &[usize], from: usize, max_bytes: usize) -> Range<usize> {
    let start = from.min(lens.len());
    let mut end = start;
    let mut bytes = 0usize;
    while end < lens.len() {
        let next = bytes.saturating_add(lens[end]);
        if next > max_bytes && end > start {
            break;
        }
        bytes = next;
        end += 1;
    }
    start..end
}

/// The bytes an answer takes on the wire, near enough to meter it.
fn answer_bytes(r: &SyncResponse) -> usize {
    let list = |l: &[Bytes]| {
        l.iter()
            .map(|b| b.0.len() + OVERHEAD_PER_ITEM)
            .sum::<usize>()
    };
    16 + match r {
        SyncResponse::Hello {
            registry,
            statuses,
            checkpoints,
            ..
        } => list(registry) + list(statuses) + list(checkpoints),
        SyncResponse::Digests {
            epochs, registry, ..
        } => epochs.len() * (48 + OVERHEAD_PER_ITEM) + registry.len() * 9,
        SyncResponse::Ids { ids, .. } => ids.0.len(),
        SyncResponse::Receipts(l) | SyncResponse::Checkpoints(l) => list(l),
        SyncResponse::Busy { .. } => 0,
    }
}

impl EventLoop {
    /// Send a sync request to `peer`, remembered until its answer comes.
    pub(super) fn send_sync(&mut self, peer: PeerId, request: SyncRequest) {
        self.send_tracked(Sent {
            peer,
            request,
            tries: 0,
            pages: 0,
            repair: false,
        });
    }

    /// `peer` has applied registry entries this node lacks (its digests said so): walk its
    /// `Hello` pages again, which list its registry first, unless a walk with it is under way.
    pub(super) fn repair_registry(&mut self, peer: PeerId) {
        let walking = |s: &Sent| s.peer == peer && matches!(s.request, SyncRequest::Hello { .. });
        if self.guard.sent.values().any(walking)
            || self.guard.retries.iter().any(|(_, s)| walking(s))
        {
            return;
        }
        tracing::info!(%peer, "the peer holds registry entries this node lacks: asking for them");
        self.registry_repairs += 1;
        self.send_tracked(Sent {
            peer,
            request: SyncRequest::Hello { from: 0 },
            tries: 0,
            pages: 0,
            repair: true,
        });
    }

    fn send_tracked(&mut self, sent: Sent) {
        let id = self
            .swarm
            .behaviour_mut()
            .sync
            .send_request(&sent.peer, sent.request.clone());
        if self.guard.sent.len() < MAX_SENT_TRACKED {
            self.guard.sent.insert(id, sent);
        }
    }

    /// The answer (or failure) to one of this node's requests came: what it asked.
    pub(super) fn sync_answered(&mut self, id: &OutboundRequestId) -> Option<Sent> {
        self.guard.sent.remove(id)
    }

    /// A peer's request: answered within its budget, else `Busy`.
    pub(super) fn answer_sync(
        &mut self,
        peer: PeerId,
        request: SyncRequest,
        channel: ResponseChannel<SyncResponse>,
    ) {
        let now = Instant::now();
        if !self.guard.budgets.admit(peer, now) {
            let retry_ms = self.guard.budgets.retry_after(peer, now).as_millis() as u64;
            self.stats().sync_throttled += 1;
            tracing::debug!(%peer, retry_ms, "sync request over budget: busy");
            self.strike(peer, false);
            let busy = SyncResponse::Busy {
                retry_ms: retry_ms.max(1),
            };
            return self.respond(peer, channel, busy);
        }
        if self.catch_up_ledger && matches!(request, SyncRequest::Digests) {
            // The peer is catching up with this node: catch up with it in return.
            let at = self.clock.now_ms();
            self.replicate(|r, _| r.on_asked(peer, at));
        }
        let (r, channel) = match request {
            SyncRequest::Hello { from } => (self.hello_page(from), channel),
            request @ (SyncRequest::Fetch { .. } | SyncRequest::Ids { .. }) => {
                match self.read_off_loop(peer, request, channel) {
                    Ok(()) => return,
                    Err((request, channel)) => (self.answer_ledger(request), channel),
                }
            }
            other => (self.answer_ledger(other), channel),
        };
        self.send_answer(peer, channel, r, now);
    }

    /// Send an answer within the peer's budget: its bytes count against it.
    fn send_answer(
        &mut self,
        peer: PeerId,
        channel: ResponseChannel<SyncResponse>,
        r: SyncResponse,
        now: Instant,
    ) {
        let bytes = answer_bytes(&r);
        self.guard.budgets.spend_bytes(peer, bytes, now);
        {
            let mut s = self.stats();
            s.sync_answered += 1;
            s.sync_answered_bytes += bytes as u64;
        }
        self.respond(peer, channel, r);
    }

    /// Send `r` down `channel` (a peer that left is only logged).
    fn respond(&mut self, peer: PeerId, channel: ResponseChannel<SyncResponse>, r: SyncResponse) {
        if self
            .swarm
            .behaviour_mut()
            .sync
            .send_response(channel, r)
            .is_err()
        {
            tracing::debug!(%peer, "sync answer not sent: the peer left");
        }
    }

    /// Books on disk read a `Fetch` (up to 512 receipts, two look-ups each) or an `Ids` page
    /// (up to 4,096 ids off an epoch's index) on a blocking thread, at most
    /// [`MAX_FETCH_JOBS`] at once, and answer when it is done ([`Self::fetched`]); otherwise
    /// (books in memory, too many reading, another request) the request comes back to be
    /// answered at once.
    fn read_off_loop(
        &mut self,
        peer: PeerId,
        request: SyncRequest,
        channel: ResponseChannel<SyncResponse>,
    ) -> Result<(), (SyncRequest, ResponseChannel<SyncResponse>)> {
        if self.fetch_jobs.len() >= MAX_FETCH_JOBS {
            return Err((request, channel));
        }
        let fetch = matches!(request, SyncRequest::Fetch { .. });
        let job: Box<dyn FnOnce() -> SyncResponse + Send> = match request {
            SyncRequest::Fetch { ids } => match self.ledger.receipts_job(fetch_ids(&ids.0)) {
                Some(job) => {
                    Box::new(move || SyncResponse::Receipts(job().into_iter().map(Bytes).collect()))
                }
                None => return Err((SyncRequest::Fetch { ids }, channel)),
            },
            SyncRequest::Ids { epoch, after } => {
                match self
                    .ledger
                    .receipt_ids_page_job(epoch, books::page_after(after.clone()))
                {
                    Some(job) => Box::new(move || {
                        let (page, more) = job();
                        SyncResponse::Ids {
                            ids: books::id_bytes(&page),
                            more,
                        }
                    }),
                    None => return Err((SyncRequest::Ids { epoch, after }, channel)),
                }
            }
            other => return Err((other, channel)),
        };
        // Hand what is queued to the store task first; the answer is the books as held.
        self.flush_receipts();
        self.fetch_jobs
            .push(tokio::task::spawn_blocking(move || (peer, channel, job())));
        let mut s = self.stats();
        if fetch {
            s.fetches_off_loop += 1;
        } else {
            s.ids_pages_off_loop += 1;
        }
        Ok(())
    }

    /// A `Fetch` or `Ids` read off the event loop is done: answer it.
    pub(super) fn fetched(&mut self, done: Result<FetchDone, tokio::task::JoinError>) {
        match done {
            Ok((peer, channel, r)) => self.send_answer(peer, channel, r, Instant::now()),
            Err(e) => tracing::error!("reading the books for a peer's request: {e}"),
        }
    }

    /// One `Hello` page from position `from`.
    fn hello_page(&mut self, from: u64) -> SyncResponse {
        let now = self.clock.now_ms();
        let registry: Vec<Bytes> = self
            .registry
            .entries()
            .into_iter()
            .take(MAX_SYNC_ITEMS)
            .map(|e| Bytes(e.bytes().to_vec()))
            .collect();
        let mut live = self.live_statuses(now);
        // A stable order, so that positions mean the same from one page to the next.
        live.sort_by_key(|s| s.payload().worker.0);
        let statuses: Vec<&[u8]> = live
            .into_iter()
            .take(MAX_SYNC_ITEMS)
            .map(|s| s.bytes())
            .collect();
        let checkpoints: Vec<Bytes> = self
            .checkpoints
            .newest(checkpoints::HELLO_CHECKPOINTS)
            .into_iter()
            .map(|c| Bytes(c.bytes().to_vec()))
            .collect();
        let lens: Vec<usize> = registry
            .iter()
            .map(|b| b.0.len())
            .chain(statuses.iter().map(|b| b.len()))
            .chain(checkpoints.iter().map(|b| b.0.len()))
            .collect();
        let from = usize::try_from(from).unwrap_or(usize::MAX);
        let range = page(&lens, from, self.guard.hello_page_bytes);
        let (r, s) = (registry.len(), statuses.len());
        let pick = |a: usize, b: usize| range.start.clamp(a, b)..range.end.clamp(a, b);
        let (ri, si, ci) = (pick(0, r), pick(r, r + s), pick(r + s, lens.len()));
        SyncResponse::Hello {
            next: (range.end < lens.len()).then_some(range.end as u64),
            registry: registry[ri].to_vec(),
            statuses: statuses[si.start - r..si.end - r]
                .iter()
                .map(|b| Bytes(b.to_vec()))
                .collect(),
            checkpoints: checkpoints[ci.start - r - s..ci.end - r - s].to_vec(),
        }
    }

    /// After a `Hello` page from `peer` (asked as `sent`): ask for the next one, if any.
    /// Returns `true` when the walk is over.
    pub(super) fn next_hello_page(&mut self, sent: Option<Sent>, next: Option<u64>) -> bool {
        let Some(sent) = sent else {
            return true;
        };
        let from = match sent.request {
            SyncRequest::Hello { from } => from,
            _ => return true,
        };
        match next {
            Some(n) if n > from && sent.pages + 1 < MAX_HELLO_PAGES => {
                self.send_tracked(Sent {
                    peer: sent.peer,
                    request: SyncRequest::Hello { from: n },
                    tries: 0,
                    pages: sent.pages + 1,
                    repair: sent.repair,
                });
                false
            }
            _ => true,
        }
    }

    /// `peer` answered `Busy`: ask again after its hint, or give up.
    pub(super) fn on_busy(&mut self, peer: PeerId, sent: Option<Sent>, retry_ms: u64) {
        tracing::debug!(%peer, retry_ms, "peer busy");
        let Some(mut sent) = sent else {
            return;
        };
        sent.tries += 1;
        if sent.tries > MAX_BUSY_RETRIES || self.guard.retries.len() >= MAX_RETRIES_QUEUED {
            self.sync_given_up(sent);
            return;
        }
        let wait = Duration::from_millis(retry_ms.clamp(10, 60_000));
        self.guard.retries.push_back((Instant::now() + wait, sent));
    }

    /// A request that will not be answered: end what it was part of.
    fn sync_given_up(&mut self, sent: Sent) {
        tracing::debug!(peer = %sent.peer, "sync request given up");
        match sent.request {
            // The first sync counts as done (registry and statuses also come by gossip).
            SyncRequest::Hello { .. } if !sent.repair => self.hello_done(sent.peer),
            SyncRequest::Hello { .. } => {}
            // Asked beside a catch-up, not as one of its steps.
            SyncRequest::Checkpoints { epochs } => self.checkpoints_unanswered(&epochs),
            _ => self.end_catch_up(sent.peer),
        }
    }

    /// On every tick: retries due, and blocks that have ended.
    pub(super) fn guard_tick(&mut self) {
        let now = Instant::now();
        let mut keep = VecDeque::new();
        while let Some((at, sent)) = self.guard.retries.pop_front() {
            if at > now {
                keep.push_back((at, sent));
            } else if self.swarm.is_connected(&sent.peer) {
                self.send_tracked(sent);
            } else {
                self.sync_given_up(sent);
            }
        }
        self.guard.retries = keep;
        for peer in self.guard.blocks.expired(now) {
            self.unblock(peer);
        }
        let mut s = self.stats();
        s.budget_peers = self.guard.budgets.len();
        s.peers_blocked_now = self.guard.blocks.len();
    }

    /// `peer` sent something ignored (or, if `penalised`, rejected): it costs strikes, and
    /// a peer out of them is blocked for a while.
    pub(super) fn strike(&mut self, peer: PeerId, penalised: bool) {
        let cost = if penalised {
            self.guard.penalty_cost
        } else {
            1.0
        };
        if self.guard.budgets.strike(peer, cost, Instant::now()) == Strike::Exhausted {
            self.block_for_a_while(peer);
        }
    }

    fn block_for_a_while(&mut self, peer: PeerId) {
        let block_for = self.guard.budgets.config().block_for;
        tracing::warn!(%peer, ?block_for, "blocking peer: too many ignored or invalid messages");
        self.swarm.behaviour_mut().blocked.block_peer(peer);
        if let Some(lifted) = self.guard.blocks.block(peer, Instant::now() + block_for) {
            self.unblock(lifted);
        }
        {
            let mut s = self.stats();
            s.peers_blocked += 1;
            s.peers_blocked_now = self.guard.blocks.len();
            let p = peer.to_string();
            if !s.blocked_peers.contains(&p) {
                s.blocked_peers.push(p);
            }
        }
        // Told after the statistics say it, so a reader of the event finds them agreeing.
        self.emit(|| Event::PeerBlocked {
            peer,
            for_s: block_for.as_secs(),
        });
    }

    fn unblock(&mut self, peer: PeerId) {
        tracing::info!(%peer, "block lifted");
        self.swarm.behaviour_mut().blocked.unblock_peer(peer);
        let p = peer.to_string();
        self.stats().blocked_peers.retain(|b| *b != p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_hold_what_fits_and_at_least_one_item() {
        let lens = [100, 100, 100, 500, 10, 10];
        assert_eq!(page(&lens, 0, 250), 0..2);
        assert_eq!(page(&lens, 2, 250), 2..3);
        // An item over the page size goes alone.
        assert_eq!(page(&lens, 3, 250), 3..4);
        assert_eq!(page(&lens, 4, 250), 4..6);
        assert_eq!(page(&lens, 6, 250), 6..6);
        assert_eq!(page(&lens, usize::MAX, 250), 6..6);
        // Following the pages visits every item once.
        let (mut from, mut seen) = (0, 0);
        while from < lens.len() {
            let r = page(&lens, from, 250);
            seen += r.len();
            from = r.end;
        }
        assert_eq!(seen, lens.len());
    }

    #[test]
    fn answer_sizes_count_every_envelope() {
        let r = SyncResponse::Receipts(vec![Bytes(vec![0; 300]), Bytes(vec![0; 200])]);
        assert_eq!(answer_bytes(&r), 16 + 500 + 2 * OVERHEAD_PER_ITEM);
        let busy = SyncResponse::Busy { retry_ms: 5 };
        assert_eq!(answer_bytes(&busy), 16);
    }
}
