//! The node's HTTP server: the dashboard, statistics for people and scripts, and on a
//! service's node the work-server API ([`crate::gateway`]).
//!
//! - `GET /`: the dashboard (one HTML page built into the binary, no external assets), live
//!   through `GET /api/events` (server-sent events: one statistics snapshot a second, and
//!   the node's [`crate::net::Event`]s as they happen, each named by its kind);
//! - `GET /api/stats`: [`NodeStats`] as JSON;
//! - `GET /api/history`: the last hour of charted figures ([`HistoryView`]), sampled from the
//!   statistics every [`DEFAULT_HISTORY_INTERVAL`] by a task the router starts;
//! - `GET /metrics`: the same figures in the Prometheus text format.
//!
//! Loopback by default; bound elsewhere, a service node requires a bearer token for its API,
//! and the statistics routes require the same token unless published with `--public-stats`
//! ([`behind_token`], [`stats_token`]).
//! Bound to loopback, every call must name a loopback host (`Host: localhost`, `127.x.y.z` or
//! `[::1]`, any port): a web page the user visits cannot reach the node through a DNS name it
//! points at 127.0.0.1 (DNS rebinding). At most [`MAX_EVENT_STREAMS`] event streams are open
//! at once; another is answered 429.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use anyhow::Context;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use futures::Stream;

use crate::net::history::{DEFAULT_HISTORY_INTERVAL, History, HistoryView};
use crate::net::{NodeStats, StatsReader, now_ms};

mod access;
pub use access::{bearer_matches, behind_token, stats_token};

const DASHBOARD: &str = include_str!("../assets/dashboard.html");

/// Most `/api/events` streams open at once (each holds a task and a connection).
pub const MAX_EVENT_STREAMS: usize = 64;

/// The node's latest events, kept for the dashboard's page: its activity list is full from
/// the start.
pub const RECENT_EVENTS: usize = 40;

/// Events with the time they were told (unix ms), the latest [`RECENT_EVENTS`].
type Recent = Arc<Mutex<std::collections::VecDeque<(u64, crate::net::Event)>>>;

/// What the handlers share: the live statistics and their sampled history.
#[derive(Clone)]
struct AppState {
    stats: StatsReader,
    history: Arc<Mutex<History>>,
    /// Event streams open now.
    streams: Arc<AtomicUsize>,
    /// The latest events.
    recent: Recent,
}

/// One open event stream, counted until it is dropped (the client went away).
struct StreamSlot(Arc<AtomicUsize>);

impl StreamSlot {
    fn take(count: &Arc<AtomicUsize>) -> Option<StreamSlot> {
        let taken = count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < MAX_EVENT_STREAMS).then_some(n + 1)
        });
        taken.ok().map(|_| StreamSlot(count.clone()))
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl AppState {
    fn history(&self) -> HistoryView {
        self.history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .view()
    }
}

/// Build the router; its history samples the statistics every [`DEFAULT_HISTORY_INTERVAL`].
pub fn router(stats: StatsReader) -> Router {
    router_sampling_every(stats, DEFAULT_HISTORY_INTERVAL)
}

/// Build the router with a history sampled every `interval` (tests use a short one). The
/// sampling task starts on the current tokio runtime and ends once the router is dropped;
/// outside a runtime there is no sampling and the history stays empty.
pub fn router_sampling_every(stats: StatsReader, interval: Duration) -> Router {
    let interval = interval.max(Duration::from_millis(1));
    let history = Arc::new(Mutex::new(History::with_interval(interval)));
    let recent = Recent::default();
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn(sample(
                stats.clone(),
                Arc::downgrade(&history),
                Arc::downgrade(&recent),
                interval,
            ));
        }
        Err(_) => tracing::warn!("no tokio runtime: the dashboard's history is not sampled"),
    }
    Router::new()
        .route("/", get(dashboard))
        .route("/api/stats", get(get_stats))
        .route("/api/history", get(get_history))
        .route("/api/events", get(events))
        .route("/metrics", get(metrics))
        .with_state(AppState {
            stats,
            history,
            streams: Arc::new(AtomicUsize::new(0)),
            recent,
        })
}

