//! The Server-Sent Events transport: `GET /events`, an encoder over the
//! [`Session`].
//!
//! A stream starts with a `connected` event once the subscription is live, replays
//! what a resuming client missed, then carries live events. Each event's frame is
//! encoded once and shared by every connection (see [`Event::frame`]); frames that
//! are ready together go out in one write. Idle streams get a comment line every
//! `sse.heartbeat`, and a stream ends with a `token_expired` event when its token
//! expires and with a `shutdown` event (and a `retry:` hint) when the hub stops.
//!
//! A stream is served two ways: straight on the socket by the server (a
//! plain request, the lean path), or as a response body through the router (a
//! request the CORS policy applies to, or a router embedded in an application).
//! Both send [`RESPONSE_HEADERS`], and both close a reader that stopped reading
//! while a write to it is blocked ([`close_when_stalled`]).

use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{ApiError, ConnectionInfo, Services, redact_token, stream};
use crate::core::{ChannelName, Event, FrameFormat, Item, OverflowSignal};
use crate::protocol::{End, HubMessage, ResetNotice, event_json_with_id, matching_channels};
use crate::session::{Heartbeat, Session, SessionOptions, Step};
use crate::settings::ConfigError;
use serde::{Deserialize, Serialize};

/// Frames ready at once are joined into writes of up to this many bytes.
const COALESCE_BYTES: usize = 64 * 1024;

/// The headers of every SSE response, on both paths.
pub(crate) const RESPONSE_HEADERS: [(&str, &str); 3] = [
    ("content-type", "text/event-stream"),
    ("cache-control", "no-cache, no-transform"),
    ("x-accel-buffering", "no"),
];

/// `GET /events`: subscribe to channels over SSE, through the router.
pub(super) async fn events(
    State(app): State<Services>,
    headers: HeaderMap,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let info = request.extensions().get::<ConnectionInfo>().cloned();
    let stream = SseStream::open(&app, &headers, request.uri(), info.as_ref()).await?;
    // Hyper stops polling the body while a write is blocked: the stalled-reader
    // guard runs beside it, for as long as the stream lives.
    if let Some(info) = info {
        let signal = stream.overflow_signal();
        let ended = stream.ended.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = close_when_stalled(signal, info.close) => {}
                _ = ended.cancelled() => {}
            }
        });
    }
    let body = Body::from_stream(futures_util::stream::unfold(stream, |mut s| async move {
        let chunk = s.next_chunk().await?;
        Some((chunk, s))
    }));
    let mut response = Response::new(body);
    for (name, value) in RESPONSE_HEADERS {
        response.headers_mut().insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    Ok(response)
}

/// The stalled-reader guard: once the stream's queue overflows (its reader stopped
/// reading, so a write is stuck and the stream cannot notice by itself), closes the
/// connection at once.
pub(crate) async fn close_when_stalled(signal: OverflowSignal, close: CancellationToken) {
    signal.overflowed().await;
    close.cancel();
}

/// The stream ended abnormally; the connection is closed.
#[derive(Debug, thiserror::Error)]
#[error("the connection fell behind and was closed")]
pub(crate) struct SlowConsumer;

/// One connection's stream: its session, encoded as SSE.
pub(crate) struct SseStream {
    session: Session,
    first: Option<Bytes>,
    format: FrameFormat,
    close: Option<CancellationToken>,
    done: bool,
    /// Cancelled when the stream is dropped, for the tasks that watch it.
    ended: CancellationToken,
    _ended: DropGuard,
}

impl SseStream {
    /// Checks a streaming request and subscribes it: the stream starts with its
    /// `connected` event.
    pub(crate) async fn open(
        app: &Services,
        headers: &HeaderMap,
        uri: &axum::http::Uri,
        info: Option<&ConnectionInfo>,
    ) -> Result<Self, ApiError> {
        let config = &app.settings;
        let (request, envelope) = stream::read(
            uri,
            headers,
            &app.cookie,
            info,
            true,
            config.limits.max_channels_per_connection,
        )?;
        let options = SessionOptions {
            heartbeat: Heartbeat::WhenIdle(config.sse.heartbeat),
            presence: true,
        };
        let session = app.sessions.admit(request)?.start(options).await?;
        tracing::debug!(
            connection = session.connection_id(),
            client = ?info.map(|i| i.peer.ip()),
            uri = %redact_token(uri),
            user = session.identity().user.as_deref().unwrap_or("-"),
            "stream opened"
        );
        let mut connected = session.connected();
        connected.heartbeat_ms = Some(config.sse.heartbeat.as_millis() as u64);
        // The starting position is also the event's id, so that an EventSource
        // whose stream drops before its first event resumes from where it started
        // (its `Last-Event-ID`) rather than from whenever it reconnects.
        let first = encode_message(
            &HubMessage::Connected(connected),
            session.start_position().filter(|id| !id.is_empty()),
            Some(config.sse.retry),
        );
        let ended = CancellationToken::new();
        Ok(SseStream {
            session,
            first: Some(first),
            format: if envelope {
                FrameFormat::SseEnvelope
            } else {
                FrameFormat::SseRaw
            },
            close: info.map(|i| i.close.clone()),
            done: false,
            _ended: ended.clone().drop_guard(),
            ended,
        })
    }

