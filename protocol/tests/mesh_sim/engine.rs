//! The engine: peers on a seeded random mesh, one event queue, integer results.
//!
//! Each worker and each service's node runs the node's own request path, a
//! [`dpow_protocol::peer::Peer`] (requests heard and answered, statuses, work paid, the
//! worker's or the service's flow), fed as the event loop feeds it; the other peers only
//! relay. Every peer runs the node's ledger replication, a
//! [`dpow_protocol::replication::Replication`], over the simulator's model of its books (the
//! receipts it holds, in one-minute epochs). Between them is gossip as gossipsub does it in the
//! steady state: a peer that takes a message for the first time forwards it to every mesh
//! neighbour but the one it came from; copies after the first are counted and dropped. A
//! result goes straight to the request's service node, which signs a receipt and publishes it
//! with a cancel. Catch-up runs as in the node: every `sync_every_ms`, at its own phase, a
//! peer picks a random reachable neighbour and its replication machine asks it for digests,
//! ids and receipts, one request at a time over the link (a request across the partition or
//! to a crashed peer fails after [`SYNC_TIMEOUT_MS`]); fetched receipts are verified in
//! jobs of [`RECEIPTS_PER_JOB`] at [`VERIFY_US`] each, sequentially, while the next page is
//! fetched. The peer asked catches up with the asker in return (once a period), as the node
//! does.
//!
//! Not modelled: gossipsub's lazy IHAVE/IWANT repair, disk costs, the registry, finality
//! (no epoch closes within a run).

use dpow_testkit::rng::Rng;
use std::collections::{HashMap, VecDeque};

use dpow_keys::{PublicKey, SecretKey};
use dpow_protocol::flow::{FlowConfig, ServiceAction, ServiceConfig, WorkerAction, WorkerFlow};
use dpow_protocol::ledger::digest_of_ids;
use dpow_protocol::peer::{Limits, Outputs, Peer};
use dpow_protocol::replication::{self, Ask, Books, Out, Replication, Rule};
use dpow_protocol::{
    Difficulty, MessageId, NetworkId, Priority, RequestId, Root, Signed, Work, WorkRequest,
    WorkResult, WorkerStatus,
};

const NET: NetworkId = NetworkId([0x53; 32]);
/// How long each request is valid.
const LIFETIME_MS: u64 = 60_000;
/// Work spent checking a message before it is forwarded (a signature, a lookup).
const HOP_MS: u64 = 1;
/// The books' epoch length in the simulation.
const EPOCH_MS: u64 = 60_000;
/// A catch-up request not answered (the peer unreachable) fails after this long, as
/// request-response's timeout does.
const SYNC_TIMEOUT_MS: u64 = 10_000;
/// Receipts per verification job, as the node splits a fetched page.
const RECEIPTS_PER_JOB: usize = 32;
/// One receipt's checks (three signatures on one core), microseconds.
const VERIFY_US: u64 = 150;
/// The simulation stops here whatever happens (simulated ms).
const HORIZON_MS: u64 = 3_600_000;

/// One run's settings.
#[derive(Clone, Debug)]
pub(crate) struct Scenario {
    pub(crate) seed: u64,
    pub(crate) nodes: usize,
    /// Workers among the nodes (two more are the services' nodes; the rest only relay).
    pub(crate) workers: usize,
    pub(crate) requests: usize,
    /// Requests arrive uniformly over this long.
    pub(crate) load_ms: u64,
    /// Mesh neighbours each peer has at least, and at most.
    pub(crate) degree: (usize, usize),
    /// One-way latency of a link, uniform in this range (ms).
    pub(crate) latency_ms: (u64, u64),
    /// Chance a delivery over a link is lost.
    pub(crate) loss: f64,
    /// Share of workers that crash at a random time during the load.
    pub(crate) crash: f64,
    /// Share of workers that join at a random time during the load.
    pub(crate) join: f64,
    /// The network splits in two halves over this span (simulated ms).
    pub(crate) partition: Option<(u64, u64)>,
    pub(crate) status_every_ms: u64,
    /// Closed loop: the services keep this many requests outstanding, submitting the next as
    /// one ends, instead of arriving over `load_ms`.
    pub(crate) in_flight: Option<usize>,
    /// Every request at this threshold (else four in five receive-class, one in five send).
    pub(crate) difficulty: Option<Difficulty>,
    /// Every worker at this rate (else a mix of browsers, CPUs and GPUs).
    pub(crate) rate: Option<u64>,
    /// What-if: the service's node also tells every worker solving a request, straight, that
    /// it is answered (an oracle: the node does not know who is solving).
    pub(crate) direct_stop: bool,
    pub(crate) sync_every_ms: u64,
    pub(crate) config: FlowConfig,
}

impl Scenario {
    /// `nodes` peers, a tenth of them workers, 300 requests over a minute; 1% of deliveries
    /// lost, 3% of workers crash and 3% join during the minute.
    pub(crate) fn standard(seed: u64, nodes: usize) -> Self {
        Scenario {
            seed,
            nodes,
            workers: (nodes / 10).max(8),
            requests: 300,
            load_ms: 60_000,
            degree: (6, 12),
            latency_ms: (20, 150),
            loss: 0.01,
            crash: 0.03,
            join: 0.03,
            partition: None,
            status_every_ms: 5_000,
            sync_every_ms: 60_000,
            in_flight: None,
            difficulty: None,
            rate: None,
            direct_stop: false,
            config: FlowConfig::default(),
        }
    }

