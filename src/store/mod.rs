//! The notification inbox and tasks, as stored: the domain types, their validation,
//! and the [`Store`] that keeps them in SQLite ([`sqlite`], the default) or
//! PostgreSQL ([`postgres`]).
//!
//! Nothing here knows HTTP or the hub's channels; the inbox ties a store to
//! live events. Both backends keep the same tables and answer the same queries, so
//! one test suite runs against each:
//!
//! - `notifications`: one row per user notification, keyed by `(user_id, id)`.
//! - `broadcasts`: one shared row per broadcast, whatever the number of users, and
//!   `broadcast_state`: a row per user only once that user has read or deleted it.
//! - `tasks`: one row per task, keyed by `(user_id, id)`.
//!
//! Ids are `n_` + 12 hex digits of the creation time in milliseconds + a 4-digit
//! counter + 8 random hex digits, so they sort like `(created_at, id)`: a list is
//! ordered, and paged with a cursor, by id alone.

pub mod postgres;
mod settings;
pub mod sqlite;

pub use settings::StoreConfig;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize, Serializer};

use crate::settings::ConfigError;

/// Longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Longest message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 4000;
/// Longest link, in bytes.
pub const MAX_LINK_BYTES: usize = 2048;
/// Largest `data`, as compact JSON bytes.
pub const MAX_DATA_BYTES: usize = 16 * 1024;
/// Longest task id, in bytes.
pub const MAX_TASK_ID_BYTES: usize = 128;
/// Most items one list request returns.
pub const MAX_LIMIT: u32 = 100;

/// The kind of a notification, which apps show with a colour or an icon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Neutral information.
    Info,
    /// Something to look at.
    Warning,
    /// Something went well.
    Success,
    /// Something failed.
    Error,
}

impl Kind {
    /// The name used in JSON and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Success => "success",
            Self::Error => "error",
        }
    }

    /// Parses a name; `None` for an unknown one.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "info" => Self::Info,
            "warning" => Self::Warning,
            "success" => Self::Success,
            "error" => Self::Error,
            _ => return None,
        })
    }
}

/// A notification as a user sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notification {
    /// Opaque id; ids sort like creation times.
    pub id: String,
    /// The user it is for (for a broadcast: the user reading it).
    pub user: String,
    /// Short title.
    pub title: String,
    /// Body text.
    pub message: String,
    /// Its kind.
    #[serde(rename = "type")]
    pub kind: Kind,
    /// Where the app should take the user, if anywhere.
    pub link: Option<String>,
    /// Application data.
    pub data: Option<serde_json::Value>,
    /// Whether the user has read it.
    pub read: bool,
    /// Creation time, in milliseconds since the Unix epoch (RFC 3339 in JSON).
    #[serde(serialize_with = "rfc3339")]
    pub created_at: u64,
    /// Whether it was sent to every user.
    pub broadcast: bool,
}

/// What a publisher sends to create a notification, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct NewNotification {
    /// Short title, not empty.
    pub title: String,
    /// Body text.
    pub message: String,
    /// Its kind.
    pub kind: Kind,
    /// Optional link.
    pub link: Option<String>,
    /// Optional application data.
    pub data: Option<serde_json::Value>,
}

/// A field of a request is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    /// The field, as named in the JSON body or the query.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl Invalid {
    /// An error about `field`.
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

impl NewNotification {
    /// Checks and builds a notification from loosely typed input, so every
    /// mistake is reported by field name.
    pub fn new(
        title: Option<String>,
        message: Option<String>,
        kind: Option<String>,
        link: Option<String>,
        data: Option<serde_json::Value>,
    ) -> Result<Self, Invalid> {
        let title = check_title(title)?;
        let message = message.unwrap_or_default();
        check_message(&message)?;
        let kind = match kind {
            None => {
                return Err(Invalid::new(
                    "type",
                    "is required: info, warning, success or error",
                ));
            }
            Some(k) => Kind::parse(&k).ok_or_else(|| {
                Invalid::new(
                    "type",
                    format!("{k:?} is not one of info, warning, success, error"),
                )
            })?,
        };
        if let Some(link) = &link
            && (link.len() > MAX_LINK_BYTES || link.chars().any(char::is_control))
        {
            return Err(Invalid::new(
                "link",
                format!("must be at most {MAX_LINK_BYTES} bytes, without control characters"),
            ));
        }
        let data = data.filter(|d| !d.is_null());
        if let Some(d) = &data
            && d.to_string().len() > MAX_DATA_BYTES
        {
            return Err(Invalid::new(
                "data",
                format!("must be at most {MAX_DATA_BYTES} bytes of JSON"),
            ));
        }
        Ok(Self {
            title,
            message,
            kind,
            link,
            data,
        })
    }
}

