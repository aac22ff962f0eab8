//! Configuration: a TOML file, `HERALD_*` environment overrides, then command-line
//! flags, checked as a whole before the hub starts.
//!
//! Every error names the key it is about (`limits.max_connections`, `auth.jwks`), so
//! an operator knows what to fix; the binary exits with status 64 on one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::core::{ChannelPattern, HistoryPolicy, NamespacePolicy, Policies, SubscribeRule};

mod brokers;
mod redact;
mod store;
pub use brokers::{
    BrokerKind, NatsConfig, NatsStorage, RedisConfig, RedisMessageFormat, RedisRoute,
    RedisSourceConfig,
};
pub(crate) use redact::percent_decode;
pub use redact::{
    Hidden, REDACTED, Redacted, SECRET_KEYS, SECRET_PLACEHOLDER, Secrets, redact_url,
};
pub use store::StoreConfig;

/// A configuration problem, naming the key it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration key `{key}`: {message}")]
pub struct ConfigError {
    /// The dotted key, e.g. `limits.max_connections`.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    /// An error about `key`. URL credentials in the message are hidden
    /// ([`redact_url`]): messages quote values, which may be URLs with passwords.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: redact_url(&message.into()),
        }
    }
}

/// The whole configuration of a hub. Its `Debug` form is [`Config::redacted`]'s, as
/// JSON: a configuration printed by mistake (a log line, a failed assertion) shows
/// no secret.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The address to listen on (`HERALD_LISTEN`).
    pub listen: String,
    /// The broker: `memory`, `redis://HOST:PORT[/DB]` or `nats://HOST:PORT`
    /// (`HERALD_BROKER`).
    pub broker: String,
    /// Settings of the Redis broker.
    pub redis: RedisConfig,
    /// Settings of the NATS broker.
    pub nats: NatsConfig,
    /// Events applications publish to Redis channels themselves; off unless the
    /// section is present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_source: Option<RedisSourceConfig>,
    /// Credentials.
    pub auth: AuthConfig,
    /// HTTP settings shared by every endpoint.
    pub http: HttpConfig,
    /// Server-Sent Events.
    pub sse: SseConfig,
    /// The WebSocket transport.
    pub ws: WsConfig,
    /// Signed HTTP callbacks to the application.
    pub webhooks: WebhooksConfig,
    /// Presence shared between nodes.
    pub presence: PresenceConfig,
    /// Limits that protect the hub.
    pub limits: Limits,
    /// The policy of every channel outside a configured namespace.
    pub channels: ChannelDefaults,
    /// Policies by namespace (the part of a channel name before the first `:`).
    pub namespaces: HashMap<String, NamespaceConfig>,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
    /// The demo app.
    pub demo: DemoConfig,
    /// The PostgreSQL event source; off unless the section is present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgres: Option<crate::source::postgres::PostgresConfig>,
    /// Where notifications and tasks are stored (SQLite unless set otherwise).
    pub store: StoreConfig,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.redacted_value() {
            Some(value) => write!(f, "Config {value}"),
            None => f.write_str("Config { .. }"),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            broker: "memory".into(),
            redis: RedisConfig::default(),
            nats: NatsConfig::default(),
            redis_source: None,
            auth: AuthConfig::default(),
            http: HttpConfig::default(),
            sse: SseConfig::default(),
            ws: WsConfig::default(),
            webhooks: WebhooksConfig::default(),
            presence: PresenceConfig::default(),
            limits: Limits::default(),
            channels: ChannelDefaults::default(),
            namespaces: HashMap::new(),
            shutdown: ShutdownConfig::default(),
            demo: DemoConfig::default(),
            postgres: None,
            store: StoreConfig::default(),
        }
    }
}

/// Credentials the hub accepts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The HS256 secret (`HERALD_JWT_SECRET`).
    pub jwt_secret: Option<String>,
    /// A PEM file with an RSA or EC public key, for RS256 or ES256 tokens.
    pub jwt_public_key: Option<PathBuf>,
    /// A JWKS file with RS256 or ES256 public keys, chosen by the token's `kid`.
    pub jwks: Option<PathBuf>,
    /// The `iss` a token must carry, if set: a token without one is refused.
    pub issuer: Option<String>,
    /// The `aud` a token must carry, if set: a token without one is refused.
    pub audience: Option<String>,
    /// Tolerated clock skew when checking `exp` and `nbf` (5 s by default, at most
    /// 1 h): a token is accepted this long after its `exp` and before its `nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// The cookie a browser may carry its token in.
    pub cookie: String,
    /// Static keys for publishing servers.
    pub api_keys: Vec<ApiKeyConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            jwt_public_key: None,
            jwks: None,
            issuer: None,
            audience: None,
            leeway: Duration::from_secs(5),
            cookie: "herald_token".into(),
            api_keys: Vec::new(),
        }
    }
}

