//! Harnesses for what peers send over request-response and Kademlia: the sync protocol
//! (`/dpow/sync/4`), result delivery (`/dpow/result/1`), both through the node's own CBOR codec
//! ([`SyncCodec`], [`ResultCodec`]), and DHT record values.
//!
//! Properties: a decoded message re-encodes to bytes that decode to a message that re-encodes
//! to the same bytes (CBOR has several spellings of one value, so the first bytes may differ);
//! every envelope inside a decoded answer gets its kind's harness checks; receipt id lists are
//! whole ids; a DHT record is kept only as the receipt its key names.

use futures::io::Cursor;

use dpow_node::net::wire::{
    Bytes, EpochDigest, ResultAck, ResultCodec, ResultDelivery, SyncCodec, SyncRequest,
    SyncResponse,
};
use dpow_protocol::validate::RejectReason;
use dpow_protocol::{Checkpoint, MessageId, Receipt, RegistryEntry, WorkResult, WorkerStatus};
use futures::executor::block_on;
use libp2p::StreamProtocol;
use libp2p::request_response::Codec;

use super::envelopes::accepted;
use super::fixture::fixture;
use crate::builders::NOW;

/// Envelopes checked per list in one answer: enough for every path, few enough to stay fast
/// (the node's own caps are in the thousands).
const ITEMS: usize = 32;

const SYNC: StreamProtocol = StreamProtocol::new("/dpow/sync/4");
const RESULT: StreamProtocol = StreamProtocol::new("/dpow/result/1");

fn read_sync_request(bytes: &[u8]) -> std::io::Result<SyncRequest> {
    block_on(SyncCodec::default().read_request(&SYNC, &mut Cursor::new(bytes)))
}

fn write_sync_request(r: SyncRequest) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    block_on(SyncCodec::default().write_request(&SYNC, &mut out, r)).unwrap();
    out.into_inner()
}

fn read_sync_response(bytes: &[u8]) -> std::io::Result<SyncResponse> {
    block_on(SyncCodec::default().read_response(&SYNC, &mut Cursor::new(bytes)))
}

fn write_sync_response(r: SyncResponse) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    block_on(SyncCodec::default().write_response(&SYNC, &mut out, r)).unwrap();
    out.into_inner()
}

/// Assert that `value` re-encodes stably: encode, decode, encode gives the same bytes.
fn stable<T>(value: T, write: impl Fn(T) -> Vec<u8>, read: impl Fn(&[u8]) -> std::io::Result<T>) {
    let once = write(value);
    let back = read(&once).expect("what the codec writes, it reads");
    assert_eq!(
        write(back),
        once,
        "decode(encode(x)) re-encodes to the same bytes"
    );
}

/// A list of concatenated 32-byte ids, as `Ids` and `Fetch` carry them; `None` if the length
/// is not a whole number of ids (the node refuses such a list).
fn ids(b: &Bytes) -> Option<Vec<MessageId>> {
    if !b.0.len().is_multiple_of(32) {
        return None;
    }
    let list: Vec<MessageId> =
        b.0.chunks_exact(32)
            .map(|c| MessageId(c.try_into().unwrap()))
            .collect();
    assert_eq!(list.len() * 32, b.0.len());
    Some(list)
}

/// Sync requests: the codec, a stable round trip, and the id lists of `Ids` and `Fetch`.
pub fn sync_request(bytes: &[u8]) {
    let Ok(req) = read_sync_request(bytes) else {
        return;
    };
    match &req {
        SyncRequest::Hello { .. } | SyncRequest::Digests | SyncRequest::Checkpoints { .. } => {}
        SyncRequest::Ids { after, .. } => {
            let _ = after.as_ref().map(ids);
        }
        SyncRequest::Fetch { ids: list } => {
            let _ = ids(list);
        }
    }
    stable(req, write_sync_request, read_sync_request);
}

/// The first `ITEMS` envelopes of a list, each through `check`.
fn each(list: &[Bytes], check: impl Fn(&[u8])) {
    for b in list.iter().take(ITEMS) {
        check(&b.0);
    }
}

/// Sync answers: the codec, a stable round trip, and each envelope they carry through the
/// validator as the node checks it (registry entries, statuses, checkpoints, receipts).
pub fn sync_response(bytes: &[u8]) {
    let Ok(resp) = read_sync_response(bytes) else {
        return;
    };
    let f = fixture();
    let v = f.validator();
    match &resp {
        SyncResponse::Hello {
            registry,
            statuses,
            checkpoints,
            ..
        } => {
            each(registry, |b| {
                if let Ok(s) = v.check_registry(b, &f.net.registry, NOW) {
                    accepted::<RegistryEntry>(&s, b);
                }
            });
            each(statuses, |b| {
                if let Ok(s) = v.check_status(b, &f.net.registry, NOW) {
                    accepted::<WorkerStatus>(&s, b);
                }
            });
            each(checkpoints, |b| {
                if let Ok(s) = v.check_checkpoint(b, &f.net.registry, NOW) {
                    accepted::<Checkpoint>(&s, b);
                }
            });
        }
        SyncResponse::Digests {
            epochs, registry, ..
        } => {
            for EpochDigest { digest, .. } in epochs.iter().take(ITEMS) {
                let _ = <[u8; 32]>::try_from(digest.0.as_slice());
            }
            let _ = f.net.registry.behind(registry);
        }
        SyncResponse::Ids { ids: list, .. } => {
            let _ = ids(list);
        }
        SyncResponse::Receipts(list) => each(list, |b| {
            if let Ok(s) = v.check_receipt(b, &f.net.registry, NOW) {
                accepted::<Receipt>(&s, b);
            }
        }),
        SyncResponse::Checkpoints(list) => each(list, |b| {
            if let Ok(s) = v.check_checkpoint(b, &f.net.registry, NOW) {
                accepted::<Checkpoint>(&s, b);
            }
        }),
        SyncResponse::Busy { .. } => {}
    }
    stable(resp, write_sync_response, read_sync_response);
}

