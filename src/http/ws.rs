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
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{ApiError, ConnectionInfo, Services, stream};
use crate::core::{Event, FrameFormat, Item, Payload};
use crate::protocol::{
    End, HubMessage, ResetNotice, event_json, event_json_with_id, matching_channels,
};
use crate::session::{Added, ClientPublish, Heartbeat, Refusal, Session, SessionOptions, Step};

pub use crate::protocol::{
    CLOSE_PING_TIMEOUT, CLOSE_RESTART, CLOSE_SLOW_CONSUMER, CLOSE_TOKEN_EXPIRED, CLOSE_TOO_BIG,
};
use crate::settings::ConfigError;

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
    State(app): State<Services>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    info: Option<axum::Extension<ConnectionInfo>>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = super::ws_handshake::accept(&headers, upgrade)?;
    let info = info.map(|axum::Extension(i)| i);
    let config = app.settings.clone();
    // Subscribed (and replayed) before the upgrade, as SSE does, so a broker that
    // cannot serve it is an HTTP error rather than a socket that closes at once.
    let session = open_session(&app, &uri, &headers, info.as_ref()).await?;
    let max = config.ws.max_frame_bytes;
    Ok(upgrade
        .read_buffer_size(READ_BUFFER)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| async move {
            let close = info.map(|i| i.close);
            let connection = Connection {
                socket,
                session,
                ping_timeout: config.ws.ping_timeout,
                last_heard: Instant::now(),
            };
            connection.run(close).await;
        })
        .into_response())
}

