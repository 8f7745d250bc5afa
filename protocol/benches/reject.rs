//! What a bad message costs the node that refuses it, next to what it cost to make.
//!
//! `cargo bench -p dpow-protocol --bench reject` (one thread). For each kind of bad message:
//! the attacker's cost to make one (sign it, or copy and alter one it has), the validator's
//! cost to refuse it now (cheap checks first, `Validator::check_*`), and what refusing it
//! cost when the signature was checked first (`Signed::decode`, which every check began with
//! before). Figures in docs/benchmarks.md ("Cheap before dear").

use std::hint::black_box;
use std::io::Write;
use std::time::Instant;

use dpow_keys::SecretKey;
use dpow_protocol::validate::{Rejected, Validator, ValidatorConfig};
use dpow_protocol::{
    Message, Profile, Receipt, RegistryEntry, Signed, WorkRequest, WorkResult, WorkerStatus,
};
use dpow_testkit::builders::{self, NET, NOW, TestNet, fresh_key, sign};
use dpow_testkit::reference;

/// Messages per measurement.
const N: usize = 2_000;

/// Mean microseconds per call of `f` over `inputs`.
fn per_call<T>(inputs: &[T], mut f: impl FnMut(&T)) -> f64 {
    let start = Instant::now();
    for i in inputs {
        f(black_box(i));
    }
    start.elapsed().as_secs_f64() * 1e6 / inputs.len() as f64
}

/// `bytes` with one bit of the signature flipped.
fn broken(bytes: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    let at = b.len() - 10;
    b[at] ^= 0x04;
    b
}

fn refused<T>(r: Result<T, Rejected>) -> String {
    match r {
        Ok(_) => panic!("a bad message was accepted"),
        Err(e) => e.reason.as_str().to_string(),
    }
}

struct Row {
    case: &'static str,
    make_us: f64,
    reject_us: f64,
    signature_first_us: f64,
    reason: String,
}

/// Time refusing `msgs` with `check` and with a signature-first decode of kind `T`.
fn row<T: Message>(
    case: &'static str,
    make_us: f64,
    msgs: &[Vec<u8>],
    mut check: impl FnMut(&[u8]) -> Result<(), Rejected>,
) -> Row {
    let reason = refused(check(&msgs[0]));
    let reject_us = per_call(msgs, |m| {
        let _ = black_box(check(m));
    });
    let signature_first_us = per_call(msgs, |m| {
        let _ = black_box(Signed::<T>::decode(m, &NET));
    });
    Row {
        case,
        make_us,
        reject_us,
        signature_first_us,
        reason,
    }
}

/// Mean microseconds to make one message with `make`, and the messages.
fn made(mut make: impl FnMut(usize) -> Vec<u8>) -> (f64, Vec<Vec<u8>>) {
    let start = Instant::now();
    let msgs: Vec<Vec<u8>> = (0..N).map(&mut make).collect();
    (start.elapsed().as_secs_f64() * 1e6 / N as f64, msgs)
}

fn request_of(key: &SecretKey, nonce: u64) -> WorkRequest {
    WorkRequest {
        nonce,
        ..builders::request(key)
    }
}

