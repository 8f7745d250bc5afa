//! The OpenCL backend of dpow's proof-of-work solvers.
//!
//! - [`GpuSolver`]: one OpenCL device running the Nano work kernel (`kernel.cl`), implementing
//!   [`dpow_solver::Solver`]; every answer is re-validated on the CPU before it is returned.
//! - [`list_devices`] and [`DeviceSpec`]: what `dpow gpu list` shows and `--gpu P:D` / `--gpu all`
//!   selects.
//! - [`open_all`]: open every device a list of specs names, for a
//!   `dpow_solver::dispatch::Dispatcher` to run beside the CPU.
//!
//! The OpenCL half is behind the `opencl` cargo feature, because it links against the system's
//! `libOpenCL`. Without it the crate has the same API: specs parse, and listing or opening
//! devices returns [`GpuError::NotCompiled`] ([`OPENCL_ENABLED`] says which build this is).
#![deny(missing_docs)]

mod error;
#[cfg(any(feature = "opencl", test))]
mod launch;
mod spec;

#[cfg(feature = "opencl")]
mod device;
#[cfg(feature = "opencl")]
mod solver;
#[cfg(not(feature = "opencl"))]
mod stub;

use std::time::Duration;

pub use error::GpuError;
pub use spec::{DeviceInfo, DeviceSpec};

#[cfg(feature = "opencl")]
pub use device::list_devices;
#[cfg(feature = "opencl")]
pub use solver::{GpuSolver, open_all};
#[cfg(not(feature = "opencl"))]
pub use stub::{GpuSolver, list_devices, open_all};

/// Whether this build has OpenCL support (the `opencl` cargo feature).
pub const OPENCL_ENABLED: bool = cfg!(feature = "opencl");

/// The OpenCL C source of the Nano work kernel.
pub const KERNEL_SOURCE: &str = include_str!("kernel.cl");

/// Default nonces hashed by each work-item per launch.
pub const DEFAULT_PER_ITEM: u32 = 64;

/// How a [`GpuSolver`] runs its device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuOptions {
    /// Nonces each work-item hashes per launch ([`DEFAULT_PER_ITEM`]). More amortises the
    /// per-work-item cost; fewer spreads a small launch over more lanes.
    pub per_item: u32,
    /// Nonces each work-item hashes at once in a vector: 1, 2, 4, 8 or 16. `None` takes the
    /// device's preferred 64-bit vector width ([`DeviceInfo::long_vector_width`]).
    pub lanes: Option<u32>,
    /// Longest wanted launch; cancellation is noticed between launches (10 ms).
    pub max_launch: Duration,
    /// Hash exactly this many nonces per launch instead of adapting to rate and difficulty
    /// (for benchmarks of a given work size).
    pub fixed_launch: Option<u64>,
    /// Build a deliberately broken kernel, to exercise the failure path in tests.
    pub fault: Option<Fault>,
}

impl Default for GpuOptions {
    fn default() -> Self {
        Self {
            per_item: DEFAULT_PER_ITEM,
            lanes: None,
            max_launch: Duration::from_millis(10),
            fixed_launch: None,
            fault: None,
        }
    }
}

/// A fault to build into the kernel, for tests of re-validation and device dropping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// The kernel ignores the threshold and reports a nonce from every launch, as a device
    /// computing wrong hashes would; the host's re-validation must catch it.
    IgnoreThreshold,
}
