//! A connection's channel memberships: the joins and leaves its channels make,
//! counted in the presence roster and handed to the hooks. Dropping it leaves
//! every channel, so a connection that dies without a goodbye still leaves.

use super::Sessions;
use crate::core::ChannelName;
use crate::hooks::{ActivityKind, ChannelActivity};

/// A connection's channel memberships; dropping it leaves them all.
#[derive(Debug)]
pub(crate) struct Membership {
    sessions: Sessions,
    connection_id: String,
    user: Option<String>,
    info: Option<serde_json::Value>,
    channels: Vec<ChannelName>,
}

impl Membership {
    /// Memberships of the connection `connection_id` of `user`.
    pub(crate) fn new(
        sessions: &Sessions,
        connection_id: &str,
        user: Option<String>,
        info: Option<serde_json::Value>,
    ) -> Self {
        Self {
            sessions: sessions.clone(),
            connection_id: connection_id.to_owned(),
            user,
            info,
            channels: Vec::new(),
        }
    }

    /// The connection subscribed to `channel`.
    pub(crate) fn join(&mut self, channel: &ChannelName) {
        if channel.is_broadcast() || self.channels.contains(channel) {
            return;
        }
        self.channels.push(channel.clone());
        let changed = self.presence_tracked(channel)
            && self.sessions.inner.roster.join(
                channel,
                self.user.as_deref().unwrap_or_default(),
                self.info.clone(),
            );
        self.emit(ActivityKind::Join, channel, changed);
    }

    /// The connection's subscription to `channel` ended.
    pub(crate) fn leave(&mut self, channel: &ChannelName) {
        let Some(index) = self.channels.iter().position(|c| c == channel) else {
            return;
        };
        self.channels.swap_remove(index);
        let changed = self.presence_tracked(channel)
            && self
                .sessions
                .inner
                .roster
                .leave(channel, self.user.as_deref().unwrap_or_default());
        self.emit(ActivityKind::Leave, channel, changed);
    }

    fn presence_tracked(&self, channel: &ChannelName) -> bool {
        self.user.is_some() && self.sessions.inner.policies.of(channel).presence
    }

    fn emit(&self, kind: ActivityKind, channel: &ChannelName, presence_changed: bool) {
        self.sessions.inner.hooks.record(ChannelActivity {
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
    pub(crate) fn leave_all(&mut self) {
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
