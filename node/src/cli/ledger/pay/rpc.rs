//! The one Nano node RPC call `dpow ledger pay` makes: `send`, with an `id`.
//!
//! A POST of `{"action":"send","wallet":W,"source":S,"destination":D,"amount":RAW,"id":ID}`
//! over HTTP/1.1 with hyper's client connection (already linked for `dpow status`). A Nano
//! node answers `{"block":"<64 hex>"}`, or HTTP 200 with `{"error":"..."}`; the same `id` again
//! answers the same block and sends nothing (docs.nano.org, RPC protocol, `send`).
// A light build (no `ledger` feature) does not pay, only dry-runs: it parses the URL alone.
#![cfg_attr(not(feature = "ledger"), allow(dead_code))]

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Uri, header};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// Largest answer read, in bytes (a block hash or an error line).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Why one send did not give a block hash.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum SendError {
    /// The node answered `{"error": ...}`.
    #[error("the node refused: {0}")]
    Node(String),
    /// No answer within the time allowed: the send may or may not have been applied.
    #[error(
        "no answer within {0:?}: the node may have sent it; a re-run sends the same id, which the node does not pay twice"
    )]
    Timeout(Duration),
    /// The node could not be reached, or the HTTP exchange broke.
    #[error("{0}")]
    Transport(String),
    /// An answer that is neither a block hash nor an error.
    #[error("unexpected answer: {0}")]
    Answer(String),
}

/// A Nano node's RPC address.
#[derive(Debug, Clone)]
pub(crate) struct Rpc {
    /// `HOST:PORT`, to connect to and to send as `Host`.
    authority: String,
    /// The path to POST to (`/` unless the URL named one).
    path: String,
    /// The URL as given, for messages.
    url: String,
    /// The longest one call may take.
    timeout: Duration,
}

impl Rpc {
    /// Parse `http://HOST[:PORT][/PATH]` (port 7076, the Nano node's RPC port, by default).
    pub(crate) fn new(url: &str, timeout: Duration) -> anyhow::Result<Rpc> {
        let url = url.trim();
        let uri: Uri = url
            .parse()
            .map_err(|e| anyhow::anyhow!("--rpc {url:?} is not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => anyhow::bail!(
                "--rpc {url:?}: only http:// is built in ({other}:// is not); reach the node over loopback or a tunnel"
            ),
            None => anyhow::bail!("--rpc {url:?} is not a URL (http://HOST:PORT)"),
        }
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| anyhow::anyhow!("--rpc {url:?} names no host"))?;
        let path = match uri.path() {
            "" => "/".to_string(),
            p => p.to_string(),
        };
        Ok(Rpc {
            authority: format!("{host}:{}", uri.port_u16().unwrap_or(7076)),
            path,
            url: url.to_string(),
            timeout,
        })
    }

    /// The URL, as given.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// `send` `amount` raw from `source` to `destination` with `id`: the block hash (64
    /// upper-case hex digits).
    pub(crate) async fn send(
        &self,
        wallet: &str,
        source: &str,
        destination: &str,
        amount: u128,
        id: &str,
    ) -> Result<String, SendError> {
        let body = json!({
            "action": "send",
            "wallet": wallet,
            "source": source,
            "destination": destination,
            "amount": amount.to_string(),
            "id": id,
        });
        let answer = tokio::time::timeout(self.timeout, self.post(body.to_string()))
            .await
            .map_err(|_| SendError::Timeout(self.timeout))??;
        block_of(&answer)
    }

    async fn post(&self, body: String) -> Result<Bytes, SendError> {
        let transport = |what: &str, e: &dyn std::fmt::Display| {
            SendError::Transport(format!("{what} {}: {e}", self.url))
        };
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|e| transport("cannot reach the Nano node RPC at", &e))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| transport("talking HTTP to", &e))?;
        let driver = tokio::spawn(connection);
        let request = hyper::Request::post(self.path.as_str())
            .header(header::HOST, self.authority.as_str())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| transport("building a request for", &e))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| transport("no answer from", &e))?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| transport("reading the answer of", &e))?
            .to_bytes();
        driver.abort();
        if !status.is_success() {
            return Err(SendError::Transport(format!(
                "{} answered HTTP {status}: {}",
                self.url,
                shown(&bytes)
            )));
        }
        Ok(bytes)
    }
}

/// At most 200 characters of an answer, for a message.
fn shown(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).chars().take(200).collect()
}

/// The block hash of a `send` answer, or its error.
fn block_of(answer: &[u8]) -> Result<String, SendError> {
    let v: Value = serde_json::from_slice(answer)
        .map_err(|_| SendError::Answer(format!("not JSON: {:?}", shown(answer))))?;
    if let Some(e) = v.get("error") {
        return Err(SendError::Node(
            e.as_str().map_or_else(|| e.to_string(), str::to_string),
        ));
    }
    match v.get("block").and_then(Value::as_str) {
        Some(b) if b.len() == 64 && b.bytes().all(|c| c.is_ascii_hexdigit()) => {
            Ok(b.to_ascii_uppercase())
        }
        _ => Err(SendError::Answer(format!(
            "no block hash (64 hex digits) in {:?}",
            shown(answer)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_answers() {
        let r = Rpc::new("http://127.0.0.1", Duration::from_secs(1)).expect("url");
        assert_eq!(
            (r.authority.as_str(), r.path.as_str()),
            ("127.0.0.1:7076", "/")
        );
        let r = Rpc::new("http://[::1]:7000/rpc", Duration::from_secs(1)).expect("url");
        assert_eq!(
            (r.authority.as_str(), r.path.as_str()),
            ("[::1]:7000", "/rpc")
        );
        assert!(Rpc::new("https://node", Duration::from_secs(1)).is_err());
        assert!(Rpc::new("node:7076", Duration::from_secs(1)).is_err());
        let hash = "ab".repeat(32);
        assert_eq!(
            block_of(format!("{{\"block\":\"{hash}\"}}").as_bytes()).expect("block"),
            hash.to_ascii_uppercase()
        );
        assert!(matches!(
            block_of(br#"{"error":"Insufficient balance"}"#),
            Err(SendError::Node(e)) if e == "Insufficient balance"
        ));
        assert!(matches!(
            block_of(b"{\"block\":\"12\"}"),
            Err(SendError::Answer(_))
        ));
        assert!(matches!(block_of(b"<html>"), Err(SendError::Answer(_))));
    }
}
