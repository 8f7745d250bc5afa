//! Signed envelopes: how every message travels and is verified.
//!
//! Wire form (postcard): `Envelope { version: u8, kind: u8, payload: bytes, signature: [u8; 64] }`.
//! The signature is ed25519 over the *signing input*
//! `"dpow/2/" ‖ network id ‖ domain ‖ 0x00 ‖ payload`, where the [`NetworkId`] (32 bytes) names
//! the network, so a signature made on one network never verifies on another, and `domain`
//! names the message kind, so a signature made for one kind of message can never be replayed as
//! another. The payload names its own signer (the service, worker or registrar key), and the
//! message id is the blake2b-256 hash of the signing input.
//!
//! [`Signed::decode`] checks, in order: size limit, version, kind, envelope decoding (truncated,
//! trailing bytes, canonical form), payload decoding (same), the payload's own structural rules,
//! then the signature. Nothing is handed out before all of that has passed. Time-dependent
//! checks (expiry) are separate because they depend on the clock of the node asking.

use std::fmt;
use std::str::FromStr;

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use dpow_keys::{KeyError, PreparedKey, PublicKey, SecretKey, Signature};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{NetworkId, ProtocolError, codec};

/// The protocol version this code speaks (the first byte of every envelope).
pub const PROTOCOL_VERSION: u8 = 2;

/// The kinds of signed message, each with its own signing domain and size limit.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[repr(u8)]
pub enum MessageKind {
    /// [`crate::WorkRequest`], signed by a service.
    WorkRequest = 1,
    /// [`crate::WorkResult`], signed by a worker.
    WorkResult = 2,
    /// [`crate::Receipt`], signed by a service.
    Receipt = 3,
    /// [`crate::RegistryEntry`], signed by a registrar.
    Registry = 4,
    /// [`crate::WorkerStatus`], signed by a worker.
    WorkerStatus = 5,
    /// [`crate::WorkCancel`], signed by a service.
    WorkCancel = 6,
    /// [`crate::Checkpoint`], signed by a registrar.
    Checkpoint = 7,
}

impl MessageKind {
    /// The signing domain, also used in logs.
    pub fn domain(self) -> &'static str {
        match self {
            MessageKind::WorkRequest => "work-request",
            MessageKind::WorkResult => "work-result",
            MessageKind::Receipt => "receipt",
            MessageKind::Registry => "registry",
            MessageKind::WorkerStatus => "worker-status",
            MessageKind::WorkCancel => "work-cancel",
            MessageKind::Checkpoint => "checkpoint",
        }
    }

    fn from_u8(b: u8) -> Option<MessageKind> {
        Some(match b {
            1 => MessageKind::WorkRequest,
            2 => MessageKind::WorkResult,
            3 => MessageKind::Receipt,
            4 => MessageKind::Registry,
            5 => MessageKind::WorkerStatus,
            6 => MessageKind::WorkCancel,
            7 => MessageKind::Checkpoint,
            _ => return None,
        })
    }
}

/// A payload that travels signed.
pub trait Message: Serialize + DeserializeOwned + Clone {
    /// Which kind of message this is.
    const KIND: MessageKind;
    /// The largest envelope (all bytes on the wire) accepted for this kind.
    const MAX_BYTES: usize;
    /// The key that must have signed it.
    fn signer(&self) -> PublicKey;
    /// Structural rules of the payload that need no clock and no state (lengths, ranges).
    fn check(&self) -> Result<(), ProtocolError> {
        Ok(())
    }
}

/// A message id: blake2b-256 of the signing input.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageId(pub [u8; 32]);

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({})", &hex::encode(self.0)[..16])
    }
}

impl FromStr for MessageId {
    type Err = ProtocolError;
    fn from_str(s: &str) -> Result<Self, ProtocolError> {
        if s.len() != 64 {
            return Err(ProtocolError::WrongLength {
                what: "message id",
                expected: 64,
                got: s.len(),
            });
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|e| ProtocolError::BadHex {
            what: "message id",
            reason: e.to_string(),
        })?;
        Ok(MessageId(out))
    }
}

#[derive(Serialize, Deserialize)]
struct Envelope<'a> {
    version: u8,
    kind: u8,
    #[serde(borrow)]
    payload: &'a [u8],
    signature: Signature,
}

