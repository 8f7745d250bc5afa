//! Listing and opening devices, and the kernel at every vector width, on a real OpenCL
//! platform. Without OpenCL these print why and pass, unless `DPOW_REQUIRE_OPENCL=1`.
#![allow(clippy::print_stderr)] // a skipped test says why

mod common;

use common::{Rng, best_in_range};
use dpow_gpu::{DeviceSpec, GpuError, GpuOptions, GpuSolver, open_all};
use dpow_protocol::Difficulty;
use dpow_solver::Control;

#[test]
fn lists_devices() {
    if common::solver().is_none() {
        return;
    }
    let devices = dpow_gpu::list_devices().expect("devices listed");
    assert!(!devices.is_empty());
    for d in &devices {
        assert!(!d.name.is_empty() && !d.platform_name.is_empty(), "{d:?}");
        assert!(d.compute_units > 0 && d.max_work_group_size > 0, "{d:?}");
        assert!(["gpu", "cpu", "accelerator", "other"].contains(&d.kind.as_str()));
        assert!(d.to_string().starts_with(&d.spec().to_string()), "{d}");
    }
    let all = open_all(
        &[DeviceSpec::All, devices[0].spec()],
        &GpuOptions::default(),
    )
    .expect("every device opens");
    assert_eq!(all.len(), devices.len(), "a device named twice opens once");
}

#[test]
fn bad_specs_are_explained() {
    if common::solver().is_none() {
        return;
    }
    let err = GpuSolver::new(DeviceSpec::All).expect_err("all is not one device");
    assert!(matches!(err, GpuError::NotOneDevice));
    let err = GpuSolver::new(DeviceSpec::index(99, 0)).expect_err("no platform 99");
    assert!(err.to_string().contains("no platform 99"), "{err}");
    let err = GpuSolver::new(DeviceSpec::index(0, 999)).expect_err("no device 999");
    assert!(err.to_string().contains("no device 999"), "{err}");
    let spec = common::test_spec().expect("a device");
    for options in [
        GpuOptions {
            per_item: 0,
            ..GpuOptions::default()
        },
        GpuOptions {
            lanes: Some(3),
            ..GpuOptions::default()
        },
    ] {
        let err = GpuSolver::with_options(spec, options).expect_err("bad options");
        assert!(matches!(err, GpuError::Config(_)), "{err}");
    }
}

/// Every vector width the kernel supports computes exact values, GPUs' scalar one included.
#[test]
fn every_lane_width_agrees_with_the_cpu() {
    if common::solver().is_none() {
        return;
    }
    let spec = common::test_spec().expect("a device");
    let mut rng = Rng(0xdead_beef);
    for (lanes, per_item) in [(1, 1), (1, 16), (2, 3), (4, 8), (8, 1), (16, 4)] {
        let options = GpuOptions {
            lanes: Some(lanes),
            per_item,
            ..GpuOptions::default()
        };
        let gpu = GpuSolver::with_options(spec, options).expect("kernel builds");
        let control = Control::new();
        for _ in 0..4 {
            let root = rng.root();
            let start = rng.next_u64();
            let count = 1 + rng.next_u64() % 3000;
            let (best, value) = best_in_range(&root, start, count);
            let found = gpu
                .search_range(&root, Difficulty(value), start, count, &control)
                .expect("device works");
            assert_eq!(found, Some(best), "lanes {lanes} per_item {per_item}");
        }
    }
}
