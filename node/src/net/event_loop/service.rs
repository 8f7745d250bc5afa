//! The service side: requests submitted through this node, their answers and receipts.

use std::time::Instant;

use dpow_protocol::flow::ServiceAction;
use dpow_protocol::{RequestId, Root, Signed, WorkCancel, WorkRequest, WorkResult};
use tokio::sync::oneshot;

use crate::net::events::Event;
use crate::net::{SubmitError, Topic, WorkAnswer};

use super::{EventLoop, books};

pub(super) struct Pending {
    pub(super) reply: oneshot::Sender<Result<WorkAnswer, SubmitError>>,
    /// When the caller asked: latency is measured from here, to the microsecond.
    pub(super) asked: Instant,
    /// The request's root, for cancelling by root.
    pub(super) root: Root,
}

impl EventLoop {
    pub(super) fn service_actions(&mut self, actions: Vec<ServiceAction>, now: u64) {
        for a in actions {
            match a {
                ServiceAction::Publish(req) => {
                    let _ = self.publish(Topic::Requests, req.bytes().to_vec());
                }
                ServiceAction::Cancel { request } => self.publish_cancel(request, now),
                ServiceAction::Completed {
                    request, result, ..
                } => {
                    self.stats().completed += 1;
                    let receipt = self.issue_receipt(request, result.clone(), now);
                    if let Some(p) = self.pending.remove(&request) {
                        self.emit(|| Event::Completed {
                            request,
                            worker: result.payload().worker,
                            latency_ms: p.asked.elapsed().as_secs_f64() * 1e3,
                        });
                        self.latencies
                            .push_back(p.asked.elapsed().as_secs_f64() * 1e3);
                        if self.latencies.len() > 1000 {
                            self.latencies.pop_front();
                        }
                        let _ = p.reply.send(Ok(WorkAnswer {
                            request: request.to_string(),
                            work: result.payload().work,
                            worker: result.payload().worker,
                            latency: p.asked.elapsed(),
                            receipt,
                        }));
                    }
                }
                ServiceAction::Expired { request } => {
                    self.stats().expired += 1;
                    if let Some(p) = self.pending.remove(&request) {
                        self.emit(|| Event::Expired { request });
                        let _ = p.reply.send(Err(SubmitError::Expired));
                    }
                }
            }
        }
    }

    pub(super) fn publish_cancel(&mut self, request: RequestId, now: u64) {
        let Some(key) = &self.service_key else { return };
        let cancel = WorkCancel {
            service: key.public(),
            request,
            created_ms: now,
        };
        match Signed::sign(cancel, key, &self.genesis.id) {
            Ok(c) => {
                let _ = self.publish(Topic::Cancels, c.bytes().to_vec());
            }
            Err(e) => tracing::error!("cannot sign a cancel: {e}"),
        }
        self.on_done(request, now);
    }

    pub(super) fn submit(
        &mut self,
        ask: crate::net::WorkAsk,
        reply: oneshot::Sender<Result<WorkAnswer, SubmitError>>,
    ) {
        let now = self.clock.now_ms();
        let asked = Instant::now();
        let Some(key) = &self.service_key else {
            let _ = reply.send(Err(SubmitError::NoServiceKey));
            return;
        };
        let request = WorkRequest {
            service: key.public(),
            root: ask.root,
            difficulty: ask.difficulty,
            kind: ask.kind,
            account: ask.account,
            nonce: dpow_solver::random_start(),
            created_ms: now,
            expires_ms: now + ask.lifetime.as_millis() as u64,
            priority: ask.priority,
            node: self.node_key,
        };
        let signed = match Signed::sign(request, key, &self.genesis.id) {
            Ok(s) => s,
            Err(e) => {
                let _ = reply.send(Err(SubmitError::Refused(e.to_string())));
                return;
            }
        };
        // The same checks every peer will apply: fail here with the reason, not by silence.
        let signed = match self
            .validator
            .check_request(signed.bytes(), &self.registry, now)
        {
            Ok(s) => s,
            Err(r) => {
                let _ = reply.send(Err(SubmitError::Refused(r.to_string())));
                return;
            }
        };
        let id = signed.id();
        let actions = match self.peer.submit(signed.clone(), now) {
            Ok(a) => a,
            Err(e) => {
                let _ = reply.send(Err(SubmitError::Refused(e.to_string())));
                return;
            }
        };
        self.stats().submitted += 1;
        self.count_request(&signed, true, now);
        let root = signed.payload().root;
        self.pending.insert(id, Pending { reply, asked, root });
        self.service_actions(actions, now);
        // A service node that also works takes its own request like any other.
        self.on_request(signed, now);
    }

    /// The service side's first valid result: sign its receipt, keep it, spread it. Its id,
    /// if one was signed.
    pub(super) fn issue_receipt(
        &mut self,
        request: RequestId,
        result: Signed<WorkResult>,
        now: u64,
    ) -> Option<dpow_protocol::MessageId> {
        let (Some(key), Some(req)) = (&self.service_key, self.peer.request(&request)) else {
            return None;
        };
        if self.withhold_receipts {
            tracing::warn!(%request, "withholding the receipt (fault injection)");
            return None;
        }
        let receipt = dpow_protocol::Receipt {
            request: req.clone(),
            result,
            price: dpow_protocol::Credits::price(req.payload().difficulty),
            accepted_ms: now,
        };
        match Signed::sign(receipt, key, &self.genesis.id) {
            Ok(r) => {
                let id = r.id();
                // Published (and put into the DHT) once it is on disk: a service that lost its
                // receipt could sign a second one for the same request.
                if let Err(e) = self.take_receipt(r, books::Ack::Own) {
                    tracing::warn!("own receipt not kept: {e}");
                }
                Some(id)
            }
            Err(e) => {
                tracing::error!("cannot sign a receipt: {e}");
                None
            }
        }
    }
}
