//! The request lifecycle as sans-IO state machines: no clock, no sockets, no randomness.
//!
//! There is no claim message. Every worker sees every request and every [`WorkerStatus`], so
//! each computes the same [`plan`] by itself:
//!
//! 1. Live workers are ranked by a **rendezvous hash** of (request id, worker key)
//!    ([`rank_workers`]): a stable, fair, uncoordinated order that differs per request.
//! 2. **Primaries** are taken in rank order until their summed announced hash rate would
//!    solve the request in [`FlowConfig::target_ms`] on average (at least `min_primaries`, at
//!    most `max_primaries`). They start at once. Search is memoryless, so two workers on one
//!    request finish twice as fast and waste nothing but the hashing done while the answer
//!    travels.
//! 3. Everyone else is a **backup**, in tiers the size of the primary set. Tier `i` starts
//!    `backup_after_factor × i × expected_solve_ms + backup_grace_ms` after the request
//!    arrived, where `expected_solve_ms` is the primaries' expected time. A dead primary
//!    delays a request, never loses it.
//! 4. **Idle start**: a worker with nothing runnable starts a request early when it is one of
//!    its first [`FlowConfig::idle_start_tiers`] backup tiers and every primary of it has an
//!    earlier request of its own to finish first (each worker plans every request it hears
//!    of, so it sees who is busy without being told) or is no longer live. Any runnable
//!    request preempts such a start. This is what keeps workers busy under load: with one
//!    hash-chosen primary per request, some workers queue several requests while others
//!    have none.
//!
//! The first valid result (or the service's cancel) ends the request everywhere: each worker
//! stops hashing it ([`WorkerAction::Stop`]) and forgets it, remembering its id so that a late
//! copy of the request is ignored.
//!
//! A worker solves one request at a time (a job uses all its devices). Its queue is ordered by
//! priority class — `Normal` before `Precache` — then by the service's anti-spam class (its
//! cost-weighted volume over rolling windows, [`crate::volume`]: each order of magnitude over
//! the base one step later, never refused), then by its part (requests it is a primary for
//! before those it backs up, backup tiers in order), then age. A better-class
//! request that becomes runnable preempts a worse-class solve, which goes back to the queue.
//! Every worker queues every request it hears of (most as backups), so the queue is bounded:
//! when it is full, backups that have not started are dropped first, latest start first.
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
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use blake2::digest::consts::U8;
use blake2::{Blake2b, Digest};
use dpow_keys::PublicKey;

use crate::standing::Standings;
use crate::volume::{VolumeMeter, VolumePolicy};
use crate::{
    Difficulty, Priority, RequestId, Root, Signed, Work, WorkRequest, WorkResult, WorkerStatus,
};

/// Most workers a node keeps track of; the stalest is forgotten first.
pub const MAX_WORKERS: usize = 10_000;
/// A worker status sooner than this after the last one taken from the same worker is ignored
/// (workers announce every 5 s by default; the loopback testnet every 500 ms).
pub const MIN_STATUS_INTERVAL_MS: u64 = 250;
/// Most services whose request volume a worker tracks.
pub const MAX_TRACKED_SERVICES: usize = crate::volume::MAX_METERED;

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
    /// Graduated anti-spam: a service's priority class by its cost-weighted volume over
    /// rolling windows ([`crate::volume`]), from the genesis file.
    pub volume: VolumePolicy,
    /// Most requests queued on one worker. Beyond it one is dropped: a request from an
    /// exhausted service if there is one, else a backup that has not started (latest start
    /// first), else the least urgent runnable request.
    pub max_queue: usize,
    /// Most finished request ids remembered (to ignore late copies).
    pub max_tracked: usize,
    /// What to do with requests from services whose credits are spent (see
    /// [`WorkerFlow::set_exhausted`]).
    pub exhausted: ExhaustedPolicy,
    /// An idle worker starts a request early when it is a backup of a tier up to this one
    /// and every primary of the request is busy with an earlier request in its view (see
    /// [`WorkerFlow`]'s "idle start"). 0: backups wait for their time.
    pub idle_start_tiers: u32,
    /// Receipts a worker needs before it is *proven*; until then it is on probation, planned
    /// after every proven worker ([`plan_tiered`]). 0 plans every worker alike.
    pub probation_receipts: u64,
    /// A proven worker is planned with at most this many times the rate its receipts show
    /// ([`crate::standing`]), whatever it announces. 0: announced rates are taken as they are.
    pub rate_cap_factor: u64,
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
            volume: VolumePolicy::default(),
            max_queue: 4096,
            max_tracked: 65_536,
            exhausted: ExhaustedPolicy::Deprioritise,
            idle_start_tiers: 2,
            probation_receipts: 1,
            rate_cap_factor: 4,
        }
    }
}