/// Record a snapshot every `interval`, the first at once, and keep the latest events,
/// while the router lives.
async fn sample(
    stats: StatsReader,
    history: Weak<Mutex<History>>,
    recent: Weak<Mutex<std::collections::VecDeque<(u64, crate::net::Event)>>>,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut events = Some(stats.events());
    loop {
        let told = async {
            match events.as_mut() {
                Some(e) => e.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tick.tick() => {}
            e = told => {
                match e {
                    // Those missed are only the list's loss.
                    Some(Ok(e)) => {
                        let Some(recent) = recent.upgrade() else { return };
                        let mut r = recent.lock().unwrap_or_else(PoisonError::into_inner);
                        if r.len() == RECENT_EVENTS {
                            r.pop_front();
                        }
                        r.push_back((now_ms(), e));
                    }
                    Some(Err(_)) => {}
                    // The node stopped: the history still samples its last statistics.
                    None => events = None,
                }
                continue;
            }
        }
        let Some(history) = history.upgrade() else {
            return;
        };
        let snapshot = stats.snapshot();
        history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(now_ms(), &snapshot);
    }
}

/// JSON for a script element: `<` escaped so that no text from the network (a service's
/// name) can close it.
fn inline_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value)
        .unwrap_or_else(|_| "null".into())
        .replace('<', "\\u003c")
}

/// The page with the current statistics, the history and the latest events in it, so that
/// it is complete (charts and activity included) on first paint.
async fn dashboard(State(state): State<AppState>) -> Html<String> {
    let stats = inline_json(&state.stats.snapshot());
    let history = inline_json(&state.history());
    let recent: Vec<serde_json::Value> = state
        .recent
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(|(at, e)| told_json(*at, e))
        .collect();
    let recent = inline_json(&recent);
    Html(
        DASHBOARD
            .replacen("/*INITIAL_STATS*/null", &stats, 1)
            .replacen("/*INITIAL_HISTORY*/null", &history, 1)
            .replacen("/*INITIAL_EVENTS*/[]", &recent, 1),
    )
}

async fn get_stats(State(state): State<AppState>) -> Json<NodeStats> {
    Json(state.stats.snapshot())
}

async fn get_history(State(state): State<AppState>) -> Json<HistoryView> {
    Json(state.history())
}

async fn events(
    State(AppState { stats, streams, .. }): State<AppState>,
) -> axum::response::Response {
    let Some(slot) = StreamSlot::take(&streams) else {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            format!("at most {MAX_EVENT_STREAMS} event streams at once"),
        )
            .into_response();
    };
    Sse::new(event_stream(stats, slot))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// A node's event as JSON, with the time it was told (unix ms).
fn told_json(at_ms: u64, e: &crate::net::Event) -> serde_json::Value {
    let mut v = serde_json::to_value(e).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("at_ms".into(), at_ms.into());
    }
    v
}

/// A named server-sent event for a node's event.
fn told(at_ms: u64, e: &crate::net::Event) -> Event {
    Event::default()
        .event(e.name())
        .data(told_json(at_ms, e).to_string())
}

/// Each of the node's [`crate::net::Event`]s as it happens, named by its kind (`event:
/// refused`, its JSON and `at_ms` as the data; `event: missed` with a count when this stream
/// fell behind), and a statistics snapshot a second (unnamed events, which the dashboard
/// renders). The slot is held while the client listens.
fn event_stream(
    stats: StatsReader,
    slot: StreamSlot,
) -> impl Stream<Item = Result<Event, Infallible>> {
    use futures::StreamExt;
    let happenings = futures::stream::unfold(stats.events(), |mut events| async move {
        let sse = match events.next().await? {
            Ok(e) => told(now_ms(), &e),
            Err(crate::net::Missed(n)) => Event::default().event("missed").data(n.to_string()),
        };
        Some((Ok(sse), events))
    });
    let snapshots = futures::stream::unfold(stats, |stats| async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let data = serde_json::to_string(&stats.snapshot()).unwrap_or_else(|_| "{}".into());
        Some((Ok(Event::default().data(data)), stats))
    });
    futures::stream::select(snapshots, happenings).map(move |e| {
        let _held = &slot;
        e
    })
}

/// Whether a `Host` header names this machine's loopback, with or without a port:
/// `localhost`, `127.x.y.z`, `[::1]`, and bare `::1` (a Nano node sends the peer's address
/// as it is, without brackets or port).
pub fn is_loopback_host(host: &str) -> bool {
    let loopback_ip = |s: &str| {
        s.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
    };
    if loopback_ip(host) {
        return true;
    }
    let name = match host.strip_prefix('[') {
        // `[::1]` or `[::1]:port`
        Some(rest) => match rest.split_once(']') {
            Some((inner, tail)) if tail.is_empty() || tail.starts_with(':') => inner,
            _ => return false,
        },
        None => match host.split_once(':') {
            Some((h, port)) if !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()) => h,
            Some(_) => return false,
            None => host,
        },
    };
    name.eq_ignore_ascii_case("localhost") || loopback_ip(name)
}

