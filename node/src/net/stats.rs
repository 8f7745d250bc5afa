//! What a node counts about the swarm, as one snapshot any part of the program can read.
//!
//! [`NodeStats`] is what the event loop publishes (the dashboard, `/api/stats`, `/metrics` and
//! `dpow status` read it). A worker's own figures, [`OwnWorkerStats`], are kept by
//! [`OwnTally`]: it follows each of this node's answers from the solver to the receipt that
//! pays it (or another worker), and reads the credits per epoch from the ledger.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use dpow_keys::PublicKey;
use dpow_protocol::RequestId;
use dpow_protocol::flow::Role;
use dpow_protocol::ledger::epoch_of;

use crate::store::NodeLedger;
use dpow_solver::Solver;
use serde::{Deserialize, Serialize};

/// Epochs of credits a worker's statistics show: the current one and the six before it.
pub const CREDIT_EPOCHS: u64 = 7;
/// Sent results remembered until their receipt comes; the oldest is forgotten first.
pub const MAX_AWAITED_RESULTS: usize = 10_000;
/// A job shorter than this gives too noisy a hash rate: devices keep the figure of their
/// last longer job (or take the short job's when they have none yet).
const MIN_RATE_JOB: Duration = Duration::from_millis(50);
/// On a ledger this big, credits per epoch (a walk over each epoch's receipts) are
/// recomputed at most this often.
const BIG_LEDGER: usize = 50_000;
const BIG_LEDGER_REFRESH: Duration = Duration::from_secs(5);

/// The sum of hash rates workers announce (their own claim, any `u64`): saturates at
/// `u64::MAX` where a plain sum would overflow.
pub(crate) fn summed_rate(rates: impl IntoIterator<Item = u64>) -> u64 {
    rates.into_iter().fold(0, u64::saturating_add)
}

