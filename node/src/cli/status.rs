//! `dpow status`: a running node's figures as a worker, read from its HTTP server.
//!
//! One `GET /api/stats` (the JSON the dashboard reads) over HTTP/1.1 with hyper's client
//! connection, which the node already links for its own server: no other HTTP stack. The
//! worker's part ([`OwnWorkerStats`]) is printed as a table, or passed through with `--json`.
//! A node that does not work gets its general figures and exit status 1.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::{StatusCode, Uri, header};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::net::OwnWorkerStats;
use crate::output::{Output, rate};

/// Where `dpow node` serves HTTP unless told otherwise.
const DEFAULT_URL: &str = "http://127.0.0.1:7076";
/// Largest statistics answer read, in bytes (a node lists at most 1,000 workers and
/// 1,000 services: well under a megabyte).
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Exit status when the node answers but does not work.
const EXIT_NOT_A_WORKER: u8 = 1;
/// Width of the table's first column.
const KEY_WIDTH: usize = 18;

/// `dpow status`: what a running node's worker is doing.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The node's HTTP server: a URL or HOST:PORT (what `dpow node --http` was given).
    #[arg(long, default_value = DEFAULT_URL, value_name = "URL")]
    pub http: String,
    /// Bearer token to send, for a node (or a proxy in front of it) that asks for one.
    #[arg(
        long,
        env = "DPOW_HTTP_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// Seconds to wait for the node's answer.
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    pub timeout: f64,
}

/// Where to send the request.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    /// `HOST:PORT`, to connect to and to send as `Host`.
    authority: String,
    /// The path of the statistics, under any path the URL had.
    path: String,
    /// The URL as given, normalised, for messages.
    url: String,
}

/// Parse `http://HOST[:PORT][/PREFIX]` or `HOST:PORT`.
fn target(url: &str) -> anyhow::Result<Target> {
    let url = url.trim();
    let full = if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    };
    let uri: Uri = full
        .parse()
        .with_context(|| format!("--http {url:?} is not a URL"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => bail!(
            "--http {url:?}: only http:// is built in ({other}:// is not); point it at the node itself"
        ),
        None => bail!("--http {url:?} is not a URL"),
    }
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .with_context(|| format!("--http {url:?} names no host"))?;
    let port = uri.port_u16().unwrap_or(80);
    Ok(Target {
        authority: format!("{host}:{port}"),
        path: format!("{}/api/stats", uri.path().trim_end_matches('/')),
        url: full.trim_end_matches('/').to_string(),
    })
}

/// `GET` the statistics: the status and the body.
async fn get(t: &Target, token: Option<&str>) -> anyhow::Result<(StatusCode, Bytes)> {
    let stream = tokio::net::TcpStream::connect(&t.authority)
        .await
        .with_context(|| {
            format!(
                "cannot reach a node at {}: is `dpow node` running with --http {}?",
                t.url, t.authority
            )
        })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .with_context(|| format!("talking HTTP to {}", t.url))?;
    let driver = tokio::spawn(connection);
    let mut request = hyper::Request::get(t.path.as_str())
        .header(header::HOST, t.authority.as_str())
        .header(header::ACCEPT, "application/json");
    if let Some(token) = token.filter(|t| !t.is_empty()) {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .context("building the request")?;
    let response = sender
        .send_request(request)
        .await
        .with_context(|| format!("asking {} for its statistics", t.url))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the answer of {}: {e}", t.url))?
        .to_bytes();
    driver.abort();
    Ok((status, body))
}

/// The node's statistics as JSON, with errors that say what to do.
fn fetch(t: &Target, token: Option<&str>, timeout: Duration) -> anyhow::Result<Value> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let (status, body) = runtime
        .block_on(async { tokio::time::timeout(timeout, get(t, token)).await })
        .map_err(|_| {
            anyhow::anyhow!(
                "{} did not answer within {timeout:?}: is it a dpow node's --http address?",
                t.url
            )
        })??;
    match status {
        StatusCode::OK => {}
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => bail!(
            "{} refused the request ({status}): pass its token with --token or DPOW_HTTP_TOKEN",
            t.url
        ),
        StatusCode::NOT_FOUND => bail!(
            "{} has no {} ({status}): is it a dpow node's --http address?",
            t.url,
            t.path
        ),
        _ => bail!("{} answered {status}", t.url),
    }
    let v: Value = serde_json::from_slice(&body)
        .with_context(|| format!("{} did not answer with JSON", t.url))?;
    if !v["peer_id"].is_string() {
        bail!("{} did not answer like a dpow node (no peer_id)", t.url);
    }
    Ok(v)
}

