//! The HTTP face of the hub: the SSE stream, the WebSocket, long-polling, the
//! publish API, channel history, the operational endpoints and the demo app, as one
//! axum [`Router`].
//!
//! Every error is a 4xx or 5xx with a JSON body `{"error":{"code","message"}}`
//! ([`ApiError`]), with `channel` when it concerns one channel. Credentials come from
//! the `Authorization: Bearer` header, a `token` query parameter (which the hub never
//! logs) or the auth cookie; the cookie only from the pages allowed to use it
//! ([`origin`]), and never to publish.

mod channels;
pub mod demo;
pub(crate) mod fuzzing;
mod notifications;
pub mod ops;
mod origin;
mod poll;
pub(crate) mod proxies;
mod publish;
mod query;
pub mod sse;
mod stream;
mod tasks;
pub mod ws;
mod ws_close;
mod ws_handshake;

use std::net::SocketAddr;

use axum::Router;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

use std::sync::Arc;
use std::time::Duration;

use crate::auth::{AuthError, Authenticator, Identity};
use crate::health::Components;
use crate::hub::Hub;
use crate::inbox::Inbox;
use crate::limits::{Limits, PublishLimiter, PublishRates};
use crate::session::Sessions;
use crate::settings::ConfigError;
use crate::stats::Stats;
use demo::DemoConfig;
use origin::CookieAuth;
use serde::{Deserialize, Serialize};
use sse::SseConfig;
use ws::WsConfig;

use ops::OpsAccess;
pub use ops::OpsConfig;
pub use proxies::ForwardedHeader;
pub(crate) use publish::BodyTimeout;

/// Facts about the TCP connection a request came on, put in the request's
/// extensions by the server (`herald::serve`). Absent when the router is served by
/// other means (then per-address limits do not apply).
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The client's address: the TCP peer's, or, when that is a trusted proxy
    /// (`http.trusted_proxies`), the address the proxy forwarded for this request
    /// (with port 0 when it named none). Per-address limits and logs use it.
    pub peer: SocketAddr,
    /// The TCP peer itself: the same as `peer` unless a trusted proxy forwarded the
    /// request.
    pub tcp_peer: SocketAddr,
    /// Cancelling it closes the TCP connection at once, even when the peer has
    /// stopped reading.
    pub close: CancellationToken,
}

/// What the HTTP handlers use of a node: its hub, sessions and inbox, the
/// credential checker, the counters, the readiness of its parts and the
/// configuration. Cheap to clone (each part is).
#[derive(Debug, Clone)]
pub struct Services {
    pub(crate) hub: Hub,
    pub(crate) sessions: Sessions,
    pub(crate) inbox: Inbox,
    pub(crate) auth: Arc<Authenticator>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) components: Components,
    pub(crate) settings: Arc<HttpSettings>,
    /// The auth cookie and the pages that may use it.
    pub(crate) cookie: Arc<CookieAuth>,
    /// The rate limits of publishers over HTTP, and their buckets.
    pub(crate) publish_limiter: Arc<PublishLimiter>,
    /// Who may read `/stats` and `/metrics`.
    pub(crate) ops_access: OpsAccess,
}

/// What the HTTP face applies: its own sections, and the limits and cookie name of
/// others.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSettings {
    /// `[http]`.
    pub http: HttpConfig,
    /// `[sse]`.
    pub sse: SseConfig,
    /// `[ws]`.
    pub ws: WsConfig,
    /// `[demo]`.
    pub demo: DemoConfig,
    /// `[limits]`.
    pub limits: Limits,
    /// The cookie a browser may carry its token in (`auth.cookie`).
    pub cookie: String,
    /// The rate limits of `POST /publish`.
    pub publish_rates: PublishRates,
    /// `[ops]`.
    pub ops: OpsConfig,
}

