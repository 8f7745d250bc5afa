//! The node's HTTP server: the dashboard, statistics for people and scripts, and on a
//! service's node the work-server API ([`crate::gateway`]).
//!
//! - `GET /`: the dashboard (one HTML page built into the binary, no external assets), live
//!   through `GET /api/events` (server-sent events, one statistics snapshot a second);
//! - `GET /api/stats`: [`NodeStats`] as JSON;
//! - `GET /api/history`: the last hour of charted figures ([`HistoryView`]), sampled from the
//!   statistics every [`DEFAULT_HISTORY_INTERVAL`] by a task the router starts;
//! - `GET /metrics`: the same figures in the Prometheus text format.
//!
//! Loopback by default; bound elsewhere, a service node requires a bearer token for its API.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use futures::Stream;

use crate::net::history::{DEFAULT_HISTORY_INTERVAL, History, HistoryView};
use crate::net::{NodeStats, StatsReader, now_ms};

const DASHBOARD: &str = include_str!("../assets/dashboard.html");

/// What the handlers share: the live statistics and their sampled history.
#[derive(Clone)]
struct AppState {
    stats: StatsReader,
    history: Arc<Mutex<History>>,
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
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn(sample(stats.clone(), Arc::downgrade(&history), interval));
        }
        Err(_) => tracing::warn!("no tokio runtime: the dashboard's history is not sampled"),
    }
    Router::new()
        .route("/", get(dashboard))
        .route("/api/stats", get(get_stats))
        .route("/api/history", get(get_history))
        .route("/api/events", get(events))
        .route("/metrics", get(metrics))
        .with_state(AppState { stats, history })
}

/// Record a snapshot every `interval`, the first at once, while the router lives.
async fn sample(stats: StatsReader, history: Weak<Mutex<History>>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
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

/// The page with the current statistics and the history in it, so that it is complete
/// (charts included) on first paint.
async fn dashboard(State(state): State<AppState>) -> Html<String> {
    let stats = inline_json(&state.stats.snapshot());
    let history = inline_json(&state.history());
    Html(
        DASHBOARD
            .replacen("/*INITIAL_STATS*/null", &stats, 1)
            .replacen("/*INITIAL_HISTORY*/null", &history, 1),
    )
}

async fn get_stats(State(state): State<AppState>) -> Json<NodeStats> {
    Json(state.stats.snapshot())
}

async fn get_history(State(state): State<AppState>) -> Json<HistoryView> {
    Json(state.history())
}

async fn events(
    State(AppState { stats, .. }): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = futures::stream::unfold(stats, |stats| async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let data = serde_json::to_string(&stats.snapshot()).unwrap_or_else(|_| "{}".into());
        Some((Ok(Event::default().data(data)), stats))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
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
