//! What a node tells its users as it happens: a typed stream of [`Event`]s.
//!
//! The event loop sends each event once, on a bounded broadcast channel
//! ([`EVENT_QUEUE`]); every reader ([`super::Client::events`]) gets its own copy. Nothing
//! waits for a reader: one that falls more than [`EVENT_QUEUE`] events behind is told how
//! many it missed ([`EventStream::next`] answers [`Missed`]) and goes on from the oldest
//! kept. The stream ends when the node stops. With no reader, an event costs a check of the
//! reader count and is never built.
//!
//! The statistics ([`super::NodeStats`]) count the same things; the stream says which ones,
//! in order: the dashboard's activity list (`/api/events`, named server-sent events), and
//! tests that wait for one particular thing to happen instead of for a counter. A counter
//! or list an event moves is updated before the event is sent (a refusal's count, a blocked
//! peer in `blocked_peers`), so a reader of the event reads statistics that include it; the
//! figures rebuilt on a timer (rates, the worker and peer tables) catch up at their next
//! refresh.

use std::time::Duration;

use dpow_keys::PublicKey;
use dpow_protocol::validate::RejectReason;
use dpow_protocol::{MessageId, RequestId};
use libp2p::PeerId;
use serde::{Serialize, Serializer};
use tokio::sync::broadcast;

/// Events kept for readers that fall behind; older ones are dropped for them.
pub const EVENT_QUEUE: usize = 1024;

/// Where a receipt the books took came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptFrom {
    /// Signed by this node's service for its own request.
    Own,
    /// From a peer on the receipts topic.
    Gossip,
}

/// Something that happened on a node. Identifiers are written as text in JSON (ids in hex,
/// keys as `dpow_` keys, peers in base58).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A first connection to a peer opened.
    PeerConnected {
        /// The peer.
        #[serde(serialize_with = "text")]
        peer: PeerId,
    },
    /// The last connection to a peer closed.
    PeerDisconnected {
        /// The peer.
        #[serde(serialize_with = "text")]
        peer: PeerId,
    },
    /// A valid work request, from a peer or from this node's own service.
    RequestSeen {
        /// The request.
        #[serde(serialize_with = "text")]
        request: RequestId,
        /// The service that signed it.
        #[serde(serialize_with = "text")]
        service: PublicKey,
        /// This node's service asked it.
        own: bool,
    },
    /// A valid result for a request: work checked against its root and difficulty.
    Answered {
        /// The request.
        #[serde(serialize_with = "text")]
        request: RequestId,
        /// The worker that signed the result.
        #[serde(serialize_with = "text")]
        worker: PublicKey,
    },
    /// This node's worker found work for a request and sends it.
    Solved {
        /// The request.
        #[serde(serialize_with = "text")]
        request: RequestId,
        /// Hashes the search took.
        hashes: u64,
        /// How long it took, in milliseconds.
        ms: f64,
    },
    /// A request of this node's service has its work: the caller of `submit` has it.
    Completed {
        /// The request.
        #[serde(serialize_with = "text")]
        request: RequestId,
        /// The worker whose work it is.
        #[serde(serialize_with = "text")]
        worker: PublicKey,
        /// From the submit to the answer, in milliseconds.
        latency_ms: f64,
    },
    /// A request of this node's service expired unanswered.
    Expired {
        /// The request.
        #[serde(serialize_with = "text")]
        request: RequestId,
    },
    /// A receipt is on disk in the books (those taken by catch-up are not told one by one:
    /// see [`Event::Synced`]).
    ReceiptStored {
        /// The receipt's id.
        #[serde(serialize_with = "text")]
        receipt: MessageId,
        /// Where it came from.
        from: ReceiptFrom,
    },
    /// A receipt a peer put into the DHT is kept here as a Kademlia record (answered to
    /// lookups from now on; on a node with a data directory, served from the books).
    RecordKept {
        /// The receipt's id (the record's key).
        #[serde(serialize_with = "text")]
        receipt: MessageId,
    },
    /// A message from a peer was refused.
    Refused {
        /// The peer that sent it.
        #[serde(serialize_with = "text")]
        peer: PeerId,
        /// Why, as the statistics count it.
        #[serde(serialize_with = "reason_text")]
        reason: RejectReason,
        /// Whether it costs the peer a strike (a message no honest peer sends).
        penalised: bool,
        /// What was wrong, in words.
        detail: String,
    },
    /// A peer was blocked for sending too many refused messages.
    PeerBlocked {
        /// The peer.
        #[serde(serialize_with = "text")]
        peer: PeerId,
        /// For how long, in seconds.
        for_s: u64,
    },
    /// A peer answered this node's sync, and the receipts it held that this node lacked are
    /// in the books.
    Synced {
        /// The peer.
        #[serde(serialize_with = "text")]
        peer: PeerId,
        /// Receipts fetched from it (told again only when a later round fetches some).
        receipts: u64,
    },
    /// A registrar's checkpoint of a final epoch, checked and kept (from a peer, or published
    /// by this node's command).
    Checkpoint {
        /// The epoch.
        epoch: u64,
        /// The registrar that signed it.
        #[serde(serialize_with = "text")]
        registrar: PublicKey,
        /// Whether this node's books of the epoch have the checkpoint's digest (when false, a
        /// node that keeps full books fetches the difference).
        matches: bool,
    },
}

