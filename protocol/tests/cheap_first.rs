//! Cheap before dear: every check a message can fail without an ed25519 verification runs
//! before its signatures are checked, and nothing a forged message carries changes the
//! validator's state. Each case is a message that fails a cheap check *and* carries a broken
//! signature: the cheap reason must be the one reported.

use dpow_keys::SecretKey;
use dpow_protocol::validate::{RejectReason, Rejected, Validator, ValidatorConfig};
use dpow_protocol::volume::{VolumePolicy, Window};
use dpow_protocol::{
    Checkpoint, Difficulty, Message, ProtocolError, RegistryEntry, Root, SignatureCache, Signed,
    Unverified, WorkRequest, WorkResult,
};
use dpow_testkit::builders::{self, NET, NOW, TestNet, fresh_key, sign};
use dpow_testkit::reference;

/// `signed`'s envelope with one bit of its signature flipped: well formed, wrongly signed.
fn broken<T: Message>(signed: &Signed<T>) -> Vec<u8> {
    let mut b = signed.bytes().to_vec();
    let at = b.len() - 10;
    b[at] ^= 0x04;
    b
}

fn validator(net: &TestNet) -> Validator {
    Validator::new(ValidatorConfig::new(net.profile.clone(), NET))
}

fn reason<T>(r: Result<T, Rejected>) -> RejectReason {
    match r {
        Ok(_) => panic!("must be refused"),
        Err(e) => e.reason,
    }
}

fn request_of(key: &SecretKey, nonce: u64, difficulty: Difficulty) -> Signed<WorkRequest> {
    sign(
        WorkRequest {
            nonce,
            difficulty,
            ..builders::request(key)
        },
        key,
    )
}

#[test]
fn a_wrong_signature_is_the_last_thing_found() {
    let net = TestNet::fixed();
    let mut v = validator(&net);
    let stranger = fresh_key();
    let now = NOW;

    // Requests: an unregistered service, a difficulty outside the profile, a replay.
    let unknown = request_of(&stranger, 1, net.profile.min);
    assert_eq!(
        reason(v.check_request(&broken(&unknown), &net.registry, now)),
        RejectReason::UnknownService
    );
    let too_hard = request_of(&net.service, 2, Difficulty(u64::MAX));
    assert_eq!(
        reason(v.check_request(&broken(&too_hard), &net.registry, now)),
        RejectReason::DifficultyOutOfProfile
    );
    let genuine = net.request(3);
    v.check_request(genuine.bytes(), &net.registry, now)
        .expect("the genuine request");
    assert_eq!(
        reason(v.check_request(&broken(&genuine), &net.registry, now)),
        RejectReason::Replay
    );

    // A result whose work does not meet the difficulty, and one for another root.
    let req = net.request(4);
    let root = req.payload().root;
    let bad_work = sign(
        WorkResult {
            work: reference::find_failing(&root, req.payload().difficulty),
            ..builders::result(
                &req,
                &net.worker,
                reference::find_work(&root, req.payload().difficulty),
            )
        },
        &net.worker,
    );
    assert_eq!(
        reason(v.check_result(&broken(&bad_work), Some(&req), &net.registry, now)),
        RejectReason::InvalidWork
    );
    let wrong_root = sign(
        WorkResult {
            root: Root([0x43; 32]),
            ..builders::solved(&req, &net.worker).payload().clone()
        },
        &net.worker,
    );
    assert_eq!(
        reason(v.check_result(&broken(&wrong_root), Some(&req), &net.registry, now)),
        RejectReason::WrongRoot
    );

    // A cancel by someone who did not make the request.
    let not_theirs = builders::cancel(&req, &stranger, now);
    assert_eq!(
        reason(v.check_cancel(&broken(&not_theirs), Some(&req))),
        RejectReason::NotRequester
    );

    // A status from the future, one too old.
    let future = sign(builders::status(&net.worker, now + 3_600_000), &net.worker);
    assert_eq!(
        reason(v.check_status(&broken(&future), &net.registry, now)),
        RejectReason::NotYetValid
    );
    let old = sign(builders::status(&net.worker, now - 3_600_000), &net.worker);
    assert_eq!(
        reason(v.check_status(&broken(&old), &net.registry, now)),
        RejectReason::Stale
    );

    // A receipt of an unregistered service: three signatures, none checked.
    let theirs = request_of(&stranger, 6, net.profile.min);
    let res = builders::solved(&theirs, &net.worker);
    let receipt = builders::receipt(&stranger, &theirs, res, now - 500);
    assert_eq!(
        Unverified::<dpow_protocol::Receipt>::decode(receipt.bytes(), &NET)
            .expect("decodes")
            .signature_checks(&SignatureCache::new()),
        3
    );
    assert_eq!(
        reason(v.check_receipt(&broken(&receipt), &net.registry, now)),
        RejectReason::UnknownService
    );

    // Registry entries and checkpoints signed by someone who is not a registrar.
    let entry: Signed<RegistryEntry> =
        builders::entry(&stranger, 1, now, builders::register(&stranger, "me"));
    assert_eq!(
        reason(v.check_registry(&broken(&entry), &net.registry, now)),
        RejectReason::UnknownRegistrar
    );
    let epoch_ms = v.config().finality.epoch_ms;
    let cp: Signed<Checkpoint> = sign(builders::checkpoint(&stranger, 1, epoch_ms, now), &stranger);
    assert_eq!(
        reason(v.check_checkpoint(&broken(&cp), &net.registry, now)),
        RejectReason::UnknownRegistrar
    );

    // And a message that passes every cheap check is refused for its signature, last.
    let fine = net.request(7);
    let screened = v
        .screen_request(&broken(&fine), &net.registry, now)
        .expect("passes every cheap check");
    assert_eq!(screened.signature_checks(&SignatureCache::new()), 1);
    assert!(matches!(
        screened.verify(),
        Err(ProtocolError::BadSignature { .. })
    ));
}

