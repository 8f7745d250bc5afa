//! The node's storage: one RocksDB database under `DATA_DIR/db`.
//!
//! Column families carry a version in their name, so a future format lives beside the old one
//! instead of being misread:
//!
//! | family | key | value |
//! |---|---|---|
//! | `receipts-v1` | `accepted_ms` (u64 big-endian) ‖ receipt id (32 bytes) | the receipt envelope |
//! | `receipt-ids-v1`, `epoch-ids-v1`, `requests-v1`, `tallies-v1`, `equivocations-v1` | see [`books`] | the ledger's indexes and tallies |
//! | `precache-v1` | the root (32 bytes) | the gateway's cache line (JSON) |
//! | `registry-v1` | registrar (32 bytes) ‖ sequence number (u64 big-endian) | the registry entry envelope |
//! | `checkpoints-v1` | epoch ‖ registrar | the checkpoint envelope |
//! | `meta-v1` | a name | a value (`schema` = [`SCHEMA`]) |
//!
//! Receipts are keyed by time first, so an epoch (a time range) is one range scan whatever the
//! network's epoch length. The books ([`books::Books`]) are the ledger itself: a node keeps no
//! copy in memory, and Kademlia serves receipts from them (a receipt's record is its id and
//! envelope), so each receipt is on disk once. Every write that the node acknowledges is durable first: registry
//! entries and checkpoints are written with `sync = true`; receipts are written by
//! the books without a sync and made durable by a sync of the write-ahead log before they are
//! acknowledged, so an acknowledged receipt survives `kill -9` and power loss alike.
//!
//! A running node never syncs on its event loop: the store task ([`writer`]) owns the synced
//! writes, in order, retries a failing one until it succeeds, and reports each one durable
//! before the event loop acknowledges what it carried.
//!
//! A light build (without the `ledger` feature) has no database: its [`Store`] is a type
//! with no values, so a light node always runs with `store: None`.

use dpow_protocol::MessageId;

#[cfg(not(feature = "ledger"))]
mod absent;
#[cfg(feature = "ledger")]
pub mod books;
mod ledger;
#[cfg(feature = "ledger")]
mod rocks;
pub mod writer;

#[cfg(not(feature = "ledger"))]
pub use absent::{Books, BooksError, Store, StoreError};
#[cfg(feature = "ledger")]
pub use books::{Books, BooksError};
pub use ledger::{IngestError, NodeLedger};
#[cfg(feature = "ledger")]
pub use rocks::{CF_META, CF_PRECACHE, CF_RECEIPTS, CF_REGISTRY, SCHEMA, Store, StoreError};

/// One receipt as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredReceipt {
    /// When the service accepted the result (unix ms).
    pub accepted_ms: u64,
    /// The receipt's id.
    pub id: MessageId,
    /// The receipt envelope, to be decoded (and so verified) again when loaded.
    pub bytes: Vec<u8>,
}
