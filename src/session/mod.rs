//! A streaming connection, whatever carries it: SSE, WebSocket, long-polling, or
//! a protocol added later. A transport turns its request into an [`OpenRequest`],
//! and from then on only encodes what the [`Session`] yields and does the I/O.
//!
//! What every connection does lives here, once:
//!
//! - **admission** ([`Sessions::admit`]): the credential, the channel names and
//!   grants, the user channel and `$broadcast`, the connection limits, refusing
//!   new connections while the hub stops. A refusal is a typed [`Refusal`] that a
//!   transport renders its own way (an HTTP status, a WebSocket error frame).
//! - **the subscription and its resume** ([`Admitted::start`]): live events are
//!   captured before the missed ones are read, so nothing falls between them; a
//!   connection without a last event id starts at the hub's position, which it is
//!   told, so it can resume even before its first event.
//! - **one timer** per connection for the heartbeat (or ping) and the
//!   credential's expiry, pushed back only when it fires.
//! - **why it ended** ([`End`], in [`crate::protocol`]): shutdown with a spread
//!   reconnect delay, expiry, falling behind.
//! - what a connection may do while it runs: add and drop channels, ask who is
//!   present, publish client events under a rate limit.

use std::collections::HashSet;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::auth::{AuthError, Authenticator, Identity};
use crate::broker::{Accepted, BrokerError, ResumeFrom};
use crate::core::{
    ChannelError, ChannelName, Cursor, Denied, EventError, EventLimits, Item, Member, NewEvent,
    Overflow, OverflowSignal, Payload, Policies, Subscription,
};
use crate::hooks::{ClientEvent, Hooks};
use crate::hub::{Admission, Hub, PublishError, Start, Subscribe, Subscribed};
use crate::limits::{RateLimit, Rejection};
use crate::presence::Roster;
use crate::protocol::{Connected, End, reconnect_delay};
use crate::stats::Stats;

mod membership;

use membership::Membership;

/// Opens sessions: what every streaming connection needs of the node. Cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct Sessions {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    hub: Hub,
    auth: Arc<Authenticator>,
    policies: Arc<Policies>,
    roster: Roster,
    hooks: Hooks,
    stats: Arc<Stats>,
    settings: SessionSettings,
}

/// What sessions need to know besides the node's parts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SessionSettings {
    /// Channels one connection may name (its user channel and `$broadcast` come on
    /// top).
    pub max_channels_per_connection: usize,
    /// Tolerated clock skew: a session ends this long after its credential's expiry.
    pub leeway: Duration,
    /// Client events a connection may publish per second, on average.
    pub client_publish_rate: f64,
    /// Client events a connection may publish in a burst above the rate.
    pub client_publish_burst: u32,
    /// The reconnect delay given to clients as the hub stops is spread up to this.
    pub reconnect_within: Duration,
    /// The limits client events must keep to.
    pub event_limits: EventLimits,
}

/// The parts of a node sessions use.
#[derive(Debug, Clone)]
pub struct SessionParts {
    /// The hub sessions subscribe to and publish on.
    pub hub: Hub,
    /// Checks credentials.
    pub auth: Arc<Authenticator>,
    /// The channel policies.
    pub policies: Arc<Policies>,
    /// Presence: who is on which channel.
    pub roster: Roster,
    /// Where joins, leaves and client events go.
    pub hooks: Hooks,
    /// The counters.
    pub stats: Arc<Stats>,
}

/// A streaming request as every transport reads it from its own wire form.
#[derive(Debug, Clone, Default)]
pub struct OpenRequest {
    /// The credential presented (a JWT or an API key), if any.
    pub credential: Option<String>,
    /// The channel names asked for, as sent.
    pub channels: Vec<String>,
    /// Where the client resumes: an id it saw, or `earliest`.
    pub last_event_id: Option<String>,
    /// The client's address, for per-address limits.
    pub peer: Option<IpAddr>,
    /// Refuse an anonymous request that names no channel (it would only get
    /// broadcasts, which is most likely a mistake).
    pub require_channel: bool,
}

