//! A node's typed events (`Client::events`, and named server-sent events on `/api/events`):
//! what a request, its work and its receipt look like on the service's node and on the
//! worker that solved it, in order, and over HTTP.

use std::time::Duration;

use dpow_node::net::{Event, EventStream, NodeHandle, ReceiptFrom, WorkAsk};
use dpow_protocol::{Priority, Root};
use dpow_testnet::local::{LocalNet, LocalOptions, LocalTransport, wait_books};

const T: Duration = Duration::from_secs(30);

fn ask(net: &LocalNet, root: u8) -> WorkAsk {
    WorkAsk {
        root: Root([root; 32]),
        difficulty: net.genesis.profile.easiest(),
        kind: None,
        account: None,
        priority: Priority::Normal,
        lifetime: Duration::from_secs(30),
    }
}

/// A network with one worker, and a service node.
async fn one_worker() -> (LocalNet, NodeHandle) {
    let net = LocalNet::start(LocalOptions {
        transport: LocalTransport::Memory,
        workers: 1,
        ..LocalOptions::default()
    })
    .await
    .expect("network");
    // The nodes really are on the in-process transport: every address they listen on is one.
    let memory = |a: &libp2p::Multiaddr| {
        matches!(
            a.iter().next(),
            Some(libp2p::multiaddr::Protocol::Memory(_))
        )
    };
    assert!(memory(&net.bootstrap_addr), "{}", net.bootstrap_addr);
    let svc = net.service_node().await.expect("service node");
    let addrs = svc
        .listen_addrs(Duration::from_secs(10))
        .await
        .expect("listens");
    assert!(!addrs.is_empty() && addrs.iter().all(memory), "{addrs:?}");
    (net, svc)
}

/// The events of `stream` until `last` answers true for one (included), in order.
async fn until(stream: &mut EventStream, last: impl Fn(&Event) -> bool) -> Vec<Event> {
    let mut seen = Vec::new();
    let read = async {
        while let Some(e) = stream.next().await {
            let e = e.expect("no event missed");
            let done = last(&e);
            seen.push(e);
            if done {
                return;
            }
        }
        panic!("the node stopped");
    };
    if tokio::time::timeout(T, read).await.is_err() {
        panic!("not seen in {T:?}; seen: {seen:#?}");
    }
    seen
}

