//! `dpow ledger prune`, `export` and `verify-archive` end to end on a stopped node's database:
//! only an epoch that a registrar checkpoint held there vouches for is archived and pruned,
//! the archive verifies offline with the genesis file alone (a changed byte does not), and
//! the books stay exact and check clean afterwards.
#![cfg(feature = "ledger")]

mod common;

use std::path::Path;
use std::sync::Arc;

use common::dpow;
use dpow_keys::SecretKey;
use dpow_node::store::{Books, Store};
use dpow_protocol::ledger::epoch_of;
use dpow_protocol::registry::Registry;
use dpow_protocol::{Checkpoint, Credits, NetworkId, Receipt, Signed, WorkResult};
use dpow_testkit::builders::{self, NOW, account, key, sign_for};

const EPOCH_MS: u64 = 10_000;

fn receipt(net: &NetworkId, i: u64) -> Signed<Receipt> {
    let (service, worker) = (key(10), key(20 + (i % 2) as u8));
    let req = sign_for(
        dpow_protocol::WorkRequest {
            nonce: i,
            ..builders::request(&service)
        },
        &service,
        net,
    );
    let work = builders::solved(&req, &worker).payload().work;
    let res = sign_for(
        WorkResult {
            payout: (!i.is_multiple_of(3)).then(|| account((i % 2) as u8 + 1)),
            ..builders::result(&req, &worker, work)
        },
        &worker,
        net,
    );
    sign_for(
        Receipt {
            request: req.clone(),
            result: res,
            price: Credits::price(req.payload().difficulty),
            accepted_ms: NOW + i * 100,
        },
        &service,
        net,
    )
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn prune_archives_only_vouched_epochs_and_keeps_the_books_exact() {
    let dir = tempfile::tempdir().expect("temp dir");
    let registrar: SecretKey = key(1);
    let genesis = dir.path().join("genesis.toml");
    std::fs::write(
        &genesis,
        format!(
            "network = \"retention-test\"\nprofile = \"test\"\nregistrars = [\"{}\"]\nepoch_ms = {EPOCH_MS}\n",
            registrar.public()
        ),
    )
    .expect("write genesis");
    let net = dpow_node::genesis::Genesis::load(&genesis)
        .expect("genesis")
        .id;
    let data = dir.path().join("data");
    let first = epoch_of(NOW, EPOCH_MS);
    let (balances, digest) = {
        let store = Arc::new(Store::open(&data.join("db")).expect("store"));
        let mut books = Books::open(store.clone(), EPOCH_MS, net).expect("books");
        for i in 0..400 {
            books.ingest(&receipt(&net, i)).expect("ingest");
        }
        books.sync().expect("sync");
        assert!(books.epochs().expect("epochs").len() >= 4);
        // The registrar vouches for the first epoch only.
        let claims = books.claims_in_epoch(first).expect("claims");
        let held = books.epochs().expect("epochs")[0].1;
        let c = Checkpoint {
            registrar: registrar.public(),
            epoch: first,
            epoch_ms: EPOCH_MS,
            digest: books.epoch_digest(first).expect("digest"),
            receipts: held,
            credits: claims.accounts.into_iter().collect(),
            unclaimed: claims.unclaimed,
            created_ms: NOW + 86_400_000,
        };
        let c = sign_for(c, &registrar, &net);
        store
            .checkpoint_put(first, &registrar.public().0, c.bytes())
            .expect("checkpoint");
        (
            books.balances(&Registry::new([])).expect("balances"),
            books.epoch_digest(first).expect("digest"),
        )
    };
    let archives = dir.path().join("archive");
    let g = path(&genesis);
    let dry = dpow(&[
        "ledger",
        "--genesis",
        g,
        "prune",
        "--before-epoch",
        &(first + 3).to_string(),
        "--archive-dir",
        path(&archives),
        "--data-dir",
        path(&data),
        "--dry-run",
    ]);
    assert!(dry.status.success(), "{dry:?}");
    let said = String::from_utf8_lossy(&dry.stdout);
    assert!(said.contains("would be archived"), "{said}");
    assert!(said.contains("no registrar checkpoint"), "{said}");
    assert!(!archives.exists(), "a dry run writes nothing");

    let out = dpow(&[
        "ledger",
        "--genesis",
        g,
        "prune",
        "--before-epoch",
        &(first + 3).to_string(),
        "--archive-dir",
        path(&archives),
        "--data-dir",
        path(&data),
    ]);
    assert!(out.status.success(), "{out:?}");
    let file = archives.join(format!("epoch-{first}.dpowarc"));
    assert!(file.exists());
    assert!(
        !archives
            .join(format!("epoch-{}.dpowarc", first + 1))
            .exists()
    );

    // The archive checks offline; one changed byte and it does not.
    let ok = dpow(&["ledger", "--genesis", g, "verify-archive", path(&file)]);
    assert!(ok.status.success(), "{ok:?}");
    assert!(String::from_utf8_lossy(&ok.stdout).contains("vouched for by registrar"));
    let mut bytes = std::fs::read(&file).expect("read");
    *bytes.last_mut().expect("not empty") ^= 1;
    let bad = dir.path().join("bad.dpowarc");
    std::fs::write(&bad, bytes).expect("write");
    let no = dpow(&["ledger", "--genesis", g, "verify-archive", path(&bad)]);
    assert!(!no.status.success(), "{no:?}");

    // The books: pruned, exact, clean.
    let full = dpow(&[
        "ledger",
        "--genesis",
        g,
        "verify",
        "--full",
        "--data-dir",
        path(&data),
    ]);
    assert!(full.status.success(), "{full:?}");
    let store = Arc::new(Store::open(&data.join("db")).expect("store"));
    let books = Books::open(store, EPOCH_MS, net).expect("books");
    let pruned = books.pruned_epochs().expect("pruned");
    assert_eq!(pruned.len(), 1);
    assert_eq!(pruned[0].epoch, first);
    assert_eq!(books.epoch_digest(first).expect("digest"), digest);
    assert_eq!(
        books.balances(&Registry::new([])).expect("balances"),
        balances
    );
    assert!(!books.contains(&receipt(&net, 0).id()).expect("contains"));
    assert!(books.receipt_ids_in_epoch(first + 1).expect("ids").len() > 10);

    // Export refuses a pruned epoch and writes another.
    let again = dpow(&[
        "ledger",
        "--genesis",
        g,
        "export",
        "--epoch",
        &first.to_string(),
        "--data-dir",
        path(&data),
    ]);
    assert!(!again.status.success());
    drop(books);
    let one = dir.path().join("one.dpowarc");
    let next = dpow(&[
        "ledger",
        "--genesis",
        g,
        "export",
        "--epoch",
        &(first + 1).to_string(),
        "--out",
        path(&one),
        "--data-dir",
        path(&data),
    ]);
    assert!(next.status.success(), "{next:?}");
    // Well-formed and signed, but no checkpoint vouches for it: exit 1.
    let unvouched = dpow(&["ledger", "--genesis", g, "verify-archive", path(&one)]);
    assert_eq!(unvouched.status.code(), Some(1), "{unvouched:?}");
    assert!(String::from_utf8_lossy(&unvouched.stdout).contains("NOT vouched"));
}
