//! [`CpuSolver`]: one job at a time spread over a dedicated rayon pool.
//!
//! Each pool thread searches its own slice of the nonce space in batches of [`BATCH`] nonces,
//! checking between batches whether another thread has found work or the job was cancelled.
//! A batch takes tens of microseconds, so a cancel reaches every thread well within a
//! millisecond, and a finished job wastes at most one batch per thread.

use std::sync::atomic::{AtomicBool, Ordering};

use dpow_protocol::{Difficulty, Root, Work};

use super::Backend;
use super::arch::Kernel;
use super::kernel::Job;
use crate::{Control, SolveError, Solver, random_start, revalidate};

/// Nonces a thread hashes between two looks at the stop and cancel flags.
///
/// About 30 µs with AVX-512 and 200 µs on the portable path: far below the 10 ms a cancel may
/// take, and small next to the 2^16 hashes of the easiest jobs.
const BATCH: u64 = 1024;
/// Batches between two additions to the shared hash counter, so that threads do not fight
/// over its cache line (about 0.5 ms of hashing with AVX-512).
const REPORT_EVERY: u64 = 16;
/// The most threads one solver may run.
pub const MAX_THREADS: usize = 1024;

/// A CPU proof-of-work solver: a pool of `threads` threads running one SIMD backend.
///
/// The pool is created once, with the solver; a job only wakes its threads (tens of
/// microseconds). Jobs given to one solver from several threads at once share its threads: each
/// thread takes the jobs in turn, finishing one before starting the next.
#[derive(Debug)]
pub struct CpuSolver {
    pool: rayon::ThreadPool,
    threads: usize,
    kernel: Kernel,
}

impl CpuSolver {
    /// A solver with `threads` threads (0: one per core) using the best backend of this CPU.
    pub fn new(threads: usize) -> Result<Self, SolveError> {
        Self::with_backend(threads, Backend::detect())
    }

    /// A solver with `threads` threads (0: one per core) using `backend`.
    ///
    /// Fails with [`SolveError::Unsupported`] if this CPU lacks the backend's instructions,
    /// and with [`SolveError::Config`] for more than [`MAX_THREADS`] threads.
    pub fn with_backend(threads: usize, backend: Backend) -> Result<Self, SolveError> {
        let kernel = Kernel::new(backend)?;
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n if n > MAX_THREADS => {
                return Err(SolveError::Config(format!(
                    "{n} cpu threads asked for, at most {MAX_THREADS} allowed"
                )));
            }
            n => n,
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("dpow-cpu-{i}"))
            .build()
            .map_err(|e| SolveError::Device {
                device: format!("cpu {backend}"),
                reason: format!("cannot start {threads} threads: {e}"),
            })?;
        Ok(CpuSolver {
            pool,
            threads,
            kernel,
        })
    }

    /// How many threads this solver hashes on.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The instruction set this solver hashes with.
    pub fn backend(&self) -> Backend {
        self.kernel.backend()
    }

    /// Like [`Solver::solve`], but starting at nonce `start` instead of a random one.
    ///
    /// Thread `i` of `n` searches upwards from `start + i · 2^64 / n` (wrapping), so with one
    /// thread the answer is the first valid nonce at or after `start`.
    pub fn solve_from(
        &self,
        root: &Root,
        difficulty: Difficulty,
        start: u64,
        control: &Control,
    ) -> Result<Option<Work>, SolveError> {
        let job = Job::new(root.words(), difficulty.0);
        let stride = slice_len(self.threads);
        let stop = AtomicBool::new(false);
        let kernel = self.kernel;
        let found = self.pool.broadcast(|ctx| {
            let first = start.wrapping_add(stride.wrapping_mul(ctx.index() as u64));
            search_thread(kernel, &job, first, &stop, control)
        });
        match found.into_iter().flatten().next() {
            Some(nonce) => revalidate(&self.name(), root, difficulty, Work(nonce)).map(Some),
            None => Ok(None),
        }
    }
}

impl Solver for CpuSolver {
    fn name(&self) -> String {
        format!("cpu {} x{}", self.backend(), self.threads)
    }

    fn solve(
        &self,
        root: &Root,
        difficulty: Difficulty,
        control: &Control,
    ) -> Result<Option<Work>, SolveError> {
        self.solve_from(root, difficulty, random_start(), control)
    }
}

/// `2^64 / threads`, the size of each thread's slice of the nonce space (0 meaning 2^64).
fn slice_len(threads: usize) -> u64 {
    let threads = threads.max(1) as u128;
    ((1u128 << 64) / threads) as u64
}

/// One thread's search: batch after batch from `start` until a hit, another thread's hit, or
/// a cancel. Counts its hashes into `control`.
fn search_thread(
    kernel: Kernel,
    job: &Job,
    start: u64,
    stop: &AtomicBool,
    control: &Control,
) -> Option<u64> {
    let mut nonce = start;
    let mut batches = 0u64;
    let mut unreported = 0u64;
    let found = loop {
        if stop.load(Ordering::Relaxed) || control.is_cancelled() {
            break None;
        }
        if let Some(hit) = kernel.search(job, nonce, BATCH) {
            stop.store(true, Ordering::Relaxed);
            unreported += hit.wrapping_sub(nonce) + 1;
            break Some(hit);
        }
        nonce = nonce.wrapping_add(BATCH);
        unreported += BATCH;
        batches += 1;
        if batches == REPORT_EVERY {
            control.add_hashes(unreported);
            unreported = 0;
            batches = 0;
        }
    };
    control.add_hashes(unreported);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_cover_the_nonce_space() {
        assert_eq!(slice_len(1), 0); // the whole space: thread 0 starts at `start`
        assert_eq!(slice_len(2), 1 << 63);
        assert_eq!(slice_len(4), 1 << 62);
        assert_eq!(slice_len(3), u64::MAX / 3);
    }
}
