//! The libp2p behaviours a dpow node runs, and how they are configured.

use std::time::Duration;

use anyhow::Context;
use blake2::digest::consts::U20;
use blake2::{Blake2b, Digest};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    StreamProtocol, allow_block_list, autonat, connection_limits, dcutr, gossipsub, identify,
    identity, kad, memory_connection_limits, relay, request_response,
};
use serde::{Deserialize, Serialize};

/// The largest gossip message a node accepts (the largest envelope is 768 bytes); each
/// message kind has its own, lower limit in the protocol.
pub(crate) const MAX_GOSSIP_BYTES: usize = 2048;
/// The largest gossipsub frame. Gossipsub batches several messages into one frame under load,
/// and a frame over the limit is dropped whole, so this is far above one message.
const MAX_FRAME_BYTES: usize = 256 * 1024;
/// Most registry entries and worker statuses a node offers in `Hello` pages (each list).
pub(crate) const MAX_SYNC_ITEMS: usize = 20_000;
/// The sync protocol's name under the network (`/dpow/<network id>/sync/4`): version 3 paged
/// `Hello` and may answer `Busy`; version 4 adds `Checkpoints`.
pub(crate) const SYNC_PROTOCOL: &str = "sync/4";
/// The most bytes of envelopes in one `Hello` page, by default.
pub const DEFAULT_HELLO_PAGE_BYTES: usize = 256 * 1024;

/// The sync protocol (`/dpow/<network id>/sync/4`): what a node asks a peer for.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum SyncRequest {
    /// On connecting: the registry entries, the latest worker statuses and the newest
    /// checkpoints the peer holds, one page at a time. The pages list them in that order as
    /// one sequence; `from` is the position to start at (0 first, then the answer's `next`).
    Hello {
        /// Position in the sequence of registry entries, statuses and checkpoints.
        from: u64,
    },
    /// The ledger digest of every epoch the peer holds receipts in (newest
    /// [`MAX_SYNC_EPOCHS`]).
    Digests,
    /// The ids of the peer's receipts of one epoch, ascending, starting after `after`.
    Ids {
        /// The epoch.
        epoch: u64,
        /// Continue after this id (32 bytes), for epochs over
        /// [`MAX_SYNC_IDS`](dpow_protocol::replication::MAX_SYNC_IDS) receipts.
        after: Option<serde_bytes_vec::Bytes>,
    },
    /// Receipts by id: `ids` is a concatenation of 32-byte ids, at most [`MAX_SYNC_FETCH`].
    Fetch {
        /// The ids wanted.
        ids: serde_bytes_vec::Bytes,
    },
    /// The registrars' checkpoints the peer holds of these epochs (at most
    /// [`MAX_SYNC_CHECKPOINTS`] epochs): asked when a final epoch's digest differs and no
    /// checkpoint held vouches for the peer's, since one published while this node was cut
    /// off never reaches it by gossip.
    Checkpoints {
        /// The epochs.
        epochs: Vec<u64>,
    },
}

/// One epoch's entry in [`SyncResponse::Digests`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochDigest {
    /// The epoch.
    pub epoch: u64,
    /// Receipts held in it (counted and evidence).
    pub receipts: u64,
    /// `Ledger::epoch_digest`.
    pub digest: serde_bytes_vec::Bytes,
}

