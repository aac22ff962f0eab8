//! Keeping secrets out of what the hub prints: `herald check-config`, logs, error
//! messages and `/readyz`.
//!
//! - [`redact_url`] hides the credentials of every URL in a text (`redis://user:pw@host`
//!   becomes `redis://user:REDACTED@host`, a NATS token `nats://tok@host` becomes
//!   `nats://REDACTED@host`), secret query parameters (`?password=`, `?token=`) and
//!   the `password=` of a PostgreSQL key-value connection string. Anything that
//!   logs or shows a URL, or an error that may contain one, goes through it.
//! - [`Config::redacted`] is the configuration with every secret replaced by a stand-in
//!   that is accepted back as configuration but is not the secret: URL passwords read
//!   `REDACTED`, a plain API key is shown as its `key_sha256` (accepted the same way),
//!   `auth.jwt_secret`, `webhooks.secret` and `ops.token` become
//!   [`SECRET_PLACEHOLDER`], which a hub never signs, verifies or lets anyone in with
//!   ([`Config::disarm_placeholders`]).
//! - [`Config::secrets`] lists the secret values themselves, so a log writer can
//!   mask them wherever a library happens to print one.
//!
//! URL-valued settings need no list: every text value of the configuration is
//! searched for URLs. The settings that are secrets as a whole are listed in
//! [`SECRET_KEYS`]; a test walks a configuration with every setting filled in and
//! fails on a text setting that is in none of the lists, so a new one cannot slip
//! out unmasked.

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{Config, ConfigError};
use crate::redact::{Boundary, percent_decode, scan};
pub use crate::redact::{REDACTED, redact_url};

/// What stands in for `auth.jwt_secret`, `webhooks.secret` and `ops.token`: long
/// enough to pass the configuration check, so printed configurations are accepted
/// back, and replaced by [`Config::disarm_placeholders`] before a hub starts, so no
/// hub signs, verifies or admits with a value printed for anyone to read.
pub const SECRET_PLACEHOLDER: &str = "REDACTED-REDACTED";

/// Settings whose whole value is a secret, as paths where `[]` stands for any
/// element of a list.
pub const SECRET_KEYS: &[&str] = &[
    "auth.jwt_secret",
    "auth.api_keys[].key",
    "webhooks.secret",
    "ops.token",
];

/// Maps whose keys are names chosen by the operator rather than settings.
const FREE_MAPS: &[&str] = &["namespaces", "postgres.routes[].when"];

/// Secrets shorter than this are not masked by [`Secrets::hide`] on their own (URL
/// credentials still are, by position): masking every occurrence of a two-letter
/// password would make the text unreadable without hiding anything worth hiding.
const SHORTEST_MASKED: usize = 4;

/// A setting that was hidden, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hidden {
    /// The setting, e.g. `redis.shards[1]` or `auth.api_keys[0].key`.
    pub key: String,
    /// What stands in for it.
    pub how: &'static str,
}

/// A configuration with its secrets replaced; see the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct Redacted {
    config: Config,
    hidden: Vec<Hidden>,
}

impl Redacted {
    /// The configuration with stand-ins for its secrets.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The settings that were hidden.
    pub fn hidden(&self) -> &[Hidden] {
        &self.hidden
    }

    /// The configuration as a TOML file that `--config` accepts, opening with comment
    /// lines that name each hidden setting.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        let body = toml::to_string(&self.config)
            .map_err(|e| ConfigError::new("<config>", format!("cannot be written as TOML: {e}")))?;
        let mut out = String::new();
        if !self.hidden.is_empty() {
            out.push_str(
                "# Secrets are hidden: what stands in for each is accepted here but is not the real value.\n",
            );
            for hidden in &self.hidden {
                out.push_str(&format!("#   {}: {}\n", hidden.key, hidden.how));
            }
            out.push('\n');
        }
        out.push_str(&body);
        Ok(out)
    }
}

/// The secret values of a configuration, to mask in text the hub prints.
#[derive(Clone, Default)]
pub struct Secrets {
    /// Longest first, so a secret containing another is masked whole.
    values: Vec<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} hidden)", self.values.len())
    }
}

