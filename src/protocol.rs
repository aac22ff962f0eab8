//! What the hub says on its own behalf, the same over every transport: the typed
//! messages a streaming connection gets besides events (`connected`, `reset`,
//! `shutdown`, `token_expired`), and why a connection ended ([`End`]).
//!
//! Each message is one struct serialised one way: SSE sends its fields as the data
//! of an event named [`HubMessage::name`], WebSocket sends the same fields with a
//! `type` naming it, long-polling puts them in its answer. A transport only frames
//! them; what they say is decided here.

use std::time::Duration;

use serde::Serialize;

use crate::core::{ChannelName, Event, Reset};

/// The first message of a stream, sent once its subscription is live: anything
/// published after the client sees it reaches the client.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Connected {
    /// The connection's id.
    pub connection_id: String,
    /// The authenticated user, if any.
    pub user: Option<String>,
    /// Every channel of the connection (its user channel and `$broadcast` included).
    pub channels: Vec<ChannelName>,
    /// How often an idle stream gets a heartbeat (SSE only: a WebSocket pings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_ms: Option<u64>,
    /// The position the connection starts after: the client's last event id, or
    /// the hub's position when the client had none, so that a client that leaves
    /// before its first event can still resume without a gap. `None` when the
    /// broker could not tell its position.
    pub last_event_id: Option<String>,
}

/// History could not cover a resuming client's gap on some channels: it must
/// refetch their state. Never a silent gap.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ResetNotice {
    /// `unknown_id` or `expired`.
    pub reason: &'static str,
    /// The channels affected.
    pub channels: Vec<ChannelName>,
    /// The position to resume from afterwards. Left out where the transport carries
    /// it beside the message (the SSE `id:` line).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

impl ResetNotice {
    /// The notice of `reset`, with its position.
    pub fn of(reset: &Reset) -> Self {
        Self {
            reason: reset.reason.as_str(),
            channels: reset.channels.clone(),
            id: Some(reset.id.clone()),
        }
    }
}

/// The hub is stopping: reconnect (to another node) after `retry_ms`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Shutdown {
    /// Why, for people.
    pub reason: &'static str,
    /// How long the client should wait before reconnecting, spread per client.
    pub retry_ms: u64,
}

/// The connection's credential expired: reconnect with a fresh one.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TokenExpired {
    /// Why, for people.
    pub reason: &'static str,
}

/// A message of the hub's own.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HubMessage {
    /// See [`Connected`].
    Connected(Connected),
    /// See [`ResetNotice`].
    Reset(ResetNotice),
    /// See [`Shutdown`].
    Shutdown(Shutdown),
    /// See [`TokenExpired`].
    TokenExpired(TokenExpired),
}

impl HubMessage {
    /// The message's name: the SSE event name, the WebSocket `type`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Connected(_) => "connected",
            Self::Reset(_) => "reset",
            Self::Shutdown(_) => "shutdown",
            Self::TokenExpired(_) => "token_expired",
        }
    }

    /// The message's fields as a JSON object, without its name (the data of an SSE
    /// event).
    pub fn fields_json(&self) -> String {
        let fields = match self {
            Self::Connected(m) => serde_json::to_string(m),
            Self::Reset(m) => serde_json::to_string(m),
            Self::Shutdown(m) => serde_json::to_string(m),
            Self::TokenExpired(m) => serde_json::to_string(m),
        };
        // These structs hold only strings, numbers and channel names.
        fields.unwrap_or_default()
    }

    /// The message as a JSON object with its name under `type` (a WebSocket frame).
    pub fn tagged_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The reason given when the hub stops.
pub const SHUTTING_DOWN: &str = "the hub is shutting down";

/// The reason given when a credential expires.
pub const EXPIRED: &str = "the token has expired; reconnect with a fresh one";

