//! Events applications `PUBLISH` to Redis channels themselves.
//!
//! Many applications already push JSON to Redis pub/sub channels (`user:{id}`,
//! `channel:{name}`, a global channel) for a websocket server to pick up. Herald can
//! take those messages as they are: each route maps Redis channels (a name, or a
//! pattern with `*`) to a Herald channel built from what the `*`s matched, or to
//! broadcast, and reads a message either as the event's data or as an envelope
//! with the data and optionally the type and id in named fields. The events are
//! then published like any other: positions, history, every node.
//!
//! With several nodes, one of them ingests: the nodes hold a lease in Redis
//! (`{prefix}:source:leader`, renewed every few seconds) and only its holder
//! subscribes, so each message becomes one event, not one per node. Redis pub/sub
//! delivers a message only to subscribers connected at that moment, so messages
//! sent while no node is subscribed (Redis or the leader down, the few seconds a
//! lease takes to pass on) are not seen; applications that need every message
//! delivered should publish to Herald (or through its outbox source) instead.

use std::time::Duration;

use futures_util::StreamExt;
use redis::Value;
use serde_json::Value as Json;

use super::Sink;
use super::{RedisMessageFormat, RedisRoute, RedisSourceConfig};
use crate::backoff::{Backoff, pause};
use crate::core::{ChannelName, NewEvent, Payload};
use crate::health::Readiness;
use crate::hub::PublishError;
use crate::stats::SourceSkip;

/// How long the ingesting node's lease lasts without renewal.
const LEASE: Duration = Duration::from_secs(10);
/// How often the lease is renewed (or, by the others, tried).
const RENEW_EVERY: Duration = Duration::from_secs(3);
/// How long one Redis operation may take.
const TIMEOUT: Duration = Duration::from_secs(2);

const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

/// A piece of a channel template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    /// What the n-th `*` matched (from 1).
    Star(usize),
    /// The whole Redis channel name.
    Whole,
}

/// A compiled route.
#[derive(Debug, Clone)]
struct Route {
    pattern: String,
    /// The literal parts of the pattern around its `*`s.
    parts: Vec<String>,
    /// `None` for broadcast.
    template: Option<Vec<Piece>>,
    config: RedisRoute,
}

impl Route {
    fn new(config: &RedisRoute) -> Self {
        let template = if config.broadcast {
            None
        } else {
            Some(parse_template(
                config.channel.as_deref().unwrap_or("{channel}"),
            ))
        };
        Self {
            pattern: config.pattern.clone(),
            parts: config.pattern.split('*').map(str::to_owned).collect(),
            template,
            config: config.clone(),
        }
    }

    /// What each `*` matched, when `channel` matches the pattern.
    fn matches<'a>(&self, channel: &'a str) -> Option<Vec<&'a str>> {
        let (first, rest) = self.parts.split_first()?;
        let mut tail = channel.strip_prefix(first.as_str())?;
        let Some((last, middle)) = rest.split_last() else {
            return tail.is_empty().then(Vec::new);
        };
        let mut captures = Vec::with_capacity(rest.len());
        for part in middle {
            let at = tail.find(part.as_str())?;
            captures.push(&tail[..at]);
            tail = &tail[at + part.len()..];
        }
        let end = tail.strip_suffix(last.as_str())?;
        captures.push(end);
        Some(captures)
    }

    /// The Herald channel for a message on `channel`.
    fn target(&self, channel: &str, captures: &[&str]) -> Result<ChannelName, SourceSkip> {
        let Some(template) = &self.template else {
            return Ok(ChannelName::broadcast());
        };
        let mut name = String::new();
        for piece in template {
            match piece {
                Piece::Text(t) => name.push_str(t),
                Piece::Star(n) => name.push_str(captures.get(n - 1).copied().unwrap_or("")),
                Piece::Whole => name.push_str(channel),
            }
        }
        ChannelName::new(&name).map_err(|_| SourceSkip::BadChannel)
    }

    /// The event a message becomes.
    fn event(&self, channel: ChannelName, payload: &[u8]) -> Result<NewEvent, SourceSkip> {
        let text = std::str::from_utf8(payload).map_err(|_| SourceSkip::InvalidEvent)?;
        let config = &self.config;
        let mut event = match config.format {
            RedisMessageFormat::Data => {
                let data = Payload::json_text(text).unwrap_or_else(|_| Payload::text(text));
                NewEvent::new(channel, data)
            }
            RedisMessageFormat::Envelope => {
                let Ok(Json::Object(mut object)) = serde_json::from_str::<Json>(text) else {
                    return Err(SourceSkip::NotJson);
                };
                let data = match object.remove(&config.data_field) {
                    None => return Err(SourceSkip::MissingField),
                    Some(Json::String(s)) => Payload::text(s),
                    Some(value) => Payload::json(&value).map_err(|_| SourceSkip::InvalidEvent)?,
                };
                let mut event = NewEvent::new(channel, data);
                event.kind = object
                    .get(&config.type_field)
                    .and_then(Json::as_str)
                    .map(str::to_owned);
                event.id = match object.get(&config.id_field) {
                    Some(Json::String(s)) => Some(s.clone()),
                    Some(Json::Number(n)) => Some(n.to_string()),
                    _ => None,
                };
                event.retry = object
                    .get("retry")
                    .and_then(Json::as_u64)
                    .and_then(|r| u32::try_from(r).ok());
                event
            }
        };
        if event.kind.is_none() {
            event.kind = config.kind.clone();
        }
        Ok(event)
    }
}

