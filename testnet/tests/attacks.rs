//! The attack suite: real nodes on loopback, each case a way a stranger could make a node
//! work for free or push honest users aside, and what stops it (figures in
//! docs/security.md). Each case lives in `attacks/`; a test crate's root resolves `mod x;`
//! beside itself, hence the paths.

#[path = "attacks/flood.rs"]
mod flood;
#[path = "attacks/sybil.rs"]
mod sybil;
#[path = "attacks/sync.rs"]
mod sync;

#[path = "attacks/networks.rs"]
mod networks;