/// Why a connection, or something it asked for, was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    /// The credential is not valid.
    #[error(transparent)]
    Credential(#[from] AuthError),
    /// A channel name is not valid.
    #[error("{error}")]
    InvalidChannel {
        /// The name as sent.
        name: String,
        /// What is wrong with it.
        error: ChannelError,
    },
    /// The request names no channel.
    #[error("name at least one channel: /events?channel=NAME")]
    NoChannel,
    /// More channels than a connection may have.
    #[error("{}", match requested {
        Some(n) => format!("{n} channels requested; at most {max} per connection"),
        None => format!("at most {max} channels per connection"),
    })]
    TooManyChannels {
        /// How many were asked for (`None` when adding one to a full connection).
        requested: Option<usize>,
        /// The limit.
        max: usize,
    },
    /// The channel's policy or the credential does not allow subscribing.
    #[error(transparent)]
    Denied(Denied),
    /// A connection limit was reached.
    #[error("{}", match .0 {
        Rejection::MaxConnections => "the hub is at its connection limit; retry later",
        Rejection::PerIp => "too many open connections from this address",
    })]
    Limit(Rejection),
    /// The hub is stopping.
    #[error("the hub is shutting down; reconnect to another node")]
    ShuttingDown,
    /// The broker cannot serve it now.
    #[error(transparent)]
    Unavailable(#[from] BrokerError),
    /// An unsubscribe from a channel the connection is not on.
    #[error("not subscribed to {0}")]
    NotSubscribed(ChannelName),
    /// A client event names more channels than an event may.
    #[error("at most {0} channels per event (limits.max_channels_per_event)")]
    TooManyEventChannels(usize),
    /// Presence was asked of a namespace without it.
    #[error("presence is not enabled for {0}")]
    PresenceDisabled(ChannelName),
    /// A client event names no channel, or several ways of naming them.
    #[error("name exactly one of `channel` and `channels`")]
    NoTarget,
    /// Client events come faster than the connection's rate limit.
    #[error("more than {0} events per second; slow down")]
    RateLimited(f64),
    /// The namespace or the credential does not allow the client to publish there.
    #[error("{0}")]
    NotPublishable(String),
    /// A client event is not valid.
    #[error(transparent)]
    InvalidEvent(EventError),
    /// A hook or the webhook refused a client event.
    #[error("{0}")]
    HookRefused(String),
}

impl Refusal {
    /// The stable code a client can act on, the same over every transport.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Credential(AuthError::Expired) => "token_expired",
            Self::Credential(_) => "invalid_token",
            Self::InvalidChannel { .. } => "invalid_channel",
            Self::NoChannel => "no_channel",
            Self::TooManyChannels { .. } | Self::TooManyEventChannels(_) => "too_many_channels",
            Self::Denied(Denied::NeedsCredential(_)) => "unauthorized",
            Self::Denied(_) => "forbidden",
            Self::Limit(Rejection::MaxConnections) => "too_many_connections",
            Self::Limit(Rejection::PerIp) => "too_many_connections_from_address",
            Self::ShuttingDown => "shutting_down",
            Self::Unavailable(_) => "unavailable",
            Self::NotSubscribed(_) => "not_subscribed",
            Self::PresenceDisabled(_) => "presence_disabled",
            Self::NoTarget => "invalid_target",
            Self::RateLimited(_) => "rate_limited",
            Self::NotPublishable(_) => "forbidden",
            Self::InvalidEvent(_) => "invalid_event",
            Self::HookRefused(_) => "refused",
        }
    }

    /// The channel the refusal is about, if it is about one.
    pub fn channel(&self) -> Option<&str> {
        match self {
            Self::InvalidChannel { name, .. } => Some(name),
            Self::Denied(
                Denied::NeedsCredential(channel)
                | Denied::NotGranted(channel)
                | Denied::OtherUser(channel),
            ) => Some(channel),
            _ => None,
        }
    }
}

impl Sessions {
    /// Sessions over a node's `parts`.
    pub fn new(parts: SessionParts, settings: SessionSettings) -> Self {
        let SessionParts {
            hub,
            auth,
            policies,
            roster,
            hooks,
            stats,
        } = parts;
        Self {
            inner: Arc::new(Shared {
                hub,
                auth,
                policies,
                roster,
                hooks,
                stats,
                settings,
            }),
        }
    }

