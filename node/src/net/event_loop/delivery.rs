//! Results delivered point-to-point, and wins that a service never paid for.
//!
//! A worker sends its signed result straight to the service node that the signed request
//! names (`/dpow/result/1`), so no relay sees a winning nonce before the service has taken
//! it; the service publishes the receipt, and only then is the nonce public, when the
//! request is already answered and every later result for it is dropped. Gossip carries a
//! result only when the service node cannot be reached (see docs/wire-protocol.md,
//! "Results").
//!
//! The service node's answer ([`ResultAck::Accepted`]) comes over a connection that Noise
//! authenticated as that node's key, which the service signed into its request: it is the
//! service's word that this worker won. A worker that holds such a word and sees no receipt
//! within [`super::super::NetTuning::receipt_wait`] counts an unreceipted win against the
//! service; at [`super::super::NetTuning::unreceipted_limit`] of them the service is treated
//! like one out of credits (de-prioritised or refused, as `--exhausted` says).

use std::collections::{HashMap, HashSet, VecDeque};

use dpow_keys::PublicKey;
use dpow_protocol::validate::{RejectReason, Rejected, peek_request_id};
use dpow_protocol::{RequestId, Signed, WorkResult};
use libp2p::{PeerId, kad, request_response};

use super::EventLoop;
use crate::net::Topic;
use crate::net::behaviour::{ResultAck, ResultDelivery, peer_of_key, serde_bytes_vec::Bytes};
use crate::net::stats::OwnReject;

/// Deliveries awaiting the service node's answer, at most.
const MAX_IN_FLIGHT: usize = 1024;
/// Wins awaiting their receipt, at most (the oldest is counted unreceipted when full).
const MAX_AWAITED_WINS: usize = 4096;
/// Services with unreceipted wins tracked, at most.
const MAX_OFFENDERS: usize = 4096;
/// Service-node lookups in flight, at most.
const MAX_LOOKUPS: usize = 256;

/// The worker side's deliveries and the service wins awaiting receipts.
#[derive(Default)]
pub(super) struct Deliveries {
    in_flight: HashMap<request_response::OutboundRequestId, Signed<WorkResult>>,
    /// Requests this worker won by the service node's word: service, when (ms).
    won: HashMap<RequestId, (PublicKey, u64)>,
    won_order: VecDeque<RequestId>,
    /// Wins never receipted, per service.
    unreceipted: HashMap<PublicKey, u64>,
    /// Service nodes whose addresses are being looked up in the DHT.
    looking_up: HashSet<PeerId>,
}

impl Deliveries {
    /// Unreceipted wins per service.
    pub(super) fn unreceipted(&self) -> &HashMap<PublicKey, u64> {
        &self.unreceipted
    }

    /// A receipt for `request` arrived: it was paid, whoever won.
    pub(super) fn receipted(&mut self, request: &RequestId) {
        self.won.remove(request);
    }

    fn note_win(&mut self, request: RequestId, service: PublicKey, now: u64) {
        if self.won.len() >= MAX_AWAITED_WINS
            && let Some(old) = self.won_order.pop_front()
            && let Some((s, _)) = self.won.remove(&old)
        {
            self.count_unreceipted(s);
        }
        if self.won.insert(request, (service, now)).is_none() {
            self.won_order.push_back(request);
        }
    }

    fn count_unreceipted(&mut self, service: PublicKey) {
        if self.unreceipted.len() >= MAX_OFFENDERS && !self.unreceipted.contains_key(&service) {
            return;
        }
        *self.unreceipted.entry(service).or_default() += 1;
    }

    /// Wins older than `wait_ms` with no receipt: counted against their services. Returns
    /// whether any was counted.
    fn expire(&mut self, now: u64, wait_ms: u64) -> bool {
        let mut counted = false;
        while let Some(front) = self.won_order.front().copied() {
            match self.won.get(&front) {
                None => {
                    self.won_order.pop_front();
                }
                Some(&(service, at)) if now.saturating_sub(at) >= wait_ms => {
                    self.won_order.pop_front();
                    self.won.remove(&front);
                    tracing::warn!(%service, request = %front, "won a request and the service signed no receipt for it");
                    self.count_unreceipted(service);
                    counted = true;
                }
                Some(_) => break,
            }
        }
        counted
    }
}

impl EventLoop {
    /// A worker is about to work for the service node `node`: if it is not connected to it,
    /// look its addresses up in the DHT and connect, so that a result can go straight there.
    pub(super) fn reach_service_node(&mut self, node: &PublicKey) {
        if *node == self.node_key || !self.discovery {
            return;
        }
        let Some(peer) = peer_of_key(node) else {
            return;
        };
        if self.swarm.is_connected(&peer)
            || self.deliveries.looking_up.len() >= MAX_LOOKUPS
            || !self.deliveries.looking_up.insert(peer)
        {
            return;
        }
        self.swarm.behaviour_mut().kad.get_closest_peers(peer);
    }

