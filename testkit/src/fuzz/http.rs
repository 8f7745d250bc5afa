//! The HTTP harness: the node's whole router (dashboard, statistics, metrics, the work API and
//! the browser pages) over a node running in this process, called in memory with tower's
//! `oneshot`, no socket.
//!
//! Input: an optional `!` (call the router whose work API requires the token `fuzz-token`),
//! then `METHOD TARGET`, header lines `name: value`, an empty line and the body. Input that does
//! not make an HTTP request (a bad method, URI or header) is skipped; a bad header line is
//! dropped.
//!
//! The node's service key is not registered on its network, so a `work_generate` is refused
//! by the node's own validator at once instead of waiting for workers; every other path runs
//! as in production.
//!
//! Properties: every call is answered within [`ANSWER`] and never with a 5xx; `POST /`
//! answers 200 (Nano's clients read nothing else), 401 without the token where one is
//! required, or 413 for an oversized body, always with a JSON object; `work_validate`'s
//! difficulty is the work's value by the reference check; `/api/stats` is JSON.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri, header};
use dpow_node::gateway::{Gateway, GatewayConfig};
use dpow_node::genesis::Genesis;
use dpow_node::net::{NetTuning, NodeConfig, NodeHandle};
use dpow_protocol::{Profile, Root, Work};
use http_body_util::{BodyExt, Limited};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::builders::key;
use crate::reference;

/// The longest any call may take to be answered.
const ANSWER: Duration = Duration::from_secs(10);
/// The token of the guarded router's work API.
const TOKEN: &str = "fuzz-token";
/// Most header lines taken from one input.
const MAX_HEADERS: usize = 32;

struct Server {
    rt: tokio::runtime::Runtime,
    open: Router,
    guarded: Router,
    _node: Arc<NodeHandle>,
}

fn gateway_config(token: Option<&str>) -> GatewayConfig {
    GatewayConfig {
        profile: Profile::test(),
        fallback: None,
        fallback_after: Duration::from_secs(1),
        request_lifetime: Duration::from_secs(30),
        token: token.map(str::to_string),
        store: None,
    }
}

fn start() -> Server {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let genesis = Genesis::parse(&format!(
        "network = \"fuzz\"\nprofile = \"test\"\nregistrars = [\"{}\"]\n",
        key(1).public()
    ))
    .unwrap();
    let mut config = NodeConfig::new(genesis.clone(), key(30));
    config.service_key = Some(key(10));
    config.tuning = NetTuning {
        discovery: false,
        ledger: false,
        light: true,
        ..NetTuning::default()
    };
    let (node, open, guarded) = rt.block_on(async {
        let node = Arc::new(dpow_node::net::spawn(config).await.unwrap());
        let app = |token| {
            let gw = Gateway::new(node.client(), gateway_config(token));
            dpow_node::http::router_sampling_every(node.stats_reader(), Duration::from_secs(3600))
                .merge(gw.router())
                .merge(dpow_node::browser::router(
                    node.client(),
                    &genesis,
                    Default::default(),
                ))
        };
        let (open, guarded) = (app(None), app(Some(TOKEN)));
        (node, open, guarded)
    });
    Server {
        rt,
        open,
        guarded,
        _node: node,
    }
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(start)
}

/// The request an input spells, and whether it goes to the guarded router.
fn parse(bytes: &[u8]) -> Option<(bool, Request<Body>)> {
    let (guarded, bytes) = match bytes.strip_prefix(b"!") {
        Some(rest) => (true, rest),
        None => (false, bytes),
    };
    let (head, body) = match bytes.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&bytes[..i], &bytes[i + 2..]),
        None => (bytes, &[][..]),
    };
    let mut lines = head.split(|b| *b == b'\n');
    let first = lines.next()?;
    let space = first.iter().position(|b| *b == b' ')?;
    let method = Method::from_bytes(&first[..space]).ok()?;
    let uri = Uri::try_from(&first[space + 1..]).ok()?;
    let mut req = Request::builder().method(method).uri(uri);
    for line in lines.take(MAX_HEADERS) {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = HeaderName::from_bytes(&line[..colon]);
        let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii());
        if let (Ok(n), Ok(v)) = (name, value) {
            req = req.header(n, v);
        }
    }
    let req = req.body(Body::from(body.to_vec())).ok()?;
    Some((guarded, req))
}

