//! Following the event stream: one pub/sub connection per node, delivering every
//! event to the local fan-out in position order, once.
//!
//! After (re)subscribing, and every few seconds, the follower asks Redis for the
//! epoch and the newest position. Anything between what it delivered and that
//! position which did not arrive live is read from the catch-up log and delivered
//! in order. When the log no longer has it, or the epoch changed (Redis lost its
//! data), the follower closes this node's connections: their clients resume from
//! channel history and get a `reset` where it cannot cover the gap.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::Value;
use tokio_util::sync::CancellationToken;

use super::{Events, Shared, cluster, int, text, time_of};
use crate::backoff::{Backoff, pause};
use crate::broker::wire;

/// How often the follower pings its connection and checks that it missed nothing.
const HEALTH_EVERY: Duration = Duration::from_secs(5);

/// Entries read from the catch-up log at once.
const LOG_PAGE: usize = 500;

/// How far before its start a node delivers events on its first sync (clock skew
/// between the node and Redis).
const START_SLACK_MS: u64 = 1000;

/// A subscription to a partition's events.
enum Subscription {
    /// `SUBSCRIBE` on the one server.
    Server {
        sink: redis::aio::PubSubSink,
        messages: redis::aio::PubSubStream,
    },
    /// `SSUBSCRIBE` on the primary serving the partition in a cluster.
    Shard {
        subscriber: cluster::ShardSubscriber,
        /// A ping was sent and its answer has not arrived.
        pong_due: bool,
    },
}

/// A message of either kind of subscription.
enum Message {
    Server(redis::Msg),
    Shard(Vec<u8>),
}

impl Message {
    fn payload(&self) -> &[u8] {
        match self {
            Message::Server(message) => message.get_payload_bytes(),
            Message::Shard(payload) => payload,
        }
    }
}

impl Subscription {
    /// The next message; an error when the subscription ended. Cancel-safe.
    async fn next(&mut self) -> Result<Message, String> {
        match self {
            Subscription::Server { messages, .. } => match messages.next().await {
                Some(message) => Ok(Message::Server(message)),
                None => Err("the subscription connection closed".into()),
            },
            Subscription::Shard {
                subscriber,
                pong_due,
            } => loop {
                match subscriber.next().await? {
                    cluster::Push::Message(payload) => return Ok(Message::Shard(payload)),
                    cluster::Push::Pong => *pong_due = false,
                    cluster::Push::Ended => {
                        return Err("the cluster moved the partition's slot".into());
                    }
                    cluster::Push::Other => {}
                }
            },
        }
    }

    /// Checks the connection is alive: a ping answered within `timeout`, or on a
    /// shard connection the previous ping answered since.
    async fn ping(&mut self, timeout: Duration) -> Result<(), String> {
        match self {
            Subscription::Server { sink, .. } => {
                match tokio::time::timeout(timeout, sink.ping::<Value>()).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("no answer to PING".into()),
                }
            }
            Subscription::Shard {
                subscriber,
                pong_due,
            } => {
                if *pong_due {
                    return Err("no answer to PING".into());
                }
                *pong_due = true;
                tokio::time::timeout(timeout, subscriber.ping())
                    .await
                    .map_err(|_| "cannot send PING".to_owned())?
            }
        }
    }
}

/// Why a session with Redis ended.
enum Ended {
    Stopped,
    Lost(String),
    /// Following on demand, and no local connection needs the partition any more.
    Idle,
}

pub(super) struct Follower {
    shared: Arc<Shared>,
    epoch: Option<String>,
    delivered: u64,
    /// The newest position Redis reported at the previous health check: anything up
    /// to it should have arrived by the next one.
    checked_head: u64,
    /// Events since this time (milliseconds since the Unix epoch) may concern this
    /// node's connections when it starts following: when the node started, or when
    /// a connection asked for a partition followed on demand.
    since_ms: u64,
    /// Whether the events arrive now.
    live: bool,
}

