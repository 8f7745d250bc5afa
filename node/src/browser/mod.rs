//! Browser workers: the `/contribute` page, the solver files it loads, and the WebSocket
//! bridge that carries a browser's own signed messages into the network.
//!
//! A visitor's browser is a worker in its own right: it makes an ed25519 key (WebCrypto),
//! signs its statuses and results itself and names its own payout account in them. The node
//! that serves the page only carries: it tells the browser which requests are open, checks
//! what the browser signed like any peer's gossip and delivers it like its own worker's
//! results ([`crate::net::Client::carry`]). The protocol on the socket is in
//! docs/browser.md ("The bridge").
//!
//! Routes (with `dpow node --browser-workers`):
//! - `GET /contribute`: the page (`assets/contribute.html`), `GET /contribute/app.js` and
//!   `/contribute/wire.js` its scripts;
//! - `GET /browser/NAME`: the solver files of [`crate::browser_assets::FILES`];
//! - `GET /contribute/ws`: the bridge ([`bridge`]).

mod bridge;
mod budget;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State, WebSocketUpgrade};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::net::Client;

pub use budget::{Budget, RefusedKeys};

/// The page, built into the binary.
pub const PAGE_HTML: &str = include_str!("../../assets/contribute.html");
/// The page's script (an ES module that imports `/browser/solver.js`).
pub const PAGE_JS: &str = include_str!("../../assets/contribute.js");
/// The bytes the page signs: BLAKE2b, account text, postcard envelopes.
pub const WIRE_JS: &str = include_str!("../../assets/contribute-wire.js");

/// How a node serves browser workers.
#[derive(Clone, Debug, Default)]
pub struct BrowserConfig {
    /// Other nodes' HTTP base URLs that serve `/contribute` (e.g. `http://host:8080`): the
    /// page moves to one of them when this node goes away.
    pub peers: Vec<String>,
    /// The limits each browser connection gets.
    pub budget: Budget,
}

#[derive(Clone)]
pub(crate) struct BridgeState {
    pub(crate) node: Client,
    pub(crate) config: Arc<BrowserConfig>,
    pub(crate) refused: Arc<Mutex<RefusedKeys>>,
    pub(crate) books: Arc<tokio::sync::Mutex<bridge::BooksCache>>,
    pub(crate) network: Arc<str>,
    pub(crate) network_id: dpow_protocol::NetworkId,
}

/// The routes for browser workers of the network of `genesis`, to merge into the node's HTTP
/// router.
pub fn router(node: Client, genesis: &crate::genesis::Genesis, config: BrowserConfig) -> Router {
    let state = BridgeState {
        node,
        config: Arc::new(config),
        refused: Arc::new(Mutex::new(RefusedKeys::default())),
        books: Arc::new(tokio::sync::Mutex::new(bridge::BooksCache::default())),
        network: Arc::from(genesis.network.as_str()),
        network_id: genesis.id,
    };
    Router::new()
        .route("/contribute", get(page))
        .route("/contribute/app.js", get(script))
        .route("/contribute/wire.js", get(wire))
        .route("/contribute/ws", get(socket))
        .route("/browser/{name}", get(asset))
        .with_state(state)
}

/// A response with the headers that make the page cross-origin isolated (the solver then
/// cancels through shared memory, within one chunk) and never cached.
fn isolated(content_type: &'static str, body: impl IntoResponse) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-embedder-policy",
        HeaderValue::from_static("require-corp"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    r
}

async fn page() -> Response {
    isolated("text/html; charset=utf-8", PAGE_HTML)
}

async fn script() -> Response {
    isolated("text/javascript; charset=utf-8", PAGE_JS)
}

async fn wire() -> Response {
    isolated("text/javascript; charset=utf-8", WIRE_JS)
}

async fn asset(Path(name): Path<String>) -> Response {
    match crate::browser_assets::file(&name) {
        Some(a) if !a.bytes.is_empty() => isolated(a.content_type, a.bytes),
        Some(_) => (
            StatusCode::NOT_FOUND,
            crate::browser_assets::WASM_MISSING.unwrap_or("this node has no browser kernel"),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}

async fn socket(State(st): State<BridgeState>, ws: WebSocketUpgrade) -> Response {
    let max = st.config.budget.max_message_bytes;
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |s| bridge::run(s, st))
}
