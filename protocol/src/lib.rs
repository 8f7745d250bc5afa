//! The dpow protocol, pure: no I/O, no clocks, no randomness of its own.
//!
//! - [`work`] and [`blake2b`]: Nano work values, validation, difficulty and multiplier math;
//! - [`profile`]: block kinds and the difficulty profiles a network can run;
//! - [`messages`]: requests, results, receipts, registry entries, worker status;
//! - [`flow`], [`standing`] and [`volume`]: who solves which request, what receipts show of
//!   each worker, and the priority class a service's volume earns;
//! - [`peer`]: a peer's request path as one state machine over those flows (requests heard
//!   and answered, worker statuses, work paid);
//! - [`replication`]: catching up with peers' books (digests, ids, fetch) as one state
//!   machine over the node's ledger;
//! - [`checkpoint`]: when an epoch's books close, and registrars' checkpoints of them;
//! - [`envelope`] and [`codec`]: signed envelopes and the canonical encoding they travel in.
//!
//! Everything here is deterministic so that every node computes the same answer from the same
//! bytes, and so that it can be tested exhaustively.
#![deny(missing_docs)]

pub mod blake2b;
pub mod checkpoint;
pub mod codec;
pub mod envelope;
mod error;
pub mod flow;
pub mod ledger;
pub mod messages;
pub mod network;
pub mod peer;
pub mod profile;
pub mod registry;
pub mod replication;
pub mod standing;
pub mod validate;
pub mod volume;
pub mod work;

pub use checkpoint::{Checkpoint, Finality};
pub use envelope::{
    Message, MessageId, MessageKind, PROTOCOL_VERSION, SignatureCache, Signed, Unverified,
};
pub use error::ProtocolError;
pub use messages::{
    Credits, Priority, Receipt, RegistryAction, RegistryEntry, RequestId, TimePolicy, WorkCancel,
    WorkRequest, WorkResult, WorkerStatus,
};
pub use network::NetworkId;
pub use profile::{BlockKind, Profile};
pub use work::{Difficulty, Multiplier, Root, Work, is_valid, work_value};
