//! The hub: publishing, subscribing and admitting connections, over a broker and
//! this node's fan-out.
//!
//! [`Hub`] is cheap to clone (an `Arc`), so it can be stored in handlers and tasks.
//! It knows nothing of HTTP, credentials, presence or the inbox: those parts hold a
//! `Hub` and are wired together by the node, the composition root.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::broker::{Accepted, Broker, BrokerError, Replay, ResumeFrom};
use crate::core::{
    ChannelName, Cursor, Event, EventError, EventLimits, Fanout, NewEvent, Subscription,
};
use crate::limits::{ConnectionLimits, Rejection, Slot};
use crate::settings::ConfigError;
use crate::stats::{Gauges, Stats};

/// How often history is expired and idle channels forgotten.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(5);

/// The longest a publish waits for this node's fan-out to catch up before its
/// events are accepted anyway (when most connections have stopped reading).
const MAX_PUBLISH_WAIT: Duration = Duration::from_millis(250);

/// A publication was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishError {
    /// An event is not valid; `index` is its place in the batch.
    #[error("event {index}: {error}")]
    Invalid {
        /// The place of the event in the batch (0 for a single event).
        index: usize,
        /// What is wrong with it.
        error: EventError,
    },
    /// The broker cannot accept events now.
    #[error(transparent)]
    Unavailable(#[from] BrokerError),
}

/// The hub handle.
#[derive(Clone, Debug)]
pub struct Hub {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    settings: HubSettings,
    fanout: Arc<Fanout>,
    broker: Arc<dyn Broker>,
    stats: Arc<Stats>,
    limits: Arc<ConnectionLimits>,
    shutdown: CancellationToken,
    node: String,
    next_connection: AtomicU64,
}

/// What the hub needs to know besides its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubSettings {
    /// The limits events must keep to.
    pub events: EventLimits,
    /// Events queued per connection before it counts as a slow consumer.
    pub queue_size: usize,
    /// Open streaming connections at most.
    pub max_connections: usize,
    /// Open streaming connections per client address at most (0: no limit).
    pub max_connections_per_ip: usize,
}

/// A hub held by a background task that must not keep it alive.
#[derive(Debug, Clone)]
pub struct WeakHub(std::sync::Weak<Inner>);

impl WeakHub {
    /// The hub, if it still exists.
    pub fn upgrade(&self) -> Option<Hub> {
        self.0.upgrade().map(|inner| Hub { inner })
    }
}

impl Hub {
    /// A hub over `broker`, delivering to `fanout` (the one the broker's
    /// [`crate::broker::LocalDelivery`] feeds) and counting in `stats`; `node` names
    /// this node in connection ids. Must be called inside a Tokio runtime: it starts
    /// the history upkeep task.
    pub fn new(
        settings: HubSettings,
        broker: Arc<dyn Broker>,
        fanout: Arc<Fanout>,
        stats: Arc<Stats>,
        node: String,
    ) -> Self {
        let limits =
            ConnectionLimits::new(settings.max_connections, settings.max_connections_per_ip);
        let hub = Self {
            inner: Arc::new(Inner {
                settings,
                fanout,
                broker,
                stats,
                limits,
                shutdown: CancellationToken::new(),
                node,
                next_connection: AtomicU64::new(1),
            }),
        };
        hub.spawn_maintenance();
        hub
    }

