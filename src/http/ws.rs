//! The WebSocket transport: `GET /ws`.
//!
//! The same channels, credentials, history, resume and limits as SSE, plus what
//! needs the client to talk back on the same connection: subscribing and
//! unsubscribing mid-connection, publishing client events, asking who is present.
//! The protocol (JSON text frames) is documented in `docs/websocket.md`.
//!
//! Close codes: 1000 normal; 1002 a protocol violation and 1007 text that is not
//! UTF-8 (see `ws_close`); 1009 a message over `ws.max_frame_bytes`; 1012 the hub
//! is restarting (reconnect after `retry_ms`); 4000 the connection fell behind
//! (reconnect and resume); 4001 the token expired; 4008 no sign of life within
//! `ws.ping_timeout`.

use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::SinkExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::sse::{Opening, event_json, matching_channels, open, unavailable};
use super::{ApiError, ConnectionInfo};
use crate::auth::Identity;
use crate::broker::ResumeFrom;
use crate::core::{ChannelName, Event, FrameFormat, Item, NewEvent, Payload, Subscription};
use crate::hooks::Membership;
use crate::hub::{Admission, ClientPublishError, Hub};

/// Close code: the connection fell behind; reconnect and resume.
pub const CLOSE_SLOW_CONSUMER: u16 = 4000;
/// Close code: the token expired; reconnect with a fresh one.
pub const CLOSE_TOKEN_EXPIRED: u16 = 4001;
/// Close code: nothing heard from the client within the ping timeout.
pub const CLOSE_PING_TIMEOUT: u16 = 4008;
/// Close code: the hub is restarting (shutting down); reconnect after `retry_ms`.
pub const CLOSE_RESTART: u16 = 1012;
/// Close code: a frame was larger than allowed.
pub const CLOSE_TOO_BIG: u16 = 1009;

/// Bytes reserved for each read from a client. Client frames are small (a
/// subscribe, a typing event), and the default of the WebSocket library (128 KiB,
/// held by every connection) made an idle WebSocket cost ten times an SSE stream;
/// a larger frame still arrives, over several reads.
const READ_BUFFER: usize = 4 * 1024;

/// How long a closing connection waits for its close frame to be written. A reader
/// that stopped reading gets this long to take what is queued in the socket and
/// then the close code; after it the connection is dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// `GET /ws`: upgrade to a WebSocket. The query takes the same `channel`,
/// `last_event_id` and `token` parameters as `GET /events`.
pub(super) async fn ws(
    State(hub): State<Hub>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    info: Option<axum::Extension<ConnectionInfo>>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = super::ws_handshake::accept(&headers, upgrade)?;
    let info = info.map(|axum::Extension(i)| i);
    let mut opening = open(&hub, &headers, &uri, info.as_ref(), false)?;
    // Subscribed (and replayed) before the upgrade, as SSE does, so a broker that
    // cannot serve it is an HTTP error rather than a socket that closes at once.
    let channels = std::mem::take(&mut opening.channels);
    let started = hub
        .subscribe_from(&opening.admission, channels, opening.resume.take())
        .await
        .map_err(unavailable)?;
    let max = hub.config().ws.max_frame_bytes;
    Ok(upgrade
        .read_buffer_size(READ_BUFFER)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| async move {
            let close = info.map(|i| i.close);
            Connection::start(hub, opening, started, socket)
                .run(close)
                .await;
        })
        .into_response())
}

/// A frame from the client.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientFrame {
    op: String,
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    last_event_id: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    data: Option<Value>,
}

/// A per-connection token bucket for client events.
#[derive(Debug)]
struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    fn new(rate: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate,
            burst,
            tokens: burst,
            at: Instant::now(),
        }
    }

    fn allow(&mut self) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Why the connection ends.
enum End {
    Gone,
    /// The client sent its close frame: the answer (its code, or 1002 for a code
    /// it may not send) is queued and still to be written.
    ClosedByClient,
    Close(u16, &'static str),
}

struct Connection {
    hub: Hub,
    socket: WebSocket,
    identity: Identity,
    subscription: Subscription,
    membership: Membership,
    admission: Admission,
    /// The position the connection started after (see [`Hub::subscribe_from`]).
    start: Option<String>,
    limit: RateLimit,
    last_heard: Instant,
}

impl Connection {
    fn start(
        hub: Hub,
        opening: Opening,
        (subscription, start): (Subscription, Option<String>),
        socket: WebSocket,
    ) -> Self {
        let Opening {
            identity,
            admission,
            ..
        } = opening;
        let membership = Membership::new(
            &hub,
            admission.connection_id(),
            identity.user.clone(),
            identity.info.clone(),
        );
        let ws = &hub.config().ws;
        let limit = RateLimit::new(ws.client_publish_rate, ws.client_publish_burst);
        Self {
            hub,
            socket,
            identity,
            subscription,
            membership,
            admission,
            start,
            limit,
            last_heard: Instant::now(),
        }
    }