/// The answer to a [`SyncRequest`], of the same variant. Everything signed in it is verified
/// on arrival like gossip.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum SyncResponse {
    /// One page of signed registry entries (each registrar's in sequence order), worker
    /// statuses and checkpoints, at most the answering node's page size in bytes.
    Hello {
        /// Registry entries.
        registry: Vec<serde_bytes_vec::Bytes>,
        /// The newest status of each live worker.
        statuses: Vec<serde_bytes_vec::Bytes>,
        /// The newest registrar checkpoints held.
        checkpoints: Vec<serde_bytes_vec::Bytes>,
        /// Where the next page starts (ask `Hello { from: next }`), or `None` after the last.
        next: Option<u64>,
    },
    /// The peer's epoch digests, oldest first.
    Digests {
        /// The peer's epoch length: digests of another length are not comparable.
        epoch_ms: u64,
        /// One entry per epoch held.
        epochs: Vec<EpochDigest>,
        /// How many entries of each registrar the peer has applied, registrars in key order
        /// (`Registry::heads`): an asker that has fewer walks the peer's `Hello` pages again,
        /// since an entry that gossip did not bring comes no other way. Absent from a peer
        /// that does not send it.
        #[serde(default)]
        registry: Vec<u64>,
    },
    /// Receipt ids of one epoch, ascending, concatenated.
    Ids {
        /// The ids.
        ids: serde_bytes_vec::Bytes,
        /// Whether more follow (ask again with `after` = the last id).
        more: bool,
    },
    /// Receipt envelopes, for the ids the peer holds.
    Receipts(Vec<serde_bytes_vec::Bytes>),
    /// Signed checkpoints of the epochs asked, at most [`MAX_SYNC_CHECKPOINTS`] and the
    /// answering node's page size in bytes.
    Checkpoints(Vec<serde_bytes_vec::Bytes>),
    /// Any request: the asker is over its sync budget; ask again after `retry_ms`.
    Busy {
        /// Milliseconds until the asker's budget allows an answer again.
        retry_ms: u64,
    },
}

pub(crate) use dpow_protocol::replication::{MAX_SYNC_EPOCHS, MAX_SYNC_FETCH};
/// Most epochs in one checkpoint request, and most checkpoints in its answer.
pub(crate) const MAX_SYNC_CHECKPOINTS: usize = 16;

/// Byte strings that serialise as CBOR byte strings, not arrays of numbers.
pub(crate) mod serde_bytes_vec {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// One envelope's bytes.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Bytes(pub Vec<u8>);

    impl Serialize for Bytes {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(&self.0)
        }
    }

    impl<'de> Deserialize<'de> for Bytes {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Bytes;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a byte string")
                }
                fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                    Ok(Bytes(v.to_vec()))
                }
                fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                    Ok(Bytes(v))
                }
            }
            d.deserialize_bytes(V)
        }
    }
}

/// A worker's signed result, delivered to the service node named in the request
/// (`/dpow/<network id>/result/1`): only the service sees a winning nonce before its receipt is published.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ResultDelivery {
    /// The signed `WorkResult` envelope.
    pub result: serde_bytes_vec::Bytes,
}

/// The service node's answer to a [`ResultDelivery`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResultAck {
    /// The first valid result: it answers the request; a receipt follows.
    Accepted,
    /// Valid, but the request was already answered (or withdrawn).
    Answered,
    /// Refused: why, in words.
    Refused(String),
}

/// The sync protocol's codec: CBOR with request-response's default limits (1 MiB requests,
/// 10 MiB answers), as [`Behaviour`] runs it. Public so that the decoders can be fuzzed.
pub type SyncCodec = request_response::cbor::codec::Codec<SyncRequest, SyncResponse>;
/// The result delivery protocol's codec (CBOR, the same defaults).
pub type ResultCodec = request_response::cbor::codec::Codec<ResultDelivery, ResultAck>;

/// Every behaviour of a node; one swarm owns it.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) memory: memory_connection_limits::Behaviour,
    pub(crate) per_ip: super::limits::IpLimits,
    pub(crate) identify: identify::Behaviour,
    /// Whether this node is reachable from outside (and a judge of others' reachability).
    pub(crate) autonat: autonat::Behaviour,
    /// Circuit relay v2 for private peers, when this node offers it.
    pub(crate) relay: Toggle<relay::Behaviour>,
    /// Reservations on other peers' relays and circuits through them, when this node is private.
    pub(crate) relay_client: relay::client::Behaviour,
    /// Hole punching: a relayed connection upgraded to a direct one.
    pub(crate) dcutr: dcutr::Behaviour,
    pub(crate) kad: kad::Behaviour<super::records::Records>,
    pub(crate) gossipsub: gossipsub::Behaviour,
    pub(crate) sync: request_response::cbor::Behaviour<SyncRequest, SyncResponse>,
    pub(crate) results: request_response::cbor::Behaviour<ResultDelivery, ResultAck>,
}