    /// [`Session::overflow_signal`].
    pub(crate) fn overflow_signal(&self) -> OverflowSignal {
        self.session.overflow_signal()
    }

    /// The next chunk to write; `None` once the stream is over.
    pub(crate) async fn next_chunk(&mut self) -> Option<Result<Bytes, SlowConsumer>> {
        if let Some(first) = self.first.take() {
            return Some(Ok(first));
        }
        if self.done {
            return None;
        }
        let first = match self.session.next().await {
            Step::Heartbeat => return Some(Ok(Bytes::from_static(b":\n\n"))),
            Step::End(end) => return self.end(end),
            Step::Item(item) => self.encode(&item, self.session.cursor_id().as_deref()),
        };
        let mut batch: Option<BytesMut> = None;
        loop {
            let len = batch.as_ref().map_or(first.len(), BytesMut::len);
            if len >= COALESCE_BYTES {
                break;
            }
            match self.session.try_next() {
                Ok(Some(item)) => {
                    let frame = self.encode(&item, self.session.cursor_id().as_deref());
                    batch
                        .get_or_insert_with(|| {
                            let mut b = BytesMut::with_capacity(first.len() * 4 + frame.len());
                            b.put_slice(&first);
                            b
                        })
                        .put_slice(&frame);
                }
                Ok(None) => break,
                Err(end) => return self.end(end),
            }
        }
        Some(Ok(batch.map_or(first, BytesMut::freeze)))
    }

    /// The stream is over: says why where there is a message for it; a slow
    /// consumer is closed at once.
    fn end(&mut self, end: End) -> Option<Result<Bytes, SlowConsumer>> {
        self.done = true;
        if let Some(notice) = end.notice() {
            let retry = match end {
                End::Shutdown { retry } => Some(retry),
                _ => None,
            };
            return Some(Ok(encode_message(&notice, None, retry)));
        }
        if end == End::SlowConsumer {
            if let Some(close) = &self.close {
                close.cancel();
            }
            return Some(Err(SlowConsumer));
        }
        None
    }

    /// Marks the stream as a slow consumer found while its write was blocked.
    pub(crate) fn stalled(&mut self) {
        let _ = self.end(End::SlowConsumer);
    }

    /// The frame of `item`; `cursor` is the connection's own id for it, with
    /// several partitions.
    fn encode(&self, item: &Item, cursor: Option<&str>) -> Bytes {
        match item {
            Item::Event(event) => {
                let one = event.channels.len() == 1 && event.split.is_none();
                let index = if one || self.format == FrameFormat::SseRaw {
                    0
                } else {
                    let mine = self.session.channels();
                    let matching = matching_channels(event, mine);
                    if matching.len() > 1 {
                        // Not cached: the list depends on this connection's channels.
                        let id = cursor.unwrap_or(&event.id);
                        return encode_envelope_to(event, id, &matching);
                    }
                    event.channel_index(|c| mine.contains(c))
                };
                match cursor {
                    // Not cached: the id is this connection's.
                    Some(id) => encode_event_with_id(event, id, self.format, index),
                    None => {
                        event.frame(self.format, index, |e| encode_event(e, self.format, index))
                    }
                }
            }
            Item::Reset(reset) => {
                // The position goes in the `id:` line.
                let notice = ResetNotice {
                    id: None,
                    ..ResetNotice::of(reset)
                };
                let id = cursor.unwrap_or(&reset.id);
                encode_message(&HubMessage::Reset(notice), Some(id), None)
            }
        }
    }
}

/// Writes `data` as `data:` lines, one per line of the text; `\r\n`, `\r` and `\n`
/// all end a line, as they do for an SSE parser.
fn put_data(out: &mut BytesMut, data: &str) {
    let mut rest = data.as_bytes();
    loop {
        out.put_slice(b"data: ");
        match memchr::memchr2(b'\r', b'\n', rest) {
            Some(i) => {
                out.put_slice(&rest[..i]);
                out.put_u8(b'\n');
                let skip = if rest[i..].starts_with(b"\r\n") { 2 } else { 1 };
                rest = &rest[i + skip..];
            }
            None => {
                out.put_slice(rest);
                out.put_u8(b'\n');
                return;
            }
        }
    }
}

/// The `id:`, `event:` (unless the default type) and `retry:` lines of an event.
#[inline]
fn put_event_head(out: &mut BytesMut, event: &Event, id: &str) {
    out.put_slice(b"id: ");
    out.put_slice(id.as_bytes());
    out.put_u8(b'\n');
    if event.kind != crate::core::event::DEFAULT_TYPE {
        out.put_slice(b"event: ");
        out.put_slice(event.kind.as_bytes());
        out.put_u8(b'\n');
    }
    if let Some(retry) = event.retry {
        out.put_slice(format!("retry: {retry}\n").as_bytes());
    }
}