impl Event {
    /// The event's name: its `kind` in JSON, and its name on `/api/events`.
    pub fn name(&self) -> &'static str {
        match self {
            Event::PeerConnected { .. } => "peer_connected",
            Event::PeerDisconnected { .. } => "peer_disconnected",
            Event::RequestSeen { .. } => "request_seen",
            Event::Answered { .. } => "answered",
            Event::Solved { .. } => "solved",
            Event::Completed { .. } => "completed",
            Event::Expired { .. } => "expired",
            Event::ReceiptStored { .. } => "receipt_stored",
            Event::RecordKept { .. } => "record_kept",
            Event::Refused { .. } => "refused",
            Event::PeerBlocked { .. } => "peer_blocked",
            Event::Synced { .. } => "synced",
            Event::Checkpoint { .. } => "checkpoint",
        }
    }
}

fn text<T: std::fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn reason_text<S: Serializer>(r: &RejectReason, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(r.as_str())
}

/// Events a reader missed: it fell more than [`EVENT_QUEUE`] behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0} events missed: the reader fell behind")]
pub struct Missed(pub u64);

/// One reader's copy of a node's events ([`super::Client::events`]).
pub struct EventStream(broadcast::Receiver<Event>);

impl EventStream {
    pub(super) fn new(rx: broadcast::Receiver<Event>) -> EventStream {
        EventStream(rx)
    }

    /// A stream that has ended (the node had stopped).
    pub(super) fn ended() -> EventStream {
        EventStream(broadcast::channel(1).1)
    }

