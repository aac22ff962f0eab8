//! The NATS broker: several nodes share one JetStream stream.
//!
//! # Positions and order
//!
//! Every event is published once to one subject of one stream. JetStream gives each
//! stored message the next sequence number of the stream, so the stream sequence
//! is the event's position: unique, increasing and consecutive across the whole
//! deployment, in the order the stream accepted the events.
//!
//! # Delivering and history
//!
//! Each node reads the whole stream, in order, through an ordered consumer, and
//! applies every event to its own replica: per-channel logs kept exactly as the
//! memory broker keeps them (size and age per namespace, all within
//! `limits.history_memory`) and the local fan-out, under one lock. So every node
//! delivers in position order, and a resume is served from the node's own logs. A
//! node that starts reads what the stream still holds
//! (it keeps events for the longest history age, and at most `nats.max_messages`)
//! to build its logs; a position older than what it could read gets a `reset`.
//!
//! A node missed nothing as long as stream positions arrive consecutively. After a
//! reconnection it resumes its consumer right after the last position it applied.
//! A jump (events left the stream before the node read them) closes the node's
//! connections, so their clients resume with a `reset` where needed.
//!
//! # Ids
//!
//! Hub-assigned ids are `{epoch}-{seq}` where the epoch comes from the stream's
//! creation time: ids survive hub restarts as long as the stream lives, and a stream
//! created again (or a stream that went back in time) starts a new epoch.
//! Publisher-supplied ids are sent as `Nats-Msg-Id`, so JetStream drops a repeat
//! within `nats.duplicate_window`; beyond it each node remembers the ids it applied
//! (while their event is in its history, then for the longest history age),
//! answering `duplicate` too. An id names one event: before publishing events with
//! ids a node catches up with the stream and refuses an id it knows for other
//! channels; when JetStream answers that a message with the id is already stored
//! (another node published it at the same moment), the node waits until it has
//! applied that message and answers `duplicate` only if its channels are the same.

mod replica;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::connection::State as ConnectionState;
use async_nats::jetstream;
use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{Config as StreamConfig, DiscardPolicy, StorageType};
use async_trait::async_trait;
use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use self::replica::{Replica, Resolved};
use super::on_demand::OnDemand;
use super::{
    Accepted, Broker, BrokerError, LocalDelivery, Replay, ResumeFrom, check_publisher_ids, wire,
};
use super::{NatsConfig, NatsStorage};
use crate::backoff::Backoff;
use crate::core::Clock;
use crate::core::{ChannelName, ChannelSet, Demand, Event, NewEvent, Partition, Policies};
use crate::redact::percent_decode;
use crate::settings::ConfigError;

#[derive(Debug, Clone)]
struct Connection {
    client: async_nats::Client,
    js: jetstream::Context,
}

#[derive(Debug)]
struct Shared {
    /// The servers of `broker`, without the credentials: async-nats shows addresses
    /// in its logs.
    servers: Vec<async_nats::ServerAddr>,
    login: Login,
    config: NatsConfig,
    /// This partition's stream and subject (`nats.stream` and `nats.subject` with
    /// one partition).
    stream: String,
    subject: String,
    /// The partition this broker orders (0 with one partition).
    partition: Partition,
    policies: Arc<Policies>,
    replica: Replica,
    /// Set when this node reads the partition only while its connections need it.
    on_demand: Option<OnDemand>,
    connection: Mutex<Option<Connection>>,
    /// `None` while this node follows the stream and has caught up; otherwise why not.
    following: Mutex<Option<String>>,
    /// Woken when the client connects or disconnects.
    changed: Notify,
}