/// A worker's part in one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Starts at once.
    Primary,
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

/// The plan for a request among live `workers` (key, announced hash rate), every one planned
/// alike: see the [module docs](self).
pub fn plan(
    request: &WorkRequest,
    id: &RequestId,
    workers: &[(PublicKey, u64)],
    config: &FlowConfig,
) -> Plan {
    let ranked = rank_workers(id, workers);
    let all = ranked.len();
    plan_ranked(request, ranked, all, config)
}

/// The plan for a request among live `workers` (key, announced hash rate), by their
/// [standing](crate::standing): proven workers (at least [`FlowConfig::probation_receipts`]
/// receipts) are ranked first, each planned with its announced rate capped at
/// [`FlowConfig::rate_cap_factor`] times the rate its receipts show; workers on probation
/// follow every proven one, each planned with at most the slowest proven worker's rate. So a
/// crowd of new keys can neither take a primary place from a proven worker nor shorten the
/// backups' wait by announcing high rates; they become primaries only where proven workers
/// fall short. With no proven worker live (a new network) everyone is planned alike.
pub fn plan_tiered(
    request: &WorkRequest,
    id: &RequestId,
    workers: &[(PublicKey, u64)],
    standings: &Standings,
    config: &FlowConfig,
) -> Plan {
    let threshold = config.probation_receipts;
    let (mut proven, mut probation): (Vec<_>, Vec<_>) = workers
        .iter()
        .copied()
        .partition(|(k, _)| standings.receipts(k) >= threshold);
    if threshold == 0 || proven.is_empty() {
        return plan(request, id, workers, config);
    }
    if config.rate_cap_factor > 0 {
        for (k, rate) in &mut proven {
            let shown = standings.get(k).map_or(0, |s| s.shown_rate());
            *rate = (*rate).min(shown.saturating_mul(config.rate_cap_factor).max(1));
        }
    }
    let floor = proven.iter().map(|(_, r)| *r).min().unwrap_or(0);
    for (_, rate) in &mut probation {
        *rate = (*rate).min(floor);
    }
    let mut ranked = rank_workers(id, &proven);
    let first_probation = ranked.len();
    ranked.extend(rank_workers(id, &probation));
    plan_ranked(request, ranked, first_probation, config)
}

/// The plan over workers already in rank order. Backups from `first_probation` on start a
/// tier of their own, after every earlier backup's.
fn plan_ranked(
    request: &WorkRequest,
    ranked: Vec<(PublicKey, u64)>,
    first_probation: usize,
    config: &FlowConfig,
) -> Plan {
    let hashes = expected_hashes(request.difficulty);
    let target_rate = hashes.saturating_mul(1000) / u128::from(config.target_ms.max(1));
    let max = config.max_primaries.max(1);
    let mut primaries = Vec::new();
    let mut sum: u128 = 0;
    for (k, rate) in &ranked {
        if primaries.len() >= max
            || (primaries.len() >= config.min_primaries.max(1) && sum >= target_rate)
        {
            break;
        }
        primaries.push(*k);
        sum += u128::from(*rate);
    }
    let expected_ms = if sum == 0 {
        config.target_ms
    } else {
        u64::try_from((hashes.saturating_mul(1000)).div_ceil(sum)).unwrap_or(u64::MAX)
    }
    .max(1);
    let tier_size = primaries.len().max(1);
    // Proven backups fill tiers 1..=proven_tiers; probation backups start at the next one.
    let proven_backups = first_probation.saturating_sub(primaries.len());
    let proven_tiers = proven_backups.div_ceil(tier_size);
    let backups = ranked
        .iter()
        .enumerate()
        .skip(primaries.len())
        .map(|(at, (k, _))| {
            let tier = if at < first_probation {
                (at - primaries.len()) / tier_size + 1
            } else {
                proven_tiers + (at - first_probation.max(primaries.len())) / tier_size + 1
            };
            let tier = u32::try_from(tier).unwrap_or(u32::MAX);
            let delay = expected_ms
                .saturating_mul(u64::from(config.backup_after_factor))
                .saturating_mul(u64::from(tier))
                .saturating_add(config.backup_grace_ms);
            (*k, tier, delay)
        })
        .collect();
    Plan {
        primaries,
        backups,
        expected_ms,
    }
}

