//! One network: a message signed for one network never verifies on another, whatever its kind,
//! even with the same keys, and a receipt carries only envelopes of its own network.

use dpow_protocol::validate::{RejectReason, Validator, ValidatorConfig};
use dpow_protocol::{
    Credits, Message, NetworkId, Profile, ProtocolError, Receipt, Signed, WorkCancel,
};
use dpow_testkit::builders::{self, NET, NOW, OTHER_NET, key, request, sign_for, solved, status};

/// Decode `s`'s bytes on its own network (it verifies) and on the other one (it does not,
/// with a bad signature: the kind and payload are fine, the signing input is not).
fn only_on<T: Message + std::fmt::Debug>(s: &Signed<T>, ours: &NetworkId, theirs: &NetworkId) {
    let back = Signed::<T>::decode(s.bytes(), ours).expect("verifies on its own network");
    assert_eq!(back.id(), s.id());
    let err = Signed::<T>::decode(s.bytes(), theirs).expect_err("refused on another network");
    // A receipt is refused before any signature is checked: the request id its result
    // names hashes the network in, so on another network the pair no longer matches.
    let cheap = T::KIND == dpow_protocol::MessageKind::Receipt
        && matches!(&err, ProtocolError::Invalid { reason, .. } if reason.contains("different request"));
    assert!(
        matches!(err, ProtocolError::BadSignature { .. }) || cheap,
        "{}: {err:?}",
        T::KIND.domain()
    );
}

#[test]
fn every_kind_signed_for_one_network_is_refused_on_another() {
    let (registrar, service, worker) = (key(1), key(2), key(3));
    let req = builders::sign_for(request(&service), &service, &OTHER_NET);
    let res = sign_for(
        builders::result(&req, &worker, solved(&req, &worker).payload().work),
        &worker,
        &OTHER_NET,
    );
    let receipt = sign_for(
        Receipt {
            request: req.clone(),
            result: res.clone(),
            price: Credits::price(req.payload().difficulty),
            accepted_ms: NOW,
        },
        &service,
        &OTHER_NET,
    );
    let cancel = sign_for(
        WorkCancel {
            service: service.public(),
            request: req.id(),
            created_ms: NOW,
        },
        &service,
        &OTHER_NET,
    );
    let st = sign_for(status(&worker, NOW), &worker, &OTHER_NET);
    let entry = sign_for(
        builders::entry(&registrar, 1, NOW, builders::register(&service, "s"))
            .payload()
            .clone(),
        &registrar,
        &OTHER_NET,
    );
    let cp = sign_for(
        builders::checkpoint(&registrar, 1, 86_400_000, NOW),
        &registrar,
        &OTHER_NET,
    );
    only_on(&req, &OTHER_NET, &NET);
    only_on(&res, &OTHER_NET, &NET);
    only_on(&receipt, &OTHER_NET, &NET);
    only_on(&cancel, &OTHER_NET, &NET);
    only_on(&st, &OTHER_NET, &NET);
    only_on(&entry, &OTHER_NET, &NET);
    only_on(&cp, &OTHER_NET, &NET);
    // The same payload signed for each network: two messages, two ids.
    let here = sign_for(req.payload().clone(), &service, &NET);
    assert_ne!(here.id(), req.id());
    assert_ne!(here.bytes(), req.bytes());
}

#[test]
fn a_receipt_signed_for_this_network_around_envelopes_of_another_is_refused() {
    let (service, worker) = (key(2), key(3));
    let answer = |req: &Signed<dpow_protocol::WorkRequest>, net: &NetworkId| {
        let work = solved(req, &worker).payload().work;
        sign_for(builders::result(req, &worker, work), &worker, net)
    };
    let foreign_req = sign_for(request(&service), &service, &OTHER_NET);
    let local_req = sign_for(request(&service), &service, &NET);
    for (req, res, which) in [
        (foreign_req.clone(), answer(&foreign_req, &NET), "request"),
        (local_req.clone(), answer(&local_req, &OTHER_NET), "result"),
    ] {
        let r = sign_for(
            Receipt {
                request: req.clone(),
                result: res,
                price: Credits::price(req.payload().difficulty),
                accepted_ms: NOW,
            },
            &service,
            &NET,
        );
        let err = Signed::<Receipt>::decode(r.bytes(), &NET).expect_err(which);
        // A foreign request's id (the network is hashed in) is not the one the local result
        // names: refused before any signature; a foreign result names the local request's
        // id, so only its signature gives it away.
        let cheap = matches!(&err, ProtocolError::Invalid { reason, .. } if reason.contains("different request"));
        assert!(
            matches!(err, ProtocolError::BadSignature { .. }) || (which == "request" && cheap),
            "a foreign {which} inside: {err:?}"
        );
        assert!(Signed::<Receipt>::decode(r.bytes(), &OTHER_NET).is_err());
    }
    // Remembering a foreign envelope as verified does not let it pass here: the cache is
    // keyed by the id, which hashes the network in.
    let seen = dpow_protocol::SignatureCache::new();
    foreign_req.remember_verified(&seen);
    assert!(
        dpow_protocol::Unverified::<dpow_protocol::WorkRequest>::decode(foreign_req.bytes(), &NET)
            .and_then(|u| u.verify_with(&seen))
            .is_err()
    );
}

#[test]
fn the_validator_refuses_another_networks_messages_as_bad_signatures() {
    let (registrar, service) = (key(1), key(2));
    let mut registry = dpow_protocol::registry::Registry::new([registrar.public()]);
    registry
        .apply(builders::entry(
            &registrar,
            1,
            NOW,
            builders::register(&service, "s"),
        ))
        .expect("registers");
    registry
        .apply(builders::entry(
            &registrar,
            2,
            NOW,
            builders::grant(&service, 1_000),
        ))
        .expect("grants");
    let mut v = Validator::new(ValidatorConfig::new(Profile::test(), NET));
    let foreign = sign_for(request(&service), &service, &OTHER_NET);
    let r = v
        .check_request(foreign.bytes(), &registry, NOW)
        .expect_err("refused");
    assert_eq!(r.reason, RejectReason::BadSignature);
    let ours = sign_for(request(&service), &service, &NET);
    v.check_request(ours.bytes(), &registry, NOW)
        .expect("the same request signed for this network passes");
    let entry = sign_for(
        builders::entry(&registrar, 3, NOW, builders::ban_service(&service, "x"))
            .payload()
            .clone(),
        &registrar,
        &OTHER_NET,
    );
    let r = v
        .check_registry(entry.bytes(), &registry, NOW)
        .expect_err("a foreign registry entry is refused");
    assert_eq!(r.reason, RejectReason::BadSignature);
}
