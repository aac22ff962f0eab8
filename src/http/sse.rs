//! The Server-Sent Events transport: `GET /events`.
//!
//! A stream starts with a `connected` event once the subscription is live, replays
//! what a resuming client missed, then carries live events. Each event's frame is
//! encoded once and shared by every connection (see [`Event::frame`]); frames that
//! are ready together go out in one write. Idle streams get a comment line every
//! `sse.heartbeat`, and a stream ends with a `token_expired` event when its token
//! expires and with a `shutdown` event (and a `retry:` hint) when the hub stops.

use std::net::IpAddr;
use std::pin::Pin;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::time::{Instant, Sleep};

use super::{ApiError, ConnectionInfo, identify, query, redact_token};
use crate::broker::ResumeFrom;
use crate::core::{ChannelName, Denied, Event, FrameFormat, Item, Subscription};
use crate::hooks::Membership;
use crate::hub::{Admission, Hub};
use crate::stats::Rejection;

/// Frames ready at once are joined into writes of up to this many bytes.
const COALESCE_BYTES: usize = 64 * 1024;

/// What `GET /events` accepts in its query string.
#[derive(Debug, Default)]
struct EventsQuery {
    channels: Vec<String>,
    last_event_id: Option<String>,
    token: Option<String>,
    envelope: bool,
}

/// Reads the query of a stream request. It is bounded as it is read: past
/// `max_channels` parameters or channel names and [`query::SPARE_PARAMETERS`]
/// more, it is refused before any name is looked at.
fn parse_query(query: Option<&str>, max_channels: usize) -> Result<EventsQuery, ApiError> {
    let most = max_channels + query::SPARE_PARAMETERS;
    let mut q = EventsQuery::default();
    let mut envelope = None;
    for (read, pair) in query::pairs(query).enumerate() {
        if read == most {
            return Err(query::too_many_channels(max_channels));
        }
        let (key, value) = pair?;
        let mut push = |name: &str| {
            if q.channels.len() == most {
                return Err(query::too_many_channels(max_channels));
            }
            q.channels.push(name.to_owned());
            Ok(())
        };
        match &*key {
            "channel" => push(&value)?,
            "channels" => {
                for name in value.split(',').filter(|c| !c.is_empty()) {
                    push(name)?;
                }
            }
            "last_event_id" | "lastEventId" => {
                query::once(&mut q.last_event_id, "last_event_id", value)?;
            }
            "token" => query::once(&mut q.token, "token", value)?,
            "envelope" => query::once(&mut envelope, "envelope", value)?,
            _ => {}
        }
    }
    q.envelope = match envelope.as_deref() {
        None | Some("0" | "false") => false,
        Some("" | "1" | "true") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                format!("envelope must be true or false, not {other:?}"),
            )
            .for_parameter("envelope"));
        }
    };
    Ok(q)
}

/// A streaming connection that passed every check: who it is, its channels (its
/// user channel and the broadcast included), where it resumes, and its place within
/// the connection limits. Shared by the SSE and WebSocket transports.
pub(super) struct Opening {
    pub(super) identity: crate::auth::Identity,
    pub(super) channels: Vec<ChannelName>,
    pub(super) resume: Option<ResumeFrom>,
    pub(super) admission: Admission,
    pub(super) envelope: bool,
}