/// Whether an `Origin` header is a page served from this machine's loopback.
fn is_loopback_origin(origin: &str) -> bool {
    let rest = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    rest.is_some_and(|r| is_loopback_host(r.trim_end_matches('/')))
}

/// On a loopback-bound server: refuse a call whose `Host` is not a loopback name, so a web
/// page cannot reach the node through a DNS name rebound to 127.0.0.1, and a call from a web
/// page of another origin (its `Origin` header), so a page the user visits cannot post work
/// requests to `http://127.0.0.1:7076/` behind their back. A call with no `Host` passes
/// (browsers always send one; older Nano nodes send none), and so does one without `Origin`
/// (Nano nodes, curl and HTTP libraries send none; browsers send it on every cross-origin
/// call and every POST).
async fn loopback_host_only(request: Request, next: Next) -> axum::response::Response {
    let headers = request.headers();
    let host_ok = headers
        .get(header::HOST)
        .is_none_or(|h| h.to_str().is_ok_and(is_loopback_host));
    let origin_ok = headers
        .get(header::ORIGIN)
        .is_none_or(|o| o.to_str().is_ok_and(is_loopback_origin));
    if host_ok && origin_ok {
        return next.run(request).await;
    }
    (
        StatusCode::FORBIDDEN,
        "this node serves loopback only: call it as localhost, 127.0.0.1 or [::1], not from a web page of another site",
    )
        .into_response()
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics_text(&state.stats.snapshot()),
    )
}

/// Label values escaped as the text format requires.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One metric family with one label: its HELP and TYPE lines, then a sample per (label
/// value, value).
fn family<'a, V: std::fmt::Display>(
    out: &mut String,
    name: &str,
    help: &str,
    kind: &str,
    label_name: &str,
    samples: impl IntoIterator<Item = (&'a str, V)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (l, v) in samples {
        let _ = writeln!(out, "{name}{{{label_name}=\"{}\"}} {v}", label(l));
    }
}

/// A map's entries as (label value, value) samples.
fn by_key(m: &std::collections::BTreeMap<String, u64>) -> impl Iterator<Item = (&str, u64)> {
    m.iter().map(|(k, v)| (k.as_str(), *v))
}

