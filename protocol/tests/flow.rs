//! The request lifecycle, one piece at a time: rendezvous ranking, plans, worker queues and
//! their bounds, the service side. `flow_sim.rs` runs the whole thing with a few hundred
//! workers.

use dpow_keys::{PublicKey, SecretKey};
use dpow_protocol::flow::{
    ExhaustedPolicy, FlowConfig, MAX_WORKERS, Role, ServiceAction, ServiceConfig, ServiceFlow,
    WorkerAction, WorkerFlow, plan, rank_workers,
};
use dpow_protocol::volume::{VolumePolicy, Window};
use dpow_protocol::{
    Difficulty, Priority, RequestId, Root, Signed, Work, WorkRequest, WorkResult, WorkerStatus,
};

fn key(n: u64) -> SecretKey {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&n.to_le_bytes());
    seed[31] = 0xd9;
    SecretKey::from_seed(seed)
}

fn request(
    service: &SecretKey,
    n: u64,
    d: u64,
    at: u64,
    priority: Priority,
) -> Signed<WorkRequest> {
    let mut root = [0u8; 32];
    root[..8].copy_from_slice(&n.to_le_bytes());
    Signed::sign(
        WorkRequest {
            service: service.public(),
            root: Root(root),
            difficulty: Difficulty(d),
            kind: None,
            account: None,
            nonce: n,
            created_ms: at,
            expires_ms: at + 60_000,
            priority,
            node: dpow_keys::PublicKey([7; 32]),
        },
        service,
        &dpow_testkit::builders::NET,
    )
    .expect("signs")
}

fn status(k: &SecretKey, rate: u64, at: u64) -> WorkerStatus {
    WorkerStatus {
        worker: k.public(),
        hash_rate: rate,
        queue: 0,
        payout: None,
        created_ms: at,
    }
}

/// Anti-spam with one window: class 1 from `base` credits (requests of price 1) in it.
fn one_window(base: u64, window_ms: u64) -> VolumePolicy {
    VolumePolicy {
        windows: vec![Window { window_ms, base }],
        max_class: 4,
    }
}

fn solves(actions: &[WorkerAction]) -> Vec<RequestId> {
    actions
        .iter()
        .filter_map(|a| match a {
            WorkerAction::Solve { request, .. } => Some(*request),
            _ => None,
        })
        .collect()
}

/// A worker `me` that heard statuses from five peers (`key(first)` onwards) of `peer_rate`,
/// and the live list every node plans with.
fn with_five_peers(
    me: &SecretKey,
    rate: u64,
    first: u64,
    peer_rate: u64,
    config: &FlowConfig,
) -> (WorkerFlow, Vec<(PublicKey, u64)>) {
    let mut w = WorkerFlow::new(me.public(), rate, config.clone());
    let mut live = vec![(me.public(), rate)];
    for n in first..first + 5 {
        w.on_status(&status(&key(n), peer_rate, 0), 0);
        live.push((key(n).public(), peer_rate));
    }
    (w, live)
}

/// Finish the current solve again and again; the requests started, in order.
fn drain(w: &mut WorkerFlow, mut current: RequestId, from: u64) -> Vec<RequestId> {
    let mut order = Vec::new();
    for t in from..from + 100 {
        match solves(&w.on_solved(current, Work(1), t)).first() {
            Some(next) => {
                order.push(*next);
                current = *next;
            }
            None => break,
        }
    }
    order
}

#[test]
fn ranking_is_deterministic_and_independent_of_input_order() {
    let svc = key(1);
    let id = request(&svc, 1, 0xffff_0000_0000_0000, 0, Priority::Normal).id();
    let workers: Vec<(PublicKey, u64)> =
        (0..50).map(|i| (key(100 + i).public(), 1000 + i)).collect();
    let mut reversed = workers.clone();
    reversed.reverse();
    let a = rank_workers(&id, &workers);
    assert_eq!(a, rank_workers(&id, &reversed));
    assert_eq!(a.len(), 50);
    // A different request orders them differently (50! orders; equal would be a broken hash).
    let other = request(&svc, 2, 0xffff_0000_0000_0000, 0, Priority::Normal).id();
    assert_ne!(a, rank_workers(&other, &workers));
    // Duplicates collapse.
    let mut doubled = workers.clone();
    doubled.extend(workers.iter().copied());
    assert_eq!(rank_workers(&id, &doubled).len(), 50);
}

