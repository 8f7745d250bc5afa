//! Transports and reachability on loopback: a network on QUIC alone, dialing a peer on every
//! address it has, AutoNAT making a reachable node a DHT server, and a private node reached
//! through a relay, then directly once DCUtR punches a hole. The same across real NATs, in
//! network namespaces, is `netns.rs`.

use std::time::Duration;

use dpow_keys::SecretKey;
use dpow_node::net::{self, Reachability, WorkAsk, WorkerConfig};
use dpow_protocol::{BlockKind, Priority, Root};
use dpow_solver::CpuSolver;
use dpow_testnet::local::{LocalNet, LocalOptions, LocalTransport, wait_for};
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;

const T: Duration = Duration::from_secs(20);

fn root(i: u8) -> Root {
    let mut r = [0x3cu8; 32];
    r[0] = i;
    Root(r)
}

fn ask(net: &LocalNet, i: u8) -> WorkAsk {
    WorkAsk {
        root: root(i),
        difficulty: net.genesis.profile.threshold(BlockKind::Send),
        kind: Some(BlockKind::Send),
        account: None,
        priority: Priority::Normal,
        lifetime: Duration::from_secs(60),
    }
}

fn is_quic(a: &Multiaddr) -> bool {
    a.iter().any(|p| matches!(p, Protocol::QuicV1))
}

fn worker() -> WorkerConfig {
    WorkerConfig {
        solver: Box::new(CpuSolver::new(1).expect("cpu solver")),
        payout: None,
        rate: Some(20_000_000),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_network_on_quic_alone_answers_requests() {
    let net = LocalNet::start(LocalOptions {
        workers: 2,
        transport: LocalTransport::Quic,
        ..LocalOptions::default()
    })
    .await
    .expect("network starts");
    let service = net.service_node().await.expect("service node");
    for node in net.workers.iter().chain([&service, &net.bootstrap]) {
        let addrs = node.listen_addrs(T).await.expect("listening");
        assert!(addrs.iter().all(is_quic), "QUIC only: {addrs:?}");
    }
    for i in 0..3 {
        let a = service.submit(ask(&net, i)).await.expect("answered");
        let value = dpow_testkit::reference::work_value(&root(i), a.work);
        assert!(value >= net.genesis.profile.threshold(BlockKind::Send).0);
    }
    assert_eq!(service.stats().completed, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_is_dialed_on_all_its_addresses_at_once() {
    let net = LocalNet::start(LocalOptions {
        workers: 1,
        ..LocalOptions::default()
    })
    .await
    .expect("network starts");
    // A UDP socket that never answers: the QUIC address leads nowhere, and only the TCP one
    // can connect.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp socket");
    let port = silent.local_addr().expect("its port").port();
    let boot = net.bootstrap.peer_id();
    let dead: Multiaddr = format!("/ip4/127.0.0.1/udp/{port}/quic-v1/p2p/{boot}")
        .parse()
        .expect("address");
    let mut cfg = net.config(SecretKey::generate().expect("key"));
    cfg.genesis.bootstrap = vec![dead, net.bootstrap_addr.clone()];
    cfg.service_key = Some(net.service.clone());
    let node = net::spawn(cfg).await.expect("node starts");
    node.wait_synced(T).await.expect("joined through TCP");
    let a = node.submit(ask(&net, 9)).await.expect("answered");
    assert!(dpow_testkit::reference::work_value(&root(9), a.work) > 0);
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn autonat_makes_a_reachable_node_a_dht_server() {
    let net = LocalNet::start(LocalOptions {
        workers: 2,
        ..LocalOptions::default()
    })
    .await
    .expect("network starts");
    // Connected to the bootstrap alone: the one peer that can dial it back.
    let mut cfg = net.config(SecretKey::generate().expect("key"));
    cfg.tuning.reachability = Reachability::Auto;
    let node = net::spawn(cfg).await.expect("node starts");
    let before = node.stats();
    assert_eq!(before.kad_mode, "client", "a DHT client until confirmed");
    let s = wait_for(&node, T, |s| {
        s.reachability == "public" && s.kad_mode == "server"
    })
    .await
    .expect("a peer dialed back, and the node serves the DHT");
    let public = s.public_address.expect("the confirmed address");
    let listen = node.listen_addrs(T).await.expect("listening");
    assert!(
        listen
            .iter()
            .any(|l| l.to_string().starts_with(public.as_str())),
        "confirmed {public}, listening on {listen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_private_worker_is_reached_through_a_relay() {
    let net = LocalNet::start(LocalOptions {
        workers: 0,
        ..LocalOptions::default()
    })
    .await
    .expect("network starts");
    let relay = net.bootstrap.peer_id();
    let mut cfg = net.config(SecretKey::generate().expect("key"));
    cfg.tuning.reachability = Reachability::Private;
    cfg.worker = Some(worker());
    let private = net::spawn(cfg).await.expect("private worker starts");
    let s = wait_for(&private, T, |s| s.relay.is_some())
        .await
        .expect("a relay reservation");
    assert_eq!(s.relay, Some(relay.to_string()));
    assert_eq!(s.reachability, "private");
    assert_eq!(s.kad_mode, "client", "a private node serves no DHT");
    let relayed = |a: &Multiaddr| a.iter().any(|p| matches!(p, Protocol::P2pCircuit));
    let circuit = private
        .wait_listen_addr(T, relayed)
        .await
        .expect("a relayed listen address");
    assert!(
        circuit.iter().any(|p| p == Protocol::P2p(relay)),
        "through the relay: {circuit}"
    );

    // A service that knows the worker only by its relayed address.
    let mut cfg = net.config(SecretKey::generate().expect("key"));
    cfg.genesis.bootstrap.clear();
    cfg.dial = vec![circuit];
    cfg.service_key = Some(net.service.clone());
    let service = net::spawn(cfg).await.expect("service starts");
    service
        .wait_synced(T)
        .await
        .expect("synced through the relay");
    let a = service.submit(ask(&net, 1)).await.expect("answered");
    assert_eq!(a.worker.to_string(), private.stats().account);
    // The service dialed through the relay, and DCUtR then punched a hole: on loopback both
    // ends can dial each other, so the relayed connection is replaced by a direct one.
    let s = wait_for(&service, T, |s| s.hole_punches >= 1)
        .await
        .expect("a hole punched");
    assert_eq!(s.hole_punch_failures, 0, "{s:?}");
    wait_for(&service, T, |s| s.connections_direct >= 2)
        .await
        .expect("direct connections to the relay and the worker");
}
