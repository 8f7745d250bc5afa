//! The RocksDB store (the `ledger` feature): see the parent module for the layout.

use std::path::{Path, PathBuf};

use dpow_protocol::MessageId;
use rocksdb::{
    ColumnFamilyDescriptor, DB, DBCompressionType, Direction, IteratorMode, Options, WriteBatch,
    WriteOptions,
};

use super::StoredReceipt;

/// Receipts by time and id.
pub const CF_RECEIPTS: &str = "receipts-v1";
/// Where Kademlia records were kept before they were served from the receipts themselves: a
/// store that has it loses it (every record in it was a receipt, held in `receipts-v1` too).
const OLD_CF_KAD: &str = "kad-records-v1";
/// The gateway's precached work.
pub const CF_PRECACHE: &str = "precache-v1";
/// Registry entries, so a restarted node knows services and bans before it meets a peer.
pub const CF_REGISTRY: &str = "registry-v1";
/// Small facts about the store itself.
pub const CF_META: &str = "meta-v1";
/// Registrars' checkpoints of final epochs, by epoch and registrar.
const CF_CHECKPOINTS: &str = "checkpoints-v1";
/// The schema this build reads and writes (2: results name payout accounts, requests name
/// their service node; 3: envelopes are signed for one network, protocol version 2).
pub const SCHEMA: &str = "dpow-store-3";

/// The ledger's indexes and running tallies (see [`super::books`]): receipt id → time.
pub(super) const CF_RECEIPT_IDS: &str = "receipt-ids-v1";
/// Epoch ‖ receipt id → time: an epoch's receipts in id order, for digests and id lists.
pub(super) const CF_EPOCH_IDS: &str = "epoch-ids-v1";
/// Request id → the ids of the one or two receipts held for it, ascending.
pub(super) const CF_REQUESTS: &str = "requests-v1";
/// Running tallies (credits and receipts) per epoch and per key, kept by a merge operator.
pub(super) const CF_TALLIES: &str = "tallies-v1";
/// Service ‖ request of every proven equivocation.
pub(super) const CF_EQUIVOCATIONS: &str = "equivocations-v1";

const FAMILIES: [&str; 10] = [
    CF_RECEIPTS,
    CF_PRECACHE,
    CF_REGISTRY,
    CF_META,
    CF_CHECKPOINTS,
    CF_RECEIPT_IDS,
    CF_EPOCH_IDS,
    CF_REQUESTS,
    CF_TALLIES,
    CF_EQUIVOCATIONS,
];

/// The block cache all families share (64 MiB): index and filter blocks live in it too, so the
/// database's memory does not grow with the number of receipts stored.
const BLOCK_CACHE_BYTES: usize = 64 << 20;
/// Each family's memtable (two at most per family).
const WRITE_BUFFER_BYTES: usize = 8 << 20;

