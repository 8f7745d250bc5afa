//! The ledger sync protocol's messages: questions from peers and their answers.

use dpow_protocol::validate::RejectReason;
use libp2p::{PeerId, request_response};

use crate::net::behaviour::{MAX_SYNC_ITEMS, SyncRequest, SyncResponse};
use crate::net::events::Event;

use super::{EventLoop, checkpoints};

impl EventLoop {
    pub(super) fn on_sync_event(&mut self, ev: request_response::Event<SyncRequest, SyncResponse>) {
        // The answer to a probe goes to whoever asked, not into this node's state.
        let Some(ev) = self.take_probe_answer(ev) else {
            return;
        };
        match ev {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => self.answer_sync(peer, request, channel),
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Response {
                        request_id,
                        response: SyncResponse::Busy { retry_ms },
                    },
                ..
            } => {
                let sent = self.sync_answered(&request_id);
                self.on_busy(peer, sent, retry_ms);
            }
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Response {
                        request_id,
                        response:
                            SyncResponse::Hello {
                                registry,
                                statuses,
                                checkpoints,
                                next,
                            },
                    },
                ..
            } => {
                let sent = self.sync_answered(&request_id);
                let now = self.clock.now_ms();
                let (mut ok, mut bad) = (0usize, 0usize);
                for b in registry.iter().take(MAX_SYNC_ITEMS) {
                    match self
                        .validator
                        .check_registry(&b.0, &self.registry, now)
                        .and_then(|e| self.on_registry(e))
                    {
                        Ok(()) => ok += 1,
                        Err(r) if r.reason == RejectReason::Replay => {}
                        Err(r) => {
                            bad += 1;
                            self.on_rejected(peer, &r);
                        }
                    }
                }
                for b in statuses.iter().take(MAX_SYNC_ITEMS) {
                    // Cheap first: a status no newer than the one held costs no signature.
                    let st = self
                        .validator
                        .screen_status(&b.0, &self.registry, now)
                        .and_then(|u| self.peer.refuse_old_status(u.payload()).map(|()| u))
                        .and_then(|u| Ok(u.verify_with(&self.signatures)?));
                    if let Ok(st) = st {
                        let _ = self.on_status(st, now);
                    }
                }
                for b in checkpoints.iter().take(checkpoints::HELLO_CHECKPOINTS) {
                    match self.on_checkpoint(&b.0, peer) {
                        Ok(()) => {}
                        Err(r) if r.reason.penalise() => self.on_rejected(peer, &r),
                        Err(_) => {}
                    }
                }
                tracing::debug!(%peer, registry = ok, bad, "synced a page from peer");
                let first = sent.as_ref().is_none_or(|s| !s.repair);
                // A repair wants the registry, which the pages list first: it ends with the
                // first page that holds anything else.
                let next =
                    next.filter(|_| first || (statuses.is_empty() && checkpoints.is_empty()));
                if self.next_hello_page(sent, next) && first {
                    self.hello_done(peer);
                }
            }
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                self.sync_answered(&request_id);
                self.on_ledger_response(peer, response);
            }
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                let sent = self.sync_answered(&request_id);
                self.on_sync_failure(peer, sent, &error);
            }
            _ => {}
        }
    }

    /// The `Hello` walk with `peer` is over: then the books, counted as synced once they
    /// match the peer's.
    pub(super) fn hello_done(&mut self, peer: PeerId) {
        if self.catch_up_ledger {
            self.start_catch_up(peer, true);
        } else {
            self.synced_tx.send_modify(|c| *c += 1);
            self.emit(|| Event::Synced { peer, receipts: 0 });
        }
    }
}