impl Services {
    /// The HTTP face of a node made of these parts.
    pub fn new(
        hub: Hub,
        sessions: Sessions,
        inbox: Inbox,
        auth: Arc<Authenticator>,
        stats: Arc<Stats>,
        components: Components,
        settings: Arc<HttpSettings>,
    ) -> Self {
        let cookie = Arc::new(CookieAuth::new(
            &settings.cookie,
            &settings.http.cors_origins,
        ));
        let publish_limiter = Arc::new(PublishLimiter::new(&settings.publish_rates));
        let ops_access = OpsAccess::new(&settings.ops);
        Self {
            hub,
            sessions,
            inbox,
            auth,
            stats,
            components,
            settings,
            cookie,
            publish_limiter,
            ops_access,
        }
    }

    /// Whether the node can accept events now: not shutting down, the broker
    /// reachable, and every part ready.
    pub async fn ready(&self) -> Result<(), String> {
        self.hub.check().await.map_err(|e| e.to_string())?;
        self.components.check()
    }
}

/// The HTTP routes of a node, ready to serve or to nest into an application's
/// router. With `ops.listen` set, `/stats` and `/metrics` are left out: they are
/// served by [`ops_router`] alone.
pub fn router(app: Services) -> Router {
    let mut router = Router::new()
        .route("/events", get(sse::events))
        .route("/ws", get(ws::ws))
        .route("/poll", get(poll::poll))
        .route("/channels/{name}/presence", get(channels::presence))
        .route("/publish", post(publish::publish))
        .route("/channels/{name}/history", get(channels::history))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz));
    if app.settings.ops.listen.is_none() {
        router = router
            .route("/stats", get(ops::stats))
            .route("/metrics", get(ops::metrics));
    }
    for (path, _) in API_ROUTES {
        router = router.route(path, api_route(path));
    }
    let config = app.settings.clone();
    if config.demo.enabled {
        router = router
            .route("/", get(demo::index))
            .route("/demo.js", get(demo::script))
            .route("/demo.css", get(demo::style));
    }
    if config.demo.tokens == Some(true) {
        router = router.route("/demo/token", post(demo::token));
    }
    let router = router
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .with_state(app)
        .layer(JsonErrorsLayer);
    match cors(&config.http.cors_origins) {
        Some(layer) => router.layer(layer),
        None => router,
    }
}

/// The operational routes of a node alone, `/healthz`, `/readyz`, `/stats` and
/// `/metrics`, for an address of their own (`ops.listen`). `/stats` and `/metrics`
/// need `ops.token` when it is set, here as on the main router.
pub fn ops_router(app: Services) -> Router {
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/stats", get(ops::stats))
        .route("/metrics", get(ops::metrics))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .with_state(app)
        .layer(JsonErrorsLayer)
}

/// The headers the router's CORS policy for `origins` puts on a response to a
/// request without `Origin` (its `Vary` list; nothing when no origin is
/// configured). Streams served without the router (only for such requests) send
/// them too, so that both paths answer alike.
pub(crate) fn cors_headers_without_origin(origins: &[String]) -> HeaderMap {
    use futures_util::FutureExt;
    use tower::{Layer, Service};
    let Some(layer) = cors(origins) else {
        return HeaderMap::new();
    };
    let mut service = layer.layer(tower::service_fn(|_: axum::http::Request<()>| {
        std::future::ready(Ok::<_, std::convert::Infallible>(Response::new(())))
    }));
    let request = axum::http::Request::get("/events")
        .body(())
        .unwrap_or_default();
    // The inner service answers at once, and so does the layer around it.
    match service.call(request).now_or_never() {
        Some(Ok(response)) => response.headers().clone(),
        _ => HeaderMap::new(),
    }
}

/// The CORS policy for the configured origins: exact origins may send cookies and
/// the Authorization header; `*` allows any origin, without cookies.
fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::Method;
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let layer = CorsLayer::new()
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::HeaderName::from_static("last-event-id"),
        ])
        // A cross-origin page must read `Retry-After` to honour the hub's delay.
        .expose_headers([header::RETRY_AFTER])
        .max_age(std::time::Duration::from_secs(600));
    if origins.iter().any(|o| o == "*") {
        return Some(layer.allow_origin(AllowOrigin::any()));
    }
    let list: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok())
        .collect();
    Some(
        layer
            .allow_origin(AllowOrigin::list(list))
            .allow_credentials(true),
    )
}

