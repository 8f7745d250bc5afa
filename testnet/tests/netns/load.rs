//! A work-API client on the service's host: one request, or a steady load that counts what
//! was answered, refused (the service was down: retried) and lost (accepted, never answered
//! with valid work).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dpow_protocol::{BlockKind, Profile, Root, Work};
use dpow_testnet::hostnet::HostNet;
use dpow_testnet::netns;
use serde_json::Value;

/// What became of one `work_generate`.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Valid work came back.
    Answered { source: String, ms: f64 },
    /// The service was not accepting connections.
    Refused,
    /// The service took the request and gave no valid work.
    Lost(String),
}

/// Request `i`'s block hash: distinct per `i`.
pub(crate) fn root(i: u64) -> String {
    format!("{:032X}{:032X}", 0xD907_u128, u128::from(i))
}

/// `work_generate` for root `i` against the service on this thread's namespace's loopback.
fn post(i: u64) -> Outcome {
    post_at(i, None)
}

/// [`post`] at a `difficulty` of its own (hex), if given.
fn post_at(i: u64, difficulty: Option<&str>) -> Outcome {
    let hash = root(i);
    let mut body = serde_json::json!({"action": "work_generate", "hash": hash});
    if let Some(d) = difficulty {
        body["difficulty"] = d.into();
    }
    let body = body.to_string();
    let t0 = Instant::now();
    let mut s = match TcpStream::connect(netns::HTTP) {
        Ok(s) => s,
        Err(_) => return Outcome::Refused,
    };
    let sent = s.set_read_timeout(Some(Duration::from_secs(60))).and_then(|()| {
        write!(
            s,
            "POST / HTTP/1.0\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            netns::HTTP,
            body.len()
        )
    });
    let mut resp = String::new();
    if let Err(e) = sent.and_then(|()| s.read_to_string(&mut resp).map(|_| ())) {
        return Outcome::Lost(format!("{hash}: {e}"));
    }
    let Some(v) = resp
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str::<Value>(b).ok())
    else {
        return Outcome::Lost(format!("{hash}: no JSON answer: {resp:?}"));
    };
    let (Some(work), Some(source)) = (v["work"].as_str(), v["source"].as_str()) else {
        return Outcome::Lost(format!("{hash}: {v}"));
    };
    let (Ok(r), Ok(w)) = (hash.parse::<Root>(), work.parse::<Work>()) else {
        return Outcome::Lost(format!("{hash}: unreadable work {work}"));
    };
    let threshold = match difficulty {
        Some(d) => u64::from_str_radix(d, 16).unwrap_or(u64::MAX),
        None => Profile::test().threshold(BlockKind::Send).0,
    };
    if dpow_testkit::reference::work_value(&r, w) < threshold {
        return Outcome::Lost(format!("{hash}: work {work} below the threshold"));
    }
    Outcome::Answered {
        source: source.to_string(),
        ms: t0.elapsed().as_secs_f64() * 1e3,
    }
}

/// One `work_generate` for root `i`, from inside namespace `ns`.
pub(crate) fn work_generate(ns: &str, i: u64) -> Outcome {
    netns::in_ns(ns, || post(i)).unwrap_or_else(|e| Outcome::Lost(format!("{e:#}")))
}

/// `n` requests in turn (roots `first`, `first + 1`, ...) from inside namespace `ns`: each must
/// be answered from the network, else the test fails naming `what` and the request.
pub(crate) fn all_from_network(ns: &str, first: u64, n: u64, what: &str) {
    for i in 0..n {
        match work_generate(ns, first + i) {
            Outcome::Answered { source, .. } => {
                assert_eq!(source, "network", "{what}: request {i}")
            }
            other => panic!("{what}: request {i}: {other:?}"),
        }
    }
}

/// [`work_generate`] at a `difficulty` of its own (hex).
pub(crate) fn work_generate_at(ns: &str, i: u64, difficulty: &str) -> Outcome {
    netns::in_ns(ns, || post_at(i, Some(difficulty)))
        .unwrap_or_else(|e| Outcome::Lost(format!("{e:#}")))
}

/// What a load saw.
#[derive(Debug, Default)]
pub(crate) struct Report {
    /// Requests answered with valid work.
    pub(crate) answered: u64,
    /// Connections refused (each retried until accepted).
    pub(crate) refused: u64,
    /// Requests accepted and never answered with valid work.
    pub(crate) lost: Vec<String>,
    /// Latency of each answer, ms.
    pub(crate) latencies_ms: Vec<f64>,
    /// Answers by source (network, local, cache).
    pub(crate) sources: std::collections::BTreeMap<String, u64>,
}

