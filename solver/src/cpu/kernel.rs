//! The hashing kernel: BLAKE2b specialised for one Nano work message, `L` nonces per step.
//!
//! The message is one 128-byte block whose word 0 is the nonce, words 1–4 the root and words
//! 5–15 zero, so the kernel
//! - never adds a zero message word (every message index is a compile-time constant and
//!   [`word`] folds away),
//! - computes the three column mixes of round 0 that do not see the nonce once per job
//!   ([`Job::new`]), and
//! - keeps only `v[0]` and `v[8]` of the last round; the compiler drops the dead work.
//!
//! [`hash`] is one scalar hash in a loop over `L` lanes. Instantiated inside a
//! `#[target_feature]` function (see `arch`), LLVM vectorises that loop with one lane per
//! vector element: one 512-bit register per state word under AVX-512 (with its native 64-bit
//! rotate), one 256-bit register under AVX2 (rotations by 32, 24 and 16 become byte shuffles).
//! Measured on a Xeon with AVX-512, this beat both a lane-array (`v[word][lane]`) form, which
//! LLVM unrolled into scalar code, and hand-written AVX2 intrinsics, which spilled more.

use dpow_protocol::blake2b::{H0, SIGMA, V0};

/// The per-job constants: the threshold, the root's message words and the precomputed part of
/// round 0.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Job {
    /// Values at or above this meet the job's difficulty.
    pub(crate) threshold: u64,
    root: [u64; 4],
    /// The state after round 0's column step for columns 1–3; for column 0 (indices 0, 4, 8,
    /// 12) the state before it, with `v[4]` already added into `v[0]`.
    pre: [u64; 16],
}

/// A message word, resolved at compile time from its index.
#[derive(Clone, Copy)]
enum Word {
    /// Word 0: the nonce.
    Nonce,
    /// Words 1–4: a root word.
    Root(usize),
    /// Words 5–15: zero, nothing to add.
    Zero,
}

/// Which message word index `i` is.
#[inline(always)]
const fn word(i: usize) -> Word {
    match i {
        0 => Word::Nonce,
        1..=4 => Word::Root(i - 1),
        _ => Word::Zero,
    }
}

/// `a + message word i`.
#[inline(always)]
fn add_word(a: u64, i: usize, nonce: u64, root: &[u64; 4]) -> u64 {
    match word(i) {
        Word::Nonce => a.wrapping_add(nonce),
        Word::Root(r) => a.wrapping_add(root[r]),
        Word::Zero => a,
    }
}

/// The G mix of words `(a, b, c, d)` with message indices `x` and `y`.
#[inline(always)]
fn g(
    v: &mut [u64; 16],
    nonce: u64,
    root: &[u64; 4],
    (a, b, c, d): (usize, usize, usize, usize),
    (x, y): (usize, usize),
) {
    v[a] = add_word(v[a].wrapping_add(v[b]), x, nonce, root);
    v[d] = (v[d] ^ v[a]).rotate_right(32);
    v[c] = v[c].wrapping_add(v[d]);
    v[b] = (v[b] ^ v[c]).rotate_right(24);
    v[a] = add_word(v[a].wrapping_add(v[b]), y, nonce, root);
    v[d] = (v[d] ^ v[a]).rotate_right(16);
    v[c] = v[c].wrapping_add(v[d]);
    v[b] = (v[b] ^ v[c]).rotate_right(63);
}

/// Round 0's schedule.
const S0: [usize; 16] = SIGMA[0];

impl Job {
    /// The constants for searching `root` (as message words) for values `>= threshold`.
    pub(crate) fn new(root: [u64; 4], threshold: u64) -> Self {
        let mut v = V0;
        // Columns 1–3 read message words 2–7: the root and zeros, never the nonce.
        g(&mut v, 0, &root, (1, 5, 9, 13), (S0[2], S0[3]));
        g(&mut v, 0, &root, (2, 6, 10, 14), (S0[4], S0[5]));
        g(&mut v, 0, &root, (3, 7, 11, 15), (S0[6], S0[7]));
        v[0] = v[0].wrapping_add(v[4]);
        Job {
            threshold,
            root,
            pre: v,
        }
    }
}

/// The diagonal half of a round with schedule `$s`.
macro_rules! diagonal {
    ($v:ident, $n:ident, $m:ident, $s:ident) => {{
        g(&mut $v, $n, $m, (0, 5, 10, 15), ($s[8], $s[9]));
        g(&mut $v, $n, $m, (1, 6, 11, 12), ($s[10], $s[11]));
        g(&mut $v, $n, $m, (2, 7, 8, 13), ($s[12], $s[13]));
        g(&mut $v, $n, $m, (3, 4, 9, 14), ($s[14], $s[15]));
    }};
}

/// Full rounds, each with its message schedule resolved at compile time.
macro_rules! rounds {
    ($v:ident, $n:ident, $m:ident; $($r:literal)*) => {$({
        const S: [usize; 16] = SIGMA[$r];
        g(&mut $v, $n, $m, (0, 4, 8, 12), (S[0], S[1]));
        g(&mut $v, $n, $m, (1, 5, 9, 13), (S[2], S[3]));
        g(&mut $v, $n, $m, (2, 6, 10, 14), (S[4], S[5]));
        g(&mut $v, $n, $m, (3, 7, 11, 15), (S[6], S[7]));
        diagonal!($v, $n, $m, S);
    })*};
}