#[test]
fn forged_copies_neither_block_the_genuine_request_nor_spend_its_budget() {
    let net = TestNet::fixed();
    let mut config = ValidatorConfig::new(net.profile.clone(), NET);
    // A budget of 4 easy requests a minute (base 2, one class).
    config.volume = VolumePolicy {
        windows: vec![Window {
            window_ms: 60_000,
            base: 2,
        }],
        max_class: 0,
    };
    let mut v = Validator::new(config);
    let d = net.profile.min;
    let price = u64::from(dpow_protocol::Credits::price(d).0 > 0);
    assert_eq!(price, 1, "the test profile's easiest work costs one credit");
    for nonce in 0..2 {
        let genuine = request_of(&net.service, nonce, d);
        // A hundred forged copies first: the same request id, a broken signature.
        for _ in 0..100 {
            assert_eq!(
                reason(v.check_request(&broken(&genuine), &net.registry, NOW)),
                RejectReason::BadSignature
            );
        }
        v.check_request(genuine.bytes(), &net.registry, NOW)
            .expect("the genuine request after its forgeries");
    }
    // The budget (base 2 × 10^0) holds exactly two; the forgeries spent none of it.
    let third = request_of(&net.service, 9, d);
    assert_eq!(
        reason(v.check_request(third.bytes(), &net.registry, NOW)),
        RejectReason::OverBudget
    );
}

#[test]
fn screened_twice_admitted_once() {
    // Signatures may be checked off the caller's thread and come back in any order: two
    // copies of one request both pass screening, only the first admitted counts.
    let net = TestNet::fixed();
    let mut v = validator(&net);
    let req = net.request(1);
    let a = v
        .screen_request(req.bytes(), &net.registry, NOW)
        .expect("a");
    let b = v
        .screen_request(req.bytes(), &net.registry, NOW)
        .expect("b");
    v.admit_request(a.verify().expect("verifies"), NOW)
        .expect("first admitted");
    assert_eq!(
        reason(v.admit_request(b.verify().expect("verifies"), NOW)),
        RejectReason::Replay
    );
    assert_eq!(v.seen_requests(), 1);
}

#[test]
fn nested_signatures_are_checked_with_the_envelope_and_skipped_once_remembered() {
    let net = TestNet::fresh();
    let receipt = net.receipt(1, NOW - 500);
    let p = receipt.payload();
    let u = Unverified::<dpow_protocol::Receipt>::decode(receipt.bytes(), &NET).expect("decodes");
    let (node, other) = (SignatureCache::new(), SignatureCache::new());
    assert_eq!(u.signature_checks(&node), 3);
    // A node that accepted the request and the result on gossip remembers them...
    p.request.remember_verified(&node);
    p.result.remember_verified(&node);
    assert_eq!(u.signature_checks(&node), 1);
    // ... for itself: another node (in the same process) checks all three.
    assert_eq!(u.signature_checks(&other), 3);
    assert_eq!(u.verify_with(&node).expect("verifies").id(), receipt.id());

    // A receipt whose nested result's signature is broken, the receipt itself signed over
    // those bytes by its service (one that signs whatever it is handed): it decodes, then
    // fails on the nested signature.
    let receipt = net.receipt(2, NOW - 500);
    let res = receipt.payload().result.bytes().to_vec();
    let payload = dpow_protocol::codec::encode(receipt.payload(), "test").expect("encode");
    let mut bytes = receipt.bytes().to_vec();
    let start = find(&bytes, &payload);
    let nested = start + find(&payload, &res);
    bytes[nested + res.len() - 10] ^= 0x04;
    let input = dpow_protocol::envelope::signing_input(
        dpow_protocol::MessageKind::Receipt,
        &bytes[start..start + payload.len()],
        &NET,
    );
    let n = bytes.len();
    bytes[n - 64..].copy_from_slice(&net.service.sign(&input).0);
    let u =
        Unverified::<dpow_protocol::Receipt>::decode(&bytes, &NET).expect("structurally a receipt");
    assert_eq!(u.signature_checks(&node), 3);
    assert!(matches!(
        u.verify_with(&node),
        Err(ProtocolError::BadSignature {
            kind: "work-result"
        })
    ));
}

/// Where `needle` starts in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("found")
}