impl Report {
    /// Latency percentile `q` (0 to 1) of the answers, ms.
    pub(crate) fn percentile(&self, q: f64) -> f64 {
        let mut l = self.latencies_ms.clone();
        l.sort_by(f64::total_cmp);
        let i = ((l.len() as f64 - 1.0) * q).round().max(0.0) as usize;
        l.get(i).copied().unwrap_or(0.0)
    }

    /// One line: answers, their latency, their sources, refusals and losses.
    pub(crate) fn line(&self) -> String {
        format!(
            "{} answered (p50 {:.1} ms, p99 {:.1} ms; by source {:?}), {} refused and retried, {} lost",
            self.answered,
            self.percentile(0.5),
            self.percentile(0.99),
            self.sources,
            self.refused,
            self.lost.len()
        )
    }
}

/// What the test and the load's thread share: changed under the lock, each change told on
/// the condition variable, so neither side looks on a timer.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    stop: bool,
    /// While set, no new request is sent.
    paused: bool,
    /// Set while a request is out.
    busy: bool,
    answered: u64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Change the state and tell the other side.
    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.lock());
        self.changed.notify_all();
    }

    /// Wait until `ok` holds of the state, up to `timeout`; whether it does.
    fn wait(&self, timeout: Duration, ok: impl Fn(&State) -> bool) -> bool {
        let guard = self.lock();
        let (guard, _) = self
            .changed
            .wait_timeout_while(guard, timeout, |s| !ok(s))
            .unwrap_or_else(PoisonError::into_inner);
        ok(&guard)
    }
}

/// Requests one after another from the service's host until stopped.
pub(crate) struct Load {
    shared: Arc<Shared>,
    thread: JoinHandle<Report>,
}

impl Load {
    /// Start sending.
    pub(crate) fn start(net: &HostNet) -> anyhow::Result<Load> {
        let ns = net.topo.host("service")?.ns.clone();
        let shared = Arc::new(Shared::default());
        let theirs = shared.clone();
        let thread = std::thread::spawn(move || {
            netns::in_ns(&ns, || run(&theirs)).unwrap_or_else(|e| Report {
                lost: vec![format!("the client could not run: {e:#}")],
                ..Report::default()
            })
        });
        Ok(Load { shared, thread })
    }

    /// Send nothing more until [`Load::resume`]; returns once no request is out (or after
    /// 70 s, longer than any request may take).
    pub(crate) fn pause(&self) {
        self.shared.update(|s| s.paused = true);
        self.shared.wait(Duration::from_secs(70), |s| !s.busy);
    }

    /// Send again.
    pub(crate) fn resume(&self) {
        self.shared.update(|s| s.paused = false);
    }

    /// Requests answered so far.
    pub(crate) fn answered(&self) -> u64 {
        self.shared.lock().answered
    }

    /// Wait until `n` requests have been answered.
    pub(crate) fn wait_answered(&self, n: u64, timeout: Duration) -> anyhow::Result<()> {
        if self.shared.wait(timeout, |s| s.answered >= n) {
            Ok(())
        } else {
            anyhow::bail!(
                "timed out waiting for {n} answers ({} so far)",
                self.answered()
            )
        }
    }

    /// Stop after the request in flight and report.
    pub(crate) fn stop(self) -> Report {
        self.shared.update(|s| s.stop = true);
        self.thread.join().unwrap_or_else(|_| Report {
            lost: vec!["the client panicked".into()],
            ..Report::default()
        })
    }
}

fn run(shared: &Shared) -> Report {
    let mut r = Report::default();
    let mut i = 0u64;
    loop {
        {
            // Paused by the test: wait until resumed or stopped.
            let guard = shared.lock();
            let mut guard = shared
                .changed
                .wait_while(guard, |s| s.paused && !s.stop)
                .unwrap_or_else(PoisonError::into_inner);
            if guard.stop {
                break;
            }
            guard.busy = true;
        }
        let outcome = post(i);
        let answered = matches!(outcome, Outcome::Answered { .. });
        shared.update(|s| {
            s.busy = false;
            s.answered += u64::from(answered);
        });
        match outcome {
            Outcome::Answered { source, ms } => {
                r.answered += 1;
                r.latencies_ms.push(ms);
                *r.sources.entry(source).or_default() += 1;
            }
            Outcome::Refused => {
                // The service is restarting: the same request again, after a pause (a client's
                // back-off, not a wait for an event).
                r.refused += 1;
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            Outcome::Lost(e) => r.lost.push(e),
        }
        i += 1;
    }
    r
}
