//! dpow's WebAssembly kernel: Nano proof of work in a browser, two nonces per 128-bit vector.
//!
//! Built by `node/build.rs` with Debian's rustc 1.63 (the only toolchain with a wasm32 std
//! on the build machines), so this file stands alone: `no_std`, no crates, 1.63 syntax.
//!
//! ```text
//! /usr/bin/rustc --edition 2021 --crate-type cdylib --target wasm32-unknown-unknown \
//!     -C opt-level=3 -C panic=abort -C target-feature=+simd128 wasm/kernel.rs
//! ```
//!
//! Nano's work value is the 8-byte BLAKE2b digest (no key) of `nonce (8 bytes LE) || root`,
//! read as a little-endian u64; a nonce is valid when its value is at least the threshold.
//! The message is one 128-byte block: word 0 the nonce, words 1–4 the root, words 5–15 zero.
//! The kernel uses that shape:
//! - zero message words are never added: each message index is a constant and [`msg`]
//!   resolves it when the round is inlined;
//! - the three column mixes of round 0 that do not read the nonce are computed once per call
//!   in scalar code and splatted;
//! - of the last round only `v[0]` and `v[8]` are kept (LLVM drops the rest).
//!
//! A `v128` holds two u64 lanes, one nonce each. The hash is generic over `L` vectors run
//! side by side: `search` uses one, `search2` two interleaved (more independent work
//! between the long add–xor–rotate chains, but 32 live vectors where x86-64 has 16
//! registers); docs/browser.md has the measurements.
//!
//! Exports (the C ABI; u64s as two u32 halves, low first, so that JS needs no BigInt):
//! - `io_ptr() -> *mut u8`: a 64-byte buffer; JS writes the 32-byte root at offset 0.
//! - `search(root_ptr, thr_lo, thr_hi, start_lo, start_hi, count) -> u32`: 1 when a nonce in
//!   `start .. start + count` (wrapping; `count` rounded up to whole steps) meets the
//!   threshold, the first such nonce then written at `io_ptr() + 32` (8 bytes LE); 0 if none.
//! - `work_value(root_ptr, nonce_lo, nonce_hi)`: the work value of one nonce, computed by a
//!   plain scalar BLAKE2b, written at `io_ptr() + 40` (8 bytes LE). For checks.
//! - `search2(...)`: the same, four nonces (two vectors) per step.
//! - `step() -> u32`: how many nonces one step of `search` hashes.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]

use core::arch::wasm32::{
    i32x4_shuffle, i8x16_swizzle, u64x2, u64x2_add, u64x2_extract_lane, u64x2_shr, u64x2_splat,
    u8x16, v128, v128_or, v128_xor,
};

/// BLAKE2b's initialisation vector.
const IV: [u64; 8] = [
    0x6a09_e667_f3bc_c908,
    0xbb67_ae85_84ca_a73b,
    0x3c6e_f372_fe94_f82b,
    0xa54f_f53a_5f1d_36f1,
    0x510e_527f_ade6_82d1,
    0x9b05_688c_2b3e_6c1f,
    0x1f83_d9ab_fb41_bd6b,
    0x5be0_cd19_137e_2179,
];

/// The chaining value's first word for an 8-byte digest with no key: the parameter block
/// (digest length 8, fanout 1, depth 1) xored into IV[0].
const H0: u64 = IV[0] ^ 0x0101_0008;