#[test]
fn plan_takes_primaries_until_the_target_rate_then_tiers_backups() {
    let svc = key(1);
    // 2^24 expected hashes; target 1 s => 16.8 MH/s needed.
    let req = request(&svc, 7, 0xffff_ff00_0000_0000, 0, Priority::Normal);
    let workers: Vec<(PublicKey, u64)> = (0..10)
        .map(|i| (key(200 + i).public(), 5_000_000))
        .collect();
    let config = FlowConfig::default();
    let p = plan(req.payload(), &req.id(), &workers, &config);
    assert_eq!(
        p.primaries.len(),
        4,
        "4 x 5 MH/s is the first sum over 16.8 MH/s"
    );
    assert_eq!(p.backups.len(), 6);
    // Expected solve time with 20 MH/s: 2^24 / 2e7 s = 839 ms.
    assert_eq!(p.expected_ms, 839);
    let tiers: Vec<u32> = p.backups.iter().map(|b| b.1).collect();
    assert_eq!(tiers, vec![1, 1, 1, 1, 2, 2]);
    assert_eq!(p.backups[0].2, 3 * 839 + 200);
    assert_eq!(p.backups[5].2, 2 * 3 * 839 + 200);
    // One worker: it is the primary, whatever the difficulty.
    let alone = plan(req.payload(), &req.id(), &workers[..1], &config);
    assert_eq!(alone.primaries.len(), 1);
    assert!(alone.backups.is_empty());
    // max_primaries caps the set.
    let capped = plan(
        req.payload(),
        &req.id(),
        &workers,
        &FlowConfig {
            max_primaries: 2,
            ..config.clone()
        },
    );
    assert_eq!(capped.primaries.len(), 2);
    // Every worker appears exactly once.
    let mut all: Vec<PublicKey> = p.primaries.clone();
    all.extend(p.backups.iter().map(|b| b.0));
    all.sort();
    let mut want: Vec<PublicKey> = workers.iter().map(|w| w.0).collect();
    want.sort();
    assert_eq!(all, want);
}

#[test]
fn queue_serves_normal_before_precache_and_in_volume_before_over_volume() {
    let me = key(10);
    let config = FlowConfig {
        volume: one_window(3, 60_000),
        ..FlowConfig::default()
    };
    let mut w = WorkerFlow::new(me.public(), 1_000_000, config);
    let heavy = key(11);
    let light = key(12);
    let d = 0xffff_0000_0000_0000;
    // First request starts at once.
    let first = request(&heavy, 1, d, 0, Priority::Normal);
    assert_eq!(solves(&w.on_request(&first, 0)), vec![first.id()]);
    // Queue: a precache, heavy's 2nd (within volume) and 3rd (over), light's normal.
    let pre = request(&light, 2, d, 1, Priority::Precache);
    let heavy2 = request(&heavy, 3, d, 2, Priority::Normal);
    let heavy3 = request(&heavy, 4, d, 3, Priority::Normal);
    let light1 = request(&light, 5, d, 4, Priority::Normal);
    for (i, r) in [&pre, &heavy2, &heavy3, &light1].into_iter().enumerate() {
        assert!(
            solves(&w.on_request(r, 1 + i as u64)).is_empty(),
            "one solve at a time"
        );
    }
    assert_eq!(w.queue_len(), 5);
    let mut order = Vec::new();
    let mut current = first.id();
    for t in 10..15 {
        let a = w.on_solved(current, Work(1), t);
        assert!(
            a.iter()
                .any(|x| matches!(x, WorkerAction::Publish { request, .. } if *request == current))
        );
        match solves(&a).first() {
            Some(next) => {
                order.push(*next);
                current = *next;
            }
            None => break,
        }
    }
    assert_eq!(
        order,
        vec![heavy2.id(), light1.id(), heavy3.id(), pre.id()],
        "normal in volume (by age), then normal over volume, then precache"
    );
    assert_eq!(w.queue_len(), 0);
}

#[test]
fn a_normal_request_preempts_a_precache_solve() {
    let me = key(20);
    let svc = key(21);
    let mut w = WorkerFlow::new(me.public(), 1_000_000, FlowConfig::default());
    let d = 0xffff_0000_0000_0000;
    let pre = request(&svc, 1, d, 0, Priority::Precache);
    assert_eq!(solves(&w.on_request(&pre, 0)), vec![pre.id()]);
    let urgent = request(&svc, 2, d, 1, Priority::Normal);
    let a = w.on_request(&urgent, 1);
    assert_eq!(a[0], WorkerAction::Stop { request: pre.id() });
    assert_eq!(solves(&a), vec![urgent.id()]);
    // The precache resumes afterwards.
    let a = w.on_solved(urgent.id(), Work(9), 2);
    assert_eq!(solves(&a), vec![pre.id()]);
}

