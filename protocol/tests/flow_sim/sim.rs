//! The simulation engine: virtual workers and services, the gossip bus, the event queue.

use dpow_testkit::rng::Rng;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use dpow_keys::{PublicKey, SecretKey};
use dpow_protocol::flow::{
    Role, ServiceAction, ServiceConfig, ServiceFlow, WorkerAction, WorkerFlow, plan,
};
use dpow_protocol::{
    Difficulty, MessageId, Priority, RequestId, Root, Signed, Work, WorkRequest, WorkResult,
    WorkerStatus,
};

use crate::{Report, Scenario};

/// How long each request is valid.
const LIFETIME_MS: u64 = 60_000;
/// Workers announce themselves this often.
const STATUS_EVERY_MS: u64 = 5_000;

#[derive(Clone, Copy, Debug)]
enum Msg {
    Request(usize),
    Result(usize),
    Cancel(usize),
}

#[derive(Debug)]
enum Event {
    /// A gossip message reaches a worker.
    Deliver {
        to: usize,
        msg: Msg,
    },
    /// A result reaches the service that asked.
    ToService {
        res: usize,
    },
    /// A worker's solver finishes (if the token still matches its current solve).
    Solved {
        worker: usize,
        token: u64,
    },
    Crash {
        worker: usize,
    },
    /// A worker's timer (if still armed for this instant).
    Tick {
        worker: usize,
    },
    /// A service's timer (if still armed for this instant).
    ServiceTick {
        svc: usize,
    },
    /// Every live worker announces itself.
    Statuses,
    /// A service submits a request.
    Submit {
        req: usize,
    },
}

struct Solving {
    req: usize,
    token: u64,
    since: u64,
    backup: bool,
}

struct Node {
    key: SecretKey,
    public: PublicKey,
    rate: u64,
    flow: WorkerFlow,
    alive: bool,
    solving: Option<Solving>,
    token: u64,
    /// Requests delivered to it.
    seen: HashSet<usize>,
    /// Requests it heard were finished (result or cancel) or finished itself.
    heard_done: HashSet<usize>,
    timer: Option<u64>,
    last_announced: Option<u64>,
    /// Whether the solve that finished last ran as a backup (a Publish follows it).
    last_solve_was_backup: bool,
}

struct Service {
    key: SecretKey,
    flow: ServiceFlow,
    timer: Option<u64>,
}

struct Req {
    signed: Signed<WorkRequest>,
    svc: usize,
    published: bool,
    /// Every primary was crashed when it was published.
    primaries_killed: bool,
    first_solution_ms: Option<u64>,
    /// Solvers running now: (primaries, backups).
    solvers: (usize, usize),
    backups_started: usize,
    /// Latency and whether a backup won.
    completed: Option<(u64, bool)>,
}

struct Sim {
    sc: Scenario,
    rng: Rng,
    now: u64,
    heap: BinaryHeap<Reverse<(u64, usize)>>,
    events: Vec<Option<Event>>,
    nodes: Vec<Node>,
    by_key: HashMap<PublicKey, usize>,
    services: Vec<Service>,
    reqs: Vec<Req>,
    index: HashMap<RequestId, usize>,
    /// Results published: the signed result and whether its worker was a backup.
    results: Vec<(Signed<WorkResult>, bool)>,
    result_index: HashMap<MessageId, usize>,
    report: Report,
}

fn key(n: u64) -> SecretKey {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&n.to_le_bytes());
    seed[31] = 0x51;
    SecretKey::from_seed(seed)
}