/// How long a worker waits for the service node to take a delivered result before it falls
/// back to gossip.
pub(crate) const RESULT_TIMEOUT: Duration = Duration::from_secs(3);

/// The peer id of the node whose key is `node` (node keys are libp2p ed25519 identities).
pub(crate) fn peer_of_key(node: &dpow_keys::PublicKey) -> Option<libp2p::PeerId> {
    let key = identity::ed25519::PublicKey::try_from_bytes(&node.0).ok()?;
    Some(identity::PublicKey::from(key).to_peer_id())
}

/// Copies of each receipt in the DHT, by default.
pub const DEFAULT_REPLICATION: std::num::NonZeroUsize = match std::num::NonZeroUsize::new(3) {
    Some(n) => n,
    None => unreachable!(),
};

/// Network settings that tests and the testnet tune.
#[derive(Clone, Debug)]
pub struct NetTuning {
    /// Gossipsub heartbeat: how fast the mesh forms and repairs.
    pub heartbeat: Duration,
    /// Walk the DHT to find peers beyond the bootstrap nodes.
    pub discovery: bool,
    /// How long gossipsub remembers a message id to drop copies of it.
    pub duplicate_cache: Duration,
    /// How many peers hold each receipt as a Kademlia record (the k closest to its id).
    pub replication: std::num::NonZeroUsize,
    /// How often the node compares its ledger digests with a random peer and fetches what it
    /// lacks (besides once per new connection).
    pub ledger_sync: Duration,
    /// Catch up with peers' ledgers (on connecting and every `ledger_sync`). Off for
    /// short-lived clients that have no use for the books.
    pub ledger: bool,
    /// Books on disk of at least this many receipts compute epoch digests on the event loop
    /// only the first time; after that, the epochs that took receipts are recomputed on a
    /// blocking thread at most every 5 s (a digest reads every id of the epoch: about 0.3 s
    /// for a million), and peers' catch-ups and the statistics get the last one computed.
    /// Smaller books recompute a digest on the event loop when asked after a change.
    pub inline_digest_below: usize,
    /// A light node (the build without the `ledger` feature): it keeps only its own receipts
    /// (those that pay its worker key or that its service key signed) and verifies and
    /// forwards the others without holding them; it runs Kademlia as a client (holds no
    /// records) and offers no receipts to peers that catch up.
    pub light: bool,
    /// How long a worker that won a request (by the service node's answer) waits for its
    /// receipt before counting an unreceipted win against the service.
    pub receipt_wait: Duration,
    /// Unreceipted wins after which a worker treats the service as out of credits.
    pub unreceipted_limit: u64,
    /// A short-lived auditor (`dpow ledger`, `dpow registry checkpoint`): it fetches the
    /// receipts of final epochs during catch-up without a checkpoint vouching for them. It
    /// holds no store and its books are only read, never served as the network's.
    pub auditor: bool,
    /// Fault injection for tests: a dishonest service node that takes work and signs no
    /// receipt for it (workers must notice; see `event_loop::delivery`). Never set it
    /// otherwise.
    pub withhold_receipts: bool,
    /// Fault injection for tests: refuse every registry entry that comes by gossip, as if
    /// gossip had lost it (entries still come in `Hello` pages). Never set it otherwise.
    pub drop_registry_gossip: bool,
    /// What each peer may cost: sync answers, ignored and rejected messages, blocks.
    pub budgets: super::budget::BudgetConfig,
    /// Limits on connections (total, per peer, pending, per IP, memory).
    pub limits: super::limits::ConnectionCaps,
    /// The most bytes of envelopes in one `Hello` page this node answers.
    pub hello_page_bytes: usize,
    /// Whether peers can dial this node: decides Kademlia's mode and relay reservations.
    pub reachability: Reachability,
    /// Offer circuit relay v2 to private peers (with [`relay_limits`]' bounds). It costs
    /// nothing unless this node is reachable and peers ask.
    pub relay_server: bool,
    /// AutoNAT settings: how soon and how often this node asks peers to dial it back, and
    /// whether private addresses count (a LAN or a test network).
    pub autonat: AutoNatTuning,
    /// Check every stored receipt's signatures again at start-up (`--verify-store`), and
    /// delete those that fail. Off by default: the store holds only receipts verified before
    /// they were written.
    pub verify_store: bool,
    /// A light ledger (`--adopt-checkpoints`): a final epoch that a registrar checkpoint
    /// held vouches for, and of which this node holds no receipt, is kept as that
    /// checkpoint alone ([`crate::store::Books::adopt`]) instead of being fetched. Needs the
    /// books on disk.
    pub adopt_checkpoints: bool,
    /// The time this node goes by: the system clock, unless a test shares one it advances
    /// among its in-process nodes.
    pub clock: super::Clock,
}

