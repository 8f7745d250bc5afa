//! Who may read a node's statistics. On loopback, anyone on the machine (the loopback `Host`
//! check keeps web pages out). Bound elsewhere, the statistics routes (the dashboard,
//! `/api/stats`, `/api/history`, `/api/events`, `/metrics`) require the same bearer token as
//! the work API (`--http-token`), unless the operator publishes them with `--public-stats`:
//! they name the node's peers, workers, services and traffic, which is not everyone's
//! business.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The token the statistics require when served at `addr`: `None` when they are open (bound
/// to loopback, or `public`), the token otherwise. Refused when they would need a token and
/// none is set.
pub fn stats_token(
    addr: SocketAddr,
    token: Option<&str>,
    public: bool,
) -> anyhow::Result<Option<String>> {
    if addr.ip().is_loopback() || public {
        return Ok(None);
    }
    match token.filter(|t| !t.is_empty()) {
        Some(t) => Ok(Some(t.to_string())),
        None => anyhow::bail!(
            "--http {addr} is reachable from other machines: set --http-token (or DPOW_HTTP_TOKEN) so the statistics require it, or --public-stats to publish them"
        ),
    }
}

/// Require `Authorization: Bearer <token>` on every route `router` has now (not on routes
/// merged into it later): 401 without it.
pub fn behind_token(router: Router, token: String) -> Router {
    router.route_layer(axum::middleware::from_fn_with_state(
        Arc::<str>::from(token),
        require_token,
    ))
}

async fn require_token(State(token): State<Arc<str>>, request: Request, next: Next) -> Response {
    if bearer_matches(request.headers(), &token) {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "the statistics of this node require its token: Authorization: Bearer <token>",
    )
        .into_response()
}

/// Whether `headers` carry `Authorization: Bearer <token>`, compared in constant time for a
/// token of the right length.
pub fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or("");
    let (a, b) = (given.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;
    use crate::net::{NodeStats, StatsReader};

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    #[test]
    fn off_loopback_the_statistics_need_a_token_or_the_public_flag() {
        for a in ["127.0.0.1:7076", "[::1]:7076"] {
            assert_eq!(stats_token(addr(a), None, false).expect("open"), None);
        }
        let off = addr("0.0.0.0:7076");
        assert_eq!(stats_token(off, None, true).expect("public"), None);
        assert_eq!(stats_token(off, Some("t"), true).expect("public"), None);
        assert_eq!(
            stats_token(off, Some("t"), false).expect("token"),
            Some("t".to_string())
        );
        for token in [None, Some("")] {
            let e = stats_token(off, token, false).expect_err("no token");
            assert!(e.to_string().contains("--public-stats"), "{e}");
        }
    }

    async fn status(app: &Router, path: &str, auth: Option<&str>) -> StatusCode {
        let mut req = axum::http::Request::get(path);
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        app.clone()
            .oneshot(req.body(Body::empty()).expect("request"))
            .await
            .expect("infallible")
            .status()
    }

    #[tokio::test]
    async fn guarded_statistics_answer_401_without_the_token() {
        let stats = StatsReader::fixed(NodeStats::default());
        let open = crate::http::router(stats.clone());
        let guarded = behind_token(crate::http::router(stats), "s3cret".into())
            .merge(Router::new().route("/other", get(|| async { "not guarded" })));
        for path in ["/", "/api/stats", "/api/history", "/metrics"] {
            assert_eq!(status(&open, path, None).await, StatusCode::OK, "{path}");
            assert_eq!(
                status(&guarded, path, None).await,
                StatusCode::UNAUTHORIZED,
                "{path}"
            );
            for wrong in ["Bearer s3cre", "Bearer s3cret2", "s3cret", "Basic s3cret"] {
                assert_eq!(
                    status(&guarded, path, Some(wrong)).await,
                    StatusCode::UNAUTHORIZED,
                    "{path} {wrong}"
                );
            }
            assert_eq!(
                status(&guarded, path, Some("Bearer s3cret")).await,
                StatusCode::OK,
                "{path}"
            );
        }
        assert_eq!(
            status(&guarded, "/api/events", None).await,
            StatusCode::UNAUTHORIZED
        );
        // Routes merged in afterwards (the work API, the browser pages) keep their own rules.
        assert_eq!(status(&guarded, "/other", None).await, StatusCode::OK);
    }
}
