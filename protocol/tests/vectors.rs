//! Known-answer vectors made with published Nano libraries (nanolib, nanocurrency-js).
//! A copy lives in `testdata/nano.json`; the project's shared copy is checked to be the same.

use dpow_protocol::{Difficulty, Multiplier, Root, Work, is_valid, work_value};

const VECTORS: &str = include_str!("../../testdata/nano.json");

fn vectors() -> serde_json::Value {
    serde_json::from_str(VECTORS).expect("vectors are JSON")
}

fn hex_u64(v: &serde_json::Value) -> u64 {
    u64::from_str_radix(v.as_str().expect("hex string"), 16).expect("hex")
}

// The work value by the reference check (the `blake2` crate): an independent implementation.
use dpow_testkit::reference::work_value as reference_value;

#[test]
fn vendored_copy_matches_shared() {
    let shared = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/vectors/nano.json"
    );
    match std::fs::read_to_string(shared) {
        Ok(text) => assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).expect("json"),
            vectors(),
            "testdata/nano.json is out of date: copy ../shared/vectors/nano.json over it"
        ),
        // A clone without the shared folder beside it tests against the vendored copy alone.
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}"),
    }
}

#[test]
fn thresholds() {
    let v = vectors();
    let t = &v["thresholds"];
    assert_eq!(
        Difficulty(hex_u64(&t["epoch2_send_change"])),
        Difficulty::EPOCH2_SEND
    );
    assert_eq!(
        Difficulty(hex_u64(&t["epoch2_receive_open_epoch"])),
        Difficulty::EPOCH2_RECEIVE
    );
    assert_eq!(Difficulty(hex_u64(&t["epoch1_all"])), Difficulty::EPOCH1);
}

#[test]
fn work_values_and_validity() {
    let v = vectors();
    let list = v["work"].as_array().expect("work list");
    assert!(list.len() >= 32);
    for case in list {
        let root: Root = case["root"]
            .as_str()
            .expect("root")
            .parse()
            .expect("root hex");
        let work: Work = case["work"]
            .as_str()
            .expect("work")
            .parse()
            .expect("work hex");
        let value = hex_u64(&case["value"]);
        assert_eq!(
            work_value(&root, work),
            Difficulty(value),
            "root {root} work {work}"
        );
        assert_eq!(reference_value(&root, work), value);
        let valid_send = case["valid_send"].as_bool().expect("valid_send");
        let valid_receive = case["valid_receive"].as_bool().expect("valid_receive");
        assert_eq!(
            is_valid(&root, work, Difficulty::EPOCH2_SEND),
            valid_send,
            "{root} {work}"
        );
        assert_eq!(
            is_valid(&root, work, Difficulty::EPOCH2_RECEIVE),
            valid_receive,
            "{root} {work}"
        );
        if let Some(s) = case["solved_for"].as_str() {
            let threshold: Difficulty = s.parse().expect("solved_for");
            assert!(is_valid(&root, work, threshold));
        }
    }
}

#[test]
fn multiplier_from_difficulty() {
    let v = vectors();
    for case in v["multiplier_from_difficulty"].as_array().expect("list") {
        let d = Difficulty(hex_u64(&case["difficulty"]));
        let base = Difficulty(hex_u64(&case["base"]));
        let m = case["multiplier"].as_f64().expect("multiplier");
        assert_eq!(d.to_multiplier(base).get(), m, "{d} over {base}");
    }
}

#[test]
fn difficulty_from_multiplier() {
    let v = vectors();
    for case in v["difficulty_from_multiplier"].as_array().expect("list") {
        let m = Multiplier::new(case["multiplier"].as_f64().expect("multiplier")).expect("valid");
        let base = Difficulty(hex_u64(&case["base"]));
        let d = Difficulty(hex_u64(&case["difficulty"]));
        assert_eq!(Difficulty::from_multiplier(m, base), d, "{m} over {base}");
        assert_eq!(
            Difficulty::from_multiplier(m, base).to_string(),
            case["difficulty"].as_str().expect("hex")
        );
    }
}
