//! The OpenCL backend beside the CPU backend: the same values and answers on random roots,
//! and both devices working one job in a dispatcher. Without OpenCL these print why and pass,
//! unless `DPOW_REQUIRE_OPENCL=1`.
#![allow(clippy::print_stderr)] // a skipped test says why

mod common;

use std::time::Duration;

use common::{Rng, reference_value};
use dpow_protocol::{Difficulty, Root, Work, is_valid};
use dpow_solver::cpu::{self, Backend, CpuSolver};
use dpow_solver::dispatch::{Dispatcher, measure_rate};
use dpow_solver::{Control, SolveError, Solver};

#[test]
fn random_roots_match_the_cpu_backend() {
    let Some(gpu) = common::solver() else { return };
    let backend = Backend::detect();
    let control = Control::new();
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    for _ in 0..16 {
        let root = rng.root();
        let start = rng.next_u64();
        let count = 1 + (rng.next_u64() % 4096) as usize;
        let mut values = vec![0u64; count];
        cpu::work_values(backend, &root, start, &mut values).expect("cpu backend runs");
        let (offset, &best) = values
            .iter()
            .enumerate()
            .max_by_key(|&(_, v)| *v)
            .expect("count > 0");
        let expected = Work(start.wrapping_add(offset as u64));
        assert_eq!(reference_value(&root, expected), best);
        let on_gpu = gpu
            .search_range(&root, Difficulty(best), start, count as u64, &control)
            .expect("device works");
        let on_cpu = cpu::search_range(backend, &root, Difficulty(best), start, count as u64)
            .expect("cpu backend runs");
        assert_eq!(
            on_gpu,
            Some(expected),
            "root {root} start {start} count {count}"
        );
        assert_eq!(on_cpu, Some(expected));
    }
}

/// The shared test device, lent to a dispatcher.
struct Lent(&'static dpow_gpu::GpuSolver);

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
fn cpu_and_gpu_share_a_job() {
    let Some(gpu) = common::solver() else { return };
    let cpu = CpuSolver::new(1).expect("cpu solver");
    let d = Dispatcher::new(vec![Box::new(cpu), Box::new(Lent(gpu))]);
    let mut rng = Rng(99);
    let difficulty = Difficulty(0xffff_f000_0000_0000);
    for _ in 0..4 {
        let root = rng.root();
        let work = d
            .solve(&root, difficulty, &Control::new())
            .expect("solves")
            .expect("not cancelled");
        assert!(is_valid(&root, work, difficulty));
    }
    let rate = measure_rate(&d, Duration::from_millis(300)).expect("measures");
    assert!(rate > 0.0);
    let stats = d.device_stats();
    assert_eq!(stats.len(), 2);
    for s in &stats {
        assert!(s.hashes > 0 && s.rate_hps > 0.0 && !s.dropped, "{s:?}");
    }
}
