//! What every peer checks before it accepts and forwards a gossiped message.
//!
//! Gossipsub runs with application validation: a node hands each message's bytes to a
//! [`Validator`] and forwards it only if the check passes. A rejection carries a
//! [`RejectReason`], and [`RejectReason::penalise`] says whether the peer that sent it is to
//! blame (so its score drops and it is eventually cut off) or whether an honest peer could
//! have sent it too (clocks and registries differ slightly between nodes while news spreads),
//! in which case the message is dropped without blame.
//!
//! Everything here is pure: the clock is the `now_ms` argument and the registry is passed in.
//! The validator's only state is the replay cache of request ids already accepted.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;

use dpow_keys::PublicKey;
use serde::Deserialize;

use crate::checkpoint::{Checkpoint, Finality};
use crate::envelope::{MessageKind, Signed, Unverified};
use crate::messages::{
    Receipt, RegistryEntry, RequestId, TimePolicy, WorkCancel, WorkRequest, WorkResult,
    WorkerStatus,
};
use crate::registry::{Registry, RegistryError};
use crate::volume::{VolumeMeter, VolumePolicy};
use crate::{NetworkId, Profile, ProtocolError, work_value};

/// How many accepted request ids the replay cache remembers by default.
pub const DEFAULT_REPLAY_CAPACITY: usize = 200_000;

/// A worker status older than this is stale (workers announce themselves more often).
pub const STATUS_MAX_AGE_MS: u64 = 120_000;

/// What a [`Validator`] enforces.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatorConfig {
    /// The network whose signatures are accepted: a message signed for another is refused.
    pub network: NetworkId,
    /// The network's difficulty profile: requests outside its bounds are refused.
    pub profile: Profile,
    /// The timing rules for requests (lifetime, clock skew).
    pub time: TimePolicy,
    /// How many accepted request ids to remember for replay detection.
    pub replay_capacity: usize,
    /// When epochs close: receipts for final epochs are refused ([`Validator::check_open`]).
    pub finality: Finality,
    /// Graduated anti-spam: a request that takes its service past its budget in a window is
    /// refused as [`RejectReason::OverBudget`] (not forwarded), see [`crate::volume`].
    pub volume: VolumePolicy,
}

impl ValidatorConfig {
    /// The default time policy and replay capacity for network `network` running `profile`.
    pub fn new(profile: Profile, network: NetworkId) -> Self {
        ValidatorConfig {
            network,
            profile,
            time: TimePolicy::default(),
            replay_capacity: DEFAULT_REPLAY_CAPACITY,
            finality: Finality {
                epoch_ms: crate::ledger::DEFAULT_EPOCH_MS,
                max_lifetime_ms: TimePolicy::default().max_lifetime_ms,
                grace_ms: Finality::DEFAULT_GRACE_MS,
            },
            volume: VolumePolicy::default(),
        }
    }
}

/// Why a message was refused. One value per distinct cause, so nodes can count them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum RejectReason {
    /// The bytes are not a well-formed envelope of the expected kind (truncated, malformed,
    /// trailing bytes, non-canonical, wrong kind, or a payload breaking its structural rules).
    Undecodable,
    /// Longer than the limit for its kind.
    Oversized,
    /// The signature does not verify under the key the payload names.
    BadSignature,
    /// A protocol version this node does not speak.
    UnknownVersion,
    /// A request from a service that is not registered.
    UnknownService,
    /// A request from a banned service.
    BannedService,
    /// A result or status from a banned worker.
    BannedWorker,
    /// A registry entry signed by a key that is not one of the network's registrars.
    UnknownRegistrar,
    /// Past its expiry.
    Expired,
    /// Dated further in the future than the allowed clock skew.
    NotYetValid,
    /// A validity window longer than the time policy allows.
    TooLongLived,
    /// A request already accepted once.
    Replay,
    /// A difficulty outside the network profile's bounds.
    DifficultyOutOfProfile,
    /// Work whose value is below the requested difficulty.
    InvalidWork,
    /// A result whose root is not the request's root.
    WrongRoot,
    /// A result or cancel for a request this node does not know.
    UnknownRequest,
    /// A cancel signed by a service other than the one that made the request.
    NotRequester,
    /// A worker status too old to describe the worker now.
    Stale,
    /// A receipt for an epoch that is final (its books closed), not vouched for by a
    /// checkpoint; or a checkpoint for an epoch not yet final.
    FinalEpoch,
    /// A result for a request already answered: dropped, never forwarded.
    Answered,
    /// This node cannot take it now (its disk is behind or failing); the sender may offer it
    /// again later.
    Busy,
    /// A worker status too soon after the same worker's previous one
    /// ([`crate::flow::MIN_STATUS_INTERVAL_MS`]).
    TooFrequent,
    /// A request that takes its service past the anti-spam budget of a window
    /// ([`crate::volume`]): not forwarded.
    OverBudget,
}

