//! The Nano work-server API on a service's node: `work_generate`, `work_validate`,
//! `work_cancel` and `work_precache`, as a JSON POST to `/`.
//!
//! Requests are signed with the node's service key and sent to the swarm; concurrent calls for
//! the same root and difficulty share one network request. When no valid work arrives within
//! `fallback_after`, or no worker is known, the node solves locally (unless disabled).
//! Precached work is answered at once after it is re-validated. Errors are answered as Nano's
//! RPC answers them, HTTP 200 with `{"error": "..."}` (a Nano node's `work_peers` client reads
//! nothing else), except a refused token (401) and an oversized body (413): `ApiError` decides.
//! See docs/service-api.md.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use dpow_keys::PublicKey;
use dpow_protocol::{BlockKind, Difficulty, Multiplier, Priority, Profile, Root, Work, work_value};
use dpow_solver::{Control, Solver};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::net::{Client, SubmitError, WorkAsk};
use crate::store::Store;

mod precache;
pub use precache::MAX_PRECACHED;
use precache::Precache;

/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// How the gateway behaves.
pub struct GatewayConfig {
    /// The network's difficulty profile (thresholds and bounds).
    pub profile: Profile,
    /// Solve locally with this when the network does not answer in time.
    pub fallback: Option<Arc<dyn Solver>>,
    /// How long to wait for the network before the local fallback starts.
    pub fallback_after: Duration,
    /// How long a request stays valid on the network.
    pub request_lifetime: Duration,
    /// Callers must send `Authorization: Bearer <token>` when set.
    pub token: Option<String>,
    /// Where precached work is kept across restarts (column family `precache-v1`).
    pub store: Option<Arc<Store>>,
}

/// Where an answer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Network,
    Cache,
    Local,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Network => "network",
            Source::Cache => "cache",
            Source::Local => "local",
        }
    }
}

#[derive(Clone, Debug)]
struct Answer {
    work: Work,
    source: Source,
    worker: Option<String>,
}

type Shared = broadcast::Sender<Result<Answer, String>>;

#[derive(Clone, Debug)]
struct CacheEntry {
    root: Root,
    work: Work,
    account: Option<PublicKey>,
}

/// A cache entry as the file holds it: the strings Nano prints.
#[derive(serde::Serialize, serde::Deserialize)]
struct CacheLine {
    hash: String,
    work: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    account: Option<String>,
}

impl CacheEntry {
    fn line(&self) -> CacheLine {
        CacheLine {
            hash: self.root.to_string(),
            work: self.work.to_string(),
            account: self.account.map(|a| dpow_keys::encode_account(&a.0)),
        }
    }

    fn from_line(l: &CacheLine) -> Option<CacheEntry> {
        Some(CacheEntry {
            root: l.hash.parse().ok()?,
            work: l.work.parse().ok()?,
            account: match &l.account {
                Some(a) => Some(PublicKey(dpow_keys::decode_account(a).ok()?)),
                None => None,
            },
        })
    }
}

/// The gateway's state, shared by every HTTP call.
pub struct Gateway {
    node: Client,
    config: GatewayConfig,
    inflight: Mutex<HashMap<(Root, Difficulty), Shared>>,
    local: Mutex<HashMap<Root, Vec<Arc<Control>>>>,
    /// Precached work by root, and each account's current precached root (bounded).
    cache: Mutex<Precache>,
    /// Accounts seen in calls, whose confirmations a Nano node websocket reports.
    accounts: Mutex<std::collections::HashSet<PublicKey>>,
    /// Tells the websocket follower about newly seen accounts.
    new_accounts: tokio::sync::watch::Sender<usize>,
    /// Calls being served (a stopping node waits until none is left).
    calls: tokio::sync::watch::Sender<usize>,
    /// Precached works kept since start, counted once each is saved ([`Gateway::precached`]).
    precached: tokio::sync::watch::Sender<u64>,
}

/// Counts a call while it is served.
struct CallGuard(Arc<Gateway>);

