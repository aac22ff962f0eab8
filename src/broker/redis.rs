//! The Redis broker: several nodes share positions, history and delivery through
//! one Redis, or through several with channel histories sharded over them (the
//! `shards` module: the first server keeps the order, the log and the fan-out, as below,
//! and the histories are written to each channel's server from the log).
//!
//! # Publishing
//!
//! One Lua script, atomic in Redis, accepts a batch: for each event it takes the next
//! position from a counter (`INCR`), appends the event to the stream of each of its
//! channels (`XADD` with the position as entry id, trimmed to the channel's history
//! size and age), to the shared catch-up log, and `PUBLISH`es it to every node. Scripts
//! run one at a time, so positions are assigned in the order events are published
//! and the messages leave Redis in that order; every node therefore receives the
//! events of all channels in position order.
//!
//! # Delivering
//!
//! Each node keeps one pub/sub connection and hands every event to its
//! fan-out in position order. With several partitions (one broker of this kind per
//! partition), a node follows a partition only while its connections need it
//! (`OnDemand`): a subscription asks for the partitions of its channels before it
//! reads where to start, and the node unsubscribes from a partition `follow_linger`
//! after its last local connection on it left. Positions are consecutive, so a message that skips
//! ahead shows that the node missed some (its subscription dropped, Redis restarted):
//! it reads the missing stretch from the catch-up log and delivers it first. If the
//! log no longer holds it, the node closes its local connections and their clients
//! resume from channel history, where a gap that history cannot cover gets a
//! `reset`. Nothing is skipped silently.
//!
//! # Ids
//!
//! Hub-assigned ids are `{epoch}-{seq}`. The epoch is created once in Redis (`SET` if
//! missing), so ids stay valid across hub restarts for as long as Redis keeps the
//! history. If Redis loses its data the epoch goes with it; if it comes back from an
//! older snapshot, the first node that had seen newer positions starts a new epoch.
//! Either way ids from before are unknown, and a client resuming with one gets a
//! `reset` rather than events it has already seen under the same id.
//!
//! Publisher-supplied ids are kept in keys `id:{id}` (with the longest history age
//! as their lifetime, so at least as long as their event is in history), holding
//! the event's position and a digest of its channels. They make the ids resumable
//! on every node and publishing one again with the same channels a no-op answered
//! `duplicate`; publishing one with other channels is refused, and the script checks
//! every id of a batch before it publishes any event of it.
//!
//! # Keys
//!
//! Every key is under `{prefix}:`, the braces being a Redis Cluster hash tag: `seq`,
//! `epoch`, `log` (the catch-up stream), `h:{channel}` (history streams),
//! `f:{channel}` (the newest position trimmed from a channel), `id:{id}`, `channels`
//! (a sorted set of channels by the expiry of their newest event) and `forgotten`
//! (4,096 buckets holding the newest position of channels dropped when their history
//! expired). Nodes publish on the pub/sub channel `{prefix}:events`.

mod cluster;
mod follow;
mod link;
mod shards;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use parking_lot::Mutex;
use redis::Value;
use tokio_util::sync::CancellationToken;

use self::link::{Link, Target};
use self::shards::{Shard, Shards};
use super::RedisConfig;
use super::on_demand::OnDemand;
use super::{Accepted, Broker, BrokerError, LocalDelivery, Replay, ResumeFrom, wire};
use crate::core::{
    ChannelName, ChannelSet, Demand, Event, NewEvent, Partition, Partitions, Policies, Resumed,
};
use crate::redact::redact_url;
use crate::settings::ConfigError;

/// Channels dropped per upkeep run at most.
const MAINTAIN_BATCH: usize = 1000;

fn script(body: &str) -> redis::Script {
    redis::Script::new(&format!("{}\n{body}", include_str!("redis/common.lua")))
}

#[derive(Debug)]
struct Scripts {
    publish: redis::Script,
    replay: redis::Script,
    sync: redis::Script,
    maintain: redis::Script,
}