/// The OpenAPI document of the `/api` routes.
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

/// Every route served under `/api`, with its methods: the OpenAPI document must
/// describe each (a test checks it).
pub const API_ROUTES: &[(&str, &[&str])] = &[
    ("/api/notifications", &["get", "post", "patch", "delete"]),
    ("/api/notifications/unread_count", &["get"]),
    ("/api/notifications/broadcast", &["post"]),
    ("/api/tasks", &["get"]),
    ("/api/tasks/{id}", &["get", "put"]),
    ("/api/openapi.json", &["get"]),
];

/// The handlers of an [`API_ROUTES`] path: the router is built from that list, so
/// nothing is served under `/api` that the list (and so the document) leaves out.
fn api_route(path: &str) -> axum::routing::MethodRouter<Services> {
    match path {
        "/api/notifications" => get(notifications::list)
            .post(notifications::create)
            .patch(notifications::mark_read)
            .delete(notifications::delete),
        "/api/notifications/unread_count" => get(notifications::unread_count),
        "/api/notifications/broadcast" => post(notifications::broadcast),
        "/api/tasks" => get(tasks::list),
        "/api/tasks/{id}" => get(tasks::get).put(tasks::put),
        _ => get(openapi),
    }
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

/// A route that exists, asked with a method it does not serve; the router adds the
/// `Allow` header listing those it does.
async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed here; the Allow header lists what is"),
    )
}

/// The value of path segment `name`, or a 400 naming it when it cannot be read
/// (it is not UTF-8 once percent-decoded).
fn path_segment(
    segment: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
    name: &'static str,
) -> Result<String, ApiError> {
    use axum::extract::path::ErrorKind;
    use axum::extract::rejection::PathRejection;
    segment
        .map(|axum::extract::Path(value)| value)
        .map_err(|rejection| {
            let message = match &rejection {
                PathRejection::FailedToDeserializePathParams(e)
                    if matches!(e.kind(), ErrorKind::InvalidUtf8InPathParam { .. }) =>
                {
                    format!("the path segment `{name}` is not UTF-8 once percent-decoded")
                }
                other => format!("the path segment `{name}`: {}", other.body_text()),
            };
            ApiError::new(rejection.status(), "invalid_parameter", message).for_parameter(name)
        })
}

/// [`json_errors`] around every route. A response passes through as it is unless
/// it is an error without a JSON body: only that pays for the (boxed) rewrite.
#[derive(Debug, Clone, Copy)]
struct JsonErrorsLayer;

impl<S> tower::Layer<S> for JsonErrorsLayer {
    type Service = JsonErrors<S>;

    fn layer(&self, inner: S) -> JsonErrors<S> {
        JsonErrors(inner)
    }
}

/// See [`JsonErrorsLayer`].
#[derive(Debug, Clone)]
struct JsonErrors<S>(S);

type Answered = Result<Response, std::convert::Infallible>;

/// The answer as it is, or its rewrite.
type Rewrite = futures_util::future::Either<
    std::future::Ready<Answered>,
    std::pin::Pin<Box<dyn Future<Output = Answered> + Send>>,
>;

impl<S, B> tower::Service<axum::http::Request<B>> for JsonErrors<S>
where
    S: tower::Service<
            axum::http::Request<B>,
            Response = Response,
            Error = std::convert::Infallible,
        >,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = futures_util::future::Then<S::Future, Rewrite, fn(Answered) -> Rewrite>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        use futures_util::FutureExt;
        self.0
            .call(request)
            .then(rewrite as fn(Answered) -> Rewrite)
    }
}

fn rewrite(answered: Answered) -> Rewrite {
    use futures_util::future::Either;
    let Ok(response) = answered;
    if is_plain_error(&response) {
        Either::Right(Box::pin(async move { Ok(json_errors(response).await) }))
    } else {
        Either::Left(std::future::ready(Ok(response)))
    }
}

/// Whether `response` is an error (4xx, 5xx) whose body is not JSON.
fn is_plain_error(response: &Response) -> bool {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    !is_json && (status.is_client_error() || status.is_server_error())
}

