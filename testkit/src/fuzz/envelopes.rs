//! Harnesses for the signed envelopes, one per message kind: the decoder and the validator's
//! check the node runs on gossip, against the [fixture](super::fixture).
//!
//! Properties of every accepted envelope ([`accepted`]): it is exactly the bytes it came in,
//! within its kind's size limit, the current version and its own kind; its payload re-encodes to the bytes
//! signed and decodes back to itself; its structural rules hold; its signature verifies over
//! the signing input built here; its id is the blake2b-256 of that input. A refused envelope
//! gets the same reason from the validator as [`RejectReason::of`] its decoding error.

use std::fmt::Debug;

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use dpow_keys::Signature;
use dpow_protocol::ledger::{Ingested, Ledger, LedgerError};
use dpow_protocol::registry::{Registry, RegistryError};
use dpow_protocol::validate::{
    RejectReason, Rejected, STATUS_MAX_AGE_MS, Validator, peek_request_id,
};
use dpow_protocol::{
    Checkpoint, Credits, Message, PROTOCOL_VERSION, ProtocolError, Receipt, RegistryEntry, Signed,
    WorkCancel, WorkRequest, WorkResult, WorkerStatus, codec,
};

use super::fixture::fixture;
use crate::builders::{self, NOW, key, sign};
use crate::reference;

/// The signing input of a `T` whose payload encodes to `payload`: `dpow/2/` ‖ network id ‖
/// domain ‖ 0 ‖ payload (docs/wire-protocol.md), built here apart from the protocol crate's
/// own, for the builders' network [`builders::NET`].
fn signing_input<T: Message>(payload: &[u8]) -> Vec<u8> {
    let mut input = b"dpow/2/".to_vec();
    input.extend_from_slice(&builders::NET.0);
    input.extend_from_slice(T::KIND.domain().as_bytes());
    input.push(0);
    input.extend_from_slice(payload);
    input
}

/// Assert the properties of an envelope the decoder accepted from `bytes`.
pub(super) fn accepted<T: Message + PartialEq + Debug>(s: &Signed<T>, bytes: &[u8]) {
    assert_eq!(
        s.bytes(),
        bytes,
        "an accepted envelope is the bytes it came in"
    );
    assert!(bytes.len() <= T::MAX_BYTES, "over the size limit");
    assert!(bytes.len() > 66);
    assert_eq!(bytes[0], PROTOCOL_VERSION);
    assert_eq!(bytes[1], T::KIND as u8);
    let payload = codec::encode(s.payload(), "fuzz").unwrap();
    let back: T = dpow_protocol::envelope::decode_payload(&payload, &builders::NET).unwrap();
    assert_eq!(&back, s.payload(), "the payload round-trips");
    let (head, sig) = bytes.split_at(bytes.len() - 64);
    assert!(
        head.ends_with(&payload),
        "the payload signed is the payload decoded"
    );
    s.payload()
        .check()
        .expect("an accepted payload keeps its structural rules");
    let input = signing_input::<T>(&payload);
    let sig = Signature(sig.try_into().unwrap());
    s.signer()
        .verify(&input, &sig)
        .expect("an accepted envelope's signature verifies");
    let id: [u8; 32] = Blake2b::<U32>::digest(&input).into();
    assert_eq!(s.id().0, id, "the id is the hash of the signing input");
}

