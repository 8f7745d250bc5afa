//! The dispatcher with fake devices: first answer wins, cancellation reaches every device,
//! failing devices are restarted then dropped, and a job fails only when no device is left.
//! Waits have generous bounds to catch hangs; no speed is asserted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use dpow_protocol::{Difficulty, Root, Work, is_valid};
use dpow_solver::dispatch::{Dispatcher, MAX_STRIKES, measure_rate};
use dpow_solver::{Control, SolveError, Solver, random_start};

/// 1 in 256 nonces meets it: a scalar search finds one at once.
const EASY: Difficulty = Difficulty(0xff00_0000_0000_0000);
const HANG_GUARD: Duration = Duration::from_secs(10);

fn root() -> Root {
    Root([0x42; 32])
}

/// How often a fake was called and how many of those calls have returned.
#[derive(Default)]
struct Calls {
    started: AtomicU32,
    finished: AtomicU32,
}

impl Calls {
    fn started(&self) -> u32 {
        self.started.load(Ordering::SeqCst)
    }
    fn finished(&self) -> u32 {
        self.finished.load(Ordering::SeqCst)
    }
}

/// What a fake device does when asked to solve.
enum Behaviour {
    /// Scalar search from a random nonce; first waits until `gate` has been called `after`
    /// times (so a test can order events without guessing at sleeps).
    Find { gate: Option<(Arc<Calls>, u32)> },
    /// Hash nothing useful until cancelled.
    Spin,
    /// Fail at once.
    Fail,
    /// Return work that does not meet the difficulty.
    Invalid,
    /// Fail `n` times, then behave like `Find`.
    FailFirst(u32),
    /// Panic.
    Panic,
}

struct Fake {
    name: &'static str,
    behaviour: Behaviour,
    calls: Arc<Calls>,
}

fn fake(name: &'static str, behaviour: Behaviour) -> (Box<dyn Solver>, Arc<Calls>) {
    let calls = Arc::new(Calls::default());
    let f = Fake {
        name,
        behaviour,
        calls: Arc::clone(&calls),
    };
    (Box::new(f), calls)
}

fn scalar_search(root: &Root, difficulty: Difficulty, control: &Control) -> Option<Work> {
    let mut nonce = random_start();
    while !control.is_cancelled() {
        control.add_hashes(1);
        if is_valid(root, Work(nonce), difficulty) {
            return Some(Work(nonce));
        }
        nonce = nonce.wrapping_add(1);
    }
    None
}

fn spin(control: &Control) {
    let began = Instant::now();
    while !control.is_cancelled() && began.elapsed() < HANG_GUARD {
        control.add_hashes(1000);
        thread::sleep(Duration::from_millis(1));
    }
}

impl Solver for Fake {
    fn name(&self) -> String {
        self.name.to_string()
    }

    fn solve(
        &self,
        root: &Root,
        difficulty: Difficulty,
        control: &Control,
    ) -> Result<Option<Work>, SolveError> {
        let call = self.calls.started.fetch_add(1, Ordering::SeqCst) + 1;
        let fail = || SolveError::Device {
            device: self.name.to_string(),
            reason: "injected failure".to_string(),
        };
        let result = match &self.behaviour {
            Behaviour::Find { gate } => {
                if let Some((other, after)) = gate {
                    let began = Instant::now();
                    while other.started() < *after
                        && !control.is_cancelled()
                        && began.elapsed() < HANG_GUARD
                    {
                        thread::sleep(Duration::from_millis(1));
                    }
                }
                Ok(scalar_search(root, difficulty, control))
            }
            Behaviour::Spin => {
                spin(control);
                Ok(None)
            }
            Behaviour::Fail => Err(fail()),
            Behaviour::FailFirst(n) if call <= *n => Err(fail()),
            Behaviour::FailFirst(_) => Ok(scalar_search(root, difficulty, control)),
            Behaviour::Invalid => {
                let mut nonce = 0u64;
                while is_valid(root, Work(nonce), difficulty) {
                    nonce += 1;
                }
                Ok(Some(Work(nonce)))
            }
            Behaviour::Panic => panic!("injected panic"),
        };
        self.calls.finished.fetch_add(1, Ordering::SeqCst);
        result
    }
}

fn solve(d: &Dispatcher, difficulty: Difficulty) -> Result<Option<Work>, SolveError> {
    d.solve(&root(), difficulty, &Control::new())
}

#[test]
fn first_answer_wins_and_stops_the_others() {
    let (slow, slow_calls) = fake("slow", Behaviour::Spin);
    let (fast, _) = fake("fast", Behaviour::Find { gate: None });
    let d = Dispatcher::new(vec![slow, fast]);
    let control = Control::new();
    let work = d
        .solve(&root(), EASY, &control)
        .expect("solves")
        .expect("an answer");
    assert!(is_valid(&root(), work, EASY));
    // The slow device was cancelled and has returned: solve joins every device.
    assert_eq!(slow_calls.finished(), 1);
    // The caller's control is not cancelled by the dispatcher's own stop.
    assert!(!control.is_cancelled());
    let stats = d.device_stats();
    assert_eq!(stats.len(), 2);
    assert!(stats.iter().all(|s| !s.dropped && s.strikes == 0));
    assert_eq!(
        control.hashes(),
        stats.iter().map(|s| s.hashes).sum::<u64>(),
        "the caller sees every device's hashes"
    );
    assert!(stats[1].hashes > 0);
}

