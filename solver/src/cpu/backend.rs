//! The instruction sets the CPU solver can hash with, and run-time detection of them.

use std::fmt;
use std::str::FromStr;

use crate::SolveError;

/// An instruction set for the CPU kernel, best first.
///
/// Every backend computes the same values; they differ only in speed. [`Backend::detect`]
/// picks the best one this CPU supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// AVX-512 (F and VL): eight nonces per step in 512-bit registers, native 64-bit rotates.
    Avx512,
    /// AVX2: four nonces per step in 256-bit registers.
    Avx2,
    /// No target features: runs on any CPU (two nonces per step, in SSE2 registers on x86-64).
    Portable,
}

impl Backend {
    /// Every backend, best first.
    pub const ALL: [Backend; 3] = [Backend::Avx512, Backend::Avx2, Backend::Portable];

    /// The best backend this CPU supports.
    pub fn detect() -> Backend {
        Self::ALL
            .into_iter()
            .find(|b| b.is_supported())
            .unwrap_or(Backend::Portable)
    }

    /// The backends this CPU supports, best first ([`Backend::Portable`] is always last).
    pub fn available() -> Vec<Backend> {
        Self::ALL.into_iter().filter(|b| b.is_supported()).collect()
    }

    /// Whether this CPU has the instructions this backend needs (checked at run time).
    pub fn is_supported(self) -> bool {
        match self {
            Backend::Portable => true,
            #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
            Backend::Avx512 => {
                std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512vl")
            }
            #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
            Backend::Avx2 => std::is_x86_feature_detected!("avx2"),
            #[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
            Backend::Avx512 | Backend::Avx2 => false,
        }
    }

    /// The backend's short name: `"avx512"`, `"avx2"` or `"portable"`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Avx512 => "avx512",
            Backend::Avx2 => "avx2",
            Backend::Portable => "portable",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = SolveError;

    /// A backend's name, any case: `"avx512"`, `"avx2"` or `"portable"`.
    fn from_str(s: &str) -> Result<Self, SolveError> {
        Self::ALL
            .into_iter()
            .find(|b| b.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                SolveError::Config(format!(
                    "unknown cpu backend {s:?}, expected avx512, avx2 or portable"
                ))
            })
    }
}
