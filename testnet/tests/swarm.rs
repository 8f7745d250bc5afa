//! Real swarms on loopback: the request flow, late joiners, and every kind of bad message.

use std::time::Duration;

use dpow_keys::SecretKey;
use dpow_node::net::{self, Event, NodeHandle, Topic, WorkAsk, now_ms};
use dpow_protocol::validate::RejectReason;
use dpow_protocol::{
    BlockKind, Difficulty, NetworkId, Priority, RegistryAction, Root, Signed, Work, WorkRequest,
    WorkResult,
};
use dpow_testnet::local::{
    FlowConfig, LocalNet, LocalOptions, LocalTransport, wait_for, wait_nodes,
};

const T: Duration = Duration::from_secs(20);

fn reference_value(root: &Root, work: Work) -> u64 {
    dpow_testkit::reference::work_value(root, work)
}

fn root(i: u8) -> Root {
    let mut r = [0x11u8; 32];
    r[0] = i;
    r[31] = 0x5a;
    Root(r)
}

fn ask(root: Root, difficulty: Difficulty, kind: Option<BlockKind>) -> WorkAsk {
    WorkAsk {
        root,
        difficulty,
        kind,
        account: None,
        priority: Priority::Normal,
        lifetime: Duration::from_secs(60),
    }
}

fn request(
    service: &SecretKey,
    root: Root,
    difficulty: Difficulty,
    created: u64,
    expires: u64,
) -> WorkRequest {
    WorkRequest {
        service: service.public(),
        root,
        difficulty,
        kind: None,
        account: None,
        nonce: created ^ u64::from(root.0[0]),
        created_ms: created,
        expires_ms: expires,
        priority: Priority::Normal,
        node: dpow_keys::PublicKey([7; 32]),
    }
}

fn signed(req: WorkRequest, key: &SecretKey, net: &NetworkId) -> Signed<WorkRequest> {
    Signed::sign(req, key, net).expect("signs")
}

/// A node connected to the bootstrap only, with no role: it publishes whatever it is told.
/// A barrier: `from` publishes a valid request (root `i`) and waits until `behind` took it.
/// Gossip keeps order on a connection, and the first hop judged everything `from` sent
/// before this request (screening is on its event loop; the request waits for the
/// verification pool besides), so a forwarded copy of anything earlier would have reached
/// `behind` first.
async fn barrier(
    from: &NodeHandle,
    behind: &NodeHandle,
    net: &LocalNet,
    i: u8,
    d: Difficulty,
    now: u64,
) {
    let before = behind.stats().accepted_of("work-request");
    let req = signed(
        request(&net.service, root(i), d, now, now + 30_000),
        &net.service,
        &net.genesis.id,
    );
    from.publish_raw(Topic::Requests, req.bytes().to_vec())
        .await
        .expect("barrier published");
    wait_for(behind, T, |s| s.accepted_of("work-request") > before)
        .await
        .expect("the barrier reaches the node behind");
}

