//! The crate's one error type.
//!
//! Messages are written for the person running `dpow gpu list` or `dpow worker --gpu`: the
//! no-platform case says what to install and how to check it.

/// What can go wrong finding, opening or building for an OpenCL device.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// This build has no OpenCL support compiled in.
    #[error(
        "this build has no opencl support: rebuild with the `opencl` cargo feature \
         (it links against libOpenCL; install `ocl-icd-opencl-dev` first)"
    )]
    NotCompiled,
    /// No OpenCL platform (driver) is installed, or the loader found none.
    #[error(
        "no opencl platform found ({0}): install your GPU vendor's OpenCL driver, or \
         `pocl-opencl-icd` for a CPU-only OpenCL, then check that `clinfo` lists a platform"
    )]
    NoPlatform(String),
    /// Platforms exist but none has a device.
    #[error(
        "no opencl device found ({0}): install your GPU vendor's OpenCL driver, or \
         `pocl-opencl-icd` for a CPU-only OpenCL, then check that `clinfo` lists a device"
    )]
    NoDevice(String),
    /// A device spec that is neither `PLATFORM:DEVICE` nor `all`.
    #[error("invalid gpu device `{0}`: expected PLATFORM:DEVICE (such as `0:1`) or `all`")]
    BadSpec(String),
    /// A spec names a platform or device that does not exist.
    #[error("no opencl device {spec}: {reason} (see `dpow gpu list`)")]
    NoSuchDevice {
        /// The spec as given.
        spec: String,
        /// What is missing.
        reason: String,
    },
    /// `all` was given where exactly one device is needed.
    #[error("`all` names every device; open them with `dpow_gpu::open_all`")]
    NotOneDevice,
    /// An OpenCL call failed.
    #[error("opencl error on {device}: {reason}")]
    OpenCl {
        /// The device (or platform) it happened on.
        device: String,
        /// The runtime's message.
        reason: String,
    },
    /// The kernel did not compile for a device; `log` is the compiler's output.
    #[error("kernel build failed on {device}: {log}")]
    Build {
        /// The device.
        device: String,
        /// The build log or error.
        log: String,
    },
    /// An option is out of range.
    #[error("invalid gpu option: {0}")]
    Config(String),
}
