//! The gossip validator: every reject reason from a real crafted message, the replay cache,
//! and which reasons blame the sender.

use std::collections::HashSet;

use dpow_keys::SecretKey;
use dpow_protocol::registry::Registry;
use dpow_protocol::validate::{
    DEFAULT_REPLAY_CAPACITY, RejectReason, Rejected, STATUS_MAX_AGE_MS, Validator, ValidatorConfig,
    peek_request_id,
};
use dpow_protocol::volume::{VolumePolicy, Window};
use dpow_protocol::{
    Credits, Difficulty, Message, Profile, Receipt, RegistryAction, RegistryEntry, Root, Signed,
    TimePolicy, Work, WorkCancel, WorkRequest, WorkResult, WorkerStatus, codec,
};
use dpow_testkit::builders::{self, NOW, key, sign};
use dpow_testkit::reference;

/// Keys of the test network.
struct Net {
    registrar: SecretKey,
    service: SecretKey,
    banned_service: SecretKey,
    unregistered: SecretKey,
    worker: SecretKey,
    banned_worker: SecretKey,
    registry: Registry,
}

fn net() -> Net {
    let (registrar, service, banned_service) = (key(1), key(10), key(11));
    let (unregistered, worker, banned_worker) = (key(12), key(20), key(21));
    let mut registry = Registry::new([registrar.public()]);
    let actions = [
        builders::register(&service, "faucet"),
        builders::register(&banned_service, "spammer"),
        builders::ban_service(&banned_service, "spam"),
        builders::ban_worker(&banned_worker, "fake work"),
    ];
    for (i, action) in actions.into_iter().enumerate() {
        registry
            .apply(registry_entry(&registrar, i as u64 + 1, action))
            .expect("apply");
    }
    Net {
        registrar,
        service,
        banned_service,
        unregistered,
        worker,
        banned_worker,
        registry,
    }
}

fn registry_entry(
    registrar: &SecretKey,
    seq: u64,
    action: RegistryAction,
) -> Signed<RegistryEntry> {
    builders::entry(registrar, seq, NOW, action)
}

/// The easiest difficulty the test profile accepts (~256 hashes).
fn easy() -> Difficulty {
    Profile::test().min
}

fn request_with(
    service: &SecretKey,
    nonce: u64,
    difficulty: Difficulty,
    created: u64,
    expires: u64,
) -> Signed<WorkRequest> {
    let req = WorkRequest {
        nonce,
        difficulty,
        created_ms: created,
        expires_ms: expires,
        ..builders::request(service)
    };
    sign(req, service)
}

fn request(service: &SecretKey, nonce: u64) -> Signed<WorkRequest> {
    request_with(service, nonce, easy(), NOW - 1_000, NOW + 60_000)
}

fn validator(profile: Profile) -> Validator {
    Validator::new(ValidatorConfig::new(profile, dpow_testkit::builders::NET))
}

fn solve(root: &Root, d: Difficulty) -> Work {
    reference::find_work(root, d)
}

fn fail(root: &Root, d: Difficulty) -> Work {
    reference::find_failing(root, d)
}

fn result(
    req: &Signed<WorkRequest>,
    worker: &SecretKey,
    root: Root,
    work: Work,
) -> Signed<WorkResult> {
    let res = WorkResult {
        root,
        ..builders::result(req, worker, work)
    };
    sign(res, worker)
}

fn cancel(req: &Signed<WorkRequest>, service: &SecretKey) -> Signed<WorkCancel> {
    builders::cancel(req, service, NOW)
}

fn status(worker: &SecretKey, created_ms: u64) -> Signed<WorkerStatus> {
    sign(builders::status(worker, created_ms), worker)
}

/// The envelope of `signed` with its signature replaced by one `forger` made over the same
/// signing input: a message that names one key and is signed by another.
fn forge<T: Message>(signed: &Signed<T>, forger: &SecretKey) -> Vec<u8> {
    let payload = codec::encode(signed.payload(), "test").expect("encode");
    let input = dpow_protocol::envelope::signing_input(T::KIND, &payload, &builders::NET);
    let sig = forger.sign(&input);
    let bytes = signed.bytes();
    let mut forged = bytes[..bytes.len() - 64].to_vec();
    forged.extend_from_slice(&sig.0);
    forged
}

