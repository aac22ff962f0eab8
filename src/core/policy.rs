//! Per-namespace policy: how much history a channel keeps and who may subscribe.

use std::collections::HashMap;

use super::channel::{ChannelName, ChannelPattern};
use super::history::HistoryPolicy;

/// Who may subscribe to the channels of a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SubscribeRule {
    /// Only holders of a token whose grants cover the channel.
    #[default]
    Grant,
    /// Anyone with a valid token.
    Authenticated,
    /// Anyone, with or without a token.
    Anyone,
}

/// The policy of one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespacePolicy {
    /// History bounds for each channel of the namespace.
    pub history: HistoryPolicy,
    /// Who may subscribe.
    pub subscribe: SubscribeRule,
    /// Whether the hub tracks who is on each channel and announces joins and leaves.
    pub presence: bool,
    /// Whether connected clients may publish to the namespace (over WebSocket), when
    /// their token grants it.
    pub client_publish: bool,
    /// Whether events published by clients are kept in history (false for typing
    /// indicators and other live-only signals).
    pub client_history: bool,
}

impl Default for NamespacePolicy {
    fn default() -> Self {
        Self {
            history: HistoryPolicy::default(),
            subscribe: SubscribeRule::default(),
            presence: false,
            client_publish: false,
            client_history: true,
        }
    }
}

/// Everything a subscriber presents to be let onto a channel.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// The user the connection is authenticated as, if any.
    pub user: Option<String>,
    /// Whether the connection presented a valid credential.
    pub authenticated: bool,
    /// Channels the credential grants subscribing to.
    pub subscribe: Vec<ChannelPattern>,
}

/// Why a subscription was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The channel needs a credential and none was presented.
    #[error("channel {0} needs a token")]
    NeedsCredential(String),
    /// The credential does not grant the channel.
    #[error("the token does not grant subscribing to {0}")]
    NotGranted(String),
    /// Another user's private channel.
    #[error("channel {0} is another user's private channel")]
    OtherUser(String),
}

/// The policies of every namespace, with a default for the rest.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    /// The policy of channels in no configured namespace.
    pub default: NamespacePolicy,
    /// Policies by namespace name.
    pub namespaces: HashMap<String, NamespacePolicy>,
}

impl Policies {
    /// The policy that applies to `channel`.
    pub fn of(&self, channel: &ChannelName) -> &NamespacePolicy {
        channel
            .namespace()
            .and_then(|ns| self.namespaces.get(ns))
            .unwrap_or(&self.default)
    }

    /// The longest history age of any namespace.
    pub fn longest_ttl(&self) -> std::time::Duration {
        self.namespaces
            .values()
            .map(|p| p.history.ttl)
            .chain([self.default.history.ttl])
            .max()
            .unwrap_or_default()
    }

    /// Decides whether `grants` may subscribe to `channel`.
    ///
    /// A user channel is open to its own user only, whatever the token grants; the
    /// broadcast channel is open to everyone.
    pub fn may_subscribe(&self, grants: &Grants, channel: &ChannelName) -> Result<(), Denied> {
        if channel.is_broadcast() {
            return Ok(());
        }
        if let Some(owner) = channel.user_id() {
            return match &grants.user {
                Some(user) if user == owner => Ok(()),
                _ if !grants.authenticated => Err(Denied::NeedsCredential(channel.to_string())),
                _ => Err(Denied::OtherUser(channel.to_string())),
            };
        }
        let allowed = match self.of(channel).subscribe {
            SubscribeRule::Anyone => true,
            SubscribeRule::Authenticated => grants.authenticated,
            SubscribeRule::Grant => {
                ChannelPattern::any_matches(&grants.subscribe, channel.as_str())
            }
        };
        match allowed {
            true => Ok(()),
            false if !grants.authenticated => Err(Denied::NeedsCredential(channel.to_string())),
            false => Err(Denied::NotGranted(channel.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(name: &str) -> ChannelName {
        ChannelName::new(name).unwrap()
    }

    fn policies() -> Policies {
        let mut p = Policies::default();
        p.namespaces.insert(
            "public".into(),
            NamespacePolicy {
                subscribe: SubscribeRule::Anyone,
                ..Default::default()
            },
        );
        p.namespaces.insert(
            "lobby".into(),
            NamespacePolicy {
                subscribe: SubscribeRule::Authenticated,
                history: HistoryPolicy {
                    size: 7,
                    ttl: std::time::Duration::from_secs(5),
                },
                ..Default::default()
            },
        );
        p
    }

    #[test]
    fn namespace_selects_policy() {
        let p = policies();
        assert_eq!(p.of(&ch("lobby:1")).history.size, 7);
        assert_eq!(p.of(&ch("lobby")).history.size, 100);
        assert_eq!(p.of(&ch("other:1")).history.size, 100);
    }

    #[test]
    fn rules_decide_who_subscribes() {
        let p = policies();
        let anon = Grants::default();
        let limited = Grants {
            user: Some("bob".into()),
            authenticated: true,
            subscribe: vec![ChannelPattern::parse("team:*").unwrap()],
        };
        assert!(p.may_subscribe(&anon, &ch("public:news")).is_ok());
        assert_eq!(
            p.may_subscribe(&anon, &ch("lobby:1")),
            Err(Denied::NeedsCredential("lobby:1".into()))
        );
        assert!(p.may_subscribe(&limited, &ch("lobby:1")).is_ok());
        assert!(p.may_subscribe(&limited, &ch("team:9")).is_ok());
        assert_eq!(
            p.may_subscribe(&limited, &ch("orders")),
            Err(Denied::NotGranted("orders".into()))
        );
        assert!(p.may_subscribe(&anon, &ChannelName::broadcast()).is_ok());
    }

    #[test]
    fn nobody_subscribes_to_another_users_channel() {
        let p = policies();
        let alice = Grants {
            user: Some("alice".into()),
            authenticated: true,
            subscribe: vec![ChannelPattern::Any],
        };
        assert!(p.may_subscribe(&alice, &ch("user:alice")).is_ok());
        assert_eq!(
            p.may_subscribe(&alice, &ch("user:bob")),
            Err(Denied::OtherUser("user:bob".into()))
        );
        assert_eq!(
            p.may_subscribe(&Grants::default(), &ch("user:bob")),
            Err(Denied::NeedsCredential("user:bob".into()))
        );
    }
}