/// One call through the router, with the properties in the module docs.
pub fn http(bytes: &[u8]) {
    let Some((guarded, req)) = parse(bytes) else {
        return;
    };
    let s = server();
    let app = if guarded { &s.guarded } else { &s.open };
    let work_api = req.method() == Method::POST && req.uri().path() == "/";
    let authorised = !guarded
        || req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            == Some(&format!("Bearer {TOKEN}"));
    let asked: Option<Value> = work_api
        .then(|| serde_json::from_slice(&body_of(bytes)).ok())
        .flatten();
    let answered = s.rt.block_on(async {
        let resp = tokio::time::timeout(ANSWER, app.clone().oneshot(req))
            .await
            .expect("answered in time")
            .unwrap();
        let status = resp.status();
        let streaming = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"));
        if streaming {
            // Server-sent events never end: the headers are the answer.
            return (status, None);
        }
        let body = tokio::time::timeout(ANSWER, Limited::new(resp.into_body(), 8 << 20).collect())
            .await
            .expect("the body arrives in time")
            .expect("the body is readable")
            .to_bytes();
        (status, Some(body))
    });
    let (status, body) = answered;
    assert!(!status.is_server_error(), "{status}");
    if !work_api {
        if status == StatusCode::OK && bytes.starts_with(b"GET /api/stats") {
            let body = body.unwrap();
            serde_json::from_slice::<Value>(&body).expect("/api/stats is JSON");
        }
        return;
    }
    let body = body.expect("the work API does not stream");
    let answer: Value = serde_json::from_slice(&body).expect("the work API answers JSON");
    assert!(answer.is_object(), "{answer}");
    if !authorised {
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
        return;
    }
    assert!(
        [StatusCode::OK, StatusCode::PAYLOAD_TOO_LARGE].contains(&status),
        "{status} {answer}"
    );
    if let Some(e) = answer.get("error") {
        assert!(e.is_string(), "{answer}");
        return;
    }
    if let Some(asked) = asked
        && asked["action"] == "work_validate"
    {
        check_validate(&asked, &answer);
    }
}

/// The body part of an input (after the first empty line).
fn body_of(bytes: &[u8]) -> Vec<u8> {
    match bytes.windows(2).position(|w| w == b"\n\n") {
        Some(i) => bytes[i + 2..].to_vec(),
        None => Vec::new(),
    }
}

/// A successful `work_validate` reports the work's value by the reference check.
fn check_validate(asked: &Value, answer: &Value) {
    let root = asked["hash"].as_str().and_then(|h| h.parse::<Root>().ok());
    let work = asked["work"].as_str().and_then(|w| w.parse::<Work>().ok());
    let (Some(root), Some(work)) = (root, work) else {
        return;
    };
    let value = reference::work_value(&root, work);
    let reported = answer["difficulty"]
        .as_str()
        .and_then(|d| u64::from_str_radix(d, 16).ok());
    assert_eq!(reported, Some(value), "{answer}");
    let receive = Profile::test()
        .threshold(dpow_protocol::BlockKind::Receive)
        .0;
    assert_eq!(answer["valid_receive"] == "1", value >= receive, "{answer}");
}

pub(super) fn seeds() -> Vec<Vec<u8>> {
    const HASH: &str = "7F7122E843B27524F4F1D6BD14AEFD1C8F01D36AE8653D37417533C0D4BC2BE6";
    let account = dpow_keys::encode_account(&key(40).public().0);
    let post = |guard: &str, v: Value| {
        format!(
            "{guard}POST /\ncontent-type: application/json\nauthorization: Bearer {TOKEN}\n\n{v}"
        )
        .into_bytes()
    };
    let mut seeds: Vec<Vec<u8>> = [
        "GET /",
        "GET /api/stats",
        "GET /api/history",
        "GET /metrics",
        "GET /api/events",
        "GET /contribute",
        "GET /contribute/app.js",
        "GET /contribute/wire.js",
        "GET /contribute/ws\nconnection: upgrade\nupgrade: websocket\nsec-websocket-version: 13\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==",
        "GET /browser/solver.js",
        "DELETE /api/stats",
        "POST /\n\nnot json",
        "!POST /\n\n{\"action\":\"work_validate\"}",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    for (guard, v) in [
        (
            "",
            json!({"action": "work_validate", "hash": HASH, "work": "2bf29ef00786a6bc"}),
        ),
        (
            "",
            json!({"action": "work_validate", "hash": HASH, "work": "0000000000000000", "difficulty": "ffffffc000000000"}),
        ),
        (
            "!",
            json!({"action": "work_validate", "hash": HASH, "work": "2bf29ef00786a6bc", "multiplier": "1.5"}),
        ),
        ("", json!({"action": "work_generate", "hash": HASH})),
        (
            "",
            json!({"action": "work_generate", "hash": HASH, "difficulty": "ff00000000000000", "account": account}),
        ),
        (
            "",
            json!({"action": "work_generate", "block": {"type": "state", "account": account, "previous": HASH, "subtype": "receive"}}),
        ),
        (
            "",
            json!({"action": "work_generate", "json_block": "true", "block": "{\"previous\":\"0000000000000000000000000000000000000000000000000000000000000000\",\"account\":\"x\"}"}),
        ),
        ("", json!({"action": "work_cancel", "hash": HASH})),
        (
            "",
            json!({"action": "work_precache", "hash": HASH, "account": account}),
        ),
        ("!", json!({"action": "unknown"})),
    ] {
        seeds.push(post(guard, v));
    }
    seeds
}