async fn attacker(net: &LocalNet) -> NodeHandle {
    let node = net::spawn(net.config(SecretKey::generate().expect("key")))
        .await
        .expect("attacker starts");
    node.wait_synced(T).await.expect("attacker synced");
    node.wait_for_peers(1, T)
        .await
        .expect("attacker has a peer");
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_of_every_kind_get_valid_work() {
    let net = LocalNet::start(LocalOptions {
        transport: LocalTransport::Memory,
        workers: 3,
        ..LocalOptions::default()
    })
    .await
    .expect("network starts");
    let service = net.service_node().await.expect("service node");
    let profile = net.genesis.profile.clone();
    for (i, kind) in BlockKind::ALL.into_iter().enumerate() {
        let r = root(i as u8);
        let d = profile.threshold(kind);
        let ans = service
            .submit(ask(r, d, Some(kind)))
            .await
            .expect("answered");
        assert!(
            reference_value(&r, ans.work) >= d.0,
            "{kind}: work {} below {d}",
            ans.work
        );
        let winner = ans.worker;
        assert!(
            net.workers
                .iter()
                .any(|w| w.stats().account == winner.to_string()),
            "the winner is one of the workers"
        );
    }
    let s = service.stats();
    assert_eq!(s.submitted, 5);
    assert_eq!(s.completed, 5);
    assert!(s.rejected.is_empty(), "nothing rejected: {:?}", s.rejected);
    // Every worker hears about every answer, so nobody keeps hashing.
    net.wait_all(T, |s| s.solving.is_none())
        .await
        .expect("every worker stops");
    // Every answer became a receipt that every node verified and holds: same digest everywhere,
    // and the workers' credits add up to the prices.
    net.wait_all(T, |s| s.ledger_receipts == 5)
        .await
        .expect("receipts spread");
    let digest = wait_for(&service, T, |s| s.ledger_receipts == 5)
        .await
        .expect("the service holds its receipts")
        .ledger_digest;
    for n in std::iter::once(&net.bootstrap).chain(&net.workers) {
        let st = n.stats();
        assert_eq!(
            st.ledger_digest,
            digest,
            "ledgers agree: {} receipts vs {} at the service",
            st.ledger_receipts,
            service.stats().ledger_receipts
        );
    }
    let prices: u64 = BlockKind::ALL
        .into_iter()
        .map(|k| dpow_protocol::Credits::price(profile.threshold(k)).0)
        .sum();
    let earned: u64 = net.workers.iter().map(|w| w.stats().credits_earned).sum();
    assert_eq!(earned, prices);
    let svc = &service.stats().service_list;
    assert_eq!(svc.iter().map(|s| s.spent).sum::<u64>(), prices);
}

/// The registrar bans a fresh key as a service, through the bootstrap: one more registry
/// entry. Returns the key.
async fn ban_a_stranger(net: &LocalNet) -> dpow_keys::PublicKey {
    let svc = SecretKey::generate().expect("key").public();
    net.bootstrap
        .registry(
            RegistryAction::BanService {
                service: svc,
                reason: "test".into(),
            },
            net.registrar.clone(),
        )
        .await
        .expect("entry");
    svc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_joiner_gets_the_registry_and_the_workers() {
    let mut net = LocalNet::start(LocalOptions::default())
        .await
        .expect("network starts");
    ban_a_stranger(&net).await;
    net.wait_all(T, |s| s.registry_entries >= 3)
        .await
        .expect("gossip spreads the entry");
    // Some books to catch up on.
    let service = net.service_node().await.expect("service node");
    service
        .submit(ask(
            root(77),
            net.genesis.profile.threshold(BlockKind::Receive),
            None,
        ))
        .await
        .expect("answered");
    net.wait_all(T, |s| s.ledger_receipts >= 1)
        .await
        .expect("receipt spreads");
    let late = net.add_worker().await.expect("late worker");
    let s = wait_for(late, T, |s| {
        s.registry_entries >= 3 && s.live_workers >= 3 && s.ledger_receipts >= 1
    })
    .await
    .expect("the late joiner syncs the registry, the workers and the receipts");
    assert_eq!(s.registry_entries, 3);
    let entries = late.registry_entries().await.expect("entries");
    assert_eq!(entries.len(), 3);
}

/// A registry entry that gossip never brought still arrives: a node compares books with a
/// peer every `ledger_sync`, the peer's answer carries how many entries of each registrar it
/// holds, and a node with fewer walks the peer's `Hello` pages again. The node here drops
/// every registry entry that comes by gossip (fault injection), so the entry published after
/// it connected can only come that way.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_registry_entry_gossip_lost_comes_with_the_next_comparison() {
    let net = LocalNet::start(LocalOptions {
        transport: LocalTransport::Memory,
        workers: 1,
        ..LocalOptions::default()
    })
    .await
    .expect("network starts");
    let mut cfg = net.config(SecretKey::generate().expect("key"));
    cfg.tuning.drop_registry_gossip = true;
    cfg.tuning.ledger_sync = Duration::from_millis(300);
    let deaf = net::spawn(cfg).await.expect("node starts");
    deaf.wait_synced(T).await.expect("first sync");
    // The registration and the grant, from its first `Hello` walk.
    let s = wait_for(&deaf, T, |s| s.registry_entries >= 2)
        .await
        .expect("the first sync brings the registry");
    assert_eq!(s.registry_repairs, 0, "nothing was missing yet");

    let svc = ban_a_stranger(&net).await;
    net.wait_all(T, |s| s.registry_entries >= 3)
        .await
        .expect("gossip spreads the entry to the others");
    let s = wait_for(&deaf, T, |s| s.registry_entries >= 3)
        .await
        .expect("the next comparison brings the entry gossip dropped");
    assert_eq!(s.registry_entries, 3);
    assert!(s.registry_repairs >= 1, "{}", s.registry_repairs);
    let banned = deaf.registry_entries().await.expect("entries");
    assert!(
        banned.iter().any(|e| matches!(
            &e.payload().action,
            RegistryAction::BanService { service, .. } if *service == svc
        )),
        "the ban is among the entries"
    );
}

/// Each bad message is rejected by the first hop with the right reason and never reaches a
/// node behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_messages_are_rejected_at_the_first_hop() {
    let net = LocalNet::start(LocalOptions {
        transport: LocalTransport::Memory,
        workers: 1,
        // High enough that the attacker is not blocked before every case has run.
        max_penalties: 100,
        ..LocalOptions::default()
    })
    .await
    .expect("network starts");
    let bad = attacker(&net).await;
    let boot = &net.bootstrap;
    let behind = &net.workers[0];
    let now = now_ms();
    let d = net.genesis.profile.threshold(BlockKind::Receive);
    let stranger = SecretKey::generate().expect("key");
    let banned = SecretKey::generate().expect("key");
    boot.registry(
        RegistryAction::RegisterService {
            service: banned.public(),
            name: "soon banned".into(),
        },
        net.registrar.clone(),
    )
    .await
    .expect("register");
    boot.registry(
        RegistryAction::BanService {
            service: banned.public(),
            reason: "abuse".into(),
        },
        net.registrar.clone(),
    )
    .await
    .expect("ban");
    net.wait_all(T, |s| s.registry_entries >= 4)
        .await
        .expect("entries spread");

    let valid = signed(
        request(&net.service, root(1), d, now, now + 30_000),
        &net.service,
        &net.genesis.id,
    );
    let mut flipped = valid.bytes().to_vec();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x01;
    let cases: Vec<(&str, Topic, Vec<u8>)> = vec![
        (
            "undecodable",
            Topic::Requests,
            vec![dpow_protocol::PROTOCOL_VERSION, 0xde, 0xad, 0xbe, 0xef],
        ),
        ("oversized", Topic::Requests, vec![1u8; 1500]),
        ("bad_signature", Topic::Requests, flipped),
        (
            "unknown_service",
            Topic::Requests,
            signed(
                request(&stranger, root(2), d, now, now + 30_000),
                &stranger,
                &net.genesis.id,
            )
            .bytes()
            .to_vec(),
        ),
        (
            "banned_service",
            Topic::Requests,
            signed(
                request(&banned, root(3), d, now, now + 30_000),
                &banned,
                &net.genesis.id,
            )
            .bytes()
            .to_vec(),
        ),
        (
            "expired",
            Topic::Requests,
            signed(
                request(&net.service, root(4), d, now - 60_000, now - 30_000),
                &net.service,
                &net.genesis.id,
            )
            .bytes()
            .to_vec(),
        ),
        (
            "not_yet_valid",
            Topic::Requests,
            signed(
                request(&net.service, root(5), d, now + 3_600_000, now + 3_630_000),
                &net.service,
                &net.genesis.id,
            )
            .bytes()
            .to_vec(),
        ),
        (
            "difficulty_out_of_profile",
            Topic::Requests,
            signed(
                request(
                    &net.service,
                    root(6),
                    Difficulty(0x0000_0000_0000_00ff),
                    now,
                    now + 30_000,
                ),
                &net.service,
                &net.genesis.id,
            )
            .bytes()
            .to_vec(),
        ),
    ];
    for ((reason, topic, bytes), i) in cases.into_iter().zip(100u8..) {
        let before_boot = boot.stats().rejected_for(reason);
        let before_behind = behind.stats();
        bad.publish_raw(topic, bytes).await.expect("published");
        wait_for(boot, T, |s| s.rejected_for(reason) > before_boot)
            .await
            .unwrap_or_else(|e| panic!("{reason}: not rejected by the first hop: {e}"));
        barrier(&bad, behind, &net, i, d, now).await;
        let after_behind = behind.stats();
        assert_eq!(
            after_behind.rejected, before_behind.rejected,
            "{reason}: the node behind saw it"
        );
        assert_eq!(
            after_behind.accepted_of("work-request"),
            before_behind.accepted_of("work-request") + 1,
            "{reason}: forwarded (only the barrier may arrive)"
        );
    }

    // Invalid work for a real request: publish the request, then at once a result that fails
    // (on one connection, so the first hop takes them in that order). The request is as hard
    // as the profile allows, so the network's worker does not answer it first (a result for
    // an answered request is dropped unread).
    let hardest = dpow_protocol::Profile::test().max;
    let open = signed(
        request(&net.service, root(7), hardest, now, now + 30_000),
        &net.service,
        &net.genesis.id,
    );
    let before = behind.stats();
    bad.publish_raw(Topic::Requests, open.bytes().to_vec())
        .await
        .expect("request");
    let bogus = WorkResult {
        request: open.id(),
        root: root(7),
        work: (0u64..)
            .map(Work)
            .find(|w| reference_value(&root(7), *w) < hardest.0)
            .expect("an invalid nonce"),
        worker: stranger.public(),
        payout: None,
    };
    bad.publish_raw(
        Topic::Results,
        Signed::sign(bogus, &stranger, &net.genesis.id)
            .expect("sign")
            .bytes()
            .to_vec(),
    )
    .await
    .expect("result");
    wait_for(boot, T, |s| s.rejected_for("invalid_work") >= 1)
        .await
        .expect("invalid work rejected");
    wait_for(behind, T, |s| s.accepted_of("work-request") >= 1)
        .await
        .expect("request forwarded");
    barrier(&bad, behind, &net, 99, d, now).await;
    assert_eq!(
        behind.stats().rejected,
        before.rejected,
        "invalid work was forwarded"
    );
    assert_eq!(
        behind.stats().accepted_of("work-result"),
        before.accepted_of("work-result")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_that_keeps_sending_invalid_messages_is_cut_off() {
    // No worker: the request stays open, so its invalid results are judged on their work
    // (once a request is answered, later results are dropped unread).
    let net = LocalNet::start(LocalOptions {
        transport: LocalTransport::Memory,
        workers: 0,
        max_penalties: 3,
        ..LocalOptions::default()
    })
    .await
    .expect("network starts");
    let bad = attacker(&net).await;
    let me = bad.peer_id().to_string();
    let now = now_ms();
    // A real request, and a worker key that answers it with invalid work again and again.
    let open = signed(
        request(
            &net.service,
            root(9),
            Difficulty(0xffff_fc00_0000_0000),
            now,
            now + 30_000,
        ),
        &net.service,
        &net.genesis.id,
    );
    bad.publish_raw(Topic::Requests, open.bytes().to_vec())
        .await
        .expect("request");
    wait_for(&net.bootstrap, T, |s| s.accepted_of("work-request") >= 1)
        .await
        .expect("request seen");
    let faker = SecretKey::generate().expect("key");
    let mut invalid = (0u64..)
        .map(Work)
        .filter(|w| reference_value(&root(9), *w) < 0xffff_fc00_0000_0000);
    // What the bootstrap tells of each result and of the faker, in order.
    let mut told = net.bootstrap.events();
    for _ in 1..=3 {
        let w = invalid.next().expect("invalid nonce");
        let r = WorkResult {
            request: open.id(),
            root: root(9),
            work: w,
            worker: faker.public(),
            payout: None,
        };
        // Published results may fail once the peer has cut us off; that is the point.
        let _ = bad
            .publish_raw(
                Topic::Results,
                Signed::sign(r, &faker, &net.genesis.id)
                    .expect("sign")
                    .bytes()
                    .to_vec(),
            )
            .await;
        // One at a time: each counts against the faker once the bootstrap has judged it.
        told.wait_for(T, |e| match e {
            Event::Refused {
                peer,
                reason: RejectReason::InvalidWork,
                penalised: true,
                ..
            } if *peer == bad.peer_id() => Some(()),
            _ => None,
        })
        .await
        .expect("the bootstrap refuses the invalid work, naming the faker");
    }
    told.wait_for(T, |e| match e {
        Event::PeerBlocked { peer, for_s } if *peer == bad.peer_id() => Some(*for_s),
        _ => None,
    })
    .await
    .expect("the bootstrap tells that it blocked the faker");
    let s = net.bootstrap.stats();
    assert!(s.blocked_peers.contains(&me), "{:?}", s.blocked_peers);
    assert!(s.rejected_for("invalid_work") >= 3);
    wait_for(&bad, T, |s| s.connected_peers == 0)
        .await
        .expect("the faker is disconnected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_survives_its_primary_being_killed() {
    // One primary per request; a backup starts after 3x the expected solve time announced.
    let mut net = LocalNet::start(LocalOptions {
        transport: LocalTransport::Memory,
        workers: 2,
        // Announce far more than the real rate, so the backup deadline comes soon.
        rate: Some(2_000_000_000),
        flow: FlowConfig {
            max_primaries: 1,
            ..FlowConfig::default()
        },
        ..LocalOptions::default()
    })
    .await
    .expect("network starts");
    let service = net.service_node().await.expect("service node");
    // ~2^25 hashes: about a second on one thread.
    let d = Difficulty(0xffff_ff80_0000_0000);
    let r = root(42);
    let pending = tokio::spawn(async move {
        let ans = service.submit(ask(r, d, None)).await;
        (service, ans)
    });
    // Find the primary (looked for again after each event of any worker), and kill it
    // mid-solve.
    let workers: Vec<&NodeHandle> = net.workers.iter().collect();
    let primary = wait_nodes(&workers, T, || {
        net.workers
            .iter()
            .position(|w| w.stats_reader().check(|s| s.solving.is_some()))
    })
    .await
    .expect("a worker starts solving");
    let killed = net.workers.remove(primary);
    let killed_account = killed.stats().account;
    killed.shutdown().await.expect("stops");
    let (_service, ans) = pending.await.expect("task");
    let ans = ans.expect("answered through the backup");
    assert!(reference_value(&r, ans.work) >= d.0);
    assert_ne!(
        ans.worker.to_string(),
        killed_account,
        "the dead primary cannot answer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_from_one_service_all_complete() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let net = LocalNet::start(LocalOptions {
        transport: LocalTransport::Memory,
        workers: 4,
        ..LocalOptions::default()
    })
    .await
    .expect("network starts");
    let service = std::sync::Arc::new(net.service_node().await.expect("service node"));
    let d = Difficulty(0xffff_f000_0000_0000);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..24u8 {
        let s = service.clone();
        set.spawn(async move {
            let r = root(100 + i);
            let ans = tokio::time::timeout(T, s.submit(ask(r, d, None))).await;
            (r, ans)
        });
    }
    while let Some(j) = set.join_next().await {
        let (r, ans) = j.expect("task");
        let ans = ans.expect("answered in time").expect("valid work");
        assert!(reference_value(&r, ans.work) >= d.0);
    }
    assert_eq!(service.stats().completed, 24);
}