/// The signing input of a message of `kind` whose payload encodes to `payload`, on network
/// `net`: `"dpow/2/" ‖ net ‖ domain ‖ 0x00 ‖ payload`.
pub fn signing_input(kind: MessageKind, payload: &[u8], net: &NetworkId) -> Vec<u8> {
    let domain = kind.domain().as_bytes();
    let mut v = Vec::with_capacity(7 + 32 + domain.len() + 1 + payload.len());
    v.extend_from_slice(b"dpow/2/");
    v.extend_from_slice(&net.0);
    v.extend_from_slice(domain);
    v.push(0);
    v.extend_from_slice(payload);
    v
}

/// Decode a payload of kind `T` on its own (canonical, structural rules checked, signature
/// not involved), for network `net`: envelopes nested in it are decoded and verified for `net`,
/// as in [`Signed::decode`]. For tools and tests that look inside payloads.
pub fn decode_payload<T: Message>(payload: &[u8], net: &NetworkId) -> Result<T, ProtocolError> {
    let kind = T::KIND.domain();
    let (p, nested): (T, _) = nested::within(net, || codec::decode_canonical(payload, kind))?;
    p.check()?;
    for n in &nested {
        n.check()?;
    }
    Ok(p)
}

/// Signatures a node verified and expects to meet again ([`Signed::remember_verified`]), so
/// a message met again is not verified twice: a receipt carries the request and the result
/// its node verified when they arrived on gossip. The key is (id, signature): the id is the
/// blake2b-256 of the signing input, which names the signer, so an entry stands for exactly
/// one verified statement, and whether bytes decode never depends on what is remembered (only
/// how fast). Each node keeps its own (clones share it, so its verification threads do too):
/// nodes in one process never take each other's word. Bounded; forgotten all at once when
/// full.
///
/// It also keeps the public keys of signers whose signatures verified, made ready
/// ([`PreparedKey`]: decompressed, with tables): a network has few services and workers, and
/// each signs many messages. That makes each check cheaper, not skipped: every signature not
/// remembered is still checked, by the same rule (`verify_strict`'s), and a message's checks
/// encode their points together.
#[derive(Clone, Default)]
pub struct SignatureCache(std::sync::Arc<Caches>);

#[derive(Default)]
struct Caches {
    seen: std::sync::Mutex<std::collections::HashSet<SeenEntry>>,
    keys: std::sync::Mutex<std::collections::HashMap<PublicKey, PreparedKey>>,
}

/// (message id, signature) of a verified message.
type SeenEntry = ([u8; 32], [u8; 64]);

impl SignatureCache {
    /// Statements remembered at most.
    pub const CAPACITY: usize = 1 << 17;
    /// Signers' keys kept ready at most (about 20 KB each, so 20 MB at most).
    pub const KEYS: usize = 1024;

    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Statements remembered now.
    pub fn len(&self) -> usize {
        self.0.seen.lock().map_or(0, |s| s.len())
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Signers' keys kept decompressed now.
    pub fn prepared_keys(&self) -> usize {
        self.0.keys.lock().map_or(0, |k| k.len())
    }

    fn contains(&self, id: &MessageId, sig: &Signature) -> bool {
        self.0.seen.lock().is_ok_and(|s| s.contains(&(id.0, sig.0)))
    }

    fn insert(&self, id: MessageId, sig: Signature) {
        if let Ok(mut set) = self.0.seen.lock() {
            if set.len() >= Self::CAPACITY {
                set.clear();
            }
            set.insert((id.0, sig.0));
        }
    }

    /// The signer's key made ready ([`PreparedKey`]), if one of its signatures verified here.
    fn held(&self, key: &PublicKey) -> Option<PreparedKey> {
        self.0.keys.lock().ok().and_then(|k| k.get(key).cloned())
    }

    /// Check `sig` over `msg` by a signer not held: in full, then keep its key made ready.
    fn verify_new(&self, key: &PublicKey, msg: &[u8], sig: &Signature) -> Result<(), KeyError> {
        let prepared = key.verify_and_prepare(msg, sig)?;
        if let Ok(mut keys) = self.0.keys.lock() {
            if keys.len() >= Self::KEYS {
                keys.clear();
            }
            keys.insert(*key, prepared);
        }
        Ok(())
    }

    /// Check every signature of `pending` not remembered, as [`PublicKey::verify`] would:
    /// those of held signers together ([`PreparedKey::verify_all`]). The first bad one fails.
    fn verify_pending(&self, pending: &[Pending]) -> Result<(), ProtocolError> {
        let mut batch: Vec<(PreparedKey, usize)> = Vec::with_capacity(pending.len());
        let mut bad = None;
        for (i, p) in pending.iter().enumerate() {
            if p.remembered(Some(self)) {
                continue;
            }
            match self.held(&p.key) {
                Some(key) => batch.push((key, i)),
                None => {
                    if self.verify_new(&p.key, &p.input, &p.signature).is_err() {
                        bad = Some(i);
                        break;
                    }
                }
            }
        }
        let checks: Vec<_> = batch
            .iter()
            .map(|(key, i)| (key, &pending[*i].input[..], &pending[*i].signature))
            .collect();
        if let Err(j) = PreparedKey::verify_all(&checks) {
            let i = batch[j].1;
            bad = Some(bad.map_or(i, |b: usize| b.min(i)));
        }
        match bad {
            Some(i) => Err(ProtocolError::BadSignature {
                kind: pending[i].kind,
            }),
            None => Ok(()),
        }
    }
}

impl fmt::Debug for SignatureCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignatureCache({} remembered)", self.len())
    }
}

