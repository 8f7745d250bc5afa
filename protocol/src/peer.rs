//! A peer's request path as one sans-IO state machine: what it knows of the network's
//! requests and workers, and its worker's and service's flows.
//!
//! [`Peer`] holds the requests heard (to check results and cancels against, forgotten a
//! minute after they expire or when too many are held), which of them are answered and by
//! whom, the latest status of each worker, the (root, work) pairs already paid by a receipt,
//! and the [`WorkerFlow`] and [`ServiceFlow`]. Its methods take a checked message (signatures
//! and the validator's checks are the caller's: [`crate::validate`]) and the time, and
//! return what the node must do as [`WorkerAction`]s and [`ServiceAction`]s. It does no I/O
//! and reads no clock, so the node's event loop and the simulations drive the same code.

use std::collections::{HashMap, HashSet, VecDeque};

use dpow_keys::PublicKey;

use crate::flow::{
    FlowError, MIN_STATUS_INTERVAL_MS, ServiceAction, ServiceConfig, ServiceFlow, WorkerAction,
    WorkerFlow,
};
use crate::validate::{RejectReason, Rejected, Validator};
use crate::{RequestId, Root, Signed, Work, WorkRequest, WorkResult, WorkerStatus};

/// A request (and whether it was answered) is kept this long after it expires: late results
/// and cancels for it are still recognised.
pub const KEEP_AFTER_EXPIRY_MS: u64 = 60_000;

/// How much a peer remembers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Requests held; beyond it the oldest are forgotten.
    pub requests: usize,
    /// Worker statuses held; beyond it a newcomer takes the place of the stalest worker on
    /// probation, never of a proven one.
    pub statuses: usize,
    /// (root, work) pairs paid remembered; the oldest are forgotten first.
    pub paid_work: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            requests: 100_000,
            statuses: 20_000,
            paid_work: 200_000,
        }
    }
}

/// What the node must do after an input: its worker's and its service's actions, in order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outputs {
    /// For the worker (solve, stop, publish a result, a request dropped).
    pub worker: Vec<WorkerAction>,
    /// For the service (publish, cancel, completed, expired).
    pub service: Vec<ServiceAction>,
}

/// One peer's request path: see the [module docs](self).
#[derive(Debug)]
pub struct Peer {
    limits: Limits,
    requests: HashMap<RequestId, Signed<WorkRequest>>,
    /// Ids by (expiry, arrival) for forgetting; an id may appear twice (answered first).
    order: VecDeque<(u64, RequestId)>,
    answered: HashMap<RequestId, PublicKey>,
    statuses: HashMap<PublicKey, Signed<WorkerStatus>>,
    paid: HashSet<(Root, Work)>,
    paid_order: VecDeque<(Root, Work)>,
    worker: Option<WorkerFlow>,
    service: ServiceFlow,
}

impl Peer {
    /// A peer with a worker flow (`None`: it does not work) and a service side.
    pub fn new(worker: Option<WorkerFlow>, service: ServiceConfig, limits: Limits) -> Self {
        Peer {
            limits,
            requests: HashMap::new(),
            order: VecDeque::new(),
            answered: HashMap::new(),
            statuses: HashMap::new(),
            paid: HashSet::new(),
            paid_order: VecDeque::new(),
            worker,
            service: ServiceFlow::new(service),
        }
    }

    // ---- what the peer knows ----

    /// A request heard and not yet forgotten.
    pub fn request(&self, id: &RequestId) -> Option<&Signed<WorkRequest>> {
        self.requests.get(id)
    }

    /// Requests held.
    pub fn requests(&self) -> impl Iterator<Item = (&RequestId, &Signed<WorkRequest>)> {
        self.requests.iter()
    }

    /// Whether a valid result or a receipt for `id` was seen.
    pub fn is_answered(&self, id: &RequestId) -> bool {
        self.answered.contains_key(id)
    }

    /// The worker whose result answered `id`, as this peer saw it.
    pub fn winner(&self, id: &RequestId) -> Option<&PublicKey> {
        self.answered.get(id)
    }

