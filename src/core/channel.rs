//! Channel names, namespaces and the patterns that grant access to them.
//!
//! A channel is a named stream such as `orders`, `team:42` or `user:17`. The part
//! before the first `:` is its namespace, which selects the policy that applies to
//! it (history bounds, who may subscribe). Two names are special: `user:{id}` is the
//! private channel of one user, and [`BROADCAST`] reaches every connection.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest channel name accepted, in bytes.
pub const MAX_CHANNEL_LEN: usize = 200;

/// The channel every connection joins on its own: a publish to it reaches everyone.
pub const BROADCAST: &str = "$broadcast";
/// The hub's own channel between nodes carrying presence changes; no client may
/// subscribe or publish to it.
pub const PRESENCE_LOG: &str = "$presence";

/// The namespace of private user channels (`user:{id}`).
pub const USER_NAMESPACE: &str = "user";

/// Why a channel name or pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// The name is empty.
    #[error("channel name is empty")]
    Empty,
    /// The name is longer than [`MAX_CHANNEL_LEN`] bytes.
    #[error("channel name is longer than {MAX_CHANNEL_LEN} bytes")]
    TooLong,
    /// The name holds a control character, white space, `*` or `,`.
    #[error(
        "channel name {0:?} contains a character that is not allowed (control characters, white space, '*' and ',' are not)"
    )]
    BadCharacter(String),
    /// Names starting with `$` belong to the hub.
    #[error("channel name {0:?} is reserved: names starting with '$' belong to the hub")]
    Reserved(String),
    /// `user:` with nothing after it.
    #[error("user channel {0:?} names no user")]
    EmptyUser(String),
    /// A pattern with `*` anywhere but at its end.
    #[error("pattern {0:?} is not valid: '*' may only stand at the end (exact, 'prefix:*' or '*')")]
    BadPattern(String),
}

/// A validated channel name; cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(Arc<str>);

impl ChannelName {
    /// Validates a channel name as a client or publisher may write it.
    ///
    /// Reserved `$` names are refused here; use [`ChannelName::broadcast`] for the
    /// broadcast channel.
    pub fn new(name: &str) -> Result<Self, ChannelError> {
        check_chars(name)?;
        if name.starts_with('$') {
            return Err(ChannelError::Reserved(name.to_owned()));
        }
        if name == USER_NAMESPACE || name.strip_prefix("user:") == Some("") {
            return Err(ChannelError::EmptyUser(name.to_owned()));
        }
        Ok(Self(Arc::from(name)))
    }

    /// The broadcast channel, which every connection joins.
    pub fn broadcast() -> Self {
        Self(Arc::from(BROADCAST))
    }

    /// The channel on which nodes share presence ([`PRESENCE_LOG`]).
    pub fn presence_log() -> Self {
        Self(Arc::from(PRESENCE_LOG))
    }

    /// A name of the hub's own (`$broadcast`, `$presence`) or a valid name, as
    /// read back from a broker.
    pub fn from_broker(name: &str) -> Option<Self> {
        match name {
            BROADCAST => Some(Self::broadcast()),
            PRESENCE_LOG => Some(Self::presence_log()),
            other => Self::new(other).ok(),
        }
    }

    /// The private channel of `user`.
    pub fn user(user: &str) -> Result<Self, ChannelError> {
        let mut name = String::with_capacity(USER_NAMESPACE.len() + 1 + user.len());
        name.push_str(USER_NAMESPACE);
        name.push(':');
        name.push_str(user);
        Self::new(&name)
    }

    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The namespace: the part before the first `:`, or `None` for a name without one.
    pub fn namespace(&self) -> Option<&str> {
        self.0.split_once(':').map(|(ns, _)| ns)
    }

    /// For a user channel `user:{id}`, the user id.
    pub fn user_id(&self) -> Option<&str> {
        self.0.strip_prefix("user:")
    }

    /// Whether this is the broadcast channel.
    pub fn is_broadcast(&self) -> bool {
        &*self.0 == BROADCAST
    }
}

fn check_chars(name: &str) -> Result<(), ChannelError> {
    if name.is_empty() {
        return Err(ChannelError::Empty);
    }
    if name.len() > MAX_CHANNEL_LEN {
        return Err(ChannelError::TooLong);
    }
    if name
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '*' || c == ',')
    {
        return Err(ChannelError::BadCharacter(name.to_owned()));
    }
    Ok(())
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Borrow<str> for ChannelName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl Serialize for ChannelName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// A grant over channel names: an exact name, `prefix*` (usually `namespace:*`), or `*`.
#[derive(Clone, PartialEq, Eq)]
pub enum ChannelPattern {
    /// Every channel.
    Any,
    /// Every channel whose name starts with the prefix.
    Prefix(Arc<str>),
    /// One channel.
    Exact(Arc<str>),
}

impl ChannelPattern {
    /// Parses a pattern: `*`, `prefix*` or an exact name.
    pub fn parse(pattern: &str) -> Result<Self, ChannelError> {
        if pattern == "*" {
            return Ok(Self::Any);
        }
        let (body, prefix) = match pattern.strip_suffix('*') {
            Some(body) => (body, true),
            None => (pattern, false),
        };
        if body.contains('*') {
            return Err(ChannelError::BadPattern(pattern.to_owned()));
        }
        check_chars(body).map_err(|_| ChannelError::BadPattern(pattern.to_owned()))?;
        Ok(if prefix {
            Self::Prefix(Arc::from(body))
        } else {
            Self::Exact(Arc::from(body))
        })
    }

