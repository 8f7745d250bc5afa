//! Faults across a network of hosts in network namespaces: a partition that heals, the loss of
//! the bootstrap node, a rolling restart under load, and workers behind NAT that are paid.
//!
//! Each test builds its own [`HostNet`] (bootstrap, service and relay on a public segment,
//! workers in two homes behind NAT routers) and skips, saying why, where namespaces cannot be
//! made (not root, no iproute2 or nftables) — unless `DPOW_REQUIRE_NETNS=1` (CI), where it
//! fails. Every wait polls a node's statistics with a deadline.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

#[path = "netns/load.rs"]
mod load;

use std::time::{Duration, Instant};

use dpow_node::net::now_ms;
use dpow_testnet::hostnet::{HostNet, HostOptions, num};
use dpow_testnet::netns::{self, Layout, Link};
use dpow_testnet::payouts::{epoch_of, final_at};
use dpow_testnet::procs::dpow_json;
use load::{Load, Outcome, all_from_network, work_generate, work_generate_at};

/// The hardest the test profile accepts (64 times its hardest threshold): about 2^26
/// expected hashes, a call that stays open a second or two.
const SLOW: &str = "ffffffc000000000";

/// How long `partition_heals` holds its partition: well inside an epoch's finality.
const PARTITION: Duration = Duration::from_secs(8);

/// How long `long_partition_heals` holds its partition: longer than an epoch's finality
/// (10 s epoch + 15 s request lifetime + 2 s grace), so epochs close while the homes are dark.
const LONG_PARTITION: Duration = Duration::from_secs(35);

/// Build a network, or say why this test is skipped (and fail where it must run).
fn network(test: &str, options: HostOptions) -> Option<HostNet> {
    if let Err(why) = netns::available() {
        if std::env::var(netns::REQUIRE_ENV).is_ok_and(|v| v == "1") {
            panic!(
                "{test}: {}=1 but network namespaces are unavailable: {why}",
                netns::REQUIRE_ENV
            );
        }
        eprintln!(
            "skipping {test}: network namespaces are unavailable here ({why}); {}=1 makes this a failure",
            netns::REQUIRE_ENV
        );
        return None;
    }
    let dpow = dpow_testnet::procs::dpow_binary().expect("dpow");
    Some(HostNet::start(&dpow, options).expect("the network starts"))
}

fn options(public_workers: usize, home_workers: usize, service: &[&str]) -> HostOptions {
    HostOptions {
        layout: Layout {
            public_workers,
            home_workers,
        },
        service: service.iter().map(|s| s.to_string()).collect(),
        ..HostOptions::default()
    }
}

/// Cut both homes off (their workers split from the service): requests are still answered
/// (by the worker on the service's side and the service's fallback); heal, and the ledgers
/// converge on every node. The cut is held for a few seconds, inside an epoch's finality
/// (10 s epoch + 15 s request lifetime + 2 s grace): a node fetches receipts of a final epoch
/// only against a registrar checkpoint, so a longer partition converges only once the
/// registrar has checkpointed the epochs that closed meanwhile.
#[test]
fn partition_heals() {
    let Some(net) = network("partition_heals", options(1, 2, &["--fallback-after", "1"])) else {
        return;
    };
    let load = Load::start(&net).unwrap();
    load.wait_answered(5, Duration::from_secs(60)).unwrap();

    net.topo.link_down(Link::Home(1)).unwrap();
    net.topo.link_down(Link::Home(2)).unwrap();
    let cut = Instant::now();
    let cut_at = load.answered();
    // The fault's length (not a wait for an event): 8 s of load with the homes dark.
    std::thread::sleep(PARTITION);
    assert!(
        load.answered() >= cut_at + 8,
        "requests answered during the partition: {}",
        load.answered() - cut_at
    );
    // The partition is real: the service books receipts the home workers cannot hear of.
    let receipts = |name: &str| num(&net.node(name).unwrap().stats().unwrap(), "ledger_receipts");
    net.wait_on(
        "the service's ledger to move ahead of the homes'",
        Duration::from_secs(30),
        || receipts("service") > receipts("worker1"),
    )
    .unwrap();
    let report = load.stop();
    let service_receipts = receipts("service");

    let held = cut.elapsed();
    net.topo.link_up(Link::Home(1)).unwrap();
    net.topo.link_up(Link::Home(2)).unwrap();
    let healed = Instant::now();
    net.wait_all(
        "the ledgers to converge after healing",
        Duration::from_secs(90),
        |_, s| num(s, "ledger_receipts") >= service_receipts,
    )
    .unwrap();
    net.wait_on(
        "every ledger digest to agree",
        Duration::from_secs(30),
        || net.ledgers_agree(&[]),
    )
    .unwrap();
    eprintln!(
        "partition_heals: {}; partition held {:.1} s, {} answered in it; {} receipts; ledgers converged {:.1} s after healing",
        report.line(),
        held.as_secs_f64(),
        report.answered - cut_at,
        service_receipts,
        healed.elapsed().as_secs_f64()
    );
    assert!(report.lost.is_empty(), "lost requests: {:?}", report.lost);
}

