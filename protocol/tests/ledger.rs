//! The ledger: receipts in (duplicates, equivocation, order independence), balances against
//! registry grants, epochs and digests, and payout reports recomputed from ledgers that come
//! out byte for byte the same. Payout arithmetic and amounts are in `ledger_payout.rs`.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use dpow_keys::{NanoAccount, PublicKey, SecretKey};
use dpow_protocol::ledger::{
    Balances, DEFAULT_EPOCH_MS, Dropped, Equivocation, Ingested, Ledger, LedgerError, PayoutReport,
    ServiceBalance, epoch_of, parse_amount, report_signing_input,
};
use dpow_protocol::registry::Registry;
use dpow_protocol::{
    Credits, Difficulty, MessageId, Receipt, RegistryAction, RegistryEntry, Root, Signed, Work,
    WorkRequest, WorkResult,
};
use dpow_testkit::builders::{self, NOW, key, sign};
use dpow_testkit::reference;
use proptest::prelude::*;

/// A threshold met by about one hash in 256: found at once, priced 1 credit.
const EASY: Difficulty = Difficulty(0xff00_0000_0000_0000);

fn request(
    service: &SecretKey,
    root: Root,
    nonce: u64,
    difficulty: Difficulty,
) -> Signed<WorkRequest> {
    let req = WorkRequest {
        root,
        nonce,
        difficulty,
        created_ms: NOW,
        expires_ms: NOW + 60_000,
        ..builders::request(service)
    };
    sign(req, service)
}

fn find_work(root: &Root, d: Difficulty) -> Work {
    reference::find_work(root, d)
}

/// The payout account a test worker names in its results: workers 10 and 11 name one account
/// together, worker 12 names none (its credits are unclaimed), any other its own.
fn payout_of(worker: &SecretKey) -> Option<NanoAccount> {
    let k = worker.public();
    if k == key(12).public() {
        return None;
    }
    let b = if k == key(10).public() || k == key(11).public() {
        0xAA
    } else {
        k.0[0] | 1
    };
    Some(NanoAccount::from_bytes([b; 32]).expect("not the burn account"))
}

/// The service's receipt for `worker`'s answer `work` to `req`.
fn receipt_for(
    service: &SecretKey,
    req: &Signed<WorkRequest>,
    worker: &SecretKey,
    work: Work,
    accepted_ms: u64,
) -> Signed<Receipt> {
    let res = WorkResult {
        payout: payout_of(worker),
        ..builders::result(req, worker, work)
    };
    builders::receipt(service, req, sign(res, worker), accepted_ms)
}

/// A 1-credit receipt for a fresh request (`nonce` makes it unique).
fn easy(service: &SecretKey, worker: &SecretKey, nonce: u64, accepted_ms: u64) -> Signed<Receipt> {
    let root = Root([nonce as u8; 32]);
    let req = request(service, root, nonce, EASY);
    receipt_for(service, &req, worker, find_work(&root, EASY), accepted_ms)
}

/// Real work from `../shared/vectors/nano.json` (nanolib), well above the receive threshold:
/// (root, work, value). A request at `value` prices 4, 18 and 3 credits.
const HARD: [(&str, &str, u64); 3] = [
    (
        "7D7F151B3B7B954D8C040EED01E5DEC681631C78BE2DADAFB17755E7495D38DD",
        "55d953fd07bcb927",
        0xffff_ff63_e8ae_ee5a,
    ),
    (
        "71EA2F7BE623A784C2F75FF5E110D7C7EB443655C518569CB2E0FC1B0F62E3B5",
        "765e01475c8dae56",
        0xffff_ffe2_519c_ce57,
    ),
    (
        "993AAE7805475920F35122EEB74FC4837761B8F18FACDE0125B536644EAC6671",
        "398eda355a668708",
        0xffff_ff15_bdd2_5948,
    ),
];

fn hard(i: usize, service: &SecretKey, worker: &SecretKey, accepted_ms: u64) -> Signed<Receipt> {
    let (root, work, value) = HARD[i];
    let root: Root = root.parse().expect("root");
    let req = request(service, root, 1000 + i as u64, Difficulty(value));
    receipt_for(
        service,
        &req,
        worker,
        work.parse().expect("work"),
        accepted_ms,
    )
}

fn registry_entry(
    registrar: &SecretKey,
    seq: u64,
    action: RegistryAction,
) -> Signed<RegistryEntry> {
    builders::entry(registrar, seq, seq, action)
}