/// Checks a streaming request: credential, channel names and grants, limits.
pub(super) fn open(
    hub: &Hub,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
    info: Option<&ConnectionInfo>,
    require_channel: bool,
) -> Result<Opening, ApiError> {
    let limits = &hub.config().limits;
    let query = parse_query(uri.query(), limits.max_channels_per_connection)?;
    let identity = identify(hub, headers, query.token.as_deref())?;
    let mut channels = query::unique_channels(&query.channels, limits.max_channels_per_connection)?;
    if require_channel && channels.is_empty() && !identity.is_authenticated() {
        return Err(ApiError::bad_request(
            "no_channel",
            "name at least one channel: /events?channel=NAME",
        ));
    }
    let grants = identity.grants();
    for channel in &channels {
        hub.policies()
            .may_subscribe(&grants, channel)
            .map_err(denied)?;
    }
    if let Some(user) = &identity.user {
        let own = ChannelName::user(user)
            .map_err(|e| ApiError::bad_request("invalid_channel", e.to_string()))?;
        if !channels.contains(&own) {
            channels.push(own);
        }
    }
    channels.push(ChannelName::broadcast());

    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(query.last_event_id)
        .filter(|id| !id.is_empty());
    let resume = last_event_id.as_deref().map(ResumeFrom::parse);

    let ip: Option<IpAddr> = info.map(|i| i.peer.ip());
    let admission = hub.admit(ip).map_err(|why| match why {
        Rejection::MaxConnections => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            "the hub is at its connection limit; retry later",
        )
        .retry_after(5),
        Rejection::PerIp => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_connections_from_address",
            "too many open connections from this address",
        )
        .retry_after(5),
    })?;
    if hub.is_shutting_down() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the hub is shutting down; reconnect to another node",
        )
        .retry_after(1));
    }
    Ok(Opening {
        identity,
        channels,
        resume,
        admission,
        envelope: query.envelope,
    })
}

/// The HTTP error for a refused subscription.
pub(super) fn denied(denied: Denied) -> ApiError {
    let (Denied::NeedsCredential(channel)
    | Denied::NotGranted(channel)
    | Denied::OtherUser(channel)) = &denied;
    let channel = channel.clone();
    match denied {
        Denied::NeedsCredential(_) => {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", denied.to_string())
        }
        _ => ApiError::new(StatusCode::FORBIDDEN, "forbidden", denied.to_string()),
    }
    .for_channel(channel)
}

/// The HTTP error for a broker that cannot serve a subscription now.
pub(super) fn unavailable(e: crate::broker::BrokerError) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        e.to_string(),
    )
    .retry_after(1)
}

