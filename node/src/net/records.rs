//! The Kademlia record store: records in RocksDB (`kad-records-v1`) when the node has a data
//! directory, in memory otherwise (short-lived command-line clients). Provider records are
//! not used by dpow and stay in memory.
//!
//! Nothing reaches this store unchecked: the node runs Kademlia with
//! [`kad::StoreInserts::FilterBoth`], verifies every inbound record as a receipt and only then
//! calls [`kad::store::RecordStore::put`].

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::kad::store::{Error, MemoryStore, MemoryStoreConfig, RecordStore, Result};
use libp2p::kad::{self, ProviderRecord, Record, RecordKey};

use super::now_ms;
use crate::store::writer::{Job, RECORD_TICKET, Write, Writer};
use crate::store::{Store, StoredRecord};

/// Records held in memory when there is no store (a client's few).
const MEMORY_RECORDS: usize = 100_000;
/// The largest record value: a receipt envelope is under 1 KiB.
pub(crate) const MAX_RECORD_BYTES: usize = 2048;

/// Kademlia's record store for a dpow node: reads from disk (or the store task's overlay of
/// writes not yet there), writes through the store task, so the swarm never waits on disk.
pub(crate) struct Records {
    disk: Option<(Arc<Store>, Writer)>,
    memory: MemoryStore,
}

impl Records {
    pub(crate) fn new(peer: PeerId, disk: Option<(Arc<Store>, Writer)>) -> Records {
        let config = MemoryStoreConfig {
            max_records: MEMORY_RECORDS,
            max_value_bytes: MAX_RECORD_BYTES,
            ..MemoryStoreConfig::default()
        };
        Records {
            disk,
            memory: MemoryStore::with_config(peer, config),
        }
    }
}

/// Note a write in the overlay and queue it for the store task; false if either is full.
fn write_through(writer: &Writer, key: &[u8], record: Option<StoredRecord>) -> bool {
    let Some(version) = writer.overlay().note(key, record.clone()) else {
        return false;
    };
    let job = Job {
        ticket: RECORD_TICKET,
        write: Write::Record {
            key: key.to_vec(),
            record,
            version,
        },
    };
    if writer.try_submit(job).is_err() {
        writer.overlay().forget(key, version);
        return false;
    }
    true
}

fn to_stored(r: &Record) -> StoredRecord {
    let now = Instant::now();
    StoredRecord {
        value: r.value.clone(),
        publisher: r.publisher.map(|p| p.to_bytes()),
        expires_ms: r.expires.map(|at| {
            now_ms().saturating_add(at.saturating_duration_since(now).as_millis() as u64)
        }),
    }
}

fn from_stored(key: Vec<u8>, s: StoredRecord) -> Record {
    let now_unix = now_ms();
    Record {
        key: RecordKey::from(key),
        value: s.value,
        publisher: s.publisher.and_then(|b| PeerId::from_bytes(&b).ok()),
        // An expiry in the past becomes "now": kad drops it as expired.
        expires: s
            .expires_ms
            .map(|ms| Instant::now() + Duration::from_millis(ms.saturating_sub(now_unix))),
    }
}

impl RecordStore for Records {
    type RecordsIter<'a> = std::vec::IntoIter<Cow<'a, Record>>;
    type ProvidedIter<'a> = <MemoryStore as RecordStore>::ProvidedIter<'a>;

    fn get(&self, k: &kad::RecordKey) -> Option<Cow<'_, Record>> {
        let Some((disk, writer)) = &self.disk else {
            return self.memory.get(k);
        };
        if let Some(pending) = writer.overlay().get(k.as_ref()) {
            return pending.map(|s| Cow::Owned(from_stored(k.to_vec(), s)));
        }
        match disk.kad_get(k.as_ref()) {
            Ok(Some(s)) => Some(Cow::Owned(from_stored(k.to_vec(), s))),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!("reading a kad record: {e}");
                None
            }
        }
    }

    fn put(&mut self, r: Record) -> Result<()> {
        if r.value.len() > MAX_RECORD_BYTES {
            return Err(Error::ValueTooLarge);
        }
        let Some((_, writer)) = &self.disk else {
            return self.memory.put(r);
        };
        // Kademlia's error type has no "storage busy"; the record is refused either way, and
        // its publisher puts it again at the next replication.
        write_through(writer, r.key.as_ref(), Some(to_stored(&r)))
            .then_some(())
            .ok_or(Error::MaxRecords)
    }

    fn remove(&mut self, k: &kad::RecordKey) {
        match &self.disk {
            Some((_, writer)) => {
                if !write_through(writer, k.as_ref(), None) {
                    tracing::warn!("a kad record removal was not queued: the store is behind");
                }
            }
            None => self.memory.remove(k),
        }
    }

    fn records(&self) -> Self::RecordsIter<'_> {
        match &self.disk {
            Some((disk, writer)) => {
                let pending: std::collections::HashMap<Vec<u8>, Option<StoredRecord>> =
                    writer.overlay().entries().into_iter().collect();
                let mut v: Vec<Cow<'_, Record>> = disk
                    .kad_records()
                    .filter(|(k, _)| !pending.contains_key(k))
                    .map(|(k, s)| Cow::Owned(from_stored(k, s)))
                    .collect();
                v.extend(
                    pending
                        .into_iter()
                        .filter_map(|(k, s)| s.map(|s| Cow::Owned(from_stored(k, s)))),
                );
                v.into_iter()
            }
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

    #[test]
    #[cfg(feature = "ledger")]
    fn records_on_disk_survive_a_new_store_handle() {
        let dir = tempfile::tempdir().unwrap();
        let peer = PeerId::random();
        let rec = Record {
            key: RecordKey::new(&b"receipt-id"),
            value: vec![1, 2, 3],
            publisher: Some(peer),
            expires: None,
        };
        {
            let store = Arc::new(Store::open(dir.path()).unwrap());
            let (writer, mut done) = Writer::start(store.clone()).unwrap();
            let mut r = Records::new(peer, Some((store, writer)));
            r.put(rec.clone()).unwrap();
            // Visible at once, from the overlay, before the store task wrote it.
            assert_eq!(r.get(&rec.key).unwrap().into_owned(), rec);
            let big = Record::new(RecordKey::new(&b"big"), vec![0; MAX_RECORD_BYTES + 1]);
            assert!(matches!(r.put(big), Err(Error::ValueTooLarge)));
            match done.blocking_recv() {
                Some(crate::store::writer::Done::Written(j)) => {
                    assert_eq!(j.ticket, RECORD_TICKET)
                }
                other => panic!("{other:?}"),
            }
            drop(r);
            // The thread ends (and lets go of the database) once every handle is gone.
            while done.blocking_recv().is_some() {}
        }
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let (writer, _done) = Writer::start(store.clone()).unwrap();
        let r = Records::new(peer, Some((store, writer)));
        let got = r.get(&rec.key).unwrap().into_owned();
        assert_eq!(got, rec);
        assert_eq!(r.records().count(), 1);
    }

    #[test]
    fn an_expiry_is_kept_across_the_restart_clock() {
        let soon = Instant::now() + Duration::from_secs(3600);
        let rec = Record {
            key: RecordKey::new(&b"k"),
            value: vec![],
            publisher: None,
            expires: Some(soon),
        };
        let back = from_stored(b"k".to_vec(), to_stored(&rec));
        let diff = back
            .expires
            .unwrap()
            .saturating_duration_since(soon)
            .max(soon.saturating_duration_since(back.expires.unwrap()));
        assert!(diff < Duration::from_secs(2), "{diff:?}");
    }
}
