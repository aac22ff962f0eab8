//! Presence across nodes: every node's connection counts, shared through the
//! broker so that any node lists the users connected to every node, and each user
//! joins and leaves a channel once however many nodes their tabs are on.
//!
//! # How
//!
//! Nodes write their changes to one hub-internal channel, `$presence`, as live-only
//! events, and every node reads it. The broker gives those events one order on
//! every node, so every node folds the same changes in the same order into its
//! [`ClusterView`] and agrees on when a user joined or left the channel as a whole.
//! The node whose change caused a join or leave announces it on the channel
//! (`presence.join` / `presence.leave`); no other does, so each is sent once.
//!
//! Messages (the JSON data of events of type `presence.sync`):
//!
//! - `{"op":"set","node","entries":[{"channel","user","info","connections"}]}`:
//!   the node now has that many connections of the user on the channel (0: none).
//! - `{"op":"hello","node"}`: a node (re)starts reading; every other node answers
//!   with a `set` of all its entries.
//! - `{"op":"beat","node"}`: the node is alive (every `presence.heartbeat`).
//! - `{"op":"gone","node","by"}`: `by` has not heard from `node` for
//!   `presence.node_timeout`; every node forgets `node`'s connections, and `by`
//!   announces the leaves. A node that reads that it is gone, though alive, writes
//!   all its entries again.
//!
//! A node starting (or one that fell behind reading and starts over) waits two
//! heartbeats for the others' answers before writing its own changes, so its
//! decisions are made on a complete view. Its users show on the other nodes after
//! that wait.
//!
//! When the hub shuts down it stops writing: its users stay listed elsewhere until
//! `presence.node_timeout` passes and another node declares it gone. Users who
//! reconnected to another node in the meantime never leave, so a rolling restart
//! sends no wave of leaves and joins.
//!
//! With the memory broker there is one node: no heartbeats, no waiting.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexSet;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::core::{
    ChannelName, ClusterView, Item, Member, NewEvent, Payload, Presence, Subscription, Transition,
};
use crate::hub::{Hub, Start, Subscribe, WeakHub};
use crate::settings::ConfigError;

/// The event type of presence log messages.
const SYNC_TYPE: &str = "presence.sync";

/// Entries per `set` message at most, so one message stays small.
const ENTRIES_PER_MESSAGE: usize = 500;

/// Events of the presence log queued for this node at most before it starts over.
const LOG_QUEUE: usize = 65_536;

/// One node's count of one user's connections on one channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Entry {
    channel: String,
    user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    info: Option<serde_json::Value>,
    connections: u32,
}

/// A message of the presence log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Message {
    Set { node: String, entries: Vec<Entry> },
    Hello { node: String },
    Beat { node: String },
    Gone { node: String, by: String },
}

impl Message {
    fn node(&self) -> &str {
        match self {
            Self::Set { node, .. }
            | Self::Hello { node }
            | Self::Beat { node }
            | Self::Gone { by: node, .. } => node,
        }
    }
}

/// A (channel, user) pair.
type Key = (ChannelName, String);

/// What a published count is known to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Published {
    Count(u32),
    /// Written before the node started over: must be written again.
    Unknown,
}

/// Who is present on channels: this node's connections, and what the presence log
/// says of the other nodes'. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Roster {
    inner: Arc<RosterInner>,
}

#[derive(Debug)]
struct RosterInner {
    node: String,
    local: Presence,
    /// Every node's presence, from the presence log.
    cluster: Mutex<ClusterView>,
    /// The sharing task's inbox: which (channel, user) changed here.
    changes: mpsc::UnboundedSender<Key>,
}

