//! Messages signed by workers that are not this node: the browser workers it carries.
//!
//! A browser signs its own statuses and results (its key never leaves it); the node checks
//! them with the same validator as any peer's gossip, then publishes a status on gossip and
//! delivers a result exactly as its own worker's (to the request's service node, gossip as
//! the fallback). It can neither alter what the browser signed nor claim it: the result names
//! the browser's key and payout account, and the service credits the first valid result for
//! a request and refuses paid (root, work) pairs. The bridge learns of open requests from a
//! bounded broadcast feed.

use std::collections::{HashSet, VecDeque};

use dpow_keys::PublicKey;
use dpow_protocol::validate::Rejected;
use dpow_protocol::{RequestId, Signed, WorkRequest, WorkResult};
use tokio::sync::broadcast;

use super::EventLoop;
use crate::net::Topic;
use crate::net::bridge::{BRIDGE_QUEUE, BridgeEvent, ForeignKind};

/// Browser keys remembered (for marking them on the dashboard), at most.
const MAX_BROWSER_KEYS: usize = 4096;
/// Open requests handed to a newly connected browser, at most (the newest).
const MAX_OPEN_REQUESTS: usize = 512;

/// The bridge's side of the event loop.
pub(super) struct Browsers {
    feed: broadcast::Sender<BridgeEvent>,
    keys: HashSet<PublicKey>,
    order: VecDeque<PublicKey>,
}

impl Default for Browsers {
    fn default() -> Self {
        Browsers {
            feed: broadcast::channel(BRIDGE_QUEUE).0,
            keys: HashSet::new(),
            order: VecDeque::new(),
        }
    }
}

impl Browsers {
    /// A new request: tell the bridges (if any listen).
    pub(super) fn request(&self, req: &Signed<WorkRequest>) {
        if self.feed.receiver_count() > 0 {
            let _ = self.feed.send(BridgeEvent::Request(req.clone()));
        }
    }

    /// A request is finished.
    pub(super) fn done(&self, id: RequestId) {
        if self.feed.receiver_count() > 0 {
            let _ = self.feed.send(BridgeEvent::Done(id));
        }
    }

    /// Whether any bridge is connected.
    pub(super) fn listening(&self) -> bool {
        self.feed.receiver_count() > 0
    }

    /// Whether `key` is a browser this node carried.
    pub(super) fn is_browser(&self, key: &PublicKey) -> bool {
        self.keys.contains(key)
    }

    fn remember(&mut self, key: PublicKey) {
        if self.keys.insert(key) {
            self.order.push_back(key);
            while self.order.len() > MAX_BROWSER_KEYS {
                if let Some(old) = self.order.pop_front() {
                    self.keys.remove(&old);
                }
            }
        }
    }
}

impl EventLoop {
    /// A browser's signed message: validated like a peer's, then carried.
    pub(super) fn on_foreign(&mut self, kind: ForeignKind, bytes: &[u8]) -> Result<(), Rejected> {
        let now = self.clock.now_ms();
        let verdict = match kind {
            ForeignKind::Result => self.foreign_result(bytes, now),
            ForeignKind::Status => self.foreign_status(bytes, now),
        };
        if let Err(r) = &verdict {
            self.stats().reject(r.reason.as_str());
            tracing::debug!(kind = ?kind, "refused a browser's message: {r}");
        }
        verdict
    }

    fn foreign_result(&mut self, bytes: &[u8], now: u64) -> Result<(), Rejected> {
        let res = self
            .screen_result(bytes, now)?
            .verify_with(&self.signatures)?;
        res.remember_verified(&self.signatures);
        self.browsers.remember(res.payload().worker);
        self.stats().accept("work-result");
        self.count_result(&res);
        tracing::debug!(request = %res.payload().request, worker = %res.payload().worker, "carrying a browser's result");
        self.deliver_result(res, now);
        Ok(())
    }

    fn foreign_status(&mut self, bytes: &[u8], now: u64) -> Result<(), Rejected> {
        let st = self.validator.check_status(bytes, &self.registry, now)?;
        let key = st.payload().worker;
        self.on_status(st, now)?;
        self.browsers.remember(key);
        self.stats().accept("worker-status");
        // No peer subscribed yet is no fault of the browser's.
        let _ = self.publish(Topic::Status, bytes.to_vec());
        Ok(())
    }

    /// The open requests and a feed of changes, for a bridge connection.
    pub(super) fn subscribe_browser(
        &self,
    ) -> (Vec<Signed<WorkRequest>>, broadcast::Receiver<BridgeEvent>) {
        let now = self.clock.now_ms();
        let mut open: Vec<Signed<WorkRequest>> = self
            .peer
            .requests()
            .filter(|(id, r)| !self.peer.is_answered(id) && r.payload().expires_ms > now)
            .map(|(_, r)| r.clone())
            .collect();
        open.sort_by_key(|r| std::cmp::Reverse(r.payload().created_ms));
        open.truncate(MAX_OPEN_REQUESTS);
        (open, self.browsers.feed.subscribe())
    }

    /// Whether `res` is this node's own worker's (its figures count only those).
    pub(super) fn is_own_result(&self, res: &Signed<WorkResult>) -> bool {
        self.worker
            .as_ref()
            .is_some_and(|w| w.key.public() == res.payload().worker)
    }
}