/// The broker for several nodes sharing a NATS JetStream stream.
#[derive(Debug)]
pub struct NatsBroker {
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl Drop for NatsBroker {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl NatsBroker {
    /// Starts a broker for `url` (`nats://HOST:PORT`), keeping this node's copy of
    /// the history within `history_memory` bytes, aged by `clock`. It connects in the background and
    /// keeps reconnecting, so a node starts even while NATS is down (unready until
    /// it has caught up with the stream). Must be called inside a Tokio runtime.
    pub fn start(
        url: &str,
        config: &NatsConfig,
        policies: Arc<Policies>,
        delivery: LocalDelivery,
        history_memory: usize,
        clock: Clock,
    ) -> Result<Self, ConfigError> {
        Self::start_partition(
            url,
            config,
            policies,
            delivery,
            history_memory,
            clock,
            0,
            None,
        )
    }

    /// Starts the broker of partition `partition` of a partitioned deployment (see
    /// [`super::partitioned`]), on the stream `{stream}_{partition}` taking the
    /// subject `{subject}.{partition}`. With `demand`, the node reads the stream
    /// only while its connections need the partition, and forgets its history
    /// `nats.follow_linger` after they left. Otherwise as [`NatsBroker::start`].
    #[allow(clippy::too_many_arguments)]
    pub fn start_partition(
        url: &str,
        config: &NatsConfig,
        policies: Arc<Policies>,
        delivery: LocalDelivery,
        history_memory: usize,
        clock: Clock,
        partition: Partition,
        demand: Option<Arc<Demand>>,
    ) -> Result<Self, ConfigError> {
        // Checked here so a bad address is a configuration error, not a retry loop.
        let (servers, login) = servers_and_login(url)?;
        let (stream, subject) = config.stream_of(partition, config.partitions());
        // At least the time from asking to registering: twice the timeout.
        let hold = config.follow_linger.max(config.timeout * 2);
        let shared = Arc::new(Shared {
            servers,
            login,
            config: config.clone(),
            stream,
            subject,
            partition,
            on_demand: demand.map(|demand| OnDemand::new(demand, partition, hold)),
            replica: Replica::new(policies.clone(), delivery, history_memory, clock, partition),
            policies,
            connection: Mutex::new(None),
            // Following on demand, nothing is read until a connection asks.
            following: Mutex::new(
                (!config.partitions().is_partitioned()).then(|| "connecting to nats".into()),
            ),
            changed: Notify::new(),
        });
        let stop = CancellationToken::new();
        tokio::spawn(run(shared.clone(), stop.clone()));
        Ok(Self { shared, stop })
    }

    fn connection(&self) -> Result<Connection, BrokerError> {
        let connection = self.shared.connection.lock().clone();
        match connection {
            Some(c) if c.client.connection_state() == ConnectionState::Connected => Ok(c),
            _ => Err(BrokerError::Unavailable("nats is unreachable".into())),
        }
    }

    /// The stream's newest position, asked of the server.
    async fn stream_head(&self) -> Result<u64, BrokerError> {
        let c = self.connection()?;
        let timeout = self.shared.config.timeout;
        let stream = tokio::time::timeout(timeout, c.js.get_stream(&self.shared.stream))
            .await
            .map_err(|_| unavailable("no answer from jetstream"))?
            .map_err(|e| unavailable(&e.to_string()))?;
        Ok(stream.cached_info().state.last_sequence)
    }

    /// Lets this node apply everything the stream held when called (within the
    /// request timeout), so a history read or a resume sees every event accepted
    /// before it, whichever node accepted it. Returns the stream's head, or `None`
    /// when the stream cannot be reached (then this node's copy is used as it is).
    async fn settle(&self) -> Option<u64> {
        let head = self.stream_head().await.ok()?;
        if head > self.shared.replica.applied() {
            self.shared
                .replica
                .wait_applied(head, self.shared.config.timeout)
                .await;
        }
        Some(head)
    }

    /// Following on demand, makes this node read the partition (for
    /// `follow_linger` at least) and waits until it has caught up, at most the
    /// timeout: what it serves from the partition's history needs it.
    async fn need(&self) {
        if let Some(on_demand) = &self.shared.on_demand {
            let reachable = self.connection().is_ok();
            on_demand.ask(reachable, self.shared.config.timeout).await;
        }
    }

    /// The stream's epoch: known once this node reads the stream, else asked of
    /// the server (a node publishes to partitions it does not read).
    async fn epoch(&self) -> Result<String, BrokerError> {
        if let Some(epoch) = self.shared.replica.epoch() {
            return Ok(epoch);
        }
        let c = self.connection()?;
        let timeout = self.shared.config.timeout;
        let stream = tokio::time::timeout(
            timeout,
            c.js.get_or_create_stream(stream_config(&self.shared)),
        )
        .await
        .map_err(|_| unavailable("no answer from jetstream"))?
        .map_err(|e| unavailable(&e.to_string()))?;
        let epoch = epoch_of(stream.cached_info());
        // Kept until the node reads the stream (which checks it) or forgets it.
        self.shared.replica.adopt_epoch(&epoch);
        Ok(epoch)
    }

    /// A resume of `channels` after `after` read from the stream itself, up to
    /// what this node has applied; `None` when the stream no longer holds all of
    /// it, or holds too much of it to read for one resume, or cannot be read now.
    async fn replay_from_stream(&self, channels: &[ChannelName], after: u64) -> Option<Replay> {
        let replica = &self.shared.replica;
        let head = replica.applied();
        if head <= after || head - after > STREAM_READ_MAX {
            return None;
        }
        let c = self.connection().ok()?;
        let timeout = self.shared.config.timeout;
        let read = async {
            let stream = c.js.get_stream(&self.shared.stream).await.ok()?;
            if stream.cached_info().state.first_sequence > after + 1 {
                // Events after `after` left the stream too: the gap stands.
                return None;
            }
            let consumer = stream
                .create_consumer(OrderedConfig {
                    filter_subject: self.shared.subject.clone(),
                    deliver_policy: DeliverPolicy::ByStartSequence {
                        start_sequence: after + 1,
                    },
                    ..Default::default()
                })
                .await
                .ok()?;
            let mut messages = consumer.messages().await.ok()?;
            let mut events = Vec::new();
            while let Some(Ok(message)) = messages.next().await {
                let info = message.info().ok()?;
                let seq = info.stream_sequence;
                if seq > head {
                    break;
                }
                if let Some(event) =
                    replica.event_at(seq, SystemTime::from(info.published), &message.payload)
                {
                    events.push(event);
                }
                if seq == head {
                    break;
                }
            }
            Some(events)
        };
        let events = tokio::time::timeout(timeout, read).await.ok()??;
        Some(replica.replay_read(channels, after, head, &events))
    }

    /// Waits until this node has applied `seq`.
    async fn catch_up_to(&self, seq: u64) -> Result<(), BrokerError> {
        if self
            .shared
            .replica
            .wait_applied(seq, self.shared.config.timeout)
            .await
        {
            Ok(())
        } else {
            Err(unavailable(
                "this node is still catching up with the stream",
            ))
        }
    }
}

fn unavailable(why: &str) -> BrokerError {
    BrokerError::Unavailable(format!("nats: {why}"))
}

/// How the hub logs in to NATS, from the user info of the `broker` URLs
/// (`nats://user:password@host`, or a token: `nats://token@host`), which async-nats
/// does not read from the addresses itself.
#[derive(Clone, PartialEq, Eq)]
enum Login {
    None,
    Token(String),
    User { user: String, password: String },
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "None",
            Self::Token(_) => "Token",
            Self::User { .. } => "User",
        })
    }
}