/// What a worker's node must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkerAction {
    /// Start the solver on this request (replacing any current solve).
    Solve {
        /// The request.
        request: RequestId,
        /// Its root.
        root: Root,
        /// Its threshold.
        difficulty: Difficulty,
    },
    /// Stop solving this request.
    Stop {
        /// The request.
        request: RequestId,
    },
    /// Sign and publish a result with this work.
    Publish {
        /// The request.
        request: RequestId,
        /// Its root.
        root: Root,
        /// The work found.
        work: Work,
    },
    /// A queued request was dropped: the queue is full, or (with [`ExhaustedPolicy::Refuse`])
    /// its service ran out of credits.
    Dropped {
        /// The request.
        request: RequestId,
    },
}

#[derive(Clone, Debug)]
struct Entry {
    root: Root,
    difficulty: Difficulty,
    priority: Priority,
    expires_ms: u64,
    received_ms: u64,
    role: Role,
    service: PublicKey,
    /// The service's anti-spam class ([`crate::volume`]) when the request arrived.
    volume_class: u8,
    /// The service's credits are spent (kept in step by [`WorkerFlow::set_exhausted`]).
    exhausted: bool,
    /// The plan's primaries, for judging whether they are busy ([`WorkerFlow`]'s idle start).
    primaries: Vec<PublicKey>,
}

impl Entry {
    fn starts_at(&self) -> u64 {
        match self.role {
            Role::Primary => self.received_ms,
            Role::Backup { starts_at_ms, .. } => starts_at_ms,
        }
    }

    /// Lower is served first: class (credits, priority, then volume), then this worker's
    /// part (requests it is a primary for, then backup tiers in order), then age. Serving
    /// its own primaries first matters under load: a backup whose time has come only means
    /// its primaries are late, often because they are busy; a worker that served due backups
    /// by age would leave its own primaries waiting until their backups came due in turn,
    /// and every request would end up hashed by several workers at once.
    fn order(&self, id: &RequestId) -> (u8, u32, u64, RequestId) {
        let tier = match self.role {
            Role::Primary => 0,
            Role::Backup { tier, .. } => tier,
        };
        (self.class(), tier, self.received_ms, *id)
    }

    /// Higher is dropped first when the queue is full: requests from exhausted services,
    /// then backups that have not started (the latest to start first, since they are the
    /// least likely to be needed), then runnable requests in reverse serving order.
    fn drop_order(&self, id: &RequestId, now_ms: u64) -> (bool, bool, u8, u64, u64, RequestId) {
        let waiting = self.starts_at() > now_ms;
        let start = if waiting { self.starts_at() } else { 0 };
        (
            self.exhausted,
            waiting,
            self.class(),
            start,
            self.received_ms,
            *id,
        )
    }

    /// When each of the primaries of this request reaches it, in their order (class, then age):
    /// requests that come before it for a worker that is a primary of both.
    fn primary_order(&self, id: &RequestId) -> (u8, u64, RequestId) {
        (self.class(), self.received_ms, *id)
    }