    async fn run(mut self, close: Option<tokio_util::sync::CancellationToken>) {
        let end = self.serve().await;
        // The connection is over for its channels now, whatever the close handshake
        // below takes.
        self.membership.leave_all();
        self.subscription.remove_all();
        if let End::ClosedByClient = end {
            let _ = tokio::time::timeout(CLOSE_WAIT, self.socket.close()).await;
        }
        if let End::Close(code, reason) = end {
            let frame = CloseFrame {
                code,
                reason: Utf8Bytes::from_static(reason),
            };
            // Send the close frame, then wait for the client's answer before dropping
            // the socket, so the frame is not lost to a reset.
            let socket = &mut self.socket;
            let _ = tokio::time::timeout(CLOSE_WAIT, async {
                socket.send(Message::Close(Some(frame))).await?;
                while let Some(message) = socket.recv().await {
                    if let Message::Close(_) = message? {
                        break;
                    }
                }
                Ok::<_, axum::Error>(())
            })
            .await;
        }
        if let Some(close) = close {
            close.cancel();
        }
    }

    async fn serve(&mut self) -> End {
        let hub = self.hub.clone();
        let channels = self.subscription.channels().to_vec();
        for channel in &channels {
            self.membership.join(channel);
        }
        let connected = json!({
            "type": "connected",
            "connection_id": self.admission.connection_id(),
            "user": self.identity.user,
            "channels": channels,
            "last_event_id": self.start,
        });
        if !self.send_json(&connected).await {
            return End::Gone;
        }
        let config = hub.config().clone();
        let mut ping = tokio::time::interval(config.ws.ping_interval);
        ping.reset();
        let expires = self
            .identity
            .expires_in()
            .map(|left| Instant::now() + left + config.auth.leeway);
        loop {
            let wake = {
                tokio::select! {
                    biased;
                    _ = hub.shutting_down() => Wake::Shutdown,
                    _ = async {
                        match expires {
                            Some(at) => tokio::time::sleep_until(at).await,
                            None => std::future::pending().await,
                        }
                    } => Wake::Expired,
                    message = self.socket.recv() => Wake::Message(message),
                    item = self.subscription.next() => Wake::Item(item),
                    _ = ping.tick() => Wake::Ping,
                }
            };
            match wake {
                Wake::Shutdown => {
                    let retry = config.shutdown.reconnect_within.as_millis().max(1) as u64;
                    let retry_ms = rand::random_range(retry / 10..=retry);
                    let _ = self
                        .send_json(&json!({"type": "shutdown", "reason": "the hub is shutting down", "retry_ms": retry_ms}))
                        .await;
                    return End::Close(CLOSE_RESTART, "the hub is shutting down");
                }
                Wake::Expired => {
                    let _ = self
                        .send_json(&json!({"type": "token_expired", "reason": "the token has expired; reconnect with a fresh one"}))
                        .await;
                    return End::Close(CLOSE_TOKEN_EXPIRED, "token expired");
                }
                Wake::Ping => {
                    if self.last_heard.elapsed() > config.ws.ping_timeout {
                        return End::Close(CLOSE_PING_TIMEOUT, "ping timeout");
                    }
                    if !self.send(Message::Ping(Bytes::new())).await {
                        return End::Gone;
                    }
                }
                Wake::Item(Err(_)) => {
                    return End::Close(CLOSE_SLOW_CONSUMER, "too slow: reconnect and resume");
                }
                Wake::Item(Ok(None)) => return End::Gone,
                Wake::Item(Ok(Some(item))) => match self.send_items(item).await {
                    Sent::Done => {}
                    Sent::Failed => return End::Gone,
                    Sent::Overflowed => {
                        return End::Close(CLOSE_SLOW_CONSUMER, "too slow: reconnect and resume");
                    }
                },
                Wake::Message(None) => return End::Gone,
                Wake::Message(Some(Err(e))) => {
                    // A frame the protocol forbids is answered with its close code.
                    return match super::ws_close::close_for(&e) {
                        Some((code, reason)) => End::Close(code, reason),
                        None => End::Gone,
                    };
                }
                Wake::Message(Some(Ok(message))) => {
                    self.last_heard = Instant::now();
                    match message {
                        Message::Text(text) => {
                            let reply = self.handle(text.as_str()).await;
                            if let Some(reply) = reply
                                && !self.send_json(&reply).await
                            {
                                return End::Gone;
                            }
                        }
                        Message::Binary(_) => {
                            let reply =
                                error(None, "binary_not_supported", "frames must be JSON text");
                            if !self.send_json(&reply).await {
                                return End::Gone;
                            }
                        }
                        Message::Close(_) => return End::ClosedByClient,
                        Message::Ping(_) | Message::Pong(_) => {}
                    }
                }
            }
        }
    }

