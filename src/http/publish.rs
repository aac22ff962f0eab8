//! `POST /publish`: one event or a batch, from a server holding a publisher JWT or
//! an API key, sent in the `Authorization` header with a body sent as JSON. The
//! auth cookie is not read here: a browser sends it from any page, and a form on
//! another site could then publish as the user.
//!
//! ```json
//! {"channel": "orders", "type": "order.created", "data": {"id": 17}}
//! {"channels": ["team:1", "team:2"], "data": "plain text"}
//! {"broadcast": true, "type": "announcement", "data": {"text": "maintenance at 18:00"}}
//! [{"channel": "a", "data": 1}, {"channel": "b", "data": 2, "id": "b-2"}]
//! ```
//!
//! A JSON string in `data` is sent as text; any other JSON value as compact JSON.
//!
//! Everything a request makes the hub do is bounded before it is done, and what a
//! credential may not do is refused before the rest of the request is looked at:
//! the body is read up to `limits.max_body_bytes` and checked as UTF-8 and JSON in
//! one pass that keeps each field as raw text; a batch is cut at
//! `limits.max_batch` + 1 events; the channels of an event are counted (stopping
//! after `limits.max_channels_per_event` + 1) before any name is read, then each
//! name is checked and its grant looked up as it is read, the first refused one
//! answering 403, and repeats are dropped with a set. Each field is then read on
//! its own, so an error names it.
//!
//! Then, before anything is published, the events are charged to the publisher's
//! rate limits (`limits.publish_rate`, `namespaces.NAME.publish_rate`): each event
//! takes a token from the bucket of each namespace its channels are in, and a
//! request is let through whole or answered 429 with `Retry-After`.

use std::cell::Cell;
use std::collections::HashSet;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::{DeserializeSeed, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::{ApiError, Services, identify_publisher, require_json};
use crate::auth::{Credential, Identity};
use crate::core::{ChannelError, ChannelName, EventError, NewEvent, Payload};
use crate::hub::PublishError;
use crate::limits::{Rate, RateLimited};

/// One event as sent, each field still raw JSON text borrowed from the body, so that
/// each is read (and its error reported) on its own, and nothing is allocated per
/// channel before the channels are counted.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an event: a JSON object")]
struct RawEvent<'a> {
    #[serde(borrow, default)]
    channel: Option<&'a RawValue>,
    #[serde(borrow, default)]
    channels: Option<&'a RawValue>,
    #[serde(borrow, default)]
    broadcast: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "type")]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    retry: Option<&'a RawValue>,
}

/// Keeps an explicit `null` as data, apart from a missing `data` field.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// A request body that did not arrive whole within `http.body_timeout`: the server
/// fails the body with it, and [`read_body`] answers 408.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {}", humantime::format_duration(*.0))]
pub(crate) struct BodyTimeout(pub(crate) std::time::Duration);

/// Reads a request body up to `limit` bytes; more is a 413, and a body that takes
/// too long a 408 that closes the connection.
pub(super) async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut causes = std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source());
        if let Some(timeout) = causes.find_map(|e| e.downcast_ref::<BodyTimeout>()) {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                timeout.to_string(),
            )
            .with_header(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the request body is larger than {limit} bytes"),
            )
        } else {
            ApiError::bad_request("unreadable_body", format!("could not read the body: {e}"))
        }
    })
}

