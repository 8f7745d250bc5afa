//! Messages from the network, cheapest checks first.
//!
//! Every gossiped message is *screened* on the event loop: size, decoding, network, the
//! validator's registry, clock, replay, profile and work-value checks, then this node's own
//! (already answered, already paid, an older status, a receipt or checkpoint already held).
//! Only what passes owes signature checks, and those run in the verification pool
//! ([`crate::net::verify`]), fairly across peers; the message is *taken* when they come back
//! (state that changed meanwhile is checked again) and only then reported to gossipsub for
//! forwarding. Catch-up answers and DHT records take the same path.

use dpow_protocol::validate::{RejectReason, Rejected, peek_request_id};
use std::collections::{HashMap, HashSet};

use dpow_protocol::{Receipt, RequestId, Signed, Unverified};
use libp2p::{PeerId, gossipsub, kad};

use super::EventLoop;
use super::books::Ack;
use crate::net::Topic;
use crate::net::behaviour::MAX_GOSSIP_BYTES;
use crate::net::behaviour::serde_bytes_vec::Bytes;
use crate::net::verify::{Checked, Done, Job, RECEIPTS_PER_JOB};

/// Finished verification jobs handled in one turn of the event loop, at most.
const DONE_PER_TURN: usize = 32;
/// Gossip messages that name a request waiting in the pool, at most.
const MAX_PARKED: usize = 1_024;
/// Of those, naming one request.
const MAX_PARKED_PER_REQUEST: usize = 8;

/// A gossip message set aside until the request it names is checked.
pub(super) struct Parked {
    peer: PeerId,
    id: gossipsub::MessageId,
    topic: Topic,
    data: Vec<u8>,
}

/// Requests in the verification pool, and the results and cancels waiting for them.
#[derive(Default)]
pub(super) struct Waiting {
    requests: HashSet<RequestId>,
    parked: HashMap<RequestId, Vec<Parked>>,
    len: usize,
}

impl Waiting {
    /// Set `p` aside until `request` is checked; handed back when too many wait.
    fn park(&mut self, request: RequestId, p: Parked) -> Option<Parked> {
        let list = self.parked.entry(request).or_default();
        if self.len >= MAX_PARKED || list.len() >= MAX_PARKED_PER_REQUEST {
            if list.is_empty() {
                self.parked.remove(&request);
            }
            return Some(p);
        }
        list.push(p);
        self.len += 1;
        None
    }

    /// What waited for `request`.
    fn release(&mut self, request: &RequestId) -> Vec<Parked> {
        let list = self.parked.remove(request).unwrap_or_default();
        self.len -= list.len();
        list
    }
}

/// Where a job came from, and what to do with it once verified.
#[derive(Debug)]
pub(super) enum Origin {
    /// A gossip message: reported to gossipsub once judged.
    Gossip {
        id: gossipsub::MessageId,
        /// The request's id, for a request (results may wait for it).
        request: Option<RequestId>,
    },
    /// Receipts of a catch-up answer from the peer.
    CatchUp,
    /// A receipt the peer put into the DHT under this record.
    Record(kad::Record),
}

impl EventLoop {
    /// A gossip message: screened now, verified in the pool, taken in [`Self::on_verified`].
    pub(super) fn on_gossip_message(
        &mut self,
        source: PeerId,
        id: gossipsub::MessageId,
        message: gossipsub::Message,
    ) {
        let Some(topic) = self.which_topic(&message.topic) else {
            let r = Rejected::new(RejectReason::Undecodable, "unknown topic");
            return self.judge(&id, source, Err(r));
        };
        // Checkpoints list payout accounts and may be larger than any other message.
        let limit = match topic {
            Topic::Checkpoints => <dpow_protocol::Checkpoint as dpow_protocol::Message>::MAX_BYTES,
            _ => MAX_GOSSIP_BYTES,
        };
        if message.data.len() > limit {
            let r = Rejected::new(
                RejectReason::Oversized,
                format!("{} bytes, over {limit}", message.data.len()),
            );
            return self.judge(&id, source, Err(r));
        }
        self.screen_gossip(source, id, topic, message.data);
    }