/// The servers of a `broker` value (`nats://HOST:PORT`, several comma-separated),
/// without their credentials, and the login those credentials give. Every server
/// naming credentials must name the same ones: one login serves the cluster.
fn servers_and_login(url: &str) -> Result<(Vec<async_nats::ServerAddr>, Login), ConfigError> {
    let mut servers = Vec::new();
    let mut login = Login::None;
    for server in url.split(',') {
        let addr = server
            .trim()
            .parse::<async_nats::ServerAddr>()
            .map_err(|e| ConfigError::new("broker", format!("{server:?}: {e}")))?;
        let mut address = addr.into_inner();
        let user = percent_decode(address.username());
        let this = match address.password() {
            Some(password) => Login::User {
                user,
                password: percent_decode(password),
            },
            None if !user.is_empty() => Login::Token(user),
            None => Login::None,
        };
        if this != Login::None {
            if login != Login::None && login != this {
                return Err(ConfigError::new(
                    "broker",
                    "the NATS servers name different credentials; give each the same (or only the first)",
                ));
            }
            login = this;
        }
        // Neither setter fails on a nats:// or tls:// address, which has a host.
        let _ = address.set_password(None);
        let _ = address.set_username("");
        servers.push(
            async_nats::ServerAddr::from_url(address)
                .map_err(|e| ConfigError::new("broker", format!("{server:?}: {e}")))?,
        );
    }
    Ok((servers, login))
}