impl Roster {
    /// The users present on `channel` on every node, each once with their
    /// connections summed: this node's first, in the order they joined, then those
    /// only on other nodes.
    pub fn members(&self, channel: &ChannelName) -> Vec<Member> {
        let mut members = self.inner.local.members(channel);
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

    /// A connection of `user` joined `channel` here; true when it is the user's
    /// first on this node.
    pub(crate) fn join(
        &self,
        channel: &ChannelName,
        user: &str,
        info: Option<serde_json::Value>,
    ) -> bool {
        self.inner.local.join(channel, user, info)
    }

    /// A connection of `user` left `channel` here; true when it was the user's last
    /// on this node.
    pub(crate) fn leave(&self, channel: &ChannelName, user: &str) -> bool {
        self.inner.local.leave(channel, user)
    }

    /// The count of `user`'s connections on `channel` changed here: share it.
    pub(crate) fn changed(&self, channel: &ChannelName, user: &str) {
        let _ = self.inner.changes.send((channel.clone(), user.to_owned()));
    }
}

/// How presence is shared between nodes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SyncSettings {
    /// How often each node says it is alive.
    pub(crate) heartbeat: Duration,
    /// A node silent for this long is dead: its users leave everywhere.
    pub(crate) node_timeout: Duration,
    /// The only node (memory broker): nothing to share.
    pub(crate) single: bool,
}

/// Starts sharing this node's presence through `hub`'s presence log; returns the
/// roster that transports' sessions join and leave.
pub(crate) fn start(hub: &Hub, settings: SyncSettings) -> Roster {
    let (tx, rx) = mpsc::unbounded_channel();
    let roster = Roster {
        inner: Arc::new(RosterInner {
            node: hub.node().to_owned(),
            local: Presence::default(),
            cluster: Mutex::new(ClusterView::default()),
            changes: tx,
        }),
    };
    let sync = Sync {
        hub: hub.downgrade(),
        roster: roster.inner.clone(),
        node: hub.node().to_owned(),
        heartbeat: settings.heartbeat,
        node_timeout: settings.node_timeout,
        single: settings.single,
        published: HashMap::new(),
        dirty: IndexSet::new(),
        synced_at: None,
        heard: HashMap::new(),
        declared: HashSet::new(),
    };
    let stop = hub.shutdown_token();
    tokio::spawn(sync.run(rx, stop));
    roster
}

/// Subscribes to the presence log from now on.
async fn read_log(hub: &Hub) -> Option<Subscription> {
    let request = Subscribe {
        channels: vec![ChannelName::presence_log()],
        start: Start::Now,
        queue: Some(LOG_QUEUE),
    };
    hub.subscribe(request).await.ok().map(|s| s.subscription)
}

struct Sync {
    hub: WeakHub,
    roster: Arc<RosterInner>,
    node: String,
    heartbeat: Duration,
    node_timeout: Duration,
    single: bool,
    /// What this node last wrote, per (channel, user).
    published: HashMap<Key, Published>,
    /// Local changes not written yet.
    dirty: IndexSet<Key>,
    /// When the node may write its changes (after the others answered its hello).
    synced_at: Option<Instant>,
    /// When each other node was last heard from.
    heard: HashMap<String, Instant>,
    /// Nodes this node declared gone and has not yet read the declaration of.
    declared: HashSet<String>,
}

