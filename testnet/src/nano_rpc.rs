//! A stand-in for a Nano node's wallet RPC, for the tests of `dpow ledger pay`.
//!
//! It answers `{"action":"send", ...}` over HTTP on 127.0.0.1 the way a Nano node documents it
//! (docs.nano.org, RPC protocol, `send`): the answer is `{"block": "<64 hex>"}`, a repeated `id`
//! answers the block it made the first time and debits nothing, and every error is HTTP 200
//! with `{"error": "..."}` in the node's own words ("Bad wallet number", "Wallet not found",
//! "Bad source account", "Bad destination account", "Invalid amount number", "Wallet is
//! locked", "Account not found in wallet", "Insufficient balance"). The checks run in the
//! node's order, and a known `id` is looked up after the lock check and before the balance
//! check, as the node does.
//!
//! Faults a test can inject: a locked wallet, an answer held back for a while after the send
//! was applied (the client times out, the money has moved), and one call parked for good
//! before or after it is applied (the test kills the client meanwhile). Every debit is
//! recorded, so a test can assert that each account was paid exactly once.
//!
//! The server runs on its own small tokio runtime, so tests drive it from plain synchronous
//! code; dropping the [`NanoRpc`] stops it.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use serde_json::{Value, json};

/// One send the stand-in applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Debit {
    /// The `id` the call carried, if any.
    pub id: Option<String>,
    /// The account debited.
    pub source: String,
    /// The account credited.
    pub destination: String,
    /// Raw.
    pub amount: u128,
    /// The block hash answered (64 upper-case hex digits).
    pub block: String,
}

/// Where a parked call stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// Before anything is checked or applied: the node never saw the send.
    BeforeApply,
    /// After the send is applied and recorded: the money moved, no answer ever comes.
    AfterApply,
}

#[derive(Default)]
struct Wallet {
    locked: bool,
    /// Accounts of the wallet and their balances in raw.
    accounts: BTreeMap<String, u128>,
}

#[derive(Default)]
struct Inner {
    wallets: HashMap<String, Wallet>,
    /// Every `id` seen with a block made, and that block.
    ids: HashMap<String, String>,
    debits: Vec<Debit>,
    /// `send` calls received, counted from 1.
    sends: usize,
    /// Park the n-th send call.
    hold: Option<(usize, Hold)>,
    /// Set once the parked call has reached its stop.
    held: bool,
    /// Answer a send to this destination this much later, once.
    delays: HashMap<String, Duration>,
}

struct Shared {
    inner: Mutex<Inner>,
    held: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running stand-in Nano wallet RPC on 127.0.0.1.
pub struct NanoRpc {
    addr: SocketAddr,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for NanoRpc {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl NanoRpc {
    /// Start a server on a free loopback port.
    pub fn start() -> anyhow::Result<NanoRpc> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("a runtime for the stand-in Nano RPC")?;
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner::default()),
            held: Condvar::new(),
        });
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .context("binding the stand-in Nano RPC")?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/", post(rpc))
            .with_state(shared.clone());
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(NanoRpc {
            addr,
            shared,
            runtime: Some(runtime),
        })
    }

    /// The URL to give `--rpc`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Create a wallet holding `accounts` with their balances (raw); returns its id (64 hex).
    pub fn add_wallet(&self, accounts: &[(&str, u128)]) -> String {
        let mut inner = self.shared.lock();
        let id = format!("{:064X}", inner.wallets.len() + 0xD90);
        let wallet = Wallet {
            locked: false,
            accounts: accounts.iter().map(|(a, b)| (a.to_string(), *b)).collect(),
        };
        inner.wallets.insert(id.clone(), wallet);
        id
    }

    /// Lock or unlock a wallet.
    pub fn set_locked(&self, wallet: &str, locked: bool) {
        if let Some(w) = self.shared.lock().wallets.get_mut(wallet) {
            w.locked = locked;
        }
    }

    /// Add `raw` to an account of a wallet.
    pub fn top_up(&self, wallet: &str, account: &str, raw: u128) {
        if let Some(w) = self.shared.lock().wallets.get_mut(wallet) {
            *w.accounts.entry(account.to_string()).or_default() += raw;
        }
    }

    /// An account's balance in a wallet (0 when absent).
    pub fn balance(&self, wallet: &str, account: &str) -> u128 {
        self.shared
            .lock()
            .wallets
            .get(wallet)
            .and_then(|w| w.accounts.get(account).copied())
            .unwrap_or(0)
    }

    /// Apply the next send to `destination`, then hold its answer back for `delay` (once).
    pub fn delay_answer_to(&self, destination: &str, delay: Duration) {
        self.shared
            .lock()
            .delays
            .insert(destination.to_string(), delay);
    }

    /// Park the `nth` send call (counted from 1 over the server's life) for good at `point`.
    pub fn hold_send(&self, nth: usize, point: Hold) {
        self.shared.lock().hold = Some((nth, point));
    }

    /// Wait until the parked call has reached its stop; false after `timeout`.
    pub fn wait_held(&self, timeout: Duration) -> bool {
        let inner = self.shared.lock();
        let (inner, _) = self
            .shared
            .held
            .wait_timeout_while(inner, timeout, |i| !i.held)
            .unwrap_or_else(|p| p.into_inner());
        inner.held
    }

    /// Every debit so far, in order.
    pub fn debits(&self) -> Vec<Debit> {
        self.shared.lock().debits.clone()
    }

    /// `send` calls received so far (applied or not).
    pub fn send_calls(&self) -> usize {
        self.shared.lock().sends
    }
}

fn error(text: &str) -> Value {
    json!({ "error": text })
}