fn hash_id(input: &[u8]) -> MessageId {
    let mut out = [0u8; 32];
    out.copy_from_slice(&Blake2b::<U32>::digest(input));
    MessageId(out)
}

/// A verified message: the payload, its id, and the exact bytes it arrived in.
#[derive(Clone, PartialEq)]
pub struct Signed<T> {
    payload: T,
    id: MessageId,
    bytes: Vec<u8>,
}

impl<T: Message> Signed<T> {
    /// Sign `payload` with `key`, which must be the payload's named signer, for network `net`.
    pub fn sign(payload: T, key: &SecretKey, net: &NetworkId) -> Result<Self, ProtocolError> {
        let kind = T::KIND.domain();
        if key.public() != payload.signer() {
            return Err(ProtocolError::Invalid {
                kind,
                reason: "signing key is not the key the message names as its signer".to_string(),
            });
        }
        payload.check()?;
        let body = codec::encode(&payload, kind)?;
        let input = signing_input(T::KIND, &body, net);
        let signature = key.sign(&input);
        let env = Envelope {
            version: PROTOCOL_VERSION,
            kind: T::KIND as u8,
            payload: &body,
            signature,
        };
        let bytes = codec::encode(&env, kind)?;
        if bytes.len() > T::MAX_BYTES {
            return Err(ProtocolError::Oversized {
                kind,
                got: bytes.len(),
                limit: T::MAX_BYTES,
            });
        }
        Ok(Signed {
            payload,
            id: hash_id(&input),
            bytes,
        })
    }

    /// Decode and verify an envelope from untrusted bytes, signed for network `net`. Envelopes
    /// nested in the payload (a receipt's request and result) must be signed for `net` too.
    /// The same as [`Unverified::decode`] followed by [`Unverified::verify`]; a node that
    /// checks more before paying for signatures calls those two itself.
    pub fn decode(bytes: &[u8], net: &NetworkId) -> Result<Self, ProtocolError> {
        Unverified::decode(bytes, net)?.verify()
    }

    /// Remember in `cache` that this message's signature verified, so verifying the same
    /// message again with that cache, alone or nested in a receipt, skips the ed25519 check.
    /// For messages a node accepted and expects to meet again.
    pub fn remember_verified(&self, cache: &SignatureCache) {
        if let Ok(env) = codec::decode_canonical::<Envelope<'_>>(&self.bytes, T::KIND.domain()) {
            cache.insert(self.id, env.signature);
        }
    }

    /// The verified payload.
    pub fn payload(&self) -> &T {
        &self.payload
    }

    /// The message id (blake2b-256 of the signing input).
    pub fn id(&self) -> MessageId {
        self.id
    }

    /// The envelope bytes, exactly as signed and as received.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The signer's key.
    pub fn signer(&self) -> PublicKey {
        self.payload.signer()
    }
}

/// One signature check a decode left for later: the signer, what it signed, the id of that
/// signing input and the signature.
#[derive(Clone)]
struct Pending {
    kind: &'static str,
    key: PublicKey,
    input: Vec<u8>,
    id: MessageId,
    signature: Signature,
}

impl Pending {
    /// Whether this exact statement was verified before ([`Signed::remember_verified`]).
    fn remembered(&self, cache: Option<&SignatureCache>) -> bool {
        cache.is_some_and(|c| c.contains(&self.id, &self.signature))
    }

