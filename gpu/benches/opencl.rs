//! Hash rate of the OpenCL kernel on the first device (PoCL in CI) at several work sizes, the
//! cost of easy jobs with adaptive against fixed launch sizes, and the CPU backend on the same
//! machine for comparison.
//!
//! `cargo bench -p dpow-gpu --features opencl --bench opencl`. Throughput is in hashes
//! ("elements") per second. Without OpenCL it prints why and measures nothing.
#![allow(clippy::print_stderr)] // says why nothing is measured

use std::cell::Cell;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dpow_gpu::{GpuOptions, GpuSolver};
use dpow_protocol::{Difficulty, Root};
use dpow_solver::cpu::{self, Backend};
use dpow_solver::{Control, Solver};

/// (nonces per work-item step count, hashes per launch).
const WORK_SIZES: [(u32, u64); 6] = [
    (1, 1 << 16),
    (16, 1 << 16),
    (16, 1 << 18),
    (64, 1 << 18),
    (64, 1 << 20),
    (256, 1 << 20),
];

/// Expected hashes of the easy job below.
const EASY: Difficulty = Difficulty(0xffff_0000_0000_0000);

fn open(options: GpuOptions) -> Option<GpuSolver> {
    let devices = match dpow_gpu::list_devices() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("no OpenCL benchmark: {e}");
            return None;
        }
    };
    match GpuSolver::with_options(devices[0].spec(), options) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("no OpenCL benchmark: {e}");
            None
        }
    }
}

/// Raw kernel rate: one launch of a fixed size per iteration at an impossible difficulty.
fn work_sizes(c: &mut Criterion) {
    let mut group = c.benchmark_group("opencl_hash_rate");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    let root = Root([0x5a; 32]);
    for (per_item, launch) in WORK_SIZES {
        let options = GpuOptions {
            per_item,
            fixed_launch: Some(launch),
            ..GpuOptions::default()
        };
        let Some(gpu) = open(options) else { return };
        let control = Control::new();
        let next = Cell::new(0u64);
        group.throughput(Throughput::Elements(launch));
        let id = BenchmarkId::new(
            format!("per_item_{per_item}"),
            format!("launch_2^{}", launch.ilog2()),
        );
        group.bench_function(id, |b| {
            b.iter(|| {
                let start = next.get();
                next.set(start.wrapping_add(launch));
                gpu.search_range(&root, Difficulty(u64::MAX), start, launch, &control)
            })
        });
    }
    group.finish();
}

/// Easy jobs (2^16 expected hashes) end to end: adaptive launches against a fixed 2^20.
fn easy_jobs(c: &mut Criterion) {
    let mut group = c.benchmark_group("opencl_easy_job");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(EASY.expected_hashes() as u64));
    for (label, fixed) in [("adaptive", None), ("fixed_2^20", Some(1 << 20))] {
        let options = GpuOptions {
            fixed_launch: fixed,
            ..GpuOptions::default()
        };
        let Some(gpu) = open(options) else { return };
        let control = Control::new();
        let root = Cell::new(0u8);
        group.bench_function(label, |b| {
            b.iter(|| {
                root.set(root.get().wrapping_add(1));
                gpu.solve(&Root([root.get(); 32]), EASY, &control)
            })
        });
    }
    group.finish();
}

/// The CPU backend on every core, on the same machine, for comparison: each iteration hashes
/// `2^18` nonces per thread with `dpow_solver::cpu::search_range`.
fn cpu_backend(c: &mut Criterion) {
    const PER_THREAD: u64 = 1 << 18;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let backend = Backend::detect();
    let mut group = c.benchmark_group("cpu_backend");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(PER_THREAD * threads));
    let root = Root([0x5a; 32]);
    let next = Cell::new(0u64);
    group.bench_function(format!("{backend}_x{threads}"), |b| {
        b.iter(|| {
            let base = next.get();
            next.set(base.wrapping_add(PER_THREAD * threads));
            std::thread::scope(|s| {
                for t in 0..threads {
                    let start = base.wrapping_add(t * PER_THREAD);
                    s.spawn(move || {
                        cpu::search_range(backend, &root, Difficulty(u64::MAX), start, PER_THREAD)
                    });
                }
            })
        })
    });
    group.finish();
}

criterion_group!(benches, work_sizes, easy_jobs, cpu_backend);
criterion_main!(benches);
