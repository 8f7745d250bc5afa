//! Ledger replication as one sans-IO state machine: catching up with peers by comparing
//! epoch digests, listing the receipt ids of the epochs that differ, and fetching the
//! receipts this node lacks.
//!
//! A catch-up with a peer runs in three steps, each one request and its answer:
//! 1. [`Ask::Digests`]: the digest of every epoch the peer holds. Epochs whose digest equals
//!    this node's are done. Of the others, [`Books::rule`] says which are taken: an archived
//!    (pruned) epoch takes nothing more; a final epoch is taken only when a registrar's
//!    checkpoint held vouches for the peer's digest ([`Books::vouches`]), and the ones no
//!    checkpoint matches are reported ([`Out::Unvouched`]) so the node can ask the peer for
//!    the checkpoints it missed ([`Replication::on_checkpoints`] then lists them too).
//! 2. [`Ask::Ids`]: the ids of one differing epoch, a page at a time. Ids this node lacks are
//!    wanted. The list of a vouched epoch is first gathered whole and checked against the
//!    checkpoint's digest: a peer whose list does not match is reported
//!    ([`Out::Misbehaved`]) and the catch-up with it ends.
//! 3. [`Ask::Fetch`]: the wanted receipts, [`MAX_SYNC_FETCH`] at a time. Their signatures
//!    are checked by the caller, in jobs ([`Replication::on_receipts`],
//!    [`Replication::verified`]); while the jobs of one answer are checked the next page is
//!    already asked for, so transfer and verification overlap.
//!
//! A light ledger adopts a final epoch that a checkpoint vouches for instead of listing it
//! ([`Books::adopt`]): it keeps the checkpoint's digest, count and credits, and fetches none
//! of the epoch's receipts.
//!
//! When nothing is left to list or fetch the catch-up ends ([`Out::Ended`]). Besides the
//! catch-up started on connecting (`first`), one connected peer is picked every
//! `every_ms` ([`Replication::on_tick`]), and a peer that asks this node for its digests is
//! caught up with in return unless that happened within the last `every_ms`
//! ([`Replication::on_asked`]): each periodic catch-up then moves receipts both ways, and two
//! nodes never keep restarting each other's.
//!
//! The machine holds no ledger: it reads and marks the node's books through [`Books`]. It
//! sends nothing and reads no clock; the node's event loop and the simulation translate its
//! [`Out`]puts into requests and feed the answers back, so both run this code.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use crate::MessageId;

/// Most epochs in one digest list.
pub const MAX_SYNC_EPOCHS: usize = 4096;
/// Most receipt ids in one answer (128 KiB).
pub const MAX_SYNC_IDS: usize = 4096;
/// Most receipts fetched in one request (~256 KiB).
pub const MAX_SYNC_FETCH: usize = 512;
/// Verification jobs of a catch-up's answers still waiting past which nothing more is asked
/// ahead: one answer's worth in the node (512 receipts in jobs of 32), so at most about two
/// answers wait, however fast the peer answers.
pub const FETCH_AHEAD_JOBS: usize = 16;
/// Most ids of one vouched epoch gathered before it is checked against its checkpoint; a
/// longer list is dropped unchecked (and the node's own bound on ids vouched for).
pub const MAX_VOUCHED: usize = 1 << 20;
/// Most catch-ups at once (one per peer; there are fewer connections than this).
pub const MAX_CATCH_UPS: usize = 1024;
/// Most peers remembered as caught up with lately ([`Replication::on_asked`]).
pub const MAX_RECENT: usize = 4096;

/// One request of a catch-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ask {
    /// The digest of every epoch the peer holds.
    Digests,
    /// The ids of the peer's receipts of `epoch`, ascending, after `after`.
    Ids {
        /// The epoch.
        epoch: u64,
        /// The last id of the previous page.
        after: Option<MessageId>,
    },
    /// These receipts (at most [`MAX_SYNC_FETCH`]).
    Fetch(Vec<MessageId>),
}

/// How an epoch whose digest differs from the peer's is treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Listed, and whatever is missing fetched.
    Take,
    /// Archived here: nothing more is taken.
    Skip,
    /// Closed books: listed only when a checkpoint vouches for the peer's digest.
    Vouched,
}

