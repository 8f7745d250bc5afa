/*
 * Nano proof of work for OpenCL.
 *
 * value = blake2b-64(nonce as 8 little-endian bytes || 32-byte root), read little-endian; work is
 * valid iff value >= threshold. The message is one 128-byte block: word 0 is the nonce, words 1-4
 * the root (constant per job, passed as m1..m4), words 5-15 zero; byte counter t = 40, final-block
 * flag set. The result is H0 ^ v0 ^ v8.
 *
 * No private arrays, no table lookups and no branches inside the hash: the message schedule is
 * spelled out round by round with the eleven zero words left out (G0 is G with both message words
 * zero), and 64-bit rotate() throughout. Each work-item hashes LANES nonces at once in a vector
 * (set by the host from the device's preferred long vector width: 8 on PoCL with AVX-512, where
 * one ulong8 is one register and rotate() is one instruction; 1 on GPUs, which run work-items in
 * lanes already), and repeats that per_item times so that launch overhead is paid once for many
 * hashes. The scalar reference is dpow_protocol::blake2b::work_value_words; the host re-validates
 * every answer with it.
 */

#ifndef LANES
#define LANES 1
#endif

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)

#if LANES == 1
typedef ulong word;
typedef long mask;
/* Scalar comparisons give 0 or 1; select() wants the top bit set. */
#define MASK(c) ((mask)0 - (mask)(c))
#define ANY(m) ((m) != 0)
#define LANE_OFFSETS ((word)0)
#define STORE(v, p) ((p)[0] = (v))
#else
typedef CAT(ulong, LANES) word;
typedef CAT(long, LANES) mask;
/* Vector comparisons give -1 or 0 per lane already. */
#define MASK(c) (c)
#define ANY(m) any(m)
#define STORE(v, p) CAT(vstore, LANES)((v), 0, (p))
#if LANES == 2
#define LANE_OFFSETS ((word)(0, 1))
#elif LANES == 4
#define LANE_OFFSETS ((word)(0, 1, 2, 3))
#elif LANES == 8
#define LANE_OFFSETS ((word)(0, 1, 2, 3, 4, 5, 6, 7))
#elif LANES == 16
#define LANE_OFFSETS ((word)(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15))
#else
#error "LANES must be 1, 2, 4, 8 or 16"
#endif
#endif

#define IV0 0x6a09e667f3bcc908UL
#define IV1 0xbb67ae8584caa73bUL
#define IV2 0x3c6ef372fe94f82bUL
#define IV3 0xa54ff53a5f1d36f1UL
#define IV4 0x510e527fade682d1UL
#define IV5 0x9b05688c2b3e6c1fUL
#define IV6 0x1f83d9abfb41bd6bUL
#define IV7 0x5be0cd19137e2179UL
/* First state word after the parameter block: no key, 8-byte digest. */
#define H0 (IV0 ^ 0x01010008UL)

/* rotate() rotates left: a right rotation by n is a left rotation by 64 - n. */
#define ROTR(x, n) rotate((x), (word)(64 - (n)))

#define G(a, b, c, d, x, y)          \
    do {                             \
        a = a + b + (x);             \
        d = ROTR(d ^ a, 32);         \
        c = c + d;                   \
        b = ROTR(b ^ c, 24);         \
        a = a + b + (y);             \
        d = ROTR(d ^ a, 16);         \
        c = c + d;                   \
        b = ROTR(b ^ c, 63);         \
    } while (0)

/* G with both message words zero. */
#define G0(a, b, c, d)               \
    do {                             \
        a = a + b;                   \
        d = ROTR(d ^ a, 32);         \
        c = c + d;                   \
        b = ROTR(b ^ c, 24);         \
        a = a + b;                   \
        d = ROTR(d ^ a, 16);         \
        c = c + d;                   \
        b = ROTR(b ^ c, 63);         \
    } while (0)

