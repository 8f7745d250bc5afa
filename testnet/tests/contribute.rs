//! Browser workers (issue 18): the `/contribute` bridge and page.
//!
//! - the page's own encoder (node/assets/contribute-wire.js) in Node.js, byte for byte
//!   against the Rust envelopes, with a WebCrypto Ed25519 signature Rust verifies;
//! - the bridge driven from Rust as a browser would: a carried result earns the browser its
//!   credit, a carrier that re-signs it as its own earns nothing, and a connection that sends
//!   garbage is cut off and its key refused;
//! - headless Chromium on the page of a `dpow node --browser-workers`: it takes a payout
//!   account, solves requests (each checked by the reference work check), the books credit
//!   that account, and when the serving node is killed the page moves to another node.
#![allow(clippy::print_stderr)] // says why a browser test was skipped

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dpow_keys::{NanoAccount, SecretKey};
use dpow_node::net::{NodeHandle, Topic, WorkAsk};
use dpow_protocol::{
    Credits, Difficulty, Priority, Root, Signed, Work, WorkResult, WorkerStatus, codec,
};
use dpow_testnet::local::{LocalNet, LocalOptions, wait_books, wait_for};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(20);
const EASY: Difficulty = Difficulty(0xff00_0000_0000_0000);

fn account(seed: u8) -> NanoAccount {
    NanoAccount::from_bytes([seed; 32]).expect("not the burn account")
}

/// Work for `root` at `d`, by brute force from a random start (test difficulties are easy).
fn solve(root: &Root, d: Difficulty) -> Work {
    let mut n = dpow_solver::random_start();
    loop {
        if dpow_protocol::is_valid(root, Work(n), d) {
            return Work(n);
        }
        n = n.wrapping_add(1);
    }
}

// ---- the page's encoder in Node.js ----

#[test]
fn the_pages_encoder_matches_rust_byte_for_byte_and_its_webcrypto_signature_verifies() {
    let Ok(node) = which("node") else {
        assert!(
            std::env::var_os("DPOW_REQUIRE_WASM").is_none(),
            "DPOW_REQUIRE_WASM is set but there is no Node.js"
        );
        eprintln!("skipped: no Node.js");
        return;
    };
    let key = SecretKey::generate().expect("key");
    let payout = account(7);
    let result = WorkResult {
        request: dpow_protocol::MessageId([3; 32]),
        root: Root([9; 32]),
        work: Work(0xfedc_ba98_7654_3210),
        worker: key.public(),
        payout: Some(payout),
    };
    let status = WorkerStatus {
        worker: key.public(),
        hash_rate: 12_345_678,
        queue: 300,
        payout: None,
        created_ms: 1_780_000_000_123,
    };
    let netid = dpow_testkit::builders::NET;
    let sres = Signed::sign(result.clone(), &key, &netid).expect("sign");
    let sst = Signed::sign(status.clone(), &key, &netid).expect("sign");
    let sig = |b: &[u8]| hex::encode(&b[b.len() - 64..]);
    let dir = tempfile::tempdir().expect("dir");
    let wire = dir.path().join("wire.mjs");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../node/assets/contribute-wire.js"
        ),
        &wire,
    )
    .expect("copy");
    let script = format!(
        r#"
import * as w from {wire:?};
const h = w.fromHex;
const res = w.encodeResult({{request: h('{req}'), root: h('{root}'), work: 'fedcba9876543210',
  worker: h('{worker}'), payout: w.decodeAccount('{payout}')}});
const st = w.encodeStatus({{worker: h('{worker}'), hashRate: 12345678, queue: 300, payout: null,
  createdMs: 1780000000123}});
let typo = 'none';
try {{ w.decodeAccount('{typo}'); }} catch (e) {{ typo = e.message; }}
const pair = await crypto.subtle.generateKey({{name: 'Ed25519'}}, true, ['sign', 'verify']);
const raw = new Uint8Array(await crypto.subtle.exportKey('raw', pair.publicKey));
const own = w.encodeStatus({{worker: raw, hashRate: 5, queue: 1, payout: w.decodeAccount('{payout}'), createdMs: 42}});
const ownSig = new Uint8Array(await crypto.subtle.sign({{name: 'Ed25519'}}, pair.privateKey, w.signingInput('status', own, h('{netid}'))));
console.log(JSON.stringify({{
  result: w.toHex(res), status: w.toHex(st),
  result_env: w.toHex(w.envelope('result', res, h('{rsig}'))),
  status_env: w.toHex(w.envelope('status', st, h('{ssig}'))),
  account: w.encodeAccount(w.decodeAccount('{payout}')),
  key_text: w.encodeAccount(h('{worker}'), 'dpow_'),
  typo, own: w.toHex(w.envelope('status', own, ownSig)),
}}));
"#,
        wire = wire.display().to_string(),
        req = hex::encode([3u8; 32]),
        root = hex::encode([9u8; 32]),
        worker = hex::encode(key.public().0),
        payout = payout,
        typo = {
            let mut s = payout.to_string();
            let last = s.pop().expect("text");
            s.push(if last == '1' { '3' } else { '1' });
            s
        },
        rsig = sig(sres.bytes()),
        ssig = sig(sst.bytes()),
        netid = netid,
    );
    let js = dir.path().join("check.mjs");
    std::fs::write(&js, script).expect("write");
    let out = Command::new(node).arg(&js).output().expect("node runs");
    assert!(
        out.status.success(),
        "node failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        v["result"].as_str(),
        Some(hex::encode(codec::encode(&result, "t").expect("enc")).as_str())
    );
    assert_eq!(
        v["status"].as_str(),
        Some(hex::encode(codec::encode(&status, "t").expect("enc")).as_str())
    );
    assert_eq!(
        v["result_env"].as_str(),
        Some(hex::encode(sres.bytes()).as_str())
    );
    assert_eq!(
        v["status_env"].as_str(),
        Some(hex::encode(sst.bytes()).as_str())
    );
    assert_eq!(v["account"].as_str(), Some(payout.to_string().as_str()));
    assert_eq!(
        v["key_text"].as_str(),
        Some(key.public().to_string().as_str())
    );
    assert!(
        v["typo"].as_str().is_some_and(|t| t.contains("checksum")),
        "a typo is caught: {v}"
    );
    // A status signed by WebCrypto, as the page signs, verifies in Rust.
    let own = hex::decode(v["own"].as_str().expect("own")).expect("hex");
    let own = Signed::<WorkerStatus>::decode(&own, &netid).expect("the page's envelope verifies");
    assert_eq!(own.payload().payout, Some(payout));
    assert_eq!(own.payload().hash_rate, 5);
}