/// The session of a WebSocket request: its query and headers read as for any
/// stream, admitted and started.
pub(super) async fn open_session(
    app: &Services,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    info: Option<&ConnectionInfo>,
) -> Result<Session, ApiError> {
    let config = &app.settings;
    let (request, _) = stream::read(
        uri,
        headers,
        &app.cookie,
        info,
        false,
        config.limits.max_channels_per_connection,
    )?;
    let options = SessionOptions {
        heartbeat: Heartbeat::Every(config.ws.ping_interval),
        presence: true,
    };
    Ok(app.sessions.admit(request)?.start(options).await?)
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

/// One WebSocket connection: its session, encoded as JSON frames.
struct Connection {
    socket: WebSocket,
    session: Session,
    ping_timeout: Duration,
    last_heard: Instant,
}

impl Connection {
    async fn run(mut self, close: Option<tokio_util::sync::CancellationToken>) {
        let end = self.serve().await;
        // The connection is over for its channels now, whatever the close handshake
        // below takes.
        self.session.close();
        if end == End::ClosedByClient {
            // The library has queued its answer (the client's code, or 1002 for a
            // code a client may not send): write it.
            let _ = tokio::time::timeout(CLOSE_WAIT, self.socket.close()).await;
        }
        if let Some((code, reason)) = end.close_code() {
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
        let connected = HubMessage::Connected(self.session.connected());
        if !self.send_text(connected.tagged_json()).await {
            return End::Gone;
        }
        loop {
            let wake = tokio::select! {
                biased;
                step = self.session.next() => Wake::Step(step),
                message = self.socket.recv() => Wake::Message(message),
            };
            match wake {
                Wake::Step(Step::End(end)) => {
                    if let Some(notice) = end.notice() {
                        let _ = self.send_text(notice.tagged_json()).await;
                    }
                    return end;
                }
                Wake::Step(Step::Heartbeat) => {
                    if self.last_heard.elapsed() > self.ping_timeout {
                        return End::PingTimeout;
                    }
                    if !self.send(Message::Ping(Bytes::new())).await {
                        return End::Gone;
                    }
                }
                Wake::Step(Step::Item(item)) => match self.send_items(item).await {
                    Sent::Done => {}
                    Sent::Failed => return End::Gone,
                    Sent::Ended(end) => return end,
                },
                Wake::Message(None) => return End::Gone,
                Wake::Message(Some(Err(e))) => {
                    // A frame the protocol forbids is answered with its close code.
                    return match super::ws_close::close_for(&e) {
                        Some((code, reason)) => End::Refused { code, reason },
                        None => End::Gone,
                    };
                }
                Wake::Message(Some(Ok(message))) => {
                    self.last_heard = Instant::now();
                    match message {
                        Message::Text(text) => {
                            let reply = handle(&mut self.session, text.as_str()).await;
                            if !self.send_text(reply.to_string()).await {
                                return End::Gone;
                            }
                        }
                        Message::Binary(_) => {
                            let reply =
                                error(None, "binary_not_supported", "frames must be JSON text");
                            if !self.send_text(reply.to_string()).await {
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
        let mut frames = vec![self.encode(&first, self.session.cursor_id().as_deref())];
        let mut ended = None;
        while frames.len() < 64 {
            match self.session.try_next() {
                Ok(Some(item)) => {
                    frames.push(self.encode(&item, self.session.cursor_id().as_deref()));
                }
                Ok(None) => break,
                Err(end) => {
                    ended = Some(end);
                    break;
                }
            }
        }
        let timeout = self.ping_timeout;
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
            sent = tokio::time::timeout(timeout, send) => match (sent, ended) {
                (Ok(Ok(())), None) => Sent::Done,
                (Ok(Ok(())), Some(end)) => Sent::Ended(end),
                _ => Sent::Failed,
            },
            _ = self.session.overflowed() => Sent::Ended(End::SlowConsumer),
        }
    }

    /// The frame of `item`; `cursor` is the connection's own id for it, with
    /// several partitions.
    fn encode(&self, item: &Item, cursor: Option<&str>) -> Bytes {
        const OPEN: &str = "{\"type\":\"event\",";
        match item {
            Item::Event(event) => {
                if cursor.is_none() && event.channels.len() == 1 && event.split.is_none() {
                    // One channel and the event's own id: the frame every connection shares.
                    return event.frame(FrameFormat::Json, 0, |e| encode_event(e, 0));
                }
                let mine = self.session.channels();
                let matching = matching_channels(event, mine);
                let channel = matching.first().copied().or(event.channels.first());
                let id = cursor.unwrap_or(&event.id);
                if matching.len() > 1 {
                    // Not cached: the list depends on this connection's channels.
                    return Bytes::from(event_json_with_id(
                        event, id, channel, OPEN, "event", &matching,
                    ));
                }
                if cursor.is_some() {
                    // Not cached: the id is this connection's.
                    return Bytes::from(event_json_with_id(event, id, channel, OPEN, "event", &[]));
                }
                let index = event.channel_index(|c| mine.contains(c));
                event.frame(FrameFormat::Json, index, |e| encode_event(e, index))
            }
            Item::Reset(reset) => {
                let mut notice = ResetNotice::of(reset);
                if let Some(id) = cursor {
                    notice.id = Some(id.to_owned());
                }
                Bytes::from(HubMessage::Reset(notice).tagged_json())
            }
        }
    }

    async fn send_text(&mut self, text: String) -> bool {
        self.send(Message::Text(Utf8Bytes::from(text))).await
    }

    async fn send(&mut self, message: Message) -> bool {
        matches!(
            tokio::time::timeout(self.ping_timeout, self.socket.send(message)).await,
            Ok(Ok(()))
        )
    }
}

/// Answers one client frame of `session`'s connection.
pub(super) async fn handle(session: &mut Session, text: &str) -> Value {
    let frame: ClientFrame = match serde_json::from_str(text) {
        Ok(frame) => frame,
        Err(e) => {
            let id = serde_json::from_str::<Value>(text)
                .ok()
                .and_then(|v| v.get("id").cloned());
            return error(id, "invalid_frame", &format!("not a valid frame: {e}"));
        }
    };
    let id = frame.id.clone();
    let result = match frame.op.as_str() {
        "subscribe" => subscribe(session, frame).await,
        "unsubscribe" => unsubscribe(session, frame),
        "publish" => publish(session, frame).await,
        "presence" => presence(session, frame),
        "ping" => Ok(json!({"type": "pong"})),
        other => Err((
            "unknown_op",
            format!("unknown op {other:?}: use subscribe, unsubscribe, publish, presence or ping"),
        )),
    };
    match result {
        Ok(mut reply) => {
            if let Some(id) = id {
                reply["id"] = id;
            }
            reply
        }
        Err((code, message)) => error(id, code, &message),
    }
}

fn channel_of(frame: &ClientFrame) -> Result<&str, (&'static str, String)> {
    frame
        .channel
        .as_deref()
        .ok_or(("missing_channel", "the frame names no `channel`".to_owned()))
}

async fn subscribe(
    session: &mut Session,
    frame: ClientFrame,
) -> Result<Value, (&'static str, String)> {
    let name = channel_of(&frame)?;
    let added = session
        .subscribe(name, frame.last_event_id.as_deref())
        .await
        .map_err(refused)?;
    let mut ack = json!({"type": "ack", "op": "subscribe", "channel": name});
    if added == Added::Already {
        ack["already"] = true.into();
    }
    Ok(ack)
}

fn unsubscribe(session: &mut Session, frame: ClientFrame) -> Result<Value, (&'static str, String)> {
    let name = channel_of(&frame)?;
    session.unsubscribe(name).map_err(refused)?;
    Ok(json!({"type": "ack", "op": "unsubscribe", "channel": name}))
}

async fn publish(
    session: &mut Session,
    frame: ClientFrame,
) -> Result<Value, (&'static str, String)> {
    let channels: Vec<String> = match (frame.channel, frame.channels) {
        (Some(one), None) => vec![one],
        (None, Some(many)) if !many.is_empty() => many,
        _ => return Err(refused(Refusal::NoTarget)),
    };
    let data = match frame.data.unwrap_or(Value::Null) {
        Value::String(text) => Payload::text(text),
        other => Payload::json(&other).map_err(|e| ("invalid_data", e.to_string()))?,
    };
    let event = ClientPublish {
        channels,
        kind: frame.kind,
        data,
    };
    let accepted = session.publish(event).await.map_err(refused)?;
    Ok(json!({"type": "ack", "op": "publish", "event_id": accepted.id}))
}

fn presence(session: &Session, frame: ClientFrame) -> Result<Value, (&'static str, String)> {
    let name = channel_of(&frame)?;
    let (channel, users) = session.presence(name).map_err(refused)?;
    Ok(json!({"type": "presence", "channel": channel, "users": users}))
}

/// A refusal as the code and message of an error frame.
fn refused(refusal: Refusal) -> (&'static str, String) {
    (refusal.code(), refusal.to_string())
}

/// What became of a write of events.
enum Sent {
    Done,
    /// The socket failed or stayed blocked past the ping timeout.
    Failed,
    /// The session ended while the events were taken (the queue overflowed).
    Ended(End),
}

enum Wake {
    Step(Step),
    Message(Option<Result<Message, axum::Error>>),
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

/// The WebSocket transport.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WsConfig {
    /// How often the hub pings each client.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// A client that sends nothing (not even a pong) for this long is dead and closed.
    #[serde(with = "humantime_serde")]
    pub ping_timeout: Duration,
    /// The largest frame a client may send, in bytes.
    pub max_frame_bytes: usize,
    /// Events a client may publish per second, on average.
    pub client_publish_rate: f64,
    /// Events a client may publish in a burst above the rate.
    pub client_publish_burst: u32,
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(60),
            max_frame_bytes: 64 * 1024,
            client_publish_rate: 10.0,
            client_publish_burst: 20,
        }
    }
}

impl WsConfig {
    /// Checks the section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.ping_interval.is_zero() || self.ping_timeout <= self.ping_interval {
            return Err(ConfigError::new(
                "ws.ping_timeout",
                "must be longer than ws.ping_interval (and the interval longer than 0s)",
            ));
        }
        if self.client_publish_rate.is_nan() || self.client_publish_rate <= 0.0 {
            return Err(ConfigError::new(
                "ws.client_publish_rate",
                "must be greater than 0",
            ));
        }
        if self.max_frame_bytes < 256 {
            return Err(ConfigError::new(
                "ws.max_frame_bytes",
                "must be at least 256",
            ));
        }
        Ok(())
    }
}
#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use axum::http::{HeaderValue, Uri};
    use proptest::prelude::*;

    use super::*;
    use crate::auth::Claims;
    use crate::core::ChannelPattern;
    use crate::fuzzing::json_value;
    use crate::node::Node;

    /// A node whose clients may publish and see presence, and a token granting
    /// every channel; with the runtime the node lives in.
    fn node() -> &'static (tokio::runtime::Runtime, Node, String) {
        static NODE: OnceLock<(tokio::runtime::Runtime, Node, String)> = OnceLock::new();
        NODE.get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let mut config = crate::Config::default();
            config.auth.jwt_secret = Some("websocket-frames-secret-0123456789".into());
            config.store.path = ":memory:".into();
            config.channels.client_publish = true;
            config.channels.presence = true;
            let node = runtime.block_on(async { Node::new(config).unwrap() });
            let mut claims = Claims::new(Some("ana".into()), Duration::from_secs(3600));
            let all = vec![ChannelPattern::parse("*").unwrap()];
            claims.herald.subscribe = all.clone();
            claims.herald.publish = all;
            let token = node.authenticator().mint(&claims).unwrap();
            (runtime, node, token)
        })
    }

    /// A frame: an object with a known op or not, each field of its own type or of
    /// any type, or any text at all.
    fn frame() -> impl Strategy<Value = String> {
        let op = prop_oneof![
            Just(json!("subscribe")),
            Just(json!("unsubscribe")),
            Just(json!("publish")),
            Just(json!("presence")),
            Just(json!("ping")),
            json_value(),
        ];
        let name = prop_oneof![
            "[a-z]{1,5}(:[0-9])?",
            "user:[a-z]{1,3}",
            "\\$[a-z]{1,8}",
            ".{0,4}"
        ];
        let any_or = |own: BoxedStrategy<Value>| {
            proptest::option::of(prop_oneof![3 => own, 1 => json_value()])
        };
        let object = (
            op,
            any_or(json_value().boxed()),
            any_or(name.clone().prop_map(Value::from).boxed()),
            any_or(
                proptest::collection::vec(name, 0..4)
                    .prop_map(Value::from)
                    .boxed(),
            ),
            any_or(".{0,12}".prop_map(Value::from).boxed()),
            any_or("[a-z.]{0,8}".prop_map(Value::from).boxed()),
            any_or(json_value().boxed()),
        )
            .prop_map(|(op, id, channel, channels, last_event_id, kind, data)| {
                let mut frame = serde_json::Map::new();
                frame.insert("op".into(), op);
                for (key, value) in [
                    ("id", id),
                    ("channel", channel),
                    ("channels", channels),
                    ("last_event_id", last_event_id),
                    ("type", kind),
                    ("data", data),
                ] {
                    if let Some(value) = value {
                        frame.insert(key.into(), value);
                    }
                }
                Value::Object(frame).to_string()
            });
        prop_oneof![4 => object, 1 => json_value().prop_map(|v| v.to_string()), 1 => ".{0,40}"]
    }

    proptest! {
        #![proptest_config(crate::fuzzing::cases(128))]

        /// Every text frame gets one JSON reply of a known type; an error carries
        /// a code and a message; a frame's `id`, whatever it is, comes back with it.
        #[test]
        fn every_text_frame_gets_a_reply_of_a_known_type(
            frames in proptest::collection::vec(frame(), 1..6),
        ) {
            let (runtime, node, token) = node();
            let uri = Uri::from_static("/ws?channel=orders");
            let mut headers = HeaderMap::new();
            headers.insert("authorization", HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
            runtime.block_on(async {
                let mut session = open_session(node.services(), &uri, &headers, None).await.unwrap();
                for text in &frames {
                    let reply = handle(&mut session, text).await;
                    let kind = reply["type"].as_str().unwrap_or_default();
                    prop_assert!(matches!(kind, "ack" | "error" | "pong" | "presence"), "{}", reply);
                    if kind == "error" {
                        prop_assert!(reply["code"].is_string() && reply["message"].is_string());
                    }
                    if let Some(id) = serde_json::from_str::<Value>(text).ok().as_ref().and_then(|v| v.get("id")) {
                        prop_assert_eq!(&reply["id"], id);
                    }
                    while let Ok(Some(_)) = session.try_next() {}
                }
                session.close();
                Ok(())
            })?;
        }
    }
}