/// `POST /publish`.
pub(super) async fn publish(
    State(app): State<Services>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let identity = identify_publisher(&app, &headers)?;
    if !identity.is_authenticated() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "publishing needs a publisher token or an API key in the Authorization header \
             (Bearer ...); the auth cookie and ?token= are not accepted here",
        ));
    }
    require_json(&headers)?;
    let limits = &app.settings.limits;
    let body = read_body(body, limits.max_body_bytes).await?;
    let (events, batch) = events_of(&body, &identity, limits)?;
    // The publisher's name is only needed, and built, when publish limits are set.
    let limiter = &app.publish_limiter;
    if !limiter.is_off()
        && let Err(limited) = limiter.charge(&publisher(&identity), &events)
    {
        app.stats.publish_rate_limited();
        return Err(rate_limited(&limited));
    }
    let accepted = app.hub.publish_batch(events).await.map_err(|e| match e {
        PublishError::Invalid { index, error } => at(event_error(error), index, batch),
        PublishError::Unavailable(e) => e.into(),
    })?;
    let body = if batch {
        serde_json::json!({"ids": accepted.iter().map(|a| &a.id).collect::<Vec<_>>()})
    } else {
        match accepted.first() {
            Some(a) if a.duplicate => serde_json::json!({"id": a.id, "duplicate": true}),
            Some(a) => serde_json::json!({"id": a.id}),
            None => serde_json::json!({}),
        }
    };
    Ok((StatusCode::OK, axum::Json(body)).into_response())
}

/// The events of a publish body that `identity` may publish, within `limits`, and
/// whether the body was a batch; a 4xx naming what is wrong otherwise. The hub
/// still checks each event's type, id and size ([`NewEvent::validate`]).
pub(super) fn events_of(
    body: &[u8],
    identity: &Identity,
    limits: &crate::limits::Limits,
) -> Result<(Vec<NewEvent>, bool), ApiError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!(
                "the body is not valid UTF-8 (at byte {}); JSON is UTF-8",
                e.valid_up_to()
            ),
        )
    })?;
    let first = text.bytes().find(|b| !b.is_ascii_whitespace());
    let (requests, batch) = match first {
        Some(b'[') => (parse_batch(text, limits.max_batch)?, true),
        Some(b'{') => (vec![parse_one(text)?], false),
        _ => {
            return Err(ApiError::bad_request(
                "invalid_json",
                "the body must be a JSON object or an array of objects",
            ));
        }
    };
    if requests.is_empty() {
        return Err(ApiError::bad_request(
            "empty_batch",
            "the batch holds no event",
        ));
    }
    let max_channels = limits.max_channels_per_event;
    let mut events = Vec::with_capacity(requests.len());
    for (index, request) in requests.into_iter().enumerate() {
        let event = to_event(request, identity, max_channels).map_err(|e| at(e, index, batch))?;
        events.push(event);
    }
    Ok((events, batch))
}

/// Whose buckets a publish request draws on: an API key by its name, a token by
/// its `sub`. Tokens without a `sub` share one set of buckets.
fn publisher(identity: &Identity) -> String {
    match (&identity.credential, &identity.user) {
        (Credential::ApiKey(name), _) => format!("key {name}"),
        (_, Some(sub)) => format!("sub {sub}"),
        (_, None) => "token".to_owned(),
    }
}

/// A 429 naming the rate that refused a publish request, with how long to wait;
/// a 413 when the request holds more events than the burst ever lets through.
fn rate_limited(limited: &RateLimited) -> ApiError {
    let Rate { per_second, burst } = limited.rate;
    let scope = match &limited.namespace {
        Some(ns) => format!("channels of namespace {ns}"),
        None => "channels of namespaces without their own limit".to_owned(),
    };
    let Some(wait) = limited.retry_after else {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!(
                "the request holds {} events for {scope}, more than the {burst} a publisher \
                 may send at once ({}); send at most {burst} per request",
                limited.needed,
                limited.burst_key()
            ),
        )
        .for_limit(limited.burst_key());
    };
    let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!(
            "publishing faster than {per_second} events per second (bursts of {burst}) to \
             {scope} ({}); retry in {seconds} s",
            limited.rate_key(),
        ),
    )
    .for_limit(limited.rate_key())
    .retry_after(seconds)
}

fn invalid_json(e: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request("invalid_json", format!("invalid publish body: {e}"))
}