    /// Screen a gossip message and send it on to the pool; a result or cancel whose request
    /// is itself in the pool waits for it (they often come back to back on one connection).
    fn screen_gossip(
        &mut self,
        peer: PeerId,
        id: gossipsub::MessageId,
        topic: Topic,
        data: Vec<u8>,
    ) {
        if matches!(topic, Topic::Results | Topic::Cancels)
            && let Some(request) = peek_request_id(&data)
            && self.peer.request(&request).is_none()
            && self.waiting.requests.contains(&request)
        {
            let parked = Parked {
                peer,
                id,
                topic,
                data,
            };
            if let Some(p) = self.waiting.park(request, parked) {
                let r = Rejected::new(RejectReason::Busy, "too many messages wait for requests");
                self.judge(&p.id, p.peer, Err(r));
            }
            return;
        }
        match self.screen(topic, &data) {
            Ok(job) => {
                let request = match &job {
                    Job::Request(u) => {
                        self.waiting.requests.insert(u.id());
                        Some(u.id())
                    }
                    _ => None,
                };
                self.verify(peer, job, Origin::Gossip { id, request });
            }
            Err(r) => self.judge(&id, peer, Err(r)),
        }
    }

    /// A request's signature check is over (taken or not): what waited for it goes on.
    fn request_checked(&mut self, request: &RequestId) {
        self.waiting.requests.remove(request);
        for p in self.waiting.release(request) {
            self.screen_gossip(p.peer, p.id, p.topic, p.data);
        }
    }

    /// Every check of a gossip message that needs no signature.
    fn screen(&self, topic: Topic, data: &[u8]) -> Result<Job, Rejected> {
        let now = self.clock.now_ms();
        Ok(match topic {
            Topic::Requests => {
                Job::Request(self.validator.screen_request(data, &self.registry, now)?)
            }
            Topic::Results => Job::Result(self.screen_result(data, now)?),
            Topic::Cancels => {
                let request = peek_request_id(data).and_then(|id| self.peer.request(&id));
                Job::Cancel(self.validator.screen_cancel(data, request)?)
            }
            Topic::Status => {
                let st = self.validator.screen_status(data, &self.registry, now)?;
                self.peer.refuse_old_status(st.payload())?;
                Job::Status(st)
            }
            Topic::Registry if self.drop_registry_gossip => {
                return Err(Rejected::new(
                    RejectReason::Stale,
                    "registry gossip dropped (fault injection)",
                ));
            }
            Topic::Registry => {
                Job::Registry(self.validator.screen_registry(data, &self.registry, now)?)
            }
            Topic::Checkpoints => Job::Checkpoint(self.screen_checkpoint(data)?),
            Topic::Receipts => Job::Receipts(vec![self.screen_receipt(data, false)?]),
        })
    }

    /// A result but for its signature: not for a request already answered (read before
    /// anything else), the validator's checks against the request it names, and not a nonce
    /// already paid. For gossip and for browser workers' results alike.
    pub(super) fn screen_result(
        &self,
        data: &[u8],
        now: u64,
    ) -> Result<Unverified<dpow_protocol::WorkResult>, Rejected> {
        self.refuse_if_answered(data)?;
        let request = peek_request_id(data).and_then(|id| self.peer.request(&id));
        let res = self
            .validator
            .screen_result(data, request, &self.registry, now)?;
        self.refuse_paid_work(res.payload())?;
        Ok(res)
    }

    /// A receipt from the network but for its signatures: the validator's checks, not held
    /// already, and of an open epoch (or vouched for by a checkpoint) unless this node is
    /// an auditor reading closed books (`quiet`: fetched, not gossiped).
    pub(super) fn screen_receipt(
        &self,
        bytes: &[u8],
        quiet: bool,
    ) -> Result<Unverified<Receipt>, Rejected> {
        let now = self.clock.now_ms();
        let u = self.validator.screen_receipt(bytes, &self.registry, now)?;
        if self.ledger.contains(&u.id()) {
            return Err(Rejected::new(RejectReason::Replay, "receipt already held"));
        }
        // A short-lived auditor (`dpow ledger`, `dpow registry checkpoint`) keeps nothing and
        // forwards nothing it fetched: it reads closed books as they are.
        if !(quiet && self.is_auditor()) {
            self.check_open(&u.id(), u.payload().accepted_ms)?;
        }
        Ok(u)
    }