#[test]
fn duplicates_reordering_expiry_and_stale_workers() {
    let me = key(30);
    let other = key(31);
    let svc = key(32);
    let mut w = WorkerFlow::new(me.public(), 1_000, FlowConfig::default());
    let d = 0xffff_ffff_0000_0000; // hard: with two slow workers both are primaries or backups
    let r = request(&svc, 1, d, 0, Priority::Normal);
    // Done before the request arrives (reordered gossip): the request is ignored.
    assert!(w.on_done(r.id(), 0).is_empty());
    assert!(w.on_request(&r, 1).is_empty());
    assert_eq!(w.queue_len(), 0);
    // A duplicate delivery is a no-op.
    let r2 = request(&svc, 2, d, 0, Priority::Normal);
    let first = w.on_request(&r2, 2);
    assert_eq!(solves(&first), vec![r2.id()]);
    assert!(w.on_request(&r2, 3).is_empty());
    // Expiry stops the solve.
    let a = w.on_tick(60_001);
    assert!(a.contains(&WorkerAction::Stop { request: r2.id() }));
    assert_eq!(w.queue_len(), 0);
    // Another worker is live until it goes quiet.
    w.on_status(&status(&other, 1_000, 100_000), 100_000);
    assert_eq!(w.live_workers(100_000), 2);
    assert_eq!(
        w.live_workers(100_000 + FlowConfig::default().worker_stale_ms),
        1
    );
    // Work found for a request someone else already finished is not published.
    let r3 = request(&svc, 3, 0xffff_0000_0000_0000, 200_000, Priority::Normal);
    let _ = w.on_request(&r3, 200_000);
    let _ = w.on_done(r3.id(), 200_001);
    let a = w.on_solved(r3.id(), Work(5), 200_002);
    assert!(!a.iter().any(|x| matches!(x, WorkerAction::Publish { .. })));
}

#[test]
fn a_backup_starts_when_its_deadline_passes() {
    let me = key(40);
    let svc = key(41);
    let mut workers: Vec<SecretKey> = (0..6).map(|i| key(400 + i)).collect();
    workers.push(me.clone());
    let d = 0xffff_ff00_0000_0000;
    let r = request(&svc, 9, d, 0, Priority::Normal);
    // Find a configuration where `me` is a backup of tier 1.
    let statuses: Vec<(PublicKey, u64)> =
        workers.iter().map(|k| (k.public(), 20_000_000)).collect();
    let p = plan(r.payload(), &r.id(), &statuses, &FlowConfig::default());
    let mut flows: Vec<WorkerFlow> = workers
        .iter()
        .map(|k| {
            let mut f = WorkerFlow::new(k.public(), 20_000_000, FlowConfig::default());
            for o in &workers {
                f.on_status(&status(o, 20_000_000, 0), 0);
            }
            f
        })
        .collect();
    for (k, f) in workers.iter().zip(flows.iter_mut()) {
        let a = f.on_request(&r, 0);
        match p.role_of(&k.public(), 0) {
            Some(Role::Primary) => assert_eq!(solves(&a), vec![r.id()]),
            Some(Role::Backup { starts_at_ms, .. }) => {
                assert!(solves(&a).is_empty());
                assert_eq!(f.next_deadline(), Some(starts_at_ms));
                assert!(solves(&f.on_tick(starts_at_ms - 1)).is_empty());
                assert_eq!(solves(&f.on_tick(starts_at_ms)), vec![r.id()]);
            }
            None => panic!("every live worker has a role"),
        }
    }
}

#[test]
fn service_takes_the_first_result_republishes_and_expires() {
    let svc = key(50);
    let wk = key(51);
    let mut s = ServiceFlow::new(ServiceConfig {
        max_outstanding: 2,
        republish_after_ms: 1_000,
    });
    let r = request(&svc, 1, 0xffff_0000_0000_0000, 0, Priority::Normal);
    assert_eq!(
        s.submit(r.clone(), 0).expect("ok"),
        vec![ServiceAction::Publish(r.clone())]
    );
    assert!(
        s.submit(r.clone(), 1).expect("ok").is_empty(),
        "the same request once"
    );
    assert_eq!(s.on_tick(1_000), vec![ServiceAction::Publish(r.clone())]);
    let res = Signed::sign(
        WorkResult {
            request: r.id(),
            root: r.payload().root,
            work: Work(3),
            worker: wk.public(),
            payout: None,
        },
        &wk,
        &dpow_testkit::builders::NET,
    )
    .expect("signs");
    let a = s.on_result(&res, 1_500);
    assert!(matches!(
        &a[0],
        ServiceAction::Completed {
            latency_ms: 1_500,
            ..
        }
    ));
    assert_eq!(a[1], ServiceAction::Cancel { request: r.id() });
    assert!(
        s.on_result(&res, 1_600).is_empty(),
        "the second answer is ignored"
    );
    let r2 = request(&svc, 2, 0xffff_0000_0000_0000, 0, Priority::Normal);
    let r3 = request(&svc, 3, 0xffff_0000_0000_0000, 0, Priority::Normal);
    let r4 = request(&svc, 4, 0xffff_0000_0000_0000, 0, Priority::Normal);
    s.submit(r2.clone(), 0).expect("ok");
    s.submit(r3, 0).expect("ok");
    assert!(s.submit(r4, 0).is_err(), "bounded");
    let a = s.on_tick(60_000);
    assert!(a.contains(&ServiceAction::Expired { request: r2.id() }));
    assert_eq!(s.outstanding(), 0);
}

