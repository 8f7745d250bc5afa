//! The last hour of a node's statistics, for the dashboard's charts.
//!
//! [`History`] is a pure, bounded ring: every [`DEFAULT_HISTORY_INTERVAL`] the HTTP server's
//! sampler ([`crate::http`]) hands it a [`NodeStats`] snapshot and the time, and it keeps the
//! figures the charts draw as one [`Sample`] (at most [`HISTORY_CAPACITY`], the oldest dropped
//! first) plus, for sparklines, the announced hash rate of each live worker (at most
//! [`MAX_TRACKED_WORKERS`], the busiest; a worker that leaves the live list loses its series).
//! Nothing here reads a clock or the swarm, so the ring is tested on its own.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde::Serialize;

use super::NodeStats;

/// Samples kept: an hour at the default interval.
pub const HISTORY_CAPACITY: usize = 720;

/// How often the HTTP server samples the statistics by default.
pub const DEFAULT_HISTORY_INTERVAL: Duration = Duration::from_secs(5);

/// Workers whose hash rate is kept, the busiest first.
pub const MAX_TRACKED_WORKERS: usize = 64;

/// The charted figures at one moment.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Sample {
    /// When it was taken, Unix time in milliseconds.
    pub t_ms: u64,
    /// Work requests accepted per second, over the minute before.
    pub requests_per_second: f64,
    /// Median latency of this node's own requests (its last 1,000), milliseconds.
    pub latency_p50_ms: f64,
    /// 99th percentile of the same.
    pub latency_p99_ms: f64,
    /// Summed announced hash rate of the live workers, hashes per second.
    pub network_hash_rate: u64,
    /// Credits this node earned as a worker, by its ledger.
    pub credits_earned: u64,
    /// Credits moved in this node's ledger: spent by the listed services (all of them up to
    /// the 1,000 busiest), which is what their workers earned.
    pub credits_moved: u64,
    /// Receipts in this node's ledger.
    pub ledger_receipts: usize,
    /// Peers with an open connection.
    pub connected_peers: usize,
    /// Workers heard from recently.
    pub live_workers: usize,
}

impl Sample {
    /// The figures of `stats`, stamped `t_ms`.
    pub fn of(t_ms: u64, stats: &NodeStats) -> Sample {
        Sample {
            t_ms,
            requests_per_second: stats.requests_per_second,
            latency_p50_ms: stats.latency_ms.p50,
            latency_p99_ms: stats.latency_ms.p99,
            network_hash_rate: stats.network_hash_rate,
            credits_earned: stats.credits_earned,
            credits_moved: stats
                .service_list
                .iter()
                .fold(0u64, |a, s| a.saturating_add(s.spent)),
            ledger_receipts: stats.ledger_receipts,
            connected_peers: stats.connected_peers,
            live_workers: stats.live_workers,
        }
    }
}

/// One worker's announced hash rates, oldest first; the last one belongs to the newest
/// sample, and the series covers as many of the latest samples as it is long.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct WorkerSeries {
    /// The worker's `nano_` account.
    pub account: String,
    /// Hash rates, hashes per second.
    pub hash_rates: Vec<u64>,
}

/// What `GET /api/history` answers: the ring's contents, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HistoryView {
    /// Seconds between samples.
    pub interval_s: f64,
    /// Samples kept at most.
    pub capacity: usize,
    /// The samples, oldest first.
    pub samples: Vec<Sample>,
    /// Tracked workers, the busiest (by their latest rate) first.
    pub workers: Vec<WorkerSeries>,
}

/// A bounded history of samples and of the busiest live workers' hash rates.
#[derive(Clone, Debug)]
pub struct History {
    interval: Duration,
    capacity: usize,
    max_workers: usize,
    samples: VecDeque<Sample>,
    workers: BTreeMap<String, VecDeque<u64>>,
}

