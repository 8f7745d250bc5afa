//! The node's HTTP server: statistics for people and scripts, and on a service's node the
//! work-server API ([`crate::gateway`]).
//!
//! `GET /api/stats` returns [`NodeStats`](crate::net::NodeStats) as JSON. Loopback by default;
//! bound elsewhere, a service node requires a bearer token.

use std::net::SocketAddr;

use anyhow::Context;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use crate::net::{NodeStats, StatsReader};

/// Build the router.
pub fn router(stats: StatsReader) -> Router {
    Router::new()
        .route("/api/stats", get(get_stats))
        .route("/", get(index))
        .with_state(stats)
}

async fn get_stats(State(stats): State<StatsReader>) -> Json<NodeStats> {
    Json(stats.snapshot())
}

async fn index() -> &'static str {
    "dpow node: GET /api/stats for statistics as JSON\n"
}

/// Bind `addr` and serve `app` until `shutdown` resolves. Returns the bound address at once.
pub async fn serve(
    addr: SocketAddr,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the HTTP server to {addr}"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!("http server: {e}");
        }
    });
    Ok(bound)
}
