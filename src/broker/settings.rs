//! The settings of the brokers: the `broker` key ([`BrokerKind`]), and the sections
//! of the brokers for several nodes (`[redis]`, `[nats]`), each with its check.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::core::Partitions;
use crate::core::partition::MAX_PARTITIONS;
use crate::settings::ConfigError;

/// Which broker a `broker` value selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerKind {
    /// One node, history in memory.
    Memory,
    /// Redis: `redis://HOST:PORT[/DB]` (or `redis+unix:///path`).
    Redis(String),
    /// NATS with JetStream: `nats://HOST:PORT` (several comma-separated for a cluster).
    Nats(String),
}

impl BrokerKind {
    /// Reads a `broker` value.
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        let bad = |why: &str| {
            ConfigError::new(
                "broker",
                format!(
                    "{value:?} {why}; use `memory`, `redis://HOST:PORT[/DB]` or `nats://HOST:PORT`"
                ),
            )
        };
        if value == "memory" {
            return Ok(Self::Memory);
        }
        let Some((scheme, rest)) = value.split_once("://") else {
            return Err(bad("is not a broker"));
        };
        match scheme {
            "redis" | "redis+unix" | "unix" => {
                if rest.is_empty() {
                    return Err(bad("names no server"));
                }
                if !cfg!(feature = "redis") {
                    return Err(bad(
                        "needs the `redis` feature, which this build of herald does not have",
                    ));
                }
                Ok(Self::Redis(value.to_owned()))
            }
            "nats" | "tls" => {
                // A cluster is a comma-separated list; each server may repeat the scheme.
                let servers = rest.split(',').map(|server| {
                    server
                        .trim()
                        .strip_prefix(&format!("{scheme}://"))
                        .unwrap_or(server.trim())
                });
                if servers.clone().any(|s| s.is_empty() || s.contains('/')) {
                    return Err(bad("is not nats://HOST:PORT"));
                }
                if !cfg!(feature = "nats") {
                    return Err(bad(
                        "needs the `nats` feature, which this build of herald does not have",
                    ));
                }
                Ok(Self::Nats(value.to_owned()))
            }
            _ => Err(bad("is not a broker")),
        }
    }
}

/// The servers a Redis `broker` value lists: one, or several comma-separated (the
/// nodes of a Redis Cluster), each with its scheme (`redis://` when left out).
pub fn redis_nodes(value: &str) -> Vec<String> {
    let scheme = value.split_once("://").map_or("redis", |(s, _)| s);
    value
        .split(',')
        .map(str::trim)
        .filter(|node| !node.is_empty())
        .map(|node| {
            if node.contains("://") {
                node.to_owned()
            } else {
                format!("{scheme}://{node}")
            }
        })
        .collect()
}

/// The memory broker (`[memory]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryConfig {
    /// How many partitions the channels are spread over, each with its own
    /// sequence and lock, so that publishes to channels of different partitions do
    /// not wait for each other. With one (the default), every connection receives
    /// events in one order across all channels and ids are `{epoch}-{seq}`; with
    /// more, ids are cursors holding a position per partition (see docs/design.md).
    pub partitions: u16,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self { partitions: 1 }
    }
}

impl MemoryConfig {
    /// Checks the section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if Partitions::new(self.partitions).is_none() {
            return Err(ConfigError::new(
                "memory.partitions",
                format!("must be from 1 to {MAX_PARTITIONS}"),
            ));
        }
        Ok(())
    }

    /// The partitions it asks for.
    pub fn partitions(&self) -> Partitions {
        Partitions::new(self.partitions).unwrap_or_default()
    }
}

