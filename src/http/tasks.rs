//! Background tasks over HTTP, under `/api/tasks`: a publisher creates and updates
//! a user's task with `PUT /api/tasks/{id}`; the user lists theirs and reads one.
//! Task ids are the publisher's own, unique per user: another user's task with the
//! same id is a different task, and never visible (404).

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::notifications::{
    json_body, may_publish_to_user, parse_limit, publisher, query_param, user,
};
use super::{ApiError, Services, path_segment};
use crate::store::{Invalid, NewNotification, TaskUpdate};

/// `GET /api/tasks`: the user's tasks, most recently updated first.
pub(super) async fn list(
    State(app): State<Services>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let user = user(&app, &headers, &uri)?;
    let limit = parse_limit(query_param(&uri, "limit")?.as_deref())?;
    let tasks = app.inbox.store().tasks(&user, limit).await?;
    Ok(axum::Json(json!({ "tasks": tasks })).into_response())
}

/// `GET /api/tasks/{id}`: one of the user's tasks.
pub(super) async fn get(
    State(app): State<Services>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let id = path_segment(id, "id")?;
    let user = user(&app, &headers, &uri)?;
    let task = app.inbox.store().task(&user, &id).await?;
    Ok(axum::Json(task).into_response())
}

/// The notification a finishing task raises.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NotifyBody {
    title: Option<String>,
    message: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    link: Option<String>,
    data: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskBody {
    user: Option<String>,
    title: Option<String>,
    status: Option<String>,
    progress: Option<serde_json::Value>,
    message: Option<String>,
    notify: Option<NotifyBody>,
}

/// `PUT /api/tasks/{id}`: creates (201) or updates (200) a task.
pub(super) async fn put(
    State(app): State<Services>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = path_segment(id, "id")?;
    let identity = publisher(&app, &headers)?;
    let body: TaskBody = json_body(&app, &headers, body).await?;
    let notify = match body.notify {
        None => None,
        Some(n) => Some(
            NewNotification::new(n.title, n.message, n.kind, n.link, n.data).map_err(|e| {
                Invalid::new(
                    match e.field {
                        "title" => "notify.title",
                        "message" => "notify.message",
                        "type" => "notify.type",
                        "link" => "notify.link",
                        _ => "notify.data",
                    },
                    e.message,
                )
            })?,
        ),
    };
    let update = TaskUpdate::new(
        &id,
        body.user,
        body.title,
        body.status,
        body.progress,
        body.message,
        notify,
    )?;
    may_publish_to_user(&identity, "user", &update.user)?;
    let change = app.inbox.put_task(&update).await?;
    let status = if change.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(change.task)).into_response())
}