/// What can go wrong with the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// RocksDB refused to open the directory (in use by another process, unreadable, ...).
    #[error("cannot open the store at {path}: {source}")]
    Open {
        /// The database directory.
        path: PathBuf,
        /// RocksDB's reason.
        source: rocksdb::Error,
    },
    /// The directory cannot be created.
    #[error("cannot create the store directory {path}: {source}")]
    Dir {
        /// The database directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The directory holds a store of another format.
    #[error("the store at {path} has schema {found:?}; this dpow reads {SCHEMA:?}")]
    Schema {
        /// The database directory.
        path: PathBuf,
        /// The schema found.
        found: String,
    },
    /// A read or write failed.
    #[error("store: {0}")]
    Db(#[from] rocksdb::Error),
    /// A stored value does not decode.
    #[error("corrupt {family} entry: {why}")]
    Corrupt {
        /// The column family.
        family: &'static str,
        /// What is wrong.
        why: String,
    },
}

/// The node's RocksDB database. Cheap to share: every method takes `&self`.
pub struct Store {
    db: DB,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

fn family_options(name: &str, cache: &rocksdb::Cache) -> Options {
    let mut o = Options::default();
    // Receipts are signatures and hashes: they do not compress, and no compression library
    // is linked in.
    o.set_compression_type(DBCompressionType::None);
    o.set_write_buffer_size(WRITE_BUFFER_BYTES);
    o.set_max_write_buffer_number(2);
    let mut t = rocksdb::BlockBasedOptions::default();
    t.set_block_cache(cache);
    // Index and filter blocks live in the shared cache, so they do not grow memory with the
    // data; partitioned, so a look-up loads one small partition (not a whole file's filter,
    // which a small cache would evict and re-read on every look-up), with the top levels
    // pinned and the partitions ahead of data blocks in the cache.
    t.set_cache_index_and_filter_blocks(true);
    t.set_cache_index_and_filter_blocks_with_high_priority(true);
    t.set_pin_l0_filter_and_index_blocks_in_cache(true);
    t.set_pin_top_level_index_and_filter(true);
    t.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
    t.set_partition_filters(true);
    t.set_metadata_block_size(4096);
    // Look-ups by id that mostly miss (is this receipt held? which receipts has this
    // request?): a Bloom filter answers those without reading a data block. Families read by
    // range or by keys that exist go without.
    if [CF_RECEIPT_IDS, CF_REQUESTS, CF_TALLIES].contains(&name) {
        t.set_bloom_filter(10.0, false);
    }
    o.set_block_based_table_factory(&t);
    if name == CF_TALLIES {
        o.set_merge_operator_associative("dpow-tally-sum", super::books::merge_tallies);
    }
    o
}

impl Store {
    /// Open (or create) the database in directory `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(path).map_err(|source| StoreError::Dir {
            path: path.to_path_buf(),
            source,
        })?;
        let cache = rocksdb::Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let mut opts = family_options("", &cache);
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_keep_log_file_num(4);
        opts.set_max_total_wal_size(64 << 20);
        // RocksDB opens a database only with every family it has: the old DHT copy too, to
        // drop it.
        let old_kad = DB::list_cf(&opts, path)
            .map(|names| names.iter().any(|n| n == OLD_CF_KAD))
            .unwrap_or(false);
        // The default family too: left out, RocksDB's binding opens it with a 64 MiB
        // memtable, and the space RocksDB waits for before it resumes writes after a full
        // disk is the largest memtable of any family.
        let families = FAMILIES
            .iter()
            .chain([&rocksdb::DEFAULT_COLUMN_FAMILY_NAME])
            .chain(old_kad.then_some(&OLD_CF_KAD))
            .map(|name| ColumnFamilyDescriptor::new(*name, family_options(name, &cache)));
        let mut db =
            DB::open_cf_descriptors(&opts, path, families).map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        if old_kad {
            db.drop_cf(OLD_CF_KAD)?;
            tracing::info!(
                "dropped {OLD_CF_KAD}, the DHT's second copy of every receipt: Kademlia now serves the ledger's own"
            );
        }
        let store = Store {
            db,
            path: path.to_path_buf(),
        };
        match store.meta("schema")? {
            None => store.set_meta("schema", SCHEMA.as_bytes())?,
            Some(v) if v == SCHEMA.as_bytes() => {}
            Some(v) => {
                return Err(StoreError::Schema {
                    path: store.path,
                    found: String::from_utf8_lossy(&v).into_owned(),
                });
            }
        }
        Ok(store)
    }

    /// A consistent copy of the whole database in the new directory `dir` (a RocksDB
    /// checkpoint: files are hard-linked where `dir` is on the same filesystem, copied
    /// otherwise), taken while the store is in use. `dir` must not exist.
    pub fn checkpoint(&self, dir: &Path) -> Result<(), StoreError> {
        let c = rocksdb::checkpoint::Checkpoint::new(&self.db)?;
        Ok(c.create_checkpoint(dir)?)
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The database, for the ledger's own module.
    pub(super) fn db(&self) -> &DB {
        &self.db
    }

    pub(super) fn cf(&self, name: &'static str) -> &rocksdb::ColumnFamily {
        // Every family in FAMILIES is opened (and created if missing) by `open`.
        #[allow(clippy::expect_used)]
        self.db
            .cf_handle(name)
            .expect("column family opened with the store")
    }

    fn synced() -> WriteOptions {
        let mut w = WriteOptions::default();
        w.set_sync(true);
        w
    }

    /// Write one key, synced to disk before returning.
    pub(super) fn put_synced(
        &self,
        family: &'static str,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<(), StoreError> {
        let mut b = WriteBatch::default();
        b.put_cf(self.cf(family), key, value);
        Ok(self.db.write_opt(b, &Self::synced())?)
    }

    /// Every value of a family, in key order.
    fn values(&self, family: &'static str) -> Result<Vec<Vec<u8>>, StoreError> {
        self.db
            .iterator_cf(self.cf(family), IteratorMode::Start)
            .map(|item| Ok(item?.1.into_vec()))
            .collect()
    }

    pub(super) fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf(CF_META), key)?)
    }

    pub(super) fn set_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.put_synced(CF_META, key, value)
    }

    pub(super) fn receipt_key(accepted_ms: u64, id: &MessageId) -> [u8; 40] {
        let mut k = [0u8; 40];
        k[..8].copy_from_slice(&accepted_ms.to_be_bytes());
        k[8..].copy_from_slice(&id.0);
        k
    }

    /// Store receipts and delete others, atomically, synced to disk before returning.
    pub fn write_receipts(
        &self,
        put: &[StoredReceipt],
        delete: &[(u64, MessageId)],
    ) -> Result<(), StoreError> {
        if put.is_empty() && delete.is_empty() {
            return Ok(());
        }
        let cf = self.cf(CF_RECEIPTS);
        let mut b = WriteBatch::default();
        for r in put {
            b.put_cf(cf, Self::receipt_key(r.accepted_ms, &r.id), &r.bytes);
        }
        for (ms, id) in delete {
            b.delete_cf(cf, Self::receipt_key(*ms, id));
        }
        Ok(self.db.write_opt(b, &Self::synced())?)
    }

    /// Make every write so far durable: sync the write-ahead log.
    pub fn sync_wal(&self) -> Result<(), StoreError> {
        Ok(self.db.flush_wal(true)?)
    }

    /// Every stored receipt accepted in `[from_ms, to_ms)`, in (time, id) order.
    pub fn receipts_between(
        &self,
        from_ms: u64,
        to_ms: u64,
    ) -> impl Iterator<Item = Result<StoredReceipt, StoreError>> + '_ {
        let start = Self::receipt_key(from_ms, &MessageId([0; 32]));
        self.db
            .iterator_cf(
                self.cf(CF_RECEIPTS),
                IteratorMode::From(&start, Direction::Forward),
            )
            .map(|item| {
                let (k, v) = item?;
                if k.len() != 40 {
                    return Err(StoreError::Corrupt {
                        family: CF_RECEIPTS,
                        why: format!("key of {} bytes", k.len()),
                    });
                }
                let mut ms = [0u8; 8];
                ms.copy_from_slice(&k[..8]);
                let mut id = [0u8; 32];
                id.copy_from_slice(&k[8..]);
                Ok(StoredReceipt {
                    accepted_ms: u64::from_be_bytes(ms),
                    id: MessageId(id),
                    bytes: v.into_vec(),
                })
            })
            .take_while(move |r| r.as_ref().map_or(true, |r| r.accepted_ms < to_ms))
    }

    /// Every stored receipt, in (time, id) order.
    pub fn receipts(&self) -> impl Iterator<Item = Result<StoredReceipt, StoreError>> + '_ {
        self.receipts_between(0, u64::MAX)
    }

    /// The envelope of held receipt `id`: the ledger's one copy, which Kademlia serves too.
    pub fn receipt_bytes(&self, id: &MessageId) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(ms) = self.db.get_pinned_cf(self.cf(CF_RECEIPT_IDS), id.0)? else {
            return Ok(None);
        };
        let ms: [u8; 8] = ms.as_ref().try_into().map_err(|_| StoreError::Corrupt {
            family: CF_RECEIPT_IDS,
            why: "a time of the wrong length".into(),
        })?;
        let key = Self::receipt_key(u64::from_be_bytes(ms), id);
        match self.db.get_cf(self.cf(CF_RECEIPTS), key)? {
            Some(bytes) => Ok(Some(bytes)),
            None => Err(StoreError::Corrupt {
                family: CF_RECEIPT_IDS,
                why: format!("receipt {id} is indexed but not stored"),
            }),
        }
    }

    /// Store a registry entry (synced).
    pub fn registry_put(
        &self,
        registrar: &[u8; 32],
        seq: u64,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        let mut k = [0u8; 40];
        k[..32].copy_from_slice(registrar);
        k[32..].copy_from_slice(&seq.to_be_bytes());
        self.put_synced(CF_REGISTRY, k, bytes)
    }

    /// Store a registrar's checkpoint (synced), replacing that registrar's older one.
    pub fn checkpoint_put(
        &self,
        epoch: u64,
        registrar: &[u8; 32],
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        let mut k = [0u8; 40];
        k[..8].copy_from_slice(&epoch.to_be_bytes());
        k[8..].copy_from_slice(registrar);
        self.put_synced(CF_CHECKPOINTS, k, bytes)
    }

    /// Every stored checkpoint, by epoch.
    pub fn checkpoints(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.values(CF_CHECKPOINTS)
    }

    /// Every stored registry entry, each registrar's in sequence order.
    pub fn registry_entries(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.values(CF_REGISTRY)
    }

    /// Store (or replace) a precache line under its root and delete the lines it `replaces`
    /// (an account's previous frontier, the oldest evicted for room), in one synced write.
    pub fn precache_put(
        &self,
        root: &[u8; 32],
        line: &[u8],
        replaces: &[[u8; 32]],
    ) -> Result<(), StoreError> {
        let cf = self.cf(CF_PRECACHE);
        let mut b = WriteBatch::default();
        for old in replaces {
            b.delete_cf(cf, old);
        }
        b.put_cf(cf, root, line);
        Ok(self.db.write_opt(b, &Self::synced())?)
    }

    /// Every precache line.
    pub fn precache_lines(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.values(CF_PRECACHE)
    }

    /// Bytes on disk: the database's live SST files plus its write-ahead logs.
    pub fn disk_bytes(&self) -> u64 {
        dir_bytes(&self.path)
    }

    /// Write memtables out and compact, so [`Store::disk_bytes`] measures settled data.
    pub fn compact(&self) -> Result<(), StoreError> {
        for name in FAMILIES {
            let cf = self.cf(name);
            self.db.flush_cf(cf)?;
            self.db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        }
        Ok(())
    }
}

fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            let data = name.ends_with(".sst") || name.ends_with(".log");
            data.then(|| e.metadata().map(|m| m.len()).unwrap_or(0))
        })
        .sum()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn receipt(ms: u64, n: u8) -> StoredReceipt {
        StoredReceipt {
            accepted_ms: ms,
            id: MessageId([n; 32]),
            bytes: vec![n; 10],
        }
    }

    /// A signed receipt of the test network for request nonce `nonce`, as stored.
    fn signed(nonce: u64) -> StoredReceipt {
        use dpow_testkit::builders::{self, NOW, TestNet};
        let t = TestNet::fixed();
        let mut req = builders::request(&t.service);
        req.nonce = nonce;
        let req = builders::sign(req, &t.service);
        let res = builders::solved(&req, &t.worker);
        let r = builders::receipt(&t.service, &req, res, NOW);
        StoredReceipt {
            accepted_ms: NOW,
            id: r.id(),
            bytes: r.bytes().to_vec(),
        }
    }

    /// A store of an older dpow kept every receipt twice, once as a Kademlia record: opening it
    /// drops that copy, and the receipts are served from the ledger's own.
    #[test]
    fn the_old_dht_copy_is_dropped_and_receipts_are_served_from_the_ledger() {
        use super::super::Books;
        use dpow_testkit::builders::{self, NOW, TestNet};
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        {
            let mut o = Options::default();
            o.create_if_missing(true);
            o.create_missing_column_families(true);
            let names = FAMILIES.iter().chain([&OLD_CF_KAD]);
            let db = DB::open_cf(&o, dir.path(), names).unwrap();
            let kad = db.cf_handle(OLD_CF_KAD).unwrap();
            db.put_cf(kad, [1; 32], b"a second copy").unwrap();
        }
        let r = TestNet::fixed().receipt(0, NOW);
        {
            let store = Arc::new(Store::open(dir.path()).unwrap());
            let mut books = Books::open(store.clone(), 86_400_000, builders::NET).unwrap();
            books.ingest(&r).unwrap();
            books.sync().unwrap();
        }
        let names = DB::list_cf(&Options::default(), dir.path()).unwrap();
        assert!(!names.iter().any(|n| n == OLD_CF_KAD), "{names:?}");
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.receipt_bytes(&r.id()).unwrap().unwrap(), r.bytes());
        assert_eq!(s.receipt_bytes(&MessageId([9; 32])).unwrap(), None);
    }

    /// A store written without the books' indexes (by an older dpow) has them built from its
    /// receipts at first open, trusting their signatures; `--verify-store` checks them.
    #[test]
    fn old_stores_are_indexed_at_start_trusting_signatures_and_verify_store_checks_them() {
        use super::super::Books;
        use std::sync::Arc;
        let net = dpow_testkit::builders::NET;
        let good = signed(1);
        // A bit flipped in the last byte, the service's signature: the id (a hash of what is
        // signed) and the structure still hold, only the signature check can tell.
        let mut bad_signature = signed(2);
        *bad_signature.bytes.last_mut().unwrap() ^= 1;
        // A bit flipped in the payload: its id no longer matches the key it is stored under.
        let mut bad_payload = signed(3);
        let mid = bad_payload.bytes.len() / 2;
        bad_payload.bytes[mid] ^= 1;
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Arc::new(Store::open(dir.path()).unwrap());
            s.write_receipts(&[good.clone(), bad_signature.clone(), bad_payload], &[])
                .unwrap();
            let books = Books::open_for_node(s, 10_000, net, false).unwrap();
            assert_eq!(
                books.len().unwrap(),
                2,
                "the payload fault is caught without signatures"
            );
            assert!(books.contains(&good.id).unwrap());
            assert!(books.contains(&bad_signature.id).unwrap());
        }
        let s = Arc::new(Store::open(dir.path()).unwrap());
        assert_eq!(
            s.receipts().count(),
            2,
            "the receipt that failed was deleted"
        );
        let books = Books::open_for_node(s.clone(), 10_000, net, true).unwrap();
        assert_eq!(books.len().unwrap(), 1);
        assert!(books.contains(&good.id).unwrap());
        let left: Vec<_> = s.receipts().map(Result::unwrap).collect();
        assert_eq!(
            left,
            vec![good],
            "--verify-store deleted the forged signature"
        );
    }

    #[test]
    fn receipts_survive_reopening_in_time_order() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.write_receipts(&[receipt(30, 3), receipt(10, 1), receipt(20, 2)], &[])
                .unwrap();
            s.write_receipts(&[], &[(20, MessageId([2; 32]))]).unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        let all: Vec<_> = s.receipts().map(Result::unwrap).collect();
        assert_eq!(all, vec![receipt(10, 1), receipt(30, 3)]);
        let some: Vec<_> = s.receipts_between(11, 31).map(Result::unwrap).collect();
        assert_eq!(some, vec![receipt(30, 3)]);
        assert_eq!(s.receipts_between(0, 10).count(), 0);
    }

    #[test]
    fn precache_and_registry_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.precache_put(&[7; 32], b"line", &[]).unwrap();
            s.registry_put(&[1; 32], 2, b"second").unwrap();
            s.registry_put(&[1; 32], 1, b"first").unwrap();
            s.precache_put(&[8; 32], b"gone", &[]).unwrap();
            s.precache_put(&[9; 32], b"next", &[[8; 32]]).unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(
            s.precache_lines().unwrap(),
            vec![b"line".to_vec(), b"next".to_vec()]
        );
        assert_eq!(
            s.registry_entries().unwrap(),
            vec![b"first".to_vec(), b"second".to_vec()]
        );
    }

    #[test]
    fn another_schema_is_refused_and_a_second_opener_is_told() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        // RocksDB holds a lock: a second process (or handle) gets a clear error.
        let second = Store::open(dir.path()).unwrap_err();
        assert!(matches!(second, StoreError::Open { .. }), "{second}");
        s.set_meta("schema", b"dpow-store-0").unwrap();
        drop(s);
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Schema { .. }), "{err}");
    }
}