fn ingest_all(ledger: &mut Ledger, receipts: &[Signed<Receipt>]) {
    for r in receipts {
        match ledger.ingest(r.clone()) {
            Ok(_) | Err(LedgerError::AlreadyProven { .. }) => {}
            Err(e) => panic!("unexpected refusal: {e}"),
        }
    }
}

// ---- ingesting ------------------------------------------------------------------------------

#[test]
fn epochs_count_from_the_unix_epoch() {
    assert_eq!(epoch_of(0, DEFAULT_EPOCH_MS), 0);
    assert_eq!(epoch_of(DEFAULT_EPOCH_MS - 1, DEFAULT_EPOCH_MS), 0);
    assert_eq!(epoch_of(DEFAULT_EPOCH_MS, DEFAULT_EPOCH_MS), 1);
    assert_eq!(epoch_of(1_700_000_000_000, DEFAULT_EPOCH_MS), 19_675);
    assert_eq!(epoch_of(1234, 0), 1234, "a zero length is taken as 1 ms");
    assert_eq!(epoch_of(u64::MAX, 1), u64::MAX);
    assert_eq!(Ledger::default().epoch_ms(), DEFAULT_EPOCH_MS);
    assert_eq!(Ledger::new(0).epoch_ms(), 1);
}

#[test]
fn a_receipt_counts_once_and_copies_are_duplicates() {
    let (svc, wrk) = (key(1), key(2));
    let r = easy(&svc, &wrk, 1, 5_000);
    let request = r.payload().request.id();
    let mut ledger = Ledger::default();
    assert!(ledger.is_empty());
    assert_eq!(ledger.ingest(r.clone()), Ok(Ingested::Counted { request }));
    // The same bytes again, decoded afresh as they would arrive from a peer.
    let copy = Signed::<Receipt>::decode(r.bytes(), &dpow_testkit::builders::NET).expect("decode");
    let err = ledger.ingest(copy).expect_err("duplicate");
    assert_eq!(err, LedgerError::Duplicate { receipt: r.id() });
    assert!(err.to_string().contains("already in the ledger"), "{err}");

    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger.get(&r.id()).map(Signed::bytes), Some(r.bytes()));
    assert!(ledger.is_counted(&r.id()));
    assert_eq!(ledger.counted_for(&request), Some(r.id()));
    assert_eq!(ledger.spent(&svc.public()), 1);
    assert_eq!(ledger.earned(&wrk.public()), 1);
    assert_eq!(ledger.earned(&svc.public()), 0);
    assert!(ledger.flagged_services().is_empty());
    assert!(ledger.equivocations().is_empty());
    // A receipt the ledger has never seen is neither held nor counted.
    let other = easy(&svc, &wrk, 2, 5_000);
    assert!(ledger.get(&other.id()).is_none());
    assert!(!ledger.is_counted(&other.id()));
}

#[test]
fn prices_come_from_the_requested_difficulty() {
    let (svc, w1, w2) = (key(1), key(2), key(3));
    let receipts = [
        hard(0, &svc, &w1, 10),
        hard(1, &svc, &w2, 20),
        hard(2, &svc, &w1, 30),
        easy(&svc, &w2, 7, 40),
    ];
    let prices: Vec<u64> = receipts.iter().map(|r| r.payload().price.0).collect();
    assert_eq!(prices, [4, 18, 3, 1]);
    let mut ledger = Ledger::default();
    ingest_all(&mut ledger, &receipts);
    assert_eq!(ledger.spent(&svc.public()), 26);
    assert_eq!(ledger.earned(&w1.public()), 7);
    assert_eq!(ledger.earned(&w2.public()), 19);
    assert_eq!(ledger.counted().count(), 4);
}

/// Two receipts for one request, answered by two different workers, sorted by id.
fn equivocating_pair(svc: &SecretKey, w1: &SecretKey, w2: &SecretKey) -> [Signed<Receipt>; 2] {
    let (root, work, value) = HARD[1];
    let root: Root = root.parse().expect("root");
    let req = request(svc, root, 77, Difficulty(value));
    let work: Work = work.parse().expect("work");
    let mut pair = [
        receipt_for(svc, &req, w1, work, 1_000),
        receipt_for(svc, &req, w2, work, 2_000),
    ];
    pair.sort_by_key(|r| r.id());
    pair
}

