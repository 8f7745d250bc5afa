//! Signed messages: round trips, tampering, malformed input, time checks, receipts.

use dpow_keys::SecretKey;
use dpow_protocol::{
    BlockKind, Credits, Difficulty, Message, Priority, ProtocolError, Receipt, RegistryAction,
    RegistryEntry, Root, Signed, TimePolicy, Work, WorkCancel, WorkRequest, WorkResult,
    WorkerStatus,
};
use dpow_testkit::builders::{self, NOW, key, sign};
use proptest::prelude::*;

fn request(service: &SecretKey, root: [u8; 32], nonce: u64, difficulty: u64) -> WorkRequest {
    WorkRequest {
        root: Root(root),
        difficulty: Difficulty(difficulty),
        kind: Some(BlockKind::Send),
        account: Some(key(99).public()),
        nonce,
        created_ms: NOW,
        expires_ms: NOW + 60_000,
        ..builders::request(service)
    }
}

fn receipt(difficulty: u64) -> Signed<Receipt> {
    let (svc, wrk) = (key(1), key(2));
    let req = sign(request(&svc, [5; 32], 1, difficulty), &svc);
    builders::receipt(&svc, &req, builders::solved(&req, &wrk), 1)
}

prop_compose! {
    fn any_request()(root in any::<[u8; 32]>(), nonce in any::<u64>(), d in any::<u64>(),
                     created in 0u64..1u64 << 50, life in 1u64..1u64 << 20, pre in any::<bool>(),
                     kind in proptest::option::of(0usize..5), seed in any::<[u8; 32]>()) -> (SecretKey, WorkRequest) {
        let sk = SecretKey::from_seed(seed);
        let req = WorkRequest {
            service: sk.public(),
            root: Root(root),
            difficulty: Difficulty(d),
            kind: kind.map(|i| BlockKind::ALL[i]),
            account: None,
            nonce,
            created_ms: created,
            expires_ms: created + life,
            priority: if pre { Priority::Precache } else { Priority::Normal },
            node: dpow_keys::PublicKey([7; 32]),
        };
        (sk, req)
    }
}

proptest! {
    #[test]
    fn request_round_trip((sk, req) in any_request()) {
        let signed = Signed::sign(req.clone(), &sk, &dpow_testkit::builders::NET).expect("sign");
        let back = Signed::<WorkRequest>::decode(signed.bytes(), &dpow_testkit::builders::NET).expect("decode");
        prop_assert_eq!(back.payload(), &req);
        prop_assert_eq!(back.id(), signed.id());
        prop_assert!(signed.bytes().len() <= WorkRequest::MAX_BYTES);
    }

    #[test]
    fn flipping_any_byte_is_caught((sk, req) in any_request(), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let signed = Signed::sign(req, &sk, &dpow_testkit::builders::NET).expect("sign");
        let mut bytes = signed.bytes().to_vec();
        let i = pos.index(bytes.len());
        bytes[i] ^= 1 << bit;
        let err = Signed::<WorkRequest>::decode(&bytes, &dpow_testkit::builders::NET).expect_err("tampered envelope must not verify");
        let sig_start = bytes.len() - 64;
        match i {
            0 => {
                let flipped = dpow_protocol::PROTOCOL_VERSION ^ (1 << bit);
                prop_assert!(matches!(err, ProtocolError::UnknownVersion { got, .. } if got == flipped), "{}", err);
            }
            1 => prop_assert!(matches!(err, ProtocolError::WrongDomain { .. }), "{err}"),
            _ if i >= sig_start => prop_assert!(matches!(err, ProtocolError::BadSignature { .. }), "{err}"),
            _ => prop_assert!(matches!(err,
                ProtocolError::BadSignature { .. } | ProtocolError::Malformed { .. } | ProtocolError::Truncated { .. }
                | ProtocolError::TrailingBytes { .. } | ProtocolError::NonCanonical { .. } | ProtocolError::Invalid { .. }),
                "{err}"),
        }
    }

    #[test]
    fn every_truncation_is_rejected((sk, req) in any_request(), cut in any::<prop::sample::Index>()) {
        let signed = Signed::sign(req, &sk, &dpow_testkit::builders::NET).expect("sign");
        let n = cut.index(signed.bytes().len());
        let err = Signed::<WorkRequest>::decode(&signed.bytes()[..n], &dpow_testkit::builders::NET).expect_err("truncated");
        prop_assert!(matches!(err, ProtocolError::Truncated { .. } | ProtocolError::Malformed { .. }), "{err}");
    }

    #[test]
    fn registry_round_trip(seq in 1u64.., credits in 1u64.., name in "[a-z][a-z ]{0,39}") {
        let reg = key(7);
        for action in [
            RegistryAction::RegisterService { service: key(1).public(), name: name.clone() },
            RegistryAction::GrantCredits { service: key(1).public(), credits: Credits(credits) },
            RegistryAction::BanWorker { worker: key(2).public(), reason: name.clone() },
            RegistryAction::UnbanService { service: key(1).public() },
        ] {
            let e = RegistryEntry { registrar: reg.public(), seq, created_ms: 5, action };
            let s = Signed::sign(e.clone(), &reg, &dpow_testkit::builders::NET).expect("sign");
            let back = Signed::<RegistryEntry>::decode(s.bytes(), &dpow_testkit::builders::NET).expect("decode");
            prop_assert_eq!(back.payload(), &e);
        }
    }
}

