//! The messages of a dpow network. Each travels inside a [`Signed`] envelope.
//!
//! Times are unix milliseconds. Keys are ed25519 public keys, printed `dpow_…`; a worker's
//! payout account is a [`NanoAccount`] from its own wallet, printed `nano_…`.

use dpow_keys::{NanoAccount, PublicKey};
use serde::{Deserialize, Serialize};

use crate::envelope::{Message, MessageId, MessageKind, Signed};
use crate::profile::BlockKind;
use crate::{Difficulty, ProtocolError, Root, Work};

/// The id of a work request (the id of its signed envelope).
pub type RequestId = MessageId;

/// How urgently a service wants its work. Workers serve higher classes first.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub enum Priority {
    /// Work computed ahead of need (precache): served when nothing else waits.
    Precache,
    /// Work a wallet is waiting for now.
    Normal,
}

/// Credits: the unit of account. One credit is the expected hashing of one epoch-2 receive
/// (2^23 hashes); a send costs 64.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default, Serialize, Deserialize,
)]
pub struct Credits(pub u64);

impl Credits {
    /// The price of work at `difficulty`: its expected hashes in units of the epoch-2 receive
    /// threshold, rounded up, at least 1. Exact integer arithmetic.
    pub fn price(difficulty: Difficulty) -> Credits {
        let unit = Difficulty::EPOCH2_RECEIVE.distance(); // 2^41
        let d = difficulty.distance(); // 1 ..= 2^64
        Credits(unit.div_ceil(d).max(1) as u64)
    }
}

/// A service asks the network for work.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct WorkRequest {
    /// The registered service asking (and signing).
    pub service: PublicKey,
    /// The block root to work on.
    pub root: Root,
    /// The threshold the work must meet.
    pub difficulty: Difficulty,
    /// The block kind, when the service said which.
    pub kind: Option<BlockKind>,
    /// The account the block belongs to, when known (lets the service precache its next work).
    pub account: Option<PublicKey>,
    /// A number the service never reuses for the same root: makes each request unique.
    pub nonce: u64,
    /// When the service made the request.
    pub created_ms: u64,
    /// After this instant nobody works on it or forwards it.
    pub expires_ms: u64,
    /// Its priority class.
    pub priority: Priority,
    /// The node key (libp2p identity) of the service's node: workers deliver their results to
    /// it directly, so that no relay sees a winning nonce before the service does.
    pub node: PublicKey,
}

/// The limits a node applies to the timing of requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimePolicy {
    /// The longest validity window (`expires_ms - created_ms`) accepted.
    pub max_lifetime_ms: u64,
    /// How far in the future `created_ms` may lie (clock skew between nodes).
    pub max_skew_ms: u64,
}

impl Default for TimePolicy {
    fn default() -> Self {
        TimePolicy {
            max_lifetime_ms: 10 * 60 * 1000,
            max_skew_ms: 5_000,
        }
    }
}

impl TimePolicy {
    /// A message of `kind` dated `created_ms` is not later than `now_ms` plus the clock skew.
    pub fn not_in_future(
        &self,
        kind: MessageKind,
        created_ms: u64,
        now_ms: u64,
    ) -> Result<(), ProtocolError> {
        if created_ms > now_ms.saturating_add(self.max_skew_ms) {
            return Err(ProtocolError::NotYetValid {
                kind: kind.domain(),
                created_ms,
                now_ms,
            });
        }
        Ok(())
    }
}

impl WorkRequest {
    /// Whether the request may be acted on at `now_ms`.
    pub fn check_time(&self, now_ms: u64, policy: &TimePolicy) -> Result<(), ProtocolError> {
        let kind = MessageKind::WorkRequest.domain();
        policy.not_in_future(MessageKind::WorkRequest, self.created_ms, now_ms)?;
        if now_ms >= self.expires_ms {
            return Err(ProtocolError::Expired {
                kind,
                expires_ms: self.expires_ms,
                now_ms,
            });
        }
        if self.expires_ms - self.created_ms > policy.max_lifetime_ms {
            return Err(ProtocolError::Invalid {
                kind,
                reason: format!(
                    "lifetime {} ms is longer than the {} ms allowed",
                    self.expires_ms - self.created_ms,
                    policy.max_lifetime_ms
                ),
            });
        }
        Ok(())
    }
}

impl Message for WorkRequest {
    const KIND: MessageKind = MessageKind::WorkRequest;
    const MAX_BYTES: usize = 320;
    fn signer(&self) -> PublicKey {
        self.service
    }
    fn check(&self) -> Result<(), ProtocolError> {
        if self.expires_ms <= self.created_ms {
            return Err(ProtocolError::Invalid {
                kind: Self::KIND.domain(),
                reason: "expires before it is created".to_string(),
            });
        }
        Ok(())
    }
}

/// A worker's answer to a request.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct WorkResult {
    /// The request answered.
    pub request: RequestId,
    /// The request's root (so the work can be checked with one hash).
    pub root: Root,
    /// The nonce found.
    pub work: Work,
    /// The worker (signer; earns the credits).
    pub worker: PublicKey,
    /// Where the worker's credits for this result are paid; `None` leaves them unclaimed.
    pub payout: Option<NanoAccount>,
}

impl Message for WorkResult {
    const KIND: MessageKind = MessageKind::WorkResult;
    const MAX_BYTES: usize = 256;
    fn signer(&self) -> PublicKey {
        self.worker
    }
}

