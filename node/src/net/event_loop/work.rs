//! The worker side: solving on the solver thread, the results it sends, its status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use dpow_keys::SecretKey;
use dpow_protocol::flow::{WorkerAction, WorkerFlow};
use dpow_protocol::{Difficulty, RequestId, Root, Signed, Work, WorkResult, WorkerStatus};
use dpow_solver::{Control, Solver};

use crate::net::events::Event;
use crate::net::stats::{OwnReject, OwnTally};
use crate::net::{Topic, WorkerConfig};

use super::EventLoop;

/// A solve in progress on the solver thread.
pub(super) struct Solving {
    pub(super) request: RequestId,
    pub(super) control: Arc<Control>,
}

/// What the solver thread reports.
pub(super) struct Solved {
    pub(super) request: RequestId,
    /// What was asked, to check the answer against before it leaves the node.
    pub(super) root: Root,
    pub(super) difficulty: Difficulty,
    pub(super) outcome: Result<Option<Work>, String>,
    pub(super) hashes: u64,
    pub(super) elapsed: Duration,
}

pub(super) struct Worker {
    pub(super) solver: Arc<dyn Solver>,
    pub(super) key: SecretKey,
    pub(super) payout: Option<dpow_keys::NanoAccount>,
    pub(super) rate: u64,
    pub(super) solving: Option<Solving>,
    pub(super) next_status: Instant,
    /// This worker's own figures: devices, results and what became of them, credits.
    pub(super) own: OwnTally,
}

pub(super) fn start_worker(
    w: WorkerConfig,
    key: SecretKey,
    flow: dpow_protocol::flow::FlowConfig,
) -> anyhow::Result<(Worker, WorkerFlow)> {
    let solver: Arc<dyn Solver> = Arc::from(w.solver);
    let rate = match w.rate {
        Some(r) => r,
        None => {
            let r =
                dpow_solver::dispatch::measure_rate(solver.as_ref(), Duration::from_millis(300))
                    .context("measuring the solver's hash rate")?;
            r as u64
        }
    }
    .max(1);
    tracing::info!(rate, "worker ready");
    let own = OwnTally::new(w.payout.as_ref(), solver.as_ref(), rate);
    let flow = WorkerFlow::new(key.public(), rate, flow);
    let worker = Worker {
        solver,
        key,
        payout: w.payout,
        rate,
        solving: None,
        next_status: Instant::now(),
        own,
    };
    Ok((worker, flow))
}

impl EventLoop {
    /// A request is finished (answered or cancelled): stop working on it.
    pub(super) fn on_done(&mut self, id: RequestId, now: u64) {
        self.browsers.done(id);
        let actions = self.peer.on_done(id, now);
        self.worker_actions(actions, now);
    }

    /// The ledger counted a receipt for `request` naming `worker`: won or lost, if this
    /// worker sent a result for it.
    pub(super) fn own_receipt(&mut self, request: &RequestId, worker: &dpow_keys::PublicKey) {
        if let Some(w) = &mut self.worker {
            w.own.receipt(request, worker, &w.key.public());
        }
    }

    pub(super) fn worker_actions(&mut self, actions: Vec<WorkerAction>, now: u64) {
        for a in actions {
            match a {
                WorkerAction::Solve {
                    request,
                    root,
                    difficulty,
                } => self.start_solve(request, root, difficulty, now),
                WorkerAction::Stop { request } => {
                    if let Some(w) = &self.worker
                        && let Some(s) = &w.solving
                        && s.request == request
                    {
                        s.control.cancel();
                    }
                }
                WorkerAction::Publish {
                    request,
                    root,
                    work,
                } => self.publish_result(request, root, work, now),
                WorkerAction::Dropped { request } => {
                    tracing::warn!(%request, "dropped a request (queue full, or its service is out of credits)");
                    self.stats().dropped += 1;
                }
            }
        }
    }