/// The SSE frame of an event.
pub fn encode_event(event: &Event, format: FrameFormat, channel_index: usize) -> Bytes {
    encode_event_with_id(event, &event.id, format, channel_index)
}

/// [`encode_event`] with `id` in place of the event's own.
fn encode_event_with_id(
    event: &Event,
    id: &str,
    format: FrameFormat,
    channel_index: usize,
) -> Bytes {
    let mut out = BytesMut::with_capacity(event.data.len() + id.len() + 32);
    put_event_head(&mut out, event, id);
    match format {
        FrameFormat::SseEnvelope => {
            let channel = event.channels.get(channel_index).or(event.channels.first());
            let envelope = event_json_with_id(event, id, channel, "{", "type", &[]);
            put_data(&mut out, &envelope);
        }
        _ => put_data(&mut out, event.data.as_str()),
    }
    out.put_u8(b'\n');
    out.freeze()
}

/// The SSE envelope frame of an event that reached a connection on several of its
/// channels: `channel` is the first, `channels` lists them all.
fn encode_envelope_to(event: &Event, id: &str, matching: &[&ChannelName]) -> Bytes {
    let mut out = BytesMut::with_capacity(event.data.len() + id.len() + 160);
    put_event_head(&mut out, event, id);
    let channel = matching.first().copied();
    let envelope = event_json_with_id(event, id, channel, "{", "type", matching);
    put_data(&mut out, &envelope);
    out.put_u8(b'\n');
    out.freeze()
}

/// A frame of the hub's own message (`connected`, `reset`, `shutdown`, ...).
fn encode_message(message: &HubMessage, id: Option<&str>, retry: Option<Duration>) -> Bytes {
    let name = message.name();
    let data = message.fields_json();
    let mut out = BytesMut::with_capacity(data.len() + 64);
    if let Some(retry) = retry {
        use std::fmt::Write;
        let _ = writeln!(out, "retry: {}", retry.as_millis());
    }
    if let Some(id) = id {
        out.put_slice(b"id: ");
        out.put_slice(id.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_slice(b"event: ");
    out.put_slice(name.as_bytes());
    out.put_u8(b'\n');
    put_data(&mut out, &data);
    out.put_u8(b'\n');
    out.freeze()
}

/// Server-Sent Events settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SseConfig {
    /// How often an idle stream gets a heartbeat comment.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// The reconnection delay suggested to clients (`retry:`).
    #[serde(with = "humantime_serde")]
    pub retry: Duration,
}

impl Default for SseConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(30),
            retry: Duration::from_secs(3),
        }
    }
}

impl SseConfig {
    /// Checks the section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.heartbeat.is_zero() {
            return Err(ConfigError::new("sse.heartbeat", "must be longer than 0s"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{NewEvent, Payload};
    use std::time::SystemTime;

    fn event(new: NewEvent) -> Event {
        Event::accept(new, 7, "e-7".into(), SystemTime::UNIX_EPOCH)
    }

    fn text(frame: &Bytes) -> &str {
        std::str::from_utf8(frame).unwrap()
    }

    #[test]
    fn multi_line_text_becomes_one_data_line_per_line() {
        let ch = ChannelName::new("a").unwrap();
        let e = event(NewEvent::text(ch, "one\n\ntwo\r\nthree\rfour\n"));
        let frame = encode_event(&e, FrameFormat::SseRaw, 0);
        assert_eq!(
            text(&frame),
            "id: e-7\ndata: one\ndata: \ndata: two\ndata: three\ndata: four\ndata: \n\n"
        );
    }

    #[test]
    fn types_and_retry_are_framed_and_message_is_implicit() {
        let ch = ChannelName::new("a").unwrap();
        let mut new = NewEvent::new(
            ch.clone(),
            Payload::json(&serde_json::json!({"a": 1})).unwrap(),
        )
        .with_type("task.done");
        new.retry = Some(1500);
        let frame = encode_event(&event(new), FrameFormat::SseRaw, 0);
        assert_eq!(
            text(&frame),
            "id: e-7\nevent: task.done\nretry: 1500\ndata: {\"a\":1}\n\n"
        );
        let empty = encode_event(&event(NewEvent::text(ch, "")), FrameFormat::SseRaw, 0);
        assert_eq!(text(&empty), "id: e-7\ndata: \n\n");
    }

    #[test]
    fn envelopes_name_the_channel_and_escape_text() {
        let new = NewEvent::text(ChannelName::new("a").unwrap(), "x\ny")
            .also_to(ChannelName::new("b").unwrap());
        let e = event(new);
        let frame = encode_event(&e, FrameFormat::SseEnvelope, 1);
        assert_eq!(
            text(&frame),
            "id: e-7\ndata: {\"channel\":\"b\",\"type\":\"message\",\"data\":\"x\\ny\",\"time\":\"1970-01-01T00:00:00.000Z\",\"id\":\"e-7\"}\n\n"
        );
    }
}