/// Connects, then follows the stream until `stop`, starting over after each loss.
async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let max = shared.config.reconnect_max;
    let notify = shared.clone();
    let options = async_nats::ConnectOptions::new()
        .name("herald")
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(shared.config.timeout)
        .reconnect_delay_callback(move |attempts| {
            Backoff::nth(Duration::from_millis(100), max, attempts)
        })
        .event_callback(move |event| {
            let notify = notify.clone();
            async move {
                match event {
                    async_nats::Event::Connected | async_nats::Event::Disconnected => {
                        notify.changed.notify_one();
                    }
                    _ => {}
                }
            }
        });
    let options = match &shared.login {
        Login::None => options,
        Login::Token(token) => options.token(token.clone()),
        Login::User { user, password } => options.user_and_password(user.clone(), password.clone()),
    };
    let client = tokio::select! {
        _ = stop.cancelled() => return,
        c = options.connect(shared.servers.clone()) => c,
    };
    let client = match client {
        Ok(client) => client,
        Err(e) => {
            *shared.following.lock() = Some(format!("cannot connect: {e}"));
            tracing::error!("nats: cannot connect: {e}");
            return;
        }
    };
    let mut js = jetstream::new(client.clone());
    js.set_timeout(shared.config.timeout);
    *shared.connection.lock() = Some(Connection {
        client: client.clone(),
        js: js.clone(),
    });
    let mut backoff = Backoff::new(Duration::from_millis(100), max);
    let mut sessions = 0u64;
    loop {
        if let Some(on_demand) = &shared.on_demand
            && !on_demand.wanted()
        {
            // Not needed here: its history is dropped, and read again from the
            // stream when a connection needs the partition. A connection that
            // asks waits this long at most before it reads where it starts; what
            // was published before that is its own to replay.
            let live_from = SystemTime::now() - shared.config.timeout;
            shared.replica.forget(live_from);
            *shared.following.lock() = None;
            if !on_demand.until_wanted(&stop).await {
                return;
            }
            shared
                .replica
                .forget(SystemTime::now() - shared.config.timeout);
        }
        let ended = follow(&shared, &client, &js, &stop, &mut sessions).await;
        if let Some(on_demand) = &shared.on_demand {
            on_demand.set_live(false, shared.replica.delivery().stats());
        }
        let why = match ended {
            Ended::Stopped => return,
            Ended::Idle => {
                tracing::debug!(stream = %shared.stream, "nats: partition no longer followed");
                continue;
            }
            Ended::Lost(why) => why,
        };
        let was = shared.following.lock().replace(why.clone());
        if was.is_none() {
            tracing::warn!("nats: stopped following the stream: {why}; resuming");
        }
        let wait = backoff.next_delay();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            _ = shared.changed.notified() => {}
        }
        if sessions > 0 && was.is_none() {
            backoff.reset();
        }
    }
}

