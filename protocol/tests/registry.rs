//! The registry: ordering per registrar, pending entries, duplicates and conflicts, and
//! convergence of nodes that receive the same entries in different orders.

use std::collections::BTreeMap;

use dpow_keys::{PublicKey, SecretKey};
use dpow_protocol::registry::{MAX_PENDING, Registry, RegistryError, ServiceInfo};
use dpow_protocol::{Credits, RegistryAction, RegistryEntry, Signed};
use dpow_testkit::builders::{self, entry, grant, key, register};
use proptest::prelude::*;

fn ban(service: &SecretKey, reason: &str) -> RegistryAction {
    builders::ban_service(service, reason)
}

fn unban(service: &SecretKey) -> RegistryAction {
    builders::unban_service(service)
}

#[test]
fn entries_in_order_build_the_registry() {
    let (reg, svc, other) = (key(1), key(10), key(11));
    let mut r = Registry::new([reg.public()]);
    assert!(r.is_empty());
    assert_eq!(r.next_seq(&reg.public()), 1);
    let e1 = entry(&reg, 1, 100, register(&svc, "faucet"));
    assert_eq!(r.apply(e1.clone()).expect("apply 1"), vec![e1.id()]);
    r.apply(entry(&reg, 2, 200, grant(&svc, 40)))
        .expect("apply 2");
    r.apply(entry(&reg, 3, 300, grant(&svc, 2)))
        .expect("apply 3");
    assert_eq!(r.len(), 3);
    assert_eq!(r.next_seq(&reg.public()), 4);
    assert_eq!(
        r.service(&svc.public()),
        Some(&ServiceInfo {
            name: "faucet".to_string(),
            banned: None,
            granted: Credits(42),
            registered_ms: 100,
        })
    );
    r.check_service(&svc.public()).expect("served");
    assert_eq!(
        r.check_service(&other.public()),
        Err(RegistryError::UnknownService {
            service: other.public()
        })
    );
    let e = r.check_service(&other.public()).expect_err("unknown");
    assert!(e.to_string().contains("is not registered"), "{e}");

    r.apply(entry(&reg, 4, 400, ban(&svc, "spam")))
        .expect("ban");
    let e = r.check_service(&svc.public()).expect_err("banned");
    assert!(
        matches!(&e, RegistryError::BannedService { reason, .. } if reason == "spam"),
        "{e}"
    );
    assert!(e.to_string().contains("is banned: spam"), "{e}");
    r.apply(entry(&reg, 5, 500, unban(&svc))).expect("unban");
    r.check_service(&svc.public()).expect("served again");
    assert_eq!(r.services().count(), 1);
}

#[test]
fn unknown_registrar_is_refused() {
    let (reg, stranger, svc) = (key(1), key(2), key(10));
    let mut r = Registry::new([reg.public()]);
    let e = r
        .apply(entry(&stranger, 1, 1, register(&svc, "x")))
        .expect_err("not a registrar");
    assert_eq!(
        e,
        RegistryError::UnknownRegistrar {
            registrar: stranger.public()
        }
    );
    assert!(e.to_string().contains("not a registrar"), "{e}");
    assert!(r.is_empty());
    assert_eq!(r.next_seq(&stranger.public()), 0);
}

