//! `PreparedKey` (tables, no decompression of R, batched encoding) must accept exactly what
//! `PublicKey::verify` (ed25519-dalek's `verify_strict`) accepts: honest signatures, tampered
//! ones, and the edge cases where ed25519 implementations are known to disagree (keys and R of
//! small order, keys and R with a torsion component, scalars not reduced, R encoded the
//! non-canonical way).

#![allow(non_snake_case)]

use curve25519_dalek::constants::EIGHT_TORSION;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use dpow_keys::{PreparedKey, PublicKey, SecretKey, Signature};
use proptest::prelude::*;
use sha2::{Digest, Sha512};

/// What the reference and the prepared key say of one signature; they must say the same.
fn both(key: &PublicKey, msg: &[u8], sig: &Signature) -> bool {
    let reference = key.verify(msg, sig).is_ok();
    let prepared = key.prepare().map(|p| p.verify(msg, sig).is_ok());
    // A key that does not decompress can be neither prepared nor checked.
    assert_eq!(
        prepared.unwrap_or(false),
        reference,
        "verify_strict says {reference}, the prepared key says otherwise (key {key:?})"
    );
    reference
}

fn k_of(R: &[u8; 32], A: &[u8; 32], msg: &[u8]) -> Scalar {
    let mut h = Sha512::new();
    h.update(R);
    h.update(A);
    h.update(msg);
    Scalar::from_bytes_mod_order_wide(&h.finalize().into())
}

fn scalar(seed: u8, salt: &[u8]) -> Scalar {
    let mut h = Sha512::new();
    h.update([seed]);
    h.update(salt);
    Scalar::from_bytes_mod_order_wide(&h.finalize().into())
}

/// A signature made by hand: key `[a]B + Ta`, nonce point `[r]B + Tr`, `s = r + k·a`, so the
/// cofactorless equation holds exactly when `Tr = −[k]Ta`.
fn forged(
    A: EdwardsPoint,
    R: EdwardsPoint,
    r: Scalar,
    a: Scalar,
    msg: &[u8],
) -> (PublicKey, Signature) {
    forged_bytes(A.compress(), R.compress(), r, a, msg)
}

fn forged_bytes(
    A: CompressedEdwardsY,
    R: CompressedEdwardsY,
    r: Scalar,
    a: Scalar,
    msg: &[u8],
) -> (PublicKey, Signature) {
    let k = k_of(R.as_bytes(), A.as_bytes(), msg);
    let s = r + k * a;
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(R.as_bytes());
    sig[32..].copy_from_slice(s.as_bytes());
    (PublicKey(A.to_bytes()), Signature(sig))
}

/// Key `[a]B` and a signature with `R` given as bytes and `s = k·a`, so `[s]B − [k]A` is the
/// identity whatever `R` is.
fn balanced_to_identity(R: [u8; 32], a: Scalar, msg: &[u8]) -> (PublicKey, Signature) {
    let A = EdwardsPoint::mul_base(&a).compress();
    let s = k_of(&R, A.as_bytes(), msg) * a;
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(&R);
    sig[32..].copy_from_slice(s.as_bytes());
    (PublicKey(A.to_bytes()), Signature(sig))
}

#[test]
fn honest_signatures_verify_both_ways_and_a_changed_byte_fails_both_ways() {
    let key = SecretKey::from_seed([3; 32]);
    let msg = b"a receipt's signing input";
    let sig = key.sign(msg);
    assert!(both(&key.public(), msg, &sig));
    for i in 0..64 {
        for bit in [0x01u8, 0x80] {
            let mut bad = sig;
            bad.0[i] ^= bit;
            assert!(!both(&key.public(), msg, &bad), "byte {i} bit {bit:#x}");
        }
    }
    assert!(!both(&key.public(), b"another message", &sig));
}

