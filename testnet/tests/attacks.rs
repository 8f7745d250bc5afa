//! The attack suite: real nodes on loopback, each case an attack on a running network and
//! the defence that stops it. docs/security.md gives each case's figures.

#[path = "attacks/sybil.rs"]
mod sybil;

#[path = "attacks/networks.rs"]
mod networks;