#[test]
fn equivocation_is_kept_flagged_and_resolved_by_the_lowest_id() {
    let (svc, w1, w2) = (key(1), key(2), key(3));
    let [low, high] = equivocating_pair(&svc, &w1, &w2);
    let request = low.payload().request.id();
    let proof = Equivocation {
        service: svc.public(),
        request,
        counted: low.id(),
        evidence: high.id(),
    };
    let winner = low.payload().result.payload().worker;
    let loser = high.payload().result.payload().worker;

    let mut results = Vec::new();
    for order in [[&low, &high], [&high, &low]] {
        let mut ledger = Ledger::default();
        assert_eq!(
            ledger.ingest(order[0].clone()),
            Ok(Ingested::Counted { request })
        );
        assert_eq!(
            ledger.ingest(order[1].clone()),
            Ok(Ingested::Equivocation {
                proof,
                dropped: None
            })
        );
        assert_eq!(ledger.len(), 2, "both receipts are kept as evidence");
        assert!(ledger.is_counted(&low.id()));
        assert!(!ledger.is_counted(&high.id()));
        assert_eq!(ledger.equivocations(), vec![proof]);
        assert_eq!(
            ledger.flagged_services().into_iter().collect::<Vec<_>>(),
            vec![svc.public()]
        );
        // The price is spent once, and earned by the lowest id's worker only.
        assert_eq!(ledger.spent(&svc.public()), 18);
        assert_eq!(ledger.earned(&winner), 18);
        assert_eq!(ledger.earned(&loser), 0);
        let registry = Registry::new([key(9).public()]);
        assert_eq!(
            ledger
                .service_balance(&registry, &svc.public())
                .equivocations,
            1
        );
        results.push((
            ledger.balances(&registry),
            ledger.epoch_digest(0),
            ledger.receipt_ids_in_epoch(0),
        ));
    }
    assert_eq!(
        results[0], results[1],
        "the order of arrival changes nothing"
    );
    assert_eq!(results[0].2, vec![low.id(), high.id()]);
}

#[test]
fn a_third_receipt_adds_nothing_or_replaces_the_highest() {
    let (svc, w1, w2, w3) = (key(1), key(2), key(3), key(4));
    let root = Root([42; 32]);
    let req = request(&svc, root, 5, EASY);
    let work = find_work(&root, EASY);
    let mut three = [
        receipt_for(&svc, &req, &w1, work, 100),
        receipt_for(&svc, &req, &w2, work, 100),
        receipt_for(&svc, &req, &w3, work, 100),
    ];
    three.sort_by_key(|r| r.id());
    let [lo, mid, hi] = three.clone();

    let mut a = Ledger::default();
    ingest_all(&mut a, &[lo.clone(), mid.clone()]);
    let err = a.ingest(hi.clone()).expect_err("adds nothing");
    assert_eq!(
        err,
        LedgerError::AlreadyProven {
            service: svc.public(),
            request: req.id(),
            receipt: hi.id()
        }
    );
    assert!(err.to_string().contains("already proven"), "{err}");

    let mut b = Ledger::default();
    ingest_all(&mut b, &[mid.clone(), hi.clone()]);
    assert!(b.is_counted(&mid.id()));
    let got = b.ingest(lo.clone()).expect("a lower id is kept");
    assert_eq!(
        got,
        Ingested::Equivocation {
            proof: Equivocation {
                service: svc.public(),
                request: req.id(),
                counted: lo.id(),
                evidence: mid.id(),
            },
            dropped: Some(Dropped {
                id: hi.id(),
                accepted_ms: hi.payload().accepted_ms,
            }),
        }
    );
    assert!(b.get(&hi.id()).is_none(), "the dropped receipt is gone");
    assert!(b.is_counted(&lo.id()));

    // Every order of arrival ends with the same two receipts and the same books.
    let orders = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    let registry = Registry::new([key(9).public()]);
    let expected = (
        a.receipt_ids_in_epoch(0),
        a.epoch_digest(0),
        a.balances(&registry),
    );
    assert_eq!(expected.0, vec![lo.id(), mid.id()]);
    for order in orders {
        let mut l = Ledger::default();
        let receipts: Vec<_> = order.iter().map(|&i| three[i].clone()).collect();
        ingest_all(&mut l, &receipts);
        assert_eq!(
            (
                l.receipt_ids_in_epoch(0),
                l.epoch_digest(0),
                l.balances(&registry)
            ),
            expected,
            "order {order:?}"
        );
        assert_eq!(l.earned(&lo.payload().result.payload().worker), 1);
        assert_eq!(l.spent(&svc.public()), 1);
    }
}