/// Run `dpow status`.
pub(super) fn run(a: StatusArgs, out: Output) -> anyhow::Result<ExitCode> {
    if !(a.timeout.is_finite() && (0.1..=600.0).contains(&a.timeout)) {
        bail!("--timeout must be between 0.1 and 600 seconds");
    }
    let t = target(&a.http)?;
    let v = fetch(&t, a.token.as_deref(), Duration::from_secs_f64(a.timeout))?;
    let node = json!({
        "url": t.url,
        "peer_id": v["peer_id"],
        "account": v["account"],
        "network": v["network"],
        "network_id": v["network_id"],
        "uptime_s": v["uptime_s"],
    });
    if v["worker"].is_null() {
        let mut js = node;
        for k in [
            "connected_peers",
            "live_workers",
            "network_hash_rate",
            "services",
            "ledger_receipts",
            "submitted",
            "completed",
        ] {
            js[k] = v[k].clone();
        }
        js["worker"] = Value::Null;
        out.emit(&general_table(&t.url, &v), &js)?;
        return Ok(ExitCode::from(EXIT_NOT_A_WORKER));
    }
    let w: OwnWorkerStats = serde_json::from_value(v["worker"].clone())
        .with_context(|| format!("the worker figures of {}", t.url))?;
    let mut js = node;
    js["worker"] = serde_json::to_value(&w)?;
    out.emit(&worker_table(&v, &w), &js)?;
    Ok(ExitCode::SUCCESS)
}

fn row(out: &mut String, key: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "{key:<KEY_WIDTH$}{value}");
}