/// How long one client should wait before reconnecting to a stopping hub: a random
/// delay from a tenth of `within` up to `within` (at least a millisecond), so that
/// the clients of a node do not all come back in the same instant.
pub fn reconnect_delay(within: Duration) -> Duration {
    let ceiling = (within.as_millis() as u64).max(1);
    Duration::from_millis(rand::random_range((ceiling / 10).max(1)..=ceiling))
}

/// Why a streaming connection ended. Each transport says it its own way: an SSE
/// stream sends [`End::notice`] and closes; a WebSocket sends the notice and then
/// closes with [`End::close_code`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The hub is stopping; the client should reconnect after `retry`.
    Shutdown {
        /// The reconnect delay chosen for this client ([`reconnect_delay`]).
        retry: Duration,
    },
    /// The credential expired.
    TokenExpired,
    /// The connection fell behind and its queue overflowed; the client resumes from
    /// history when it reconnects.
    SlowConsumer,
    /// Nothing was heard from the client within the ping timeout (WebSocket).
    PingTimeout,
    /// The client broke the WebSocket protocol, or sent a frame larger than
    /// allowed: the close code the RFC names for it (1002, 1007, 1009).
    Refused {
        /// The close code.
        code: u16,
        /// Why, for people.
        reason: &'static str,
    },
    /// The client closed the connection (a WebSocket close frame, which the
    /// transport answers).
    ClosedByClient,
    /// The client went away, or the connection failed.
    Gone,
}

/// WebSocket close code: the connection fell behind; reconnect and resume.
pub const CLOSE_SLOW_CONSUMER: u16 = 4000;
/// WebSocket close code: the token expired; reconnect with a fresh one.
pub const CLOSE_TOKEN_EXPIRED: u16 = 4001;
/// WebSocket close code: nothing heard from the client within the ping timeout.
pub const CLOSE_PING_TIMEOUT: u16 = 4008;
/// WebSocket close code: the hub is restarting (shutting down); reconnect after
/// `retry_ms`.
pub const CLOSE_RESTART: u16 = 1012;
/// WebSocket close code: a frame was larger than allowed.
pub const CLOSE_TOO_BIG: u16 = 1009;

impl End {
    /// The message that tells the client, before the connection closes.
    pub fn notice(&self) -> Option<HubMessage> {
        match self {
            Self::Shutdown { retry } => Some(HubMessage::Shutdown(Shutdown {
                reason: SHUTTING_DOWN,
                retry_ms: retry.as_millis() as u64,
            })),
            Self::TokenExpired => Some(HubMessage::TokenExpired(TokenExpired { reason: EXPIRED })),
            _ => None,
        }
    }

    /// The WebSocket close code and reason; `None` when there is no one to tell.
    pub fn close_code(&self) -> Option<(u16, &'static str)> {
        match self {
            Self::Shutdown { .. } => Some((CLOSE_RESTART, SHUTTING_DOWN)),
            Self::TokenExpired => Some((CLOSE_TOKEN_EXPIRED, "token expired")),
            Self::SlowConsumer => Some((CLOSE_SLOW_CONSUMER, "too slow: reconnect and resume")),
            Self::PingTimeout => Some((CLOSE_PING_TIMEOUT, "ping timeout")),
            Self::Refused { code, reason } => Some((*code, reason)),
            Self::ClosedByClient | Self::Gone => None,
        }
    }
}

/// The JSON envelope of an event: channel, type, data, time and id.
pub fn envelope_json(event: &Event, channel: Option<&ChannelName>) -> String {
    event_json(event, channel, "{", "type", &[])
}

/// The channels of an event that a connection subscribes to, in the event's order.
/// A connection gets an event once however many of its channels it was published
/// to; its envelope names them all so that a client can hand it to each.
pub fn matching_channels<'a>(event: &'a Event, mine: &[ChannelName]) -> Vec<&'a ChannelName> {
    // With several partitions, the part of an event a connection yields names the
    // event's channels of the other partitions too.
    match &event.split {
        Some(split) => split
            .channels
            .iter()
            .map(|(_, c)| c)
            .filter(|c| mine.contains(c))
            .collect(),
        None => event.channels.iter().filter(|c| mine.contains(c)).collect(),
    }
}

