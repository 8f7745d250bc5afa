//! Direct questions to peers ([`crate::net::Client::probe`]): one sync request whose
//! answer goes back to the caller (a command confirming that a peer holds what it published)
//! and never into this node's state or its catch-up.

use libp2p::PeerId;
use libp2p::request_response::{Event, Message};
use tokio::sync::oneshot;

use super::super::behaviour::{SyncRequest, SyncResponse};
use super::EventLoop;

/// Where the answer to a probe goes.
pub(super) type Probe = oneshot::Sender<Result<SyncResponse, String>>;

impl EventLoop {
    /// Ask `peer`; refused while [`crate::net::MAX_PROBES`] wait for their answers.
    pub(super) fn send_probe(&mut self, peer: PeerId, request: SyncRequest, reply: Probe) {
        if self.probes.len() >= crate::net::MAX_PROBES {
            let _ = reply.send(Err(format!(
                "{} questions to peers already wait for their answer",
                crate::net::MAX_PROBES
            )));
            return;
        }
        let id = self.swarm.behaviour_mut().sync.send_request(&peer, request);
        self.probes.insert(id, reply);
    }

    /// The event, unless it answers a probe (then handed to its caller).
    pub(super) fn take_probe_answer(
        &mut self,
        ev: Event<SyncRequest, SyncResponse>,
    ) -> Option<Event<SyncRequest, SyncResponse>> {
        match ev {
            Event::Message {
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                peer,
                connection_id,
            } => match self.probes.remove(&request_id) {
                Some(reply) => {
                    let _ = reply.send(Ok(response));
                    None
                }
                None => Some(Event::Message {
                    message: Message::Response {
                        request_id,
                        response,
                    },
                    peer,
                    connection_id,
                }),
            },
            Event::OutboundFailure {
                request_id, error, ..
            } if self.probes.contains_key(&request_id) => {
                if let Some(reply) = self.probes.remove(&request_id) {
                    let _ = reply.send(Err(error.to_string()));
                }
                None
            }
            ev => Some(ev),
        }
    }
}