impl Follower {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self {
            epoch: None,
            delivered: 0,
            checked_head: 0,
            since_ms: shared.started_ms,
            live: false,
            shared,
        }
    }

    /// Waits, following on demand, until a local connection needs the partition;
    /// false when stopped meanwhile.
    async fn wanted(&mut self, stop: &CancellationToken) -> bool {
        let Some(on_demand) = self.shared.on_demand.as_ref() else {
            return true;
        };
        if !on_demand.wanted() {
            // Not followed: the next time starts afresh from where the partition
            // is then.
            self.epoch = None;
            self.delivered = 0;
            self.checked_head = 0;
            *self.shared.following.lock() = None;
            if !on_demand.until_wanted(stop).await {
                return false;
            }
        }
        if self.epoch.is_none() {
            // A connection that asked waits this long at most for the partition's
            // events to arrive before it reads where it starts; what was published
            // before that is its own to replay.
            let waited = self.shared.link.timeout().as_millis() as u64;
            self.since_ms = super::now_ms().saturating_sub(waited);
        }
        true
    }

    /// Marks whether the events arrive now.
    fn set_live(&mut self, live: bool) {
        if self.live == live {
            return;
        }
        self.live = live;
        if let Some(on_demand) = &self.shared.on_demand {
            on_demand.set_live(live, self.shared.delivery.stats());
        }
    }

    pub(super) async fn run(mut self, stop: CancellationToken) {
        let max = self.shared.config.reconnect_max;
        let mut backoff = Backoff::new(Duration::from_millis(100), max);
        let mut sessions = 0u64;
        loop {
            if !self.wanted(&stop).await {
                return;
            }
            let started = std::time::Instant::now();
            let ended = self.session(&stop, &mut sessions).await;
            self.set_live(false);
            let why = match ended {
                Ended::Stopped => return,
                Ended::Idle => {
                    tracing::debug!(
                        partition = self.shared.partition,
                        "redis: partition no longer followed"
                    );
                    continue;
                }
                Ended::Lost(why) => why,
            };
            let was = self.shared.following.lock().replace(why.clone());
            if was.is_none() {
                tracing::warn!("redis: event subscription lost: {why}; resubscribing");
            }
            if pause(backoff.after_session(started), &stop).await {
                return;
            }
        }
    }

    async fn session(&mut self, stop: &CancellationToken, sessions: &mut u64) -> Ended {
        let timeout = self.shared.link.timeout();
        let subscribed = tokio::select! {
            _ = stop.cancelled() => return Ended::Stopped,
            r = self.subscribe() => r,
        };
        let mut subscription = match subscribed {
            Ok(s) => s,
            Err(why) => return Ended::Lost(why),
        };
        // Subscribed: from here every new event arrives live. Catch up on what was
        // published before, then follow.
        if !self.shared.link.wait_up(timeout).await {
            return Ended::Lost("the command connection is down".into());
        }
        let head = match self.sync().await {
            Ok(head) => head,
            Err(e) => return Ended::Lost(e),
        };
        if let Err(e) = self.repair(head).await {
            return Ended::Lost(e);
        }
        self.checked_head = head;
        *sessions += 1;
        if *sessions > 1 {
            self.shared.delivery.stats().broker_reconnected();
            tracing::info!("redis: event subscription restored");
        }
        *self.shared.following.lock() = None;
        self.set_live(true);
        let mut health = tokio::time::interval(HEALTH_EVERY);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        health.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ended::Stopped,
                message = subscription.next() => {
                    let message = match message {
                        Ok(message) => message,
                        Err(why) => return Ended::Lost(why),
                    };
                    if let Err(e) = self.on_message(message.payload()).await {
                        return Ended::Lost(e);
                    }
                }
                _ = health.tick() => {
                    if let Err(why) = subscription.ping(timeout).await {
                        return Ended::Lost(why);
                    }
                    let head = match self.sync().await {
                        Ok(head) => head,
                        Err(e) => return Ended::Lost(e),
                    };
                    // Events older than one health period that never arrived live.
                    if let Err(e) = self.repair(self.checked_head).await {
                        return Ended::Lost(e);
                    }
                    self.checked_head = head;
                    if let Some(on_demand) = &self.shared.on_demand
                        && !on_demand.wanted()
                    {
                        return Ended::Idle;
                    }
                }
            }
        }
    }

    /// Subscribes to the partition's events: on the one server, or on the primary
    /// serving the partition's slot in a cluster.
    async fn subscribe(&self) -> Result<Subscription, String> {
        let timeout = self.shared.link.timeout();
        let channel = self.shared.events_channel();
        match &self.shared.events {
            Events::Server(client) => {
                let mut pubsub =
                    match tokio::time::timeout(timeout, client.get_async_pubsub()).await {
                        Ok(Ok(p)) => p,
                        Ok(Err(e)) => return Err(e.to_string()),
                        Err(_) => return Err("connection timed out".into()),
                    };
                match tokio::time::timeout(timeout, pubsub.subscribe(&channel)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(e.to_string()),
                    Err(_) => return Err("no answer to SUBSCRIBE".into()),
                }
                let (sink, messages) = pubsub.split();
                Ok(Subscription::Server { sink, messages })
            }
            Events::Cluster {
                username,
                password,
                seed_host,
            } => {
                let seq = self.shared.key("seq");
                let slots: Value = self
                    .shared
                    .link
                    .cmd(redis::cmd("CLUSTER").arg("SLOTS"))
                    .await
                    .map_err(|e| e.to_string())?;
                let slot = cluster::key_slot(&seq);
                let (mut host, port) = cluster::owner(&slots, slot)
                    .ok_or_else(|| format!("no primary of the cluster serves slot {slot}"))?;
                if host.is_empty() || host == "?" {
                    host.clone_from(seed_host);
                }
                let subscriber = cluster::ShardSubscriber::subscribe(
                    &host,
                    port,
                    username.as_deref(),
                    password.as_deref(),
                    &channel,
                    timeout,
                )
                .await?;
                Ok(Subscription::Shard {
                    subscriber,
                    pong_due: false,
                })
            }
        }
    }

    /// One live message: `{epoch} {seq} {time}\n{event}`.
    async fn on_message(&mut self, payload: &[u8]) -> Result<(), String> {
        self.shared
            .delivery
            .stats()
            .broker_received_bytes(payload.len());
        let Some(split) = payload.iter().position(|&b| b == b'\n') else {
            tracing::warn!("redis: ignoring a malformed event message");
            return Ok(());
        };
        let (header, blob) = (&payload[..split], &payload[split + 1..]);
        let header = std::str::from_utf8(header).unwrap_or_default();
        let mut parts = header.split(' ');
        let (Some(epoch), Some(Ok(seq)), Some(Ok(time))) = (
            parts.next(),
            parts.next().map(str::parse::<u64>),
            parts.next().map(str::parse::<u64>),
        ) else {
            tracing::warn!("redis: ignoring a malformed event message");
            return Ok(());
        };
        if self.epoch.as_deref() != Some(epoch) {
            // A new epoch: Redis lost its data or came back from an older snapshot.
            let head = self.sync().await?;
            self.checked_head = head;
        }
        if self.epoch.as_deref() != Some(epoch) || seq <= self.delivered {
            return Ok(());
        }
        if seq > self.delivered + 1 {
            self.repair(seq - 1).await?;
            if seq <= self.delivered {
                return Ok(());
            }
        }
        self.deliver(seq, time, blob);
        Ok(())
    }

    /// Reads the epoch and the newest position; on a new epoch, closes this node's
    /// connections and starts over from its head.
    async fn sync(&mut self) -> Result<u64, String> {
        let sh = &self.shared;
        let mut call = sh.scripts.sync.prepare_invoke();
        sh.declare(&mut call, &["seq", "epoch"]);
        call.arg(&sh.base)
            .arg(Shared::candidate_epoch())
            .arg(self.epoch.as_deref().unwrap_or(""))
            .arg(self.delivered);
        let reply: Vec<Value> = sh.link.script(&call).await.map_err(|e| e.to_string())?;
        let (Some(epoch), Some(head)) = (reply.first().and_then(text), reply.get(1).and_then(int))
        else {
            return Err("unexpected reply to the sync script".into());
        };
        let head = head as u64;
        match self.epoch.as_deref() {
            None => {
                self.epoch = Some(epoch);
                self.start_from(head).await?;
            }
            Some(known) if known != epoch => {
                let closed = sh.delivery.close_all();
                tracing::warn!(
                    "redis: the history was lost or rolled back (epoch {known} is now {epoch}); \
                     closed {closed} local connections so their clients resume"
                );
                self.epoch = Some(epoch);
                self.set_delivered(head);
                self.checked_head = head;
            }
            Some(_) => {}
        }
        Ok(head)
    }

    /// The first sync of this node (or of a partition it follows afresh): events
    /// accepted since it started may concern connections it already has, so those
    /// are delivered from the log.
    async fn start_from(&mut self, head: u64) -> Result<(), String> {
        let since = self.since_ms.saturating_sub(START_SLACK_MS);
        let reply: Value = self
            .shared
            .link
            .cmd(
                redis::cmd("XREVRANGE")
                    .arg(self.shared.key("log"))
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(LOG_PAGE),
            )
            .await
            .map_err(|e| e.to_string())?;
        let entries = log_entries(&reply)?;
        let recent = entries
            .iter()
            .filter(|(seq, time, _)| *time >= since && *seq <= head)
            .count();
        if recent == LOG_PAGE {
            // More than a page since this node started: too much to be sure of.
            self.set_delivered(head);
            self.shared.delivery.close_all();
            return Ok(());
        }
        let first = entries
            .iter()
            .filter(|(seq, time, _)| *time >= since && *seq <= head)
            .map(|(seq, _, _)| *seq)
            .min();
        match first {
            Some(first) => {
                self.set_delivered(first - 1);
                self.repair(head).await
            }
            None => {
                self.set_delivered(head);
                Ok(())
            }
        }
    }

    /// Delivers every event after the delivered position up to `upto` from the
    /// catch-up log; if the log no longer has them, closes this node's connections.
    async fn repair(&mut self, upto: u64) -> Result<(), String> {
        let mut caught_up = 0;
        while self.delivered < upto {
            let from = self.delivered + 1;
            let reply: Value = self
                .shared
                .link
                .cmd(
                    redis::cmd("XRANGE")
                        .arg(self.shared.key("log"))
                        .arg(format!("{from}-0"))
                        .arg("+")
                        .arg("COUNT")
                        .arg(LOG_PAGE),
                )
                .await
                .map_err(|e| e.to_string())?;
            let entries = log_entries(&reply)?;
            let bytes = entries.iter().map(|(_, _, blob)| blob.len()).sum();
            self.shared.delivery.stats().broker_received_bytes(bytes);
            if entries.first().is_none_or(|(seq, _, _)| *seq != from) {
                let closed = self.shared.delivery.close_all();
                tracing::warn!(
                    "redis: events {from}..={upto} are no longer in the catch-up log; \
                     closed {closed} local connections so their clients resume from history"
                );
                self.set_delivered(upto);
                break;
            }
            for (seq, time, blob) in entries {
                if seq != self.delivered + 1 {
                    break;
                }
                self.deliver(seq, time, &blob);
                caught_up += 1;
            }
        }
        if caught_up > 0 {
            self.shared.delivery.stats().broker_caught_up(caught_up);
        }
        Ok(())
    }

    fn deliver(&mut self, seq: u64, time: u64, blob: &[u8]) {
        match wire::decode(blob) {
            Some(decoded) => {
                let epoch = self.epoch.as_deref().unwrap_or_default();
                let event = decoded.accept(epoch, seq, time_of(time), self.shared.partition);
                self.shared.delivery.deliver(&event);
            }
            None => tracing::warn!("redis: skipping event {seq}, which this node cannot read"),
        }
        self.set_delivered(seq);
    }

    fn set_delivered(&mut self, seq: u64) {
        self.delivered = seq;
    }
}

/// The entries of an `XRANGE` reply on the log: position, time, event.
pub(super) fn log_entries(reply: &Value) -> Result<Vec<(u64, u64, Vec<u8>)>, String> {
    let bad = || "unexpected reply from the catch-up log".to_owned();
    let Value::Array(entries) = reply else {
        return Err(bad());
    };
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(parts) = entry else {
            return Err(bad());
        };
        let (Some(id), Some(Value::Array(fields))) = (parts.first().and_then(text), parts.get(1))
        else {
            return Err(bad());
        };
        let seq: u64 = id
            .split('-')
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        let mut time = 0;
        let mut blob = None;
        for pair in fields.chunks_exact(2) {
            match text(&pair[0]).as_deref() {
                Some("t") => time = int(&pair[1]).unwrap_or(0) as u64,
                Some("e") => {
                    if let Value::BulkString(b) = &pair[1] {
                        blob = Some(b.clone());
                    }
                }
                _ => {}
            }
        }
        out.push((seq, time, blob.ok_or_else(bad)?));
    }
    Ok(out)
}
