//! Per-peer budgets: what a peer may cost this node before it is slowed down or cut off.
//!
//! Each peer has three token buckets, refilled continuously at their own rate up to their
//! burst:
//! - **sync requests** (one token per request answered) and **sync bytes** (one token per
//!   byte answered): a request is answered only while both hold tokens, so a peer gets at most
//!   `burst + rate × t` bytes (plus one answer) over any `t`, however small its requests;
//! - **strikes**: every message of the peer that this node ignores or rejects takes tokens
//!   (a penalised rejection many); when the bucket runs dry the peer is blocked for
//!   [`BudgetConfig::block_for`].
//!
//! The table of peers is bounded ([`BudgetConfig::max_peers`]): a new peer past the bound
//! evicts the one idle the longest (whose buckets have refilled, so it loses little). Time is
//! passed in (`now`), so everything here is tested without a swarm or a clock.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// A refill rate and a burst: a token bucket's shape.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_sec: f64,
    /// Most tokens held (and held at first sight of a peer).
    pub burst: f64,
}

impl Rate {
    /// `burst` tokens refilled over `window`.
    pub fn per_window(burst: f64, window: Duration) -> Rate {
        Rate {
            per_sec: burst / window.as_secs_f64().max(1e-3),
            burst,
        }
    }
}

/// What each peer may cost: the node's budgets, in [`super::NetTuning::budgets`].
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetConfig {
    /// Sync requests answered per peer.
    pub sync_requests: Rate,
    /// Bytes of sync answers per peer.
    pub sync_bytes: Rate,
    /// Ignored or rejected messages per peer (each costs one token; a penalised rejection
    /// costs `burst / max_penalties`), and a request answered "busy" costs one too.
    pub strikes: Rate,
    /// How long a peer that ran out of strikes stays blocked.
    pub block_for: Duration,
    /// Peers tracked at once; the one idle the longest is forgotten first.
    pub max_peers: usize,
    /// Peers blocked at once; past it the block that ends soonest is lifted early.
    pub max_blocked: usize,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            // Catch-up keeps at most one page in flight beyond the one being verified: far
            // under these on any link. The byte rate caps what one peer hands a joining node:
            // about 10,300 receipts a second at 509 bytes a receipt in a `Fetch` answer, above
            // what a 2-core node verifies, so a joining node is not held below its own pace
            // (a million receipts from one peer in two minutes; docs/benchmarks.md).
            sync_requests: Rate {
                per_sec: 50.0,
                burst: 200.0,
            },
            sync_bytes: Rate {
                per_sec: 5.0 * 1024.0 * 1024.0,
                burst: 16.0 * 1024.0 * 1024.0,
            },
            // Honest peers relay late results and replays (a few per request under load:
            // hundreds a minute on a busy network); a stranger sending only junk is cut off
            // after 20,000 messages, and five rejects (with `max_penalties` 5) block at once.
            strikes: Rate::per_window(20_000.0, Duration::from_secs(60)),
            block_for: Duration::from_secs(600),
            max_peers: 4096,
            max_blocked: 4096,
        }
    }
}

/// One token bucket.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    level: f64,
    at: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Bucket {
        Bucket {
            level: rate.burst,
            at: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + dt * rate.per_sec).min(rate.burst);
        self.at = self.at.max(now);
    }
}

/// A peer's buckets.
#[derive(Clone, Copy, Debug)]
struct Entry {
    requests: Bucket,
    bytes: Bucket,
    strikes: Bucket,
    last_seen: Instant,
}

/// What [`Budgets::strike`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Strike {
    /// Still within budget.
    Within,
    /// Out of strikes: block the peer.
    Exhausted,
}

/// Every peer's budgets, bounded.
#[derive(Debug)]
pub(crate) struct Budgets<K> {
    config: BudgetConfig,
    peers: HashMap<K, Entry>,
}

impl<K: Hash + Eq + Copy> Budgets<K> {
    pub(crate) fn new(config: BudgetConfig) -> Budgets<K> {
        Budgets {
            config,
            peers: HashMap::new(),
        }
    }

    pub(crate) fn config(&self) -> &BudgetConfig {
        &self.config
    }

    /// Peers tracked now (at most `max_peers`).
    pub(crate) fn len(&self) -> usize {
        self.peers.len()
    }

    fn entry(&mut self, peer: K, now: Instant) -> &mut Entry {
        if !self.peers.contains_key(&peer) && self.peers.len() >= self.config.max_peers.max(1) {
            let idlest = self
                .peers
                .iter()
                .min_by_key(|(_, e)| e.last_seen)
                .map(|(k, _)| *k);
            if let Some(k) = idlest {
                self.peers.remove(&k);
            }
        }
        let c = &self.config;
        let e = self.peers.entry(peer).or_insert_with(|| Entry {
            requests: Bucket::full(c.sync_requests, now),
            bytes: Bucket::full(c.sync_bytes, now),
            strikes: Bucket::full(c.strikes, now),
            last_seen: now,
        });
        e.last_seen = e.last_seen.max(now);
        e
    }

