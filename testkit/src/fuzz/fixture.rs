//! The fixed network every harness checks messages against: one registrar, a registered
//! service, a banned service and a banned worker, the test profile, and one valid message of
//! each kind (the seeds mutations start from).

use std::sync::OnceLock;

use dpow_keys::SecretKey;
use dpow_protocol::validate::{Validator, ValidatorConfig};
use dpow_protocol::{
    Checkpoint, Priority, Profile, Receipt, RegistryEntry, Signed, WorkCancel, WorkRequest,
    WorkResult, WorkerStatus,
};

use crate::builders::{self, NOW, TestNet, key, sign};

/// The network and messages the harnesses use; see [`fixture`].
pub struct Fixture {
    /// Registrar key 1, service key 10 ("faucet", 1000 credits), worker key 20.
    pub net: TestNet,
    /// Key 11: registered, then banned.
    pub banned_service: SecretKey,
    /// Key 21: a banned worker.
    pub banned_worker: SecretKey,
    /// What the validator enforces: the test profile and the default time rules.
    pub config: ValidatorConfig,
    /// Every registry entry applied, in order.
    pub entries: Vec<Signed<RegistryEntry>>,
    /// A request of the service, valid at [`NOW`].
    pub request: Signed<WorkRequest>,
    /// The worker's valid answer to it.
    pub result: Signed<WorkResult>,
    /// The service's receipt for that answer.
    pub receipt: Signed<Receipt>,
    /// The service's cancel of the request.
    pub cancel: Signed<WorkCancel>,
    /// The worker's status, made at [`NOW`].
    pub status: Signed<WorkerStatus>,
    /// The registrar's checkpoint of the last epoch final at [`NOW`].
    pub checkpoint: Signed<Checkpoint>,
}

impl Fixture {
    fn new() -> Fixture {
        let mut net = TestNet::fixed();
        let (banned_service, banned_worker) = (key(11), key(21));
        let mut entries = net.registry.entries();
        entries.push(net.apply(builders::grant(&net.service, 1000)));
        entries.push(net.apply(builders::register(&banned_service, "spammer")));
        entries.push(net.apply(builders::ban_service(&banned_service, "spam")));
        entries.push(net.apply(builders::ban_worker(&banned_worker, "fake work")));
        let config = ValidatorConfig::new(Profile::test(), crate::builders::NET);
        let request = sign(
            WorkRequest {
                account: Some(net.worker.public()),
                priority: Priority::Normal,
                ..builders::request(&net.service)
            },
            &net.service,
        );
        let result = builders::solved(&request, &net.worker);
        let receipt = builders::receipt(&net.service, &request, result.clone(), NOW - 500);
        let cancel = builders::cancel(&request, &net.service, NOW);
        let status = sign(builders::status(&net.worker, NOW), &net.worker);
        let epoch = config.finality.last_final(NOW).unwrap();
        let checkpoint = sign(
            builders::checkpoint(&net.registrar, epoch, config.finality.epoch_ms, NOW),
            &net.registrar,
        );
        Fixture {
            net,
            banned_service,
            banned_worker,
            config,
            entries,
            request,
            result,
            receipt,
            cancel,
            status,
            checkpoint,
        }
    }

    /// A validator with an empty replay cache.
    pub fn validator(&self) -> Validator {
        Validator::new(self.config.clone())
    }
}

/// The fixture, made once per process.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(Fixture::new)
}