    /// The swarm benchmark's shape with every worker on a core of its own: `workers` of
    /// `rate` hashes a second, `in_flight` requests of `difficulty` kept outstanding until
    /// `requests` are answered; links of `latency_ms`, no loss, no churn.
    pub(crate) fn closed_loop(
        seed: u64,
        workers: usize,
        rate: u64,
        difficulty: Difficulty,
        in_flight: usize,
        requests: usize,
        latency_ms: (u64, u64),
    ) -> Self {
        Scenario {
            nodes: 3 * workers + 2,
            workers,
            requests,
            degree: (4, 8),
            latency_ms,
            loss: 0.0,
            crash: 0.0,
            join: 0.0,
            status_every_ms: 500,
            in_flight: Some(in_flight),
            difficulty: Some(difficulty),
            rate: Some(rate),
            ..Scenario::standard(seed, 3 * workers + 2)
        }
    }

    /// [`Self::standard`] with the network split in two halves from 20 s to 35 s; the
    /// services' nodes are both in one half.
    pub(crate) fn partitioned(seed: u64, nodes: usize) -> Self {
        Scenario {
            partition: Some((20_000, 35_000)),
            ..Scenario::standard(seed, nodes)
        }
    }
}

/// What a run measured: integers only, so two runs compare exactly.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Report {
    pub(crate) requests: usize,
    pub(crate) completed: usize,
    pub(crate) expired: usize,
    /// Request latency, submit to the service's first valid result (ms).
    pub latency_p50_ms: u64,
    pub latency_p99_ms: u64,
    /// Hops to each peer's first copy of a message: sum, count, most.
    pub(crate) hops_sum: u64,
    pub(crate) hops_count: u64,
    pub(crate) hops_max: u64,
    /// Copies received after the first.
    pub(crate) duplicates: u64,
    pub(crate) lost: u64,
    /// Hashes spent, and those spent on a request after its first solution.
    pub(crate) hashes: u128,
    pub(crate) hashes_wasted: u128,
    /// From the partition healing until every live peer holds every receipt issued (ms).
    pub(crate) convergence_ms: Option<u64>,
    pub(crate) workers_crashed: usize,
    pub(crate) workers_joined: usize,
    /// What-if direct stops sent.
    pub(crate) direct_stops: u64,
    /// Catch-up requests sent, failed, and receipts taken by catch-up.
    pub(crate) sync_requests: u64,
    pub(crate) sync_failures: u64,
    pub(crate) sync_fetched: u64,
    /// When the last request was answered (ms).
    pub(crate) last_completed_ms: u64,
    pub(crate) events: u64,
    pub(crate) trace: u64,
}

impl Report {
    pub(crate) fn mean_hops(&self) -> f64 {
        self.hops_sum as f64 / self.hops_count.max(1) as f64
    }

    /// Copies after the first, per peer and message.
    pub(crate) fn duplicates_per_message(&self) -> f64 {
        self.duplicates as f64 / self.hops_count.max(1) as f64
    }

    pub(crate) fn wasted(&self) -> f64 {
        self.hashes_wasted as f64 / self.hashes.max(1) as f64
    }
}

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A set of small integers.
#[derive(Clone, Default)]
struct Bits(Vec<u64>);

impl Bits {
    fn insert(&mut self, i: usize) -> bool {
        let (w, b) = (i / 64, 1u64 << (i % 64));
        if self.0.len() <= w {
            self.0.resize(w + 1, 0);
        }
        let new = self.0[w] & b == 0;
        self.0[w] |= b;
        new
    }

    fn contains(&self, i: usize) -> bool {
        self.0
            .get(i / 64)
            .is_some_and(|w| w & (1u64 << (i % 64)) != 0)
    }

    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(w, bits)| {
            (0..64)
                .filter(move |b| bits & (1u64 << b) != 0)
                .map(move |b| w * 64 + b)
        })
    }

    fn covers(&self, other: &Bits) -> bool {
        other
            .0
            .iter()
            .enumerate()
            .all(|(i, b)| self.0.get(i).copied().unwrap_or(0) & b == *b)
    }
}

#[derive(Clone, Copy, Debug)]
enum Body {
    /// A request (by index) published by its service's node.
    Request(u32),
    /// A worker's status (by index into `statuses`).
    Status(u32),
    /// The receipt for a request.
    Receipt(u32),
    /// The service's cancel for a request.
    Cancel(u32),
}

#[derive(Debug)]
enum Event {
    Deliver {
        to: u32,
        from: u32,
        msg: u32,
        hops: u16,
    },
    /// A result reaches the request's service node.
    Result {
        req: u32,
        worker: u32,
        work: u64,
    },
    /// The what-if direct stop reaches a worker.
    Stop {
        to: u32,
        req: u32,
    },
    Solved {
        node: u32,
        token: u64,
    },
    Tick {
        node: u32,
    },
    Status {
        node: u32,
    },
    Submit {
        req: u32,
    },
    Crash {
        node: u32,
    },
    Join {
        node: u32,
    },
    Sync {
        node: u32,
    },
    /// A catch-up request or its answer arrives (by slot in `Sim::sync`).
    SyncArrives {
        slot: u32,
    },
    /// A catch-up request of `node` to `peer` timed out.
    SyncFails {
        node: u32,
        peer: u32,
    },
    /// A verification job of receipts fetched by `node` from `peer` is done.
    SyncVerified {
        node: u32,
        peer: u32,
        slot: u32,
    },
}

/// The event queue: one bucket per simulated millisecond, first in first out within it, so
/// events run by (time, order pushed) as a heap of (time, sequence) would run them.
#[derive(Default)]
struct Queue {
    base: u64,
    buckets: VecDeque<VecDeque<Event>>,
    spare: Vec<VecDeque<Event>>,
}