/// One session of following the stream; returns why it ended.
async fn follow(
    shared: &Shared,
    client: &async_nats::Client,
    js: &jetstream::Context,
    stop: &CancellationToken,
    sessions: &mut u64,
) -> Ended {
    if client.connection_state() != ConnectionState::Connected {
        tokio::select! {
            _ = stop.cancelled() => return Ended::Stopped,
            _ = shared.changed.notified() => {}
            _ = tokio::time::sleep(shared.config.timeout) => {}
        }
        if client.connection_state() != ConnectionState::Connected {
            return Ended::Lost("not connected".into());
        }
    }
    // Connected now, and the session reads from where this node is: a change
    // noticed before this point (the first connection, or one that came back
    // while the partition was not followed) needs no second start.
    let _ = futures_util::FutureExt::now_or_never(shared.changed.notified());
    let stream = tokio::select! {
        _ = stop.cancelled() => return Ended::Stopped,
        s = js.get_or_create_stream(stream_config(shared)) => s,
    };
    let stream = match stream {
        Ok(stream) => stream,
        Err(e) => {
            return Ended::Lost(format!(
                "cannot create or find stream {}: {e}",
                shared.stream
            ));
        }
    };
    let info = stream.cached_info();
    if !info.config.subjects.iter().any(|s| s == &shared.subject) {
        return Ended::Lost(format!(
            "stream {} does not take subject {} (it takes {:?})",
            shared.stream, shared.subject, info.config.subjects
        ));
    }
    let epoch = epoch_of(info);
    let target = info.state.last_sequence;
    shared.replica.set_epoch(&epoch, target);
    let applied = shared.replica.applied();
    let deliver_policy = if applied == 0 {
        DeliverPolicy::All
    } else {
        DeliverPolicy::ByStartSequence {
            start_sequence: applied + 1,
        }
    };
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: shared.subject.clone(),
            deliver_policy,
            ..Default::default()
        })
        .await;
    let consumer = match consumer {
        Ok(c) => c,
        Err(e) => return Ended::Lost(format!("cannot create a consumer: {e}")),
    };
    let mut messages = match consumer.messages().await {
        Ok(m) => m,
        Err(e) => return Ended::Lost(format!("cannot read the stream: {e}")),
    };
    let mut caught_up = false;
    let mark = |shared: &Shared, sessions: &mut u64| {
        *sessions += 1;
        if *sessions > 1 {
            shared.replica.delivery().stats().broker_reconnected();
            tracing::info!("nats: following the stream again");
        }
        *shared.following.lock() = None;
        if let Some(on_demand) = &shared.on_demand {
            on_demand.set_live(true, shared.replica.delivery().stats());
        }
    };
    if shared.replica.applied() >= target {
        caught_up = true;
        mark(shared, sessions);
    }
    let mut idle = tokio::time::interval(IDLE_CHECK);
    idle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ended::Stopped,
            _ = shared.changed.notified() => {
                // Connected again (or lost): start over from the last applied
                // position, checking that the stream is still the same one.
                return Ended::Lost("the connection changed".into());
            }
            _ = idle.tick() => {
                if shared.on_demand.as_ref().is_some_and(|d| !d.wanted()) {
                    return Ended::Idle;
                }
            }
            message = messages.next() => {
                let message = match message {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => return Ended::Lost(format!("reading the stream: {e}")),
                    None => return Ended::Lost("the consumer ended".into()),
                };
                let (seq, time) = match message.info() {
                    Ok(info) => (info.stream_sequence, SystemTime::from(info.published)),
                    Err(e) => {
                        return Ended::Lost(format!("a message without stream info: {e}"));
                    }
                };
                let stats = shared.replica.delivery().stats();
                stats.broker_received_bytes(message.payload.len());
                shared.replica.apply(seq, time, &message.payload);
                if !caught_up && seq >= target {
                    caught_up = true;
                    mark(shared, sessions);
                }
            }
        }
    }
}

/// Why a session of following the stream ended.
enum Ended {
    Stopped,
    Lost(String),
    /// Following on demand, and no local connection needs the partition any more.
    Idle,
}

/// The most events a resume reads from the stream when this node's copy cannot
/// cover it.
const STREAM_READ_MAX: u64 = 100_000;

/// How often a partition followed on demand checks whether it still is needed.
const IDLE_CHECK: Duration = Duration::from_secs(5);

/// The epoch of ids from a stream: its creation time.
fn epoch_of(info: &jetstream::stream::Info) -> String {
    format!("{:x}", info.created.unix_timestamp_nanos() / 1000)
}

fn stream_config(shared: &Shared) -> StreamConfig {
    let config = &shared.config;
    // Events older than the longest history age are of no use to anyone.
    let max_age = shared.policies.longest_ttl() + Duration::from_secs(60);
    StreamConfig {
        name: shared.stream.clone(),
        subjects: vec![shared.subject.clone()],
        max_messages: if config.max_messages == 0 {
            -1
        } else {
            i64::try_from(config.max_messages).unwrap_or(i64::MAX)
        },
        max_bytes: if config.max_bytes == 0 {
            -1
        } else {
            i64::try_from(config.max_bytes).unwrap_or(i64::MAX)
        },
        max_age,
        storage: match config.storage {
            NatsStorage::File => StorageType::File,
            NatsStorage::Memory => StorageType::Memory,
        },
        num_replicas: config.replicas,
        // JetStream refuses a window longer than the age limit.
        duplicate_window: config.duplicate_window.min(max_age),
        discard: DiscardPolicy::Old,
        ..Default::default()
    }
}