impl RejectReason {
    /// Every reason, in declaration order.
    pub const ALL: &'static [RejectReason] = &[
        RejectReason::Undecodable,
        RejectReason::Oversized,
        RejectReason::BadSignature,
        RejectReason::UnknownVersion,
        RejectReason::UnknownService,
        RejectReason::BannedService,
        RejectReason::BannedWorker,
        RejectReason::UnknownRegistrar,
        RejectReason::Expired,
        RejectReason::NotYetValid,
        RejectReason::TooLongLived,
        RejectReason::Replay,
        RejectReason::DifficultyOutOfProfile,
        RejectReason::InvalidWork,
        RejectReason::WrongRoot,
        RejectReason::UnknownRequest,
        RejectReason::NotRequester,
        RejectReason::Stale,
        RejectReason::FinalEpoch,
        RejectReason::Answered,
        RejectReason::Busy,
        RejectReason::TooFrequent,
        RejectReason::OverBudget,
    ];

    /// A short snake_case name, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Undecodable => "undecodable",
            RejectReason::Oversized => "oversized",
            RejectReason::BadSignature => "bad_signature",
            RejectReason::UnknownVersion => "unknown_version",
            RejectReason::UnknownService => "unknown_service",
            RejectReason::BannedService => "banned_service",
            RejectReason::BannedWorker => "banned_worker",
            RejectReason::UnknownRegistrar => "unknown_registrar",
            RejectReason::Expired => "expired",
            RejectReason::NotYetValid => "not_yet_valid",
            RejectReason::TooLongLived => "too_long_lived",
            RejectReason::Replay => "replay",
            RejectReason::DifficultyOutOfProfile => "difficulty_out_of_profile",
            RejectReason::InvalidWork => "invalid_work",
            RejectReason::WrongRoot => "wrong_root",
            RejectReason::UnknownRequest => "unknown_request",
            RejectReason::NotRequester => "not_requester",
            RejectReason::Stale => "stale",
            RejectReason::FinalEpoch => "final_epoch",
            RejectReason::Answered => "answered",
            RejectReason::Busy => "busy",
            RejectReason::TooFrequent => "too_frequent",
            RejectReason::OverBudget => "over_budget",
        }
    }

    /// Whether the peer that sent such a message is to blame for it.
    ///
    /// True for what an honest peer never forwards because every node would have refused it
    /// the same way: broken or oversized bytes, bad signatures, entries from non-registrars,
    /// difficulties outside the network-wide profile, and results or cancels that contradict
    /// a request the sender must have known (a result is only forwarded by nodes that know
    /// its request). False where honest peers can disagree for a while: unknown versions
    /// (a peer mid-upgrade), registrations and bans still spreading, clocks that differ
    /// (expired, not yet valid, stale), time policies (each node sets its own), replays
    /// (gossip redelivers once its duplicate cache forgets), and requests a late joiner never saw.
    pub fn penalise(self) -> bool {
        match self {
            RejectReason::Undecodable
            | RejectReason::Oversized
            | RejectReason::BadSignature
            | RejectReason::UnknownRegistrar
            | RejectReason::DifficultyOutOfProfile
            | RejectReason::InvalidWork
            | RejectReason::WrongRoot
            | RejectReason::NotRequester => true,
            RejectReason::UnknownVersion
            | RejectReason::UnknownService
            | RejectReason::BannedService
            | RejectReason::BannedWorker
            | RejectReason::Expired
            | RejectReason::NotYetValid
            | RejectReason::TooLongLived
            | RejectReason::Replay
            | RejectReason::UnknownRequest
            | RejectReason::Stale
            | RejectReason::FinalEpoch
            | RejectReason::Answered
            | RejectReason::Busy
            | RejectReason::TooFrequent
            | RejectReason::OverBudget => false,
        }
    }

    /// The reason for a decoding or verification error.
    pub fn of(error: &ProtocolError) -> RejectReason {
        match error {
            ProtocolError::Oversized { .. } => RejectReason::Oversized,
            ProtocolError::UnknownVersion { .. } => RejectReason::UnknownVersion,
            ProtocolError::BadSignature { .. } => RejectReason::BadSignature,
            ProtocolError::Expired { .. } => RejectReason::Expired,
            ProtocolError::NotYetValid { .. } => RejectReason::NotYetValid,
            ProtocolError::DifficultyOutOfBounds { .. } => RejectReason::DifficultyOutOfProfile,
            ProtocolError::InsufficientWork { .. } => RejectReason::InvalidWork,
            ProtocolError::Truncated { .. }
            | ProtocolError::Malformed { .. }
            | ProtocolError::TrailingBytes { .. }
            | ProtocolError::NonCanonical { .. }
            | ProtocolError::WrongDomain { .. }
            | ProtocolError::Invalid { .. } => RejectReason::Undecodable,
            // Not produced by decoding; listed so a new variant has to be placed here.
            ProtocolError::WrongLength { .. }
            | ProtocolError::BadHex { .. }
            | ProtocolError::BadMultiplier(_)
            | ProtocolError::UnknownName { .. }
            | ProtocolError::BadProfile(_) => RejectReason::Undecodable,
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused message: the reason and what exactly was wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct Rejected {
    /// The kind of problem.
    pub reason: RejectReason,
    /// What exactly was wrong, for logs.
    pub detail: String,
}

impl Rejected {
    /// A rejection for `reason`, explained by `detail`.
    pub fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Rejected {
            reason,
            detail: detail.into(),
        }
    }
}

impl From<ProtocolError> for Rejected {
    fn from(e: ProtocolError) -> Self {
        Rejected::new(RejectReason::of(&e), e.to_string())
    }
}

/// The rejection for a request whose service is past its anti-spam budget.
fn over_budget(service: &PublicKey) -> Rejected {
    Rejected::new(
        RejectReason::OverBudget,
        format!("service {service} is past its anti-spam budget for now"),
    )
}

/// The rejection for a registry refusal met while checking a message.
fn registry_rejection(e: RegistryError) -> Rejected {
    let reason = match &e {
        RegistryError::UnknownService { .. } => RejectReason::UnknownService,
        RegistryError::BannedService { .. } => RejectReason::BannedService,
        RegistryError::BannedWorker { .. } => RejectReason::BannedWorker,
        RegistryError::UnknownRegistrar { .. } => RejectReason::UnknownRegistrar,
        // Refusals of `Registry::apply`, which the checks here never call: an entry seen before.
        RegistryError::Duplicate { .. }
        | RegistryError::Conflict { .. }
        | RegistryError::PendingFull { .. } => RejectReason::Replay,
    };
    Rejected::new(reason, e.to_string())
}

/// Request ids already accepted, each remembered until its request expires (plus the allowed
/// skew). When full, the id whose memory ends soonest is forgotten first.
#[derive(Clone, Debug)]
struct ReplayCache {
    /// Each id with the time its memory ends.
    seen: HashMap<RequestId, u64>,
    /// `(remember until, id)`, soonest first. Holds exactly the ids in `seen`: an id is never
    /// inserted twice (a second sighting is a replay) and leaves both at once.
    by_expiry: BinaryHeap<Reverse<(u64, RequestId)>>,
    capacity: usize,
}

impl ReplayCache {
    fn new(capacity: usize) -> Self {
        ReplayCache {
            seen: HashMap::new(),
            by_expiry: BinaryHeap::new(),
            capacity,
        }
    }

    /// Forget ids whose memory ended before `now_ms`.
    fn prune(&mut self, now_ms: u64) {
        while let Some(Reverse((until, id))) = self.by_expiry.peek().copied() {
            if until >= now_ms {
                break;
            }
            self.by_expiry.pop();
            self.seen.remove(&id);
        }
    }

    /// Whether `id` is remembered at `now_ms` (an id whose memory ended counts as forgotten
    /// even before the next [`ReplayCache::prune`]).
    fn contains_at(&self, id: &RequestId, now_ms: u64) -> bool {
        self.seen.get(id).is_some_and(|until| *until >= now_ms)
    }

    fn insert(&mut self, id: RequestId, until: u64) {
        if self.capacity == 0 {
            return;
        }
        while self.seen.len() >= self.capacity {
            match self.by_expiry.pop() {
                Some(Reverse((_, old))) => self.seen.remove(&old),
                None => break,
            };
        }
        if let std::collections::hash_map::Entry::Vacant(e) = self.seen.entry(id) {
            e.insert(until);
            self.by_expiry.push(Reverse((until, id)));
        }
    }

    fn len(&self) -> usize {
        self.seen.len()
    }
}

/// Checks gossiped messages before they are accepted and forwarded.
#[derive(Clone, Debug)]
pub struct Validator {
    config: ValidatorConfig,
    replay: ReplayCache,
    volume: VolumeMeter,
}

impl Validator {
    /// A validator enforcing `config`, with an empty replay cache.
    pub fn new(config: ValidatorConfig) -> Self {
        let replay = ReplayCache::new(config.replay_capacity);
        let volume = VolumeMeter::new(config.volume.clone());
        Validator {
            config,
            replay,
            volume,
        }
    }

    /// What this validator enforces.
    pub fn config(&self) -> &ValidatorConfig {
        &self.config
    }

    /// Check a gossiped work request: [`Validator::screen_request`], its signature, then
    /// [`Validator::admit_request`].
    pub fn check_request(
        &mut self,
        bytes: &[u8],
        registry: &Registry,
        now_ms: u64,
    ) -> Result<Signed<WorkRequest>, Rejected> {
        self.replay.prune(now_ms);
        let signed = self.screen_request(bytes, registry, now_ms)?.verify()?;
        self.admit_request(signed, now_ms)
    }

    /// Everything about a gossiped work request but its signature, cheapest first: the
    /// envelope (size, version, structure), the registry (service registered and not banned),
    /// the time window ([`TimePolicy`] at `now_ms`), replay (an id accepted before), the
    /// difficulty against the profile's bounds, and whether its service has budget left
    /// ([`crate::volume`], looked at, not counted). Changes nothing.
    pub fn screen_request(
        &self,
        bytes: &[u8],
        registry: &Registry,
        now_ms: u64,
    ) -> Result<Unverified<WorkRequest>, Rejected> {
        let u = Unverified::<WorkRequest>::decode(bytes, &self.config.network)?;
        let req = u.payload();
        registry
            .check_service(&req.service)
            .map_err(registry_rejection)?;
        req.check_time(now_ms, &self.config.time).map_err(|e| {
            let reason = match e {
                // check_time's only structural complaint is the lifetime.
                ProtocolError::Invalid { .. } => RejectReason::TooLongLived,
                ref other => RejectReason::of(other),
            };
            Rejected::new(reason, e.to_string())
        })?;
        self.refuse_replay(&u.id(), now_ms)?;
        self.config.profile.check(req.difficulty)?;
        if self
            .volume
            .peek(&req.service, req.difficulty, now_ms)
            .over_budget
        {
            return Err(over_budget(&req.service));
        }
        Ok(u)
    }

    /// Take a screened request whose signature verified: refused if a copy was admitted
    /// meanwhile (signatures may be checked out of order, off the caller's thread) or if its
    /// service is now past its budget; otherwise counted against that budget and remembered
    /// until the request expires.
    pub fn admit_request(
        &mut self,
        signed: Signed<WorkRequest>,
        now_ms: u64,
    ) -> Result<Signed<WorkRequest>, Rejected> {
        self.replay.prune(now_ms);
        self.refuse_replay(&signed.id(), now_ms)?;
        let req = signed.payload();
        if self
            .volume
            .count(req.service, req.difficulty, now_ms)
            .over_budget
        {
            return Err(over_budget(&req.service));
        }
        let until = req.expires_ms.saturating_add(self.config.time.max_skew_ms);
        self.replay.insert(signed.id(), until);
        Ok(signed)
    }

    fn refuse_replay(&self, id: &RequestId, now_ms: u64) -> Result<(), Rejected> {
        // An id whose memory ended is forgotten at the next prune: treat it so already.
        if self.replay.contains_at(id, now_ms) {
            return Err(Rejected::new(
                RejectReason::Replay,
                format!("work request {id} was already accepted"),
            ));
        }
        Ok(())
    }

    /// Check a gossiped work result against its request, which the caller looked up by the id
    /// the result names ([`peek_request_id`] reads it without verifying). `None` is
    /// [`RejectReason::UnknownRequest`]: not the sender's fault, this node may have joined
    /// late. Checks the envelope, that the worker is not banned, that the request has not
    /// expired (with the allowed skew), that the roots match, and that the work value meets the
    /// requested difficulty.
    pub fn check_result(
        &self,
        bytes: &[u8],
        request: Option<&Signed<WorkRequest>>,
        registry: &Registry,
        now_ms: u64,
    ) -> Result<Signed<WorkResult>, Rejected> {
        Ok(self
            .screen_result(bytes, request, registry, now_ms)?
            .verify()?)
    }

    /// [`Validator::check_result`] but for the signature.
    pub fn screen_result(
        &self,
        bytes: &[u8],
        request: Option<&Signed<WorkRequest>>,
        registry: &Registry,
        now_ms: u64,
    ) -> Result<Unverified<WorkResult>, Rejected> {
        let signed = Unverified::<WorkResult>::decode(bytes, &self.config.network)?;
        let res = signed.payload();
        let request = known_request(request, &res.request, MessageKind::WorkResult)?;
        let req = request.payload();
        registry
            .check_worker(&res.worker)
            .map_err(registry_rejection)?;
        let deadline = req.expires_ms.saturating_add(self.config.time.max_skew_ms);
        if now_ms >= deadline {
            return Err(Rejected::from(ProtocolError::Expired {
                kind: MessageKind::WorkResult.domain(),
                expires_ms: req.expires_ms,
                now_ms,
            }));
        }
        if res.root != req.root {
            return Err(Rejected::new(
                RejectReason::WrongRoot,
                format!(
                    "result root {} is not the root {} of request {}",
                    res.root,
                    req.root,
                    request.id()
                ),
            ));
        }
        let value = work_value(&req.root, res.work);
        if value < req.difficulty {
            return Err(Rejected::from(ProtocolError::InsufficientWork {
                root: req.root.to_string(),
                work: res.work.to_string(),
                value: value.to_string(),
                threshold: req.difficulty.to_string(),
            }));
        }
        Ok(signed)
    }

    /// Check a gossiped cancel: the envelope, and that it is signed by the service that made
    /// the request (looked up by the caller as for [`Validator::check_result`]).
    pub fn check_cancel(
        &self,
        bytes: &[u8],
        request: Option<&Signed<WorkRequest>>,
    ) -> Result<Signed<WorkCancel>, Rejected> {
        Ok(self.screen_cancel(bytes, request)?.verify()?)
    }

    /// [`Validator::check_cancel`] but for the signature.
    pub fn screen_cancel(
        &self,
        bytes: &[u8],
        request: Option<&Signed<WorkRequest>>,
    ) -> Result<Unverified<WorkCancel>, Rejected> {
        let signed = Unverified::<WorkCancel>::decode(bytes, &self.config.network)?;
        let cancel = signed.payload();
        let request = known_request(request, &cancel.request, MessageKind::WorkCancel)?;
        if cancel.service != request.payload().service {
            return Err(Rejected::new(
                RejectReason::NotRequester,
                format!(
                    "cancel of request {} signed by {}, but the request is {}'s",
                    request.id(),
                    cancel.service,
                    request.payload().service
                ),
            ));
        }
        Ok(signed)
    }

    /// Check a gossiped worker status: the envelope, that the worker is not banned, and that
    /// it was made within the clock skew of `now_ms` and at most [`STATUS_MAX_AGE_MS`] ago.
    pub fn check_status(
        &self,
        bytes: &[u8],
        registry: &Registry,
        now_ms: u64,
    ) -> Result<Signed<WorkerStatus>, Rejected> {
        Ok(self.screen_status(bytes, registry, now_ms)?.verify()?)
    }

    /// [`Validator::check_status`] but for the signature.
    pub fn screen_status(
        &self,
        bytes: &[u8],
        registry: &Registry,
        now_ms: u64,
    ) -> Result<Unverified<WorkerStatus>, Rejected> {
        let signed = Unverified::<WorkerStatus>::decode(bytes, &self.config.network)?;
        let status = signed.payload();
        registry
            .check_worker(&status.worker)
            .map_err(registry_rejection)?;
        self.config
            .time
            .not_in_future(MessageKind::WorkerStatus, status.created_ms, now_ms)?;
        let age = now_ms.saturating_sub(status.created_ms);
        if age > STATUS_MAX_AGE_MS {
            return Err(Rejected::new(
                RejectReason::Stale,
                format!(
                    "worker status from {} is {age} ms old, over the {STATUS_MAX_AGE_MS} ms allowed",
                    status.worker
                ),
            ));
        }
        Ok(signed)
    }

    /// A receipt from the network: decoding checks its three signatures, that the result
    /// answers the request, the work and the price; here, that the service is registered
    /// (banned or not), that the request's difficulty is within the network's profile (the
    /// network never carried a request outside it), and that the service accepted it while the request was alive (give or take
    /// the clock skew) and not in the future. Whether it is new is the ledger's business.
    pub fn check_receipt(
        &self,
        bytes: &[u8],
        registry: &Registry,
        now_ms: u64,
    ) -> Result<Signed<Receipt>, Rejected> {
        Ok(self.screen_receipt(bytes, registry, now_ms)?.verify()?)
    }

    /// [`Validator::check_receipt`] but for the signatures.
    pub fn screen_receipt(
        &self,
        bytes: &[u8],
        registry: &Registry,
        now_ms: u64,
    ) -> Result<Unverified<Receipt>, Rejected> {
        let signed = Unverified::<Receipt>::decode(bytes, &self.config.network)?;
        let receipt = signed.payload();
        let request = receipt.request.payload();
        match registry.check_service(&request.service) {
            // A ban stops new requests, not the books: work done before it is still owed,
            // and every node must keep the same receipts.
            Ok(_) | Err(RegistryError::BannedService { .. }) => {}
            Err(e) => return Err(registry_rejection(e)),
        }
        // A request the network would have refused was never made: no receipt for it counts.
        self.config.profile.check(request.difficulty)?;
        self.config
            .time
            .not_in_future(MessageKind::Receipt, receipt.accepted_ms, now_ms)?;
        let skew = self.config.time.max_skew_ms;
        if receipt.accepted_ms.saturating_add(skew) < request.created_ms
            || receipt.accepted_ms > request.expires_ms.saturating_add(skew)
        {
            return Err(Rejected::new(
                RejectReason::Expired,
                format!(
                    "receipt accepted at {} outside its request's lifetime {}..{}",
                    receipt.accepted_ms, request.created_ms, request.expires_ms
                ),
            ));
        }
        Ok(signed)
    }

    /// Refuse a result (or any message naming a request first) for a request that
    /// `is_answered` says already has its answer: checked on the raw bytes, before anything
    /// else, because once a request is answered its nonce may be public and a later result
    /// for it is a copy. Never forwarded; not blamed on the sender (it may not know yet).
    pub fn refuse_answered(
        bytes: &[u8],
        is_answered: impl Fn(&RequestId) -> bool,
    ) -> Result<(), Rejected> {
        match peek_request_id(bytes) {
            Some(id) if is_answered(&id) => Err(Rejected::new(
                RejectReason::Answered,
                format!("a result for request {id}, already answered"),
            )),
            _ => Ok(()),
        }
    }

    /// Refuse a verified receipt whose epoch is final at `now_ms` (see
    /// [`crate::checkpoint`]). A node calls this for every receipt except those a checkpoint
    /// it holds vouches for.
    pub fn check_open(&self, receipt: &Signed<Receipt>, now_ms: u64) -> Result<(), Rejected> {
        self.check_open_at(receipt.payload().accepted_ms, now_ms)
    }

    /// [`Validator::check_open`] for a receipt accepted at `accepted_ms` (checked or not).
    pub fn check_open_at(&self, accepted_ms: u64, now_ms: u64) -> Result<(), Rejected> {
        let f = &self.config.finality;
        let epoch = crate::ledger::epoch_of(accepted_ms, f.epoch_ms);
        if f.is_final(epoch, now_ms) {
            return Err(Rejected::new(
                RejectReason::FinalEpoch,
                format!(
                    "receipt for epoch {epoch}, final since {} (now {now_ms})",
                    f.final_at(epoch)
                ),
            ));
        }
        Ok(())
    }

    /// Check a registrar's checkpoint: the envelope, a genesis registrar's signature, this
    /// network's epoch length, and an epoch that is final at `now_ms`.
    pub fn check_checkpoint(
        &self,
        bytes: &[u8],
        registry: &Registry,
        now_ms: u64,
    ) -> Result<Signed<Checkpoint>, Rejected> {
        Ok(self.screen_checkpoint(bytes, registry, now_ms)?.verify()?)
    }

    /// [`Validator::check_checkpoint`] but for the signature.
    pub fn screen_checkpoint(
        &self,
        bytes: &[u8],
        registry: &Registry,
        now_ms: u64,
    ) -> Result<Unverified<Checkpoint>, Rejected> {
        let signed = Unverified::<Checkpoint>::decode(bytes, &self.config.network)?;
        let c = signed.payload();
        if !registry.is_registrar(&c.registrar) {
            return Err(registry_rejection(RegistryError::UnknownRegistrar {
                registrar: c.registrar,
            }));
        }
        let f = &self.config.finality;
        if c.epoch_ms != f.epoch_ms {
            return Err(Rejected::new(
                RejectReason::Undecodable,
                format!(
                    "checkpoint for {} ms epochs on a network of {} ms epochs",
                    c.epoch_ms, f.epoch_ms
                ),
            ));
        }
        self.config
            .time
            .not_in_future(MessageKind::Checkpoint, c.created_ms, now_ms)?;
        if !f.is_final(c.epoch, now_ms) {
            return Err(Rejected::new(
                RejectReason::FinalEpoch,
                format!("checkpoint for epoch {}, which is not final yet", c.epoch),
            ));
        }
        Ok(signed)
    }

    /// Check a gossiped registry entry: the envelope, that its signer is one of the
    /// network's registrars, that the registry does not hold it already, and that it is not dated beyond the clock skew after `now_ms`
    /// (order never follows dates, but a date from the future is a lie every node can see).
    /// Applying it (ordering, duplicates, equivocations) is [`Registry::apply`]'s job.
    pub fn check_registry(
        &self,
        bytes: &[u8],
        registry: &Registry,
        now_ms: u64,
    ) -> Result<Signed<RegistryEntry>, Rejected> {
        Ok(self.screen_registry(bytes, registry, now_ms)?.verify()?)
    }

    /// [`Validator::check_registry`] but for the signature.
    pub fn screen_registry(
        &self,
        bytes: &[u8],
        registry: &Registry,
        now_ms: u64,
    ) -> Result<Unverified<RegistryEntry>, Rejected> {
        let signed = Unverified::<RegistryEntry>::decode(bytes, &self.config.network)?;
        let e = signed.payload();
        if !registry.is_registrar(&e.registrar) {
            return Err(registry_rejection(RegistryError::UnknownRegistrar {
                registrar: e.registrar,
            }));
        }
        if registry.holds(&e.registrar, e.seq, &signed.id()) {
            return Err(registry_rejection(RegistryError::Duplicate {
                registrar: e.registrar,
                seq: e.seq,
            }));
        }
        self.config
            .time
            .not_in_future(MessageKind::Registry, e.created_ms, now_ms)?;
        Ok(signed)
    }

    /// How many request ids the replay cache holds.
    pub fn seen_requests(&self) -> usize {
        self.replay.len()
    }
}

/// The request a result or cancel refers to, if the caller found it and it is the one named.
fn known_request<'a>(
    request: Option<&'a Signed<WorkRequest>>,
    named: &RequestId,
    kind: MessageKind,
) -> Result<&'a Signed<WorkRequest>, Rejected> {
    match request {
        Some(r) if r.id() == *named => Ok(r),
        Some(r) => Err(Rejected::new(
            RejectReason::UnknownRequest,
            format!(
                "{} names request {named}, but request {} was given",
                kind.domain(),
                r.id()
            ),
        )),
        None => Err(Rejected::new(
            RejectReason::UnknownRequest,
            format!(
                "{} for request {named}, which this node does not know",
                kind.domain()
            ),
        )),
    }
}

