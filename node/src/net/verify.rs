//! Signature checks off the event loop, fairly across peers.
//!
//! The event loop screens every message first ([`dpow_protocol::Unverified`],
//! `Validator::screen_*`: size, decoding, network, registry, clock, duplicates, profile, work
//! value) and hands only what passes to this pool. Jobs wait in one queue per peer; the pool
//! takes the peers in turn, one job each, and keeps at most [`MAX_IN_FLIGHT`] on its threads,
//! so a peer that floods the node with well-formed, wrongly signed messages delays its own
//! queue and nobody else's. Queues are bounded per peer and in total; past them a job is
//! refused (the caller drops the message, unforwarded and unblamed).
//!
//! The threads are one small pool for the whole process (a test runs many nodes in one);
//! each node's queues, turn order and in-flight count are its own.

use std::collections::{HashMap, VecDeque};
use std::sync::OnceLock;

use dpow_protocol::{
    Checkpoint, ProtocolError, Receipt, RegistryEntry, SignatureCache, Signed, Unverified,
    WorkCancel, WorkRequest, WorkResult, WorkerStatus,
};
use libp2p::PeerId;
use tokio::sync::mpsc;

/// Jobs one peer may have waiting.
pub(crate) const MAX_QUEUED_PER_PEER: usize = 256;
/// Jobs waiting in all, every peer together.
pub(crate) const MAX_QUEUED: usize = 4_096;
/// Jobs on the pool's threads at once, per node.
pub(crate) const MAX_IN_FLIGHT: usize = 16;
/// Receipts per job when a batch (catch-up) is split: a peer's 512-receipt answer takes its
/// turns like anyone's messages.
pub(crate) const RECEIPTS_PER_JOB: usize = 32;

/// A screened message, waiting for its signatures.
#[derive(Debug)]
pub(crate) enum Job {
    Request(Unverified<WorkRequest>),
    Result(Unverified<WorkResult>),
    Cancel(Unverified<WorkCancel>),
    Status(Unverified<WorkerStatus>),
    Registry(Unverified<RegistryEntry>),
    Checkpoint(Unverified<Checkpoint>),
    Receipts(Vec<Unverified<Receipt>>),
}

/// A job's messages, verified.
#[derive(Debug)]
pub(crate) enum Checked {
    Request(Signed<WorkRequest>),
    Result(Signed<WorkResult>),
    Cancel(Signed<WorkCancel>),
    Status(Signed<WorkerStatus>),
    Registry(Signed<RegistryEntry>),
    Checkpoint(Signed<Checkpoint>),
    /// Each receipt on its own: one bad receipt does not sink the others.
    Receipts(Vec<Result<Signed<Receipt>, ProtocolError>>),
}

impl Job {
    /// The ed25519 checks the job would run now (signatures `seen` remembers are free).
    pub(crate) fn signature_checks(&self, seen: &SignatureCache) -> usize {
        match self {
            Job::Request(u) => u.signature_checks(seen),
            Job::Result(u) => u.signature_checks(seen),
            Job::Cancel(u) => u.signature_checks(seen),
            Job::Status(u) => u.signature_checks(seen),
            Job::Registry(u) => u.signature_checks(seen),
            Job::Checkpoint(u) => u.signature_checks(seen),
            Job::Receipts(v) => v.iter().map(|u| u.signature_checks(seen)).sum(),
        }
    }

    /// Check the job's signatures, but those `seen` remembers (on whatever thread calls it).
    pub(crate) fn run(self, seen: &SignatureCache) -> Result<Checked, ProtocolError> {
        Ok(match self {
            Job::Request(u) => Checked::Request(u.verify_with(seen)?),
            Job::Result(u) => Checked::Result(u.verify_with(seen)?),
            Job::Cancel(u) => Checked::Cancel(u.verify_with(seen)?),
            Job::Status(u) => Checked::Status(u.verify_with(seen)?),
            Job::Registry(u) => Checked::Registry(u.verify_with(seen)?),
            Job::Checkpoint(u) => Checked::Checkpoint(u.verify_with(seen)?),
            Job::Receipts(v) => {
                Checked::Receipts(v.into_iter().map(|u| u.verify_with(seen)).collect())
            }
        })
    }
}

