//! The node's statistics: counted as messages pass, lists rebuilt twice a second.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use dpow_protocol::flow::WorkerFlow;
use dpow_protocol::{Signed, WorkRequest, WorkResult, WorkerStatus};

use crate::net::NodeStats;
use crate::net::events::Event;
use crate::net::stats::{Percentiles, ServiceStat, WorkerStat};

use super::EventLoop;

impl EventLoop {
    pub(super) fn stats(&self) -> std::sync::MutexGuard<'_, NodeStats> {
        self.stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// After every event: the cheap gauges now, everything that walks the worker table or
    /// the registry at most twice a second ([`Self::full_stats`]).
    pub(super) fn publish_stats(&mut self) {
        let now = self.clock.now_ms();
        self.full_stats(now);
        let (queue, solving) = match &self.worker {
            Some(w) => (
                self.peer.worker().map_or(0, WorkerFlow::queue_len),
                w.solving.as_ref().map(|s| s.request.to_string()),
            ),
            None => (0, None),
        };
        let pool = self.verifier.stats();
        let queued = self.verifier.pending();
        let mut s = self.stats();
        s.queue = queue;
        s.solving = solving;
        s.signature_checks = pool.signature_checks;
        s.verify_jobs = pool.jobs;
        s.verify_queued = queued;
    }

    /// A valid request (this node's service's own if `own`): told, and counted for the
    /// request rate.
    pub(super) fn count_request(&mut self, req: &Signed<WorkRequest>, own: bool, now: u64) {
        self.emit(|| Event::RequestSeen {
            request: req.id(),
            service: req.payload().service,
            own,
        });
        self.recent_requests.push_back(now);
        while self
            .recent_requests
            .front()
            .is_some_and(|t| now.saturating_sub(*t) > 60_000)
            || self.recent_requests.len() > 1_000_000
        {
            self.recent_requests.pop_front();
        }
        let service = req.payload().service;
        if self.per_service.len() < 100_000 || self.per_service.contains_key(&service) {
            *self.per_service.entry(service).or_default() += 1;
        }
    }

    /// A valid result (from gossip, delivered to this service node, or carried for a
    /// browser): told, and counted by its request's block kind.
    pub(super) fn count_result(&mut self, res: &Signed<WorkResult>) {
        self.emit(|| Event::Answered {
            request: res.payload().request,
            worker: res.payload().worker,
        });
        let kind = self
            .peer
            .request(&res.payload().request)
            .and_then(|r| r.payload().kind)
            .map_or("unspecified", |k| k.as_str());
        if !self.peer.is_answered(&res.payload().request) {
            *self
                .stats()
                .work_by_kind
                .entry(kind.to_string())
                .or_default() += 1;
        }
    }