/// A static API key for a publishing server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// A name for logs.
    pub name: String,
    /// The key itself.
    #[serde(default)]
    pub key: Option<String>,
    /// The SHA-256 of the key in hexadecimal, to keep the key out of the file.
    #[serde(default)]
    pub key_sha256: Option<String>,
    /// Channels the key may publish to.
    #[serde(default)]
    pub publish: Vec<ChannelPattern>,
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
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            cors_origins: Vec::new(),
            head_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
        }
    }
}

/// Server-Sent Events settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SseConfig {
    /// How often an idle stream gets a heartbeat comment.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// The reconnection delay suggested to clients (`retry:`).
    #[serde(with = "humantime_serde")]
    pub retry: Duration,
}

impl Default for SseConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(30),
            retry: Duration::from_secs(3),
        }
    }
}

/// The WebSocket transport.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WsConfig {
    /// How often the hub pings each client.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// A client that sends nothing (not even a pong) for this long is dead and closed.
    #[serde(with = "humantime_serde")]
    pub ping_timeout: Duration,
    /// The largest frame a client may send, in bytes.
    pub max_frame_bytes: usize,
    /// Events a client may publish per second, on average.
    pub client_publish_rate: f64,
    /// Events a client may publish in a burst above the rate.
    pub client_publish_burst: u32,
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(60),
            max_frame_bytes: 64 * 1024,
            client_publish_rate: 10.0,
            client_publish_burst: 20,
        }
    }
}

/// Presence shared between nodes (Redis or NATS broker): each node announces
/// itself every `heartbeat`; a node not heard from for `node_timeout` is taken
/// for dead and its users leave on every node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceConfig {
    /// How often each node says it is alive.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// A node silent for this long is dead: its users leave everywhere.
    #[serde(with = "humantime_serde")]
    pub node_timeout: Duration,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(5),
            node_timeout: Duration::from_secs(15),
        }
    }
}

/// Signed HTTP callbacks to the application: joins, leaves, client events.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Where to POST; no webhooks when unset.
    pub url: Option<String>,
    /// The HMAC-SHA256 key that signs each request (`X-Herald-Signature`).
    pub secret: Option<String>,
    /// Which notifications to send: `join`, `leave`, `client_event`.
    pub events: Vec<String>,
    /// How long one request may take.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Further attempts after a failed one.
    pub retries: u32,
    /// Joins and leaves are gathered for this long and sent as one batch.
    #[serde(with = "humantime_serde")]
    pub batch_window: Duration,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            url: None,
            secret: None,
            events: vec!["join".into(), "leave".into(), "client_event".into()],
            timeout: Duration::from_secs(5),
            retries: 2,
            batch_window: Duration::from_millis(200),
        }
    }
}

/// Limits that protect the hub.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Open streaming connections at most; past it, 503 with `Retry-After`.
    pub max_connections: usize,
    /// Open streaming connections per client address at most (0: no limit); past it, 429.
    pub max_connections_per_ip: usize,
    /// Channels one connection may subscribe to.
    pub max_channels_per_connection: usize,
    /// The largest event data, in bytes; larger is answered 413.
    pub max_event_bytes: usize,
    /// The largest publish request body, in bytes; larger is answered 413.
    pub max_body_bytes: usize,
    /// Events in one publish batch at most; more is answered 413.
    pub max_batch: usize,
    /// Channels one event may name at most; more is answered 400 before any of
    /// them is looked at.
    pub max_channels_per_event: usize,
    /// The memory all channel histories of a node hold together (memory and NATS
    /// brokers), in bytes; past it the oldest events are evicted, whatever their
    /// channel.
    pub history_memory: usize,
    /// Events queued per connection before it counts as a slow consumer and is closed.
    pub queue_size: usize,
}