/// A title, which notifications and tasks both require: not blank, at most
/// [`MAX_TITLE_CHARS`] characters.
fn check_title(title: Option<String>) -> Result<String, Invalid> {
    let title = title.unwrap_or_default();
    if title.trim().is_empty() {
        return Err(Invalid::new("title", "must not be empty"));
    }
    if title.chars().count() > MAX_TITLE_CHARS {
        return Err(Invalid::new(
            "title",
            format!("must be at most {MAX_TITLE_CHARS} characters"),
        ));
    }
    Ok(title)
}

/// A message of a notification or a task: at most [`MAX_MESSAGE_CHARS`]
/// characters.
fn check_message(message: &str) -> Result<(), Invalid> {
    if message.chars().count() > MAX_MESSAGE_CHARS {
        return Err(Invalid::new(
            "message",
            format!("must be at most {MAX_MESSAGE_CHARS} characters"),
        ));
    }
    Ok(())
}

/// Checks a user id: the part after `user:` of the user's channel.
pub fn check_user(field: &'static str, user: &str) -> Result<(), Invalid> {
    crate::core::ChannelName::user(user)
        .map(|_| ())
        .map_err(|e| Invalid::new(field, format!("{user:?} is not a valid user id: {e}")))
}

/// Where a list starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// A page number, from 1.
    Page(u32),
    /// After the notification with this id (a `next_cursor`).
    After(String),
}

/// A list request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// Where to start.
    pub position: Position,
    /// How many at most, 1 to [`MAX_LIMIT`].
    pub limit: u32,
    /// Only unread ones.
    pub unread_only: bool,
}

impl ListQuery {
    /// The offset and the upper bound on ids of the query.
    fn bounds(&self) -> (u64, &str) {
        match &self.position {
            Position::Page(page) => (
                u64::from(page.saturating_sub(1)) * u64::from(self.limit),
                ID_CEILING,
            ),
            Position::After(id) => (0, id.as_str()),
        }
    }
}

/// Above every id: the bound of a list from the newest.
const ID_CEILING: &str = "o";

/// Checks a cursor: it must be a notification id.
pub fn check_cursor(cursor: &str) -> Result<(), Invalid> {
    let ok = cursor.len() == 26
        && cursor.starts_with("n_")
        && cursor[2..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Invalid::new("cursor", "is not a cursor this hub returned"))
    }
}

/// A page of notifications.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// Newest first.
    pub notifications: Vec<Notification>,
    /// Whether older ones follow.
    pub has_more: bool,
}

impl Page {
    /// The cursor for the next page, when there is one.
    pub fn next_cursor(&self) -> Option<&str> {
        self.has_more
            .then(|| self.notifications.last().map(|n| n.id.as_str()))
            .flatten()
    }
}

/// Which notifications a change is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One, by id.
    One(String),
    /// All of the user's.
    All,
}

/// The state of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Waiting to start.
    Queued,
    /// In progress.
    Running,
    /// Finished well.
    Completed,
    /// Finished badly.
    Failed,
}

impl Status {
    /// The name used in JSON and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }

    /// Parses a name; `None` for an unknown one.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            _ => return None,
        })
    }

    /// Whether the task has finished.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Completed | Self::Failed)
    }
}

/// A background task as its user sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Task {
    /// The id the publisher chose (unique per user).
    pub id: String,
    /// The user it belongs to.
    pub user: String,
    /// Short title.
    pub title: String,
    /// Its state.
    pub status: Status,
    /// 0 to 100.
    pub progress: u8,
    /// What it is doing, or why it failed.
    pub message: Option<String>,
    /// Creation time, in milliseconds since the Unix epoch (RFC 3339 in JSON).
    #[serde(serialize_with = "rfc3339")]
    pub created_at: u64,
    /// Time of the last change (RFC 3339 in JSON).
    #[serde(serialize_with = "rfc3339")]
    pub updated_at: u64,
}