impl Sync {
    async fn run(
        mut self,
        mut changes: mpsc::UnboundedReceiver<Key>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        let Some(mut subscription) = read_log(&hub).await else {
            return;
        };
        drop(hub);
        let mut tick = tokio::time::interval(self.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.start_over(false).await;
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                change = changes.recv() => match change {
                    Some(key) => {
                        self.dirty.insert(key);
                        while let Ok(key) = changes.try_recv() {
                            self.dirty.insert(key);
                        }
                    }
                    None => return,
                },
                item = subscription.next() => match item {
                    Ok(Some(Item::Event(event))) => {
                        let Ok(message) = serde_json::from_str::<Message>(event.data.as_str()) else {
                            continue;
                        };
                        self.apply(message).await;
                    }
                    Ok(Some(Item::Reset(_))) => {}
                    Ok(None) => return,
                    Err(_) => {
                        // This node missed part of the log: read it afresh and
                        // rebuild the view from the others' answers.
                        let Some(hub) = self.hub.upgrade() else { return };
                        let Some(again) = read_log(&hub).await else { return };
                        subscription = again;
                        drop(hub);
                        self.start_over(true).await;
                    }
                },
                _ = tick.tick() => self.tick().await,
            }
            if self.synced_at.is_some_and(|at| Instant::now() >= at) {
                self.synced_at = None;
            }
            if self.synced_at.is_none() && !self.dirty.is_empty() {
                self.flush().await;
            }
        }
    }

    /// (Re)starts reading the log: forgets the view, says hello and waits for the
    /// answers before writing.
    async fn start_over(&mut self, again: bool) {
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        if again {
            self.roster.cluster.lock().clear();
            for published in self.published.values_mut() {
                *published = Published::Unknown;
            }
            self.dirty.extend(self.published.keys().cloned());
            self.dirty.extend(self.roster.local.keys());
            self.heard.clear();
            self.declared.clear();
        }
        if self.single {
            self.synced_at = None;
            return;
        }
        self.synced_at = Some(Instant::now() + self.heartbeat * 2);
        let hello = Message::Hello {
            node: self.node.clone(),
        };
        if let Err(e) = write(&hub, &hello).await {
            tracing::warn!(error = %e, "presence: hello not sent");
        }
    }

    /// Writes the local changes not written yet.
    async fn flush(&mut self) {
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        if hub.is_shutting_down() {
            self.dirty.clear();
            return;
        }
        let mut entries = Vec::new();
        for key in &self.dirty {
            let member = self.roster.local.member(&key.0, &key.1);
            let connections = member.as_ref().map_or(0, |m| m.connections);
            let known = self
                .published
                .get(key)
                .copied()
                .unwrap_or(Published::Count(0));
            if known != Published::Count(connections) {
                entries.push(Entry {
                    channel: key.0.as_str().to_owned(),
                    user: key.1.clone(),
                    info: member.and_then(|m| m.info),
                    connections,
                });
            }
        }
        for chunk in entries.chunks(ENTRIES_PER_MESSAGE) {
            let set = Message::Set {
                node: self.node.clone(),
                entries: chunk.to_vec(),
            };
            if let Err(e) = write(&hub, &set).await {
                // Kept dirty: written on the next change or heartbeat.
                tracing::warn!(error = %e, "presence: changes not shared");
                return;
            }
            for (entry, key) in chunk.iter().zip(keys_of(chunk)) {
                if entry.connections == 0 {
                    self.published.remove(&key);
                } else {
                    self.published
                        .insert(key, Published::Count(entry.connections));
                }
            }
        }
        self.dirty.clear();
    }

    /// Every heartbeat: say this node is alive, declare silent nodes gone, retry
    /// what could not be written.
    async fn tick(&mut self) {
        if self.single {
            return;
        }
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        if hub.is_shutting_down() {
            return;
        }
        let beat = Message::Beat {
            node: self.node.clone(),
        };
        if let Err(e) = write(&hub, &beat).await {
            tracing::warn!(error = %e, "presence: heartbeat not sent");
        }
        let now = Instant::now();
        let silent: Vec<String> = self
            .heard
            .iter()
            .filter(|(node, at)| {
                now.duration_since(**at) > self.node_timeout && !self.declared.contains(*node)
            })
            .map(|(node, _)| node.clone())
            .collect();
        for node in silent {
            tracing::info!(node = %node, "presence: node silent, its users leave");
            let gone = Message::Gone {
                node: node.clone(),
                by: self.node.clone(),
            };
            if write(&hub, &gone).await.is_ok() {
                self.declared.insert(node);
            }
        }
    }

    /// Folds one message of the log into the view.
    async fn apply(&mut self, message: Message) {
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        let from = message.node().to_owned();
        if from != self.node {
            self.heard.insert(from.clone(), Instant::now());
        }
        let mine = from == self.node;
        let transitions = match message {
            Message::Set { node, entries } => {
                let mut view = self.roster.cluster.lock();
                entries
                    .into_iter()
                    .filter_map(|e| {
                        let channel = ChannelName::new(&e.channel).ok()?;
                        view.set(&node, &channel, &e.user, e.info, e.connections)
                    })
                    .collect()
            }
            Message::Hello { node } => {
                if node != self.node && self.synced_at.is_none() {
                    self.answer_hello(&hub).await;
                }
                Vec::new()
            }
            Message::Beat { .. } => Vec::new(),
            Message::Gone { node, .. } => {
                self.heard.remove(&node);
                self.declared.remove(&node);
                let transitions = self.roster.cluster.lock().remove_node(&node);
                if node == self.node {
                    // Taken for dead though alive: write everything again.
                    self.published.clear();
                    self.dirty.extend(self.roster.local.keys());
                }
                transitions
            }
        };
        if mine && !hub.is_shutting_down() {
            for transition in transitions {
                announce(&hub, transition).await;
            }
        }
    }

    /// Writes all of this node's entries, for a node that said hello.
    async fn answer_hello(&mut self, hub: &Hub) {
        let entries: Vec<Entry> = self
            .published
            .iter()
            .filter_map(|(key, published)| match published {
                Published::Count(n) if *n > 0 => Some(Entry {
                    channel: key.0.as_str().to_owned(),
                    user: key.1.clone(),
                    info: self
                        .roster
                        .local
                        .member(&key.0, &key.1)
                        .and_then(|m| m.info),
                    connections: *n,
                }),
                _ => None,
            })
            .collect();
        for chunk in entries.chunks(ENTRIES_PER_MESSAGE) {
            let set = Message::Set {
                node: self.node.clone(),
                entries: chunk.to_vec(),
            };
            if let Err(e) = write(hub, &set).await {
                tracing::warn!(error = %e, "presence: answer to a new node not sent");
            }
        }
    }
}