/// The node's books, as replication reads and marks them.
pub trait Books {
    /// The epoch length this node counts in.
    fn epoch_ms(&self) -> u64;
    /// The digest of every epoch this node holds receipts in.
    fn digests(&mut self) -> Vec<(u64, [u8; 32])>;
    /// Whether this node holds the receipt.
    fn holds(&self, id: &MessageId) -> bool;
    /// Those of `ids` this node does not hold, in order: [`Books::holds`] of each, unless
    /// the books answer a page at once more cheaply (the node's on disk: one batched read).
    fn missing(&self, ids: &[MessageId]) -> Vec<MessageId> {
        ids.iter().filter(|id| !self.holds(id)).copied().collect()
    }
    /// How a differing epoch is treated.
    fn rule(&self, epoch: u64) -> Rule;
    /// Whether a checkpoint held vouches for `digest` as the books of `epoch`.
    fn vouches(&self, epoch: u64, digest: &[u8; 32]) -> bool;
    /// The receipts of a vouched list are about to be fetched: they may be taken into the
    /// closed epoch. `false` when no more can be marked (the fetch is skipped).
    fn vouch(&mut self, ids: &[MessageId]) -> bool;
    /// A light ledger: keep final `epoch`, whose peer digest `digest` a checkpoint held
    /// vouches for, as that checkpoint alone (its digest, count and credits), so none of its
    /// receipts is listed or fetched. `true` when it did; books that keep every receipt
    /// (the default) never do.
    fn adopt(&mut self, epoch: u64, digest: &[u8; 32]) -> bool {
        let _ = (epoch, digest);
        false
    }
}

/// What the node must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Out<P> {
    /// Send this request to the peer.
    Send {
        /// The peer.
        peer: P,
        /// The request.
        ask: Ask,
    },
    /// The catch-up with the peer is over.
    Ended {
        /// The peer.
        peer: P,
        /// Receipts taken from it.
        got: usize,
        /// It was the first after connecting.
        first: bool,
    },
    /// The peer's answer broke the protocol; the catch-up with it has ended.
    Misbehaved {
        /// The peer.
        peer: P,
        /// What it did.
        why: String,
    },
    /// The peer keeps its books in other terms (another epoch length): no catch-up with it
    /// (it has ended). Not a fault of the peer's messages.
    Incompatible {
        /// The peer.
        peer: P,
        /// Its epoch length.
        epoch_ms: u64,
    },
    /// Final epochs whose digest from the peer no checkpoint held matches: the node may ask
    /// the peer for its checkpoints of them.
    Unvouched {
        /// The peer.
        peer: P,
        /// The epochs and the peer's digests.
        epochs: Vec<(u64, [u8; 32])>,
    },
}

/// Catching up with one peer.
#[derive(Debug, Default)]
struct CatchUp {
    /// Epochs whose digests differ, still to list.
    epochs: VecDeque<u64>,
    /// The epoch being listed, and the last id seen when the list continues.
    listing: Option<(u64, Option<MessageId>)>,
    /// Ids the peer holds and this node lacks.
    want: VecDeque<MessageId>,
    /// Receipts taken from this peer so far.
    got: usize,
    /// Jobs of its answers still being verified.
    verifying: usize,
    /// `Fetch` requests sent and not yet answered (one runs ahead while an answer is
    /// verified).
    fetching: usize,
    /// The next page of ids was asked for ahead, while receipts are verified, and has not
    /// come yet.
    listing_ahead: bool,
    /// The first catch-up after connecting.
    first: bool,
    /// Final epochs to list whole before fetching, with the checkpointed digest the list
    /// must have.
    vouching: HashMap<u64, [u8; 32]>,
    /// The list so far of the final epoch being listed.
    listed: Vec<MessageId>,
    /// The peer's digests of final epochs that no checkpoint held matched.
    unmatched: HashMap<u64, [u8; 32]>,
}