/// Whether peers can dial this node ([`NetTuning::reachability`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Reachability {
    /// Ask peers to dial back (AutoNAT): a Kademlia client and relayed until some peer
    /// confirms an address. A node that listens only on loopback counts as public (every
    /// peer that can reach it is on the same host).
    #[default]
    Auto,
    /// Reachable: a Kademlia server from the start (a bootstrap or relay node with an open
    /// port, or a test network).
    Public,
    /// Not reachable: a Kademlia client that always keeps a relay reservation.
    Private,
}

impl Reachability {
    /// The setting for a node listening on `listen`: `Auto` on loopback only is `Public`,
    /// since every peer that can reach such a node at all is on the same host (the local
    /// testnet), and AutoNAT would never confirm it.
    pub fn given_listen(self, listen: &[libp2p::Multiaddr]) -> Reachability {
        let loopback = |a: &libp2p::Multiaddr| {
            a.iter().any(|p| match p {
                libp2p::multiaddr::Protocol::Ip4(ip) => ip.is_loopback(),
                libp2p::multiaddr::Protocol::Ip6(ip) => ip.is_loopback(),
                _ => false,
            })
        };
        match self {
            Reachability::Auto if !listen.is_empty() && listen.iter().all(loopback) => {
                Reachability::Public
            }
            s => s,
        }
    }
}

/// AutoNAT settings ([`NetTuning::autonat`]).
#[derive(Clone, Debug)]
pub struct AutoNatTuning {
    /// Wait this long after start before the first probe (identify must run first).
    pub boot_delay: Duration,
    /// Probe again this often until the status is certain.
    pub retry: Duration,
    /// Probe again this often once it is.
    pub refresh: Duration,
    /// Count peers and addresses on private networks (10/8, 192.168/16, ...): for a LAN or a
    /// test network. Off on the internet, where a private address says nothing.
    pub private_ips: bool,
}

impl Default for AutoNatTuning {
    fn default() -> Self {
        AutoNatTuning {
            boot_delay: Duration::from_secs(5),
            retry: Duration::from_secs(60),
            refresh: Duration::from_secs(15 * 60),
            private_ips: false,
        }
    }
}

/// The bounds of the relay this node offers: a relay carries results and gossip for a few
/// seconds until hole punching replaces it, so circuits are few, short and small.
pub(crate) fn relay_limits() -> relay::Config {
    relay::Config {
        max_reservations: 128,
        max_reservations_per_peer: 2,
        reservation_duration: Duration::from_secs(30 * 60),
        max_circuits: 32,
        max_circuits_per_peer: 4,
        max_circuit_duration: Duration::from_secs(5 * 60),
        max_circuit_bytes: 1 << 20,
        ..relay::Config::default()
    }
}

