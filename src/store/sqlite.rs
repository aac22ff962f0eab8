//! The embedded SQLite store: one file (created and migrated on first start), in
//! WAL mode so readers never wait for the writer.
//!
//! SQLite calls block, so every operation runs on Tokio's blocking pool, never on
//! the async workers. Writes go through one connection (SQLite has one writer at a
//! time anyway; a mutex queues them in-process instead of busy-waiting on the file
//! lock); reads use a few connections of their own. A 2xx is answered only after
//! the transaction has committed. With `synchronous = NORMAL` in WAL mode a commit
//! survives a crash or kill of the process; only a power loss or OS crash can lose
//! the last commits (`synchronous = FULL` would fsync every commit, at several
//! times the cost of a create).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, params};

use super::{
    Change, Cleaned, Kind, ListQuery, NewNotification, Notification, Page, Retention, Status,
    StoreError, Target, Task, TaskChange, TaskUpdate, raised, stamp, unavailable,
};
use crate::settings::ConfigError;

/// Read connections of a file database.
const READERS: usize = 4;

/// Schema versions, applied in order; the applied count is kept in `herald_schema`.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE notifications (
    user_id    TEXT    NOT NULL,
    id         TEXT    NOT NULL,
    title      TEXT    NOT NULL,
    message    TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    link       TEXT,
    data       TEXT,
    read       INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, id)
) WITHOUT ROWID;
CREATE INDEX notifications_unread ON notifications (user_id) WHERE read = 0;
CREATE INDEX notifications_read_age ON notifications (created_at) WHERE read = 1;
CREATE TABLE broadcasts (
    id         TEXT    PRIMARY KEY,
    title      TEXT    NOT NULL,
    message    TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    link       TEXT,
    data       TEXT,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE broadcast_state (
    user_id      TEXT    NOT NULL,
    broadcast_id TEXT    NOT NULL,
    read         INTEGER NOT NULL,
    deleted      INTEGER NOT NULL,
    PRIMARY KEY (user_id, broadcast_id)
) WITHOUT ROWID;
CREATE INDEX broadcast_state_by_broadcast ON broadcast_state (broadcast_id);
CREATE TABLE tasks (
    user_id    TEXT    NOT NULL,
    id         TEXT    NOT NULL,
    title      TEXT    NOT NULL,
    status     TEXT    NOT NULL,
    progress   INTEGER NOT NULL,
    message    TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, id)
) WITHOUT ROWID;
CREATE INDEX tasks_recent ON tasks (user_id, updated_at);
CREATE INDEX tasks_finished_age ON tasks (updated_at) WHERE status IN ('completed', 'failed');
"#];

/// The columns every notification query returns, in [`row_to_notification`]'s order.
const LIST_SQL: &str = "
SELECT id, user_id, title, message, kind, link, data, read, created_at, broadcast FROM (
  SELECT * FROM (
    SELECT id, user_id, title, message, kind, link, data, read, created_at, 0 AS broadcast
    FROM notifications
    WHERE user_id = ?1 AND id < ?2 AND (?3 = 0 OR read = 0)
    ORDER BY id DESC LIMIT ?4)
  UNION ALL
  SELECT * FROM (
    SELECT b.id, ?1, b.title, b.message, b.kind, b.link, b.data, coalesce(s.read, 0),
           b.created_at, 1
    FROM broadcasts b
    LEFT JOIN broadcast_state s ON s.user_id = ?1 AND s.broadcast_id = b.id
    WHERE b.id < ?2 AND coalesce(s.deleted, 0) = 0 AND (?3 = 0 OR coalesce(s.read, 0) = 0)
    ORDER BY b.id DESC LIMIT ?4)
)
ORDER BY id DESC LIMIT ?5 OFFSET ?6";

/// A user's unread notifications: their own, plus broadcasts they have neither read
/// nor deleted (a state row exists only for those).
const UNREAD_SQL: &str = "
SELECT (SELECT count(*) FROM notifications WHERE user_id = ?1 AND read = 0)
     + (SELECT count(*) FROM broadcasts)
     - (SELECT count(*) FROM broadcast_state WHERE user_id = ?1)";