    /// Lists and rates: rebuilt at most twice a second, they cost O(workers + services).
    pub(super) fn full_stats(&mut self, now: u64) {
        if self.last_full_stats.elapsed() < Duration::from_millis(500) {
            return;
        }
        self.last_full_stats = Instant::now();
        // What the statistics show of the books is on disk.
        self.flush_receipts();
        self.update_exhausted(now);
        if let (Some(w), Some(flow)) = (&mut self.worker, self.peer.worker()) {
            let mine = flow.standings().receipts(&w.key.public());
            w.own.set_standing(mine);
        }
        let live = self.live_statuses(now);
        let network_rate =
            crate::net::stats::summed_rate(live.iter().map(|s| s.payload().hash_rate));
        let (live_workers, proven_workers) = match self.peer.worker() {
            Some(f) => (f.live_workers(now), f.proven_workers(now)),
            None => (live.len(), 0),
        };
        let window = now.saturating_sub(self.recent_requests.front().copied().unwrap_or(now));
        let span_s = (window as f64 / 1e3).clamp(1.0, 60.0);
        let rps = self.recent_requests.len() as f64 / span_s;
        let lat: Vec<f64> = self.latencies.iter().copied().collect();
        let mut workers: Vec<WorkerStat> = live
            .iter()
            .map(|s| {
                let p = s.payload();
                WorkerStat {
                    account: p.worker.to_string(),
                    hash_rate: p.hash_rate,
                    queue: p.queue,
                    payout: p.payout.map(|a| a.to_string()).unwrap_or_default(),
                    credits: u64::try_from(self.ledger.earned(&p.worker)).unwrap_or(u64::MAX),
                    browser: self.browsers.is_browser(&p.worker),
                }
            })
            .collect();
        workers.sort_by(|a, b| {
            b.hash_rate
                .cmp(&a.hash_rate)
                .then(a.account.cmp(&b.account))
        });
        workers.truncate(1000);
        let mut services: Vec<ServiceStat> = self
            .registry
            .services()
            .map(|(k, info)| ServiceStat {
                account: k.to_string(),
                name: info.name.clone(),
                requests: self.per_service.get(k).copied().unwrap_or(0),
                banned: info.banned.is_some(),
                granted: info.granted.0,
                spent: u64::try_from(self.ledger.spent(k)).unwrap_or(u64::MAX),
                unreceipted_wins: self.deliveries.unreceipted().get(k).copied().unwrap_or(0),
            })
            .collect();
        let unreceipted = self
            .deliveries
            .unreceipted()
            .iter()
            .map(|(k, n)| (k.to_string(), *n))
            .collect();
        services.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.account.cmp(&b.account)));
        services.truncate(1000);
        let connected = self.swarm.connected_peers().count();
        let connections = self
            .swarm
            .network_info()
            .connection_counters()
            .num_established();
        self.reach_stats(connections as usize);
        let entries = self.registry.len();
        let service_count = self.registry.services().count();
        let uptime = self.started.elapsed().as_secs();
        let epoch = dpow_protocol::ledger::epoch_of(now, self.ledger.epoch_ms());
        let receipts = self.ledger.len();
        self.big_books = receipts >= self.inline_digest_below;
        let digest = if self.big_books {
            self.refresh_digests(epoch);
            self.digests.get(&epoch).map(hex::encode)
        } else {
            Some(hex::encode(self.digest_of(epoch)))
        };
        let earned = self.worker.as_ref().map_or(0, |w| {
            u64::try_from(self.ledger.earned(&w.key.public())).unwrap_or(u64::MAX)
        });
        let own = self.worker.as_mut().map(|w| {
            w.own.refresh_credits(&self.ledger, &w.key.public(), now);
            w.own.snapshot()
        });
        let flagged: Vec<String> = self
            .ledger
            .flagged_services()
            .iter()
            .map(|k| k.to_string())
            .collect();
        let mut s = self.stats();
        s.connected_peers = connected;
        s.live_workers = live_workers;
        s.proven_workers = proven_workers;
        s.network_hash_rate = network_rate;
        s.registry_entries = entries;
        s.registry_repairs = self.registry_repairs;
        s.services = service_count;
        s.ledger_receipts = receipts;
        s.ledger_epoch = epoch;
        if let Some(d) = digest {
            s.ledger_digest = d;
        }
        s.credits_earned = earned;
        s.worker = own;
        s.flagged_services = flagged;
        s.uptime_s = uptime;
        s.requests_per_second = rps;
        s.latency_ms = Percentiles::of(&lat);
        (s.turn_ms, s.turn_slow_kinds) = self.turn_times.percentiles();
        s.turn_max_ms = self.turn_times.max_us as f64 / 1e3;
        s.turn_max_kind = self.turn_times.max_kind.to_string();
        s.worker_list = workers;
        s.service_list = services;
        s.unreceipted_wins = unreceipted;
    }

    /// Tell the worker which services have spent their credits (it de-prioritises or refuses
    /// their requests, as configured), when that set changes.
    pub(super) fn update_exhausted(&mut self, now: u64) {
        let Some(flow) = self.peer.worker() else {
            return;
        };
        let mut exhausted: HashSet<dpow_keys::PublicKey> = self
            .registry
            .services()
            .map(|(k, _)| *k)
            .filter(|k| {
                self.ledger
                    .service_balance(&self.registry, k)
                    .is_exhausted()
            })
            .collect();
        // Services that took this worker's work and signed no receipt are treated alike.
        exhausted.extend(self.unpaying());
        if &exhausted == flow.exhausted() {
            return;
        }
        tracing::info!(services = exhausted.len(), "services out of credits");
        self.stats().exhausted_services = exhausted.len();
        if let Some(flow) = self.peer.worker_mut() {
            let actions = flow.set_exhausted(exhausted);
            self.worker_actions(actions, now);
        }
    }

    pub(super) fn live_statuses(&self, now: u64) -> Vec<&Signed<WorkerStatus>> {
        self.peer
            .statuses()
            .filter(|s| {
                now.saturating_sub(s.payload().created_ms)
                    < dpow_protocol::validate::STATUS_MAX_AGE_MS
            })
            .collect()
    }
}