fn which(cmd: &str) -> Result<String, ()> {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stderr(Stdio::null())
        .output()
        .map_err(|_| ())?;
    let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if p.is_empty() { Err(()) } else { Ok(p) }
}

// ---- the bridge, driven from Rust ----

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A relay node that serves browser workers; its HTTP base URL.
async fn carrier(net: &LocalNet, key: SecretKey) -> (Arc<NodeHandle>, String) {
    let node = Arc::new(dpow_node::net::spawn(net.config(key)).await.expect("node"));
    node.wait_synced(T).await.expect("synced");
    let app = dpow_node::http::router(node.stats_reader()).merge(dpow_node::browser::router(
        node.client(),
        &net.genesis,
        dpow_node::browser::BrowserConfig::default(),
    ));
    let addr = dpow_testnet::local::serve_http(app).await;
    (node, format!("http://{addr}"))
}

async fn connect(base: &str) -> Ws {
    let url = format!("{}/contribute/ws", base.replace("http://", "ws://"));
    let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("ws");
    ws
}

/// The next message of type `t` (others skipped); `None` if the socket closed.
async fn next_of(ws: &mut Ws, t: &str) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no {t} message within {T:?}"));
        match msg {
            Some(Ok(Message::Text(s))) => {
                let v: Value = serde_json::from_str(&s).expect("json");
                if v["t"] == t {
                    return Some(v);
                }
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => {}
        }
    }
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into()))
        .await
        .expect("send");
}

async fn send_status(ws: &mut Ws, net: &LocalNet, key: &SecretKey, payout: NanoAccount) {
    let st = WorkerStatus {
        worker: key.public(),
        hash_rate: 1_000_000,
        queue: 0,
        payout: Some(payout),
        created_ms: dpow_node::net::now_ms(),
    };
    let s = Signed::sign(st, key, &net.genesis.id).expect("sign");
    send(
        ws,
        json!({"t": "status", "envelope": hex::encode(s.bytes())}),
    )
    .await;
}