#[test]
fn a_full_queue_drops_the_least_urgent_request() {
    let me = key(60);
    let svc = key(61);
    let mut w = WorkerFlow::new(
        me.public(),
        1_000_000,
        FlowConfig {
            max_queue: 3,
            ..FlowConfig::default()
        },
    );
    let d = 0xffff_0000_0000_0000;
    let first = request(&svc, 1, d, 0, Priority::Normal);
    let pre = request(&svc, 2, d, 1, Priority::Precache);
    let second = request(&svc, 3, d, 2, Priority::Normal);
    let third = request(&svc, 4, d, 3, Priority::Normal);
    assert_eq!(solves(&w.on_request(&first, 0)), vec![first.id()]);
    assert!(w.on_request(&pre, 1).is_empty());
    assert!(w.on_request(&second, 2).is_empty());
    // Four queued, room for three: the precache goes, not the request being solved.
    assert_eq!(
        w.on_request(&third, 3),
        vec![WorkerAction::Dropped { request: pre.id() }]
    );
    assert_eq!(w.queue_len(), 3);
    // A newcomer that is itself the least urgent is the one dropped.
    let late_pre = request(&svc, 5, d, 4, Priority::Precache);
    assert_eq!(
        w.on_request(&late_pre, 4),
        vec![WorkerAction::Dropped {
            request: late_pre.id()
        }]
    );
    // A dropped request is not taken back when gossip delivers it again.
    assert!(w.on_request(&pre, 5).is_empty());
    assert_eq!(w.queue_len(), 3);
    assert_eq!(w.solving(), Some(first.id()));
}

#[test]
fn finished_ids_are_remembered_up_to_the_bound() {
    let me = key(70);
    let svc = key(71);
    let mut w = WorkerFlow::new(
        me.public(),
        1_000_000,
        FlowConfig {
            max_tracked: 4,
            ..FlowConfig::default()
        },
    );
    let d = 0xffff_0000_0000_0000;
    let reqs: Vec<_> = (0..5)
        .map(|n| request(&svc, n, d, 0, Priority::Normal))
        .collect();
    for r in &reqs {
        assert!(w.on_done(r.id(), 0).is_empty());
    }
    // The newest four are still known to be finished...
    assert!(w.on_request(&reqs[4], 1).is_empty());
    assert!(w.on_request(&reqs[1], 1).is_empty());
    // ...the oldest was forgotten, so a late copy of it is taken as new.
    assert_eq!(solves(&w.on_request(&reqs[0], 1)), vec![reqs[0].id()]);
}

#[test]
fn the_worker_table_is_bounded_and_forgets_the_stalest() {
    let mut w = WorkerFlow::new(key(80).public(), 1_000, FlowConfig::default());
    let peer = |n: u64| {
        let mut k = [0u8; 32];
        k[..8].copy_from_slice(&n.to_le_bytes());
        PublicKey(k)
    };
    let total = MAX_WORKERS as u64 + 10;
    for n in 0..total {
        let st = WorkerStatus {
            worker: peer(n),
            hash_rate: 1_000,
            queue: 0,
            payout: None,
            created_ms: n,
        };
        w.on_status(&st, total);
    }
    assert_eq!(w.live_workers(total), MAX_WORKERS + 1, "the table and us");
    // A forgotten worker heard again takes the place of the stalest one: still bounded.
    let again = WorkerStatus {
        worker: peer(0),
        hash_rate: 1_000,
        queue: 0,
        payout: None,
        created_ms: total,
    };
    w.on_status(&again, total);
    assert_eq!(w.live_workers(total), MAX_WORKERS + 1);
    // An older status never replaces a newer one.
    let older = WorkerStatus {
        created_ms: 0,
        ..again.clone()
    };
    w.on_status(&older, total);
    assert_eq!(
        w.live_workers(total + FlowConfig::default().worker_stale_ms - 1),
        2,
        "only the worker heard at `total` is still live, and us"
    );
}

#[test]
fn volume_is_counted_over_a_rolling_window() {
    let me = key(90);
    let heavy = key(91);
    let light = key(92);
    let mut w = WorkerFlow::new(
        me.public(),
        1_000_000,
        FlowConfig {
            volume: one_window(2, 1_000),
            ..FlowConfig::default()
        },
    );
    let d = 0xffff_0000_0000_0000;
    let busy = request(&key(93), 1, d, 0, Priority::Normal);
    assert_eq!(solves(&w.on_request(&busy, 0)), vec![busy.id()]);
    // Within one window heavy's second request is over its volume and yields to light's.
    let h1 = request(&heavy, 2, d, 10, Priority::Normal);
    let h2 = request(&heavy, 3, d, 20, Priority::Normal);
    let l1 = request(&light, 4, d, 30, Priority::Normal);
    for (r, t) in [(&h1, 10), (&h2, 20), (&l1, 30)] {
        assert!(w.on_request(r, t).is_empty());
    }
    let mut order = Vec::new();
    let mut current = busy.id();
    for t in 40..43 {
        let next = solves(&w.on_solved(current, Work(1), t))[0];
        order.push(next);
        current = next;
    }
    assert_eq!(order, vec![h1.id(), l1.id(), h2.id()]);
    // A window later heavy is back within its volume, so its new request outranks the
    // over-volume one being solved and takes the solver.
    let h3 = request(&heavy, 5, d, 5_000, Priority::Normal);
    assert_eq!(
        w.on_request(&h3, 5_000),
        vec![
            WorkerAction::Stop { request: h2.id() },
            WorkerAction::Solve {
                request: h3.id(),
                root: h3.payload().root,
                difficulty: h3.payload().difficulty
            }
        ]
    );
    // The preempted request waits behind regular work that came after it.
    let l2 = request(&light, 6, d, 5_001, Priority::Normal);
    assert!(w.on_request(&l2, 5_001).is_empty());
    assert_eq!(solves(&w.on_solved(h3.id(), Work(1), 5_002)), vec![l2.id()]);
    assert_eq!(solves(&w.on_solved(l2.id(), Work(1), 5_003)), vec![h2.id()]);
}