/// A publisher's create-or-update of a task, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskUpdate {
    /// The task's id.
    pub id: String,
    /// Its user.
    pub user: String,
    /// Its title.
    pub title: String,
    /// Its state.
    pub status: Status,
    /// Progress; `None` keeps the stored value (0 for a new task, 100 once completed).
    pub progress: Option<u8>,
    /// Message; `None` keeps the stored one.
    pub message: Option<String>,
    /// A notification to raise when this update finishes the task.
    pub notify: Option<NewNotification>,
}

impl TaskUpdate {
    /// Checks and builds an update from loosely typed input.
    pub fn new(
        id: &str,
        user: Option<String>,
        title: Option<String>,
        status: Option<String>,
        progress: Option<serde_json::Value>,
        message: Option<String>,
        notify: Option<NewNotification>,
    ) -> Result<Self, Invalid> {
        if id.is_empty()
            || id.len() > MAX_TASK_ID_BYTES
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
        {
            return Err(Invalid::new(
                "id",
                format!("must be 1 to {MAX_TASK_ID_BYTES} letters, digits or `_-.:` characters"),
            ));
        }
        let user = user.ok_or_else(|| Invalid::new("user", "is required"))?;
        check_user("user", &user)?;
        let title = check_title(title)?;
        let status = match status {
            None => {
                return Err(Invalid::new(
                    "status",
                    "is required: queued, running, completed or failed",
                ));
            }
            Some(s) => Status::parse(&s).ok_or_else(|| {
                Invalid::new(
                    "status",
                    format!("{s:?} is not one of queued, running, completed, failed"),
                )
            })?,
        };
        let progress = match progress {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(p) if p <= 100 => Some(p as u8),
                _ => {
                    return Err(Invalid::new(
                        "progress",
                        format!("must be a whole number from 0 to 100, not {v}"),
                    ));
                }
            },
        };
        if let Some(m) = &message {
            check_message(m)?;
        }
        Ok(Self {
            id: id.to_owned(),
            user,
            title,
            status,
            progress,
            message,
            notify,
        })
    }
}

/// The result of [`Store::put_task`].
#[derive(Debug, Clone, PartialEq)]
pub struct TaskChange {
    /// The task as stored.
    pub task: Task,
    /// Whether it did not exist before.
    pub created: bool,
    /// The notification raised because the task finished, if any.
    pub notification: Option<Notification>,
}

/// The result of a mark-read or delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// How many notifications changed.
    pub count: u64,
    /// The user's unread count afterwards.
    pub unread_count: u64,
}

/// How long finished things are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Read notifications older than this are deleted (`None`: kept).
    pub read: Option<Duration>,
    /// Completed or failed tasks not updated for this long are deleted.
    pub tasks: Option<Duration>,
    /// Broadcasts older than this are deleted, with every user's read state.
    pub broadcasts: Option<Duration>,
}

/// What a cleanup removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cleaned {
    /// Read notifications.
    pub notifications: u64,
    /// Finished tasks.
    pub tasks: u64,
    /// Broadcasts.
    pub broadcasts: u64,
}

/// A store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// No such notification or task for this user.
    #[error("not found")]
    NotFound,
    /// The database could not do it; nothing was changed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// A database error of either store, as [`StoreError::Unavailable`].
fn unavailable(e: impl std::fmt::Display) -> StoreError {
    // Logged and shown by /readyz: a driver's message may quote the database URL.
    StoreError::Unavailable(crate::redact::redact_url(&e.to_string()))
}

/// Which database, from the `[store]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// An SQLite file (`:memory:` for a private in-memory database).
    Sqlite(PathBuf),
    /// A PostgreSQL URL and the size of the connection pool.
    Postgres {
        /// `postgres://...`
        url: String,
        /// Connections at most.
        pool_size: usize,
    },
}