/// Record the reason of a rejection, checking it is the one expected.
fn expect(
    seen: &mut HashSet<RejectReason>,
    got: Result<impl std::fmt::Debug, Rejected>,
    want: RejectReason,
) {
    let e = got.expect_err("must be rejected");
    assert_eq!(e.reason, want, "{e}");
    assert!(!e.detail.is_empty());
    assert_eq!(e.to_string(), format!("{}: {}", want.as_str(), e.detail));
    seen.insert(e.reason);
}

#[test]
fn every_reason_comes_from_a_real_message() {
    let n = net();
    let reg = &n.registry;
    let mut v = validator(Profile::test());
    let mut seen = HashSet::new();

    // Requests.
    let good = request(&n.service, 1);
    let accepted = v
        .check_request(good.bytes(), reg, NOW)
        .expect("valid request");
    assert_eq!(accepted.id(), good.id());
    assert_eq!(v.seen_requests(), 1);
    expect(
        &mut seen,
        v.check_request(good.bytes(), reg, NOW),
        RejectReason::Replay,
    );

    let fresh = request(&n.service, 2);
    let bytes = fresh.bytes();
    expect(
        &mut seen,
        v.check_request(&bytes[..bytes.len() - 1], reg, NOW),
        RejectReason::Undecodable,
    );
    expect(
        &mut seen,
        v.check_request(&[], reg, NOW),
        RejectReason::Undecodable,
    );
    let mut trailing = bytes.to_vec();
    trailing.push(0);
    expect(
        &mut seen,
        v.check_request(&trailing, reg, NOW),
        RejectReason::Undecodable,
    );
    let mut oversized = bytes.to_vec();
    oversized.resize(WorkRequest::MAX_BYTES + 1, 0);
    expect(
        &mut seen,
        v.check_request(&oversized, reg, NOW),
        RejectReason::Oversized,
    );
    let mut version = bytes.to_vec();
    version[0] = 1; // the version before networks were named
    expect(
        &mut seen,
        v.check_request(&version, reg, NOW),
        RejectReason::UnknownVersion,
    );
    let mut flipped = bytes.to_vec();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x01;
    expect(
        &mut seen,
        v.check_request(&flipped, reg, NOW),
        RejectReason::BadSignature,
    );
    expect(
        &mut seen,
        v.check_request(&forge(&fresh, &key(99)), reg, NOW),
        RejectReason::BadSignature,
    );

    let r = request(&n.unregistered, 3);
    expect(
        &mut seen,
        v.check_request(r.bytes(), reg, NOW),
        RejectReason::UnknownService,
    );
    let r = request(&n.banned_service, 4);
    expect(
        &mut seen,
        v.check_request(r.bytes(), reg, NOW),
        RejectReason::BannedService,
    );
    let r = request_with(&n.service, 5, easy(), NOW - 61_000, NOW - 1);
    expect(
        &mut seen,
        v.check_request(r.bytes(), reg, NOW),
        RejectReason::Expired,
    );
    let r = request_with(&n.service, 6, easy(), NOW + 60_000, NOW + 120_000);
    expect(
        &mut seen,
        v.check_request(r.bytes(), reg, NOW),
        RejectReason::NotYetValid,
    );
    let r = request_with(&n.service, 7, easy(), NOW, NOW + 11 * 60_000);
    expect(
        &mut seen,
        v.check_request(r.bytes(), reg, NOW),
        RejectReason::TooLongLived,
    );
    let r = request_with(&n.service, 8, Difficulty(u64::MAX), NOW, NOW + 60_000);
    expect(
        &mut seen,
        v.check_request(r.bytes(), reg, NOW),
        RejectReason::DifficultyOutOfProfile,
    );
    // A service past its anti-spam budget (base 1 credit a minute, one class: 10 credits).
    let mut tight = Validator::new(ValidatorConfig {
        volume: VolumePolicy {
            windows: vec![Window {
                window_ms: 60_000,
                base: 1,
            }],
            max_class: 1,
        },
        ..ValidatorConfig::new(Profile::test(), builders::NET)
    });
    for i in 0..10 {
        let r = request(&n.service, 100 + i);
        assert!(tight.check_request(r.bytes(), reg, NOW).is_ok(), "{i}");
    }
    let eleventh = request(&n.service, 110);
    expect(
        &mut seen,
        tight.check_request(eleventh.bytes(), reg, NOW),
        RejectReason::OverBudget,
    );
    // A minute later its window is empty again.
    let later = request_with(&n.service, 111, easy(), NOW + 60_000, NOW + 120_000);
    assert!(
        tight
            .check_request(later.bytes(), reg, NOW + 60_000)
            .is_ok()
    );
    // The test profile's easy work is below what a Nano network accepts.
    let mut nano = validator(Profile::by_name("nano").expect("nano"));
    expect(
        &mut seen,
        nano.check_request(fresh.bytes(), reg, NOW),
        RejectReason::DifficultyOutOfProfile,
    );
    assert_eq!(
        nano.seen_requests(),
        0,
        "a refused request is not remembered"
    );
    // Only accepted requests were remembered.
    assert_eq!(v.seen_requests(), 1);

    // Results.
    let root = good.payload().root;
    let ok = result(&good, &n.worker, root, solve(&root, easy()));
    let accepted = v
        .check_result(ok.bytes(), Some(&good), reg, NOW)
        .expect("valid result");
    assert_eq!(accepted.payload().worker, n.worker.public());
    expect(
        &mut seen,
        v.check_result(ok.bytes(), None, reg, NOW),
        RejectReason::UnknownRequest,
    );
    expect(
        &mut seen,
        v.check_result(ok.bytes(), Some(&fresh), reg, NOW),
        RejectReason::UnknownRequest,
    );
    expect(
        &mut seen,
        v.check_result(&forge(&ok, &n.banned_worker), Some(&good), reg, NOW),
        RejectReason::BadSignature,
    );
    let banned = result(&good, &n.banned_worker, root, solve(&root, easy()));
    expect(
        &mut seen,
        v.check_result(banned.bytes(), Some(&good), reg, NOW),
        RejectReason::BannedWorker,
    );
    let wrong_root = Root([0x43; 32]);
    let wrong = result(&good, &n.worker, wrong_root, solve(&wrong_root, easy()));
    expect(
        &mut seen,
        v.check_result(wrong.bytes(), Some(&good), reg, NOW),
        RejectReason::WrongRoot,
    );
    let weak = result(&good, &n.worker, root, fail(&root, easy()));
    expect(
        &mut seen,
        v.check_result(weak.bytes(), Some(&good), reg, NOW),
        RejectReason::InvalidWork,
    );
    let late = good.payload().expires_ms + TimePolicy::default().max_skew_ms;
    expect(
        &mut seen,
        v.check_result(ok.bytes(), Some(&good), reg, late),
        RejectReason::Expired,
    );
    v.check_result(ok.bytes(), Some(&good), reg, late - 1)
        .expect("within the skew after expiry");
    expect(
        &mut seen,
        v.check_result(good.bytes(), Some(&good), reg, NOW),
        RejectReason::Undecodable,
    );

    // Cancels.
    let c = cancel(&good, &n.service);
    v.check_cancel(c.bytes(), Some(&good))
        .expect("the requester may cancel");
    expect(
        &mut seen,
        v.check_cancel(c.bytes(), None),
        RejectReason::UnknownRequest,
    );
    let other = cancel(&good, &n.unregistered);
    expect(
        &mut seen,
        v.check_cancel(other.bytes(), Some(&good)),
        RejectReason::NotRequester,
    );
    expect(
        &mut seen,
        v.check_cancel(&forge(&c, &n.unregistered), Some(&good)),
        RejectReason::BadSignature,
    );

    // Worker status.
    v.check_status(status(&n.worker, NOW - 1_000).bytes(), reg, NOW)
        .expect("fresh status");
    v.check_status(status(&n.worker, NOW - STATUS_MAX_AGE_MS).bytes(), reg, NOW)
        .expect("just within the age limit");
    let s = status(&n.worker, NOW - STATUS_MAX_AGE_MS - 1);
    expect(
        &mut seen,
        v.check_status(s.bytes(), reg, NOW),
        RejectReason::Stale,
    );
    let s = status(&n.worker, NOW + 60_000);
    expect(
        &mut seen,
        v.check_status(s.bytes(), reg, NOW),
        RejectReason::NotYetValid,
    );
    let s = status(&n.banned_worker, NOW);
    expect(
        &mut seen,
        v.check_status(s.bytes(), reg, NOW),
        RejectReason::BannedWorker,
    );

    // Registry entries.
    let action = RegistryAction::RegisterService {
        service: n.unregistered.public(),
        name: "new".to_string(),
    };
    let e = registry_entry(&n.registrar, 5, action.clone());
    let checked = v
        .check_registry(e.bytes(), reg, NOW)
        .expect("a registrar's entry");
    assert_eq!(checked.id(), e.id());
    let stranger = registry_entry(&key(98), 1, action);
    expect(
        &mut seen,
        v.check_registry(stranger.bytes(), reg, NOW),
        RejectReason::UnknownRegistrar,
    );
    expect(
        &mut seen,
        v.check_registry(&forge(&e, &key(98)), reg, NOW),
        RejectReason::BadSignature,
    );
    // Dated past the clock skew: refused now, accepted once the clock gets there.
    let skew = v.config().time.max_skew_ms;
    let ahead = builders::entry(
        &n.registrar,
        5,
        NOW + skew + 1,
        RegistryAction::UnbanService {
            service: n.unregistered.public(),
        },
    );
    expect(
        &mut seen,
        v.check_registry(ahead.bytes(), reg, NOW),
        RejectReason::NotYetValid,
    );
    v.check_registry(ahead.bytes(), reg, NOW + 1)
        .expect("within the skew a moment later");

    // A result for an answered request, refused on its bytes.
    let req = request(&n.service, 40);
    let root = req.payload().root;
    let d = req.payload().difficulty;
    let late = result(&req, &n.worker, root, solve(&root, d));
    assert!(Validator::refuse_answered(late.bytes(), |_| false).is_ok());
    expect(
        &mut seen,
        Validator::refuse_answered(late.bytes(), |id| *id == req.id()),
        RejectReason::Answered,
    );

    // A receipt of an epoch that is final.
    let receipt = Signed::sign(
        Receipt {
            price: Credits::price(d),
            request: req.clone(),
            result: late,
            accepted_ms: NOW,
        },
        &n.service,
        &dpow_testkit::builders::NET,
    )
    .expect("receipt");
    let f = v.config().finality;
    let epoch = dpow_protocol::ledger::epoch_of(NOW, f.epoch_ms);
    assert!(v.check_open(&receipt, NOW).is_ok());
    expect(
        &mut seen,
        v.check_open(&receipt, f.final_at(epoch)),
        RejectReason::FinalEpoch,
    );

    // `Busy` says something of the node (its disk is behind), not of the message: no
    // validator returns it; the node's store task does (node/src/net/event_loop/disk.rs).
    // `TooFrequent` compares a status with the one the node holds for that worker, so the
    // node's status table refuses it (event_loop.rs `on_status`; testnet/tests/attacks.rs).
    let all: HashSet<RejectReason> = RejectReason::ALL
        .iter()
        .copied()
        .filter(|r| !matches!(r, RejectReason::Busy | RejectReason::TooFrequent))
        .collect();
    let missing: Vec<_> = all.difference(&seen).collect();
    assert!(
        missing.is_empty(),
        "no crafted message produced {missing:?}"
    );
}

