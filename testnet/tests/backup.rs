//! `dpow node backup`: a consistent copy of a node's key and database, taken while the node
//! runs (through its control socket) and while it does not, from which a node starts again
//! with everything it had.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use dpow_node::net::WorkAsk;
use dpow_node::store::Store;
use dpow_protocol::{BlockKind, Priority, Root};
use dpow_testnet::local::{LocalNet, LocalOptions};
use dpow_testnet::procs::{NodeProc, dpow_binary, http_get_json, start_node, wait_on};
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

fn receipts_of(p: &NodeProc) -> u64 {
    http_get_json(&format!("{}/api/stats", p.http))
        .ok()
        .and_then(|v| v["ledger_receipts"].as_u64())
        .unwrap_or(0)
}

/// Wait until a node holds `n` receipts, looking again at each of its events.
async fn wait_receipts(p: &NodeProc, n: u64) {
    let what = format!("{n} receipts on {}", p.http);
    tokio::task::block_in_place(|| wait_on(&p.http, &what, T, || receipts_of(p) >= n))
        .unwrap_or_else(|e| panic!("{e}: {} held", receipts_of(p)));
}

fn backup(dpow: &Path, dir: &Path, data_dir: &Path) -> (bool, Value, String) {
    let out = Command::new(dpow)
        .args(["--json", "node", "backup"])
        .arg(dir)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .expect("dpow runs");
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (
        out.status.success(),
        v,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn stored_receipts(db: &Path) -> usize {
    let store = Store::open(db).expect("the backup opens");
    store
        .receipts()
        .inspect(|r| assert!(r.is_ok(), "a readable receipt"))
        .count()
}

async fn start(dpow: &Path, dir: &Path, name: &str, genesis: &Path) -> NodeProc {
    let (dpow, dir, name, genesis) = (
        dpow.to_path_buf(),
        dir.to_path_buf(),
        name.to_string(),
        genesis.to_path_buf(),
    );
    tokio::task::spawn_blocking(move || start_node(&dpow, &dir, &name, "relay", &genesis, &[]))
        .await
        .expect("join")
        .expect("the node starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_taken_while_the_node_runs_restores_a_node_with_everything() {
    let dpow = dpow_binary().expect("dpow");
    let net = LocalNet::start(LocalOptions {
        workers: 1,
        ..LocalOptions::default()
    })
    .await
    .expect("network");
    let service = Arc::new(net.service_node().await.expect("service node"));
    let dir = tempfile::tempdir().expect("dir");
    let genesis = |name: &str, bootstrap: bool| {
        let path = dir.path().join(name);
        net.write_genesis(&path, bootstrap).expect("genesis");
        path
    };
    let online = genesis("genesis.toml", true);
    let alone = genesis("genesis-alone.toml", false);
    let node = start(&dpow, dir.path(), "keeper", &online).await;
    let data_dir = dir.path().join("keeper");

    let n = 6u8;
    for i in 0..n {
        let mut r = [0x42u8; 32];
        r[0] = i;
        service
            .submit(WorkAsk {
                root: Root(r),
                difficulty: net.genesis.profile.threshold(BlockKind::Receive),
                kind: Some(BlockKind::Receive),
                account: None,
                priority: Priority::Normal,
                lifetime: Duration::from_secs(30),
            })
            .await
            .expect("answered");
    }
    wait_receipts(&node, u64::from(n)).await;

    // While it runs: the node writes the checkpoint itself.
    let live = dir.path().join("backup-live");
    let (ok, v, err) = backup(&dpow, &live, &data_dir);
    assert!(ok, "{err}");
    assert_eq!(v["node_running"], true, "{v}");
    assert_eq!(v["receipts"], u64::from(n), "{v}");
    assert_eq!(
        std::fs::read(live.join("node.key")).expect("key copied"),
        std::fs::read(data_dir.join("node.key")).expect("key")
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(live.join("node.key"))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the key copy is private: {mode:o}");
    }
    assert_eq!(stored_receipts(&live.join("db")), usize::from(n));

    // A directory that exists is never written into.
    let (ok, _, err) = backup(&dpow, &live, &data_dir);
    assert!(!ok && err.contains("exists"), "{err}");
    // A directory that is no node's is refused.
    let (ok, _, err) = backup(&dpow, &dir.path().join("other"), dir.path());
    assert!(!ok && err.contains("no node database"), "{err}");

    // Stopped: the command opens the database itself.
    let peer_id = node.peer_id.clone();
    drop(node);
    let cold = dir.path().join("backup-cold");
    let (ok, v, err) = backup(&dpow, &cold, &data_dir);
    assert!(ok, "{err}");
    assert_eq!(v["node_running"], false, "{v}");
    assert_eq!(v["receipts"], u64::from(n), "{v}");

    // A node started on the live backup, with no peer, has the same identity and books.
    std::fs::rename(&live, dir.path().join("restored")).expect("move into place");
    let restored = start(&dpow, dir.path(), "restored", &alone).await;
    assert_eq!(restored.peer_id, peer_id);
    wait_receipts(&restored, u64::from(n)).await;
}
