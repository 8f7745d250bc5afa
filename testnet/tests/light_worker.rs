//! The light worker: `dpow` built without the `ledger` feature (no RocksDB, no C++), joined to
//! a network of full nodes as a worker. The build runs inside this test, so what it costs shows
//! in every CI run.
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dpow_node::net::WorkAsk;
use dpow_protocol::{BlockKind, Priority, Root};
use dpow_testnet::local::{LocalNet, LocalOptions, wait_for};
use dpow_testnet::procs::{NodeProc, http_get_json, start_node, wait_on};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

/// Build the light `dpow` into its own target directory (beside the suite's, so the two
/// builds never wait on each other's lock) and return its path. The command is
/// `scripts/test.sh`'s light step (every target, so that the features of the tests' own
/// dependencies are those of that build), which the suite therefore finds done.
fn build_light() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace.join("target"), PathBuf::from)
        .join("light");
    let started = Instant::now();
    let mut cargo = Command::new(env!("CARGO"));
    // What cargo set for this test process (its package's manifest, name, binaries) is not
    // the light build's: a build script that watches one of them (ring's watches
    // CARGO_MANIFEST_DIR) would run again, and every crate above it be rebuilt.
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_BIN_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_TARGET_TMPDIR",
                "CARGO_PRIMARY_PACKAGE",
            ]
            .contains(&k.as_ref())
        {
            cargo.env_remove(&key);
        }
    }
    let status = cargo
        .current_dir(workspace)
        .args([
            "build",
            "--locked",
            "-p",
            "dpow-node",
            "--no-default-features",
            "--all-targets",
        ])
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "the light build failed");
    // Written past the test harness's capture, so every CI log shows what the build cost.
    let _ = writeln!(
        std::io::stderr(),
        "light worker build (dev profile, {}): {:.1} s",
        target.display(),
        started.elapsed().as_secs_f64()
    );
    target.join("debug").join("dpow")
}

fn stats(p: &NodeProc) -> Value {
    http_get_json(&format!("{}/api/stats", p.http)).unwrap_or(Value::Null)
}

fn root(i: u8) -> Root {
    let mut r = [0x5au8; 32];
    r[0] = i;
    Root(r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_light_worker_joins_full_nodes_solves_and_keeps_only_its_own_receipts() {
    let dpow = tokio::task::spawn_blocking(build_light)
        .await
        .expect("build task");

    // It is the light build: the ledger benchmark is not in it.
    let out = Command::new(&dpow)
        .args(["bench", "--ledger", "1000"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("light build"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Full nodes in process: a bootstrap/registrar and a service; no other worker.
    let net = LocalNet::start(LocalOptions {
        workers: 0,
        ..LocalOptions::default()
    })
    .await
    .expect("network");
    let service = Arc::new(net.service_node().await.expect("service node"));
    let dir = tempfile::tempdir().expect("dir");
    let genesis = dir.path().join("genesis.toml");
    net.write_genesis(&genesis, true).expect("genesis");
    let light = {
        let (dpow, dir, genesis) = (dpow.clone(), dir.path().to_path_buf(), genesis.clone());
        tokio::task::spawn_blocking(move || {
            start_node(
                &dpow,
                &dir,
                "light",
                "worker",
                &genesis,
                &[
                    "--role".into(),
                    "worker".into(),
                    "--threads".into(),
                    "1".into(),
                    "--status-interval".into(),
                    "0.5".into(),
                    "--no-discovery".into(),
                ],
            )
        })
        .await
        .expect("join")
        .expect("the light worker starts")
    };
    wait_for(&service, T, |s| s.live_workers >= 1)
        .await
        .expect("the service hears the light worker");

    let account = stats(&light)["account"]
        .as_str()
        .expect("account")
        .to_string();
    let n = 5u8;
    for i in 0..n {
        let answer = service
            .submit(WorkAsk {
                root: root(i),
                difficulty: net.genesis.profile.threshold(BlockKind::Receive),
                kind: Some(BlockKind::Receive),
                account: None,
                priority: Priority::Normal,
                lifetime: Duration::from_secs(30),
            })
            .await
            .expect("answered by the network");
        assert_eq!(
            answer.worker.to_string(),
            account,
            "the only worker solved it"
        );
        assert!(
            dpow_testkit::reference::work_value(&root(i), answer.work)
                >= net.genesis.profile.threshold(BlockKind::Receive).0
        );
    }

    // The full nodes hold every receipt; the light worker holds its own and earns by them.
    wait_for(&net.bootstrap, T, |s| s.ledger_receipts >= usize::from(n))
        .await
        .expect("the bootstrap holds the receipts");
    let (books, _) = service.ledger().await.expect("ledger");
    let earned = books
        .counted()
        .filter(|r| r.payload().result.payload().worker.to_string() == account)
        .map(|r| r.payload().price.0)
        .sum::<u64>();
    tokio::task::block_in_place(|| {
        wait_on(&light.http, "the light worker's credits", T, || {
            stats(&light)["credits_earned"].as_u64() == Some(earned)
        })
    })
    .unwrap_or_else(|e| panic!("{e}: {} vs {earned}", stats(&light)));
    let s = stats(&light);
    assert_eq!(s["ledger_receipts"].as_u64(), Some(u64::from(n)));
    assert!(
        !dir.path().join("light").join("db").exists(),
        "a light worker writes no database"
    );
    drop(light);
}