#[test]
fn keys_of_small_order_are_refused_even_with_a_signature_that_balances() {
    for (i, T) in EIGHT_TORSION.iter().enumerate() {
        // A = T: [s]B − [k]T = R holds with R = [r]B − [k]T; find r giving that R's own k.
        let r = scalar(i as u8, b"nonce");
        let msg = b"weak key";
        let A = T.compress();
        // s = r and R = [r]B: the equation holds whenever [k]T is the identity (T of order
        // dividing k); whether it holds or not, a weak key is refused.
        let (key, sig) = forged_bytes(
            A,
            EdwardsPoint::mul_base(&r).compress(),
            r,
            Scalar::ZERO,
            msg,
        );
        assert!(!both(&key, msg, &sig), "torsion point {i}");
    }
}

#[test]
fn a_nonce_point_of_small_order_is_refused() {
    // R = identity with s = k·a balances exactly: refused for R's order alone.
    let a = scalar(1, b"key");
    let msg = b"small R";
    for T in EIGHT_TORSION.iter() {
        // [s]B − [k]A = identity, equal to R only when T is the identity.
        let (key, sig) = balanced_to_identity(T.compress().to_bytes(), a, msg);
        assert!(!both(&key, msg, &sig));
    }
}

#[test]
fn mixed_order_keys_follow_the_cofactorless_equation_exactly() {
    // A = [a]B + T with T of order 8: verify_strict accepts a signature iff [s]B − [k]A = R
    // exactly, torsion included. Signatures made to balance must pass both ways, those that
    // balance only up to torsion (as a cofactored check would take) must fail both ways.
    let T = EIGHT_TORSION[1];
    let a = scalar(2, b"key");
    let A = EdwardsPoint::mul_base(&a) + T;
    let msg = b"mixed key";
    let (mut accepted, mut refused) = (0, 0);
    for n in 0..64u8 {
        let r = scalar(n, b"nonce");
        // Guess k mod 8 = g, build R = [r]B − [g]T; it balances iff the guess was right.
        let g = n % 8;
        let R = EdwardsPoint::mul_base(&r) - T * Scalar::from(g);
        let (key, sig) = forged(A, R, r, a, msg);
        let k = k_of(R.compress().as_bytes(), A.compress().as_bytes(), msg);
        let balances = k.as_bytes()[0] % 8 == g;
        let ok = both(&key, msg, &sig);
        assert_eq!(ok, balances, "nonce {n}");
        if ok { accepted += 1 } else { refused += 1 }
    }
    assert!(
        accepted > 0 && refused > 0,
        "{accepted} accepted, {refused} refused"
    );
}

#[test]
fn a_nonce_point_with_a_torsion_component_balances_or_not_as_the_reference_says() {
    // An honest key, R = [r]B + T: the equation cannot balance (the left side has no torsion).
    let a = scalar(4, b"key");
    let A = EdwardsPoint::mul_base(&a);
    let msg = b"mixed R";
    for (i, T) in EIGHT_TORSION.iter().enumerate() {
        let r = scalar(i as u8, b"mixed nonce");
        let (key, sig) = forged(A, EdwardsPoint::mul_base(&r) + T, r, a, msg);
        assert_eq!(both(&key, msg, &sig), i == 0, "torsion point {i}");
    }
}

#[test]
fn a_scalar_not_reduced_is_refused() {
    let key = SecretKey::from_seed([5; 32]);
    let msg = b"malleable?";
    let sig = key.sign(msg);
    // s + ℓ, which the equation would accept, is refused as not canonical.
    let l: [u8; 32] = {
        let mut l = [0u8; 32];
        l[..16].copy_from_slice(&0x14def9dea2f79cd65812631a5cf5d3edu128.to_le_bytes());
        l[31] = 0x10;
        l
    };
    let mut s = [0u8; 32];
    s.copy_from_slice(&sig.0[32..]);
    let mut carry = 0u16;
    let mut sum = [0u8; 32];
    for i in 0..32 {
        let v = u16::from(s[i]) + u16::from(l[i]) + carry;
        sum[i] = v as u8;
        carry = v >> 8;
    }
    assert_eq!(carry, 0, "s + ℓ fits 32 bytes");
    let mut bad = sig;
    bad.0[32..].copy_from_slice(&sum);
    assert!(!both(&key.public(), msg, &bad));
}