/// Gives an error response that is not JSON (one the framework made itself, such as
/// a rejection by an extractor) the hub's JSON body, keeping its status and
/// headers, so that a client meets one shape of error whatever refused it.
async fn json_errors(response: Response) -> Response {
    if !is_plain_error(&response) {
        return response;
    }
    let status = response.status();
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let message = match std::str::from_utf8(&text).map(str::trim) {
        Ok(text) if !text.is_empty() => text.to_owned(),
        _ => status
            .canonical_reason()
            .unwrap_or("refused")
            .to_lowercase(),
    };
    let mut out = ApiError::new(status, error_code(status), message).into_response();
    for name in parts.headers.keys() {
        if name == header::CONTENT_TYPE || name == header::CONTENT_LENGTH {
            continue;
        }
        if !out.headers().contains_key(name) {
            for value in parts.headers.get_all(name) {
                out.headers_mut().append(name.clone(), value.clone());
            }
        }
    }
    out
}

/// The code of an error the hub did not name itself, after its status.
fn error_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        411 => "length_required",
        413 => "payload_too_large",
        414 => "uri_too_long",
        415 => "unsupported_media_type",
        422 => "unprocessable",
        426 => "upgrade_required",
        431 => "headers_too_large",
        500..=599 => "internal_error",
        _ => "refused",
    }
}

/// An API error: its status, a stable code, and a message for people.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
    /// What few errors carry, apart, so that an error stays small to return.
    detail: Option<Box<Detail>>,
}

/// The rarer parts of an [`ApiError`].
#[derive(Debug, Clone, Default)]
struct Detail {
    channel: Option<String>,
    parameter: Option<String>,
    limit: Option<String>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    /// An error with `status`, a machine-readable `code` and a `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            detail: None,
        }
    }

    /// A 400 Bad Request.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// Adds a `Retry-After` header, in seconds.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// Names the channel the error is about (`error.channel` in the body), so that
    /// a client subscribing to several can tell which one was refused.
    pub fn for_channel(mut self, channel: impl Into<String>) -> Self {
        self.detail().channel = Some(channel.into());
        self
    }

    /// Names the query parameter or path segment the error is about
    /// (`error.parameter` in the body).
    pub fn for_parameter(mut self, name: impl Into<String>) -> Self {
        self.detail().parameter = Some(name.into());
        self
    }

    /// Names the configuration key of the limit that refused the request
    /// (`error.limit` in the body), such as `limits.publish_rate`.
    pub fn for_limit(mut self, key: impl Into<String>) -> Self {
        self.detail().limit = Some(key.into());
        self
    }

    /// Adds a response header, such as what a 426 asks the client to use instead.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.detail().headers.push((name, value));
        self
    }

    fn detail(&mut self) -> &mut Detail {
        self.detail.get_or_insert_with(Box::default)
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message for people.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        let detail = self.detail.map(|d| *d).unwrap_or_default();
        if let Some(channel) = detail.channel {
            body["error"]["channel"] = channel.into();
        }
        if let Some(parameter) = detail.parameter {
            body["error"]["parameter"] = parameter.into();
        }
        if let Some(limit) = detail.limit {
            body["error"]["limit"] = limit.into();
        }
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        for (name, value) in detail.headers {
            response.headers_mut().insert(name, value);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"herald\""),
            );
        }
        response
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let code = match e {
            AuthError::Expired => "token_expired",
            _ => "invalid_token",
        };
        Self::new(StatusCode::UNAUTHORIZED, code, e.to_string())
    }
}

/// The token of the `Authorization: Bearer` header, if the request has one; 401
/// when the header is something else.
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().unwrap_or_default();
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(Some)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "the Authorization header must be `Bearer <token>`",
            )
        })
}

