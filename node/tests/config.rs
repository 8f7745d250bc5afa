//! `dpow node`'s one configuration, end to end through the binary: the file, the environment
//! and the flags, in that order of precedence, as `--print-config` shows them.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

/// Run `dpow` with `args` and only the `DPOW_*` variables in `env`.
fn dpow_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dpow"));
    for (k, _) in std::env::vars() {
        if k.starts_with("DPOW_") || k == "RUST_LOG" {
            c.env_remove(k);
        }
    }
    c.args(args).envs(env.iter().copied());
    c.output().expect("the dpow binary runs")
}

fn print_config(file: &Path, extra: &[&str], env: &[(&str, &str)]) -> Value {
    let file = file.to_str().expect("utf-8 path");
    let mut args = vec!["--json", "node", "--config", file, "--print-config"];
    args.extend_from_slice(extra);
    let out = dpow_env(&args, env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

#[test]
fn flags_beat_the_environment_which_beats_the_file() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("node.toml");
    std::fs::write(
        &file,
        "genesis = \"g.toml\"\nrole = [\"worker\"]\nthreads = 3\nhttp = \"127.0.0.1:1\"\n\
         payout = \"from-file\"\nstatus_interval = 2.5\ngpu = [\"0:1\"]\n",
    )
    .expect("write");
    let v = print_config(
        &file,
        &["--threads", "5"],
        &[("DPOW_HTTP", "127.0.0.1:2"), ("DPOW_THREADS", "4")],
    );
    assert_eq!(
        v["threads"], 5,
        "the flag wins over the environment and the file"
    );
    assert_eq!(
        v["http"], "127.0.0.1:2",
        "the environment wins over the file"
    );
    assert_eq!(
        v["role"],
        serde_json::json!(["worker"]),
        "the file fills the rest"
    );
    assert_eq!(v["payout"], "from-file");
    assert_eq!(v["status_interval"], 2.5);
    assert_eq!(v["gpu"], serde_json::json!(["0:1"]));
    // Defaults are filled in, so what is printed is what would run.
    assert_eq!(v["data_dir"], "dpow-data");
    assert_eq!(
        v["listen"],
        serde_json::json!(["/ip4/0.0.0.0/tcp/7075", "/ip4/0.0.0.0/udp/7075/quic-v1"])
    );
    assert_eq!(v["reachability"], "auto");
    assert_eq!(v["replication"], 3);
}

#[test]
fn the_printed_config_reads_back_as_the_same_config() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("node.toml");
    std::fs::write(&file, "role = [\"service\"]\nservice_key = \"s.key\"\n").expect("write");
    let out = dpow_env(
        &[
            "node",
            "--config",
            file.to_str().expect("path"),
            "--print-config",
            "--no-fallback",
            "--dial",
            "/ip4/127.0.0.1/tcp/9,/ip4/127.0.0.1/tcp/10",
        ],
        &[("DPOW_HTTP_TOKEN", "hunter2")],
    );
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        !text.contains("hunter2"),
        "the token is never printed: {text}"
    );
    let again = dir.path().join("again.toml");
    std::fs::write(&again, &text).expect("write");
    let v = print_config(&again, &[], &[]);
    assert_eq!(v["role"], serde_json::json!(["service"]));
    assert_eq!(v["no_fallback"], true);
    assert_eq!(v["fallback_after"], 5.0);
    assert_eq!(
        v["dial"],
        serde_json::json!(["/ip4/127.0.0.1/tcp/9", "/ip4/127.0.0.1/tcp/10"])
    );
}

#[test]
fn a_file_with_an_unknown_key_is_refused_with_the_known_ones() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("node.toml");
    std::fs::write(&file, "genesis = \"g.toml\"\npayot = \"nano_1...\"\n").expect("write");
    let out = dpow_env(&["node", "--config", file.to_str().expect("path")], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`payot`"), "{err}");
    for known in [
        "payout",
        "http_token",
        "nano_websocket",
        "backend",
        "no_cpu",
    ] {
        assert!(err.contains(known), "{known} missing from: {err}");
    }
}

#[test]
fn bad_values_are_clear_errors() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("node.toml");
    std::fs::write(&file, "listen = [\"tcp:7075\"]\n").expect("write");
    let out = dpow_env(&["node", "--config", file.to_str().expect("path")], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("node.toml") && err.contains("tcp:7075"),
        "{err}"
    );

    // Without a genesis anywhere, the node says where one may come from.
    let out = dpow_env(&["node", "--http", "off"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--genesis") && err.contains("DPOW_GENESIS"),
        "{err}"
    );

    // A payout account that is not a spendable Nano account stops the node at start.
    let genesis = dir.path().join("genesis.toml");
    std::fs::write(
        &genesis,
        "network = \"t\"\nprofile = \"test\"\nregistrars = [\"dpow_1111111111111111111111111111111111111111111111111111hifc8npp\"]\n",
    )
    .expect("write genesis");
    let good = "nano_3i1aq1cchnmbn9x5rsbap8b15akfh7wj7pwskuzi7ahz8oq6cobd99d4r3b7";
    let bad_checksum = format!("{}z", &good[..good.len() - 1]);
    let burn = "nano_1111111111111111111111111111111111111111111111111111hifc8npp";
    let key = format!("dpow_{}", &good[5..]);
    for (payout, says) in [
        (bad_checksum.as_str(), "checksum"),
        (burn, "burn"),
        (key.as_str(), "dpow key"),
        ("nano_1", "length"),
    ] {
        let out = dpow_env(
            &[
                "node",
                "--genesis",
                genesis.to_str().expect("path"),
                "--data-dir",
                dir.path().to_str().expect("path"),
                "--http",
                "off",
                "--role",
                "worker",
                "--payout",
                payout,
            ],
            &[],
        );
        assert_eq!(out.status.code(), Some(2), "{payout}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--payout") && err.contains(says),
            "{payout}: {err}"
        );
        assert!(
            !dir.path().join("db").exists(),
            "{payout}: refused before the store was opened"
        );
    }

    // A bad environment value is refused like a bad flag.
    let out = dpow_env(&["node", "--print-config"], &[("DPOW_THREADS", "many")]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn off_loopback_statistics_need_a_token_or_public_stats() {
    let dir = tempfile::tempdir().expect("dir");
    let genesis = dir.path().join("genesis.toml");
    std::fs::write(
        &genesis,
        "network = \"t\"\nprofile = \"test\"\nregistrars = [\"dpow_1111111111111111111111111111111111111111111111111111hifc8npp\"]\n",
    )
    .expect("write genesis");
    let out = dpow_env(
        &[
            "node",
            "--genesis",
            genesis.to_str().expect("path"),
            "--data-dir",
            dir.path().to_str().expect("path"),
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--http",
            "0.0.0.0:0",
        ],
        &[],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--http-token") && err.contains("--public-stats"),
        "{err}"
    );
}