impl CallGuard {
    fn new(gw: &Arc<Gateway>) -> CallGuard {
        gw.calls.send_modify(|n| *n += 1);
        CallGuard(gw.clone())
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.calls.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Most accounts tracked for precaching.
pub const MAX_TRACKED_ACCOUNTS: usize = 100_000;

/// Why a call was not served. Its HTTP status is decided here and nowhere else.
///
/// A Nano node's `work_peers` client reads an answer only when the status is 200: any other
/// status is neither used nor counted as a failure, and the node never fails over from that
/// peer. Every answer to a well-formed HTTP call is therefore 200, with `{"error": "..."}` when
/// it cannot be served, as Nano's own RPC answers (a body that is not JSON included). Only the
/// HTTP-level refusals keep their status: a missing or wrong token (401) and an oversized
/// body (413).
#[derive(Debug)]
enum ApiError {
    /// Missing or wrong bearer token.
    Unauthorized,
    /// A body over [`MAX_BODY_BYTES`].
    TooLarge,
    /// Anything else, in the words of the `error` field.
    Nano(String),
}

impl ApiError {
    fn bad(text: &str) -> ApiError {
        ApiError::Nano(text.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, text) = match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "Unauthorized".to_string()),
            ApiError::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("Request body over {MAX_BODY_BYTES} bytes"),
            ),
            ApiError::Nano(text) => (StatusCode::OK, text),
        };
        (status, axum::Json(json!({ "error": text }))).into_response()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Gateway {
    /// A gateway over a running node; loads the precache file if there is one.
    pub fn new(node: Client, config: GatewayConfig) -> Arc<Gateway> {
        let gw = Gateway {
            node,
            config,
            inflight: Mutex::new(HashMap::new()),
            local: Mutex::new(HashMap::new()),
            cache: Mutex::new(Precache::with_cap(MAX_PRECACHED)),
            accounts: Mutex::new(std::collections::HashSet::new()),
            new_accounts: tokio::sync::watch::channel(0).0,
            calls: tokio::sync::watch::channel(0).0,
            precached: tokio::sync::watch::channel(0).0,
        };
        gw.load_cache();
        Arc::new(gw)
    }

    /// Resolves when no call is being served: a node stopping after its HTTP server has
    /// stopped accepting waits for this, so the calls it took are answered.
    pub async fn idle(&self) {
        let mut calls = self.calls.subscribe();
        let _ = calls.wait_for(|n| *n == 0).await;
    }

    /// How many precached works this gateway has kept since it started, changing as each
    /// one is saved (written to the store when there is one, failed writes included: they
    /// are logged): a caller waits on it instead of reading the store on a timer.
    pub fn precached(&self) -> tokio::sync::watch::Receiver<u64> {
        self.precached.subscribe()
    }

    /// The routes: `POST /` for the work-server actions.
    pub fn router(self: &Arc<Gateway>) -> Router {
        Router::new().route("/", post(rpc)).with_state(self.clone())
    }

    fn load_cache(&self) {
        let Some(store) = &self.config.store else {
            return;
        };
        let lines = match store.precache_lines() {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("precache unreadable: {e}");
                return;
            }
        };
        let min = self.config.profile.min;
        let mut c = lock(&self.cache);
        let mut dropped = 0usize;
        for bytes in lines {
            let entry = serde_json::from_slice::<CacheLine>(&bytes)
                .ok()
                .and_then(|l| CacheEntry::from_line(&l));
            match entry {
                // Nothing is served that does not validate now.
                Some(e) if work_value(&e.root, e.work) >= min => {
                    dropped += c.insert(e).len();
                }
                _ => dropped += 1,
            }
        }
        tracing::info!(entries = c.len(), dropped, "precache loaded");
        self.node.set_precache_stats(c.len(), c.evicted());
    }

    /// Write one cache entry and delete those it displaced, in one synced write.
    fn persist(&self, put: &CacheEntry, replaced: &[Root]) {
        let Some(store) = &self.config.store else {
            return;
        };
        let write = || -> anyhow::Result<()> {
            let line = serde_json::to_vec(&put.line())?;
            let gone: Vec<[u8; 32]> = replaced.iter().map(|r| r.0).collect();
            store.precache_put(&put.root.0, &line, &gone)?;
            Ok(())
        };
        if let Err(e) = write() {
            tracing::error!(root = %put.root, "saving precached work: {e}");
        }
    }