    /// The next event; `None` once the node has stopped and every event was read.
    pub async fn next(&mut self) -> Option<Result<Event, Missed>> {
        match self.0.recv().await {
            Ok(e) => Some(Ok(e)),
            Err(broadcast::error::RecvError::Lagged(n)) => Some(Err(Missed(n))),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// Read events until `look` answers `Some` for one, and return that; `None` if `timeout`
    /// passes or the node stops first. Events missed by falling behind are skipped (a test
    /// that must see every event reads them itself).
    pub async fn wait_for<T>(
        &mut self,
        timeout: Duration,
        mut look: impl FnMut(&Event) -> Option<T>,
    ) -> Option<T> {
        let find = async {
            while let Some(e) = self.next().await {
                if let Ok(e) = e
                    && let Some(v) = look(&e)
                {
                    return Some(v);
                }
            }
            None
        };
        tokio::time::timeout(timeout, find).await.ok().flatten()
    }
}

/// Sends a node's events: the event loop's end of the channel.
pub(super) struct Events(broadcast::Sender<Event>);

impl Events {
    pub(super) fn new() -> Events {
        Events(broadcast::channel(EVENT_QUEUE).0)
    }

    /// The readers' way in, which does not keep the channel open.
    pub(super) fn source(&self) -> broadcast::WeakSender<Event> {
        self.0.downgrade()
    }

    /// Send the event `make` builds, if anyone reads.
    pub(super) fn emit(&self, make: impl FnOnce() -> Event) {
        if self.0.receiver_count() > 0 {
            let _ = self.0.send(make());
        }
    }
}

/// A reader of the events sent through `source`, or an ended stream if the node stopped.
pub(super) fn subscribe(source: &broadcast::WeakSender<Event>) -> EventStream {
    match source.upgrade() {
        Some(tx) => EventStream::new(tx.subscribe()),
        None => EventStream::ended(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(n: u8) -> Event {
        Event::Refused {
            peer: PeerId::random(),
            reason: RejectReason::InvalidWork,
            penalised: true,
            detail: format!("number {n}"),
        }
    }

    #[tokio::test]
    async fn each_reader_gets_every_event_in_order_and_the_stream_ends_with_the_sender() {
        let events = Events::new();
        let source = events.source();
        let mut built = 0;
        // Nobody reads: nothing is built.
        events.emit(|| {
            built += 1;
            refused(0)
        });
        assert_eq!(built, 0);
        let (mut a, mut b) = (subscribe(&source), subscribe(&source));
        for n in 1..=3 {
            events.emit(|| refused(n));
        }
        for r in [&mut a, &mut b] {
            for n in 1..=3 {
                match r.next().await {
                    Some(Ok(Event::Refused { detail, .. })) => {
                        assert_eq!(detail, format!("number {n}"))
                    }
                    other => panic!("expected refusal {n}, got {other:?}"),
                }
            }
        }
        drop(events);
        assert!(a.next().await.is_none());
        assert!(subscribe(&source).next().await.is_none());
    }

    #[tokio::test]
    async fn a_reader_that_falls_behind_is_told_how_many_it_missed_and_goes_on() {
        let events = Events::new();
        let mut r = subscribe(&events.source());
        let over = 10;
        for n in 0..EVENT_QUEUE + over {
            events.emit(|| refused(n as u8));
        }
        assert_eq!(r.next().await, Some(Err(Missed(over as u64))));
        assert!(matches!(r.next().await, Some(Ok(Event::Refused { .. }))));
        // Waiting for one that never comes gives up at the timeout.
        let none = r
            .wait_for(Duration::from_millis(20), |e| {
                matches!(e, Event::Synced { .. }).then_some(())
            })
            .await;
        assert_eq!(none, None);
    }

    #[test]
    fn events_are_json_with_their_kind_and_identifiers_as_text() {
        let peer = PeerId::random();
        let e = Event::Refused {
            peer,
            reason: RejectReason::InvalidWork,
            penalised: true,
            detail: "bad".into(),
        };
        let v: serde_json::Value = serde_json::to_value(&e).expect("json");
        assert_eq!(v["kind"], e.name());
        assert_eq!(v["peer"], peer.to_string());
        assert_eq!(v["reason"], RejectReason::InvalidWork.as_str());
        let r = Event::ReceiptStored {
            receipt: MessageId([0xab; 32]),
            from: ReceiptFrom::Own,
        };
        let v: serde_json::Value = serde_json::to_value(&r).expect("json");
        assert_eq!(v["kind"], "receipt_stored");
        assert_eq!(v["receipt"], MessageId([0xab; 32]).to_string());
        assert_eq!(v["from"], "own");
        let key = PublicKey([7; 32]);
        let c = Event::Checkpoint {
            epoch: 12,
            registrar: key,
            matches: false,
        };
        let v: serde_json::Value = serde_json::to_value(&c).expect("json");
        assert_eq!(v["kind"], c.name());
        assert_eq!(v["kind"], "checkpoint");
        assert_eq!(v["registrar"], key.to_string());
        assert_eq!(
            (v["epoch"].as_u64(), v["matches"].as_bool()),
            (Some(12), Some(false))
        );
    }
}