fn parse_one(text: &str) -> Result<RawEvent<'_>, ApiError> {
    serde_json::from_str(text).map_err(invalid_json)
}

/// Reads a batch, stopping at the first event past `max`: a body of many tiny
/// events costs no more than one of `max` + 1 of them.
fn parse_batch(text: &str, max: usize) -> Result<Vec<RawEvent<'_>>, ApiError> {
    let index = Cell::new(0);
    let over = Cell::new(false);
    let mut de = serde_json::Deserializer::from_str(text);
    let read = Batch {
        max,
        index: &index,
        over: &over,
    }
    .deserialize(&mut de)
    .and_then(|events| de.end().map(|()| events));
    read.map_err(|e| {
        if over.get() {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "batch_too_large",
                format!(
                    "the batch holds more than {max} events; at most {max} are accepted (limits.max_batch)"
                ),
            )
        } else {
            invalid_json(format_args!("event {}: {e}", index.get()))
        }
    })
}

/// The events of a batch, at most `max`; `over` is set when there are more.
struct Batch<'c> {
    max: usize,
    /// The place of the event being read.
    index: &'c Cell<usize>,
    over: &'c Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for Batch<'_> {
    type Value = Vec<RawEvent<'de>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Batch<'_> {
    type Value = Vec<RawEvent<'de>>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of events")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut events = Vec::new();
        loop {
            self.index.set(events.len());
            if events.len() == self.max {
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    self.over.set(true);
                    return Err(serde::de::Error::custom("too many events"));
                }
                return Ok(events);
            }
            match seq.next_element::<RawEvent<'de>>()? {
                Some(event) => events.push(event),
                None => return Ok(events),
            }
        }
    }
}

/// Counts the elements of a JSON array, stopping at `limit`: `Some(n)` with
/// `n <= limit` (`limit` meaning "at least"), `None` when it is not an array.
fn count_up_to(raw: &RawValue, limit: usize) -> Option<usize> {
    struct Count<'c> {
        limit: usize,
        seen: &'c Cell<usize>,
    }
    impl<'de> Visitor<'de> for Count<'_> {
        type Value = ();

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an array")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while self.seen.get() < self.limit {
                if seq.next_element::<IgnoredAny>()?.is_none() {
                    return Ok(());
                }
                self.seen.set(self.seen.get() + 1);
            }
            // Enough counted: the rest is left unread.
            Err(serde::de::Error::custom("enough"))
        }
    }
    let seen = Cell::new(0);
    let mut de = serde_json::Deserializer::from_str(raw.get());
    let counted = de.deserialize_seq(Count { limit, seen: &seen });
    match counted {
        Ok(()) => Some(seen.get()),
        Err(_) if seen.get() == limit => Some(limit),
        Err(_) => None,
    }
}

/// Prefixes an error's message with the event's place in a batch.
fn at(mut e: ApiError, index: usize, batch: bool) -> ApiError {
    if batch {
        e.message = format!("event {index}: {}", e.message);
    }
    e
}

fn event_error(e: EventError) -> ApiError {
    let code = match &e {
        EventError::Channel(_) => "invalid_channel",
        EventError::NoChannel => "no_channel",
        EventError::BadType(_) => "invalid_type",
        EventError::ReservedType(_) => "reserved_type",
        EventError::BadId(_) => "invalid_id",
        EventError::IdConflict(_) => {
            return ApiError::new(StatusCode::CONFLICT, "id_conflict", e.to_string());
        }
        EventError::TooManyChannels { limit } => {
            return too_many_channels(*limit);
        }
        EventError::TooLarge { .. } => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "event_too_large",
                e.to_string(),
            );
        }
    };
    ApiError::bad_request(code, e.to_string())
}

fn too_many_channels(limit: usize) -> ApiError {
    ApiError::bad_request(
        "too_many_channels",
        format!(
            "the event names more than {limit} channels; at most {limit} are accepted (limits.max_channels_per_event)"
        ),
    )
}

