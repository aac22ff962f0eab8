//! The hub: the handle an application or the binary holds, tying the core to a
//! broker, credentials, limits and counters.
//!
//! [`Hub`] is cheap to clone (an `Arc`), so it can be stored in handlers and tasks.
//! The HTTP face of it is [`Hub::router`], in [`crate::http`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::auth::Identity;
use crate::broker::{Accepted, Broker, BrokerError, LocalDelivery, ResumeFrom};
use crate::config::{Config, ConfigError};
use crate::core::{
    ChannelName, ClusterView, Event, EventError, Fanout, Member, NewEvent, Policies, Presence,
    Subscription,
};
use crate::hooks::{ChannelActivity, ClientEvent, Hooks};
use crate::stats::{Gauges, Rejection, Snapshot, Stats};
use crate::webhooks::Webhooks;

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

/// An event from a client was not published.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientPublishError {
    /// The namespace or the token does not allow it.
    #[error("{0}")]
    Forbidden(String),
    /// The event is not valid.
    #[error(transparent)]
    Invalid(EventError),
    /// A hook or the webhook refused it.
    #[error("refused: {0}")]
    Refused(String),
    /// The broker cannot accept events now.
    #[error(transparent)]
    Unavailable(BrokerError),
}

/// The hub handle.
#[derive(Clone, Debug)]
pub struct Hub {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    config: Config,
    policies: Arc<Policies>,
    auth: Authenticator,
    fanout: Arc<Fanout>,
    broker: Arc<dyn Broker>,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
    node: String,
    next_connection: AtomicU64,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    components: Mutex<Vec<Readiness>>,
    presence: Presence,
    /// Every node's presence, from the presence log (see `crate::presence`).
    cluster: Mutex<ClusterView>,
    presence_sync: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<(ChannelName, String)>>,
    hooks: parking_lot::RwLock<Hooks>,
    activity: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<ChannelActivity>>,
    webhooks: Option<Arc<Webhooks>>,
    store: crate::store::Store,
    user_locks: crate::inbox::UserLocks,
}

impl std::fmt::Debug for dyn Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Broker({})", self.kind())
    }
}

impl Hub {
    /// Builds a hub from a checked configuration. Must be called inside a Tokio
    /// runtime: it starts the history upkeep task.
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        config.validate()?;
        let auth = Authenticator::from_config(&config.auth)?;
        let policies = Arc::new(config.policies());
        let stats = Arc::new(Stats::default());
        let fanout = Fanout::new();
        let delivery = LocalDelivery::new(fanout.clone(), stats.clone());
        let broker: Arc<dyn Broker> = crate::broker::start(&config, policies.clone(), delivery)?;
        let shutdown = CancellationToken::new();
        let node = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
        let webhooks = Webhooks::start(&config.webhooks, &node, shutdown.clone(), stats.clone());
        let store = crate::store::Store::open(&config.store.backend()?)?;
        let hub = Self {
            inner: Arc::new(Inner {
                config,
                policies,
                auth,
                fanout,
                broker,
                stats,
                shutdown,
                node,
                next_connection: AtomicU64::new(1),
                per_ip: Mutex::new(HashMap::new()),
                components: Mutex::new(Vec::new()),
                presence: Presence::default(),
                cluster: Mutex::new(ClusterView::default()),
                presence_sync: std::sync::OnceLock::new(),
                hooks: parking_lot::RwLock::new(Hooks::default()),
                activity: std::sync::OnceLock::new(),
                webhooks,
                store,
                user_locks: crate::inbox::UserLocks::default(),
            }),
        };
        hub.spawn_maintenance();
        crate::inbox::spawn_upkeep(&hub);
        let _ = hub
            .inner
            .activity
            .set(crate::hooks::spawn_activity_task(Arc::downgrade(
                &hub.inner,
            )));
        let _ = hub.inner.presence_sync.set(crate::presence::spawn(&hub));
        if let Some(postgres) = &hub.inner.config.postgres {
            crate::source::postgres::spawn(&hub, postgres.clone());
        }
        #[cfg(feature = "redis")]
        if let Some(source) = &hub.inner.config.redis_source {
            let broker = hub.inner.config.broker_kind()?;
            if let Some(url) = source.url(&broker) {
                crate::source::redis::spawn(&hub, source.clone(), url.to_owned());
            }
        }
        Ok(hub)
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

    /// The configuration the hub runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The credential checker.
    pub fn authenticator(&self) -> &Authenticator {
        &self.inner.auth
    }