    /// The hub sessions subscribe to.
    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    /// The channel policies.
    pub fn policies(&self) -> &Policies {
        &self.inner.policies
    }

    /// Who is present on `channel`, on every node.
    pub fn presence(&self, channel: &ChannelName) -> Vec<Member> {
        self.inner.roster.members(channel)
    }

    /// Who presents `credential`: anonymous without one; a refused credential is
    /// counted.
    pub fn identify(&self, credential: Option<&str>) -> Result<Identity, AuthError> {
        let Some(credential) = credential.filter(|c| !c.is_empty()) else {
            return Ok(Identity::anonymous());
        };
        self.inner
            .auth
            .authenticate(credential)
            .inspect_err(|_| self.inner.stats.auth_failed())
    }

    /// Checks a streaming request and takes its place within the connection limits.
    pub fn admit(&self, request: OpenRequest) -> Result<Admitted, Refusal> {
        let identity = self.identify(request.credential.as_deref())?;
        let hub = &self.inner.hub;
        let max = self.inner.settings.max_channels_per_connection;
        let mut channels = Vec::with_capacity(request.channels.len().min(max) + 2);
        let mut seen = HashSet::with_capacity(request.channels.len().min(max));
        for name in &request.channels {
            let channel = parse_channel(name)?;
            if seen.insert(channel.clone()) {
                channels.push(channel);
            }
        }
        if channels.len() > max {
            return Err(Refusal::TooManyChannels {
                requested: Some(channels.len()),
                max,
            });
        }
        if request.require_channel && channels.is_empty() && !identity.is_authenticated() {
            return Err(Refusal::NoChannel);
        }
        let grants = identity.grants();
        for channel in &channels {
            self.inner
                .policies
                .may_subscribe(&grants, channel)
                .map_err(Refusal::Denied)?;
        }
        if let Some(user) = &identity.user {
            let own = ChannelName::user(user).map_err(|error| Refusal::InvalidChannel {
                name: user.clone(),
                error,
            })?;
            if !seen.contains(&own) {
                channels.push(own);
            }
        }
        channels.push(ChannelName::broadcast());
        let resume = request
            .last_event_id
            .filter(|id| !id.is_empty())
            .map(|id| ResumeFrom::parse(&id));
        let admission = hub.admit(request.peer).map_err(Refusal::Limit)?;
        if hub.is_shutting_down() {
            return Err(Refusal::ShuttingDown);
        }
        Ok(Admitted {
            sessions: self.clone(),
            identity,
            channels,
            resume,
            admission,
        })
    }
}

fn parse_channel(name: &str) -> Result<ChannelName, Refusal> {
    ChannelName::new(name).map_err(|error| Refusal::InvalidChannel {
        name: name.to_owned(),
        error,
    })
}

/// A connection that passed admission and holds its place, not yet subscribed.
#[derive(Debug)]
pub struct Admitted {
    sessions: Sessions,
    identity: Identity,
    channels: Vec<ChannelName>,
    resume: Option<ResumeFrom>,
    admission: Admission,
}

/// How a session keeps an idle connection alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    /// A heartbeat after each period with nothing sent (SSE comments).
    WhenIdle(Duration),
    /// A heartbeat every period whatever was sent (WebSocket pings, whose answers
    /// show the client is alive).
    Every(Duration),
    /// None (a long-poll request, which ends by itself).
    Off,
}

/// What a session does besides carrying events.
#[derive(Debug, Clone, Copy)]
pub struct SessionOptions {
    /// How the connection is kept alive.
    pub heartbeat: Heartbeat,
    /// Whether the connection counts as present on its channels (joins and leaves,
    /// presence, webhooks). A long-poll request does not: requests come and go.
    pub presence: bool,
}

impl Admitted {
    /// Who the connection is.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Its channels, its user channel and `$broadcast` included.
    pub fn channels(&self) -> &[ChannelName] {
        &self.channels
    }

    /// Where it asked to resume.
    pub fn resume(&self) -> Option<&ResumeFrom> {
        self.resume.as_ref()
    }

    /// The id of the newest position of the connection's channels, for a client
    /// that has seen nothing yet.
    pub async fn position(&self) -> Result<String, Refusal> {
        Ok(self.sessions.inner.hub.position_for(&self.channels).await?)
    }

