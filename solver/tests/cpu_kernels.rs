//! Every CPU kernel this machine can run against the scalar reference in `dpow-protocol`, the
//! portable kernel and the `blake2` crate, on random roots and nonce ranges.

use dpow_protocol::{Difficulty, Root, Work, work_value};
use dpow_solver::cpu::{Backend, search_range, work_values};
use proptest::prelude::*;

/// The work value by the reference check (the `blake2` crate): an independent implementation.
fn blake2_value(root: &Root, nonce: u64) -> u64 {
    dpow_testkit::reference::value_of(&root.0, nonce)
}

fn values(backend: Backend, root: &Root, start: u64, len: usize) -> Vec<u64> {
    let mut out = vec![0; len];
    work_values(backend, root, start, &mut out).expect("backend listed as available");
    out
}

/// Starts that exercise the wrap from `u64::MAX` to 0 as well as arbitrary ones.
fn start() -> impl Strategy<Value = u64> {
    prop_oneof![any::<u64>(), (u64::MAX - 40)..=u64::MAX, 0u64..40]
}

#[test]
fn this_machine_lists_portable_last() {
    let available = Backend::available();
    assert_eq!(available.last(), Some(&Backend::Portable));
    assert_eq!(available.first(), Some(&Backend::detect()));
    for backend in Backend::ALL {
        assert_eq!(available.contains(&backend), backend.is_supported());
    }
}

#[test]
fn unsupported_backends_are_refused_not_run() {
    let root = Root([7; 32]);
    for backend in Backend::ALL {
        let result = search_range(backend, &root, Difficulty(0), 0, 1);
        if backend.is_supported() {
            assert_eq!(result.expect("supported"), Some(Work(0)));
        } else {
            assert!(matches!(
                result,
                Err(dpow_solver::SolveError::Unsupported(_))
            ));
        }
    }
}

#[test]
fn a_known_value_from_the_vectors() {
    // The first entry of testdata/nano.json.
    let root: Root = "7C11C05DFF7B9C8F9A4CBD787F6C813EBE559C854D6E2AAD4EBBD0C6D548D393"
        .parse()
        .expect("root");
    for backend in Backend::available() {
        assert_eq!(
            values(backend, &root, 0x749abbcce9e02586, 1),
            [0xffffacc4e85ef002],
            "{backend}"
        );
    }
}

proptest! {
    #[test]
    fn every_backend_matches_the_references(
        root in any::<[u8; 32]>(),
        start in start(),
        len in 1usize..70,
    ) {
        let root = Root(root);
        let reference: Vec<u64> = (0..len as u64)
            .map(|i| work_value(&root, Work(start.wrapping_add(i))).0)
            .collect();
        let independent: Vec<u64> = (0..len as u64)
            .map(|i| blake2_value(&root, start.wrapping_add(i)))
            .collect();
        prop_assert_eq!(&reference, &independent);
        let portable = values(Backend::Portable, &root, start, len);
        prop_assert_eq!(&portable, &reference);
        for backend in Backend::available() {
            let got = values(backend, &root, start, len);
            prop_assert_eq!(&got, &portable, "{} against portable", backend);
        }
    }

    #[test]
    fn every_backend_finds_the_first_hit_of_a_range(
        root in any::<[u8; 32]>(),
        start in start(),
        count in 1u64..200,
        pick in any::<prop::sample::Index>(),
    ) {
        let root = Root(root);
        let vals: Vec<u64> = (0..count)
            .map(|i| blake2_value(&root, start.wrapping_add(i)))
            .collect();
        // A threshold that some nonce of the range meets (often several).
        let threshold = Difficulty(vals[pick.index(vals.len())]);
        let first = (0u64..)
            .zip(&vals)
            .find(|&(_, &v)| v >= threshold.0)
            .map(|(i, _)| Work(start.wrapping_add(i)));
        prop_assert!(first.is_some());
        // One past the hit: only a range that contains no qualifying nonce may return `None`.
        let before = first.map_or(0, |w| w.0.wrapping_sub(start));
        for backend in Backend::available() {
            let got = search_range(backend, &root, threshold, start, count).expect("runs");
            prop_assert_eq!(got, first, "{}", backend);
            let short = search_range(backend, &root, threshold, start, before).expect("runs");
            prop_assert_eq!(short, None, "{} stopped short", backend);
        }
    }

    #[test]
    fn an_impossible_difficulty_is_never_met(root in any::<[u8; 32]>(), start in start()) {
        let root = Root(root);
        let max = (0..256u64).map(|i| blake2_value(&root, start.wrapping_add(i))).max();
        prop_assume!(max != Some(u64::MAX));
        for backend in Backend::available() {
            let got = search_range(backend, &root, Difficulty(u64::MAX), start, 256).expect("runs");
            prop_assert_eq!(got, None, "{}", backend);
        }
    }
}
