//! Nano proof-of-work solvers.
//!
//! One synchronous trait, [`Solver`], and its backends: [`cpu`] (every core, SIMD with run-time
//! dispatch) here, OpenCL in the `dpow-gpu` crate. [`dispatch`] spreads one job over several
//! solvers at once and stops them all on the first answer. Every backend re-validates its
//! answer with `dpow_protocol::is_valid` before returning it, so a faulty kernel or device can
//! never hand out bad work.
#![deny(missing_docs)]

pub mod cpu;
pub mod dispatch;

pub use cpu::{Backend, CpuSolver};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use dpow_protocol::{Difficulty, Root, Work};

/// Why a solver could not run a job.
#[derive(Debug, thiserror::Error)]
pub enum SolveError {
    /// The backend asked for is not supported by this machine (e.g. AVX-512 on an older CPU).
    #[error("backend {0} is not supported on this machine")]
    Unsupported(String),
    /// A configuration value is out of range.
    #[error("invalid solver configuration: {0}")]
    Config(String),
    /// A device failed while running the job.
    #[error("device {device} failed: {reason}")]
    Device {
        /// The device's name.
        device: String,
        /// What went wrong.
        reason: String,
    },
    /// A device returned work that does not meet the difficulty (caught by re-validation).
    #[error("device {device} returned invalid work {work} for root {root}")]
    InvalidWork {
        /// The device's name.
        device: String,
        /// The nonce it returned.
        work: Work,
        /// The root it was solving.
        root: Root,
    },
    /// Every device of a dispatcher has failed or been dropped.
    #[error("no working device left")]
    NoDevices,
}

/// Shared control of a running job: a cancel flag, and a counter of hashes done.
///
/// Cheap to clone; clones share the cancel flag. [`Control::child`] shares the cancel flag but
/// counts its own hashes, which is how a dispatcher reports per-device rates.
#[derive(Debug, Clone, Default)]
pub struct Control {
    cancel: Arc<AtomicBool>,
    hashes: Arc<AtomicU64>,
}

impl Control {
    /// A fresh, not-cancelled control.
    pub fn new() -> Self {
        Self::default()
    }

    /// A control that is cancelled with this one but counts hashes separately.
    pub fn child(&self) -> Self {
        Self {
            cancel: Arc::clone(&self.cancel),
            hashes: Arc::default(),
        }
    }

    /// Ask every solver running under this control to stop.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Release);
    }

    /// Whether the job has been cancelled.
    #[inline]
    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Acquire)
    }

    /// Record `n` more hashes done.
    #[inline]
    pub fn add_hashes(&self, n: u64) {
        self.hashes.fetch_add(n, Ordering::Relaxed);
    }

    /// Hashes done so far under this control.
    pub fn hashes(&self) -> u64 {
        self.hashes.load(Ordering::Relaxed)
    }
}

/// A proof-of-work backend.
pub trait Solver: Send + Sync {
    /// A short human-readable name ("cpu avx512 x2", "opencl 0:1 NVIDIA ...").
    fn name(&self) -> String;

    /// Search for work on `root` meeting `difficulty`, until found or `control` is cancelled.
    ///
    /// Returns `Ok(Some(work))` with work that has been re-validated, `Ok(None)` if cancelled
    /// first. Blocks the calling thread; run it on a blocking pool.
    fn solve(
        &self,
        root: &Root,
        difficulty: Difficulty,
        control: &Control,
    ) -> Result<Option<Work>, SolveError>;

    /// Per-device records when this solver spreads jobs over several devices (a
    /// [`Dispatcher`](dispatch::Dispatcher)); empty for a single device, whose rate is the
    /// solver's own.
    fn devices(&self) -> Vec<dispatch::DeviceStat> {
        Vec::new()
    }
}

/// A random 64-bit starting nonce, so that independent searches do not overlap.
///
/// Uses the standard library's per-process random hash keys and a counter: no extra dependency,
/// and distinct on every call.
pub fn random_start() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

/// Check a backend's answer before it leaves the solver.
pub fn revalidate(
    device: &str,
    root: &Root,
    difficulty: Difficulty,
    work: Work,
) -> Result<Work, SolveError> {
    if dpow_protocol::is_valid(root, work, difficulty) {
        Ok(work)
    } else {
        Err(SolveError::InvalidWork {
            device: device.to_string(),
            work,
            root: *root,
        })
    }
}
