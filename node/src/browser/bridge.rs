//! The WebSocket bridge of one browser worker: JSON text messages both ways.
//!
//! Node to page: `hello` (network, its id, this node, its clock, other nodes serving
//! `/contribute`),
//! `request` (each open request: id, root, difficulty, expiry), `done` (a request was
//! answered or withdrawn), `ack` / `refused` (the verdict on each message the page sent),
//! `credits` (the books' total for a payout account) and `bye` (why the socket closes).
//! Page to node: `status` and `result` (envelopes the page signed, in hex) and `credits`
//! (ask for an account's total). docs/browser.md lists the fields.
//!
//! Every message costs the connection's [`super::Budget`]; refused messages (malformed,
//! over the rate, or penalised by the validator as any peer's would be) are strikes, and at
//! the limit the socket closes and the key the connection signed with is refused for a while.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket};
use dpow_keys::{NanoAccount, PublicKey};
use dpow_protocol::{Signed, WorkRequest, WorkResult, WorkerStatus};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::BridgeState;
use super::budget::Meter;
use crate::net::{BridgeEvent, ForeignKind, now_ms};

/// How long the books' totals per payout account are reused before they are recomputed.
const BOOKS_TTL: Duration = Duration::from_secs(2);

/// Credits and counted results per payout account, from the node's books.
#[derive(Default)]
pub(crate) struct BooksCache {
    at: Option<Instant>,
    by_account: HashMap<NanoAccount, (u128, u64)>,
}

/// What became of one message from the page.
enum Verdict {
    /// Carried (or answered).
    Fine,
    /// Refused: counts against the connection.
    Strike(String),
    /// Refused without blame (a result that lost the race, a stale status).
    Refused(String),
    /// The key is refused: close now.
    Close(String),
}

struct Conn {
    st: BridgeState,
    meter: Meter,
    strikes: u32,
    /// The key this connection signs with (from its first signed message).
    key: Option<PublicKey>,
}

/// Serve one browser until it leaves, misbehaves past its budget, or the node stops.
pub(crate) async fn run(mut socket: WebSocket, st: BridgeState) {
    let Ok((open, mut feed)) = st.node.subscribe_requests().await else {
        let _ = send(
            &mut socket,
            json!({"t": "bye", "reason": "the node is stopping"}),
        )
        .await;
        return;
    };
    let hello = json!({
        "t": "hello",
        "network": &*st.network,
        "network_id": st.network_id.to_string(),
        "node": st.node.peer_id().to_string(),
        "now_ms": now_ms(),
        "peers": st.config.peers,
        "budget": {
            "messages_per_second": st.config.budget.messages_per_second,
            "max_message_bytes": st.config.budget.max_message_bytes,
        },
    });
    if send(&mut socket, hello).await.is_err() {
        return;
    }
    for r in open.iter().rev() {
        if send(&mut socket, request_json(r)).await.is_err() {
            return;
        }
    }
    let mut conn = Conn {
        meter: Meter::new(&st.config.budget, Instant::now()),
        st,
        strikes: 0,
        key: None,
    };
    tracing::info!("a browser worker connected");
    loop {
        tokio::select! {
            ev = feed.recv() => {
                let msg = match ev {
                    Ok(BridgeEvent::Request(r)) => request_json(&r),
                    Ok(BridgeEvent::Done(id)) => json!({"t": "done", "id": id.to_string()}),
                    // The page learns of those requests from `done` or their expiry.
                    Err(RecvError::Lagged(n)) => {
                        tracing::debug!(missed = n, "a browser bridge fell behind the request feed");
                        continue;
                    }
                    Err(RecvError::Closed) => {
                        let _ = send(&mut socket, json!({"t": "bye", "reason": "the node is stopping"})).await;
                        break;
                    }
                };
                if send(&mut socket, msg).await.is_err() {
                    break;
                }
            }
            msg = socket.recv() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t.as_str().to_string(),
                    Some(Ok(Message::Binary(_))) => {
                        if conn.strike(&mut socket, "binary messages are not spoken here").await {
                            break;
                        }
                        continue;
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                };
                if !conn.meter.take(&conn.st.config.budget, text.len(), Instant::now()) {
                    if conn.strike(&mut socket, "over the message budget").await {
                        break;
                    }
                    continue;
                }
                let (reply, verdict) = conn.handle(&text).await;
                if let Some(reply) = reply
                    && send(&mut socket, reply).await.is_err()
                {
                    break;
                }
                match verdict {
                    Verdict::Fine => {}
                    Verdict::Refused(why) => tracing::debug!("a browser's message was refused: {why}"),
                    Verdict::Strike(why) => {
                        if conn.strike(&mut socket, &why).await {
                            break;
                        }
                    }
                    Verdict::Close(why) => {
                        let _ = send(&mut socket, json!({"t": "bye", "reason": why})).await;
                        break;
                    }
                }
            }
        }
    }
    tracing::info!(key = ?conn.key.map(|k| k.to_string()), "a browser worker left");
}