/// The notification and task store: SQLite or PostgreSQL. Cheap to clone.
#[derive(Clone)]
pub enum Store {
    /// Embedded SQLite.
    Sqlite(Arc<sqlite::SqliteStore>),
    /// PostgreSQL.
    Postgres(Arc<postgres::PgStore>),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind())
    }
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            Store::Sqlite($s) => $call,
            Store::Postgres($s) => $call,
        }
    };
}

impl Store {
    /// Opens the store. SQLite files are created and migrated now (an error names
    /// the `store.*` key); PostgreSQL is migrated on first use, since it may not be
    /// reachable yet when the hub starts.
    pub fn open(backend: &Backend) -> Result<Self, ConfigError> {
        Ok(match backend {
            Backend::Sqlite(path) => Self::Sqlite(Arc::new(sqlite::SqliteStore::open(path)?)),
            Backend::Postgres { url, pool_size } => {
                Self::Postgres(Arc::new(postgres::PgStore::new(url, *pool_size)?))
            }
        })
    }

    /// `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }

    /// Creates the schema if needed and checks the database answers.
    pub async fn check(&self) -> Result<(), StoreError> {
        dispatch!(self, s => s.check().await)
    }

    /// Stores one notification per user, all or none.
    pub async fn create(
        &self,
        users: &[String],
        new: &NewNotification,
    ) -> Result<Vec<Notification>, StoreError> {
        dispatch!(self, s => s.create(users, new).await)
    }

    /// Stores one notification for every user, as a single shared row.
    pub async fn create_broadcast(
        &self,
        new: &NewNotification,
    ) -> Result<Notification, StoreError> {
        dispatch!(self, s => s.create_broadcast(new).await)
    }

    /// A page of `user`'s notifications, newest first.
    pub async fn list(&self, user: &str, query: &ListQuery) -> Result<Page, StoreError> {
        dispatch!(self, s => s.list(user, query).await)
    }

    /// How many of `user`'s notifications are unread.
    pub async fn unread_count(&self, user: &str) -> Result<u64, StoreError> {
        dispatch!(self, s => s.unread_count(user).await)
    }

    /// Marks one or all of `user`'s notifications read. [`StoreError::NotFound`]
    /// when the id is not one of theirs.
    pub async fn mark_read(&self, user: &str, target: &Target) -> Result<Change, StoreError> {
        dispatch!(self, s => s.mark_read(user, target).await)
    }

    /// Deletes one or all of `user`'s notifications (for a broadcast: hides it
    /// from them). [`StoreError::NotFound`] when the id is not one of theirs.
    pub async fn delete(&self, user: &str, target: &Target) -> Result<Change, StoreError> {
        dispatch!(self, s => s.delete(user, target).await)
    }

    /// Creates or updates a task; raises its notification, in the same
    /// transaction, when this update finishes it.
    pub async fn put_task(&self, update: &TaskUpdate) -> Result<TaskChange, StoreError> {
        dispatch!(self, s => s.put_task(update).await)
    }

    /// Up to `limit` of `user`'s tasks, most recently updated first.
    pub async fn tasks(&self, user: &str, limit: u32) -> Result<Vec<Task>, StoreError> {
        dispatch!(self, s => s.tasks(user, limit).await)
    }

    /// One of `user`'s tasks.
    pub async fn task(&self, user: &str, id: &str) -> Result<Task, StoreError> {
        dispatch!(self, s => s.task(user, id).await)
    }

    /// Deletes what `retention` says is old at time `now_ms`.
    pub async fn clean_up(&self, now_ms: u64, retention: Retention) -> Result<Cleaned, StoreError> {
        dispatch!(self, s => s.clean_up(now_ms, retention).await)
    }

