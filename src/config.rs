//! Configuration: a TOML file, `HERALD_*` environment overrides, then command-line
//! flags, checked as a whole before the hub starts.
//!
//! Each component owns the type of its own section and checks it
//! ([`AuthConfig`] in `auth`, [`Limits`] in `limits`, [`RedisConfig`] in `broker`,
//! ...); this module composes the sections into [`Config`], reads them from the
//! file and the environment, checks what spans sections, and resolves the whole
//! once ([`Config::resolve`]) into what the components receive: no component
//! imports this module.
//!
//! Every error names the key it is about (`limits.max_connections`, `auth.jwks`), or
//! the environment variable that set it, so an operator knows what to fix; the
//! binary exits with status 64 on one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::core::{HistoryPolicy, NamespacePolicy, Policies, SubscribeRule};
use crate::limits::{PublishRates, Rate};

mod redact;

pub use crate::auth::{ApiKeyConfig, AuthConfig};
pub use crate::broker::{
    BrokerKind, BrokerSettings, MemoryConfig, NatsConfig, NatsStorage, RedisConfig,
};
pub use crate::http::demo::DemoConfig;
pub use crate::http::sse::SseConfig;
pub use crate::http::ws::WsConfig;
pub use crate::http::{ForwardedHeader, HttpConfig, OpsConfig};
pub use crate::hub::ShutdownConfig;
pub use crate::limits::Limits;
pub use crate::presence::PresenceConfig;
pub use crate::settings::ConfigError;
pub use crate::source::postgres::PostgresConfig;
pub use crate::source::{RedisMessageFormat, RedisRoute, RedisSourceConfig};
pub use crate::store::StoreConfig;
pub use crate::webhooks::WebhooksConfig;
pub use redact::{
    Hidden, REDACTED, Redacted, SECRET_KEYS, SECRET_PLACEHOLDER, Secrets, redact_url,
};

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
    /// Settings of the memory broker.
    pub memory: MemoryConfig,
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
    pub postgres: Option<PostgresConfig>,
    /// Where notifications and tasks are stored (SQLite unless set otherwise).
    pub store: StoreConfig,
    /// Where `/stats` and `/metrics` are served and who may read them.
    pub ops: OpsConfig,
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
            memory: MemoryConfig::default(),
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
            ops: OpsConfig::default(),
        }
    }
}

/// A checked configuration with what is derived from it, resolved once by
/// [`Config::resolve`].
#[derive(Debug, Clone)]
pub struct Settings {
    /// The address to listen on.
    pub listen: SocketAddr,
    /// The broker and its section.
    pub broker: BrokerSettings,
    /// The channel policies of `[channels]`, `[namespaces]` and the demo app.
    pub policies: Policies,
    /// The Redis the `[redis_source]` reads, when it is configured.
    pub redis_source_url: Option<String>,
    /// The rate limits of publishing over HTTP, from `[limits]` and `[namespaces]`.
    pub publish_rates: PublishRates,
    /// The sections as checked.
    pub config: Config,
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
    /// Events each publisher may publish over HTTP per second to the namespace's
    /// channels, in a bucket of their own (0: no limit); with only `publish_burst`
    /// set, `limits.publish_rate`.
    pub publish_rate: Option<f64>,
    /// Events each publisher may publish to the namespace's channels at once; with
    /// only `publish_rate` set, `limits.publish_burst`.
    pub publish_burst: Option<u32>,
}

/// The namespace of the demo app's channels (`demo:board`, `demo:chat`). With
/// `demo.enabled` it defaults to presence on and live-only client events.
pub const DEMO_NAMESPACE: &str = "demo";

/// Keys whose environment value is always text, even when it looks like a number
/// (a test checks the list against every text setting of the configuration).
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
    "http.trusted_proxies",
    "http.forwarded_header",
    "webhooks.url",
    "webhooks.secret",
    "postgres.url",
    "postgres.mode",
    "postgres.outbox.table",
    "postgres.outbox.notify",
    "store.kind",
    "store.path",
    "store.url",
    "nats.storage",
    "channels.subscribe",
    "ops.listen",
    "ops.token",
];