    /// Serving class, lower first: by credits (a service with none left comes after
    /// everything), then priority (Normal before Precache), then the service's anti-spam class.
    fn class(&self) -> u8 {
        let p = match self.priority {
            Priority::Normal => 0,
            Priority::Precache => 16,
        };
        let e = if self.exhausted { 64 } else { 0 };
        e + p + self.volume_class.min(15)
    }
}

/// A bounded set of ids in insertion order.
#[derive(Clone, Debug, Default)]
struct Remembered {
    set: HashSet<RequestId>,
    order: VecDeque<RequestId>,
}

impl Remembered {
    fn insert(&mut self, id: RequestId, cap: usize) {
        if self.set.insert(id) {
            self.order.push_back(id);
        }
        while self.order.len() > cap.max(1) {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }

    fn contains(&self, id: &RequestId) -> bool {
        self.set.contains(id)
    }
}

/// One worker's view of the lifecycle: see the [module docs](self).
#[derive(Clone, Debug)]
pub struct WorkerFlow {
    me: PublicKey,
    my_rate: u64,
    config: FlowConfig,
    /// Other workers: rate and when last heard.
    workers: HashMap<PublicKey, (u64, u64)>,
    queue: BTreeMap<RequestId, Entry>,
    done: Remembered,
    volume: VolumeMeter,
    /// Services whose credits are spent.
    exhausted: HashSet<PublicKey>,
    /// What receipts show of each worker.
    standings: Standings,
    solving: Option<RequestId>,
    /// The latest time any call passed in.
    last_now: u64,
}

impl WorkerFlow {
    /// A worker with key `me` announcing `my_rate` hashes per second.
    pub fn new(me: PublicKey, my_rate: u64, config: FlowConfig) -> Self {
        let volume = VolumeMeter::new(config.volume.clone());
        WorkerFlow {
            me,
            my_rate,
            config,
            workers: HashMap::new(),
            queue: BTreeMap::new(),
            done: Remembered::default(),
            volume,
            exhausted: HashSet::new(),
            standings: Standings::new(),
            solving: None,
            last_now: 0,
        }
    }

    /// A receipt paid `worker` for a request of `difficulty` created at `created_ms` and
    /// accepted at `accepted_ms`: its [standing](crate::standing) grows. Report each request
    /// once (the first receipt met for it).
    pub fn on_receipt(
        &mut self,
        worker: PublicKey,
        difficulty: Difficulty,
        created_ms: u64,
        accepted_ms: u64,
    ) {
        self.standings
            .on_receipt(worker, difficulty, created_ms, accepted_ms);
    }

    /// [`Self::on_receipt`] for the receipt that counts for its request.
    pub fn on_counted(&mut self, receipt: &crate::Receipt) {
        let req = receipt.request.payload();
        self.on_receipt(
            receipt.result.payload().worker,
            req.difficulty,
            req.created_ms,
            receipt.accepted_ms,
        );
    }

    /// What receipts show of each worker.
    pub fn standings(&self) -> &Standings {
        &self.standings
    }

    fn is_proven(&self, worker: &PublicKey) -> bool {
        self.standings.receipts(worker) >= self.config.probation_receipts
    }

    /// Change the rate this worker plans with for itself.
    pub fn set_my_rate(&mut self, rate: u64) {
        self.my_rate = rate;
    }

    /// The services last given to [`WorkerFlow::set_exhausted`].
    pub fn exhausted(&self) -> &HashSet<PublicKey> {
        &self.exhausted
    }