/// The message schedule of each of the 12 rounds (rounds 10 and 11 repeat 0 and 1).
const SIGMA: [[usize; 16]; 12] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
    [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
    [11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4],
    [7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8],
    [9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13],
    [2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9],
    [12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11],
    [13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10],
    [6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5],
    [10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0],
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
    [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
];

/// The state before the first round: the chaining value, then the IV with the byte count
/// (40: the nonce and the root) in word 12 and the last-block flag in word 14.
const START: [u64; 16] = [
    H0,
    IV[1],
    IV[2],
    IV[3],
    IV[4],
    IV[5],
    IV[6],
    IV[7],
    IV[0],
    IV[1],
    IV[2],
    IV[3],
    IV[4] ^ 40,
    IV[5],
    IV[6] ^ !0,
    IV[7],
];

/// The buffer JS and the kernel share: the root at 0, a found nonce at 32, a value at 40.
static mut IO: [u8; 64] = [0; 64];

// ---------------------------------------------------------------------------------------
// Scalar BLAKE2b: the reference for `work_value` and the per-call precomputation.
// ---------------------------------------------------------------------------------------

/// Message word `i` of a work message (0 the nonce, 1–4 the root, the rest zero).
#[inline(always)]
fn msg_scalar(i: usize, nonce: u64, root: &[u64; 4]) -> u64 {
    match i {
        0 => nonce,
        1..=4 => root[i - 1],
        _ => 0,
    }
}

/// The scalar G mix of state words `a, b, c, d` with message words `x`, `y`.
#[inline(always)]
fn mix(v: &mut [u64; 16], a: usize, b: usize, c: usize, d: usize, x: u64, y: u64) {
    v[a] = v[a].wrapping_add(v[b]).wrapping_add(x);
    v[d] = (v[d] ^ v[a]).rotate_right(32);
    v[c] = v[c].wrapping_add(v[d]);
    v[b] = (v[b] ^ v[c]).rotate_right(24);
    v[a] = v[a].wrapping_add(v[b]).wrapping_add(y);
    v[d] = (v[d] ^ v[a]).rotate_right(16);
    v[c] = v[c].wrapping_add(v[d]);
    v[b] = (v[b] ^ v[c]).rotate_right(63);
}

/// The work value of `nonce` for `root`, by the textbook algorithm.
fn value_scalar(root: &[u64; 4], nonce: u64) -> u64 {
    let mut v = START;
    for s in SIGMA.iter() {
        let m = |i: usize| msg_scalar(s[i], nonce, root);
        mix(&mut v, 0, 4, 8, 12, m(0), m(1));
        mix(&mut v, 1, 5, 9, 13, m(2), m(3));
        mix(&mut v, 2, 6, 10, 14, m(4), m(5));
        mix(&mut v, 3, 7, 11, 15, m(6), m(7));
        mix(&mut v, 0, 5, 10, 15, m(8), m(9));
        mix(&mut v, 1, 6, 11, 12, m(10), m(11));
        mix(&mut v, 2, 7, 8, 13, m(12), m(13));
        mix(&mut v, 3, 4, 9, 14, m(14), m(15));
    }
    H0 ^ v[0] ^ v[8]
}

// ---------------------------------------------------------------------------------------
// The vector kernel: `[v128; L]` per state word, two nonces per v128.
// ---------------------------------------------------------------------------------------

/// One state word across a step's `L` vectors.
type W<const L: usize> = [v128; L];

/// The message words a step needs: the nonces (one per lane) and the root, splatted.
struct Msg<const L: usize> {
    nonce: W<L>,
    root: [v128; 4],
}

#[inline(always)]
fn add<const L: usize>(a: W<L>, b: W<L>) -> W<L> {
    let mut r = a;
    for k in 0..L {
        r[k] = u64x2_add(a[k], b[k]);
    }
    r
}

#[inline(always)]
fn add1<const L: usize>(a: W<L>, b: v128) -> W<L> {
    let mut r = a;
    for k in 0..L {
        r[k] = u64x2_add(a[k], b);
    }
    r
}

/// `a + message word i`; the zero words add nothing. `i` is a constant after inlining.
#[inline(always)]
fn msg<const L: usize>(a: W<L>, i: usize, m: &Msg<L>) -> W<L> {
    match i {
        0 => add(a, m.nonce),
        1..=4 => add1(a, m.root[i - 1]),
        _ => a,
    }
}

/// Byte tables for `i8x16_swizzle`: each u64 lane rotated right by 24 and by 16 bits.
const ROT24: v128 = u8x16(3, 4, 5, 6, 7, 0, 1, 2, 11, 12, 13, 14, 15, 8, 9, 10);
const ROT16: v128 = u8x16(2, 3, 4, 5, 6, 7, 0, 1, 10, 11, 12, 13, 14, 15, 8, 9);

/// `(d ^ a) >>> n` for the four rotations BLAKE2b uses. The 32-bit one swaps the u32 halves
/// (it gained nothing as a swizzle); the 24- and 16-bit ones are byte swizzles through a
/// constant table, with which V8 runs the whole hash about a fifth faster than with the
/// same rotations written as `i8x16_shuffle` (Chromium 156 and Node.js 20; docs/browser.md).
#[inline(always)]
fn xor_rot<const N: u32, const L: usize>(d: W<L>, a: W<L>) -> W<L> {
    let mut r = d;
    for k in 0..L {
        let x = v128_xor(d[k], a[k]);
        r[k] = match N {
            32 => i32x4_shuffle::<1, 0, 3, 2>(x, x),
            24 => i8x16_swizzle(x, ROT24),
            16 => i8x16_swizzle(x, ROT16),
            // 63: a left rotation by one.
            _ => v128_or(u64x2_add(x, x), u64x2_shr(x, 63)),
        };
    }
    r
}

/// The vector G mix with message indices `x` and `y`.
#[inline(always)]
fn g<const L: usize>(
    v: &mut [W<L>; 16],
    m: &Msg<L>,
    (a, b, c, d): (usize, usize, usize, usize),
    x: usize,
    y: usize,
) {
    v[a] = msg(add(v[a], v[b]), x, m);
    v[d] = xor_rot::<32, L>(v[d], v[a]);
    v[c] = add(v[c], v[d]);
    v[b] = xor_rot::<24, L>(v[b], v[c]);
    v[a] = msg(add(v[a], v[b]), y, m);
    v[d] = xor_rot::<16, L>(v[d], v[a]);
    v[c] = add(v[c], v[d]);
    v[b] = xor_rot::<63, L>(v[b], v[c]);
}

/// The diagonal half of a round with schedule `s`.
#[inline(always)]
fn diagonal<const L: usize>(v: &mut [W<L>; 16], m: &Msg<L>, s: &[usize; 16]) {
    g(v, m, (0, 5, 10, 15), s[8], s[9]);
    g(v, m, (1, 6, 11, 12), s[10], s[11]);
    g(v, m, (2, 7, 8, 13), s[12], s[13]);
    g(v, m, (3, 4, 9, 14), s[14], s[15]);
}

/// Round `R` in full (for rounds 1–11).
#[inline(always)]
fn round<const R: usize, const L: usize>(v: &mut [W<L>; 16], m: &Msg<L>) {
    let s = &SIGMA[R];
    g(v, m, (0, 4, 8, 12), s[0], s[1]);
    g(v, m, (1, 5, 9, 13), s[2], s[3]);
    g(v, m, (2, 6, 10, 14), s[4], s[5]);
    g(v, m, (3, 7, 11, 15), s[6], s[7]);
    diagonal(v, m, s);
}

/// The per-call constants: the state after round 0's nonce-free column mixes (columns 1–3),
/// with `v[0] + v[4]` already summed for column 0.
fn precompute(root: &[u64; 4]) -> [u64; 16] {
    let mut v = START;
    let m = |i: usize| msg_scalar(i, 0, root);
    mix(&mut v, 1, 5, 9, 13, m(2), m(3));
    mix(&mut v, 2, 6, 10, 14, m(4), m(5));
    mix(&mut v, 3, 7, 11, 15, m(6), m(7));
    v[0] = v[0].wrapping_add(v[4]);
    v
}

/// The work values of the step whose nonces are `m.nonce`, from the precomputed state.
#[inline(always)]
fn hash_step<const L: usize>(pre: &[v128; 16], m: &Msg<L>) -> W<L> {
    let mut v = [[u64x2_splat(0); L]; 16];
    for (w, p) in v.iter_mut().zip(pre.iter()) {
        *w = [*p; L];
    }
    // Round 0, column 0, whose first sum `v[0] + v[4]` is precomputed: add the nonce.
    v[0] = add(v[0], m.nonce);
    v[12] = xor_rot::<32, L>(v[12], v[0]);
    v[8] = add(v[8], v[12]);
    v[4] = xor_rot::<24, L>(v[4], v[8]);
    v[0] = msg(add(v[0], v[4]), 1, m);
    v[12] = xor_rot::<16, L>(v[12], v[0]);
    v[8] = add(v[8], v[12]);
    v[4] = xor_rot::<63, L>(v[4], v[8]);
    diagonal(&mut v, m, &SIGMA[0]);
    round::<1, L>(&mut v, m);
    round::<2, L>(&mut v, m);
    round::<3, L>(&mut v, m);
    round::<4, L>(&mut v, m);
    round::<5, L>(&mut v, m);
    round::<6, L>(&mut v, m);
    round::<7, L>(&mut v, m);
    round::<8, L>(&mut v, m);
    round::<9, L>(&mut v, m);
    round::<10, L>(&mut v, m);
    round::<11, L>(&mut v, m);
    let h = u64x2_splat(H0);
    let mut out = v[0];
    for k in 0..L {
        out[k] = v128_xor(h, v128_xor(v[0][k], v[8][k]));
    }
    out
}

/// The root's four message words from 32 bytes at `p`.
///
/// # Safety
/// `p` must point to 32 readable bytes of the module's memory.
unsafe fn read_root(p: *const u8) -> [u64; 4] {
    let mut root = [0u64; 4];
    for (i, w) in root.iter_mut().enumerate() {
        let mut b = [0u8; 8];
        for (j, byte) in b.iter_mut().enumerate() {
            *byte = unsafe { *p.add(8 * i + j) };
        }
        *w = u64::from_le_bytes(b);
    }
    root
}

fn join(lo: u32, hi: u32) -> u64 {
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Write `x` (8 bytes LE) into the shared buffer at `at`.
fn put(at: usize, x: u64) {
    let bytes = x.to_le_bytes();
    // SAFETY: wasm modules run single-threaded here (one instance per worker, no shared
    // memory), and `at + 8 <= 64`.
    unsafe {
        let io = &mut *core::ptr::addr_of_mut!(IO);
        io[at..at + 8].copy_from_slice(&bytes);
    }
}

/// The shared 64-byte buffer (root at 0, found nonce at 32, value at 40).
#[no_mangle]
pub extern "C" fn io_ptr() -> *mut u8 {
    // SAFETY: only the address is taken.
    unsafe { core::ptr::addr_of_mut!(IO) as *mut u8 }
}

/// Nonces hashed per step of [`search`] (one vector: 2).
#[no_mangle]
pub extern "C" fn step() -> u32 {
    2
}

/// Search `count` nonces from `start` (rounded up to whole steps, wrapping) for the first
/// whose work value for the root at `root_ptr` is at least the threshold; 1 and the nonce at
/// `io_ptr() + 32` if found, else 0. One vector (two nonces) per step: in V8 on x86-64 a
/// state of 16 vectors fits the 16 SIMD registers, and it is as fast as [`search2`].
///
/// # Safety
/// `root_ptr` must point to 32 bytes inside the module's memory.
#[no_mangle]
pub unsafe extern "C" fn search(
    root_ptr: *const u8,
    thr_lo: u32,
    thr_hi: u32,
    start_lo: u32,
    start_hi: u32,
    count: u32,
) -> u32 {
    let root = unsafe { read_root(root_ptr) };
    search_n::<1>(&root, join(thr_lo, thr_hi), join(start_lo, start_hi), count)
}

/// [`search`] with two vectors (four nonces) interleaved per step, kept for measuring
/// against it (docs/browser.md).
///
/// # Safety
/// `root_ptr` must point to 32 bytes inside the module's memory.
#[no_mangle]
pub unsafe extern "C" fn search2(
    root_ptr: *const u8,
    thr_lo: u32,
    thr_hi: u32,
    start_lo: u32,
    start_hi: u32,
    count: u32,
) -> u32 {
    let root = unsafe { read_root(root_ptr) };
    search_n::<2>(&root, join(thr_lo, thr_hi), join(start_lo, start_hi), count)
}

/// The search loop, `L` vectors (`2 L` nonces) per step.
#[inline(always)]
fn search_n<const L: usize>(root: &[u64; 4], threshold: u64, start: u64, count: u32) -> u32 {
    let pre_s = precompute(root);
    let mut pre = [u64x2_splat(0); 16];
    for (p, s) in pre.iter_mut().zip(pre_s.iter()) {
        *p = u64x2_splat(*s);
    }
    let mut rootv = [u64x2_splat(0); 4];
    for (r, w) in rootv.iter_mut().zip(root.iter()) {
        *r = u64x2_splat(*w);
    }
    let step = 2 * L as u32;
    let steps = (count + step - 1) / step;
    let mut base = start;
    for _ in 0..steps {
        let mut nonce = [u64x2_splat(0); L];
        for (k, n) in nonce.iter_mut().enumerate() {
            *n = u64x2_add(u64x2_splat(base.wrapping_add(2 * k as u64)), LANE_OFFSETS);
        }
        let m = Msg { nonce, root: rootv };
        let values = hash_step(&pre, &m);
        let mut hit = false;
        for v in values.iter() {
            hit |= u64x2_extract_lane::<0>(*v) >= threshold;
            hit |= u64x2_extract_lane::<1>(*v) >= threshold;
        }
        if hit {
            for (k, v) in values.iter().enumerate() {
                let lanes = [u64x2_extract_lane::<0>(*v), u64x2_extract_lane::<1>(*v)];
                for (l, value) in lanes.iter().enumerate() {
                    if *value >= threshold {
                        put(32, base.wrapping_add((2 * k + l) as u64));
                        return 1;
                    }
                }
            }
        }
        base = base.wrapping_add(u64::from(step));
    }
    0
}

/// The offsets of a vector's two lanes: nonces `b` and `b + 1`.
const LANE_OFFSETS: v128 = u64x2(0, 1);

/// The work value of `nonce` for the root at `root_ptr`, by scalar BLAKE2b, written at
/// `io_ptr() + 40`.
///
/// # Safety
/// `root_ptr` must point to 32 bytes inside the module's memory.
#[no_mangle]
pub unsafe extern "C" fn work_value(root_ptr: *const u8, nonce_lo: u32, nonce_hi: u32) {
    let root = unsafe { read_root(root_ptr) };
    put(40, value_scalar(&root, join(nonce_lo, nonce_hi)));
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}
