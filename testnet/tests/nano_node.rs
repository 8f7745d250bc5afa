//! The work API as a Nano node and Nano's RPC clients see it.
//!
//! A Nano node's `work_peers` client (nano-node `distributed_work`) sends each peer a
//! `work_generate` written by boost's property_tree (pretty-printed, every value a string),
//! takes the first valid `work`, closes the other connections and sends those peers a
//! `work_cancel` (which it writes and does not read the answer of). It reads an answer only when the status is
//! 200, so every error a well-formed call can meet is checked here for status 200 and its
//! `error` text; only a refused token (401) and an oversized body (413) differ.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{HASH, T, config, hash, network, open_store, reference_value, serve};
use dpow_protocol::{Difficulty, Root, Work, work_value};
use dpow_solver::{Control, SolveError, Solver};
use dpow_testnet::local::wait_for;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A JSON object as boost's property_tree `write_json` prints it: four-space indents, one
/// field a line, every value a string, a final newline.
fn ptree(fields: &[(&str, &str)]) -> String {
    let lines: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("    \"{k}\": {}", Value::from(*v)))
        .collect();
    format!("{{\n{}\n}}\n", lines.join(",\n"))
}

/// Open a connection and write a request as the node's beast client does: `POST /` over
/// HTTP/1.1, `Content-Type: application/json`, the bare address as `Host`, no token.
async fn nano_send(addr: SocketAddr, body: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connects");
    let head = format!(
        "POST / HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        addr.ip(),
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("writes");
    s.write_all(body.as_bytes()).await.expect("writes");
    s
}

/// The status and body of a whole HTTP/1.1 answer at the start of `buf`, once it is all there.
fn whole_answer(buf: &[u8]) -> Option<(u16, &[u8])> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let len: usize = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())
            .flatten()
    })?;
    buf.get(end + 4..end + 4 + len).map(|b| (status, b))
}