#[test]
fn every_truncation_and_byte_flip_of_a_request_is_refused() {
    let n = net();
    let mut v = validator(Profile::test());
    let good = request(&n.service, 1);
    let bytes = good.bytes();
    for len in 0..bytes.len() {
        let e = v
            .check_request(&bytes[..len], &n.registry, NOW)
            .expect_err("truncated");
        assert!(e.reason.penalise(), "{e}");
    }
    for i in 0..bytes.len() {
        let mut b = bytes.to_vec();
        b[i] ^= 0x80;
        let e = v.check_request(&b, &n.registry, NOW).expect_err("tampered");
        // A flip in the signature is found by the signature check; elsewhere a cheaper check
        // may find it first (an unregistered service, a difficulty out of profile, a time
        // out of bounds), and the signature check otherwise.
        if i >= bytes.len() - 64 {
            assert_eq!(e.reason, RejectReason::BadSignature, "byte {i}: {e}");
        }
        assert_ne!(e.reason, RejectReason::Replay, "byte {i}: {e}");
    }
    v.check_request(bytes, &n.registry, NOW)
        .expect("the original is still fine");
}

#[test]
fn replay_cache_forgets_expired_ids() {
    let n = net();
    let mut v = validator(Profile::test());
    let skew = TimePolicy::default().max_skew_ms;
    let short = request_with(&n.service, 1, easy(), NOW, NOW + 1_000);
    let long = request_with(&n.service, 2, easy(), NOW, NOW + 300_000);
    v.check_request(short.bytes(), &n.registry, NOW)
        .expect("short");
    v.check_request(long.bytes(), &n.registry, NOW)
        .expect("long");
    assert_eq!(v.seen_requests(), 2);
    // Once the short one is past expiry and skew, checking anything prunes it.
    let later = NOW + 1_000 + skew + 1;
    let e = v
        .check_request(short.bytes(), &n.registry, later)
        .expect_err("expired");
    assert_eq!(e.reason, RejectReason::Expired);
    assert_eq!(v.seen_requests(), 1);
    let e = v
        .check_request(long.bytes(), &n.registry, later)
        .expect_err("replay");
    assert_eq!(e.reason, RejectReason::Replay);
}