impl Secrets {
    /// Adds a secret the configuration does not hold (e.g. a generated one).
    pub fn add(&mut self, secret: &str) {
        if !secret.is_empty() && !self.values.iter().any(|v| v == secret) {
            self.values.push(secret.to_owned());
            self.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        }
    }

    /// `text` with URL credentials hidden ([`redact_url`]) and every known secret of
    /// at least four characters replaced by `REDACTED`.
    pub fn hide(&self, text: &str) -> String {
        let mut text = redact_url(text);
        for secret in &self.values {
            if secret.len() >= SHORTEST_MASKED && text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), REDACTED);
            }
        }
        text
    }
}

impl Config {
    /// This configuration with every secret replaced by a stand-in; see the module
    /// docs. The library rather than the command does it, so that the test that
    /// every setting is accounted for lives beside the settings, and so that an
    /// application embedding the hub can show its configuration the same way.
    pub fn redacted(&self) -> Result<Redacted, ConfigError> {
        let mut walk = Walk::default();
        let mut value = serde_json::to_value(self)
            .map_err(|e| ConfigError::new("<config>", format!("cannot be shown: {e}")))?;
        walk.visit(&mut value, String::new(), String::new());
        let config = serde_json::from_value(value)
            .map_err(|e| ConfigError::new("<config>", format!("cannot be shown: {e}")))?;
        Ok(Redacted {
            config,
            hidden: walk.hidden,
        })
    }

    /// The serialised form of [`Config::redacted`], for `Debug`.
    pub(super) fn redacted_value(&self) -> Option<Value> {
        let mut value = serde_json::to_value(self).ok()?;
        Walk::default().visit(&mut value, String::new(), String::new());
        Some(value)
    }

    /// The secret values this configuration holds: whole secret settings, URL
    /// passwords and tokens (as written and percent-decoded).
    pub fn secrets(&self) -> Secrets {
        let mut walk = Walk::default();
        if let Ok(mut value) = serde_json::to_value(self) {
            walk.visit(&mut value, String::new(), String::new());
        }
        let mut secrets = Secrets::default();
        for found in &walk.found {
            secrets.add(found);
            secrets.add(&percent_decode(found));
        }
        secrets
    }

    /// Replaces each [`SECRET_PLACEHOLDER`] (as printed by `herald check-config`)
    /// with a random secret known to no one, and returns the keys it replaced. A
    /// printed configuration then starts, but no token signed with the printed value
    /// is accepted, no webhook is signed with it and it does not open `/metrics`:
    /// HS256 tokens and the printed ops token are refused and webhook receivers
    /// refuse the signatures until the real secret is set.
    pub fn disarm_placeholders(&mut self) -> Vec<&'static str> {
        let mut replaced = Vec::new();
        for (key, value) in [
            ("auth.jwt_secret", &mut self.auth.jwt_secret),
            ("webhooks.secret", &mut self.webhooks.secret),
            ("ops.token", &mut self.ops.token),
        ] {
            if value.as_deref() == Some(SECRET_PLACEHOLDER) {
                let random: String = (0..48)
                    .map(|_| char::from(b"0123456789abcdef"[rand::random_range(0..16)]))
                    .collect();
                *value = Some(random);
                replaced.push(key);
            }
        }
        replaced
    }
}

const PLACEHOLDER_HOW: &str =
    "a placeholder, which a hub replaces with a random secret known to no one";

/// One pass over a serialised configuration, hiding secrets as it goes.
#[derive(Default)]
struct Walk {
    hidden: Vec<Hidden>,
    found: Vec<String>,
}

