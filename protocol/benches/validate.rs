//! What one core can validate: gossiped requests (decode, signature, registry, time, replay
//! cache, profile) and results (decode, signature, ban list, one blake2b), each on one thread.
//!
//! `cargo bench -p dpow-protocol --bench validate`. Throughput is in messages (elements) per
//! second; the target is at least 20,000 requests per second per core.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dpow_keys::SecretKey;
use dpow_protocol::registry::Registry;
use dpow_protocol::validate::{Validator, ValidatorConfig};
use dpow_protocol::{
    BlockKind, Credits, Difficulty, Priority, Profile, RegistryAction, RegistryEntry, Root, Signed,
    Work, WorkRequest, WorkResult, is_valid,
};

const NOW: u64 = 1_700_000_000_000;
/// Distinct pre-signed requests; a fresh validator starts each time they are used up, so every
/// timed check sees a request it has not seen (no replays).
const POOL: usize = 20_000;
/// Registered services the requests come from (the registry is not trivially small).
const SERVICES: u8 = 64;

fn key(n: u8) -> SecretKey {
    SecretKey::from_seed([n; 32])
}

fn registry() -> Registry {
    let registrar = key(0);
    let mut r = Registry::new([registrar.public()]);
    let mut seq = 0;
    for s in 0..SERVICES {
        let service = key(s + 1).public();
        for action in [
            RegistryAction::RegisterService {
                service,
                name: format!("service {s}"),
            },
            RegistryAction::GrantCredits {
                service,
                credits: Credits(1_000_000),
            },
        ] {
            seq += 1;
            let e = RegistryEntry {
                registrar: registrar.public(),
                seq,
                created_ms: NOW - 86_400_000,
                action,
            };
            r.apply(Signed::sign(e, &registrar, &dpow_testkit::builders::NET).expect("sign entry"))
                .expect("apply");
        }
    }
    r
}

fn request(i: usize, services: &[SecretKey]) -> Signed<WorkRequest> {
    let service = &services[i % services.len()];
    let mut root = [0u8; 32];
    root[..8].copy_from_slice(&(i as u64).to_le_bytes());
    let req = WorkRequest {
        service: service.public(),
        root: Root(root),
        difficulty: Difficulty::EPOCH2_SEND,
        kind: Some(BlockKind::Send),
        account: Some(service.public()),
        nonce: i as u64,
        created_ms: NOW - 1_000,
        expires_ms: NOW + 60_000,
        priority: Priority::Normal,
        node: dpow_keys::PublicKey([7; 32]),
    };
    Signed::sign(req, service, &dpow_testkit::builders::NET).expect("sign request")
}

/// No anti-spam budget: the benchmark measures the checks, and passes any budget soon.
fn config() -> ValidatorConfig {
    ValidatorConfig {
        volume: dpow_protocol::volume::VolumePolicy {
            windows: vec![dpow_protocol::volume::Window {
                window_ms: 60_000,
                base: u64::MAX,
            }],
            max_class: 12,
        },
        ..ValidatorConfig::new(Profile::nano(), dpow_testkit::builders::NET)
    }
}

fn bench(c: &mut Criterion) {
    let registry = registry();
    let services: Vec<SecretKey> = (0..SERVICES).map(|s| key(s + 1)).collect();
    let pool: Vec<Vec<u8>> = (0..POOL)
        .map(|i| request(i, &services).bytes().to_vec())
        .collect();

    let mut group = c.benchmark_group("validate");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(1));

    group.bench_function("check_request", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let mut v = Validator::new(config());
                let n = left.min(POOL as u64) as usize;
                let start = Instant::now();
                for bytes in &pool[..n] {
                    let ok = v.check_request(black_box(bytes), &registry, NOW);
                    black_box(ok.expect("valid request"));
                }
                spent += start.elapsed();
                left -= n as u64;
            }
            spent
        })
    });

    // The same with the replay cache at its default capacity (200,000 ids), evicting one id per
    // accepted request.
    let mut full = Validator::new(config());
    let mut filler = 0usize;
    while full.seen_requests() < full.config().replay_capacity {
        let mut req = request(filler, &services).payload().clone();
        req.nonce = u64::MAX - filler as u64;
        req.expires_ms = NOW + 1_000 + (filler as u64 % 50_000);
        let signed = Signed::sign(
            req,
            &services[filler % services.len()],
            &dpow_testkit::builders::NET,
        )
        .expect("sign");
        full.check_request(signed.bytes(), &registry, NOW)
            .expect("fill");
        filler += 1;
    }
    group.bench_function("check_request_full_replay_cache", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let mut v = full.clone();
                let n = left.min(POOL as u64) as usize;
                let start = Instant::now();
                for bytes in &pool[..n] {
                    let ok = v.check_request(black_box(bytes), &registry, NOW);
                    black_box(ok.expect("valid request"));
                }
                spent += start.elapsed();
                left -= n as u64;
            }
            spent
        })
    });

    // For comparison: envelope decoding and the signature alone.
    group.bench_function("decode_request_only", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % POOL;
            black_box(
                Signed::<WorkRequest>::decode(black_box(&pool[i]), &dpow_testkit::builders::NET)
                    .expect("decode"),
            )
        })
    });

    // Results: stateless, so one pre-solved result is checked over and over.
    let worker = key(200);
    let req = Signed::sign(
        WorkRequest {
            difficulty: Profile::test().min,
            ..request(0, &services).payload().clone()
        },
        &services[0],
        &dpow_testkit::builders::NET,
    )
    .expect("sign request");
    let root = req.payload().root;
    let work = (0u64..)
        .map(Work)
        .find(|w| is_valid(&root, *w, req.payload().difficulty))
        .expect("easy work");
    let result = Signed::sign(
        WorkResult {
            request: req.id(),
            root,
            work,
            worker: worker.public(),
            payout: None,
        },
        &worker,
        &dpow_testkit::builders::NET,
    )
    .expect("sign result");
    let v = Validator::new(ValidatorConfig::new(
        Profile::test(),
        dpow_testkit::builders::NET,
    ));
    group.bench_function("check_result", |b| {
        b.iter(|| {
            let ok = v.check_result(black_box(result.bytes()), Some(&req), &registry, NOW);
            black_box(ok.expect("valid result"))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