#[test]
fn requests_arriving_expired_are_ignored_and_an_idle_worker_has_no_deadline() {
    let me = key(100);
    let svc = key(101);
    let mut w = WorkerFlow::new(me.public(), 1_000_000, FlowConfig::default());
    assert_eq!(w.next_deadline(), None);
    let r = request(&svc, 1, 0xffff_0000_0000_0000, 0, Priority::Normal);
    assert!(w.on_request(&r, 60_000).is_empty());
    assert_eq!(w.queue_len(), 0);
    // While solving, the only deadline is the request's expiry.
    let r2 = request(&svc, 2, 0xffff_0000_0000_0000, 100, Priority::Normal);
    assert_eq!(solves(&w.on_request(&r2, 100)), vec![r2.id()]);
    assert_eq!(w.next_deadline(), Some(60_100));
    assert_eq!(w.role(r2.id()), Some(Role::Primary));
    let _ = w.on_solved(r2.id(), Work(1), 200);
    assert_eq!(w.next_deadline(), None);
    assert_eq!(w.role(r2.id()), None);
}

#[test]
fn a_full_queue_drops_waiting_backups_before_primaries() {
    let me = key(110);
    let svc = key(111);
    let config = FlowConfig {
        max_queue: 6,
        ..FlowConfig::default()
    };
    // Five fast peers: for an easy request one worker is enough, so this one is a primary
    // about one time in six and a backup otherwise.
    let (mut w, live) = with_five_peers(&me, 1_000_000, 120, 1_000_000_000, &config);
    let d = 0xffff_0000_0000_0000;
    let mut primaries = Vec::new();
    let mut dropped = Vec::new();
    for n in 0..30 {
        let r = request(&svc, n, d, 1, Priority::Normal);
        for a in w.on_request(&r, 1) {
            if let WorkerAction::Dropped { request } = a {
                dropped.push(request);
            }
        }
        if plan(r.payload(), &r.id(), &live, &config)
            .primaries
            .contains(&me.public())
        {
            primaries.push(r.id());
        }
    }
    assert!(primaries.len() >= 2, "the scenario needs some primaries");
    assert!(primaries.len() < 6, "and room for them in the queue");
    assert_eq!(dropped.len(), 30 - 6);
    for p in &primaries {
        assert!(!dropped.contains(p), "a primary was dropped");
        assert_eq!(w.role(*p), Some(Role::Primary));
    }
    assert_eq!(w.queue_len(), 6);
}

#[test]
fn an_exhausted_service_is_served_after_precache_and_over_volume() {
    let me = key(130);
    let (busy, poor, heavy, light) = (key(131), key(132), key(133), key(134));
    let mut w = WorkerFlow::new(
        me.public(),
        1_000_000,
        FlowConfig {
            volume: one_window(2, 60_000),
            ..FlowConfig::default()
        },
    );
    assert_eq!(
        FlowConfig::default().exhausted,
        ExhaustedPolicy::Deprioritise
    );
    assert!(
        w.set_exhausted([poor.public()]).is_empty(),
        "nothing queued"
    );
    let d = 0xffff_0000_0000_0000;
    let first = request(&busy, 1, d, 0, Priority::Normal);
    assert_eq!(solves(&w.on_request(&first, 0)), vec![first.id()]);
    // The exhausted service's request is the oldest and Normal, yet it goes last.
    let poor1 = request(&poor, 2, d, 1, Priority::Normal);
    let heavy1 = request(&heavy, 3, d, 2, Priority::Normal);
    let heavy2 = request(&heavy, 4, d, 3, Priority::Normal); // over volume
    let pre = request(&light, 5, d, 4, Priority::Precache);
    for (i, r) in [&poor1, &heavy1, &heavy2, &pre].into_iter().enumerate() {
        assert!(w.on_request(r, 1 + i as u64).is_empty());
    }
    assert_eq!(
        drain(&mut w, first.id(), 10),
        vec![heavy1.id(), heavy2.id(), pre.id(), poor1.id()],
        "normal, normal over volume, precache, then the exhausted service"
    );
    assert_eq!(w.queue_len(), 0);
    // With nothing else waiting it is still solved, at once.
    let poor2 = request(&poor, 6, d, 100, Priority::Normal);
    assert_eq!(solves(&w.on_request(&poor2, 100)), vec![poor2.id()]);
    // A better request preempts it.
    let pre2 = request(&light, 7, d, 101, Priority::Precache);
    let a = w.on_request(&pre2, 101);
    assert_eq!(
        a[0],
        WorkerAction::Stop {
            request: poor2.id()
        }
    );
    assert_eq!(solves(&a), vec![pre2.id()]);
}