#[test]
fn a_nonce_point_encoded_the_non_canonical_way_is_refused() {
    // The identity (y = 1) also encodes as y = 1 + p; a signature balancing to the identity
    // with that encoding is refused both ways, as is the identity with its sign bit set.
    let a = scalar(6, b"key");
    let msg = b"non-canonical R";
    let mut one_plus_p = [0xffu8; 32];
    one_plus_p[0] = 0xee; // p = 2^255 − 19, so 1 + p = 2^255 − 18
    one_plus_p[31] = 0x7f;
    let mut signed_one = [0u8; 32];
    signed_one[0] = 1;
    signed_one[31] = 0x80;
    for R in [one_plus_p, signed_one] {
        let (key, sig) = balanced_to_identity(R, a, msg);
        assert!(!both(&key, msg, &sig));
    }
}

#[test]
fn a_batch_fails_at_its_first_bad_signature_and_passes_when_all_verify() {
    let keys: Vec<SecretKey> = (0..4u8)
        .map(|i| SecretKey::from_seed([i + 10; 32]))
        .collect();
    let prepared: Vec<PreparedKey> = keys
        .iter()
        .map(|k| k.public().prepare().expect("a valid key"))
        .collect();
    let msgs: Vec<Vec<u8>> = (0..12u8).map(|i| vec![i; 100 + usize::from(i)]).collect();
    let sigs: Vec<Signature> = msgs
        .iter()
        .enumerate()
        .map(|(i, m)| keys[i % 4].sign(m))
        .collect();
    fn checks<'a>(
        prepared: &'a [PreparedKey],
        msgs: &'a [Vec<u8>],
        sigs: &'a [Signature],
    ) -> Vec<(&'a PreparedKey, &'a [u8], &'a Signature)> {
        (0..12)
            .map(|i| (&prepared[i % 4], &msgs[i][..], &sigs[i]))
            .collect()
    }
    let good = sigs.clone();
    assert_eq!(
        PreparedKey::verify_all(&checks(&prepared, &msgs, &good)),
        Ok(())
    );
    assert_eq!(PreparedKey::verify_all(&[]), Ok(()));
    for (first, second) in [(0, 11), (5, 7), (11, 11), (3, 9)] {
        let mut bad = sigs.clone();
        bad[first].0[0] ^= 1; // R changed: found when the points are encoded
        bad[second].0[63] |= 0xf0; // s not canonical: refused before its point is computed
        assert_eq!(
            PreparedKey::verify_all(&checks(&prepared, &msgs, &bad)),
            Err(first.min(second))
        );
    }
    // Signed by another key than the one checked.
    let mut swapped = checks(&prepared, &msgs, &good);
    swapped[6].0 = &prepared[0];
    assert_eq!(PreparedKey::verify_all(&swapped), Err(6));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_changed_signature_or_message_gets_the_same_answer(
        seed in any::<[u8; 32]>(),
        msg in proptest::collection::vec(any::<u8>(), 0..300),
        flip in proptest::option::of((0usize..64, any::<u8>())),
        garbage in proptest::option::of(proptest::collection::vec(any::<u8>(), 64)),
        tail in proptest::option::of(any::<u8>()),
    ) {
        let key = SecretKey::from_seed(seed);
        let mut sig = key.sign(&msg);
        if let Some((i, x)) = flip {
            sig.0[i] ^= x;
        }
        if let Some(g) = garbage {
            sig.0.copy_from_slice(&g);
        }
        let mut msg = msg;
        if let Some(t) = tail {
            msg.push(t);
        }
        both(&key.public(), &msg, &sig);
    }

    #[test]
    fn any_key_bytes_get_the_same_answer(key in any::<[u8; 32]>(), sig in proptest::collection::vec(any::<u8>(), 64)) {
        let mut s = [0u8; 64];
        s.copy_from_slice(&sig);
        both(&PublicKey(key), b"m", &Signature(s));
    }
}