/// A 400 naming the field that is wrong and what it should be.
fn invalid_field(field: &str, should: &str) -> ApiError {
    ApiError::bad_request("invalid_field", format!("`{field}` {should}"))
}

/// Reads a field that must be a JSON string.
fn string_field(field: &str, raw: &RawValue) -> Result<String, ApiError> {
    serde_json::from_str(raw.get()).map_err(|_| invalid_field(field, "must be a string"))
}

/// Checks one channel name and that the credential may publish to it.
fn granted(identity: &Identity, name: &str) -> Result<ChannelName, ApiError> {
    let channel = ChannelName::new(name)
        .map_err(|e: ChannelError| event_error(e.into()).for_channel(name))?;
    may_publish(identity, channel)
}

fn may_publish(identity: &Identity, channel: ChannelName) -> Result<ChannelName, ApiError> {
    if !identity.may_publish(&channel) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("the credential does not grant publishing to {channel}"),
        )
        .for_channel(channel.as_str()));
    }
    Ok(channel)
}

/// The channels of `channels`: counted first (up to `max` + 1), then each checked
/// and its grant looked up as it is read, repeats dropped.
fn channel_list(
    raw: &RawValue,
    identity: &Identity,
    max: usize,
) -> Result<Vec<ChannelName>, ApiError> {
    let not_a_list = || invalid_field("channels", "must be an array of channel names");
    let count = count_up_to(raw, max + 1).ok_or_else(not_a_list)?;
    if count > max {
        return Err(too_many_channels(max));
    }
    let names: Vec<String> = serde_json::from_str(raw.get()).map_err(|_| not_a_list())?;
    let mut seen = HashSet::with_capacity(names.len());
    let mut channels = Vec::with_capacity(names.len());
    for name in &names {
        let channel = granted(identity, name)?;
        if seen.insert(channel.clone()) {
            channels.push(channel);
        }
    }
    Ok(channels)
}

fn to_event(
    request: RawEvent<'_>,
    identity: &Identity,
    max_channels: usize,
) -> Result<NewEvent, ApiError> {
    let broadcast = match request.broadcast {
        Some(raw) => serde_json::from_str::<bool>(raw.get())
            .map_err(|_| invalid_field("broadcast", "must be true or false"))?,
        None => false,
    };
    let channels = match (request.channel, request.channels, broadcast) {
        (Some(one), None, false) => vec![granted(identity, &string_field("channel", one)?)?],
        (None, Some(many), false) => channel_list(many, identity, max_channels)?,
        (None, None, true) => vec![may_publish(identity, ChannelName::broadcast())?],
        (None, None, false) => {
            return Err(event_error(EventError::NoChannel)
                .with_message("name a `channel`, a list of `channels`, or set `broadcast: true`"));
        }
        _ => {
            return Err(ApiError::bad_request(
                "invalid_target",
                "use exactly one of `channel`, `channels` and `broadcast`",
            ));
        }
    };
    if channels.is_empty() {
        return Err(event_error(EventError::NoChannel));
    }
    let kind = request
        .kind
        .map(|raw| string_field("type", raw))
        .transpose()?;
    let id = request.id.map(|raw| string_field("id", raw)).transpose()?;
    let retry = request
        .retry
        .map(|raw| {
            serde_json::from_str::<u32>(raw.get()).map_err(|_| {
                invalid_field(
                    "retry",
                    "must be a whole number of milliseconds from 0 to 4294967295",
                )
            })
        })
        .transpose()?;
    let raw = request.data.ok_or_else(|| {
        ApiError::bad_request(
            "missing_data",
            "the event has no `data` (use null for none)",
        )
    })?;
    let data = match raw.get().as_bytes().first() {
        Some(b'"') => Payload::text(string_field("data", raw)?),
        _ => Payload::json_raw(raw).map_err(|e| invalid_field("data", &e.to_string()))?,
    };
    Ok(NewEvent {
        channels,
        kind,
        data,
        id,
        retry,
        ephemeral: false,
        split: None,
    })
}

