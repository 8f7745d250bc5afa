//! What a node and the browser workers it carries say to each other through the event loop
//! (the WebSocket side is `crate::browser`).

use dpow_protocol::{RequestId, Signed, WorkRequest};

/// Events a bridge reader may fall behind by before it is told it lagged.
pub const BRIDGE_QUEUE: usize = 1024;

/// A change in the requests open for work, as the browser bridge hears of it.
#[derive(Clone, Debug)]
pub enum BridgeEvent {
    /// A valid request arrived (gossip or this node's own service).
    Request(Signed<WorkRequest>),
    /// A request is finished (answered or cancelled): stop working on it.
    Done(RequestId),
}

/// The kind of signed message a browser worker hands its node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForeignKind {
    /// A `WorkResult` envelope.
    Result,
    /// A `WorkerStatus` envelope.
    Status,
}