// ---- balances -------------------------------------------------------------------------------

#[test]
fn balances_are_grants_minus_spending() {
    let (registrar, svc, idle, stranger) = (key(1), key(10), key(11), key(12));
    let (w1, w2) = (key(20), key(21));
    let mut registry = Registry::new([registrar.public()]);
    let actions = [
        RegistryAction::RegisterService {
            service: svc.public(),
            name: "wallet".to_string(),
        },
        RegistryAction::GrantCredits {
            service: svc.public(),
            credits: Credits(20),
        },
        RegistryAction::RegisterService {
            service: idle.public(),
            name: "idle".to_string(),
        },
        RegistryAction::GrantCredits {
            service: svc.public(),
            credits: Credits(5),
        },
        RegistryAction::GrantCredits {
            service: idle.public(),
            credits: Credits(7),
        },
    ];
    for (i, action) in actions.into_iter().enumerate() {
        registry
            .apply(registry_entry(&registrar, i as u64 + 1, action))
            .expect("apply");
    }

    let day = DEFAULT_EPOCH_MS;
    let mut ledger = Ledger::default();
    ingest_all(
        &mut ledger,
        &[
            hard(0, &svc, &w1, 3 * day + 1),  // 4
            hard(1, &svc, &w2, 3 * day + 2),  // 18
            hard(2, &svc, &w1, 4 * day),      // 3
            easy(&stranger, &w2, 1, 4 * day), // 1, from a service the registry does not know
        ],
    );
    let b = ledger.balances(&registry);

    let wallet = &b.services[&svc.public()];
    assert_eq!(
        wallet,
        &ServiceBalance {
            granted: Credits(25),
            spent: 25,
            receipts: 3,
            equivocations: 0,
        }
    );
    assert_eq!(wallet.balance(), 0);
    assert_eq!(wallet.remaining(), 0);
    assert!(wallet.is_exhausted());

    let idle_b = &b.services[&idle.public()];
    assert_eq!(
        (idle_b.granted, idle_b.spent, idle_b.balance()),
        (Credits(7), 0, 7)
    );
    assert_eq!(idle_b.remaining(), 7);
    assert!(!idle_b.is_exhausted());

    let s = &b.services[&stranger.public()];
    assert_eq!(
        (s.granted, s.spent, s.balance(), s.remaining()),
        (Credits(0), 1, -1, 0)
    );

    let worker1 = &b.workers[&w1.public()];
    assert_eq!(worker1.earned, 7);
    assert_eq!(worker1.receipts, 2);
    assert_eq!(worker1.by_epoch, BTreeMap::from([(3, 4), (4, 3)]));
    let worker2 = &b.workers[&w2.public()];
    assert_eq!(worker2.by_epoch, BTreeMap::from([(3, 18), (4, 1)]));
    assert_eq!(b.workers.len(), 2);

    // The quick per-service look-up agrees with the full recomputation.
    for k in [svc.public(), idle.public(), stranger.public()] {
        assert_eq!(&ledger.service_balance(&registry, &k), &b.services[&k]);
    }
    // A worker's total is the sum of its epochs, and the service totals balance the workers'.
    for (k, w) in &b.workers {
        assert_eq!(w.by_epoch.values().sum::<u128>(), w.earned);
        assert_eq!(ledger.earned(k), w.earned);
    }
    let spent: u128 = b.services.values().map(|s| s.spent).sum();
    let earned: u128 = b.workers.values().map(|w| w.earned).sum();
    assert_eq!(spent, earned);

    // One more grant lifts the wallet above zero again.
    registry
        .apply(registry_entry(
            &registrar,
            6,
            RegistryAction::GrantCredits {
                service: svc.public(),
                credits: Credits(3),
            },
        ))
        .expect("grant");
    let again = ledger.service_balance(&registry, &svc.public());
    assert_eq!((again.balance(), again.remaining()), (3, 3));
}