#[async_trait]
impl Broker for NatsBroker {
    fn kind(&self) -> &'static str {
        "nats"
    }

    async fn publish(&self, events: Vec<NewEvent>) -> Result<Vec<Accepted>, BrokerError> {
        let c = self.connection()?;
        let replica = &self.shared.replica;
        let timeout = self.shared.config.timeout;
        if events.iter().any(|e| e.id.is_some()) {
            // Whichever node published an id before, this node knows it once it has
            // applied what the stream holds.
            self.need().await;
            self.settle().await;
            check_publisher_ids(&events, |id| replica.publisher_id(id))?;
        }
        // Known before publishing: finding it creates the stream if need be.
        let epoch = self.epoch().await?;
        let mut answers: Vec<Option<Accepted>> = Vec::with_capacity(events.len());
        let mut pending = Vec::new();
        for (index, event) in events.iter().enumerate() {
            if let Some(known) = event.id.as_deref().and_then(|id| replica.publisher_id(id)) {
                answers.push(Some(Accepted {
                    id: event.id.clone().unwrap_or_default(),
                    seq: known.seq,
                    duplicate: true,
                }));
                continue;
            }
            let mut message = PublishMessage::build()
                .payload(wire::encode(event).into())
                .expected_stream(&self.shared.stream);
            if let Some(id) = &event.id {
                message = message.message_id(id);
            }
            let sent = tokio::time::timeout(
                timeout,
                c.js.send_publish(self.shared.subject.clone(), message),
            )
            .await
            .map_err(|_| unavailable("no room to publish"))?
            .map_err(|e| unavailable(&e.to_string()))?;
            pending.push((index, sent));
            answers.push(None);
        }
        for (index, sent) in pending {
            let ack = sent.await.map_err(|e| unavailable(&e.to_string()))?;
            let event = &events[index];
            if ack.duplicate
                && let Some(id) = &event.id
            {
                // Stored already: by a retry of this event, or by another event
                // claiming the same id at the same moment on another node.
                self.catch_up_to(ack.sequence).await?;
                let same = replica
                    .publisher_id(id)
                    .is_some_and(|k| k.channels == ChannelSet::of(&event.channels));
                if !same {
                    return Err(BrokerError::IdConflict {
                        index,
                        id: id.clone(),
                    });
                }
            }
            answers[index] = Some(Accepted {
                id: event
                    .id
                    .clone()
                    .unwrap_or_else(|| format!("{epoch}-{}", ack.sequence)),
                seq: ack.sequence,
                duplicate: ack.duplicate,
            });
        }
        answers
            .into_iter()
            .map(|a| a.ok_or_else(|| unavailable("an event was not acknowledged")))
            .collect()
    }

    async fn replay(
        &self,
        channels: &[ChannelName],
        from: ResumeFrom,
    ) -> Result<Replay, BrokerError> {
        self.need().await;
        let replica = &self.shared.replica;
        let head = self.settle().await;
        let id = match from {
            ResumeFrom::Earliest => return Ok(replica.replay(channels, None)),
            ResumeFrom::After(id) => id,
        };
        let after = match replica.resolve(&id) {
            Resolved::At(seq) => seq,
            // An id of this stream this node has not applied yet: it exists if the
            // stream has it, and then arrives shortly.
            Resolved::Ahead(seq) => match head {
                Some(head) if seq <= head => {
                    self.catch_up_to(seq).await?;
                    seq
                }
                Some(_) => return Ok(replica.unknown(channels)),
                None => return Err(unavailable("cannot reach the stream to place this id")),
            },
            // Unknown once this node has applied everything the stream had: unknown.
            Resolved::Unknown => match head {
                Some(head) if head <= replica.applied() => return Ok(replica.unknown(channels)),
                Some(_) => {
                    return Err(unavailable(
                        "this node is still catching up with the stream",
                    ));
                }
                None => return Err(unavailable("cannot reach the stream to place this id")),
            },
        };
        let replay = replica.replay(channels, Some(after));
        if replay.reset.is_none() {
            return Ok(replay);
        }
        // This node's copy cannot cover the gap: its memory budget may have dropped
        // what the stream still holds. Read it from the stream.
        Ok(self
            .replay_from_stream(channels, after)
            .await
            .unwrap_or(replay))
    }

    async fn head(&self) -> Result<String, BrokerError> {
        self.need().await;
        // This node's position is the stream's once it has applied all of it.
        match self.settle().await {
            Some(head) if head <= self.shared.replica.applied() => {
                Ok(self.shared.replica.head_id())
            }
            Some(_) => Err(unavailable(
                "this node is still catching up with the stream",
            )),
            None => Err(unavailable("cannot reach the stream")),
        }
    }

    async fn history(
        &self,
        channel: &ChannelName,
        limit: usize,
    ) -> Result<Vec<Arc<Event>>, BrokerError> {
        self.need().await;
        self.settle().await;
        Ok(self.shared.replica.history(channel, limit))
    }

    async fn find_id(&self, id: &str) -> Result<Option<crate::core::Position>, BrokerError> {
        // The ids are in the partition's history: read it first.
        self.need().await;
        self.settle().await;
        let replica = &self.shared.replica;
        let (Some(known), Some(epoch)) = (replica.publisher_id(id), replica.epoch()) else {
            return Ok(None);
        };
        Ok(Some(crate::core::Position {
            partition: self.shared.partition,
            epoch: crate::core::partition::epoch_tag(&epoch),
            seq: known.seq,
        }))
    }

    fn follows_on_demand(&self) -> bool {
        self.shared.on_demand.is_some()
    }

    async fn follow(&self, _channels: &[ChannelName]) {
        self.need().await;
    }

    async fn check(&self) -> Result<(), BrokerError> {
        self.connection()?;
        if let Some(why) = self.shared.following.lock().clone() {
            return Err(unavailable(&why));
        }
        Ok(())
    }

    async fn maintain(&self) {
        self.shared.replica.maintain();
    }

    fn history_channels(&self) -> usize {
        self.shared.replica.channels()
    }

    fn history_bytes(&self) -> u64 {
        self.shared.replica.bytes() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_leave_the_addresses_for_the_login() {
        let (servers, login) =
            servers_and_login("nats://herald:p%40ss@127.0.0.1:4222, nats://127.0.0.1:4223")
                .unwrap();
        assert_eq!(
            login,
            Login::User {
                user: "herald".into(),
                password: "p@ss".into()
            }
        );
        assert_eq!(servers.len(), 2);
        for server in &servers {
            let shown = format!("{server:?} {}", server.as_url_str());
            assert!(
                !shown.contains("herald") && !shown.contains("p%40ss"),
                "{shown}"
            );
            assert_eq!(server.username(), None);
        }
        assert_eq!(servers[1].port(), 4223);
        assert!(!format!("{login:?}").contains("p@ss"));

        let (_, login) = servers_and_login("nats://s3cret-token@127.0.0.1:4222").unwrap();
        assert_eq!(login, Login::Token("s3cret-token".into()));
        let (_, login) = servers_and_login("nats://127.0.0.1:4222").unwrap();
        assert_eq!(login, Login::None);
        let (_, login) =
            servers_and_login("nats://u:p@127.0.0.1:1,nats://u:p@127.0.0.1:2").unwrap();
        assert!(matches!(login, Login::User { .. }));
        let e = servers_and_login("nats://u:p@127.0.0.1:1,nats://u:q@127.0.0.1:2").unwrap_err();
        assert_eq!(e.key, "broker");
        let e = servers_and_login("nats://u:pw-7a7a@127.0.0.1:1,nats://[bad").unwrap_err();
        assert!(!e.to_string().contains("pw-7a7a"), "{e}");
    }
}
