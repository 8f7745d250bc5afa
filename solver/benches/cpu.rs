//! CPU hashing speed: the reference loop over the `blake2` crate against each SIMD backend,
//! one thread each, and the whole solver on one and two threads.
//!
//! `cargo bench -p dpow-solver --bench cpu`. Throughput is in hashes (elements) per second.

use std::hint::black_box;
use std::time::{Duration, Instant};

use blake2::Blake2b;
use blake2::digest::Digest;
use blake2::digest::consts::U8;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use dpow_protocol::{Difficulty, Root, Work};
use dpow_solver::cpu::{Backend, CpuSolver, search_range};
use dpow_solver::{Control, Solver};

/// Nonces hashed per iteration of the single-thread benchmarks.
const HASHES: u64 = 1 << 16;
/// Nonces per iteration of the pool benchmarks (about 25–100 ms at these rates).
const POOL_HASHES: u64 = 1 << 22;
/// No work meets this (but for 2^-64 odds per hash).
const IMPOSSIBLE: Difficulty = Difficulty(u64::MAX);

fn root() -> Root {
    Root([0x5a; 32])
}

/// What the reference Nano work server does: a fresh hasher per nonce.
fn blake2_loop(root: &Root, threshold: u64, start: u64, count: u64) -> Option<Work> {
    for nonce in start..start + count {
        let mut h = Blake2b::<U8>::new();
        h.update(nonce.to_le_bytes());
        h.update(root.0);
        let digest = h.finalize();
        let mut value = [0u8; 8];
        value.copy_from_slice(&digest);
        if u64::from_le_bytes(value) >= threshold {
            return Some(Work(nonce));
        }
    }
    None
}

fn configure(group: &mut BenchmarkGroup<'_, WallTime>) {
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
}

fn per_thread(c: &mut Criterion) {
    let root = root();
    let mut group = c.benchmark_group("per_thread");
    configure(&mut group);
    group.throughput(Throughput::Elements(HASHES));
    group.bench_function("blake2_crate_loop", |b| {
        b.iter(|| black_box(blake2_loop(black_box(&root), IMPOSSIBLE.0, 0, HASHES)))
    });
    for backend in Backend::available() {
        group.bench_function(backend.name(), |b| {
            b.iter(|| {
                black_box(search_range(
                    backend,
                    black_box(&root),
                    IMPOSSIBLE,
                    0,
                    HASHES,
                ))
            })
        });
    }
    group.finish();
}

/// Time for `POOL_HASHES` hashes on `solver`: run it at an impossible difficulty, cancel once
/// it has counted enough, and scale the elapsed time by what it actually counted.
fn pool_time(solver: &CpuSolver, iters: u64) -> Duration {
    let target = POOL_HASHES * iters;
    let control = Control::new();
    let root = root();
    std::thread::scope(|s| {
        let started = Instant::now();
        s.spawn(|| {
            // Rarely enough not to steal time from the solver's threads on a small machine;
            // the overshoot is counted and scaled away below.
            while control.hashes() < target && !control.is_cancelled() {
                std::thread::sleep(Duration::from_millis(2));
            }
            control.cancel();
        });
        let solved = solver.solve(&root, IMPOSSIBLE, &control);
        let elapsed = started.elapsed();
        control.cancel();
        black_box(solved.expect("cpu solver runs"));
        elapsed.mul_f64(target as f64 / control.hashes().max(1) as f64)
    })
}

fn threads(c: &mut Criterion) {
    let backend = Backend::detect();
    let mut group = c.benchmark_group(format!("pool_{backend}"));
    configure(&mut group);
    group.throughput(Throughput::Elements(POOL_HASHES));
    for threads in [1, 2] {
        let solver = CpuSolver::with_backend(threads, backend).expect("detected backend runs");
        group.bench_function(format!("x{threads}"), |b| {
            b.iter_custom(|iters| pool_time(&solver, iters))
        });
    }
    group.finish();
}

criterion_group!(benches, per_thread, threads);
criterion_main!(benches);