#[test]
fn a_remembered_signature_skips_only_its_own_message() {
    let a = key(7);
    let signed = Signed::sign(
        request(&a, [9; 32], 77, 1),
        &a,
        &dpow_testkit::builders::NET,
    )
    .expect("sign");
    let seen = dpow_protocol::SignatureCache::new();
    signed.remember_verified(&seen);
    let decode = |bytes: &[u8]| {
        dpow_protocol::Unverified::<WorkRequest>::decode(bytes, &dpow_testkit::builders::NET)
    };
    let again = decode(signed.bytes()).expect("decodes");
    assert_eq!(again.signature_checks(&seen), 0, "remembered");
    assert_eq!(
        again.verify_with(&seen).expect("verifies").id(),
        signed.id()
    );
    // Another signature over the same payload is still checked, and fails.
    let mut bytes = signed.bytes().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    assert!(matches!(
        decode(&bytes).and_then(|u| u.verify_with(&seen)),
        Err(ProtocolError::BadSignature { .. })
    ));
    // So does the same signature under a changed payload (another id).
    let mut bytes = signed.bytes().to_vec();
    let at = bytes
        .windows(8)
        .position(|w| w == 77u64.to_le_bytes())
        .or_else(|| bytes.iter().position(|b| *b == 77))
        .expect("nonce in payload");
    bytes[at] ^= 0x01;
    assert!(decode(&bytes).and_then(|u| u.verify_with(&seen)).is_err());
}

#[test]
fn a_key_kept_decompressed_checks_every_signature_as_a_fresh_one_does() {
    let a = key(7);
    let net = &dpow_testkit::builders::NET;
    let decode = |bytes: &[u8]| dpow_protocol::Unverified::<WorkRequest>::decode(bytes, net);
    let warm = dpow_protocol::SignatureCache::new();
    // One good message by `a` leaves its key decompressed in the cache (nothing remembered).
    let first = Signed::sign(request(&a, [9; 32], 1, 1), &a, net).expect("sign");
    decode(first.bytes())
        .and_then(|u| u.verify_with(&warm))
        .expect("verifies");
    assert!(
        warm.is_empty(),
        "no statement remembered, only the key kept"
    );
    // Every one-bit change of another message by `a`, signature and payload alike: the cache
    // that holds `a`'s key answers exactly as a check from scratch.
    let other = Signed::sign(request(&a, [8; 32], 2, 1), &a, net).expect("sign");
    let (mut refused, mut taken) = (0, 0);
    for at in 0..other.bytes().len() {
        for bit in [0x01u8, 0x80] {
            let mut bytes = other.bytes().to_vec();
            bytes[at] ^= bit;
            let Ok(u) = decode(&bytes) else {
                continue;
            };
            let fresh = u.clone().verify().is_ok();
            let cached = u.verify_with(&warm).is_ok();
            assert_eq!(fresh, cached, "byte {at}, bit {bit:#x}");
            if cached { taken += 1 } else { refused += 1 }
        }
    }
    assert!(
        refused > 100,
        "the changes were checked: {refused} refused, {taken} taken"
    );
    assert_eq!(
        decode(other.bytes())
            .and_then(|u| u.verify_with(&warm))
            .expect("the unchanged message verifies")
            .id(),
        other.id()
    );
}

#[test]
fn signature_from_another_key_fails() {
    let (a, b) = (key(1), key(2));
    // Signed by b but naming a as the service: refused at signing time...
    assert!(matches!(
        Signed::sign(request(&a, [0; 32], 1, 1), &b, &dpow_testkit::builders::NET),
        Err(ProtocolError::Invalid { .. })
    ));
    // ...and if someone swaps the named key afterwards, the signature no longer verifies.
    let signed =
        Signed::sign(request(&a, [0; 32], 1, 1), &a, &dpow_testkit::builders::NET).expect("sign");
    let mut bytes = signed.bytes().to_vec();
    let (pa, pb) = (a.public().0, b.public().0);
    let at = bytes
        .windows(32)
        .position(|w| w == pa)
        .expect("service key in payload");
    bytes[at..at + 32].copy_from_slice(&pb);
    assert!(matches!(
        Signed::<WorkRequest>::decode(&bytes, &dpow_testkit::builders::NET),
        Err(ProtocolError::BadSignature { .. })
    ));
}