    /// The latest status held of each worker.
    pub fn statuses(&self) -> impl Iterator<Item = &Signed<WorkerStatus>> {
        self.statuses.values()
    }

    /// This peer's worker flow, if it works.
    pub fn worker(&self) -> Option<&WorkerFlow> {
        self.worker.as_ref()
    }

    /// This peer's worker flow, to tell it what the peer's ledger and solver learn.
    pub fn worker_mut(&mut self) -> Option<&mut WorkerFlow> {
        self.worker.as_mut()
    }

    /// The service side.
    pub fn service(&self) -> &ServiceFlow {
        &self.service
    }

    // ---- cheap refusals, before signatures ----

    /// A result (encoded) for a request already answered: refused, never forwarded.
    pub fn refuse_answered(&self, data: &[u8]) -> Result<(), Rejected> {
        Validator::refuse_answered(data, |id| self.answered.contains_key(id))
    }

    /// A result whose nonce for its root was already paid by a receipt replays another
    /// worker's work: refused.
    pub fn refuse_paid_work(&self, p: &WorkResult) -> Result<(), Rejected> {
        if self.paid.contains(&(p.root, p.work)) {
            return Err(Rejected::new(
                RejectReason::Replay,
                format!("work {} for root {} was already paid", p.work, p.root),
            ));
        }
        Ok(())
    }

    /// A status no newer than the one held for its worker, or too soon after it: refused
    /// (checked before its signature and again when it is taken).
    pub fn refuse_old_status(&self, st: &WorkerStatus) -> Result<(), Rejected> {
        if let Some(old) = self.statuses.get(&st.worker) {
            let (before, at) = (old.payload().created_ms, st.created_ms);
            if before >= at {
                return Err(Rejected::new(
                    RejectReason::Stale,
                    "an older or equal status than one already held",
                ));
            }
            if at < before.saturating_add(MIN_STATUS_INTERVAL_MS) {
                return Err(Rejected::new(
                    RejectReason::TooFrequent,
                    format!(
                        "{} ms after this worker's last status, under the {MIN_STATUS_INTERVAL_MS} ms allowed",
                        at - before
                    ),
                ));
            }
        }
        Ok(())
    }

    // ---- inputs ----

    /// A checked request. `None` when it was already answered (nothing to do, and nothing
    /// for browsers either); otherwise the worker's actions.
    pub fn on_request(
        &mut self,
        req: &Signed<WorkRequest>,
        now_ms: u64,
    ) -> Option<Vec<WorkerAction>> {
        let id = req.id();
        if self.requests.insert(id, req.clone()).is_none() {
            self.order.push_back((req.payload().expires_ms, id));
        }
        self.forget_old(now_ms);
        if self.answered.contains_key(&id) {
            return None;
        }
        Some(match &mut self.worker {
            Some(w) => w.on_request(req, now_ms),
            None => Vec::new(),
        })
    }

    /// A checked result (gossiped, delivered to this service's node, or this worker's own
    /// for its own service): the first answers its request; the service takes it if it is
    /// waiting for it; the worker stops working on it.
    pub fn on_result(&mut self, res: &Signed<WorkResult>, now_ms: u64) -> Outputs {
        let id = res.payload().request;
        self.answered.entry(id).or_insert(res.payload().worker);
        Outputs {
            service: self.service.on_result(res, now_ms),
            worker: self.on_done(id, now_ms),
        }
    }

    /// A request is finished (answered or cancelled): the worker stops and forgets it.
    pub fn on_done(&mut self, id: RequestId, now_ms: u64) -> Vec<WorkerAction> {
        match &mut self.worker {
            Some(w) => w.on_done(id, now_ms),
            None => Vec::new(),
        }
    }