    /// Replace the set of services whose credits are spent; the node calls it when balances
    /// change. Requests already queued are re-classed by [`FlowConfig::exhausted`]: under
    /// `Deprioritise` they move behind every other class (or back, when their service leaves
    /// the set); under `Refuse` those of newly exhausted services are dropped, without being
    /// remembered as finished, so a copy republished once credits are granted is taken.
    ///
    /// The returned actions apply the change at once, with the latest time passed to any
    /// call: `Stop`/`Dropped` for refused requests, or a `Stop` and `Solve` when a queued
    /// request now outranks the one being solved.
    #[must_use = "the actions stop or switch the solve the new set re-classed"]
    pub fn set_exhausted(
        &mut self,
        services: impl IntoIterator<Item = PublicKey>,
    ) -> Vec<WorkerAction> {
        self.exhausted = services.into_iter().collect();
        let mut actions = Vec::new();
        match self.config.exhausted {
            ExhaustedPolicy::Deprioritise => {
                for e in self.queue.values_mut() {
                    e.exhausted = self.exhausted.contains(&e.service);
                }
            }
            ExhaustedPolicy::Refuse => {
                let refused: Vec<RequestId> = self
                    .queue
                    .iter()
                    .filter(|(_, e)| self.exhausted.contains(&e.service))
                    .map(|(k, _)| *k)
                    .collect();
                for id in refused {
                    self.queue.remove(&id);
                    if self.solving == Some(id) {
                        self.solving = None;
                        actions.push(WorkerAction::Stop { request: id });
                    }
                    actions.push(WorkerAction::Dropped { request: id });
                }
            }
        }
        // Start the next request if a refused one was being solved, or let a request that now
        // outranks the current solve preempt it.
        actions.extend(self.schedule(self.last_now));
        actions
    }

    /// A worker's status (ours is ignored: we always count ourselves live). A status less than
    /// [`MIN_STATUS_INTERVAL_MS`] after the last one taken from the same worker is ignored.
    /// When the table is full a newcomer takes the place of the stalest worker on probation,
    /// never of a proven one: a crowd of fresh keys cannot push proven workers out.
    pub fn on_status(&mut self, status: &WorkerStatus, now_ms: u64) {
        if status.worker == self.me {
            return;
        }
        let heard = status.created_ms.min(now_ms);
        match self.workers.get_mut(&status.worker) {
            Some(w) if heard < w.1.saturating_add(MIN_STATUS_INTERVAL_MS) => {}
            Some(w) => *w = (status.hash_rate, heard),
            None => {
                if self.workers.len() >= MAX_WORKERS {
                    let victim = crate::standing::evict_for(
                        self.workers.iter().map(|(k, (_, t))| (k, *t)),
                        &status.worker,
                        |k| self.is_proven(k),
                    );
                    match victim {
                        Some(v) => {
                            self.workers.remove(&v);
                        }
                        None => return,
                    }
                }
                self.workers
                    .insert(status.worker, (status.hash_rate, heard));
            }
        }
    }

    fn live(&self, now_ms: u64) -> Vec<(PublicKey, u64)> {
        let mut v: Vec<(PublicKey, u64)> = self
            .workers
            .iter()
            .filter(|(_, (_, t))| now_ms.saturating_sub(*t) < self.config.worker_stale_ms)
            .map(|(k, (r, _))| (*k, *r))
            .collect();
        v.push((self.me, self.my_rate));
        v
    }

    /// Whether this worker's view holds `worker` as live at `now_ms` (itself always).
    pub fn is_live(&self, worker: &PublicKey, now_ms: u64) -> bool {
        *worker == self.me
            || self
                .workers
                .get(worker)
                .is_some_and(|(_, t)| now_ms.saturating_sub(*t) < self.config.worker_stale_ms)
    }

    /// Live workers, this one included.
    pub fn live_workers(&self, now_ms: u64) -> usize {
        self.live(now_ms).len()
    }

    /// Live workers that are proven ([`FlowConfig::probation_receipts`]), this one included.
    pub fn proven_workers(&self, now_ms: u64) -> usize {
        self.live(now_ms)
            .iter()
            .filter(|(k, _)| self.is_proven(k))
            .count()
    }

    /// Requests waiting or being solved.
    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    /// The request being solved.
    pub fn solving(&self) -> Option<RequestId> {
        self.solving
    }

    /// This worker's role in a queued request.
    pub fn role(&self, request: RequestId) -> Option<Role> {
        self.queue.get(&request).map(|e| e.role)
    }

