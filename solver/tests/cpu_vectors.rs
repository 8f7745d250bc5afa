//! The published work vectors (`testdata/nano.json`, from nanolib and nanocurrency-js): a
//! search started a few thousand nonces before each known work finds it, or an earlier nonce
//! that also validates, with every backend.

use dpow_protocol::{Difficulty, Root, Work, is_valid, work_value};
use dpow_solver::Control;
use dpow_solver::cpu::{Backend, CpuSolver, search_range, work_values};
use serde_json::Value;

/// How far before the known work each search starts.
const LEAD: u64 = 3000;

struct Vector {
    root: Root,
    work: Work,
    value: Difficulty,
    /// The threshold the work was solved for (or, if none is given, its own value).
    threshold: Difficulty,
}

fn hex<T: std::str::FromStr>(v: &Value, field: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is a string"))
        .parse()
        .unwrap_or_else(|e| panic!("{field}: {e:?}"))
}

fn vectors() -> Vec<Vector> {
    let json: Value = serde_json::from_str(include_str!("../../testdata/nano.json")).expect("json");
    let receive: Difficulty = hex(&json["thresholds"], "epoch2_receive_open_epoch");
    let vectors: Vec<Vector> = json["work"]
        .as_array()
        .expect("work is a list")
        .iter()
        .map(|v| {
            let value: Difficulty = hex(v, "value");
            let threshold = if v["solved_for"].is_string() {
                hex(v, "solved_for")
            } else if v["valid_receive"] == Value::Bool(true) {
                receive
            } else {
                value
            };
            Vector {
                root: hex(v, "root"),
                work: hex(v, "work"),
                value,
                threshold,
            }
        })
        .collect();
    assert!(vectors.len() >= 40, "the vector file has its entries");
    vectors
}

#[test]
fn the_vectors_hold_for_the_reference() {
    for v in vectors() {
        assert_eq!(work_value(&v.root, v.work), v.value, "{}", v.root);
        assert!(is_valid(&v.root, v.work, v.threshold), "{}", v.root);
    }
}

#[test]
fn every_backend_computes_the_vector_values() {
    for v in vectors() {
        for backend in Backend::available() {
            let mut out = [0u64; 3];
            work_values(backend, &v.root, v.work.0.wrapping_sub(1), &mut out).expect("runs");
            assert_eq!(out[1], v.value.0, "{backend} {}", v.root);
        }
    }
}

#[test]
fn a_search_from_before_the_work_finds_it_or_earlier() {
    for v in vectors() {
        let start = v.work.0.wrapping_sub(LEAD);
        for backend in Backend::available() {
            let found = search_range(backend, &v.root, v.threshold, start, LEAD + 1)
                .expect("runs")
                .unwrap_or_else(|| panic!("{backend} found nothing for {}", v.root));
            assert!(
                found.0.wrapping_sub(start) <= LEAD,
                "{backend} {found} past {}",
                v.work
            );
            assert!(is_valid(&v.root, found, v.threshold), "{backend} {found}");
            // Nothing between the start and the answer qualifies: it is the first one.
            let earlier = (0..found.0.wrapping_sub(start))
                .any(|i| is_valid(&v.root, Work(start.wrapping_add(i)), v.threshold));
            assert!(!earlier, "{backend} skipped a valid nonce before {found}");
        }
    }
}

#[test]
fn a_one_thread_solver_started_before_the_work_agrees() {
    for backend in Backend::available() {
        let solver = CpuSolver::with_backend(1, backend).expect("available");
        for v in vectors().iter().step_by(4) {
            let start = v.work.0.wrapping_sub(LEAD);
            let control = Control::new();
            let found = solver
                .solve_from(&v.root, v.threshold, start, &control)
                .expect("runs")
                .expect("not cancelled");
            let first = search_range(backend, &v.root, v.threshold, start, LEAD + 1).expect("runs");
            assert_eq!(Some(found), first, "{backend} {}", v.root);
            assert_eq!(control.hashes(), found.0.wrapping_sub(start) + 1);
        }
    }
}