impl Walk {
    /// Visits `value` at `path` (`auth.api_keys[0].key`), whose `pattern` has `[]`
    /// for list indexes and `*` for keys of free maps (`auth.api_keys[].key`).
    fn visit(&mut self, value: &mut Value, path: String, pattern: String) {
        match value {
            Value::Object(map) => {
                let free = FREE_MAPS.contains(&pattern.as_str());
                let keys: Vec<String> = map.keys().cloned().collect();
                for key in keys {
                    let child_path = join(&path, &key);
                    let child_pattern = join(&pattern, if free { "*" } else { &key });
                    if SECRET_KEYS.contains(&child_pattern.as_str()) {
                        self.hide_secret(map, &key, child_path);
                    } else if let Some(child) = map.get_mut(&key) {
                        self.visit(child, child_path, child_pattern);
                    }
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    self.visit(item, format!("{path}[{i}]"), format!("{pattern}[]"));
                }
            }
            Value::String(text) => {
                let shown = scan(text.as_str(), Boundary::NextUrl, &mut self.found);
                // A value printed before, given back, still names what it hides.
                if shown != *text || text.contains(REDACTED) {
                    *text = shown;
                    self.hidden.push(Hidden {
                        key: path,
                        how: "the credentials in it read REDACTED",
                    });
                }
            }
            _ => {}
        }
    }