/// A deterministic block hash for the `n`-th debit of these parameters.
fn block_hash(n: usize, source: &str, destination: &str, amount: u128) -> String {
    let mut h = Blake2b::<U32>::new();
    h.update(b"nano-rpc-stand-in block\0");
    h.update((n as u64).to_be_bytes());
    h.update(source.as_bytes());
    h.update(destination.as_bytes());
    h.update(amount.to_be_bytes());
    h.finalize().iter().map(|b| format!("{b:02X}")).collect()
}

fn valid_account(a: &str) -> bool {
    dpow_keys::decode_account(a).is_ok()
}

async fn rpc(State(shared): State<Arc<Shared>>, body: Bytes) -> axum::Json<Value> {
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return axum::Json(error("Unable to parse JSON"));
    };
    match req["action"].as_str() {
        Some("send") => axum::Json(send(&shared, &req).await),
        _ => axum::Json(error("Unknown command")),
    }
}

/// Park for good when this is the held call at `point`.
async fn maybe_park(shared: &Shared, call: usize, point: Hold) {
    {
        let mut inner = shared.lock();
        if inner.hold != Some((call, point)) {
            return;
        }
        inner.held = true;
        shared.held.notify_all();
    }
    std::future::pending::<()>().await;
}

async fn send(shared: &Shared, req: &Value) -> Value {
    let call = {
        let mut inner = shared.lock();
        inner.sends += 1;
        inner.sends
    };
    maybe_park(shared, call, Hold::BeforeApply).await;
    let (answer, delay) = {
        let mut inner = shared.lock();
        match apply(&mut inner, req) {
            Ok((block, destination)) => {
                (json!({ "block": block }), inner.delays.remove(&destination))
            }
            Err(e) => (error(e), None),
        }
    };
    maybe_park(shared, call, Hold::AfterApply).await;
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    answer
}

/// Check and apply one send in the Nano node's order: the block hash and the destination, or
/// the node's error text.
fn apply(inner: &mut Inner, req: &Value) -> Result<(String, String), &'static str> {
    let text = |k: &str| req[k].as_str().unwrap_or_default().to_string();
    let (wallet, source, destination) = (text("wallet"), text("source"), text("destination"));
    if wallet.len() != 64 || !wallet.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("Bad wallet number");
    }
    if !valid_account(&source) {
        return Err("Bad source account");
    }
    if !valid_account(&destination) {
        return Err("Bad destination account");
    }
    let amount: u128 = text("amount")
        .parse()
        .map_err(|_| "Invalid amount number")?;
    let id = req["id"].as_str().map(str::to_string);
    let Some(w) = inner.wallets.get_mut(&wallet.to_ascii_uppercase()) else {
        return Err("Wallet not found");
    };
    if w.locked {
        return Err("Wallet is locked");
    }
    let Some(balance) = w.accounts.get_mut(&source) else {
        return Err("Account not found in wallet");
    };
    if let Some(block) = id.as_ref().and_then(|i| inner.ids.get(i)) {
        return Ok((block.clone(), destination));
    }
    if *balance < amount {
        return Err("Insufficient balance");
    }
    *balance -= amount;
    let block = block_hash(inner.debits.len(), &source, &destination, amount);
    if let Some(id) = &id {
        inner.ids.insert(id.clone(), block.clone());
    }
    inner.debits.push(Debit {
        id,
        source,
        destination: destination.clone(),
        amount,
        block: block.clone(),
    });
    Ok((block, destination))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(n: u8) -> String {
        dpow_keys::encode_account(&[n; 32])
    }

    fn call(rpc: &NanoRpc, body: &Value) -> Value {
        let mut inner = rpc.shared.lock();
        match apply(&mut inner, body) {
            Ok((block, _)) => json!({ "block": block }),
            Err(e) => error(e),
        }
    }

    #[test]
    fn sends_follow_the_documented_rules() {
        let rpc = NanoRpc::start().expect("starts");
        let (src, dst) = (account(1), account(2));
        let w = rpc.add_wallet(&[(&src, 100)]);
        let send = |amount: &str, id: &str| json!({"action": "send", "wallet": w, "source": src, "destination": dst, "amount": amount, "id": id});
        let first = call(&rpc, &send("60", "a"));
        let block = first["block"].as_str().expect("a block").to_string();
        assert_eq!(block.len(), 64);
        // The same id: the same block, nothing debited again, whatever the balance now.
        assert_eq!(call(&rpc, &send("60", "a"))["block"], block.as_str());
        assert_eq!(rpc.balance(&w, &src), 40);
        assert_eq!(
            call(&rpc, &send("60", "b"))["error"],
            "Insufficient balance"
        );
        rpc.top_up(&w, &src, 20);
        assert!(call(&rpc, &send("60", "b"))["block"].is_string());
        assert_eq!(rpc.debits().len(), 2);
        rpc.set_locked(&w, true);
        assert_eq!(call(&rpc, &send("1", "c"))["error"], "Wallet is locked");
        rpc.set_locked(&w, false);
        let mut bad = send("1", "d");
        bad["wallet"] = json!("xyz");
        assert_eq!(call(&rpc, &bad)["error"], "Bad wallet number");
        bad["wallet"] = json!("0".repeat(64));
        assert_eq!(call(&rpc, &bad)["error"], "Wallet not found");
        let mut bad = send("1", "d");
        bad["source"] = json!(account(3));
        assert_eq!(call(&rpc, &bad)["error"], "Account not found in wallet");
        bad["destination"] = json!("nano_1nope");
        assert_eq!(call(&rpc, &bad)["error"], "Bad destination account");
        assert_eq!(
            call(&rpc, &send("x", "d"))["error"],
            "Invalid amount number"
        );
        assert_eq!(rpc.debits().len(), 2);
    }
}