/// Counters and gauges of one node. Cloned out as a snapshot; the event loop is the only writer
/// but for the work API's precache figures, which the gateway sets.
#[derive(Clone, Debug, Default, Serialize)]
pub struct NodeStats {
    /// This node's libp2p peer id.
    pub peer_id: String,
    /// The node key, `dpow_…` (a worker's key in results and receipts; never a Nano account).
    pub account: String,
    /// The network's name and the short form of its id (`NetworkId::short`).
    pub network: String,
    /// Short network id (16 hex digits): what identify, topics and protocol names carry.
    pub network_id: String,
    /// Peers dropped at identify because they announced another network.
    pub peers_wrong_network: u64,
    /// Peers with an open connection.
    pub connected_peers: usize,
    /// Whether peers can dial this node, as far as it knows: `public` (an address confirmed
    /// by AutoNAT, or set so), `private` (peers could not dial back, or set so), `unknown`.
    pub reachability: String,
    /// The public address AutoNAT confirmed, if any.
    pub public_address: Option<String>,
    /// Kademlia's mode: `server` (serves records and routing) or `client` (asks only).
    pub kad_mode: String,
    /// Open connections made straight to the peer (TCP or QUIC, including hole-punched ones).
    pub connections_direct: usize,
    /// Open connections through a relay (`/p2p-circuit`).
    pub connections_relayed: usize,
    /// Relayed connections upgraded to direct ones by hole punching (DCUtR), since start.
    pub hole_punches: u64,
    /// Hole punching attempts that failed (the relayed connection stays).
    pub hole_punch_failures: u64,
    /// The relay this node holds a reservation on (a private node's way in), if any.
    pub relay: Option<String>,
    /// Private peers holding a reservation on this node's relay now.
    pub relay_reservations: usize,
    /// Circuits through this node's relay now.
    pub relay_circuits: usize,
    /// Workers heard from recently (including this node if it is one).
    pub live_workers: usize,
    /// Of those, workers with receipts enough to be proven ([`dpow_protocol::standing`]);
    /// the others are on probation (only a worker node keeps standings).
    pub proven_workers: usize,
    /// Their summed announced hash rate, hashes per second.
    pub network_hash_rate: u64,
    /// Services this worker serves last (or refuses, as `--exhausted` says): credits spent,
    /// or wins never receipted ([`dpow_protocol::flow::WorkerFlow::set_exhausted`]). Brought
    /// up to date at each statistics rebuild (twice a second); 0 on a node that does not
    /// work.
    pub exhausted_services: usize,
    /// Registry entries applied.
    pub registry_entries: usize,
    /// Times a peer's digests showed registry entries this node lacked (gossip did not bring
    /// them) and its `Hello` pages were walked again for them.
    pub registry_repairs: u64,
    /// Services registered.
    pub services: usize,
    /// Service side: precached works held by the work API (at most
    /// [`crate::gateway::MAX_PRECACHED`]).
    pub precached: usize,
    /// Service side: precached works evicted, oldest first, to stay within that bound.
    pub precache_evicted: u64,
    /// Registry entries met that conflict with another of the same registrar and number (an
    /// equivocating registrar; every node keeps the smaller id, see `protocol::registry`).
    pub registry_equivocations: u64,
    /// Gossip messages accepted (and so forwarded), by kind.
    pub accepted: BTreeMap<String, u64>,
    /// Gossip messages rejected or ignored, by reason; never forwarded.
    pub rejected: BTreeMap<String, u64>,
    /// Peers blocked now for sending too many ignored or invalid messages (each block ends
    /// after `NetTuning::budgets.block_for`).
    pub blocked_peers: Vec<String>,
    /// Blocks imposed since the node started.
    pub peers_blocked: u64,
    /// Peers blocked now.
    pub peers_blocked_now: usize,
    /// Peers whose budgets are tracked now (bounded by `budgets.max_peers`).
    pub budget_peers: usize,
    /// Sync requests of peers answered.
    pub sync_answered: u64,
    /// Bytes of those answers (envelopes and a little framing).
    pub sync_answered_bytes: u64,
    /// Sync requests answered `Busy`: the peer was over its budget.
    pub sync_throttled: u64,
    /// Inbound connections refused by a connection limit (total, per peer, per IP, memory).
    pub connections_denied: u64,
    /// DHT records peers put that this node already held byte for byte (dropped unwritten).
    pub dht_duplicates: u64,
    /// Signature checks handed to the verification pool: what messages that passed every
    /// cheaper check cost (those verified before cost nothing and are not counted).
    pub signature_checks: u64,
    /// Jobs (a message, or up to 32 catch-up receipts) the pool checked or is checking.
    pub verify_jobs: u64,
    /// Jobs waiting for the pool or being checked now.
    pub verify_queued: usize,
    /// Messages dropped because their sender's queue, or the pool's, was full.
    pub verify_refused: u64,
    /// Requests this node submitted for its own callers.
    pub submitted: u64,
    /// Of those, answered with valid work.
    pub completed: u64,
    /// Of those, expired unanswered.
    pub expired: u64,
    /// Worker side: requests solved and published by this node.
    pub solved: u64,
    /// Worker side: results sent by gossip because the service node could not be reached.
    pub results_gossiped: u64,
    /// Service side: results delivered straight to this node and taken.
    pub results_direct: u64,
    /// Worker side: wins (by the service node's answer) never receipted, per service key.
    pub unreceipted_wins: BTreeMap<String, u64>,
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
    /// How long the event loop's last 4,096 turns took, each from its event to the end of
    /// its handling (ms): what anything waiting on the node waits at most per turn.
    pub turn_ms: Percentiles,
    /// The event loop's longest turn since the node started (ms).
    pub turn_max_ms: f64,
    /// What woke the event loop for its longest turn since start (`sync request: fetch`,
    /// `gossip message`, `verified`, `tick`, ...).
    pub turn_max_kind: String,
    /// The slowest 1% of the last 4,096 turns (41), counted by what woke the loop: what the
    /// slow turns are.
    pub turn_slow_kinds: BTreeMap<String, u64>,
    /// Registered services and the requests this node has seen from each.
    pub service_list: Vec<ServiceStat>,
    /// Live workers and what they announce.
    pub worker_list: Vec<WorkerStat>,
    /// Receipts held in this node's ledger.
    pub ledger_receipts: usize,
    /// Receipts refused because the store failed to write them (disk full, I/O errors).
    #[serde(default)]
    pub store_refusals: u64,
    /// The current epoch and the digest of this node's receipts in it (hex): equal on nodes
    /// that hold the same receipts.
    pub ledger_epoch: u64,
    /// Digest of the current epoch (on big books, the last one computed off the event loop,
    /// `NetTuning::inline_digest_below`).
    pub ledger_digest: String,
    /// Peers' `Fetch` requests read from the books on a blocking thread (books on disk).
    pub fetches_off_loop: u64,
    /// Peers' `Ids` pages read from the books on a blocking thread (books on disk).
    pub ids_pages_off_loop: u64,
    /// Epoch digests computed on the event loop (each epoch's first, and on small books
    /// each after the epoch changed).
    pub digests_inline: u64,
    /// Epoch digests computed on a blocking thread (big books: `NetTuning::inline_digest_below`).
    pub digests_off_loop: u64,
    /// Final epochs this node kept as a registrar's checkpoint instead of fetching their
    /// receipts, since it started (a light ledger: `--adopt-checkpoints`).
    pub epochs_adopted: u64,
    /// Credits this node earned as a worker, by the ledger.
    pub credits_earned: u64,
    /// Services caught signing two receipts for one request.
    pub flagged_services: Vec<String>,
    /// This node as a worker: its devices, its results and what became of them, its
    /// credits. `None` when the node does not work.
    pub worker: Option<OwnWorkerStats>,
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
    /// This worker's wins the service never signed a receipt for.
    pub unreceipted_wins: u64,
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
    /// A browser worker this node carries over its `/contribute` bridge (only the carrying
    /// node knows; elsewhere a browser looks like any worker).
    pub browser: bool,
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

/// This node's own work as a worker. Counts start with the process; credits come from the
/// ledger, so they include receipts earned before a restart.
///
/// Every answer the solver finds ends in exactly one of `sent` or `rejected`; every sent
/// result ends in `won`, `lost`, or stays `awaiting_receipt` (a request whose service never
/// signed a receipt, or one not seen yet).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OwnWorkerStats {
    /// Where this worker's earnings are paid (`nano_` account).
    pub payout: String,
    /// Each device that solves and its hash rate, refreshed after every job.
    pub devices: Vec<DeviceRate>,
    /// Results signed and published (or handed to this node's own service).
    pub sent: u64,
    /// Sent results whose request's receipt names this worker: paid.
    pub won: u64,
    /// Sent results whose request's receipt names another worker (its answer came first).
    pub lost: u64,
    /// Sent results with no receipt for their request yet (at most [`MAX_AWAITED_RESULTS`]).
    pub awaiting_receipt: u64,
    /// Jobs that did not end in a sent result, by reason ([`OwnReject`]); never counted
    /// for a job that was stopped because its request was answered or withdrawn first.
    pub rejected: BTreeMap<String, u64>,
    /// Credits earned in all, by the ledger.
    pub credits: u64,
    /// Credits earned in each of the last [`CREDIT_EPOCHS`] epochs, the current one first
    /// (epochs with nothing earned included, as 0).
    pub credits_by_epoch: Vec<EpochCredits>,
    /// Solves started as one of a request's primaries.
    pub started_primary: u64,
    /// Solves started as a backup (the primaries had not answered in time, or were busy).
    pub started_backup: u64,
    /// Of those, solves started before the backup's time because every primary was busy
    /// with an earlier request or silent (`protocol::flow`'s idle start).
    pub started_early: u64,
    /// Receipts this worker's view holds for it ([`dpow_protocol::standing`]): under
    /// `probation_receipts` it is on probation, planned after every proven worker.
    pub standing_receipts: u64,
}

