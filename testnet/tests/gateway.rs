//! The work-server API on a service's node, driven over real HTTP with reqwest.

mod common;

use std::sync::Arc;

use common::{
    HASH, T, config, hash, holds, network, open_store, reference_value, serve, serve_gateway,
    stored_lines, when_precached,
};
use dpow_node::gateway::Gateway;
use dpow_testnet::local::wait_for;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn generate_and_validate_speak_the_work_server_protocol() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open_store(&dir);
    let (net, svc) = network(2).await;
    let profile = net.genesis.profile.clone();
    let api = serve(svc.clone(), config(profile.clone(), false, &store)).await;

    // Default threshold (send), explicit difficulty, multiplier, and a block's subtype.
    let send = profile.threshold(dpow_protocol::BlockKind::Send).0;
    let receive = profile.threshold(dpow_protocol::BlockKind::Receive).0;
    let cases = [
        (json!({"action": "work_generate", "hash": hash(1)}), send),
        (
            json!({"action": "work_generate", "hash": hash(2), "difficulty": "fffff80000000000"}),
            0xfffff80000000000,
        ),
        (
            json!({"action": "work_generate", "hash": hash(3), "multiplier": "0.0625"}),
            0xffff000000000000,
        ),
        (
            json!({"action": "work_generate", "hash": hash(4),
                   "json_block": "true",
                   "block": {"type": "state", "subtype": "receive", "previous": hash(4)}}),
            receive,
        ),
    ];
    for (body, threshold) in cases {
        let (status, v) = api.post(body.clone()).await;
        assert_eq!(status, 200, "{body}: {v}");
        let work = v["work"].as_str().expect("work");
        let h = v["hash"].as_str().expect("hash echoed");
        assert_eq!(work.len(), 16);
        let value = reference_value(h, work);
        assert!(
            value >= threshold,
            "{body}: {value:016x} < {threshold:016x}"
        );
        assert_eq!(v["difficulty"], json!(format!("{value:016x}")));
        assert!(
            v["multiplier"]
                .as_str()
                .and_then(|m| m.parse::<f64>().ok())
                .is_some()
        );
        assert_eq!(v["source"], "network");
        assert!(v["worker"].as_str().is_some_and(|w| w.starts_with("dpow_")));

        // The same work, validated.
        let (status, val) = api
            .post(json!({"action": "work_validate", "hash": h, "work": work, "difficulty": format!("{threshold:016x}")}))
            .await;
        assert_eq!(status, 200);
        assert_eq!(val["valid"], "1");
        assert_eq!(val["difficulty"], v["difficulty"]);
        let expect_all = if value >= send { "1" } else { "0" };
        assert_eq!(val["valid_all"], expect_all);
        assert_eq!(val["valid_receive"], "1");
    }
    // Work that fails.
    let bad = (0u64..)
        .map(|n| format!("{n:016x}"))
        .find(|w| reference_value(HASH, w) < receive)
        .expect("an invalid nonce");
    let (_, val) = api
        .post(json!({"action": "work_validate", "hash": HASH, "work": bad}))
        .await;
    assert_eq!(val["valid_all"], "0");
    assert_eq!(val["valid_receive"], "0");
    assert!(
        val.get("valid").is_none(),
        "valid only with an explicit difficulty"
    );
    drop(net);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_calls_for_one_root_share_one_request() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open_store(&dir);
    let (net, svc) = network(2).await;
    let api = Arc::new(
        serve(
            svc.clone(),
            config(net.genesis.profile.clone(), false, &store),
        )
        .await,
    );
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let api = api.clone();
        set.spawn(async move { api.post(json!({"action": "work_generate", "hash": hash(9), "difficulty": "fffffc0000000000"})).await });
    }
    let mut works = Vec::new();
    while let Some(r) = set.join_next().await {
        let (s, v) = r.expect("task");
        assert_eq!(s, 200, "{v}");
        works.push(v["work"].as_str().expect("work").to_string());
    }
    works.dedup();
    assert_eq!(works.len(), 1, "everyone got the one answer");
    assert_eq!(svc.stats().submitted, 1, "one network request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_no_workers_the_node_falls_back_or_can_be_cancelled() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open_store(&dir);
    let (net, svc) = network(0).await;
    let profile = net.genesis.profile.clone();
    let api = serve(svc.clone(), config(profile.clone(), true, &store)).await;
    let (s, v) = api
        .post(json!({"action": "work_generate", "hash": hash(20)}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["source"], "local");
    assert!(
        reference_value(&hash(20), v["work"].as_str().expect("work"))
            >= profile.threshold(dpow_protocol::BlockKind::Send).0
    );

    // Without a fallback the call waits for the network; work_cancel ends it.
    let waiting = Arc::new(serve(svc.clone(), config(profile, false, &store)).await);
    let w = waiting.clone();
    let pending = tokio::spawn(async move {
        w.post(json!({"action": "work_generate", "hash": hash(21)}))
            .await
    });
    wait_for(&svc, T, |s| s.submitted >= 1)
        .await
        .expect("submitted");
    let (s, v) = waiting
        .post(json!({"action": "work_cancel", "hash": hash(21)}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["cancelled"], 1);
    let (s, v) = pending.await.expect("task");
    assert_eq!((s, &v["error"]), (200, &json!("Cancelled")), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn precached_work_answers_at_once_survives_a_restart_and_is_dropped_when_stale() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open_store(&dir);
    let (net, svc) = network(2).await;
    let profile = net.genesis.profile.clone();
    let account =
        dpow_keys::encode_account(&dpow_keys::SecretKey::generate().expect("key").public().0);
    let api = serve(svc.clone(), config(profile.clone(), false, &store)).await;
    let (s, v) = api
        .post(json!({"action": "work_precache", "hash": hash(30), "account": account}))
        .await;
    assert_eq!(s, 200, "{v}");
    when_precached(&api.precached, "precache never stored", || {
        !stored_lines(&store).is_empty()
    })
    .await;
    let (_, v) = api
        .post(json!({"action": "work_generate", "hash": hash(30)}))
        .await;
    assert_eq!(v["source"], "cache", "{v}");
    let cached = v["work"].as_str().expect("work").to_string();

    // A new gateway over the same store (a restart of the gateway; RocksDB's own durability
    // across processes is tested in dpow-node's store tests and the ledger's kill -9 test)
    // serves it too.
    let again = serve(svc.clone(), config(profile.clone(), false, &store)).await;
    let (_, v) = again
        .post(json!({"action": "work_generate", "hash": hash(30)}))
        .await;
    assert_eq!(v["source"], "cache");
    assert_eq!(v["work"], cached.as_str());

    // A tampered entry is not served.
    let text = stored_lines(&store).concat();
    let bad = (0u64..)
        .map(|n| format!("{n:016x}"))
        .find(|w| reference_value(&hash(30), w) < 0xff00000000000000)
        .expect("bad");
    let tampered = text.replace(&format!("\"{cached}\""), &format!("\"{bad}\""));
    assert_ne!(tampered, text, "the work is stored as a hex string");
    let root: dpow_protocol::Root = hash(30).parse().expect("root");
    store
        .precache_put(&root.0, tampered.as_bytes(), &[])
        .expect("write");
    let third = serve(svc.clone(), config(profile.clone(), false, &store)).await;
    let (_, v) = third
        .post(json!({"action": "work_generate", "hash": hash(30)}))
        .await;
    assert_eq!(v["source"], "network", "{v}");

    // The account moves on: its old frontier's work is dropped.
    let (_, _) = api
        .post(json!({"action": "work_precache", "hash": hash(31), "account": account}))
        .await;
    when_precached(&api.precached, "second precache never stored", || {
        holds(&store, &hash(31))
    })
    .await;
    let (_, v) = api
        .post(json!({"action": "work_generate", "hash": hash(31)}))
        .await;
    assert_eq!(v["source"], "cache");
    let (_, v) = api
        .post(json!({"action": "work_generate", "hash": hash(30)}))
        .await;
    assert_eq!(v["source"], "network", "{v}");
}

/// A stand-in for a Nano node's websocket: it takes the subscription, then reports confirmed
/// blocks the way the node documents them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn confirmations_from_a_nano_websocket_precache_the_next_work() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as Ws;

    let dir = tempfile::tempdir().expect("dir");
    let store = open_store(&dir);
    let (net, svc) = network(2).await;
    let tracked =
        dpow_keys::encode_account(&dpow_keys::SecretKey::generate().expect("key").public().0);
    let stranger =
        dpow_keys::encode_account(&dpow_keys::SecretKey::generate().expect("key").public().0);
    let gw = Gateway::new(
        svc.client(),
        config(net.genesis.profile.clone(), false, &store),
    );
    let api = serve_gateway(&svc, &gw, None).await;
    // The account becomes known to the gateway through an ordinary call.
    let (s, v) = api
        .post(json!({"action": "work_generate", "hash": hash(40), "account": tracked}))
        .await;
    assert_eq!(s, 200, "{v}");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("ws listener");
    let ws_url = format!("ws://{}", listener.local_addr().expect("addr"));
    let (t, s2) = (tracked.clone(), stranger.clone());
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut ws = tokio_tungstenite::accept_async(tcp)
            .await
            .expect("handshake");
        let sub = match ws.next().await.expect("a message").expect("ok") {
            Ws::Text(t) => serde_json::from_str::<Value>(t.as_str()).expect("json"),
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(sub["action"], "subscribe");
        assert_eq!(sub["topic"], "confirmation");
        assert!(
            sub["options"]["accounts"]
                .as_array()
                .expect("accounts")
                .contains(&json!(t))
        );
        ws.send(Ws::text(
            json!({"ack": "subscribe", "time": "1"}).to_string(),
        ))
        .await
        .expect("ack");
        ws.send(Ws::text("not json".to_string()))
            .await
            .expect("garbage");
        for (account, h) in [(s2, hash(42)), (t, hash(41))] {
            let msg = json!({
                "topic": "confirmation",
                "time": "1700000000000",
                "message": {
                    "account": account,
                    "amount": "1000000000000000000000000",
                    "hash": h,
                    "confirmation_type": "active_quorum",
                    "block": {"type": "state", "account": account, "previous": hash(40),
                              "subtype": "send", "link": hash(0)}
                }
            });
            ws.send(Ws::text(msg.to_string()))
                .await
                .expect("confirmation");
        }
        // Stay connected until the test ends.
        while ws.next().await.is_some() {}
    });
    let follower = tokio::spawn(gw.clone().follow_confirmations(ws_url));

    when_precached(
        &gw.precached(),
        "the confirmed frontier was never precached",
        || holds(&store, &hash(41)),
    )
    .await;
    let (_, v) = api
        .post(
            json!({"action": "work_generate", "hash": hash(41), "difficulty": "ff00000000000000"}),
        )
        .await;
    assert_eq!(
        v["source"], "cache",
        "the confirmed frontier is served from the precache: {v}"
    );
    assert!(
        !holds(&store, &hash(42)),
        "an untracked account's block was precached"
    );
    follower.abort();
    server.abort();
}