/// The SQLite store.
pub struct SqliteStore {
    writer: Arc<Mutex<Connection>>,
    /// Empty for an in-memory database, which only its own connection can see.
    readers: Vec<Arc<Mutex<Connection>>>,
    next_reader: AtomicUsize,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("readers", &self.readers.len())
            .finish()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its schema up to
    /// date. `:memory:` gives a private in-memory database.
    pub fn open(path: &Path) -> Result<Self, ConfigError> {
        let error = |e: &dyn std::fmt::Display| {
            ConfigError::new(
                "store.path",
                format!("cannot open SQLite database {}: {e}", path.display()),
            )
        };
        let memory = path.as_os_str() == ":memory:";
        let mut writer = Connection::open(path).map_err(|e| error(&e))?;
        configure(&writer, memory).map_err(|e| error(&e))?;
        migrate(&mut writer).map_err(|e| error(&e))?;
        let mut readers = Vec::new();
        if !memory {
            for _ in 0..READERS {
                let reader = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(|e| error(&e))?;
                reader
                    .busy_timeout(std::time::Duration::from_secs(5))
                    .map_err(|e| error(&e))?;
                readers.push(Arc::new(Mutex::new(reader)));
            }
        }
        Ok(Self {
            writer: Arc::new(Mutex::new(writer)),
            readers,
            next_reader: AtomicUsize::new(0),
        })
    }

