//! The CPU solver as a whole: every backend on one and two threads, answers validated
//! independently, cancellation from another thread, hash counting and configuration.

use std::sync::{Arc, mpsc};
use std::time::Duration;

use dpow_protocol::{Difficulty, Root, Work};
use dpow_solver::cpu::{Backend, CpuSolver, MAX_THREADS, measure_rate};
use dpow_solver::{Control, SolveError, Solver};
use proptest::prelude::*;

/// About 2^16 hashes per job.
const EASY: Difficulty = Difficulty(0xffff_0000_0000_0000);
/// No nonce meets this, but for 2^-64 odds per hash.
const IMPOSSIBLE: Difficulty = Difficulty(u64::MAX);
/// Only there to catch a hang; never a speed requirement.
const HANG: Duration = Duration::from_secs(5);

/// Validation by the reference check (the `blake2` crate), independent of both the solver and
/// `dpow-protocol`.
fn independently_valid(root: &Root, work: Work, difficulty: Difficulty) -> bool {
    dpow_testkit::reference::is_valid(root, work, difficulty)
}

/// Every backend this machine runs, on one and two threads.
fn solvers() -> Vec<Arc<CpuSolver>> {
    let mut solvers = Vec::new();
    for backend in Backend::available() {
        for threads in [1, 2] {
            let solver = CpuSolver::with_backend(threads, backend).expect("available backend");
            solvers.push(Arc::new(solver));
        }
    }
    solvers
}

/// Runs `solve` on a detached thread and waits for it, failing (not hanging) after [`HANG`].
fn solve_or_hang(
    solver: &Arc<CpuSolver>,
    root: Root,
    difficulty: Difficulty,
    control: &Control,
    while_running: impl FnOnce(),
) -> Result<Option<Work>, SolveError> {
    let (tx, rx) = mpsc::channel();
    let (solver, thread_control) = (Arc::clone(solver), control.clone());
    std::thread::spawn(move || {
        let _ = tx.send(solver.solve(&root, difficulty, &thread_control));
    });
    while_running();
    rx.recv_timeout(HANG).expect("solve returned in time")
}

#[test]
fn every_backend_and_thread_count_solves_low_difficulties() {
    for solver in solvers() {
        for (i, difficulty) in [Difficulty(0), Difficulty(1 << 63), EASY]
            .into_iter()
            .enumerate()
        {
            let root = Root([i as u8 * 37 + solver.threads() as u8; 32]);
            let control = Control::new();
            let work = solve_or_hang(&solver, root, difficulty, &control, || {})
                .expect("solves")
                .expect("not cancelled");
            assert!(
                independently_valid(&root, work, difficulty),
                "{} gave {work} for {difficulty}",
                solver.name()
            );
            assert!(
                control.hashes() >= 1,
                "{} counted its hashes",
                solver.name()
            );
        }
    }
}

#[test]
fn cancel_from_another_thread_stops_an_impossible_search() {
    for solver in solvers() {
        let control = Control::new();
        let result = solve_or_hang(&solver, Root([9; 32]), IMPOSSIBLE, &control, || {
            std::thread::sleep(Duration::from_millis(30));
            control.cancel();
        });
        assert!(matches!(result, Ok(None)), "{}: {result:?}", solver.name());
        assert!(control.hashes() > 0, "{} counted its hashes", solver.name());
    }
}

#[test]
fn a_cancelled_control_returns_at_once() {
    for solver in solvers() {
        let control = Control::new();
        control.cancel();
        let result = solve_or_hang(&solver, Root([1; 32]), IMPOSSIBLE, &control, || {});
        assert!(matches!(result, Ok(None)), "{}: {result:?}", solver.name());
    }
}

#[test]
fn a_child_control_is_cancelled_with_its_parent() {
    let solver = Arc::new(CpuSolver::with_backend(2, Backend::detect()).expect("detected backend"));
    let parent = Control::new();
    let child = parent.child();
    let result = solve_or_hang(&solver, Root([2; 32]), IMPOSSIBLE, &child, || {
        std::thread::sleep(Duration::from_millis(10));
        parent.cancel();
    });
    assert!(matches!(result, Ok(None)), "{result:?}");
    assert!(child.hashes() > 0);
    assert_eq!(parent.hashes(), 0, "the child counts its own hashes");
}

#[test]
fn one_solver_runs_many_jobs() {
    let solver = CpuSolver::with_backend(2, Backend::detect()).expect("detected backend");
    for i in 0..50u8 {
        let root = Root([i; 32]);
        let work = solver
            .solve(&root, EASY, &Control::new())
            .expect("solves")
            .expect("not cancelled");
        assert!(independently_valid(&root, work, EASY));
    }
}

#[test]
fn construction_and_names() {
    let all = CpuSolver::new(0).expect("default solver");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(all.threads(), cores);
    assert_eq!(all.backend(), Backend::detect());
    assert_eq!(all.name(), format!("cpu {} x{cores}", Backend::detect()));

    let one = CpuSolver::with_backend(1, Backend::Portable).expect("portable runs anywhere");
    assert_eq!(one.name(), "cpu portable x1");

    assert!(matches!(
        CpuSolver::with_backend(MAX_THREADS + 1, Backend::Portable),
        Err(SolveError::Config(_))
    ));
    for backend in Backend::ALL {
        let made = CpuSolver::with_backend(1, backend);
        assert_eq!(made.is_ok(), backend.is_supported(), "{backend}");
        if !backend.is_supported() {
            assert!(matches!(made, Err(SolveError::Unsupported(_))));
        }
    }
}

#[test]
fn backend_names_round_trip() {
    for (backend, name) in Backend::ALL.into_iter().zip(["avx512", "avx2", "portable"]) {
        assert_eq!(backend.to_string(), name);
        assert_eq!(backend.name(), name);
        assert_eq!(name.parse::<Backend>().expect("name parses"), backend);
        assert_eq!(
            name.to_uppercase().parse::<Backend>().expect("any case"),
            backend
        );
    }
    for bad in ["", "sse2", "avx", "avx-512"] {
        assert!(
            matches!(bad.parse::<Backend>(), Err(SolveError::Config(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn measure_rate_counts_hashes() {
    for backend in Backend::available() {
        let rate = measure_rate(backend, 1, Duration::from_millis(20)).expect("runs");
        assert!(rate.is_finite() && rate > 0.0, "{backend}: {rate}");
    }
    let unsupported = Backend::ALL.into_iter().find(|b| !b.is_supported());
    if let Some(backend) = unsupported {
        assert!(measure_rate(backend, 1, Duration::from_millis(1)).is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn answers_validate_for_random_roots(
        root in any::<[u8; 32]>(),
        start in any::<u64>(),
        // Up to about 2^14 hashes a job.
        zeros in 0u32..14,
        pick in any::<prop::sample::Index>(),
    ) {
        let solvers = solvers();
        let solver = &solvers[pick.index(solvers.len())];
        let root = Root(root);
        let difficulty = Difficulty(!(u64::MAX >> zeros));
        let work = solver
            .solve_from(&root, difficulty, start, &Control::new())
            .expect("solves")
            .expect("not cancelled");
        prop_assert!(independently_valid(&root, work, difficulty), "{}", solver.name());
    }
}