    /// Whether the pattern covers `channel`.
    pub fn matches(&self, channel: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Prefix(p) => channel.starts_with(&**p),
            Self::Exact(e) => &**e == channel,
        }
    }

    /// Whether any of `patterns` covers `channel`.
    pub fn any_matches(patterns: &[ChannelPattern], channel: &str) -> bool {
        patterns.iter().any(|p| p.matches(channel))
    }
}

impl fmt::Display for ChannelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Prefix(p) => write!(f, "{p}*"),
            Self::Exact(e) => f.write_str(e),
        }
    }
}

impl fmt::Debug for ChannelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl Serialize for ChannelPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ChannelPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_is_the_part_before_the_first_colon() {
        let c = ChannelName::new("team:42:tasks").unwrap();
        assert_eq!(c.namespace(), Some("team"));
        assert_eq!(ChannelName::new("orders").unwrap().namespace(), None);
    }

    #[test]
    fn bad_names_are_refused_with_a_reason() {
        assert_eq!(ChannelName::new(""), Err(ChannelError::Empty));
        assert_eq!(
            ChannelName::new(&"a".repeat(MAX_CHANNEL_LEN + 1)),
            Err(ChannelError::TooLong)
        );
        assert!(matches!(
            ChannelName::new("a\nb"),
            Err(ChannelError::BadCharacter(_))
        ));
        assert!(matches!(
            ChannelName::new("a b"),
            Err(ChannelError::BadCharacter(_))
        ));
        assert!(matches!(
            ChannelName::new("team:*"),
            Err(ChannelError::BadCharacter(_))
        ));
        assert!(matches!(
            ChannelName::new("$broadcast"),
            Err(ChannelError::Reserved(_))
        ));
        assert!(matches!(
            ChannelName::new("user:"),
            Err(ChannelError::EmptyUser(_))
        ));
        assert!(ChannelName::new("booking:17").is_ok());
        assert!(ChannelName::new("invitations:ana@example.com").is_ok());
        assert!(ChannelName::new("équipe:été").is_ok());
    }

    #[test]
    fn user_channels_know_their_user() {
        let c = ChannelName::user("ana").unwrap();
        assert_eq!(c.as_str(), "user:ana");
        assert_eq!(c.user_id(), Some("ana"));
        assert!(ChannelName::broadcast().is_broadcast());
    }

    #[test]
    fn patterns_match_exact_prefix_and_any() {
        let exact = ChannelPattern::parse("team:1").unwrap();
        assert!(exact.matches("team:1"));
        assert!(!exact.matches("team:10"));
        let prefix = ChannelPattern::parse("team:*").unwrap();
        assert!(prefix.matches("team:10"));
        assert!(!prefix.matches("teams:1"));
        assert!(ChannelPattern::parse("*").unwrap().matches("anything"));
        assert!(ChannelPattern::parse("te*m").is_err());
        assert!(ChannelPattern::parse("a b*").is_err());
        assert_eq!(prefix.to_string(), "team:*");
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// What a pattern covers, read straight from its text.
        fn reference_matches(pattern: &str, channel: &str) -> bool {
            match pattern.strip_suffix('*') {
                Some(prefix) => channel.starts_with(prefix),
                None => pattern == channel,
            }
        }

        /// Names built from few characters, so that patterns and names often share
        /// prefixes; with the characters names may not hold.
        fn text() -> impl Strategy<Value = String> {
            "[ab:$*, \t\u{0}\u{85}\u{a0}é]{0,8}"
        }

        proptest! {
            #![proptest_config(crate::fuzzing::cases(256))]

            /// A name accepted is exactly the string given and follows every rule;
            /// its namespace and user read from it.
            #[test]
            fn an_accepted_name_is_what_was_given(name in prop_oneof![text(), ".{0,210}", "user:.{0,4}"]) {
                if let Ok(channel) = ChannelName::new(&name) {
                    prop_assert_eq!(channel.as_str(), name.as_str());
                    prop_assert_eq!(channel.to_string(), name.clone());
                    prop_assert!(!name.is_empty() && name.len() <= MAX_CHANNEL_LEN);
                    prop_assert!(!name.starts_with('$'));
                    prop_assert!(!name.chars().any(|c| c.is_control() || c.is_whitespace() || c == '*' || c == ','));
                    prop_assert_eq!(channel.namespace(), name.split_once(':').map(|(ns, _)| ns));
                    if let Some(user) = channel.user_id() {
                        prop_assert_eq!(ChannelName::user(user), Ok(channel.clone()));
                    }
                    prop_assert_eq!(ChannelName::from_broker(&name), Some(channel));
                }
            }

            /// A pattern displays as written and reads back the same; what it covers
            /// is what its text says.
            #[test]
            fn patterns_match_as_a_reference_implementation_does(
                pattern in prop_oneof![text(), "[ab:]{0,4}\\*", Just("*".to_owned())],
                channel in text(),
            ) {
                if let Ok(p) = ChannelPattern::parse(&pattern) {
                    prop_assert_eq!(p.to_string(), pattern.clone());
                    prop_assert!(ChannelPattern::parse(&p.to_string()) == Ok(p.clone()));
                    prop_assert_eq!(p.matches(&channel), reference_matches(&pattern, &channel));
                } else {
                    // Refused: a `*` not at the end, or a body that is no name.
                    let body = pattern.strip_suffix('*').unwrap_or(&pattern);
                    prop_assert!(pattern != "*");
                    prop_assert!(body.contains('*') || check_chars(body).is_err());
                }
            }
        }
    }
}
