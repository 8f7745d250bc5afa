//! With no OpenCL driver registered, listing fails at once with a hint of what to install
//! (rather than the ten-second retry and panic of `ocl::Platform::list`). Its own test binary:
//! it points the ICD loader at an empty directory before anything loads OpenCL.
#![allow(clippy::print_stderr)] // a skipped test says why

use std::time::{Duration, Instant};

use dpow_gpu::GpuError;

#[test]
fn no_platform_is_a_plain_error() {
    let empty = std::env::temp_dir().join(format!("dpow-no-icd-{}", std::process::id()));
    std::fs::create_dir_all(&empty).expect("temp dir");
    // SAFETY: the only test in this binary, run before any other thread reads the environment.
    unsafe { std::env::set_var("OCL_ICD_VENDORS", &empty) };
    let began = Instant::now();
    let result = dpow_gpu::list_devices();
    let elapsed = began.elapsed();
    let _ = std::fs::remove_dir(&empty);
    match result {
        Err(e @ GpuError::NoPlatform(_)) => {
            let msg = e.to_string();
            assert!(
                msg.contains("pocl-opencl-icd") && msg.contains("clinfo"),
                "{msg}"
            );
            assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
        }
        Err(GpuError::NotCompiled) if !dpow_gpu::OPENCL_ENABLED => {}
        // A loader that ignores OCL_ICD_VENDORS still finds the real platforms.
        Ok(devices) => eprintln!("loader ignored OCL_ICD_VENDORS; found {devices:?}"),
        Err(e) => panic!("unexpected error: {e}"),
    }
}