#[test]
fn out_of_order_entries_wait_for_the_gap() {
    let (reg, svc) = (key(1), key(10));
    let mut r = Registry::new([reg.public()]);
    let e1 = entry(&reg, 1, 1, register(&svc, "wallet"));
    let e2 = entry(&reg, 2, 2, grant(&svc, 5));
    let e3 = entry(&reg, 3, 3, grant(&svc, 7));
    let e5 = entry(&reg, 5, 5, ban(&svc, "fraud"));

    assert_eq!(r.apply(e3.clone()).expect("held"), vec![]);
    assert_eq!(r.apply(e5.clone()).expect("held"), vec![]);
    assert_eq!(r.apply(e2.clone()).expect("held"), vec![]);
    assert_eq!(r.pending_len(), 3);
    assert!(r.is_empty());
    assert!(r.service(&svc.public()).is_none());
    assert_eq!(r.missing(&reg.public()), Some(1..2));
    assert_eq!(r.next_seq(&reg.public()), 6);

    // A pending entry seen again is a duplicate, a different one with its number a conflict.
    assert_eq!(
        r.apply(e3.clone()),
        Err(RegistryError::Duplicate {
            registrar: reg.public(),
            seq: 3
        })
    );
    assert_eq!(
        r.apply(entry(&reg, 3, 3, grant(&svc, 8))),
        Err(RegistryError::Conflict {
            registrar: reg.public(),
            seq: 3
        })
    );

    // Entry 1 releases 2 and 3; 5 still waits for 4.
    assert_eq!(
        r.apply(e1.clone()).expect("fills the gap"),
        vec![e1.id(), e2.id(), e3.id()]
    );
    assert_eq!(r.len(), 3);
    assert_eq!(r.pending_len(), 1);
    assert_eq!(r.missing(&reg.public()), Some(4..5));
    let info = r.service(&svc.public()).expect("registered");
    assert_eq!(info.granted, Credits(12));
    assert_eq!(info.banned, None);

    let e4 = entry(&reg, 4, 4, grant(&svc, 1));
    assert_eq!(r.apply(e4.clone()).expect("apply"), vec![e4.id(), e5.id()]);
    assert_eq!(r.pending_len(), 0);
    assert_eq!(r.missing(&reg.public()), None);
    assert_eq!(
        r.service(&svc.public())
            .expect("registered")
            .banned
            .as_deref(),
        Some("fraud")
    );
    assert_eq!(r.next_seq(&reg.public()), 6);
    let seqs: Vec<u64> = r.entries().iter().map(|e| e.payload().seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
}

#[test]
fn applied_duplicates_and_conflicts_keep_the_first() {
    let (reg, svc) = (key(1), key(10));
    let mut r = Registry::new([reg.public()]);
    let first = entry(&reg, 1, 1, register(&svc, "first"));
    r.apply(first.clone()).expect("apply");
    let digest = r.digest();
    let e = r.apply(first).expect_err("again");
    assert!(matches!(e, RegistryError::Duplicate { seq: 1, .. }), "{e}");
    let e = r
        .apply(entry(&reg, 1, 1, register(&svc, "second")))
        .expect_err("equivocation");
    assert!(matches!(e, RegistryError::Conflict { seq: 1, .. }), "{e}");
    assert!(e.to_string().contains("two different entries"), "{e}");
    assert_eq!(r.digest(), digest);
    assert_eq!(r.len(), 1);
    assert_eq!(r.service(&svc.public()).expect("registered").name, "first");
}

#[test]
fn pending_set_is_bounded() {
    let (reg, svc) = (key(1), key(10));
    let mut r = Registry::new([reg.public()]);
    let limit = MAX_PENDING as u64;
    for seq in 2..=limit + 1 {
        let held = r
            .apply(entry(&reg, seq, seq, grant(&svc, 1)))
            .expect("held");
        assert!(held.is_empty());
    }
    assert_eq!(r.pending_len(), MAX_PENDING);
    let e = r
        .apply(entry(&reg, limit + 2, limit + 2, grant(&svc, 1)))
        .expect_err("full");
    assert_eq!(
        e,
        RegistryError::PendingFull {
            registrar: reg.public(),
            seq: limit + 2,
            limit: MAX_PENDING
        }
    );
    // The gap filled, everything held is applied and room is made again.
    let released = r
        .apply(entry(&reg, 1, 1, register(&svc, "bulk")))
        .expect("fill");
    assert_eq!(released.len(), MAX_PENDING + 1);
    assert_eq!(r.pending_len(), 0);
    assert_eq!(
        r.service(&svc.public()).expect("registered").granted,
        Credits(limit)
    );
    r.apply(entry(&reg, limit + 2, limit + 2, grant(&svc, 1)))
        .expect("room again");
    assert_eq!(r.len(), MAX_PENDING + 2);
}

#[test]
fn grants_and_bans_before_registration_count() {
    let (reg, svc) = (key(1), key(10));
    let mut r = Registry::new([reg.public()]);
    r.apply(entry(&reg, 1, 1, grant(&svc, 9))).expect("grant");
    r.apply(entry(&reg, 2, 2, ban(&svc, "known abuser")))
        .expect("ban");
    assert!(r.service(&svc.public()).is_none());
    assert_eq!(r.services().count(), 0);
    assert!(matches!(
        r.check_service(&svc.public()),
        Err(RegistryError::UnknownService { .. })
    ));
    r.apply(entry(&reg, 3, 3, register(&svc, "late")))
        .expect("register");
    let info = r.service(&svc.public()).expect("registered");
    assert_eq!(info.granted, Credits(9));
    assert_eq!(info.registered_ms, 3);
    assert!(matches!(
        r.check_service(&svc.public()),
        Err(RegistryError::BannedService { .. })
    ));
}

#[test]
fn latest_decision_wins_across_registrars() {
    let (a, b, svc, wrk) = (key(1), key(2), key(10), key(20));
    // Registrar a bans at t=10, registrar b unbans at t=5 but its entry arrives last: banned.
    let ban_late = entry(&a, 1, 10, ban(&svc, "late ban"));
    let unban_early = entry(&b, 1, 5, unban(&svc));
    let reg_a = entry(&a, 2, 1, register(&svc, "a's name"));
    let reg_b = entry(&b, 2, 2, register(&svc, "b's name"));
    // Same instant: the larger registrar key wins the tie.
    let ban_w = entry(
        &a,
        3,
        50,
        RegistryAction::BanWorker {
            worker: wrk.public(),
            reason: "fake work".to_string(),
        },
    );
    let unban_w = entry(
        &b,
        3,
        50,
        RegistryAction::UnbanWorker {
            worker: wrk.public(),
        },
    );
    let mut r = Registry::new([a.public(), b.public()]);
    for e in [ban_late, unban_early, reg_b, reg_a, unban_w, ban_w] {
        r.apply(e).expect("apply");
    }
    let info = r.service(&svc.public()).expect("registered");
    assert_eq!(info.banned.as_deref(), Some("late ban"));
    assert_eq!(info.name, "b's name");
    assert_eq!(info.registered_ms, 1);
    let worker_banned = a.public() > b.public();
    assert_eq!(r.check_worker(&wrk.public()).is_err(), worker_banned);
    assert_eq!(r.banned_workers().count(), usize::from(worker_banned));
    r.check_worker(&key(21).public())
        .expect("unknown workers may work");
}

#[test]
fn worker_bans() {
    let (reg, wrk) = (key(1), key(20));
    let mut r = Registry::new([reg.public()]);
    r.apply(entry(
        &reg,
        1,
        1,
        RegistryAction::BanWorker {
            worker: wrk.public(),
            reason: "invalid results".to_string(),
        },
    ))
    .expect("ban");
    let e = r.check_worker(&wrk.public()).expect_err("banned");
    assert!(e.to_string().contains("invalid results"), "{e}");
    assert_eq!(
        r.banned_workers().collect::<Vec<_>>(),
        vec![(&wrk.public(), "invalid results")]
    );
    r.apply(entry(
        &reg,
        2,
        2,
        RegistryAction::UnbanWorker {
            worker: wrk.public(),
        },
    ))
    .expect("unban");
    r.check_worker(&wrk.public()).expect("forgiven");
    assert_eq!(r.banned_workers().count(), 0);
}

#[test]
fn a_late_joiner_rebuilds_the_registry_from_entries() {
    let (a, b, s1, s2) = (key(1), key(2), key(10), key(11));
    let mut r = Registry::new([a.public(), b.public()]);
    r.apply(entry(&a, 1, 1, register(&s1, "one")))
        .expect("apply");
    r.apply(entry(&b, 1, 2, register(&s2, "two")))
        .expect("apply");
    r.apply(entry(&a, 2, 3, grant(&s2, 3))).expect("apply");
    r.apply(entry(&b, 2, 4, ban(&s1, "x"))).expect("apply");
    let mut late = Registry::new([a.public(), b.public()]);
    assert_ne!(late.digest(), r.digest());
    for e in r.entries() {
        let back = Signed::<RegistryEntry>::decode(e.bytes()).expect("entries travel as bytes");
        late.apply(back).expect("in order, nothing waits");
    }
    assert_eq!(late.pending_len(), 0);
    assert_eq!(late.digest(), r.digest());
    assert_eq!(
        late.services().collect::<Vec<_>>(),
        r.services().collect::<Vec<_>>()
    );
}

// ---- convergence ----------------------------------------------------------------------------

/// Services and workers the random entries talk about.
const POOL: u8 = 3;
const NAMES: [&str; 3] = ["alpha", "beta", "gamma"];

fn pool_key(i: u8) -> SecretKey {
    key(100 + i)
}

fn action(kind: u8, target: u8, n: u64) -> RegistryAction {
    let k = pool_key(target).public();
    match kind {
        0 => RegistryAction::RegisterService {
            service: k,
            name: NAMES[(n % 3) as usize].to_string(),
        },
        1 => RegistryAction::GrantCredits {
            service: k,
            credits: Credits(n % 1000 + 1),
        },
        2 => RegistryAction::BanService {
            service: k,
            reason: NAMES[(n % 3) as usize].to_string(),
        },
        3 => RegistryAction::UnbanService { service: k },
        4 => RegistryAction::BanWorker {
            worker: k,
            reason: NAMES[(n % 3) as usize].to_string(),
        },
        _ => RegistryAction::UnbanWorker { worker: k },
    }
}

/// What every node must conclude, computed the slow, obvious way from the applied set.
#[derive(Debug, PartialEq)]
struct Answers {
    services: Vec<(PublicKey, ServiceInfo)>,
    checks: Vec<(Result<(), RegistryError>, Result<(), RegistryError>)>,
    banned_workers: Vec<(PublicKey, String)>,
    len: usize,
}

fn answers(r: &Registry) -> Answers {
    Answers {
        services: r.services().map(|(k, i)| (*k, i.clone())).collect(),
        checks: (0..POOL)
            .map(|i| {
                let k = pool_key(i).public();
                (r.check_service(&k), r.check_worker(&k))
            })
            .collect(),
        banned_workers: r
            .banned_workers()
            .map(|(k, s)| (*k, s.to_string()))
            .collect(),
        len: r.len(),
    }
}

fn model(applied: &[RegistryEntry]) -> Answers {
    let mut sorted: Vec<&RegistryEntry> = applied.iter().collect();
    sorted.sort_by_key(|e| (e.created_ms, e.registrar, e.seq));
    let mut registered: BTreeMap<PublicKey, ServiceInfo> = BTreeMap::new();
    let mut granted: BTreeMap<PublicKey, u64> = BTreeMap::new();
    let mut banned: BTreeMap<PublicKey, Option<String>> = BTreeMap::new();
    let mut workers: BTreeMap<PublicKey, Option<String>> = BTreeMap::new();
    for e in sorted {
        match &e.action {
            RegistryAction::RegisterService { service, name } => {
                let info = registered.entry(*service).or_insert(ServiceInfo {
                    name: String::new(),
                    banned: None,
                    granted: Credits(0),
                    registered_ms: e.created_ms,
                });
                info.name = name.clone();
            }
            RegistryAction::GrantCredits { service, credits } => {
                *granted.entry(*service).or_default() += credits.0;
            }
            RegistryAction::BanService { service, reason } => {
                banned.insert(*service, Some(reason.clone()));
            }
            RegistryAction::UnbanService { service } => {
                banned.insert(*service, None);
            }
            RegistryAction::BanWorker { worker, reason } => {
                workers.insert(*worker, Some(reason.clone()));
            }
            RegistryAction::UnbanWorker { worker } => {
                workers.insert(*worker, None);
            }
        }
    }
    for (k, info) in registered.iter_mut() {
        info.granted = Credits(granted.get(k).copied().unwrap_or(0));
        info.banned = banned.get(k).cloned().flatten();
    }
    let checks = (0..POOL)
        .map(|i| {
            let k = pool_key(i).public();
            let service = match registered.get(&k) {
                None => Err(RegistryError::UnknownService { service: k }),
                Some(ServiceInfo {
                    banned: Some(reason),
                    ..
                }) => Err(RegistryError::BannedService {
                    service: k,
                    reason: reason.clone(),
                }),
                Some(_) => Ok(()),
            };
            let worker = match workers.get(&k).cloned().flatten() {
                Some(reason) => Err(RegistryError::BannedWorker { worker: k, reason }),
                None => Ok(()),
            };
            (service, worker)
        })
        .collect();
    Answers {
        services: registered.into_iter().collect(),
        checks,
        banned_workers: workers
            .into_iter()
            .filter_map(|(k, r)| r.map(|r| (k, r)))
            .collect(),
        len: applied.len(),
    }
}

/// Fisher–Yates driven by a splitmix64 stream.
fn shuffle<T>(v: &mut [T], mut seed: u64) {
    for i in (1..v.len()).rev() {
        seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        v.swap(i, (z % (i as u64 + 1)) as usize);
    }
}

prop_compose! {
    /// Each registrar's log: (action kind, target, number, created_ms, delivered?) per seq.
    fn logs()(n in 2usize..=3)
        (logs in prop::collection::vec(
            prop::collection::vec((0u8..6, 0u8..POOL, any::<u64>(), 0u64..8, prop::bool::weighted(0.85)), 0..10),
            n)) -> Vec<Vec<(u8, u8, u64, u64, bool)>> {
        logs
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn nodes_converge_whatever_the_order(logs in logs(), seeds in prop::collection::vec(any::<u64>(), 4)) {
        let registrars: Vec<SecretKey> = (0..logs.len() as u8).map(|i| key(1 + i)).collect();
        let mut delivered = Vec::new();
        let mut applied = Vec::new();
        for (reg, log) in registrars.iter().zip(&logs) {
            let mut gap = false;
            for (i, &(kind, target, n, created, arrives)) in log.iter().enumerate() {
                let e = entry(reg, i as u64 + 1, created, action(kind, target, n));
                gap |= !arrives;
                if !gap {
                    applied.push(e.payload().clone());
                }
                if arrives {
                    delivered.push(e);
                }
            }
        }
        let expected = model(&applied);
        let mut digests = Vec::new();
        for seed in seeds {
            let mut order = delivered.clone();
            shuffle(&mut order, seed);
            let mut r = Registry::new(registrars.iter().map(SecretKey::public));
            for e in order {
                r.apply(e).expect("no duplicates or conflicts in one delivery");
            }
            prop_assert_eq!(&answers(&r), &expected);
            prop_assert_eq!(r.pending_len(), delivered.len() - applied.len());
            // A late joiner fed this node's entries reaches the same state.
            let mut late = Registry::new(registrars.iter().map(SecretKey::public));
            for e in r.entries() {
                late.apply(e).expect("in order");
            }
            prop_assert_eq!(late.digest(), r.digest());
            prop_assert_eq!(answers(&late), answers(&r));
            digests.push(r.digest());
        }
        prop_assert!(digests.windows(2).all(|w| w[0] == w[1]));
    }
}