    /// A sync request from `peer`: `true` if it may be answered (one request token taken),
    /// `false` if the peer is over its request or byte budget (nothing taken).
    pub(crate) fn admit(&mut self, peer: K, now: Instant) -> bool {
        let (rr, br) = (self.config.sync_requests, self.config.sync_bytes);
        let e = self.entry(peer, now);
        e.requests.refill(rr, now);
        e.bytes.refill(br, now);
        if e.requests.level < 1.0 || e.bytes.level <= 0.0 {
            return false;
        }
        e.requests.level -= 1.0;
        true
    }

    /// An admitted answer of `bytes` went to `peer`. The byte bucket may go below zero (the
    /// answer was already built): the peer waits until it refills past zero again.
    pub(crate) fn spend_bytes(&mut self, peer: K, bytes: usize, now: Instant) {
        let br = self.config.sync_bytes;
        let e = self.entry(peer, now);
        e.bytes.refill(br, now);
        e.bytes.level -= bytes as f64;
    }

    /// How long until `peer` may be answered again (a hint for a "busy" answer).
    pub(crate) fn retry_after(&mut self, peer: K, now: Instant) -> Duration {
        let (rr, br) = (self.config.sync_requests, self.config.sync_bytes);
        let e = self.entry(peer, now);
        let wait = |level: f64, need: f64, rate: f64| {
            if level >= need || rate <= 0.0 {
                0.0
            } else {
                (need - level) / rate
            }
        };
        let s = wait(e.requests.level, 1.0, rr.per_sec).max(wait(e.bytes.level, 1.0, br.per_sec));
        Duration::from_secs_f64(s.min(3600.0))
    }

    /// `peer` sent something ignored or rejected, costing `cost` strikes.
    pub(crate) fn strike(&mut self, peer: K, cost: f64, now: Instant) -> Strike {
        let sr = self.config.strikes;
        let e = self.entry(peer, now);
        e.strikes.refill(sr, now);
        e.strikes.level -= cost;
        if e.strikes.level < 1e-6 {
            // Blocked now; it starts afresh (full) once the block is lifted.
            e.strikes = Bucket::full(sr, now);
            Strike::Exhausted
        } else {
            Strike::Within
        }
    }
}

/// Peers blocked until a time, bounded: what [`Budgets`] decides, lifted when due.
#[derive(Debug)]
pub(crate) struct Blocks<K> {
    until: HashMap<K, Instant>,
    max: usize,
}

impl<K: Hash + Eq + Copy> Blocks<K> {
    pub(crate) fn new(max: usize) -> Blocks<K> {
        Blocks {
            until: HashMap::new(),
            max: max.max(1),
        }
    }

