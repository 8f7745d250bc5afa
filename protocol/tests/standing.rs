//! Assignment that fresh keys cannot take over: proven workers rank before workers on
//! probation, announced rates are capped by what receipts show, a full table never drops a
//! proven worker for a newcomer, and one key cannot announce itself faster than the interval.

use std::collections::HashSet;

use dpow_keys::{PublicKey, SecretKey};
use dpow_protocol::flow::{
    FlowConfig, MAX_WORKERS, MIN_STATUS_INTERVAL_MS, Role, WorkerAction, WorkerFlow, plan,
    plan_tiered,
};
use dpow_protocol::standing::Standings;
use dpow_protocol::{Difficulty, Priority, Root, Signed, WorkRequest, WorkerStatus};

fn key(n: u64) -> SecretKey {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&n.to_le_bytes());
    seed[31] = 0x5b;
    SecretKey::from_seed(seed)
}

fn public(n: u64) -> PublicKey {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&n.to_le_bytes());
    k[31] = 0xa1;
    PublicKey(k)
}

/// 2^24 expected hashes: one second at 16.8 MH/s.
const D: u64 = 0xffff_ff00_0000_0000;

fn request(service: &SecretKey, n: u64, at: u64) -> Signed<WorkRequest> {
    let mut root = [0u8; 32];
    root[..8].copy_from_slice(&n.to_le_bytes());
    Signed::sign(
        WorkRequest {
            service: service.public(),
            root: Root(root),
            difficulty: Difficulty(D),
            kind: None,
            account: None,
            nonce: n,
            created_ms: at,
            expires_ms: at + 60_000,
            priority: Priority::Normal,
            node: PublicKey([7; 32]),
        },
        service,
        &dpow_testkit::builders::NET,
    )
    .expect("signs")
}

fn status(worker: PublicKey, rate: u64, at: u64) -> WorkerStatus {
    WorkerStatus {
        worker,
        hash_rate: rate,
        queue: 0,
        payout: None,
        created_ms: at,
    }
}

/// Standings where each of `workers` has one receipt showing `rate` (a 2^24-hash request
/// accepted `2^24 × 1000 / rate` ms after it was made).
fn proven(workers: &[PublicKey], rate: u64) -> Standings {
    let mut s = Standings::new();
    let ms = (1u64 << 24) * 1000 / rate;
    for w in workers {
        s.on_receipt(*w, Difficulty(D), 1_000, 1_000 + ms);
    }
    s
}

#[test]
fn sybil_keys_announcing_huge_rates_never_displace_proven_primaries() {
    let svc = key(1);
    let honest: Vec<PublicKey> = (0..10).map(public).collect();
    let standings = proven(&honest, 5_000_000);
    let mut live: Vec<(PublicKey, u64)> = honest.iter().map(|k| (*k, 5_000_000)).collect();
    live.extend((1000..2000).map(|i| (public(i), u64::MAX)));
    let config = FlowConfig::default();
    let honest_set: HashSet<PublicKey> = honest.iter().copied().collect();
    for n in 0..50 {
        let r = request(&svc, n, 0);
        let p = plan_tiered(r.payload(), &r.id(), &live, &standings, &config);
        // 4 × 5 MH/s meet the 16.8 MH/s target: four honest primaries, as with no Sybil at all.
        let honest_only: Vec<(PublicKey, u64)> = live[..10].to_vec();
        let without = plan(r.payload(), &r.id(), &honest_only, &config);
        assert_eq!(p.primaries, without.primaries, "request {n}");
        assert!(p.primaries.iter().all(|k| honest_set.contains(k)));
        assert_eq!(p.expected_ms, without.expected_ms);
        // Every honest backup waits in an earlier tier than any Sybil.
        let last_honest = p
            .backups
            .iter()
            .filter(|b| honest_set.contains(&b.0))
            .map(|b| b.1)
            .max();
        let first_sybil = p
            .backups
            .iter()
            .filter(|b| !honest_set.contains(&b.0))
            .map(|b| b.1)
            .min();
        assert!(last_honest < first_sybil, "{last_honest:?} {first_sybil:?}");
        assert_eq!(p.backups.len(), 1006);
    }
}