/// The top-level keys an environment variable may set; other `HERALD_*` variables
/// (used by scripts and tests) are not configuration. A test checks it against the
/// fields of [`Config`].
const SECTIONS: &[&str] = &[
    "listen",
    "broker",
    "memory",
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
    "ops",
];

/// One `HERALD_*` environment variable setting one key, named after the variable
/// in errors (`... (from environment variable HERALD_LIMITS__MAX_CONNECTIONS)`).
struct EnvVar {
    name: String,
    key: String,
    value: figment::value::Value,
}

impl figment::Provider for EnvVar {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named(format!("environment variable {}", self.name))
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        let dict = figment::util::nest(&self.key, self.value.clone())
            .into_dict()
            .unwrap_or_default();
        Ok(figment::Profile::Global.collect(dict))
    }
}

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
            figment = figment.merge(EnvVar { name, key, value });
        }
        let config: Config = figment.extract().map_err(from_figment)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but make no sense: each section by its own check,
    /// then what spans sections.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        let broker = self.broker_kind()?;
        self.memory.validate()?;
        self.redis.validate()?;
        self.nats.validate()?;
        if let Some(source) = &self.redis_source {
            source.validate(&broker)?;
        }
        self.auth.validate()?;
        self.http.validate()?;
        self.limits.validate()?;
        self.sse.validate()?;
        self.shutdown.validate()?;
        self.ws.validate()?;
        self.presence.validate()?;
        self.webhooks.validate()?;
        self.ops.validate()?;
        if let Some(ops) = self.ops.listen_addr()?
            && ops.port() != 0
            && ops == self.listen_addr()?
        {
            return Err(ConfigError::new(
                "ops.listen",
                format!("is the main `listen` address {ops}; give the counters another port"),
            ));
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
            crate::limits::check_publish_rate(
                &format!("namespaces.{name}"),
                ns.publish_rate,
                ns.publish_burst,
            )?;
            if ns.publish_burst.is_some()
                && ns.publish_rate.unwrap_or(self.limits.publish_rate) == 0.0
            {
                return Err(ConfigError::new(
                    format!("namespaces.{name}.publish_burst"),
                    "has no effect without a publish_rate (in the namespace or in [limits])",
                ));
            }
        }
        if let Some(postgres) = &self.postgres {
            postgres.validate()?;
        }
        self.store.validate()?;
        Ok(())
    }

    /// Checks the configuration and resolves what is derived from it, once: the
    /// listen address, the broker, the channel policies. Components receive their
    /// sections and these, never the configuration as a whole.
    pub fn resolve(self) -> Result<Settings, ConfigError> {
        self.validate()?;
        let listen = self.listen_addr()?;
        let broker = BrokerSettings {
            kind: self.broker_kind()?,
            memory: self.memory.clone(),
            redis: self.redis.clone(),
            nats: self.nats.clone(),
            history_memory: self.limits.history_memory,
        };
        let redis_source_url = self
            .redis_source
            .as_ref()
            .and_then(|source| source.url(&broker.kind))
            .map(str::to_owned);
        Ok(Settings {
            listen,
            policies: self.policies(),
            publish_rates: self.publish_rates(),
            broker,
            redis_source_url,
            config: self,
        })
    }

    /// The broker the `broker` key selects. With `redis.shards`, `broker` is
    /// `redis` or the first shard's URL, and the first shard is the one named.
    pub fn broker_kind(&self) -> Result<BrokerKind, ConfigError> {
        let Some(first) = self.redis.shards.first() else {
            let kind = BrokerKind::parse(&self.broker)?;
            if let BrokerKind::Redis(url) = &kind {
                let nodes = crate::broker::redis_nodes(url);
                if self.redis.cluster {
                    for node in &nodes {
                        if !matches!(BrokerKind::parse(node), Ok(BrokerKind::Redis(_)))
                            || node.starts_with("redis+unix")
                            || node.starts_with("unix")
                        {
                            return Err(ConfigError::new(
                                "broker",
                                format!("{node:?} is not a cluster node (redis://HOST:PORT)"),
                            ));
                        }
                    }
                } else if nodes.len() > 1 {
                    return Err(ConfigError::new(
                        "broker",
                        "lists several Redis servers: set redis.cluster = true for the nodes \
                         of a Redis Cluster, or redis.shards to spread histories over servers",
                    ));
                }
            }
            return Ok(kind);
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

    /// The rate limits of publishing over HTTP: `limits.publish_rate` for every
    /// namespace but those with a `publish_rate` or `publish_burst` of their own,
    /// which have their own buckets (what they leave out coming from `[limits]`).
    pub fn publish_rates(&self) -> PublishRates {
        let rate =
            |per_second: f64, burst: u32| (per_second > 0.0).then_some(Rate { per_second, burst });
        let limits = &self.limits;
        PublishRates {
            default: rate(limits.publish_rate, limits.publish_burst),
            namespaces: self
                .namespaces
                .iter()
                .filter(|(_, ns)| ns.publish_rate.is_some() || ns.publish_burst.is_some())
                .map(|(name, ns)| {
                    let own = rate(
                        ns.publish_rate.unwrap_or(limits.publish_rate),
                        ns.publish_burst.unwrap_or(limits.publish_burst),
                    );
                    (name.clone(), own)
                })
                .collect(),
        }
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
    fn an_environment_variable_error_names_the_variable() {
        let e = load("", &[("HERALD_LIMITS__MAX_CONNECTIONS", "many")]).unwrap_err();
        assert_eq!(e.key, "limits.max_connections");
        assert!(
            e.message
                .contains("environment variable HERALD_LIMITS__MAX_CONNECTIONS"),
            "{e}"
        );
        let e = load("", &[("HERALD_SSE__HEARTBEAT", "often")]).unwrap_err();
        assert!(e.message.contains("HERALD_SSE__HEARTBEAT"), "{e}");
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
        let e = load("[http]\ntrusted_proxies = ['10.0.0.0/8', 'proxy']\n", &[]).unwrap_err();
        assert_eq!(e.key, "http.trusted_proxies[1]");
        let e = load("", &[("HERALD_HTTP__TRUSTED_PROXIES", "10.0.0.0/33")]).unwrap_err();
        assert_eq!(e.key, "http.trusted_proxies[0]");
        let c = load("", &[("HERALD_HTTP__TRUSTED_PROXIES", "10.0.0.0/8, ::1")]).unwrap();
        assert_eq!(c.http.trusted_proxies, ["10.0.0.0/8", "::1"]);
        let e = load("[http]\nforwarded_header = 'x-real-ip'\n", &[]).unwrap_err();
        assert_eq!(e.key, "http.forwarded_header");
        let c = load("", &[("HERALD_HTTP__FORWARDED_HEADER", "forwarded")]).unwrap();
        assert_eq!(c.http.forwarded_header, ForwardedHeader::Forwarded);
        let e = load("[ops]\nlisten = 'localhost:9090'\n", &[]).unwrap_err();
        assert_eq!(e.key, "ops.listen");
        let e = load(
            "listen = '127.0.0.1:8080'\n[ops]\nlisten = '127.0.0.1:8080'\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(e.key, "ops.listen");
        let e = load("", &[("HERALD_OPS__TOKEN", "1234")]).unwrap_err();
        assert_eq!(e.key, "ops.token");
        assert!(!e.to_string().contains("1234"), "{e}");
        let c = load("", &[("HERALD_OPS__TOKEN", "1234567890123456")]).unwrap();
        assert_eq!(c.ops.token.as_deref(), Some("1234567890123456"));
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
    fn a_redis_cluster_is_named_by_its_nodes_and_refuses_what_does_not_fit() {
        let nodes = "redis://127.0.0.1:7000,127.0.0.1:7001";
        let c = load(
            "",
            &[("HERALD_BROKER", nodes), ("HERALD_REDIS__CLUSTER", "true")],
        )
        .unwrap();
        assert!(c.redis.cluster);
        assert!(matches!(c.broker_kind().unwrap(), BrokerKind::Redis(_)));
        assert_eq!(
            crate::broker::redis_nodes(nodes),
            ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]
        );
        let several = load("", &[("HERALD_BROKER", nodes)])
            .and_then(|c| c.broker_kind().map(|_| c))
            .unwrap_err();
        assert_eq!(several.key, "broker", "several servers without cluster");
        let foreign = load(
            "",
            &[
                (
                    "HERALD_BROKER",
                    "redis://127.0.0.1:7000,nats://127.0.0.1:4222",
                ),
                ("HERALD_REDIS__CLUSTER", "true"),
            ],
        )
        .and_then(|c| c.broker_kind().map(|_| c))
        .unwrap_err();
        assert_eq!(foreign.key, "broker");
        let e = load(
            "broker = 'redis'\n[redis]\ncluster = true\nshards = ['redis://a:1', 'redis://b:2']\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(e.key, "redis.cluster", "{e}");
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
    fn waiting_for_replicas_must_end_before_a_command_times_out() {
        let c = load("[redis]\nwait_replicas = 1\nwait_timeout = '500ms'\n", &[]).unwrap();
        assert_eq!(c.redis.wait_replicas, 1);
        for bad in [
            "[redis]\nwait_replicas = 1\nwait_timeout = '2s'\n",
            "[redis]\nwait_aof = true\nwait_timeout = '0s'\n",
        ] {
            assert_eq!(
                load(bad, &[]).unwrap_err().key,
                "redis.wait_timeout",
                "{bad}"
            );
        }
        let e = load("[redis]\npartitions = 2000\n", &[]).unwrap_err();
        assert_eq!(e.key, "redis.partitions");
        let e = load("[memory]\npartitions = 0\n", &[]).unwrap_err();
        assert_eq!(e.key, "memory.partitions");
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
    fn publish_rates_are_off_by_default_and_namespaces_may_have_their_own() {
        assert_eq!(
            load("", &[]).unwrap().publish_rates(),
            PublishRates::default()
        );
        let c = load(
            "[limits]\npublish_rate = 10\npublish_burst = 20\n\
             [namespaces.chat]\npublish_rate = 0.5\n\
             [namespaces.bulk]\npublish_burst = 500\n\
             [namespaces.free]\npublish_rate = 0\n\
             [namespaces.other]\nhistory_size = 1\n",
            &[],
        )
        .unwrap();
        let rates = c.publish_rates();
        let rate = |per_second, burst| Some(Rate { per_second, burst });
        assert_eq!(rates.default, rate(10.0, 20));
        assert_eq!(rates.namespaces["chat"], rate(0.5, 20));
        assert_eq!(rates.namespaces["bulk"], rate(10.0, 500));
        assert_eq!(rates.namespaces["free"], None);
        assert!(!rates.namespaces.contains_key("other"));
        let c = load("", &[("HERALD_LIMITS__PUBLISH_RATE", "2.5")]).unwrap();
        assert_eq!(c.publish_rates().default, rate(2.5, 100));
        for (toml, key) in [
            ("[limits]\npublish_rate = -1\n", "limits.publish_rate"),
            ("[limits]\npublish_rate = 'fast'\n", "limits.publish_rate"),
            ("[limits]\npublish_burst = 0\n", "limits.publish_burst"),
            ("[limits]\npublish_burst = -3\n", "limits.publish_burst"),
            (
                "[namespaces.chat]\npublish_rate = -2\n",
                "namespaces.chat.publish_rate",
            ),
            (
                "[namespaces.chat]\npublish_burst = 0\n",
                "namespaces.chat.publish_burst",
            ),
            (
                "[namespaces.chat]\npublish_burst = 5\n",
                "namespaces.chat.publish_burst",
            ),
        ] {
            let e = load(toml, &[]).unwrap_err();
            assert_eq!(e.key, key, "{toml}: {e}");
        }
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let e = Config::load_with_env(Some(Path::new("/nonexistent/herald.toml")), []).unwrap_err();
        assert_eq!(e.key, "--config");
    }
}