impl Queue {
    fn push(&mut self, at: u64, e: Event) {
        let i = usize::try_from(at.saturating_sub(self.base)).expect("a span in memory");
        while self.buckets.len() <= i {
            let b = self.spare.pop().unwrap_or_default();
            self.buckets.push_back(b);
        }
        self.buckets[i].push_back(e);
    }

    fn pop(&mut self) -> Option<(u64, Event)> {
        loop {
            let front = self.buckets.front_mut()?;
            if let Some(e) = front.pop_front() {
                return Some((self.base, e));
            }
            if let Some(b) = self.buckets.pop_front() {
                self.spare.push(b);
            }
            self.base += 1;
        }
    }
}

struct Solving {
    req: u32,
    token: u64,
    since: u64,
}

struct Worker {
    key: SecretKey,
    public: PublicKey,
    rate: u64,
    solving: Option<Solving>,
    token: u64,
}

struct Node {
    alive: bool,
    /// Which half it is in when the network splits.
    side: bool,
    links: Vec<(u32, u16)>,
    /// The request path, on workers and services' nodes.
    core: Option<Peer>,
    worker: Option<Worker>,
    timer: Option<u64>,
    /// Receipts held (by request index).
    receipts: Bits,
    /// The ledger's catch-ups.
    repl: Replication<u32>,
    /// Verification jobs queued, until this time (ms).
    verify_busy_until: u64,
}

/// What travels in a catch-up, or waits to be verified.
enum SyncMsg {
    Ask { from: u32, to: u32, ask: Ask },
    Answer { from: u32, to: u32, answer: Answer },
    Job(Vec<u32>),
}

enum Answer {
    Digests(Vec<(u64, [u8; 32])>),
    Ids(Vec<MessageId>, bool),
    /// Receipts by request index.
    Receipts(Vec<u32>),
}

/// A peer's books as its replication machine sees them.
struct View<'a> {
    held: &'a Bits,
    receipts: &'a Receipts,
}

/// Every receipt issued: its id and epoch by request index, and the index by id.
#[derive(Default)]
struct Receipts {
    id: Vec<Option<(MessageId, u64)>>,
    index: HashMap<MessageId, u32>,
}

impl Receipts {
    fn issue(&mut self, seed: u64, r: u32, now: u64) {
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&mix64(seed ^ u64::from(r)).to_be_bytes());
        id[8..12].copy_from_slice(&r.to_be_bytes());
        let id = MessageId(id);
        let i = r as usize;
        if self.id.len() <= i {
            self.id.resize(i + 1, None);
        }
        self.id[i] = Some((id, now / EPOCH_MS));
        self.index.insert(id, r);
    }

    /// The ids `held` has in each epoch, ascending.
    fn epochs(&self, held: &Bits) -> std::collections::BTreeMap<u64, Vec<MessageId>> {
        let mut by: std::collections::BTreeMap<u64, Vec<MessageId>> = Default::default();
        for r in held.iter() {
            if let Some(Some((id, epoch))) = self.id.get(r) {
                by.entry(*epoch).or_default().push(*id);
            }
        }
        for ids in by.values_mut() {
            ids.sort_unstable();
        }
        by
    }

    fn digests(&self, held: &Bits) -> Vec<(u64, [u8; 32])> {
        self.epochs(held)
            .into_iter()
            .map(|(e, ids)| (e, digest_of_ids(EPOCH_MS, e, &ids)))
            .collect()
    }
}

impl Books for View<'_> {
    fn epoch_ms(&self) -> u64 {
        EPOCH_MS
    }

    fn digests(&mut self) -> Vec<(u64, [u8; 32])> {
        self.receipts.digests(self.held)
    }

    fn holds(&self, id: &MessageId) -> bool {
        self.receipts
            .index
            .get(id)
            .is_some_and(|r| self.held.contains(*r as usize))
    }

    fn rule(&self, _epoch: u64) -> Rule {
        Rule::Take
    }

    fn vouches(&self, _epoch: u64, _digest: &[u8; 32]) -> bool {
        false
    }

    fn vouch(&mut self, _ids: &[MessageId]) -> bool {
        true
    }
}

struct Req {
    signed: Signed<WorkRequest>,
    /// Its service's node (0 or 1).
    svc: u32,
    first_solution: Option<u64>,
    /// The result its receipt pays.
    paid: Option<WorkResult>,
    latency: Option<u64>,
}

struct Sim {
    sc: Scenario,
    rng: Rng,
    now: u64,
    queue: Queue,
    peers: Vec<Node>,
    reqs: Vec<Req>,
    index: HashMap<RequestId, u32>,
    msgs: Vec<Body>,
    /// Which peers hold each message.
    seen: Vec<Bits>,
    statuses: Vec<Signed<WorkerStatus>>,
    /// Receipts issued before the partition healed: what convergence waits for.
    before_heal: Bits,
    /// Every receipt's id and epoch.
    receipt_ids: Receipts,
    /// Catch-up messages in flight and jobs being verified, by slot; free slots.
    sync: Vec<Option<SyncMsg>>,
    sync_free: Vec<u32>,
    /// Closed loop: the next request to submit.
    next_request: usize,
    service_keys: Vec<SecretKey>,
    healed: bool,
    converged: bool,
    report: Report,
}

fn key(seed: u64, n: u64) -> SecretKey {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&mix64(seed ^ n.wrapping_mul(0x9e37_79b9)).to_le_bytes());
    s[8..16].copy_from_slice(&n.to_le_bytes());
    SecretKey::from_seed(s)
}

/// Expected hashes to meet `d`.
fn expected(d: Difficulty) -> f64 {
    d.expected_hashes()
}

pub(crate) fn simulate(sc: Scenario) -> Report {
    Sim::new(sc).run()
}

