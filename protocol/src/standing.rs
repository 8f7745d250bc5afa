//! What receipts show of each worker: its standing in assignment.
//!
//! Worker keys cost nothing to make, and anyone may announce a status with any hash rate. A
//! plan that trusted statuses alone could be taken over by a crowd of fresh keys announcing
//! high rates and never answering. Receipts cannot be forged: each is signed by a registered
//! service and proves one solved request. So a worker's standing is what its receipts show:
//!
//! - **Proven or on probation.** A worker with at least
//!   [`FlowConfig::probation_receipts`](crate::flow::FlowConfig::probation_receipts) receipts is
//!   *proven*; any other key is *on probation*. Plans take primaries from proven workers first
//!   and place probation workers after every proven one ([`crate::flow::plan_tiered`]).
//! - **The rate receipts show.** Each receipt gives one sample: the request's expected hashes
//!   over the time from the request's creation to the service's acceptance (both signed by the
//!   service). A sample understates the rate (it includes travel and queueing) or, by luck,
//!   overstates it; the upper quartile of the newest [`SAMPLES`] is the *shown rate*, and a
//!   proven worker is planned with at most `rate_cap_factor` times it, whatever it announces.
//!
//! Each request counts once: the node reports only the first receipt it meets for a request.
//! Different nodes may hold slightly different receipts while they spread, so their standings
//! (and plans) may differ for a moment; a disagreement costs extra or delayed hashing, never a
//! lost request. Bounded: at most [`MAX_STANDINGS`] workers, the one with the fewest receipts
//! forgotten first.

use std::collections::{HashMap, VecDeque};

use dpow_keys::PublicKey;

use crate::Difficulty;

/// Most workers whose standing is kept.
pub const MAX_STANDINGS: usize = 10_000;
/// Rate samples kept per worker (the newest).
pub const SAMPLES: usize = 16;

/// One worker's record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Standing {
    /// Receipts counted for it.
    pub receipts: u64,
    /// Hashes per second shown by its newest receipts, oldest first.
    samples: VecDeque<u64>,
}

impl Standing {
    /// The rate its receipts show: the upper quartile of the newest samples (0 with none).
    pub fn shown_rate(&self) -> u64 {
        let mut v: Vec<u64> = self.samples.iter().copied().collect();
        if v.is_empty() {
            return 0;
        }
        v.sort_unstable();
        v[(v.len() * 3 / 4).min(v.len() - 1)]
    }
}

/// Every worker's standing, as this node's receipts show it. See the [module docs](self).
#[derive(Clone, Debug, Default)]
pub struct Standings {
    workers: HashMap<PublicKey, Standing>,
}

/// Expected hashes for `difficulty` (rounded up).
fn expected_hashes(difficulty: Difficulty) -> u128 {
    (1u128 << 64).div_ceil(difficulty.distance())
}

impl Standings {
    /// No worker known.
    pub fn new() -> Self {
        Standings::default()
    }

    /// A receipt paid `worker` for a request of `difficulty` created at `created_ms` and
    /// accepted by its service at `accepted_ms`. Report each request once.
    pub fn on_receipt(
        &mut self,
        worker: PublicKey,
        difficulty: Difficulty,
        created_ms: u64,
        accepted_ms: u64,
    ) {
        if !self.workers.contains_key(&worker)
            && self.workers.len() >= MAX_STANDINGS
            && let Some(least) = self
                .workers
                .iter()
                .min_by_key(|(k, s)| (s.receipts, **k))
                .map(|(k, _)| *k)
        {
            self.workers.remove(&least);
        }
        let s = self.workers.entry(worker).or_default();
        s.receipts = s.receipts.saturating_add(1);
        let ms = u128::from(accepted_ms.saturating_sub(created_ms).max(1));
        let rate = expected_hashes(difficulty).saturating_mul(1000) / ms;
        s.samples.push_back(u64::try_from(rate).unwrap_or(u64::MAX));
        while s.samples.len() > SAMPLES {
            s.samples.pop_front();
        }
    }