impl Default for NetTuning {
    fn default() -> Self {
        NetTuning {
            heartbeat: Duration::from_millis(500),
            discovery: true,
            duplicate_cache: Duration::from_secs(120),
            replication: DEFAULT_REPLICATION,
            ledger_sync: Duration::from_secs(60),
            ledger: true,
            inline_digest_below: 50_000,
            light: false,
            receipt_wait: Duration::from_secs(60),
            unreceipted_limit: 3,
            auditor: false,
            withhold_receipts: false,
            drop_registry_gossip: false,
            budgets: super::budget::BudgetConfig::default(),
            limits: super::limits::ConnectionCaps::default(),
            hello_page_bytes: DEFAULT_HELLO_PAGE_BYTES,
            reachability: Reachability::Auto,
            relay_server: true,
            verify_store: false,
            adopt_checkpoints: false,
            autonat: AutoNatTuning::default(),
            clock: super::Clock::default(),
        }
    }
}

impl Behaviour {
    pub(crate) fn new(
        key: &identity::Keypair,
        genesis: &crate::genesis::Genesis,
        tuning: &NetTuning,
        reachability: Reachability,
        records: super::records::Records,
        relay_client: relay::client::Behaviour,
    ) -> anyhow::Result<Behaviour> {
        let peer_id = key.public().to_peer_id();
        let identify = identify::Behaviour::new(
            identify::Config::new(genesis.identify_version(), key.public())
                .with_agent_version(format!("dpow/{}", env!("CARGO_PKG_VERSION"))),
        );
        let mut kad_config = kad::Config::new(kad_protocol(genesis)?);
        kad_config.set_query_timeout(Duration::from_secs(30));
        // Receipts are kept for good: no expiry. Kademlia neither republishes nor replicates:
        // both walk every record each hour (millions of receipts on a year's ledger), and
        // catch-up by epoch digests already brings every node every receipt. A receipt is put
        // to the closest peers once, by the node that made it, and found by id from any node
        // that holds it.
        kad_config.set_record_ttl(None);
        kad_config.set_publication_interval(None);
        kad_config.set_replication_interval(None);
        kad_config.set_replication_factor(tuning.replication);
        // Every inbound record is verified (as a receipt) by the node before it is stored.
        kad_config.set_record_filtering(kad::StoreInserts::FilterBoth);
        if !tuning.discovery {
            // No walks, and no table entries that would trigger kad's automatic walks: the
            // node talks to the peers it was told about and those that dial it, nothing more.
            kad_config.set_periodic_bootstrap_interval(None);
            kad_config.set_kbucket_inserts(kad::BucketInserts::Manual);
        }
        let mut kad = kad::Behaviour::with_config(peer_id, records, kad_config);
        // A node serves the DHT once peers can dial it: from the start when told it is public,
        // never when light (it keeps no records) or private, else once AutoNAT confirms a
        // direct address (the event loop switches it; kad's own automatic mode would also
        // count a relayed address, which is no way to serve a DHT).
        kad.set_mode(Some(match (tuning.light, reachability) {
            (false, Reachability::Public) => kad::Mode::Server,
            _ => kad::Mode::Client,
        }));
        let autonat = autonat::Behaviour::new(
            peer_id,
            autonat::Config {
                boot_delay: tuning.autonat.boot_delay,
                retry_interval: tuning.autonat.retry,
                refresh_interval: tuning.autonat.refresh,
                only_global_ips: !tuning.autonat.private_ips,
                // A dial-back either connects within the transport's timeout or fails.
                timeout: Duration::from_secs(15),
                ..autonat::Config::default()
            },
        );
        // The relay's status is fixed here, not left to follow external addresses: on every
        // change libp2p-relay 0.22 notifies each connection's handler, relayed ones included,
        // whose handler is a dummy, and that connection's task panics (seen on the namespace
        // testnet when a private node that had dialed a peer through a relay confirmed its
        // own relayed address). Offered from the start, within `relay_limits`.
        let relay = Toggle::from(tuning.relay_server.then(|| {
            let mut r = relay::Behaviour::new(peer_id, relay_limits());
            r.set_status(Some(relay::Status::Enable));
            r
        }));
        let dcutr = dcutr::Behaviour::new(peer_id);

        // Messages are our own signed envelopes, so gossipsub's own signatures would only cost
        // a second ed25519 per hop: anonymous mode, content-addressed ids, and our validation
        // decides what is forwarded.
        let gossip_config = gossipsub::ConfigBuilder::default()
            .heartbeat_interval(tuning.heartbeat)
            .validation_mode(gossipsub::ValidationMode::Anonymous)
            .validate_messages()
            .max_transmit_size(MAX_FRAME_BYTES)
            .message_id_fn(|m: &gossipsub::Message| {
                let mut h = Blake2b::<U20>::new();
                h.update(m.topic.as_str().as_bytes());
                h.update(&m.data);
                gossipsub::MessageId::from(h.finalize().to_vec())
            })
            .duplicate_cache_time(tuning.duplicate_cache)
            .build()
            .map_err(|e| anyhow::anyhow!("gossipsub config: {e}"))?;
        let mut gossipsub =
            gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Anonymous, gossip_config)
                .map_err(|e| anyhow::anyhow!("gossipsub: {e}"))?;
        let (params, thresholds) = peer_score();
        gossipsub
            .with_peer_score(params, thresholds)
            .map_err(|e| anyhow::anyhow!("gossipsub peer score: {e}"))?;