async fn send(socket: &mut WebSocket, v: Value) -> Result<(), axum::Error> {
    socket.send(Message::Text(v.to_string().into())).await
}

fn request_json(r: &Signed<WorkRequest>) -> Value {
    let p = r.payload();
    json!({
        "t": "request",
        "id": r.id().to_string(),
        "root": hex::encode(p.root.0),
        "difficulty": format!("{:016x}", p.difficulty.0),
        "expires_ms": p.expires_ms,
    })
}

impl Conn {
    /// Count a strike and tell the page; true when the socket must close (the key is then
    /// refused for the budget's `refuse_for`).
    async fn strike(&mut self, socket: &mut WebSocket, why: &str) -> bool {
        self.strikes += 1;
        let budget = &self.st.config.budget;
        if self.strikes < budget.max_strikes {
            return false;
        }
        if let Some(k) = self.key {
            tracing::warn!(key = %k, "refusing a browser worker for repeated invalid messages");
            if let Ok(mut r) = self.st.refused.lock() {
                r.refuse(k, Instant::now() + budget.refuse_for);
            }
        }
        let reason = format!("too many refused messages (last: {why})");
        let _ = send(socket, json!({"t": "bye", "reason": reason})).await;
        true
    }

    async fn handle(&mut self, text: &str) -> (Option<Value>, Verdict) {
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            return (None, Verdict::Strike("not JSON".into()));
        };
        match v["t"].as_str() {
            Some("status") => self.carry(ForeignKind::Status, &v).await,
            Some("result") => self.carry(ForeignKind::Result, &v).await,
            Some("credits") => {
                let Some(account) = v["account"]
                    .as_str()
                    .and_then(|a| a.trim().parse::<NanoAccount>().ok())
                else {
                    return (None, Verdict::Strike("not a nano_ account".into()));
                };
                let (credits, results) = self.credits(&account).await;
                let reply = json!({
                    "t": "credits",
                    "account": account.to_string(),
                    "credits": credits.to_string(),
                    "results": results,
                });
                (Some(reply), Verdict::Fine)
            }
            _ => (None, Verdict::Strike("unknown message".into())),
        }
    }

    /// Check who signed an envelope, then hand it to the node to validate and carry.
    async fn carry(&mut self, kind: ForeignKind, v: &Value) -> (Option<Value>, Verdict) {
        let name = match kind {
            ForeignKind::Result => "result",
            ForeignKind::Status => "status",
        };
        let Some(bytes) = v["envelope"].as_str().and_then(|h| hex::decode(h).ok()) else {
            return (None, Verdict::Strike("no envelope in hex".into()));
        };
        let signer = match kind {
            ForeignKind::Result => {
                Signed::<WorkResult>::decode(&bytes, &self.st.network_id).map(|s| s.signer())
            }
            ForeignKind::Status => {
                Signed::<WorkerStatus>::decode(&bytes, &self.st.network_id).map(|s| s.signer())
            }
        };
        let signer = match signer {
            Ok(k) => k,
            Err(e) => {
                let reply = json!({"t": "refused", "kind": name, "reason": "undecodable", "detail": e.to_string()});
                return (Some(reply), Verdict::Strike(e.to_string()));
            }
        };
        if self
            .st
            .refused
            .lock()
            .is_ok_and(|r| r.is_refused(&signer, Instant::now()))
        {
            return (
                None,
                Verdict::Close("this key is refused for a while".into()),
            );
        }
        match self.key {
            None => self.key = Some(signer),
            Some(k) if k != signer => {
                return (
                    None,
                    Verdict::Strike("one connection signs with one key".into()),
                );
            }
            Some(_) => {}
        }
        let id = v["id"].clone();
        match self.st.node.carry(kind, bytes).await {
            Err(_) => (None, Verdict::Close("the node is stopping".into())),
            Ok(Ok(())) => (
                Some(json!({"t": "ack", "kind": name, "id": id})),
                Verdict::Fine,
            ),
            Ok(Err(r)) => {
                let verdict = if r.reason.penalise() {
                    Verdict::Strike(r.to_string())
                } else {
                    Verdict::Refused(r.to_string())
                };
                let reply = json!({
                    "t": "refused",
                    "kind": name,
                    "id": id,
                    "reason": r.reason.as_str(),
                    "detail": r.detail,
                });
                (Some(reply), verdict)
            }
        }
    }

    /// Credits and counted results for `account` in the node's books (recomputed at most
    /// every [`BOOKS_TTL`], for every connection at once).
    async fn credits(&self, account: &NanoAccount) -> (u128, u64) {
        let mut books = self.st.books.lock().await;
        if books.at.is_none_or(|t| t.elapsed() > BOOKS_TTL) {
            if let Ok(by) = self.st.node.account_credits().await {
                books.by_account = by.into_iter().collect();
            }
            books.at = Some(Instant::now());
        }
        books.by_account.get(account).copied().unwrap_or_default()
    }
}