/// What the broker's tasks share.
#[derive(Debug)]
struct Shared {
    /// `{prefix}:`.
    base: String,
    config: RedisConfig,
    policies: Arc<Policies>,
    delivery: LocalDelivery,
    /// Where the follower subscribes: the one server, or the primary serving the
    /// partition in a cluster.
    events: Events,
    link: Arc<Link>,
    scripts: Scripts,
    /// `None` while the node follows the event stream; otherwise why not.
    following: Mutex<Option<String>>,
    history_channels: AtomicUsize,
    /// The history servers when channels are sharded over several.
    shards: Option<Shards>,
    /// When this node started, in Redis time (milliseconds since the Unix epoch).
    started_ms: u64,
    /// The partition this broker orders (0 with one partition).
    partition: Partition,
    /// Set when this node follows the partition only while its connections need it.
    on_demand: Option<OnDemand>,
}

/// Where a node receives a partition's events from.
#[derive(Debug)]
enum Events {
    /// `SUBSCRIBE` on the one server.
    Server(redis::Client),
    /// `SSUBSCRIBE` on whichever primary serves the partition's slot, signing in
    /// as the cluster's nodes say.
    Cluster {
        username: Option<String>,
        password: Option<String>,
        /// The host of the first node listed: Redis names a node's own address
        /// as empty (or `?`) until it knows it, meaning "where you asked".
        seed_host: String,
    },
}

/// The command connection's target for `url`: the one server, or with
/// `redis.cluster` the cluster its comma-separated nodes belong to.
fn target(url: &str, config: &RedisConfig) -> Result<(Target, Events), ConfigError> {
    let bad = |e: redis::RedisError| ConfigError::new("broker", format!("{url:?}: {e}"));
    if !config.cluster {
        let client = redis::Client::open(url).map_err(bad)?;
        return Ok((Target::Server(client.clone()), Events::Server(client)));
    }
    let nodes = super::redis_nodes(url);
    let first =
        redis::IntoConnectionInfo::into_connection_info(nodes.first().map_or(url, String::as_str))
            .map_err(bad)?;
    let settings = first.redis_settings();
    let seed_host = match first.addr() {
        redis::ConnectionAddr::Tcp(host, _) => host.clone(),
        redis::ConnectionAddr::TcpTls { host, .. } => host.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let events = Events::Cluster {
        username: settings.username().map(str::to_owned),
        password: settings.password().map(str::to_owned),
        seed_host,
    };
    let client = redis::cluster::ClusterClient::builder(nodes)
        .connection_timeout(config.timeout)
        .response_timeout(config.timeout)
        .build()
        .map_err(bad)?;
    Ok((Target::Cluster(Box::new(client)), events))
}

/// How long a partition followed on demand stays followed after a connection
/// asked for it or the last one left: `follow_linger`, and at least twice the
/// timeout, which bounds the time from asking to registering (the connection
/// waits for the events at most that long, then reads where it starts).
fn follow_hold(config: &RedisConfig) -> Duration {
    config.follow_linger.max(config.timeout * 2)
}

/// Now, in milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Shared {
    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.base)
    }

    fn events_channel(&self) -> String {
        self.key("events")
    }

    /// Declares the partition's keys `names` to a script, the first of them
    /// choosing the server in a cluster; every script declares every key it
    /// touches, so a cluster moving the partition's slot can redirect it whole.
    fn declare(&self, call: &mut redis::ScriptInvocation<'_>, names: &[&str]) {
        for name in names {
            call.key(self.key(name));
        }
    }

    /// Declares the keys of `channel`'s history to a script.
    fn declare_channel(&self, call: &mut redis::ScriptInvocation<'_>, channel: &str) {
        call.key(format!("{}h:{channel}", self.base))
            .key(format!("{}f:{channel}", self.base));
    }

    fn candidate_epoch() -> String {
        format!("{:016x}", rand::random::<u64>())
    }

    fn not_following(&self) -> Option<String> {
        self.following.lock().clone()
    }
}

/// The broker for several nodes sharing one Redis.
#[derive(Debug)]
pub struct RedisBroker {
    shared: Arc<Shared>,
    stop: CancellationToken,
    /// The command connection's, when it is shared with other partitions: it is
    /// closed when the last of them is dropped.
    _link: Option<CommandLink>,
}