/// The statistics in the Prometheus text exposition format.
pub fn metrics_text(s: &NodeStats) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, kind: &str, v: f64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    };
    gauge(
        "dpow_connected_peers",
        "Peers with an open connection.",
        "gauge",
        s.connected_peers as f64,
    );
    gauge(
        "dpow_live_workers",
        "Workers heard from recently.",
        "gauge",
        s.live_workers as f64,
    );
    gauge(
        "dpow_network_hash_rate",
        "Summed announced hash rate, hashes per second.",
        "gauge",
        s.network_hash_rate as f64,
    );
    gauge(
        "dpow_registry_entries",
        "Registry entries applied.",
        "gauge",
        s.registry_entries as f64,
    );
    gauge(
        "dpow_registry_equivocations_total",
        "Registry entries met that conflict with another of the same registrar and number.",
        "counter",
        s.registry_equivocations as f64,
    );
    gauge(
        "dpow_precached",
        "Precached works held by the work API.",
        "gauge",
        s.precached as f64,
    );
    gauge(
        "dpow_precache_evicted_total",
        "Precached works evicted, oldest first, to stay within the bound.",
        "counter",
        s.precache_evicted as f64,
    );
    gauge(
        "dpow_services",
        "Registered services.",
        "gauge",
        s.services as f64,
    );
    gauge(
        "dpow_requests_per_second",
        "Work requests accepted per second over the last minute.",
        "gauge",
        s.requests_per_second,
    );
    gauge(
        "dpow_submitted_total",
        "Requests this node submitted.",
        "counter",
        s.submitted as f64,
    );
    gauge(
        "dpow_completed_total",
        "Of those, answered with valid work.",
        "counter",
        s.completed as f64,
    );
    gauge(
        "dpow_expired_total",
        "Of those, expired unanswered.",
        "counter",
        s.expired as f64,
    );
    gauge(
        "dpow_solved_total",
        "Requests solved and published by this node.",
        "counter",
        s.solved as f64,
    );
    gauge(
        "dpow_hashes_total",
        "Hashes computed by this node.",
        "counter",
        s.hashes as f64,
    );
    gauge(
        "dpow_hash_rate",
        "This node's announced hash rate.",
        "gauge",
        s.hash_rate as f64,
    );
    gauge(
        "dpow_queue_length",
        "Requests waiting in this worker's queue.",
        "gauge",
        s.queue as f64,
    );
    gauge(
        "dpow_uptime_seconds",
        "Seconds since the node started.",
        "counter",
        s.uptime_s as f64,
    );
    gauge(
        "dpow_results_direct_total",
        "Results delivered straight to this service node and taken.",
        "counter",
        s.results_direct as f64,
    );
    gauge(
        "dpow_results_gossiped_total",
        "Results this worker sent by gossip because the service node could not be reached.",
        "counter",
        s.results_gossiped as f64,
    );
    family(
        &mut out,
        "dpow_accepted_total",
        "Gossip messages accepted, by kind.",
        "counter",
        "kind",
        by_key(&s.accepted),
    );
    family(
        &mut out,
        "dpow_rejected_total",
        "Gossip messages rejected or ignored, by reason.",
        "counter",
        "reason",
        by_key(&s.rejected),
    );
    family(
        &mut out,
        "dpow_unreceipted_wins_total",
        "Requests this worker won (by the service node's answer) that the service never signed a receipt for, by service key.",
        "counter",
        "service",
        by_key(&s.unreceipted_wins),
    );
    family(
        &mut out,
        "dpow_work_total",
        "Valid results seen, by block kind.",
        "counter",
        "kind",
        by_key(&s.work_by_kind),
    );
    let _ = writeln!(
        out,
        "# HELP dpow_request_latency_ms Latency of this node's own requests.\n# TYPE dpow_request_latency_ms gauge"
    );
    for (q, v) in [
        ("0.5", s.latency_ms.p50),
        ("0.95", s.latency_ms.p95),
        ("0.99", s.latency_ms.p99),
    ] {
        let _ = writeln!(out, "dpow_request_latency_ms{{quantile=\"{q}\"}} {v}");
    }
    family(
        &mut out,
        "dpow_worker_hash_rate",
        "Announced hash rate of each live worker.",
        "gauge",
        "worker",
        s.worker_list
            .iter()
            .map(|w| (w.account.as_str(), w.hash_rate)),
    );
    if let Some(w) = &s.worker {
        family(
            &mut out,
            "dpow_worker_results_total",
            "This worker's results: sent, and of those won (paid) or lost to another worker.",
            "counter",
            "outcome",
            [("sent", w.sent), ("won", w.won), ("lost", w.lost)],
        );
        family(
            &mut out,
            "dpow_worker_rejected_total",
            "This worker's jobs that ended in no sent result, by reason.",
            "counter",
            "reason",
            by_key(&w.rejected),
        );
        let _ = writeln!(
            out,
            "# HELP dpow_worker_awaiting_receipt Sent results with no receipt yet.\n# TYPE dpow_worker_awaiting_receipt gauge\ndpow_worker_awaiting_receipt {}",
            w.awaiting_receipt
        );
        let _ = writeln!(
            out,
            "# HELP dpow_worker_credits_total Credits this worker earned, by the ledger.\n# TYPE dpow_worker_credits_total counter\ndpow_worker_credits_total {}",
            w.credits
        );
        family(
            &mut out,
            "dpow_device_hash_rate",
            "Hash rate of each of this worker's devices over its last job.",
            "gauge",
            "device",
            w.devices.iter().map(|d| (d.name.as_str(), d.hash_rate)),
        );
    }
    let _ = writeln!(
        out,
        "# HELP dpow_service_requests_total Requests seen from each service.\n# TYPE dpow_service_requests_total counter"
    );
    for v in &s.service_list {
        let _ = writeln!(
            out,
            "dpow_service_requests_total{{service=\"{}\",name=\"{}\"}} {}",
            label(&v.account),
            label(&v.name),
            v.requests
        );
    }
    out
}

/// Bind `addr` and serve `app` until `shutdown` resolves. Returns the bound address at once.
///
/// HTTP/1 connections may be half-closed: a call whose client closes its side right after
/// the request (a Nano node does so with `work_cancel`) still runs to the end. With hyper's
/// default (as under `axum::serve`) the connection and the call would be dropped at that EOF.
pub async fn serve(
    addr: SocketAddr,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the HTTP server to {addr}"))?;
    let bound = listener.local_addr()?;
    let app = if bound.ip().is_loopback() {
        app.layer(axum::middleware::from_fn(loopback_host_only))
    } else {
        app
    };
    tokio::spawn(accept(listener, app, shutdown));
    Ok(bound)
}

