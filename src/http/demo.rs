//! The demo app served at `/`, and the development-only token endpoint it uses.
//!
//! The app is built from `clients/js/demo` with the browser client (`npm run
//! build:demo` there) into `assets/demo/`, whose files are embedded here, so the
//! binary serves it with no build step or file on disk.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use serde::{Deserialize, Serialize};

use super::publish::read_body;
use super::{ApiError, Services, require_json};
use crate::auth::Claims;
use crate::core::ChannelPattern;

const INDEX: &str = include_str!("../../assets/demo/index.html");
const SCRIPT: &str = include_str!("../../assets/demo/demo.js");
const STYLE: &str = include_str!("../../assets/demo/demo.css");

/// How long a demo token lives.
const DEMO_TOKEN_TTL: Duration = Duration::from_secs(3600);

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `GET /`.
pub(super) async fn index() -> Response {
    asset(INDEX, "text/html; charset=utf-8")
}

/// `GET /demo.js`.
pub(super) async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

/// `GET /demo.css`.
pub(super) async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    user: String,
}

/// `POST /demo/token` with `{"user": "alice"}`: a token for the demo app. It may
/// subscribe to and publish on `demo:*` (the task board, the chat with presence and
/// typing) and publish to its own user channel, which lets the page raise its own
/// notifications and drive its own tasks. Only mounted when `demo.tokens` is on.
///
/// It takes no credential (it hands one to anyone who asks, which is why it is for
/// development only) and sets no cookie, so a request from another site gains
/// nothing it could not get by asking itself; its body must still be sent as JSON,
/// like every JSON body the hub takes.
pub(super) async fn token(
    State(app): State<Services>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_json(&headers)?;
    let body = read_body(body, 4096).await?;
    let request: TokenRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("expected {{\"user\": \"name\"}}: {e}"),
        )
    })?;
    let user = request.user.trim();
    let valid = !user.is_empty()
        && user.len() <= 64
        && user
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid {
        return Err(ApiError::bad_request(
            "invalid_user",
            "user must be 1 to 64 letters, digits, '-', '_' or '.'",
        ));
    }
    let mut claims = Claims::new(Some(user.to_owned()), DEMO_TOKEN_TTL);
    let pattern = |p: &str| {
        ChannelPattern::parse(p).map_err(|e| ApiError::bad_request("invalid_user", e.to_string()))
    };
    claims.herald.subscribe = vec![pattern("demo:*")?];
    claims.herald.publish = vec![pattern("demo:*")?, pattern(&format!("user:{user}"))?];
    let token = app.auth.mint(&claims).map_err(|e| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "demo_tokens_unavailable",
            e.to_string(),
        )
    })?;
    Ok(Json(serde_json::json!({
        "token": token,
        "user": user,
        "subscribe": claims.herald.subscribe,
        "publish": claims.herald.publish,
    })))
}

/// The demo app.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DemoConfig {
    /// Serve the demo app at `/`, and give the `demo` namespace presence and
    /// live-only client events unless `[namespaces.demo]` says otherwise.
    pub enabled: bool,
    /// Let the demo app mint itself tokens (`POST /demo/token`). Never on a hub
    /// reachable by untrusted users: anyone could publish to `demo:*` and user
    /// channels. On by itself only with a generated development secret.
    pub tokens: Option<bool>,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            tokens: None,
        }
    }
}