/// The Redis broker (`[redis]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Every key lives under `{prefix}:` (the braces are a hash tag: one slot in a
    /// Redis Cluster). Nodes of one deployment share it; deployments sharing a Redis
    /// use different ones.
    pub prefix: String,
    /// How long one command may take; a publish that gets no answer in time is
    /// answered 503.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// The longest wait between two attempts to reconnect.
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// Events kept in the shared catch-up log, from which a node whose subscription
    /// dropped delivers what it missed. Past it, the node closes its connections and
    /// their clients resume from channel history.
    pub log_size: usize,
    /// Redis servers to spread channel histories over (`redis://HOST:PORT[/DB]`
    /// each; in the environment, comma-separated). The first one also orders
    /// events and carries the fan-out between nodes. Every node lists the same
    /// servers in the same order. Empty: the one server of `broker`.
    #[serde(deserialize_with = "crate::settings::list_or_commas")]
    pub shards: Vec<String>,
    /// How many partitions the channels are spread over, each with its own
    /// sequence, catch-up log, histories and publisher ids under its own hash tag
    /// (`{prefix:N}`), so that publishes to different partitions do not wait for
    /// each other. With one (the default), every connection receives events in one
    /// order across all channels; with more, ids are cursors (see docs/design.md).
    /// Every node of a deployment sets the same number.
    pub partitions: u16,
    /// With several partitions, a node receives the events of a partition only
    /// while a local connection is on one of its channels: this is how long it goes
    /// on after the last one left, so that connections coming and going do not make
    /// it subscribe and unsubscribe each time.
    #[serde(with = "humantime_serde")]
    pub follow_linger: Duration,
    /// Replicas that must have a publish (`WAIT`) before it is answered 2xx; 0 (the
    /// default) answers once the primary has it. A publish not acknowledged by as
    /// many within `wait_timeout` is answered 503: it was published, but may be lost
    /// if the primary fails now; retry it with the same publisher ids.
    pub wait_replicas: u32,
    /// How long a publish waits for `wait_replicas` (and `wait_aof`).
    #[serde(with = "humantime_serde")]
    pub wait_timeout: Duration,
    /// Also wait until the primary (and `wait_replicas` replicas) have written the
    /// publish to their append-only file (`WAITAOF`, Redis 7.2 and later).
    pub wait_aof: bool,
    /// Speak the Redis Cluster protocol: `broker` then lists one or more nodes of
    /// the cluster, comma-separated (`redis://HOST:PORT,redis://HOST:PORT`), from
    /// which the rest is found. Each partition lives on the primary serving its
    /// hash tag, and the events reach nodes over sharded pub/sub (Redis 7).
    pub cluster: bool,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            prefix: "herald".into(),
            timeout: Duration::from_secs(2),
            reconnect_max: Duration::from_secs(5),
            log_size: 10_000,
            shards: Vec::new(),
            partitions: 1,
            follow_linger: Duration::from_secs(30),
            wait_replicas: 0,
            wait_timeout: Duration::from_secs(1),
            wait_aof: false,
            cluster: false,
        }
    }
}

/// Where JetStream keeps the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NatsStorage {
    /// On disk: survives a restart of the NATS server.
    #[default]
    File,
    /// In memory: faster, lost when the server restarts.
    Memory,
}

/// The NATS broker (`[nats]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// The JetStream stream holding the events (created when missing).
    pub stream: String,
    /// The subject events are published on; the stream takes only this subject.
    pub subject: String,
    /// Replicas of the stream in a NATS cluster.
    pub replicas: usize,
    /// Where the stream is kept: `file` or `memory`.
    pub storage: NatsStorage,
    /// Events the stream keeps at most (0: no limit besides age). A node that starts
    /// rebuilds its history from what the stream keeps.
    pub max_messages: u64,
    /// Bytes the stream keeps at most (0: no limit).
    pub max_bytes: u64,
    /// How long JetStream remembers a publisher id to drop a repeated publish.
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
    /// How long one request (a publish, a stream lookup) may take.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// The longest wait between two attempts to reconnect.
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// How many partitions the channels are spread over, each a stream of its own
    /// (`{stream}_{N}`, subject `{subject}.{N}`) with its own sequence, so that a
    /// node reads and keeps only the partitions its connections need. With one
    /// (the default), one stream orders every channel; with more, ids are cursors
    /// (see docs/design.md). Every node of a deployment sets the same number.
    pub partitions: u16,
    /// With several partitions, a node reads a partition's stream only while a
    /// local connection is on one of its channels (or it publishes with publisher
    /// ids to it): this is how long it goes on after the last one left, before it
    /// drops the partition's history from memory.
    #[serde(with = "humantime_serde")]
    pub follow_linger: Duration,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            stream: "HERALD".into(),
            subject: "herald.events".into(),
            replicas: 1,
            storage: NatsStorage::File,
            max_messages: 1_000_000,
            max_bytes: 0,
            duplicate_window: Duration::from_secs(120),
            timeout: Duration::from_secs(2),
            reconnect_max: Duration::from_secs(5),
            partitions: 1,
            follow_linger: Duration::from_secs(30),
        }
    }
}