/// The credential a request carries: bearer header, then `token` query parameter,
/// then the auth cookie. The cookie is taken only when the page that made the
/// request may use it ([`CookieAuth::check`]): a 403 otherwise, since the browser
/// would send it from any page.
fn credential<'a>(
    headers: &'a HeaderMap,
    query_token: Option<&'a str>,
    cookie: &CookieAuth,
) -> Result<Option<&'a str>, ApiError> {
    if let Some(token) = bearer(headers)? {
        return Ok(Some(token));
    }
    if let Some(token) = query_token.filter(|t| !t.is_empty()) {
        return Ok(Some(token));
    }
    let Some(token) = cookie.value(headers) else {
        return Ok(None);
    };
    cookie.check(headers)?;
    Ok(Some(token))
}

/// Who the request is from: anonymous without a credential, 401 with a bad one,
/// 403 with the cookie from a page that may not use it.
fn identify(
    app: &Services,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<Identity, ApiError> {
    let token = credential(headers, query_token, &app.cookie)?;
    Ok(app.sessions.identify(token)?)
}

/// Who a request that publishes or creates for others is from: the credential of
/// the `Authorization` header only (a publisher JWT or an API key). The cookie
/// (which a browser sends from any page) and `?token=` (which ends up in logs and
/// browser history) are not read; without the header the request is anonymous.
fn identify_publisher(app: &Services, headers: &HeaderMap) -> Result<Identity, ApiError> {
    Ok(app.sessions.identify(bearer(headers)?)?)
}

/// 415 unless the body says it is JSON (`application/json` or
/// `application/*+json`): a page on another origin can send `text/plain` or a form
/// without the browser asking the hub first, and so without CORS having a say,
/// while `application/json` needs that permission.
fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let essence = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    let json = essence.is_some_and(|essence| {
        essence == "application/json"
            || essence
                .strip_prefix("application/")
                .is_some_and(|subtype| subtype.ends_with("+json"))
    });
    if json {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be JSON, sent with `Content-Type: application/json`",
        ))
    }
}

/// The request URI with the `token` query parameter's value hidden, for logs.
pub fn redact_token(uri: &axum::http::Uri) -> String {
    let Some(query) = uri.query() else {
        return uri.path().to_owned();
    };
    let redacted: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some(("token", _)) => "token=REDACTED".to_owned(),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{}?{}", uri.path(), redacted.join("&"))
}

/// HTTP settings shared by every endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Origins of web apps served elsewhere that may use the hub from the browser
    /// (`https://app.example.com`), with cookies and the Authorization header; `*`
    /// allows any origin but without cookies. Empty: same origin only.
    pub cors_origins: Vec<String>,
    /// How long a client has to send a request head, counted from when the
    /// connection opens or its previous response ends (so also how long a
    /// keep-alive connection may sit idle).
    #[serde(with = "humantime_serde")]
    pub head_timeout: Duration,
    /// How long a client has to send a request body, counted from the end of its
    /// head.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// Reverse proxies, as networks (`10.0.0.0/8`, `fd00::/8`) or single addresses,
    /// whose forwarded client address is believed: a request whose TCP peer is in
    /// one counts as coming from the address the proxy names in
    /// [`HttpConfig::forwarded_header`] (see [`proxies`]). Empty: forwarded
    /// headers are ignored. In the environment, comma-separated.
    #[serde(deserialize_with = "crate::settings::list_or_commas")]
    pub trusted_proxies: Vec<String>,
    /// The header the trusted proxies set the client's address in:
    /// `x-forwarded-for` or `forwarded` (RFC 7239). The other is not read.
    pub forwarded_header: ForwardedHeader,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            cors_origins: Vec::new(),
            head_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            trusted_proxies: Vec::new(),
            forwarded_header: ForwardedHeader::default(),
        }
    }
}