/// Every catch-up this node runs: see the [module docs](self).
#[derive(Debug)]
pub struct Replication<P> {
    catch_ups: HashMap<P, CatchUp>,
    every_ms: u64,
    next_ms: Option<u64>,
    /// The latest time passed in.
    now_ms: u64,
    /// When a catch-up with each peer last started.
    recent: HashMap<P, u64>,
    out: Vec<Out<P>>,
}

impl<P> Default for Replication<P> {
    fn default() -> Self {
        Replication::new(60_000)
    }
}

impl<P> Replication<P> {
    /// A machine that catches up with one peer every `every_ms`.
    pub fn new(every_ms: u64) -> Self {
        Replication {
            catch_ups: HashMap::new(),
            every_ms,
            next_ms: None,
            now_ms: 0,
            recent: HashMap::new(),
            out: Vec::new(),
        }
    }

    /// The outputs so far, in order.
    pub fn take_outputs(&mut self) -> Vec<Out<P>> {
        std::mem::take(&mut self.out)
    }

    /// Catch-ups running.
    pub fn running(&self) -> usize {
        self.catch_ups.len()
    }

    /// When [`Replication::on_tick`] next has something to do (ms).
    pub fn next_tick_ms(&self) -> Option<u64> {
        self.next_ms
    }
}

impl<P: Copy + Eq + Hash> Replication<P> {
    /// Whether a catch-up with `peer` runs.
    pub fn is_catching_up(&self, peer: &P) -> bool {
        self.catch_ups.contains_key(peer)
    }

    /// Start comparing digests with `peer` (a no-op if already doing so, but for `first`).
    pub fn start(&mut self, peer: P, first: bool) {
        if let Some(c) = self.catch_ups.get_mut(&peer) {
            c.first |= first;
            return;
        }
        if self.recent.len() < MAX_RECENT {
            self.recent.insert(peer, self.now_ms);
        }
        if self.catch_ups.len() >= MAX_CATCH_UPS {
            // Never with real connection limits; a first catch-up still counts as done.
            if first {
                self.out.push(Out::Ended {
                    peer,
                    got: 0,
                    first,
                });
            }
            return;
        }
        self.catch_ups.insert(
            peer,
            CatchUp {
                first,
                ..CatchUp::default()
            },
        );
        self.out.push(Out::Send {
            peer,
            ask: Ask::Digests,
        });
    }

    /// The time is `now_ms`: every `every_ms` (the first period counted from the first
    /// tick), catch up with `peers[roll % len]`.
    pub fn on_tick(&mut self, now_ms: u64, peers: &[P], roll: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        let next = *self.next_ms.get_or_insert(now_ms + self.every_ms);
        if now_ms < next {
            return;
        }
        self.next_ms = Some(now_ms + self.every_ms);
        let every = self.every_ms;
        self.recent
            .retain(|_, at| now_ms.saturating_sub(*at) < every);
        if peers.is_empty() {
            return;
        }
        let pick = (roll % peers.len() as u64) as usize;
        self.start(peers[pick], false);
    }

    /// `peer` asked this node for its digests at `now_ms` (it is catching up): catch up with
    /// it in return, unless a catch-up with it runs or started within the last `every_ms`.
    pub fn on_asked(&mut self, peer: P, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        if self.catch_ups.contains_key(&peer) {
            return;
        }
        let lately = self
            .recent
            .get(&peer)
            .is_some_and(|at| now_ms.saturating_sub(*at) < self.every_ms);
        if lately || self.recent.len() >= MAX_RECENT {
            return;
        }
        self.start(peer, false);
    }

    /// The request to `peer` failed or was given up: the catch-up with it ends.
    pub fn failed(&mut self, peer: P) {
        self.end(peer);
    }

