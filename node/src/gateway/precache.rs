//! The gateway's precached work, bounded: by root, with each account's current root, the
//! oldest entry evicted when the map is full. Callers choose the roots (`work_precache` takes
//! any hash), so without a cap the map would grow with every call.

use std::collections::{BTreeMap, HashMap};

use dpow_keys::PublicKey;
use dpow_protocol::Root;

use super::CacheEntry;

/// Most precached entries held (and stored) at once; the oldest is evicted beyond it.
pub const MAX_PRECACHED: usize = 100_000;

/// Precached work by root, each account's current root, and the insertion order.
pub(super) struct Precache {
    by_root: HashMap<Root, (u64, CacheEntry)>,
    by_account: HashMap<PublicKey, Root>,
    /// Insertion stamp -> root, oldest first.
    order: BTreeMap<u64, Root>,
    next: u64,
    cap: usize,
    evicted: u64,
}

impl Precache {
    /// An empty map that holds at most `cap` entries (at least one).
    pub(super) fn with_cap(cap: usize) -> Precache {
        Precache {
            by_root: HashMap::new(),
            by_account: HashMap::new(),
            order: BTreeMap::new(),
            next: 0,
            cap: cap.max(1),
            evicted: 0,
        }
    }

    /// The entry for `root`.
    pub(super) fn get(&self, root: &Root) -> Option<&CacheEntry> {
        self.by_root.get(root).map(|(_, e)| e)
    }

    /// How many entries are held.
    pub(super) fn len(&self) -> usize {
        self.by_root.len()
    }

    /// How many entries were evicted to stay within the cap, ever.
    pub(super) fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Keep `entry` as the newest. Returns the roots it displaced: its account's previous
    /// root (that account moved on, so the old frontier's work is useless) and any evicted
    /// for room, oldest first.
    pub(super) fn insert(&mut self, entry: CacheEntry) -> Vec<Root> {
        let root = entry.root;
        let mut gone = Vec::new();
        if let Some(account) = entry.account
            && let Some(old) = self.by_account.insert(account, root)
            && old != root
            && self.remove(&old)
        {
            gone.push(old);
        }
        if let Some((stamp, _)) = self.by_root.remove(&root) {
            self.order.remove(&stamp);
        }
        let stamp = self.next;
        self.next = self.next.wrapping_add(1);
        self.order.insert(stamp, root);
        self.by_root.insert(root, (stamp, entry));
        while self.by_root.len() > self.cap {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some((_, e)) = self.by_root.remove(&oldest) {
                if let Some(a) = e.account
                    && self.by_account.get(&a) == Some(&oldest)
                {
                    self.by_account.remove(&a);
                }
                self.evicted = self.evicted.saturating_add(1);
                gone.push(oldest);
            }
        }
        gone
    }

    /// Forget `root`; whether it was held.
    fn remove(&mut self, root: &Root) -> bool {
        match self.by_root.remove(root) {
            Some((stamp, _)) => {
                self.order.remove(&stamp);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use dpow_protocol::Work;

    use super::*;

    fn entry(i: u8, account: Option<u8>) -> CacheEntry {
        CacheEntry {
            root: Root([i; 32]),
            work: Work(u64::from(i)),
            account: account.map(|a| PublicKey([a; 32])),
        }
    }

    #[test]
    fn the_map_stays_bounded_and_evicts_the_oldest() {
        let mut p = Precache::with_cap(3);
        for i in 0..3 {
            assert!(p.insert(entry(i, None)).is_empty());
        }
        // Seen again: the newest now, nothing displaced.
        assert!(p.insert(entry(0, None)).is_empty());
        assert_eq!(p.insert(entry(3, None)), vec![Root([1; 32])]);
        assert_eq!(p.insert(entry(4, None)), vec![Root([2; 32])]);
        assert_eq!(p.len(), 3);
        assert_eq!(p.evicted(), 2);
        assert!(p.get(&Root([0; 32])).is_some());
        assert!(p.get(&Root([1; 32])).is_none());
        for i in 5..200 {
            p.insert(entry(i, None));
            assert!(p.len() <= 3);
        }
        assert_eq!(p.evicted(), 197);
        assert_eq!(p.order.len(), 3);
    }

    #[test]
    fn an_account_keeps_only_its_current_root() {
        let mut p = Precache::with_cap(2);
        p.insert(entry(1, Some(9)));
        // The account moved on: its old root goes, and is not counted as an eviction.
        assert_eq!(p.insert(entry(2, Some(9))), vec![Root([1; 32])]);
        assert_eq!((p.len(), p.evicted()), (1, 0));
        p.insert(entry(3, None));
        // Full: the account's root is the oldest and is evicted with its account link.
        assert_eq!(p.insert(entry(4, None)), vec![Root([2; 32])]);
        assert!(p.by_account.is_empty());
        assert_eq!(p.evicted(), 1);
        // A new root for the account evicts nothing that is not its own.
        assert_eq!(p.insert(entry(5, Some(9))), vec![Root([3; 32])]);
        assert_eq!(p.by_account.get(&PublicKey([9; 32])), Some(&Root([5; 32])));
    }
}
