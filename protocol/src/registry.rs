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
//! have the same [`Registry::digest`]. No rule looks at `created_ms`, the registrar's own
//! unchecked clock: a registrar cannot win anything by misdating an entry.
//!
//! - **Within one registrar**, entries are ordered by `seq` alone: its *word* on a subject (a
//!   service's name, a service's ban, a worker's ban) is what its entry with the highest `seq`
//!   about that subject says. A later entry always overrides an earlier one of the same
//!   registrar, whatever dates they carry.
//! - **Across registrars** there is no order at all; their words are combined by rules that
//!   need none:
//!   - a service is **registered** iff at least one `RegisterService` entry names it; its name
//!     is the word of the registrar with the smallest key among those that registered it, and
//!     `registered_ms` is the smallest `created_ms` of its register entries (for display only:
//!     it is the registrar's claim and decides nothing);
//!   - its **credits** are the sum of every `GrantCredits` entry naming it (saturating at
//!     `u64::MAX`). Grants made before the service is registered are kept and count once it is;
//!   - a service is **banned** iff at least one registrar's word on it is a ban: a ban holds
//!     until the registrar that made it lifts it (another registrar's unban does not), and the
//!     reason reported is that of the banning registrar with the smallest key. A ban may
//!     precede the registration; the service is then banned from the moment it registers;
//!   - a **worker** is banned by the same rule over `BanWorker`/`UnbanWorker`. Workers need no
//!     registration: any key not banned may work.
//!
//! Each of those is a maximum (per registrar, by `seq`), a minimum, a sum or an "any", all
//! commutative, so the state can be kept up to date entry by entry and still equals the state
//! computed from the whole set at once.
//!
//! # Equivocation
//!
//! A registrar that signs two different entries with one sequence number has equivocated.
//! Every node keeps the one with the smaller message id ([`MessageId`], compared as bytes),
//! whichever arrived first: when the later arrival wins, it replaces the other (applied or
//! pending) and the derived state is recomputed from the applied entries. The loser is refused
//! with [`RegistryError::Conflict`]; either way the equivocation is recorded
//! ([`Registry::equivocations`], [`Registry::equivocation_count`]) so an operator sees it.

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
    /// A different entry with the same registrar and sequence number is known, and it has the
    /// smaller message id: the registrar signed two entries with one number, and every node
    /// keeps the one with the smaller id (see the module docs).
    #[error(
        "registrar {registrar} signed two different entries numbered {seq}; keeping {kept}, the one with the smaller id"
    )]
    Conflict {
        /// The registrar.
        registrar: PublicKey,
        /// The sequence number used twice.
        seq: u64,
        /// The id of the entry kept.
        kept: MessageId,
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
    /// Its display name: the latest given by the registrar with the smallest key that registered it.
    pub name: String,
    /// `Some(reason)` while it is banned.
    pub banned: Option<String>,
    /// Every credit granted to it, ever.
    pub granted: Credits,
    /// When it was first registered (unix ms, the smallest `created_ms` of its register
    /// entries): the registrars' claim, shown but never used to decide anything.
    pub registered_ms: u64,
}

/// The most equivocations remembered for [`Registry::equivocations`] (all are counted).
pub const MAX_EQUIVOCATIONS: usize = 256;

/// Two different entries signed by one registrar with one sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Equivocation {
    /// The registrar.
    pub registrar: PublicKey,
    /// The sequence number used twice.
    pub seq: u64,
    /// The entry every node keeps: the smaller id of those seen.
    pub kept: MessageId,
    /// The entry met last that lost to it (or that it replaced).
    pub dropped: MessageId,
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

/// Each registrar's latest word on one subject: `registrar -> (seq, what it said)`.
type Words<T> = BTreeMap<PublicKey, (u64, T)>;

/// Record `registrar`'s word `value` from its entry `seq`, if no later entry of it spoke.
fn say<T>(words: &mut Words<T>, registrar: PublicKey, seq: u64, value: T) {
    match words.get(&registrar) {
        Some((at, _)) if *at >= seq => {}
        _ => {
            words.insert(registrar, (seq, value));
        }
    }
}

/// The reason of the banning registrar with the smallest key, if any registrar's word is a ban.
fn ban_reason(words: &Words<Option<String>>) -> Option<&String> {
    words.values().find_map(|(_, reason)| reason.as_ref())
}

