//! Operational endpoints: liveness, readiness, counters and Prometheus metrics.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};

use super::ApiError;
use crate::hub::Hub;

/// `GET /healthz`: the process is up.
pub(super) async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// `GET /readyz`: the hub can accept events (broker reachable, not shutting down).
pub(super) async fn readyz(State(hub): State<Hub>) -> Result<Json<serde_json::Value>, ApiError> {
    hub.ready().await.map_err(|e| {
        let why = crate::config::redact_url(&e.to_string());
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", why)
    })?;
    Ok(Json(serde_json::json!({"status": "ready"})))
}

/// `GET /stats`: counters as JSON.
pub(super) async fn stats(State(hub): State<Hub>) -> Json<crate::stats::Snapshot> {
    Json(hub.stats())
}

/// `GET /metrics`: counters in the Prometheus text format.
pub(super) async fn metrics(State(hub): State<Hub>) -> Response {
    let mut response = hub.prometheus().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