    /// Where notifications and tasks are stored. Changes made directly on it are
    /// not pushed to users; the methods of [`crate::inbox`] are.
    pub fn store(&self) -> &crate::store::Store {
        &self.inner.store
    }

    /// The locks that order each user's inbox changes.
    pub(crate) fn user_locks(&self) -> &crate::inbox::UserLocks {
        &self.inner.user_locks
    }

    /// The channel policies.
    pub fn policies(&self) -> &Policies {
        &self.inner.policies
    }

    /// The hub a background task holds weakly, if it still exists.
    pub(crate) fn upgrade(inner: &std::sync::Weak<Inner>) -> Option<Self> {
        inner.upgrade().map(|inner| Self { inner })
    }

    pub(crate) fn hooks(&self) -> Hooks {
        self.inner.hooks.read().clone()
    }

    pub(crate) fn hooks_mut(&self, change: impl FnOnce(&mut Hooks)) {
        change(&mut self.inner.hooks.write());
    }

    pub(crate) fn webhooks(&self) -> Option<&Arc<Webhooks>> {
        self.inner.webhooks.as_ref()
    }

    pub(crate) fn presence_registry(&self) -> &Presence {
        &self.inner.presence
    }

    pub(crate) fn record_activity(&self, activity: ChannelActivity) {
        if let Some(tx) = self.inner.activity.get() {
            let _ = tx.send(activity);
        }
    }

    /// The users present on `channel` (for namespaces with presence) on every node,
    /// each once with their connections summed: this node's first, in the order they
    /// joined, then those only on other nodes.
    pub fn presence(&self, channel: &ChannelName) -> Vec<Member> {
        let mut members = self.inner.presence.members(channel);
        let elsewhere = self
            .inner
            .cluster
            .lock()
            .members_except(channel, &self.inner.node);
        for other in elsewhere {
            match members.iter_mut().find(|m| m.user == other.user) {
                Some(member) => member.connections += other.connections,
                None => members.push(other),
            }
        }
        members
    }

    /// A connection count of `user` on `channel` changed on this node: share it.
    pub(crate) fn presence_changed(&self, channel: &ChannelName, user: &str) {
        if let Some(tx) = self.inner.presence_sync.get() {
            let _ = tx.send((channel.clone(), user.to_owned()));
        }
    }