/// The work value of one nonce.
#[inline(always)]
fn hash_one(job: &Job, nonce: u64) -> u64 {
    let root = &job.root;
    let mut v = job.pre;
    // Round 0, column 0: the only mix of round 0's column step that sees the nonce (its
    // first addition, `v[0] + v[4]`, is already in `pre[0]`).
    v[0] = v[0].wrapping_add(nonce);
    v[12] = (v[12] ^ v[0]).rotate_right(32);
    v[8] = v[8].wrapping_add(v[12]);
    v[4] = (v[4] ^ v[8]).rotate_right(24);
    v[0] = add_word(v[0].wrapping_add(v[4]), S0[1], nonce, root);
    v[12] = (v[12] ^ v[0]).rotate_right(16);
    v[8] = v[8].wrapping_add(v[12]);
    v[4] = (v[4] ^ v[8]).rotate_right(63);
    diagonal!(v, nonce, root, S0);
    rounds!(v, nonce, root; 1 2 3 4 5 6 7 8 9 10 11);
    H0 ^ v[0] ^ v[8]
}

/// The work values of nonces `base, base + 1, …, base + L − 1` (wrapping).
#[inline(always)]
pub(crate) fn hash<const L: usize>(job: &Job, base: u64) -> [u64; L] {
    let mut out = [0u64; L];
    for (l, value) in (0u64..).zip(out.iter_mut()) {
        *value = hash_one(job, base.wrapping_add(l));
    }
    out
}

/// The first nonce in `start .. start + count` (wrapping) whose value meets `threshold`,
/// hashing `L` nonces per step with `hash` (given the step's first nonce).
///
/// `hash` is an out-of-line function: inlined here, LLVM unrolls this loop many times over
/// and the code outgrows the instruction cache.
#[inline(always)]
pub(crate) fn search<const L: usize>(
    threshold: u64,
    start: u64,
    count: u64,
    mut hash: impl FnMut(u64) -> [u64; L],
) -> Option<u64> {
    let mut done = 0u64;
    while done < count {
        let base = start.wrapping_add(done);
        let values = hash(base);
        let mut any = false;
        for value in values {
            any |= value >= threshold;
        }
        let left = count - done;
        if any {
            for (l, value) in (0u64..).zip(values) {
                if l < left && value >= threshold {
                    return Some(base.wrapping_add(l));
                }
            }
        }
        if left <= L as u64 {
            break;
        }
        done += L as u64;
    }
    None
}

/// The work values of nonces `start, start + 1, …` (wrapping), one per element of `out`,
/// `L` at a time with `hash`.
#[inline(always)]
pub(crate) fn values<const L: usize>(
    start: u64,
    out: &mut [u64],
    mut hash: impl FnMut(u64) -> [u64; L],
) {
    let mut base = start;
    for chunk in out.chunks_mut(L) {
        let values = hash(base);
        chunk.copy_from_slice(&values[..chunk.len()]);
        base = base.wrapping_add(L as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dpow_protocol::blake2b::work_value_words;

    #[test]
    fn matches_the_reference_for_every_lane_width() {
        let root = [0x0123_4567_89ab_cdef, u64::MAX, 0, 0x8000_0000_0000_0001];
        let job = Job::new(root, 0);
        let start = u64::MAX - 5; // wraps inside the first steps
        let want: Vec<u64> = (0..37)
            .map(|i| work_value_words(start.wrapping_add(i), &root))
            .collect();
        for got in [
            run::<1>(&job, start),
            run::<2>(&job, start),
            run::<4>(&job, start),
            run::<8>(&job, start),
            run::<16>(&job, start),
        ] {
            assert_eq!(got, want);
        }
    }

    fn run<const L: usize>(job: &Job, start: u64) -> Vec<u64> {
        let mut out = vec![0; 37];
        values::<L>(start, &mut out, |base| hash::<L>(job, base));
        out
    }

    #[test]
    fn search_finds_the_first_hit_and_respects_count() {
        let root = [1, 2, 3, 4];
        let start = 1000;
        let vals: Vec<u64> = (0..64)
            .map(|i| work_value_words(start + i, &root))
            .collect();
        // A threshold met by the 10th nonce (and possibly earlier ones).
        let t = vals[9];
        let job = Job::new(root, t);
        let first = (0..64).find(|&i| vals[i as usize] >= t).map(|i| start + i);
        let h8 = |base| hash::<8>(&job, base);
        assert_eq!(search(t, start, 64, h8), first);
        assert_eq!(search(t, start, 64, |base| hash::<1>(&job, base)), first);
        // A count that stops before the hit finds nothing past it.
        let before = first.expect("hit") - start;
        assert_eq!(search(t, start, before, h8), None);
        assert_eq!(search(t, start, before, |base| hash::<4>(&job, base)), None);
        assert_eq!(search(t, start, 0, h8), None);
    }
}