impl OwnWorkerStats {
    /// All rejected jobs, whatever the reason.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// Rejected jobs for `reason`.
    pub fn rejected_for(&self, reason: OwnReject) -> u64 {
        self.rejected.get(reason.as_str()).copied().unwrap_or(0)
    }
}

/// One solving device of this worker.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeviceRate {
    /// Its name ("cpu avx2 x8", "opencl 0:0 …").
    pub name: String,
    /// Its hash rate over its last job, hashes per second.
    pub hash_rate: u64,
    /// Failures (errors, work that failed re-validation) since the node started.
    pub failures: u64,
    /// Whether it was dropped after too many failures in a row.
    pub dropped: bool,
}

/// Credits a worker earned in one epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochCredits {
    /// The epoch (the ledger's epoch number: days since 1970 with the default length).
    pub epoch: u64,
    /// Credits earned in it, by the ledger's counted receipts.
    pub credits: u64,
}

/// Why an answer or job of this worker did not become a sent result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnReject {
    /// The solver's answer failed the node's re-validation: it never left the node.
    InvalidWork,
    /// The solver failed (a device error, no device left).
    SolverError,
    /// Another worker's valid result arrived while this one was being found.
    AlreadyAnswered,
    /// The request expired before the answer was found.
    Expired,
    /// The request was cancelled by its service (or refused when its service ran out of
    /// credits) while it was being solved.
    Cancelled,
    /// Gossip would not take the result (no peer on the results topic, for one).
    PublishFailed,
    /// The service node refused the delivered result.
    Refused,
}