/// One command connection to a Redis server for the partitions it holds: their
/// commands are pipelined on it, rather than each partition keeping a connection of
/// its own. Cheap to clone; the connection closes when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct CommandLink {
    link: Arc<Link>,
    _close: Arc<tokio_util::sync::DropGuard>,
}

impl CommandLink {
    /// Connects (in the background, reconnecting as needed) to `url`. Must be
    /// called inside a Tokio runtime.
    pub fn open(
        url: &str,
        config: &RedisConfig,
        stats: Arc<crate::stats::Stats>,
    ) -> Result<Self, ConfigError> {
        let (target, _) = target(url, config)?;
        let link = Arc::new(Link::new(target, config.timeout, config.reconnect_max));
        let stop = CancellationToken::new();
        tokio::spawn(link.clone().run(stop.clone(), stats));
        Ok(Self {
            link,
            _close: Arc::new(stop.drop_guard()),
        })
    }
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl RedisBroker {
    /// Starts a broker for `url` (`redis://HOST:PORT[/DB]`). It connects in the
    /// background and keeps reconnecting, so a node starts even while Redis is down
    /// (unready until it is reachable). Must be called inside a Tokio runtime.
    pub fn start(
        url: &str,
        config: &RedisConfig,
        policies: Arc<Policies>,
        delivery: LocalDelivery,
    ) -> Result<Self, ConfigError> {
        Self::start_partition(url, config, policies, delivery, 0, None, None)
    }

    /// Starts the broker of partition `partition` of a partitioned deployment (see
    /// [`super::partitioned`]): every key of it lives under `{prefix:partition}:`,
    /// one hash tag per partition. With `demand`, the node follows the partition
    /// only while its connections need it (see [`Broker::follow`]); with `command`,
    /// its commands go over that connection, shared with other partitions.
    /// Otherwise as [`RedisBroker::start`].
    pub fn start_partition(
        url: &str,
        config: &RedisConfig,
        policies: Arc<Policies>,
        delivery: LocalDelivery,
        partition: Partition,
        demand: Option<Arc<Demand>>,
        command: Option<CommandLink>,
    ) -> Result<Self, ConfigError> {
        let (target, events) = target(url, config)?;
        let own_link = command.is_none();
        let (link, link_guard) = match command {
            Some(command) => (command.link.clone(), Some(command)),
            None => (
                Arc::new(Link::new(target, config.timeout, config.reconnect_max)),
                None,
            ),
        };
        let mut shard_links = Vec::new();
        if config.shards.len() > 1 {
            shard_links.push(Shard {
                url: redact_url(&config.shards[0]),
                link: link.clone(),
            });
            for url in &config.shards[1..] {
                let client = redis::Client::open(url.as_str())
                    .map_err(|e| ConfigError::new("redis.shards", format!("{url:?}: {e}")))?;
                shard_links.push(Shard {
                    url: redact_url(url),
                    link: Arc::new(Link::new(
                        Target::Server(client),
                        config.timeout,
                        config.reconnect_max,
                    )),
                });
            }
        }
        let started_ms = now_ms();
        let shared = Arc::new(Shared {
            base: match Partitions::new(config.partitions) {
                // In a cluster, tags that spread the partitions over the primaries.
                Some(p) if p.is_partitioned() && config.cluster => format!(
                    "{{{}}}:",
                    cluster::spread_tag(&config.prefix, partition, p.total())
                ),
                Some(p) if p.is_partitioned() => format!("{{{}:{partition}}}:", config.prefix),
                _ => format!("{{{}}}:", config.prefix),
            },
            config: config.clone(),
            policies,
            delivery,
            events,
            link: link.clone(),
            scripts: Scripts {
                publish: script(include_str!("redis/publish.lua")),
                replay: script(include_str!("redis/replay.lua")),
                sync: script(include_str!("redis/sync.lua")),
                maintain: script(include_str!("redis/maintain.lua")),
            },
            // Following on demand, nothing is followed until a connection asks.
            following: Mutex::new(demand.is_none().then(|| "connecting to redis".into())),
            history_channels: AtomicUsize::new(0),
            shards: (!shard_links.is_empty()).then(|| Shards::new(shard_links)),
            started_ms,
            partition,
            on_demand: demand.map(|demand| OnDemand::new(demand, partition, follow_hold(config))),
        });
        let stop = CancellationToken::new();
        if own_link {
            tokio::spawn(link.run(stop.clone(), shared.delivery.stats().clone()));
        }
        if let Some(shards) = &shared.shards {
            for shard in &shards.list[1..] {
                let stats = shared.delivery.stats().clone();
                tokio::spawn(shard.link.clone().run(stop.clone(), stats));
            }
        }
        tokio::spawn(follow::Follower::new(shared.clone()).run(stop.clone()));
        Ok(Self {
            shared,
            stop,
            _link: link_guard,
        })
    }

    /// Runs the replay script on one server for `channels`; `candidate` is the
    /// candidate epoch on the sequencer, empty on a history shard (where `id` is the
    /// position the sequencer resolved).
    async fn replay_on(
        &self,
        link: &Link,
        candidate: &str,
        id: &str,
        channels: &[&ChannelName],
    ) -> Result<Vec<Value>, BrokerError> {
        let sh = &self.shared;
        let mut call = sh.scripts.replay.prepare_invoke();
        sh.declare(&mut call, &["seq", "epoch", "lost", "forgotten"]);
        if !candidate.is_empty() && !id.is_empty() {
            call.key(format!("{}id:{id}", sh.base));
        }
        call.arg(&sh.base)
            .arg(candidate)
            .arg(id)
            .arg(channels.len());
        for channel in channels {
            sh.declare_channel(&mut call, channel.as_str());
            call.arg(channel.as_str())
                .arg(Self::ms(sh.policies.of(channel).history.ttl));
        }
        link.script(&call).await
    }

    /// Waits, as `redis.wait_replicas` and `redis.wait_aof` ask, until what this
    /// node wrote is on that many replicas (and in the append-only files).
    async fn wait_durable(&self) -> Result<(), BrokerError> {
        let config = &self.shared.config;
        if config.wait_replicas == 0 && !config.wait_aof {
            return Ok(());
        }
        let timeout = Self::ms(config.wait_timeout);
        let within = humantime::format_duration(config.wait_timeout);
        if config.wait_aof {
            let mut cmd = redis::cmd("WAITAOF");
            cmd.arg(1).arg(config.wait_replicas).arg(timeout);
            let (local, replicas): (u32, u32) = self
                .shared
                .link
                .cmd_beside(&self.shared.key("seq"), &cmd)
                .await?;
            if local < 1 || replicas < config.wait_replicas {
                return Err(BrokerError::Unavailable(format!(
                    "redis: the events were published, but the append-only files of the \
                     primary ({local} of 1) and of {replicas} of {} replicas had them \
                     within {within}; retry with the same publisher ids",
                    config.wait_replicas
                )));
            }
            return Ok(());
        }
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(config.wait_replicas).arg(timeout);
        let replicas: u32 = self
            .shared
            .link
            .cmd_beside(&self.shared.key("seq"), &cmd)
            .await?;
        if replicas < config.wait_replicas {
            return Err(BrokerError::Unavailable(format!(
                "redis: the events were published, but only {replicas} of {} replicas \
                 acknowledged them within {within}; retry with the same publisher ids",
                config.wait_replicas
            )));
        }
        Ok(())
    }

    fn ms(d: Duration) -> u64 {
        d.as_millis().min(u128::from(u64::MAX)) as u64
    }

    /// Drops the channels on `link` whose history expired, at most
    /// [`MAINTAIN_BATCH`] at once; returns how many channels have history there.
    /// The channels due are read first, so the script can declare their keys; it
    /// drops each only if it still is due by Redis's clock.
    async fn maintain_on(&self, link: &Link) -> Result<u64, BrokerError> {
        let sh = &self.shared;
        let due: Vec<String> = link
            .cmd(
                redis::cmd("ZRANGEBYSCORE")
                    .arg(sh.key("channels"))
                    .arg("-inf")
                    .arg(now_ms())
                    .arg("LIMIT")
                    .arg(0)
                    .arg(MAINTAIN_BATCH),
            )
            .await?;
        let mut call = sh.scripts.maintain.prepare_invoke();
        sh.declare(&mut call, &["channels", "forgotten"]);
        call.arg(&sh.base);
        for channel in &due {
            sh.declare_channel(&mut call, channel);
            call.arg(channel);
        }
        link.script(&call).await
    }
}

/// The epoch and the head position a replay script answered with.
fn epoch_and_head(reply: &[Value]) -> Result<(String, u64), BrokerError> {
    let epoch = reply
        .get(1)
        .and_then(text)
        .ok_or_else(|| unexpected("replay"))?;
    let head = reply
        .get(2)
        .and_then(int)
        .ok_or_else(|| unexpected("replay"))?;
    Ok((epoch, head as u64))
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

fn unexpected(what: &str) -> BrokerError {
    BrokerError::Unavailable(format!("redis: unexpected reply to {what}"))
}

fn time_of(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

#[async_trait]
impl Broker for RedisBroker {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn publish(&self, events: Vec<NewEvent>) -> Result<Vec<Accepted>, BrokerError> {
        let sh = &self.shared;
        if let Some(shards) = &sh.shards {
            // Refuse at once what cannot be written to history now, before it gets a
            // position and reaches subscribers.
            for event in events.iter().filter(|e| !e.ephemeral) {
                for channel in &event.channels {
                    if let Some(why) = shards.down(shards.of(channel)) {
                        return Err(BrokerError::Unavailable(why));
                    }
                }
            }
        }
        let mut call = sh.scripts.publish.prepare_invoke();
        sh.declare(&mut call, &["seq", "epoch", "log", "channels", "forgotten"]);
        call.arg(&sh.base)
            .arg(Shared::candidate_epoch())
            .arg(sh.config.log_size)
            .arg(Self::ms(sh.policies.longest_ttl()).max(1))
            .arg(events.len())
            .arg(if sh.link.is_cluster() {
                "SPUBLISH"
            } else {
                "PUBLISH"
            });
        for event in &events {
            let digest = match &event.id {
                Some(id) => {
                    call.key(format!("{}id:{id}", sh.base));
                    ChannelSet::of(&event.channels).to_hex()
                }
                None => String::new(),
            };
            call.arg(event.id.as_deref().unwrap_or(""))
                .arg(digest)
                .arg(wire::encode(event))
                .arg(if event.ephemeral { "1" } else { "0" });
            // With shards, histories are written from the log afterwards.
            let appended: &[ChannelName] = match sh.shards {
                Some(_) => &[],
                None => &event.channels,
            };
            call.arg(appended.len());
            for channel in appended {
                sh.declare_channel(&mut call, channel.as_str());
                let history = &sh.policies.of(channel).history;
                call.arg(channel.as_str())
                    .arg(history.size)
                    .arg(Self::ms(history.ttl));
            }
        }
        let reply: Vec<Value> = sh.link.script(&call).await?;
        let epoch = reply
            .first()
            .and_then(text)
            .ok_or_else(|| unexpected("publish"))?;
        self.wait_durable().await?;
        if reply.get(2).and_then(text).as_deref() == Some("conflict") {
            let index = reply
                .get(3)
                .and_then(int)
                .and_then(|i| usize::try_from(i).ok())
                .ok_or_else(|| unexpected("publish"))?;
            let id = events
                .get(index)
                .and_then(|e| e.id.clone())
                .ok_or_else(|| unexpected("publish"))?;
            return Err(BrokerError::IdConflict { index, id });
        }
        let mut accepted = Vec::with_capacity(events.len());
        for (event, value) in events.iter().zip(reply.iter().skip(2)) {
            let position = int(value).ok_or_else(|| unexpected("publish"))?;
            let seq = position.unsigned_abs();
            let duplicate = position < 0;
            accepted.push(Accepted {
                id: event.id.clone().unwrap_or_else(|| format!("{epoch}-{seq}")),
                seq,
                duplicate,
            });
        }
        if accepted.len() != events.len() {
            return Err(unexpected("publish"));
        }
        if let Some(shards) = &sh.shards {
            // Answered only once the histories hold the new events.
            let mut upto: BTreeMap<usize, u64> = BTreeMap::new();
            for (event, done) in events.iter().zip(&accepted) {
                if event.ephemeral || done.duplicate {
                    continue;
                }
                for channel in &event.channels {
                    let at = upto.entry(shards.of(channel)).or_default();
                    *at = (*at).max(done.seq);
                }
            }
            for (k, seq) in upto {
                shards.apply(sh, k, &epoch, seq).await?;
            }
        }
        Ok(accepted)
    }

    async fn replay(
        &self,
        channels: &[ChannelName],
        from: ResumeFrom,
    ) -> Result<Replay, BrokerError> {
        let sh = &self.shared;
        let id = match &from {
            ResumeFrom::Earliest => "",
            ResumeFrom::After(id) => id.as_str(),
        };
        // Without shards, one script reads every channel on the one server, atomically.
        // With shards, the sequencer resolves the id and tells the head, every shard
        // involved is brought up to that head, and each reads the channels it holds;
        // events past the head are left to live delivery.
        let by_shard = match &sh.shards {
            Some(shards) => shards.split(channels),
            None => BTreeMap::from([(0, channels.iter().collect())]),
        };
        let on_first: &[&ChannelName] = match &sh.shards {
            Some(_) => &[],
            None => by_shard.get(&0).map_or(&[][..], Vec::as_slice),
        };
        let mut reply: Vec<Value> = self
            .replay_on(&sh.link, &Shared::candidate_epoch(), id, on_first)
            .await?;
        let mut ordered: Vec<ChannelName> = on_first.iter().map(|c| (*c).clone()).collect();
        let status = reply
            .first()
            .and_then(text)
            .ok_or_else(|| unexpected("replay"))?;
        let (epoch, head) = epoch_and_head(&reply)?;
        let head_id = format!("{epoch}-{head}");
        if status == "unknown" {
            return Ok(Replay::unknown(channels, head, head_id));
        }
        let after = reply
            .get(3)
            .and_then(int)
            .ok_or_else(|| unexpected("replay"))?;
        let after = u64::try_from(after).ok();
        if let Some(shards) = &sh.shards {
            let resolved = after.map(|a| a.to_string()).unwrap_or_default();
            for (&k, on_shard) in &by_shard {
                shards.apply(sh, k, &epoch, head).await?;
                let part = self
                    .replay_on(&shards.list[k].link, "", &resolved, on_shard)
                    .await
                    .map_err(|e| match e {
                        BrokerError::Unavailable(why) => BrokerError::Unavailable(format!(
                            "redis shard {}: {why}",
                            shards.list[k].url
                        )),
                        other => other,
                    })?;
                reply.extend(part.into_iter().skip(4));
                ordered.extend(on_shard.iter().map(|c| (*c).clone()));
            }
        }
        let channels = ordered.as_slice();
        let mut found: BTreeMap<u64, (u64, Vec<u8>)> = BTreeMap::new();
        let mut gaps = Vec::new();
        for (channel, value) in channels.iter().zip(reply.iter().skip(4)) {
            match value {
                Value::Array(flat) => {
                    for entry in flat.chunks_exact(3) {
                        let (Some(seq), Some(time), Value::BulkString(blob)) =
                            (int(&entry[0]), int(&entry[1]), &entry[2])
                        else {
                            return Err(unexpected("replay"));
                        };
                        found
                            .entry(seq as u64)
                            .or_insert_with(|| (time as u64, blob.clone()));
                    }
                }
                _ => gaps.push(channel.clone()),
            }
        }
        let events: Vec<Arc<Event>> = found
            .into_iter()
            .filter(|(seq, _)| *seq <= head)
            .filter_map(|(seq, (time, blob))| {
                wire::decode(&blob).map(|d| d.accept(&epoch, seq, time_of(time), sh.partition))
            })
            .collect();
        Ok(Replay::of(Resumed { events, gaps }, after, head, head_id))
    }

    async fn head(&self) -> Result<String, BrokerError> {
        // The replay script with no id and no channel only reads the epoch and the
        // position counter on the sequencer.
        let sh = &self.shared;
        let reply = self
            .replay_on(&sh.link, &Shared::candidate_epoch(), "", &[])
            .await?;
        let (epoch, head) = epoch_and_head(&reply)?;
        Ok(format!("{epoch}-{head}"))
    }

    async fn history(
        &self,
        channel: &ChannelName,
        limit: usize,
    ) -> Result<Vec<Arc<Event>>, BrokerError> {
        let mut events = self
            .replay(std::slice::from_ref(channel), ResumeFrom::Earliest)
            .await?
            .events;
        let skip = events.len().saturating_sub(limit);
        events.drain(..skip);
        Ok(events)
    }

    async fn find_id(&self, id: &str) -> Result<Option<crate::core::Position>, BrokerError> {
        let sh = &self.shared;
        let state: Vec<Value> = sh
            .link
            .cmd(
                redis::cmd("MGET")
                    .arg(sh.key("epoch"))
                    .arg(format!("{}id:{id}", sh.base)),
            )
            .await?;
        let (Some(epoch), Some(known)) =
            (state.first().and_then(text), state.get(1).and_then(text))
        else {
            return Ok(None);
        };
        let seq = known.split(' ').next().and_then(|s| s.parse().ok());
        Ok(seq.map(|seq| crate::core::Position {
            partition: sh.partition,
            epoch: crate::core::partition::epoch_tag(&epoch),
            seq,
        }))
    }

    fn follows_on_demand(&self) -> bool {
        self.shared.on_demand.is_some()
    }

    async fn follow(&self, _channels: &[ChannelName]) {
        if let Some(on_demand) = &self.shared.on_demand {
            // While Redis is unreachable, not worth waiting for (reading the start
            // fails at once); the follower catches up from the log once it is back.
            let reachable = self.shared.link.down().is_none();
            on_demand.ask(reachable, self.shared.link.timeout()).await;
        }
    }

    async fn check(&self) -> Result<(), BrokerError> {
        if let Some(why) = self.shared.link.down() {
            return Err(BrokerError::Unavailable(format!("redis: {why}")));
        }
        if let Some(why) = self.shared.not_following() {
            return Err(BrokerError::Unavailable(format!("redis: {why}")));
        }
        let _: Value = self
            .shared
            .link
            .cmd_beside(&self.shared.key("seq"), &redis::cmd("PING"))
            .await?;
        if let Some(shards) = &self.shared.shards {
            for (k, shard) in shards.list.iter().enumerate().skip(1) {
                if let Some(why) = shards.down(k) {
                    return Err(BrokerError::Unavailable(why));
                }
                let pong: Result<Value, _> = shard.link.cmd(&redis::cmd("PING")).await;
                if let Err(BrokerError::Unavailable(why)) = pong {
                    return Err(BrokerError::Unavailable(format!(
                        "redis shard {}: {why}",
                        shard.url
                    )));
                }
            }
        }
        Ok(())
    }

    async fn maintain(&self) {
        let sh = &self.shared;
        let Some(shards) = &sh.shards else {
            match self.maintain_on(&sh.link).await {
                Ok(n) => sh.history_channels.store(n as usize, Ordering::Relaxed),
                Err(e) => tracing::debug!("redis: upkeep skipped: {e}"),
            }
            return;
        };
        // Also finishes history writes a node left undone (it crashed, or a shard was
        // down), so they do not wait for the next publish or resume.
        let mut total = 0;
        for k in 0..shards.list.len() {
            if let Err(e) = shards.catch_up(sh, [k]).await {
                tracing::debug!("redis: history writes not caught up: {e}");
            }
            match self.maintain_on(&shards.list[k].link).await {
                Ok(n) => total += n as usize,
                Err(e) => tracing::debug!("redis: upkeep of shard {k} skipped: {e}"),
            }
        }
        sh.history_channels.store(total, Ordering::Relaxed);
    }

    fn history_channels(&self) -> usize {
        self.shared.history_channels.load(Ordering::Relaxed)
    }
}
