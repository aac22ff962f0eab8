//! The notification inbox over HTTP, under `/api/notifications`.
//!
//! A signed-in user (a JWT with `sub`) lists, counts, marks read and deletes their
//! own notifications; a publisher (an API key, or a JWT whose publish grants cover
//! `user:{id}`, or `$broadcast` for a broadcast, in the `Authorization` header)
//! creates them. A user's auth cookie is taken only from the pages allowed to use
//! it, so another site cannot mark read or delete as the user. Another user's id
//! is answered like an unknown one: 404. The OpenAPI document of these routes is
//! `docs/openapi.json`, served at `/api/openapi.json`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::publish::read_body;
use super::query::Params;
use super::{ApiError, Services, identify, identify_publisher, require_json};
use crate::auth::Identity;
use crate::core::ChannelName;
use crate::store::{
    Change, Invalid, ListQuery, MAX_LIMIT, NewNotification, Position, StoreError, Target,
    check_cursor, check_user,
};

/// The default number of items in a list.
const DEFAULT_LIMIT: u32 = 50;

/// The user a request is from; 401 without a user token.
pub(super) fn user(app: &Services, headers: &HeaderMap, uri: &Uri) -> Result<String, ApiError> {
    let token = query_param(uri, "token")?;
    let identity = identify(app, headers, token.as_deref())?;
    identity.user.ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this needs a user's token (a JWT with `sub`): Authorization: Bearer, the auth cookie or ?token=",
        )
    })
}

/// The publisher a request is from, by its `Authorization` header only (see
/// [`identify_publisher`]); 401 without one.
pub(super) fn publisher(app: &Services, headers: &HeaderMap) -> Result<Identity, ApiError> {
    let identity = identify_publisher(app, headers)?;
    if !identity.is_authenticated() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this needs a publisher token or an API key in the Authorization header \
             (Bearer ...); the auth cookie and ?token= are not accepted here",
        ));
    }
    Ok(identity)
}

/// 403 unless `identity` may publish to `channel`.
pub(super) fn may_publish(identity: &Identity, channel: &ChannelName) -> Result<(), ApiError> {
    if identity.may_publish(channel) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("the credential does not grant publishing to {channel}"),
        ))
    }
}

/// 403 unless `identity` may publish to user `user`'s channel; a user id that
/// names no channel is a 400 about `field`.
pub(super) fn may_publish_to_user(
    identity: &Identity,
    field: &'static str,
    user: &str,
) -> Result<(), ApiError> {
    let channel = ChannelName::user(user).map_err(|e| Invalid::new(field, e.to_string()))?;
    may_publish(identity, &channel)
}

/// The value of query parameter `name`, if given (once).
pub(super) fn query_param(uri: &Uri, name: &str) -> Result<Option<String>, ApiError> {
    Params::parse(uri.query())?.one(name)
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::new(StatusCode::NOT_FOUND, "not_found", "not found"),
            StoreError::Unavailable(why) => {
                tracing::warn!(error = %why, "store unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the notification store is unavailable; nothing was changed",
                )
                .retry_after(1)
            }
        }
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        ApiError::bad_request("invalid_field", e.to_string())
    }
}

/// A 400 about a query parameter.
pub(super) fn bad_parameter(name: &str, message: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request("invalid_parameter", format!("{name}: {message}"))
}

/// Parses `limit` (1 to [`MAX_LIMIT`], default 50).
pub(super) fn parse_limit(value: Option<&str>) -> Result<u32, ApiError> {
    match value {
        None => Ok(DEFAULT_LIMIT),
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(bad_parameter(
                "limit",
                format!("must be a whole number from 1 to {MAX_LIMIT}, not {v:?}"),
            )),
        },
    }
}

/// Reads a JSON body of type `T`, with field errors as 400s. The body must say it
/// is JSON ([`require_json`]).
pub(super) async fn json_body<T: serde::de::DeserializeOwned>(
    app: &Services,
    headers: &HeaderMap,
    body: Body,
) -> Result<T, ApiError> {
    require_json(headers)?;
    let bytes = read_body(body, app.settings.limits.max_body_bytes).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("invalid body: {e}")))
}

fn parse_list_query(uri: &Uri) -> Result<ListQuery, ApiError> {
    let params = Params::parse(uri.query())?;
    let page = params.one("page")?;
    let cursor = params.one("cursor")?;
    let limit = params.one("limit")?;
    let unread = params.one("unread")?;
    let limit = parse_limit(limit.as_deref())?;
    let unread_only = match unread.as_deref() {
        None | Some("false" | "0") => false,
        Some("" | "true" | "1") => true,
        Some(other) => {
            return Err(bad_parameter(
                "unread",
                format!("must be true or false, not {other:?}"),
            ));
        }
    };
    let position = match (page, cursor) {
        (Some(_), Some(_)) => {
            return Err(bad_parameter(
                "cursor",
                "use either `page` or `cursor`, not both",
            ));
        }
        (None, Some(c)) if !c.is_empty() => {
            check_cursor(&c).map_err(|e| bad_parameter("cursor", e.message))?;
            Position::After(c)
        }
        (Some(p), None) => match p.parse::<u32>() {
            Ok(n) if (1..=1_000_000).contains(&n) => Position::Page(n),
            _ => {
                return Err(bad_parameter(
                    "page",
                    format!("must be a whole number from 1 to 1000000, not {p:?}"),
                ));
            }
        },
        _ => Position::Page(1),
    };
    Ok(ListQuery {
        position,
        limit,
        unread_only,
    })
}