#[test]
fn overspending_goes_negative() {
    let b = ServiceBalance {
        granted: Credits(u64::MAX),
        spent: u128::MAX,
        receipts: 1,
        equivocations: 0,
    };
    assert_eq!(b.balance(), i128::from(u64::MAX) - i128::MAX);
    assert_eq!(b.remaining(), 0);
    let b = ServiceBalance {
        granted: Credits(u64::MAX),
        spent: 0,
        ..ServiceBalance::default()
    };
    assert_eq!(b.balance(), i128::from(u64::MAX));
}

// ---- epochs and digests ---------------------------------------------------------------------

#[test]
fn epochs_split_earnings_ids_and_digests() {
    let (svc, w1, w2) = (key(1), key(2), key(3));
    let ms = 1_000;
    let r0 = easy(&svc, &w1, 1, 0);
    let r1 = easy(&svc, &w2, 2, 999);
    let r2 = easy(&svc, &w1, 3, 1_000); // the first instant of epoch 1
    let r3 = hard(0, &svc, &w2, 1_500);
    let [low, high] = equivocating_pair(&svc, &w1, &w2); // accepted at 1 000 and 2 000
    let mut ledger = Ledger::new(ms);
    let empty_digest = ledger.epoch_digest(1);
    ingest_all(
        &mut ledger,
        &[
            r0.clone(),
            r1.clone(),
            r2.clone(),
            r3.clone(),
            low.clone(),
            high.clone(),
        ],
    );
    let (w1k, w2k) = (w1.public(), w2.public());
    let mut expected: BTreeMap<u64, BTreeMap<PublicKey, u128>> = BTreeMap::from([
        (0, BTreeMap::from([(w1k, 1), (w2k, 1)])),
        (1, BTreeMap::from([(w1k, 1), (w2k, 4)])),
    ]);
    // Of the equivocating pair only the lower id earns (18), in its own epoch.
    let c = low.payload();
    *expected
        .entry(epoch_of(c.accepted_ms, ms))
        .or_default()
        .entry(c.result.payload().worker)
        .or_default() += 18;
    for e in [0, 1, 2, 3, u64::MAX] {
        assert_eq!(
            ledger.earned_in_epoch(e),
            expected.get(&e).cloned().unwrap_or_default(),
            "epoch {e}"
        );
    }

    let mut ids1 = vec![r2.id(), r3.id()];
    let mut ids2 = Vec::new();
    for r in [&low, &high] {
        if epoch_of(r.payload().accepted_ms, ms) == 1 {
            ids1.push(r.id());
        } else {
            ids2.push(r.id());
        }
    }
    ids1.sort();
    ids2.sort();
    let mut ids0 = vec![r0.id(), r1.id()];
    ids0.sort();
    assert_eq!(ledger.receipt_ids_in_epoch(0), ids0);
    assert_eq!(
        ledger.receipt_ids_in_epoch(1),
        ids1,
        "evidence is listed too"
    );
    assert_eq!(ledger.receipt_ids_in_epoch(2), ids2);

    let digests: Vec<[u8; 32]> = (0..4).map(|e| ledger.epoch_digest(e)).collect();
    assert_ne!(digests[0], digests[1]);
    assert_ne!(digests[1], empty_digest, "receipts change the digest");
    assert_eq!(
        digests[3],
        Ledger::new(ms).epoch_digest(3),
        "an empty epoch"
    );
    assert_ne!(
        Ledger::new(ms).epoch_digest(3),
        Ledger::new(2 * ms).epoch_digest(3),
        "the epoch length is part of the digest"
    );

    // A node missing one receipt of epoch 1 has a different digest for that epoch only, and
    // the ids tell it which receipt to fetch.
    let mut behind = Ledger::new(ms);
    ingest_all(&mut behind, &[r0, r1, r2, low.clone(), high.clone()]);
    assert_eq!(behind.epoch_digest(0), digests[0]);
    assert_ne!(behind.epoch_digest(1), digests[1]);
    let missing: Vec<MessageId> = ledger
        .receipt_ids_in_epoch(1)
        .into_iter()
        .filter(|id| behind.get(id).is_none())
        .collect();
    assert_eq!(missing, vec![r3.id()]);
    behind.ingest(r3).expect("catch up");
    assert_eq!(behind.epoch_digest(1), digests[1]);
}

