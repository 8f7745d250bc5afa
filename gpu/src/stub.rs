//! The API of the OpenCL backend in a build without the `opencl` feature.
//!
//! Same names and signatures as the real thing, so callers need no `cfg`: listing and opening
//! report [`GpuError::NotCompiled`], and no [`GpuSolver`] can exist.

use std::convert::Infallible;

use dpow_protocol::{Difficulty, Root, Work};
use dpow_solver::{Control, SolveError, Solver};

use crate::{DeviceInfo, DeviceSpec, GpuError, GpuOptions};

/// An OpenCL device running the Nano work kernel (never constructed in this build).
#[derive(Debug)]
pub struct GpuSolver {
    never: Infallible,
}

impl GpuSolver {
    /// Always [`GpuError::NotCompiled`] in this build.
    pub fn new(spec: DeviceSpec) -> Result<GpuSolver, GpuError> {
        Self::with_options(spec, GpuOptions::default())
    }

    /// Always [`GpuError::NotCompiled`] in this build.
    pub fn with_options(_spec: DeviceSpec, _options: GpuOptions) -> Result<GpuSolver, GpuError> {
        Err(GpuError::NotCompiled)
    }

    /// The device this solver runs on.
    pub fn info(&self) -> &DeviceInfo {
        match self.never {}
    }

    /// The hash rate measured on the last launch.
    pub fn measured_rate(&self) -> f64 {
        match self.never {}
    }

    /// Search upwards from nonce `start`.
    pub fn solve_from(
        &self,
        _root: &Root,
        _difficulty: Difficulty,
        _start: u64,
        _control: &Control,
    ) -> Result<Option<Work>, SolveError> {
        match self.never {}
    }

    /// Search exactly `count` nonces from `start`.
    pub fn search_range(
        &self,
        _root: &Root,
        _difficulty: Difficulty,
        _start: u64,
        _count: u64,
        _control: &Control,
    ) -> Result<Option<Work>, SolveError> {
        match self.never {}
    }

    /// Wait for everything queued on the device.
    pub fn finish(&self) -> Result<(), SolveError> {
        match self.never {}
    }
}

impl Solver for GpuSolver {
    fn name(&self) -> String {
        match self.never {}
    }

    fn solve(
        &self,
        _root: &Root,
        _difficulty: Difficulty,
        _control: &Control,
    ) -> Result<Option<Work>, SolveError> {
        match self.never {}
    }
}

/// Always [`GpuError::NotCompiled`] in this build.
pub fn list_devices() -> Result<Vec<DeviceInfo>, GpuError> {
    Err(GpuError::NotCompiled)
}

/// Always [`GpuError::NotCompiled`] in this build (or empty for no specs).
pub fn open_all(specs: &[DeviceSpec], _options: &GpuOptions) -> Result<Vec<GpuSolver>, GpuError> {
    if specs.is_empty() {
        Ok(Vec::new())
    } else {
        Err(GpuError::NotCompiled)
    }
}