/// Everything known about one service key, registered or not.
#[derive(Clone, Debug)]
struct ServiceRecord {
    /// Derived from the fields below by [`ServiceRecord::refresh`].
    info: ServiceInfo,
    /// Each registrar's latest name for it; empty until registered.
    names: Words<String>,
    /// Each registrar's latest ban (`Some(reason)`) or unban (`None`).
    bans: Words<Option<String>>,
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
            names: BTreeMap::new(),
            bans: BTreeMap::new(),
        }
    }

    fn refresh(&mut self) {
        if let Some((_, name)) = self.names.values().next() {
            self.info.name.clone_from(name);
        }
        self.info.banned = ban_reason(&self.bans).cloned();
    }

    fn registered(&self) -> Option<&ServiceInfo> {
        (!self.names.is_empty()).then_some(&self.info)
    }
}

/// The registry of one network, built from its registrars' entries. See the module docs for
/// how entries combine.
#[derive(Clone, Debug)]
pub struct Registry {
    logs: BTreeMap<PublicKey, Log>,
    pending_len: usize,
    services: BTreeMap<PublicKey, ServiceRecord>,
    /// Each registrar's latest ban or unban of each worker ever named by one.
    workers: BTreeMap<PublicKey, Words<Option<String>>>,
    /// Equivocations seen, by `(registrar, seq)`, at most [`MAX_EQUIVOCATIONS`].
    equivocations: BTreeMap<(PublicKey, u64), Equivocation>,
    /// Conflicting entries met, counted whether remembered or not.
    equivocation_count: u64,
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
            equivocations: BTreeMap::new(),
            equivocation_count: 0,
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
    ///
    /// An entry that wins an equivocation (see the module docs) replaces the one it beats and
    /// returns its own id if that one was applied (empty if it was held); keep it, as it is
    /// the one every node ends up with.
    pub fn apply(&mut self, entry: Signed<RegistryEntry>) -> Result<Vec<MessageId>, RegistryError> {
        let registrar = entry.payload().registrar;
        let seq = entry.payload().seq;
        let log = self
            .logs
            .get_mut(&registrar)
            .ok_or(RegistryError::UnknownRegistrar { registrar })?;
        let next = log.next();
        // seq >= 1 is a structural rule of RegistryEntry, checked on decode and sign.
        let applied_at = usize::try_from(seq.saturating_sub(1))
            .ok()
            .filter(|_| seq < next);
        let known = match applied_at {
            Some(i) => log.applied.get_mut(i),
            None => log.pending.get_mut(&seq),
        };
        if let Some(known) = known {
            let (old, new) = (known.id(), entry.id());
            if old == new {
                return Err(RegistryError::Duplicate { registrar, seq });
            }
            let kept = old.min(new);
            self.equivocation_count = self.equivocation_count.saturating_add(1);
            let record = Equivocation {
                registrar,
                seq,
                kept,
                dropped: old.max(new),
            };
            if self.equivocations.len() < MAX_EQUIVOCATIONS
                || self.equivocations.contains_key(&(registrar, seq))
            {
                self.equivocations.insert((registrar, seq), record);
            }
            if new > old {
                return Err(RegistryError::Conflict {
                    registrar,
                    seq,
                    kept,
                });
            }
            *known = entry;
            if applied_at.is_none() {
                return Ok(Vec::new());
            }
            self.rebuild();
            return Ok(vec![new]);
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
        // Numbers come from the network: the last one, u64::MAX, has no successor.
        let mut want = seq.checked_add(1);
        while let Some(e) = want.and_then(|w| log.pending.remove(&w)) {
            released.push(e);
            want = want.and_then(|w| w.checked_add(1));
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

    /// Recompute the derived state from the applied entries (after an equivocation replaced
    /// an applied entry, whose effect cannot be taken back one by one: grants saturate).
    fn rebuild(&mut self) {
        self.services.clear();
        self.workers.clear();
        for log in self.logs.values() {
            for e in &log.applied {
                Self::effect(&mut self.services, &mut self.workers, e.payload());
            }
        }
    }

    /// Fold one entry into the derived state (commutative; see the module docs).
    fn effect(
        services: &mut BTreeMap<PublicKey, ServiceRecord>,
        workers: &mut BTreeMap<PublicKey, Words<Option<String>>>,
        e: &RegistryEntry,
    ) {
        let (by, seq) = (e.registrar, e.seq);
        let service = match &e.action {
            RegistryAction::RegisterService { service, .. }
            | RegistryAction::GrantCredits { service, .. }
            | RegistryAction::BanService { service, .. }
            | RegistryAction::UnbanService { service } => {
                services.entry(*service).or_insert_with(ServiceRecord::new)
            }
            RegistryAction::BanWorker { worker, reason } => {
                say(
                    workers.entry(*worker).or_default(),
                    by,
                    seq,
                    Some(reason.clone()),
                );
                return;
            }
            RegistryAction::UnbanWorker { worker } => {
                say(workers.entry(*worker).or_default(), by, seq, None);
                return;
            }
        };
        match &e.action {
            RegistryAction::RegisterService { name, .. } => {
                service.info.registered_ms = service.info.registered_ms.min(e.created_ms);
                say(&mut service.names, by, seq, name.clone());
            }
            RegistryAction::GrantCredits { credits, .. } => {
                service.info.granted = Credits(service.info.granted.0.saturating_add(credits.0));
            }
            RegistryAction::BanService { reason, .. } => {
                say(&mut service.bans, by, seq, Some(reason.clone()));
            }
            RegistryAction::UnbanService { .. } => say(&mut service.bans, by, seq, None),
            RegistryAction::BanWorker { .. } | RegistryAction::UnbanWorker { .. } => {}
        }
        service.refresh();
    }

    /// Whether the entry `id` is the one held for `registrar`'s number `seq`, applied or
    /// waiting: a copy, which a node refuses before checking its signature.
    pub fn holds(&self, registrar: &PublicKey, seq: u64, id: &MessageId) -> bool {
        let Some(log) = self.logs.get(registrar) else {
            return false;
        };
        let known = if seq < log.next() {
            usize::try_from(seq.saturating_sub(1))
                .ok()
                .and_then(|i| log.applied.get(i))
        } else {
            log.pending.get(&seq)
        };
        known.is_some_and(|k| k.id() == *id)
    }

    /// The sequence number `registrar`'s next new entry should carry: one past the highest
    /// this node holds from it, applied or pending (0 for a key that is not a registrar).
    /// When entries are pending, the node is missing some and a new entry would wait behind
    /// the gap too; fetch the missing ones first ([`Registry::missing`]).
    pub fn next_seq(&self, registrar: &PublicKey) -> u64 {
        self.logs.get(registrar).map_or(0, |log| {
            log.pending
                .last_key_value()
                .map_or(log.next(), |(&seq, _)| seq.saturating_add(1))
        })
    }

    /// How many entries of each registrar this node has applied, registrars in key order (as
    /// [`Registry::registrars`]): what a node tells a peer that compares books with it, so
    /// that an entry gossip never brought is noticed ([`Registry::behind`]).
    pub fn heads(&self) -> Vec<u64> {
        self.logs.values().map(|l| l.applied.len() as u64).collect()
    }

    /// Whether a peer of the same network, that told `theirs` ([`Registry::heads`]), has
    /// applied entries of some registrar that this node has not (one it lacks, or one held
    /// pending behind a gap). Counts past the registrars are ignored.
    pub fn behind(&self, theirs: &[u64]) -> bool {
        self.logs
            .values()
            .zip(theirs)
            .any(|(log, &n)| n > log.applied.len() as u64)
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
        match self.workers.get(key).and_then(ban_reason) {
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
            .filter_map(|(k, words)| ban_reason(words).map(|r| (k, r.as_str())))
    }

    /// The equivocations seen (at most [`MAX_EQUIVOCATIONS`]), by registrar and sequence number.
    pub fn equivocations(&self) -> impl Iterator<Item = &Equivocation> {
        self.equivocations.values()
    }

    /// How many conflicting entries this registry has met (each losing arrival and each
    /// replacement counts once), remembered or not.
    pub fn equivocation_count(&self) -> u64 {
        self.equivocation_count
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
    /// convergence rule, the same registry), so peers can compare registries cheaply. Where a
    /// registrar equivocated, only the winner counts, so the digest is a function of the set
    /// of entries received, whatever their order.
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
