//! dpow's test kit: what the test files of every crate would otherwise each write again.
//!
//! - [`reference`]: the one reference work check, blake2b-64 by the general-purpose `blake2`
//!   crate, sharing no code with `dpow_protocol::work` or the solvers it checks;
//! - [`builders`]: signed messages with fixed or fresh keys (requests, results, receipts,
//!   statuses, cancels, registry entries, checkpoints) and a small registered network;
//! - [`rng`]: a seeded generator, so tests are the same on every run;
//! - [`fuzz`]: the fuzz harnesses. `fuzz/` (cargo-fuzz) wraps each in a target, and
//!   `testnet/tests/fuzz_inputs.rs` runs the same harnesses on a bounded number of seeded
//!   inputs under `cargo test`.
//!
//! Dev-only: no crate depends on it outside its tests, and it is never published.
#![deny(missing_docs)]
// Test code: a broken fixture is a bug in the test, and a panic is how a harness reports.
#![allow(clippy::unwrap_used)]

pub mod builders;
pub mod fuzz;
pub mod reference;
pub mod rng;