    /// Check `job`'s signatures in the pool (here and now when every one was verified
    /// before), then take it in with [`Self::on_verified`].
    pub(super) fn verify(&mut self, peer: PeerId, job: Job, origin: Origin) {
        if job.signature_checks(&self.signatures) == 0 {
            let outcome = job.run(&self.signatures);
            return self.on_verified(vec![Done {
                peer,
                ctx: origin,
                outcome,
            }]);
        }
        if let Err((why, origin)) = self.verifier.submit(peer, job, origin) {
            self.stats().verify_refused += 1;
            tracing::debug!(%peer, ?why, "signature checks queue full: message dropped");
            let r = Rejected::new(RejectReason::Busy, "signature checks queue full");
            match origin {
                Origin::Gossip { id, request, .. } => {
                    self.judge(&id, peer, Err(r));
                    if let Some(request) = request {
                        self.request_checked(&request);
                    }
                }
                Origin::CatchUp => {
                    self.on_rejected(peer, &r);
                    self.catch_up_verified(peer, 0);
                }
                Origin::Record(_) => self.on_rejected(peer, &r),
            }
        }
    }

    /// A job back from the pool, and those finished behind it (up to [`DONE_PER_TURN`]):
    /// taken in by [`Self::on_verified`] together.
    pub(super) fn on_verified_all(&mut self, first: Done<Origin>) {
        let mut dones = vec![first];
        while dones.len() < DONE_PER_TURN {
            match self.verifier.try_next_done() {
                Some(done) => dones.push(done),
                None => break,
            }
        }
        self.on_verified(dones);
    }

    /// Take in verified jobs. The receipts of gossip messages and of catch-up answers among
    /// them are taken together, so the books write them in as few atomic writes as they allow
    /// (under load, the more jobs finish at once, the fewer writes).
    pub(super) fn on_verified(&mut self, dones: Vec<Done<Origin>>) {
        /// Whose a receipt in the batch is.
        enum Whose {
            Gossip(gossipsub::MessageId),
            /// A catch-up answer (its index in `answers`).
            CatchUp(usize),
        }
        let mut batch = Vec::new();
        let mut whose = Vec::new();
        // Catch-up answers: the peer, and how many of its receipts were taken.
        let mut answers: Vec<(PeerId, usize)> = Vec::new();
        for Done { peer, ctx, outcome } in dones {
            match (ctx, outcome) {
                // A gossiped receipt is a job of one.
                (Origin::Gossip { id, request: None }, Ok(Checked::Receipts(list))) => {
                    match list.into_iter().next() {
                        Some(Ok(r)) => {
                            self.vouch_used(&r.id());
                            let ack = Ack::Gossip {
                                id: id.clone(),
                                from: peer,
                            };
                            batch.push((r, ack));
                            whose.push((peer, Whose::Gossip(id)));
                        }
                        Some(Err(e)) => self.judge(&id, peer, Err(Rejected::from(e))),
                        None => self.judge(
                            &id,
                            peer,
                            Err(Rejected::new(RejectReason::Undecodable, "no receipt")),
                        ),
                    }
                }
                (Origin::Gossip { id, request }, outcome) => {
                    let verdict = outcome
                        .map_err(Rejected::from)
                        .and_then(|c| self.take(c, peer, &id));
                    match verdict {
                        Ok(true) => self.judge(&id, peer, Ok(())),
                        // A receipt: forwarded once it is on disk (see `books`).
                        Ok(false) => {}
                        Err(r) => self.judge(&id, peer, Err(r)),
                    }
                    if let Some(r) = request {
                        // After the request is taken, so what waited for it finds it.
                        self.request_checked(&r);
                    }
                }
                (Origin::CatchUp, outcome) => {
                    let at = answers.len();
                    answers.push((peer, 0));
                    for r in receipts(outcome) {
                        match r {
                            Ok(r) => {
                                self.vouch_used(&r.id());
                                batch.push((r, Ack::Quiet));
                                whose.push((peer, Whose::CatchUp(at)));
                            }
                            Err(r) if !r.reason.penalise() => {}
                            Err(r) => self.on_rejected(peer, &r),
                        }
                    }
                }
                (Origin::Record(record), outcome) => {
                    for r in receipts(outcome) {
                        match r {
                            Ok(r) => self.take_record(peer, record.clone(), r),
                            Err(r) => self.on_rejected(peer, &r),
                        }
                    }
                }
            }
        }
        let taken = self.take_receipts(batch);
        for ((peer, from), answer) in whose.into_iter().zip(taken) {
            match from {
                // Taken: forwarded once it is on disk (see `books`).
                Whose::Gossip(id) => {
                    if let Err(r) = answer {
                        self.judge(&id, peer, Err(r));
                    }
                }
                Whose::CatchUp(at) => match answer {
                    Ok(()) => answers[at].1 += 1,
                    Err(r) if !r.reason.penalise() => {}
                    Err(r) => self.on_rejected(peer, &r),
                },
            }
        }
        for (peer, got) in answers {
            self.catch_up_verified(peer, got);
        }
    }