    /// `worker`'s record, if it has any receipt.
    pub fn get(&self, worker: &PublicKey) -> Option<&Standing> {
        self.workers.get(worker)
    }

    /// Receipts counted for `worker`.
    pub fn receipts(&self, worker: &PublicKey) -> u64 {
        self.workers.get(worker).map_or(0, |s| s.receipts)
    }

    /// Workers with a record.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Whether no worker has a record.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }
}

/// Which worker leaves a full table so that `newcomer` can enter, given each entry's key and
/// when it was last heard: the stalest worker on probation; when every entry is proven, the
/// stalest one, but only for a proven newcomer. `None`: the newcomer stays out. Ties go to
/// the smaller key, so every node picks alike.
pub fn evict_for<'a>(
    entries: impl Iterator<Item = (&'a PublicKey, u64)> + Clone,
    newcomer: &PublicKey,
    proven: impl Fn(&PublicKey) -> bool,
) -> Option<PublicKey> {
    let stalest = |it: &mut dyn Iterator<Item = (&'a PublicKey, u64)>| {
        it.min_by_key(|(k, t)| (*t, **k)).map(|(k, _)| *k)
    };
    stalest(&mut entries.clone().filter(|(k, _)| !proven(k))).or_else(|| {
        proven(newcomer)
            .then(|| stalest(&mut entries.clone()))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u8) -> PublicKey {
        PublicKey([i; 32])
    }

    #[test]
    fn the_shown_rate_is_the_upper_quartile_of_the_newest_samples() {
        let mut s = Standings::new();
        // 2^20 expected hashes (difficulty distance 2^44).
        let d = Difficulty(u64::MAX - (1u64 << 44) + 1);
        assert_eq!(expected_hashes(d), 1 << 20);
        for ms in [1000, 500, 250, 2000] {
            s.on_receipt(key(1), d, 10_000, 10_000 + ms);
        }
        let w = s.get(&key(1)).expect("a record");
        assert_eq!(w.receipts, 4);
        // Samples 1,048,576 / {1, 0.5, 0.25, 2} s; the upper quartile of four is the 4th.
        assert_eq!(w.shown_rate(), (1u64 << 20) * 4);
        for _ in 0..SAMPLES {
            s.on_receipt(key(1), d, 0, 1000);
        }
        assert_eq!(s.get(&key(1)).map(Standing::shown_rate), Some(1 << 20));
        assert_eq!(s.receipts(&key(1)), 4 + SAMPLES as u64);
    }

    #[test]
    fn a_zero_or_backwards_duration_counts_as_one_millisecond() {
        let mut s = Standings::new();
        s.on_receipt(key(2), Difficulty(u64::MAX), 5_000, 4_000);
        let rate = s.get(&key(2)).map(Standing::shown_rate);
        assert_eq!(rate, Some(u64::MAX));
    }

    #[test]
    fn a_full_table_forgets_the_worker_with_fewest_receipts() {
        let mut s = Standings::new();
        let d = Difficulty(u64::MAX - (1 << 40));
        for i in 0..MAX_STANDINGS {
            let mut k = [0u8; 32];
            k[..8].copy_from_slice(&(i as u64).to_le_bytes());
            s.on_receipt(PublicKey(k), d, 0, 10);
            if i > 0 {
                s.on_receipt(PublicKey(k), d, 0, 10);
            }
        }
        assert_eq!(s.len(), MAX_STANDINGS);
        s.on_receipt(key(9), d, 0, 10);
        assert_eq!(s.len(), MAX_STANDINGS);
        // Worker 0 had one receipt, every other two: it was forgotten, the newcomer kept.
        assert_eq!(s.receipts(&PublicKey([0; 32])), 0);
        assert_eq!(s.receipts(&key(9)), 1);
    }
}
