//! `POST /publish`: one event or a batch, from a server holding a publisher JWT or
//! an API key.
//!
//! ```json
//! {"channel": "orders", "type": "order.created", "data": {"id": 17}}
//! {"channels": ["team:1", "team:2"], "data": "plain text"}
//! {"broadcast": true, "type": "announcement", "data": {"text": "maintenance at 18:00"}}
//! [{"channel": "a", "data": 1}, {"channel": "b", "data": 2, "id": "b-2"}]
//! ```
//!
//! A JSON string in `data` is sent as text; any other JSON value as compact JSON.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{ApiError, Services, identify};
use crate::core::{ChannelError, ChannelName, EventError, NewEvent, Payload};
use crate::hub::PublishError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    channel: Option<String>,
    channels: Option<Vec<String>>,
    #[serde(default)]
    broadcast: bool,
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default, deserialize_with = "present")]
    data: Option<Box<RawValue>>,
    id: Option<String>,
    retry: Option<u32>,
}

/// Keeps an explicit `null` as data, apart from a missing `data` field.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

/// Reads a request body up to `limit` bytes; more is a 413.
pub(super) async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
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
    let identity = identify(&app, &headers, None)?;
    if !identity.is_authenticated() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "publishing needs a publisher token or an API key (Authorization: Bearer ...)",
        ));
    }
    let limits = &app.config.limits;
    let body = read_body(body, limits.max_body_bytes).await?;
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let (requests, batch) = match first {
        Some(b'[') => (parse::<Vec<PublishRequest>>(&body)?, true),
        Some(b'{') => (vec![parse::<PublishRequest>(&body)?], false),
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
    if requests.len() > limits.max_batch {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!(
                "the batch holds {} events; at most {} are accepted",
                requests.len(),
                limits.max_batch
            ),
        ));
    }
    let mut events = Vec::with_capacity(requests.len());
    for (index, request) in requests.into_iter().enumerate() {
        let event = to_event(request).map_err(|e| at(e, index, batch))?;
        for channel in &event.channels {
            if !identity.may_publish(channel) {
                return Err(at(
                    ApiError::new(
                        StatusCode::FORBIDDEN,
                        "forbidden",
                        format!("the credential does not grant publishing to {channel}"),
                    ),
                    index,
                    batch,
                ));
            }
        }
        events.push(event);
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

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("invalid publish body: {e}")))
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
        EventError::BadId => "invalid_id",
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

fn to_event(request: PublishRequest) -> Result<NewEvent, ApiError> {
    let names: Vec<String> = match (request.channel, request.channels, request.broadcast) {
        (Some(one), None, false) => vec![one],
        (None, Some(many), false) => many,
        (None, None, true) => Vec::new(),
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
    let mut channels = Vec::with_capacity(names.len().max(1));
    for name in &names {
        let channel = ChannelName::new(name).map_err(|e: ChannelError| event_error(e.into()))?;
        if !channels.contains(&channel) {
            channels.push(channel);
        }
    }
    if request.broadcast {
        channels.push(ChannelName::broadcast());
    }
    if channels.is_empty() {
        return Err(event_error(EventError::NoChannel));
    }
    let raw = request.data.ok_or_else(|| {
        ApiError::bad_request(
            "missing_data",
            "the event has no `data` (use null for none)",
        )
    })?;
    let data = match raw.get().as_bytes().first() {
        Some(b'"') => Payload::text(
            serde_json::from_str::<String>(raw.get())
                .map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))?,
        ),
        _ => Payload::json_text(raw.get())
            .map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))?,
    };
    Ok(NewEvent {
        channels,
        kind: request.kind,
        data,
        id: request.id,
        retry: request.retry,
        ephemeral: false,
    })
}

impl ApiError {
    fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }
}