impl OwnReject {
    /// The reason as statistics name it.
    pub fn as_str(self) -> &'static str {
        match self {
            OwnReject::InvalidWork => "invalid_work",
            OwnReject::SolverError => "solver_error",
            OwnReject::AlreadyAnswered => "already_answered",
            OwnReject::Expired => "expired",
            OwnReject::Cancelled => "cancelled",
            OwnReject::PublishFailed => "publish_failed",
            OwnReject::Refused => "refused",
        }
    }
}

/// The event loop's bookkeeping behind [`OwnWorkerStats`]: the figures, and the sent results
/// still waiting for their receipt (bounded).
#[derive(Debug)]
pub(crate) struct OwnTally {
    stats: OwnWorkerStats,
    awaited: HashSet<RequestId>,
    awaited_order: VecDeque<RequestId>,
    /// `(credits in all, current epoch, credits in it)` when credits per epoch were computed.
    credits_seen: Option<(u128, u64, u128)>,
    credits_at: Option<Instant>,
}

impl OwnTally {
    /// A worker paid to `payout`, solving with `solver` at `rate` (announced or measured).
    pub(crate) fn new(
        payout: Option<&dpow_keys::NanoAccount>,
        solver: &dyn Solver,
        rate: u64,
    ) -> OwnTally {
        let mut t = OwnTally {
            stats: OwnWorkerStats {
                payout: payout.map(|a| a.to_string()).unwrap_or_default(),
                ..OwnWorkerStats::default()
            },
            awaited: HashSet::new(),
            awaited_order: VecDeque::new(),
            credits_seen: None,
            credits_at: None,
        };
        t.stats.devices = solver
            .devices()
            .into_iter()
            .map(|d| DeviceRate {
                name: d.name,
                hash_rate: d.rate_hps as u64,
                failures: d.total_failures,
                dropped: d.dropped,
            })
            .collect();
        if t.stats.devices.is_empty() {
            t.stats.devices.push(DeviceRate {
                name: solver.name(),
                hash_rate: rate,
                ..DeviceRate::default()
            });
        }
        t
    }

    /// The figures as they stand.
    pub(crate) fn snapshot(&self) -> OwnWorkerStats {
        self.stats.clone()
    }

    /// A job ended after `hashes` in `elapsed`: refresh the devices' rates (from the
    /// solver's own per-device records when it keeps them, a dispatcher does).
    pub(crate) fn job_done(&mut self, solver: &dyn Solver, hashes: u64, elapsed: Duration) {
        let long = elapsed >= MIN_RATE_JOB;
        let records = solver.devices();
        if records.is_empty() {
            if let [only] = self.stats.devices.as_mut_slice()
                && (long || only.hash_rate == 0)
                && hashes > 0
            {
                only.hash_rate = (hashes as f64 / elapsed.as_secs_f64().max(1e-6)) as u64;
            }
            return;
        }
        if records.len() != self.stats.devices.len() {
            self.stats.devices = records
                .iter()
                .map(|d| DeviceRate {
                    name: d.name.clone(),
                    ..DeviceRate::default()
                })
                .collect();
        }
        for (mine, d) in self.stats.devices.iter_mut().zip(records) {
            if (long || mine.hash_rate == 0) && d.hashes > 0 {
                mine.hash_rate = d.rate_hps as u64;
            }
            mine.failures = d.total_failures;
            mine.dropped = d.dropped;
        }
    }