    /// Sends an item and whatever else is ready, flushing once. A write blocked by a
    /// reader that stopped reading is abandoned as soon as the queue overflows (the
    /// frames already handed to the socket stay buffered ahead of the close frame).
    async fn send_items(&mut self, first: Item) -> Sent {
        let mut frames = vec![self.encode(&first)];
        while frames.len() < 64 {
            match self.subscription.try_next() {
                Ok(Some(item)) => frames.push(self.encode(&item)),
                _ => break,
            }
        }
        let timeout = self.hub.config().ws.ping_timeout;
        let socket = &mut self.socket;
        let send = async {
            for frame in frames {
                let Ok(text) = Utf8Bytes::try_from(frame) else {
                    continue;
                };
                socket.feed(Message::Text(text)).await?;
            }
            socket.flush().await
        };
        tokio::select! {
            sent = tokio::time::timeout(timeout, send) => match sent {
                Ok(Ok(())) => Sent::Done,
                _ => Sent::Failed,
            },
            _ = self.subscription.overflowed() => Sent::Overflowed,
        }
    }

    fn encode(&mut self, item: &Item) -> Bytes {
        match item {
            Item::Event(event) => {
                let index = if event.channels.len() == 1 {
                    0
                } else {
                    let mine = self.subscription.channels();
                    let matching = matching_channels(event, mine);
                    if matching.len() > 1 {
                        // Not cached: the list depends on this connection's channels.
                        let channel = matching.first().copied();
                        let open = "{\"type\":\"event\",";
                        return Bytes::from(event_json(event, channel, open, "event", &matching));
                    }
                    event.channel_index(|c| mine.contains(c))
                };
                event.frame(FrameFormat::Json, index, |e| encode_event(e, index))
            }
            Item::Reset(reset) => Bytes::from(
                json!({
                    "type": "reset",
                    "reason": reset.reason.as_str(),
                    "channels": reset.channels,
                    "id": reset.id,
                })
                .to_string(),
            ),
        }
    }

    async fn send_json(&mut self, value: &Value) -> bool {
        self.send(Message::Text(Utf8Bytes::from(value.to_string())))
            .await
    }

    async fn send(&mut self, message: Message) -> bool {
        let timeout = self.hub.config().ws.ping_timeout;
        matches!(
            tokio::time::timeout(timeout, self.socket.send(message)).await,
            Ok(Ok(()))
        )
    }

    /// Answers one client frame.
    async fn handle(&mut self, text: &str) -> Option<Value> {
        let frame: ClientFrame = match serde_json::from_str(text) {
            Ok(frame) => frame,
            Err(e) => {
                let id = serde_json::from_str::<Value>(text)
                    .ok()
                    .and_then(|v| v.get("id").cloned());
                return Some(error(
                    id,
                    "invalid_frame",
                    &format!("not a valid frame: {e}"),
                ));
            }
        };
        let id = frame.id.clone();
        let result = match frame.op.as_str() {
            "subscribe" => self.subscribe(frame).await,
            "unsubscribe" => self.unsubscribe(frame),
            "publish" => self.publish(frame).await,
            "presence" => self.presence(frame),
            "ping" => Ok(json!({"type": "pong"})),
            other => Err((
                "unknown_op",
                format!(
                    "unknown op {other:?}: use subscribe, unsubscribe, publish, presence or ping"
                ),
            )),
        };
        Some(match result {
            Ok(mut reply) => {
                if let Some(id) = id {
                    reply["id"] = id;
                }
                reply
            }
            Err((code, message)) => error(id, code, &message),
        })
    }

    fn channel_of(frame: &ClientFrame) -> Result<ChannelName, (&'static str, String)> {
        let name = frame
            .channel
            .as_deref()
            .ok_or(("missing_channel", "the frame names no `channel`".to_owned()))?;
        ChannelName::new(name).map_err(|e| ("invalid_channel", e.to_string()))
    }

