//! Finding OpenCL platforms and devices, and resolving a [`DeviceSpec`] to them.
//!
//! `ocl::Platform::list()` panics when no OpenCL driver (ICD) is installed, after retrying for
//! about ten seconds, and `ocl::core::get_platform_ids` shares the retry loop. So the loader is
//! asked once directly first: with no ICD it answers `CL_PLATFORM_NOT_FOUND_KHR` at once, and we
//! turn that into [`GpuError::NoPlatform`] with a hint instead of a ten-second stall.

use std::ptr;
use std::thread;
use std::time::Duration;

use ocl::enums::{DeviceInfo as ClDeviceInfo, DeviceInfoResult, Status};
use ocl::flags::DeviceType;
use ocl::{Device, Platform};

use crate::{DeviceInfo, DeviceSpec, GpuError};

/// Quick checks of the loader before the slow path; a few, for loaders that wake up lazily.
const LOADER_TRIES: u32 = 3;
const LOADER_RETRY: Duration = Duration::from_millis(50);

/// One resolved device, ready to open.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub(crate) platform: Platform,
    pub(crate) device: Device,
    pub(crate) info: DeviceInfo,
}

/// Every OpenCL platform, in the loader's order (the `P` of `P:D`).
fn platforms() -> Result<Vec<Platform>, GpuError> {
    let not_found = Status::CL_PLATFORM_NOT_FOUND_KHR as i32;
    let mut count: ocl::ffi::cl_uint = 0;
    let mut status = not_found;
    for attempt in 0..LOADER_TRIES {
        if attempt > 0 {
            thread::sleep(LOADER_RETRY);
        }
        // SAFETY: with zero entries and a null list, clGetPlatformIDs writes only the platform
        // count, through a pointer to a live local.
        status = unsafe { ocl::ffi::clGetPlatformIDs(0, ptr::null_mut(), &mut count) };
        if status != not_found {
            break;
        }
    }
    if status == not_found {
        return Err(GpuError::NoPlatform(
            "no OpenCL driver (ICD) is registered".to_string(),
        ));
    }
    if status != 0 {
        return Err(GpuError::NoPlatform(format!(
            "the OpenCL loader failed with status {status}"
        )));
    }
    if count == 0 {
        return Err(GpuError::NoPlatform(
            "the OpenCL loader lists no platforms".to_string(),
        ));
    }
    let ids = ocl::core::get_platform_ids().map_err(|e| GpuError::NoPlatform(e.to_string()))?;
    Ok(Platform::list_from_core(ids))
}

fn cl_err(what: &str) -> impl Fn(ocl::Error) -> GpuError + '_ {
    move |e| GpuError::OpenCl {
        device: what.to_string(),
        reason: e.to_string(),
    }
}

fn kind_name(t: DeviceType) -> &'static str {
    if t.contains(DeviceType::GPU) {
        "gpu"
    } else if t.contains(DeviceType::CPU) {
        "cpu"
    } else if t.contains(DeviceType::ACCELERATOR) {
        "accelerator"
    } else {
        "other"
    }
}

fn describe(
    platform_index: usize,
    device_index: usize,
    platform: &Platform,
    device: &Device,
) -> Result<DeviceInfo, GpuError> {
    let spec = DeviceSpec::index(platform_index, device_index).to_string();
    let err = cl_err(&spec);
    let platform_name = platform.name().map_err(&err)?;
    let name = device.name().map_err(&err)?;
    let kind = match device.info(ClDeviceInfo::Type).map_err(&err)? {
        DeviceInfoResult::Type(t) => kind_name(t),
        _ => "other",
    };
    let compute_units = match device.info(ClDeviceInfo::MaxComputeUnits).map_err(&err)? {
        DeviceInfoResult::MaxComputeUnits(n) => n,
        _ => 0,
    };
    let global_mem_bytes = match device.info(ClDeviceInfo::GlobalMemSize).map_err(&err)? {
        DeviceInfoResult::GlobalMemSize(n) => n,
        _ => 0,
    };
    let long_vector_width = match device
        .info(ClDeviceInfo::PreferredVectorWidthLong)
        .map_err(&err)?
    {
        DeviceInfoResult::PreferredVectorWidthLong(n) => n,
        _ => 1,
    };
    Ok(DeviceInfo {
        platform: platform_index,
        device: device_index,
        platform_name: platform_name.trim().to_string(),
        name: name.trim().to_string(),
        kind: kind.to_string(),
        compute_units,
        max_work_group_size: device.max_wg_size().map_err(&err)?,
        global_mem_bytes,
        long_vector_width,
    })
}

/// The devices of one platform; a platform whose devices cannot be listed has none.
fn devices_of(platform: &Platform) -> Vec<Device> {
    Device::list_all(platform).unwrap_or_default()
}

/// The devices `spec` names, in `P:D` order.
pub(crate) fn resolve(spec: DeviceSpec) -> Result<Vec<Resolved>, GpuError> {
    let platforms = platforms()?;
    let mut out = Vec::new();
    match spec {
        DeviceSpec::All => {
            for (pi, platform) in platforms.iter().enumerate() {
                for (di, device) in devices_of(platform).into_iter().enumerate() {
                    let info = describe(pi, di, platform, &device)?;
                    out.push(Resolved {
                        platform: *platform,
                        device,
                        info,
                    });
                }
            }
            if out.is_empty() {
                return Err(GpuError::NoDevice(format!(
                    "{} platform(s), none with a device",
                    platforms.len()
                )));
            }
        }
        DeviceSpec::Index { platform, device } => {
            let missing = |reason: String| GpuError::NoSuchDevice {
                spec: spec.to_string(),
                reason,
            };
            let p = platforms.get(platform).ok_or_else(|| {
                missing(format!(
                    "there is no platform {platform} ({} platform(s))",
                    platforms.len()
                ))
            })?;
            let devices = devices_of(p);
            let d = devices.get(device).ok_or_else(|| {
                missing(format!(
                    "platform {platform} has no device {device} ({} device(s))",
                    devices.len()
                ))
            })?;
            let info = describe(platform, device, p, d)?;
            out.push(Resolved {
                platform: *p,
                device: *d,
                info,
            });
        }
    }
    Ok(out)
}

/// Every OpenCL device on this machine, for `dpow gpu list`.
///
/// Never empty: no platform is [`GpuError::NoPlatform`] and platforms without devices are
/// [`GpuError::NoDevice`], both with a hint of what to install.
pub fn list_devices() -> Result<Vec<DeviceInfo>, GpuError> {
    Ok(resolve(DeviceSpec::All)?
        .into_iter()
        .map(|r| r.info)
        .collect())
}