fn ask(root: Root) -> WorkAsk {
    WorkAsk {
        root,
        difficulty: EASY,
        kind: None,
        account: None,
        priority: Priority::Normal,
        lifetime: Duration::from_secs(30),
    }
}

/// The browser's side of one request: wait for it on the socket, solve, sign, send.
async fn answer_next(
    ws: &mut Ws,
    net: &LocalNet,
    key: &SecretKey,
    payout: NanoAccount,
) -> Signed<WorkResult> {
    let req = next_of(ws, "request").await.expect("a request");
    let id: dpow_protocol::MessageId = req["id"].as_str().expect("id").parse().expect("id");
    let root = Root(
        hex::decode(req["root"].as_str().expect("root"))
            .expect("hex")
            .try_into()
            .expect("32 bytes"),
    );
    let d =
        Difficulty(u64::from_str_radix(req["difficulty"].as_str().expect("d"), 16).expect("hex"));
    let work = solve(&root, d);
    let res = WorkResult {
        request: id,
        root,
        work,
        worker: key.public(),
        payout: Some(payout),
    };
    let signed = Signed::sign(res, key, &net.genesis.id).expect("sign");
    send(
        ws,
        json!({"t": "result", "id": id.to_string(), "envelope": hex::encode(signed.bytes())}),
    )
    .await;
    signed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_carried_result_earns_the_browser_its_credit_and_a_resigning_carrier_earns_nothing() {
    let net = LocalNet::start(LocalOptions {
        workers: 0,
        ..LocalOptions::default()
    })
    .await
    .expect("network");
    let svc = Arc::new(net.service_node().await.expect("service"));
    let carrier_key = SecretKey::generate().expect("key");
    let (node, base) = carrier(&net, carrier_key.clone()).await;
    let browser = SecretKey::generate().expect("key");
    let payout = account(11);
    let mut ws = connect(&base).await;
    let hello = next_of(&mut ws, "hello").await.expect("hello");
    assert_eq!(hello["network"], net.genesis.network.as_str());
    send_status(&mut ws, &net, &browser, payout).await;
    assert_eq!(
        next_of(&mut ws, "ack").await.expect("ack")["kind"],
        "status"
    );
    // The browser's status reached the service node over gossip.
    wait_for(&svc, T, |s| s.live_workers >= 1)
        .await
        .expect("status spread");

    // One request, answered by the browser through the carrier.
    let root = Root([0x42; 32]);
    let s2 = svc.clone();
    let first = tokio::spawn(async move { s2.submit(ask(root)).await });
    let carried = answer_next(&mut ws, &net, &browser, payout).await;
    assert_eq!(
        next_of(&mut ws, "ack").await.expect("ack")["kind"],
        "result"
    );
    let a = first.await.expect("join").expect("answered");
    assert_eq!(
        a.worker,
        browser.public(),
        "the browser's key won, not the carrier's"
    );
    assert!(dpow_testkit::reference::work_value(&root, a.work) >= EASY.0);

    // The carrier re-signs the browser's result as its own: refused as answered.
    let rogue = |request| {
        let p = carried.payload();
        let r = WorkResult {
            request,
            root: p.root,
            work: p.work,
            worker: carrier_key.public(),
            payout: Some(account(66)),
        };
        Signed::sign(r, &carrier_key, &net.genesis.id)
            .expect("sign")
            .bytes()
            .to_vec()
    };
    // (The carrier's only peer is the bootstrap relay, which holds the receipt and refuses
    // the copy as any peer would; it never reaches the service.)
    let relay = &net.bootstrap;
    let answered_before = relay.stats().rejected_for("answered");
    node.publish_raw(Topic::Results, rogue(carried.payload().request))
        .await
        .expect("published");
    wait_for(relay, T, |s| s.rejected_for("answered") > answered_before)
        .await
        .expect("the copy is refused as answered");

    // A second request on the same root: the carrier replays the paid work first.
    let (_, mut feed) = node.subscribe_requests().await.expect("feed");
    let s2 = svc.clone();
    let second = tokio::spawn(async move { s2.submit(ask(root)).await });
    let id = loop {
        match tokio::time::timeout(T, feed.recv())
            .await
            .expect("a request")
            .expect("feed")
        {
            dpow_node::net::BridgeEvent::Request(r) => break r.id(),
            dpow_node::net::BridgeEvent::Done(_) => {}
        }
    };
    let replays_before = relay.stats().rejected_for("replay");
    node.publish_raw(Topic::Results, rogue(id))
        .await
        .expect("published");
    wait_for(relay, T, |s| s.rejected_for("replay") > replays_before)
        .await
        .expect("the replayed work is refused");
    answer_next(&mut ws, &net, &browser, payout).await;
    let b = second.await.expect("join").expect("answered");
    assert_eq!(b.worker, browser.public());

    // The books: the browser holds both credits, the carrier none; the bridge says so too.
    let price = Credits::price(EASY).0;
    let earned = |ledger: &dpow_protocol::ledger::Ledger,
                  registry: &dpow_protocol::registry::Registry| {
        let bal = ledger.balances(registry);
        assert!(
            !bal.workers.contains_key(&carrier_key.public()),
            "the carrier earned nothing"
        );
        bal.workers.get(&browser.public()).map_or(0, |w| w.earned)
    };
    let both = wait_books(&svc, T, |l, r| {
        (earned(l, r) == 2 * u128::from(price)).then_some(())
    })
    .await;
    if both.is_none() {
        let (ledger, registry) = svc.ledger().await.expect("ledger");
        panic!(
            "the browser's credits never reached the books: {}",
            earned(&ledger, &registry)
        );
    }
    // The bridge answers from its node's books: once they hold both, its first answer does.
    wait_books(&node, T, |l, r| {
        (earned(l, r) == 2 * u128::from(price)).then_some(())
    })
    .await
    .expect("the carrier's books hold both credits");
    send(
        &mut ws,
        json!({"t": "credits", "account": payout.to_string()}),
    )
    .await;
    let c = next_of(&mut ws, "credits").await.expect("credits");
    assert_eq!(c["credits"], (2 * price).to_string(), "{c}");
    assert_eq!(c["results"], 2, "{c}");
    // The carrier's dashboard marks the browser.
    let stats: Value = reqwest_json(&format!("{base}/api/stats")).await;
    let workers = stats["worker_list"].as_array().expect("workers");
    assert!(
        workers
            .iter()
            .any(|w| w["account"] == browser.public().to_string() && w["browser"] == true),
        "the browser is listed as a browser: {workers:?}"
    );
}

async fn reqwest_json(url: &str) -> Value {
    let url = url.to_string();
    tokio::task::spawn_blocking(move || dpow_testnet::procs::http_get_json(&url))
        .await
        .expect("join")
        .expect("GET")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_browser_that_sends_garbage_is_cut_off_and_its_key_refused() {
    let net = LocalNet::start(LocalOptions {
        workers: 0,
        ..LocalOptions::default()
    })
    .await
    .expect("network");
    let (_node, base) = carrier(&net, SecretKey::generate().expect("key")).await;
    let browser = SecretKey::generate().expect("key");
    let mut ws = connect(&base).await;
    next_of(&mut ws, "hello").await.expect("hello");
    send_status(&mut ws, &net, &browser, account(5)).await;
    next_of(&mut ws, "ack").await.expect("ack");
    for _ in 0..dpow_node::browser::Budget::default().max_strikes {
        send(&mut ws, json!({"t": "result", "envelope": "01020304"})).await;
    }
    let bye = next_of(&mut ws, "bye").await.expect("bye");
    assert!(
        bye["reason"]
            .as_str()
            .is_some_and(|r| r.contains("too many")),
        "{bye}"
    );
    assert!(
        next_of(&mut ws, "never").await.is_none(),
        "the socket closed"
    );
    // The same key on a new connection is refused at once.
    let mut ws = connect(&base).await;
    next_of(&mut ws, "hello").await.expect("hello");
    send_status(&mut ws, &net, &browser, account(5)).await;
    let bye = next_of(&mut ws, "bye").await.expect("bye");
    assert!(
        bye["reason"]
            .as_str()
            .is_some_and(|r| r.contains("refused")),
        "{bye}"
    );
    // Another key is welcome.
    let mut ws = connect(&base).await;
    next_of(&mut ws, "hello").await.expect("hello");
    send_status(
        &mut ws,
        &net,
        &SecretKey::generate().expect("key"),
        account(5),
    )
    .await;
    next_of(&mut ws, "ack").await.expect("ack");
}

// ---- the page in headless Chromium ----

/// Headless Chromium on one page, killed when dropped.
struct Chromium {
    child: std::process::Child,
    log: std::path::PathBuf,
    _profile: tempfile::TempDir,
}

impl Chromium {
    fn open(browser: &str, url: &str, extra: &[&str]) -> Chromium {
        let profile = tempfile::tempdir().expect("profile dir");
        let log = profile.path().join("chromium.log");
        let child = Command::new(browser)
            .args(extra)
            .args([
                "--headless",
                "--no-sandbox",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("chromium starts");
        Chromium {
            child,
            log,
            _profile: profile,
        }
    }

    /// A PNG of the page now, over the DevTools protocol (opened with
    /// `--remote-debugging-port=0`).
    async fn screenshot(&self) -> Vec<u8> {
        let port_file = self._profile.path().join("DevToolsActivePort");
        let port = std::fs::read_to_string(port_file).expect("devtools port");
        let port = port.lines().next().expect("port line").to_string();
        let out = Command::new("curl")
            .args(["-s", &format!("http://127.0.0.1:{port}/json/list")])
            .output()
            .expect("curl");
        let list: Value = serde_json::from_slice(&out.stdout).expect("the devtools target list");
        let url = list
            .as_array()
            .and_then(|l| l.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("a page target")
            .to_string();
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("devtools");
        let call =
            json!({"id": 1, "method": "Page.captureScreenshot", "params": {"format": "png"}});
        send(&mut ws, call).await;
        loop {
            let msg = tokio::time::timeout(T, ws.next()).await.expect("an answer");
            if let Some(Ok(Message::Text(t))) = msg {
                let v: Value = serde_json::from_str(&t).expect("json");
                if v["id"] == 1 {
                    return base64_decode(v["result"]["data"].as_str().expect("png data"));
                }
            } else {
                panic!("devtools closed");
            }
        }
    }

    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_proc(
    dpow: &std::path::Path,
    dir: &std::path::Path,
    name: &str,
    genesis: &std::path::Path,
    extra: Vec<String>,
) -> dpow_testnet::procs::NodeProc {
    let (dpow, dir, name, genesis) = (
        dpow.to_path_buf(),
        dir.to_path_buf(),
        name.to_string(),
        genesis.to_path_buf(),
    );
    tokio::task::spawn_blocking(move || {
        dpow_testnet::procs::start_node(&dpow, &dir, &name, "relay", &genesis, &extra)
    })
    .await
    .expect("join")
    .expect("the node starts")
}

/// Requests the page must solve, and how many of them after its node is killed.
const PAGE_SOLVES: usize = 24;
const KILL_AFTER: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_page_solves_for_its_account_and_moves_to_another_node_when_its_node_dies() {
    let Some(browser) = dpow_testnet::browser::chromium().expect("chromium") else {
        eprintln!("skipped: no chromium");
        return;
    };
    if !dpow_node::browser_assets::has_browser_worker() {
        assert!(
            std::env::var_os("DPOW_REQUIRE_WASM").is_none(),
            "DPOW_REQUIRE_WASM is set but the node has no kernel"
        );
        eprintln!("skipped: this build has no WebAssembly kernel");
        return;
    }
    let dpow = dpow_testnet::procs::dpow_binary().expect("dpow");
    let net = LocalNet::start(LocalOptions {
        workers: 0,
        ..LocalOptions::default()
    })
    .await
    .expect("network");
    let svc = Arc::new(net.service_node().await.expect("service"));
    let dir = tempfile::tempdir().expect("dir");
    let genesis = dir.path().join("genesis.toml");
    net.write_genesis(&genesis, true).expect("genesis");
    let flag = |s: &str| s.to_string();
    let b = start_proc(
        &dpow,
        dir.path(),
        "b",
        &genesis,
        vec![flag("--browser-workers")],
    )
    .await;
    let a = start_proc(
        &dpow,
        dir.path(),
        "a",
        &genesis,
        vec![
            flag("--browser-workers"),
            flag("--browser-peers"),
            b.http.clone(),
        ],
    )
    .await;
    let payout = account(23);
    let shot = std::env::var_os("DPOW_CONTRIBUTE_SCREENSHOT");
    let devtools: &[&str] = if shot.is_some() {
        &[
            "--remote-debugging-port=0",
            "--window-size=430,900",
            "--hide-scrollbars",
        ]
    } else {
        &[]
    };
    let page = Chromium::open(
        browser,
        &format!(
            "{}/contribute?account={payout}&threads=2&start=1&backend=wasm",
            a.http
        ),
        devtools,
    );
    let mut a = Some(a);
    let mut answers = Vec::new();
    let mut after_kill = 0;
    let deadline = Instant::now() + Duration::from_secs(50);
    let mut i = 0u32;
    while answers.len() < PAGE_SOLVES {
        assert!(
            Instant::now() < deadline,
            "the page solved only {} requests ({after_kill} after its node died); chromium said:\n{}",
            answers.len(),
            page.tail()
        );
        if answers.len() == KILL_AFTER && a.is_some() {
            drop(a.take()); // killed and reaped
        }
        i += 1;
        let mut r = [0xc0u8; 32];
        r[..4].copy_from_slice(&i.to_le_bytes());
        let root = Root(r);
        let mut q = ask(root);
        q.lifetime = Duration::from_secs(8);
        if let Ok(ans) = svc.submit(q).await {
            if a.is_none() {
                after_kill += 1;
            }
            answers.push((root, ans));
        }
    }
    assert!(after_kill >= PAGE_SOLVES - KILL_AFTER);
    // One worker, the page's own key; every work checked independently.
    let worker = answers[0].1.worker;
    for (root, ans) in &answers {
        assert_eq!(
            ans.worker, worker,
            "every request was solved by the page's key"
        );
        assert!(dpow_testkit::reference::work_value(root, ans.work) >= EASY.0);
    }
    // The books credit the account the page was given.
    let price = u128::from(Credits::price(EASY).0);
    let credited = |ledger: &dpow_protocol::ledger::Ledger| -> u128 {
        ledger
            .counted()
            .filter(|r| r.payload().result.payload().payout == Some(payout))
            .map(|r| u128::from(r.payload().price.0))
            .sum()
    };
    let credited_all = wait_books(&svc, T, |l, _| {
        (credited(l) >= PAGE_SOLVES as u128 * price).then_some(())
    })
    .await;
    if credited_all.is_none() {
        let (ledger, _) = svc.ledger().await.expect("ledger");
        panic!("the books show {} for {payout}", credited(&ledger));
    }
    // `dpow ledger balances`, through node b, shows the credits under the page's account.
    let (bin, g, dial) = (dpow.clone(), genesis.clone(), b.listen.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&bin)
            .args(["--json", "ledger", "--genesis"])
            .arg(&g)
            .args(["--dial", &dial, "balances"])
            .output()
    })
    .await
    .expect("join")
    .expect("dpow ledger runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bal: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let listed = bal["accounts"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["account"] == payout.to_string()))
        .and_then(|x| x["earned"].as_str())
        .and_then(|e| e.parse::<u128>().ok())
        .unwrap_or(0);
    assert!(
        listed >= PAGE_SOLVES as u128 * price,
        "dpow ledger balances lists {listed} for {payout}: {bal}"
    );
    // docs/contribute.png: the page, now on node b.
    if let Some(path) = shot {
        tokio::time::sleep(Duration::from_secs(3)).await; // the credits line refreshes every 3 s
        std::fs::write(path, page.screenshot().await).expect("screenshot written");
    }
    // The node it moved to lists it as a browser: in the statistics its event stream sends
    // each second (its lists are rebuilt twice a second).
    let mut stream = reqwest::get(format!("{}/api/events", b.http))
        .await
        .expect("node b's event stream");
    let (mut text, mut last) = (String::new(), Value::Null);
    let listed = tokio::time::timeout(T, async {
        loop {
            let chunk = stream.chunk().await.expect("reads").expect("stream open");
            text.push_str(&String::from_utf8_lossy(&chunk));
            // Whole events only: an event ends with a blank line; a snapshot has no name.
            while let Some(end) = text.find("\n\n") {
                let event: String = text.drain(..end + 2).collect();
                let Some(data) = event
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .filter(|_| !event.lines().any(|l| l.starts_with("event:")))
                else {
                    continue;
                };
                last = serde_json::from_str(data).expect("a statistics snapshot");
                let marked = last["worker_list"].as_array().is_some_and(|w| {
                    w.iter()
                        .any(|w| w["account"] == worker.to_string() && w["browser"] == true)
                });
                if marked {
                    return;
                }
            }
        }
    })
    .await;
    assert!(
        listed.is_ok(),
        "node b lists the page as a browser worker: {}",
        last["worker_list"]
    );
}

/// Standard base64 (with padding) to bytes.
fn base64_decode(text: &str) -> Vec<u8> {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = ABC.iter().position(|a| *a == c).expect("base64") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}
