//! Known answers on a real OpenCL device: the published Nano vectors, each block kind's
//! threshold, exact work values in every vector lane, and nonce wrap-around.
//!
//! A real search at the send threshold takes ~2^29 hashes, so these start the kernel a few
//! thousand nonces before a known answer and search only up to it. Without OpenCL they print
//! why and pass, unless `DPOW_REQUIRE_OPENCL=1`.
#![allow(clippy::print_stderr)] // a skipped test says why

mod common;

use common::{SEND_VECTORS, best_in_range, in_range, reference_value, vectors};
use dpow_protocol::{Difficulty, Root, Work, is_valid, work_value};
use dpow_solver::Control;

/// How far before a known answer the searches start.
const BEFORE: u64 = 3000;

#[test]
fn published_vectors_are_found_from_just_before() {
    let Some(gpu) = common::solver() else { return };
    let control = Control::new();
    let mut checked = 0;
    for v in vectors() {
        assert_eq!(work_value(&v.root, v.work).0, v.value, "vector {}", v.root);
        assert_eq!(reference_value(&v.root, v.work), v.value);
        let Some(threshold) = v.solved_for else {
            continue;
        };
        let d = Difficulty(threshold);
        let start = v.work.0.wrapping_sub(BEFORE);
        let found = gpu
            .search_range(&v.root, d, start, BEFORE + 1, &control)
            .expect("device works")
            .unwrap_or_else(|| panic!("no work found before {} for {}", v.work, v.root));
        assert!(
            in_range(found, start, BEFORE + 1),
            "{found} outside the range"
        );
        assert!(is_valid(&v.root, found, d));
        assert!(reference_value(&v.root, found) >= threshold);
        // An open-ended search from the same place finds valid work too.
        let open = gpu
            .solve_from(&v.root, d, start, &control)
            .expect("device works")
            .expect("not cancelled");
        assert!(is_valid(&v.root, open, d));
        checked += 1;
    }
    assert_eq!(checked, 48, "vectors with a threshold");
}

#[test]
fn exact_values_in_every_lane_and_step() {
    let Some(gpu) = common::solver() else { return };
    let control = Control::new();
    // Offsets of the known answer inside the range: lanes 0..16 of the first steps, later
    // steps, and past the first work-item.
    let offsets = [0u64, 1, 2, 3, 5, 7, 8, 9, 15, 16, 63, 100, 1023, 1024, 4095];
    for (n, v) in vectors().iter().enumerate() {
        let offset = offsets[n % offsets.len()];
        let start = v.work.0.wrapping_sub(offset);
        let (best, value) = best_in_range(&v.root, start, offset + 1);
        let found = gpu
            .search_range(&v.root, Difficulty(value), start, offset + 1, &control)
            .expect("device works");
        assert_eq!(found, Some(best), "root {} offset {offset}", v.root);
        if value < u64::MAX {
            let none = gpu
                .search_range(&v.root, Difficulty(value + 1), start, offset + 1, &control)
                .expect("device works");
            assert_eq!(none, None, "root {} offset {offset}", v.root);
        }
    }
}

#[test]
fn receive_threshold() {
    let Some(gpu) = common::solver() else { return };
    let control = Control::new();
    let receive: Vec<_> = vectors().into_iter().filter(|v| v.valid_receive).collect();
    assert_eq!(receive.len(), 8);
    for v in receive {
        let start = v.work.0.wrapping_sub(BEFORE);
        let found = gpu
            .search_range(
                &v.root,
                Difficulty::EPOCH2_RECEIVE,
                start,
                BEFORE + 1,
                &control,
            )
            .expect("device works")
            .expect("the known work is in range");
        assert!(in_range(found, start, BEFORE + 1));
        assert!(reference_value(&v.root, found) >= Difficulty::EPOCH2_RECEIVE.0);
        // Not valid for send: searching just the known nonce at the send threshold finds nothing.
        assert!(!v.valid_send);
        let none = gpu
            .search_range(&v.root, Difficulty::EPOCH2_SEND, v.work.0, 1, &control)
            .expect("device works");
        assert_eq!(none, None);
    }
}

#[test]
fn send_threshold() {
    let Some(gpu) = common::solver() else { return };
    let control = Control::new();
    for (root, work, value) in SEND_VECTORS {
        let root: Root = root.parse().expect("root");
        let work: Work = work.parse().expect("work");
        assert_eq!(reference_value(&root, work), value);
        assert!(value >= Difficulty::EPOCH2_SEND.0);
        let start = work.0.wrapping_sub(BEFORE);
        let found = gpu
            .search_range(&root, Difficulty::EPOCH2_SEND, start, BEFORE + 1, &control)
            .expect("device works")
            .expect("the known work is in range");
        assert!(in_range(found, start, BEFORE + 1));
        assert!(reference_value(&root, found) >= Difficulty::EPOCH2_SEND.0);
        // The same range minus the known nonce almost surely has no send work (p ~ 2^-21).
        let before = gpu
            .search_range(&root, Difficulty(value), start, BEFORE, &control)
            .expect("device works");
        assert_eq!(before, None);
    }
}

#[test]
fn nonces_wrap_around() {
    let Some(gpu) = common::solver() else { return };
    let control = Control::new();
    let root = Root([0xa5; 32]);
    let start = u64::MAX - 300;
    let (best, value) = best_in_range(&root, start, 700);
    let found = gpu
        .search_range(&root, Difficulty(value), start, 700, &control)
        .expect("device works");
    assert_eq!(found, Some(best));
    // An empty range searches nothing.
    let none = gpu
        .search_range(&root, Difficulty(0), start, 0, &control)
        .expect("device works");
    assert_eq!(none, None);
    // Difficulty 0: every nonce is valid, the first launch answers.
    let any = gpu
        .solve_from(&root, Difficulty(0), start, &control)
        .expect("device works");
    assert!(any.is_some());
}
