//! The failure path on a real OpenCL device: a kernel built to ignore the threshold (as a broken
//! device would) is caught by the CPU re-validation, and a dispatcher drops it and finishes the
//! job on a working device. Without OpenCL these print why and pass, unless
//! `DPOW_REQUIRE_OPENCL=1`.
#![allow(clippy::print_stderr)] // a skipped test says why

mod common;

use dpow_gpu::{Fault, GpuOptions, GpuSolver};
use dpow_protocol::{Difficulty, Root, Work, is_valid};
use dpow_solver::dispatch::{Dispatcher, MAX_STRIKES};
use dpow_solver::{Control, SolveError, Solver};

/// A broken device's answer meets this by chance once in 2^20.
const DIFFICULTY: Difficulty = Difficulty(0xffff_f000_0000_0000);

fn faulty() -> Option<GpuSolver> {
    common::solver()?;
    let spec = common::test_spec().expect("a device");
    let options = GpuOptions {
        fault: Some(Fault::IgnoreThreshold),
        ..GpuOptions::default()
    };
    Some(GpuSolver::with_options(spec, options).expect("the faulty kernel builds"))
}

/// The shared test device, lent to a dispatcher.
struct Lent(&'static GpuSolver);

impl Solver for Lent {
    fn name(&self) -> String {
        self.0.name()
    }
    fn solve(
        &self,
        root: &Root,
        difficulty: Difficulty,
        control: &Control,
    ) -> Result<Option<Work>, SolveError> {
        self.0.solve(root, difficulty, control)
    }
}

#[test]
fn revalidation_catches_a_broken_kernel() {
    let Some(bad) = faulty() else { return };
    let root = Root([0x11; 32]);
    let result = bad.solve(&root, DIFFICULTY, &Control::new());
    match result {
        Err(SolveError::InvalidWork {
            device,
            work,
            root: r,
        }) => {
            assert_eq!(device, bad.name());
            assert_eq!(r, root);
            assert!(!is_valid(&root, work, DIFFICULTY));
        }
        other => panic!("expected invalid work, got {other:?}"),
    }
}

#[test]
fn a_dispatcher_drops_the_broken_device_and_finishes_the_job() {
    let Some(bad) = faulty() else { return };
    let Some(good) = common::solver() else { return };
    let bad_name = bad.name();
    let d = Dispatcher::new(vec![Box::new(bad), Box::new(Lent(good))]);
    let root = Root([0x22; 32]);
    // The broken device answers within one launch, so it is usually struck out in the first
    // job; either way every job returns valid work.
    let mut jobs = 0;
    while d.active_devices() == 2 {
        jobs += 1;
        assert!(jobs <= 10, "the broken device was never dropped");
        let work = d
            .solve(&root, DIFFICULTY, &Control::new())
            .expect("the working device answers")
            .expect("not cancelled");
        assert!(is_valid(&root, work, DIFFICULTY));
    }
    let stats = d.device_stats();
    assert_eq!(stats[0].name, bad_name);
    assert!(stats[0].dropped);
    assert_eq!(stats[0].strikes, MAX_STRIKES);
    let reason = stats[0].last_error.as_deref().unwrap_or_default();
    assert!(reason.contains("invalid work"), "{reason}");
    assert!(!stats[1].dropped);
    // And the node keeps working on the rest.
    let work = d
        .solve(&root, DIFFICULTY, &Control::new())
        .expect("the working device answers")
        .expect("not cancelled");
    assert!(is_valid(&root, work, DIFFICULTY));
}