    /// Block `peer` until `until`. Returns a peer whose block was lifted early to make room.
    pub(crate) fn block(&mut self, peer: K, until: Instant) -> Option<K> {
        let mut lifted = None;
        if !self.until.contains_key(&peer) && self.until.len() >= self.max {
            lifted = self.until.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k);
            if let Some(k) = &lifted {
                self.until.remove(k);
            }
        }
        let t = self.until.entry(peer).or_insert(until);
        *t = (*t).max(until);
        lifted
    }

    /// The peers whose block has ended by `now`, removed.
    pub(crate) fn expired(&mut self, now: Instant) -> Vec<K> {
        let done: Vec<K> = self
            .until
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in &done {
            self.until.remove(k);
        }
        done
    }

    /// When the next block ends.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.until.values().min().copied()
    }

    /// Peers blocked now.
    pub(crate) fn len(&self) -> usize {
        self.until.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BudgetConfig {
        BudgetConfig {
            sync_requests: Rate {
                per_sec: 2.0,
                burst: 4.0,
            },
            sync_bytes: Rate {
                per_sec: 1000.0,
                burst: 2000.0,
            },
            strikes: Rate::per_window(10.0, Duration::from_secs(10)),
            block_for: Duration::from_secs(600),
            max_peers: 3,
            max_blocked: 2,
        }
    }

    #[test]
    fn requests_are_admitted_up_to_the_burst_then_at_the_rate() {
        let t0 = Instant::now();
        let mut b = Budgets::new(config());
        let admitted = (0..10).filter(|_| b.admit(1u32, t0)).count();
        assert_eq!(admitted, 4, "the burst");
        assert!(!b.admit(1, t0 + Duration::from_millis(400)));
        assert!(b.admit(1, t0 + Duration::from_millis(500)), "one per 0.5 s");
        assert!(!b.admit(1, t0 + Duration::from_millis(600)));
        // Another peer has its own budget.
        assert!(b.admit(2, t0));
    }

    #[test]
    fn bytes_bound_what_a_peer_gets_whatever_its_request_count() {
        let t0 = Instant::now();
        let mut cfg = config();
        cfg.sync_requests.burst = 1e9;
        cfg.sync_requests.per_sec = 1e9;
        let mut b = Budgets::new(cfg.clone());
        let (mut sent, page) = (0usize, 700usize);
        // Ten seconds of asking every millisecond.
        for ms in 0..10_000u64 {
            let now = t0 + Duration::from_millis(ms);
            if b.admit(7u8, now) {
                b.spend_bytes(7, page, now);
                sent += page;
            }
        }
        let bound = cfg.sync_bytes.burst + cfg.sync_bytes.per_sec * 10.0 + page as f64;
        assert!(sent as f64 <= bound, "{sent} > {bound}");
        assert!(sent >= 10_000, "the rate is served: {sent}");
    }

    #[test]
    fn retry_hint_says_when_tokens_return() {
        let t0 = Instant::now();
        let mut b = Budgets::new(config());
        assert_eq!(b.retry_after(1u8, t0), Duration::ZERO);
        b.admit(1, t0);
        b.spend_bytes(1, 3000, t0);
        // 2000 - 3000 = -1000 bytes: a second (1000/s) to get back over zero.
        let wait = b.retry_after(1, t0);
        assert!(wait > Duration::from_millis(990) && wait < Duration::from_millis(1010));
        assert!(!b.admit(1, t0 + Duration::from_millis(990)));
        assert!(b.admit(1, t0 + Duration::from_millis(1010)));
    }

    #[test]
    fn strikes_run_out_then_refill() {
        let t0 = Instant::now();
        let mut b = Budgets::new(config());
        for _ in 0..9 {
            assert_eq!(b.strike(1u8, 1.0, t0), Strike::Within);
        }
        assert_eq!(
            b.strike(1, 1.0, t0),
            Strike::Exhausted,
            "the tenth empties it"
        );
        // A fresh bucket after the block; and a slow trickle never runs out (1/s refill).
        for s in 1..100u64 {
            assert_eq!(
                b.strike(2, 1.0, t0 + Duration::from_secs(s)),
                Strike::Within
            );
        }
    }

    #[test]
    fn penalised_rejections_weigh_more() {
        let t0 = Instant::now();
        let mut b = Budgets::new(config());
        // burst 10, a penalty of 10/3: the third one empties the bucket.
        let penalty = 10.0 / 3.0;
        assert_eq!(b.strike(1u8, penalty, t0), Strike::Within);
        assert_eq!(b.strike(1, penalty, t0), Strike::Within);
        assert_eq!(b.strike(1, penalty, t0), Strike::Exhausted);
    }

    #[test]
    fn the_table_is_bounded_and_forgets_the_idlest() {
        let t0 = Instant::now();
        let mut b = Budgets::new(config());
        for p in 0..3u32 {
            b.admit(p, t0 + Duration::from_secs(p as u64));
        }
        // Peer 0 is the idlest; a spent peer 1 must be kept.
        for _ in 0..4 {
            b.admit(1, t0 + Duration::from_secs(3));
        }
        for p in 100..1000u32 {
            b.admit(p, t0 + Duration::from_secs(4));
            assert!(b.len() <= 3);
        }
        let mut b = Budgets::new(config());
        b.admit(0u32, t0);
        for _ in 0..4 {
            b.admit(1, t0 + Duration::from_secs(1));
        }
        b.admit(2, t0 + Duration::from_secs(1));
        b.admit(3, t0 + Duration::from_secs(1));
        assert_eq!(b.len(), 3);
        assert!(
            !b.admit(1, t0 + Duration::from_secs(1)),
            "the spent peer was kept, not the idle one"
        );
    }

    #[test]
    fn blocks_end_and_are_bounded() {
        let t0 = Instant::now();
        let mut bl = Blocks::new(2);
        assert_eq!(bl.block(1u8, t0 + Duration::from_secs(10)), None);
        assert_eq!(bl.block(2, t0 + Duration::from_secs(20)), None);
        assert_eq!(bl.block(3, t0 + Duration::from_secs(30)), Some(1));
        assert_eq!(bl.len(), 2);
        assert_eq!(bl.next_due(), Some(t0 + Duration::from_secs(20)));
        assert!(bl.expired(t0 + Duration::from_secs(19)).is_empty());
        assert_eq!(bl.expired(t0 + Duration::from_secs(20)), vec![2]);
        assert_eq!(bl.len(), 1);
    }
}