#[test]
fn the_digest_separates_counted_receipts_from_evidence() {
    // {low} and {low, high} count the same receipt and agree on earnings; only the evidence
    // section tells them apart, and the digest must still differ so the first node fetches it.
    let (svc, w1, w2) = (key(1), key(2), key(3));
    let [low, high] = equivocating_pair(&svc, &w1, &w2);
    let mut a = Ledger::new(u64::MAX);
    a.ingest(low.clone()).expect("low");
    let mut b = a.clone();
    b.ingest(high).expect("high");
    assert_eq!(a.earned_in_epoch(0), b.earned_in_epoch(0));
    assert_ne!(a.epoch_digest(0), b.epoch_digest(0));
}

/// Receipts for the convergence property: plain ones over three epochs, two equivocating
/// pairs and a triple, from two services and three workers. Built once (signing is slow).
fn corpus() -> &'static Vec<Signed<Receipt>> {
    static CORPUS: OnceLock<Vec<Signed<Receipt>>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let (s1, s2) = (key(1), key(2));
        let workers = [key(10), key(11), key(12)];
        let ms = 1_000;
        let mut out = Vec::new();
        for n in 0..9u64 {
            let svc = if n % 2 == 0 { &s1 } else { &s2 };
            out.push(easy(svc, &workers[n as usize % 3], n, n * ms / 3));
        }
        out.push(hard(0, &s1, &workers[0], 2_500));
        let [a, b] = equivocating_pair(&s2, &workers[1], &workers[2]);
        out.extend([a, b]);
        let root = Root([200; 32]);
        let req = request(&s1, root, 200, EASY);
        let work = find_work(&root, EASY);
        for (i, w) in workers.iter().enumerate() {
            out.push(receipt_for(&s1, &req, w, work, 400 + 300 * i as u64));
        }
        out
    })
}

/// What any ledger holding `receipts` must answer, worked out the obvious way: per request the
/// two lowest ids are kept and the lowest counts.
fn model(
    receipts: &[Signed<Receipt>],
    ms: u64,
) -> (Vec<MessageId>, BTreeMap<u64, BTreeMap<PublicKey, u128>>) {
    let mut by_request: BTreeMap<MessageId, Vec<&Signed<Receipt>>> = BTreeMap::new();
    for r in receipts {
        by_request
            .entry(r.payload().request.id())
            .or_default()
            .push(r);
    }
    let mut kept = Vec::new();
    let mut earned: BTreeMap<u64, BTreeMap<PublicKey, u128>> = BTreeMap::new();
    for rs in by_request.values_mut() {
        rs.sort_by_key(|r| r.id());
        rs.dedup_by_key(|r| r.id());
        kept.extend(rs.iter().take(2).map(|r| r.id()));
        let c = rs[0].payload();
        *earned
            .entry(epoch_of(c.accepted_ms, ms))
            .or_default()
            .entry(c.result.payload().worker)
            .or_default() += u128::from(c.price.0);
    }
    kept.sort();
    (kept, earned)
}

/// Everything two nodes must agree on.
#[derive(Debug, PartialEq)]
struct Books {
    balances: Balances,
    digests: Vec<[u8; 32]>,
    ids: Vec<Vec<MessageId>>,
    equivocations: Vec<Equivocation>,
}