    /// A verified receipt paid `result` for `request`: its work is never paid again, and the
    /// request is answered. `None` when it was answered already; otherwise the worker's
    /// actions. Only a request still alive is remembered as answered (so that a late copy is
    /// not worked on): receipts of old requests (catch-up) would otherwise grow the map with
    /// the ledger.
    pub fn on_receipt(
        &mut self,
        request: &Signed<WorkRequest>,
        result: &WorkResult,
        now_ms: u64,
    ) -> Option<Vec<WorkerAction>> {
        self.pay(result.root, result.work);
        let id = request.id();
        if self.answered.contains_key(&id) {
            return None;
        }
        let expires_ms = request.payload().expires_ms;
        if expires_ms.saturating_add(KEEP_AFTER_EXPIRY_MS) >= now_ms {
            self.answered.insert(id, result.worker);
            if !self.requests.contains_key(&id) {
                self.order.push_back((expires_ms, id));
            }
        }
        Some(self.on_done(id, now_ms))
    }

    /// A checked status from another worker. When the table is full a newcomer takes the
    /// place of the stalest worker not `proven`; if there is none it is not kept (`Ok`: it
    /// is still a valid status to forward).
    pub fn on_status(
        &mut self,
        st: Signed<WorkerStatus>,
        now_ms: u64,
        proven: impl Fn(&PublicKey) -> bool,
    ) -> Result<(), Rejected> {
        self.refuse_old_status(st.payload())?;
        if let Some(w) = &mut self.worker {
            w.on_status(st.payload(), now_ms);
        }
        let key = st.payload().worker;
        if self.statuses.len() >= self.limits.statuses && !self.statuses.contains_key(&key) {
            let victim = crate::standing::evict_for(
                self.statuses
                    .iter()
                    .map(|(k, s)| (k, s.payload().created_ms)),
                &key,
                proven,
            );
            match victim {
                Some(k) => {
                    self.statuses.remove(&k);
                }
                None => return Ok(()),
            }
        }
        self.statuses.insert(key, st);
        Ok(())
    }

    /// This peer's own status, signed and about to be published.
    pub fn own_status(&mut self, st: Signed<WorkerStatus>, now_ms: u64) {
        if let Some(w) = &mut self.worker {
            w.on_status(st.payload(), now_ms);
        }
        self.statuses.insert(st.payload().worker, st);
    }

    /// This peer's service submits a checked request: its publish. The node then takes it
    /// with [`Self::on_request`] like any request (its own worker may work on it).
    pub fn submit(
        &mut self,
        req: Signed<WorkRequest>,
        now_ms: u64,
    ) -> Result<Vec<ServiceAction>, FlowError> {
        self.service.submit(req, now_ms)
    }

    /// This peer's service withdraws a request.
    pub fn cancel(&mut self, id: RequestId, now_ms: u64) -> Vec<ServiceAction> {
        self.service.cancel(id, now_ms)
    }

    /// Time passed: the service republishes and expires, the worker starts backups.
    pub fn on_tick(&mut self, now_ms: u64) -> Outputs {
        self.forget_old(now_ms);
        Outputs {
            service: self.service.on_tick(now_ms),
            worker: match &mut self.worker {
                Some(w) => w.on_tick(now_ms),
                None => Vec::new(),
            },
        }
    }

    /// The earliest time [`Self::on_tick`] has something to do.
    pub fn next_deadline(&self) -> Option<u64> {
        let w = self.worker.as_ref().and_then(WorkerFlow::next_deadline);
        match (self.service.next_deadline(), w) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn pay(&mut self, root: Root, work: Work) {
        if self.paid.insert((root, work)) {
            self.paid_order.push_back((root, work));
            while self.paid_order.len() > self.limits.paid_work {
                if let Some(old) = self.paid_order.pop_front() {
                    self.paid.remove(&old);
                }
            }
        }
    }

    /// Forget requests (and their answers) a minute after they expire, and the oldest when
    /// too many are held.
    fn forget_old(&mut self, now_ms: u64) {
        while self.requests.len() > self.limits.requests
            || self
                .order
                .front()
                .is_some_and(|(exp, _)| exp.saturating_add(KEEP_AFTER_EXPIRY_MS) < now_ms)
        {
            let Some((_, old)) = self.order.pop_front() else {
                break;
            };
            self.requests.remove(&old);
            self.answered.remove(&old);
        }
    }
}