/// An event as a JSON object starting with `open` (which ends in `{` or a `,`),
/// with its type under `type_key`, and a `channels` list when `all` names more than
/// one channel.
pub fn event_json(
    event: &Event,
    channel: Option<&ChannelName>,
    open: &str,
    type_key: &str,
    all: &[&ChannelName],
) -> String {
    event_json_with_id(event, &event.id, channel, open, type_key, all)
}

/// [`event_json`] with `id` in place of the event's own (a connection's cursor,
/// with several partitions).
pub fn event_json_with_id(
    event: &Event,
    id: &str,
    channel: Option<&ChannelName>,
    open: &str,
    type_key: &str,
    all: &[&ChannelName],
) -> String {
    let time = humantime::format_rfc3339_millis(event.time).to_string();
    let mut s = String::with_capacity(event.data.len() + 112);
    s.push_str(open);
    s.push_str("\"channel\":");
    s.push_str(&serde_json::to_string(&channel.map(ChannelName::as_str)).unwrap_or_default());
    if all.len() > 1 {
        s.push_str(",\"channels\":");
        let names: Vec<&str> = all.iter().map(|c| c.as_str()).collect();
        s.push_str(&serde_json::to_string(&names).unwrap_or_default());
    }
    s.push_str(",\"");
    s.push_str(type_key);
    s.push_str("\":");
    s.push_str(&serde_json::to_string(&event.kind).unwrap_or_default());
    s.push_str(",\"data\":");
    if event.data.is_json() {
        s.push_str(event.data.as_str());
    } else {
        s.push_str(&serde_json::to_string(event.data.as_str()).unwrap_or_default());
    }
    s.push_str(",\"time\":\"");
    s.push_str(&time);
    s.push_str("\",\"id\":");
    s.push_str(&serde_json::to_string(id).unwrap_or_default());
    s.push('}');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_set_of_fields_named_two_ways() {
        let shutdown = End::Shutdown {
            retry: Duration::from_millis(1234),
        }
        .notice()
        .unwrap();
        assert_eq!(shutdown.name(), "shutdown");
        assert_eq!(
            shutdown.fields_json(),
            r#"{"reason":"the hub is shutting down","retry_ms":1234}"#
        );
        assert_eq!(
            shutdown.tagged_json(),
            r#"{"type":"shutdown","reason":"the hub is shutting down","retry_ms":1234}"#
        );
        let reset = HubMessage::Reset(ResetNotice {
            reason: "expired",
            channels: vec![ChannelName::new("a").unwrap()],
            id: None,
        });
        assert_eq!(
            reset.fields_json(),
            r#"{"reason":"expired","channels":["a"]}"#
        );
        let connected = HubMessage::Connected(Connected {
            connection_id: "n-1".into(),
            user: None,
            channels: vec![],
            heartbeat_ms: None,
            last_event_id: Some("e-1".into()),
        });
        assert_eq!(
            connected.tagged_json(),
            r#"{"type":"connected","connection_id":"n-1","user":null,"channels":[],"last_event_id":"e-1"}"#
        );
    }

    #[test]
    fn reconnect_delays_spread_within_the_bound() {
        let within = Duration::from_secs(5);
        for _ in 0..1000 {
            let d = reconnect_delay(within);
            assert!(d >= within / 10 && d <= within, "{d:?}");
        }
        assert_eq!(reconnect_delay(Duration::ZERO), Duration::from_millis(1));
    }

    #[test]
    fn every_end_with_someone_to_tell_has_a_close_code() {
        assert_eq!(End::TokenExpired.close_code().unwrap().0, 4001);
        assert_eq!(End::SlowConsumer.close_code().unwrap().0, 4000);
        assert!(End::Gone.close_code().is_none());
        assert!(End::SlowConsumer.notice().is_none());
        assert_eq!(End::TokenExpired.notice().unwrap().name(), "token_expired");
    }
}