impl History {
    /// An empty history of at most `capacity` samples, `interval` apart, tracking at most
    /// `max_workers` workers (each bound at least 1).
    pub fn new(interval: Duration, capacity: usize, max_workers: usize) -> History {
        History {
            interval,
            capacity: capacity.max(1),
            max_workers: max_workers.max(1),
            samples: VecDeque::new(),
            workers: BTreeMap::new(),
        }
    }

    /// The default ring: [`HISTORY_CAPACITY`] samples, [`MAX_TRACKED_WORKERS`] workers.
    pub fn with_interval(interval: Duration) -> History {
        History::new(interval, HISTORY_CAPACITY, MAX_TRACKED_WORKERS)
    }

    /// Record `stats` as taken at `t_ms`: the oldest sample goes when the ring is full; the
    /// busiest live workers' rates are appended (a worker new to the list starts a series),
    /// and the series of workers no longer among them are dropped.
    pub fn record(&mut self, t_ms: u64, stats: &NodeStats) {
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample::of(t_ms, stats));

        let mut live: Vec<(&str, u64)> = stats
            .worker_list
            .iter()
            .map(|w| (w.account.as_str(), w.hash_rate))
            .collect();
        live.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let mut kept = BTreeMap::new();
        for (account, rate) in live {
            if kept.len() == self.max_workers {
                break;
            }
            if kept.contains_key(account) {
                continue;
            }
            let mut series = self.workers.remove(account).unwrap_or_default();
            if series.len() == self.capacity {
                series.pop_front();
            }
            series.push_back(rate);
            kept.insert(account.to_string(), series);
        }
        self.workers = kept;
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether no sample was recorded yet.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// A copy of the contents, as `GET /api/history` serves them.
    pub fn view(&self) -> HistoryView {
        let mut workers: Vec<WorkerSeries> = self
            .workers
            .iter()
            .map(|(account, rates)| WorkerSeries {
                account: account.clone(),
                hash_rates: rates.iter().copied().collect(),
            })
            .collect();
        workers.sort_by(|a, b| {
            b.hash_rates
                .last()
                .cmp(&a.hash_rates.last())
                .then(a.account.cmp(&b.account))
        });
        HistoryView {
            interval_s: self.interval.as_secs_f64(),
            capacity: self.capacity,
            samples: self.samples.iter().cloned().collect(),
            workers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{ServiceStat, WorkerStat};

    fn stats(rps: f64, workers: &[(&str, u64)]) -> NodeStats {
        NodeStats {
            requests_per_second: rps,
            worker_list: workers
                .iter()
                .map(|(a, r)| WorkerStat {
                    account: a.to_string(),
                    hash_rate: *r,
                    ..WorkerStat::default()
                })
                .collect(),
            ..NodeStats::default()
        }
    }

    #[test]
    fn keeps_at_most_capacity_samples_oldest_dropped_first() {
        let mut h = History::new(Duration::from_secs(5), 3, 8);
        assert!(h.is_empty());
        for i in 0..5u64 {
            h.record(i * 5_000, &stats(i as f64, &[]));
        }
        assert_eq!(h.len(), 3);
        let v = h.view();
        assert_eq!(v.capacity, 3);
        assert_eq!(v.interval_s, 5.0);
        let times: Vec<u64> = v.samples.iter().map(|s| s.t_ms).collect();
        assert_eq!(times, [10_000, 15_000, 20_000]);
        let rps: Vec<f64> = v.samples.iter().map(|s| s.requests_per_second).collect();
        assert_eq!(rps, [2.0, 3.0, 4.0]);
    }

    #[test]
    fn a_sample_carries_the_charted_figures() {
        let mut s = stats(1.5, &[("a", 7)]);
        s.latency_ms = crate::net::Percentiles::of(&[10.0, 20.0, 30.0]);
        s.network_hash_rate = 7;
        s.credits_earned = 4;
        s.ledger_receipts = 9;
        s.connected_peers = 3;
        s.live_workers = 1;
        s.service_list = vec![
            ServiceStat {
                spent: 5,
                ..ServiceStat::default()
            },
            ServiceStat {
                spent: 4,
                ..ServiceStat::default()
            },
        ];
        let got = Sample::of(42, &s);
        assert_eq!(
            got,
            Sample {
                t_ms: 42,
                requests_per_second: 1.5,
                latency_p50_ms: 20.0,
                latency_p99_ms: 30.0,
                network_hash_rate: 7,
                credits_earned: 4,
                credits_moved: 9,
                ledger_receipts: 9,
                connected_peers: 3,
                live_workers: 1,
            }
        );
    }

    #[test]
    fn worker_series_follow_the_samples_and_are_bounded() {
        let mut h = History::new(Duration::from_secs(1), 4, 8);
        h.record(0, &stats(0.0, &[("a", 1)]));
        h.record(1, &stats(0.0, &[("a", 2), ("b", 10)]));
        for t in 2..6 {
            h.record(t, &stats(0.0, &[("a", t + 1), ("b", 10)]));
        }
        let v = h.view();
        // Busiest first; each series ends at the newest sample and holds at most `capacity`.
        assert_eq!(v.workers[0].account, "b");
        assert_eq!(v.workers[0].hash_rates, [10, 10, 10, 10]);
        assert_eq!(v.workers[1].account, "a");
        assert_eq!(v.workers[1].hash_rates, [3, 4, 5, 6]);
    }

    #[test]
    fn workers_that_leave_are_dropped_and_start_afresh_when_back() {
        let mut h = History::new(Duration::from_secs(1), 10, 8);
        h.record(0, &stats(0.0, &[("a", 1), ("b", 2)]));
        h.record(1, &stats(0.0, &[("b", 2)]));
        let v = h.view();
        assert_eq!(v.workers.len(), 1);
        assert_eq!(v.workers[0].account, "b");
        assert_eq!(v.workers[0].hash_rates, [2, 2]);
        h.record(2, &stats(0.0, &[("a", 5), ("b", 2)]));
        let v = h.view();
        assert_eq!(v.workers[0].account, "a");
        assert_eq!(v.workers[0].hash_rates, [5]);
        assert_eq!(v.workers[1].hash_rates, [2, 2, 2]);
    }

    #[test]
    fn only_the_busiest_workers_are_tracked() {
        let mut h = History::new(Duration::from_secs(1), 10, 2);
        h.record(0, &stats(0.0, &[("a", 1), ("b", 3), ("c", 2)]));
        let names: Vec<String> = h.view().workers.into_iter().map(|w| w.account).collect();
        assert_eq!(names, ["b", "c"]);
        // "a" speeds up past "c": "c" is evicted, "a" starts a series.
        h.record(1, &stats(0.0, &[("a", 9), ("b", 3), ("c", 2)]));
        let v = h.view();
        let names: Vec<&str> = v.workers.iter().map(|w| w.account.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(v.workers[0].hash_rates, [9]);
        assert_eq!(v.workers[1].hash_rates, [3, 3]);
    }

    #[test]
    fn a_worker_listed_twice_is_tracked_once() {
        let mut h = History::new(Duration::from_secs(1), 10, 8);
        h.record(0, &stats(0.0, &[("a", 1), ("b", 2), ("a", 3)]));
        let v = h.view();
        assert_eq!(v.workers.len(), 2);
        assert_eq!(v.workers[0].account, "a");
        assert_eq!(v.workers[0].hash_rates, [3]);
    }

    #[test]
    fn bounds_of_zero_still_keep_one() {
        let mut h = History::new(Duration::from_secs(1), 0, 0);
        h.record(0, &stats(0.0, &[("a", 1), ("b", 2)]));
        h.record(1, &stats(0.0, &[("a", 1), ("b", 2)]));
        let v = h.view();
        assert_eq!(v.samples.len(), 1);
        assert_eq!(v.workers.len(), 1);
        assert_eq!(v.workers[0].hash_rates, [2]);
    }
}
