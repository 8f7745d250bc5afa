//! The registry: ordering per registrar, pending entries, duplicates and conflicts, and
//! convergence of nodes that receive the same entries in different orders.

use std::collections::BTreeMap;

use dpow_keys::{PublicKey, SecretKey};
use dpow_protocol::registry::{Equivocation, MAX_PENDING, Registry, RegistryError, ServiceInfo};
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

/// A node learns from a peer's counts ([`Registry::heads`]) that it lacks entries: one
/// gossip never brought, or one held pending behind a gap; never from a peer behind it.
#[test]
fn heads_tell_which_of_two_nodes_lacks_entries() {
    let (a, b, svc) = (key(1), key(2), key(10));
    // Registrars in key order, whatever order the genesis lists them in.
    let (first, second) = if a.public() < b.public() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    let mut ahead = Registry::new([a.public(), b.public()]);
    let mut late = Registry::new([b.public(), a.public()]);
    assert_eq!(ahead.heads(), vec![0, 0]);
    assert!(!late.behind(&ahead.heads()));

    let f1 = entry(first, 1, 1, register(&svc, "faucet"));
    let f2 = entry(first, 2, 2, grant(&svc, 5));
    let s1 = entry(second, 1, 3, grant(&svc, 7));
    for e in [&f1, &f2, &s1] {
        ahead.apply(e.clone()).expect("apply");
    }
    assert_eq!(ahead.heads(), vec![2, 1]);
    assert!(late.behind(&ahead.heads()));
    assert!(!ahead.behind(&late.heads()));

    // Entry 2 of the first registrar alone: pending behind the gap, still behind.
    late.apply(f2.clone()).expect("held");
    late.apply(s1.clone()).expect("apply");
    assert_eq!(late.heads(), vec![0, 1]);
    assert!(late.behind(&ahead.heads()));
    late.apply(f1.clone()).expect("fills the gap");
    assert_eq!(late.heads(), ahead.heads());
    assert!(!late.behind(&ahead.heads()));
    // A count for a registrar this network does not have is ignored; a short list compares
    // what it has.
    assert!(!late.behind(&[2, 1, 99]));
    assert!(!late.behind(&[1]));
    assert!(late.behind(&[3]));
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

    // A pending entry seen again is a duplicate.
    assert_eq!(
        r.apply(e3.clone()),
        Err(RegistryError::Duplicate {
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

/// Two different entries `seq` of `reg`, the first with the smaller id.
fn equivocating_pair(
    reg: &SecretKey,
    seq: u64,
    a: RegistryAction,
    b: RegistryAction,
) -> (Signed<RegistryEntry>, Signed<RegistryEntry>) {
    let (x, y) = (entry(reg, seq, seq, a), entry(reg, seq, seq, b));
    if x.id() < y.id() { (x, y) } else { (y, x) }
}

#[test]
fn an_equivocation_keeps_the_smaller_id_whichever_arrives_first() {
    let (reg, svc) = (key(1), key(10));
    let (small, large) =
        equivocating_pair(&reg, 1, register(&svc, "first"), register(&svc, "second"));
    let winner_name = match &small.payload().action {
        RegistryAction::RegisterService { name, .. } => name.clone(),
        _ => unreachable!("both register"),
    };
    // The smaller id first: the larger is refused as a conflict.
    let mut r1 = Registry::new([reg.public()]);
    r1.apply(small.clone()).expect("apply");
    let e = r1.apply(large.clone()).expect_err("equivocation");
    assert_eq!(
        e,
        RegistryError::Conflict {
            registrar: reg.public(),
            seq: 1,
            kept: small.id()
        }
    );
    assert!(e.to_string().contains("two different entries"), "{e}");
    assert!(matches!(
        r1.apply(small.clone()),
        Err(RegistryError::Duplicate { seq: 1, .. })
    ));
    // The larger id first: the smaller replaces it and the state is recomputed.
    let mut r2 = Registry::new([reg.public()]);
    r2.apply(large.clone()).expect("apply");
    assert_eq!(r2.apply(small.clone()).expect("wins"), vec![small.id()]);
    for r in [&r1, &r2] {
        assert_eq!(r.len(), 1);
        assert_eq!(r.entries(), vec![small.clone()]);
        assert_eq!(
            r.service(&svc.public()).expect("registered").name,
            winner_name
        );
        assert_eq!(r.equivocation_count(), 1);
        assert_eq!(
            r.equivocations().copied().collect::<Vec<_>>(),
            vec![Equivocation {
                registrar: reg.public(),
                seq: 1,
                kept: small.id(),
                dropped: large.id(),
            }]
        );
    }
    assert_eq!(r1.digest(), r2.digest());
    // The loser arriving again is refused again.
    assert!(matches!(
        r2.apply(large),
        Err(RegistryError::Conflict { seq: 1, .. })
    ));
}

#[test]
fn an_equivocation_replacing_an_applied_grant_recomputes_the_credits() {
    let (reg, svc) = (key(1), key(10));
    let (small, large) = equivocating_pair(&reg, 2, grant(&svc, 5), grant(&svc, 700));
    let granted = |e: &Signed<RegistryEntry>| match &e.payload().action {
        RegistryAction::GrantCredits { credits, .. } => credits.0,
        _ => unreachable!("both grant"),
    };
    let mut r = Registry::new([reg.public()]);
    r.apply(entry(&reg, 1, 1, register(&svc, "s")))
        .expect("register");
    r.apply(large.clone()).expect("grant");
    r.apply(entry(&reg, 3, 3, grant(&svc, u64::MAX)))
        .expect("saturating grant");
    r.apply(small.clone()).expect("the smaller id wins");
    let seqs: Vec<u64> = r.entries().iter().map(|e| e.payload().seq).collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert_eq!(r.entries()[1], small);
    assert_eq!(
        r.service(&svc.public()).expect("registered").granted,
        Credits(u64::MAX)
    );
    // Without the saturating grant the sum shows which entry counts.
    let mut r = Registry::new([reg.public()]);
    r.apply(large.clone()).expect("held");
    r.apply(small.clone()).expect("replaces the held one");
    assert_eq!(r.pending_len(), 1);
    r.apply(entry(&reg, 1, 1, register(&svc, "s")))
        .expect("fills the gap");
    assert_eq!(
        r.service(&svc.public()).expect("registered").granted,
        Credits(granted(&small))
    );
    assert_eq!(r.equivocation_count(), 1);
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
fn dates_decide_nothing_and_a_ban_holds_until_its_registrar_lifts_it() {
    let (a, b, svc, wrk) = (key(1), key(2), key(10), key(20));
    let (lo, hi) = if a.public() < b.public() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    let ban_w = |reason: &str| RegistryAction::BanWorker {
        worker: wrk.public(),
        reason: reason.to_string(),
    };
    let unban_w = RegistryAction::UnbanWorker {
        worker: wrk.public(),
    };
    let mut r = Registry::new([a.public(), b.public()]);
    // `hi` bans, then `lo` unbans dated far later: another registrar cannot lift the ban.
    r.apply(entry(hi, 1, 10, ban(&svc, "hi's ban")))
        .expect("ban");
    r.apply(entry(lo, 1, u64::MAX, unban(&svc))).expect("unban");
    r.apply(entry(hi, 2, 1, register(&svc, "hi's name")))
        .expect("register");
    r.apply(entry(lo, 2, 2, register(&svc, "lo's name")))
        .expect("register");
    let info = r.service(&svc.public()).expect("registered");
    assert_eq!(info.banned.as_deref(), Some("hi's ban"));
    // The name is the smaller key's; the date shown the smallest claimed.
    assert_eq!(info.name, "lo's name");
    assert_eq!(info.registered_ms, 1);
    // `hi` lifts its ban with an entry dated before the ban: its later seq wins.
    r.apply(entry(hi, 3, 0, unban(&svc))).expect("unban");
    r.check_service(&svc.public()).expect("served");
    // Both ban the worker; the reason shown is the smaller key's.
    r.apply(entry(hi, 4, 50, ban_w("hi says"))).expect("ban");
    r.apply(entry(lo, 3, 50, ban_w("lo says"))).expect("ban");
    let e = r.check_worker(&wrk.public()).expect_err("banned");
    assert!(e.to_string().contains("lo says"), "{e}");
    // One lifts its own: still banned by the other, now with its reason.
    r.apply(entry(lo, 4, 0, unban_w.clone())).expect("unban");
    let e = r.check_worker(&wrk.public()).expect_err("banned");
    assert!(e.to_string().contains("hi says"), "{e}");
    r.apply(entry(hi, 5, 0, unban_w)).expect("unban");
    r.check_worker(&wrk.public()).expect("both lifted");
    assert_eq!(r.banned_workers().count(), 0);
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
        let back = Signed::<RegistryEntry>::decode(e.bytes(), &dpow_testkit::builders::NET)
            .expect("entries travel as bytes");
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

/// Per subject, each registrar's latest word by seq; combined as the module docs say.
fn model(applied: &[RegistryEntry]) -> Answers {
    let mut sorted: Vec<&RegistryEntry> = applied.iter().collect();
    sorted.sort_by_key(|e| (e.registrar, e.seq));
    type Words<T> = BTreeMap<PublicKey, BTreeMap<PublicKey, T>>;
    let mut names: Words<String> = BTreeMap::new();
    let mut since: BTreeMap<PublicKey, u64> = BTreeMap::new();
    let mut granted: BTreeMap<PublicKey, u64> = BTreeMap::new();
    let mut bans: Words<Option<String>> = BTreeMap::new();
    let mut workers: Words<Option<String>> = BTreeMap::new();
    for e in sorted {
        let by = e.registrar;
        match &e.action {
            RegistryAction::RegisterService { service, name } => {
                names.entry(*service).or_default().insert(by, name.clone());
                let t = since.entry(*service).or_insert(u64::MAX);
                *t = (*t).min(e.created_ms);
            }
            RegistryAction::GrantCredits { service, credits } => {
                let g = granted.entry(*service).or_default();
                *g = g.saturating_add(credits.0);
            }
            RegistryAction::BanService { service, reason } => {
                bans.entry(*service)
                    .or_default()
                    .insert(by, Some(reason.clone()));
            }
            RegistryAction::UnbanService { service } => {
                bans.entry(*service).or_default().insert(by, None);
            }
            RegistryAction::BanWorker { worker, reason } => {
                workers
                    .entry(*worker)
                    .or_default()
                    .insert(by, Some(reason.clone()));
            }
            RegistryAction::UnbanWorker { worker } => {
                workers.entry(*worker).or_default().insert(by, None);
            }
        }
    }
    let banned = |words: Option<&BTreeMap<PublicKey, Option<String>>>| {
        words.and_then(|w| w.values().flatten().next().cloned())
    };
    let registered: BTreeMap<PublicKey, ServiceInfo> = names
        .iter()
        .map(|(k, by)| {
            let info = ServiceInfo {
                name: by.values().next().cloned().unwrap_or_default(),
                banned: banned(bans.get(k)),
                granted: Credits(granted.get(k).copied().unwrap_or(0)),
                registered_ms: since[k],
            };
            (*k, info)
        })
        .collect();
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
            let worker = match banned(workers.get(&k)) {
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
            .keys()
            .filter_map(|k| banned(workers.get(k)).map(|r| (*k, r)))
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
    /// Each registrar's log: per seq (action kind, target, number, created_ms, delivered?,
    /// an equivocating twin (kind, number) delivered too?).
    fn logs()(n in 2usize..=3)
        (logs in prop::collection::vec(
            prop::collection::vec(
                (0u8..6, 0u8..POOL, any::<u64>(), any::<u64>(), prop::bool::weighted(0.85),
                 prop::option::weighted(0.2, (0u8..6, any::<u64>()))),
                0..10),
            n)) -> Vec<Vec<Slot>> {
        logs
    }
}

type Slot = (u8, u8, u64, u64, bool, Option<(u8, u64)>);

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Entries in any order, some equivocated (both versions delivered), dated anyhow: every
    /// node reaches one state and one digest, the model's, and sees every equivocation.
    #[test]
    fn nodes_converge_whatever_the_order(logs in logs(), seeds in prop::collection::vec(any::<u64>(), 4)) {
        let registrars: Vec<SecretKey> = (0..logs.len() as u8).map(|i| key(1 + i)).collect();
        let mut delivered = Vec::new();
        let mut applied = Vec::new();
        let mut both = 0u64;
        let mut held = 0usize;
        for (reg, log) in registrars.iter().zip(&logs) {
            let mut gap = false;
            for (i, &(kind, target, n, created, arrives, twin)) in log.iter().enumerate() {
                let seq = i as u64 + 1;
                let mut versions = Vec::new();
                if arrives {
                    versions.push(entry(reg, seq, created, action(kind, target, n)));
                }
                if let Some((tk, tn)) = twin {
                    versions.push(entry(reg, seq, created ^ 1, action(tk, target, tn)));
                }
                both += u64::from(versions.len() == 2);
                let winner = versions.iter().min_by_key(|e| e.id()).cloned();
                match winner {
                    Some(w) if !gap => applied.push(w.payload().clone()),
                    Some(_) => held += 1,
                    None => gap = true,
                }
                delivered.extend(versions);
            }
        }
        let expected = model(&applied);
        let mut digests = Vec::new();
        for seed in seeds {
            let mut order = delivered.clone();
            shuffle(&mut order, seed);
            let mut r = Registry::new(registrars.iter().map(SecretKey::public));
            let mut conflicts = 0u64;
            for e in order {
                match r.apply(e) {
                    Ok(_) => {}
                    Err(RegistryError::Conflict { .. }) => conflicts += 1,
                    Err(e) => prop_assert!(false, "unexpected refusal: {e}"),
                }
            }
            prop_assert_eq!(&answers(&r), &expected);
            prop_assert_eq!(r.pending_len(), held);
            // Each slot delivered twice is one equivocation, seen whichever came first.
            prop_assert_eq!(r.equivocation_count(), both);
            prop_assert!(conflicts <= both);
            prop_assert_eq!(r.equivocations().count() as u64, both);
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

#[test]
fn the_largest_sequence_number_does_not_overflow() {
    let (reg, svc) = (key(1), key(10));
    let mut r = Registry::new([reg.public()]);
    let last = entry(&reg, u64::MAX, 1, grant(&svc, 1));
    assert_eq!(r.apply(last).expect("held"), vec![]);
    assert_eq!(r.next_seq(&reg.public()), u64::MAX);
    assert_eq!(r.missing(&reg.public()), Some(1..u64::MAX));
    r.apply(entry(&reg, 1, 1, register(&svc, "s")))
        .expect("apply");
    assert_eq!((r.len(), r.pending_len()), (1, 1));
}