impl ApiError {
    fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn counting_stops_at_the_limit() {
        assert_eq!(count_up_to(&raw("[]"), 3), Some(0));
        assert_eq!(count_up_to(&raw("[1, 2]"), 3), Some(2));
        assert_eq!(count_up_to(&raw("[1, 2, 3]"), 3), Some(3));
        assert_eq!(count_up_to(&raw("[1, 2, 3, 4, 5]"), 3), Some(3));
        assert_eq!(count_up_to(&raw("\"a\""), 3), None);
        assert_eq!(count_up_to(&raw("{}"), 3), None);
    }

    #[test]
    fn a_batch_is_cut_after_its_limit() {
        let events = parse_batch("[{}, {}]", 2).unwrap();
        assert_eq!(events.len(), 2);
        let e = parse_batch("[{}, {}, {}, nonsense", 2).unwrap_err();
        assert_eq!(e.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let e = parse_batch("[{}, 7]", 5).unwrap_err();
        assert!(
            e.message.starts_with("invalid publish body: event 1:"),
            "{}",
            e.message
        );
    }

    mod properties {
        use proptest::prelude::*;
        use serde_json::{Value, json};

        use super::*;
        use crate::auth::Credential;
        use crate::config::Limits;
        use crate::core::ChannelPattern;
        use crate::fuzzing::json_value;

        fn identity(patterns: &[&str]) -> Identity {
            Identity {
                publish: patterns
                    .iter()
                    .map(|p| ChannelPattern::parse(p).unwrap())
                    .collect(),
                credential: Credential::ApiKey("backend".into()),
                ..Identity::anonymous()
            }
        }

        fn limits() -> Limits {
            Limits {
                max_batch: 4,
                max_channels_per_event: 3,
                max_event_bytes: 256,
                ..Limits::default()
            }
        }

        /// A field's value: of its own type, or any JSON at all.
        fn field(own: BoxedStrategy<Value>) -> impl Strategy<Value = Option<Value>> {
            proptest::option::of(prop_oneof![3 => own, 1 => json_value()])
        }

        /// An event object whose every field may be missing, right or of any type.
        fn event() -> impl Strategy<Value = Value> {
            let name = prop_oneof![
                "[a-z]{1,6}(:[0-9])?",
                "orders:[0-9]",
                "\\$[a-z]{1,8}",
                ".{0,4}"
            ];
            (
                field(name.clone().prop_map(Value::from).boxed()),
                field(
                    proptest::collection::vec(name, 0..5)
                        .prop_map(Value::from)
                        .boxed(),
                ),
                field(any::<bool>().prop_map(Value::from).boxed()),
                field("[a-z.:_-]{0,10}".prop_map(Value::from).boxed()),
                field(json_value().boxed()),
                field("[!-~]{0,10}".prop_map(Value::from).boxed()),
                field(any::<i64>().prop_map(Value::from).boxed()),
            )
                .prop_map(|(channel, channels, broadcast, kind, data, id, retry)| {
                    let mut event = serde_json::Map::new();
                    for (key, value) in [
                        ("channel", channel),
                        ("channels", channels),
                        ("broadcast", broadcast),
                        ("type", kind),
                        ("data", data),
                        ("id", id),
                        ("retry", retry),
                    ] {
                        if let Some(value) = value {
                            event.insert(key.to_owned(), value);
                        }
                    }
                    Value::Object(event)
                })
        }

        /// A body: one event, a batch, any JSON, nesting past every limit, or any
        /// bytes at all.
        fn body() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                event().prop_map(|e| e.to_string().into_bytes()),
                proptest::collection::vec(event(), 0..7)
                    .prop_map(|b| Value::from(b).to_string().into_bytes()),
                json_value().prop_map(|v| v.to_string().into_bytes()),
                (1usize..300).prop_map(|n| format!(
                    "{{\"channel\":\"a\",\"data\":{}{}}}",
                    "[".repeat(n),
                    "]".repeat(n)
                )
                .into_bytes()),
                proptest::collection::vec(any::<u8>(), 0..64),
            ]
        }