/// A partition longer than finality: epochs close while the homes are cut off, so after
/// healing the receipts the homes missed in them pass the finality rule only when vouched for
/// by a registrar's checkpoint. The registrar checkpoints the epochs already final while the
/// homes are still dark (a checkpoint they cannot hear of when it is published), heal, then
/// the rest once final; the ledgers converge on every node.
#[test]
fn long_partition_heals() {
    let Some(net) = network(
        "long_partition_heals",
        options(1, 2, &["--fallback-after", "1"]),
    ) else {
        return;
    };
    let load = Load::start(&net).unwrap();
    load.wait_answered(5, Duration::from_secs(60)).unwrap();

    net.topo.link_down(Link::Home(1)).unwrap();
    net.topo.link_down(Link::Home(2)).unwrap();
    // From the epoch 2 s back: a receipt accepted just before a cut that fell right after an
    // epoch's end may not have reached the homes either.
    let first = epoch_of(now_ms().saturating_sub(2_000));
    let cut_at = load.answered();
    // The fault's length (not a wait for an event).
    std::thread::sleep(LONG_PARTITION);
    let report = load.stop();
    let last = epoch_of(now_ms());
    let receipts = |name: &str| num(&net.node(name).unwrap().stats().unwrap(), "ledger_receipts");
    assert!(
        receipts("service") > receipts("worker1"),
        "the homes missed no receipt: the cut was not real"
    );
    let checkpoint = |epoch: u64| {
        let c = net.checkpoint("service", epoch).unwrap();
        // The command stays until a peer answers with the checkpoint it published.
        assert!(c["held_by"].is_string(), "no peer confirmed: {c}");
        eprintln!(
            "long_partition_heals: checkpoint of epoch {epoch}: {} receipts",
            c["receipts"]
        );
    };
    let mut next = first;
    while final_at(next) < now_ms() {
        checkpoint(next);
        next += 1;
    }
    assert!(next > first, "no epoch closed during the cut");
    net.topo.link_up(Link::Home(1)).unwrap();
    net.topo.link_up(Link::Home(2)).unwrap();
    let healed = Instant::now();

    // A point on the clock, not an event: the registrar may sign only final epochs.
    std::thread::sleep(Duration::from_millis(
        final_at(last).saturating_sub(now_ms()) + 200,
    ));
    let checkpointed = Instant::now();
    for epoch in next..=last {
        checkpoint(epoch);
    }
    let service_receipts = receipts("service");
    net.wait_all(
        "the ledgers to converge after the checkpoints",
        Duration::from_secs(90),
        |_, s| num(s, "ledger_receipts") >= service_receipts,
    )
    .unwrap();
    net.wait_on("every ledger to agree", Duration::from_secs(30), || {
        net.ledgers_agree(&[])
    })
    .unwrap();
    eprintln!(
        "long_partition_heals: {}; partition held {:.0} s, {} answered in it; epochs {first}..{next} checkpointed during the cut, {next}..={last} {:.1} s after healing; {} receipts on every node {:.1} s after the last checkpoint",
        report.line(),
        LONG_PARTITION.as_secs_f64(),
        report.answered - cut_at,
        (checkpointed - healed).as_secs_f64(),
        service_receipts,
        checkpointed.elapsed().as_secs_f64()
    );
    assert!(report.lost.is_empty(), "lost requests: {:?}", report.lost);
}