/// `GET /events`: subscribe to channels over SSE.
pub(super) async fn events(
    State(hub): State<Hub>,
    headers: HeaderMap,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let info = request.extensions().get::<ConnectionInfo>().cloned();
    let stream = SseStream::open(&hub, &headers, request.uri(), info).await?;
    let body = Body::from_stream(futures_util::stream::unfold(stream, |mut s| async move {
        let chunk = s.next_chunk().await?;
        Some((chunk, s))
    }));
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// The response head of an SSE stream served without the router (see
/// [`serve_direct`]): the same headers as [`events`] sends, chunked.
const DIRECT_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
cache-control: no-cache, no-transform\r\nx-accel-buffering: no\r\n\
transfer-encoding: chunked\r\n\r\n";

/// Serves `GET /events` straight on the TCP connection, without the HTTP
/// framework's per-connection buffers and task state: a streaming connection then
/// costs its subscription, its stream state and a few hundred bytes. `head` is the
/// parsed request. A refusal gets the usual error response, and the connection is
/// closed after it.
///
/// While a write is blocked the stream still watches for the connection's queue
/// overflowing and for `info.close`, so a reader that stopped is closed.
pub(crate) async fn serve_direct(
    hub: &Hub,
    headers: HeaderMap,
    uri: axum::http::Uri,
    info: ConnectionInfo,
    cors_headers: &HeaderMap,
    socket: &mut tokio::net::TcpStream,
) {
    let close = info.close.clone();
    let opened = SseStream::open(hub, &headers, &uri, Some(info)).await;
    drop((headers, uri));
    let mut stream = match opened {
        Ok(stream) => stream,
        Err(error) => {
            let _ = write_error(socket, error, cors_headers).await;
            return;
        }
    };
    let mut head = direct_head(cors_headers);
    let mut probe = [0u8; 64];
    loop {
        let chunk = tokio::select! {
            biased;
            _ = close.cancelled() => return,
            readable = socket.readable() => {
                // The client sends nothing after its request: data or EOF here is
                // the peer going away (or misbehaving).
                if readable.is_err() {
                    return;
                }
                match socket.try_read(&mut probe) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
                continue;
            }
            chunk = stream.next_chunk() => chunk,
        };
        let (chunk, last) = match chunk {
            Some(Ok(chunk)) => (chunk, false),
            // A slow consumer: close at once.
            Some(Err(SlowConsumer)) => return,
            None => (Bytes::new(), true),
        };
        // The chunk is the shared frame itself: it is written with its chunked
        // framing around it, not copied.
        let mut size = [0u8; 20];
        let size = chunk_size_line(&mut size, chunk.len());
        let mut parts = [
            std::io::IoSlice::new(&head),
            std::io::IoSlice::new(if last { b"" } else { size }),
            std::io::IoSlice::new(&chunk),
            std::io::IoSlice::new(if last { b"0\r\n\r\n" } else { b"\r\n" }),
        ];
        let written = tokio::select! {
            biased;
            _ = close.cancelled() => return,
            _ = stream.subscription.overflowed() => {
                stream.slow_consumer();
                return;
            }
            written = write_all_vectored(socket, &mut parts) => written,
        };
        if written.is_err() || last {
            return;
        }
        head = Bytes::new();
    }
}

/// The response head of a directly served stream: [`DIRECT_HEAD`] with the CORS
/// policy's `headers` (see [`Hub::cors_headers_without_origin`]).
fn direct_head(headers: &HeaderMap) -> Bytes {
    if headers.is_empty() {
        return Bytes::from_static(DIRECT_HEAD);
    }
    let mut out = BytesMut::with_capacity(DIRECT_HEAD.len() + 128);
    out.extend_from_slice(&DIRECT_HEAD[..DIRECT_HEAD.len() - 2]);
    put_headers(&mut out, headers);
    out.extend_from_slice(b"\r\n");
    out.freeze()
}

/// Writes `headers` as HTTP/1.1 header lines.
fn put_headers(out: &mut BytesMut, headers: &HeaderMap) {
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// The size line of a chunk of `len` bytes (`1a2\r\n`), written into `buf`.
fn chunk_size_line(buf: &mut [u8; 20], len: usize) -> &[u8] {
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cursor, "{len:x}\r\n");
    let end = cursor.position() as usize;
    &buf[..end]
}

/// Writes every byte of `parts` with vectored writes.
async fn write_all_vectored(
    socket: &mut tokio::net::TcpStream,
    mut parts: &mut [std::io::IoSlice<'_>],
) -> std::io::Result<()> {
    std::io::IoSlice::advance_slices(&mut parts, 0);
    while !parts.is_empty() {
        let n = socket.write_vectored(parts).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        std::io::IoSlice::advance_slices(&mut parts, n);
    }
    Ok(())
}

/// Writes an error response (status, headers and JSON body, as the router sends
/// it, with the CORS policy's `cors_headers`) and asks the client to close the
/// connection.
pub(crate) async fn write_error(
    socket: &mut tokio::net::TcpStream,
    error: ApiError,
    cors_headers: &HeaderMap,
) -> std::io::Result<()> {
    use axum::response::IntoResponse;
    use std::fmt::Write;
    let (parts, body) = error.into_response().into_parts();
    let body = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let mut out = BytesMut::with_capacity(256 + body.len());
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\n",
        parts.status.as_u16(),
        parts.status.canonical_reason().unwrap_or("")
    );
    put_headers(&mut out, &parts.headers);
    put_headers(&mut out, cors_headers);
    let _ = write!(
        out,
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    out.extend_from_slice(&body);
    socket.write_all(&out).await?;
    socket.shutdown().await
}

/// One connection's stream state.
struct SseStream {
    first: Option<Bytes>,
    format: FrameFormat,
    /// One timer for the heartbeat and the token's expiry: it fires at the earlier
    /// of the two, and is pushed back only when it fires, not on every write.
    timer: Pin<Box<Sleep>>,
    heartbeat_every: Duration,
    /// When the stream last sent something.
    last_write: Instant,
    expires: Option<Instant>,
    reconnect_within: Duration,
    close: Option<tokio_util::sync::CancellationToken>,
    hub: Hub,
    subscription: Subscription,
    _membership: Membership,
    _admission: Admission,
    done: bool,
}

/// What woke a waiting stream.
enum Wake {
    Shutdown,
    Expired,
    Item(Result<Option<Item>, crate::core::Overflow>),
    Heartbeat,
}

/// The stream ended abnormally; hyper closes the connection.
#[derive(Debug, thiserror::Error)]
#[error("the connection fell behind and was closed")]
struct SlowConsumer;

impl SseStream {
    /// Checks a streaming request and subscribes it: the stream starts with its
    /// `connected` event.
    async fn open(
        hub: &Hub,
        headers: &HeaderMap,
        uri: &axum::http::Uri,
        info: Option<ConnectionInfo>,
    ) -> Result<Self, ApiError> {
        let Opening {
            identity,
            channels,
            resume,
            admission,
            envelope,
        } = open(hub, headers, uri, info.as_ref(), true)?;
        let (subscription, start) = hub
            .subscribe_from(&admission, channels, resume)
            .await
            .map_err(unavailable)?;
        tracing::debug!(
            connection = admission.connection_id(),
            uri = %redact_token(uri),
            user = identity.user.as_deref().unwrap_or("-"),
            "stream opened"
        );
        let mut membership = Membership::new(
            hub,
            admission.connection_id(),
            identity.user.clone(),
            identity.info.clone(),
        );
        for channel in subscription.channels() {
            membership.join(channel);
        }

        let config = hub.config();
        let connected = serde_json::json!({
            "connection_id": admission.connection_id(),
            "user": identity.user,
            "channels": subscription.channels(),
            "heartbeat_ms": config.sse.heartbeat.as_millis() as u64,
            "last_event_id": start,
        });
        let first = encode_control(
            "connected",
            None,
            Some(config.sse.retry),
            &connected.to_string(),
        );
        let expires = identity
            .expires_in()
            .map(|left| Instant::now() + left + config.auth.leeway);
        let now = Instant::now();
        Ok(SseStream {
            first: Some(first),
            format: if envelope {
                FrameFormat::SseEnvelope
            } else {
                FrameFormat::SseRaw
            },
            timer: Box::pin(tokio::time::sleep_until(
                expires.map_or(now + config.sse.heartbeat, |at| {
                    at.min(now + config.sse.heartbeat)
                }),
            )),
            heartbeat_every: config.sse.heartbeat,
            last_write: now,
            expires,
            reconnect_within: config.shutdown.reconnect_within,
            close: info.map(|i| i.close),
            hub: hub.clone(),
            subscription,
            _membership: membership,
            _admission: admission,
            done: false,
        })
    }

    /// Notes that a chunk went out (for the heartbeat).
    fn wrote(&mut self) {
        self.last_write = Instant::now();
    }

    async fn next_chunk(&mut self) -> Option<Result<Bytes, SlowConsumer>> {
        if let Some(first) = self.first.take() {
            return Some(Ok(first));
        }
        if self.done {
            return None;
        }
        let wake = loop {
            let wake = {
                let hub = &self.hub;
                let subscription = &mut self.subscription;
                let timer = &mut self.timer;
                tokio::select! {
                    biased;
                    _ = hub.shutting_down() => Wake::Shutdown,
                    _ = timer.as_mut() => Wake::Heartbeat,
                    item = subscription.next() => Wake::Item(item),
                }
            };
            if let Wake::Heartbeat = wake {
                let now = Instant::now();
                if self.expires.is_some_and(|at| at <= now) {
                    break Wake::Expired;
                }
                let due = self.last_write + self.heartbeat_every;
                if due > now {
                    // Something was sent since the timer was set: no comment is
                    // due until a full period after that.
                    self.set_timer(due);
                    continue;
                }
            }
            break wake;
        };
        let item = match wake {
            Wake::Shutdown => {
                self.done = true;
                return Some(Ok(self.shutdown_frame()));
            }
            Wake::Expired => {
                self.done = true;
                return Some(Ok(encode_control(
                    "token_expired",
                    None,
                    None,
                    r#"{"reason":"the token has expired; reconnect with a fresh one"}"#,
                )));
            }
            Wake::Heartbeat => {
                self.wrote();
                self.reset_heartbeat();
                return Some(Ok(Bytes::from_static(b":\n\n")));
            }
            Wake::Item(item) => item,
        };
        let first = match item {
            Ok(Some(item)) => self.encode(&item),
            Ok(None) => return None,
            Err(_) => return self.slow_consumer(),
        };
        let mut batch: Option<BytesMut> = None;
        loop {
            let len = batch.as_ref().map_or(first.len(), BytesMut::len);
            if len >= COALESCE_BYTES {
                break;
            }
            match self.subscription.try_next() {
                Ok(Some(item)) => {
                    let frame = self.encode(&item);
                    batch
                        .get_or_insert_with(|| {
                            let mut b = BytesMut::with_capacity(first.len() * 4 + frame.len());
                            b.put_slice(&first);
                            b
                        })
                        .put_slice(&frame);
                }
                Ok(None) => break,
                Err(_) => return self.slow_consumer(),
            }
        }
        self.wrote();
        Some(Ok(batch.map_or(first, BytesMut::freeze)))
    }

    fn slow_consumer(&mut self) -> Option<Result<Bytes, SlowConsumer>> {
        self.done = true;
        tracing::debug!(
            connection = self.subscription.id(),
            "closing a slow consumer"
        );
        if let Some(close) = &self.close {
            close.cancel();
        }
        Some(Err(SlowConsumer))
    }

    fn reset_heartbeat(&mut self) {
        self.set_timer(Instant::now() + self.heartbeat_every);
    }

    /// Sets the timer to the next heartbeat at `at`, or the expiry if earlier.
    fn set_timer(&mut self, at: Instant) {
        let at = self.expires.map_or(at, |expires| expires.min(at));
        self.timer.as_mut().reset(at);
    }

    fn shutdown_frame(&self) -> Bytes {
        let floor = 500u64.min(self.reconnect_within.as_millis() as u64);
        let ceiling = (self.reconnect_within.as_millis() as u64).max(floor + 1);
        let retry = Duration::from_millis(rand::random_range(floor..ceiling));
        let data = format!(
            r#"{{"reason":"the hub is shutting down","retry_ms":{}}}"#,
            retry.as_millis()
        );
        encode_control("shutdown", None, Some(retry), &data)
    }

    fn encode(&self, item: &Item) -> Bytes {
        match item {
            Item::Event(event) => {
                let index = if event.channels.len() == 1 || self.format == FrameFormat::SseRaw {
                    0
                } else {
                    let mine = self.subscription.channels();
                    let matching = matching_channels(event, mine);
                    if matching.len() > 1 {
                        // Not cached: the list depends on this connection's channels.
                        return encode_envelope_to(event, &matching);
                    }
                    event.channel_index(|c| mine.contains(c))
                };
                event.frame(self.format, index, |e| encode_event(e, self.format, index))
            }
            Item::Reset(reset) => {
                let data = serde_json::json!({
                    "reason": reset.reason.as_str(),
                    "channels": reset.channels,
                });
                encode_control("reset", Some(&reset.id), None, &data.to_string())
            }
        }
    }
}

/// Writes `data` as `data:` lines, one per line of the text; `\r\n`, `\r` and `\n`
/// all end a line, as they do for an SSE parser.
fn put_data(out: &mut BytesMut, data: &str) {
    let mut rest = data;
    loop {
        out.put_slice(b"data: ");
        match rest.find(['\r', '\n']) {
            Some(i) => {
                out.put_slice(&rest.as_bytes()[..i]);
                out.put_u8(b'\n');
                let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = &rest[i + skip..];
            }
            None => {
                out.put_slice(rest.as_bytes());
                out.put_u8(b'\n');
                return;
            }
        }
    }
}

/// The `id:`, `event:` (unless the default type) and `retry:` lines of an event.
#[inline]
fn put_event_head(out: &mut BytesMut, event: &Event) {
    out.put_slice(b"id: ");
    out.put_slice(event.id.as_bytes());
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
    let mut out = BytesMut::with_capacity(event.data.len() + event.id.len() + 32);
    put_event_head(&mut out, event);
    match format {
        FrameFormat::SseEnvelope => {
            let channel = event.channels.get(channel_index).or(event.channels.first());
            let envelope = envelope_json(event, channel);
            put_data(&mut out, &envelope);
        }
        _ => put_data(&mut out, event.data.as_str()),
    }
    out.put_u8(b'\n');
    out.freeze()
}

/// The JSON envelope of an event: channel, type, data, time and id.
pub fn envelope_json(event: &Event, channel: Option<&ChannelName>) -> String {
    event_json(event, channel, "{", "type", &[])
}

/// The channels of an event that a connection subscribes to, in the event's order.
/// A connection gets an event once however many of its channels it was published
/// to; its envelope names them all so that a client can hand it to each.
pub(super) fn matching_channels<'a>(
    event: &'a Event,
    mine: &[ChannelName],
) -> Vec<&'a ChannelName> {
    event.channels.iter().filter(|c| mine.contains(c)).collect()
}