/// Read one answer, as the node does before it looks at `work`.
async fn nano_read(s: &mut TcpStream) -> (u16, Value) {
    let read = async {
        let mut buf = Vec::new();
        loop {
            if let Some((status, body)) = whole_answer(&buf) {
                return (status, serde_json::from_slice(body).expect("a JSON body"));
            }
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.expect("reads");
            assert!(n > 0, "the connection closed before a whole answer");
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(T, read)
        .await
        .expect("an answer in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_nano_node_gets_work_from_one_peer_and_cancels_the_other() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open_store(&dir);
    // No workers: peer A (local fallback) answers; peer B (none) waits on the network and loses.
    let (net, svc) = network(0).await;
    let profile = net.genesis.profile.clone();
    let a = serve(svc.clone(), config(profile.clone(), true, &store)).await;
    let b = serve(svc.clone(), config(profile, false, &store)).await;
    let account =
        dpow_keys::encode_account(&dpow_keys::SecretKey::generate().expect("key").public().0);
    let difficulty = "ffff000000000000";
    let generate = |h: &str| {
        ptree(&[
            ("action", "work_generate"),
            ("hash", h),
            ("difficulty", difficulty),
            ("account", &account),
        ])
    };
    let cancel = |h: &str| ptree(&[("action", "work_cancel"), ("hash", h)]);
    assert!(generate(HASH).starts_with("{\n    \"action\": \"work_generate\",\n    \"hash\": \""));

    // The node asks both peers.
    let before = svc.stats().submitted;
    let to_b = nano_send(b.addr, &generate(HASH)).await;
    wait_for(&svc, T, |s| s.submitted > before)
        .await
        .expect("B asked the network");
    let mut to_a = nano_send(a.addr, &generate(HASH)).await;
    let (status, v) = nano_read(&mut to_a).await;
    assert_eq!(status, 200, "{v}");
    assert!(v.get("error").is_none(), "{v}");
    // What the node reads: `work`, hex, at least the difficulty it asked for.
    let work = v["work"].as_str().expect("work");
    assert_eq!(work.len(), 16, "{v}");
    let value = reference_value(HASH, work);
    assert!(value >= 0xffff_0000_0000_0000, "{value:016x}");
    assert_eq!(v["hash"], HASH);
    assert_eq!(v["difficulty"], format!("{value:016x}"));
    assert_eq!(v["source"], "local");

    // It closes the loser's connection and sends it work_cancel for the same hash.
    drop(to_b);
    let mut c = nano_send(b.addr, &cancel(HASH)).await;
    let (status, v) = nano_read(&mut c).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v, json!({"success": "", "cancelled": 1}));
    wait_for(&net.bootstrap, T, |s| s.accepted_of("work-cancel") >= 1)
        .await
        .expect("the cancel reached the network");

    // The node writes work_cancel and hangs up without reading: the cancel still happens.
    let before = svc.stats().submitted;
    let to_b = nano_send(b.addr, &generate(&hash(2))).await;
    wait_for(&svc, T, |s| s.submitted > before)
        .await
        .expect("B asked the network");
    drop(to_b);
    drop(nano_send(b.addr, &cancel(&hash(2))).await);
    wait_for(&net.bootstrap, T, |s| s.accepted_of("work-cancel") >= 2)
        .await
        .expect("a cancel whose caller hung up still reached the network");

    // Fields a Nano client adds (`version`, a `block` as a JSON string) do not get in the way.
    let block = json!({"type": "state", "previous": hash(3), "link": hash(0)}).to_string();
    let body = ptree(&[
        ("action", "work_generate"),
        ("version", "work_1"),
        ("hash", &hash(3)),
        ("difficulty", difficulty),
        ("block", &block),
    ]);
    let mut s = nano_send(a.addr, &body).await;
    let (status, v) = nano_read(&mut s).await;
    assert_eq!(status, 200, "{v}");
    let work = v["work"].as_str().expect("work");
    assert!(reference_value(&hash(3), work) >= 0xffff_0000_0000_0000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn input_errors_answer_200_with_the_error_and_only_token_and_size_are_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open_store(&dir);
    let (net, svc) = network(1).await;
    let api = serve(
        svc.clone(),
        config(net.genesis.profile.clone(), false, &store),
    )
    .await;
    let before = svc.stats().submitted;
    let body = |v: Value| v.to_string().into_bytes();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        // Not JSON at all, as Nano's RPC answers it.
        (b"{not json".to_vec(), "Unable to parse JSON"),
        (Vec::new(), "Unable to parse JSON"),
        (b"[1,2]".to_vec(), "Unable to parse JSON"),
        (body(json!({"action": "work_dance"})), "Unknown command"),
        (body(json!({"hash": HASH})), "Unknown command"),
        (body(json!({"action": "work_generate"})), "Bad block hash"),
        (
            body(json!({"action": "work_generate", "hash": "12zz"})),
            "Bad block hash",
        ),
        (
            body(json!({"action": "work_validate", "work": "0000000000000000"})),
            "Bad block hash",
        ),
        (body(json!({"action": "work_cancel"})), "Bad block hash"),
        (
            body(json!({"action": "work_precache", "hash": 7})),
            "Bad block hash",
        ),
        (
            body(json!({"action": "work_generate", "hash": HASH, "difficulty": "xyz"})),
            "Bad difficulty",
        ),
        (
            body(json!({"action": "work_generate", "hash": HASH, "multiplier": "-2"})),
            "Bad multiplier",
        ),
        (
            body(
                json!({"action": "work_generate", "hash": HASH, "difficulty": "0000000000000001"}),
            ),
            "Difficulty out of valid range",
        ),
        (
            body(json!({"action": "work_generate", "hash": HASH, "account": "nano_1bad"})),
            "Bad account number",
        ),
        (
            body(json!({"action": "work_precache", "hash": HASH, "account": "xrb_"})),
            "Bad account number",
        ),
        (
            body(json!({"action": "work_validate", "hash": HASH, "work": "nope"})),
            "Bad work",
        ),
        (
            body(json!({"action": "work_generate", "hash": HASH, "block": 5})),
            "Block is invalid",
        ),
        (
            body(json!({"action": "work_generate", "hash": HASH, "block": "{\"type\""})),
            "Block is invalid",
        ),
    ];
    for (body, text) in cases {
        let shown = String::from_utf8_lossy(&body).to_string();
        let (s, v) = api.post_raw(body).await;
        assert_eq!((s, v["error"].as_str()), (200, Some(text)), "{shown}: {v}");
    }
    assert_eq!(svc.stats().submitted, before, "nothing reached the network");

    let (s, v) = api.post_raw(vec![b' '; 64 * 1024]).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (413, Some("Request body over 16384 bytes"))
    );

    // A token, when set, is required.
    let mut c = config(net.genesis.profile.clone(), false, &store);
    c.token = Some("s3cret".into());
    let locked = serve(svc.clone(), c).await;
    let validate = json!({"action": "work_validate", "hash": HASH, "work": "0000000000000000"});
    for token in [None, Some("guess"), Some("s3cret2"), Some("")] {
        let (s, v) = locked.with_token(token).post(validate.clone()).await;
        assert_eq!(
            (s, v["error"].as_str()),
            (401, Some("Unauthorized")),
            "{token:?}"
        );
    }
    let (s, v) = locked.post(validate).await;
    assert_eq!(s, 200, "{v}");
}

/// A fallback solver that fails, or (`lie`) breaks its promise and returns invalid work.
struct BrokenSolver {
    lie: bool,
}

impl Solver for BrokenSolver {
    fn name(&self) -> String {
        "broken".into()
    }

    fn solve(&self, root: &Root, d: Difficulty, _: &Control) -> Result<Option<Work>, SolveError> {
        if !self.lie {
            return Err(SolveError::Device {
                device: "broken".into(),
                reason: "out of order".into(),
            });
        }
        Ok((0u64..).map(Work).find(|w| work_value(root, *w) < d))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn generation_failures_answer_200_with_the_error() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open_store(&dir);
    let (net, svc) = network(0).await;
    let profile = net.genesis.profile.clone();
    let generate = |i: u8| json!({"action": "work_generate", "hash": hash(i)});

    // No worker and no fallback: the request expires.
    let mut c = config(profile.clone(), false, &store);
    c.request_lifetime = Duration::from_secs(1);
    let (s, v) = serve(svc.clone(), c).await.post(generate(50)).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (
            200,
            Some("Work generation failed: no valid work arrived before the request expired")
        ),
        "{v}"
    );

    // The node refuses to send a request its peers would refuse (longer than 10 minutes).
    let mut c = config(profile.clone(), false, &store);
    c.request_lifetime = Duration::from_secs(11 * 60);
    let (s, v) = serve(svc.clone(), c).await.post(generate(51)).await;
    let e = v["error"].as_str().unwrap_or("");
    assert_eq!(s, 200, "{v}");
    assert!(
        e.starts_with("Work generation failed: ") && e.contains("lifetime"),
        "{v}"
    );

    // The local fallback fails.
    let mut c = config(profile.clone(), false, &store);
    c.fallback = Some(Arc::new(BrokenSolver { lie: false }));
    let (s, v) = serve(svc.clone(), c).await.post(generate(52)).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (
            200,
            Some("Work generation failed: device broken failed: out of order")
        ),
        "{v}"
    );

    // Invalid work from anywhere is never served.
    let mut c = config(profile, false, &store);
    c.fallback = Some(Arc::new(BrokenSolver { lie: true }));
    let (s, v) = serve(svc.clone(), c).await.post(generate(53)).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (200, Some("Work generation failed")),
        "{v}"
    );
    assert!(v.get("work").is_none());
}