    /// Subscribes the connection: what it missed since its last event id first, then
    /// live events.
    pub async fn start(self, options: SessionOptions) -> Result<Session, Refusal> {
        let Admitted {
            sessions,
            identity,
            channels,
            resume,
            admission,
        } = self;
        let shared = &sessions.inner;
        let request = Subscribe {
            channels,
            start: resume.map_or(Start::Head, Start::After),
            queue: None,
        };
        let Subscribed {
            mut subscription,
            position: start,
            cursor,
        } = shared.hub.subscribe(request).await?;
        subscription.keep_cursor(cursor);
        let membership = options.presence.then(|| {
            let mut membership = Membership::new(
                &sessions,
                admission.connection_id(),
                identity.user.clone(),
                identity.info.clone(),
            );
            for channel in subscription.channels() {
                membership.join(channel);
            }
            membership
        });
        let settings = &shared.settings;
        let now = Instant::now();
        let expires = identity
            .expires_in()
            .and_then(|left| now.checked_add(left)?.checked_add(settings.leeway));
        let limit = RateLimit::new(settings.client_publish_rate, settings.client_publish_burst);
        let mut session = Session {
            timer: Box::pin(tokio::time::sleep_until(now)),
            heartbeat: options.heartbeat,
            last_write: now,
            expires,
            start,
            limit,
            subscription,
            membership,
            identity,
            admission,
            sessions,
        };
        session.set_timer(now);
        Ok(session)
    }
}

/// What a session yields next.
#[derive(Debug)]
pub enum Step {
    /// An event or a reset, for the transport to encode.
    Item(Item),
    /// A heartbeat is due (an SSE comment, a WebSocket ping).
    Heartbeat,
    /// The session is over; the transport says why and closes.
    End(End),
}

/// A client event as a transport read it.
#[derive(Debug, Clone)]
pub struct ClientPublish {
    /// The channels named, as sent.
    pub channels: Vec<String>,
    /// The event type.
    pub kind: Option<String>,
    /// The data.
    pub data: Payload,
}

/// What adding a channel did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// The channel was added (and what it missed is queued).
    Added,
    /// The connection was already on it.
    Already,
}

/// One streaming connection's subscription, timer and place, until it ends.
#[derive(Debug)]
pub struct Session {
    /// One timer for the heartbeat and the credential's expiry: it fires at the
    /// earlier of the two, and is pushed back only when it fires, not on every write.
    timer: Pin<Box<Sleep>>,
    heartbeat: Heartbeat,
    /// When the session last yielded something to send.
    last_write: Instant,
    expires: Option<Instant>,
    start: Option<String>,
    limit: RateLimit,
    subscription: Subscription,
    membership: Option<Membership>,
    identity: Identity,
    admission: Admission,
    sessions: Sessions,
}

impl Session {
    /// The first message: who the connection is, its channels and its position.
    pub fn connected(&self) -> Connected {
        Connected {
            connection_id: self.admission.connection_id().to_owned(),
            user: self.identity.user.clone(),
            channels: self.subscription.channels().to_vec(),
            heartbeat_ms: None,
            last_event_id: self.start.clone(),
        }
    }

    /// The connection's id.
    pub fn connection_id(&self) -> &str {
        self.admission.connection_id()
    }

    /// Who the connection is.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Its channels.
    pub fn channels(&self) -> &[ChannelName] {
        self.subscription.channels()
    }

    /// The position the session started after (see [`Connected::last_event_id`]).
    pub fn start_position(&self) -> Option<&str> {
        self.start.as_deref()
    }

