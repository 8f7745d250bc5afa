//! The registry: which services the network serves and which workers it refuses, built from
//! registrar-signed [`RegistryEntry`]s.
//!
//! A network's genesis names its registrars. Each registrar numbers its entries 1, 2, 3, ...
//! without gaps; entries spread by gossip, and a node that joins late fetches them from a peer
//! ([`Registry::entries`]). Messages arrive in any order, so [`Registry::apply`] holds an entry
//! whose predecessors are missing (in a bounded pending set) and applies it once the gap fills.
//! For each registrar the *applied* entries are therefore exactly the longest gap-free prefix of
//! the entries received, whatever the order they came in.
//!
//! # The convergence rule
//!
//! The state is a pure function of the **set** of applied entries, never of the order they were
//! applied in, so two nodes holding the same entries answer every question the same way and
//! have the same [`Registry::digest`]. Ties between registrars are broken by the *order key*
//! `(created_ms, registrar, seq)`, a total order on entries:
//!
//! - a service is **registered** iff at least one `RegisterService` entry names it; its name is
//!   the one in the register entry with the greatest order key, and `registered_ms` is the
//!   smallest `created_ms` of its register entries (when it was first admitted);
//! - its **credits** are the sum of every `GrantCredits` entry naming it (saturating at
//!   `u64::MAX`). Grants made before the service is registered are kept and count once it is;
//! - a service is **banned** iff, of the `BanService`/`UnbanService` entries naming it, the one
//!   with the greatest order key is a ban (its reason is reported). A ban may precede the
//!   registration; the service is then banned from the moment it registers;
//! - a **worker** is banned by the same rule over `BanWorker`/`UnbanWorker`. Workers need no
//!   registration: any key not banned may work.
//!
//! Each of those is a minimum, a maximum or a sum, all commutative, so the state can be kept
//! up to date entry by entry and still equals the state computed from the whole set at once.
//!
//! A registrar that signs two different entries with one sequence number has equivocated; the
//! first one a node saw is kept and the other is refused with [`RegistryError::Conflict`]. Only
//! then may two honest nodes disagree, and the conflict is what an operator needs to see.

use std::collections::BTreeMap;

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use dpow_keys::PublicKey;

use crate::envelope::{MessageId, Signed};
use crate::messages::{Credits, RegistryAction, RegistryEntry};

/// The most entries held waiting for a gap to fill, over all registrars.
pub const MAX_PENDING: usize = 4096;

/// Why the registry refused an entry or a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The entry is signed by a key that is not one of the network's registrars.
    #[error("registry entry signed by {registrar}, which is not a registrar of this network")]
    UnknownRegistrar {
        /// The signer.
        registrar: PublicKey,
    },
    /// The same entry was received before (harmless: gossip delivers things twice).
    #[error("registry entry {seq} of registrar {registrar} is already known")]
    Duplicate {
        /// The registrar.
        registrar: PublicKey,
        /// The entry's sequence number.
        seq: u64,
    },
    /// A different entry with the same registrar and sequence number is already known: the
    /// registrar signed two entries with one number. The first one seen is kept.
    #[error(
        "registrar {registrar} signed two different entries numbered {seq}; keeping the first seen"
    )]
    Conflict {
        /// The registrar.
        registrar: PublicKey,
        /// The sequence number used twice.
        seq: u64,
    },
    /// Too many entries are already waiting for earlier ones to arrive.
    #[error(
        "registry entry {seq} of registrar {registrar} arrived ahead of a gap, and {limit} entries are already waiting"
    )]
    PendingFull {
        /// The registrar.
        registrar: PublicKey,
        /// The entry's sequence number.
        seq: u64,
        /// The limit on waiting entries.
        limit: usize,
    },
    /// The service has never been registered.
    #[error("service {service} is not registered")]
    UnknownService {
        /// The service key.
        service: PublicKey,
    },
    /// The service is banned.
    #[error("service {service} is banned: {reason}")]
    BannedService {
        /// The service key.
        service: PublicKey,
        /// The reason the registrar gave.
        reason: String,
    },
    /// The worker is banned.
    #[error("worker {worker} is banned: {reason}")]
    BannedWorker {
        /// The worker key.
        worker: PublicKey,
        /// The reason the registrar gave.
        reason: String,
    },
}

/// What the registry knows about a registered service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    /// Its display name (from the latest register entry).
    pub name: String,
    /// `Some(reason)` while it is banned.
    pub banned: Option<String>,
    /// Every credit granted to it, ever.
    pub granted: Credits,
    /// When it was first registered (unix ms, the register entry's `created_ms`).
    pub registered_ms: u64,
}

/// The total order used to pick the latest of several entries: `(created_ms, registrar, seq)`.
type OrderKey = (u64, PublicKey, u64);

fn order_key(e: &RegistryEntry) -> OrderKey {
    (e.created_ms, e.registrar, e.seq)
}

