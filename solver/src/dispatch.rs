//! One job over several devices: every enabled CPU pool and GPU searches at once.
//!
//! Search is memoryless, so devices need no coordination beyond starting at different nonces
//! (each backend starts at [`random_start`](crate::random_start)) and stopping together. The
//! [`Dispatcher`] runs each device on its own thread under a child [`Control`] (shared cancel
//! flag, its own hash counter), re-validates every answer, takes the first valid one and cancels
//! the rest. The caller's control is only read: its cancel flag is forwarded to the devices and
//! their hashes are added to its counter as they happen, so it can be reused for the next job.
//!
//! A device that errors or returns invalid work gets a strike and is restarted on the same job;
//! [`MAX_STRIKES`] strikes in a row drop it for good, with a warning naming the device and the
//! reason, and the job goes on on the others. With no device left a job fails with
//! [`SolveError::NoDevices`]. [`Dispatcher::device_stats`] reports each device's hashes and rate
//! over the last job.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use dpow_protocol::{Difficulty, Root, Work};

use crate::{Control, SolveError, Solver, revalidate};

/// Failures in a row after which a device is dropped.
pub const MAX_STRIKES: u32 = 3;

/// How often the dispatcher forwards the caller's cancel flag and hash count.
const POLL: Duration = Duration::from_millis(2);

/// A device's record, as [`Dispatcher::device_stats`] reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceStat {
    /// The device's name ([`Solver::name`]).
    pub name: String,
    /// Hashes it did in the last job it ran.
    pub hashes: u64,
    /// Its hash rate over that job, in hashes per second.
    pub rate_hps: f64,
    /// Failures in a row (reset by a job that ends without error).
    pub strikes: u32,
    /// Failures since the dispatcher was built.
    pub total_failures: u64,
    /// Whether it has been dropped after [`MAX_STRIKES`] failures in a row.
    pub dropped: bool,
    /// Its last failure, if any.
    pub last_error: Option<String>,
}

/// Runs one job on every device at once; see the [module docs](self).
pub struct Dispatcher {
    devices: Vec<Box<dyn Solver>>,
    stats: Mutex<Vec<DeviceStat>>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("devices", &self.device_stats())
            .finish()
    }
}

/// What one device's thread reports when it stops.
type Report = (usize, Result<Option<Work>, SolveError>);

impl Dispatcher {
    /// A dispatcher over `devices` (CPU pools, GPUs, …), all enabled.
    pub fn new(devices: Vec<Box<dyn Solver>>) -> Self {
        let stats = devices
            .iter()
            .map(|d| DeviceStat {
                name: d.name(),
                hashes: 0,
                rate_hps: 0.0,
                strikes: 0,
                total_failures: 0,
                dropped: false,
                last_error: None,
            })
            .collect();
        Self {
            devices,
            stats: Mutex::new(stats),
        }
    }

    /// Every device's record, in the order given to [`Dispatcher::new`], dropped ones included.
    pub fn device_stats(&self) -> Vec<DeviceStat> {
        self.stats().clone()
    }

    /// How many devices are still enabled.
    pub fn active_devices(&self) -> usize {
        self.stats().iter().filter(|s| !s.dropped).count()
    }

    /// How many devices the dispatcher was built with.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Whether it was built with no device at all.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    fn stats(&self) -> MutexGuard<'_, Vec<DeviceStat>> {
        // Stats are plain counters: a panic elsewhere cannot leave them inconsistent.
        self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Record a failure of device `i`; true if that drops it.
    fn strike(&self, i: usize, error: &SolveError) -> bool {
        let mut stats = self.stats();
        let s = &mut stats[i];
        s.strikes += 1;
        s.total_failures += 1;
        s.last_error = Some(error.to_string());
        if s.strikes >= MAX_STRIKES && !s.dropped {
            s.dropped = true;
            tracing::warn!(
                device = %s.name,
                reason = %error,
                strikes = s.strikes,
                "dropping solver device after {MAX_STRIKES} failures in a row; \
                 jobs go on on the remaining devices"
            );
            return true;
        }
        tracing::warn!(
            device = %s.name,
            reason = %error,
            strike = s.strikes,
            "solver device failed; restarting it"
        );
        s.dropped
    }

    /// Device `i` stopped without error.
    fn clear_strikes(&self, i: usize) {
        self.stats()[i].strikes = 0;
    }
}