fn parse_template(text: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}').map(|c| open + c) else {
            break;
        };
        if open > 0 {
            pieces.push(Piece::Text(rest[..open].to_owned()));
        }
        let name = &rest[open + 1..close];
        pieces.push(match name.parse::<usize>() {
            Ok(n) => Piece::Star(n),
            Err(_) => Piece::Whole,
        });
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_owned()));
    }
    pieces
}

/// Starts the source, publishing to `sink`: one task until the hub shuts down.
/// Its lease key lives under the Redis broker's `prefix`.
pub(crate) fn spawn(sink: Sink, config: RedisSourceConfig, url: String, prefix: &str) {
    let readiness = sink.readiness.clone();
    let client = match redis::Client::open(url.as_str()) {
        Ok(client) => client,
        Err(e) => {
            tracing::error!("redis source not started: {e}");
            readiness.unready(e.to_string());
            return;
        }
    };
    let source = Source {
        sink,
        routes: config.routes.iter().map(Route::new).collect(),
        client,
        readiness,
        lease_key: format!("{{{prefix}}}:source:leader"),
        me: format!("{:016x}", rand::random::<u64>()),
    };
    tokio::spawn(source.run());
}

struct Source {
    sink: Sink,
    routes: Vec<Route>,
    client: redis::Client,
    readiness: Readiness,
    lease_key: String,
    me: String,
}

enum End {
    Stop,
    Lost(String),
}

