//! One worker's side of the lifecycle: see the [module docs](super).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use dpow_keys::PublicKey;

use super::{ExhaustedPolicy, FlowConfig, MAX_TRACKED_SERVICES, MAX_WORKERS, Role, plan_among};
use crate::{Difficulty, Priority, RequestId, Root, Signed, Work, WorkRequest, WorkerStatus};

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
    /// The workers this node's view makes its primaries; empty while it waits for one.
    primaries: Vec<PublicKey>,
    service: PublicKey,
    over_volume: bool,
    /// The service's credits are spent (kept in step by [`WorkerFlow::set_exhausted`]).
    exhausted: bool,
}

impl Entry {
    fn starts_at(&self) -> u64 {
        match self.role {
            Role::Primary => self.received_ms,
            Role::Waiting => u64::MAX,
            Role::Backup { starts_at_ms, .. } => starts_at_ms,
        }
    }

    /// The waiting set's order, lower assigned first: class (credits, priority, then
    /// volume), then age.
    fn order(&self, id: &RequestId) -> (u8, u64, RequestId) {
        (self.class(), self.received_ms, *id)
    }

    /// The solver's order, lower served first: class, then this worker's own requests
    /// before backups, then age. Every other node's view counts this worker free once it
    /// has no primaries, so a backup is only what it does while it has none.
    fn serve_order(&self, id: &RequestId) -> ((u8, bool), u64, RequestId) {
        (self.urgency(), self.received_ms, *id)
    }

    /// Class, then whether this worker is only a backup: a better urgency preempts.
    fn urgency(&self) -> (u8, bool) {
        (self.class(), self.role != Role::Primary)
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

    /// Serving class, lower first: Normal 0, Normal over volume 1, Precache 2, Precache over
    /// volume 3; a service with no credits left adds 4, after all of those.
    fn class(&self) -> u8 {
        let p = match self.priority {
            Priority::Normal => 0,
            Priority::Precache => 2,
        };
        let e = if self.exhausted { 4 } else { 0 };
        e + p + u8::from(self.over_volume)
    }
}

/// Serving classes (see `Entry::class`): 0 to 7.
const CLASSES: usize = 8;

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
    /// Queued requests no worker is free for, most urgent first (`Entry::order`).
    waiting: BTreeSet<(u8, u64, RequestId)>,
    /// Per worker, the queued requests this node's view makes it a primary of, by class.
    load: HashMap<PublicKey, [u32; CLASSES]>,
    done: Remembered,
    volume: HashMap<PublicKey, VecDeque<u64>>,
    /// Services whose credits are spent.
    exhausted: HashSet<PublicKey>,
    solving: Option<RequestId>,
    /// The latest time any call passed in.
    last_now: u64,
}