/// Read `stream` into `text` until it holds `want`.
async fn read_until(text: &mut String, stream: &mut reqwest::Response, want: &str) {
    let read = async {
        while !text.contains(want) {
            let chunk = stream.chunk().await.expect("reads").expect("stream open");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    if tokio::time::timeout(T, read).await.is_err() {
        panic!("{want:?} never came");
    }
}

/// Where in `events` the first that `is` holds for is.
fn at(events: &[Event], is: impl Fn(&Event) -> bool) -> Option<usize> {
    events.iter().position(is)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_is_told_in_order_on_the_service_node_and_on_the_worker_that_solved_it() {
    let (net, svc) = one_worker().await;
    let worker = &net.workers[0];
    let (mut on_svc, mut on_worker) = (svc.events(), worker.events());

    let answer = svc.submit(ask(&net, 1)).await.expect("answered");
    let receipt = answer.receipt.expect("the service signed a receipt");
    let request = |r: &dpow_protocol::RequestId| r.to_string() == answer.request;

    // Until both the caller's answer and the receipt on disk are told (a node without a
    // store takes its own receipt in the same turn, so either may come first).
    let mut svc_saw = until(&mut on_svc, |e| matches!(e, Event::Completed { .. })).await;
    let own_receipt =
        |e: &Event| matches!(e, Event::ReceiptStored { receipt: r, .. } if *r == receipt);
    if !svc_saw.iter().any(own_receipt) {
        svc_saw.extend(until(&mut on_svc, own_receipt).await);
    }
    let asked = at(&svc_saw, |e| {
        matches!(e, Event::RequestSeen { request: r, own: true, service, .. }
            if request(r) && *service == net.service.public())
    })
    .expect("its own request");
    let answered = at(&svc_saw, |e| {
        matches!(e, Event::Answered { request: r, worker: w } if request(r) && *w == answer.worker)
    })
    .expect("the result");
    let completed = at(&svc_saw, |e| {
        matches!(e, Event::Completed { request: r, worker: w, latency_ms }
            if request(r) && *w == answer.worker && *latency_ms >= 0.0)
    })
    .unwrap_or_else(|| panic!("the caller answered: {svc_saw:#?}"));
    let stored = at(&svc_saw, |e| {
        matches!(e, Event::ReceiptStored { receipt: r, from: ReceiptFrom::Own } if *r == receipt)
    })
    .expect("its own receipt, on disk");
    assert!(
        asked < answered && answered < completed && answered < stored,
        "out of order: {svc_saw:#?}"
    );

    // The worker: the request from the network, its own solve, the receipt by gossip.
    let worker_saw = until(
        &mut on_worker,
        |e| matches!(e, Event::ReceiptStored { receipt: r, .. } if *r == receipt),
    )
    .await;
    let heard = at(
        &worker_saw,
        |e| matches!(e, Event::RequestSeen { request: r, own: false, .. } if request(r)),
    )
    .expect("the request");
    let solved = at(
        &worker_saw,
        |e| matches!(e, Event::Solved { request: r, .. } if request(r)),
    )
    .expect("its solve");
    let paid = at(&worker_saw, |e| {
        matches!(e, Event::ReceiptStored { receipt: r, from: ReceiptFrom::Gossip } if *r == receipt)
    })
    .expect("the receipt, from gossip");
    assert!(
        heard < solved && solved < paid,
        "out of order: {worker_saw:#?}"
    );
    assert_eq!(
        answer.worker.to_string(),
        worker.stats().account,
        "the one worker solved it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboards_stream_names_each_event_beside_the_statistics() {
    let (net, svc) = one_worker().await;
    let app = dpow_node::http::router(svc.stats_reader());
    let addr = dpow_testnet::local::serve_http(app).await;
    let mut stream = reqwest::get(format!("http://{addr}/api/events"))
        .await
        .expect("the stream opens");
    assert_eq!(stream.status(), 200);
    // The stream's reader subscribes when the response starts; an event of the node after
    // that is on it. A first statistics snapshot says the stream is being served.
    let mut text = String::new();
    read_until(&mut text, &mut stream, "\"peer_id\"").await;
    let answer = svc.submit(ask(&net, 2)).await.expect("answered");
    read_until(&mut text, &mut stream, "event: completed").await;
    let line = text
        .lines()
        .skip_while(|l| *l != "event: completed")
        .nth(1)
        .expect("its data");
    let data: serde_json::Value =
        serde_json::from_str(line.strip_prefix("data: ").expect("a data line")).expect("json");
    assert_eq!(data["kind"], "completed");
    assert_eq!(data["request"], answer.request);
    assert_eq!(data["worker"], answer.worker.to_string());
    assert!(text.contains("event: request_seen"), "{text}");
}

/// `wait_books` looks at the books again when the node stores a receipt: its first look comes
/// before the request exists, and only a `receipt_stored` event can wake it for the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wait_on_the_books_looks_again_when_a_receipt_is_stored() {
    let (net, svc) = one_worker().await;
    let root = Root([9; 32]);
    let mut looks = 0u32;
    // Polled first by `join!`, so its first look is asked of the node before the request.
    let waiting = wait_books(&svc, T, |l, _| {
        looks += 1;
        l.counted()
            .find(|r| r.payload().request.payload().root == root)
            .map(|r| r.payload().result.payload().worker)
    });
    let (found, answer) = tokio::join!(waiting, svc.submit(ask(&net, 9)));
    let answer = answer.expect("answered");
    assert_eq!(
        found,
        Some(answer.worker),
        "the wait saw the receipt naming the worker"
    );
    assert!(
        looks >= 2,
        "found on the first look: nothing was waited for"
    );
}

/// `procs::EventStream`, how tests wait on a node in another process: it reads the named
/// events of `/api/events` in order, beside the unnamed statistics snapshots.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_process_reader_of_the_stream_sees_the_nodes_events_by_name() {
    let (net, svc) = one_worker().await;
    let app = dpow_node::http::router(svc.stats_reader());
    let url = format!("http://{}", dpow_testnet::local::serve_http(app).await);
    let mut stream = tokio::task::spawn_blocking(move || {
        dpow_testnet::procs::EventStream::open(&url).expect("the stream opens")
    })
    .await
    .expect("join");
    let answer = svc.submit(ask(&net, 3)).await.expect("answered");
    let names = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + T;
        let mut names = Vec::new();
        while std::time::Instant::now() < deadline {
            match stream.next_before(deadline).expect("the stream stays open") {
                Some(n) if n == "completed" => {
                    names.push(n);
                    break;
                }
                Some(n) => names.push(n),
                None => {}
            }
        }
        names
    })
    .await
    .expect("join");
    assert_eq!(
        names.last().map(String::as_str),
        Some("completed"),
        "{names:?}"
    );
    let seen = names.iter().position(|n| n == "request_seen");
    assert!(
        seen.is_some_and(|i| i + 1 < names.len()),
        "the request was told before its completion: {names:?} ({})",
        answer.request
    );
}
