//! Channel activity: connections joining and leaving channels, presence, and the
//! application's hooks on them and on events published by clients.
//!
//! Transports hold a [`Membership`] per connection and call `join`/`leave` as the
//! connection's channels change; dropping it leaves every channel, so a connection
//! that dies without a goodbye still leaves. Activities are handled in order by
//! one task: it calls the Rust hooks, announces presence changes on the channel
//! (`presence.join`, `presence.leave`, live-only events) and hands them to the
//! webhooks.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::core::{ChannelName, NewEvent};
use crate::hub::Hub;

/// Whether a connection joined or left a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActivityKind {
    /// The connection subscribed to the channel.
    Join,
    /// The connection's subscription to the channel ended.
    Leave,
}

/// A connection joined or left a channel.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelActivity {
    /// Join or leave.
    #[serde(rename = "type")]
    pub kind: ActivityKind,
    /// The channel.
    pub channel: ChannelName,
    /// The connection.
    pub connection_id: String,
    /// The connection's user, if authenticated.
    pub user: Option<String>,
    /// Whether this changed the channel's presence (the user's first connection
    /// joined, or their last left).
    pub presence_changed: bool,
    /// The user's public information from their token, if any.
    #[serde(skip)]
    pub info: Option<serde_json::Value>,
}

/// An event a client asked to publish, as a hook sees it.
#[derive(Debug, Clone)]
pub struct ClientEvent {
    /// The connection it came on.
    pub connection_id: String,
    /// Its user, if authenticated.
    pub user: Option<String>,
    /// The event; a hook may change it (add fields, redact) before it is published.
    pub event: NewEvent,
}

/// What a client-event hook returns: the event to publish, or why it is refused.
pub type HookResult = Result<NewEvent, String>;

type ActivityHook = Arc<dyn Fn(&ChannelActivity) + Send + Sync>;
type ClientEventHook =
    Arc<dyn Fn(ClientEvent) -> Pin<Box<dyn Future<Output = HookResult> + Send>> + Send + Sync>;

/// The hooks an embedding application registered.
#[derive(Default, Clone)]
pub(crate) struct Hooks {
    pub(crate) on_join: Vec<ActivityHook>,
    pub(crate) on_leave: Vec<ActivityHook>,
    pub(crate) on_client_event: Vec<ClientEventHook>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("on_join", &self.on_join.len())
            .field("on_leave", &self.on_leave.len())
            .field("on_client_event", &self.on_client_event.len())
            .finish()
    }
}

impl Hub {
    /// Calls `hook` whenever a connection subscribes to a channel (the broadcast
    /// channel excepted).
    pub fn on_join(&self, hook: impl Fn(&ChannelActivity) + Send + Sync + 'static) {
        self.hooks_mut(|h| h.on_join.push(Arc::new(hook)));
    }

    /// Calls `hook` whenever a connection's subscription to a channel ends, also when
    /// the connection died.
    pub fn on_leave(&self, hook: impl Fn(&ChannelActivity) + Send + Sync + 'static) {
        self.hooks_mut(|h| h.on_leave.push(Arc::new(hook)));
    }

    /// Runs `hook` on every event a client publishes, before it is published: return
    /// the event (changed or not) to publish it, or an error message to refuse it
    /// (the client gets the message). Hooks run in the order they were added.
    pub fn on_client_event<F, Fut>(&self, hook: F)
    where
        F: Fn(ClientEvent) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HookResult> + Send + 'static,
    {
        let hook: ClientEventHook = Arc::new(move |event| Box::pin(hook(event)));
        self.hooks_mut(|h| h.on_client_event.push(hook));
    }

    /// Runs the client-event hooks and webhook on `event`.
    pub(crate) async fn vet_client_event(&self, mut event: ClientEvent) -> HookResult {
        let hooks = self.hooks().on_client_event;
        for hook in hooks {
            let checked = hook(event.clone()).await?;
            event.event = checked;
        }
        if let Some(webhooks) = self.webhooks() {
            event.event = webhooks.check_client_event(&event).await?;
        }
        Ok(event.event)
    }
}

/// Starts the task that handles activities in order; returns its inbox.
pub(crate) fn spawn_activity_task(
    hub: std::sync::Weak<crate::hub::Inner>,
) -> mpsc::UnboundedSender<ChannelActivity> {
    let (tx, mut rx) = mpsc::unbounded_channel::<ChannelActivity>();
    tokio::spawn(async move {
        while let Some(activity) = rx.recv().await {
            let Some(hub) = Hub::upgrade(&hub) else { break };
            let hooks = hub.hooks();
            let list = match activity.kind {
                ActivityKind::Join => &hooks.on_join,
                ActivityKind::Leave => &hooks.on_leave,
            };
            for hook in list {
                hook(&activity);
            }
            // Presence is shared (and its joins and leaves announced) by the
            // presence task, which sees every node's connections.
            if let Some(user) = &activity.user
                && hub.policies().of(&activity.channel).presence
            {
                hub.presence_changed(&activity.channel, user);
            }
            if let Some(webhooks) = hub.webhooks() {
                webhooks.notify(&activity);
            }
        }
    });
    tx
}

/// A connection's channel memberships; dropping it leaves them all.
#[derive(Debug)]
pub struct Membership {
    hub: Hub,
    connection_id: String,
    user: Option<String>,
    info: Option<serde_json::Value>,
    channels: Vec<ChannelName>,
}

impl Membership {
    /// Memberships of the connection `connection_id` of `user`.
    pub fn new(
        hub: &Hub,
        connection_id: &str,
        user: Option<String>,
        info: Option<serde_json::Value>,
    ) -> Self {
        Self {
            hub: hub.clone(),
            connection_id: connection_id.to_owned(),
            user,
            info,
            channels: Vec::new(),
        }
    }

    /// The connection subscribed to `channel`.
    pub fn join(&mut self, channel: &ChannelName) {
        if channel.is_broadcast() || self.channels.contains(channel) {
            return;
        }
        self.channels.push(channel.clone());
        let changed = self.presence_tracked(channel)
            && self.hub.presence_registry().join(
                channel,
                self.user.as_deref().unwrap_or_default(),
                self.info.clone(),
            );
        self.emit(ActivityKind::Join, channel, changed);
    }

    /// The connection's subscription to `channel` ended.
    pub fn leave(&mut self, channel: &ChannelName) {
        let Some(index) = self.channels.iter().position(|c| c == channel) else {
            return;
        };
        self.channels.swap_remove(index);
        let changed = self.presence_tracked(channel)
            && self
                .hub
                .presence_registry()
                .leave(channel, self.user.as_deref().unwrap_or_default());
        self.emit(ActivityKind::Leave, channel, changed);
    }

    fn presence_tracked(&self, channel: &ChannelName) -> bool {
        self.user.is_some() && self.hub.policies().of(channel).presence
    }

    fn emit(&self, kind: ActivityKind, channel: &ChannelName, presence_changed: bool) {
        self.hub.record_activity(ChannelActivity {
            kind,
            channel: channel.clone(),
            connection_id: self.connection_id.clone(),
            user: self.user.clone(),
            presence_changed,
            info: self.info.clone(),
        });
    }
}

impl Membership {
    /// The connection ended: it leaves every channel.
    pub fn leave_all(&mut self) {
        for channel in std::mem::take(&mut self.channels) {
            self.channels.push(channel.clone());
            self.leave(&channel);
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.leave_all();
    }
}