impl Source {
    async fn run(self) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let stop = self.sink.hub.shutdown_token();
        loop {
            let started = std::time::Instant::now();
            let why = match self.session().await {
                End::Stop => return,
                End::Lost(why) => why,
            };
            tracing::warn!("redis source: {why}; reconnecting");
            self.readiness.unready(why);
            if pause(backoff.after_session(started), &stop).await {
                return;
            }
        }
    }

    /// One connection: standing by until this node holds the lease, then ingesting
    /// until it loses it or the connection.
    async fn session(&self) -> End {
        let conn = tokio::time::timeout(TIMEOUT, self.client.get_multiplexed_async_connection());
        let mut conn = match conn.await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return End::Lost(e.to_string()),
            Err(_) => return End::Lost("connection timed out".into()),
        };
        self.sink.stats.source_connected();
        self.readiness.ready();
        let renew = redis::Script::new(RENEW);
        let mut tick = tokio::time::interval(RENEW_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Standing by.
            tokio::select! {
                _ = self.sink.hub.shutting_down() => return End::Stop,
                _ = tick.tick() => {}
            }
            let mut take = redis::cmd("SET");
            take.arg(&self.lease_key)
                .arg(&self.me)
                .arg("NX")
                .arg("PX")
                .arg(LEASE.as_millis() as u64);
            match tokio::time::timeout(TIMEOUT, take.query_async::<Value>(&mut conn)).await {
                Ok(Ok(Value::Okay)) => {}
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => return End::Lost(e.to_string()),
                Err(_) => return End::Lost("no answer from redis".into()),
            }
            tracing::info!("redis source: this node ingests");
            match self.ingest(&mut conn, &renew, &mut tick).await {
                Some(end) => {
                    // Give the lease up so another node can take over at once.
                    let release = redis::Script::new(
                        "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                         return redis.call('DEL', KEYS[1]) end return 0",
                    );
                    let mut call = release.prepare_invoke();
                    call.key(&self.lease_key).arg(&self.me);
                    let _ =
                        tokio::time::timeout(TIMEOUT, call.invoke_async::<Value>(&mut conn)).await;
                    return end;
                }
                None => tracing::warn!("redis source: lost the lease; standing by"),
            }
        }
    }

    /// Subscribes and publishes every message until the lease is lost (`None`) or
    /// the session ends.
    async fn ingest(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        renew: &redis::Script,
        tick: &mut tokio::time::Interval,
    ) -> Option<End> {
        let pubsub = tokio::time::timeout(TIMEOUT, self.client.get_async_pubsub()).await;
        let mut pubsub = match pubsub {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return Some(End::Lost(e.to_string())),
            Err(_) => return Some(End::Lost("connection timed out".into())),
        };
        for route in &self.routes {
            let done = if route.pattern.contains('*') {
                tokio::time::timeout(TIMEOUT, pubsub.psubscribe(&route.pattern)).await
            } else {
                tokio::time::timeout(TIMEOUT, pubsub.subscribe(&route.pattern)).await
            };
            match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Some(End::Lost(e.to_string())),
                Err(_) => return Some(End::Lost("no answer to SUBSCRIBE".into())),
            }
        }
        let (_sink, mut messages) = pubsub.split();
        loop {
            tokio::select! {
                _ = self.sink.hub.shutting_down() => return Some(End::Stop),
                message = messages.next() => {
                    let Some(message) = message else {
                        return Some(End::Lost("the subscription closed".into()));
                    };
                    self.take(message.get_channel_name(), message.get_payload_bytes()).await;
                }
                _ = tick.tick() => {
                    let mut call = renew.prepare_invoke();
                    call.key(&self.lease_key)
                        .arg(&self.me)
                        .arg(LEASE.as_millis() as u64);
                    match tokio::time::timeout(TIMEOUT, call.invoke_async::<i64>(conn)).await {
                        Ok(Ok(1)) => {}
                        Ok(Ok(_)) => return None,
                        Ok(Err(e)) => return Some(End::Lost(e.to_string())),
                        Err(_) => return Some(End::Lost("no answer from redis".into())),
                    }
                }
            }
        }
    }

    /// Publishes one message by the first route that takes its channel.
    async fn take(&self, channel: &str, payload: &[u8]) {
        let stats = &self.sink.stats;
        stats.source_received(1);
        let Some((route, captures)) = self
            .routes
            .iter()
            .find_map(|r| r.matches(channel).map(|c| (r, c)))
        else {
            stats.source_skipped(SourceSkip::NoRoute);
            return;
        };
        let event = route
            .target(channel, &captures)
            .and_then(|target| route.event(target, payload));
        let event = match event {
            Ok(event) => event,
            Err(why) => {
                stats.source_skipped(why);
                tracing::debug!(
                    "redis source: skipped a message on {channel}: {}",
                    why.label()
                );
                return;
            }
        };
        match self.sink.hub.publish(event).await {
            Ok(_) => {}
            Err(PublishError::Invalid { error, .. }) => {
                stats.source_skipped(SourceSkip::InvalidEvent);
                tracing::debug!("redis source: skipped a message on {channel}: {error}");
            }
            Err(PublishError::Unavailable(e)) => {
                stats.source_skipped(SourceSkip::PublishFailed);
                tracing::warn!("redis source: a message on {channel} was lost: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(pattern: &str, channel: Option<&str>, format: RedisMessageFormat) -> Route {
        Route::new(&RedisRoute {
            pattern: pattern.into(),
            channel: channel.map(str::to_owned),
            broadcast: false,
            format,
            kind: None,
            data_field: "data".into(),
            type_field: "event".into(),
            id_field: "id".into(),
        })
    }

    #[test]
    fn patterns_capture_what_stars_match() {
        let r = route("user:*", None, RedisMessageFormat::Data);
        assert_eq!(r.matches("user:42"), Some(vec!["42"]));
        assert_eq!(r.matches("users:42"), None);
        assert_eq!(r.target("user:42", &["42"]).unwrap().as_str(), "user:42");
        let r = route(
            "app:*:room:*",
            Some("room:{2}-{1}"),
            RedisMessageFormat::Data,
        );
        let captures = r.matches("app:shop:room:7").unwrap();
        assert_eq!(captures, vec!["shop", "7"]);
        assert_eq!(
            r.target("app:shop:room:7", &captures).unwrap().as_str(),
            "room:7-shop"
        );
        let r = route("global", None, RedisMessageFormat::Data);
        assert_eq!(r.matches("global"), Some(vec![]));
        assert_eq!(r.matches("global2"), None);
        let r = route("channel:*", Some("{1}"), RedisMessageFormat::Data);
        assert_eq!(r.target("channel:", &[""]), Err(SourceSkip::BadChannel));
    }

    #[test]
    fn messages_become_events() {
        let r = route("x", None, RedisMessageFormat::Data);
        let c = ChannelName::new("x").unwrap();
        let e = r.event(c.clone(), br#"{ "a": 1 }"#).unwrap();
        assert_eq!(e.data.as_str(), r#"{"a":1}"#);
        assert!(e.data.is_json());
        let e = r.event(c.clone(), b"plain text").unwrap();
        assert!(!e.data.is_json());

        let r = route("x", None, RedisMessageFormat::Envelope);
        let e = r
            .event(
                c.clone(),
                br#"{"event":"order.shipped","data":{"id":7},"id":12,"socket":null}"#,
            )
            .unwrap();
        assert_eq!(e.kind.as_deref(), Some("order.shipped"));
        assert_eq!(e.data.as_str(), r#"{"id":7}"#);
        assert_eq!(e.id.as_deref(), Some("12"));
        assert_eq!(r.event(c.clone(), b"[1]").unwrap_err(), SourceSkip::NotJson);
        assert_eq!(
            r.event(c, br#"{"x":1}"#).unwrap_err(),
            SourceSkip::MissingField
        );
    }
}
