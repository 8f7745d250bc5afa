//! Searching on a real OpenCL device: random roots cross-checked on the CPU, easy and hard
//! difficulties, cancellation. Without OpenCL these print why and pass, unless
//! `DPOW_REQUIRE_OPENCL=1`. No speed is asserted; the time bounds only catch hangs.
#![allow(clippy::print_stderr)] // a skipped test says why

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{Rng, best_in_range, in_range, reference_value};
use dpow_protocol::{Difficulty, is_valid, work_value};
use dpow_solver::{Control, Solver};

const HANG_GUARD: Duration = Duration::from_secs(10);

#[test]
fn random_roots_agree_with_the_cpu() {
    let Some(gpu) = common::solver() else { return };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let difficulty = Difficulty(0xfff0_0000_0000_0000);
    for _ in 0..24 {
        let root = rng.root();
        let control = Control::new();
        let work = gpu
            .solve(&root, difficulty, &control)
            .expect("device works")
            .expect("not cancelled");
        assert!(work_value(&root, work) >= difficulty);
        assert!(reference_value(&root, work) >= difficulty.0);
        assert!(control.hashes() > 0);

        // The exact best nonce of a random range, as the CPU computes it.
        let start = rng.next_u64();
        let count = 1 + rng.next_u64() % 5000;
        let (best, value) = best_in_range(&root, start, count);
        let found = gpu
            .search_range(&root, Difficulty(value), start, count, &control)
            .expect("device works");
        assert_eq!(found, Some(best), "root {root} start {start} count {count}");
    }
}

#[test]
fn each_difficulty_is_met() {
    let Some(gpu) = common::solver() else { return };
    let mut rng = Rng(7);
    // Trivial to receive: launch sizes adapt downwards and upwards along the way.
    for d in [
        0,
        0x8000_0000_0000_0000,
        0xff00_0000_0000_0000,
        0xffff_0000_0000_0000,
        0xffff_f000_0000_0000,
        Difficulty::EPOCH2_RECEIVE.0,
    ] {
        let root = rng.root();
        let control = Control::new();
        let work = gpu
            .solve(&root, Difficulty(d), &control)
            .expect("device works")
            .expect("not cancelled");
        assert!(is_valid(&root, work, Difficulty(d)), "difficulty {d:016x}");
        assert!(reference_value(&root, work) >= d);
    }
}

#[test]
fn search_range_stays_in_range() {
    let Some(gpu) = common::solver() else { return };
    let mut rng = Rng(11);
    let control = Control::new();
    for _ in 0..8 {
        let root = rng.root();
        let start = rng.next_u64();
        let count = 1 + rng.next_u64() % 100_000;
        let before = control.hashes();
        if let Some(w) = gpu
            .search_range(
                &root,
                Difficulty(0xffff_0000_0000_0000),
                start,
                count,
                &control,
            )
            .expect("device works")
        {
            assert!(in_range(w, start, count));
        } else {
            assert_eq!(
                control.hashes() - before,
                count,
                "a fruitless range is searched whole"
            );
        }
    }
}

#[test]
fn cancel_stops_an_impossible_search() {
    let Some(gpu) = common::solver() else { return };
    let root = Rng(3).root();
    let control = Control::new();
    let began = Instant::now();
    let result = thread::scope(|s| {
        let job = s.spawn(|| gpu.solve(&root, Difficulty(u64::MAX), &control));
        // Cancel mid-search: once launches are running (other tests may hold the device first).
        while control.hashes() == 0 && began.elapsed() < HANG_GUARD {
            thread::sleep(Duration::from_millis(5));
        }
        thread::sleep(Duration::from_millis(50));
        control.cancel();
        job.join().expect("no panic")
    });
    assert!(matches!(result, Ok(None)), "{result:?}");
    assert!(
        began.elapsed() < HANG_GUARD,
        "cancel took {:?}",
        began.elapsed()
    );
    assert!(control.hashes() > 0);
    // Cancelled before the start: returns at once.
    assert!(matches!(
        gpu.solve(&root, Difficulty(u64::MAX), &control),
        Ok(None)
    ));
}

#[test]
fn names_the_device() {
    let Some(gpu) = common::solver() else { return };
    let name = gpu.name();
    assert!(name.starts_with("opencl "), "{name}");
    assert!(name.contains(&gpu.info().spec().to_string()), "{name}");
}