    /// A validated request arrived.
    pub fn on_request(&mut self, request: &Signed<WorkRequest>, now_ms: u64) -> Vec<WorkerAction> {
        let id = request.id();
        let req = request.payload();
        if self.done.contains(&id) || self.queue.contains_key(&id) || now_ms >= req.expires_ms {
            return Vec::new();
        }
        let exhausted = self.exhausted.contains(&req.service);
        if exhausted && self.config.exhausted == ExhaustedPolicy::Refuse {
            return Vec::new();
        }
        let volume_class = self.volume.count(req.service, req.difficulty, now_ms).class;
        let live = self.live(now_ms);
        let plan = plan_tiered(req, &id, &live, &self.standings, &self.config);
        let role = plan.role_of(&self.me, now_ms).unwrap_or(Role::Backup {
            tier: u32::MAX,
            starts_at_ms: req.expires_ms,
        });
        let primaries = plan.primaries;
        self.queue.insert(
            id,
            Entry {
                root: req.root,
                difficulty: req.difficulty,
                priority: req.priority,
                expires_ms: req.expires_ms,
                received_ms: now_ms,
                role,
                service: req.service,
                volume_class,
                exhausted,
                primaries,
            },
        );
        let mut actions = Vec::new();
        while self.queue.len() > self.config.max_queue.max(1) {
            // Drop the request least likely to be needed that is not being solved.
            let worst = self
                .queue
                .iter()
                .filter(|(k, _)| Some(**k) != self.solving)
                .max_by_key(|(k, e)| e.drop_order(k, now_ms))
                .map(|(k, _)| *k);
            match worst {
                Some(w) => {
                    self.queue.remove(&w);
                    self.done.insert(w, self.config.max_tracked);
                    actions.push(WorkerAction::Dropped { request: w });
                }
                None => break,
            }
        }
        actions.extend(self.schedule(now_ms));
        actions
    }

    /// A valid result or a cancel for `request` was seen: stop and forget it.
    pub fn on_done(&mut self, request: RequestId, now_ms: u64) -> Vec<WorkerAction> {
        self.done.insert(request, self.config.max_tracked);
        self.queue.remove(&request);
        let mut actions = Vec::new();
        if self.solving == Some(request) {
            self.solving = None;
            actions.push(WorkerAction::Stop { request });
        }
        actions.extend(self.schedule(now_ms));
        actions
    }

    /// Our solver found `work` for `request`.
    pub fn on_solved(&mut self, request: RequestId, work: Work, now_ms: u64) -> Vec<WorkerAction> {
        if self.solving == Some(request) {
            self.solving = None;
        }
        let mut actions = Vec::new();
        if let Some(e) = self.queue.remove(&request)
            && !self.done.contains(&request)
        {
            actions.push(WorkerAction::Publish {
                request,
                root: e.root,
                work,
            });
        }
        self.done.insert(request, self.config.max_tracked);
        actions.extend(self.schedule(now_ms));
        actions
    }

    /// Our solver failed on `request`: give it up (others will answer it).
    pub fn on_solve_failed(&mut self, request: RequestId, now_ms: u64) -> Vec<WorkerAction> {
        if self.solving == Some(request) {
            self.solving = None;
        }
        self.queue.remove(&request);
        self.done.insert(request, self.config.max_tracked);
        self.schedule(now_ms)
    }

    /// Time passed: expire requests, forget silent workers, start backups whose time came.
    pub fn on_tick(&mut self, now_ms: u64) -> Vec<WorkerAction> {
        let mut actions = Vec::new();
        let expired: Vec<RequestId> = self
            .queue
            .iter()
            .filter(|(_, e)| now_ms >= e.expires_ms)
            .map(|(k, _)| *k)
            .collect();
        for id in expired {
            self.queue.remove(&id);
            self.done.insert(id, self.config.max_tracked);
            if self.solving == Some(id) {
                self.solving = None;
                actions.push(WorkerAction::Stop { request: id });
            }
        }
        let stale = self.config.worker_stale_ms;
        self.workers
            .retain(|_, (_, t)| now_ms.saturating_sub(*t) < stale.saturating_mul(4));
        actions.extend(self.schedule(now_ms));
        actions
    }