    /// Remember an account seen in a call, for confirmation-driven precache.
    fn track(&self, account: PublicKey) {
        let mut a = lock(&self.accounts);
        if a.len() < MAX_TRACKED_ACCOUNTS && a.insert(account) {
            let n = a.len();
            self.new_accounts.send_replace(n);
        }
    }

    /// Follow a Nano node's websocket (`ws://host:7078`): subscribe to the `confirmation`
    /// topic for the tracked accounts, and precache the next work of each account whose new
    /// block is confirmed. Reconnects with a growing delay; runs until the task is dropped.
    pub async fn follow_confirmations(self: Arc<Self>, url: String) {
        let mut delay = Duration::from_millis(500);
        loop {
            match self.follow_once(&url).await {
                Ok(()) => delay = Duration::from_millis(500),
                Err(e) => tracing::warn!(%url, "nano websocket: {e}; reconnecting in {delay:?}"),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }

    async fn follow_once(self: &Arc<Self>, url: &str) -> anyhow::Result<()> {
        use futures::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message as Ws;
        // Confirmations are small: refuse anything large rather than buffer it.
        let limits = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(MAX_BODY_BYTES * 4))
            .max_frame_size(Some(MAX_BODY_BYTES * 4));
        let (mut ws, _) =
            tokio_tungstenite::connect_async_with_config(url, Some(limits), true).await?;
        let mut changes = self.new_accounts.subscribe();
        let mut sent: std::collections::HashSet<PublicKey> = std::collections::HashSet::new();
        let accounts = |sent: &mut std::collections::HashSet<PublicKey>| -> Vec<String> {
            let now = lock(&self.accounts).clone();
            let new: Vec<String> = now
                .difference(sent)
                .map(|a| dpow_keys::encode_account(&a.0))
                .collect();
            *sent = now;
            new
        };
        let first = accounts(&mut sent);
        let subscribe = json!({
            "action": "subscribe",
            "topic": "confirmation",
            "ack": true,
            "options": { "accounts": first },
        });
        ws.send(Ws::text(subscribe.to_string())).await?;
        tracing::info!(%url, accounts = sent.len(), "following confirmations");
        loop {
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    let add = accounts(&mut sent);
                    if !add.is_empty() {
                        let update = json!({
                            "action": "update",
                            "topic": "confirmation",
                            "options": { "accounts_add": add },
                        });
                        ws.send(Ws::text(update.to_string())).await?;
                    }
                }
                msg = ws.next() => {
                    let Some(msg) = msg else { return Ok(()) };
                    match msg? {
                        Ws::Text(t) => self.on_confirmation(t.as_str()),
                        Ws::Close(_) => return Ok(()),
                        _ => {}
                    }
                }
            }
        }
    }

    /// A websocket message: a confirmed block of a tracked account makes its hash the
    /// account's new frontier, whose work is precached. Anything else is ignored.
    fn on_confirmation(self: &Arc<Self>, text: &str) {
        if text.len() > MAX_BODY_BYTES {
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            return;
        };
        if v.get("topic").and_then(Value::as_str) != Some("confirmation") {
            return;
        }
        let m = &v["message"];
        let account = m["account"]
            .as_str()
            .and_then(|a| dpow_keys::decode_account(a).ok().map(PublicKey));
        let hash = m["hash"].as_str().and_then(|h| h.parse::<Root>().ok());
        if let (Some(account), Some(hash)) = (account, hash)
            && lock(&self.accounts).contains(&account)
        {
            tracing::debug!(%hash, account = %dpow_keys::encode_account(&account.0), "confirmed: precaching the next work");
            self.precache(hash, Some(account));
        }
    }

    fn cached(&self, root: &Root, d: Difficulty) -> Option<Work> {
        let c = lock(&self.cache);
        let e = c.get(root)?;
        // Re-validated on every hit.
        (work_value(root, e.work) >= d).then_some(e.work)
    }

    /// Get work for (root, difficulty): cache, a shared in-flight request, or a new one.
    async fn generate(self: &Arc<Self>, ask: WorkAsk) -> Result<Answer, String> {
        if let Some(work) = self.cached(&ask.root, ask.difficulty) {
            return Ok(Answer {
                work,
                source: Source::Cache,
                worker: None,
            });
        }
        let key = (ask.root, ask.difficulty);
        let mut rx = {
            let mut inflight = lock(&self.inflight);
            match inflight.get(&key) {
                Some(tx) => tx.subscribe(),
                None => {
                    let (tx, rx) = broadcast::channel(1);
                    inflight.insert(key, tx.clone());
                    let gw = self.clone();
                    tokio::spawn(async move {
                        let r = gw.solve(ask).await;
                        lock(&gw.inflight).remove(&key);
                        let _ = tx.send(r);
                    });
                    rx
                }
            }
        };
        rx.recv()
            .await
            .map_err(|_| "Work generation failed".to_string())?
    }

    /// The network, with the local fallback racing it after `fallback_after` (at once when no
    /// worker is known).
    async fn solve(self: &Arc<Self>, ask: WorkAsk) -> Result<Answer, String> {
        let no_workers = self.node.stats().live_workers == 0;
        let fallback = self.config.fallback.clone();
        let root = ask.root;
        let difficulty = ask.difficulty;
        if no_workers && let Some(solver) = fallback.clone() {
            return self.solve_locally(solver, root, difficulty).await;
        }
        let network = self.node.submit(ask);
        tokio::pin!(network);
        let wait = tokio::time::sleep(self.config.fallback_after);
        tokio::pin!(wait);
        tokio::select! {
            r = &mut network => return net_answer(r),
            _ = &mut wait, if fallback.is_some() => {}
        }
        let Some(solver) = fallback else {
            return net_answer(network.await);
        };
        tracing::info!(%root, "no answer from the network in time: solving locally as well");
        let local = self.solve_locally(solver, root, difficulty);
        tokio::pin!(local);
        tokio::select! {
            r = &mut network => {
                self.cancel_local(&root);
                net_answer(r)
            }
            r = &mut local => {
                let _ = self.node.cancel_root(root).await;
                r
            }
        }
    }

    async fn solve_locally(
        &self,
        solver: Arc<dyn Solver>,
        root: Root,
        d: Difficulty,
    ) -> Result<Answer, String> {
        let control = Arc::new(Control::new());
        lock(&self.local)
            .entry(root)
            .or_default()
            .push(control.clone());
        let c = control.clone();
        let r = tokio::task::spawn_blocking(move || solver.solve(&root, d, &c)).await;
        if let Some(v) = lock(&self.local).get_mut(&root) {
            v.retain(|x| !Arc::ptr_eq(x, &control));
        }
        match r {
            Ok(Ok(Some(work))) => Ok(Answer {
                work,
                source: Source::Local,
                worker: None,
            }),
            Ok(Ok(None)) => Err("Cancelled".to_string()),
            Ok(Err(e)) => Err(format!("Work generation failed: {e}")),
            Err(_) => Err("Work generation failed".to_string()),
        }
    }

    fn cancel_local(&self, root: &Root) {
        if let Some(v) = lock(&self.local).remove(root) {
            for c in v {
                c.cancel();
            }
        }
    }

    /// Ask the network for the next work of `account` at precache priority, and keep it.
    fn precache(self: &Arc<Self>, root: Root, account: Option<PublicKey>) {
        let gw = self.clone();
        let d = self
            .config
            .profile
            .thresholds
            .iter()
            .copied()
            .max()
            .unwrap_or(self.config.profile.min);
        tokio::spawn(async move {
            let ask = WorkAsk {
                root,
                difficulty: d,
                kind: None,
                account,
                priority: Priority::Precache,
                lifetime: gw.config.request_lifetime,
            };
            match gw.node.submit(ask).await {
                Ok(a) if work_value(&root, a.work) >= d => {
                    let entry = CacheEntry {
                        root,
                        work: a.work,
                        account,
                    };
                    let gone = {
                        let mut c = lock(&gw.cache);
                        let gone = c.insert(entry.clone());
                        gw.node.set_precache_stats(c.len(), c.evicted());
                        gone
                    };
                    gw.persist(&entry, &gone);
                    gw.precached.send_modify(|n| *n += 1);
                    tracing::info!(%root, "precached");
                }
                Ok(_) => tracing::warn!(%root, "precache answer below the threshold: dropped"),
                Err(e) => tracing::warn!(%root, "precache failed: {e}"),
            }
        });
    }
}

