//! The store of a light build (without the `ledger` feature): there is none. [`Store`] has no
//! values, so the code that would use one compiles but never runs, and a light node keeps its
//! few receipts and records in memory.

use std::path::Path;

use dpow_protocol::MessageId;
use dpow_protocol::ledger::Ledger;

use super::{StoredReceipt, StoredRecord};

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
    pub fn load_ledger(
        &self,
        _epoch_ms: u64,
        _net: &dpow_protocol::NetworkId,
        _verify: bool,
    ) -> Result<Ledger, StoreError> {
        match *self {}
    }

    /// Never called: there is no store.
    pub fn kad_get(&self, _key: &[u8]) -> Result<Option<StoredRecord>, StoreError> {
        match *self {}
    }

    /// Never called: there is no store.
    pub fn kad_put(&self, _key: &[u8], _record: &StoredRecord) -> Result<(), StoreError> {
        match *self {}
    }

    /// Never called: there is no store.
    pub fn kad_remove(&self, _key: &[u8]) -> Result<(), StoreError> {
        match *self {}
    }

    /// Never called: there is no store.
    pub fn kad_records(&self) -> std::iter::Empty<(Vec<u8>, StoredRecord)> {
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