    /// The earliest time [`on_tick`](Self::on_tick) has something to do.
    ///
    /// Requests already runnable wait for the solver, not for a time: they count only by
    /// their expiry.
    pub fn next_deadline(&self) -> Option<u64> {
        self.queue
            .iter()
            .map(|(k, e)| {
                if Some(*k) == self.solving || e.starts_at() <= self.last_now {
                    e.expires_ms
                } else {
                    e.starts_at().min(e.expires_ms)
                }
            })
            .min()
    }

    /// Start the most urgent runnable request if the solver is free, or preempt a
    /// worse-class solve (or a solve started early, by any runnable request); with nothing
    /// runnable, start a backup early when its primaries are busy ([`Self::idle_start`]).
    fn schedule(&mut self, now_ms: u64) -> Vec<WorkerAction> {
        self.last_now = self.last_now.max(now_ms);
        let best = self
            .queue
            .iter()
            .filter(|(k, e)| e.starts_at() <= now_ms && Some(**k) != self.solving)
            .min_by_key(|(k, e)| e.order(k))
            .map(|(k, e)| (*k, e.class(), e.root, e.difficulty));
        let mut actions = Vec::new();
        let Some((id, class, root, difficulty)) = best else {
            if self.solving.is_none()
                && let Some(id) = self.idle_start(now_ms)
                && let Some(e) = self.queue.get(&id)
            {
                self.solving = Some(id);
                actions.push(WorkerAction::Solve {
                    request: id,
                    root: e.root,
                    difficulty: e.difficulty,
                });
            }
            return actions;
        };
        if let Some(current) = self.solving {
            let (current_class, early) = self
                .queue
                .get(&current)
                .map_or((u8::MAX, false), |e| (e.class(), e.starts_at() > now_ms));
            if class >= current_class && !early {
                return Vec::new();
            }
            actions.push(WorkerAction::Stop { request: current });
        }
        self.solving = Some(id);
        actions.push(WorkerAction::Solve {
            request: id,
            root,
            difficulty,
        });
        actions
    }

    /// **Idle start**: the request this idle worker should start before its time, if any.
    ///
    /// A backup waits in case the primaries answer. When each primary of a request has an
    /// earlier request of its own to finish first (in this worker's view: it plans every
    /// request it hears of) or has gone silent since the plan was made, the request will
    /// wait for them, so a worker with nothing to do starts it now: search is memoryless, so
    /// the extra worker costs no hashing but what it does while the answer travels, and it
    /// keeps a worker from idling while requests wait.
    /// Only backups of tiers up to [`FlowConfig::idle_start_tiers`] do it, so a busy primary
    /// draws a bounded number of helpers; any runnable request preempts such a start. In a
    /// quiet network no primary is busy and nothing starts early.
    fn idle_start(&self, now_ms: u64) -> Option<RequestId> {
        let max_tier = self.config.idle_start_tiers;
        if max_tier == 0 {
            return None;
        }
        let candidates: Vec<(&RequestId, &Entry)> = self
            .queue
            .iter()
            .filter(|(_, e)| {
                matches!(e.role, Role::Backup { tier, .. } if tier <= max_tier)
                    && e.starts_at() > now_ms
            })
            .collect();
        if candidates.is_empty() {
            return None;
        }
        // Each primary's first request, in the order primaries serve theirs.
        let mut first: HashMap<PublicKey, (u8, u64, RequestId)> = HashMap::new();
        for (k, e) in &self.queue {
            let at = e.primary_order(k);
            for p in &e.primaries {
                first
                    .entry(*p)
                    .and_modify(|f| *f = (*f).min(at))
                    .or_insert(at);
            }
        }
        candidates
            .into_iter()
            .filter(|(k, e)| {
                let at = e.primary_order(k);
                !e.primaries.is_empty()
                    && e.primaries
                        .iter()
                        .all(|p| first.get(p).is_some_and(|f| *f < at) || !self.is_live(p, now_ms))
            })
            .min_by_key(|(k, e)| e.order(k))
            .map(|(k, _)| *k)
    }
}

/// Settings of a service's side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceConfig {
    /// Most requests outstanding at once.
    pub max_outstanding: usize,
    /// Publish a request again if no answer came within this long (a first publish can find
    /// no peers; gossip can lose a message).
    pub republish_after_ms: u64,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            max_outstanding: 10_000,
            republish_after_ms: 2_000,
        }
    }
}