#[test]
fn a_full_queue_drops_exhausted_requests_first() {
    let me = key(140);
    let (svc, poor) = (key(141), key(142));
    let mut w = WorkerFlow::new(
        me.public(),
        1_000_000,
        FlowConfig {
            max_queue: 3,
            ..FlowConfig::default()
        },
    );
    let _ = w.set_exhausted([poor.public()]);
    let d = 0xffff_0000_0000_0000;
    let first = request(&svc, 1, d, 0, Priority::Normal);
    let poor1 = request(&poor, 2, d, 1, Priority::Normal);
    let pre = request(&svc, 3, d, 2, Priority::Precache);
    let late_pre = request(&svc, 4, d, 3, Priority::Precache);
    assert_eq!(solves(&w.on_request(&first, 0)), vec![first.id()]);
    assert!(w.on_request(&poor1, 1).is_empty());
    assert!(w.on_request(&pre, 2).is_empty());
    // Even the newest precache outranks an exhausted service's request.
    assert_eq!(
        w.on_request(&late_pre, 3),
        vec![WorkerAction::Dropped {
            request: poor1.id()
        }]
    );
    assert_eq!(w.queue_len(), 3);
}

#[test]
fn an_exhausted_request_is_dropped_before_a_waiting_backup() {
    let me = key(170);
    let (svc, poor) = (key(171), key(172));
    let config = FlowConfig {
        max_queue: 3,
        ..FlowConfig::default()
    };
    let mut w = WorkerFlow::new(me.public(), 1_000_000, config.clone());
    let mut live = vec![(me.public(), 1_000_000)];
    for n in 0..5 {
        w.on_status(&status(&key(180 + n), 1_000_000_000, 0), 0);
        live.push((key(180 + n).public(), 1_000_000_000));
    }
    let _ = w.set_exhausted([poor.public()]);
    let d = 0xffff_0000_0000_0000;
    let is_primary = |r: &Signed<WorkRequest>| {
        plan(r.payload(), &r.id(), &live, &config)
            .primaries
            .contains(&me.public())
    };
    // One request where this worker is a primary and two where it is a backup, per service.
    let find = |s: &SecretKey, primary: bool, skip: usize| {
        (0..1_000)
            .map(|n| request(s, n, d, 1, Priority::Normal))
            .filter(|r| is_primary(r) == primary)
            .nth(skip)
            .expect("the scenario exists")
    };
    let first = find(&svc, true, 0);
    let poor1 = find(&poor, true, 0);
    let backup1 = find(&svc, false, 0);
    let backup2 = find(&svc, false, 1);
    assert_eq!(solves(&w.on_request(&first, 1)), vec![first.id()]);
    assert!(w.on_request(&poor1, 1).is_empty());
    assert!(w.on_request(&backup1, 1).is_empty());
    assert!(matches!(w.role(backup1.id()), Some(Role::Backup { .. })));
    // Full: the runnable request of the exhausted service goes before any waiting backup.
    assert_eq!(
        w.on_request(&backup2, 1),
        vec![WorkerAction::Dropped {
            request: poor1.id()
        }]
    );
    assert_eq!(w.queue_len(), 3);
}

#[test]
fn refused_services_are_never_queued_and_dropped_when_they_run_out() {
    let me = key(150);
    let (svc, poor) = (key(151), key(152));
    let mut w = WorkerFlow::new(
        me.public(),
        1_000_000,
        FlowConfig {
            exhausted: ExhaustedPolicy::Refuse,
            ..FlowConfig::default()
        },
    );
    let d = 0xffff_0000_0000_0000;
    let _ = w.set_exhausted([poor.public()]);
    // An idle worker still ignores it: no solve, no queue entry, no deadline, no backup role.
    let poor1 = request(&poor, 1, d, 0, Priority::Normal);
    assert!(w.on_request(&poor1, 0).is_empty());
    assert_eq!(w.queue_len(), 0);
    assert_eq!(w.role(poor1.id()), None);
    assert_eq!(w.next_deadline(), None);
    assert!(w.on_tick(30_000).is_empty());
    assert_eq!(w.solving(), None);
    // Credits granted: a republished copy is taken.
    assert!(w.set_exhausted([]).is_empty());
    assert_eq!(solves(&w.on_request(&poor1, 30_001)), vec![poor1.id()]);
    let other = request(&svc, 2, d, 30_002, Priority::Precache);
    assert!(w.on_request(&other, 30_002).is_empty());
    // Spent again while being solved: it is stopped and dropped, the next one starts.
    let a = w.set_exhausted([poor.public()]);
    assert_eq!(
        a,
        vec![
            WorkerAction::Stop {
                request: poor1.id()
            },
            WorkerAction::Dropped {
                request: poor1.id()
            },
            WorkerAction::Solve {
                request: other.id(),
                root: other.payload().root,
                difficulty: other.payload().difficulty,
            },
        ]
    );
    assert_eq!(w.queue_len(), 1);
}