impl Sim {
    fn new(sc: Scenario) -> Self {
        let mut rng = Rng::new(sc.seed);
        let n = sc.nodes;
        assert!(n >= sc.workers + 2 && n > sc.degree.1, "too few nodes");
        let mut peers: Vec<Node> = (0..n)
            .map(|_| Node {
                alive: true,
                side: rng.chance(0.5),
                links: Vec::new(),
                core: None,
                worker: None,
                timer: None,
                receipts: Bits::default(),
                repl: Replication::new(sc.sync_every_ms),
                verify_busy_until: 0,
            })
            .collect();
        // The mesh: every peer gets at least `degree.0` neighbours, none more than `degree.1`.
        for i in 0..n {
            let mut tries = 0;
            while peers[i].links.len() < sc.degree.0 && tries < 1000 {
                tries += 1;
                let j = rng.below(n);
                if j == i
                    || peers[j].links.len() >= sc.degree.1
                    || peers[i].links.iter().any(|(k, _)| *k as usize == j)
                {
                    continue;
                }
                let lat = rng.range(sc.latency_ms.0, sc.latency_ms.1) as u16;
                peers[i].links.push((j as u32, lat));
                peers[j].links.push((i as u32, lat));
            }
        }
        // Services' nodes are 0 and 1; workers follow, of mixed speeds.
        for (w, p) in peers.iter_mut().skip(2).take(sc.workers).enumerate() {
            let k = key(sc.seed, w as u64 + 10);
            let public = k.public();
            let rate = match sc.rate {
                Some(r) => r,
                None => match rng.range(0, 99) {
                    // A browser tab.
                    0..=9 => rng.range(1_000_000, 3_000_000),
                    // A CPU.
                    10..=69 => rng.range(5_000_000, 20_000_000),
                    // A GPU.
                    _ => rng.range(500_000_000, 2_000_000_000),
                },
            };
            let flow = WorkerFlow::new(public, rate, sc.config.clone());
            p.core = Some(Peer::new(
                Some(flow),
                ServiceConfig::default(),
                Limits::default(),
            ));
            p.worker = Some(Worker {
                key: k,
                public,
                rate,
                solving: None,
                token: 0,
            });
        }
        for p in &mut peers[..2] {
            p.core = Some(Peer::new(None, ServiceConfig::default(), Limits::default()));
        }
        // Services' nodes stay on one side, so the other half is cut from every request.
        peers[0].side = false;
        peers[1].side = false;
        let service_keys: Vec<SecretKey> = (0..2).map(|s| key(sc.seed, s)).collect();
        let mut reqs = Vec::new();
        // Open loop: every request made now, each with its time of arrival.
        let open = if sc.in_flight.is_some() {
            0
        } else {
            sc.requests
        };
        for i in 0..open {
            let svc = (i % 2) as u32;
            let at = 1_000 + rng.range(0, sc.load_ms);
            // Four in five receive-class (2^23 hashes), one in five send-class (2^29).
            let difficulty = if rng.chance(0.2) {
                Difficulty::EPOCH2_SEND
            } else {
                Difficulty::EPOCH2_RECEIVE
            };
            let mut root = [0u8; 32];
            root[..8].copy_from_slice(&(i as u64).to_le_bytes());
            root[8..16].copy_from_slice(&sc.seed.to_le_bytes());
            let k = &service_keys[svc as usize];
            let signed = Signed::sign(
                WorkRequest {
                    service: k.public(),
                    root: Root(root),
                    difficulty,
                    kind: None,
                    account: None,
                    nonce: i as u64,
                    created_ms: at,
                    expires_ms: at + LIFETIME_MS,
                    priority: Priority::Normal,
                    node: k.public(),
                },
                k,
                &NET,
            )
            .expect("a request signs");
            reqs.push(Req {
                signed,
                svc,
                first_solution: None,
                paid: None,
                latency: None,
            });
        }
        let index = reqs
            .iter()
            .enumerate()
            .map(|(i, r)| (r.signed.id(), i as u32))
            .collect();
        let mut sim = Sim {
            report: Report {
                requests: sc.requests,
                trace: 0xcbf2_9ce4_8422_2325,
                ..Report::default()
            },
            sc,
            rng,
            now: 0,
            queue: Queue::default(),
            peers,
            reqs,
            index,
            msgs: Vec::new(),
            seen: Vec::new(),
            statuses: Vec::new(),
            before_heal: Bits::default(),
            next_request: 0,
            service_keys,
            healed: false,
            converged: false,
            receipt_ids: Receipts::default(),
            sync: Vec::new(),
            sync_free: Vec::new(),
        };
        for i in 0..sim.reqs.len() {
            let at = sim.reqs[i].signed.payload().created_ms;
            sim.push(at, Event::Submit { req: i as u32 });
        }
        if let Some(k) = sim.sc.in_flight {
            for _ in 0..k.min(sim.sc.requests) {
                sim.submit_next(1_000);
            }
        }
        let load = sim.sc.load_ms;
        for node in 0..n as u32 {
            // The node started one period before its phase: its first catch-up is at the
            // phase.
            let phase = sim.rng.range(0, sim.sc.sync_every_ms);
            let every = sim.sc.sync_every_ms;
            sim.peers[node as usize].repl.on_tick(phase, &[], 0);
            sim.push(phase + every, Event::Sync { node });
            if sim.peers[node as usize].worker.is_none() {
                continue;
            }
            // The first worker always joins late and the second always crashes, so every run
            // has both.
            let first = node == 2 && sim.sc.join > 0.0;
            if first || sim.rng.chance(sim.sc.join) {
                sim.peers[node as usize].alive = false;
                let at = sim.rng.range(1_000, load);
                sim.push(at, Event::Join { node });
            } else {
                let phase = sim.rng.range(0, sim.sc.status_every_ms);
                sim.push(phase, Event::Status { node });
                if (node == 3 && sim.sc.crash > 0.0) || sim.rng.chance(sim.sc.crash) {
                    let at = sim.rng.range(1_000, load);
                    sim.push(at, Event::Crash { node });
                }
            }
        }
        sim
    }

