//! Signed messages for tests, with fixed keys ([`key`]) or fresh ones ([`fresh_key`]).
//!
//! Each builder returns a payload with plain defaults, so a test states only what it cares
//! about with struct update syntax, then signs it with [`sign`]:
//!
//! ```
//! use dpow_testkit::builders::{key, request, sign};
//! use dpow_protocol::{Root, WorkRequest};
//! let service = key(10);
//! let req = sign(WorkRequest { root: Root([5; 32]), ..request(&service) }, &service);
//! assert_eq!(req.payload().root, Root([5; 32]));
//! ```

use dpow_keys::{NanoAccount, PublicKey, SecretKey};
use dpow_protocol::registry::Registry;
use dpow_protocol::{
    BlockKind, Checkpoint, Credits, Difficulty, Message, NetworkId, Priority, Profile, Receipt,
    RegistryAction, RegistryEntry, Root, Signed, Work, WorkCancel, WorkRequest, WorkResult,
    WorkerStatus,
};

use crate::reference;

/// The instant tests call "now" (unix ms, November 2023).
pub const NOW: u64 = 1_700_000_000_000;

/// The easiest difficulty the test profile accepts (about 256 hashes): found at once.
pub const EASY: Difficulty = Difficulty(0xff00_0000_0000_0000);

/// The key made from the seed `[n; 32]`: the same on every run.
pub fn key(n: u8) -> SecretKey {
    SecretKey::from_seed([n; 32])
}

/// A key from the system's randomness.
pub fn fresh_key() -> SecretKey {
    SecretKey::generate().unwrap()
}

/// The payout account `[n; 32]` (`n` > 0: all zeros is the burn account).
pub fn account(n: u8) -> NanoAccount {
    NanoAccount::from_bytes([n; 32]).unwrap()
}

/// The network every builder signs for: the id of a made-up canonical genesis.
pub const NET: NetworkId = NetworkId([0x4e; 32]);

/// Another network, for checking that nothing crosses from one to the other.
pub const OTHER_NET: NetworkId = NetworkId([0x0e; 32]);

/// Sign `payload` with `key`, which must be the key the payload names as its signer, for
/// [`NET`].
pub fn sign<T: Message>(payload: T, key: &SecretKey) -> Signed<T> {
    sign_for(payload, key, &NET)
}

/// Sign `payload` with `key` for network `net`.
pub fn sign_for<T: Message>(payload: T, key: &SecretKey, net: &NetworkId) -> Signed<T> {
    Signed::sign(payload, key, net).unwrap()
}

/// A request of `service`: root `[0x42; 32]`, [`EASY`], a receive, nonce 0, made a second
/// before [`NOW`] and valid for a minute after it, normal priority, node key `[7; 32]`.
pub fn request(service: &SecretKey) -> WorkRequest {
    WorkRequest {
        service: service.public(),
        root: Root([0x42; 32]),
        difficulty: EASY,
        kind: Some(BlockKind::Receive),
        account: None,
        nonce: 0,
        created_ms: NOW - 1_000,
        expires_ms: NOW + 60_000,
        priority: Priority::Normal,
        node: PublicKey([7; 32]),
    }
}

/// `worker`'s answer `work` to `req` (the request's root, no payout account).
pub fn result(req: &Signed<WorkRequest>, worker: &SecretKey, work: Work) -> WorkResult {
    WorkResult {
        request: req.id(),
        root: req.payload().root,
        work,
        worker: worker.public(),
        payout: None,
    }
}

/// `worker`'s signed answer to `req` with valid work (found with the reference check).
pub fn solved(req: &Signed<WorkRequest>, worker: &SecretKey) -> Signed<WorkResult> {
    let p = req.payload();
    let work = reference::find_work(&p.root, p.difficulty);
    sign(result(req, worker, work), worker)
}

/// The service's receipt for `res` answering `req`, at the price of the request's difficulty.
pub fn receipt(
    service: &SecretKey,
    req: &Signed<WorkRequest>,
    res: Signed<WorkResult>,
    accepted_ms: u64,
) -> Signed<Receipt> {
    let r = Receipt {
        request: req.clone(),
        result: res,
        price: Credits::price(req.payload().difficulty),
        accepted_ms,
    };
    sign(r, service)
}

/// The service's cancel of `req`.
pub fn cancel(
    req: &Signed<WorkRequest>,
    service: &SecretKey,
    created_ms: u64,
) -> Signed<WorkCancel> {
    sign(
        WorkCancel {
            service: service.public(),
            request: req.id(),
            created_ms,
        },
        service,
    )
}

