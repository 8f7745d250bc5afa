//! The attack suite: real nodes on loopback, each case a way a stranger could make a node
//! work for free or push honest users aside, and what stops it (figures in
//! docs/security.md). Each case lives in `attacks/`, what they share in `attacks/common.rs`;
//! a test crate's root resolves `mod x;` beside itself, hence the paths.
//!
//! `cargo test --workspace --all-features --test attacks -- --test-threads=1 --nocapture`
//! prints each case's figures: honest p50/p99 with and without the attack, and memory.

#[path = "attacks/common.rs"]
mod common;

#[path = "attacks/flood.rs"]
mod flood;
#[path = "attacks/front_run.rs"]
mod front_run;
#[path = "attacks/garbage.rs"]
mod garbage;
#[path = "attacks/networks.rs"]
mod networks;
#[path = "attacks/sybil.rs"]
mod sybil;
#[path = "attacks/sync.rs"]
mod sync;