/// A service withdraws a request (it got work elsewhere, or its caller gave up).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct WorkCancel {
    /// The service that made the request (signer).
    pub service: PublicKey,
    /// The request withdrawn.
    pub request: RequestId,
    /// When it was withdrawn.
    pub created_ms: u64,
}

impl Message for WorkCancel {
    const KIND: MessageKind = MessageKind::WorkCancel;
    const MAX_BYTES: usize = 192;
    fn signer(&self) -> PublicKey {
        self.service
    }
}

/// The service's acknowledgement that a worker's result answered its request: the unit of the
/// ledger. Verifiable alone: three signatures (request, result, receipt) and one hash (work).
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Receipt {
    /// The signed request.
    pub request: Signed<WorkRequest>,
    /// The signed result that answered it first.
    pub result: Signed<WorkResult>,
    /// The credits moved from the service to the worker.
    pub price: Credits,
    /// When the service accepted the result.
    pub accepted_ms: u64,
}

impl Message for Receipt {
    const KIND: MessageKind = MessageKind::Receipt;
    const MAX_BYTES: usize = 768;
    fn signer(&self) -> PublicKey {
        self.request.payload().service
    }
    fn check(&self) -> Result<(), ProtocolError> {
        let kind = Self::KIND.domain();
        let req = self.request.payload();
        let res = self.result.payload();
        let invalid = |reason: &str| ProtocolError::Invalid {
            kind,
            reason: reason.to_string(),
        };
        if res.request != self.request.id() {
            return Err(invalid("the result answers a different request"));
        }
        if res.root != req.root {
            return Err(invalid("the result's root is not the request's root"));
        }
        if self.price != Credits::price(req.difficulty) {
            return Err(invalid(
                "the price is not the price of the requested difficulty",
            ));
        }
        let value = crate::work_value(&req.root, res.work);
        if value < req.difficulty {
            return Err(ProtocolError::InsufficientWork {
                root: req.root.to_string(),
                work: res.work.to_string(),
                value: value.to_string(),
                threshold: req.difficulty.to_string(),
            });
        }
        Ok(())
    }
}

/// Longest service name or reason text in a registry entry, in bytes.
pub const MAX_REGISTRY_TEXT: usize = 128;

/// What a registry entry does.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum RegistryAction {
    /// Admit a service to the network under a display name.
    RegisterService {
        /// The service key.
        service: PublicKey,
        /// A display name.
        name: String,
    },
    /// Add credits to a service (it bought them).
    GrantCredits {
        /// The service key.
        service: PublicKey,
        /// How many.
        credits: Credits,
    },
    /// Stop serving a service.
    BanService {
        /// The service key.
        service: PublicKey,
        /// Why, for the record.
        reason: String,
    },
    /// Serve a banned service again.
    UnbanService {
        /// The service key.
        service: PublicKey,
    },
    /// Stop accepting results from a worker.
    BanWorker {
        /// The worker key.
        worker: PublicKey,
        /// Why, for the record.
        reason: String,
    },
    /// Accept a banned worker's results again.
    UnbanWorker {
        /// The worker key.
        worker: PublicKey,
    },
}

/// A registrar's signed decision. Entries are numbered per registrar from 1 without gaps, and
/// every node applies each registrar's entries in that order.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RegistryEntry {
    /// The registrar (signer).
    pub registrar: PublicKey,
    /// Position in this registrar's sequence, from 1.
    pub seq: u64,
    /// When it was made.
    pub created_ms: u64,
    /// What it does.
    pub action: RegistryAction,
}

impl Message for RegistryEntry {
    const KIND: MessageKind = MessageKind::Registry;
    const MAX_BYTES: usize = 512;
    fn signer(&self) -> PublicKey {
        self.registrar
    }
    fn check(&self) -> Result<(), ProtocolError> {
        let kind = Self::KIND.domain();
        if self.seq == 0 {
            return Err(ProtocolError::Invalid {
                kind,
                reason: "sequence numbers start at 1".to_string(),
            });
        }
        let text = match &self.action {
            RegistryAction::RegisterService { name, .. } => {
                if name.trim().is_empty() {
                    return Err(ProtocolError::Invalid {
                        kind,
                        reason: "service name is empty".to_string(),
                    });
                }
                Some(name)
            }
            RegistryAction::BanService { reason, .. }
            | RegistryAction::BanWorker { reason, .. } => Some(reason),
            RegistryAction::GrantCredits { credits, .. } if credits.0 == 0 => {
                return Err(ProtocolError::Invalid {
                    kind,
                    reason: "a grant of zero credits".to_string(),
                });
            }
            _ => None,
        };
        if let Some(t) = text
            && (t.len() > MAX_REGISTRY_TEXT || t.chars().any(char::is_control))
        {
            return Err(ProtocolError::Invalid {
                kind,
                reason: format!(
                    "text must be at most {MAX_REGISTRY_TEXT} bytes with no control characters"
                ),
            });
        }
        Ok(())
    }
}

/// A worker announces itself: what it can do, how busy it is, and where to pay it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// The worker (signer).
    pub worker: PublicKey,
    /// Measured hash rate, hashes per second.
    pub hash_rate: u64,
    /// Requests waiting in its queue.
    pub queue: u32,
    /// The Nano account its results name for payment, if any (for display: payment follows
    /// the account inside each result, never this one).
    pub payout: Option<NanoAccount>,
    /// When this status was made; a newer one replaces an older one.
    pub created_ms: u64,
}

impl Message for WorkerStatus {
    const KIND: MessageKind = MessageKind::WorkerStatus;
    const MAX_BYTES: usize = 192;
    fn signer(&self) -> PublicKey {
        self.worker
    }
}