/// One registrar's entries: applied (seq `1..=applied.len()`) and waiting for a gap.
#[derive(Clone, Debug, Default)]
struct Log {
    applied: Vec<Signed<RegistryEntry>>,
    pending: BTreeMap<u64, Signed<RegistryEntry>>,
}

impl Log {
    fn next(&self) -> u64 {
        self.applied.len() as u64 + 1
    }
}

/// A ban or unban, with the order key of the entry that set it.
#[derive(Clone, Debug)]
struct BanState {
    at: OrderKey,
    reason: Option<String>,
}

/// Everything known about one service key, registered or not.
#[derive(Clone, Debug)]
struct ServiceRecord {
    info: ServiceInfo,
    /// The order key of the register entry the name came from; `None` until registered.
    named_at: Option<OrderKey>,
    ban: Option<BanState>,
}

impl ServiceRecord {
    fn new() -> Self {
        ServiceRecord {
            info: ServiceInfo {
                name: String::new(),
                banned: None,
                granted: Credits(0),
                registered_ms: u64::MAX,
            },
            named_at: None,
            ban: None,
        }
    }

    fn registered(&self) -> Option<&ServiceInfo> {
        self.named_at.map(|_| &self.info)
    }
}

/// Record a ban (`Some(reason)`) or unban (`None`) set at `at`, if it is later than the current one.
fn set_ban(slot: &mut Option<BanState>, at: OrderKey, reason: Option<&String>) -> bool {
    if slot.as_ref().is_some_and(|b| b.at >= at) {
        return false;
    }
    *slot = Some(BanState {
        at,
        reason: reason.cloned(),
    });
    true
}

/// The registry of one network, built from its registrars' entries. See the module docs for
/// how entries combine.
#[derive(Clone, Debug)]
pub struct Registry {
    logs: BTreeMap<PublicKey, Log>,
    pending_len: usize,
    services: BTreeMap<PublicKey, ServiceRecord>,
    /// The latest ban or unban of each worker ever named by one.
    workers: BTreeMap<PublicKey, Option<BanState>>,
}

impl Registry {
    /// An empty registry that accepts entries signed by `registrars`.
    pub fn new(registrars: impl IntoIterator<Item = PublicKey>) -> Self {
        Registry {
            logs: registrars
                .into_iter()
                .map(|r| (r, Log::default()))
                .collect(),
            pending_len: 0,
            services: BTreeMap::new(),
            workers: BTreeMap::new(),
        }
    }

    /// Whether `key` is one of the network's registrars.
    pub fn is_registrar(&self, key: &PublicKey) -> bool {
        self.logs.contains_key(key)
    }

    /// The registrars, in key order.
    pub fn registrars(&self) -> impl Iterator<Item = &PublicKey> {
        self.logs.keys()
    }

    /// Apply a verified entry. Entries are numbered per registrar from 1 without gaps: an
    /// entry ahead of the next expected number is held (at most [`MAX_PENDING`] over all
    /// registrars) and applied once the gap fills. Returns the ids of the entries newly
    /// applied: the given one and any it released, in order; empty when it was held.
    pub fn apply(&mut self, entry: Signed<RegistryEntry>) -> Result<Vec<MessageId>, RegistryError> {
        let registrar = entry.payload().registrar;
        let seq = entry.payload().seq;
        let log = self
            .logs
            .get_mut(&registrar)
            .ok_or(RegistryError::UnknownRegistrar { registrar })?;
        let next = log.next();
        let known = if seq < next {
            // seq >= 1 is a structural rule of RegistryEntry, checked on decode and sign.
            usize::try_from(seq - 1)
                .ok()
                .and_then(|i| log.applied.get(i))
        } else {
            log.pending.get(&seq)
        };
        if let Some(known) = known {
            return Err(if known.id() == entry.id() {
                RegistryError::Duplicate { registrar, seq }
            } else {
                RegistryError::Conflict { registrar, seq }
            });
        }
        if seq > next {
            if self.pending_len >= MAX_PENDING {
                return Err(RegistryError::PendingFull {
                    registrar,
                    seq,
                    limit: MAX_PENDING,
                });
            }
            log.pending.insert(seq, entry);
            self.pending_len += 1;
            return Ok(Vec::new());
        }
        // seq == next: apply it, then everything it unblocks.
        let mut released = vec![entry];
        let mut want = seq + 1;
        while let Some(e) = log.pending.remove(&want) {
            released.push(e);
            want += 1;
        }
        self.pending_len -= released.len() - 1;
        let mut ids = Vec::with_capacity(released.len());
        for e in released {
            ids.push(e.id());
            Self::effect(&mut self.services, &mut self.workers, e.payload());
            log.applied.push(e);
        }
        Ok(ids)
    }