/// The (channel, user) keys of entries this node wrote (their names are valid).
fn keys_of(entries: &[Entry]) -> impl Iterator<Item = Key> + '_ {
    entries
        .iter()
        .filter_map(|e| Some((ChannelName::new(&e.channel).ok()?, e.user.clone())))
}

/// Writes one message to the presence log.
async fn write(hub: &Hub, message: &Message) -> Result<(), crate::broker::BrokerError> {
    let data = Payload::json(message)
        .map_err(|e| crate::broker::BrokerError::Unavailable(e.to_string()))?;
    let mut event = NewEvent::new(ChannelName::presence_log(), data).ephemeral();
    event.kind = Some(SYNC_TYPE.to_owned());
    hub.publish_internal(event).await.map(|_| ())
}

/// Tells a channel's subscribers that a user joined or left it.
async fn announce(hub: &Hub, transition: Transition) {
    let (channel, kind, data) = match transition {
        Transition::Join {
            channel,
            user,
            info,
        } => (
            channel,
            "presence.join",
            serde_json::json!({"user": user, "info": info}),
        ),
        Transition::Leave { channel, user } => {
            (channel, "presence.leave", serde_json::json!({"user": user}))
        }
    };
    let Ok(data) = Payload::json(&data) else {
        return;
    };
    let mut event = NewEvent::new(channel, data).ephemeral();
    event.kind = Some(kind.to_owned());
    if let Err(e) = hub.publish_internal(event).await {
        tracing::warn!(error = %e, "presence event not published");
    }
}

/// Presence shared between nodes (Redis or NATS broker): each node announces
/// itself every `heartbeat`; a node not heard from for `node_timeout` is taken
/// for dead and its users leave on every node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceConfig {
    /// How often each node says it is alive.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// A node silent for this long is dead: its users leave everywhere.
    #[serde(with = "humantime_serde")]
    pub node_timeout: Duration,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(5),
            node_timeout: Duration::from_secs(15),
        }
    }
}

impl PresenceConfig {
    /// Checks the section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.heartbeat.is_zero() {
            return Err(ConfigError::new(
                "presence.heartbeat",
                "must be longer than 0s",
            ));
        }
        if self.node_timeout < self.heartbeat * 2 {
            return Err(ConfigError::new(
                "presence.node_timeout",
                "must be at least twice presence.heartbeat",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_back_as_written() {
        let set = Message::Set {
            node: "a1".into(),
            entries: vec![Entry {
                channel: "doc:1".into(),
                user: "ana".into(),
                info: Some(serde_json::json!({"name": "Ana"})),
                connections: 2,
            }],
        };
        let text = serde_json::to_string(&set).unwrap();
        assert!(text.starts_with(r#"{"op":"set","node":"a1","entries":[{"channel":"doc:1""#));
        assert_eq!(serde_json::from_str::<Message>(&text).unwrap(), set);
        let gone: Message = serde_json::from_str(r#"{"op":"gone","node":"b2","by":"a1"}"#).unwrap();
        assert_eq!(
            gone.node(),
            "a1",
            "a gone message comes from the node that wrote it"
        );
        assert!(serde_json::from_str::<Message>(r#"{"op":"dance","node":"x"}"#).is_err());
    }
}