    fn mix(&mut self, x: u64) {
        self.report.trace ^= x;
        self.report.trace = self.report.trace.wrapping_mul(0x0100_0000_01b3);
    }

    fn push(&mut self, at: u64, event: Event) {
        self.queue.push(at, event);
    }

    fn run(mut self) -> Report {
        while let Some((at, event)) = self.queue.pop() {
            if at > HORIZON_MS || self.done() {
                break;
            }
            debug_assert!(at >= self.now, "time runs forward");
            self.now = at;
            self.report.events += 1;
            self.mix(at);
            self.handle(event);
        }
        self.finish()
    }

    /// Every request settled and, when there was a partition, the books converged.
    fn done(&self) -> bool {
        let settled = self.report.completed + self.report.expired == self.sc.requests;
        settled && (self.sc.partition.is_none() || self.converged)
    }

    fn cut(&self, a: u32, b: u32) -> bool {
        self.sc.partition.is_some_and(|(from, to)| {
            (from..to).contains(&self.now)
                && self.peers[a as usize].side != self.peers[b as usize].side
        })
    }

    /// One-way latency between two peers that are not neighbours (a direct connection).
    fn direct_ms(&self, a: u32, b: u32) -> u64 {
        let (lo, hi) = self.sc.latency_ms;
        let h = mix64(self.sc.seed ^ (u64::from(a.min(b)) << 32 | u64::from(a.max(b))));
        lo + h % (hi - lo + 1)
    }

    fn handle(&mut self, event: Event) {
        let now = self.now;
        if let Some((_, to)) = self.sc.partition
            && now >= to
            && !self.healed
        {
            self.healed = true;
            self.check_converged();
        }
        match event {
            Event::Deliver {
                to,
                from,
                msg,
                hops,
            } => self.deliver(to, from, msg, hops),
            Event::Result { req, worker, work } => self.on_result(req, worker, work),
            Event::Stop { to, req } => {
                let id = self.reqs[req as usize].signed.id();
                if let Some(core) = self.core(to) {
                    let worker = core.on_done(id, now);
                    self.outputs(
                        to,
                        Outputs {
                            worker,
                            service: Vec::new(),
                        },
                    );
                }
            }
            Event::Solved { node, token } => self.solved(node, token),
            Event::Tick { node } => {
                let p = &mut self.peers[node as usize];
                if !p.alive || p.timer != Some(now) {
                    return;
                }
                p.timer = None;
                let Some(core) = &mut p.core else { return };
                let out = core.on_tick(now);
                self.outputs(node, out);
            }
            Event::Status { node } => {
                if self.sc.in_flight.is_some() || now < self.sc.load_ms + LIFETIME_MS {
                    let next = now + self.sc.status_every_ms;
                    self.push(next, Event::Status { node });
                }
                let p = &mut self.peers[node as usize];
                let (Some(w), Some(core), true) = (&p.worker, &mut p.core, p.alive) else {
                    return;
                };
                let st = WorkerStatus {
                    worker: w.public,
                    hash_rate: w.rate,
                    queue: core.worker().map_or(0, WorkerFlow::queue_len) as u32,
                    payout: None,
                    created_ms: now,
                };
                let st = Signed::sign(st, &w.key, &NET).expect("a status signs");
                core.own_status(st.clone(), now);
                self.statuses.push(st);
                let i = self.statuses.len() as u32 - 1;
                self.publish(node, Body::Status(i));
            }
            Event::Submit { req } => {
                if req as usize == self.reqs.len() {
                    self.make_request(req);
                }
                let svc = self.reqs[req as usize].svc;
                let signed = self.reqs[req as usize].signed.clone();
                let core = self.peers[svc as usize].core.as_mut().expect("a service");
                let service = core
                    .submit(signed.clone(), now)
                    .expect("room for every request");
                let worker = core.on_request(&signed, now).unwrap_or_default();
                self.outputs(svc, Outputs { worker, service });
            }
            Event::Crash { node } => {
                let p = &mut self.peers[node as usize];
                if !p.alive {
                    return;
                }
                p.alive = false;
                self.report.workers_crashed += 1;
                self.stop_solving(node);
            }
            Event::Join { node } => {
                self.peers[node as usize].alive = true;
                self.report.workers_joined += 1;
                self.push(now, Event::Status { node });
                // As the node does once each new connection's hello is over.
                for b in self.reachable(node) {
                    self.peers[node as usize].repl.start(b, true);
                }
                self.sync_outputs(node);
            }
            Event::Sync { node } => {
                if self.converged {
                    return;
                }
                self.push(now + self.sc.sync_every_ms, Event::Sync { node });
                if !self.peers[node as usize].alive {
                    return;
                }
                // A random peer among those it is connected to.
                let reachable = self.reachable(node);
                let roll = self.rng.next_u64();
                self.peers[node as usize]
                    .repl
                    .on_tick(now, &reachable, roll);
                self.sync_outputs(node);
            }
            Event::SyncArrives { slot } => {
                let msg = self.sync[slot as usize]
                    .take()
                    .expect("a message in flight");
                self.sync_free.push(slot);
                match msg {
                    SyncMsg::Ask { from, to, ask } => self.answer_sync(from, to, ask),
                    SyncMsg::Answer { from, to, answer } => self.sync_answered(to, from, answer),
                    SyncMsg::Job(_) => unreachable!("jobs are verified, not delivered"),
                }
            }
            Event::SyncFails { node, peer } => {
                self.report.sync_failures += 1;
                if self.peers[node as usize].alive {
                    self.peers[node as usize].repl.failed(peer);
                    self.sync_outputs(node);
                }
            }
            Event::SyncVerified { node, peer, slot } => {
                let Some(SyncMsg::Job(list)) = self.sync[slot as usize].take() else {
                    unreachable!("a job");
                };
                self.sync_free.push(slot);
                let p = &mut self.peers[node as usize];
                if !p.alive {
                    return;
                }
                let mut got = 0;
                for r in list {
                    if p.receipts.insert(r as usize) {
                        got += 1;
                    }
                }
                self.report.sync_fetched += got as u64;
                p.repl.verified(peer, got);
                self.sync_outputs(node);
                self.check_converged();
            }
        }
    }