    /// Hides the secret setting `key` of `map`.
    fn hide_secret(&mut self, map: &mut serde_json::Map<String, Value>, key: &str, path: String) {
        let Some(Value::String(secret)) = map.get(key).cloned() else {
            return;
        };
        if secret == SECRET_PLACEHOLDER {
            self.hidden.push(Hidden {
                key: path,
                how: PLACEHOLDER_HOW,
            });
            return;
        }
        self.found.push(secret.clone());
        // A plain key whose hash the hub accepts just as well is shown as that hash.
        if map.contains_key("key_sha256") {
            let hash: String = Sha256::digest(secret.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            map.insert("key_sha256".into(), Value::String(hash));
            map.insert(key.into(), Value::Null);
            self.hidden.push(Hidden {
                key: path,
                how: "shown as its key_sha256, which the hub accepts the same way",
            });
        } else {
            map.insert(key.into(), Value::String(SECRET_PLACEHOLDER.into()));
            self.hidden.push(Hidden {
                key: path,
                how: PLACEHOLDER_HOW,
            });
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::config::{ApiKeyConfig, NamespaceConfig, RedisRoute, RedisSourceConfig};
    use crate::core::ChannelPattern;
    use crate::source::postgres::{FetchConfig, PostgresConfig, RouteConfig};

    #[test]
    fn url_credentials_are_hidden_wherever_they_appear() {
        for (text, shown) in [
            (
                "redis://user:s3cret@db:6379/2",
                "redis://user:REDACTED@db:6379/2",
            ),
            ("redis://:s3cret@db", "redis://:REDACTED@db"),
            ("redis://user@db", "redis://user@db"),
            ("redis://db:6379", "redis://db:6379"),
            ("memory", "memory"),
            ("nats://t0ken@db:4222", "nats://REDACTED@db:4222"),
            (
                "nats://u:p1@a:4222,nats://u:p2@b:4222",
                "nats://u:REDACTED@a:4222,nats://u:REDACTED@b:4222",
            ),
            (
                "postgres://herald:s3cret@db:5432/app?password=x&sslmode=disable",
                "postgres://herald:REDACTED@db:5432/app?password=REDACTED&sslmode=disable",
            ),
            (
                "redis+unix:///run/redis.sock?db=1&pass=s3cret",
                "redis+unix:///run/redis.sock?db=1&pass=REDACTED",
            ),
            (
                "https://app.example.com/hooks?team=1&token=t0k",
                "https://app.example.com/hooks?team=1&token=REDACTED",
            ),
            // An `@` in a password, and a `/` or `?` left unencoded in one.
            ("redis://u:p@ss@db:1", "redis://u:REDACTED@db:1"),
            ("redis://u:pa/ss@db:1/0", "redis://u:REDACTED@db:1/0"),
            ("redis://:12?34@db", "redis://:REDACTED@db"),
            // An `@` in the path or query of a URL without credentials stays.
            (
                "postgres://db:5432/app?user=me@tenant",
                "postgres://db:5432/app?user=me@tenant",
            ),
            (
                "postgres://u:pw@db:5432/app?user=me@tenant",
                "postgres://u:REDACTED@db:5432/app?user=me@tenant",
            ),
            // Key-value connection strings.
            (
                "host=db user=herald password=s3cret dbname=app",
                "host=db user=herald password=REDACTED dbname=app",
            ),
            (
                "host=db password = 'a b\\' c' dbname=app",
                "host=db password = 'REDACTED' dbname=app",
            ),
            ("PASSWORD=x", "PASSWORD=REDACTED"),
            ("no password here", "no password here"),
            // URLs within messages.
            (
                "redis shard \"redis://:pw@10.0.0.6:6379\": connection refused",
                "redis shard \"redis://:REDACTED@10.0.0.6:6379\": connection refused",
            ),
            (
                "cannot reach redis://u:pw@h:1 or nats://tok@n:2 (retrying)",
                "cannot reach redis://u:REDACTED@h:1 or nats://REDACTED@n:2 (retrying)",
            ),
            ("é://x:y@z ü", "é://x:REDACTED@z ü"),
        ] {
            assert_eq!(redact_url(text), shown, "{text}");
            assert_eq!(redact_url(shown), shown, "hiding twice changes nothing");
        }
    }

    /// Every text setting, as a path where `[]` is any list element and `*` any key
    /// of a free map, that is neither a secret ([`SECRET_KEYS`]) nor a URL.
    const PLAIN_TEXT_KEYS: &[&str] = &[
        "listen",
        "redis.prefix",
        "nats.stream",
        "nats.subject",
        "nats.storage",
        "redis_source.routes[].pattern",
        "redis_source.routes[].channel",
        "redis_source.routes[].format",
        "redis_source.routes[].type",
        "redis_source.routes[].data_field",
        "redis_source.routes[].type_field",
        "redis_source.routes[].id_field",
        "auth.jwt_public_key",
        "auth.jwks",
        "auth.issuer",
        "auth.audience",
        "auth.cookie",
        "auth.api_keys[].name",
        "auth.api_keys[].key_sha256",
        "auth.api_keys[].publish[]",
        "http.cors_origins[]",
        "http.trusted_proxies[]",
        "http.forwarded_header",
        "webhooks.events[]",
        "channels.subscribe",
        "namespaces.*.subscribe",
        "postgres.mode",
        "postgres.outbox.table",
        "postgres.outbox.notify",
        "postgres.routes[].notify",
        "postgres.routes[].channels[]",
        "postgres.routes[].optional_channels[]",
        "postgres.routes[].type",
        "postgres.routes[].fields[]",
        "postgres.routes[].when.*",
        "postgres.routes[].when.*[]",
        "postgres.routes[].fetch.table",
        "postgres.routes[].fetch.key[]",
        "postgres.routes[].fetch.columns[]",
        "store.kind",
        "store.path",
        "ops.listen",
    ];

    /// Text settings that hold URLs (or connection strings), whose credentials are
    /// hidden and the rest shown.
    const URL_KEYS: &[&str] = &[
        "broker",
        "redis.shards[]",
        "redis_source.url",
        "webhooks.url",
        "postgres.url",
        "store.url",
    ];

    /// The secrets of [`full`], one distinct value per place.
    const PLANTED: &[&str] = &[
        "pw-broker-4f1c",
        "pw-shard-9a2e",
        "pw-source-77d3",
        "jwt-secret-5be0-0123456789",
        "api-key-e81f",
        "pw-webhook-url-c2a9",
        "tok-webhook-query-3d3d",
        "webhook-secret-0a0a-0123456789",
        "pw-postgres-6b6b",
        "pw-store-1e1e",
        "ops-token-8c8c-0123456789",
    ];

    /// A configuration with every setting given a value, secrets from [`PLANTED`].
    fn full() -> Config {
        let pattern = |p: &str| ChannelPattern::parse(p).unwrap();
        let mut c = Config {
            broker: "redis://herald:pw-broker-4f1c@127.0.0.1:6379/0".into(),
            ..Config::default()
        };
        c.redis.shards = vec![
            c.broker.clone(),
            "redis://:pw-shard-9a2e@127.0.0.1:6380".into(),
        ];
        c.redis_source = Some(RedisSourceConfig {
            url: Some("redis://source:pw-source-77d3@127.0.0.1:6381".into()),
            routes: vec![RedisRoute {
                pattern: "user:*".into(),
                channel: Some("user:{1}".into()),
                broadcast: false,
                format: crate::config::RedisMessageFormat::Envelope,
                kind: Some("message".into()),
                data_field: "data".into(),
                type_field: "type".into(),
                id_field: "id".into(),
            }],
        });
        c.auth.jwt_secret = Some("jwt-secret-5be0-0123456789".into());
        c.auth.jwt_public_key = Some("keys/jwt.pem".into());
        c.auth.jwks = Some("keys/jwks.json".into());
        c.auth.issuer = Some("https://auth.example.com".into());
        c.auth.audience = Some("herald".into());
        c.auth.api_keys = vec![
            ApiKeyConfig {
                name: "backend".into(),
                key: Some("api-key-e81f".into()),
                key_sha256: None,
                publish: vec![pattern("orders:*")],
            },
            ApiKeyConfig {
                name: "hashed".into(),
                key: None,
                key_sha256: Some("ab".repeat(32)),
                publish: vec![pattern("*")],
            },
        ];
        c.http.cors_origins = vec!["https://app.example.com".into()];
        c.http.trusted_proxies = vec!["10.0.0.0/8".into(), "::1".into()];
        c.webhooks.url = Some(
            "https://hook:pw-webhook-url-c2a9@app.example.com/hooks?token=tok-webhook-query-3d3d"
                .into(),
        );
        c.webhooks.secret = Some("webhook-secret-0a0a-0123456789".into());
        c.namespaces.insert(
            "chat".into(),
            NamespaceConfig {
                history_size: Some(5),
                history_ttl: Some(std::time::Duration::from_secs(60)),
                subscribe: Some(crate::core::SubscribeRule::Authenticated),
                presence: Some(true),
                client_publish: Some(true),
                client_history: Some(false),
                publish_rate: Some(5.0),
                publish_burst: Some(10),
            },
        );
        c.demo.tokens = Some(false);
        c.postgres = Some(PostgresConfig {
            url: "postgres://herald:pw-postgres-6b6b@127.0.0.1:5432/app?sslmode=disable".into(),
            elect_publisher: Some(true),
            routes: vec![RouteConfig {
                notify: "tasks".into(),
                channels: vec!["team:{team_id}".into()],
                optional_channels: vec!["team:{old.team_id}".into()],
                kind: Some("task.{op}".into()),
                fields: Some(vec!["id".into(), "team_id".into()]),
                when: BTreeMap::from([
                    ("op".into(), serde_json::json!(["insert", "update"])),
                    ("table".into(), serde_json::json!("tasks")),
                ]),
                fetch: Some(FetchConfig {
                    table: "tasks".into(),
                    key: vec!["id".into()],
                    columns: Some(vec!["id".into(), "team_id".into()]),
                }),
            }],
            ..Default::default()
        });
        c.store.kind = "postgres".into();
        c.store.url = Some("postgres://store:pw-store-1e1e@127.0.0.1:5432/inbox".into());
        c.ops.listen = Some("127.0.0.1:9090".into());
        c.ops.token = Some("ops-token-8c8c-0123456789".into());
        c.validate().expect("the full configuration is valid");
        c
    }

    /// Collects the text leaves of `value` by path pattern, with the patterns only
    /// ever seen unset (null or an empty list).
    fn leaves(
        value: &Value,
        pattern: String,
        text: &mut BTreeSet<String>,
        set: &mut BTreeSet<String>,
        unset: &mut BTreeSet<String>,
    ) {
        match value {
            Value::Object(map) => {
                let free = FREE_MAPS.contains(&pattern.as_str());
                for (key, child) in map {
                    let child_pattern = join(&pattern, if free { "*" } else { key });
                    leaves(child, child_pattern, text, set, unset);
                }
            }
            Value::Array(items) if items.is_empty() => {
                unset.insert(pattern);
            }
            Value::Array(items) => {
                set.insert(pattern.clone());
                for item in items {
                    leaves(item, format!("{pattern}[]"), text, set, unset);
                }
            }
            Value::Null => {
                unset.insert(pattern);
            }
            Value::String(s) => {
                set.insert(pattern.clone());
                // Durations are written as text (`30s`); they hold no secret.
                if humantime::parse_duration(s).is_err() {
                    text.insert(pattern);
                }
            }
            _ => {
                set.insert(pattern);
            }
        }
    }

    /// The lists the environment reader keeps by hand match the configuration: every
    /// section of [`Config`] may be set from the environment, and every setting
    /// holding text (a single value, not a list or part of a list of tables) reads
    /// its variable as text, even when it looks like a number.
    #[test]
    fn the_environment_key_lists_match_the_configuration() {
        let value = serde_json::to_value(full()).unwrap();
        let sections: BTreeSet<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let listed: BTreeSet<&str> = super::super::SECTIONS.iter().copied().collect();
        assert_eq!(sections, listed, "config::SECTIONS");
        let (mut text, mut set, mut unset) = Default::default();
        leaves(&value, String::new(), &mut text, &mut set, &mut unset);
        let mut scalar_text: BTreeSet<String> = text
            .into_iter()
            .filter(|k| !k.contains("[]") && !k.contains('*'))
            .collect();
        // Lists that the environment gives as comma-separated text.
        for list in ["redis.shards", "http.trusted_proxies"] {
            scalar_text.insert(list.to_owned());
        }
        let listed: BTreeSet<String> = super::super::STRING_KEYS
            .iter()
            .map(|k| (*k).to_owned())
            .collect();
        assert_eq!(scalar_text, listed, "config::STRING_KEYS");
    }

    #[test]
    fn every_text_setting_is_known_as_secret_url_or_plain() {
        let value = serde_json::to_value(full()).unwrap();
        let (mut text, mut set, mut unset) = Default::default();
        leaves(&value, String::new(), &mut text, &mut set, &mut unset);
        let never_set: Vec<&String> = unset.difference(&set).collect();
        assert!(
            never_set.is_empty(),
            "settings left unset in the test's full configuration, so whether they hold \
             a secret is not checked; give them a value in `full()`: {never_set:?}"
        );
        let known: BTreeSet<&str> = SECRET_KEYS
            .iter()
            .chain(URL_KEYS)
            .chain(PLAIN_TEXT_KEYS)
            .copied()
            .collect();
        let unknown: Vec<&String> = text
            .iter()
            .filter(|k| !known.contains(k.as_str()))
            .collect();
        assert!(
            unknown.is_empty(),
            "new text settings: list each in config/redact.rs as a secret (SECRET_KEYS, \
             hidden by Config::redacted), a URL (URL_KEYS, plant a password in `full()`) \
             or plain text (PLAIN_TEXT_KEYS): {unknown:?}"
        );
        let stale: Vec<&&str> = known.iter().filter(|k| !text.contains(**k)).collect();
        assert!(stale.is_empty(), "listed but gone: {stale:?}");
    }

    #[test]
    fn the_redacted_configuration_shows_no_secret_and_is_accepted_back() {
        let config = full();
        let redacted = config.redacted().unwrap();
        let toml = redacted.to_toml().unwrap();
        for secret in PLANTED {
            assert!(!toml.contains(secret), "{secret} in:\n{toml}");
            assert!(
                !format!("{:?}", redacted.config()).contains(secret),
                "{secret}"
            );
        }
        let hidden: Vec<&str> = redacted.hidden().iter().map(|h| h.key.as_str()).collect();
        for key in [
            "broker",
            "redis.shards[0]",
            "redis.shards[1]",
            "redis_source.url",
            "auth.jwt_secret",
            "auth.api_keys[0].key",
            "webhooks.url",
            "webhooks.secret",
            "postgres.url",
            "store.url",
            "ops.token",
        ] {
            assert!(hidden.contains(&key), "{key} not in {hidden:?}");
            assert!(
                toml.contains(&format!("#   {key}: ")),
                "{key} named:\n{toml}"
            );
        }
        // Everything else is shown as it is.
        assert!(
            toml.contains("redis://herald:REDACTED@127.0.0.1:6379/0"),
            "{toml}"
        );
        assert!(toml.contains("token=REDACTED"), "{toml}");
        assert!(toml.contains(&format!("jwt_secret = \"{SECRET_PLACEHOLDER}\"")));
        let shown = redacted.config();
        assert_eq!(shown.listen, config.listen);
        assert_eq!(shown.namespaces, config.namespaces);
        assert_eq!(
            shown.postgres.as_ref().unwrap().routes,
            config.postgres.as_ref().unwrap().routes
        );
        assert_eq!(
            shown.auth.api_keys[0].key_sha256.as_deref(),
            // printf api-key-e81f | sha256sum
            Some("12dc9b7ec4479a5a39084afccc94df4a93cd08624f38b54730bb49a13dcbbe47")
        );
        let mut auth = shown.auth.clone();
        (auth.jwt_public_key, auth.jwks) = (None, None);
        let auth = crate::auth::Authenticator::from_config(&auth).unwrap();
        assert_eq!(
            auth.authenticate("api-key-e81f").unwrap().credential,
            crate::auth::Credential::ApiKey("backend".into()),
            "the hash stands for the same key"
        );
        assert_eq!(shown.auth.api_keys[0].key, None);
        assert_eq!(shown.auth.api_keys[1], config.auth.api_keys[1]);

        // Accepted back as it is, as a file.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.toml");
        std::fs::write(&path, &toml).unwrap();
        let reloaded = Config::load_with_env(Some(&path), []).unwrap();
        assert_eq!(&reloaded, shown);
        // Printing it again gives the same, but for the key now given by its hash.
        let api_key_line = "#   auth.api_keys[0].key: shown as its key_sha256, which the hub accepts the same way\n";
        assert!(toml.contains(api_key_line));
        assert_eq!(
            reloaded.redacted().unwrap().to_toml().unwrap(),
            toml.replace(api_key_line, "")
        );
        // ...but no hub signs or verifies with a placeholder secret.
        let mut disarmed = reloaded.clone();
        assert_eq!(
            disarmed.disarm_placeholders(),
            ["auth.jwt_secret", "webhooks.secret", "ops.token"]
        );
        for secret in [
            &disarmed.auth.jwt_secret,
            &disarmed.webhooks.secret,
            &disarmed.ops.token,
        ] {
            let secret = secret.as_deref().unwrap();
            assert!(
                secret != SECRET_PLACEHOLDER && secret.len() >= 32,
                "{secret}"
            );
        }
        assert!(disarmed.validate().is_ok());
        assert!(full().disarm_placeholders().is_empty());
    }

    #[test]
    fn the_secrets_are_masked_in_any_text() {
        let config = full();
        let secrets = config.secrets();
        for secret in PLANTED {
            let line = format!(r#"connecting: Url {{ password: Some("{secret}") }} with {secret}"#);
            let hidden = secrets.hide(&line);
            assert!(!hidden.contains(secret), "{hidden}");
            assert!(hidden.contains("REDACTED"), "{hidden}");
        }
        assert!(!format!("{secrets:?}").contains("pw-"));
        let debug = format!("{config:?}");
        for secret in PLANTED {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
        // Percent-encoded passwords are known decoded too.
        let encoded = Config {
            broker: "redis://:p%40ss%2Fword@127.0.0.1:6379".into(),
            ..Config::default()
        };
        let hidden = encoded.secrets().hide("AUTH p@ss/word and p%40ss%2Fword");
        assert_eq!(hidden, "AUTH REDACTED and REDACTED");
        // Short secrets are left to the URL rule alone.
        let mut short = Secrets::default();
        short.add("pw");
        assert_eq!(
            short.hide("a pw in redis://:pw@h"),
            "a pw in redis://:REDACTED@h"
        );
    }
}