    fn spawn_maintenance(&self) {
        let broker = self.inner.broker.clone();
        let stop = self.inner.shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(MAINTENANCE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => broker.maintain().await,
                }
            }
        });
    }

    /// This node's name (in connection ids, webhooks and the presence log).
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// The broker's kind (`memory`, `redis`, `nats`).
    pub fn broker_kind(&self) -> &'static str {
        self.inner.broker.kind()
    }

    /// The hub held weakly, for background tasks.
    pub fn downgrade(&self) -> WeakHub {
        WeakHub(Arc::downgrade(&self.inner))
    }

    /// Publishes an event of the hub's own (presence), not counted as published.
    pub(crate) async fn publish_internal(&self, event: NewEvent) -> Result<Accepted, BrokerError> {
        let mut accepted = self.inner.broker.publish(vec![event]).await?;
        accepted
            .pop()
            .ok_or_else(|| BrokerError::Unavailable("no event accepted".into()))
    }

    /// Publishes one event; returns its id once the hub has accepted it.
    pub async fn publish(&self, event: NewEvent) -> Result<Accepted, PublishError> {
        let mut accepted = self.publish_batch(vec![event]).await?;
        accepted.pop().ok_or_else(|| {
            PublishError::Unavailable(BrokerError::Unavailable("no event accepted".into()))
        })
    }

    /// Publishes several events in order; all are checked before any is published.
    pub async fn publish_batch(
        &self,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Accepted>, PublishError> {
        let limits = self.inner.settings.events;
        for (index, event) in events.iter().enumerate() {
            event
                .validate(&limits)
                .map_err(|error| PublishError::Invalid { index, error })?;
        }
        let n = events.len() as u64;
        let accepted = self
            .inner
            .broker
            .publish(events)
            .await
            .map_err(|e| match e {
                BrokerError::IdConflict { index, id } => PublishError::Invalid {
                    index,
                    error: EventError::IdConflict(id),
                },
                e => PublishError::Unavailable(e),
            })?;
        self.inner.stats.published(n);
        // Hold the answer (not the event) while this node's fan-out is behind, so
        // that a publisher cannot run ahead of the subscribers' writes without bound,
        // while an accepted event goes out at once.
        self.inner.fanout.wait_for_room(MAX_PUBLISH_WAIT).await;
        Ok(accepted)
    }

    /// Publishes an event to one user's private channel (`user:{id}`), whatever
    /// channels it named.
    pub async fn send_to_user(
        &self,
        user: &str,
        mut event: NewEvent,
    ) -> Result<Accepted, PublishError> {
        let channel = ChannelName::user(user).map_err(|e| PublishError::Invalid {
            index: 0,
            error: e.into(),
        })?;
        event.channels = vec![channel];
        self.publish(event).await
    }

    /// Publishes an event to every connection, whatever channels it named.
    pub async fn broadcast(&self, mut event: NewEvent) -> Result<Accepted, PublishError> {
        event.channels = vec![ChannelName::broadcast()];
        self.publish(event).await
    }

    /// Lets a streaming connection in, or refuses it by the connection limits. The
    /// returned guard holds its place until dropped.
    pub fn admit(&self, ip: Option<IpAddr>) -> Result<Admission, Rejection> {
        let slot = self.inner.limits.admit(ip)?;
        let n = self.inner.next_connection.fetch_add(1, Ordering::Relaxed);
        let mut name = String::with_capacity(self.inner.node.len() + 8);
        name.push_str(&self.inner.node);
        name.push('-');
        let _ = std::fmt::Write::write_fmt(&mut name, format_args!("{n}"));
        Ok(Admission { _slot: slot, name })
    }

    /// Subscribes to channels (already authorised) from where `request` says.
    /// Live events are captured from before any replay is read, so nothing falls
    /// between the two and nothing is seen twice.
    pub async fn subscribe(&self, request: Subscribe) -> Result<Subscribed, BrokerError> {
        let inner = &self.inner;
        let queue = request.queue.unwrap_or(inner.settings.queue_size);
        // Before the start is read: from then on this node receives the channels'
        // live events.
        self.follow(&request.channels).await;
        let id = inner.next_connection.fetch_add(1, Ordering::Relaxed);
        let from = match request.start {
            Start::Now => {
                let subscription = inner.fanout.register(id, request.channels, queue);
                return Ok(Subscribed {
                    subscription,
                    position: None,
                    cursor: None,
                });
            }
            Start::After(from) => from,
            Start::Head => {
                // The position is read before the connection is registered, and what
                // was published in between is replayed: reading it afterwards would
                // leave the live events queued before it unresumable if the client
                // left at once. When the broker cannot tell its position (it is
                // unreachable), the connection is still served, with live events
                // only, and no position.
                let head = self.position_for(&request.channels).await;
                let mut subscription = inner.fanout.register(id, request.channels, queue);
                let Ok(head) = head else {
                    return Ok(Subscribed {
                        subscription,
                        position: None,
                        cursor: None,
                    });
                };
                let replay = inner
                    .broker
                    .replay(subscription.channels(), ResumeFrom::After(head.clone()))
                    .await;
                let Ok(replay) = replay else {
                    return Ok(Subscribed {
                        subscription,
                        position: None,
                        cursor: None,
                    });
                };
                // With partitions, the head of the connection's partitions only.
                let position = replay.start_id().unwrap_or(head);
                let cursor = start(&mut subscription, replay);
                return Ok(Subscribed {
                    subscription,
                    position: Some(position),
                    cursor,
                });
            }
        };
        let mut subscription = inner.fanout.register(id, request.channels, queue);
        let replay = inner
            .broker
            .replay(subscription.channels(), from.clone())
            .await?;
        inner
            .stats
            .resumed(replay.events.len() as u64, replay.reset.is_some());
        let position = replay.start_id().unwrap_or_else(|| from.as_id().to_owned());
        let cursor = start(&mut subscription, replay);
        Ok(Subscribed {
            subscription,
            position: Some(position),
            cursor,
        })
    }

    /// Adds a channel (already authorised) to a running subscription: its live
    /// events are captured at once, and what it missed after `resume` (if given) is
    /// queued before them, with a reset if history cannot cover the gap.
    ///
    /// With several partitions, returns where the client starts in the channel's
    /// partition.
    pub async fn add_channel(
        &self,
        subscription: &mut Subscription,
        channel: ChannelName,
        resume: Option<ResumeFrom>,
    ) -> Result<Option<Cursor>, BrokerError> {
        self.follow(std::slice::from_ref(&channel)).await;
        subscription.add_channel(channel.clone());
        let Some(from) = resume else {
            return Ok(None);
        };
        let replay = match self
            .inner
            .broker
            .replay(std::slice::from_ref(&channel), from)
            .await
        {
            Ok(replay) => replay,
            Err(e) => {
                subscription.remove_channel(&channel);
                return Err(e);
            }
        };
        self.inner
            .stats
            .resumed(replay.events.len() as u64, replay.reset.is_some());
        let floor = replay.floor(&channel);
        let cursor = replay.partitioned.map(|start| start.cursor);
        subscription.prepend_channel(&channel, replay.events, replay.reset, floor);
        Ok(cursor)
    }

    /// Makes sure this node receives the live events of `channels` (with a broker
    /// that follows partitions on demand; nothing to await otherwise).
    async fn follow(&self, channels: &[ChannelName]) {
        if self.inner.broker.follows_on_demand() {
            self.inner.broker.follow(channels).await;
        }
    }

    /// The id of the hub's newest position: resuming after it yields every event
    /// published from now on.
    pub async fn position(&self) -> Result<String, BrokerError> {
        self.inner.broker.head().await
    }

    /// The id of the newest position of `channels`: resuming them after it yields
    /// every event published on them from now on. With partitions, only theirs are
    /// read.
    pub async fn position_for(&self, channels: &[ChannelName]) -> Result<String, BrokerError> {
        self.inner.broker.head_for(channels).await
    }

    /// Up to `limit` of the newest events kept for `channel`, oldest first.
    pub async fn history(
        &self,
        channel: &ChannelName,
        limit: usize,
    ) -> Result<Vec<Arc<Event>>, BrokerError> {
        self.inner.broker.history(channel, limit).await
    }

    /// Whether the hub can accept events now: not shutting down, and the broker
    /// reachable.
    pub async fn check(&self) -> Result<(), BrokerError> {
        if self.is_shutting_down() {
            return Err(BrokerError::Unavailable("the hub is shutting down".into()));
        }
        self.inner.broker.check().await
    }

    /// What the counters cannot count themselves: connections, channels, history.
    pub fn gauges(&self) -> Gauges {
        let fanout = &self.inner.fanout;
        // The presence log is the hub's own channel, not one clients listen to.
        let internal = usize::from(fanout.subscriber_count(&ChannelName::presence_log()) > 0);
        Gauges {
            connections: self.inner.limits.counts(),
            channels: fanout.channel_count().saturating_sub(internal),
            history_channels: self.inner.broker.history_channels(),
            history_bytes: self.inner.broker.history_bytes(),
            broker: self.inner.broker.kind(),
        }
    }

    /// Starts a graceful shutdown: streams end with a reconnect hint, the server
    /// stops accepting.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    /// Whether a shutdown has started.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutdown.is_cancelled()
    }

    /// A token cancelled when a shutdown starts, for background tasks.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    /// Completes when a shutdown starts.
    pub async fn shutting_down(&self) {
        self.inner.shutdown.cancelled().await
    }
}