#[test]
fn a_message_of_one_kind_is_not_accepted_as_another() {
    let w = key(3);
    let status = WorkerStatus {
        worker: w.public(),
        hash_rate: 1,
        queue: 0,
        payout: None,
        created_ms: 1,
    };
    let s = Signed::sign(status, &w, &dpow_testkit::builders::NET).expect("sign");
    let err = Signed::<WorkResult>::decode(s.bytes(), &dpow_testkit::builders::NET)
        .expect_err("wrong kind");
    assert!(
        matches!(err, ProtocolError::WrongDomain { ref expected, ref got } if expected == "work-result" && got == "worker-status"),
        "{err}"
    );
}

#[test]
fn oversized_empty_trailing_and_noncanonical() {
    let sk = key(1);
    let signed = Signed::sign(
        request(&sk, [1; 32], 1, 1),
        &sk,
        &dpow_testkit::builders::NET,
    )
    .expect("sign");
    let big = vec![1u8; WorkRequest::MAX_BYTES + 1];
    assert!(matches!(
        Signed::<WorkRequest>::decode(&big, &dpow_testkit::builders::NET),
        Err(ProtocolError::Oversized { .. })
    ));
    assert!(matches!(
        Signed::<WorkRequest>::decode(&[], &dpow_testkit::builders::NET),
        Err(ProtocolError::Truncated { .. })
    ));
    let mut extra = signed.bytes().to_vec();
    extra.push(0);
    assert!(matches!(
        Signed::<WorkRequest>::decode(&extra, &dpow_testkit::builders::NET),
        Err(ProtocolError::TrailingBytes { extra: 1, .. })
    ));
    // Byte 2 starts the payload length varint; re-encode it over-long (one more byte than
    // needed: the last byte gets a continuation bit and a zero byte follows).
    let b = signed.bytes();
    let n = b[2..]
        .iter()
        .position(|x| x & 0x80 == 0)
        .expect("varint end")
        + 1;
    let mut long = b[..2].to_vec();
    long.extend_from_slice(&b[2..2 + n]);
    let last = long.len() - 1;
    long[last] |= 0x80;
    long.push(0x00);
    long.extend_from_slice(&b[2 + n..]);
    assert!(matches!(
        Signed::<WorkRequest>::decode(&long, &dpow_testkit::builders::NET),
        Err(ProtocolError::NonCanonical { .. })
    ));
    // Version 1 (no network in the signing input) and a future version are both refused.
    for v in [1, 3] {
        let mut other = signed.bytes().to_vec();
        other[0] = v;
        assert!(matches!(
            Signed::<WorkRequest>::decode(&other, &dpow_testkit::builders::NET),
            Err(ProtocolError::UnknownVersion {
                got,
                supported: 2,
                ..
            }) if got == v
        ));
    }
}

#[test]
fn time_window() {
    let sk = key(1);
    let req = request(&sk, [1; 32], 1, 1);
    let p = TimePolicy {
        max_lifetime_ms: 120_000,
        max_skew_ms: 5_000,
    };
    assert!(req.check_time(req.created_ms, &p).is_ok());
    assert!(req.check_time(req.created_ms - 5_000, &p).is_ok());
    assert!(matches!(
        req.check_time(req.created_ms - 5_001, &p),
        Err(ProtocolError::NotYetValid { .. })
    ));
    assert!(matches!(
        req.check_time(req.expires_ms, &p),
        Err(ProtocolError::Expired { .. })
    ));
    let short = TimePolicy {
        max_lifetime_ms: 1_000,
        ..p
    };
    assert!(matches!(
        req.check_time(req.created_ms, &short),
        Err(ProtocolError::Invalid { .. })
    ));
    let mut backwards = req;
    backwards.expires_ms = backwards.created_ms;
    assert!(matches!(
        Signed::sign(backwards, &sk, &dpow_testkit::builders::NET),
        Err(ProtocolError::Invalid { .. })
    ));
}

#[test]
fn ids_differ_per_request_and_are_stable() {
    let sk = key(1);
    let a = Signed::sign(
        request(&sk, [1; 32], 1, 1),
        &sk,
        &dpow_testkit::builders::NET,
    )
    .expect("sign");
    let b = Signed::sign(
        request(&sk, [1; 32], 2, 1),
        &sk,
        &dpow_testkit::builders::NET,
    )
    .expect("sign");
    assert_ne!(a.id(), b.id());
    assert_eq!(
        Signed::<WorkRequest>::decode(a.bytes(), &dpow_testkit::builders::NET)
            .expect("decode")
            .id(),
        a.id()
    );
    assert_eq!(
        a.id()
            .to_string()
            .parse::<dpow_protocol::MessageId>()
            .expect("hex id"),
        a.id()
    );
}