/// The leading fields of an envelope, read without verifying anything.
#[derive(Deserialize)]
struct EnvelopeHead<'a> {
    version: u8,
    kind: u8,
    #[serde(borrow)]
    payload: &'a [u8],
}

/// The leading field of a result or cancel payload (`WorkResult::request` is first; a
/// cancel's service key comes first, then the request).
#[derive(Deserialize)]
struct ResultHead {
    request: RequestId,
}

#[derive(Deserialize)]
struct CancelHead {
    _service: PublicKey,
    request: RequestId,
}

/// The request id named by a work result or cancel envelope, read **without verifying it**:
/// for looking up the request to pass to [`Validator::check_result`] or
/// [`Validator::check_cancel`], which do verify. `None` if the bytes do not start like a
/// result or cancel of this protocol version.
pub fn peek_request_id(bytes: &[u8]) -> Option<RequestId> {
    let (head, _) = postcard::take_from_bytes::<EnvelopeHead<'_>>(bytes).ok()?;
    if head.version != crate::PROTOCOL_VERSION {
        return None;
    }
    if head.kind == MessageKind::WorkResult as u8 {
        let (r, _) = postcard::take_from_bytes::<ResultHead>(head.payload).ok()?;
        Some(r.request)
    } else if head.kind == MessageKind::WorkCancel as u8 {
        let (c, _) = postcard::take_from_bytes::<CancelHead>(head.payload).ok()?;
        Some(c.request)
    } else {
        None
    }
}