        let sync = request_response::cbor::Behaviour::new(
            [(
                stream_protocol(genesis, SYNC_PROTOCOL)?,
                request_response::ProtocolSupport::Full,
            )],
            request_response::Config::default().with_request_timeout(Duration::from_secs(10)),
        );
        let results = request_response::cbor::Behaviour::new(
            [(
                stream_protocol(genesis, "result/1")?,
                request_response::ProtocolSupport::Full,
            )],
            request_response::Config::default().with_request_timeout(RESULT_TIMEOUT),
        );
        Ok(Behaviour {
            blocked: allow_block_list::Behaviour::default(),
            limits: tuning.limits.counts(),
            memory: tuning.limits.memory(),
            per_ip: super::limits::IpLimits::new(tuning.limits.max_per_ip),
            identify,
            autonat,
            relay,
            relay_client,
            dcutr,
            kad,
            gossipsub,
            sync,
            results,
        })
    }
}

/// The network's Kademlia protocol (`/dpow/<short id>/kad/1`).
pub(crate) fn kad_protocol(genesis: &crate::genesis::Genesis) -> anyhow::Result<StreamProtocol> {
    stream_protocol(genesis, "kad/1")
}

/// A stream protocol name bound to the genesis's network (`/dpow/<short id>/<what>`), so peers
/// of another network share no protocol (their DHTs never merge).
fn stream_protocol(
    genesis: &crate::genesis::Genesis,
    what: &str,
) -> anyhow::Result<StreamProtocol> {
    StreamProtocol::try_from_owned(genesis.protocol(what))
        .map_err(|e| anyhow::anyhow!("protocol name for {what}: {e}"))
}

/// Peer scoring: a rejected message (bad signature, invalid work, ...) costs its sender; enough
/// of them and gossipsub stops talking to it (the node also blocks it outright, see
/// `max_penalties`).
fn peer_score() -> (gossipsub::PeerScoreParams, gossipsub::PeerScoreThresholds) {
    let params = gossipsub::PeerScoreParams {
        // No per-IP penalty: tests and the testnet run many peers on one address.
        ip_colocation_factor_weight: 0.0,
        ..Default::default()
    };
    let thresholds = gossipsub::PeerScoreThresholds {
        gossip_threshold: -10.0,
        publish_threshold: -50.0,
        graylist_threshold: -80.0,
        ..Default::default()
    };
    (params, thresholds)
}

