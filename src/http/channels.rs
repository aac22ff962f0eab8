//! `GET /channels/{name}/history`: the events a channel still keeps, for whoever
//! may subscribe to it.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Json;
use serde_json::value::RawValue;

use super::query::Params;
use super::{ApiError, Services, identify, path_segment};
use crate::core::ChannelName;
use crate::protocol::envelope_json;
use crate::session::Refusal;

/// The most events one history request returns.
const MAX_LIMIT: usize = 1000;

/// `GET /channels/{name}/history?limit=N`: up to N (default 100, at most 1000) of the
/// newest events kept, oldest first.
pub(super) async fn history(
    State(app): State<Services>,
    name: Result<Path<String>, PathRejection>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Json<History>, ApiError> {
    let name = path_segment(name, "name")?;
    let query = Params::parse(uri.query())?;
    let channel = ChannelName::new(&name)
        .map_err(|e| ApiError::bad_request("invalid_channel", e.to_string()))?;
    let limit = match query.one("limit")?.as_deref() {
        None => 100,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_parameter",
                    format!("limit must be a number from 1 to {MAX_LIMIT}, not {raw:?}"),
                )
            })?,
    };
    let identity = identify(&app, &headers, query.one("token")?.as_deref())?;
    app.sessions
        .policies()
        .may_subscribe(&identity.grants(), &channel)
        .map_err(Refusal::Denied)?;
    let events = app.hub.history(&channel, limit).await?;
    // Each envelope goes out as the text the streams send, not parsed and written
    // again: data a JSON reader takes apart only with effort (nested deep, say)
    // would otherwise come back as `null`.
    let events = events
        .iter()
        .filter_map(|e| RawValue::from_string(envelope_json(e, Some(&channel))).ok())
        .collect();
    Ok(Json(History { channel, events }))
}

/// The answer to a history request.
#[derive(serde::Serialize)]
pub(super) struct History {
    channel: ChannelName,
    events: Vec<Box<RawValue>>,
}

/// `GET /channels/{name}/presence`: who is on the channel (namespaces with presence),
/// for whoever may subscribe to it.
pub(super) async fn presence(
    State(app): State<Services>,
    name: Result<Path<String>, PathRejection>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = path_segment(name, "name")?;
    let query = Params::parse(uri.query())?;
    let channel = ChannelName::new(&name)
        .map_err(|e| ApiError::bad_request("invalid_channel", e.to_string()))?;
    let identity = identify(&app, &headers, query.one("token")?.as_deref())?;
    app.sessions
        .policies()
        .may_subscribe(&identity.grants(), &channel)
        .map_err(Refusal::Denied)?;
    if !app.sessions.policies().of(&channel).presence {
        return Err(ApiError::bad_request(
            "presence_disabled",
            format!("presence is not enabled for {channel}'s namespace"),
        ));
    }
    let users = app.sessions.presence(&channel);
    Ok(Json(
        serde_json::json!({"channel": channel, "count": users.len(), "users": users}),
    ))
}
