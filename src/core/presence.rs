//! Presence: who is connected to a channel, counted once per user however many
//! connections (tabs) they have open.
//!
//! A user joins a channel with their first connection to it and leaves it with their
//! last; [`Presence::join`] and [`Presence::leave`] say when that happens, so the hub
//! can tell the channel's subscribers.

use std::collections::HashMap;

use indexmap::IndexMap;
use parking_lot::Mutex;
use serde::Serialize;

use super::channel::ChannelName;

/// One user present on a channel.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Member {
    /// The user id.
    pub user: String,
    /// Public information from their token, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<serde_json::Value>,
    /// How many of their connections are on the channel.
    pub connections: u32,
}

/// The presence registry of this node.
#[derive(Debug, Default)]
pub struct Presence {
    channels: Mutex<HashMap<ChannelName, IndexMap<String, Member>>>,
}

impl Presence {
    /// Records a connection of `user` on `channel`; true when it is the user's first
    /// (they joined).
    pub fn join(&self, channel: &ChannelName, user: &str, info: Option<serde_json::Value>) -> bool {
        let mut channels = self.channels.lock();
        let members = channels.entry(channel.clone()).or_default();
        match members.get_mut(user) {
            Some(member) => {
                member.connections += 1;
                false
            }
            None => {
                members.insert(
                    user.to_owned(),
                    Member {
                        user: user.to_owned(),
                        info,
                        connections: 1,
                    },
                );
                true
            }
        }
    }

    /// Records that a connection of `user` left `channel`; true when it was their
    /// last (they left).
    pub fn leave(&self, channel: &ChannelName, user: &str) -> bool {
        let mut channels = self.channels.lock();
        let Some(members) = channels.get_mut(channel) else {
            return false;
        };
        let left = match members.get_mut(user) {
            Some(member) if member.connections > 1 => {
                member.connections -= 1;
                false
            }
            Some(_) => {
                members.shift_remove(user);
                true
            }
            None => false,
        };
        if members.is_empty() {
            channels.remove(channel);
        }
        left
    }

    /// The users present on `channel`, in the order they joined.
    pub fn members(&self, channel: &ChannelName) -> Vec<Member> {
        self.channels
            .lock()
            .get(channel)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_with_several_connections_counts_once() {
        let p = Presence::default();
        let c = ChannelName::new("doc:1").unwrap();
        assert!(p.join(&c, "ana", None));
        assert!(!p.join(&c, "ana", None), "a second tab is no new join");
        assert!(p.join(&c, "bob", Some(serde_json::json!({"name": "Bob"}))));
        let members = p.members(&c);
        assert_eq!(members.len(), 2);
        assert_eq!(
            (members[0].user.as_str(), members[0].connections),
            ("ana", 2)
        );
        assert!(!p.leave(&c, "ana"), "one tab left, still present");
        assert!(p.leave(&c, "ana"));
        assert!(!p.leave(&c, "ana"), "already gone");
        assert!(p.leave(&c, "bob"));
        assert!(p.members(&c).is_empty());
    }
}