/// Topic score parameters for one topic: invalid deliveries weigh heavily.
pub(crate) fn topic_score() -> gossipsub::TopicScoreParams {
    gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        invalid_message_deliveries_weight: -20.0,
        invalid_message_deliveries_decay: 0.9,
        // No mesh-delivery expectations: request traffic is bursty.
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        ..Default::default()
    }
}

/// The libp2p identity for a dpow key (both are ed25519: the node's worker key is its peer id).
pub(crate) fn identity_of(key: &dpow_keys::SecretKey) -> anyhow::Result<identity::Keypair> {
    let mut seed = *key.seed();
    let kp = identity::Keypair::ed25519_from_bytes(&mut seed)
        .context("node key as a libp2p identity")?;
    Ok(kp)
}

#[cfg(test)]
mod tests {
    use super::{EpochDigest, Reachability, SyncRequest, SyncResponse, serde_bytes_vec::Bytes};
    use futures::executor::block_on;
    use futures::io::Cursor;
    use libp2p::StreamProtocol;
    use libp2p::request_response::Codec;
    use serde::{Deserialize, Serialize};

    /// `SyncResponse::Digests` as a peer before registry counts sent it.
    #[derive(Serialize, Deserialize)]
    enum OldResponse {
        Digests {
            epoch_ms: u64,
            epochs: Vec<EpochDigest>,
        },
    }

    /// Answers of peers that send no registry counts still decode (as none), and the counts
    /// of those that do come through.
    #[test]
    fn digests_without_registry_counts_decode_as_none() {
        const P: StreamProtocol = StreamProtocol::new("/dpow/test/sync/4");
        let epochs = vec![EpochDigest {
            epoch: 7,
            receipts: 2,
            digest: Bytes(vec![1; 32]),
        }];
        let mut old = Cursor::new(Vec::new());
        let mut old_codec =
            libp2p::request_response::cbor::codec::Codec::<SyncRequest, OldResponse>::default();
        block_on(old_codec.write_response(
            &P,
            &mut old,
            OldResponse::Digests {
                epoch_ms: 1000,
                epochs: epochs.clone(),
            },
        ))
        .expect("writes");
        let mut codec = super::SyncCodec::default();
        let read = |bytes: Vec<u8>| {
            let mut codec = super::SyncCodec::default();
            block_on(codec.read_response(&P, &mut Cursor::new(bytes))).expect("reads")
        };
        match read(old.into_inner()) {
            SyncResponse::Digests {
                epoch_ms,
                epochs: got,
                registry,
            } => {
                assert_eq!((epoch_ms, got), (1000, epochs.clone()));
                assert!(registry.is_empty());
            }
            other => panic!("{other:?}"),
        }
        let mut new = Cursor::new(Vec::new());
        block_on(codec.write_response(
            &P,
            &mut new,
            SyncResponse::Digests {
                epoch_ms: 1000,
                epochs,
                registry: vec![3, 1],
            },
        ))
        .expect("writes");
        match read(new.into_inner()) {
            SyncResponse::Digests { registry, .. } => assert_eq!(registry, vec![3, 1]),
            other => panic!("{other:?}"),
        }
    }

    fn addr(s: &str) -> libp2p::Multiaddr {
        s.parse().expect("test address")
    }

    #[test]
    fn loopback_only_nodes_count_as_public() {
        let lo = [addr("/ip4/127.0.0.1/tcp/0"), addr("/ip6/::1/udp/0/quic-v1")];
        assert_eq!(Reachability::Auto.given_listen(&lo), Reachability::Public);
        let mixed = [addr("/ip4/127.0.0.1/tcp/0"), addr("/ip4/0.0.0.0/tcp/7075")];
        assert_eq!(Reachability::Auto.given_listen(&mixed), Reachability::Auto);
        assert_eq!(Reachability::Auto.given_listen(&[]), Reachability::Auto);
        assert_eq!(
            Reachability::Private.given_listen(&lo),
            Reachability::Private
        );
    }
}