    /// The next step, waiting for one. Cancel-safe: a transport may wait on it
    /// beside its socket.
    pub async fn next(&mut self) -> Step {
        loop {
            {
                let shared = &self.sessions.inner;
                let subscription = &mut self.subscription;
                let timer = &mut self.timer;
                tokio::select! {
                    biased;
                    _ = shared.hub.shutting_down() => {
                        let within = shared.settings.reconnect_within;
                        return Step::End(End::Shutdown { retry: reconnect_delay(within) });
                    }
                    _ = timer.as_mut() => {}
                    item = subscription.next() => match item {
                        Ok(Some(item)) => {
                            self.last_write = Instant::now();
                            return Step::Item(item);
                        }
                        Ok(None) => return Step::End(End::Gone),
                        Err(Overflow) => return Step::End(self.slow_consumer()),
                    },
                }
            }
            let now = Instant::now();
            if self.expires.is_some_and(|at| at <= now) {
                return Step::End(End::TokenExpired);
            }
            match self.heartbeat {
                Heartbeat::WhenIdle(period) if self.last_write + period > now => {
                    // Something was sent since the timer was set: no heartbeat is
                    // due until a full period after that.
                    self.set_timer(self.last_write);
                }
                Heartbeat::WhenIdle(_) | Heartbeat::Every(_) => {
                    self.last_write = now;
                    self.set_timer(now);
                    return Step::Heartbeat;
                }
                Heartbeat::Off => self.set_timer(now),
            }
        }
    }

    /// The next item if one is ready now (to send several in one write);
    /// [`End::SlowConsumer`] when the queue overflowed.
    pub fn try_next(&mut self) -> Result<Option<Item>, End> {
        match self.subscription.try_next() {
            Ok(item) => Ok(item),
            Err(Overflow) => Err(self.slow_consumer()),
        }
    }

    /// With several partitions, the id of the item the session yielded last: the
    /// connection's cursor, which a transport sends instead of the event's own id
    /// (a reset's too). `None` with one partition: the item's own id is the one.
    pub fn cursor_id(&self) -> Option<String> {
        self.subscription.cursor().map(Cursor::to_string)
    }

    fn slow_consumer(&self) -> End {
        tracing::debug!(
            connection = self.admission.connection_id(),
            "closing a slow consumer"
        );
        End::SlowConsumer
    }

    /// Completes when the connection's queue overflowed without taking anything
    /// from it. A transport whose write is blocked by a reader that stopped reading
    /// waits on this beside the write, and closes the connection when it completes.
    pub async fn overflowed(&self) {
        self.subscription.overflowed().await
    }

    /// [`Session::overflowed`] for a task apart from the session's.
    pub fn overflow_signal(&self) -> OverflowSignal {
        self.subscription.overflow_signal()
    }

    /// Sets the timer for the next heartbeat after `from`, or the expiry if earlier.
    fn set_timer(&mut self, from: Instant) {
        let beat = match self.heartbeat {
            Heartbeat::WhenIdle(period) | Heartbeat::Every(period) => from.checked_add(period),
            Heartbeat::Off => None,
        };
        let at = match (beat, self.expires) {
            (Some(beat), Some(expires)) => beat.min(expires),
            (Some(at), None) | (None, Some(at)) => at,
            // Nothing to wake for: a day from now, and again after that.
            (None, None) => from + Duration::from_secs(86_400),
        };
        self.timer.as_mut().reset(at);
    }

    /// Adds a channel to the running connection, replaying what it missed after
    /// `last_event_id` (if given) before its live events.
    pub async fn subscribe(
        &mut self,
        name: &str,
        last_event_id: Option<&str>,
    ) -> Result<Added, Refusal> {
        let channel = parse_channel(name)?;
        let shared = &self.sessions.inner;
        shared
            .policies
            .may_subscribe(&self.identity.grants(), &channel)
            .map_err(Refusal::Denied)?;
        if self.subscription.has(&channel) {
            return Ok(Added::Already);
        }
        // The user channel and `$broadcast` come on top of the named ones.
        let max = shared.settings.max_channels_per_connection;
        if self.subscription.channels().len() >= max + 2 {
            return Err(Refusal::TooManyChannels {
                requested: None,
                max,
            });
        }
        let mut resume = last_event_id
            .filter(|id| !id.is_empty())
            .map(ResumeFrom::parse);
        if resume.is_none() && self.subscription.cursor().is_some() {
            // The cursor must hold a place in the channel's partition from now on,
            // so that a resume after a drop covers the channel.
            let head = shared
                .hub
                .position_for(std::slice::from_ref(&channel))
                .await?;
            resume = Some(ResumeFrom::After(head));
        }
        let start = shared
            .hub
            .add_channel(&mut self.subscription, channel.clone(), resume)
            .await?;
        if let (Some(cursor), Some(start)) = (self.subscription.cursor_mut(), start) {
            for at in start.positions() {
                if cursor.get(at.partition).is_none() {
                    cursor.advance(*at);
                }
            }
        }
        if let Some(membership) = &mut self.membership {
            membership.join(&channel);
        }
        Ok(Added::Added)
    }

