//! Operational endpoints: liveness, readiness, counters and Prometheus metrics.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};

use super::{ApiError, Services};

/// `GET /healthz`: the process is up.
pub(super) async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// `GET /readyz`: the hub can accept events (broker reachable, not shutting down).
pub(super) async fn readyz(
    State(app): State<Services>,
) -> Result<Json<serde_json::Value>, ApiError> {
    app.ready().await.map_err(|e| {
        let why = crate::redact::redact_url(&e);
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", why)
    })?;
    Ok(Json(serde_json::json!({"status": "ready"})))
}

/// `GET /stats`: counters as JSON.
pub(super) async fn stats(State(app): State<Services>) -> Json<crate::stats::Snapshot> {
    Json(app.stats.snapshot(app.hub.gauges()))
}

/// `GET /metrics`: counters in the Prometheus text format.
pub(super) async fn metrics(State(app): State<Services>) -> Response {
    let mut response = app.stats.prometheus(app.hub.gauges()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