#[test]
fn setting_and_clearing_the_set_reclasses_queued_requests() {
    let me = key(160);
    let (busy, poor, svc) = (key(161), key(162), key(163));
    let mut w = WorkerFlow::new(me.public(), 1_000_000, FlowConfig::default());
    let d = 0xffff_0000_0000_0000;
    let first = request(&busy, 1, d, 0, Priority::Normal);
    let poor1 = request(&poor, 2, d, 1, Priority::Normal);
    let pre = request(&svc, 3, d, 2, Priority::Precache);
    assert_eq!(solves(&w.on_request(&first, 0)), vec![first.id()]);
    assert!(w.on_request(&poor1, 1).is_empty());
    assert!(w.on_request(&pre, 2).is_empty());
    // Exhausted after it was queued: it moves behind the precache.
    assert!(w.set_exhausted([poor.public()]).is_empty());
    // Cleared again: normal order is back (Normal before Precache).
    assert!(w.set_exhausted([]).is_empty());
    assert_eq!(drain(&mut w, first.id(), 10), vec![poor1.id(), pre.id()]);

    // The same queue with the set left in place serves the precache first.
    let mut w = WorkerFlow::new(me.public(), 1_000_000, FlowConfig::default());
    assert_eq!(solves(&w.on_request(&first, 0)), vec![first.id()]);
    assert!(w.on_request(&poor1, 1).is_empty());
    assert!(w.on_request(&pre, 2).is_empty());
    assert!(w.set_exhausted([poor.public()]).is_empty());
    assert_eq!(drain(&mut w, first.id(), 10), vec![pre.id(), poor1.id()]);

    // A solve whose service runs out yields to a waiting precache at once, and takes the
    // solver back when its credits return.
    let mut w = WorkerFlow::new(me.public(), 1_000_000, FlowConfig::default());
    assert_eq!(solves(&w.on_request(&poor1, 1)), vec![poor1.id()]);
    assert!(w.on_request(&pre, 2).is_empty());
    let a = w.set_exhausted([poor.public()]);
    assert_eq!(
        a[0],
        WorkerAction::Stop {
            request: poor1.id()
        }
    );
    assert_eq!(solves(&a), vec![pre.id()]);
    let a = w.set_exhausted(Vec::new());
    assert_eq!(a[0], WorkerAction::Stop { request: pre.id() });
    assert_eq!(solves(&a), vec![poor1.id()]);
}

#[test]
fn a_busy_worker_serves_its_own_primaries_before_backups_that_came_due() {
    let me = key(130);
    let svc = key(131);
    let config = FlowConfig::default();
    // Five peers as fast as this worker: for an easy request one primary is enough, so this
    // worker is the primary of about one request in six and a backup of the others.
    let (mut w, live) = with_five_peers(&me, 1_000_000, 140, 1_000_000, &config);
    let d = 0xffff_0000_0000_0000;
    let (mut mine, mut backed) = (Vec::new(), Vec::new());
    let mut first = None;
    // Requests arrive at t = n: the earliest are backups, their time comes while this
    // worker is still busy with its first solve.
    for n in 0..40 {
        let r = request(&svc, n, d, n, Priority::Normal);
        let started = solves(&w.on_request(&r, n));
        first = first.or(started.first().copied());
        let p = plan(r.payload(), &r.id(), &live, &config);
        if p.primaries.contains(&me.public()) {
            mine.push(r.id());
        } else if let Some(Role::Backup { tier: 1, .. }) = p.role_of(&me.public(), n) {
            backed.push(r.id());
        }
    }
    assert!(
        mine.len() >= 3 && !backed.is_empty(),
        "the scenario needs both"
    );
    let first = first.expect("the worker started something");
    // Long after every backup came due (and before any request expires), the worker
    // finishes its solve and picks the next:
    // all its primaries go first, oldest first, then the backups.
    let late = 30_000;
    let _ = w.on_tick(late);
    let order = drain(&mut w, first, late);
    let queued_mine: Vec<RequestId> = mine.iter().copied().filter(|r| *r != first).collect();
    assert_eq!(&order[..queued_mine.len()], queued_mine.as_slice());
    assert!(order[queued_mine.len()..].iter().all(|r| !mine.contains(r)));
}

/// The requests `n` in `range` whose plan (by `live`) makes `pick` true.
fn find(
    svc: &SecretKey,
    range: std::ops::Range<u64>,
    live: &[(PublicKey, u64)],
    config: &FlowConfig,
    d: u64,
    pick: impl Fn(&dpow_protocol::flow::Plan) -> bool,
) -> Vec<u64> {
    range
        .filter(|n| {
            let r = request(svc, *n, d, 0, Priority::Normal);
            pick(&plan(r.payload(), &r.id(), live, config))
        })
        .collect()
}

