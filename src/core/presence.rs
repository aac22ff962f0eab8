//! Presence: who is connected to a channel, counted once per user however many
//! connections (tabs) they have open.
//!
//! A user joins a channel with their first connection to it and leaves it with their
//! last. [`Presence`] counts the connections of this node; [`ClusterView`] is what
//! every node knows of every node's counts, built from one ordered log of changes
//! (each node applies the same log in the same order, so they agree on when a user
//! joined or left the channel as a whole, however many nodes their tabs are on).

use std::collections::{HashMap, HashSet};

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

    /// `user` on `channel`, if they have a connection there.
    pub fn member(&self, channel: &ChannelName, user: &str) -> Option<Member> {
        self.channels.lock().get(channel)?.get(user).cloned()
    }

    /// Every (channel, user) with a connection here.
    pub fn keys(&self) -> Vec<(ChannelName, String)> {
        self.channels
            .lock()
            .iter()
            .flat_map(|(c, m)| m.keys().map(|u| (c.clone(), u.clone())))
            .collect()
    }
}

/// A user joined or left a channel as a whole (across every node).
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// Their first connection on any node.
    Join {
        /// The channel.
        channel: ChannelName,
        /// The user.
        user: String,
        /// Their public information.
        info: Option<serde_json::Value>,
    },
    /// Their last connection on any node ended.
    Leave {
        /// The channel.
        channel: ChannelName,
        /// The user.
        user: String,
    },
}

/// One node's connections of one user on one channel.
#[derive(Debug, Clone, PartialEq)]
struct NodeCount {
    connections: u32,
    info: Option<serde_json::Value>,
}

/// The connection counts of every node, per channel and user, as the presence log
/// describes them. Changes are applied in log order; each says whether it made a
/// user join or leave the channel as a whole.
#[derive(Debug, Default)]
pub struct ClusterView {
    /// channel → user (in join order) → node → count.
    channels: HashMap<ChannelName, IndexMap<String, IndexMap<String, NodeCount>>>,
    /// node → its (channel, user) entries, to drop a node at once.
    nodes: HashMap<String, HashSet<(ChannelName, String)>>,
}

impl ClusterView {
    /// Node `node` now has `connections` connections of `user` on `channel` (0: none).
    pub fn set(
        &mut self,
        node: &str,
        channel: &ChannelName,
        user: &str,
        info: Option<serde_json::Value>,
        connections: u32,
    ) -> Option<Transition> {
        let key = (channel.clone(), user.to_owned());
        if connections == 0 {
            let members = self.channels.get_mut(channel)?;
            let nodes = members.get_mut(user)?;
            nodes.shift_remove(node)?;
            if let Some(entries) = self.nodes.get_mut(node) {
                entries.remove(&key);
                if entries.is_empty() {
                    self.nodes.remove(node);
                }
            }
            if !nodes.is_empty() {
                return None;
            }
            members.shift_remove(user);
            if members.is_empty() {
                self.channels.remove(channel);
            }
            return Some(Transition::Leave {
                channel: channel.clone(),
                user: user.to_owned(),
            });
        }
        let nodes = self
            .channels
            .entry(channel.clone())
            .or_default()
            .entry(user.to_owned())
            .or_default();
        let joined = nodes.is_empty();
        nodes.insert(
            node.to_owned(),
            NodeCount {
                connections,
                info: info.clone(),
            },
        );
        self.nodes.entry(node.to_owned()).or_default().insert(key);
        joined.then(|| Transition::Join {
            channel: channel.clone(),
            user: user.to_owned(),
            info,
        })
    }

    /// Forgets every connection of `node` (it stopped or died); returns the users
    /// that left because of it.
    pub fn remove_node(&mut self, node: &str) -> Vec<Transition> {
        let Some(entries) = self.nodes.get(node) else {
            return Vec::new();
        };
        let mut entries: Vec<_> = entries.iter().cloned().collect();
        entries.sort();
        entries
            .into_iter()
            .filter_map(|(channel, user)| self.set(node, &channel, &user, None, 0))
            .collect()
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.channels.clear();
        self.nodes.clear();
    }

    /// The users on `channel` by the counts of every node but `except`, in the order
    /// they joined.
    pub fn members_except(&self, channel: &ChannelName, except: &str) -> Vec<Member> {
        let Some(members) = self.channels.get(channel) else {
            return Vec::new();
        };
        members
            .iter()
            .filter_map(|(user, nodes)| {
                let mut connections = 0;
                let mut info = None;
                for (node, count) in nodes {
                    if node != except {
                        connections += count.connections;
                        info = info.or_else(|| count.info.clone());
                    }
                }
                (connections > 0).then(|| Member {
                    user: user.clone(),
                    info,
                    connections,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_view_counts_users_once_across_nodes() {
        let mut v = ClusterView::default();
        let c = ChannelName::new("doc:1").unwrap();
        let info = Some(serde_json::json!({"name": "Ana"}));
        assert!(matches!(
            v.set("a", &c, "ana", info.clone(), 1),
            Some(Transition::Join { .. })
        ));
        assert_eq!(v.set("a", &c, "ana", info.clone(), 2), None, "a second tab");
        assert_eq!(
            v.set("b", &c, "ana", info.clone(), 1),
            None,
            "a tab on node b"
        );
        assert!(v.set("b", &c, "bob", None, 1).is_some());
        let members = v.members_except(&c, "none");
        assert_eq!(
            members
                .iter()
                .map(|m| (m.user.as_str(), m.connections))
                .collect::<Vec<_>>(),
            vec![("ana", 3), ("bob", 1)]
        );
        assert_eq!(v.members_except(&c, "a")[0].connections, 1);
        assert_eq!(v.set("a", &c, "ana", None, 0), None, "still on node b");
        // Node b dies: both of its users leave, in a fixed order.
        assert_eq!(
            v.remove_node("b"),
            vec![
                Transition::Leave {
                    channel: c.clone(),
                    user: "ana".into()
                },
                Transition::Leave {
                    channel: c.clone(),
                    user: "bob".into()
                },
            ]
        );
        assert!(v.remove_node("b").is_empty(), "gone twice is nothing");
        assert_eq!(v.set("a", &c, "ana", None, 0), None, "unknown entry");
        assert!(v.members_except(&c, "none").is_empty());
    }

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