    /// The peer's digests. An epoch length other than this node's ends the catch-up.
    pub fn on_digests(
        &mut self,
        peer: P,
        epoch_ms: u64,
        offered: &[(u64, [u8; 32])],
        books: &mut impl Books,
    ) {
        if !self.catch_ups.contains_key(&peer) {
            return;
        }
        if epoch_ms != books.epoch_ms() {
            self.out.push(Out::Incompatible { peer, epoch_ms });
            return self.end(peer);
        }
        let mine: HashMap<u64, [u8; 32]> = books.digests().into_iter().collect();
        let mut vouching = HashMap::new();
        let mut differ = VecDeque::new();
        let mut unmatched = Vec::new();
        for (epoch, digest) in offered.iter().take(MAX_SYNC_EPOCHS) {
            if mine.get(epoch) == Some(digest) {
                continue;
            }
            match books.rule(*epoch) {
                Rule::Skip => continue,
                Rule::Take => {}
                Rule::Vouched if books.vouches(*epoch, digest) => {
                    if books.adopt(*epoch, digest) {
                        continue;
                    }
                    vouching.insert(*epoch, *digest);
                }
                Rule::Vouched => {
                    unmatched.push((*epoch, *digest));
                    continue;
                }
            }
            if !differ.contains(epoch) {
                differ.push_back(*epoch);
            }
        }
        if let Some(c) = self.catch_ups.get_mut(&peer) {
            c.epochs = differ;
            c.vouching = vouching;
            c.unmatched = unmatched.iter().copied().collect();
        }
        if !unmatched.is_empty() {
            self.out.push(Out::Unvouched {
                peer,
                epochs: unmatched,
            });
        }
        self.advance(peer);
    }

    /// A page of the peer's ids of the epoch being listed; `more` when more follow.
    pub fn on_ids(&mut self, peer: P, ids: &[MessageId], more: bool, books: &mut impl Books) {
        let epoch_ms = books.epoch_ms();
        let Some(c) = self.catch_ups.get_mut(&peer) else {
            return;
        };
        let Some((epoch, after)) = c.listing else {
            // Not asked for: nothing to add it to.
            return;
        };
        c.listing_ahead = false;
        let ids = &ids[..ids.len().min(MAX_SYNC_IDS)];
        // A page lists ids in ascending order, after the last one of the page before: a peer
        // that repeats or reorders them could keep a catch-up going forever.
        let ascending = ids.windows(2).all(|w| w[0] < w[1]);
        let onward = match (after, ids.first()) {
            (Some(a), Some(first)) => *first > a,
            _ => true,
        };
        if !ascending || !onward {
            return self.misbehaved(
                peer,
                format!("its receipt ids of epoch {epoch} are not in ascending order"),
            );
        }
        c.listing = match ids.last() {
            Some(last) if more => Some((epoch, Some(*last))),
            _ => None,
        };
        let Some(digest) = c.vouching.get(&epoch).copied() else {
            c.want.extend(books.missing(ids));
            return self.advance(peer);
        };
        if c.listed.len() + ids.len() > MAX_VOUCHED {
            c.listed.clear();
            c.listing = None;
        } else {
            c.listed.extend_from_slice(ids);
        }
        if c.listing.is_some() {
            return self.advance(peer);
        }
        let listed = std::mem::take(&mut c.listed);
        if crate::ledger::digest_of_ids(epoch_ms, epoch, &listed) != digest {
            return self.misbehaved(
                peer,
                format!(
                    "its receipt ids of final epoch {epoch} do not match the digest it offered"
                ),
            );
        }
        let missing = books.missing(&listed);
        if books.vouch(&missing)
            && let Some(c) = self.catch_ups.get_mut(&peer)
        {
            c.want.extend(missing);
        }
        self.advance(peer);
    }

    /// A `Fetch` answer came from `peer`, its receipts split into `jobs` verification jobs
    /// about to start (each reported back by [`Replication::verified`], which may come at
    /// once). Call before starting them.
    pub fn on_receipts(&mut self, peer: P, jobs: usize) {
        let Some(c) = self.catch_ups.get_mut(&peer) else {
            return;
        };
        c.fetching = c.fetching.saturating_sub(1);
        c.verifying += jobs;
        self.step(peer);
    }

    /// One verification job of `peer`'s receipts is done, `got` of them taken: the
    /// catch-up goes on after the last.
    pub fn verified(&mut self, peer: P, got: usize) {
        let Some(c) = self.catch_ups.get_mut(&peer) else {
            return;
        };
        c.got += got;
        c.verifying = c.verifying.saturating_sub(1);
        self.step(peer);
    }

