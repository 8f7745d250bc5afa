//! The Kademlia record store. A dpow record is a receipt: its key the receipt id, its value
//! the envelope. A node with a data directory serves records from its books on disk (the
//! ledger's own copy: each receipt is stored once) and keeps no other; a node without one
//! (a short-lived command-line client) keeps records in memory. Provider records are not used
//! by dpow and stay in memory.
//!
//! Nothing reaches this store unchecked: the node runs Kademlia with
//! [`kad::StoreInserts::FilterBoth`], verifies every inbound record as a receipt, takes it
//! into its books and only then calls [`kad::store::RecordStore::put`], which on disk only
//! confirms that the books hold it. Kademlia's own republishing and replication are off
//! (behaviour.rs): they would read every record back each hour, and catch-up by epoch digests
//! already brings every node every receipt.

use std::borrow::Cow;
use std::sync::Arc;

use dpow_protocol::MessageId;
use libp2p::PeerId;
use libp2p::kad::store::{Error, MemoryStore, MemoryStoreConfig, RecordStore, Result};
use libp2p::kad::{self, ProviderRecord, Record, RecordKey};

use crate::store::Store;

/// Records held in memory when there is no store (a client's few).
const MEMORY_RECORDS: usize = 100_000;
/// The largest record value: a receipt envelope is under 1 KiB.
pub(crate) const MAX_RECORD_BYTES: usize = 2048;

/// Kademlia's record store for a dpow node: the books on disk, or memory.
pub(crate) struct Records {
    books: Option<Arc<Store>>,
    memory: MemoryStore,
}

impl Records {
    pub(crate) fn new(peer: PeerId, books: Option<Arc<Store>>) -> Records {
        let config = MemoryStoreConfig {
            max_records: MEMORY_RECORDS,
            max_value_bytes: MAX_RECORD_BYTES,
            ..MemoryStoreConfig::default()
        };
        Records {
            books,
            memory: MemoryStore::with_config(peer, config),
        }
    }
}

/// The receipt held under `key` in the books, as its envelope bytes.
fn held(books: &Store, key: &RecordKey) -> Option<Vec<u8>> {
    let id = MessageId(key.as_ref().try_into().ok()?);
    match books.receipt_bytes(&id) {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::warn!(receipt = %id, "reading a receipt for Kademlia: {e}");
            None
        }
    }
}

impl RecordStore for Records {
    type RecordsIter<'a> = std::vec::IntoIter<Cow<'a, Record>>;
    type ProvidedIter<'a> = <MemoryStore as RecordStore>::ProvidedIter<'a>;

    fn get(&self, k: &kad::RecordKey) -> Option<Cow<'_, Record>> {
        let Some(books) = &self.books else {
            return self.memory.get(k);
        };
        held(books, k).map(|value| Cow::Owned(Record::new(k.clone(), value)))
    }

    fn put(&mut self, r: Record) -> Result<()> {
        if r.value.len() > MAX_RECORD_BYTES {
            return Err(Error::ValueTooLarge);
        }
        let Some(books) = &self.books else {
            return self.memory.put(r);
        };
        // The record is the receipt the node has just taken into its books: nothing to write.
        // Anything else is refused (Kademlia's error type has no better word for it).
        match held(books, &r.key) {
            Some(value) if value == r.value => Ok(()),
            _ => Err(Error::MaxRecords),
        }
    }

    fn remove(&mut self, k: &kad::RecordKey) {
        // Receipts leave the books only by repair, never on Kademlia's word.
        if self.books.is_none() {
            self.memory.remove(k);
        }
    }

    fn records(&self) -> Self::RecordsIter<'_> {
        match &self.books {
            // Only Kademlia's replication jobs walk every record, and they are off.
            Some(_) => Vec::new().into_iter(),
            None => self.memory.records().collect::<Vec<_>>().into_iter(),
        }
    }

    fn add_provider(&mut self, record: ProviderRecord) -> Result<()> {
        self.memory.add_provider(record)
    }

    fn providers(&self, key: &kad::RecordKey) -> Vec<ProviderRecord> {
        self.memory.providers(key)
    }

    fn provided(&self) -> Self::ProvidedIter<'_> {
        self.memory.provided()
    }

    fn remove_provider(&mut self, k: &kad::RecordKey, p: &PeerId) {
        self.memory.remove_provider(k, p)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// On disk, a record is the books' receipt: served from them, written nowhere else, and
    /// a put of anything the books do not hold is refused.
    #[test]
    #[cfg(feature = "ledger")]
    fn records_on_disk_are_the_receipts_in_the_books() {
        use crate::store::Books;
        use dpow_testkit::builders::{self, NOW, TestNet};
        let dir = tempfile::tempdir().unwrap();
        let r = TestNet::fixed().receipt(0, NOW);
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let mut books = Books::open(store.clone(), 86_400_000, builders::NET).unwrap();
        let peer = PeerId::random();
        let mut records = Records::new(peer, Some(store.clone()));
        let key = RecordKey::new(&r.id().0);
        let record = Record::new(key.clone(), r.bytes().to_vec());
        assert!(records.get(&key).is_none());
        assert!(records.put(record.clone()).is_err(), "not in the books yet");

        books.ingest(&r).unwrap();
        records.put(record.clone()).unwrap();
        assert_eq!(records.get(&key).unwrap().into_owned(), record);
        let mut other = record.clone();
        other.value[0] ^= 1;
        assert!(records.put(other).is_err(), "not the receipt held");
        let big = Record::new(key.clone(), vec![0; MAX_RECORD_BYTES + 1]);
        assert!(matches!(records.put(big), Err(Error::ValueTooLarge)));
        assert!(records.get(&RecordKey::new(&b"short")).is_none());
        records.remove(&key);
        assert!(
            records.get(&key).is_some(),
            "Kademlia removes nothing from the books"
        );
        assert_eq!(records.records().count(), 0, "no walk over every receipt");
    }

    #[test]
    fn without_a_store_records_live_in_memory() {
        let mut records = Records::new(PeerId::random(), None);
        let rec = Record::new(RecordKey::new(&b"k"), vec![1, 2, 3]);
        records.put(rec.clone()).unwrap();
        assert_eq!(records.get(&rec.key).unwrap().into_owned(), rec);
        assert_eq!(records.records().count(), 1);
        records.remove(&rec.key);
        assert!(records.get(&rec.key).is_none());
    }
}