impl Limits {
    /// The bounds an event must stay within.
    pub fn events(&self) -> crate::core::EventLimits {
        crate::core::EventLimits {
            max_data_bytes: self.max_event_bytes,
            max_channels: self.max_channels_per_event,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_connections_per_ip: 0,
            max_channels_per_connection: 64,
            max_event_bytes: 64 * 1024,
            max_body_bytes: 1024 * 1024,
            max_batch: 1000,
            max_channels_per_event: 100,
            history_memory: crate::core::history::DEFAULT_HISTORY_MEMORY,
            queue_size: 1024,
        }
    }
}

/// The default channel policy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelDefaults {
    /// Events kept per channel (0 keeps none).
    pub history_size: usize,
    /// How long events are kept.
    #[serde(with = "humantime_serde")]
    pub history_ttl: Duration,
    /// Who may subscribe: `grant`, `authenticated` or `anyone`.
    pub subscribe: SubscribeRule,
    /// Track who is on each channel and announce joins and leaves.
    pub presence: bool,
    /// Let WebSocket clients publish (when their token grants the channel).
    pub client_publish: bool,
    /// Keep events published by clients in history.
    pub client_history: bool,
}

impl Default for ChannelDefaults {
    fn default() -> Self {
        let policy = NamespacePolicy::default();
        Self {
            history_size: policy.history.size,
            history_ttl: policy.history.ttl,
            subscribe: policy.subscribe,
            presence: policy.presence,
            client_publish: policy.client_publish,
            client_history: policy.client_history,
        }
    }
}

/// A namespace's policy; what is left out comes from `[channels]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct NamespaceConfig {
    /// Events kept per channel.
    pub history_size: Option<usize>,
    /// How long events are kept.
    #[serde(with = "humantime_serde")]
    pub history_ttl: Option<Duration>,
    /// Who may subscribe.
    pub subscribe: Option<SubscribeRule>,
    /// Track who is on each channel and announce joins and leaves.
    pub presence: Option<bool>,
    /// Let WebSocket clients publish (when their token grants the channel).
    pub client_publish: Option<bool>,
    /// Keep events published by clients in history.
    pub client_history: Option<bool>,
}

/// Graceful shutdown.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// How long open connections get to finish before the hub exits.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// The reconnection delay suggested to clients as the hub stops; each client gets
    /// a random delay up to this, so they do not all come back at once.
    #[serde(with = "humantime_serde")]
    pub reconnect_within: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(10),
            reconnect_within: Duration::from_secs(5),
        }
    }
}

/// The namespace of the demo app's channels (`demo:board`, `demo:chat`). With
/// `demo.enabled` it defaults to presence on and live-only client events.
pub const DEMO_NAMESPACE: &str = "demo";

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

/// Top-level keys an environment variable may set; other `HERALD_*` variables (used
/// by scripts and tests) are not configuration.
/// Keys whose environment value is always text, even when it looks like a number.
const STRING_KEYS: &[&str] = &[
    "listen",
    "broker",
    "redis.prefix",
    "redis.shards",
    "nats.stream",
    "nats.subject",
    "redis_source.url",
    "auth.jwt_secret",
    "auth.jwt_public_key",
    "auth.jwks",
    "auth.issuer",
    "auth.audience",
    "auth.cookie",
    "webhooks.url",
    "webhooks.secret",
    "postgres.url",
    "postgres.mode",
    "postgres.outbox.table",
    "postgres.outbox.notify",
    "store.kind",
    "store.path",
    "store.url",
];

const SECTIONS: &[&str] = &[
    "listen",
    "broker",
    "redis",
    "nats",
    "redis_source",
    "auth",
    "http",
    "sse",
    "ws",
    "webhooks",
    "presence",
    "limits",
    "channels",
    "namespaces",
    "shutdown",
    "demo",
    "postgres",
    "store",
];