#[test]
fn full_replay_cache_evicts_the_soonest_expiry() {
    let n = net();
    let mut config = ValidatorConfig::new(Profile::test(), dpow_testkit::builders::NET);
    assert_eq!(config.replay_capacity, DEFAULT_REPLAY_CAPACITY);
    config.replay_capacity = 2;
    let mut v = Validator::new(config);
    let a = request_with(&n.service, 1, easy(), NOW, NOW + 30_000);
    let b = request_with(&n.service, 2, easy(), NOW, NOW + 10_000);
    let c = request_with(&n.service, 3, easy(), NOW, NOW + 20_000);
    for r in [&a, &b, &c] {
        v.check_request(r.bytes(), &n.registry, NOW).expect("fresh");
    }
    assert_eq!(v.seen_requests(), 2);
    for r in [&a, &c] {
        let e = v
            .check_request(r.bytes(), &n.registry, NOW)
            .expect_err("remembered");
        assert_eq!(e.reason, RejectReason::Replay);
    }
    // b expired soonest, so it was forgotten to make room for c.
    v.check_request(b.bytes(), &n.registry, NOW)
        .expect("evicted, so accepted again");
    assert_eq!(v.seen_requests(), 2);
}

#[test]
fn zero_capacity_remembers_nothing() {
    let n = net();
    let mut config = ValidatorConfig::new(Profile::test(), dpow_testkit::builders::NET);
    config.replay_capacity = 0;
    let mut v = Validator::new(config);
    let r = request(&n.service, 1);
    v.check_request(r.bytes(), &n.registry, NOW).expect("fresh");
    v.check_request(r.bytes(), &n.registry, NOW)
        .expect("not remembered");
    assert_eq!(v.seen_requests(), 0);
}

