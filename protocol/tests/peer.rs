//! The sans-IO peer core: what it remembers, what it refuses, and what it tells the node to do.

use dpow_protocol::Work;
use dpow_protocol::flow::{FlowConfig, ServiceAction, ServiceConfig, WorkerAction, WorkerFlow};
use dpow_protocol::peer::{KEEP_AFTER_EXPIRY_MS, Limits, Peer};
use dpow_protocol::validate::RejectReason;
use dpow_testkit::builders::{NOW, key, request, result, sign, solved, status};

fn worker_peer(n: u8, limits: Limits) -> Peer {
    let flow = WorkerFlow::new(key(n).public(), 1_000_000, FlowConfig::default());
    Peer::new(Some(flow), ServiceConfig::default(), limits)
}

fn nth_request(n: u8) -> dpow_protocol::Signed<dpow_protocol::WorkRequest> {
    let service = key(10);
    sign(
        dpow_protocol::WorkRequest {
            nonce: u64::from(n),
            ..request(&service)
        },
        &service,
    )
}

#[test]
fn a_request_is_worked_on_until_it_is_answered_and_a_late_copy_is_not() {
    let mut p = worker_peer(1, Limits::default());
    let req = nth_request(0);
    let actions = p.on_request(&req, NOW).expect("not answered yet");
    assert!(
        matches!(actions.as_slice(), [WorkerAction::Solve { request, .. }] if *request == req.id()),
        "the only worker solves at once: {actions:?}"
    );
    let res = solved(&req, &key(2));
    let out = p.on_result(&res, NOW + 10);
    assert_eq!(
        out.worker,
        vec![WorkerAction::Stop { request: req.id() }],
        "another worker's answer stops ours"
    );
    assert!(out.service.is_empty(), "not this peer's request");
    assert!(p.is_answered(&req.id()));
    assert_eq!(p.winner(&req.id()), Some(&key(2).public()));
    // A second answer does not change who won, and a late copy is nothing to do.
    let other = sign(result(&req, &key(3), Work(9)), &key(3));
    let _ = p.on_result(&other, NOW + 20);
    assert_eq!(p.winner(&req.id()), Some(&key(2).public()));
    assert_eq!(p.on_request(&req, NOW + 30), None);
    assert!(p.refuse_answered(other.bytes()).is_err());
}

#[test]
fn the_service_completes_its_own_request_once_and_cancels_the_rest() {
    let mut p = Peer::new(None, ServiceConfig::default(), Limits::default());
    let req = nth_request(1);
    let published = p.submit(req.clone(), NOW).expect("room");
    assert_eq!(published, vec![ServiceAction::Publish(req.clone())]);
    assert_eq!(p.on_request(&req, NOW), Some(Vec::new()), "no worker here");
    let out = p.on_result(&solved(&req, &key(2)), NOW + 5);
    assert!(matches!(
        out.service.as_slice(),
        [
            ServiceAction::Completed { latency_ms: 5, .. },
            ServiceAction::Cancel { .. }
        ]
    ));
    let again = p.on_result(&solved(&req, &key(3)), NOW + 6);
    assert!(again.service.is_empty(), "completed once");
    assert_eq!(p.service().outstanding(), 0);
}

#[test]
fn a_receipt_pays_its_work_once_and_answers_a_live_request() {
    let mut p = worker_peer(1, Limits::default());
    let req = nth_request(2);
    let _ = p.on_request(&req, NOW);
    let res = solved(&req, &key(2));
    let actions = p
        .on_receipt(&req, res.payload(), NOW + 1)
        .expect("first receipt");
    assert_eq!(actions, vec![WorkerAction::Stop { request: req.id() }]);
    assert_eq!(p.on_receipt(&req, res.payload(), NOW + 2), None);
    // The same nonce for the same root is a replay, whatever request it claims to answer.
    let replay = p.refuse_paid_work(res.payload()).expect_err("paid already");
    assert_eq!(replay.reason, RejectReason::Replay);
    assert!(p.refuse_paid_work(&result(&req, &key(2), Work(1))).is_ok());
}

#[test]
fn a_receipt_for_a_long_expired_request_is_not_remembered_as_answered() {
    let mut p = worker_peer(1, Limits::default());
    let req = nth_request(3);
    let late = req.payload().expires_ms + KEEP_AFTER_EXPIRY_MS + 1;
    let res = solved(&req, &key(2));
    assert!(p.on_receipt(&req, res.payload(), late).is_some());
    assert!(!p.is_answered(&req.id()), "catch-up must not grow the map");
    // Its work stays paid.
    assert!(p.refuse_paid_work(res.payload()).is_err());
}

#[test]
fn requests_are_forgotten_a_minute_after_they_expire_and_when_too_many() {
    let mut p = worker_peer(
        1,
        Limits {
            requests: 2,
            ..Limits::default()
        },
    );
    let (a, b, c) = (nth_request(4), nth_request(5), nth_request(6));
    for r in [&a, &b, &c] {
        let _ = p.on_request(r, NOW);
    }
    assert!(p.request(&a.id()).is_none(), "the oldest gives way");
    assert!(p.request(&b.id()).is_some() && p.request(&c.id()).is_some());
    let after = b.payload().expires_ms + KEEP_AFTER_EXPIRY_MS + 1;
    let _ = p.on_tick(after);
    assert_eq!(p.requests().count(), 0, "expired a minute ago: forgotten");
}

#[test]
fn statuses_must_be_newer_and_spaced_and_a_full_table_keeps_proven_workers() {
    let mut p = worker_peer(
        1,
        Limits {
            statuses: 2,
            ..Limits::default()
        },
    );
    let (w2, w3, w4) = (key(2), key(3), key(4));
    p.on_status(sign(status(&w2, NOW), &w2), NOW, |_| false)
        .expect("taken");
    let same = p
        .on_status(sign(status(&w2, NOW), &w2), NOW, |_| false)
        .expect_err("refused");
    assert_eq!(same.reason, RejectReason::Stale);
    let soon = p
        .on_status(sign(status(&w2, NOW + 10), &w2), NOW, |_| false)
        .expect_err("refused");
    assert_eq!(soon.reason, RejectReason::TooFrequent);
    p.on_status(sign(status(&w3, NOW + 1), &w3), NOW, |_| false)
        .expect("taken");
    // Full: w4 takes the place of the stalest worker that is not proven (w2)…
    p.on_status(sign(status(&w4, NOW + 2), &w4), NOW, |k| *k == w3.public())
        .expect("taken");
    let held: Vec<_> = p.statuses().map(|s| s.payload().worker).collect();
    assert!(held.contains(&w4.public()) && !held.contains(&w2.public()));
    // …but when every worker held is proven, a newcomer on probation is not kept.
    let w5 = key(5);
    p.on_status(sign(status(&w5, NOW + 3), &w5), NOW, |k| *k != w5.public())
        .expect("taken");
    assert!(!p.statuses().any(|s| s.payload().worker == w5.public()));
    // The worker's flow counts the statuses it heard (and itself).
    assert_eq!(p.worker().map(|f| f.live_workers(NOW + 4)), Some(5));
}