impl Config {
    /// Loads defaults, then `file` (if any), then `HERALD_*` variables, and checks
    /// the result.
    ///
    /// Environment variables: `HERALD_LISTEN`, `HERALD_BROKER`, `HERALD_JWT_SECRET`,
    /// and any key as `HERALD_SECTION__KEY` (e.g. `HERALD_LIMITS__MAX_CONNECTIONS`).
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// [`Config::load`] with the environment given explicitly.
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::new(
                    "--config",
                    format!("file {} does not exist", path.display()),
                ));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        for (name, raw) in env {
            let Some(key) = name.strip_prefix("HERALD_") else {
                continue;
            };
            let key = match key.to_ascii_lowercase().as_str() {
                "jwt_secret" => "auth.jwt_secret".to_owned(),
                other => other.replace("__", "."),
            };
            let section = key.split('.').next().unwrap_or_default();
            if !SECTIONS.contains(&section) {
                continue;
            }
            let value = if STRING_KEYS.contains(&key.as_str()) {
                figment::value::Value::from(raw)
            } else {
                raw.parse()
                    .unwrap_or_else(|never: std::convert::Infallible| match never {})
            };
            figment = figment.merge(Serialized::global(&key, value));
        }
        let config: Config = figment.extract().map_err(from_figment)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        let broker = self.broker_kind()?;
        self.redis.validate()?;
        self.nats.validate()?;
        if let Some(source) = &self.redis_source {
            source.validate(&broker)?;
        }
        if self.auth.jwt_secret.as_ref().is_some_and(|s| s.len() < 16) {
            return Err(ConfigError::new(
                "auth.jwt_secret",
                "must be at least 16 characters (32 or more random characters recommended)",
            ));
        }
        for (i, origin) in self.http.cors_origins.iter().enumerate() {
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
        if self.auth.leeway > crate::auth::MAX_LEEWAY {
            return Err(ConfigError::new(
                "auth.leeway",
                "must be at most 1h: it only covers clock differences between the token issuer and the hub",
            ));
        }
        if self.auth.cookie.is_empty() {
            return Err(ConfigError::new("auth.cookie", "must not be empty"));
        }
        for (key, value) in [
            ("limits.max_connections", self.limits.max_connections),
            (
                "limits.max_channels_per_connection",
                self.limits.max_channels_per_connection,
            ),
            ("limits.max_event_bytes", self.limits.max_event_bytes),
            ("limits.max_body_bytes", self.limits.max_body_bytes),
            ("limits.max_batch", self.limits.max_batch),
            (
                "limits.max_channels_per_event",
                self.limits.max_channels_per_event,
            ),
            ("limits.history_memory", self.limits.history_memory),
            ("limits.queue_size", self.limits.queue_size),
        ] {
            if value == 0 {
                return Err(ConfigError::new(key, "must be greater than 0"));
            }
        }
        for (key, value) in [
            ("sse.heartbeat", self.sse.heartbeat),
            ("shutdown.grace", self.shutdown.grace),
            ("http.head_timeout", self.http.head_timeout),
            ("http.body_timeout", self.http.body_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::new(key, "must be longer than 0s"));
            }
        }
        if self.ws.ping_interval.is_zero() || self.ws.ping_timeout <= self.ws.ping_interval {
            return Err(ConfigError::new(
                "ws.ping_timeout",
                "must be longer than ws.ping_interval (and the interval longer than 0s)",
            ));
        }
        if self.presence.heartbeat.is_zero() {
            return Err(ConfigError::new(
                "presence.heartbeat",
                "must be longer than 0s",
            ));
        }
        if self.presence.node_timeout < self.presence.heartbeat * 2 {
            return Err(ConfigError::new(
                "presence.node_timeout",
                "must be at least twice presence.heartbeat",
            ));
        }
        if self.ws.client_publish_rate.is_nan() || self.ws.client_publish_rate <= 0.0 {
            return Err(ConfigError::new(
                "ws.client_publish_rate",
                "must be greater than 0",
            ));
        }
        if self.ws.max_frame_bytes < 256 {
            return Err(ConfigError::new(
                "ws.max_frame_bytes",
                "must be at least 256",
            ));
        }
        if let Some(url) = &self.webhooks.url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::new(
                    "webhooks.url",
                    format!("{url:?} is not an http:// or https:// URL"),
                ));
            }
            if self.webhooks.secret.as_ref().is_none_or(|s| s.len() < 16) {
                return Err(ConfigError::new(
                    "webhooks.secret",
                    "is needed with webhooks.url, at least 16 characters: requests are signed with it",
                ));
            }
        }
        for (i, event) in self.webhooks.events.iter().enumerate() {
            if !["join", "leave", "client_event"].contains(&event.as_str()) {
                return Err(ConfigError::new(
                    format!("webhooks.events[{i}]"),
                    format!("unknown notification {event:?}: use join, leave or client_event"),
                ));
            }
        }
        if self.channels.history_ttl.is_zero() {
            return Err(ConfigError::new(
                "channels.history_ttl",
                "must be longer than 0s",
            ));
        }
        for (name, ns) in &self.namespaces {
            if name.is_empty()
                || name.contains(':')
                || name.starts_with('$')
                || name
                    .chars()
                    .any(|c| c.is_control() || c.is_whitespace() || c == '*')
            {
                return Err(ConfigError::new(
                    format!("namespaces.{name}"),
                    "is not a valid namespace name (no ':', '*', '$' prefix or white space)",
                ));
            }
            if name == crate::core::channel::USER_NAMESPACE && ns.subscribe.is_some() {
                return Err(ConfigError::new(
                    "namespaces.user.subscribe",
                    "user channels are always private to their user",
                ));
            }
            if ns.history_ttl.is_some_and(|t| t.is_zero()) {
                return Err(ConfigError::new(
                    format!("namespaces.{name}.history_ttl"),
                    "must be longer than 0s",
                ));
            }
        }
        if let Some(postgres) = &self.postgres {
            postgres.validate()?;
        }
        self.store.validate()?;
        Ok(())
    }

    /// The broker the `broker` key selects. With `redis.shards`, `broker` is
    /// `redis` or the first shard's URL, and the first shard is the one named.
    pub fn broker_kind(&self) -> Result<BrokerKind, ConfigError> {
        let Some(first) = self.redis.shards.first() else {
            return BrokerKind::parse(&self.broker);
        };
        if self.broker != "redis" && self.broker != *first {
            return Err(ConfigError::new(
                "redis.shards",
                format!(
                    "is set, so `broker` must be \"redis\" or the first shard ({first:?}), not {:?}",
                    self.broker
                ),
            ));
        }
        BrokerKind::parse(first)
    }

    /// The listen address.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| {
            ConfigError::new(
                "listen",
                format!("{:?} is not an address such as 127.0.0.1:8080", self.listen),
            )
        })
    }

    /// The channel policies this configuration describes.
    pub fn policies(&self) -> Policies {
        let default = NamespacePolicy {
            history: HistoryPolicy {
                size: self.channels.history_size,
                ttl: self.channels.history_ttl,
            },
            subscribe: self.channels.subscribe,
            presence: self.channels.presence,
            client_publish: self.channels.client_publish,
            client_history: self.channels.client_history,
        };
        let mut configured = self.namespaces.clone();
        if self.demo.enabled {
            // The demo app's presence list and typing indicator need these; what the
            // operator wrote for `[namespaces.demo]` still wins, key by key.
            let demo = configured.entry(DEMO_NAMESPACE.to_owned()).or_default();
            demo.presence.get_or_insert(true);
            demo.client_publish.get_or_insert(true);
            demo.client_history.get_or_insert(false);
        }
        let namespaces = configured
            .iter()
            .map(|(name, ns)| {
                let policy = NamespacePolicy {
                    history: HistoryPolicy {
                        size: ns.history_size.unwrap_or(default.history.size),
                        ttl: ns.history_ttl.unwrap_or(default.history.ttl),
                    },
                    subscribe: ns.subscribe.unwrap_or(default.subscribe),
                    presence: ns.presence.unwrap_or(default.presence),
                    client_publish: ns.client_publish.unwrap_or(default.client_publish),
                    client_history: ns.client_history.unwrap_or(default.client_history),
                };
                (name.clone(), policy)
            })
            .collect();
        Policies {
            default,
            namespaces,
        }
    }
}

