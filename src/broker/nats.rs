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
use super::{
    Accepted, Broker, BrokerError, LocalDelivery, Replay, ResumeFrom, check_publisher_ids, wire,
};
use super::{NatsConfig, NatsStorage};
use crate::backoff::Backoff;
use crate::core::Clock;
use crate::core::{ChannelName, ChannelSet, Event, NewEvent, Policies};
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
    policies: Arc<Policies>,
    replica: Replica,
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
        // Checked here so a bad address is a configuration error, not a retry loop.
        let (servers, login) = servers_and_login(url)?;
        let shared = Arc::new(Shared {
            servers,
            login,
            config: config.clone(),
            replica: Replica::new(policies.clone(), delivery, history_memory, clock),
            policies,
            connection: Mutex::new(None),
            following: Mutex::new(Some("connecting to nats".into())),
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
        let stream = tokio::time::timeout(timeout, c.js.get_stream(&self.shared.config.stream))
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
        let why = follow(&shared, &client, &js, &stop, &mut sessions).await;
        let Some(why) = why else { return };
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

/// One session of following the stream; returns why it ended (`None`: stopped).
async fn follow(
    shared: &Shared,
    client: &async_nats::Client,
    js: &jetstream::Context,
    stop: &CancellationToken,
    sessions: &mut u64,
) -> Option<String> {
    if client.connection_state() != ConnectionState::Connected {
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = shared.changed.notified() => {}
            _ = tokio::time::sleep(shared.config.timeout) => {}
        }
        if client.connection_state() != ConnectionState::Connected {
            return Some("not connected".into());
        }
    }
    let config = &shared.config;
    let stream = tokio::select! {
        _ = stop.cancelled() => return None,
        s = js.get_or_create_stream(stream_config(config, &shared.policies)) => s,
    };
    let stream = match stream {
        Ok(stream) => stream,
        Err(e) => {
            return Some(format!(
                "cannot create or find stream {}: {e}",
                config.stream
            ));
        }
    };
    let info = stream.cached_info();
    if !info.config.subjects.iter().any(|s| s == &config.subject) {
        return Some(format!(
            "stream {} does not take subject {} (it takes {:?})",
            config.stream, config.subject, info.config.subjects
        ));
    }
    let epoch = format!("{:x}", info.created.unix_timestamp_nanos() / 1000);
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
            filter_subject: config.subject.clone(),
            deliver_policy,
            ..Default::default()
        })
        .await;
    let consumer = match consumer {
        Ok(c) => c,
        Err(e) => return Some(format!("cannot create a consumer: {e}")),
    };
    let mut messages = match consumer.messages().await {
        Ok(m) => m,
        Err(e) => return Some(format!("cannot read the stream: {e}")),
    };
    let mut caught_up = false;
    let mark = |shared: &Shared, sessions: &mut u64| {
        *sessions += 1;
        if *sessions > 1 {
            shared.replica.delivery().stats().broker_reconnected();
            tracing::info!("nats: following the stream again");
        }
        *shared.following.lock() = None;
    };
    if shared.replica.applied() >= target {
        caught_up = true;
        mark(shared, sessions);
    }
    loop {
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = shared.changed.notified() => {
                // Connected again (or lost): start over from the last applied
                // position, checking that the stream is still the same one.
                return Some("the connection changed".into());
            }
            message = messages.next() => {
                let message = match message {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => return Some(format!("reading the stream: {e}")),
                    None => return Some("the consumer ended".into()),
                };
                let (seq, time) = match message.info() {
                    Ok(info) => (info.stream_sequence, SystemTime::from(info.published)),
                    Err(e) => return Some(format!("a message without stream info: {e}")),
                };
                shared.replica.apply(seq, time, &message.payload);
                if !caught_up && seq >= target {
                    caught_up = true;
                    mark(shared, sessions);
                }
            }
        }
    }
}

fn stream_config(config: &NatsConfig, policies: &Policies) -> StreamConfig {
    // Events older than the longest history age are of no use to anyone.
    let max_age = policies.longest_ttl() + Duration::from_secs(60);
    StreamConfig {
        name: config.stream.clone(),
        subjects: vec![config.subject.clone()],
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
        let epoch = replica
            .epoch()
            .ok_or_else(|| unavailable("the stream is not known yet"))?;
        let timeout = self.shared.config.timeout;
        if events.iter().any(|e| e.id.is_some()) {
            // Whichever node published an id before, this node knows it once it has
            // applied what the stream holds.
            self.settle().await;
            check_publisher_ids(&events, |id| replica.publisher_id(id))?;
        }
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
                .expected_stream(&self.shared.config.stream);
            if let Some(id) = &event.id {
                message = message.message_id(id);
            }
            let sent = tokio::time::timeout(
                timeout,
                c.js.send_publish(self.shared.config.subject.clone(), message),
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
        Ok(replica.replay(channels, Some(after)))
    }

    async fn head(&self) -> Result<String, BrokerError> {
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
        self.settle().await;
        Ok(self.shared.replica.history(channel, limit))
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