#[test]
fn cancelling_stops_every_device() {
    let (a, a_calls) = fake("spin a", Behaviour::Spin);
    let (b, b_calls) = fake("spin b", Behaviour::Spin);
    let d = Dispatcher::new(vec![a, b]);
    let control = Control::new();
    let began = Instant::now();
    let result = thread::scope(|s| {
        let job = s.spawn(|| d.solve(&root(), Difficulty(u64::MAX), &control));
        thread::sleep(Duration::from_millis(50));
        control.cancel();
        job.join().expect("no panic")
    });
    assert!(matches!(result, Ok(None)), "{result:?}");
    assert!(began.elapsed() < HANG_GUARD);
    assert_eq!((a_calls.finished(), b_calls.finished()), (1, 1));
    assert!(control.hashes() > 0);
    let stats = d.device_stats();
    assert!(stats.iter().all(|s| s.hashes > 0 && s.rate_hps > 0.0));
}

#[test]
fn a_cancelled_control_returns_at_once() {
    let (a, _) = fake("spin", Behaviour::Spin);
    let d = Dispatcher::new(vec![a]);
    let control = Control::new();
    control.cancel();
    assert!(matches!(
        d.solve(&root(), Difficulty(u64::MAX), &control),
        Ok(None)
    ));
}

/// A device that keeps failing is restarted, struck out, dropped, and the job completes on the
/// other one; later jobs do not call it again.
fn failing_device_is_dropped(behaviour: Behaviour, expect_reason: &str) {
    let (bad, bad_calls) = fake("bad", behaviour);
    let (good, _) = fake(
        "good",
        Behaviour::Find {
            gate: Some((Arc::clone(&bad_calls), MAX_STRIKES)),
        },
    );
    let d = Dispatcher::new(vec![bad, good]);
    let work = solve(&d, EASY).expect("solves").expect("an answer");
    assert!(is_valid(&root(), work, EASY));
    assert_eq!(
        bad_calls.started(),
        MAX_STRIKES,
        "restarted until struck out"
    );
    let stats = d.device_stats();
    assert!(stats[0].dropped, "{stats:?}");
    assert_eq!(stats[0].strikes, MAX_STRIKES);
    assert_eq!(stats[0].total_failures, u64::from(MAX_STRIKES));
    let reason = stats[0].last_error.as_deref().unwrap_or_default();
    assert!(reason.contains(expect_reason), "{reason}");
    assert!(!stats[1].dropped);
    assert_eq!(d.active_devices(), 1);

    let work = solve(&d, EASY).expect("solves").expect("an answer");
    assert!(is_valid(&root(), work, EASY));
    assert_eq!(
        bad_calls.started(),
        MAX_STRIKES,
        "a dropped device is not called"
    );
}

#[test]
fn erroring_device_is_dropped_and_the_job_completes() {
    failing_device_is_dropped(Behaviour::Fail, "injected failure");
}

#[test]
fn invalid_work_is_caught_and_the_device_dropped() {
    failing_device_is_dropped(Behaviour::Invalid, "invalid work");
}

#[test]
fn panicking_device_is_dropped() {
    failing_device_is_dropped(Behaviour::Panic, "panicked");
}

#[test]
fn a_success_clears_strikes() {
    let (flaky, calls) = fake("flaky", Behaviour::FailFirst(MAX_STRIKES - 1));
    let d = Dispatcher::new(vec![flaky]);
    let work = solve(&d, EASY).expect("solves").expect("an answer");
    assert!(is_valid(&root(), work, EASY));
    assert_eq!(calls.started(), MAX_STRIKES);
    let stats = d.device_stats();
    assert_eq!(stats[0].strikes, 0);
    assert_eq!(stats[0].total_failures, u64::from(MAX_STRIKES - 1));
    assert!(!stats[0].dropped);
}

#[test]
fn no_devices_when_all_fail() {
    let (a, a_calls) = fake("fail a", Behaviour::Fail);
    let (b, b_calls) = fake("invalid b", Behaviour::Invalid);
    let d = Dispatcher::new(vec![a, b]);
    assert!(matches!(solve(&d, EASY), Err(SolveError::NoDevices)));
    assert_eq!(
        (a_calls.started(), b_calls.started()),
        (MAX_STRIKES, MAX_STRIKES)
    );
    assert_eq!(d.active_devices(), 0);
    assert!(matches!(solve(&d, EASY), Err(SolveError::NoDevices)));
    assert_eq!(a_calls.started(), MAX_STRIKES);
}

#[test]
fn an_empty_dispatcher_has_no_devices() {
    let d = Dispatcher::new(Vec::new());
    assert!(d.is_empty());
    assert!(matches!(solve(&d, EASY), Err(SolveError::NoDevices)));
}

#[test]
fn names_and_rates() {
    let (a, _) = fake("spin a", Behaviour::Spin);
    let (b, _) = fake("spin b", Behaviour::Spin);
    let d = Dispatcher::new(vec![a, b]);
    assert_eq!(d.name(), "dispatch [spin a, spin b]");
    let rate = measure_rate(&d, Duration::from_millis(50)).expect("measures");
    assert!(rate > 0.0);
    let stats = d.device_stats();
    assert_eq!(stats[0].name, "spin a");
    assert!(stats.iter().all(|s| s.rate_hps > 0.0));
}