impl HttpConfig {
    /// Checks the section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("http.head_timeout", self.head_timeout),
            ("http.body_timeout", self.body_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::new(key, "must be longer than 0s"));
            }
        }
        for (i, proxy) in self.trusted_proxies.iter().enumerate() {
            proxies::IpNet::parse(proxy)
                .map_err(|e| ConfigError::new(format!("http.trusted_proxies[{i}]"), e))?;
        }
        for (i, origin) in self.cors_origins.iter().enumerate() {
            let valid = origin == "*"
                || ((origin.starts_with("http://") || origin.starts_with("https://"))
                    && !origin
                        .trim_end_matches('/')
                        .contains(|c: char| c.is_whitespace())
                    && origin
                        .split("://")
                        .nth(1)
                        .is_some_and(|h| !h.is_empty() && !h.contains('/')));
            if !valid {
                return Err(ConfigError::new(
                    format!("http.cors_origins[{i}]"),
                    format!("{origin:?} is not an origin such as https://app.example.com (or *)"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_header_query_or_cookie() {
        let c = CookieAuth::new("c", &[]);
        let mut h = HeaderMap::new();
        assert_eq!(credential(&h, None, &c).unwrap(), None);
        assert_eq!(credential(&h, Some("q"), &c).unwrap(), Some("q"));
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; c=tok"));
        assert_eq!(credential(&h, None, &c).unwrap(), Some("tok"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer hdr"),
        );
        assert_eq!(credential(&h, Some("q"), &c).unwrap(), Some("hdr"));
        assert_eq!(bearer(&h).unwrap(), Some("hdr"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic x"));
        assert!(credential(&h, None, &c).is_err());
    }

    #[test]
    fn the_cookie_of_another_origin_is_refused_but_tokens_are_not() {
        let c = CookieAuth::new("c", &[]);
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("c=tok"));
        h.insert(header::HOST, HeaderValue::from_static("hub.example"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        let refused = credential(&h, None, &c).unwrap_err();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert_eq!(credential(&h, Some("q"), &c).unwrap(), Some("q"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer hdr"),
        );
        assert_eq!(credential(&h, None, &c).unwrap(), Some("hdr"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://hub.example"),
        );
        h.remove(header::AUTHORIZATION);
        assert_eq!(credential(&h, None, &c).unwrap(), Some("tok"));
    }

    #[test]
    fn bodies_must_say_they_are_json() {
        let with = |t: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(t));
            require_json(&h).is_ok()
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(with("application/merge-patch+json"));
        assert!(!with("text/plain"));
        assert!(!with("application/x-www-form-urlencoded"));
        assert!(!with("multipart/form-data; boundary=x"));
        assert!(require_json(&HeaderMap::new()).is_err());
    }

    #[test]
    fn the_openapi_document_describes_every_api_route() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for (path, methods) in API_ROUTES {
            let item = paths
                .get(*path)
                .unwrap_or_else(|| panic!("{path} is not documented"));
            for method in *methods {
                assert!(
                    item.get(*method).is_some(),
                    "{method} {path} is not documented"
                );
            }
        }
        for (path, item) in paths {
            let served = API_ROUTES
                .iter()
                .find(|(p, _)| p == path)
                .unwrap_or_else(|| panic!("{path} is documented but not served"));
            for method in item
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| *k != "parameters")
            {
                assert!(
                    served.1.contains(&method.as_str()),
                    "{method} {path} is not served"
                );
            }
        }
    }

    #[tokio::test]
    async fn errors_made_by_the_framework_get_the_json_body() {
        let mut plain = (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Expected request with `Content-Type: application/json`",
        )
            .into_response();
        plain
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        let response = json_errors(plain).await;
        assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(response.headers()[header::ALLOW], "POST");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "unsupported_media_type");
        assert_eq!(
            body["error"]["message"],
            "Expected request with `Content-Type: application/json`"
        );

        let empty = json_errors(StatusCode::METHOD_NOT_ALLOWED.into_response()).await;
        let body = axum::body::to_bytes(empty.into_body(), 4096).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "method_not_allowed");
        assert_eq!(body["error"]["message"], "method not allowed");

        // Answers that are not errors, and JSON errors, pass as they are.
        let ok = json_errors("fine".into_response()).await;
        assert_eq!(
            ok.headers()[header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
        let mine = ApiError::bad_request("invalid_json", "x").into_response();
        let kept = json_errors(mine).await;
        assert_eq!(kept.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn tokens_are_redacted_from_logged_uris() {
        let uri: axum::http::Uri = "/events?channel=a&token=secret.jwt&x=1".parse().unwrap();
        assert_eq!(redact_token(&uri), "/events?channel=a&token=REDACTED&x=1");
    }
}
