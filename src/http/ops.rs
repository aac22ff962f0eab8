//! Operational endpoints: liveness, readiness, counters and Prometheus metrics.
//!
//! `/healthz` and `/readyz` are for load balancers and orchestrators and are always
//! open. `/stats` and `/metrics` show how busy the node is (counts only: no channel,
//! user or address); with `ops.token` they need it as a bearer token, and with
//! `ops.listen` they are served only on that address ([`super::ops_router`], served
//! by `herald::serve_ops`), not on the main listener.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{ApiError, Services, bearer};
use crate::settings::ConfigError;

/// The shortest `ops.token` accepted.
const SHORTEST_TOKEN: usize = 16;

/// `[ops]`: where `/stats` and `/metrics` are served and who may read them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OpsConfig {
    /// An address of their own for `/stats` and `/metrics` (also serving `/healthz`
    /// and `/readyz`), e.g. `127.0.0.1:9090`; they are then not served on the main
    /// listener. Unset: served on the main listener.
    pub listen: Option<String>,
    /// A static secret that `/stats` and `/metrics` require as
    /// `Authorization: Bearer <token>`. Unset: open to anyone who can reach them.
    pub token: Option<String>,
}

impl OpsConfig {
    /// Checks the section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        if let Some(token) = &self.token
            && (token.len() < SHORTEST_TOKEN || !token.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(ConfigError::new(
                "ops.token",
                format!(
                    "must be at least {SHORTEST_TOKEN} characters of visible ASCII (it is sent \
                     as a bearer token)"
                ),
            ));
        }
        Ok(())
    }

    /// The address of `ops.listen`, if set.
    pub fn listen_addr(&self) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        self.listen
            .as_deref()
            .map(|addr| {
                addr.parse().map_err(|_| {
                    ConfigError::new(
                        "ops.listen",
                        format!("{addr:?} is not an address such as 127.0.0.1:9090"),
                    )
                })
            })
            .transpose()
    }
}

/// Who may read `/stats` and `/metrics`: anyone, or the holders of `ops.token`,
/// kept as its digest so that a comparison takes the same time whatever the
/// presented token's length and content.
#[derive(Debug, Clone, Default)]
pub(crate) struct OpsAccess {
    token: Option<[u8; 32]>,
}

impl OpsAccess {
    pub(crate) fn new(config: &OpsConfig) -> Self {
        Self {
            token: config.token.as_deref().map(digest),
        }
    }

    /// 401 unless the request may read the counters.
    fn check(&self, app: &Services, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(expected) = &self.token else {
            return Ok(());
        };
        let presented = bearer(headers)?.ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this needs the ops.token as `Authorization: Bearer <token>`",
            )
        })?;
        if bool::from(digest(presented).ct_eq(expected)) {
            Ok(())
        } else {
            app.stats.auth_failed();
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "the bearer token is not the ops.token",
            ))
        }
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

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
pub(super) async fn stats(
    State(app): State<Services>,
    headers: HeaderMap,
) -> Result<Json<crate::stats::Snapshot>, ApiError> {
    app.ops_access.check(&app, &headers)?;
    Ok(Json(app.stats.snapshot(app.hub.gauges())))
}

/// `GET /metrics`: counters in the Prometheus text format.
pub(super) async fn metrics(
    State(app): State<Services>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.ops_access.check(&app, &headers)?;
    let mut response = app.stats.prometheus(app.hub.gauges()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_is_checked() {
        let ok = OpsConfig {
            listen: Some("127.0.0.1:9090".into()),
            token: Some("0123456789abcdef".into()),
        };
        assert!(ok.validate().is_ok());
        assert!(OpsConfig::default().validate().is_ok());
        for (config, key) in [
            (
                OpsConfig {
                    listen: Some("localhost".into()),
                    ..OpsConfig::default()
                },
                "ops.listen",
            ),
            (
                OpsConfig {
                    token: Some("short".into()),
                    ..OpsConfig::default()
                },
                "ops.token",
            ),
            (
                OpsConfig {
                    token: Some("has a space in it, long enough".into()),
                    ..OpsConfig::default()
                },
                "ops.token",
            ),
        ] {
            assert_eq!(config.validate().unwrap_err().key, key);
        }
    }
}