    /// Check the signature in full, remembering nothing.
    fn check(&self) -> Result<(), ProtocolError> {
        self.key
            .verify(&self.input, &self.signature)
            .map_err(|_| ProtocolError::BadSignature { kind: self.kind })
    }
}

/// A message decoded from untrusted bytes and checked in every way that needs no signature:
/// size, version, kind, canonical encoding, structure, network (of nested envelopes too), and
/// the payload's own rules. Its signatures (its own and its nested envelopes') are still to be
/// checked: [`Unverified::verify`] makes it a [`Signed`]. A node runs its cheap checks
/// (registry, clock, duplicates, profile, work value) on [`Unverified::payload`] first and
/// pays for ed25519 only for messages that pass them.
///
/// Nested envelopes inside the payload (a receipt's request and result) are not verified
/// either until [`Unverified::verify`]; read them, do not keep them.
#[derive(Clone)]
pub struct Unverified<T> {
    /// The message, its signatures not checked: never handed out as a [`Signed`] before
    /// [`Unverified::verify`].
    message: Signed<T>,
    /// This envelope's check first, then its nested envelopes'.
    pending: Vec<Pending>,
}

impl<T: Message> Unverified<T> {
    /// Decode an envelope of kind `T` signed for network `net`, checking everything but
    /// signatures (see the type's documentation).
    pub fn decode(bytes: &[u8], net: &NetworkId) -> Result<Self, ProtocolError> {
        let kind = T::KIND.domain();
        if bytes.len() > T::MAX_BYTES {
            return Err(ProtocolError::Oversized {
                kind,
                got: bytes.len(),
                limit: T::MAX_BYTES,
            });
        }
        match bytes.first() {
            None => return Err(ProtocolError::Truncated { kind }),
            Some(&v) if v != PROTOCOL_VERSION => {
                return Err(ProtocolError::UnknownVersion {
                    kind,
                    got: v,
                    supported: PROTOCOL_VERSION,
                });
            }
            Some(_) => {}
        }
        let env: Envelope<'_> = codec::decode_canonical(bytes, kind)?;
        if env.kind != T::KIND as u8 {
            let got = MessageKind::from_u8(env.kind)
                .map(|k| k.domain().to_string())
                .unwrap_or_else(|| format!("unknown kind {}", env.kind));
            return Err(ProtocolError::WrongDomain {
                expected: kind.to_string(),
                got,
            });
        }
        let (payload, nested_pending) =
            nested::within(net, || codec::decode_canonical::<T>(env.payload, kind))?;
        payload.check()?;
        let input = signing_input(T::KIND, env.payload, net);
        let id = hash_id(&input);
        let mut pending = Vec::with_capacity(1 + nested_pending.len());
        pending.push(Pending {
            kind,
            key: payload.signer(),
            input,
            id,
            signature: env.signature,
        });
        pending.extend(nested_pending);
        Ok(Unverified {
            message: Signed {
                payload,
                id,
                bytes: bytes.to_vec(),
            },
            pending,
        })
    }

    /// Check every signature (this envelope's, then its nested envelopes'). The first bad
    /// one fails it.
    pub fn verify(self) -> Result<Signed<T>, ProtocolError> {
        self.verify_inner(None)
    }

    /// [`Unverified::verify`], skipping the statements `cache` remembers as verified.
    pub fn verify_with(self, cache: &SignatureCache) -> Result<Signed<T>, ProtocolError> {
        self.verify_inner(Some(cache))
    }

    fn verify_inner(self, cache: Option<&SignatureCache>) -> Result<Signed<T>, ProtocolError> {
        match cache {
            Some(c) => c.verify_pending(&self.pending)?,
            None => {
                for p in &self.pending {
                    p.check()?;
                }
            }
        }
        Ok(self.message)
    }

    /// Take the message without checking its signatures: only for bytes this node verified
    /// before it wrote them to its own store, read back at start-up (the store's block
    /// checksums catch corruption on the way). Never for anything that came from a peer.
    pub fn trust_stored(self) -> Signed<T> {
        self.message
    }

    /// How many ed25519 checks [`Unverified::verify_with`] would run now with `cache`: its
    /// signatures less those remembered. What the message costs its receiver.
    pub fn signature_checks(&self, cache: &SignatureCache) -> usize {
        self.pending
            .iter()
            .filter(|p| !p.remembered(Some(cache)))
            .count()
    }

    /// The payload, checked but for signatures.
    pub fn payload(&self) -> &T {
        self.message.payload()
    }