fn uptime(v: &Value) -> String {
    let s = v["uptime_s"].as_u64().unwrap_or(0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

/// The network's name and short id, as the node reports them.
fn network(v: &Value) -> String {
    format!("{} ({})", text(v, "network"), text(v, "network_id"))
}

fn text<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("?")
}

/// The worker's figures, one per line.
fn worker_table(v: &Value, w: &OwnWorkerStats) -> String {
    let mut out = String::new();
    row(&mut out, "account", text(v, "account"));
    row(
        &mut out,
        "payout",
        if w.payout.is_empty() {
            "none: credits unclaimed (set --payout nano_...)"
        } else {
            &w.payout
        },
    );
    row(&mut out, "peer id", text(v, "peer_id"));
    row(&mut out, "network", network(v));
    row(&mut out, "uptime", uptime(v));
    for d in &w.devices {
        let mut line = format!("{}  {}", rate(d.hash_rate as f64), d.name);
        if d.failures > 0 {
            let _ = write!(line, "  ({} failures)", d.failures);
        }
        if d.dropped {
            line.push_str("  dropped");
        }
        row(&mut out, "device", line);
    }
    row(
        &mut out,
        "started",
        format!(
            "{} as primary, {} as backup ({} early, primaries busy)",
            w.started_primary, w.started_backup, w.started_early
        ),
    );
    row(
        &mut out,
        "standing",
        if w.standing_receipts == 0 {
            "on probation: no receipt yet (backups only while proven workers suffice)".to_string()
        } else {
            format!("proven: {} receipts", w.standing_receipts)
        },
    );
    row(&mut out, "sent", w.sent);
    row(&mut out, "won", w.won);
    row(&mut out, "lost", w.lost);
    row(&mut out, "awaiting receipt", w.awaiting_receipt);
    row(&mut out, "rejected", w.rejected_total());
    for (reason, n) in &w.rejected {
        row(&mut out, &format!("  {reason}"), n);
    }
    row(&mut out, "credits", w.credits);
    for (i, e) in w.credits_by_epoch.iter().enumerate() {
        let note = if i == 0 { "  (current)" } else { "" };
        row(
            &mut out,
            &format!("  epoch {}", e.epoch),
            format!("{}{note}", e.credits),
        );
    }
    out
}

/// A node that does not work: what it does do.
fn general_table(url: &str, v: &Value) -> String {
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    let mut out = String::new();
    row(&mut out, "account", text(v, "account"));
    row(&mut out, "peer id", text(v, "peer_id"));
    row(&mut out, "network", network(v));
    row(&mut out, "uptime", uptime(v));
    row(&mut out, "peers", n("connected_peers"));
    row(&mut out, "workers online", n("live_workers"));
    row(
        &mut out,
        "network rate",
        rate(n("network_hash_rate") as f64),
    );
    row(&mut out, "services", n("services"));
    row(&mut out, "receipts", n("ledger_receipts"));
    row(&mut out, "requests sent", n("submitted"));
    row(&mut out, "  answered", n("completed"));
    let _ = writeln!(
        out,
        "\nthe node at {url} does not work: it has no worker figures (start it with --role worker)"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_host_ports_become_targets() {
        let t = target("http://127.0.0.1:7076").expect("url");
        assert_eq!(t.authority, "127.0.0.1:7076");
        assert_eq!(t.path, "/api/stats");
        let t = target("127.0.0.1:9000/").expect("host:port");
        assert_eq!(t.authority, "127.0.0.1:9000");
        assert_eq!(t.url, "http://127.0.0.1:9000");
        let t = target("http://node.lan/dpow/").expect("prefix");
        assert_eq!(t.authority, "node.lan:80");
        assert_eq!(t.path, "/dpow/api/stats");
        let t = target("http://[::1]:7076").expect("ipv6");
        assert_eq!(t.authority, "[::1]:7076");
        assert!(target("https://node.lan").is_err());
        assert!(target("http://").is_err());
        assert!(target("").is_err());
    }

    #[test]
    fn the_table_lists_devices_reasons_and_epochs() {
        let w = OwnWorkerStats {
            payout: "nano_pay".into(),
            devices: vec![crate::net::DeviceRate {
                name: "cpu avx2 x4".into(),
                hash_rate: 12_300_000,
                failures: 2,
                dropped: true,
            }],
            sent: 5,
            won: 3,
            lost: 1,
            awaiting_receipt: 1,
            rejected: [("invalid_work".to_string(), 2)].into_iter().collect(),
            credits: 40,
            credits_by_epoch: vec![
                crate::net::EpochCredits {
                    epoch: 9,
                    credits: 30,
                },
                crate::net::EpochCredits {
                    epoch: 8,
                    credits: 10,
                },
            ],
            started_primary: 6,
            started_backup: 2,
            started_early: 1,
            standing_receipts: 3,
        };
        let v = json!({"account": "nano_me", "peer_id": "12D3", "uptime_s": 3725});
        let t = worker_table(&v, &w);
        for line in [
            "payout            nano_pay",
            "device            12.3 MH/s  cpu avx2 x4  (2 failures)  dropped",
            "won               3",
            "started           6 as primary, 2 as backup (1 early, primaries busy)",
            "standing          proven: 3 receipts",
            "rejected          2",
            "  invalid_work    2",
            "  epoch 9         30  (current)",
            "  epoch 8         10",
            "uptime            1 h 2 min",
        ] {
            assert!(t.lines().any(|l| l == line), "{line:?} missing from\n{t}");
        }
    }
}
