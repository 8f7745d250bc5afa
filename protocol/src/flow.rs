//! The request lifecycle as sans-IO state machines: no clock, no sockets, no randomness.
//!
//! There is no claim message. Every worker sees every request, every result or cancel and
//! every [`WorkerStatus`], so each keeps the same view of who is doing what and assigns by
//! itself, the same way:
//!
//! 1. A worker is **busy** while the view makes it a primary of an open request (of the same
//!    class or a better one), and **free** otherwise. Requests are assigned in arrival order
//!    (most urgent class first) to free workers only, so a busy worker is skipped and nothing
//!    queues behind it while another idles.
//! 2. Among the free workers, **primaries** are taken in the order of a **rendezvous hash**
//!    of (request id, worker key) ([`rank_workers`]: a stable, fair, uncoordinated order that
//!    differs per request) until their summed announced hash rate would solve the request in
//!    [`FlowConfig::target_ms`] on average (at least `min_primaries`, at most
//!    `max_primaries`) ([`plan_among`]). They start at once. Search is memoryless, so two
//!    workers on one request finish twice as fast and waste nothing but the hashing done
//!    while the answer travels.
//! 3. A request that finds no free worker **waits** ([`Role::Waiting`]); it is assigned the
//!    moment one is free in the view: when a result or cancel ends another request, when a
//!    new worker announces itself, or when a silent primary goes stale (its requests wait
//!    again). So new workers help at once and plans follow load.
//! 4. When a request is assigned, every other live worker becomes a **backup**, in tiers the
//!    size of the primary set. Tier `i` starts `backup_after_factor × i × expected_solve_ms +
//!    backup_grace_ms` after the assignment, where `expected_solve_ms` is the primaries'
//!    expected time. A dead primary, or views that disagree on who is free, delays a
//!    request, never loses it. A worker serves its own primaries before backups, and a
//!    primary assigned to it preempts a backup solve: the others count it free once it has
//!    no primaries.
//!
//! Views differ for the time a message takes to travel, so two nodes can assign one request
//! differently: it then gets an extra primary (parallel search, no loss in expectation) or,
//! rarely, none until its backups' time comes. The announced queue length in a status is
//! this worker's own count of the requests it is primary of ([`WorkerFlow::load_of`]), for
//! dashboards; the assignment uses the view, which is fresher than any announcement.
//!
//! The first valid result (or the service's cancel) ends the request everywhere: each worker
//! stops hashing it ([`WorkerAction::Stop`]) and forgets it, remembering its id so that a late
//! copy of the request is ignored.
//!
//! A worker solves one request at a time (a job uses all its devices). Its queue is ordered by
//! priority class — `Normal` before `Precache` — then services within their rolling-window
//! volume before services over it (de-prioritised, never refused), then its own primaries
//! before backups, then age. A better request that becomes runnable preempts a worse solve,
//! which goes back to the queue. Every worker queues every request it hears of (most as
//! backups), so the queue is bounded: when it is full, requests waiting for a free worker
//! are dropped first, then backups that have not started, latest start first.
//!
//! Services whose credits are spent (the node learns it from the ledger's
//! `ServiceBalance::is_exhausted` and passes the set to [`WorkerFlow::set_exhausted`]) are
//! handled by [`FlowConfig::exhausted`]: with [`ExhaustedPolicy::Deprioritise`] (the default)
//! their requests come after every other class, Precache and over-volume included — solved
//! only when nothing else waits, and dropped first when the queue is full; with
//! [`ExhaustedPolicy::Refuse`] they are not taken at all. A new set re-classes the requests
//! already queued.
//!
//! [`ServiceFlow`] is the other side: the service's node tracks its outstanding requests,
//! republishes a request nobody answered, takes the first valid result and cancels the rest.

use std::cmp::Reverse;

use blake2::digest::consts::U8;
use blake2::{Blake2b, Digest};
use dpow_keys::PublicKey;

use crate::{Difficulty, RequestId, WorkRequest};

mod service;
mod worker;