    /// Checkpoints asked of `peer` came (and were taken into the books) while a catch-up
    /// with it goes on: the final epochs whose digest from the peer now matches one are
    /// listed in this catch-up too (or, by a light ledger, adopted: [`Books::adopt`]).
    pub fn on_checkpoints(&mut self, peer: P, books: &mut impl Books) {
        let Some(c) = self.catch_ups.get_mut(&peer) else {
            return;
        };
        let mut now: Vec<(u64, [u8; 32])> = c
            .unmatched
            .iter()
            .filter(|(e, d)| books.vouches(**e, d))
            .map(|(e, d)| (*e, *d))
            .collect();
        now.sort_unstable();
        for (epoch, digest) in now {
            c.unmatched.remove(&epoch);
            if books.adopt(epoch, &digest) {
                continue;
            }
            let listing = c.listing.is_some_and(|(e, _)| e == epoch);
            if !listing && !c.epochs.contains(&epoch) {
                c.vouching.insert(epoch, digest);
                c.epochs.push_back(epoch);
            }
        }
        // A catch-up that was idle waiting on nothing has ended already; one still running
        // reaches the new epochs in its own time.
    }

    /// The next step once nothing is fetched or verified; until then, fetching ahead.
    fn step(&mut self, peer: P) {
        match self.catch_ups.get(&peer) {
            Some(c) if c.fetching == 0 && !c.listing_ahead && c.verifying == 0 => {
                self.advance(peer)
            }
            Some(_) => self.fetch_ahead(peer),
            None => {}
        }
    }

    /// With receipts being verified, nothing asked of the peer and at most
    /// [`FETCH_AHEAD_JOBS`] jobs left to verify, the next request goes at once, so the
    /// peer's answer and the transfer overlap the signature checks: the next receipts wanted,
    /// or when none are left, the next page of the epoch's ids (else every page of ids would
    /// drain the pipeline). The bound keeps a fast peer from filling the verification queue.
    fn fetch_ahead(&mut self, peer: P) {
        let Some(c) = self.catch_ups.get_mut(&peer) else {
            return;
        };
        if c.fetching > 0 || c.listing_ahead || c.verifying == 0 || c.verifying > FETCH_AHEAD_JOBS {
            return;
        }
        let ask = if !c.want.is_empty() {
            Self::fetch(c)
        } else if let Some((epoch, Some(after))) = c.listing {
            c.listing_ahead = true;
            Ask::Ids {
                epoch,
                after: Some(after),
            }
        } else {
            return;
        };
        self.out.push(Out::Send { peer, ask });
    }

    fn fetch(c: &mut CatchUp) -> Ask {
        let n = c.want.len().min(MAX_SYNC_FETCH);
        c.fetching += 1;
        Ask::Fetch(c.want.drain(..n).collect())
    }

    /// The next request of the catch-up with `peer`, or its end.
    fn advance(&mut self, peer: P) {
        let Some(c) = self.catch_ups.get_mut(&peer) else {
            return;
        };
        let ask = if !c.want.is_empty() {
            Self::fetch(c)
        } else if let Some((epoch, Some(after))) = c.listing {
            Ask::Ids {
                epoch,
                after: Some(after),
            }
        } else if let Some(epoch) = c.epochs.pop_front() {
            c.listing = Some((epoch, None));
            Ask::Ids { epoch, after: None }
        } else {
            return self.end(peer);
        };
        self.out.push(Out::Send { peer, ask });
    }

    fn misbehaved(&mut self, peer: P, why: String) {
        self.out.push(Out::Misbehaved { peer, why });
        self.end(peer);
    }

    fn end(&mut self, peer: P) {
        if let Some(c) = self.catch_ups.remove(&peer) {
            self.out.push(Out::Ended {
                peer,
                got: c.got,
                first: c.first,
            });
        }
    }
}

/// One page of `all` (ascending) after `after`, and whether more follow: the answer to an
/// [`Ask::Ids`].
pub fn ids_page(all: &[MessageId], after: Option<MessageId>) -> (&[MessageId], bool) {
    let start = after.map_or(0, |a| all.partition_point(|id| *id <= a));
    let end = (start + MAX_SYNC_IDS).min(all.len());
    (&all[start..end], end < all.len())
}
