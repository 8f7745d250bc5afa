//! What a node counts about the swarm, as one snapshot any part of the program can read.

use std::collections::BTreeMap;

use serde::Serialize;

/// Counters and gauges of one node. Cloned out as a snapshot; the event loop is the only writer.
#[derive(Clone, Debug, Default, Serialize)]
pub struct NodeStats {
    /// This node's libp2p peer id.
    pub peer_id: String,
    /// The node key's `nano_` account (a worker's key in results and receipts).
    pub account: String,
    /// Peers with an open connection.
    pub connected_peers: usize,
    /// Workers heard from recently (including this node if it is one).
    pub live_workers: usize,
    /// Their summed announced hash rate, hashes per second.
    pub network_hash_rate: u64,
    /// Registry entries applied.
    pub registry_entries: usize,
    /// Services registered.
    pub services: usize,
    /// Gossip messages accepted (and so forwarded), by kind.
    pub accepted: BTreeMap<String, u64>,
    /// Gossip messages rejected or ignored, by reason; never forwarded.
    pub rejected: BTreeMap<String, u64>,
    /// Peers blocked for sending too many invalid messages.
    pub blocked_peers: Vec<String>,
    /// Requests this node submitted for its own callers.
    pub submitted: u64,
    /// Of those, answered with valid work.
    pub completed: u64,
    /// Of those, expired unanswered.
    pub expired: u64,
    /// Worker side: requests solved and published by this node.
    pub solved: u64,
    /// Worker side: hashes computed.
    pub hashes: u64,
    /// Worker side: hashes on requests that this node answered first (as far as it saw).
    pub hashes_won: u64,
    /// Worker side: the request being solved now, if any.
    pub solving: Option<String>,
    /// Worker side: requests waiting in the queue.
    pub queue: usize,
    /// Worker side: requests dropped because the queue was full.
    pub dropped: u64,
    /// Worker side: this node's announced hash rate.
    pub hash_rate: u64,
    /// Seconds since the node started.
    pub uptime_s: u64,
    /// Work requests accepted per second, over the last minute.
    pub requests_per_second: f64,
    /// Valid results seen, by the block kind of their request (`unspecified` when none given).
    pub work_by_kind: BTreeMap<String, u64>,
    /// Latency of this node's own requests (service side), over the last 1,000.
    pub latency_ms: Percentiles,
    /// Registered services and the requests this node has seen from each.
    pub service_list: Vec<ServiceStat>,
    /// Live workers and what they announce.
    pub worker_list: Vec<WorkerStat>,
    /// Receipts held in this node's ledger.
    pub ledger_receipts: usize,
    /// The current epoch and the digest of this node's receipts in it (hex): equal on nodes
    /// that hold the same receipts.
    pub ledger_epoch: u64,
    /// Digest of the current epoch.
    pub ledger_digest: String,
    /// Credits this node earned as a worker, by the ledger.
    pub credits_earned: u64,
    /// Services caught signing two receipts for one request.
    pub flagged_services: Vec<String>,
}

/// Latency percentiles in milliseconds (0 when there is no sample).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Percentiles {
    /// Samples behind the figures.
    pub samples: usize,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// The `p`-th percentile (nearest rank) of `sorted` samples; 0 for none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Percentiles {
    /// Percentiles of `samples` (any order).
    pub fn of(samples: &[f64]) -> Percentiles {
        let mut v: Vec<f64> = samples.to_vec();
        v.sort_by(f64::total_cmp);
        Percentiles {
            samples: v.len(),
            p50: percentile(&v, 50.0),
            p95: percentile(&v, 95.0),
            p99: percentile(&v, 99.0),
        }
    }
}

/// One registered service as a node sees it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ServiceStat {
    /// Its `nano_` account.
    pub account: String,
    /// Its registered name.
    pub name: String,
    /// Requests seen from it.
    pub requests: u64,
    /// Whether it is banned.
    pub banned: bool,
    /// Credits granted by registrars.
    pub granted: u64,
    /// Credits spent, by the ledger.
    pub spent: u64,
}

/// One live worker as a node sees it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WorkerStat {
    /// Its `nano_` account (its key).
    pub account: String,
    /// Announced hash rate, hashes per second.
    pub hash_rate: u64,
    /// Announced queue length.
    pub queue: u32,
    /// Where it is paid.
    pub payout: String,
    /// Credits earned, by the ledger.
    pub credits: u64,
}

impl NodeStats {
    pub(crate) fn accept(&mut self, kind: &str) {
        *self.accepted.entry(kind.to_string()).or_default() += 1;
    }

    pub(crate) fn reject(&mut self, reason: &str) {
        *self.rejected.entry(reason.to_string()).or_default() += 1;
    }

    /// Rejections counted for `reason`.
    pub fn rejected_for(&self, reason: &str) -> u64 {
        self.rejected.get(reason).copied().unwrap_or(0)
    }

    /// Messages of `kind` accepted.
    pub fn accepted_of(&self, kind: &str) -> u64 {
        self.accepted.get(kind).copied().unwrap_or(0)
    }
}