/// Accept connections until `shutdown`, then let those open finish their calls. Connections
/// may be upgraded (the browser bridge's WebSocket); an upgraded socket is its handler's to
/// close.
async fn accept(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.half_close(true);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Each connection task holds a clone; when all are gone, every call has finished.
    let (alive_tx, mut alive_rx) = tokio::sync::mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: do not spin.
                    tracing::warn!("http server: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let conn = http
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
            .with_upgrades();
        let mut stop = stop_rx.clone();
        let alive = alive_tx.clone();
        tokio::spawn(async move {
            let _alive = alive;
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!("http connection: {e}");
                    }
                    return;
                }
                _ = stop.changed() => {}
            }
            conn.as_mut().graceful_shutdown();
            if let Err(e) = conn.await {
                tracing::debug!("http connection: {e}");
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(alive_tx);
    let _ = alive_rx.recv().await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use axum::body::Body;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tower::ServiceExt;

    use super::*;

    #[test]
    fn loopback_hosts_are_told_apart_from_others() {
        for h in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1",
            "127.0.0.1:7076",
            "127.8.9.10:1",
            "[::1]",
            "[::1]:7076",
            "::1",
            "0:0:0:0:0:0:0:1",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "evil.example",
            "evil.example:7076",
            "localhost.evil.example",
            "10.0.0.1:7076",
            "[::2]:1",
            "",
            "127.0.0.1.nip.io",
            "[::1]x",
            "localhost:",
            "localhost:80:80",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    async fn status_of(app: &Router) -> (StatusCode, axum::response::Response) {
        let r = app
            .clone()
            .oneshot(
                axum::http::Request::get("/api/events")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        (r.status(), r)
    }

    #[tokio::test]
    async fn event_streams_are_capped_and_a_closed_one_frees_its_slot() {
        let app = router(StatsReader::fixed(NodeStats::default()));
        let mut open = Vec::new();
        for _ in 0..MAX_EVENT_STREAMS {
            let (s, r) = status_of(&app).await;
            assert_eq!(s, StatusCode::OK);
            open.push(r);
        }
        assert_eq!(status_of(&app).await.0, StatusCode::TOO_MANY_REQUESTS);
        // A client goes away: its stream (and slot) is dropped with its response.
        drop(open.pop());
        let (s, r) = status_of(&app).await;
        assert_eq!(s, StatusCode::OK);
        open.push(r);
        assert_eq!(status_of(&app).await.0, StatusCode::TOO_MANY_REQUESTS);
    }

    async fn raw_get(addr: SocketAddr, host: Option<String>) -> String {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let host = host.map(|h| format!("Host: {h}\r\n")).unwrap_or_default();
        let req = format!("GET /api/stats HTTP/1.1\r\n{host}Connection: close\r\n\r\n");
        c.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        out.lines().next().unwrap_or("").to_string()
    }

    #[tokio::test]
    async fn a_loopback_server_refuses_calls_naming_another_host() {
        let app = router(StatsReader::fixed(NodeStats::default()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let addr = serve("127.0.0.1:0".parse().unwrap(), app, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
        let port = addr.port();
        let get = |h: String| raw_get(addr, Some(h));
        assert!(get(format!("127.0.0.1:{port}")).await.contains("200"));
        assert!(get(format!("localhost:{port}")).await.contains("200"));
        // What a Nano node sends for a work peer at ::1: the bare address.
        assert!(get("::1".to_string()).await.contains("200"));
        // No Host at all (older Nano nodes): no browser sends that.
        assert!(raw_get(addr, None).await.contains("200"));
        // A page at evil.example whose DNS now says 127.0.0.1.
        assert!(get(format!("evil.example:{port}")).await.contains("403"));
        // A page at evil.example posting to 127.0.0.1 (its browser sends Origin).
        let from = |origin: &str| format!("127.0.0.1:{port}\r\nOrigin: {origin}");
        assert!(get(from("http://evil.example")).await.contains("403"));
        assert!(get(from("null")).await.contains("403"));
        // The node's own pages (dashboard, /contribute) call it from its own origin.
        assert!(
            get(from(&format!("http://127.0.0.1:{port}")))
                .await
                .contains("200")
        );
        assert!(get(String::new()).await.starts_with("HTTP/1.1 4"));
        let _ = stop.send(());
    }
}
