//! The `dpow` binary end to end: every answer it prints is checked with the `blake2` crate, an
//! implementation independent of the solver's own hash.

mod common;

use std::process::Output;

use common::dpow;

use serde_json::Value;

const ROOT: &str = "7F7122E843B27524F4F1D6BD14AEFD1C8F01D36AE8653D37417533C0D4BC2BE6";

fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "dpow failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--json prints JSON")
}

/// The work value by the reference check (the `blake2` crate).
fn reference_value(root: &str, work: &str) -> u64 {
    dpow_testkit::reference::value_of_text(root, work)
}

/// Generate with `args`, check the printed work meets `threshold` by the reference hash, and
/// that the printed difficulty is the work's real value.
fn generate_and_check(args: &[&str], threshold: u64) {
    let mut all = vec![
        "--json",
        "work",
        "generate",
        "--hash",
        ROOT,
        "--threads",
        "2",
    ];
    all.extend_from_slice(args);
    let v = json(&dpow(&all));
    let work = v["work"].as_str().expect("work field");
    assert_eq!(work.len(), 16);
    let value = reference_value(ROOT, work);
    assert!(
        value >= threshold,
        "{args:?}: work {work} has value {value:016x} below {threshold:016x}"
    );
    assert_eq!(
        v["difficulty"].as_str(),
        Some(format!("{value:016x}").as_str())
    );
    assert_eq!(
        v["threshold"].as_str(),
        Some(format!("{threshold:016x}").as_str())
    );
}

#[test]
fn generate_meets_every_kind_of_every_profile() {
    // (profile, kind, threshold): nano receive-side kinds at the real difficulty; send-side
    // kinds of the cheap test profile (Nano's real send threshold takes seconds per solve).
    let cases = [
        ("nano", "receive", 0xfffffe0000000000u64),
        ("nano", "open", 0xfffffe0000000000),
        ("nano", "epoch", 0xfffffe0000000000),
        ("banano", "send", 0xfffffe0000000000),
        ("test", "send", 0xfffff00000000000),
        ("test", "change", 0xfffff00000000000),
        ("test", "receive", 0xffff000000000000),
        ("multiplier-proposal", "receive", 0xfffffe0000000000),
    ];
    for (profile, kind, threshold) in cases {
        generate_and_check(&["--profile", profile, "--kind", kind], threshold);
    }
}

#[test]
fn generate_meets_explicit_difficulty_and_multiplier() {
    generate_and_check(&["--difficulty", "fffff80000000000"], 0xfffff80000000000);
    // 1/64 over the nano send threshold is the receive threshold.
    generate_and_check(&["--multiplier", "0.015625"], 0xfffffe0000000000);
    // Over the test profile's send threshold fffff00000000000: 1/16 gives ffff000000000000.
    generate_and_check(
        &["--profile", "test", "--multiplier", "0.0625"],
        0xffff000000000000,
    );
}

#[test]
fn validate_accepts_good_work_and_rejects_bad_with_exit_1() {
    let v = json(&dpow(&[
        "--json", "work", "generate", "--hash", ROOT, "--kind", "receive",
    ]));
    let work = v["work"].as_str().expect("work").to_string();
    let ok = dpow(&[
        "--json", "work", "validate", "--hash", ROOT, "--work", &work, "--kind", "receive",
    ]);
    let ok_json = json(&ok);
    assert_eq!(ok_json["valid"], Value::Bool(true));
    assert_eq!(ok_json["valid_receive"], "1");

    // Find a nonce the reference hash says is below the receive threshold.
    let bad = (0u64..)
        .map(|n| format!("{n:016x}"))
        .find(|w| reference_value(ROOT, w) < 0xfffffe0000000000)
        .expect("most nonces are invalid");
    let out = dpow(&[
        "work", "validate", "--hash", ROOT, "--work", &bad, "--kind", "receive",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("NOT valid"));
}

#[test]
fn bad_input_is_a_clear_error_with_exit_2() {
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "work",
                "validate",
                "--hash",
                "zz",
                "--work",
                "0000000000000000",
            ],
            "hash",
        ),
        (
            &["work", "validate", "--hash", ROOT, "--work", "123"],
            "work",
        ),
        (
            &["work", "generate", "--hash", ROOT, "--difficulty", "nothex"],
            "difficulty",
        ),
        (
            &["work", "generate", "--hash", ROOT, "--multiplier=-1"],
            "multiplier",
        ),
        (
            &["work", "generate", "--hash", ROOT, "--kind", "burn"],
            "kind",
        ),
        (
            &["work", "generate", "--hash", ROOT, "--profile", "nope"],
            "nope",
        ),
        (&["keys", "address", "nano_1111"], "address"),
        (&["keys", "address", "dpow_1111"], "address"),
        (
            &[
                "keys",
                "address",
                "nano_1111111111111111111111111111111111111111111111111111hifc8npp",
            ],
            "burn",
        ),
    ];
    for (args, mentions) in cases {
        let out = dpow(args);
        assert_eq!(out.status.code(), Some(2), "{args:?} should exit 2");
        let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(
            err.contains(mentions),
            "{args:?}: stderr should mention {mentions}: {err}"
        );
        assert!(out.stdout.is_empty(), "{args:?}: nothing on stdout");
    }
}