fn books(l: &Ledger, registry: &Registry) -> Books {
    Books {
        balances: l.balances(registry),
        digests: (0..4).map(|e| l.epoch_digest(e)).collect(),
        ids: (0..4).map(|e| l.receipt_ids_in_epoch(e)).collect(),
        equivocations: l.equivocations(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn ledgers_agree_whatever_the_order(
        order_a in Just(corpus().clone()).prop_shuffle(),
        order_b in Just(corpus().clone()).prop_shuffle(),
        repeat in 0usize..4,
    ) {
        let registry = Registry::new([key(99).public()]);
        let mut a = Ledger::new(1_000);
        let mut b = Ledger::new(1_000);
        ingest_all(&mut a, &order_a);
        // B also receives some receipts twice.
        let mut with_repeats = order_b.clone();
        with_repeats.extend(order_b.iter().step_by(repeat + 1).cloned());
        for r in &with_repeats {
            match b.ingest(r.clone()) {
                Ok(_) | Err(LedgerError::AlreadyProven { .. } | LedgerError::Duplicate { .. }) => {}
                Err(e) => panic!("unexpected refusal: {e}"),
            }
        }
        prop_assert_eq!(books(&a, &registry), books(&b, &registry));

        let (kept, earned) = model(corpus(), 1_000);
        let mut held: Vec<MessageId> = (0..4).flat_map(|e| a.receipt_ids_in_epoch(e)).collect();
        held.sort();
        prop_assert_eq!(held, kept);
        prop_assert_eq!(a.len(), corpus().len() - 1, "the triple keeps two");
        for e in 0..4 {
            prop_assert_eq!(a.earned_in_epoch(e), earned.get(&e).cloned().unwrap_or_default());
        }
        prop_assert_eq!(a.flagged_services().len(), 2);
        prop_assert_eq!(a.equivocations().len(), 2);
    }
}

// ---- reports --------------------------------------------------------------------------------

fn report_from(receipts: &[Signed<Receipt>], epoch: u64, pool: u128) -> PayoutReport {
    let mut ledger = Ledger::new(1_000);
    ingest_all(&mut ledger, receipts);
    PayoutReport::new(epoch, &ledger.claims_in_epoch(epoch).accounts, pool).expect("report")
}

#[test]
fn payouts_follow_the_accounts_named_in_results_and_unnamed_credit_is_unclaimed() {
    let mut ledger = Ledger::new(1_000);
    ingest_all(&mut ledger, corpus());
    let mut any_unclaimed = false;
    for epoch in 0..4 {
        let claims = ledger.claims_in_epoch(epoch);
        let earned = ledger.earned_in_epoch(epoch);
        let by_key = |k: &SecretKey| earned.get(&k.public()).copied().unwrap_or(0);
        let shared = payout_of(&key(10)).expect("named");
        assert_eq!(
            claims.accounts.get(&shared).copied().unwrap_or(0),
            by_key(&key(10)) + by_key(&key(11)),
            "epoch {epoch}: two workers naming one account are paid together"
        );
        assert_eq!(claims.unclaimed, by_key(&key(12)), "epoch {epoch}");
        assert_eq!(
            claims.accounts.values().sum::<u128>() + claims.unclaimed,
            earned.values().sum::<u128>(),
            "epoch {epoch}: every credit is claimed or unclaimed, once"
        );
        // No worker key is ever a payout account.
        for k in [key(10), key(11), key(12)] {
            let as_account = NanoAccount::from_bytes(k.public().0).expect("not burn");
            assert!(!claims.accounts.contains_key(&as_account));
        }
        any_unclaimed |= claims.unclaimed > 0;
    }
    assert!(any_unclaimed, "the corpus has unclaimed credit to test");
}

#[test]
fn reports_render_the_same_bytes_for_everyone() {
    let receipts = corpus();
    let pool = parse_amount("1.5 nano").expect("amount");
    let report = report_from(receipts, 1, pool);
    let mut reversed = receipts.clone();
    reversed.reverse();
    let again = report_from(&reversed, 1, pool);
    assert_eq!(again, report);
    assert_eq!(again.to_csv(), report.to_csv());
    assert_eq!(again.to_json(), report.to_json());
    assert_eq!(again.to_table(), report.to_table());
    assert_eq!(report.pool_raw(), pool);
    assert_eq!(report.epoch(), 1);
    assert_eq!(report.lines().iter().map(|l| l.raw).sum::<u128>(), pool);
    assert_eq!(
        report.total_credits(),
        report.lines().iter().map(|l| l.credits).sum::<u128>()
    );
}

#[test]
fn a_registrar_signs_the_csv() {
    let registrar = key(7);
    let report = report_from(corpus(), 0, 1_000_000);
    let csv = report.to_csv();
    let net = dpow_testkit::builders::NET;
    let input = report.signing_input(&net);
    assert_eq!(input, report_signing_input(&csv, &net));
    assert!(input.starts_with(b"dpow/2/payout-report"));
    assert_eq!(&input[20..52], &net.0, "the network id follows the tag");
    assert_eq!(input[52], 0);
    assert!(input.ends_with(csv.as_bytes()));
    let sig = registrar.sign(&input);
    // Anyone who recomputes the report gets the same bytes, so the signature checks out...
    let mine = report_from(corpus(), 0, 1_000_000);
    registrar
        .public()
        .verify(&mine.signing_input(&net), &sig)
        .expect("verifies");
    // ...on this network only...
    assert!(
        registrar
            .public()
            .verify(
                &mine.signing_input(&dpow_testkit::builders::OTHER_NET),
                &sig
            )
            .is_err()
    );
    // ...and a report with a different pool does not.
    let other = report_from(corpus(), 0, 1_000_001);
    assert!(
        registrar
            .public()
            .verify(&other.signing_input(&net), &sig)
            .is_err()
    );
}