/// A streaming connection's place within the connection limits (given back when
/// dropped), and its id.
#[derive(Debug)]
pub struct Admission {
    _slot: Slot,
    name: String,
}

impl Admission {
    /// The connection id shown to the client.
    pub fn connection_id(&self) -> &str {
        &self.name
    }
}

/// Where a subscription starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// With the next live event, at no known position (the hub's own subscriptions).
    Now,
    /// At the hub's current position, which is reported: every event after it
    /// reaches the subscription, and a client that has seen none yet can resume
    /// from it without a gap.
    Head,
    /// After a client's last event id: what it missed first.
    After(ResumeFrom),
}

/// A subscription to open with [`Hub::subscribe`].
#[derive(Debug, Clone)]
pub struct Subscribe {
    /// The channels (already authorised).
    pub channels: Vec<ChannelName>,
    /// Where it starts.
    pub start: Start,
    /// Events queued before the subscription counts as a slow consumer
    /// (`limits.queue_size` when `None`).
    pub queue: Option<usize>,
}

/// An open subscription and the position it started after.
#[derive(Debug)]
pub struct Subscribed {
    /// The subscription.
    pub subscription: Subscription,
    /// The position it started after: the client's last event id, or the hub's
    /// position for [`Start::Head`] (`None` when the broker could not tell it).
    pub position: Option<String>,
    /// With several partitions, where it starts in each partition of its channels
    /// (before the replayed events).
    pub cursor: Option<Cursor>,
}

/// Queues what `replay` read ahead of the live events of `subscription`, skipping
/// the live events the client already has; returns where the client starts with
/// several partitions.
fn start(subscription: &mut Subscription, replay: Replay) -> Option<Cursor> {
    subscription.skip_through_each(|channel| replay.floor(channel));
    subscription.prepend(replay.events, replay.reset);
    replay.partitioned.map(|start| start.cursor)
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

impl ShutdownConfig {
    /// Checks the section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.grace.is_zero() {
            return Err(ConfigError::new("shutdown.grace", "must be longer than 0s"));
        }
        Ok(())
    }
}