/// Kill the bootstrap: the network keeps answering, and a new worker whose genesis lists only
/// the dead bootstrap joins through another node it is told of, and solves.
#[test]
fn bootstrap_loss() {
    let Some(mut net) = network("bootstrap_loss", options(0, 2, &["--no-fallback"])) else {
        return;
    };
    let svc_ns = net.topo.host("service").unwrap().ns.clone();
    for i in 0..3 {
        assert!(matches!(
            work_generate(&svc_ns, 1000 + i),
            Outcome::Answered { .. }
        ));
    }
    let boot = net.node_mut("bootstrap").unwrap();
    boot.child.kill().unwrap();
    boot.child.wait().unwrap();
    all_from_network(&svc_ns, 2000, 5, "after losing the bootstrap");

    net.topo.add_home_host(2, "newcomer").unwrap();
    let relay = net.node("relay").unwrap().listen.clone();
    let genesis = net.genesis.clone(); // lists only the dead bootstrap
    net.start_worker("newcomer", 9, &genesis, &["--dial".into(), relay])
        .unwrap();
    net.wait_nodes(
        "the newcomer to join",
        Duration::from_secs(60),
        &["bootstrap"],
        |p, s| {
            num(s, "registry_entries") >= 2 && (p.role != "worker" || num(s, "live_workers") >= 3)
        },
    )
    .unwrap();
    // Proven workers rank before a newcomer: with them gone it must take the requests.
    for w in ["worker1", "worker2"] {
        net.node_mut(w)
            .unwrap()
            .terminate(Duration::from_secs(30))
            .unwrap();
    }
    let t0 = Instant::now();
    all_from_network(&svc_ns, 3000, 3, "with only the newcomer");
    let s = net.node("newcomer").unwrap().stats().unwrap();
    assert!(num(&s, "solved") >= 1, "the newcomer solved nothing: {s}");
    eprintln!(
        "bootstrap_loss: the newcomer joined through the relay and answered 3 requests alone in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

/// Restart every node, one at a time (SIGTERM, exit, start on the same data and address,
/// back in the mesh), under steady load from a client beside the service: no request the
/// service accepted is lost; those refused while it was down are retried.
#[test]
fn rolling_restart() {
    let Some(mut net) = network("rolling_restart", options(0, 2, &[])) else {
        return;
    };
    let load = Load::start(&net).unwrap();
    load.wait_answered(3, Duration::from_secs(60)).unwrap();
    let genesis = net.genesis.clone();
    let names: Vec<String> = net.nodes.iter().map(|p| p.name().to_string()).collect();
    let t0 = Instant::now();
    for name in &names {
        // The service stops with a slow call open, the only one: it must answer it before it
        // goes (a node that exited 100 ms after SIGTERM dropped it: "no JSON answer").
        let slow = (name == "service").then(|| {
            load.pause();
            slow_call_open(&net)
        });
        let node = net.node_mut(name).unwrap();
        let status = node.terminate(Duration::from_secs(70)).unwrap();
        assert!(status.success(), "{name} exited with {status}");
        if let Some(slow) = slow {
            match slow.join().unwrap() {
                Outcome::Answered { .. } => {}
                other => panic!("the call open while the service stopped: {other:?}"),
            }
            load.resume();
        }
        node.restart_with(&genesis).unwrap();
        net.wait_all(
            &format!("{name} back in the mesh"),
            Duration::from_secs(60),
            |p, s| {
                num(s, "connected_peers") >= 2
                    && num(s, "registry_entries") >= 2
                    && (p.role != "worker" || num(s, "live_workers") >= 2)
            },
        )
        .unwrap();
        let before = load.answered();
        load.wait_answered(before + 3, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("no answers after restarting {name}: {e:#}"));
    }
    let report = load.stop();
    eprintln!(
        "rolling_restart: {} nodes restarted one at a time in {:.1} s; {}",
        names.len(),
        t0.elapsed().as_secs_f64(),
        report.line()
    );
    assert!(report.lost.is_empty(), "lost requests: {:?}", report.lost);
}

/// Open a slow call on the service (the only one) and return once a worker is solving it; a
/// call that luck answers at once is replaced by another.
fn slow_call_open(net: &HostNet) -> std::thread::JoinHandle<Outcome> {
    let service = net.node("service").unwrap();
    for i in 0..5 {
        let ns = net.topo.host("service").unwrap().ns.clone();
        let before = num(&service.stats().unwrap(), "submitted");
        let slow = std::thread::spawn(move || work_generate_at(&ns, 9000 + i, SLOW));
        net.wait_on(
            "the slow call to reach a worker",
            Duration::from_secs(30),
            || {
                slow.is_finished()
                    || (service.stats().is_ok_and(|s| num(&s, "submitted") > before)
                        && ["worker1", "worker2"].iter().any(|w| {
                            net.node(w)
                                .unwrap()
                                .stats()
                                .is_ok_and(|s| !s["solving"].is_null())
                        }))
            },
        )
        .unwrap();
        if !slow.is_finished() {
            return slow;
        }
        match slow.join().unwrap() {
            Outcome::Answered { .. } => {}
            other => panic!("a slow call: {other:?}"),
        }
    }
    panic!("five slow calls in a row were answered at once");
}

/// Only workers behind NAT: they solve the requests and the receipts credit their payout
/// accounts; their connection to the service is direct (dialled out through NAT) or relayed.
#[test]
fn nat_worker_is_paid() {
    let Some(net) = network("nat_worker_is_paid", options(0, 2, &["--no-fallback"])) else {
        return;
    };
    let svc_ns = net.topo.host("service").unwrap().ns.clone();
    all_from_network(&svc_ns, 4000, 10, "nat_worker_is_paid");
    // A worker counts a win once the service's receipt for it arrives, a moment after the
    // answer: wait for it (bounded) rather than read once.
    let winners_now = || -> Vec<(String, String)> {
        ["worker1", "worker2"]
            .iter()
            .filter_map(|w| {
                let s = net.node(w).unwrap().stats().unwrap();
                let won = s["worker"]["won"].as_u64().unwrap_or(0);
                let payout = s["worker"]["payout"].as_str().unwrap_or("").to_string();
                (won > 0).then(|| (w.to_string(), payout))
            })
            .collect()
    };
    let t_won = Instant::now();
    let mut winners = winners_now();
    while winners.is_empty() && t_won.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(200));
        winners = winners_now();
    }
    assert!(!winners.is_empty(), "no worker behind NAT won a request");
    let relay = net.node("relay").unwrap().listen.clone();
    let g = net.genesis.to_string_lossy().into_owned();
    let cli = net.cli().unwrap();
    let t0 = Instant::now();
    loop {
        let bal = dpow_json(
            &cli,
            &["ledger", "--genesis", &g, "--dial", &relay, "balances"],
        )
        .unwrap();
        let earned = |acct: &str| {
            bal["accounts"].as_array().into_iter().flatten().any(|a| {
                a["account"] == acct
                    && a["earned"].as_str().and_then(|e| e.parse::<u128>().ok()) > Some(0)
            })
        };
        if winners.iter().all(|(_, acct)| earned(acct)) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the books never credited {winners:?}: {bal}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let s = net.node("service").unwrap().stats().unwrap();
    eprintln!(
        "nat_worker_is_paid: {} of 2 workers paid; the service's connections: {} direct, {} relayed, {} hole-punched",
        winners.len(),
        num(&s, "connections_direct"),
        num(&s, "connections_relayed"),
        num(&s, "hole_punches"),
    );
}

/// A service at home, behind its own NAT, whose only known peer is a worker in the other home,
/// by its relayed address: it reaches the worker through the relay (behind two NATs, neither
/// can dial the other) and the worker solves its requests; then both ends punch a hole
/// through their NATs (DCUtR, a simultaneous TCP open) and hold a direct connection.
#[test]
fn home_to_home() {
    let Some(mut net) = network("home_to_home", options(0, 1, &[])) else {
        return;
    };
    // worker1's relayed address: through the node that holds its reservation.
    let w = net.node("worker1").unwrap().stats().unwrap();
    let worker_id = w["peer_id"].as_str().unwrap().to_string();
    let relay_id = w["relay"]
        .as_str()
        .expect("worker1 holds a relay reservation");
    let relay = net
        .nodes
        .iter()
        .find(|p| p.stats().is_ok_and(|s| s["peer_id"] == relay_id))
        .expect("the relay is one of the nodes")
        .listen
        .clone();
    let circuit = format!("{relay}/p2p-circuit/p2p/{worker_id}");

    // A second service, registered, whose genesis names no bootstrap at all.
    let d = net.dir().to_path_buf();
    let key_path = d.join("home-service.key").to_string_lossy().into_owned();
    let here = dpow_testnet::procs::Dpow::here(&net.dpow);
    let key = dpow_json(&here, &["keys", "new", "--out", &key_path]).unwrap();
    let key = key["key"].as_str().unwrap().to_string();
    let g = net.genesis.to_string_lossy().into_owned();
    let rk = d.join("registrar.key").to_string_lossy().into_owned();
    dpow_testnet::procs::register_service(&net.cli().unwrap(), &g, &rk, &key, "home service")
        .unwrap();
    let text = std::fs::read_to_string(&net.genesis).unwrap();
    let alone: String = text
        .lines()
        .map(|l| {
            if l.starts_with("bootstrap") {
                "bootstrap = []"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let genesis = d.join("genesis-home.toml");
    std::fs::write(&genesis, alone).unwrap();

    net.topo.add_home_host(2, "homesvc").unwrap();
    let args: Vec<String> = [
        "--role",
        "service",
        "--service-key",
        &key_path,
        "--no-fallback",
        "--dial",
        &circuit,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    net.start_node("homesvc", "service", &genesis, &args)
        .unwrap();
    let t0 = Instant::now();
    net.wait_on("the home service to sync", Duration::from_secs(60), || {
        net.node("homesvc")
            .unwrap()
            .stats()
            .is_ok_and(|s| num(&s, "registry_entries") >= 3 && num(&s, "live_workers") >= 1)
    })
    .unwrap();
    let ns = net.topo.host("homesvc").unwrap().ns.clone();
    all_from_network(&ns, 5000, 3, "at the home service");
    let w = net.node("worker1").unwrap().stats().unwrap();
    assert!(num(&w, "solved") >= 1, "worker1 solved nothing: {w}");
    // Its only way to worker1 is the relay (nothing can dial into either home); then DCUtR
    // punches a hole through both NATs and a direct connection joins the relayed one.
    let s = net.node("homesvc").unwrap().stats().unwrap();
    assert!(
        num(&s, "connections_relayed") >= 1 || num(&s, "hole_punches") >= 1,
        "the home service reached worker1 neither by relay nor by a punched hole: {s}"
    );
    net.wait_on(
        "a hole punched between the two homes",
        Duration::from_secs(30),
        || {
            ["homesvc", "worker1"].iter().all(|n| {
                net.node(n)
                    .unwrap()
                    .stats()
                    .is_ok_and(|s| num(&s, "hole_punches") >= 1)
            })
        },
    )
    .unwrap();
    let s = net.node("homesvc").unwrap().stats().unwrap();
    eprintln!(
        "home_to_home: the home service reached a worker in the other home and was answered in \
         {:.1} s; its connections: {} direct, {} relayed; {} hole punches, {} failed",
        t0.elapsed().as_secs_f64(),
        num(&s, "connections_direct"),
        num(&s, "connections_relayed"),
        num(&s, "hole_punches"),
        num(&s, "hole_punch_failures"),
    );
}