#[test]
fn receipt_verifies_alone() {
    let r = receipt(0xff00_0000_0000_0000);
    let back = Signed::<Receipt>::decode(r.bytes(), &dpow_testkit::builders::NET)
        .expect("a valid receipt decodes");
    assert_eq!(back.payload().result.payload().worker, key(2).public());
    assert_eq!(back.payload().price, Credits(1));
}

#[test]
fn mispriced_or_mismatched_receipts_are_refused() {
    let good = receipt(0xff00_0000_0000_0000);
    let svc = key(1);
    let mut r = good.payload().clone();
    r.price = Credits(2);
    assert!(matches!(
        Signed::sign(r, &svc, &dpow_testkit::builders::NET),
        Err(ProtocolError::Invalid { .. })
    ));

    // A result for another request.
    let mut r = good.payload().clone();
    let other = Signed::sign(
        request(&svc, [5; 32], 2, 0xff00_0000_0000_0000),
        &svc,
        &dpow_testkit::builders::NET,
    )
    .expect("sign");
    r.request = other;
    assert!(matches!(
        Signed::sign(r, &svc, &dpow_testkit::builders::NET),
        Err(ProtocolError::Invalid { .. })
    ));

    // Work below the requested difficulty.
    let req = Signed::sign(
        request(&svc, [6; 32], 3, 0xffff_ffff_ffff_0000),
        &svc,
        &dpow_testkit::builders::NET,
    )
    .expect("sign");
    let wrk = key(2);
    let bad = WorkResult {
        request: req.id(),
        root: req.payload().root,
        work: Work(0),
        worker: wrk.public(),
        payout: None,
    };
    let bad = Signed::sign(bad, &wrk, &dpow_testkit::builders::NET).expect("sign");
    let price = Credits::price(req.payload().difficulty);
    let r = Receipt {
        request: req,
        result: bad,
        price,
        accepted_ms: 1,
    };
    assert!(matches!(
        Signed::sign(r, &svc, &dpow_testkit::builders::NET),
        Err(ProtocolError::InsufficientWork { .. })
    ));
}

#[test]
fn receipt_with_a_tampered_inner_result_fails_to_decode() {
    let r = receipt(0xff00_0000_0000_0000);
    let mut bytes = r.bytes().to_vec();
    let inner = r.payload().result.bytes();
    let at = bytes
        .windows(inner.len())
        .position(|w| w == inner)
        .expect("inner result bytes");
    let last = at + inner.len() - 1; // inside the inner signature
    bytes[last] ^= 1;
    assert!(Signed::<Receipt>::decode(&bytes, &dpow_testkit::builders::NET).is_err());
}

#[test]
fn prices() {
    assert_eq!(Credits::price(Difficulty::EPOCH2_RECEIVE), Credits(1));
    assert_eq!(Credits::price(Difficulty::EPOCH2_SEND), Credits(64));
    assert_eq!(Credits::price(Difficulty(u64::MAX)), Credits(1 << 41));
    assert_eq!(Credits::price(Difficulty(0)), Credits(1));
}

#[test]
fn registry_text_rules() {
    let reg = key(7);
    let e = |action| RegistryEntry {
        registrar: reg.public(),
        seq: 1,
        created_ms: 1,
        action,
    };
    let long = "x".repeat(dpow_protocol::messages::MAX_REGISTRY_TEXT + 1);
    for bad in [
        e(RegistryAction::RegisterService {
            service: key(1).public(),
            name: long,
        }),
        e(RegistryAction::RegisterService {
            service: key(1).public(),
            name: " ".into(),
        }),
        e(RegistryAction::BanService {
            service: key(1).public(),
            reason: "a\nb".into(),
        }),
        e(RegistryAction::GrantCredits {
            service: key(1).public(),
            credits: Credits(0),
        }),
        RegistryEntry {
            seq: 0,
            ..e(RegistryAction::UnbanWorker {
                worker: key(1).public(),
            })
        },
    ] {
        assert!(matches!(
            Signed::sign(bad, &reg, &dpow_testkit::builders::NET),
            Err(ProtocolError::Invalid { .. })
        ));
    }
    let c = WorkCancel {
        service: key(1).public(),
        request: dpow_protocol::MessageId([0; 32]),
        created_ms: 1,
    };
    assert!(Signed::sign(c, &key(1), &dpow_testkit::builders::NET).is_ok());
}