pub use service::{FlowError, ServiceAction, ServiceConfig, ServiceFlow};
pub use worker::{WorkerAction, WorkerFlow};

/// Most workers a node keeps track of; the stalest is forgotten first.
pub const MAX_WORKERS: usize = 10_000;
/// Most services whose request volume a worker tracks.
pub const MAX_TRACKED_SERVICES: usize = 10_000;

/// What a worker does with requests from a service whose credits are spent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExhaustedPolicy {
    /// Queue them after every other class: solved only when nothing else waits, dropped
    /// first when the queue is full.
    #[default]
    Deprioritise,
    /// Ignore them: never queued, never a backup. Requests already queued when their service
    /// becomes exhausted are dropped.
    Refuse,
}

/// Settings of the request lifecycle. Every node of a network should use the same values so
/// that their plans agree (a disagreement only costs extra or delayed hashing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowConfig {
    /// Desired mean solve time: primaries are added until their summed rate meets
    /// `expected_hashes × 1000 / target_ms`.
    pub target_ms: u64,
    /// Fewest primaries (when that many workers are live).
    pub min_primaries: usize,
    /// Most primaries.
    pub max_primaries: usize,
    /// Backup tier `i` starts after `factor × i` expected solve times of the primaries…
    pub backup_after_factor: u32,
    /// …plus this grace, covering the time an answer takes to travel.
    pub backup_grace_ms: u64,
    /// A worker not heard from for this long is not live.
    pub worker_stale_ms: u64,
    /// The rolling window over which a service's request volume is counted.
    pub volume_window_ms: u64,
    /// Requests per service per window beyond which its requests are de-prioritised.
    pub volume_limit: u32,
    /// Most requests queued on one worker. Beyond it one is dropped: a request from an
    /// exhausted service if there is one, else a backup that has not started (latest start
    /// first), else the least urgent runnable request.
    pub max_queue: usize,
    /// Most finished request ids remembered (to ignore late copies).
    pub max_tracked: usize,
    /// What to do with requests from services whose credits are spent (see
    /// [`WorkerFlow::set_exhausted`]).
    pub exhausted: ExhaustedPolicy,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            target_ms: 1000,
            min_primaries: 1,
            max_primaries: 8,
            backup_after_factor: 3,
            backup_grace_ms: 200,
            worker_stale_ms: 30_000,
            volume_window_ms: 60_000,
            volume_limit: 600,
            max_queue: 4096,
            max_tracked: 65_536,
            exhausted: ExhaustedPolicy::Deprioritise,
        }
    }
}

/// A worker's part in one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Starts at once.
    Primary,
    /// No worker is free for it in this node's view: it is assigned when one is.
    Waiting,
    /// Starts if no answer arrived by `starts_at_ms`.
    Backup {
        /// Backup tier, from 1.
        tier: u32,
        /// When it starts.
        starts_at_ms: u64,
    },
}

/// Who does what for one request: see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Workers that start at once, best ranked first.
    pub primaries: Vec<PublicKey>,
    /// The other workers, each with its tier (from 1) and its delay after arrival, in ms.
    pub backups: Vec<(PublicKey, u32, u64)>,
    /// The primaries' expected time to solve, in ms.
    pub expected_ms: u64,
}

impl Plan {
    /// `worker`'s role when the request arrived at `received_ms`; `None` if not in the plan.
    pub fn role_of(&self, worker: &PublicKey, received_ms: u64) -> Option<Role> {
        if self.primaries.contains(worker) {
            return Some(Role::Primary);
        }
        if self.primaries.is_empty() {
            return Some(Role::Waiting);
        }
        self.backups
            .iter()
            .find(|(k, _, _)| k == worker)
            .map(|&(_, tier, delay)| Role::Backup {
                tier,
                starts_at_ms: received_ms.saturating_add(delay),
            })
    }
}

/// The rendezvous hash state after the domain tag and the request id: each worker's score
/// finishes a copy of it.
fn rendezvous_prefix(request: &RequestId) -> Blake2b<U8> {
    let mut h = Blake2b::<U8>::new();
    h.update(b"dpow/rendezvous");
    h.update(request.0);
    h
}

