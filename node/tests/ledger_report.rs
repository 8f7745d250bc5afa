//! `dpow ledger check-report` end to end: a report signed by a genesis registrar checks, and a
//! changed byte, another registrar, a malformed signature or a file that is not a report fail
//! with a clear message and a non-zero exit. The command never joins a network: the genesis
//! used here has no bootstrap peers, so any attempt to connect would fail.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
mod common;

use std::process::Output;

use common::dpow;

use dpow_keys::{NanoAccount, SecretKey};
use dpow_protocol::ledger::{PayoutReport, report_signing_input};

fn key(n: u8) -> SecretKey {
    SecretKey::from_seed([n; 32])
}

/// A directory with a genesis listing `registrars`, and a signed report of three accounts.
struct Fixture {
    _dir: tempfile::TempDir,
    genesis: PathBuf,
    csv: PathBuf,
    text: String,
    signature: String,
    registrar: SecretKey,
    /// The genesis's network id, which a report's signature names.
    net: dpow_protocol::NetworkId,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let registrar = key(7);
    let other = key(8);
    let genesis = dir.path().join("genesis.toml");
    std::fs::write(
        &genesis,
        format!(
            "network = \"report-test\"\nprofile = \"test\"\nregistrars = [\"{}\", \"{}\"]\n",
            other.public(),
            registrar.public()
        ),
    )
    .expect("write genesis");
    let account = |n: u8| NanoAccount::from_bytes([n; 32]).expect("not the burn account");
    let earned = BTreeMap::from([(account(1), 3u128), (account(2), 5), (account(3), 11)]);
    let report = PayoutReport::new(20_000, &earned, 1_000_000_000_000_000_000_000_000_000_000)
        .expect("report");
    let text = report.to_csv();
    let csv = dir.path().join("report.csv");
    std::fs::write(&csv, &text).expect("write csv");
    let net = dpow_node::genesis::Genesis::load(&genesis)
        .expect("genesis")
        .id;
    let signature = hex::encode(registrar.sign(&report_signing_input(&text, &net)).0);
    Fixture {
        _dir: dir,
        genesis,
        csv,
        text,
        signature,
        registrar,
        net,
    }
}

fn check(genesis: &Path, csv: &Path, signature: &str, registrar: &str) -> Output {
    dpow(&[
        "ledger",
        "--genesis",
        genesis.to_str().expect("utf-8 path"),
        "check-report",
        "--csv",
        csv.to_str().expect("utf-8 path"),
        "--signature",
        signature,
        "--registrar",
        registrar,
    ])
}

fn assert_fails(out: &Output, mentions: &str) {
    assert!(!out.status.success(), "should fail: {out:?}");
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        err.contains(mentions),
        "stderr should mention {mentions:?}: {err}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("valid"));
}

#[test]
fn a_registrar_signed_report_checks_offline() {
    let f = fixture();
    let out = check(
        &f.genesis,
        &f.csv,
        &f.signature,
        &f.registrar.public().to_string(),
    );
    assert!(
        out.status.success(),
        "check-report failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("report signature valid"));
    // The signature from a file, as `payout --csv --signature-out` writes it, and JSON output.
    let sig_file = f.csv.with_file_name("report.sig");
    std::fs::write(&sig_file, format!("{}\n", f.signature)).expect("write sig");
    let out = dpow(&[
        "--json",
        "ledger",
        "--genesis",
        f.genesis.to_str().expect("utf-8"),
        "check-report",
        "--csv",
        f.csv.to_str().expect("utf-8"),
        "--signature",
        sig_file.to_str().expect("utf-8"),
        "--registrar",
        &f.registrar.public().to_hex(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["valid"], true);
    assert_eq!(v["epoch"], 20_000);
    assert_eq!(v["accounts"], 3);
    assert_eq!(v["pool_raw"], "1000000000000000000000000000000");
}

#[test]
fn a_changed_byte_fails_the_signature() {
    let f = fixture();
    // Change one digit of the first raw amount: still a well-formed report line.
    let mut bytes = f.text.clone().into_bytes();
    let first_line_end = f.text.find('\n').expect("header") + 1;
    let second_line_end = first_line_end + f.text[first_line_end..].find('\n').expect("line");
    let at = second_line_end - 1;
    bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
    assert_ne!(bytes, f.text.as_bytes());
    std::fs::write(&f.csv, &bytes).expect("write csv");
    let out = check(
        &f.genesis,
        &f.csv,
        &f.signature,
        &f.registrar.public().to_string(),
    );
    assert_fails(&out, "bad signature");
}

#[test]
fn another_registrar_or_an_outsider_is_refused() {
    let f = fixture();
    // Listed in the genesis, but did not sign this.
    let out = check(
        &f.genesis,
        &f.csv,
        &f.signature,
        &key(8).public().to_string(),
    );
    assert_fails(&out, "bad signature");
    // Signed by a key the genesis does not list.
    let outsider = key(9);
    let sig = hex::encode(outsider.sign(&report_signing_input(&f.text, &f.net)).0);
    let out = check(&f.genesis, &f.csv, &sig, &outsider.public().to_string());
    assert_fails(&out, "not a registrar");
}

#[test]
fn malformed_input_is_a_clear_error() {
    let f = fixture();
    let registrar = f.registrar.public().to_string();
    // A signature that is neither 128 hex digits nor a file.
    let out = check(&f.genesis, &f.csv, &"zz".repeat(64), &registrar);
    assert_fails(&out, "128 hex digits");
    let out = check(&f.genesis, &f.csv, &f.signature[..126], &registrar);
    assert_fails(&out, "128 hex digits");
    // A CSV with another header, signed by the registrar: refused as not a report.
    let renamed = f
        .text
        .replacen("epoch,address,credits,raw", "epoch,account,credits,raw", 1);
    std::fs::write(&f.csv, &renamed).expect("write csv");
    let sig = hex::encode(f.registrar.sign(&report_signing_input(&renamed, &f.net)).0);
    let out = check(&f.genesis, &f.csv, &sig, &registrar);
    assert_fails(&out, "epoch,address,credits,raw");
    // A registrar that is not an account at all is refused by the argument parser.
    let out = check(&f.genesis, &f.csv, &f.signature, "nano_1111");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--registrar"));
}