/// The SSE envelope frame of an event that reached a connection on several of its
/// channels: `channel` is the first, `channels` lists them all.
fn encode_envelope_to(event: &Event, matching: &[&ChannelName]) -> Bytes {
    let mut out = BytesMut::with_capacity(event.data.len() + event.id.len() + 160);
    put_event_head(&mut out, event);
    let envelope = event_json(event, matching.first().copied(), "{", "type", matching);
    put_data(&mut out, &envelope);
    out.put_u8(b'\n');
    out.freeze()
}

/// An event as a JSON object starting with `open` (which ends in `{` or a `,`),
/// with its type under `type_key`, and a `channels` list when `all` names more than
/// one channel.
pub(super) fn event_json(
    event: &Event,
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
    s.push_str(&serde_json::to_string(&event.id).unwrap_or_default());
    s.push('}');
    s
}

/// A frame the hub sends on its own behalf (`connected`, `reset`, `shutdown`, ...).
fn encode_control(name: &str, id: Option<&str>, retry: Option<Duration>, data: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 64);
    if let Some(retry) = retry {
        out.put_slice(format!("retry: {}\n", retry.as_millis()).as_bytes());
    }
    if let Some(id) = id {
        out.put_slice(b"id: ");
        out.put_slice(id.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_slice(b"event: ");
    out.put_slice(name.as_bytes());
    out.put_u8(b'\n');
    put_data(&mut out, data);
    out.put_u8(b'\n');
    out.freeze()
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

    #[test]
    fn query_accepts_repeated_and_comma_separated_channels() {
        let q = parse_query(
            Some("channel=a&channel=b&channels=c,d&last_event_id=x-1&envelope=1&token=t"),
            64,
        )
        .unwrap();
        assert_eq!(q.channels, vec!["a", "b", "c", "d"]);
        assert_eq!(q.last_event_id.as_deref(), Some("x-1"));
        assert!(q.envelope);
        assert_eq!(q.token.as_deref(), Some("t"));
        assert!(parse_query(Some("envelope=maybe"), 64).is_err());
    }

    #[test]
    fn query_parameters_taking_one_value_may_not_repeat() {
        for query in [
            "channel=a&last_event_id=1&last_event_id=2",
            "channel=a&last_event_id=1&lastEventId=2",
            "token=a&channel=a&token=b",
            "envelope=1&envelope=1",
        ] {
            assert!(parse_query(Some(query), 64).is_err(), "{query}");
        }
        let q = parse_query(Some("channel=a&channel=a&channels=a,b"), 64).unwrap();
        assert_eq!(q.channels, vec!["a", "a", "a", "b"]);
        assert!(parse_query(Some("channel=%FF"), 64).is_err());
    }

    #[test]
    fn queries_are_refused_past_the_channel_limit_and_a_little_more() {
        let most = 4 + query::SPARE_PARAMETERS;
        let names = |n: usize| (0..n).map(|i| format!("c{i}")).collect::<Vec<_>>();
        let query = format!("channels={}", names(most).join(","));
        assert_eq!(parse_query(Some(&query), 4).unwrap().channels.len(), most);
        let query = format!("channels={}", names(most + 1).join(","));
        assert!(parse_query(Some(&query), 4).is_err());
        let query = "x=1&".repeat(most + 1);
        assert!(parse_query(Some(&query), 4).is_err());
        let query = "channel=a&".repeat(100_000);
        let error = parse_query(Some(&query), 4).unwrap_err();
        assert!(error.message().contains("at most 4 channels"), "{error:?}");
    }
}