    fn sync_slot(&mut self, msg: SyncMsg) -> u32 {
        if let Some(slot) = self.sync_free.pop() {
            self.sync[slot as usize] = Some(msg);
            slot
        } else {
            self.sync.push(Some(msg));
            self.sync.len() as u32 - 1
        }
    }

    /// The live neighbours `node` can reach now (not across the partition).
    fn reachable(&self, node: u32) -> Vec<u32> {
        self.peers[node as usize]
            .links
            .iter()
            .map(|(b, _)| *b)
            .filter(|b| self.peers[*b as usize].alive && !self.cut(node, *b))
            .collect()
    }

    /// One-way latency between two peers: their link's, or a direct connection's.
    fn latency(&self, a: u32, b: u32) -> u64 {
        self.peers[a as usize]
            .links
            .iter()
            .find(|(k, _)| *k == b)
            .map_or_else(|| self.direct_ms(a, b), |(_, lat)| u64::from(*lat))
    }

    /// Send what `node`'s replication machine asks; nothing else it says needs doing here.
    fn sync_outputs(&mut self, node: u32) {
        for out in self.peers[node as usize].repl.take_outputs() {
            match out {
                Out::Send { peer, ask } => {
                    self.report.sync_requests += 1;
                    let msg = SyncMsg::Ask {
                        from: node,
                        to: peer,
                        ask,
                    };
                    self.carry(node, peer, msg);
                }
                Out::Ended { .. } => {}
                other => panic!("an honest network: {other:?}"),
            }
        }
    }

    /// `to` answers `from`'s request from its books, if the request reaches it.
    fn answer_sync(&mut self, from: u32, to: u32, ask: Ask) {
        let sent_at = self.now - self.latency(from, to);
        if self.cut(from, to) || !self.peers[to as usize].alive {
            self.push(
                sent_at + SYNC_TIMEOUT_MS,
                Event::SyncFails {
                    node: from,
                    peer: to,
                },
            );
            return;
        }
        if ask == Ask::Digests {
            self.peers[to as usize].repl.on_asked(from, self.now);
            self.sync_outputs(to);
        }
        let held = &self.peers[to as usize].receipts;
        let answer = match ask {
            Ask::Digests => Answer::Digests(self.receipt_ids.digests(held)),
            Ask::Ids { epoch, after } => {
                let all = self
                    .receipt_ids
                    .epochs(held)
                    .remove(&epoch)
                    .unwrap_or_default();
                let (page, more) = replication::ids_page(&all, after);
                Answer::Ids(page.to_vec(), more)
            }
            Ask::Fetch(ids) => Answer::Receipts(
                ids.iter()
                    .filter_map(|id| self.receipt_ids.index.get(id).copied())
                    .filter(|r| held.contains(*r as usize))
                    .collect(),
            ),
        };
        let msg = SyncMsg::Answer {
            from: to,
            to: from,
            answer,
        };
        self.carry(to, from, msg);
    }

    /// A catch-up message from `from` to `to` over their link.
    fn carry(&mut self, from: u32, to: u32, msg: SyncMsg) {
        let at = self.now + self.latency(from, to);
        let slot = self.sync_slot(msg);
        self.push(at, Event::SyncArrives { slot });
    }

    /// `node` takes `peer`'s answer, if it reaches it.
    fn sync_answered(&mut self, node: u32, peer: u32, answer: Answer) {
        if !self.peers[node as usize].alive {
            return;
        }
        if self.cut(node, peer) {
            let sent_at = self.now - 2 * self.latency(node, peer);
            self.push(sent_at + SYNC_TIMEOUT_MS, Event::SyncFails { node, peer });
            return;
        }
        let now = self.now;
        let p = &mut self.peers[node as usize];
        let mut view = View {
            held: &p.receipts,
            receipts: &self.receipt_ids,
        };
        let mut jobs = Vec::new();
        match answer {
            Answer::Digests(list) => p.repl.on_digests(peer, EPOCH_MS, &list, &mut view),
            Answer::Ids(ids, more) => p.repl.on_ids(peer, &ids, more, &mut view),
            Answer::Receipts(list) => {
                jobs = list.chunks(RECEIPTS_PER_JOB).map(<[u32]>::to_vec).collect();
                p.repl.on_receipts(peer, jobs.len());
            }
        }
        // The jobs run one after another on the node's verification pool.
        for job in jobs {
            let p = &mut self.peers[node as usize];
            let cost = (job.len() as u64 * VERIFY_US).div_ceil(1_000).max(1);
            p.verify_busy_until = p.verify_busy_until.max(now) + cost;
            let at = p.verify_busy_until;
            let slot = self.sync_slot(SyncMsg::Job(job));
            self.push(at, Event::SyncVerified { node, peer, slot });
        }
        self.sync_outputs(node);
    }