    /// Drops a channel from the running connection.
    pub fn unsubscribe(&mut self, name: &str) -> Result<(), Refusal> {
        let channel = parse_channel(name)?;
        if !self.subscription.remove_channel(&channel) {
            return Err(Refusal::NotSubscribed(channel));
        }
        if let Some(membership) = &mut self.membership {
            membership.leave(&channel);
        }
        Ok(())
    }

    /// Who is present on a channel the connection is on or may subscribe to.
    pub fn presence(&self, name: &str) -> Result<(ChannelName, Vec<Member>), Refusal> {
        let channel = parse_channel(name)?;
        let shared = &self.sessions.inner;
        if !self.subscription.has(&channel) {
            shared
                .policies
                .may_subscribe(&self.identity.grants(), &channel)
                .map_err(Refusal::Denied)?;
        }
        if !shared.policies.of(&channel).presence {
            return Err(Refusal::PresenceDisabled(channel));
        }
        let members = shared.roster.members(&channel);
        Ok((channel, members))
    }

    /// Publishes an event from the client, where the namespace and the credential
    /// allow it, within the connection's rate limit.
    pub async fn publish(&mut self, event: ClientPublish) -> Result<Accepted, Refusal> {
        if event.channels.is_empty() {
            return Err(Refusal::NoTarget);
        }
        let max = self.sessions.inner.settings.event_limits.max_channels;
        if event.channels.len() > max {
            return Err(Refusal::TooManyEventChannels(max));
        }
        let mut channels = Vec::with_capacity(event.channels.len());
        let mut seen = HashSet::with_capacity(event.channels.len());
        for name in &event.channels {
            let channel = parse_channel(name)?;
            if seen.insert(channel.clone()) {
                channels.push(channel);
            }
        }
        let shared = &self.sessions.inner;
        if !self.limit.allow() {
            shared.stats.client_event(false);
            return Err(Refusal::RateLimited(self.limit.rate()));
        }
        let mut new = NewEvent::new(channels[0].clone(), event.data);
        new.channels = channels;
        new.kind = event.kind;
        let result = self.vet_and_publish(new).await;
        shared.stats.client_event(result.is_ok());
        result
    }

    /// Publishes a client event where the namespaces and the credential allow it,
    /// once the hooks let it through: live-only unless every namespace keeps client
    /// events, and never with an id of the client's.
    async fn vet_and_publish(&self, mut event: NewEvent) -> Result<Accepted, Refusal> {
        let shared = &self.sessions.inner;
        event
            .validate(&shared.settings.event_limits)
            .map_err(Refusal::InvalidEvent)?;
        let mut keep_history = true;
        for channel in &event.channels {
            let policy = shared.policies.of(channel);
            if !policy.client_publish || channel.is_broadcast() {
                return Err(Refusal::NotPublishable(format!(
                    "clients may not publish to {channel}"
                )));
            }
            if !self.identity.may_publish(channel) {
                return Err(Refusal::NotPublishable(format!(
                    "the token does not grant publishing to {channel}"
                )));
            }
            keep_history &= policy.client_history;
        }
        event.ephemeral = !keep_history;
        event.id = None;
        let checked = shared
            .hooks
            .vet(ClientEvent {
                connection_id: self.connection_id().to_owned(),
                user: self.identity.user.clone(),
                event,
            })
            .await
            .map_err(Refusal::HookRefused)?;
        shared.hub.publish(checked).await.map_err(|e| match e {
            PublishError::Invalid { error, .. } => Refusal::InvalidEvent(error),
            PublishError::Unavailable(e) => Refusal::Unavailable(e),
        })
    }

    /// Ends the connection on its channels at once (leaves them, takes no more
    /// events), whatever its transport still has to say before closing.
    pub fn close(&mut self) {
        if let Some(membership) = &mut self.membership {
            membership.leave_all();
        }
        self.subscription.remove_all();
    }
}
