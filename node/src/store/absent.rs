//! The store of a light build (without the `ledger` feature): there is none. [`Store`] has no
//! values, so the code that would use one compiles but never runs, and a light node keeps its
//! few receipts and records in memory.

use std::path::Path;

use dpow_protocol::MessageId;
use dpow_protocol::ledger::Ledger;

use super::StoredReceipt;

/// What can go wrong with the store: in a light build, only that there is none.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// This build has no database.
    #[error(
        "this dpow is a light build without a ledger database: build with the `ledger` feature (the default) for that"
    )]
    NotBuilt,
}

/// No database: this type has no values.
#[derive(Debug)]
pub enum Store {}

impl Store {
    /// Always [`StoreError::NotBuilt`].
    pub fn open(_path: &Path) -> Result<Store, StoreError> {
        Err(StoreError::NotBuilt)
    }

    /// Never called: there is no store.
    pub fn checkpoint(&self, _dir: &Path) -> Result<(), StoreError> {
        match *self {}
    }

    /// Never called: there is no store.
    pub fn write_receipts(
        &self,
        _put: &[StoredReceipt],
        _delete: &[(u64, MessageId)],
    ) -> Result<(), StoreError> {
        match *self {}
    }

    /// Never called: there is no store.
    pub fn sync_wal(&self) -> Result<(), StoreError> {
        match *self {}
    }

    /// Never called: there is no store.
    pub fn receipt_bytes(&self, _id: &MessageId) -> Result<Option<Vec<u8>>, StoreError> {
        match *self {}
    }

    /// Never called: there is no store.
    pub fn registry_put(
        &self,
        _registrar: &[u8; 32],
        _seq: u64,
        _bytes: &[u8],
    ) -> Result<(), StoreError> {
        match *self {}
    }

    /// Never called: there is no store.
    pub fn registry_entries(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        match *self {}
    }

    /// Never called: there is no store.
    pub fn checkpoint_put(
        &self,
        _epoch: u64,
        _registrar: &[u8; 32],
        _bytes: &[u8],
    ) -> Result<(), StoreError> {
        match *self {}
    }

    /// Never called: there is no store.
    pub fn checkpoints(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        match *self {}
    }

    /// Never called: there is no store.
    pub fn precache_put(
        &self,
        _root: &[u8; 32],
        _line: &[u8],
        _replaced: &[[u8; 32]],
    ) -> Result<(), StoreError> {
        match *self {}
    }

    /// Never called: there is no store.
    pub fn precache_lines(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        match *self {}
    }
}

/// Why the books refused a receipt (a light build has no books: never made).
#[derive(Debug, thiserror::Error)]
pub enum BooksError {
    /// The ledger's rules refused it.
    #[error(transparent)]
    Ledger(#[from] dpow_protocol::ledger::LedgerError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Of a pruned epoch.
    #[error("receipt {receipt} {why}")]
    Pruned {
        /// The receipt refused.
        receipt: MessageId,
        /// Which.
        why: String,
    },
}

/// No books on disk: this type has no values.
#[derive(Debug)]
pub enum Books {}

/// A page of an epoch's ids and whether more follow.
type IdsPage = Result<(Vec<MessageId>, bool), StoreError>;

#[allow(missing_docs, clippy::missing_errors_doc, clippy::len_without_is_empty)]
impl Books {
    pub fn open_for_node(
        store: std::sync::Arc<Store>,
        _epoch_ms: u64,
        _net: dpow_protocol::NetworkId,
        _verify: bool,
    ) -> Result<Books, StoreError> {
        match *store {}
    }
    pub fn epoch_ms(&self) -> u64 {
        match *self {}
    }
    pub fn ingest(
        &mut self,
        _r: &dpow_protocol::Signed<dpow_protocol::Receipt>,
    ) -> Result<dpow_protocol::ledger::Ingested, BooksError> {
        match *self {}
    }
    pub fn ingest_all(
        &mut self,
        _r: &[dpow_protocol::Signed<dpow_protocol::Receipt>],
    ) -> Vec<Result<dpow_protocol::ledger::Ingested, BooksError>> {
        match *self {}
    }
    pub fn get(
        &self,
        _id: &MessageId,
    ) -> Result<Option<dpow_protocol::Signed<dpow_protocol::Receipt>>, StoreError> {
        match *self {}
    }
    pub fn get_bytes(&self, _id: &MessageId) -> Result<Option<Vec<u8>>, StoreError> {
        match *self {}
    }
    pub fn contains(&self, _id: &MessageId) -> Result<bool, StoreError> {
        match *self {}
    }
    pub fn contains_each(&self, _ids: &[MessageId]) -> Result<Vec<bool>, StoreError> {
        match *self {}
    }
    pub fn len(&self) -> Result<u64, StoreError> {
        match *self {}
    }
    pub fn epochs(&self) -> Result<Vec<(u64, u64)>, StoreError> {
        match *self {}
    }
    pub fn receipt_ids_in_epoch(&self, _epoch: u64) -> Result<Vec<MessageId>, StoreError> {
        match *self {}
    }
    pub fn receipt_ids_page(
        &self,
        _epoch: u64,
        _after: Option<MessageId>,
        _limit: usize,
    ) -> Result<(Vec<MessageId>, bool), StoreError> {
        match *self {}
    }
    pub fn receipts_job(&self, _ids: Vec<MessageId>) -> fn() -> Vec<Vec<u8>> {
        match *self {}
    }
    pub fn epoch_digest_job(&self, _epoch: u64) -> fn() -> Result<[u8; 32], StoreError> {
        match *self {}
    }
    pub fn receipt_ids_page_job(
        &self,
        _epoch: u64,
        _after: Option<MessageId>,
        _limit: usize,
    ) -> fn() -> IdsPage {
        match *self {}
    }
    pub fn epoch_digest(&self, _epoch: u64) -> Result<[u8; 32], StoreError> {
        match *self {}
    }
    pub fn pruned_epoch(&self, _epoch: u64) -> Result<Option<()>, StoreError> {
        match *self {}
    }
    pub fn adopt(&self, _cp: &dpow_protocol::Checkpoint) -> Result<bool, StoreError> {
        match *self {}
    }
    pub fn earned(&self, _k: &dpow_keys::PublicKey) -> Result<u128, StoreError> {
        match *self {}
    }
    pub fn spent(&self, _k: &dpow_keys::PublicKey) -> Result<u128, StoreError> {
        match *self {}
    }
    pub fn earned_in_epoch(
        &self,
        _epoch: u64,
    ) -> Result<std::collections::BTreeMap<dpow_keys::PublicKey, u128>, StoreError> {
        match *self {}
    }
    pub fn service_balance(
        &self,
        _registry: &dpow_protocol::registry::Registry,
        _k: &dpow_keys::PublicKey,
    ) -> Result<dpow_protocol::ledger::ServiceBalance, StoreError> {
        match *self {}
    }
    pub fn flagged_services(
        &self,
    ) -> Result<std::collections::BTreeSet<dpow_keys::PublicKey>, StoreError> {
        match *self {}
    }
    pub fn counted_since(
        &self,
        _since_ms: u64,
    ) -> Result<Vec<dpow_protocol::Signed<dpow_protocol::Receipt>>, StoreError> {
        match *self {}
    }
    pub fn account_credits(
        &self,
    ) -> Result<std::collections::BTreeMap<dpow_keys::NanoAccount, (u128, u64)>, StoreError> {
        match *self {}
    }
    pub fn to_memory(&self) -> Result<Ledger, StoreError> {
        match *self {}
    }
}