    /// Closed loop: submit the next request at `at`, if any is left.
    fn submit_next(&mut self, at: u64) {
        if self.sc.in_flight.is_some() && self.next_request < self.sc.requests {
            let req = self.next_request as u32;
            self.next_request += 1;
            self.push(at, Event::Submit { req });
        }
    }

    /// Closed loop: request `i`, made now by service `i % 2`.
    fn make_request(&mut self, i: u32) {
        let svc = i % 2;
        let mut root = [0u8; 32];
        root[..8].copy_from_slice(&u64::from(i).to_le_bytes());
        root[8..16].copy_from_slice(&self.sc.seed.to_le_bytes());
        let k = &self.service_keys[svc as usize];
        let signed = Signed::sign(
            WorkRequest {
                service: k.public(),
                root: Root(root),
                difficulty: self.sc.difficulty.unwrap_or(Difficulty::EPOCH2_RECEIVE),
                kind: None,
                account: None,
                nonce: u64::from(i),
                created_ms: self.now,
                expires_ms: self.now + LIFETIME_MS,
                priority: Priority::Normal,
                node: k.public(),
            },
            k,
            &NET,
        )
        .expect("a request signs");
        self.index.insert(signed.id(), i);
        self.reqs.push(Req {
            signed,
            svc,
            first_solution: None,
            paid: None,
            latency: None,
        });
    }

    /// The request path of a live node that runs one.
    fn core(&mut self, node: u32) -> Option<&mut Peer> {
        let p = &mut self.peers[node as usize];
        if !p.alive {
            return None;
        }
        p.core.as_mut()
    }

    fn check_converged(&mut self) {
        if !self.healed || self.converged {
            return;
        }
        let all = self
            .peers
            .iter()
            .filter(|p| p.alive)
            .all(|p| p.receipts.covers(&self.before_heal));
        if all {
            self.converged = true;
            let healed_at = self.sc.partition.map_or(0, |(_, to)| to);
            self.report.convergence_ms = Some(self.now - healed_at);
        }
    }

    /// A peer publishes a new message: it holds it and sends it to its neighbours.
    fn publish(&mut self, from: u32, body: Body) {
        self.msgs.push(body);
        let msg = self.msgs.len() as u32 - 1;
        let mut seen = Bits::default();
        seen.insert(from as usize);
        self.seen.push(seen);
        self.forward(from, u32::MAX, msg, 0);
    }

    fn forward(&mut self, at: u32, except: u32, msg: u32, hops: u16) {
        let now = self.now;
        for i in 0..self.peers[at as usize].links.len() {
            let (to, lat) = self.peers[at as usize].links[i];
            if to == except {
                continue;
            }
            if self.cut(at, to) || self.rng.chance(self.sc.loss) {
                self.report.lost += 1;
                continue;
            }
            self.push(
                now + u64::from(lat) + HOP_MS,
                Event::Deliver {
                    to,
                    from: at,
                    msg,
                    hops: hops + 1,
                },
            );
        }
    }

    fn deliver(&mut self, to: u32, from: u32, msg: u32, hops: u16) {
        if !self.peers[to as usize].alive {
            return;
        }
        if !self.seen[msg as usize].insert(to as usize) {
            self.report.duplicates += 1;
            return;
        }
        self.report.hops_sum += u64::from(hops);
        self.report.hops_count += 1;
        self.report.hops_max = self.report.hops_max.max(u64::from(hops));
        self.take(to, self.msgs[msg as usize]);
        self.forward(to, from, msg, hops);
    }

    /// What the node does with a message it takes: as the event loop, once the message is
    /// checked.
    fn take(&mut self, node: u32, body: Body) {
        let now = self.now;
        if let Body::Receipt(r) = body {
            self.peers[node as usize].receipts.insert(r as usize);
        }
        if self.peers[node as usize].core.is_none() {
            return;
        }
        let (signed, paid) = match body {
            Body::Request(r) | Body::Receipt(r) | Body::Cancel(r) => {
                let req = &self.reqs[r as usize];
                (Some(req.signed.clone()), req.paid.clone())
            }
            Body::Status(_) => (None, None),
        };
        let st = match body {
            Body::Status(i) => Some(self.statuses[i as usize].clone()),
            _ => None,
        };
        let Some(core) = self.core(node) else {
            return;
        };
        let worker = match (body, signed, st) {
            (Body::Request(_), Some(req), _) => core.on_request(&req, now).unwrap_or_default(),
            (Body::Status(_), _, Some(st)) => {
                // Statuses too old or too soon are refused, as the node refuses them.
                let _ = core.on_status(st, now, |_| false);
                Vec::new()
            }
            (Body::Receipt(_), Some(req), _) => {
                let paid = paid.expect("a receipt pays a result");
                core.on_receipt(&req, &paid, now).unwrap_or_default()
            }
            (Body::Cancel(_), Some(req), _) => core.on_done(req.id(), now),
            _ => unreachable!("every message carries what it names"),
        };
        self.outputs(
            node,
            Outputs {
                worker,
                service: Vec::new(),
            },
        );
    }

    fn outputs(&mut self, node: u32, out: Outputs) {
        self.service_actions(node, out.service);
        self.worker_actions(node, out.worker);
        let now = self.now;
        let p = &mut self.peers[node as usize];
        if let Some(at) = p.core.as_ref().and_then(Peer::next_deadline)
            && p.timer.is_none_or(|t| at < t)
        {
            p.timer = Some(at.max(now));
            self.push(at.max(now), Event::Tick { node });
        }
    }