    /// A solve started at `now` in `role` (a primary, a backup, or early as a backup).
    pub(crate) fn started(&mut self, role: Option<Role>, now: u64) {
        match role {
            Some(Role::Primary) => self.stats.started_primary += 1,
            Some(Role::Backup { starts_at_ms, .. }) => {
                self.stats.started_backup += 1;
                if starts_at_ms > now {
                    self.stats.started_early += 1;
                }
            }
            None => self.stats.started_backup += 1,
        }
    }

    /// What this worker's view holds of its own standing.
    pub(crate) fn set_standing(&mut self, receipts: u64) {
        self.stats.standing_receipts = receipts;
    }

    /// An answer or job did not become a sent result.
    pub(crate) fn reject(&mut self, reason: OwnReject) {
        *self
            .stats
            .rejected
            .entry(reason.as_str().to_string())
            .or_default() += 1;
    }

    /// A result for `request` went out: wait for its receipt.
    pub(crate) fn sent(&mut self, request: RequestId) {
        self.stats.sent += 1;
        if self.awaited.insert(request) {
            self.awaited_order.push_back(request);
        }
        while self.awaited_order.len() > MAX_AWAITED_RESULTS {
            if let Some(old) = self.awaited_order.pop_front() {
                self.awaited.remove(&old);
            }
        }
        self.stats.awaiting_receipt = self.awaited.len() as u64;
    }

    /// The ledger counted a receipt for `request` naming `worker`: if this worker sent a
    /// result for it, that result is won (`worker` is `me`) or lost.
    pub(crate) fn receipt(&mut self, request: &RequestId, worker: &PublicKey, me: &PublicKey) {
        if !self.awaited.remove(request) {
            return;
        }
        self.awaited_order.retain(|r| r != request);
        if worker == me {
            self.stats.won += 1;
        } else {
            self.stats.lost += 1;
        }
        self.stats.awaiting_receipt = self.awaited.len() as u64;
    }