    /// Fold one entry into the derived state (commutative; see the module docs).
    fn effect(
        services: &mut BTreeMap<PublicKey, ServiceRecord>,
        workers: &mut BTreeMap<PublicKey, Option<BanState>>,
        e: &RegistryEntry,
    ) {
        let at = order_key(e);
        match &e.action {
            RegistryAction::RegisterService { service, name } => {
                let rec = services.entry(*service).or_insert_with(ServiceRecord::new);
                rec.info.registered_ms = rec.info.registered_ms.min(e.created_ms);
                if rec.named_at.is_none_or(|n| n < at) {
                    rec.named_at = Some(at);
                    rec.info.name.clone_from(name);
                }
            }
            RegistryAction::GrantCredits { service, credits } => {
                let rec = services.entry(*service).or_insert_with(ServiceRecord::new);
                rec.info.granted = Credits(rec.info.granted.0.saturating_add(credits.0));
            }
            RegistryAction::BanService { service, reason } => {
                let rec = services.entry(*service).or_insert_with(ServiceRecord::new);
                if set_ban(&mut rec.ban, at, Some(reason)) {
                    rec.info.banned = Some(reason.clone());
                }
            }
            RegistryAction::UnbanService { service } => {
                let rec = services.entry(*service).or_insert_with(ServiceRecord::new);
                if set_ban(&mut rec.ban, at, None) {
                    rec.info.banned = None;
                }
            }
            RegistryAction::BanWorker { worker, reason } => {
                set_ban(workers.entry(*worker).or_default(), at, Some(reason));
            }
            RegistryAction::UnbanWorker { worker } => {
                set_ban(workers.entry(*worker).or_default(), at, None);
            }
        }
    }

    /// The sequence number `registrar`'s next new entry should carry: one past the highest
    /// this node holds from it, applied or pending (0 for a key that is not a registrar).
    /// When entries are pending, the node is missing some and a new entry would wait behind
    /// the gap too; fetch the missing ones first ([`Registry::missing`]).
    pub fn next_seq(&self, registrar: &PublicKey) -> u64 {
        self.logs.get(registrar).map_or(0, |log| {
            log.pending
                .last_key_value()
                .map_or(log.next(), |(&seq, _)| seq + 1)
        })
    }

    /// The sequence numbers missing from `registrar`'s log, as a range, when later entries
    /// are pending: what to ask peers for.
    pub fn missing(&self, registrar: &PublicKey) -> Option<std::ops::Range<u64>> {
        let log = self.logs.get(registrar)?;
        let (&first_pending, _) = log.pending.first_key_value()?;
        Some(log.next()..first_pending)
    }

    /// A registered service.
    pub fn service(&self, key: &PublicKey) -> Option<&ServiceInfo> {
        self.services.get(key).and_then(ServiceRecord::registered)
    }

    /// Every registered service, in key order.
    pub fn services(&self) -> impl Iterator<Item = (&PublicKey, &ServiceInfo)> {
        self.services
            .iter()
            .filter_map(|(k, r)| r.registered().map(|info| (k, info)))
    }

    /// Whether the network serves `key`: registered and not banned.
    pub fn check_service(&self, key: &PublicKey) -> Result<(), RegistryError> {
        let info = self
            .service(key)
            .ok_or(RegistryError::UnknownService { service: *key })?;
        match &info.banned {
            Some(reason) => Err(RegistryError::BannedService {
                service: *key,
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Whether the network accepts work from `key`: any key not banned.
    pub fn check_worker(&self, key: &PublicKey) -> Result<(), RegistryError> {
        match self
            .workers
            .get(key)
            .and_then(|b| b.as_ref()?.reason.as_ref())
        {
            Some(reason) => Err(RegistryError::BannedWorker {
                worker: *key,
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Every banned worker with the reason given, in key order.
    pub fn banned_workers(&self) -> impl Iterator<Item = (&PublicKey, &str)> {
        self.workers
            .iter()
            .filter_map(|(k, b)| b.as_ref()?.reason.as_deref().map(|r| (k, r)))
    }

    /// Every applied entry, each registrar's in sequence order (registrars in key order): what
    /// a node sends a peer that joined late. Applying them in this order needs no pending set.
    pub fn entries(&self) -> Vec<Signed<RegistryEntry>> {
        self.logs
            .values()
            .flat_map(|log| log.applied.iter().cloned())
            .collect()
    }

    /// How many entries are applied.
    pub fn len(&self) -> usize {
        self.logs.values().map(|log| log.applied.len()).sum()
    }

    /// Whether no entry is applied yet.
    pub fn is_empty(&self) -> bool {
        self.logs.values().all(|log| log.applied.is_empty())
    }

    /// How many entries wait for a gap to fill.
    pub fn pending_len(&self) -> usize {
        self.pending_len
    }

    /// A digest of the applied entries: blake2b-256 over their ids, sorted by
    /// `(registrar, seq)`. Nodes that hold the same entries have the same digest (and, by the
    /// convergence rule, the same registry), so peers can compare registries cheaply.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Blake2b::<U32>::new();
        h.update(b"dpow/1/registry-digest\0");
        for log in self.logs.values() {
            for e in &log.applied {
                h.update(e.id().0);
            }
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(&h.finalize());
        out
    }
}