    /// Runs `f` in a write transaction on the blocking pool; commits if it succeeds.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let writer = self.writer.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = writer.lock();
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            let value = f(&tx)?;
            tx.commit().map_err(unavailable)?;
            Ok(value)
        })
        .await
        .map_err(unavailable)?
    }

    /// Runs `f` on a read connection on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = if self.readers.is_empty() {
            self.writer.clone()
        } else {
            let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
            self.readers[i].clone()
        };
        tokio::task::spawn_blocking(move || f(&conn.lock()))
            .await
            .map_err(unavailable)?
    }

    pub(super) async fn check(&self) -> Result<(), StoreError> {
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(unavailable))
            .await
    }

    pub(super) async fn create(
        &self,
        users: &[String],
        new: &NewNotification,
    ) -> Result<Vec<Notification>, StoreError> {
        let made: Vec<Notification> = users.iter().map(|u| stamp(u, new, false)).collect();
        self.write(move |tx| {
            insert(tx, &made)?;
            Ok(made)
        })
        .await
    }

    pub(super) async fn import(&self, notifications: Vec<Notification>) -> Result<u64, StoreError> {
        self.write(move |tx| {
            insert(tx, &notifications)?;
            Ok(notifications.len() as u64)
        })
        .await
    }

    pub(super) async fn create_broadcast(
        &self,
        new: &NewNotification,
    ) -> Result<Notification, StoreError> {
        let made = stamp("*", new, true);
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO broadcasts (id, title, message, kind, link, data, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    made.id,
                    made.title,
                    made.message,
                    made.kind.as_str(),
                    made.link,
                    made.data.as_ref().map(|d| d.to_string()),
                    made.created_at as i64
                ],
            )
            .map_err(unavailable)?;
            Ok(made)
        })
        .await
    }

    pub(super) async fn list(&self, user: &str, query: &ListQuery) -> Result<Page, StoreError> {
        let user = user.to_owned();
        let query = query.clone();
        self.read(move |c| {
            let (offset, before) = query.bounds();
            let limit = u64::from(query.limit);
            let mut statement = c.prepare_cached(LIST_SQL).map_err(unavailable)?;
            let rows = statement
                .query_map(
                    params![
                        user,
                        before,
                        query.unread_only,
                        (offset + limit + 1) as i64,
                        (limit + 1) as i64,
                        offset as i64
                    ],
                    row_to_notification,
                )
                .map_err(unavailable)?;
            let mut notifications = rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)?;
            let has_more = notifications.len() as u64 > limit;
            notifications.truncate(limit as usize);
            Ok(Page {
                notifications,
                has_more,
            })
        })
        .await
    }

    pub(super) async fn unread_count(&self, user: &str) -> Result<u64, StoreError> {
        let user = user.to_owned();
        self.read(move |c| unread(c, &user)).await
    }

    pub(super) async fn mark_read(
        &self,
        user: &str,
        target: &Target,
    ) -> Result<Change, StoreError> {
        let user = user.to_owned();
        let target = target.clone();
        self.write(move |tx| {
            let count = match &target {
                Target::All => {
                    let own = tx
                        .execute(
                            "UPDATE notifications SET read = 1 WHERE user_id = ?1 AND read = 0",
                            params![user],
                        )
                        .map_err(unavailable)?;
                    let shared = add_broadcast_states(tx, &user, true, false)?;
                    (own + shared) as u64
                }
                Target::One(id) => {
                    let own: Option<bool> = tx
                        .query_row(
                            "SELECT read FROM notifications WHERE user_id = ?1 AND id = ?2",
                            params![user, id],
                            |r| r.get(0),
                        )
                        .optional()
                        .map_err(unavailable)?;
                    match own {
                        Some(true) => 0,
                        Some(false) => tx
                            .execute(
                                "UPDATE notifications SET read = 1 WHERE user_id = ?1 AND id = ?2",
                                params![user, id],
                            )
                            .map_err(unavailable)? as u64,
                        None => match broadcast_state(tx, &user, id)? {
                            None => return Err(StoreError::NotFound),
                            Some((_, true)) => return Err(StoreError::NotFound),
                            Some((true, false)) => 0,
                            Some((false, false)) => {
                                tx.execute(
                                    "INSERT INTO broadcast_state (user_id, broadcast_id, read, deleted)
                                     VALUES (?1, ?2, 1, 0)",
                                    params![user, id],
                                )
                                .map_err(unavailable)?;
                                1
                            }
                        },
                    }
                }
            };
            Ok(Change {
                count,
                unread_count: unread(tx, &user)?,
            })
        })
        .await
    }

    pub(super) async fn delete(&self, user: &str, target: &Target) -> Result<Change, StoreError> {
        let user = user.to_owned();
        let target = target.clone();
        self.write(move |tx| {
            let count = match &target {
                Target::All => {
                    let own = tx
                        .execute("DELETE FROM notifications WHERE user_id = ?1", params![user])
                        .map_err(unavailable)?;
                    let hidden = tx
                        .execute(
                            "UPDATE broadcast_state SET deleted = 1 WHERE user_id = ?1 AND deleted = 0",
                            params![user],
                        )
                        .map_err(unavailable)?;
                    let fresh = add_broadcast_states(tx, &user, false, true)?;
                    (own + hidden + fresh) as u64
                }
                Target::One(id) => {
                    let own = tx
                        .execute(
                            "DELETE FROM notifications WHERE user_id = ?1 AND id = ?2",
                            params![user, id],
                        )
                        .map_err(unavailable)?;
                    if own == 0 {
                        match broadcast_state(tx, &user, id)? {
                            None | Some((_, true)) => return Err(StoreError::NotFound),
                            Some((read, false)) => {
                                tx.execute(
                                    "INSERT INTO broadcast_state (user_id, broadcast_id, read, deleted)
                                     VALUES (?1, ?2, ?3, 1)
                                     ON CONFLICT (user_id, broadcast_id) DO UPDATE SET deleted = 1",
                                    params![user, id, read],
                                )
                                .map_err(unavailable)?;
                            }
                        }
                    }
                    1
                }
            };
            Ok(Change {
                count,
                unread_count: unread(tx, &user)?,
            })
        })
        .await
    }

    pub(super) async fn put_task(&self, update: &TaskUpdate) -> Result<TaskChange, StoreError> {
        let update = update.clone();
        self.write(move |tx| {
            let previous: Option<(String, u8, Option<String>, i64)> = tx
                .query_row(
                    "SELECT status, progress, message, created_at FROM tasks
                     WHERE user_id = ?1 AND id = ?2",
                    params![update.user, update.id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()
                .map_err(unavailable)?;
            let now = super::now_ms();
            let previous_status = previous.as_ref().and_then(|p| Status::parse(&p.0));
            let task = merge(&update, previous.map(|(_, p, m, c)| (p, m, c as u64)), now);
            tx.execute(
                "INSERT INTO tasks (user_id, id, title, status, progress, message, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (user_id, id) DO UPDATE SET title = excluded.title,
                   status = excluded.status, progress = excluded.progress,
                   message = excluded.message, updated_at = excluded.updated_at",
                params![
                    task.user,
                    task.id,
                    task.title,
                    task.status.as_str(),
                    task.progress,
                    task.message,
                    task.created_at as i64,
                    task.updated_at as i64
                ],
            )
            .map_err(unavailable)?;
            let notification = match raised(previous_status, &update) {
                Some(new) => {
                    let made = stamp(&update.user, new, false);
                    insert(tx, std::slice::from_ref(&made))?;
                    Some(made)
                }
                None => None,
            };
            Ok(TaskChange {
                created: previous_status.is_none(),
                task,
                notification,
            })
        })
        .await
    }

    pub(super) async fn tasks(&self, user: &str, limit: u32) -> Result<Vec<Task>, StoreError> {
        let user = user.to_owned();
        self.read(move |c| {
            let mut statement = c
                .prepare_cached(
                    "SELECT id, user_id, title, status, progress, message, created_at, updated_at
                     FROM tasks WHERE user_id = ?1 ORDER BY updated_at DESC, id DESC LIMIT ?2",
                )
                .map_err(unavailable)?;
            let rows = statement
                .query_map(params![user, limit], row_to_task)
                .map_err(unavailable)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
        })
        .await
    }

    pub(super) async fn task(&self, user: &str, id: &str) -> Result<Task, StoreError> {
        let (user, id) = (user.to_owned(), id.to_owned());
        self.read(move |c| {
            c.query_row(
                "SELECT id, user_id, title, status, progress, message, created_at, updated_at
                 FROM tasks WHERE user_id = ?1 AND id = ?2",
                params![user, id],
                row_to_task,
            )
            .optional()
            .map_err(unavailable)?
            .ok_or(StoreError::NotFound)
        })
        .await
    }

    pub(super) async fn clean_up(
        &self,
        now_ms: u64,
        retention: Retention,
    ) -> Result<Cleaned, StoreError> {
        let before = move |d: Option<std::time::Duration>| {
            d.map(|d| now_ms.saturating_sub(d.as_millis() as u64) as i64)
        };
        self.write(move |tx| {
            let mut cleaned = Cleaned::default();
            if let Some(t) = before(retention.read) {
                cleaned.notifications = tx
                    .execute(
                        "DELETE FROM notifications WHERE read = 1 AND created_at < ?1",
                        params![t],
                    )
                    .map_err(unavailable)? as u64;
            }
            if let Some(t) = before(retention.tasks) {
                cleaned.tasks = tx
                    .execute(
                        "DELETE FROM tasks WHERE status IN ('completed', 'failed') AND updated_at < ?1",
                        params![t],
                    )
                    .map_err(unavailable)? as u64;
            }
            if let Some(t) = before(retention.broadcasts) {
                tx.execute(
                    "DELETE FROM broadcast_state WHERE broadcast_id IN
                       (SELECT id FROM broadcasts WHERE created_at < ?1)",
                    params![t],
                )
                .map_err(unavailable)?;
                cleaned.broadcasts = tx
                    .execute("DELETE FROM broadcasts WHERE created_at < ?1", params![t])
                    .map_err(unavailable)? as u64;
            }
            Ok(cleaned)
        })
        .await
    }
}

/// Builds the stored task from an update and the stored values it keeps.
pub(super) fn merge(
    update: &TaskUpdate,
    previous: Option<(u8, Option<String>, u64)>,
    now: u64,
) -> Task {
    let (progress, message, created_at) = match previous {
        Some((p, m, c)) => (p, m, c),
        None => (0, None, now),
    };
    let progress = update.progress.unwrap_or(match update.status {
        Status::Completed => 100,
        _ => progress,
    });
    Task {
        id: update.id.clone(),
        user: update.user.clone(),
        title: update.title.clone(),
        status: update.status,
        progress,
        message: update.message.clone().or(message),
        created_at,
        updated_at: now.max(created_at),
    }
}

fn configure(c: &Connection, memory: bool) -> rusqlite::Result<()> {
    c.busy_timeout(std::time::Duration::from_secs(5))?;
    if !memory {
        c.pragma_update(None, "journal_mode", "WAL")?;
    }
    c.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(())
}

fn migrate(c: &mut Connection) -> rusqlite::Result<()> {
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS herald_schema (version INTEGER NOT NULL)")?;
    let version: Option<i64> = tx
        .query_row("SELECT version FROM herald_schema", [], |r| r.get(0))
        .optional()?;
    let applied = version.unwrap_or(0).max(0) as usize;
    for sql in MIGRATIONS.iter().skip(applied) {
        tx.execute_batch(sql)?;
    }
    tx.execute("DELETE FROM herald_schema", [])?;
    tx.execute(
        "INSERT INTO herald_schema (version) VALUES (?1)",
        params![MIGRATIONS.len().max(applied) as i64],
    )?;
    tx.commit()
}

fn insert(tx: &Transaction<'_>, notifications: &[Notification]) -> Result<(), StoreError> {
    let mut statement = tx
        .prepare_cached(
            "INSERT INTO notifications (user_id, id, title, message, kind, link, data, read, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .map_err(unavailable)?;
    for n in notifications {
        statement
            .execute(params![
                n.user,
                n.id,
                n.title,
                n.message,
                n.kind.as_str(),
                n.link,
                n.data.as_ref().map(|d| d.to_string()),
                n.read,
                n.created_at as i64
            ])
            .map_err(unavailable)?;
    }
    Ok(())
}

/// Whether broadcast `id` exists, and if so the user's (read, deleted) state.
/// Gives `user` a state row, `read` and `deleted` as given, for every broadcast
/// they have none for yet (marking all read or deleting all reaches broadcasts
/// the user never touched). Returns how many rows it added.
fn add_broadcast_states(
    c: &Connection,
    user: &str,
    read: bool,
    deleted: bool,
) -> Result<usize, StoreError> {
    c.execute(
        "INSERT INTO broadcast_state (user_id, broadcast_id, read, deleted)
         SELECT ?1, b.id, ?2, ?3 FROM broadcasts b
         WHERE NOT EXISTS (SELECT 1 FROM broadcast_state s
                           WHERE s.user_id = ?1 AND s.broadcast_id = b.id)",
        params![user, read, deleted],
    )
    .map_err(unavailable)
}

fn broadcast_state(
    c: &Connection,
    user: &str,
    id: &str,
) -> Result<Option<(bool, bool)>, StoreError> {
    c.query_row(
        "SELECT coalesce(s.read, 0), coalesce(s.deleted, 0) FROM broadcasts b
         LEFT JOIN broadcast_state s ON s.user_id = ?1 AND s.broadcast_id = b.id
         WHERE b.id = ?2",
        params![user, id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
    .map_err(unavailable)
}

fn unread(c: &Connection, user: &str) -> Result<u64, StoreError> {
    c.prepare_cached(UNREAD_SQL)
        .and_then(|mut s| s.query_row(params![user], |r| r.get::<_, i64>(0)))
        .map(|n| n.max(0) as u64)
        .map_err(unavailable)
}

fn row_to_notification(r: &rusqlite::Row<'_>) -> rusqlite::Result<Notification> {
    let kind: String = r.get(4)?;
    let data: Option<String> = r.get(6)?;
    Ok(Notification {
        id: r.get(0)?,
        user: r.get(1)?,
        title: r.get(2)?,
        message: r.get(3)?,
        // Only valid kinds are ever written.
        kind: Kind::parse(&kind).unwrap_or(Kind::Info),
        link: r.get(5)?,
        data: data.and_then(|d| serde_json::from_str(&d).ok()),
        read: r.get(7)?,
        created_at: r.get::<_, i64>(8)?.max(0) as u64,
        broadcast: r.get(9)?,
    })
}

fn row_to_task(r: &rusqlite::Row<'_>) -> rusqlite::Result<Task> {
    let status: String = r.get(3)?;
    Ok(Task {
        id: r.get(0)?,
        user: r.get(1)?,
        title: r.get(2)?,
        // Only valid statuses are ever written.
        status: Status::parse(&status).unwrap_or(Status::Failed),
        progress: r.get(4)?,
        message: r.get(5)?,
        created_at: r.get::<_, i64>(6)?.max(0) as u64,
        updated_at: r.get::<_, i64>(7)?.max(0) as u64,
    })
}