        proptest! {
            #![proptest_config(crate::fuzzing::cases(256))]

            /// Any body is events the credential may publish, within every limit,
            /// or a 4xx; what the hub checks next is a 4xx too.
            #[test]
            fn any_body_is_granted_events_within_limits_or_a_4xx(
                body in body(),
                narrow in any::<bool>(),
            ) {
                let identity = if narrow { identity(&["orders:*"]) } else { identity(&["*"]) };
                let limits = limits();
                match events_of(&body, &identity, &limits) {
                    Err(e) => prop_assert!(e.status().is_client_error(), "{:?}", e),
                    Ok((events, batch)) => {
                        prop_assert!(!events.is_empty() && events.len() <= limits.max_batch);
                        prop_assert!(batch || events.len() == 1);
                        for event in &events {
                            prop_assert!(!event.channels.is_empty());
                            prop_assert!(event.channels.len() <= limits.max_channels_per_event);
                            for (i, channel) in event.channels.iter().enumerate() {
                                prop_assert!(identity.may_publish(channel));
                                prop_assert!(!event.channels[..i].contains(channel));
                            }
                            if event.data.is_json() {
                                // A JSON reader takes it, unless it nests past that
                                // reader's own limit or holds a number past its range
                                // (passed on as written).
                                if let Err(e) = serde_json::from_slice::<Value>(event.data.as_bytes()) {
                                    let e = e.to_string();
                                    prop_assert!(e.contains("recursion limit") || e.contains("out of range"), "{}", e);
                                }
                                prop_assert!(!event.data.as_bytes().contains(&b'\n'));
                            }
                            if let Err(e) = event.validate(&limits.events()) {
                                prop_assert!(event_error(e).status().is_client_error());
                            }
                        }
                    }
                }
            }

            /// A well-formed event is read as it was sent: its channel, type, id,
            /// retry and data (a string as text, anything else as the same JSON).
            #[test]
            fn a_well_formed_event_is_read_as_sent(
                channel in "[a-z]{1,8}",
                kind in proptest::option::of("[a-z][a-z._-]{0,8}"),
                id in proptest::option::of("[a-z]{1,4}:[!-~]{0,8}"),
                retry in proptest::option::of(any::<u32>()),
                data in json_value(),
            ) {
                let mut sent = json!({"channel": channel, "data": data});
                if let Some(kind) = &kind { sent["type"] = kind.as_str().into(); }
                if let Some(id) = &id { sent["id"] = id.as_str().into(); }
                if let Some(retry) = retry { sent["retry"] = retry.into(); }
                let body = serde_json::to_vec_pretty(&sent).unwrap();
                let (events, batch) = events_of(&body, &identity(&["*"]), &Limits::default())
                    .expect("a well-formed event");
                prop_assert!(!batch);
                let event = &events[0];
                prop_assert_eq!(event.channels.iter().map(|c| c.as_str()).collect::<Vec<_>>(), vec![channel.as_str()]);
                prop_assert_eq!(&event.kind, &kind);
                prop_assert_eq!(&event.id, &id);
                prop_assert_eq!(event.retry, retry);
                match &data {
                    Value::String(text) => prop_assert_eq!(event.data.as_str(), text.as_str()),
                    _ => {
                        let read: Value = serde_json::from_slice(event.data.as_bytes()).unwrap();
                        let want: Value = serde_json::from_slice(&body).unwrap();
                        prop_assert_eq!(&read, &want["data"]);
                    }
                }
            }
        }
    }
}
