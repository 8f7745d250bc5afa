//! The short-lived commands against a running network: `dpow registry`'s sequence number
//! kept beside the key (`KEY.seq`) and its refusal when the network is ahead of it, and
//! `dpow registry` and `dpow request` staying until peers hold what they published.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use dpow_keys::keyfile;
use dpow_protocol::{Credits, RegistryAction};
use dpow_testnet::local::{LocalNet, LocalOptions};
use serde_json::Value;

const T: Duration = Duration::from_secs(20);

async fn dpow(bin: &Path, args: Vec<String>) -> Output {
    let bin = bin.to_path_buf();
    tokio::task::spawn_blocking(move || {
        Command::new(bin)
            .args(args)
            .env_remove("RUST_LOG")
            .output()
            .expect("dpow runs")
    })
    .await
    .expect("join")
}

fn recorded(seq_file: &Path) -> String {
    std::fs::read_to_string(seq_file).expect("sequence file")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dpow_registry_keeps_its_sequence_beside_the_key_and_refuses_a_network_ahead_of_it() {
    let bin = dpow_testnet::procs::dpow_binary().expect("dpow");
    let net = LocalNet::start(LocalOptions {
        workers: 0,
        register_service: false,
        ..LocalOptions::default()
    })
    .await
    .expect("network starts");
    let dir = tempfile::tempdir().expect("dir");
    let genesis = dir.path().join("genesis.toml");
    net.write_genesis(&genesis, true).expect("genesis written");
    let key = dir.path().join("registrar.key");
    keyfile::write(&key, &net.registrar).expect("key written");
    let seq_file = dir.path().join("registrar.key.seq");
    let service = net.service.public().to_string();
    let grant = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "--json",
            "registry",
            "--genesis",
            genesis.to_str().expect("path"),
            "grant",
            "--key",
            key.to_str().expect("path"),
            "--service",
            &service,
            "--credits",
            "5",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let seq_of = |out: &Output| -> u64 {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("json");
        // The command stays until a peer answers with the entry it published.
        assert!(v["held_by"].is_string(), "no peer confirmed: {v}");
        v["seq"].as_u64().expect("seq")
    };

    // No file, an empty registry: entry 1, recorded.
    assert_eq!(seq_of(&dpow(&bin, grant(&[])).await), 1);
    assert!(
        recorded(&seq_file).contains("= 1"),
        "{}",
        recorded(&seq_file)
    );
    net.wait_all(T, |s| s.registry_entries >= 1)
        .await
        .expect("entry 1 spread");
    assert_eq!(seq_of(&dpow(&bin, grant(&[])).await), 2);
    assert!(recorded(&seq_file).contains("= 2"));
    net.wait_all(T, |s| s.registry_entries >= 2)
        .await
        .expect("entry 2 spread");

    // Another machine signs entry 3 with the same key: the network is now ahead of the file.
    let third = net
        .bootstrap
        .registry(
            RegistryAction::GrantCredits {
                service: net.service.public(),
                credits: Credits(1),
            },
            net.registrar.clone(),
        )
        .await
        .expect("signed elsewhere");
    assert_eq!(third, 3);
    let out = dpow(&bin, grant(&[])).await;
    assert!(!out.status.success(), "refused");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("entry #3") && err.contains("another machine"),
        "{err}"
    );
    assert!(err.contains("--adopt-network-seq"), "{err}");
    assert!(recorded(&seq_file).contains("= 2"), "unchanged");
    let held = net.bootstrap.registry_entries().await.expect("entries");
    assert_eq!(held.len(), 3, "nothing signed");

    // The operator knows why: take the network's count.
    assert_eq!(
        seq_of(&dpow(&bin, grant(&["--adopt-network-seq"])).await),
        4
    );
    assert!(recorded(&seq_file).contains("= 4"));
    net.wait_all(T, |s| s.registry_entries >= 4)
        .await
        .expect("entry 4 spread");
}

/// `dpow request` signs a receipt for every work it gets and keeps no store: it leaves only
/// once its peers hold every one (asked directly, not a pause), and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dpow_request_leaves_once_peers_hold_every_receipt_it_signed() {
    let bin = dpow_testnet::procs::dpow_binary().expect("dpow");
    let net = LocalNet::start(LocalOptions {
        workers: 1,
        ..LocalOptions::default()
    })
    .await
    .expect("network starts");
    let dir = tempfile::tempdir().expect("dir");
    let genesis = dir.path().join("genesis.toml");
    net.write_genesis(&genesis, true).expect("genesis written");
    let key = dir.path().join("service.key");
    keyfile::write(&key, &net.service).expect("key written");
    let count = 3;
    let out = dpow(
        &bin,
        [
            "--json",
            "request",
            "--genesis",
            genesis.to_str().expect("path"),
            "--key",
            key.to_str().expect("path"),
            "--count",
            &count.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["answered"], count, "{v}");
    assert_eq!(v["receipts"]["signed"], count, "{v}");
    assert_eq!(v["receipts"]["held_by_peers"], count, "{v}");
    // Held already when the command returned (asked of the books, not the statistics,
    // which lag by up to half a second): some node of the network has them all.
    let mut most = 0;
    for node in net.workers.iter().chain([&net.bootstrap]) {
        most = most.max(node.ledger().await.expect("ledger").0.len());
    }
    assert!(most >= count, "{most} receipts held");
}