    /// Stores ready-made notifications as they are, in one transaction: for
    /// importing and for seeding benchmarks. Ids must come from [`new_id`].
    pub async fn import(&self, notifications: Vec<Notification>) -> Result<u64, StoreError> {
        dispatch!(self, s => s.import(notifications).await)
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A new notification id and its creation time. Within a process ids strictly
/// increase, even when the clock steps back; the random tail keeps ids of
/// several hubs sharing a database apart.
pub fn new_id() -> (String, u64) {
    static LAST: parking_lot::Mutex<(u64, u32)> = parking_lot::Mutex::new((0, 0));
    let now = now_ms();
    let (ms, counter) = {
        let mut last = LAST.lock();
        if now > last.0 {
            *last = (now, 0);
        } else if last.1 >= 0xffff {
            *last = (last.0 + 1, 0);
        } else {
            last.1 += 1;
        }
        *last
    };
    (
        format!("n_{ms:012x}{counter:04x}{:08x}", rand::random::<u32>()),
        ms,
    )
}

/// Serialises milliseconds since the epoch as RFC 3339 with milliseconds.
fn rfc3339<S: Serializer>(ms: &u64, s: S) -> Result<S::Ok, S::Error> {
    let time = UNIX_EPOCH + Duration::from_millis(*ms);
    s.collect_str(&humantime::format_rfc3339_millis(time))
}

/// The notification a task update raises, if it raises one: when the update moves
/// the task from unfinished (or absent) to finished.
fn raised(previous: Option<Status>, update: &TaskUpdate) -> Option<&NewNotification> {
    let finishes = update.status.is_finished() && !previous.is_some_and(Status::is_finished);
    update.notify.as_ref().filter(|_| finishes)
}

/// Builds the stored form of a new notification for `user`.
fn stamp(user: &str, new: &NewNotification, broadcast: bool) -> Notification {
    let (id, created_at) = new_id();
    Notification {
        id,
        user: user.to_owned(),
        title: new.title.clone(),
        message: new.message.clone(),
        kind: new.kind,
        link: new.link.clone(),
        data: new.data.clone(),
        read: false,
        created_at,
        broadcast,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_increase_and_are_cursors() {
        let mut last = String::new();
        for _ in 0..70_000 {
            let (id, _) = new_id();
            assert!(id > last, "{id} after {last}");
            assert!(check_cursor(&id).is_ok());
            last = id;
        }
        assert!(check_cursor("n_zz").is_err());
        assert!(ID_CEILING > last.as_str());
    }

    #[test]
    fn new_notifications_are_checked_by_field() {
        let ok = |t: &str, k: &str| {
            NewNotification::new(Some(t.into()), Some("m".into()), Some(k.into()), None, None)
        };
        assert!(ok("Hi", "info").is_ok());
        assert_eq!(ok(" ", "info").unwrap_err().field, "title");
        assert_eq!(ok("Hi", "debug").unwrap_err().field, "type");
        let long = "x".repeat(MAX_TITLE_CHARS + 1);
        assert_eq!(ok(&long, "info").unwrap_err().field, "title");
    }

    #[test]
    fn task_updates_are_checked_by_field() {
        let update = |id: &str, status: &str, progress: serde_json::Value| {
            TaskUpdate::new(
                id,
                Some("alice".into()),
                Some("Export".into()),
                Some(status.into()),
                Some(progress),
                None,
                None,
            )
        };
        assert!(update("export-1", "running", 40.into()).is_ok());
        assert_eq!(update("a b", "running", 1.into()).unwrap_err().field, "id");
        assert_eq!(update("a", "done", 1.into()).unwrap_err().field, "status");
        assert_eq!(
            update("a", "running", 101.into()).unwrap_err().field,
            "progress"
        );
        assert_eq!(
            update("a", "running", (-1).into()).unwrap_err().field,
            "progress"
        );
        assert_eq!(
            update("a", "running", 4.5.into()).unwrap_err().field,
            "progress"
        );
    }

    #[test]
    fn a_finishing_update_raises_its_notification_once() {
        let note = NewNotification::new(
            Some("Done".into()),
            None,
            Some("success".into()),
            None,
            None,
        )
        .unwrap();
        let mut update = TaskUpdate::new(
            "t",
            Some("a".into()),
            Some("T".into()),
            Some("completed".into()),
            None,
            None,
            Some(note),
        )
        .unwrap();
        assert!(raised(None, &update).is_some());
        assert!(raised(Some(Status::Running), &update).is_some());
        assert!(raised(Some(Status::Completed), &update).is_none());
        update.status = Status::Running;
        assert!(raised(None, &update).is_none());
    }
}