    pub(crate) fn cluster_view(&self) -> parking_lot::MutexGuard<'_, ClusterView> {
        self.inner.cluster.lock()
    }

    /// This node's name (in connection ids, webhooks and the presence log).
    pub(crate) fn node(&self) -> &str {
        &self.inner.node
    }

    /// Whether this hub is alone (memory broker): nothing to share with other nodes.
    pub(crate) fn single_node(&self) -> bool {
        matches!(
            self.inner.config.broker_kind(),
            Ok(crate::config::BrokerKind::Memory) | Err(_)
        )
    }

    pub(crate) fn weak(&self) -> std::sync::Weak<Inner> {
        Arc::downgrade(&self.inner)
    }

    /// A subscription of the hub's own (not a client connection) on `channels`.
    pub(crate) fn register_internal(
        &self,
        channels: Vec<ChannelName>,
        capacity: usize,
    ) -> Subscription {
        let id = self.inner.next_connection.fetch_add(1, Ordering::Relaxed);
        self.inner.fanout.register(id, channels, capacity)
    }

    /// Publishes an event of the hub's own (presence), not counted as published.
    pub(crate) async fn publish_internal(&self, event: NewEvent) -> Result<Accepted, BrokerError> {
        let mut accepted = self.inner.broker.publish(vec![event]).await?;
        accepted
            .pop()
            .ok_or_else(|| BrokerError::Unavailable("no event accepted".into()))
    }

    /// Publishes an event sent by a connected client: the namespace must allow
    /// client publishing and the client's token must grant the channels; the
    /// client-event hooks and webhook may change or refuse it.
    pub async fn publish_from_client(
        &self,
        identity: &Identity,
        connection_id: &str,
        mut event: NewEvent,
    ) -> Result<Accepted, ClientPublishError> {
        let result = self
            .vet_and_publish(identity, connection_id, &mut event)
            .await;
        self.inner.stats.client_event(result.is_ok());
        result
    }

    async fn vet_and_publish(
        &self,
        identity: &Identity,
        connection_id: &str,
        event: &mut NewEvent,
    ) -> Result<Accepted, ClientPublishError> {
        event
            .validate(&self.inner.config.limits.events())
            .map_err(ClientPublishError::Invalid)?;
        let mut keep_history = true;
        for channel in &event.channels {
            let policy = self.inner.policies.of(channel);
            if !policy.client_publish || channel.is_broadcast() {
                return Err(ClientPublishError::Forbidden(format!(
                    "clients may not publish to {channel}"
                )));
            }
            if !identity.may_publish(channel) {
                return Err(ClientPublishError::Forbidden(format!(
                    "the token does not grant publishing to {channel}"
                )));
            }
            keep_history &= policy.client_history;
        }
        event.ephemeral = !keep_history;
        event.id = None;
        let checked = self
            .vet_client_event(ClientEvent {
                connection_id: connection_id.to_owned(),
                user: identity.user.clone(),
                event: event.clone(),
            })
            .await
            .map_err(ClientPublishError::Refused)?;
        let mut accepted = self
            .publish_batch(vec![checked])
            .await
            .map_err(|e| match e {
                PublishError::Invalid { error, .. } => ClientPublishError::Invalid(error),
                PublishError::Unavailable(e) => ClientPublishError::Unavailable(e),
            })?;
        accepted.pop().ok_or_else(|| {
            ClientPublishError::Unavailable(BrokerError::Unavailable("no event accepted".into()))
        })
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
        let limits = self.inner.config.limits.events();
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
        let inner = &self.inner;
        let limits = &inner.config.limits;
        if !inner.stats.try_open(limits.max_connections as u64) {
            inner.stats.rejected(Rejection::MaxConnections);
            return Err(Rejection::MaxConnections);
        }
        let max = limits.max_connections_per_ip;
        if let Some(ip) = ip
            && max > 0
        {
            let mut per_ip = inner.per_ip.lock();
            let count = per_ip.entry(ip).or_insert(0);
            if *count >= max {
                drop(per_ip);
                inner.stats.connection_closed();
                inner.stats.rejected(Rejection::PerIp);
                return Err(Rejection::PerIp);
            }
            *count += 1;
        }
        let n = inner.next_connection.fetch_add(1, Ordering::Relaxed);
        Ok(Admission {
            hub: self.clone(),
            ip: ip.filter(|_| limits.max_connections_per_ip > 0),
            id: n,
            name: format!("{}-{n}", inner.node),
        })
    }

    /// Registers an admitted connection on `channels` (already authorised) with no
    /// replay; live events are captured from the moment this returns.
    pub fn register(&self, admission: &Admission, channels: Vec<ChannelName>) -> Subscription {
        self.inner
            .fanout
            .register(admission.id, channels, self.inner.config.limits.queue_size)
    }

    /// Subscribes an admitted connection to `channels` (already authorised), replaying
    /// what it missed since `resume`. Live events are captured from before the replay
    /// is read, so nothing falls between the two and nothing is seen twice.
    pub async fn subscribe(
        &self,
        admission: &Admission,
        channels: Vec<ChannelName>,
        resume: Option<ResumeFrom>,
    ) -> Result<Subscription, BrokerError> {
        let inner = &self.inner;
        let mut subscription =
            inner
                .fanout
                .register(admission.id, channels, inner.config.limits.queue_size);
        if let Some(from) = resume {
            let replay = inner.broker.replay(subscription.channels(), from).await?;
            inner
                .stats
                .resumed(replay.events.len() as u64, replay.reset.is_some());
            subscription.prepend(replay.events, replay.reset);
            subscription.skip_through(replay.after_seq);
        }
        Ok(subscription)
    }

    /// Subscribes like [`Hub::subscribe`], except that a connection without a last
    /// event id starts at the hub's current position instead of at whatever arrives
    /// first: every event after that position reaches it, and the position is
    /// returned so that a client that has seen no event yet can still resume
    /// without a gap. With a last event id, that id is returned. When the broker
    /// cannot tell its position (it is unreachable), a connection without a last
    /// event id is still served, with live events only, and no position.
    pub async fn subscribe_from(
        &self,
        admission: &Admission,
        channels: Vec<ChannelName>,
        resume: Option<ResumeFrom>,
    ) -> Result<(Subscription, Option<String>), BrokerError> {
        if let Some(from) = resume {
            let start = match &from {
                ResumeFrom::Earliest => "earliest".to_owned(),
                ResumeFrom::After(id) => id.clone(),
            };
            let subscription = self.subscribe(admission, channels, Some(from)).await?;
            return Ok((subscription, Some(start)));
        }
        // The position is read before the connection is registered, and what was
        // published in between is replayed: reading it afterwards would leave the
        // live events queued before it unresumable if the client left at once.
        let head = self.position().await;
        let inner = &self.inner;
        let mut subscription =
            inner
                .fanout
                .register(admission.id, channels, inner.config.limits.queue_size);
        let Ok(head) = head else {
            return Ok((subscription, None));
        };
        match inner
            .broker
            .replay(subscription.channels(), ResumeFrom::After(head.clone()))
            .await
        {
            Ok(replay) => {
                subscription.prepend(replay.events, replay.reset);
                subscription.skip_through(replay.after_seq);
                Ok((subscription, Some(head)))
            }
            Err(_) => Ok((subscription, None)),
        }
    }

    /// The id of the hub's newest position: resuming after it yields every event
    /// published from now on.
    pub async fn position(&self) -> Result<String, BrokerError> {
        // Every broker answers an id it does not know with a reset naming its newest
        // position, and no event id may hold a control character, so this one is
        // never known.
        let replay = self
            .inner
            .broker
            .replay(&[], ResumeFrom::After("\u{1}".to_owned()))
            .await?;
        replay.reset.map(|reset| reset.id).ok_or_else(|| {
            BrokerError::Unavailable("the broker did not report its position".into())
        })
    }

    /// The events on `channels` after `from`, with a reset for channels whose history
    /// cannot cover the gap (used when a channel is added to a running connection).
    pub async fn replay(
        &self,
        channels: &[ChannelName],
        from: ResumeFrom,
    ) -> Result<crate::broker::Replay, BrokerError> {
        let replay = self.inner.broker.replay(channels, from).await?;
        self.inner
            .stats
            .resumed(replay.events.len() as u64, replay.reset.is_some());
        Ok(replay)
    }

    /// Up to `limit` of the newest events kept for `channel`, oldest first.
    pub async fn history(
        &self,
        channel: &ChannelName,
        limit: usize,
    ) -> Result<Vec<Arc<Event>>, BrokerError> {
        self.inner.broker.history(channel, limit).await
    }

    /// Whether the hub can accept events now: not shutting down, the broker
    /// reachable, and every registered component ready.
    pub async fn ready(&self) -> Result<(), BrokerError> {
        if self.is_shutting_down() {
            return Err(BrokerError::Unavailable("the hub is shutting down".into()));
        }
        self.inner.broker.check().await?;
        let components = self.inner.components.lock().clone();
        for component in components {
            if let Some(reason) = component.state.lock().clone() {
                return Err(BrokerError::Unavailable(format!(
                    "{}: {reason}",
                    component.name
                )));
            }
        }
        Ok(())
    }

    /// Registers a part of the hub whose health `/readyz` reports (an event
    /// source's connection, a store). It starts unready until it says otherwise.
    pub fn readiness(&self, name: &'static str) -> Readiness {
        let component = Readiness {
            name,
            state: Arc::new(Mutex::new(Some("starting".into()))),
        };
        self.inner.components.lock().push(component.clone());
        component
    }

    /// The counters, for `/stats`.
    pub fn stats(&self) -> Snapshot {
        self.inner.stats.snapshot(self.gauges())
    }

    /// The counters in Prometheus text format, for `/metrics`.
    pub fn prometheus(&self) -> String {
        self.inner.stats.prometheus(self.gauges())
    }

    pub(crate) fn counters(&self) -> &Stats {
        &self.inner.stats
    }

    fn gauges(&self) -> Gauges {
        let fanout = &self.inner.fanout;
        // The presence log is the hub's own channel, not one clients listen to.
        let internal = usize::from(fanout.subscriber_count(&ChannelName::presence_log()) > 0);
        Gauges {
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
    pub(crate) fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    /// Completes when a shutdown starts.
    pub async fn shutting_down(&self) {
        self.inner.shutdown.cancelled().await
    }
}

/// The readiness of one part of the hub, as reported by `/readyz`.
#[derive(Debug, Clone)]
pub struct Readiness {
    name: &'static str,
    /// `None` when ready; otherwise why not.
    state: Arc<Mutex<Option<String>>>,
}

impl Readiness {
    /// The part is working.
    pub fn ready(&self) {
        *self.state.lock() = None;
    }

    /// The part is not working, and why.
    pub fn unready(&self, reason: impl Into<String>) {
        *self.state.lock() = Some(reason.into());
    }
}

/// A streaming connection's place within the connection limits; released on drop.
#[derive(Debug)]
pub struct Admission {
    hub: Hub,
    ip: Option<IpAddr>,
    id: u64,
    name: String,
}

impl Admission {
    /// The connection id shown to the client.
    pub fn connection_id(&self) -> &str {
        &self.name
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let inner = &self.hub.inner;
        inner.stats.connection_closed();
        if let Some(ip) = self.ip {
            let mut per_ip = inner.per_ip.lock();
            if let Some(count) = per_ip.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
    }
}
