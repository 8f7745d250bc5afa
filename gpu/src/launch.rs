//! How many nonces one kernel launch hashes.
//!
//! Two limits, whichever is smaller:
//! - **time**: a launch cannot be interrupted, so it must end within [`GpuOptions::max_launch`]
//!   (10 ms by default) at the measured rate; cancellation is checked between launches.
//! - **difficulty**: a launch is finished even when its first nonces already won, so an easy job
//!   wastes about half a launch, while each launch also costs a fixed overhead. For a job that
//!   needs `E` hashes on average, `E/L` launches of `L` hashes cost `o·r·E/L` hash-equivalents of
//!   overhead (`o` the per-launch overhead, `r` the rate) and `L/2` of overshoot; the sum is least
//!   at `L = sqrt(2·E·o·r)`. A fixed 2^20-nonce launch made easy jobs four times slower; this
//!   keeps them at a few launches each.
//!
//! The rate is measured from every launch (the first one is small, so a device's first launch,
//! which on PoCL includes compiling the work-group function, cannot stall a job). A launch that
//! ends early grows the next one by the ratio of the target to the time taken, so the size
//! reaches the target within a launch or two.
//!
//! [`GpuOptions::max_launch`]: crate::GpuOptions::max_launch

use std::time::Duration;

use dpow_protocol::Difficulty;

/// Work-items per launch are a multiple of this, the work-group size (or a multiple of it).
pub(crate) const ITEM_QUANTUM: u64 = 64;
/// Hashes in a device's very first launch, before any rate is known.
pub(crate) const FIRST_LAUNCH: u64 = 1 << 16;
/// Assumed fixed cost of one launch (enqueue, completion, reading the flag back).
pub(crate) const LAUNCH_OVERHEAD: Duration = Duration::from_micros(100);
/// A launch is at most this many times bigger than the previous one.
const MAX_GROWTH: f64 = 16.0;

/// The launch-size state of one device.
#[derive(Debug, Clone)]
pub(crate) struct LaunchPlanner {
    /// Nonces per work-item (steps times vector lanes).
    per_item: u64,
    /// Launches are multiples of this: one work-group for every compute unit, so that no unit
    /// idles (a 2-core PoCL device given one work-group runs on one core).
    unit: u64,
    /// Longest launch wanted.
    max_launch: Duration,
    /// A fixed launch size in hashes, if set (benchmarks).
    fixed: Option<u64>,
    /// Measured hashes per second; 0 until the first launch.
    rate_hps: f64,
    /// Hashes in the previous launch.
    last: u64,
}

impl LaunchPlanner {
    pub(crate) fn new(
        per_item: u32,
        compute_units: u32,
        max_launch: Duration,
        fixed: Option<u64>,
    ) -> Self {
        let per_item = u64::from(per_item.max(1));
        Self {
            per_item,
            unit: per_item * ITEM_QUANTUM * u64::from(compute_units.max(1)),
            max_launch,
            fixed,
            rate_hps: 0.0,
            last: 0,
        }
    }

    /// Hashes per launch are a multiple of this.
    pub(crate) fn unit(&self) -> u64 {
        self.unit
    }

    /// The measured rate in hashes per second (0 before the first launch).
    pub(crate) fn rate_hps(&self) -> f64 {
        self.rate_hps
    }

    /// Hashes for the next launch of a job at `difficulty`, never more than `remaining`.
    pub(crate) fn next(&self, difficulty: Difficulty, remaining: u64) -> u64 {
        let unit = self.unit();
        let want = if let Some(fixed) = self.fixed {
            fixed.max(1)
        } else if self.rate_hps <= 0.0 {
            FIRST_LAUNCH
        } else {
            let by_time = self.rate_hps * self.max_launch.as_secs_f64();
            let overhead_hashes = self.rate_hps * LAUNCH_OVERHEAD.as_secs_f64();
            let by_difficulty = (2.0 * difficulty.expected_hashes() * overhead_hashes).sqrt();
            let by_growth = self.last as f64 * MAX_GROWTH;
            // `as` saturates; the minimum keeps tiny rates from rounding to nothing.
            (by_time.min(by_difficulty).min(by_growth) as u64).max(unit)
        };
        let rounded = want.div_ceil(unit).saturating_mul(unit);
        rounded.min(remaining).max(1)
    }

    /// Record that a launch of `hashes` took `elapsed`.
    pub(crate) fn record(&mut self, hashes: u64, elapsed: Duration) {
        self.last = hashes;
        let secs = elapsed.as_secs_f64().max(1e-6);
        self.rate_hps = hashes as f64 / secs;
    }

    /// Work-items for a launch of `hashes`.
    pub(crate) fn items(&self, hashes: u64) -> u64 {
        hashes.div_ceil(self.per_item).div_ceil(ITEM_QUANTUM) * ITEM_QUANTUM
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS10: Duration = Duration::from_millis(10);

    #[test]
    fn first_launch_is_small_and_rounded() {
        let p = LaunchPlanner::new(64, 1, MS10, None);
        assert_eq!(p.rate_hps(), 0.0);
        let n = p.next(Difficulty::EPOCH2_SEND, u64::MAX);
        assert_eq!(n, FIRST_LAUNCH);
        assert_eq!(n % p.unit(), 0);
        assert_eq!(p.items(n) * 64, n);
    }

    #[test]
    fn easy_jobs_get_small_launches_and_hard_jobs_hit_the_time_cap() {
        let mut p = LaunchPlanner::new(64, 1, MS10, None);
        // 20 MH/s, and pretend the previous launch was big so growth does not limit.
        p.record(200_000_000, Duration::from_secs(10));
        let easy = p.next(Difficulty(0xffff_0000_0000_0000), u64::MAX);
        let receive = p.next(Difficulty::EPOCH2_RECEIVE, u64::MAX);
        let send = p.next(Difficulty::EPOCH2_SEND, u64::MAX);
        // sqrt(2 * 65536 * 2000) ~ 16k hashes for a 64k-hash job.
        assert!((8_192..=32_768).contains(&easy), "{easy}");
        // 10 ms at 20 MH/s = 200k hashes caps a send job.
        assert!((200_000..=200_000 + p.unit()).contains(&send), "{send}");
        assert!(easy < receive && receive <= send, "{receive}");
    }

    #[test]
    fn launches_fill_every_compute_unit() {
        let mut p = LaunchPlanner::new(512, 2, MS10, None);
        assert_eq!(p.unit(), 512 * 64 * 2);
        p.record(1 << 30, Duration::from_secs(10));
        // An easy job still gets one work-group per compute unit.
        let n = p.next(Difficulty(0xff00_0000_0000_0000), u64::MAX);
        assert_eq!(n, p.unit());
        assert_eq!(p.items(n), 128);
    }

    #[test]
    fn growth_is_bounded_and_remaining_is_respected() {
        let mut p = LaunchPlanner::new(16, 1, MS10, None);
        p.record(1024, Duration::from_millis(1));
        assert!(p.next(Difficulty::EPOCH2_SEND, u64::MAX) <= 1024 * 16);
        assert_eq!(p.next(Difficulty::EPOCH2_SEND, 5), 5);
        let fixed = LaunchPlanner::new(16, 1, MS10, Some(1 << 20));
        assert_eq!(fixed.next(Difficulty(0), u64::MAX), 1 << 20);
    }
}