#[test]
fn generate_times_out_cleanly() {
    let out = dpow(&[
        "work",
        "generate",
        "--hash",
        ROOT,
        "--difficulty",
        "ffffffffffffffff",
        "--timeout",
        "0.3",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("timeout"));
}

#[test]
fn keys_round_trip_through_a_key_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("node.key");
    let path = path.to_str().expect("utf-8 path");
    let new = json(&dpow(&["--json", "keys", "new", "--out", path]));
    let shown = json(&dpow(&["--json", "keys", "show", "--key", path]));
    assert_eq!(new["public_key"], shown["public_key"]);
    assert_eq!(new["key"], shown["key"]);
    let text = shown["key"].as_str().expect("key");
    assert!(
        text.starts_with("dpow_"),
        "a dpow key is never shown as nano_: {text}"
    );
    let decoded = json(&dpow(&["--json", "keys", "address", text]));
    assert_eq!(decoded["public_key"], shown["public_key"]);
    let back = json(&dpow(&[
        "--json",
        "keys",
        "address",
        shown["public_key"].as_str().expect("hex"),
    ]));
    assert_eq!(back["key"], shown["key"]);
    // The secret is never printed.
    let text = String::from_utf8_lossy(&dpow(&["keys", "show", "--key", path]).stdout).to_string();
    let secret = std::fs::read(path).expect("key file");
    let as_text = String::from_utf8_lossy(&secret).trim().to_lowercase();
    assert!(!as_text.is_empty());
    assert!(!text.to_lowercase().contains(&as_text));
    assert!(!text.to_lowercase().contains(&hex_string(&secret)));
}

fn hex_string(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn gpu_list_never_fails_for_want_of_a_driver() {
    let out = dpow(&["--json", "gpu", "list"]);
    let v = json(&out);
    let devices = v["devices"].as_array().expect("devices array");
    if devices.is_empty() {
        assert!(v["hint"].as_str().is_some_and(|h| h.contains("opencl")));
    } else {
        assert!(
            devices
                .iter()
                .all(|d| d["spec"].as_str().is_some_and(|s| s.contains(':')))
        );
    }
}

/// The number right after `before` in `text`.
fn number_after(text: &str, before: &str) -> u64 {
    let at = text
        .find(before)
        .unwrap_or_else(|| panic!("{before:?} not in: {text}"));
    text[at + before.len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("no number after {before:?} in: {text}"))
}

#[test]
fn the_live_ingest_bench_accounts_for_every_receipt_and_reports_the_turns() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().to_str().expect("utf-8 path");
    let out = dpow(&[
        "bench",
        "--live",
        "200",
        "--live-seconds",
        "2",
        "--dir",
        path,
    ]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 400 published; each held by node B or refused by its verification queue.
    assert_eq!(number_after(&text, "published "), 400);
    let held = number_after(&text, "of them then, ");
    let refused = {
        let line = text
            .lines()
            .find(|l| l.starts_with("node B: "))
            .expect("node B's line");
        number_after(line, "a receipt), ")
    };
    assert!(held > 0, "{text}");
    assert_eq!(held + refused, 400, "{text}");
    assert!(
        text.contains("node B's event loop under the load, last "),
        "{text}"
    );
    // The scratch database is gone.
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);

    let out = dpow(&["bench", "--live", "5"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--live takes 100 to 100000"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