    /// Take in a verified gossip message. `Ok(true)`: forward it now; `Ok(false)`: it is
    /// forwarded later (a receipt, once on disk).
    fn take(
        &mut self,
        checked: Checked,
        peer: PeerId,
        id: &gossipsub::MessageId,
    ) -> Result<bool, Rejected> {
        let now = self.clock.now_ms();
        match checked {
            Checked::Request(req) => {
                let req = self.validator.admit_request(req, now)?;
                // Its receipt will carry it: verified once.
                req.remember_verified(&self.signatures);
                self.stats().accept("work-request");
                self.count_request(&req, false, now);
                self.on_request(req, now);
            }
            Checked::Result(res) => {
                // It may have been answered or paid while its signature was checked.
                self.refuse_if_answered(res.bytes())?;
                self.refuse_paid_work(res.payload())?;
                res.remember_verified(&self.signatures);
                self.stats().accept("work-result");
                self.count_result(&res);
                self.on_result(res, now);
            }
            Checked::Cancel(c) => {
                self.stats().accept("work-cancel");
                self.on_done(c.payload().request, now);
            }
            Checked::Status(st) => {
                self.on_status(st, now)?;
                self.stats().accept("worker-status");
            }
            Checked::Registry(e) => {
                self.on_registry(e)?;
                self.stats().accept("registry");
            }
            Checked::Checkpoint(c) => self.take_checkpoint(c, peer)?,
            // A gossiped receipt is a job of one.
            Checked::Receipts(list) => {
                let Some(r) = list.into_iter().next() else {
                    return Err(Rejected::new(RejectReason::Undecodable, "no receipt"));
                };
                let ack = Ack::Gossip {
                    id: id.clone(),
                    from: peer,
                };
                self.take_network_receipt(r?, ack)?;
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// A verified receipt from the network, screened by [`Self::screen_receipt`].
    pub(super) fn take_network_receipt(
        &mut self,
        r: Signed<Receipt>,
        ack: Ack,
    ) -> Result<(), Rejected> {
        self.vouch_used(&r.id());
        self.take_receipt(r, ack)
    }

    /// Tell gossipsub whether to forward message `id` from `peer`; a refusal costs the peer
    /// (see `on_rejected`).
    pub(super) fn judge(
        &mut self,
        id: &gossipsub::MessageId,
        peer: PeerId,
        verdict: Result<(), Rejected>,
    ) {
        let acceptance = match &verdict {
            Ok(()) => gossipsub::MessageAcceptance::Accept,
            Err(r) if r.reason.penalise() => gossipsub::MessageAcceptance::Reject,
            Err(_) => gossipsub::MessageAcceptance::Ignore,
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(id, &peer, acceptance);
        if let Err(r) = verdict {
            self.on_rejected(peer, &r);
        }
    }

    /// Screen a catch-up answer's receipts and send them to the pool in jobs of
    /// [`RECEIPTS_PER_JOB`]; the catch-up goes on when the last job is back (at once when
    /// there is none).
    pub(super) fn verify_fetched(&mut self, peer: PeerId, list: &[Bytes]) {
        let mut screened = Vec::new();
        for b in list {
            match self.screen_receipt(&b.0, true) {
                Ok(u) => screened.push(u),
                Err(r) if !r.reason.penalise() => {}
                Err(r) => self.on_rejected(peer, &r),
            }
        }
        let mut jobs = Vec::new();
        while !screened.is_empty() {
            let rest = screened.split_off(screened.len().min(RECEIPTS_PER_JOB));
            jobs.push(std::mem::replace(&mut screened, rest));
        }
        self.catch_up_verifying(peer, jobs.len());
        for chunk in jobs {
            self.verify(peer, Job::Receipts(chunk), Origin::CatchUp);
        }
    }
}

/// The receipts of a job's outcome, each verified or refused (a job that failed as a whole
/// refuses nothing in particular).
fn receipts(
    outcome: Result<Checked, dpow_protocol::ProtocolError>,
) -> Vec<Result<Signed<Receipt>, Rejected>> {
    match outcome {
        Ok(Checked::Receipts(list)) => list
            .into_iter()
            .map(|r| r.map_err(Rejected::from))
            .collect(),
        Ok(_) => Vec::new(),
        Err(e) => vec![Err(Rejected::from(e))],
    }
}