fn tier_of(p: &dpow_protocol::flow::Plan, k: &PublicKey) -> Option<u32> {
    p.backups
        .iter()
        .find(|(b, _, _)| b == k)
        .map(|(_, t, _)| *t)
}

#[test]
fn an_idle_backup_starts_early_when_its_primary_is_busy_and_yields_to_its_own_primary() {
    let me = key(150);
    let svc = key(151);
    let config = FlowConfig::default();
    assert!(config.idle_start_tiers >= 1);
    let (_, live) = with_five_peers(&me, 1_000_000, 160, 1_000_000, &config);
    let d = 0xffff_0000_0000_0000;
    let busy = key(160).public();
    // A: `busy` is its primary and this worker's tier is past the idle-start tiers.
    // B: `busy` is its primary too, and this worker is a backup of tier 1.
    // C: this worker is the primary.
    let late_tier = config.idle_start_tiers + 1;
    let a = find(&svc, 0..400, &live, &config, d, |p| {
        p.primaries == [busy] && tier_of(p, &me.public()) >= Some(late_tier)
    })[0];
    let b = find(&svc, 400..800, &live, &config, d, |p| {
        p.primaries == [busy] && tier_of(p, &me.public()) == Some(1)
    })[0];
    let c = find(&svc, 800..1200, &live, &config, d, |p| {
        p.primaries == [me.public()]
    })[0];
    let (ra, rb, rc) = (
        request(&svc, a, d, 0, Priority::Normal),
        request(&svc, b, d, 0, Priority::Normal),
        request(&svc, c, d, 0, Priority::Normal),
    );

    // Off: nothing starts before its time.
    let off = FlowConfig {
        idle_start_tiers: 0,
        ..config.clone()
    };
    let (mut w, _) = with_five_peers(&me, 1_000_000, 160, 1_000_000, &off);
    assert!(solves(&w.on_request(&ra, 10)).is_empty());
    assert!(solves(&w.on_request(&rb, 11)).is_empty());

    let (mut w, _) = with_five_peers(&me, 1_000_000, 160, 1_000_000, &config);
    // B alone: its primary has nothing before it, so the backup waits for its time.
    let (mut quiet, _) = with_five_peers(&me, 1_000_000, 160, 1_000_000, &config);
    assert!(solves(&quiet.on_request(&rb, 11)).is_empty());
    // A first: its primary is free, and this worker's tier is too late to help early anyway.
    assert!(solves(&w.on_request(&ra, 10)).is_empty());
    // Then B: its primary is busy with A, so this idle worker starts B now.
    assert_eq!(solves(&w.on_request(&rb, 11)), vec![rb.id()]);
    match w.role(rb.id()) {
        Some(Role::Backup {
            tier: 1,
            starts_at_ms,
        }) => assert!(starts_at_ms > 11, "started before its time"),
        other => panic!("B's role: {other:?}"),
    }
    // C, its own primary, takes the solver at once.
    let a_c = w.on_request(&rc, 12);
    assert!(a_c.contains(&WorkerAction::Stop { request: rb.id() }));
    assert_eq!(solves(&a_c), vec![rc.id()]);
    // C solved: B again, still early.
    assert_eq!(solves(&w.on_solved(rc.id(), Work(1), 13)), vec![rb.id()]);
    // A answered elsewhere: B's primary is free now, but B is already under way; once B
    // is answered too, nothing else starts early (A is gone, no primary is busy).
    let _ = w.on_done(ra.id(), 14);
    assert_eq!(w.solving(), Some(rb.id()));
    assert!(solves(&w.on_done(rb.id(), 15)).is_empty());
    assert_eq!(w.solving(), None);
}

#[test]
fn an_idle_backup_starts_early_when_its_primary_falls_silent() {
    let me = key(170);
    let svc = key(171);
    // One slow primary per request: a tier-1 backup's time is minutes away.
    let config = FlowConfig {
        max_primaries: 1,
        worker_stale_ms: 1_000,
        ..FlowConfig::default()
    };
    let (mut w, live) = with_five_peers(&me, 1_000, 180, 1_000, &config);
    let d = 0xffff_0000_0000_0000;
    let b = find(&svc, 0..400, &live, &config, d, |p| {
        p.primaries == [key(180).public()] && tier_of(p, &me.public()) == Some(1)
    })[0];
    let rb = request(&svc, b, d, 0, Priority::Normal);
    assert!(solves(&w.on_request(&rb, 10)).is_empty());
    // Its primary is still live: nothing starts.
    assert!(solves(&w.on_tick(500)).is_empty());
    // Its primary has not been heard from for `worker_stale_ms`: this idle worker takes over.
    assert_eq!(solves(&w.on_tick(1_000)), vec![rb.id()]);
    match w.role(rb.id()) {
        Some(Role::Backup { starts_at_ms, .. }) => assert!(starts_at_ms > 60_000),
        other => panic!("B's role: {other:?}"),
    }
}