impl Sim {
    fn new(sc: Scenario) -> Self {
        let mut rng = Rng::new(sc.seed);
        let nodes: Vec<Node> = (0..sc.workers)
            .map(|i| {
                let key = key(sc.seed.wrapping_mul(1_000_003).wrapping_add(i as u64));
                let public = key.public();
                let rate = rng.range(2_000_000, 60_000_000);
                Node {
                    flow: WorkerFlow::new(public, rate, sc.config.clone()),
                    key,
                    public,
                    rate,
                    alive: true,
                    solving: None,
                    token: 0,
                    seen: HashSet::new(),
                    heard_done: HashSet::new(),
                    timer: None,
                    last_announced: None,
                    last_solve_was_backup: false,
                }
            })
            .collect();
        let by_key = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.public, i))
            .collect();
        let services: Vec<Service> = (0..2)
            .map(|s| Service {
                key: key(sc.seed ^ (0xabcd_0000 + s)),
                flow: ServiceFlow::new(ServiceConfig::default()),
                timer: None,
            })
            .collect();
        let mut reqs = Vec::new();
        for i in 0..sc.requests {
            let svc = usize::from(!rng.chance(sc.heavy_share));
            let at = if rng.chance(sc.burst_share) {
                rng.range(30_000, 31_000)
            } else {
                rng.range(1_000, 61_000)
            };
            // From 2^16 to 2^29 expected hashes; the hardest needs more than max_primaries.
            let difficulty = match rng.range(0, 4) {
                0 => 0xffff_0000_0000_0000,
                1 => 0xffff_f000_0000_0000,
                2 => 0xffff_ff00_0000_0000,
                3 => 0xffff_ff80_0000_0000,
                _ => 0xffff_fff8_0000_0000,
            };
            let priority = if rng.chance(0.2) {
                Priority::Precache
            } else {
                Priority::Normal
            };
            let mut root = [0u8; 32];
            root[..8].copy_from_slice(&(i as u64).to_le_bytes());
            root[8..16].copy_from_slice(&sc.seed.to_le_bytes());
            let signed = Signed::sign(
                WorkRequest {
                    service: services[svc].key.public(),
                    root: Root(root),
                    difficulty: Difficulty(difficulty),
                    kind: None,
                    account: None,
                    nonce: i as u64,
                    created_ms: at,
                    expires_ms: at + LIFETIME_MS,
                    priority,
                    node: dpow_keys::PublicKey([7; 32]),
                },
                &services[svc].key,
                &dpow_testkit::builders::NET,
            )
            .expect("a request signs");
            reqs.push(Req {
                signed,
                svc,
                published: false,
                primaries_killed: false,
                first_solution_ms: None,
                solvers: (0, 0),
                backups_started: 0,
                completed: None,
            });
        }
        let index = reqs
            .iter()
            .enumerate()
            .map(|(i, r)| (r.signed.id(), i))
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
            heap: BinaryHeap::new(),
            events: Vec::new(),
            nodes,
            by_key,
            services,
            reqs,
            index,
            results: Vec::new(),
            result_index: HashMap::new(),
        };
        sim.push(0, Event::Statuses);
        for i in 0..sim.reqs.len() {
            let at = sim.reqs[i].signed.payload().created_ms;
            sim.push(at, Event::Submit { req: i });
        }
        for w in 0..sim.nodes.len() {
            if sim.rng.chance(sim.sc.crash_random) {
                let at = sim.rng.range(1_000, 61_000);
                sim.push(at, Event::Crash { worker: w });
            }
        }
        sim
    }

    /// Fold a number into the trace (FNV-1a over words).
    fn mix(&mut self, x: u64) {
        self.report.trace ^= x;
        self.report.trace = self.report.trace.wrapping_mul(0x0100_0000_01b3);
    }

    fn push(&mut self, at: u64, e: Event) {
        self.events.push(Some(e));
        self.heap.push(Reverse((at, self.events.len() - 1)));
    }

    fn run(mut self) -> Report {
        while let Some(Reverse((at, seq))) = self.heap.pop() {
            assert!(at >= self.now, "time runs forward");
            self.now = at;
            let event = self.events[seq].take().expect("each event runs once");
            self.mix(at);
            self.handle(event);
        }
        self.finish()
    }

    fn finished(&self) -> bool {
        self.reqs.iter().all(|r| r.published)
            && self.services.iter().all(|s| s.flow.outstanding() == 0)
    }

    fn handle(&mut self, event: Event) {
        let now = self.now;
        match event {
            Event::Statuses => {
                self.mix(1);
                let statuses: Vec<WorkerStatus> = self
                    .nodes
                    .iter()
                    .filter(|n| n.alive)
                    .map(|n| WorkerStatus {
                        worker: n.public,
                        hash_rate: n.rate,
                        queue: n.flow.queue_len() as u32,
                        payout: None,
                        created_ms: now,
                    })
                    .collect();
                for st in &statuses {
                    let from = self.by_key[&st.worker];
                    self.nodes[from].last_announced = Some(now);
                    for to in 0..self.nodes.len() {
                        if self.nodes[to].alive
                            && (to == from || !self.rng.chance(self.sc.status_loss))
                        {
                            self.nodes[to].flow.on_status(st, now);
                        }
                    }
                }
                if !self.finished() {
                    self.push(now + STATUS_EVERY_MS, Event::Statuses);
                }
            }
            Event::Submit { req } => {
                self.mix(2);
                self.mix(req as u64);
                let svc = self.reqs[req].svc;
                if self.rng.chance(self.sc.kill_primaries) {
                    self.kill_primaries(req);
                }
                let signed = self.reqs[req].signed.clone();
                let actions = self.services[svc]
                    .flow
                    .submit(signed, now)
                    .expect("room for every request");
                self.service_actions(svc, actions);
            }
            Event::ServiceTick { svc } => {
                if self.services[svc].timer == Some(now) {
                    self.mix(3);
                    self.services[svc].timer = None;
                    let actions = self.services[svc].flow.on_tick(now);
                    self.service_actions(svc, actions);
                }
            }
            Event::Deliver { to, msg } => {
                if !self.nodes[to].alive {
                    return;
                }
                self.report.deliveries += 1;
                match msg {
                    Msg::Request(req) => {
                        self.mix(4);
                        self.nodes[to].seen.insert(req);
                        let actions = self.nodes[to].flow.on_request(&self.reqs[req].signed, now);
                        self.worker_actions(to, actions);
                    }
                    Msg::Result(res) => {
                        let req = self.index[&self.results[res].0.payload().request];
                        self.hear_done(to, req);
                    }
                    Msg::Cancel(req) => self.hear_done(to, req),
                }
            }
            Event::ToService { res } => {
                self.mix(6);
                let req = self.index[&self.results[res].0.payload().request];
                let svc = self.reqs[req].svc;
                let result = self.results[res].0.clone();
                let actions = self.services[svc].flow.on_result(&result, now);
                self.service_actions(svc, actions);
            }
            Event::Solved { worker, token } => {
                let node = &self.nodes[worker];
                let Some((req, backup)) = node
                    .solving
                    .as_ref()
                    .filter(|s| node.alive && s.token == token)
                    .map(|s| (s.req, s.backup))
                else {
                    return;
                };
                self.mix(7);
                self.nodes[worker].last_solve_was_backup = backup;
                self.stop_solving(worker);
                self.reqs[req].first_solution_ms.get_or_insert(now);
                let id = self.reqs[req].signed.id();
                let actions = self.nodes[worker].flow.on_solved(id, Work(now), now);
                self.worker_actions(worker, actions);
            }
            Event::Crash { worker } => self.crash(worker),
            Event::Tick { worker } => {
                if self.nodes[worker].alive && self.nodes[worker].timer == Some(now) {
                    self.mix(8);
                    self.nodes[worker].timer = None;
                    let actions = self.nodes[worker].flow.on_tick(now);
                    self.worker_actions(worker, actions);
                }
            }
        }
    }

    /// Worker `to` hears that `req` is finished (a result or the service's cancel).
    fn hear_done(&mut self, to: usize, req: usize) {
        self.mix(5);
        let node = &mut self.nodes[to];
        let first_news = node.heard_done.insert(req);
        if first_news && !node.seen.contains(&req) {
            self.report.done_before_request += 1;
        }
        let id = self.reqs[req].signed.id();
        let actions = node.flow.on_done(id, self.now);
        if actions.contains(&WorkerAction::Stop { request: id }) {
            self.report.stops_on_hearing += 1;
        }
        self.worker_actions(to, actions);
        assert!(
            self.nodes[to].solving.as_ref().is_none_or(|s| s.req != req),
            "worker {to} still solves request {req} after hearing it is done"
        );
    }

    /// Crash, at once, every live worker that the nodes' shared view makes a primary of `req`.
    fn kill_primaries(&mut self, req: usize) {
        let stale = self.sc.config.worker_stale_ms;
        let view: Vec<(PublicKey, u64)> = self
            .nodes
            .iter()
            .filter(|n| {
                n.last_announced
                    .is_some_and(|t| self.now.saturating_sub(t) < stale)
            })
            .map(|n| (n.public, n.rate))
            .collect();
        let r = &self.reqs[req].signed;
        let p = plan(r.payload(), &r.id(), &view, &self.sc.config);
        let mut killed = false;
        for k in p.primaries {
            let w = self.by_key[&k];
            if self.nodes[w].alive {
                self.crash(w);
            }
            killed = true;
        }
        if killed {
            self.reqs[req].primaries_killed = true;
            self.report.primaries_killed_requests += 1;
        }
    }

    fn crash(&mut self, worker: usize) {
        if !self.nodes[worker].alive {
            return;
        }
        self.mix(9);
        self.mix(worker as u64);
        if self.nodes[worker].solving.is_some() {
            self.report.crashed_mid_solve += 1;
            self.stop_solving(worker);
        }
        let node = &mut self.nodes[worker];
        node.alive = false;
        node.timer = None;
        self.report.workers_crashed += 1;
    }

    /// End the worker's current solve and count its hashing.
    fn stop_solving(&mut self, worker: usize) {
        let node = &mut self.nodes[worker];
        let s = node.solving.take().expect("solving");
        node.token += 1;
        let rate = u128::from(node.rate);
        let now = self.now;
        self.report.hashes_total += rate * u128::from(now - s.since) / 1000;
        let r = &mut self.reqs[s.req];
        if let Some(t) = r.first_solution_ms {
            let from = s.since.max(t).min(now);
            self.report.hashes_after_first_solution += rate * u128::from(now - from) / 1000;
        }
        if s.backup {
            r.solvers.1 -= 1;
        } else {
            r.solvers.0 -= 1;
        }
    }

    /// Deliver to every worker but `except`, each after its own delay, some twice, some never.
    fn broadcast(&mut self, msg: Msg, except: Option<usize>) {
        for to in 0..self.nodes.len() {
            if Some(to) == except {
                continue;
            }
            if self.rng.chance(self.sc.loss) {
                self.report.lost += 1;
                continue;
            }
            let at = self.now + self.rng.range(1, 50);
            self.push(at, Event::Deliver { to, msg });
            if self.rng.chance(self.sc.duplicate) {
                self.report.duplicates += 1;
                let at = self.now + self.rng.range(1, 500);
                self.push(at, Event::Deliver { to, msg });
            }
        }
    }

    fn service_actions(&mut self, svc: usize, actions: Vec<ServiceAction>) {
        let now = self.now;
        for a in actions {
            match a {
                ServiceAction::Publish(signed) => {
                    let req = self.index[&signed.id()];
                    self.mix(10);
                    if self.reqs[req].published {
                        self.report.republished += 1;
                    }
                    self.reqs[req].published = true;
                    self.broadcast(Msg::Request(req), None);
                }
                ServiceAction::Cancel { request } => {
                    let req = self.index[&request];
                    self.broadcast(Msg::Cancel(req), None);
                }
                ServiceAction::Completed {
                    request,
                    result,
                    latency_ms,
                } => {
                    let req = self.index[&request];
                    let res = self.result_index[&result.id()];
                    let by_backup = self.results[res].1;
                    let r = &mut self.reqs[req];
                    assert!(r.completed.is_none(), "request {req} completed twice");
                    assert!(
                        now < r.signed.payload().expires_ms,
                        "request {req} completed after it expired"
                    );
                    r.completed = Some((latency_ms, by_backup));
                    let winner = self.by_key[&result.payload().worker];
                    self.mix(11);
                    self.mix(req as u64);
                    self.mix(winner as u64);
                }
                ServiceAction::Expired { request } => {
                    panic!(
                        "request {} expired unanswered (seed {})",
                        self.index[&request], self.sc.seed
                    )
                }
            }
        }
        if let Some(t) = self.services[svc].flow.next_deadline() {
            let t = t.max(now + 1);
            if self.services[svc].timer != Some(t) {
                self.services[svc].timer = Some(t);
                self.push(t, Event::ServiceTick { svc });
            }
        } else {
            self.services[svc].timer = None;
        }
    }

    fn worker_actions(&mut self, w: usize, actions: Vec<WorkerAction>) {
        let now = self.now;
        let max_primaries = self.sc.config.max_primaries;
        for a in actions {
            match a {
                WorkerAction::Solve {
                    request,
                    difficulty,
                    ..
                } => {
                    let req = self.index[&request];
                    self.mix(12);
                    self.mix(w as u64);
                    self.mix(req as u64);
                    let node = &self.nodes[w];
                    assert!(
                        !node.heard_done.contains(&req),
                        "worker {w} starts request {req} after hearing it is done"
                    );
                    assert!(
                        node.solving.is_none(),
                        "worker {w} was told to solve {req} without stopping its current solve"
                    );
                    let backup = match node.flow.role(request) {
                        Some(Role::Primary) => false,
                        Some(Role::Backup { starts_at_ms, tier }) => {
                            // Early only as an idle start, by a backup of the first tiers.
                            assert!(
                                starts_at_ms <= now || tier <= self.sc.config.idle_start_tiers,
                                "a backup of tier {tier} started early"
                            );
                            true
                        }
                        None => panic!("worker {w} solves request {req} it has not queued"),
                    };
                    let mean_ms = difficulty.expected_hashes() / node.rate as f64 * 1000.0;
                    let node = &mut self.nodes[w];
                    node.token += 1;
                    let token = node.token;
                    node.solving = Some(Solving {
                        req,
                        token,
                        since: now,
                        backup,
                    });
                    let r = &mut self.reqs[req];
                    if backup {
                        r.solvers.1 += 1;
                        r.backups_started += 1;
                        self.report.backups_started += 1;
                    } else {
                        r.solvers.0 += 1;
                    }
                    let (p, b) = r.solvers;
                    // Each node plans from its own view of live workers. Views differ while
                    // a crashed worker's last status goes stale and when a node missed a
                    // worker's statuses; each worker whose liveness the nodes dispute can
                    // push one more worker into some nodes' primaries, never more.
                    let disputed = if p > max_primaries || p + b > max_primaries + r.backups_started
                    {
                        let alive: Vec<&Node> = self.nodes.iter().filter(|n| n.alive).collect();
                        self.nodes
                            .iter()
                            .filter(|w| {
                                let live = alive
                                    .iter()
                                    .filter(|n| n.flow.is_live(&w.public, now))
                                    .count();
                                live != 0 && live != alive.len()
                            })
                            .count()
                    } else {
                        0
                    };
                    assert!(
                        p <= max_primaries + disputed,
                        "{p} primaries solve request {req} at once ({disputed} workers' liveness disputed)"
                    );
                    assert!(
                        p + b <= max_primaries + disputed + r.backups_started,
                        "{} solvers on request {req} with {} backups started",
                        p + b,
                        r.backups_started
                    );
                    let report = &mut self.report;
                    report.max_disputed = report.max_disputed.max(disputed);
                    let report = &mut self.report;
                    report.max_primaries_on_one_request =
                        report.max_primaries_on_one_request.max(p);
                    report.max_solvers_on_one_request =
                        report.max_solvers_on_one_request.max(p + b);
                    let t = self.rng.exp_ms(mean_ms);
                    self.push(now + t, Event::Solved { worker: w, token });
                    if self.rng.chance(self.sc.crash_per_solve) {
                        let at = now + self.rng.range(0, t - 1);
                        self.push(at, Event::Crash { worker: w });
                    }
                }
                WorkerAction::Stop { request } => {
                    let req = self.index[&request];
                    self.mix(13);
                    assert!(
                        self.nodes[w].solving.as_ref().is_some_and(|s| s.req == req),
                        "worker {w} told to stop request {req} it is not solving"
                    );
                    self.stop_solving(w);
                }
                WorkerAction::Publish {
                    request,
                    root,
                    work,
                } => {
                    let req = self.index[&request];
                    self.mix(14);
                    let node = &mut self.nodes[w];
                    node.heard_done.insert(req);
                    let backup = node.last_solve_was_backup;
                    let signed = Signed::sign(
                        WorkResult {
                            request,
                            root,
                            work,
                            worker: node.public,
                            payout: None,
                        },
                        &node.key,
                        &dpow_testkit::builders::NET,
                    )
                    .expect("a result signs");
                    self.result_index.insert(signed.id(), self.results.len());
                    self.results.push((signed, backup));
                    let res = self.results.len() - 1;
                    let at = now + self.rng.range(1, 50);
                    self.push(at, Event::ToService { res });
                    if self.rng.chance(self.sc.duplicate) {
                        let at = now + self.rng.range(1, 500);
                        self.push(at, Event::ToService { res });
                    }
                    self.broadcast(Msg::Result(res), Some(w));
                }
                WorkerAction::Dropped { request } => {
                    panic!("worker {w} dropped {request:?}: queues are large enough here")
                }
            }
        }
        self.arm(w);
    }

    /// Keep one timer per worker at its flow's next deadline.
    fn arm(&mut self, w: usize) {
        let now = self.now;
        let node = &mut self.nodes[w];
        if !node.alive {
            return;
        }
        match node.flow.next_deadline() {
            Some(t) => {
                let t = t.max(now + 1);
                if node.timer != Some(t) {
                    node.timer = Some(t);
                    self.push(t, Event::Tick { worker: w });
                }
            }
            None => node.timer = None,
        }
    }

    fn finish(mut self) -> Report {
        for (i, n) in self.nodes.iter().enumerate() {
            if n.alive {
                assert_eq!(
                    n.flow.solving(),
                    None,
                    "worker {i} still solving at the end"
                );
                assert_eq!(
                    n.flow.queue_len(),
                    0,
                    "worker {i} still has requests queued"
                );
            }
        }
        let mut sums = [(0u64, 0u64); 2];
        for r in &self.reqs {
            let Some((latency, by_backup)) = r.completed else {
                continue;
            };
            let report = &mut self.report;
            report.completed += 1;
            report.completed_by_backup += usize::from(by_backup);
            if r.primaries_killed {
                report.primaries_killed_won_by_backup += usize::from(by_backup);
            }
            report.max_latency_ms = report.max_latency_ms.max(latency);
            sums[r.svc].0 += latency;
            sums[r.svc].1 += 1;
        }
        for (i, (sum, n)) in sums.iter().enumerate() {
            self.report.mean_latency_ms[i] = sum / n.max(&1);
        }
        self.report
    }
}

/// Run one scenario to the end.
pub(crate) fn simulate(sc: Scenario) -> Report {
    Sim::new(sc).run()
}