    /// Credits of `me` in all and per epoch, from `ledger` at time `now_ms`. Cheap when
    /// nothing changed: the epochs are walked again only when `me`'s total or the current
    /// epoch moved (and on a big ledger at most every few seconds).
    pub(crate) fn refresh_credits(&mut self, ledger: &NodeLedger, me: &PublicKey, now_ms: u64) {
        let total = ledger.earned(me);
        let epoch = epoch_of(now_ms, ledger.epoch_ms());
        if self
            .credits_seen
            .is_some_and(|(t, e, _)| t == total && e == epoch)
        {
            return;
        }
        if ledger.len() >= BIG_LEDGER
            && self
                .credits_at
                .is_some_and(|at| at.elapsed() < BIG_LEDGER_REFRESH)
        {
            return;
        }
        self.credits_at = Some(Instant::now());
        let earned_in = |e: u64| {
            ledger
                .earned_in_epoch(e)
                .get(me)
                .copied()
                .unwrap_or_default()
        };
        let current = earned_in(epoch);
        let clamp = |c: u128| u64::try_from(c).unwrap_or(u64::MAX);
        // Only the current epoch changed if the credits outside it did not: the common case
        // (a receipt just won) costs one epoch's walk, not seven.
        let same_past = self.credits_seen.is_some_and(|(t, e, c)| {
            e == epoch && t.saturating_sub(c) == total.saturating_sub(current)
        });
        if same_past && let Some(first) = self.stats.credits_by_epoch.first_mut() {
            first.credits = clamp(current);
        } else {
            self.stats.credits_by_epoch = (0..CREDIT_EPOCHS)
                .filter_map(|back| epoch.checked_sub(back))
                .map(|e| EpochCredits {
                    epoch: e,
                    credits: clamp(if e == epoch { current } else { earned_in(e) }),
                })
                .collect();
        }
        self.stats.credits = clamp(total);
        self.credits_seen = Some((total, epoch, current));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announced_rates_sum_without_overflow() {
        assert_eq!(summed_rate([]), 0);
        assert_eq!(summed_rate([3, 4]), 7);
        // Two workers announcing the largest rate a status can carry.
        assert_eq!(summed_rate([u64::MAX, u64::MAX, 1]), u64::MAX);
    }

    struct One;

    impl Solver for One {
        fn name(&self) -> String {
            "one".into()
        }

        fn solve(
            &self,
            _: &dpow_protocol::Root,
            _: dpow_protocol::Difficulty,
            _: &dpow_solver::Control,
        ) -> Result<Option<dpow_protocol::Work>, dpow_solver::SolveError> {
            Ok(None)
        }
    }

    fn key(b: u8) -> PublicKey {
        PublicKey([b; 32])
    }

    fn account(b: u8) -> dpow_keys::NanoAccount {
        dpow_keys::NanoAccount::from_bytes([b; 32]).expect("not burn")
    }

    fn id(b: u8) -> RequestId {
        dpow_protocol::MessageId([b; 32])
    }

    #[test]
    fn sent_results_end_won_lost_or_awaiting() {
        let (me, other) = (key(1), key(2));
        let mut t = OwnTally::new(Some(&account(9)), &One, 1000);
        t.sent(id(1));
        t.sent(id(2));
        t.sent(id(3));
        t.receipt(&id(1), &me, &me);
        t.receipt(&id(2), &other, &me);
        // A receipt for a request this worker sent nothing for, or one already settled.
        t.receipt(&id(7), &me, &me);
        t.receipt(&id(1), &me, &me);
        t.reject(OwnReject::InvalidWork);
        t.reject(OwnReject::InvalidWork);
        t.reject(OwnReject::Expired);
        let s = t.snapshot();
        assert_eq!((s.sent, s.won, s.lost, s.awaiting_receipt), (3, 1, 1, 1));
        assert_eq!(s.rejected_for(OwnReject::InvalidWork), 2);
        assert_eq!(s.rejected_total(), 3);
        assert_eq!(s.payout, account(9).to_string());
        assert_eq!(s.devices.len(), 1);
        assert_eq!(
            (s.devices[0].name.as_str(), s.devices[0].hash_rate),
            ("one", 1000)
        );
    }

    #[test]
    fn awaited_results_are_bounded_oldest_first() {
        let me = key(1);
        let mut t = OwnTally::new(None, &One, 1);
        for i in 0..=MAX_AWAITED_RESULTS as u32 {
            let mut b = [0u8; 32];
            b[..4].copy_from_slice(&i.to_be_bytes());
            t.sent(dpow_protocol::MessageId(b));
        }
        let s = t.snapshot();
        assert_eq!(s.sent, MAX_AWAITED_RESULTS as u64 + 1);
        assert_eq!(s.awaiting_receipt, MAX_AWAITED_RESULTS as u64);
        // The first was forgotten: its receipt counts for nothing.
        t.receipt(&dpow_protocol::MessageId([0; 32]), &me, &me);
        assert_eq!(t.snapshot().won, 0);
    }

    #[test]
    fn a_single_solvers_rate_follows_its_long_jobs() {
        let mut t = OwnTally::new(None, &One, 0);
        // No rate yet: even a short job gives one.
        t.job_done(&One, 1_000, Duration::from_millis(10));
        assert_eq!(t.snapshot().devices[0].hash_rate, 100_000);
        // A short job does not replace it; a long one does.
        t.job_done(&One, 10, Duration::from_millis(10));
        assert_eq!(t.snapshot().devices[0].hash_rate, 100_000);
        t.job_done(&One, 2_000_000, Duration::from_secs(1));
        assert_eq!(t.snapshot().devices[0].hash_rate, 2_000_000);
    }

    #[test]
    fn credits_per_epoch_of_an_empty_ledger_are_seven_zeros() {
        let mut t = OwnTally::new(None, &One, 1);
        let ledger = NodeLedger::Memory(dpow_protocol::ledger::Ledger::new(1000));
        t.refresh_credits(&ledger, &key(1), 10_500);
        let s = t.snapshot();
        let epochs: Vec<u64> = s.credits_by_epoch.iter().map(|e| e.epoch).collect();
        assert_eq!(epochs, vec![10, 9, 8, 7, 6, 5, 4]);
        assert!(s.credits_by_epoch.iter().all(|e| e.credits == 0));
        // Near the start of time there are fewer epochs to show.
        t.refresh_credits(&ledger, &key(1), 2_000);
        assert_eq!(t.snapshot().credits_by_epoch.len(), 3);
    }
}