impl RedisConfig {
    /// Checks the section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.prefix.is_empty()
            || self
                .prefix
                .chars()
                .any(|c| c.is_control() || c.is_whitespace() || c == '{' || c == '}')
        {
            return Err(ConfigError::new(
                "redis.prefix",
                "must be non-empty, without white space or braces",
            ));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::new("redis.timeout", "must be longer than 0s"));
        }
        if self.reconnect_max < Duration::from_millis(100) {
            return Err(ConfigError::new(
                "redis.reconnect_max",
                "must be at least 100ms",
            ));
        }
        if self.log_size == 0 {
            return Err(ConfigError::new("redis.log_size", "must be greater than 0"));
        }
        if Partitions::new(self.partitions).is_none() {
            return Err(ConfigError::new(
                "redis.partitions",
                format!("must be from 1 to {MAX_PARTITIONS}"),
            ));
        }
        if self.wait_timeout.is_zero() && (self.wait_replicas > 0 || self.wait_aof) {
            return Err(ConfigError::new(
                "redis.wait_timeout",
                "must be longer than 0s when redis.wait_replicas or redis.wait_aof is set",
            ));
        }
        if (self.wait_replicas > 0 || self.wait_aof) && self.wait_timeout >= self.timeout {
            return Err(ConfigError::new(
                "redis.wait_timeout",
                "must be shorter than redis.timeout, which bounds every command",
            ));
        }
        if self.cluster && !self.shards.is_empty() {
            return Err(ConfigError::new(
                "redis.cluster",
                "cannot be combined with redis.shards: in a cluster, set redis.partitions \
                 to spread the channels over its primaries",
            ));
        }
        if self.partitions > 1 && self.shards.len() > 1 {
            return Err(ConfigError::new(
                "redis.partitions",
                "cannot be combined with redis.shards: use one or the other",
            ));
        }
        for (i, shard) in self.shards.iter().enumerate() {
            if !matches!(BrokerKind::parse(shard), Ok(BrokerKind::Redis(_))) {
                return Err(ConfigError::new(
                    "redis.shards",
                    format!("{shard:?} is not a Redis URL (redis://HOST:PORT[/DB])"),
                ));
            }
            if self.shards[..i].contains(shard) {
                return Err(ConfigError::new(
                    "redis.shards",
                    format!("{shard:?} is listed twice"),
                ));
            }
        }
        Ok(())
    }
}

impl NatsConfig {
    /// Checks the section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.stream.is_empty()
            || self.stream.chars().any(|c| {
                c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>' | '/' | '\\')
            })
        {
            return Err(ConfigError::new(
                "nats.stream",
                "must be a JetStream stream name: no white space, '.', '*', '>', '/' or '\\'",
            ));
        }
        if self.subject.is_empty()
            || self.subject.starts_with('.')
            || self.subject.ends_with('.')
            || self.subject.contains("..")
            || self
                .subject
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '*' | '>'))
        {
            return Err(ConfigError::new(
                "nats.subject",
                "must be a plain NATS subject such as herald.events (no wildcards)",
            ));
        }
        if self.replicas == 0 || self.replicas > 5 {
            return Err(ConfigError::new("nats.replicas", "must be 1 to 5"));
        }
        for (key, value) in [
            ("nats.timeout", self.timeout),
            ("nats.duplicate_window", self.duplicate_window),
        ] {
            if value.is_zero() {
                return Err(ConfigError::new(key, "must be longer than 0s"));
            }
        }
        if self.reconnect_max < Duration::from_millis(100) {
            return Err(ConfigError::new(
                "nats.reconnect_max",
                "must be at least 100ms",
            ));
        }
        if Partitions::new(self.partitions).is_none() {
            return Err(ConfigError::new(
                "nats.partitions",
                format!("must be from 1 to {MAX_PARTITIONS}"),
            ));
        }
        Ok(())
    }

    /// The partitions it asks for.
    pub fn partitions(&self) -> Partitions {
        Partitions::new(self.partitions).unwrap_or_default()
    }

    /// The stream and the subject of partition `partition` of `partitions`.
    pub fn stream_of(&self, partition: u16, partitions: Partitions) -> (String, String) {
        if partitions.is_partitioned() {
            (
                format!("{}_{partition}", self.stream),
                format!("{}.{partition}", self.subject),
            )
        } else {
            (self.stream.clone(), self.subject.clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_values() {
        assert_eq!(BrokerKind::parse("memory").unwrap(), BrokerKind::Memory);
        for bad in ["kafka", "redis://", "nats://h:1/x", "http://h"] {
            assert_eq!(BrokerKind::parse(bad).unwrap_err().key, "broker", "{bad}");
        }
        if cfg!(feature = "redis") {
            assert!(matches!(
                BrokerKind::parse("redis://127.0.0.1:6379/2"),
                Ok(BrokerKind::Redis(_))
            ));
        }
        if cfg!(feature = "nats") {
            for cluster in [
                "nats://127.0.0.1:4222",
                "nats://10.0.0.6:4222,10.0.0.7:4222",
                "nats://10.0.0.6:4222,nats://10.0.0.7:4222",
                "nats://u:p@10.0.0.6:4222, nats://u:p@10.0.0.7:4222",
            ] {
                assert!(
                    matches!(BrokerKind::parse(cluster), Ok(BrokerKind::Nats(_))),
                    "{cluster}"
                );
            }
            assert!(BrokerKind::parse("nats://h:1,nats://h:2/x").is_err());
            assert!(BrokerKind::parse("nats://h:1,").is_err());
        }
    }
}