fn net_answer(r: Result<crate::net::WorkAnswer, SubmitError>) -> Result<Answer, String> {
    match r {
        Ok(a) => Ok(Answer {
            work: a.work,
            source: Source::Network,
            worker: Some(a.worker.to_string()),
        }),
        Err(SubmitError::Cancelled) => Err("Cancelled".to_string()),
        Err(e) => Err(format!("Work generation failed: {e}")),
    }
}

fn field<'a>(v: &'a Value, k: &str) -> Option<&'a Value> {
    v.get(k).filter(|x| !x.is_null())
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn parse_hash(v: &Value) -> Result<Root, ApiError> {
    field(v, "hash")
        .and_then(text)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ApiError::bad("Bad block hash"))
}

fn parse_account(v: &Value) -> Result<Option<PublicKey>, ApiError> {
    match field(v, "account") {
        None => Ok(None),
        Some(a) => text(a)
            .and_then(|s| dpow_keys::decode_account(&s).ok())
            .map(|k| Some(PublicKey(k)))
            .ok_or_else(|| ApiError::bad("Bad account number")),
    }
}

/// The block kind a block implies, and its root, from `block` / `json_block`.
fn block_hint(v: &Value) -> Result<Option<(Option<Root>, BlockKind)>, ApiError> {
    let Some(b) = field(v, "block") else {
        return Ok(None);
    };
    let block: Value = match b {
        Value::Object(_) => b.clone(),
        Value::String(s) => {
            serde_json::from_str(s).map_err(|_| ApiError::bad("Block is invalid"))?
        }
        _ => return Err(ApiError::bad("Block is invalid")),
    };
    let subtype = block.get("subtype").and_then(Value::as_str).unwrap_or("");
    let previous: Option<Root> = block
        .get("previous")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok());
    let is_open = previous.is_some_and(|p| p.0 == [0u8; 32]);
    let kind = match subtype {
        "send" => BlockKind::Send,
        "receive" => BlockKind::Receive,
        "open" => BlockKind::Open,
        "change" => BlockKind::Change,
        "epoch" => BlockKind::Epoch,
        // A block alone does not say whether it sends or receives (that needs the previous
        // balance): without a subtype, take the send threshold, which satisfies every kind.
        _ if is_open => BlockKind::Open,
        _ => BlockKind::Send,
    };
    let root = if is_open {
        block
            .get("account")
            .and_then(Value::as_str)
            .and_then(|a| dpow_keys::decode_account(a).ok())
            .map(Root)
    } else {
        previous
    };
    Ok(Some((root, kind)))
}