/// A finished job: what the caller attached to it, and the outcome.
#[derive(Debug)]
pub(crate) struct Done<C> {
    pub(crate) peer: PeerId,
    pub(crate) ctx: C,
    pub(crate) outcome: Result<Checked, ProtocolError>,
}

/// Why a job was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The peer has [`MAX_QUEUED_PER_PEER`] jobs waiting.
    PeerFull,
    /// [`MAX_QUEUED`] jobs wait in all.
    Full,
}

/// Counters for statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PoolStats {
    /// Jobs handed to the threads.
    pub(crate) jobs: u64,
    /// Signature checks those jobs needed when handed over.
    pub(crate) signature_checks: u64,
    /// Jobs refused because a queue was full.
    pub(crate) refused: u64,
}

/// One node's side of the pool: per-peer queues, the turn order, the finished jobs.
pub(crate) struct Verifier<C> {
    queues: HashMap<PeerId, VecDeque<(Job, C)>>,
    /// Peers with a job waiting, in the order they get their next turn.
    turn: VecDeque<PeerId>,
    queued: usize,
    in_flight: usize,
    done_tx: mpsc::Sender<Done<C>>,
    done_rx: mpsc::Receiver<Done<C>>,
    stats: PoolStats,
    /// The node's remembered signatures, read by its jobs.
    seen: SignatureCache,
}

fn threads() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let n = std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1)
            .clamp(1, 4);
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("dpow-verify-{i}"))
            .build()
            // Building a pool fails only when the OS refuses threads; the global pool is
            // then the fallback (its threads may also be busy solving: slower, still right).
            .unwrap_or_else(|_| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(1)
                    .build()
                    .unwrap_or_else(|e| panic!("no thread for signature checks: {e}"))
            })
    })
}