impl Solver for Dispatcher {
    fn name(&self) -> String {
        let names: Vec<String> = self.devices.iter().map(|d| d.name()).collect();
        format!("dispatch [{}]", names.join(", "))
    }

    fn devices(&self) -> Vec<DeviceStat> {
        self.device_stats()
    }

    fn solve(
        &self,
        root: &Root,
        difficulty: Difficulty,
        control: &Control,
    ) -> Result<Option<Work>, SolveError> {
        if control.is_cancelled() {
            return Ok(None);
        }
        let active: Vec<usize> = {
            let stats = self.stats();
            (0..self.devices.len())
                .filter(|&i| !stats[i].dropped)
                .collect()
        };
        if active.is_empty() {
            return Err(SolveError::NoDevices);
        }
        // The job's own control: cancelled on the first answer without touching the caller's.
        let job = Control::new();
        let children: Vec<Control> = self.devices.iter().map(|_| job.child()).collect();
        let names: Vec<String> = self.stats().iter().map(|s| s.name.clone()).collect();
        let began = Instant::now();
        let (tx, rx) = mpsc::channel::<Report>();

        let answer = thread::scope(|scope| {
            let spawn = |i: usize| {
                let tx = tx.clone();
                let device = &*self.devices[i];
                let child = &children[i];
                let name = &names[i];
                scope.spawn(move || {
                    let result =
                        catch_unwind(AssertUnwindSafe(|| device.solve(root, difficulty, child)))
                            .unwrap_or_else(|_| {
                                Err(SolveError::Device {
                                    device: name.clone(),
                                    reason: "the solver panicked".to_string(),
                                })
                            });
                    // The receiver lives until every thread has reported.
                    let _ = tx.send((i, result));
                });
            };
            for &i in &active {
                spawn(i);
            }
            let mut running = active.len();
            let mut answer = None;
            let mut forwarded = 0u64;
            while running > 0 {
                match rx.recv_timeout(POLL) {
                    Ok((i, result)) => {
                        running -= 1;
                        let checked = result.and_then(|found| match found {
                            Some(work) => revalidate(&names[i], root, difficulty, work).map(Some),
                            None => Ok(None),
                        });
                        match checked {
                            Ok(found) => {
                                self.clear_strikes(i);
                                if let (Some(work), None) = (found, answer) {
                                    answer = Some(work);
                                    job.cancel();
                                }
                            }
                            Err(e) => {
                                let dropped = self.strike(i, &e);
                                if !dropped && !job.is_cancelled() {
                                    spawn(i);
                                    running += 1;
                                }
                            }
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
                if control.is_cancelled() {
                    job.cancel();
                }
                let total: u64 = children.iter().map(Control::hashes).sum();
                control.add_hashes(total - forwarded);
                forwarded = total;
            }
            answer
        });

        let elapsed = began.elapsed().as_secs_f64().max(1e-9);
        let mut stats = self.stats();
        for &i in &active {
            let hashes = children[i].hashes();
            stats[i].hashes = hashes;
            stats[i].rate_hps = hashes as f64 / elapsed;
        }
        match answer {
            Some(work) => Ok(Some(work)),
            None if stats.iter().all(|s| s.dropped) => Err(SolveError::NoDevices),
            None => Ok(None),
        }
    }
}

/// A solver's hash rate in hashes per second: it searches an impossible difficulty for
/// `duration` and is then cancelled. For `dpow bench`; after measuring a [`Dispatcher`], its
/// [`Dispatcher::device_stats`] hold each device's share.
pub fn measure_rate(solver: &dyn Solver, duration: Duration) -> Result<f64, SolveError> {
    const TICK: Duration = Duration::from_millis(5);
    let control = Control::new();
    let began = Instant::now();
    let result = thread::scope(|scope| {
        scope.spawn(|| {
            while began.elapsed() < duration && !control.is_cancelled() {
                thread::sleep(TICK.min(duration.saturating_sub(began.elapsed())));
            }
            control.cancel();
        });
        // A fixed root: the rate does not depend on it. Difficulty 2^64 - 1 is never met in
        // practice (one chance in 2^64 per hash), and a hit would not spoil the measurement.
        let result = solver.solve(&Root([0x5a; 32]), Difficulty(u64::MAX), &control);
        control.cancel();
        result
    });
    result?;
    Ok(control.hashes() as f64 / began.elapsed().as_secs_f64().max(1e-9))
}