impl WorkerFlow {
    /// A worker with key `me` announcing `my_rate` hashes per second.
    pub fn new(me: PublicKey, my_rate: u64, config: FlowConfig) -> Self {
        WorkerFlow {
            me,
            my_rate,
            config,
            workers: HashMap::new(),
            queue: BTreeMap::new(),
            waiting: BTreeSet::new(),
            load: HashMap::new(),
            done: Remembered::default(),
            volume: HashMap::new(),
            exhausted: HashSet::new(),
            solving: None,
            last_now: 0,
        }
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
                // Classes changed: re-key the waiting set and the loads.
                self.recount();
            }
            ExhaustedPolicy::Refuse => {
                let refused: Vec<RequestId> = self
                    .queue
                    .iter()
                    .filter(|(_, e)| self.exhausted.contains(&e.service))
                    .map(|(k, _)| *k)
                    .collect();
                for id in refused {
                    self.take_entry(&id);
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

    /// A worker's status (ours is ignored: we always count ourselves live). A worker that
    /// joins, or comes back, is free: requests waiting for one are assigned at once, so the
    /// returned actions can start one here.
    pub fn on_status(&mut self, status: &WorkerStatus, now_ms: u64) -> Vec<WorkerAction> {
        if status.worker == self.me {
            return Vec::new();
        }
        let was_live = self.is_live(&status.worker, now_ms);
        let heard = status.created_ms.min(now_ms);
        match self.workers.get_mut(&status.worker) {
            Some(w) if w.1 > heard => {}
            Some(w) => *w = (status.hash_rate, heard),
            None => {
                if self.workers.len() >= MAX_WORKERS
                    && let Some(stalest) = self
                        .workers
                        .iter()
                        .min_by_key(|(k, (_, t))| (*t, **k))
                        .map(|(k, _)| *k)
                {
                    self.workers.remove(&stalest);
                }
                self.workers
                    .insert(status.worker, (status.hash_rate, heard));
            }
        }
        if !was_live && !self.waiting.is_empty() && self.is_live(&status.worker, now_ms) {
            self.schedule(now_ms)
        } else {
            Vec::new()
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

    /// Count a request against its service's rolling window; true if the service is over.
    fn count_volume(&mut self, service: PublicKey, now_ms: u64) -> bool {
        let window = self.config.volume_window_ms;
        let limit = self.config.volume_limit as usize;
        if !self.volume.contains_key(&service) && self.volume.len() >= MAX_TRACKED_SERVICES {
            // Forget the service heard from longest ago.
            if let Some(old) = self
                .volume
                .iter()
                .min_by_key(|(k, d)| (d.back().copied().unwrap_or(0), **k))
                .map(|(k, _)| *k)
            {
                self.volume.remove(&old);
            }
        }
        let times = self.volume.entry(service).or_default();
        while times
            .front()
            .is_some_and(|&t| now_ms.saturating_sub(t) >= window)
        {
            times.pop_front();
        }
        times.push_back(now_ms);
        // Only whether the count passes the limit matters: keep at most limit + 1 times.
        while times.len() > limit + 1 {
            times.pop_front();
        }
        times.len() > limit
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
        let over_volume = self.count_volume(req.service, now_ms);
        // It waits until `schedule` assigns it to free workers (at once if any is free).
        let entry = Entry {
            root: req.root,
            difficulty: req.difficulty,
            priority: req.priority,
            expires_ms: req.expires_ms,
            received_ms: now_ms,
            role: Role::Waiting,
            primaries: Vec::new(),
            service: req.service,
            over_volume,
            exhausted,
        };
        self.waiting.insert(entry.order(&id));
        self.queue.insert(id, entry);
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
                    self.take_entry(&w);
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
        self.take_entry(&request);
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
        if let Some(e) = self.take_entry(&request)
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
        self.take_entry(&request);
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
            self.take_entry(&id);
            self.done.insert(id, self.config.max_tracked);
            if self.solving == Some(id) {
                self.solving = None;
                actions.push(WorkerAction::Stop { request: id });
            }
        }
        // Primaries that went silent are taken off their requests; a request left without
        // any waits again, for a worker that is free.
        let orphaned: Vec<(RequestId, Vec<PublicKey>)> = self
            .queue
            .iter()
            .filter(|(_, e)| e.primaries.iter().any(|k| !self.is_live(k, now_ms)))
            .map(|(id, e)| (*id, e.primaries.clone()))
            .collect();
        for (id, primaries) in orphaned {
            let Some(mut e) = self.queue.remove(&id) else {
                continue;
            };
            self.unload(&e);
            e.primaries = primaries
                .into_iter()
                .filter(|k| self.is_live(k, now_ms))
                .collect();
            if e.primaries.is_empty() {
                e.role = Role::Waiting;
                self.waiting.insert(e.order(&id));
            }
            self.charge(&e);
            self.queue.insert(id, e);
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

    /// Whether `worker` is free for a request of `class` in this node's view: it is a
    /// primary of no queued request of that class or a better one (a better-class request
    /// preempts a worse-class solve, so those do not make it busy).
    fn free_for(&self, worker: &PublicKey, class: u8) -> bool {
        self.load.get(worker).is_none_or(|l| {
            l[..=usize::from(class).min(CLASSES - 1)]
                .iter()
                .all(|&n| n == 0)
        })
    }

    /// Count `e` against its primaries' load.
    fn charge(&mut self, e: &Entry) {
        let c = usize::from(e.class()).min(CLASSES - 1);
        for k in &e.primaries {
            let l = self.load.entry(*k).or_default();
            l[c] = l[c].saturating_add(1);
        }
    }

    /// Take `e` off its primaries' load.
    fn unload(&mut self, e: &Entry) {
        let c = usize::from(e.class()).min(CLASSES - 1);
        for k in &e.primaries {
            if let Some(l) = self.load.get_mut(k) {
                l[c] = l[c].saturating_sub(1);
                if l.iter().all(|&n| n == 0) {
                    self.load.remove(k);
                }
            }
        }
    }

    /// Remove a queued request with its bookkeeping.
    fn take_entry(&mut self, id: &RequestId) -> Option<Entry> {
        let e = self.queue.remove(id)?;
        self.waiting.remove(&e.order(id));
        self.unload(&e);
        Some(e)
    }

    /// Rebuild the waiting set and the loads from the queue (after classes changed).
    fn recount(&mut self) {
        self.waiting.clear();
        self.load.clear();
        let entries: Vec<(RequestId, Entry)> =
            self.queue.iter().map(|(k, e)| (*k, e.clone())).collect();
        for (id, e) in entries {
            if e.primaries.is_empty() {
                self.waiting.insert(e.order(&id));
            }
            self.charge(&e);
        }
    }

    /// Assign waiting requests, most urgent first, to the workers free for them in this
    /// node's view, until none is. Every node sees the same requests, results and statuses,
    /// so their views, and the assignments they make, mostly agree; where they do not, a
    /// request gets an extra primary (parallel search, no loss) or none until its backups'
    /// time comes.
    fn assign_waiting(&mut self, now_ms: u64) {
        let mut live: Option<Vec<(PublicKey, u64)>> = None;
        while let Some(&(class, received, id)) = self.waiting.first() {
            let Some(entry) = self.queue.get(&id) else {
                self.waiting.remove(&(class, received, id));
                continue;
            };
            let live = live.get_or_insert_with(|| self.live(now_ms));
            // Cheap first: ranking hashes every live worker.
            if !live.iter().any(|(k, _)| self.free_for(k, class)) {
                break;
            }
            let Some(plan) = plan_among(
                entry.difficulty,
                &id,
                live,
                |k| self.free_for(k, class),
                &self.config,
            ) else {
                // Nobody is free for the most urgent request, so nobody is for any other.
                break;
            };
            self.waiting.remove(&(class, received, id));
            let role = plan.role_of(&self.me, now_ms).unwrap_or(Role::Backup {
                tier: u32::MAX,
                starts_at_ms: u64::MAX,
            });
            if let Some(e) = self.queue.get_mut(&id) {
                e.primaries = plan.primaries;
                e.role = role;
            }
            if let Some(e) = self.queue.get(&id).cloned() {
                self.charge(&e);
            }
        }
    }

    /// Requests this node's view makes `worker` a primary of.
    pub fn load_of(&self, worker: &PublicKey) -> u32 {
        self.load.get(worker).map_or(0, |l| l.iter().sum())
    }

    /// The primaries this node's view gives a queued request (empty while it waits).
    pub fn primaries(&self, request: &RequestId) -> Option<&[PublicKey]> {
        self.queue.get(request).map(|e| e.primaries.as_slice())
    }

    /// Start the most urgent runnable request if the solver is free, or preempt a
    /// worse-class solve, or a backup solve when a request of its class is assigned to
    /// this worker (search is memoryless: the switch loses nothing).
    fn schedule(&mut self, now_ms: u64) -> Vec<WorkerAction> {
        self.last_now = self.last_now.max(now_ms);
        self.assign_waiting(now_ms);
        let best = self
            .queue
            .iter()
            .filter(|(k, e)| e.starts_at() <= now_ms && Some(**k) != self.solving)
            .min_by_key(|(k, e)| e.serve_order(k))
            .map(|(k, e)| (*k, e.urgency(), e.root, e.difficulty));
        let Some((id, urgency, root, difficulty)) = best else {
            return Vec::new();
        };
        let mut actions = Vec::new();
        if let Some(current) = self.solving {
            if self
                .queue
                .get(&current)
                .is_some_and(|e| urgency >= e.urgency())
            {
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
}