impl<C: Send + 'static> Verifier<C> {
    pub(crate) fn new(seen: SignatureCache) -> Self {
        // Never more than MAX_IN_FLIGHT jobs are out, each sends one `Done`: never full.
        let (done_tx, done_rx) = mpsc::channel(MAX_IN_FLIGHT);
        Verifier {
            queues: HashMap::new(),
            turn: VecDeque::new(),
            queued: 0,
            in_flight: 0,
            done_tx,
            done_rx,
            stats: PoolStats::default(),
            seen,
        }
    }

    /// Queue `job` from `peer`, with `ctx` handed back when it is done.
    /// Refused, `ctx` comes back with the reason (the job is dropped).
    pub(crate) fn submit(&mut self, peer: PeerId, job: Job, ctx: C) -> Result<(), (Refused, C)> {
        let waiting = self.queues.get(&peer).map_or(0, VecDeque::len);
        if waiting >= MAX_QUEUED_PER_PEER {
            self.stats.refused += 1;
            return Err((Refused::PeerFull, ctx));
        }
        if self.queued >= MAX_QUEUED {
            self.stats.refused += 1;
            return Err((Refused::Full, ctx));
        }
        let q = self.queues.entry(peer).or_default();
        if q.is_empty() {
            self.turn.push_back(peer);
        }
        q.push_back((job, ctx));
        self.queued += 1;
        self.dispatch();
        Ok(())
    }

    /// Hand waiting jobs to the threads, one per peer in turn, up to [`MAX_IN_FLIGHT`].
    fn dispatch(&mut self) {
        while self.in_flight < MAX_IN_FLIGHT {
            let Some(peer) = self.turn.pop_front() else {
                return;
            };
            let Some(q) = self.queues.get_mut(&peer) else {
                continue;
            };
            let Some((job, ctx)) = q.pop_front() else {
                self.queues.remove(&peer);
                continue;
            };
            if q.is_empty() {
                self.queues.remove(&peer);
            } else {
                self.turn.push_back(peer);
            }
            self.queued -= 1;
            self.in_flight += 1;
            self.stats.jobs += 1;
            self.stats.signature_checks += job.signature_checks(&self.seen) as u64;
            let tx = self.done_tx.clone();
            let seen = self.seen.clone();
            threads().spawn(move || {
                let outcome = job.run(&seen);
                if tx.try_send(Done { peer, ctx, outcome }).is_err() {
                    // Only when the node is gone (its receiver dropped).
                    tracing::debug!("signature check finished after its node stopped");
                }
            });
        }
    }

    /// The next finished job (for the event loop's `select!`); frees its slot.
    pub(crate) async fn next_done(&mut self) -> Option<Done<C>> {
        let done = self.done_rx.recv().await?;
        self.in_flight = self.in_flight.saturating_sub(1);
        self.dispatch();
        Some(done)
    }

    /// A job already finished, if any (to take several in one turn); frees its slot.
    pub(crate) fn try_next_done(&mut self) -> Option<Done<C>> {
        let done = self.done_rx.try_recv().ok()?;
        self.in_flight = self.in_flight.saturating_sub(1);
        self.dispatch();
        Some(done)
    }

    /// Jobs waiting (not yet on a thread).
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.queued
    }

    /// Jobs waiting or being checked: none means every job handed in was judged.
    pub(crate) fn pending(&self) -> usize {
        self.queued + self.in_flight
    }

    /// Counters since start.
    pub(crate) fn stats(&self) -> PoolStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use dpow_testkit::builders::{NET, TestNet};

    use super::*;

    fn request_job(net: &TestNet, nonce: u64, broken: bool) -> Job {
        let mut bytes = net.request(nonce).bytes().to_vec();
        if broken {
            let n = bytes.len();
            bytes[n - 10] ^= 1;
        }
        Job::Request(Unverified::decode(&bytes, &NET).expect("decodes"))
    }

    #[tokio::test]
    async fn peers_take_turns_and_queues_are_bounded() {
        let net = TestNet::fresh();
        let mut v: Verifier<(PeerId, u64)> = Verifier::new(SignatureCache::new());
        let (flooder, honest) = (PeerId::random(), PeerId::random());
        // The flooder fills its queue first (in flight and waiting), then is refused.
        let mut taken = 0u64;
        for i in 0..(MAX_IN_FLIGHT + MAX_QUEUED_PER_PEER + 10) as u64 {
            if v.submit(flooder, request_job(&net, i, true), (flooder, i))
                .is_ok()
            {
                taken += 1;
            }
        }
        assert_eq!(taken, (MAX_IN_FLIGHT + MAX_QUEUED_PER_PEER) as u64);
        assert_eq!(v.queued(), MAX_QUEUED_PER_PEER);
        assert_eq!(v.stats().refused, 10);
        // An honest peer's job, submitted last, is among the next ones dispatched.
        v.submit(honest, request_job(&net, 10_000, false), (honest, 0))
            .expect("the honest peer has room");
        let mut before_honest = 0;
        loop {
            let done = v.next_done().await.expect("a job finishes");
            if done.peer == honest {
                assert!(matches!(done.outcome, Ok(Checked::Request(_))));
                break;
            }
            assert!(matches!(
                done.outcome,
                Err(ProtocolError::BadSignature { .. })
            ));
            before_honest += 1;
        }
        // Roughly the jobs already in flight (threads finish in any order), far fewer than the
        // flooder's queue: its next turn came after the honest peer's.
        assert!(
            before_honest <= 2 * MAX_IN_FLIGHT,
            "{before_honest} flood jobs went before the honest one"
        );
        // Everything else still finishes.
        for _ in before_honest..taken as usize {
            v.next_done().await.expect("a job finishes");
        }
        assert_eq!(v.queued(), 0);
        assert_eq!(v.stats().jobs, taken + 1);
    }

    #[tokio::test]
    async fn the_total_queue_is_bounded() {
        let net = TestNet::fresh();
        let mut v: Verifier<()> = Verifier::new(SignatureCache::new());
        let per_peer = MAX_QUEUED / MAX_QUEUED_PER_PEER + 2;
        let mut refused = Vec::new();
        for p in 0..per_peer {
            let peer = PeerId::random();
            for i in 0..MAX_QUEUED_PER_PEER as u64 {
                let job = request_job(&net, p as u64 * 1_000 + i, true);
                if let Err((r, ())) = v.submit(peer, job, ()) {
                    refused.push(r);
                }
            }
        }
        assert!(v.queued() <= MAX_QUEUED);
        assert!(refused.contains(&Refused::Full));
        assert!(!refused.contains(&Refused::PeerFull));
    }
}
