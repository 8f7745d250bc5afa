//! The reference work check: Nano's work value by the general-purpose `blake2` crate.
//!
//! `dpow_protocol::work` has its own blake2b, the solvers have SIMD kernels, the GPU an OpenCL
//! one and the browser a WebAssembly one; tests check each of them against this, which shares
//! no code with any.

use blake2::digest::consts::U8;
use blake2::{Blake2b, Digest};
use dpow_protocol::{Difficulty, Root, Work};

/// blake2b-64(nonce little-endian ‖ root), read little-endian: the work value.
pub fn work_value(root: &Root, work: Work) -> u64 {
    value_of(&root.0, work.0)
}

/// [`work_value`] on raw bytes and a raw nonce.
pub fn value_of(root: &[u8; 32], nonce: u64) -> u64 {
    let mut h = Blake2b::<U8>::new();
    h.update(nonce.to_le_bytes());
    h.update(root);
    let mut v = [0u8; 8];
    v.copy_from_slice(&h.finalize());
    u64::from_le_bytes(v)
}

/// Whether `work` meets `difficulty` for `root`.
pub fn is_valid(root: &Root, work: Work, difficulty: Difficulty) -> bool {
    work_value(root, work) >= difficulty.0
}

/// The first nonce from 0 up that meets `difficulty` (brute force: low difficulties only).
pub fn find_work(root: &Root, difficulty: Difficulty) -> Work {
    (0u64..)
        .map(Work)
        .find(|w| is_valid(root, *w, difficulty))
        .unwrap()
}

/// The first nonce from 0 up that does not meet `difficulty`.
pub fn find_failing(root: &Root, difficulty: Difficulty) -> Work {
    (0u64..)
        .map(Work)
        .find(|w| !is_valid(root, *w, difficulty))
        .unwrap()
}

/// [`work_value`] of a root and work as Nano prints them (64 and 16 hex digits), parsed here
/// too, so that nothing of the code under test is involved.
pub fn value_of_text(root: &str, work: &str) -> u64 {
    assert_eq!(root.len(), 64, "a root is 64 hex digits: {root:?}");
    let mut bytes = [0u8; 32];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(&root[2 * i..2 * i + 2], 16).unwrap();
    }
    value_of(&bytes, u64::from_str_radix(work, 16).unwrap())
}