    /// The message id (blake2b-256 of the signing input).
    pub fn id(&self) -> MessageId {
        self.message.id()
    }

    /// The envelope bytes, as received.
    pub fn bytes(&self) -> &[u8] {
        self.message.bytes()
    }
}

impl<T: fmt::Debug> fmt::Debug for Unverified<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unverified")
            .field("id", &self.message.id)
            .field("payload", &self.message.payload)
            .field("signatures", &self.pending.len())
            .finish()
    }
}

impl<T: fmt::Debug> fmt::Debug for Signed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signed")
            .field("id", &self.id)
            .field("payload", &self.payload)
            .finish()
    }
}

/// Nested envelopes (a receipt carries the signed request and result) serialise as their bytes.
impl<T: Message> Serialize for Signed<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.bytes)
    }
}

/// Deserialising a nested envelope decodes it like [`Unverified::decode`], for the network of
/// the decode it is nested in, and leaves its signatures to the enclosing envelope's
/// [`Unverified::verify`]; outside a decode (no network named) it is refused.
impl<'de, T: Message> Deserialize<'de> for Signed<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes: &'de [u8] = <&[u8]>::deserialize(d)?;
        let net = nested::current().ok_or_else(|| {
            serde::de::Error::custom("a nested envelope decodes only inside Signed::decode")
        })?;
        match Unverified::<T>::decode(bytes, &net) {
            Ok(u) => {
                // Its signatures are checked with the enclosing envelope's
                // ([`Unverified::verify`]); until then it is only ever read.
                nested::defer(u.pending);
                Ok(u.message)
            }
            Err(e) => {
                nested::failed(&e);
                Err(serde::de::Error::custom(e))
            }
        }
    }
}

/// The network a payload being decoded belongs to, for the envelopes nested in it: serde's
/// `Deserialize` takes no context, so [`Signed::decode`] names its network here (per thread,
/// for the duration of the payload's decoding) and nested envelopes read it.
mod nested {
    use std::cell::{Cell, RefCell};

    use super::{NetworkId, Pending};
    use crate::ProtocolError;

    thread_local! {
        static NET: Cell<Option<NetworkId>> = const { Cell::new(None) };
        static FAILED: RefCell<Option<ProtocolError>> = const { RefCell::new(None) };
        static DEFERRED: RefCell<Vec<Pending>> = const { RefCell::new(Vec::new()) };
    }

    /// Run `f` with `net` as the network of nested envelopes, then restore the previous one.
    /// Returns what `f` returned and the signature checks the envelopes nested in it left
    /// for later ([`defer`]). If `f` fails because a nested envelope did, that envelope's
    /// error is returned (a bad nested envelope is its own error, not a malformed payload).
    pub(super) fn within<R>(
        net: &NetworkId,
        f: impl FnOnce() -> Result<R, ProtocolError>,
    ) -> Result<(R, Vec<Pending>), ProtocolError> {
        struct Restore(Option<NetworkId>, Option<ProtocolError>, Vec<Pending>);
        impl Drop for Restore {
            fn drop(&mut self) {
                NET.with(|n| n.set(self.0));
                FAILED.with(|f| *f.borrow_mut() = self.1.take());
                DEFERRED.with(|d| *d.borrow_mut() = std::mem::take(&mut self.2));
            }
        }
        let _restore = Restore(
            NET.with(|n| n.replace(Some(*net))),
            FAILED.with(|f| f.borrow_mut().take()),
            DEFERRED.with(|d| std::mem::take(&mut *d.borrow_mut())),
        );
        let r = f().map_err(|e| FAILED.with(|f| f.borrow_mut().take()).unwrap_or(e))?;
        Ok((r, DEFERRED.with(|d| std::mem::take(&mut *d.borrow_mut()))))
    }

    /// Leave a nested envelope's signature checks to the enclosing [`within`].
    pub(super) fn defer(pending: Vec<Pending>) {
        DEFERRED.with(|d| d.borrow_mut().extend(pending));
    }

    /// Note the first failure of a nested envelope, for [`within`].
    pub(super) fn failed(e: &ProtocolError) {
        FAILED.with(|f| {
            let mut f = f.borrow_mut();
            if f.is_none() {
                *f = Some(e.clone());
            }
        });
    }

    /// The network named by the enclosing decode, if any.
    pub(super) fn current() -> Option<NetworkId> {
        NET.with(|n| n.get())
    }
}
