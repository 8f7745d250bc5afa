//! The fuzz harnesses under `cargo test`: every target in `dpow_testkit::fuzz::TARGETS` runs
//! its seeds, random inputs and mutations of its seeds (a few thousand in all, the same on
//! every run), so the properties the fuzzers check hold in CI too. The long runs are
//! `scripts/fuzz.sh`'s (docs/security.md).

use std::panic::{AssertUnwindSafe, catch_unwind};

use dpow_protocol::validate::Validator;
use dpow_testkit::builders::NOW;
use dpow_testkit::fuzz::{TARGETS, fixture, mutate, target};
use dpow_testkit::rng::Rng;

/// Random inputs per target.
const RANDOM: usize = 1_000;
/// Mutated seeds per target.
const MUTATIONS: usize = 3_000;

/// Run one input, naming it (hex) if a property fails, so that it can be replayed.
fn one(name: &str, run: fn(&[u8]), input: &[u8]) {
    if catch_unwind(AssertUnwindSafe(|| run(input))).is_err() {
        panic!("{name} failed on input {}", hex::encode(input));
    }
}

fn fuzz(name: &str) {
    let t = target(name).expect("a target of that name");
    let seeds = (t.seeds)();
    assert!(!seeds.is_empty(), "{name} has seeds");
    let mut rng = Rng::new(
        name.bytes()
            .fold(7, |h, b| h.wrapping_mul(31) ^ u64::from(b)),
    );
    for s in &seeds {
        one(name, t.run, s);
    }
    for _ in 0..RANDOM {
        let len = rng.below(300);
        one(name, t.run, &rng.bytes(len));
    }
    for _ in 0..MUTATIONS {
        let seed = &seeds[rng.below(seeds.len())];
        let mut m = mutate(&mut rng, seed);
        if rng.below(3) == 0 {
            m = mutate(&mut rng, &m);
        }
        one(name, t.run, &m);
    }
}

macro_rules! targets {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                fuzz(stringify!($name));
            }
        )*

        #[test]
        fn every_target_has_a_test() {
            let tested = [$(stringify!($name)),*];
            let all: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
            assert_eq!(all, tested);
        }
    };
}

targets!(
    envelope_request,
    envelope_result,
    envelope_cancel,
    envelope_status,
    envelope_receipt,
    envelope_registry,
    envelope_checkpoint,
    sync_request,
    sync_response,
    result_delivery,
    dht_record,
    genesis,
    config,
    http,
);

/// The seeds reach the deep paths: the fixture's messages pass every check, so mutations of
/// them start past the signature.
#[test]
fn the_fixture_messages_are_valid() {
    let f = fixture();
    let reg = &f.net.registry;
    let mut v = Validator::new(f.config.clone());
    v.check_request(f.request.bytes(), reg, NOW)
        .expect("request");
    v.check_result(f.result.bytes(), Some(&f.request), reg, NOW)
        .expect("result");
    v.check_cancel(f.cancel.bytes(), Some(&f.request))
        .expect("cancel");
    v.check_status(f.status.bytes(), reg, NOW).expect("status");
    let r = v
        .check_receipt(f.receipt.bytes(), reg, NOW)
        .expect("receipt");
    v.check_open(&r, NOW).expect("an open epoch");
    v.check_checkpoint(f.checkpoint.bytes(), reg, NOW)
        .expect("checkpoint");
    // Entries are checked against the registrars alone: the fixture's registry holds them,
    // and a copy of an entry held is refused before its signature.
    let registrars = dpow_protocol::registry::Registry::new(reg.registrars().copied());
    for e in &f.entries {
        v.check_registry(e.bytes(), &registrars, NOW)
            .expect("registry entry");
        assert_eq!(
            v.check_registry(e.bytes(), reg, NOW)
                .expect_err("held already")
                .reason,
            dpow_protocol::validate::RejectReason::Replay
        );
    }
    assert_eq!(reg.len(), f.entries.len());
}

/// A mutation changes its input, and the same seed gives the same mutations.
#[test]
fn mutations_are_seeded() {
    let input = fixture().request.bytes().to_vec();
    let (mut a, mut b) = (Rng::new(1), Rng::new(1));
    let mut changed = 0;
    for _ in 0..100 {
        let (x, y) = (mutate(&mut a, &input), mutate(&mut b, &input));
        assert_eq!(x, y);
        changed += usize::from(x != input);
    }
    assert!(changed > 90, "{changed}");
}