    /// A DHT lookup finished: dial the service nodes it found addresses for.
    pub(super) fn on_closest_peers(&mut self, peers: Vec<kad::PeerInfo>) {
        for p in peers {
            if p.addrs.is_empty() || !self.deliveries.looking_up.remove(&p.peer_id) {
                continue;
            }
            if self.swarm.is_connected(&p.peer_id) {
                continue;
            }
            let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(p.peer_id)
                .addresses(p.addrs)
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                tracing::debug!(peer = %p.peer_id, "dialling a service node: {e}");
            }
        }
    }

    /// A lookup ended without finding `peer`: another request may look again.
    pub(super) fn lookup_failed(&mut self, key: &[u8]) {
        if let Ok(peer) = PeerId::from_bytes(key) {
            self.deliveries.looking_up.remove(&peer);
        }
    }

    /// Send this worker's signed result to the request's service node; gossip only if that
    /// node cannot be asked.
    pub(super) fn deliver_result(&mut self, signed: Signed<WorkResult>, now: u64) {
        let request = signed.payload().request;
        let node = self.peer.request(&request).map(|r| r.payload().node);
        let own = self.is_own_result(&signed);
        if node == Some(self.node_key) {
            // Our own service: it takes the result here.
            if let Some(w) = &mut self.worker
                && own
            {
                w.own.sent(request);
            }
            self.on_result(signed, now);
            return;
        }
        // This worker is done with it either way.
        self.on_done(request, now);
        let peer = node.as_ref().and_then(peer_of_key);
        match peer {
            Some(peer) if self.deliveries.in_flight.len() < MAX_IN_FLIGHT => {
                let id = self.swarm.behaviour_mut().results.send_request(
                    &peer,
                    ResultDelivery {
                        result: Bytes(signed.bytes().to_vec()),
                    },
                );
                self.deliveries.in_flight.insert(id, signed);
            }
            _ => self.gossip_result(signed),
        }
    }

    /// The fallback: publish the result on gossip (the service then finds it there).
    fn gossip_result(&mut self, signed: Signed<WorkResult>) {
        let request = signed.payload().request;
        let own = self.is_own_result(&signed);
        let published = self
            .publish(Topic::Results, signed.bytes().to_vec())
            .is_ok();
        self.stats().results_gossiped += 1;
        if let Some(w) = &mut self.worker
            && own
        {
            if published {
                w.own.sent(request);
            } else {
                w.own.reject(OwnReject::PublishFailed);
            }
        }
    }

    pub(super) fn on_results_event(
        &mut self,
        ev: request_response::Event<ResultDelivery, ResultAck>,
    ) {
        match ev {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let ack = self.take_delivered(peer, &request.result.0);
                // The worker may have given up waiting: nothing to do then.
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .results
                    .send_response(channel, ack);
            }
            request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                let Some(signed) = self.deliveries.in_flight.remove(&request_id) else {
                    return;
                };
                let request = signed.payload().request;
                let service = self.peer.request(&request).map(|r| r.payload().service);
                if !self.is_own_result(&signed) {
                    // A carried browser's result: the browser learns its fate from receipts.
                    return;
                }
                let Some(w) = &mut self.worker else { return };
                match response {
                    ResultAck::Accepted => {
                        w.own.sent(request);
                        if let Some(service) = service {
                            self.deliveries
                                .note_win(request, service, self.clock.now_ms());
                        }
                    }
                    ResultAck::Answered => w.own.reject(OwnReject::AlreadyAnswered),
                    ResultAck::Refused(why) => {
                        tracing::warn!(%request, "the service node refused our result: {why}");
                        w.own.reject(OwnReject::Refused);
                    }
                }
            }
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some(signed) = self.deliveries.in_flight.remove(&request_id) {
                    let request = signed.payload().request;
                    tracing::debug!(%request, %peer, "service node not reached ({error}): result goes by gossip");
                    self.gossip_result(signed);
                    if matches!(error, request_response::OutboundFailure::DialFailure)
                        && let Some(node) = self.peer.request(&request).map(|r| r.payload().node)
                    {
                        // Look its addresses up for the next result.
                        self.reach_service_node(&node);
                    }
                }
            }
            _ => {}
        }
    }

    /// A result delivered to this node as a request's service node.
    fn take_delivered(&mut self, peer: PeerId, bytes: &[u8]) -> ResultAck {
        let now = self.clock.now_ms();
        let request = peek_request_id(bytes).and_then(|id| self.peer.request(&id));
        if request.is_some_and(|r| r.payload().node != self.node_key) {
            return ResultAck::Refused("this node is not the request's service node".into());
        }
        let res = match self
            .validator
            .check_result(bytes, request, &self.registry, now)
        {
            Ok(r) => r,
            Err(r) => {
                self.on_rejected(peer, &r);
                return ResultAck::Refused(r.to_string());
            }
        };
        if let Err(r) = self.refuse_paid_work(res.payload()) {
            self.stats().reject(r.reason.as_str());
            return ResultAck::Refused(r.to_string());
        }
        let id = res.payload().request;
        if self.peer.is_answered(&id) || !self.pending.contains_key(&id) {
            self.stats().reject(RejectReason::Answered.as_str());
            return ResultAck::Answered;
        }
        res.remember_verified(&self.signatures);
        self.stats().accept("work-result");
        self.stats().results_direct += 1;
        self.count_result(&res);
        self.on_result(res, now);
        ResultAck::Accepted
    }

    /// A gossiped result for a request already answered is dropped, never forwarded.
    pub(super) fn refuse_if_answered(&self, data: &[u8]) -> Result<(), Rejected> {
        self.peer.refuse_answered(data)
    }

    /// A result whose nonce for its root was already paid by a receipt replays another
    /// worker's work: refused.
    pub(super) fn refuse_paid_work(&self, p: &WorkResult) -> Result<(), Rejected> {
        self.peer.refuse_paid_work(p)
    }

    /// Count wins whose receipt never came; services past the limit lose priority.
    pub(super) fn check_unreceipted(&mut self, now: u64) {
        if self.deliveries.expire(now, self.receipt_wait_ms) {
            self.update_exhausted(now);
        }
    }

    /// Services this worker treats as unpaying: at least the limit of unreceipted wins.
    pub(super) fn unpaying(&self) -> impl Iterator<Item = PublicKey> + '_ {
        self.deliveries
            .unreceipted()
            .iter()
            .filter(|(_, n)| **n >= self.unreceipted_limit)
            .map(|(k, _)| *k)
    }
}
