//! The CPU backend: Nano work on every core, with SIMD chosen at run time.
//!
//! [`CpuSolver`] runs one job at a time on a dedicated rayon pool; each thread hashes up to 8
//! nonces per step with a BLAKE2b specialised for the 40-byte work message (`kernel`),
//! compiled for the best [`Backend`] this CPU supports (`arch`). [`search_range`] and
//! [`work_values`] run the same kernels on the calling thread, for tests and tools, and
//! [`measure_rate`] is what `dpow bench` reports.

mod arch;
mod backend;
mod kernel;
mod pool;

use std::time::{Duration, Instant};

use dpow_protocol::{Difficulty, Root, Work};

use crate::{Control, SolveError, Solver, revalidate};
use arch::Kernel;
use kernel::Job;

pub use backend::Backend;
pub use pool::{CpuSolver, MAX_THREADS};

/// Search `count` nonces from `start` upwards (wrapping) on the calling thread with `backend`.
///
/// Returns the first nonce of the range whose work meets `difficulty`, re-validated, or
/// `None` if there is none. Fails with [`SolveError::Unsupported`] if this CPU lacks the
/// backend.
pub fn search_range(
    backend: Backend,
    root: &Root,
    difficulty: Difficulty,
    start: u64,
    count: u64,
) -> Result<Option<Work>, SolveError> {
    let kernel = Kernel::new(backend)?;
    let job = Job::new(root.words(), difficulty.0);
    match kernel.search(&job, start, count) {
        Some(nonce) => {
            revalidate(&format!("cpu {backend}"), root, difficulty, Work(nonce)).map(Some)
        }
        None => Ok(None),
    }
}

/// The work values of nonces `start, start + 1, …` (wrapping) for `root`, computed with
/// `backend`, one per element of `out`. For checking a kernel against a reference.
pub fn work_values(
    backend: Backend,
    root: &Root,
    start: u64,
    out: &mut [u64],
) -> Result<(), SolveError> {
    let kernel = Kernel::new(backend)?;
    kernel.values(&Job::new(root.words(), 0), start, out);
    Ok(())
}

/// Hash rate of `backend` on `threads` threads (0: one per core), in hashes per second.
///
/// Runs a [`CpuSolver`] at an unreachable difficulty for `duration`, then cancels it; the
/// pool's start-up is not counted.
pub fn measure_rate(
    backend: Backend,
    threads: usize,
    duration: Duration,
) -> Result<f64, SolveError> {
    let solver = CpuSolver::with_backend(threads, backend)?;
    let control = Control::new();
    let root = Root([0x5a; 32]);
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let (result, elapsed) = std::thread::scope(|s| {
        let control = &control;
        s.spawn(move || {
            // Wakes early if the solver returns first (a hit at 2^-64 odds, or an error).
            let _ = done_rx.recv_timeout(duration);
            control.cancel();
        });
        let started = Instant::now();
        let result = solver.solve(&root, Difficulty(u64::MAX), control);
        let elapsed = started.elapsed();
        // The timer may already be gone; then there is nobody left to wake.
        let _ = done_tx.send(());
        (result, elapsed)
    });
    result?;
    Ok(control.hashes() as f64 / elapsed.as_secs_f64().max(1e-9))
}