fn rendezvous_score(prefix: &Blake2b<U8>, worker: &PublicKey) -> u64 {
    let mut h = prefix.clone();
    h.update(worker.0);
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.finalize());
    u64::from_le_bytes(b)
}

/// Workers in rendezvous order for `request`: highest blake2b-64("dpow/rendezvous" ‖ request
/// id ‖ worker key) first, ties broken by key. Unweighted, so every worker is as likely to
/// lead; the plan weighs rates when it sizes the primary set. A key listed twice counts once,
/// with its highest rate. The order does not depend on the order of `workers`.
pub fn rank_workers(request: &RequestId, workers: &[(PublicKey, u64)]) -> Vec<(PublicKey, u64)> {
    let prefix = rendezvous_prefix(request);
    let mut scored: Vec<(Reverse<u64>, PublicKey, Reverse<u64>)> = workers
        .iter()
        .map(|(k, rate)| (Reverse(rendezvous_score(&prefix, k)), *k, Reverse(*rate)))
        .collect();
    scored.sort_unstable();
    scored.dedup_by_key(|(_, k, _)| *k);
    scored
        .into_iter()
        .map(|(_, k, Reverse(r))| (k, r))
        .collect()
}

/// Expected hashes for `difficulty` as an exact integer (rounded up).
fn expected_hashes(difficulty: Difficulty) -> u128 {
    (1u128 << 64).div_ceil(difficulty.distance())
}

/// The plan for a request among live `workers` (key, announced hash rate) when all of them
/// are free: see the [module docs](self).
pub fn plan(
    request: &WorkRequest,
    id: &RequestId,
    workers: &[(PublicKey, u64)],
    config: &FlowConfig,
) -> Plan {
    plan_among(request.difficulty, id, workers, |_| true, config).unwrap_or(Plan {
        primaries: Vec::new(),
        backups: Vec::new(),
        expected_ms: config.target_ms.max(1),
    })
}

/// The plan for a request among live `workers` of which only those `free` may be
/// primaries: the free ones in rendezvous order until their summed rate meets the target,
/// then every other live worker as a backup, in rendezvous order, in tiers the size of the
/// primary set. `None` when no worker is free: the request waits for one.
pub fn plan_among(
    difficulty: Difficulty,
    id: &RequestId,
    workers: &[(PublicKey, u64)],
    free: impl Fn(&PublicKey) -> bool,
    config: &FlowConfig,
) -> Option<Plan> {
    let ranked = rank_workers(id, workers);
    let hashes = expected_hashes(difficulty);
    let target_rate = hashes.saturating_mul(1000) / u128::from(config.target_ms.max(1));
    let max = config.max_primaries.max(1);
    let mut primaries = Vec::new();
    let mut sum: u128 = 0;
    for (k, rate) in ranked.iter().filter(|(k, _)| free(k)) {
        if primaries.len() >= max
            || (primaries.len() >= config.min_primaries.max(1) && sum >= target_rate)
        {
            break;
        }
        primaries.push(*k);
        sum += u128::from(*rate);
    }
    if primaries.is_empty() {
        return None;
    }
    let expected_ms = if sum == 0 {
        config.target_ms
    } else {
        u64::try_from((hashes.saturating_mul(1000)).div_ceil(sum)).unwrap_or(u64::MAX)
    }
    .max(1);
    let tier_size = primaries.len();
    let backups = ranked
        .iter()
        .filter(|(k, _)| !primaries.contains(k))
        .enumerate()
        .map(|(i, (k, _))| {
            let tier = (i / tier_size) as u32 + 1;
            let delay = expected_ms
                .saturating_mul(u64::from(config.backup_after_factor))
                .saturating_mul(u64::from(tier))
                .saturating_add(config.backup_grace_ms);
            (*k, tier, delay)
        })
        .collect();
    Some(Plan {
        primaries,
        backups,
        expected_ms,
    })
}
