//! Local dpow networks for tests and demos.
//!
//! - [`procs`]: separate `dpow` processes, for `testnet/run.sh`;
//! - [`local`]: nodes in this process on loopback, for tests;
//! - [`netns`]: hosts in network namespaces (public segment, NATed homes), for `--netns`;
//! - [`hostnet`]: a network of processes on those hosts, for the fault tests;
//! - [`nano_rpc`]: a stand-in Nano node wallet RPC (`send`), for `dpow ledger pay`.
#![deny(missing_docs)]

pub mod browser;
pub mod demo;
pub mod hostnet;
pub mod local;
pub mod nano_rpc;
pub mod netns;
pub mod payouts;
pub mod procs;

/// Unix time in milliseconds, as nodes date their messages.
pub(crate) fn local_now_ms() -> u64 {
    dpow_node::net::now_ms()
}
