//! Run-time selection of the kernel's instruction set.
//!
//! [`kernel`] is plain Rust; here it is instantiated inside
//! `#[target_feature]` functions, one per [`Backend`], so that LLVM may use AVX-512 or AVX2
//! for it while the rest of the binary stays at the baseline target. A [`Kernel`] can only be
//! made for a backend that [`Backend::is_supported`] confirmed, which is what makes calling
//! those functions sound.

use super::Backend;
use super::kernel::{self, Job};
use crate::SolveError;

/// Lanes per step of the portable path. On x86-64 LLVM vectorises two lanes with baseline
/// SSE2 (one 128-bit register per state word, rotations as shifts); measured on a Xeon, that
/// was about 8% faster than one scalar lane and level with four lanes.
const PORTABLE_LANES: usize = 2;

/// A backend whose instructions this CPU has been checked to support.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Kernel {
    backend: Backend,
}

impl Kernel {
    /// The kernel for `backend`, or [`SolveError::Unsupported`] if this CPU lacks it.
    pub(crate) fn new(backend: Backend) -> Result<Self, SolveError> {
        if backend.is_supported() {
            Ok(Kernel { backend })
        } else {
            Err(SolveError::Unsupported(format!("cpu {backend}")))
        }
    }

    /// Which backend this is.
    pub(crate) fn backend(self) -> Backend {
        self.backend
    }

    /// The first nonce in `start .. start + count` (wrapping) that meets the job's threshold.
    #[inline]
    pub(crate) fn search(self, job: &Job, start: u64, count: u64) -> Option<u64> {
        match self.backend {
            #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
            // SAFETY: `Kernel::new` made this kernel only after `Backend::is_supported`
            // detected avx512f and avx512vl on this CPU, and the field is private.
            Backend::Avx512 => unsafe { x86::search_avx512(job, start, count) },
            #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
            // SAFETY: `Kernel::new` made this kernel only after `Backend::is_supported`
            // detected avx2 on this CPU, and the field is private.
            Backend::Avx2 => unsafe { x86::search_avx2(job, start, count) },
            _ => kernel::search(job.threshold, start, count, |base| hash_portable(job, base)),
        }
    }

    /// The work values of nonces `start, start + 1, …` (wrapping), one per element of `out`.
    pub(crate) fn values(self, job: &Job, start: u64, out: &mut [u64]) {
        match self.backend {
            #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
            // SAFETY: as in `search`: the CPU was checked for avx512f and avx512vl.
            Backend::Avx512 => unsafe { x86::values_avx512(job, start, out) },
            #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
            // SAFETY: as in `search`: the CPU was checked for avx2.
            Backend::Avx2 => unsafe { x86::values_avx2(job, start, out) },
            _ => kernel::values(start, out, |base| hash_portable(job, base)),
        }
    }
}

/// One portable step, kept out of line (see [`kernel::search`]).
#[inline(never)]
fn hash_portable(job: &Job, base: u64) -> [u64; PORTABLE_LANES] {
    kernel::hash(job, base)
}

/// The kernel compiled for x86 vector extensions.
///
/// Each backend has an out-of-line step function (`hash_*`, one step of `*_LANES` nonces)
/// and the loops around it, all under the same target features.
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
mod x86 {
    use super::kernel::{self, Job};

    /// Lanes per AVX-512 step: one 512-bit register per state word. Sixteen lanes measured
    /// no faster; four (256-bit registers under AVX-512VL) about 35% slower.
    const AVX512_LANES: usize = 8;
    /// Lanes per AVX2 step: one 256-bit register per state word. Eight lanes (two
    /// registers) measured the same and doubles the code.
    const AVX2_LANES: usize = 4;

    #[inline(never)]
    #[target_feature(enable = "avx512f,avx512vl")]
    fn hash_avx512(job: &Job, base: u64) -> [u64; AVX512_LANES] {
        kernel::hash(job, base)
    }

    #[target_feature(enable = "avx512f,avx512vl")]
    pub(super) fn search_avx512(job: &Job, start: u64, count: u64) -> Option<u64> {
        kernel::search(job.threshold, start, count, |base| hash_avx512(job, base))
    }

    #[target_feature(enable = "avx512f,avx512vl")]
    pub(super) fn values_avx512(job: &Job, start: u64, out: &mut [u64]) {
        kernel::values(start, out, |base| hash_avx512(job, base));
    }

    #[inline(never)]
    #[target_feature(enable = "avx2")]
    fn hash_avx2(job: &Job, base: u64) -> [u64; AVX2_LANES] {
        kernel::hash(job, base)
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn search_avx2(job: &Job, start: u64, count: u64) -> Option<u64> {
        kernel::search(job.threshold, start, count, |base| hash_avx2(job, base))
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn values_avx2(job: &Job, start: u64, out: &mut [u64]) {
        kernel::values(start, out, |base| hash_avx2(job, base));
    }
}