    fn worker_actions(&mut self, node: u32, actions: Vec<WorkerAction>) {
        let now = self.now;
        for a in actions {
            match a {
                WorkerAction::Solve {
                    request,
                    difficulty,
                    ..
                } => {
                    self.stop_solving(node);
                    let req = self.index[&request];
                    let w = self.peers[node as usize].worker.as_mut().expect("a worker");
                    w.token += 1;
                    let mean_ms = expected(difficulty) * 1000.0 / w.rate as f64;
                    let token = w.token;
                    w.solving = Some(Solving {
                        req,
                        token,
                        since: now,
                    });
                    let after = self.rng.exp_ms(mean_ms);
                    self.push(now + after, Event::Solved { node, token });
                }
                WorkerAction::Stop { .. } => self.stop_solving(node),
                WorkerAction::Publish { request, work, .. } => {
                    let req = self.index[&request];
                    let svc_node = self.reqs[req as usize].svc;
                    if self.cut(node, svc_node) {
                        self.report.lost += 1;
                        continue;
                    }
                    let at = now + self.direct_ms(node, svc_node) + HOP_MS;
                    self.push(
                        at,
                        Event::Result {
                            req,
                            worker: node,
                            work: work.0,
                        },
                    );
                }
                WorkerAction::Dropped { .. } => {}
            }
        }
    }

    /// Count the hashing of the current solve, if any, and forget it.
    fn stop_solving(&mut self, node: u32) {
        let now = self.now;
        let Some(w) = self.peers[node as usize].worker.as_mut() else {
            return;
        };
        let Some(s) = w.solving.take() else { return };
        let rate = u128::from(w.rate);
        let spent = rate * u128::from(now - s.since) / 1000;
        self.report.hashes += spent;
        if let Some(first) = self.reqs[s.req as usize].first_solution
            && first < now
        {
            let after = now - first.max(s.since);
            self.report.hashes_wasted += rate * u128::from(after) / 1000;
        }
    }

    fn solved(&mut self, node: u32, token: u64) {
        let now = self.now;
        let p = &self.peers[node as usize];
        let Some(req) = p
            .worker
            .as_ref()
            .and_then(|w| w.solving.as_ref())
            .filter(|s| p.alive && s.token == token)
            .map(|s| s.req)
        else {
            return;
        };
        self.stop_solving(node);
        let r = &mut self.reqs[req as usize];
        r.first_solution.get_or_insert(now);
        let id = r.signed.id();
        self.mix(u64::from(req) << 32 | u64::from(node));
        let core = self.core(node).expect("a worker's path");
        let flow = core.worker_mut().expect("a worker's flow");
        let worker = flow.on_solved(id, Work(u64::from(node)), now);
        self.outputs(
            node,
            Outputs {
                worker,
                service: Vec::new(),
            },
        );
    }

    /// A result reaches the service's node: the first completes the request.
    fn on_result(&mut self, req: u32, worker: u32, work: u64) {
        let now = self.now;
        let r = &self.reqs[req as usize];
        let svc = r.svc;
        let w = self.peers[worker as usize]
            .worker
            .as_ref()
            .expect("a worker");
        let result = WorkResult {
            request: r.signed.id(),
            root: r.signed.payload().root,
            work: Work(work),
            worker: w.public,
            payout: None,
        };
        let signed = Signed::sign(result, &w.key, &NET).expect("a result signs");
        let Some(core) = self.core(svc) else { return };
        let out = core.on_result(&signed, now);
        if self.reqs[req as usize].paid.is_none() && !out.service.is_empty() {
            self.reqs[req as usize].paid = Some(signed.payload().clone());
        }
        self.outputs(svc, out);
    }

    fn service_actions(&mut self, node: u32, actions: Vec<ServiceAction>) {
        for a in actions {
            match a {
                ServiceAction::Publish(req) => {
                    let r = self.index[&req.id()];
                    self.publish(node, Body::Request(r));
                }
                ServiceAction::Cancel { request } => {
                    let r = self.index[&request];
                    self.publish(node, Body::Cancel(r));
                }
                ServiceAction::Completed {
                    request,
                    latency_ms,
                    ..
                } => {
                    let r = self.index[&request];
                    self.reqs[r as usize].latency = Some(latency_ms);
                    self.report.completed += 1;
                    if !self.healed {
                        self.before_heal.insert(r as usize);
                    }
                    self.receipt_ids.issue(self.sc.seed, r, self.now);
                    self.peers[node as usize].receipts.insert(r as usize);
                    self.publish(node, Body::Receipt(r));
                    if self.sc.direct_stop {
                        let solvers: Vec<u32> = (0..self.peers.len() as u32)
                            .filter(|&w| {
                                self.peers[w as usize]
                                    .worker
                                    .as_ref()
                                    .and_then(|w| w.solving.as_ref())
                                    .is_some_and(|s| s.req == r)
                            })
                            .collect();
                        for w in solvers {
                            let at = self.now + self.direct_ms(node, w) + HOP_MS;
                            self.push(at, Event::Stop { to: w, req: r });
                            self.report.direct_stops += 1;
                        }
                    }
                    self.report.last_completed_ms = self.now;
                    self.submit_next(self.now);
                }
                ServiceAction::Expired { .. } => {
                    self.report.expired += 1;
                    self.submit_next(self.now);
                }
            }
        }
    }

    fn finish(mut self) -> Report {
        let mut lat: Vec<u64> = self.reqs.iter().filter_map(|r| r.latency).collect();
        lat.sort_unstable();
        let pct = |p: usize| -> u64 {
            if lat.is_empty() {
                0
            } else {
                lat[((lat.len() - 1) * p).div_ceil(100)]
            }
        };
        self.report.latency_p50_ms = pct(50);
        self.report.latency_p99_ms = pct(99);
        // Solves still running at the end count as spent.
        for node in 0..self.peers.len() as u32 {
            self.stop_solving(node);
        }
        self.report
    }
}
