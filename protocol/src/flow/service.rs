//! A service's side of the lifecycle: see the [module docs](super).

use std::collections::BTreeMap;

use crate::{RequestId, Signed, WorkRequest, WorkResult};

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