/// The threshold asked for: `difficulty`, else `multiplier` (over the send threshold), else the
/// block's kind, else the send threshold. Checked against the profile's bounds.
fn target(gw: &Gateway, v: &Value) -> Result<(Difficulty, Option<BlockKind>, bool), ApiError> {
    let p = &gw.config.profile;
    let base = p.threshold(BlockKind::Send);
    let (d, kind, explicit) = if let Some(d) = field(v, "difficulty") {
        let d: Difficulty = text(d)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ApiError::bad("Bad difficulty"))?;
        (d, None, true)
    } else if let Some(m) = field(v, "multiplier") {
        let m: Multiplier = text(m)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ApiError::bad("Bad multiplier"))?;
        (Difficulty::from_multiplier(m, base), None, true)
    } else if let Some((_, k)) = block_hint(v)? {
        (p.threshold(k), Some(k), false)
    } else {
        (base, None, false)
    };
    Ok((d, kind, explicit))
}

fn authorised(gw: &Gateway, headers: &HeaderMap) -> bool {
    let Some(token) = &gw.config.token else {
        return true;
    };
    crate::http::bearer_matches(headers, token)
}

async fn rpc(State(gw): State<Arc<Gateway>>, headers: HeaderMap, body: Body) -> Response {
    let _call = CallGuard::new(&gw);
    match handle(gw, headers, body).await {
        Ok(v) => (StatusCode::OK, axum::Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn handle(gw: Arc<Gateway>, headers: HeaderMap, body: Body) -> Result<Value, ApiError> {
    if !authorised(&gw, &headers) {
        return Err(ApiError::Unauthorized);
    }
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::TooLarge)?;
    // Unknown fields (`version`, `json_block`, a wallet's own) are ignored.
    let v: Value =
        serde_json::from_slice(&bytes).map_err(|_| ApiError::bad("Unable to parse JSON"))?;
    if !v.is_object() {
        return Err(ApiError::bad("Unable to parse JSON"));
    }
    let action = v.get("action").and_then(Value::as_str).unwrap_or("");
    match action {
        "work_generate" => work_generate(&gw, &v).await,
        "work_validate" => work_validate(&gw, &v),
        "work_cancel" => {
            let root = parse_hash(&v)?;
            // A caller may hang up before the answer (a Nano node does not read it): the
            // cancel runs in its own task, to the end whatever becomes of this call.
            let cancel = tokio::spawn(async move {
                gw.cancel_local(&root);
                gw.node.cancel_root(root).await
            });
            let n = cancel
                .await
                .map_err(|_| ApiError::bad("Cancel failed"))?
                .map_err(|e| ApiError::Nano(format!("Cancel failed: {e}")))?;
            Ok(json!({ "success": "", "cancelled": n }))
        }
        "work_precache" => {
            let root = parse_hash(&v)?;
            let account = parse_account(&v)?;
            if let Some(a) = account {
                gw.track(a);
            }
            gw.precache(root, account);
            Ok(json!({ "started": "1", "hash": root.to_string() }))
        }
        _ => Err(ApiError::bad("Unknown command")),
    }
}

async fn work_generate(gw: &Arc<Gateway>, v: &Value) -> Result<Value, ApiError> {
    let started = Instant::now();
    let hinted = block_hint(v)?;
    let root = match (field(v, "hash"), &hinted) {
        (Some(_), _) => parse_hash(v)?,
        (None, Some((Some(r), _))) => *r,
        _ => return Err(ApiError::bad("Bad block hash")),
    };
    let account = parse_account(v)?;
    if let Some(a) = account {
        gw.track(a);
    }
    let (d, kind, _) = target(gw, v)?;
    gw.config
        .profile
        .check(d)
        .map_err(|_| ApiError::bad("Difficulty out of valid range"))?;
    let ask = WorkAsk {
        root,
        difficulty: d,
        kind,
        account,
        priority: Priority::Normal,
        lifetime: gw.config.request_lifetime,
    };
    let a = gw.generate(ask).await.map_err(ApiError::Nano)?;
    let value = work_value(&root, a.work);
    if value < d {
        // A solver that breaks its promise to re-validate: refuse rather than serve bad work.
        return Err(ApiError::bad("Work generation failed"));
    }
    let base = gw.config.profile.threshold(BlockKind::Send);
    let mut out = json!({
        "hash": root.to_string(),
        "work": a.work.to_string(),
        "difficulty": value.to_string(),
        "multiplier": value.to_multiplier(base).to_string(),
        "source": a.source.as_str(),
        "elapsed_ms": started.elapsed().as_secs_f64() * 1e3,
    });
    if let Some(w) = a.worker {
        out["worker"] = json!(w);
    }
    Ok(out)
}

fn work_validate(gw: &Gateway, v: &Value) -> Result<Value, ApiError> {
    let root = parse_hash(v)?;
    let work: Work = field(v, "work")
        .and_then(text)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ApiError::bad("Bad work"))?;
    let (d, _, explicit) = target(gw, v)?;
    let p = &gw.config.profile;
    let base = p.threshold(BlockKind::Send);
    let value = work_value(&root, work);
    let hardest = p.thresholds.iter().copied().max().unwrap_or(base);
    let one = |b: bool| if b { "1" } else { "0" };
    let mut out = json!({
        "valid_all": one(value >= hardest),
        "valid_receive": one(value >= p.threshold(BlockKind::Receive)),
        "difficulty": value.to_string(),
        "multiplier": value.to_multiplier(base).to_string(),
    });
    if explicit {
        out["valid"] = json!(one(value >= d));
    }
    Ok(out)
}
