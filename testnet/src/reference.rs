//! Nano's work value computed with the general-purpose `blake2` crate: a check that shares no
//! code with the solver's or the protocol's own hash, for tests and the testnet.

use blake2::digest::consts::U8;
use blake2::{Blake2b, Digest};
use dpow_protocol::{Root, Work};

/// blake2b-64(nonce little-endian ‖ root), read little-endian.
pub fn work_value(root: &Root, work: Work) -> u64 {
    let mut h = Blake2b::<U8>::new();
    h.update(work.0.to_le_bytes());
    h.update(root.0);
    let mut v = [0u8; 8];
    v.copy_from_slice(&h.finalize());
    u64::from_le_bytes(v)
}