fn from_figment(error: figment::Error) -> ConfigError {
    use figment::error::Kind;
    let mut path = error.path.join(".");
    let message = match &error.kind {
        Kind::UnknownField(field, expected) => {
            if error.path.last() != Some(field) {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(field);
            }
            format!("unknown key; expected one of: {}", expected.join(", "))
        }
        _ => {
            let mut m = error.kind.to_string();
            if let Some(meta) = &error.metadata {
                m.push_str(&format!(" (from {})", meta.name));
            }
            m
        }
    };
    if path.is_empty() {
        path = "<file>".into();
    }
    ConfigError::new(path, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.toml");
        std::fs::write(&path, toml).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::load_with_env(Some(&path), env)
    }

    #[test]
    fn defaults_file_then_environment() {
        let c = load(
            "listen = '0.0.0.0:9000'\n[limits]\nmax_connections = 5\n[namespaces.chat]\nhistory_size = 7\nsubscribe = 'anyone'\n",
            &[
                ("HERALD_LIMITS__MAX_CONNECTIONS", "9"),
                ("HERALD_JWT_SECRET", "0123456789abcdef0123"),
                ("HERALD_REQUIRE_SERVICES", "1"),
                ("HERALD_SSE__HEARTBEAT", "5s"),
            ],
        )
        .unwrap();
        assert_eq!(c.listen, "0.0.0.0:9000");
        assert_eq!(c.limits.max_connections, 9);
        assert_eq!(c.sse.heartbeat, Duration::from_secs(5));
        assert_eq!(c.auth.jwt_secret.as_deref(), Some("0123456789abcdef0123"));
        let p = c.policies();
        let chat = crate::core::ChannelName::new("chat:1").unwrap();
        assert_eq!(p.of(&chat).history.size, 7);
        assert_eq!(p.of(&chat).subscribe, SubscribeRule::Anyone);
        assert_eq!(p.of(&chat).history.ttl, Duration::from_secs(3600));
    }

    #[test]
    fn the_demo_namespace_has_presence_and_live_only_client_events() {
        let demo = crate::core::ChannelName::new("demo:chat").unwrap();
        let p = load("", &[]).unwrap().policies();
        assert!(p.of(&demo).presence);
        assert!(p.of(&demo).client_publish);
        assert!(!p.of(&demo).client_history);
        let p = load(
            "[namespaces.demo]\npresence = false\nhistory_size = 3\n",
            &[],
        )
        .unwrap()
        .policies();
        assert!(!p.of(&demo).presence);
        assert!(p.of(&demo).client_publish);
        assert_eq!(p.of(&demo).history.size, 3);
        let p = load("[demo]\nenabled = false\n", &[]).unwrap().policies();
        assert!(!p.of(&demo).presence);
        assert!(!p.of(&demo).client_publish);
    }

    #[test]
    fn errors_name_the_key() {
        let e = load("[limits]\nmax_connections = 'many'\n", &[]).unwrap_err();
        assert_eq!(e.key, "limits.max_connections");
        let e = load("[limits]\nmax_conections = 3\n", &[]).unwrap_err();
        assert_eq!(e.key, "limits.max_conections");
        assert!(e.message.contains("max_connections"), "{}", e.message);
        let e = load("listen = 'nowhere'\n", &[]).unwrap_err();
        assert_eq!(e.key, "listen");
        let e = load("", &[("HERALD_LISTEN", "bad")]).unwrap_err();
        assert_eq!(e.key, "listen");
        let e = load("[auth]\njwt_secret = 'short'\n", &[]).unwrap_err();
        assert_eq!(e.key, "auth.jwt_secret");
        let e = load("[auth]\nleeway = '2h'\n", &[]).unwrap_err();
        assert_eq!(e.key, "auth.leeway");
        assert_eq!(load("", &[]).unwrap().auth.leeway, Duration::from_secs(5));
        let e = load("[sse]\nheartbeat = 'often'\n", &[]).unwrap_err();
        assert_eq!(e.key, "sse.heartbeat");
        let e = load("[namespaces.'a:b']\nhistory_size = 1\n", &[]).unwrap_err();
        assert_eq!(e.key, "namespaces.a:b");
        let e = load("[channels]\nsubscribe = 'everyone'\n", &[]).unwrap_err();
        assert_eq!(e.key, "channels.subscribe");
        let e = load("[http]\ncors_origins = ['app.example.com']\n", &[]).unwrap_err();
        assert_eq!(e.key, "http.cors_origins[0]");
        assert!(
            load(
                "[http]\ncors_origins = ['https://app.example.com', '*']\n",
                &[]
            )
            .is_ok()
        );
        let e = load("broker = 'kafka'\n", &[]).unwrap_err();
        assert_eq!(e.key, "broker");
        let e = load("[store]\nkind = 'mysql'\n", &[]).unwrap_err();
        assert_eq!(e.key, "store.kind");
        let e = load("[store]\nkind = 'postgres'\n", &[]).unwrap_err();
        assert_eq!(e.key, "store.url");
        let e = load("", &[("HERALD_STORE__CLEANUP_INTERVAL", "0s")]).unwrap_err();
        assert_eq!(e.key, "store.cleanup_interval");
        let c = load("", &[("HERALD_STORE__PATH", "1234")]).unwrap();
        assert_eq!(c.store.path, std::path::PathBuf::from("1234"));
        let e = load("[limits]\nqueue_size = 0\n", &[]).unwrap_err();
        assert_eq!(e.key, "limits.queue_size");
        let e = load("[[auth.api_keys]]\nname = 'x'\npublish = ['a*b']\n", &[]).unwrap_err();
        assert!(e.key.starts_with("auth.api_keys"), "{e}");
    }

    #[test]
    fn redis_shards_come_from_a_list_or_comma_separated_text() {
        let shards = ["redis://127.0.0.1:6379", "redis://127.0.0.1:6380"];
        let c = load(
            "broker = 'redis'\n[redis]\nshards = ['redis://127.0.0.1:6379', 'redis://127.0.0.1:6380']\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.redis.shards, shards);
        assert_eq!(
            c.broker_kind().unwrap(),
            BrokerKind::Redis(shards[0].into())
        );
        let c = load(
            "",
            &[
                ("HERALD_BROKER", "redis://127.0.0.1:6379"),
                (
                    "HERALD_REDIS__SHARDS",
                    "redis://127.0.0.1:6379, redis://127.0.0.1:6380",
                ),
            ],
        )
        .unwrap();
        assert_eq!(c.redis.shards, shards);
        let c = load("", &[("HERALD_BROKER", "redis://127.0.0.1:6379/2")]).unwrap();
        assert!(c.redis.shards.is_empty(), "one server without shards");
        let e = load(
            "",
            &[
                ("HERALD_BROKER", "redis://127.0.0.1:6381"),
                (
                    "HERALD_REDIS__SHARDS",
                    "redis://127.0.0.1:6379,redis://127.0.0.1:6380",
                ),
            ],
        )
        .unwrap_err();
        assert_eq!(e.key, "redis.shards");
        let e = load("", &[("HERALD_REDIS__SHARDS", "redis://a:1,nats://b:2")]).unwrap_err();
        assert_eq!(e.key, "redis.shards");
        let e = load("", &[("HERALD_BROKER", "redis")]).unwrap_err();
        assert_eq!(e.key, "broker", "bare `redis` needs shards");
    }

    #[test]
    fn errors_quoting_a_url_hide_its_password() {
        for (env, key) in [
            (("HERALD_BROKER", "kafka://u:pw-4f1c@h"), "broker"),
            (("HERALD_BROKER", "nats://u:pw-4f1c@h:1/x"), "broker"),
            (
                ("HERALD_REDIS__SHARDS", "http://u:pw-4f1c@h:1"),
                "redis.shards",
            ),
            (
                ("HERALD_WEBHOOKS__URL", "ftp://u:pw-4f1c@h"),
                "webhooks.url",
            ),
            (
                ("HERALD_REDIS_SOURCE__URL", "http://u:pw-4f1c@h"),
                "redis_source.url",
            ),
        ] {
            let e = load("", &[env]).unwrap_err();
            assert_eq!(e.key, key);
            assert!(e.message.contains("REDACTED"), "{e}");
            assert!(!e.to_string().contains("pw-4f1c"), "{e}");
        }
    }

    #[test]
    fn publish_and_history_bounds_are_configured_and_checked() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.limits.max_channels_per_event, 100);
        assert_eq!(c.limits.history_memory, 256 * 1024 * 1024);
        let c = load(
            "[limits]\nmax_channels_per_event = 10\n",
            &[("HERALD_LIMITS__HISTORY_MEMORY", "1048576")],
        )
        .unwrap();
        assert_eq!(c.limits.events().max_channels, 10);
        assert_eq!(c.limits.history_memory, 1 << 20);
        for key in ["max_channels_per_event", "history_memory"] {
            let e = load(&format!("[limits]\n{key} = 0\n"), &[]).unwrap_err();
            assert_eq!(e.key, format!("limits.{key}"));
        }
        let e = load("[limits]\nhistory_memory = '256MB'\n", &[]).unwrap_err();
        assert_eq!(e.key, "limits.history_memory");
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let e = Config::load_with_env(Some(Path::new("/nonexistent/herald.toml")), []).unwrap_err();
        assert_eq!(e.key, "--config");
    }
}
