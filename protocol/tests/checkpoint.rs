//! Finality and checkpoints: which receipts a node still takes, which checkpoints it keeps,
//! and the id-list digest that lets a node catch up on closed books.

use dpow_keys::{NanoAccount, SecretKey};
use dpow_protocol::ledger::{Ledger, digest_of_ids};
use dpow_protocol::registry::Registry;
use dpow_protocol::validate::{RejectReason, Validator, ValidatorConfig};
use dpow_protocol::{
    BlockKind, Checkpoint, Finality, MessageId, Profile, Receipt, Root, Signed, TimePolicy,
    WorkRequest, WorkResult,
};
use dpow_testkit::builders::{self, account, key, sign};
use dpow_testkit::reference;

const EPOCH_MS: u64 = 10_000;

fn finality() -> Finality {
    Finality {
        epoch_ms: EPOCH_MS,
        max_lifetime_ms: 3_000,
        grace_ms: 1_000,
    }
}

fn validator() -> Validator {
    Validator::new(ValidatorConfig {
        time: TimePolicy {
            max_lifetime_ms: 3_000,
            ..TimePolicy::default()
        },
        finality: finality(),
        ..ValidatorConfig::new(Profile::test(), dpow_testkit::builders::NET)
    })
}

/// A valid receipt of `service` accepted at `at` (request made 100 ms before).
fn receipt(service: &SecretKey, n: u8, at: u64) -> Signed<Receipt> {
    let root = Root([n; 32]);
    let d = Profile::test().threshold(BlockKind::Receive);
    let req = WorkRequest {
        root,
        difficulty: d,
        nonce: u64::from(n),
        created_ms: at - 100,
        expires_ms: at + 1_000,
        node: service.public(),
        ..builders::request(service)
    };
    let req = sign(req, service);
    let worker = key(50);
    let work = reference::find_work(&root, d);
    let res = WorkResult {
        payout: Some(account(n)),
        ..builders::result(&req, &worker, work)
    };
    builders::receipt(service, &req, sign(res, &worker), at)
}

fn checkpoint(registrar: &SecretKey, epoch: u64, created_ms: u64) -> Checkpoint {
    builders::checkpoint(registrar, epoch, EPOCH_MS, created_ms)
}

#[test]
fn receipts_of_a_final_epoch_are_refused_and_open_ones_taken() {
    let v = validator();
    let service = key(10);
    // Epoch 3 spans 30 000..40 000 and is final from 40 000 + 3 000 + 1 000.
    let r = receipt(&service, 1, 35_000);
    assert!(v.check_open(&r, 43_999).is_ok(), "still open");
    let err = v.check_open(&r, 44_000).expect_err("final");
    assert_eq!(err.reason, RejectReason::FinalEpoch);
    assert!(!err.reason.penalise(), "an honest peer may forward it late");
    // A receipt of the newest epoch is open whatever its age inside the epoch.
    let fresh = receipt(&service, 2, 44_000);
    assert!(v.check_open(&fresh, 44_000).is_ok());
}

#[test]
fn checkpoints_are_kept_only_from_registrars_for_final_epochs_of_this_network() {
    let v = validator();
    let registrar = key(1);
    let registry = Registry::new([registrar.public()]);
    let now = 44_000;
    let ok = Signed::sign(
        checkpoint(&registrar, 3, now),
        &registrar,
        &dpow_testkit::builders::NET,
    )
    .expect("sign");
    let c = v
        .check_checkpoint(ok.bytes(), &registry, now)
        .expect("a registrar's checkpoint of a final epoch");
    assert_eq!(c.payload().claimed(), 12);

    let not_final = Signed::sign(
        checkpoint(&registrar, 4, now),
        &registrar,
        &dpow_testkit::builders::NET,
    )
    .expect("sign");
    let err = v
        .check_checkpoint(not_final.bytes(), &registry, now)
        .expect_err("open epoch");
    assert_eq!(err.reason, RejectReason::FinalEpoch);

    let outsider = key(2);
    let forged = Signed::sign(
        checkpoint(&outsider, 3, now),
        &outsider,
        &dpow_testkit::builders::NET,
    )
    .expect("sign");
    let err = v
        .check_checkpoint(forged.bytes(), &registry, now)
        .expect_err("not a registrar");
    assert_eq!(err.reason, RejectReason::UnknownRegistrar);

    let mut other_net = checkpoint(&registrar, 3, now);
    other_net.epoch_ms = EPOCH_MS * 2;
    let other_net =
        Signed::sign(other_net, &registrar, &dpow_testkit::builders::NET).expect("sign");
    assert!(
        v.check_checkpoint(other_net.bytes(), &registry, now)
            .is_err()
    );

    let future = Signed::sign(
        checkpoint(&registrar, 3, now + 60_000),
        &registrar,
        &dpow_testkit::builders::NET,
    )
    .expect("sign");
    let err = v
        .check_checkpoint(future.bytes(), &registry, now)
        .expect_err("dated in the future");
    assert_eq!(err.reason, RejectReason::NotYetValid);

    // Structural rules: accounts ascending, none zero, a bounded list.
    let mut unsorted = checkpoint(&registrar, 3, now);
    unsorted.credits.reverse();
    assert!(Signed::sign(unsorted, &registrar, &dpow_testkit::builders::NET).is_err());
    let mut zero = checkpoint(&registrar, 3, now);
    zero.credits[0].1 = 0;
    assert!(Signed::sign(zero, &registrar, &dpow_testkit::builders::NET).is_err());
    let mut huge = checkpoint(&registrar, 3, now);
    huge.credits = (1..=255u8)
        .flat_map(|a| (1..=5u8).map(move |b| (a, b)))
        .map(|(a, b)| {
            let mut k = [a; 32];
            k[0] = b;
            (NanoAccount::from_bytes(k).expect("account"), 1)
        })
        .collect();
    huge.credits.sort();
    assert!(Signed::sign(huge, &registrar, &dpow_testkit::builders::NET).is_err());
}

#[test]
fn an_id_list_is_checked_against_the_epoch_digest() {
    let service = key(10);
    let mut ledger = Ledger::new(EPOCH_MS);
    let receipts: Vec<_> = (1..=5)
        .map(|n| receipt(&service, n, 31_000 + u64::from(n)))
        .collect();
    for r in &receipts {
        ledger.ingest(r.clone()).expect("ingest");
    }
    let ids = ledger.receipt_ids_in_epoch(3);
    assert_eq!(ids.len(), 5);
    assert_eq!(digest_of_ids(EPOCH_MS, 3, &ids), ledger.epoch_digest(3));
    // A list that leaves one out, adds one, or is out of order does not match.
    assert_ne!(
        digest_of_ids(EPOCH_MS, 3, &ids[1..]),
        ledger.epoch_digest(3)
    );
    let mut more = ids.clone();
    more.push(MessageId([0xff; 32]));
    assert_ne!(digest_of_ids(EPOCH_MS, 3, &more), ledger.epoch_digest(3));
    let mut swapped = ids.clone();
    swapped.swap(0, 1);
    assert_ne!(digest_of_ids(EPOCH_MS, 3, &swapped), ledger.epoch_digest(3));
    // Another epoch or epoch length is another digest.
    assert_ne!(digest_of_ids(EPOCH_MS, 4, &ids), ledger.epoch_digest(3));
    assert_ne!(digest_of_ids(EPOCH_MS + 1, 3, &ids), ledger.epoch_digest(3));
}