/// `GET /api/notifications`.
pub(super) async fn list(
    State(app): State<Services>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let user = user(&app, &headers, &uri)?;
    let query = parse_list_query(&uri)?;
    let (page, unread_count) = app.inbox.notifications(&user, &query).await?;
    let number = match query.position {
        Position::Page(n) => Some(n),
        Position::After(_) => None,
    };
    Ok(axum::Json(json!({
        "notifications": page.notifications,
        "unread_count": unread_count,
        "page": number,
        "limit": query.limit,
        "has_more": page.has_more,
        "next_cursor": page.next_cursor(),
    }))
    .into_response())
}

/// `GET /api/notifications/unread_count`.
pub(super) async fn unread_count(
    State(app): State<Services>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let user = user(&app, &headers, &uri)?;
    let count = app.inbox.store().unread_count(&user).await?;
    Ok(axum::Json(json!({ "unread_count": count })).into_response())
}

/// The body of a mark-read or delete: `{"id": ...}` or `{"all": true}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Selection {
    id: Option<String>,
    all: Option<bool>,
}

impl Selection {
    fn target(self) -> Result<Target, ApiError> {
        match (self.id, self.all) {
            (Some(id), None | Some(false)) => Ok(Target::One(id)),
            (None, Some(true)) => Ok(Target::All),
            (Some(_), Some(true)) => {
                Err(Invalid::new("id", "send either `id` or `all: true`, not both").into())
            }
            _ => Err(Invalid::new("id", "send `{\"id\": \"...\"}` or `{\"all\": true}`").into()),
        }
    }
}

/// The user a mark-read or delete is from and the notifications it selects.
async fn selection(
    app: &Services,
    headers: &HeaderMap,
    uri: &Uri,
    body: Body,
) -> Result<(String, Target), ApiError> {
    let user = user(app, headers, uri)?;
    let target = json_body::<Selection>(app, headers, body).await?.target()?;
    Ok((user, target))
}

/// The answer to a mark-read or delete: how many changed, under `counted`, and
/// the unread count after.
fn change_response(counted: &str, change: &Change) -> Response {
    axum::Json(json!({counted: change.count, "unread_count": change.unread_count})).into_response()
}

/// `PATCH /api/notifications`: marks one or all read.
pub(super) async fn mark_read(
    State(app): State<Services>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Result<Response, ApiError> {
    let (user, target) = selection(&app, &headers, &uri, body).await?;
    let change = app.inbox.mark_read(&user, &target).await?;
    Ok(change_response("updated", &change))
}

/// `DELETE /api/notifications`: deletes one or all.
pub(super) async fn delete(
    State(app): State<Services>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Result<Response, ApiError> {
    let (user, target) = selection(&app, &headers, &uri, body).await?;
    let change = app.inbox.delete_notifications(&user, &target).await?;
    Ok(change_response("deleted", &change))
}

/// The fields of a notification as a publisher sends them; loosely typed so that
/// every mistake is answered by field name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NotificationBody {
    user: Option<String>,
    users: Option<Vec<String>>,
    title: Option<String>,
    message: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    link: Option<String>,
    data: Option<serde_json::Value>,
}

impl NotificationBody {
    pub(super) fn notification(&self) -> Result<NewNotification, Invalid> {
        NewNotification::new(
            self.title.clone(),
            self.message.clone(),
            self.kind.clone(),
            self.link.clone(),
            self.data.clone(),
        )
    }
}

/// `POST /api/notifications`: a notification for one user or several.
pub(super) async fn create(
    State(app): State<Services>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let identity = publisher(&app, &headers)?;
    let body: NotificationBody = json_body(&app, &headers, body).await?;
    let max = app.settings.limits.max_batch;
    let users = match (&body.user, &body.users) {
        (Some(one), None) => vec![one.clone()],
        (None, Some(many)) if !many.is_empty() && many.len() <= max => {
            let mut unique = Vec::with_capacity(many.len());
            for u in many {
                if !unique.contains(u) {
                    unique.push(u.clone());
                }
            }
            unique
        }
        (None, Some(_)) => {
            return Err(Invalid::new("users", format!("must list 1 to {max} users")).into());
        }
        _ => {
            return Err(Invalid::new("user", "send exactly one of `user` and `users`").into());
        }
    };
    let new = body.notification()?;
    for u in &users {
        let field = if body.user.is_some() { "user" } else { "users" };
        check_user(field, u)?;
        may_publish_to_user(&identity, field, u)?;
    }
    let made = app.inbox.notify(&users, &new).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({ "notifications": made })),
    )
        .into_response())
}

/// `POST /api/notifications/broadcast`: one notification for every user.
pub(super) async fn broadcast(
    State(app): State<Services>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let identity = publisher(&app, &headers)?;
    let body: NotificationBody = json_body(&app, &headers, body).await?;
    if body.user.is_some() || body.users.is_some() {
        return Err(Invalid::new("user", "a broadcast goes to every user; name none").into());
    }
    let new = body.notification()?;
    may_publish(&identity, &ChannelName::broadcast())?;
    let made = app.inbox.broadcast_notification(&new).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({ "notification": made })),
    )
        .into_response())
}
