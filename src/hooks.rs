//! Channel activity: connections joining and leaving channels, and the hooks on
//! them and on events published by clients.
//!
//! [`Hooks`] is where an embedding application registers its hooks
//! ([`Hooks::on_join`], [`Hooks::on_leave`], [`Hooks::on_client_event`]) and where
//! the hub's own parts listen (presence sharing, webhooks), after the
//! application's. Sessions record every join and leave here; one task handles
//! them in order.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc;

use parking_lot::RwLock;

use crate::core::{ChannelName, NewEvent};

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

/// The hooks on channel activity and client events: the application's first, then
/// the hub's own parts'. Cheap to clone.
#[derive(Clone)]
pub struct Hooks {
    inner: Arc<Inner>,
}

struct Inner {
    /// Replaced whole when a hook is added, so that running the hooks takes a
    /// reference rather than a copy of every list.
    lists: RwLock<Arc<Lists>>,
    /// The activity task's inbox.
    activity: mpsc::UnboundedSender<ChannelActivity>,
}

#[derive(Default, Clone)]
struct Lists {
    on_join: Vec<ActivityHook>,
    on_leave: Vec<ActivityHook>,
    on_client_event: Vec<ClientEventHook>,
    /// The hub's own listeners to every activity, called after the application's.
    listeners: Vec<ActivityHook>,
    /// The hub's own checks of client events, run after the application's.
    checks: Vec<ClientEventHook>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lists = self.inner.lists.read();
        f.debug_struct("Hooks")
            .field("on_join", &lists.on_join.len())
            .field("on_leave", &lists.on_leave.len())
            .field("on_client_event", &lists.on_client_event.len())
            .finish()
    }
}

impl Hooks {
    /// No hooks yet; starts the task that handles activities in order. Must be
    /// called inside a Tokio runtime.
    pub(crate) fn start() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let hooks = Self {
            inner: Arc::new(Inner {
                lists: RwLock::new(Arc::default()),
                activity: tx,
            }),
        };
        tokio::spawn(handle_activities(Arc::downgrade(&hooks.inner), rx));
        hooks
    }

    /// Calls `hook` whenever a connection subscribes to a channel (the broadcast
    /// channel excepted).
    pub fn on_join(&self, hook: impl Fn(&ChannelActivity) + Send + Sync + 'static) {
        self.edit().on_join.push(Arc::new(hook));
    }

    /// Calls `hook` whenever a connection's subscription to a channel ends, also when
    /// the connection died.
    pub fn on_leave(&self, hook: impl Fn(&ChannelActivity) + Send + Sync + 'static) {
        self.edit().on_leave.push(Arc::new(hook));
    }

    /// Runs `hook` on every event a client publishes, before it is published: return
    /// the event (changed or not) to publish it, or an error message to refuse it
    /// (the client gets the message). Hooks run in the order they were added.
    pub fn on_client_event<F, Fut>(&self, hook: F)
    where
        F: Fn(ClientEvent) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HookResult> + Send + 'static,
    {
        self.edit().on_client_event.push(client_event_hook(hook));
    }

    /// Calls `listener` on every activity, after the application's hooks.
    pub(crate) fn listen(&self, listener: impl Fn(&ChannelActivity) + Send + Sync + 'static) {
        self.edit().listeners.push(Arc::new(listener));
    }

    /// Runs `check` on every client event, after the application's hooks.
    pub(crate) fn check_client_events<F, Fut>(&self, check: F)
    where
        F: Fn(ClientEvent) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HookResult> + Send + 'static,
    {
        self.edit().checks.push(client_event_hook(check));
    }

    /// The lists, to add a hook to (copied first if a run of the hooks holds them).
    fn edit(&self) -> parking_lot::MappedRwLockWriteGuard<'_, Lists> {
        parking_lot::RwLockWriteGuard::map(self.inner.lists.write(), Arc::make_mut)
    }

    /// Hands an activity to the task that handles them in order.
    pub(crate) fn record(&self, activity: ChannelActivity) {
        let _ = self.inner.activity.send(activity);
    }

    /// Runs the client-event hooks and checks on `event`: the event to publish, or
    /// why it is refused.
    pub(crate) async fn vet(&self, mut event: ClientEvent) -> HookResult {
        let lists = self.inner.lists.read().clone();
        for hook in lists.on_client_event.iter().chain(&lists.checks) {
            event.event = hook(event.clone()).await?;
        }
        Ok(event.event)
    }
}

fn client_event_hook<F, Fut>(hook: F) -> ClientEventHook
where
    F: Fn(ClientEvent) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HookResult> + Send + 'static,
{
    Arc::new(move |event| Box::pin(hook(event)))
}

/// Handles activities in order, for as long as the hooks exist.
async fn handle_activities(
    hooks: std::sync::Weak<Inner>,
    mut rx: mpsc::UnboundedReceiver<ChannelActivity>,
) {
    while let Some(activity) = rx.recv().await {
        let Some(inner) = hooks.upgrade() else { break };
        let lists = inner.lists.read().clone();
        drop(inner);
        let hooks = match activity.kind {
            ActivityKind::Join => &lists.on_join,
            ActivityKind::Leave => &lists.on_leave,
        };
        for hook in hooks.iter().chain(&lists.listeners) {
            hook(&activity);
        }
    }
}