#[test]
fn probation_workers_fill_only_what_proven_ones_cannot() {
    let svc = key(1);
    let honest = [public(1)];
    let standings = proven(&honest, 2_000_000);
    let mut live = vec![(public(1), 2_000_000)];
    live.extend((10..20).map(|i| (public(i), u64::MAX)));
    let r = request(&svc, 3, 0);
    let p = plan_tiered(
        r.payload(),
        &r.id(),
        &live,
        &standings,
        &FlowConfig::default(),
    );
    // The proven worker leads; newcomers count at most its 2 MH/s each: 8 primaries (the
    // most allowed) reach 16 MH/s, short of the target, so the set is full.
    assert_eq!(p.primaries[0], public(1));
    assert_eq!(p.primaries.len(), 8);
    assert_eq!(p.expected_ms, (1u64 << 24) * 1000 / 16_000_000 + 1);
}

#[test]
fn an_announced_rate_is_capped_by_what_receipts_show() {
    let svc = key(1);
    let liar = public(1);
    let standings = proven(&[liar, public(2)], 1_000_000);
    let live = vec![(liar, 1_000_000_000), (public(2), 1_000_000)];
    let r = request(&svc, 9, 0);
    let p = plan_tiered(
        r.payload(),
        &r.id(),
        &live,
        &standings,
        &FlowConfig::default(),
    );
    // Announcing 1 GH/s, shown 1 MH/s: planned at 4 MH/s, so both are primaries.
    assert_eq!(p.primaries.len(), 2);
    let uncapped = FlowConfig {
        rate_cap_factor: 0,
        ..FlowConfig::default()
    };
    let q = plan_tiered(r.payload(), &r.id(), &live, &standings, &uncapped);
    let liar_leads = q.primaries == vec![liar];
    let liar_second = q.primaries.len() == 2 && q.primaries[1] == liar;
    assert!(liar_leads || liar_second, "{:?}", q.primaries);
}

#[test]
fn with_no_proven_worker_everyone_is_planned_alike() {
    let svc = key(1);
    let live: Vec<(PublicKey, u64)> = (0..20).map(|i| (public(i), 3_000_000 + i)).collect();
    let none = Standings::new();
    for n in 0..20 {
        let r = request(&svc, n, 0);
        assert_eq!(
            plan_tiered(r.payload(), &r.id(), &live, &none, &FlowConfig::default()),
            plan(r.payload(), &r.id(), &live, &FlowConfig::default())
        );
    }
}

#[test]
fn a_full_table_keeps_proven_workers_against_a_crowd_of_new_keys() {
    let me = public(0);
    let honest = public(1);
    let mut w = WorkerFlow::new(me, 1_000_000, FlowConfig::default());
    w.on_receipt(honest, Difficulty(D), 0, 1_000);
    w.on_receipt(me, Difficulty(D), 0, 1_000);
    w.on_status(&status(honest, 16_000_000, 1_000), 1_000);
    // More fresh keys than the table holds, each announcing once, all newer than the honest one.
    for i in 0..(MAX_WORKERS as u64 + 500) {
        w.on_status(&status(public(100 + i), u64::MAX, 2_000), 2_000);
    }
    assert!(w.is_live(&honest, 2_000));
    assert_eq!(w.live_workers(2_000), MAX_WORKERS + 1);
    // The proven pair are the primaries of every request; every Sybil is a backup.
    let svc = key(7);
    let mut primary = 0;
    for n in 0..20 {
        let acts = w.on_request(&request(&svc, n, 2_000), 2_000);
        if acts.iter().any(|a| matches!(a, WorkerAction::Solve { .. })) || {
            matches!(w.role(request(&svc, n, 2_000).id()), Some(Role::Primary))
        } {
            primary += 1;
        }
    }
    assert_eq!(
        primary, 20,
        "this proven worker is a primary of every request"
    );
}

#[test]
fn one_key_cannot_announce_faster_than_the_interval() {
    let mut w = WorkerFlow::new(public(0), 1_000_000, FlowConfig::default());
    let k = public(5);
    w.on_status(&status(k, 1_000, 10_000), 10_000);
    // A flood of newer statuses within the interval changes nothing, so liveness is not
    // refreshed by them either.
    for t in 1..MIN_STATUS_INTERVAL_MS {
        w.on_status(&status(k, 9_999_999, 10_000 + t), 10_000 + t);
    }
    let stale = FlowConfig::default().worker_stale_ms;
    assert!(w.is_live(&k, 10_000 + stale - 1));
    assert!(!w.is_live(&k, 10_000 + stale));
    // The next one after the interval is taken.
    w.on_status(
        &status(k, 2_000, 10_000 + MIN_STATUS_INTERVAL_MS),
        10_000 + MIN_STATUS_INTERVAL_MS,
    );
    assert!(w.is_live(&k, 10_000 + stale));
}