    async fn subscribe(&mut self, frame: ClientFrame) -> Result<Value, (&'static str, String)> {
        let channel = Self::channel_of(&frame)?;
        self.hub
            .policies()
            .may_subscribe(&self.identity.grants(), &channel)
            .map_err(|d| {
                let code = match d {
                    crate::core::Denied::NeedsCredential(_) => "unauthorized",
                    _ => "forbidden",
                };
                (code, d.to_string())
            })?;
        let max = self.hub.config().limits.max_channels_per_connection + 2;
        let sub = &mut self.subscription;
        if sub.has(&channel) {
            return Ok(
                json!({"type": "ack", "op": "subscribe", "channel": channel, "already": true}),
            );
        }
        if sub.channels().len() >= max {
            return Err((
                "too_many_channels",
                format!("at most {} channels per connection", max - 2),
            ));
        }
        sub.add_channel(channel.clone());
        if let Some(last) = frame.last_event_id.filter(|id| !id.is_empty()) {
            match self
                .hub
                .replay(std::slice::from_ref(&channel), ResumeFrom::parse(&last))
                .await
            {
                Ok(replay) => self.subscription.prepend_channel(
                    &channel,
                    replay.events,
                    replay.reset,
                    replay.after_seq,
                ),
                Err(e) => {
                    self.subscription.remove_channel(&channel);
                    return Err(("unavailable", e.to_string()));
                }
            }
        }
        self.membership.join(&channel);
        Ok(json!({"type": "ack", "op": "subscribe", "channel": channel}))
    }

    fn unsubscribe(&mut self, frame: ClientFrame) -> Result<Value, (&'static str, String)> {
        let channel = Self::channel_of(&frame)?;
        if !self.subscription.remove_channel(&channel) {
            return Err(("not_subscribed", format!("not subscribed to {channel}")));
        }
        self.membership.leave(&channel);
        Ok(json!({"type": "ack", "op": "unsubscribe", "channel": channel}))
    }

    async fn publish(&mut self, frame: ClientFrame) -> Result<Value, (&'static str, String)> {
        let names: Vec<String> = match (&frame.channel, &frame.channels) {
            (Some(one), None) => vec![one.clone()],
            (None, Some(many)) if !many.is_empty() => many.clone(),
            _ => {
                return Err((
                    "invalid_target",
                    "name exactly one of `channel` and `channels`".to_owned(),
                ));
            }
        };
        let mut channels = Vec::with_capacity(names.len());
        for name in &names {
            channels.push(ChannelName::new(name).map_err(|e| ("invalid_channel", e.to_string()))?);
        }
        if !self.limit.allow() {
            self.hub.counters().client_event(false);
            return Err((
                "rate_limited",
                format!(
                    "more than {} events per second; slow down",
                    self.hub.config().ws.client_publish_rate
                ),
            ));
        }
        let data = match frame.data.unwrap_or(Value::Null) {
            Value::String(text) => Payload::text(text),
            other => Payload::json(&other).map_err(|e| ("invalid_data", e.to_string()))?,
        };
        let mut event = NewEvent::new(channels[0].clone(), data);
        event.channels = channels;
        event.kind = frame.kind;
        let connection = self.admission.connection_id().to_owned();
        let hub = self.hub.clone();
        match hub
            .publish_from_client(&self.identity, &connection, event)
            .await
        {
            Ok(accepted) => Ok(json!({"type": "ack", "op": "publish", "event_id": accepted.id})),
            Err(ClientPublishError::Forbidden(m)) => Err(("forbidden", m)),
            Err(ClientPublishError::Invalid(e)) => Err(("invalid_event", e.to_string())),
            Err(ClientPublishError::Refused(m)) => Err(("refused", m)),
            Err(ClientPublishError::Unavailable(e)) => Err(("unavailable", e.to_string())),
        }
    }

    fn presence(&mut self, frame: ClientFrame) -> Result<Value, (&'static str, String)> {
        let channel = Self::channel_of(&frame)?;
        if !self.subscription.has(&channel) {
            self.hub
                .policies()
                .may_subscribe(&self.identity.grants(), &channel)
                .map_err(|d| ("forbidden", d.to_string()))?;
        }
        if !self.hub.policies().of(&channel).presence {
            return Err((
                "presence_disabled",
                format!("presence is not enabled for {channel}"),
            ));
        }
        let users = self.hub.presence(&channel);
        Ok(json!({"type": "presence", "channel": channel, "users": users}))
    }
}

/// What became of a write of events.
enum Sent {
    Done,
    /// The socket failed or stayed blocked past the ping timeout.
    Failed,
    /// The queue overflowed while the write was blocked.
    Overflowed,
}

enum Wake {
    Shutdown,
    Expired,
    Message(Option<Result<Message, axum::Error>>),
    Item(Result<Option<Item>, crate::core::Overflow>),
    Ping,
}

fn error(id: Option<Value>, code: &str, message: &str) -> Value {
    let mut frame = json!({"type": "error", "code": code, "message": message});
    if let Some(id) = id {
        frame["id"] = id;
    }
    frame
}

/// The WebSocket frame of an event:
/// `{"type":"event","channel","event","data","time","id"}`.
pub fn encode_event(event: &Event, channel_index: usize) -> Bytes {
    let channel = event.channels.get(channel_index).or(event.channels.first());
    Bytes::from(event_json(
        event,
        channel,
        "{\"type\":\"event\",",
        "event",
        &[],
    ))
}