fn main() {
    let net = TestNet::fixed();
    let reg = &net.registry;
    let config = ValidatorConfig::new(Profile::test(), NET);
    let mut v = Validator::new(config.clone());
    let mut rows = Vec::new();

    // 1. Random bytes on the request topic.
    let (t, msgs) = made(|i| {
        let mut b = vec![dpow_protocol::PROTOCOL_VERSION];
        b.extend((0..150).map(|j| (i * 31 + j * 7) as u8));
        b
    });
    rows.push(row::<WorkRequest>("random bytes", t, &msgs, |m| {
        v.check_request(m, reg, NOW).map(drop)
    }));

    // 2. Requests of an unregistered service, each signed.
    let stranger = fresh_key();
    let (t, msgs) = made(|i| {
        sign(request_of(&stranger, i as u64), &stranger)
            .bytes()
            .to_vec()
    });
    rows.push(row::<WorkRequest>(
        "request, unregistered service",
        t,
        &msgs,
        |m| v.check_request(m, reg, NOW).map(drop),
    ));

    // 3. Copies of one accepted request (replays).
    let genuine = net.request(1);
    v.check_request(genuine.bytes(), reg, NOW).expect("genuine");
    let (t, msgs) = made(|_| genuine.bytes().to_vec());
    rows.push(row::<WorkRequest>("request replayed", t, &msgs, |m| {
        v.check_request(m, reg, NOW).map(drop)
    }));

    // 4. A registered service's requests, signature broken (passes every cheap check: the
    //    only bad message that costs a signature check, and the one the pool and strikes
    //    are for).
    let originals: Vec<Signed<WorkRequest>> =
        (0..N as u64).map(|i| net.request(1_000 + i)).collect();
    let (t, msgs) = made(|i| broken(originals[i].bytes()));
    rows.push(row::<WorkRequest>(
        "request, signature broken",
        t,
        &msgs,
        |m| v.check_request(m, reg, NOW).map(drop),
    ));

    // 5. Results with work that fails the difficulty, each signed by a fresh key.
    let req = net.request(2);
    let d = req.payload().difficulty;
    let root = req.payload().root;
    let bad_work = reference::find_failing(&root, d);
    let good_work = reference::find_work(&root, d);
    let worker = fresh_key();
    let (t, msgs) = made(|_| {
        sign(
            WorkResult {
                work: bad_work,
                ..builders::result(&req, &worker, good_work)
            },
            &worker,
        )
        .bytes()
        .to_vec()
    });
    rows.push(row::<WorkResult>("result, invalid work", t, &msgs, |m| {
        v.check_result(m, Some(&req), reg, NOW).map(drop)
    }));

    // 6. Results for a request nobody made.
    let ghost = sign(request_of(&net.service, 99), &net.service);
    let answer = builders::solved(&ghost, &worker).bytes().to_vec();
    let (t, msgs) = made(|_| answer.clone());
    rows.push(row::<WorkResult>(
        "result, unknown request",
        t,
        &msgs,
        |m| v.check_result(m, None, reg, NOW).map(drop),
    ));

    // 7. Worker statuses dated an hour ahead.
    let (t, msgs) = made(|i| {
        sign(
            builders::status(&worker, NOW + 3_600_000 + i as u64),
            &worker,
        )
        .bytes()
        .to_vec()
    });
    rows.push(row::<WorkerStatus>(
        "status from the future",
        t,
        &msgs,
        |m| v.check_status(m, reg, NOW).map(drop),
    ));

    // 8. Receipts of an unregistered service (three signatures each).
    let theirs = sign(request_of(&stranger, 7), &stranger);
    let res = builders::solved(&theirs, &worker);
    let (t, msgs) = made(|i| {
        builders::receipt(&stranger, &theirs, res.clone(), NOW - 1_000 + i as u64)
            .bytes()
            .to_vec()
    });
    rows.push(row::<Receipt>(
        "receipt, unregistered service",
        t,
        &msgs,
        |m| v.check_receipt(m, reg, NOW).map(drop),
    ));

    // 9. Registry entries signed by someone who is no registrar, and copies of one held.
    let (t, msgs) = made(|i| {
        builders::entry(
            &stranger,
            1 + i as u64,
            NOW,
            builders::register(&stranger, "x"),
        )
        .bytes()
        .to_vec()
    });
    rows.push(row::<RegistryEntry>(
        "registry entry, not a registrar",
        t,
        &msgs,
        |m| v.check_registry(m, reg, NOW).map(drop),
    ));
    let held = reg.entries()[0].bytes().to_vec();
    let (t, msgs) = made(|_| held.clone());
    rows.push(row::<RegistryEntry>(
        "registry entry replayed",
        t,
        &msgs,
        |m| v.check_registry(m, reg, NOW).map(drop),
    ));

    // For scale: a valid request, accepted.
    let valid: Vec<Vec<u8>> = (0..N as u64)
        .map(|i| net.request(10_000 + i).bytes().to_vec())
        .collect();
    let mut fresh = Validator::new(config);
    let accept_us = per_call(&valid, |m| {
        fresh.check_request(m, reg, NOW).expect("valid");
    });

    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "| bad message | make (µs) | refuse, cheap first (µs) | refuse, signature first (µs) | refused as |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---|");
    for r in &rows {
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.2} | {:.1} | `{}` |",
            r.case, r.make_us, r.reject_us, r.signature_first_us, r.reason
        );
    }
    let _ = writeln!(
        out,
        "| (a valid request, accepted) | | {accept_us:.1} | | |"
    );
}