fn read_delivery(bytes: &[u8]) -> std::io::Result<ResultDelivery> {
    block_on(ResultCodec::default().read_request(&RESULT, &mut Cursor::new(bytes)))
}

fn write_delivery(r: ResultDelivery) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    block_on(ResultCodec::default().write_request(&RESULT, &mut out, r)).unwrap();
    out.into_inner()
}

fn read_ack(bytes: &[u8]) -> std::io::Result<ResultAck> {
    block_on(ResultCodec::default().read_response(&RESULT, &mut Cursor::new(bytes)))
}

fn write_ack(r: ResultAck) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    block_on(ResultCodec::default().write_response(&RESULT, &mut out, r)).unwrap();
    out.into_inner()
}

/// Result deliveries and their acks: the codec, stable round trips, and the delivered result
/// through `Validator::check_result` against the fixture's request.
pub fn result_delivery(bytes: &[u8]) {
    if let Ok(ack) = read_ack(bytes) {
        let again = ack.clone();
        stable(ack, write_ack, read_ack);
        assert_eq!(read_ack(&write_ack(again.clone())).unwrap(), again);
    }
    let Ok(d) = read_delivery(bytes) else {
        return;
    };
    let f = fixture();
    let b = &d.result.0;
    if let Ok(s) = f
        .validator()
        .check_result(b, Some(&f.request), &f.net.registry, NOW)
    {
        accepted::<WorkResult>(&s, b);
        let (p, r) = (s.payload(), f.request.payload());
        assert!(crate::reference::is_valid(&r.root, p.work, r.difficulty));
    }
    stable(d, write_delivery, read_delivery);
}

/// DHT records: the first 32 bytes are the record key, the rest its value, checked as the node
/// checks an inbound `PutRecord` (a receipt whose id is the key). Records are not stored apart
/// from the receipts they are, so there is no stored form to round-trip.
pub fn dht_record(bytes: &[u8]) {
    if bytes.len() < 32 {
        return;
    }
    let (key, value) = bytes.split_at(32);
    let f = fixture();
    let check = f
        .validator()
        .check_receipt(value, &f.net.registry, NOW)
        .and_then(|r| {
            if key == r.id().0.as_slice() {
                Ok(r)
            } else {
                Err(dpow_protocol::validate::Rejected::new(
                    RejectReason::Undecodable,
                    "record key is not the receipt's id",
                ))
            }
        });
    if let Ok(r) = check {
        accepted::<Receipt>(&r, value);
        assert_eq!(r.id().0.as_slice(), key);
    }
}

pub(super) fn request_seeds() -> Vec<Vec<u8>> {
    let id = fixture().receipt.id().0.to_vec();
    vec![
        write_sync_request(SyncRequest::Hello { from: 0 }),
        write_sync_request(SyncRequest::Hello { from: 340 }),
        write_sync_request(SyncRequest::Digests),
        write_sync_request(SyncRequest::Ids {
            epoch: 19_675,
            after: Some(Bytes(id.clone())),
        }),
        write_sync_request(SyncRequest::Fetch {
            ids: Bytes([id.clone(), id].concat()),
        }),
        write_sync_request(SyncRequest::Checkpoints {
            epochs: vec![19_674, 19_675],
        }),
    ]
}

pub(super) fn response_seeds() -> Vec<Vec<u8>> {
    let f = fixture();
    let env = |s: &[u8]| Bytes(s.to_vec());
    vec![
        write_sync_response(SyncResponse::Hello {
            registry: f.entries.iter().map(|e| env(e.bytes())).collect(),
            statuses: vec![env(f.status.bytes())],
            checkpoints: vec![env(f.checkpoint.bytes())],
            next: Some(3),
        }),
        write_sync_response(SyncResponse::Busy { retry_ms: 250 }),
        write_sync_response(SyncResponse::Digests {
            epoch_ms: f.config.finality.epoch_ms,
            epochs: vec![EpochDigest {
                epoch: 19_675,
                receipts: 1,
                digest: Bytes(vec![9; 32]),
            }],
            registry: vec![3, u64::MAX],
        }),
        write_sync_response(SyncResponse::Ids {
            ids: Bytes(f.receipt.id().0.to_vec()),
            more: true,
        }),
        write_sync_response(SyncResponse::Receipts(vec![env(f.receipt.bytes())])),
        write_sync_response(SyncResponse::Checkpoints(vec![env(f.checkpoint.bytes())])),
    ]
}

pub(super) fn delivery_seeds() -> Vec<Vec<u8>> {
    let f = fixture();
    vec![
        write_delivery(ResultDelivery {
            result: Bytes(f.result.bytes().to_vec()),
        }),
        write_ack(ResultAck::Accepted),
        write_ack(ResultAck::Refused("too late".into())),
    ]
}

pub(super) fn record_seeds() -> Vec<Vec<u8>> {
    let f = fixture();
    vec![[f.receipt.id().0.as_slice(), f.receipt.bytes()].concat()]
}