/// What a service's node must do.
#[derive(Clone, Debug, PartialEq)]
pub enum ServiceAction {
    /// Publish the request (again).
    Publish(Signed<WorkRequest>),
    /// Sign and publish a cancel for the request.
    Cancel {
        /// The request.
        request: RequestId,
    },
    /// Valid work arrived: hand it to the caller.
    Completed {
        /// The request.
        request: RequestId,
        /// The winning result.
        result: Signed<WorkResult>,
        /// From submission to now.
        latency_ms: u64,
    },
    /// Nobody answered in time.
    Expired {
        /// The request.
        request: RequestId,
    },
}

/// Why a service refused to submit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    /// Too many requests outstanding.
    #[error("{0} requests are already outstanding")]
    TooManyOutstanding(usize),
}

#[derive(Clone, Debug)]
struct Outstanding {
    request: Signed<WorkRequest>,
    submitted_ms: u64,
    republish_at_ms: u64,
}

/// A service's outstanding requests: see the [module docs](self).
#[derive(Clone, Debug)]
pub struct ServiceFlow {
    config: ServiceConfig,
    outstanding: BTreeMap<RequestId, Outstanding>,
}

impl ServiceFlow {
    /// An empty service side.
    pub fn new(config: ServiceConfig) -> Self {
        ServiceFlow {
            config,
            outstanding: BTreeMap::new(),
        }
    }

    /// Submit a signed request.
    pub fn submit(
        &mut self,
        request: Signed<WorkRequest>,
        now_ms: u64,
    ) -> Result<Vec<ServiceAction>, FlowError> {
        let id = request.id();
        if self.outstanding.contains_key(&id) {
            return Ok(Vec::new());
        }
        if self.outstanding.len() >= self.config.max_outstanding {
            return Err(FlowError::TooManyOutstanding(self.outstanding.len()));
        }
        self.outstanding.insert(
            id,
            Outstanding {
                request: request.clone(),
                submitted_ms: now_ms,
                republish_at_ms: now_ms.saturating_add(self.config.republish_after_ms),
            },
        );
        Ok(vec![ServiceAction::Publish(request)])
    }

    /// A result the caller validated against its request: the first one completes it.
    pub fn on_result(&mut self, result: &Signed<WorkResult>, now_ms: u64) -> Vec<ServiceAction> {
        let id = result.payload().request;
        match self.outstanding.remove(&id) {
            Some(o) => vec![
                ServiceAction::Completed {
                    request: id,
                    result: result.clone(),
                    latency_ms: now_ms.saturating_sub(o.submitted_ms),
                },
                ServiceAction::Cancel { request: id },
            ],
            None => Vec::new(),
        }
    }

    /// Withdraw a request.
    pub fn cancel(&mut self, request: RequestId, _now_ms: u64) -> Vec<ServiceAction> {
        match self.outstanding.remove(&request) {
            Some(_) => vec![ServiceAction::Cancel { request }],
            None => Vec::new(),
        }
    }

    /// Time passed: expire and republish.
    pub fn on_tick(&mut self, now_ms: u64) -> Vec<ServiceAction> {
        let mut actions = Vec::new();
        let mut expired = Vec::new();
        for (id, o) in self.outstanding.iter_mut() {
            if now_ms >= o.request.payload().expires_ms {
                expired.push(*id);
            } else if now_ms >= o.republish_at_ms {
                o.republish_at_ms = now_ms.saturating_add(self.config.republish_after_ms);
                actions.push(ServiceAction::Publish(o.request.clone()));
            }
        }
        for id in expired {
            self.outstanding.remove(&id);
            actions.push(ServiceAction::Expired { request: id });
        }
        actions
    }

    /// The earliest time [`on_tick`](Self::on_tick) has something to do.
    pub fn next_deadline(&self) -> Option<u64> {
        self.outstanding
            .values()
            .map(|o| o.republish_at_ms.min(o.request.payload().expires_ms))
            .min()
    }

    /// Requests outstanding.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }
}