/* The work values of the nonces m0 (one per lane) for the root words m1..m4. */
static inline word work_value(word m0, ulong m1, ulong m2, ulong m3, ulong m4)
{
    word v0 = H0, v1 = IV1, v2 = IV2, v3 = IV3;
    word v4 = IV4, v5 = IV5, v6 = IV6, v7 = IV7;
    word v8 = IV0, v9 = IV1, v10 = IV2, v11 = IV3;
    word v12 = IV4 ^ 40UL, v13 = IV5, v14 = ~IV6, v15 = IV7;

    /* round 0 */
    G(v0, v4, v8, v12, m0, m1); G(v1, v5, v9, v13, m2, m3); G(v2, v6, v10, v14, m4, 0); G0(v3, v7, v11, v15);
    G0(v0, v5, v10, v15); G0(v1, v6, v11, v12); G0(v2, v7, v8, v13); G0(v3, v4, v9, v14);
    /* round 1 */
    G0(v0, v4, v8, v12); G(v1, v5, v9, v13, m4, 0); G0(v2, v6, v10, v14); G0(v3, v7, v11, v15);
    G(v0, v5, v10, v15, m1, 0); G(v1, v6, v11, v12, m0, m2); G0(v2, v7, v8, v13); G(v3, v4, v9, v14, 0, m3);
    /* round 2 */
    G0(v0, v4, v8, v12); G(v1, v5, v9, v13, 0, m0); G(v2, v6, v10, v14, 0, m2); G0(v3, v7, v11, v15);
    G0(v0, v5, v10, v15); G(v1, v6, v11, v12, m3, 0); G(v2, v7, v8, v13, 0, m1); G(v3, v4, v9, v14, 0, m4);
    /* round 3 */
    G0(v0, v4, v8, v12); G(v1, v5, v9, v13, m3, m1); G0(v2, v6, v10, v14); G0(v3, v7, v11, v15);
    G(v0, v5, v10, v15, m2, 0); G0(v1, v6, v11, v12); G(v2, v7, v8, v13, m4, m0); G0(v3, v4, v9, v14);
    /* round 4 */
    G(v0, v4, v8, v12, 0, m0); G0(v1, v5, v9, v13); G(v2, v6, v10, v14, m2, m4); G0(v3, v7, v11, v15);
    G(v0, v5, v10, v15, 0, m1); G0(v1, v6, v11, v12); G0(v2, v7, v8, v13); G(v3, v4, v9, v14, m3, 0);
    /* round 5 */
    G(v0, v4, v8, v12, m2, 0); G0(v1, v5, v9, v13); G(v2, v6, v10, v14, m0, 0); G(v3, v7, v11, v15, 0, m3);
    G(v0, v5, v10, v15, m4, 0); G0(v1, v6, v11, v12); G0(v2, v7, v8, v13); G(v3, v4, v9, v14, m1, 0);
    /* round 6 */
    G0(v0, v4, v8, v12); G(v1, v5, v9, v13, m1, 0); G0(v2, v6, v10, v14); G(v3, v7, v11, v15, m4, 0);
    G(v0, v5, v10, v15, m0, 0); G(v1, v6, v11, v12, 0, m3); G(v2, v7, v8, v13, 0, m2); G0(v3, v4, v9, v14);
    /* round 7 */
    G0(v0, v4, v8, v12); G0(v1, v5, v9, v13); G(v2, v6, v10, v14, 0, m1); G(v3, v7, v11, v15, m3, 0);
    G(v0, v5, v10, v15, 0, m0); G(v1, v6, v11, v12, 0, m4); G0(v2, v7, v8, v13); G(v3, v4, v9, v14, m2, 0);
    /* round 8 */
    G0(v0, v4, v8, v12); G0(v1, v5, v9, v13); G(v2, v6, v10, v14, 0, m3); G(v3, v7, v11, v15, m0, 0);
    G(v0, v5, v10, v15, 0, m2); G0(v1, v6, v11, v12); G(v2, v7, v8, v13, m1, m4); G0(v3, v4, v9, v14);
    /* round 9 */
    G(v0, v4, v8, v12, 0, m2); G(v1, v5, v9, v13, 0, m4); G0(v2, v6, v10, v14); G(v3, v7, v11, v15, m1, 0);
    G0(v0, v5, v10, v15); G0(v1, v6, v11, v12); G(v2, v7, v8, v13, m3, 0); G(v3, v4, v9, v14, 0, m0);
    /* round 10 */
    G(v0, v4, v8, v12, m0, m1); G(v1, v5, v9, v13, m2, m3); G(v2, v6, v10, v14, m4, 0); G0(v3, v7, v11, v15);
    G0(v0, v5, v10, v15); G0(v1, v6, v11, v12); G0(v2, v7, v8, v13); G0(v3, v4, v9, v14);
    /* round 11: only v0 and v8 are read afterwards; the compiler drops the rest */
    G0(v0, v4, v8, v12); G(v1, v5, v9, v13, m4, 0); G0(v2, v6, v10, v14); G0(v3, v7, v11, v15);
    G(v0, v5, v10, v15, m1, 0); G(v1, v6, v11, v12, m0, m2); G0(v2, v7, v8, v13); G(v3, v4, v9, v14, 0, m3);

    return H0 ^ v0 ^ v8;
}

/*
 * Search the nonces start + [0, count). Work-item i, step j, lane l hashes the nonce at offset
 * (i * per_item + j) * LANES + l. A work-item with a hit takes the `found` flag with an atomic, and
 * the one that gets it writes its nonce to `result`; offsets past `count` are hashed (the launch
 * is rounded up) but never reported. The host clears `found` before each job and reads it after
 * each launch.
 *
 * Built with -D DPOW_FAULT_IGNORE_THRESHOLD (tests only) the kernel reports nonces whatever their
 * value: a broken device, for the host's re-validation to catch.
 */
__kernel void nano_work(const ulong start, const ulong count, const uint per_item,
                        const ulong r0, const ulong r1, const ulong r2, const ulong r3,
                        const ulong threshold,
                        __global volatile uint *found, __global ulong *result)
{
    const ulong first = (ulong)get_global_id(0) * (ulong)per_item * LANES;
    word hits = 0;
    mask any_hit = 0;
    for (uint j = 0; j < per_item; j++) {
        const word offset = (word)(first + (ulong)j * LANES) + LANE_OFFSETS;
        const word nonce = (word)start + offset;
        const word value = work_value(nonce, r0, r1, r2, r3);
#ifdef DPOW_FAULT_IGNORE_THRESHOLD
        (void)value;
        const mask ok = MASK(offset < (word)count);
#else
        const mask ok = MASK(offset < (word)count) & MASK(value >= (word)threshold);
#endif
        hits = select(hits, nonce, ok);
        any_hit |= ok;
    }
    if (ANY(any_hit)) {
        ulong lane_hits[LANES];
        long lane_any[LANES];
        STORE(hits, lane_hits);
        STORE(any_hit, lane_any);
        ulong hit = 0;
        for (int l = LANES - 1; l >= 0; l--) {
            hit = lane_any[l] ? lane_hits[l] : hit;
        }
        if (atomic_cmpxchg(found, 0u, 1u) == 0u) {
            *result = hit;
        }
    }
}