    pub(super) fn start_solve(
        &mut self,
        request: RequestId,
        root: Root,
        difficulty: Difficulty,
        now: u64,
    ) {
        let role = self.peer.worker().and_then(|f| f.role(request));
        let Some(w) = &mut self.worker else { return };
        w.own.started(role, now);
        if let Some(s) = &w.solving {
            // The flow solves one request at a time; a new Solve replaces the old one.
            s.control.cancel();
        }
        let control = Arc::new(Control::new());
        w.solving = Some(Solving {
            request,
            control: control.clone(),
        });
        let solver = w.solver.clone();
        let tx = self.solved_tx.clone();
        tracing::debug!(%request, %difficulty, "solving");
        let spawned = std::thread::Builder::new()
            .name("dpow-solve".into())
            .spawn(move || {
                let began = Instant::now();
                let outcome = solver
                    .solve(&root, difficulty, &control)
                    .map_err(|e| e.to_string());
                let _ = tx.blocking_send(Solved {
                    request,
                    root,
                    difficulty,
                    outcome,
                    hashes: control.hashes(),
                    elapsed: began.elapsed(),
                });
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start a solver thread: {e}");
            w.solving = None;
        }
    }

    pub(super) fn on_solved(&mut self, done: Solved) {
        let now = self.clock.now_ms();
        // Why an answer found now would come too late, if it would.
        let late = if self.peer.is_answered(&done.request) {
            Some(OwnReject::AlreadyAnswered)
        } else if self
            .peer
            .request(&done.request)
            .is_some_and(|r| now >= r.payload().expires_ms)
        {
            Some(OwnReject::Expired)
        } else {
            None
        };
        let (Some(w), Some(flow)) = (&mut self.worker, self.peer.worker_mut()) else {
            return;
        };
        if w.solving
            .as_ref()
            .is_some_and(|s| s.request == done.request)
        {
            w.solving = None;
        }
        w.own.job_done(w.solver.as_ref(), done.hashes, done.elapsed);
        // Whatever the solver says, work leaves this node only if it meets the request's
        // threshold: every peer would refuse it (and penalise this node) otherwise.
        let outcome = match done.outcome {
            Ok(Some(work)) if !dpow_protocol::is_valid(&done.root, work, done.difficulty) => Err((
                OwnReject::InvalidWork,
                format!(
                    "work {work} for root {} does not meet {}",
                    done.root, done.difficulty
                ),
            )),
            Ok(found) => Ok(found),
            Err(e) => Err((OwnReject::SolverError, e)),
        };
        {
            let mut s = self
                .stats
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            s.hashes += done.hashes;
            // Won as far as this node can tell: no answer arrived before ours.
            if matches!(outcome, Ok(Some(_))) && late.is_none() {
                s.hashes_won += done.hashes;
            }
        }
        let actions = match outcome {
            Ok(Some(work)) => {
                let mut actions = flow.on_solved(done.request, work, now);
                let publishes = |a: &WorkerAction| matches!(a, WorkerAction::Publish { request, .. } if *request == done.request);
                if late == Some(OwnReject::Expired) {
                    // Still queued until the next tick, but every peer would refuse it now.
                    actions.retain(|a| !publishes(a));
                }
                if actions.iter().any(publishes) {
                    self.events.emit(|| Event::Solved {
                        request: done.request,
                        hashes: done.hashes,
                        ms: done.elapsed.as_secs_f64() * 1e3,
                    });
                } else {
                    w.own.reject(late.unwrap_or(OwnReject::Cancelled));
                }
                actions
            }
            // Stopped: the flow already knows why.
            Ok(None) => Vec::new(),
            Err((reason, e)) => {
                tracing::error!(request = %done.request, reason = reason.as_str(), "solver failed: {e}");
                w.own.reject(reason);
                flow.on_solve_failed(done.request, now)
            }
        };
        self.worker_actions(actions, now);
        // The flow may have more queued work now that the solver is free.
        if let Some(flow) = self.peer.worker_mut() {
            let more = flow.on_tick(now);
            self.worker_actions(more, now);
        }
    }

    pub(super) fn publish_result(&mut self, request: RequestId, root: Root, work: Work, now: u64) {
        let Some(w) = &self.worker else { return };
        let result = WorkResult {
            request,
            root,
            work,
            worker: w.key.public(),
            payout: w.payout,
        };
        let signed = match Signed::sign(result, &w.key, &self.genesis.id) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot sign a result: {e}");
                return;
            }
        };
        self.stats().solved += 1;
        self.deliver_result(signed, now);
    }

    pub(super) fn publish_status(&mut self, now: u64) {
        let Some(w) = &mut self.worker else { return };
        w.next_status = Instant::now() + self.status_interval;
        let status = WorkerStatus {
            worker: w.key.public(),
            hash_rate: w.rate,
            queue: self.peer.worker().map_or(0, WorkerFlow::queue_len) as u32,
            payout: w.payout,
            created_ms: now,
        };
        let signed = match Signed::sign(status, &w.key, &self.genesis.id) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot sign a status: {e}");
                return;
            }
        };
        self.peer.own_status(signed.clone(), now);
        let _ = self.publish(Topic::Status, signed.bytes().to_vec());
    }
}
