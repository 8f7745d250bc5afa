//! The fuzz harnesses: one function per decoder a peer or a user can feed bytes to.
//!
//! Each harness takes arbitrary bytes, runs them through the same code the node runs on
//! untrusted input, and asserts properties of what comes out, not just that nothing panicked:
//! an accepted message re-encodes to the bytes it came in and fits its size limit, its
//! signature verifies under an independent check, its work meets its difficulty by the
//! [reference](crate::reference) check, a decoded value re-encodes to bytes that decode to the
//! same value, and so on (each harness says which). A failed property panics, which the
//! fuzzer reports as a crash.
//!
//! [`TARGETS`] lists them with seed inputs made from valid messages, so that mutations reach
//! the deep paths (signature checks, registry and time rules) and not only the first length
//! check. `fuzz/` wraps each in a cargo-fuzz target and `scripts/fuzz.sh` runs them;
//! `testnet/tests/fuzz_inputs.rs` runs each on a bounded number of seeded random and mutated
//! inputs under `cargo test`.

mod envelopes;
mod files;
mod fixture;
mod http;
mod sync;

pub use envelopes::{cancel, checkpoint, receipt, registry, request, result, status};
pub use files::{config, genesis};
pub use fixture::{Fixture, fixture};
pub use http::http;
pub use sync::{dht_record, result_delivery, sync_request, sync_response};

use crate::rng::Rng;

/// One fuzz target: its name (the cargo-fuzz target's), the harness, and its seed inputs.
pub struct Target {
    /// The target's name, as `cargo fuzz run NAME` and `scripts/fuzz.sh NAME` take it.
    pub name: &'static str,
    /// What it covers, for docs/security.md and `scripts/fuzz.sh --list`.
    pub covers: &'static str,
    /// The harness.
    pub run: fn(&[u8]),
    /// Valid inputs to start from.
    pub seeds: fn() -> Vec<Vec<u8>>,
}

/// Every target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "envelope_request",
        covers: "work request envelopes: Signed::decode and Validator::check_request",
        run: request,
        seeds: envelopes::request_seeds,
    },
    Target {
        name: "envelope_result",
        covers: "work result envelopes: peek_request_id, Signed::decode, Validator::check_result",
        run: result,
        seeds: envelopes::result_seeds,
    },
    Target {
        name: "envelope_cancel",
        covers: "cancel envelopes: Signed::decode and Validator::check_cancel",
        run: cancel,
        seeds: envelopes::cancel_seeds,
    },
    Target {
        name: "envelope_status",
        covers: "worker status envelopes: Signed::decode and Validator::check_status",
        run: status,
        seeds: envelopes::status_seeds,
    },
    Target {
        name: "envelope_receipt",
        covers: "receipts (three nested signatures): check_receipt, check_open, Ledger::ingest",
        run: receipt,
        seeds: envelopes::receipt_seeds,
    },
    Target {
        name: "envelope_registry",
        covers: "registry entries: check_registry, Registry::apply and a late joiner's rebuild",
        run: registry,
        seeds: envelopes::registry_seeds,
    },
    Target {
        name: "envelope_checkpoint",
        covers: "registrar checkpoints: Signed::decode and Validator::check_checkpoint",
        run: checkpoint,
        seeds: envelopes::checkpoint_seeds,
    },
    Target {
        name: "sync_request",
        covers: "/dpow/sync/4 requests (Hello pages, Digests, Ids, Fetch, Checkpoints) through the node's CBOR codec",
        run: sync_request,
        seeds: sync::request_seeds,
    },
    Target {
        name: "sync_response",
        covers: "/dpow/sync/4 answers (Busy included) through the codec, every envelope in them validated",
        run: sync_response,
        seeds: sync::response_seeds,
    },
    Target {
        name: "result_delivery",
        covers: "/dpow/result/1 deliveries and acks through the codec, the result validated",
        run: result_delivery,
        seeds: sync::delivery_seeds,
    },
    Target {
        name: "dht_record",
        covers: "Kademlia record values (receipts keyed by id) and stored records (postcard)",
        run: dht_record,
        seeds: sync::record_seeds,
    },
    Target {
        name: "genesis",
        covers: "genesis files: TOML, Genesis::parse and its checks",
        run: genesis,
        seeds: files::genesis_seeds,
    },
    Target {
        name: "config",
        covers: "node config files: TOML, unknown keys, Config::from_toml, to_toml",
        run: config,
        seeds: files::config_seeds,
    },
    Target {
        name: "http",
        covers: "the HTTP API in process: dashboard, stats, metrics, work API, /contribute",
        run: http,
        seeds: http::seeds,
    },
];

/// The target named `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// A mutation of `input` in the manner of a fuzzer's simplest ones: flip bits, set bytes to
/// edge values, insert, delete, duplicate or truncate, one to four times.
pub fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = v.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = [0x00, 0x01, 0x7f, 0x80, 0xff][rng.below(5)];
            }
            2 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(8);
                let extra = rng.bytes(n);
                v.splice(i..i, extra);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(8));
                v.drain(i..i + n);
            }
            4 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(16));
                let copy = v[i..i + n].to_vec();
                let at = rng.below(len + 1);
                v.splice(at..at, copy);
            }
            5 => v.truncate(rng.below(len + 1)),
            _ if len > 0 => {
                let i = rng.below(len);
                v[i] = v[i].wrapping_add(1 + rng.below(3) as u8);
            }
            _ => v.push(rng.next_u64() as u8),
        }
    }
    v
}

/// Write target `name`'s seeds into `dir` (created if missing) as `seed-N` files, for a
/// fuzzer to start from. The fuzz targets call this at start when `DPOW_FUZZ_SEEDS` names a
/// folder (`scripts/fuzz.sh` sets it to the target's corpus).
pub fn write_seeds(name: &str, dir: &std::path::Path) -> std::io::Result<usize> {
    let t = target(name).ok_or_else(|| std::io::Error::other(format!("no target {name}")))?;
    std::fs::create_dir_all(dir)?;
    let seeds = (t.seeds)();
    for (i, s) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i}")), s)?;
    }
    Ok(seeds.len())
}

/// What a fuzz target runs once at start: [`write_seeds`] into `$DPOW_FUZZ_SEEDS` if set.
pub fn init(name: &str) {
    if let Some(dir) = std::env::var_os("DPOW_FUZZ_SEEDS")
        && let Err(e) = write_seeds(name, std::path::Path::new(&dir))
    {
        panic!("writing the seeds of {name}: {e}");
    }
}