/// Decode `bytes` as a `T`, asserting [`accepted`]'s properties when it decodes.
fn decode<T: Message + PartialEq + Debug>(bytes: &[u8]) -> Result<Signed<T>, ProtocolError> {
    let r = Signed::<T>::decode(bytes, &builders::NET);
    match &r {
        Ok(s) => accepted(s, bytes),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    r
}

/// The validator's verdict agrees with the decoder's: what it accepts decodes to the same
/// message, and an envelope that does not decode is refused for the decoding error's reason.
fn agree<T: Message + PartialEq + Debug, V: Debug>(
    decoded: &Result<Signed<T>, ProtocolError>,
    verdict: &Result<V, Rejected>,
) {
    match (decoded, verdict) {
        (Err(e), Ok(v)) => panic!("accepted {v:?}, which does not decode: {e}"),
        // Cheap before dear: the validator checks the registry, the clock and the rest before
        // any signature, so a badly signed envelope may be refused for one of those first.
        // Anything else the decoder finds comes first in the validator too.
        (Err(ProtocolError::BadSignature { .. }), Err(_)) => {}
        (Err(e), Err(r)) => assert_eq!(r.reason, RejectReason::of(e), "{r}"),
        _ => {}
    }
    if let Err(r) = verdict {
        assert!(!r.detail.is_empty());
    }
}

/// Work request envelopes: decoding, then `Validator::check_request` at `NOW`. Accepted: the
/// service is registered and not banned, the time window and the profile's bounds hold, and
/// the same bytes again are a replay.
pub fn request(bytes: &[u8]) {
    let f = fixture();
    let decoded = decode::<WorkRequest>(bytes);
    let mut v = f.validator();
    let verdict = v.check_request(bytes, &f.net.registry, NOW);
    agree(&decoded, &verdict);
    if let Ok(s) = verdict {
        let p = s.payload();
        f.net.registry.check_service(&p.service).unwrap();
        p.check_time(NOW, &f.config.time).unwrap();
        f.config.profile.check(p.difficulty).unwrap();
        assert_eq!(v.seen_requests(), 1);
        let again = v.check_request(bytes, &f.net.registry, NOW).unwrap_err();
        assert_eq!(again.reason, RejectReason::Replay);
    }
}

/// Work result envelopes: `peek_request_id` (read before verifying), decoding, and
/// `Validator::check_result` against the fixture's request. Accepted: it answers that request,
/// its root is the request's, its work meets the difficulty by the reference check, and the
/// worker is not banned. A result for an answered request is refused before anything else.
pub fn result(bytes: &[u8]) {
    let f = fixture();
    let peeked = peek_request_id(bytes);
    let decoded = decode::<WorkResult>(bytes);
    if let Ok(s) = &decoded {
        assert_eq!(
            peeked,
            Some(s.payload().request),
            "peek reads the verified request id"
        );
    }
    let req = &f.request;
    let answered = Validator::refuse_answered(bytes, |id| *id == req.id());
    assert_eq!(answered.is_err(), peeked == Some(req.id()));
    let v = f.validator();
    let verdict = v.check_result(bytes, Some(req), &f.net.registry, NOW);
    agree(&decoded, &verdict);
    if let Ok(s) = verdict {
        let (p, r) = (s.payload(), req.payload());
        assert_eq!(p.request, req.id());
        assert_eq!(p.root, r.root);
        assert!(
            reference::is_valid(&r.root, p.work, r.difficulty),
            "accepted bad work"
        );
        f.net.registry.check_worker(&p.worker).unwrap();
        let unknown = v
            .check_result(bytes, None, &f.net.registry, NOW)
            .unwrap_err();
        assert_eq!(unknown.reason, RejectReason::UnknownRequest);
    }
}

/// Cancel envelopes: decoding and `Validator::check_cancel` against the fixture's request.
/// Accepted: it names that request and is signed by the service that made it.
pub fn cancel(bytes: &[u8]) {
    let f = fixture();
    let decoded = decode::<WorkCancel>(bytes);
    let verdict = f.validator().check_cancel(bytes, Some(&f.request));
    agree(&decoded, &verdict);
    if let Ok(s) = verdict {
        assert_eq!(s.payload().request, f.request.id());
        assert_eq!(s.payload().service, f.request.payload().service);
        assert_eq!(s.signer(), f.request.signer());
    }
}

/// Worker status envelopes: decoding and `Validator::check_status` at `NOW`. Accepted: not
/// from the future (beyond the skew), not stale, not from a banned worker.
pub fn status(bytes: &[u8]) {
    let f = fixture();
    let decoded = decode::<WorkerStatus>(bytes);
    let verdict = f.validator().check_status(bytes, &f.net.registry, NOW);
    agree(&decoded, &verdict);
    if let Ok(s) = verdict {
        let p = s.payload();
        assert!(p.created_ms <= NOW + f.config.time.max_skew_ms);
        assert!(NOW.saturating_sub(p.created_ms) <= STATUS_MAX_AGE_MS);
        f.net.registry.check_worker(&p.worker).unwrap();
    }
}

/// Receipts: decoding (three signatures), `Validator::check_receipt` and `check_open` at
/// `NOW`, then a ledger. Accepted: the nested request and result are themselves accepted
/// envelopes, the result answers the request with work that meets its difficulty by the
/// reference check, the price is the difficulty's, the service is registered (banned or not),
/// the difficulty is within the profile, and the service accepted it while the request lived.
/// A ledger counts it once and refuses it the second time.
pub fn receipt(bytes: &[u8]) {
    let f = fixture();
    let decoded = decode::<Receipt>(bytes);
    if let Ok(s) = &decoded {
        let r = s.payload();
        accepted(&r.request, r.request.bytes());
        accepted(&r.result, r.result.bytes());
        let (req, res) = (r.request.payload(), r.result.payload());
        assert_eq!(res.request, r.request.id());
        assert_eq!(res.root, req.root);
        assert!(
            reference::is_valid(&req.root, res.work, req.difficulty),
            "accepted bad work"
        );
        assert_eq!(r.price, Credits::price(req.difficulty));
        assert!(r.price.0 >= 1);
    }
    let v = f.validator();
    let verdict = v.check_receipt(bytes, &f.net.registry, NOW);
    agree(&decoded, &verdict);
    let Ok(s) = verdict else {
        return;
    };
    let r = s.payload();
    let req = r.request.payload();
    match f.net.registry.check_service(&req.service) {
        Ok(()) | Err(RegistryError::BannedService { .. }) => {}
        Err(e) => panic!("accepted a receipt of an unknown service: {e}"),
    }
    f.config.profile.check(req.difficulty).unwrap();
    let skew = f.config.time.max_skew_ms;
    assert!(r.accepted_ms <= NOW + skew);
    assert!(r.accepted_ms + skew >= req.created_ms && r.accepted_ms <= req.expires_ms + skew);
    let _ = v.check_open(&s, NOW);
    let mut ledger = Ledger::new(f.config.finality.epoch_ms);
    ledger
        .ingest(s.clone())
        .expect("a fresh ledger takes a valid receipt");
    assert!(ledger.get(&s.id()).is_some());
    assert_eq!(ledger.counted_for(&r.request.id()), Some(s.id()));
    assert!(ledger.ingest(s.clone()).is_err(), "a copy is refused");
    // Beside the fixture's receipt: a second receipt for one request is evidence, and the
    // lower id counts.
    let mut both = Ledger::new(f.config.finality.epoch_ms);
    both.ingest(f.receipt.clone()).unwrap();
    let same_request = r.request.id() == f.receipt.payload().request.id();
    match both.ingest(s.clone()) {
        Ok(Ingested::Counted { .. }) => assert!(!same_request),
        Ok(Ingested::Equivocation { proof, .. }) => {
            assert!(same_request);
            assert_eq!(proof.counted, s.id().min(f.receipt.id()));
            assert_eq!(both.counted_for(&proof.request), Some(proof.counted));
        }
        Err(LedgerError::Duplicate { .. }) => assert_eq!(s.id(), f.receipt.id()),
        Err(e) => panic!("refused beside one other receipt: {e}"),
    }
}

/// Registry entries: decoding, `Validator::check_registry`, then `Registry::apply` on a copy
/// of the fixture's registry. Accepted: signed by a genesis registrar; applying it adds it
/// (or holds it for a gap), applying it again is a duplicate, and a node that joins late and
/// receives the applied entries in reverse order reaches the same registry digest.
pub fn registry(bytes: &[u8]) {
    let f = fixture();
    let decoded = decode::<RegistryEntry>(bytes);
    // Checked against the registrars alone (the fixture's registry holds its entries, which
    // a node refuses as copies before their signatures), applied to the fixture's.
    let registrars = Registry::new(f.net.registry.registrars().copied());
    let verdict = f.validator().check_registry(bytes, &registrars, NOW);
    agree(&decoded, &verdict);
    let Ok(s) = verdict else {
        return;
    };
    assert!(f.net.registry.is_registrar(&s.payload().registrar));
    assert!(s.payload().created_ms <= NOW + f.config.time.max_skew_ms);
    let mut r = f.net.registry.clone();
    let (len, pending) = (r.len(), r.pending_len());
    let equivocations = r.equivocation_count();
    match r.apply(s.clone()) {
        // It beat an entry with its number (a smaller id) and took its place.
        Ok(_) if r.equivocation_count() > equivocations => {
            assert_eq!((r.len(), r.pending_len()), (len, pending));
        }
        Ok(ids) if ids.is_empty() => assert_eq!(r.pending_len(), pending + 1),
        Ok(ids) => {
            assert_eq!(ids[0], s.id());
            assert_eq!(r.len(), len + ids.len());
        }
        Err(RegistryError::Duplicate { .. } | RegistryError::Conflict { .. }) => return,
        Err(e) => panic!("a registrar's entry refused: {e}"),
    }
    assert!(matches!(r.apply(s), Err(RegistryError::Duplicate { .. })));
    let mut late = Registry::new(r.registrars().copied());
    for e in r.entries().into_iter().rev() {
        late.apply(e).unwrap();
    }
    assert_eq!(late.digest(), r.digest(), "a late joiner converges");
}

/// Registrar checkpoints: decoding and `Validator::check_checkpoint` at `NOW`. Accepted: a
/// genesis registrar's, for this network's epoch length and a final epoch, not from the
/// future, accounts ascending with no zero.
pub fn checkpoint(bytes: &[u8]) {
    let f = fixture();
    let decoded = decode::<Checkpoint>(bytes);
    let verdict = f.validator().check_checkpoint(bytes, &f.net.registry, NOW);
    agree(&decoded, &verdict);
    if let Ok(s) = verdict {
        let c = s.payload();
        assert!(f.net.registry.is_registrar(&c.registrar));
        assert_eq!(c.epoch_ms, f.config.finality.epoch_ms);
        assert!(f.config.finality.is_final(c.epoch, NOW));
        assert!(c.created_ms <= NOW + f.config.time.max_skew_ms);
        assert!(c.credits.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(c.credits.iter().all(|(_, n)| *n > 0));
        assert!(c.claimed() >= c.credits.iter().map(|(_, n)| *n).max().unwrap_or(0));
    }
}

pub(super) fn request_seeds() -> Vec<Vec<u8>> {
    let f = fixture();
    let other = sign(
        dpow_protocol::WorkRequest {
            kind: None,
            account: None,
            priority: dpow_protocol::Priority::Precache,
            nonce: u64::MAX,
            ..builders::request(&f.banned_service)
        },
        &f.banned_service,
    );
    vec![f.request.bytes().to_vec(), other.bytes().to_vec()]
}

pub(super) fn result_seeds() -> Vec<Vec<u8>> {
    let f = fixture();
    let root = f.request.payload().root;
    let bad = reference::find_failing(&root, f.request.payload().difficulty);
    let failing = sign(
        builders::result(&f.request, &f.net.worker, bad),
        &f.net.worker,
    );
    let banned = builders::solved(&f.request, &f.banned_worker);
    vec![
        f.result.bytes().to_vec(),
        failing.bytes().to_vec(),
        banned.bytes().to_vec(),
    ]
}

pub(super) fn cancel_seeds() -> Vec<Vec<u8>> {
    let f = fixture();
    let stranger = key(12);
    let forged = builders::cancel(&f.request, &stranger, NOW);
    vec![f.cancel.bytes().to_vec(), forged.bytes().to_vec()]
}

pub(super) fn status_seeds() -> Vec<Vec<u8>> {
    let f = fixture();
    let paid = sign(
        WorkerStatus {
            payout: Some(builders::account(3)),
            queue: 7,
            ..builders::status(&f.net.worker, NOW - 1_000)
        },
        &f.net.worker,
    );
    vec![f.status.bytes().to_vec(), paid.bytes().to_vec()]
}

pub(super) fn receipt_seeds() -> Vec<Vec<u8>> {
    vec![fixture().receipt.bytes().to_vec()]
}

pub(super) fn registry_seeds() -> Vec<Vec<u8>> {
    let f = fixture();
    let reg = &f.net.registrar;
    let next = f.net.registry.next_seq(&reg.public());
    let mut seeds: Vec<Vec<u8>> = f.entries.iter().map(|e| e.bytes().to_vec()).collect();
    for (seq, action) in [
        (next, builders::unban_service(&f.banned_service)),
        (next + 2, builders::grant(&f.net.service, 5)),
        (
            next,
            dpow_protocol::RegistryAction::UnbanWorker {
                worker: f.banned_worker.public(),
            },
        ),
    ] {
        seeds.push(builders::entry(reg, seq, NOW, action).bytes().to_vec());
    }
    seeds
}

pub(super) fn checkpoint_seeds() -> Vec<Vec<u8>> {
    vec![fixture().checkpoint.bytes().to_vec()]
}
