//! The settings of the Redis pub/sub event source (`[redis_source]`): which Redis
//! channels become which Herald channels, and how a message is read.

use serde::{Deserialize, Serialize};

use crate::broker::BrokerKind;
use crate::settings::ConfigError;

/// Events that applications `PUBLISH` to Redis channels themselves (`[redis_source]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSourceConfig {
    /// The Redis to subscribe to; by default the broker's when it is Redis.
    pub url: Option<String>,
    /// Which Redis channels become which Herald channels, first match wins.
    pub routes: Vec<RedisRoute>,
}

/// What a message looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RedisMessageFormat {
    /// The whole message is the event's data (JSON when it parses, text otherwise).
    #[default]
    Data,
    /// The message is a JSON object with the data and, optionally, the type, id and
    /// retry in named fields.
    Envelope,
}

/// One mapping from Redis channels to a Herald channel.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RedisRoute {
    /// A Redis channel name, or a pattern where `*` matches any run of characters
    /// (`user:*`).
    pub pattern: String,
    /// The Herald channel: text where `{1}`, `{2}`... stand for what each `*`
    /// matched and `{channel}` for the whole Redis channel name. Default
    /// `{channel}`: the same name.
    #[serde(default)]
    pub channel: Option<String>,
    /// Send to every connection (`$broadcast`) instead of a channel.
    #[serde(default)]
    pub broadcast: bool,
    /// `data` (default) or `envelope`.
    #[serde(default)]
    pub format: RedisMessageFormat,
    /// The event type for `data` messages, and for envelopes without one.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Envelope field holding the data.
    #[serde(default = "default_data_field")]
    pub data_field: String,
    /// Envelope field holding the event type.
    #[serde(default = "default_type_field")]
    pub type_field: String,
    /// Envelope field holding an id of the publisher's (kept, and used to drop
    /// repeats).
    #[serde(default = "default_id_field")]
    pub id_field: String,
}

fn default_data_field() -> String {
    "data".into()
}

fn default_type_field() -> String {
    "type".into()
}

fn default_id_field() -> String {
    "id".into()
}

impl RedisSourceConfig {
    /// The Redis URL to use, given the broker.
    pub fn url<'a>(&'a self, broker: &'a BrokerKind) -> Option<&'a str> {
        match (&self.url, broker) {
            (Some(url), _) => Some(url),
            (None, BrokerKind::Redis(url)) => Some(url),
            _ => None,
        }
    }

    /// Checks the section (its own Redis, or the broker's).
    pub fn validate(&self, broker: &BrokerKind) -> Result<(), ConfigError> {
        match self.url(broker) {
            None => {
                return Err(ConfigError::new(
                    "redis_source.url",
                    "is needed unless the broker is Redis",
                ));
            }
            Some(url) => {
                if !(url.starts_with("redis://")
                    || url.starts_with("redis+unix://")
                    || url.starts_with("unix://"))
                {
                    return Err(ConfigError::new(
                        "redis_source.url",
                        format!("{url:?} is not a redis:// URL"),
                    ));
                }
                if !cfg!(feature = "redis") {
                    return Err(ConfigError::new(
                        "redis_source",
                        "needs the `redis` feature, which this build of herald does not have",
                    ));
                }
            }
        }
        if self.routes.is_empty() {
            return Err(ConfigError::new(
                "redis_source.routes",
                "name at least one route: [[redis_source.routes]] pattern = \"user:*\"",
            ));
        }
        for (i, route) in self.routes.iter().enumerate() {
            route.validate(&format!("redis_source.routes[{i}]"))?;
        }
        Ok(())
    }
}

impl RedisRoute {
    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if self.pattern.is_empty()
            || self
                .pattern
                .chars()
                .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '?' | '[' | ']' | '\\'))
        {
            return Err(ConfigError::new(
                format!("{key}.pattern"),
                "must be a Redis channel name, with `*` as the only wildcard",
            ));
        }
        if self.broadcast && self.channel.is_some() {
            return Err(ConfigError::new(
                format!("{key}.channel"),
                "a route goes to a channel or to broadcast, not both",
            ));
        }
        if let Some(template) = &self.channel {
            let stars = self.pattern.matches('*').count();
            let mut rest = template.as_str();
            while let Some(open) = rest.find('{') {
                let Some(close) = rest[open..].find('}') else {
                    return Err(ConfigError::new(
                        format!("{key}.channel"),
                        format!("{template:?} has a `{{` without `}}`"),
                    ));
                };
                let name = &rest[open + 1..open + close];
                let ok =
                    name == "channel" || name.parse::<usize>().is_ok_and(|n| n >= 1 && n <= stars);
                if !ok {
                    return Err(ConfigError::new(
                        format!("{key}.channel"),
                        format!(
                            "{{{name}}} is not `{{channel}}` or `{{1}}`..`{{{stars}}}` (one per `*` of the pattern)"
                        ),
                    ));
                }
                rest = &rest[open + close + 1..];
            }
        }
        if let Some(kind) = &self.kind {
            crate::core::event::validate_type(kind)
                .map_err(|e| ConfigError::new(format!("{key}.type"), e.to_string()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_checked() {
        let route = |pattern: &str, channel: Option<&str>| RedisRoute {
            pattern: pattern.into(),
            channel: channel.map(str::to_owned),
            broadcast: false,
            format: RedisMessageFormat::Data,
            kind: None,
            data_field: default_data_field(),
            type_field: default_type_field(),
            id_field: default_id_field(),
        };
        assert!(route("user:*", Some("user:{1}")).validate("r").is_ok());
        assert!(
            route("a:*:b:*", Some("{2}-{1}-{channel}"))
                .validate("r")
                .is_ok()
        );
        assert!(route("user:*", Some("user:{2}")).validate("r").is_err());
        assert!(route("user:*", Some("user:{1")).validate("r").is_err());
        assert!(route("user:?", None).validate("r").is_err());
        let mut both = route("global", Some("x"));
        both.broadcast = true;
        assert!(both.validate("r").is_err());
    }
}