/// `worker`'s status: a million hashes a second, an empty queue, no payout account.
pub fn status(worker: &SecretKey, created_ms: u64) -> WorkerStatus {
    WorkerStatus {
        worker: worker.public(),
        hash_rate: 1_000_000,
        queue: 0,
        payout: None,
        created_ms,
    }
}

/// A registrar's signed entry number `seq`.
pub fn entry(
    registrar: &SecretKey,
    seq: u64,
    created_ms: u64,
    action: RegistryAction,
) -> Signed<RegistryEntry> {
    sign(
        RegistryEntry {
            registrar: registrar.public(),
            seq,
            created_ms,
            action,
        },
        registrar,
    )
}

/// Register `service` as `name`.
pub fn register(service: &SecretKey, name: &str) -> RegistryAction {
    RegistryAction::RegisterService {
        service: service.public(),
        name: name.to_string(),
    }
}

/// Grant `service` credits.
pub fn grant(service: &SecretKey, credits: u64) -> RegistryAction {
    RegistryAction::GrantCredits {
        service: service.public(),
        credits: Credits(credits),
    }
}

/// Ban `service`.
pub fn ban_service(service: &SecretKey, reason: &str) -> RegistryAction {
    RegistryAction::BanService {
        service: service.public(),
        reason: reason.to_string(),
    }
}

/// Serve `service` again.
pub fn unban_service(service: &SecretKey) -> RegistryAction {
    RegistryAction::UnbanService {
        service: service.public(),
    }
}

/// Ban `worker`.
pub fn ban_worker(worker: &SecretKey, reason: &str) -> RegistryAction {
    RegistryAction::BanWorker {
        worker: worker.public(),
        reason: reason.to_string(),
    }
}

/// A checkpoint of `registrar` for `epoch` of `epoch_ms`-long epochs: digest `[9; 32]`, two
/// receipts, accounts 1 and 2 owed 5 and 7 credits, 3 unclaimed.
pub fn checkpoint(registrar: &SecretKey, epoch: u64, epoch_ms: u64, created_ms: u64) -> Checkpoint {
    Checkpoint {
        registrar: registrar.public(),
        epoch,
        epoch_ms,
        digest: [9; 32],
        receipts: 2,
        credits: vec![(account(1), 5), (account(2), 7)],
        unclaimed: 3,
        created_ms,
    }
}

/// A small network: a registrar, a registered service and a worker, and the registry that
/// the registrar's entries build.
pub struct TestNet {
    /// The genesis registrar.
    pub registrar: SecretKey,
    /// A registered service ("faucet").
    pub service: SecretKey,
    /// A worker (workers need no registration).
    pub worker: SecretKey,
    /// The registry after the service's registration (entry 1).
    pub registry: Registry,
    /// The test profile.
    pub profile: Profile,
}

impl TestNet {
    /// With fresh keys.
    pub fn fresh() -> TestNet {
        TestNet::with_keys(fresh_key(), fresh_key(), fresh_key())
    }

    /// With the fixed keys 1 (registrar), 10 (service) and 20 (worker).
    pub fn fixed() -> TestNet {
        TestNet::with_keys(key(1), key(10), key(20))
    }

    fn with_keys(registrar: SecretKey, service: SecretKey, worker: SecretKey) -> TestNet {
        let mut registry = Registry::new([registrar.public()]);
        registry
            .apply(entry(
                &registrar,
                1,
                NOW - 60_000,
                register(&service, "faucet"),
            ))
            .unwrap();
        TestNet {
            registrar,
            service,
            worker,
            registry,
            profile: Profile::test(),
        }
    }

    /// The registrar's next entry, applied to the registry and returned.
    pub fn apply(&mut self, action: RegistryAction) -> Signed<RegistryEntry> {
        let seq = self.registry.next_seq(&self.registrar.public());
        let e = entry(&self.registrar, seq, NOW - 60_000 + seq, action);
        self.registry.apply(e.clone()).unwrap();
        e
    }

    /// A signed request of the service ([`request`] with `nonce`).
    pub fn request(&self, nonce: u64) -> Signed<WorkRequest> {
        sign(
            WorkRequest {
                nonce,
                ..request(&self.service)
            },
            &self.service,
        )
    }

    /// A valid receipt of the service for the worker's answer to request `nonce`.
    pub fn receipt(&self, nonce: u64, accepted_ms: u64) -> Signed<Receipt> {
        let req = self.request(nonce);
        let res = solved(&req, &self.worker);
        receipt(&self.service, &req, res, accepted_ms)
    }
}