#[test]
fn nano_profile_accepts_nano_difficulties() {
    let n = net();
    let mut v = validator(Profile::by_name("nano").expect("nano"));
    for (i, d) in [Difficulty::EPOCH2_RECEIVE, Difficulty::EPOCH2_SEND]
        .into_iter()
        .enumerate()
    {
        let r = request_with(&n.service, i as u64, d, NOW, NOW + 60_000);
        v.check_request(r.bytes(), &n.registry, NOW)
            .expect("in profile");
    }
    let too_hard = request_with(&n.service, 9, Difficulty(u64::MAX), NOW, NOW + 60_000);
    let e = v
        .check_request(too_hard.bytes(), &n.registry, NOW)
        .expect_err("above the profile's max");
    assert_eq!(e.reason, RejectReason::DifficultyOutOfProfile);
    assert!(e.detail.contains("outside the profile's bounds"), "{e}");
}

#[test]
fn peek_reads_the_request_id_without_verifying() {
    let n = net();
    let req = request(&n.service, 1);
    let root = req.payload().root;
    let res = result(&req, &n.worker, root, Work(0));
    let c = cancel(&req, &n.service);
    assert_eq!(peek_request_id(res.bytes()), Some(req.id()));
    assert_eq!(peek_request_id(c.bytes()), Some(req.id()));
    assert_eq!(peek_request_id(&forge(&res, &key(99))), Some(req.id()));
    assert_eq!(peek_request_id(req.bytes()), None);
    assert_eq!(peek_request_id(&res.bytes()[..10]), None);
    assert_eq!(peek_request_id(&[]), None);
}

#[test]
fn reason_names_and_blame() {
    let names: HashSet<&str> = RejectReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(names.len(), RejectReason::ALL.len(), "names are distinct");
    for r in RejectReason::ALL {
        assert!(
            r.as_str()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_'),
            "{r}"
        );
        assert_eq!(r.to_string(), r.as_str());
    }
    let blamed: Vec<RejectReason> = RejectReason::ALL
        .iter()
        .copied()
        .filter(|r| r.penalise())
        .collect();
    assert_eq!(
        blamed,
        vec![
            RejectReason::Undecodable,
            RejectReason::Oversized,
            RejectReason::BadSignature,
            RejectReason::UnknownRegistrar,
            RejectReason::DifficultyOutOfProfile,
            RejectReason::InvalidWork,
            RejectReason::WrongRoot,
            RejectReason::NotRequester,
        ]
    );
}
