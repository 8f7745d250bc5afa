//! What one ed25519 check costs, each way the node makes it.
//!
//! `cargo bench -p dpow-keys --bench verify` (one thread): 2,000 signatures of one key over
//! 400-byte messages (a receipt's signing input is about that), 15 rounds, the fastest round
//! of each kept (this machine swings by a third between rounds). Figures in
//! docs/benchmarks.md ("Signature checks of known signers made cheaper").

use std::hint::black_box;
use std::io::Write;
use std::time::Instant;

use dpow_keys::{PreparedKey, SecretKey, Signature};

const N: usize = 2_000;
const ROUNDS: usize = 15;

/// Fastest of [`ROUNDS`] rounds of `f`, in microseconds per signature.
fn fastest(mut f: impl FnMut() -> usize) -> f64 {
    (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            let checked = f();
            start.elapsed().as_secs_f64() * 1e6 / checked as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let key = SecretKey::from_seed([9; 32]);
    let public = key.public();
    let msgs: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            let mut m = vec![0x5a; 400];
            m[..8].copy_from_slice(&(i as u64).to_le_bytes());
            m
        })
        .collect();
    let sigs: Vec<Signature> = msgs.iter().map(|m| key.sign(m)).collect();
    let prepared = public.prepare().expect("a valid key");

    let strict = fastest(|| {
        for (m, s) in msgs.iter().zip(&sigs) {
            black_box(public.verify(m, s)).expect("verifies");
        }
        N
    });
    let prepare = fastest(|| {
        for _ in 0..N / 10 {
            black_box(public.prepare()).expect("a valid key");
        }
        N / 10
    });
    let one = fastest(|| {
        for (m, s) in msgs.iter().zip(&sigs) {
            black_box(prepared.verify(m, s)).expect("verifies");
        }
        N
    });
    let batch = |size: usize| {
        fastest(|| {
            let checks: Vec<(&PreparedKey, &[u8], &Signature)> = msgs
                .iter()
                .zip(&sigs)
                .map(|(m, s)| (&prepared, &m[..], s))
                .collect();
            for chunk in checks.chunks(size) {
                black_box(PreparedKey::verify_all(chunk)).expect("verifies");
            }
            N
        })
    };
    let (three, many) = (batch(3), batch(64));
    let lines = [
        (
            "verify_strict (PublicKey::verify, key decompressed each time)",
            strict,
        ),
        ("prepare a key (decompress, build its tables)", prepare),
        ("PreparedKey::verify, one at a time", one),
        ("PreparedKey::verify_all, 3 at a time (a receipt's)", three),
        ("PreparedKey::verify_all, 64 at a time", many),
    ];
    let mut out = std::io::stdout().lock();
    for (what, us) in lines {
        let _ = writeln!(out, "{what:<64} {us:>6.1} us");
    }
}
