//! The PostgreSQL store: the same tables and queries as [`super::sqlite`], through a
//! small connection pool.
//!
//! The schema is created or migrated on first use (under an advisory lock, so
//! several hubs starting at once apply it once), because the database may come up
//! after the hub. Tables go to the connection's `search_path` (set it in the URL
//! with `options=-c search_path=NAME` to keep them in a schema of their own). A 2xx
//! is answered only after the transaction has committed.

use deadpool_postgres::{Object, Pool, Runtime};
use tokio::sync::OnceCell;
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;

use super::{
    Change, Cleaned, Kind, ListQuery, NewNotification, Notification, Page, Retention, Status,
    StoreError, Target, Task, TaskChange, TaskUpdate, raised, sqlite::merge, stamp, unavailable,
};
use crate::settings::ConfigError;

/// How long a request waits for a pooled connection, or for a new one.
const POOL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A lock id of Herald's own, held while migrating.
const MIGRATION_LOCK: i64 = 0x6865_7261_6c64_0001;

/// Schema versions, applied in order; the applied count is kept in `herald_schema`.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE notifications (
    user_id    text    NOT NULL,
    id         text    NOT NULL,
    title      text    NOT NULL,
    message    text    NOT NULL,
    kind       text    NOT NULL,
    link       text,
    data       text,
    read       boolean NOT NULL DEFAULT false,
    created_at bigint  NOT NULL,
    PRIMARY KEY (user_id, id)
);
CREATE INDEX notifications_unread ON notifications (user_id) WHERE NOT read;
CREATE INDEX notifications_read_age ON notifications (created_at) WHERE read;
CREATE TABLE broadcasts (
    id         text    PRIMARY KEY,
    title      text    NOT NULL,
    message    text    NOT NULL,
    kind       text    NOT NULL,
    link       text,
    data       text,
    created_at bigint  NOT NULL
);
CREATE TABLE broadcast_state (
    user_id      text    NOT NULL,
    broadcast_id text    NOT NULL,
    read         boolean NOT NULL,
    deleted      boolean NOT NULL,
    PRIMARY KEY (user_id, broadcast_id)
);
CREATE INDEX broadcast_state_by_broadcast ON broadcast_state (broadcast_id);
CREATE TABLE tasks (
    user_id    text     NOT NULL,
    id         text     NOT NULL,
    title      text     NOT NULL,
    status     text     NOT NULL,
    progress   smallint NOT NULL,
    message    text,
    created_at bigint   NOT NULL,
    updated_at bigint   NOT NULL,
    PRIMARY KEY (user_id, id)
);
CREATE INDEX tasks_recent ON tasks (user_id, updated_at);
CREATE INDEX tasks_finished_age ON tasks (updated_at) WHERE status IN ('completed', 'failed');
"#];

const LIST_SQL: &str = "
SELECT id, user_id, title, message, kind, link, data, read, created_at, broadcast FROM (
  (SELECT id, user_id, title, message, kind, link, data, read, created_at, false AS broadcast
   FROM notifications
   WHERE user_id = $1 AND id < $2 AND (NOT $3 OR NOT read)
   ORDER BY id DESC LIMIT $4)
  UNION ALL
  (SELECT b.id, $1, b.title, b.message, b.kind, b.link, b.data, coalesce(s.read, false),
          b.created_at, true
   FROM broadcasts b
   LEFT JOIN broadcast_state s ON s.user_id = $1 AND s.broadcast_id = b.id
   WHERE b.id < $2 AND NOT coalesce(s.deleted, false) AND (NOT $3 OR NOT coalesce(s.read, false))
   ORDER BY b.id DESC LIMIT $4)
) AS page
ORDER BY id DESC LIMIT $5 OFFSET $6";

const UNREAD_SQL: &str = "
SELECT (SELECT count(*) FROM notifications WHERE user_id = $1 AND NOT read)
     + (SELECT count(*) FROM broadcasts)
     - (SELECT count(*) FROM broadcast_state WHERE user_id = $1)";

const TASK_COLUMNS: &str = "id, user_id, title, status, progress, message, created_at, updated_at";

/// The PostgreSQL store.
pub struct PgStore {
    pool: Pool,
    migrated: OnceCell<()>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("pool", &self.pool.status())
            .finish()
    }
}

/// The full text of a database error (its `Display` hides the server's message).
fn db(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(d) => StoreError::Unavailable(format!("{}: {}", d.code().code(), d.message())),
        None => unavailable(e),
    }
}

impl PgStore {
    /// A store for `url` with at most `pool_size` connections. Connects lazily.
    pub fn new(url: &str, pool_size: usize) -> Result<Self, ConfigError> {
        url.parse::<tokio_postgres::Config>()
            .map_err(|e| ConfigError::new("store.url", format!("not a PostgreSQL URL: {e}")))?;
        let mut config = deadpool_postgres::Config::new();
        config.url = Some(url.to_owned());
        let mut pool = deadpool_postgres::PoolConfig::new(pool_size);
        // A database that does not answer fails requests (503) instead of holding them.
        pool.timeouts = deadpool_postgres::Timeouts {
            wait: Some(POOL_TIMEOUT),
            create: Some(POOL_TIMEOUT),
            recycle: Some(POOL_TIMEOUT),
        };
        config.pool = Some(pool);
        let pool = config
            .create_pool(Some(Runtime::Tokio1), NoTls)
            .map_err(|e| ConfigError::new("store.url", e.to_string()))?;
        Ok(Self {
            pool,
            migrated: OnceCell::new(),
        })
    }

    /// A pooled connection to a migrated database.
    async fn client(&self) -> Result<Object, StoreError> {
        if !self.migrated.initialized() {
            // Migrate on a connection that goes back to the pool before the caller's
            // is taken, so even a pool of one cannot wait on itself.
            self.migrated
                .get_or_try_init(|| async {
                    let mut migrating = self.pool.get().await.map_err(unavailable)?;
                    migrate(&mut migrating).await
                })
                .await?;
        }
        self.pool.get().await.map_err(unavailable)
    }

    pub(super) async fn check(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client.simple_query("SELECT 1").await.map_err(db)?;
        Ok(())
    }

    pub(super) async fn create(
        &self,
        users: &[String],
        new: &NewNotification,
    ) -> Result<Vec<Notification>, StoreError> {
        let made: Vec<Notification> = users.iter().map(|u| stamp(u, new, false)).collect();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        insert(&tx, &made).await?;
        tx.commit().await.map_err(db)?;
        Ok(made)
    }

    pub(super) async fn import(&self, notifications: Vec<Notification>) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        insert(&tx, &notifications).await?;
        tx.commit().await.map_err(db)?;
        Ok(notifications.len() as u64)
    }

    pub(super) async fn create_broadcast(
        &self,
        new: &NewNotification,
    ) -> Result<Notification, StoreError> {
        let made = stamp("*", new, true);
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO broadcasts (id, title, message, kind, link, data, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &made.id,
                    &made.title,
                    &made.message,
                    &made.kind.as_str(),
                    &made.link,
                    &made.data.as_ref().map(|d| d.to_string()),
                    &(made.created_at as i64),
                ],
            )
            .await
            .map_err(db)?;
        Ok(made)
    }

    pub(super) async fn list(&self, user: &str, query: &ListQuery) -> Result<Page, StoreError> {
        let (offset, before) = query.bounds();
        let limit = i64::from(query.limit);
        let client = self.client().await?;
        let statement = client.prepare_cached(LIST_SQL).await.map_err(db)?;
        let rows = client
            .query(
                &statement,
                &[
                    &user,
                    &before,
                    &query.unread_only,
                    &(offset as i64 + limit + 1),
                    &(limit + 1),
                    &(offset as i64),
                ],
            )
            .await
            .map_err(db)?;
        let mut notifications: Vec<Notification> = rows.iter().map(row_to_notification).collect();
        let has_more = notifications.len() as i64 > limit;
        notifications.truncate(limit as usize);
        Ok(Page {
            notifications,
            has_more,
        })
    }

    pub(super) async fn unread_count(&self, user: &str) -> Result<u64, StoreError> {
        let client = self.client().await?;
        unread(&client, user).await
    }

    pub(super) async fn mark_read(
        &self,
        user: &str,
        target: &Target,
    ) -> Result<Change, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let count = match target {
            Target::All => {
                let own = tx
                    .execute(
                        "UPDATE notifications SET read = true WHERE user_id = $1 AND NOT read",
                        &[&user],
                    )
                    .await
                    .map_err(db)?;
                let shared = tx
                    .execute(
                        "INSERT INTO broadcast_state (user_id, broadcast_id, read, deleted)
                         SELECT $1, b.id, true, false FROM broadcasts b
                         ON CONFLICT (user_id, broadcast_id) DO NOTHING",
                        &[&user],
                    )
                    .await
                    .map_err(db)?;
                own + shared
            }
            Target::One(id) => {
                let own = tx
                    .query_opt(
                        "SELECT read FROM notifications WHERE user_id = $1 AND id = $2 FOR UPDATE",
                        &[&user, id],
                    )
                    .await
                    .map_err(db)?
                    .map(|r| r.get::<_, bool>(0));
                match own {
                    Some(true) => 0,
                    Some(false) => tx
                        .execute(
                            "UPDATE notifications SET read = true WHERE user_id = $1 AND id = $2",
                            &[&user, id],
                        )
                        .await
                        .map_err(db)?,
                    None => match broadcast_state(&tx, user, id).await? {
                        None | Some((_, true)) => return Err(StoreError::NotFound),
                        Some((true, false)) => 0,
                        Some((false, false)) => tx
                            .execute(
                                "INSERT INTO broadcast_state (user_id, broadcast_id, read, deleted)
                                 VALUES ($1, $2, true, false)
                                 ON CONFLICT (user_id, broadcast_id) DO NOTHING",
                                &[&user, id],
                            )
                            .await
                            .map_err(db)?,
                    },
                }
            }
        };
        let unread_count = unread(&tx, user).await?;
        tx.commit().await.map_err(db)?;
        Ok(Change {
            count,
            unread_count,
        })
    }

    pub(super) async fn delete(&self, user: &str, target: &Target) -> Result<Change, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let count = match target {
            Target::All => {
                let own = tx
                    .execute("DELETE FROM notifications WHERE user_id = $1", &[&user])
                    .await
                    .map_err(db)?;
                let hidden = tx
                    .execute(
                        "UPDATE broadcast_state SET deleted = true WHERE user_id = $1 AND NOT deleted",
                        &[&user],
                    )
                    .await
                    .map_err(db)?;
                let fresh = tx
                    .execute(
                        "INSERT INTO broadcast_state (user_id, broadcast_id, read, deleted)
                         SELECT $1, b.id, false, true FROM broadcasts b
                         ON CONFLICT (user_id, broadcast_id) DO NOTHING",
                        &[&user],
                    )
                    .await
                    .map_err(db)?;
                own + hidden + fresh
            }
            Target::One(id) => {
                let own = tx
                    .execute(
                        "DELETE FROM notifications WHERE user_id = $1 AND id = $2",
                        &[&user, id],
                    )
                    .await
                    .map_err(db)?;
                if own == 0 {
                    match broadcast_state(&tx, user, id).await? {
                        None | Some((_, true)) => return Err(StoreError::NotFound),
                        Some((read, false)) => {
                            tx.execute(
                                "INSERT INTO broadcast_state (user_id, broadcast_id, read, deleted)
                                 VALUES ($1, $2, $3, true)
                                 ON CONFLICT (user_id, broadcast_id) DO UPDATE SET deleted = true",
                                &[&user, id, &read],
                            )
                            .await
                            .map_err(db)?;
                        }
                    }
                }
                1
            }
        };
        let unread_count = unread(&tx, user).await?;
        tx.commit().await.map_err(db)?;
        Ok(Change {
            count,
            unread_count,
        })
    }

    pub(super) async fn put_task(&self, update: &TaskUpdate) -> Result<TaskChange, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let previous = tx
            .query_opt(
                "SELECT status, progress, message, created_at FROM tasks
                 WHERE user_id = $1 AND id = $2 FOR UPDATE",
                &[&update.user, &update.id],
            )
            .await
            .map_err(db)?
            .map(|r| {
                (
                    r.get::<_, String>(0),
                    r.get::<_, i16>(1).clamp(0, 100) as u8,
                    r.get::<_, Option<String>>(2),
                    r.get::<_, i64>(3).max(0) as u64,
                )
            });
        let previous_status = previous.as_ref().and_then(|p| Status::parse(&p.0));
        let task = merge(
            update,
            previous.map(|(_, p, m, c)| (p, m, c)),
            super::now_ms(),
        );
        // Two hubs may create the same new task at once; the upsert keeps one row.
        tx.execute(
            "INSERT INTO tasks (user_id, id, title, status, progress, message, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (user_id, id) DO UPDATE SET title = excluded.title,
               status = excluded.status, progress = excluded.progress,
               message = excluded.message, updated_at = excluded.updated_at",
            &[
                &task.user,
                &task.id,
                &task.title,
                &task.status.as_str(),
                &i16::from(task.progress),
                &task.message,
                &(task.created_at as i64),
                &(task.updated_at as i64),
            ],
        )
        .await
        .map_err(db)?;
        let notification = match raised(previous_status, update) {
            Some(new) => {
                let made = stamp(&update.user, new, false);
                insert(&tx, std::slice::from_ref(&made)).await?;
                Some(made)
            }
            None => None,
        };
        tx.commit().await.map_err(db)?;
        Ok(TaskChange {
            created: previous_status.is_none(),
            task,
            notification,
        })
    }

    pub(super) async fn tasks(&self, user: &str, limit: u32) -> Result<Vec<Task>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {TASK_COLUMNS} FROM tasks WHERE user_id = $1
                     ORDER BY updated_at DESC, id DESC LIMIT $2"
                ),
                &[&user, &i64::from(limit)],
            )
            .await
            .map_err(db)?;
        Ok(rows.iter().map(row_to_task).collect())
    }

    pub(super) async fn task(&self, user: &str, id: &str) -> Result<Task, StoreError> {
        let client = self.client().await?;
        client
            .query_opt(
                &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE user_id = $1 AND id = $2"),
                &[&user, &id],
            )
            .await
            .map_err(db)?
            .map(|r| row_to_task(&r))
            .ok_or(StoreError::NotFound)
    }

    pub(super) async fn clean_up(
        &self,
        now_ms: u64,
        retention: Retention,
    ) -> Result<Cleaned, StoreError> {
        let before = |d: Option<std::time::Duration>| {
            d.map(|d| now_ms.saturating_sub(d.as_millis() as u64) as i64)
        };
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let mut cleaned = Cleaned::default();
        if let Some(t) = before(retention.read) {
            cleaned.notifications = tx
                .execute(
                    "DELETE FROM notifications WHERE read AND created_at < $1",
                    &[&t],
                )
                .await
                .map_err(db)?;
        }
        if let Some(t) = before(retention.tasks) {
            cleaned.tasks = tx
                .execute(
                    "DELETE FROM tasks WHERE status IN ('completed', 'failed') AND updated_at < $1",
                    &[&t],
                )
                .await
                .map_err(db)?;
        }
        if let Some(t) = before(retention.broadcasts) {
            tx.execute(
                "DELETE FROM broadcast_state WHERE broadcast_id IN
                   (SELECT id FROM broadcasts WHERE created_at < $1)",
                &[&t],
            )
            .await
            .map_err(db)?;
            cleaned.broadcasts = tx
                .execute("DELETE FROM broadcasts WHERE created_at < $1", &[&t])
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(cleaned)
    }
}

async fn migrate(client: &mut Object) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(db)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS herald_schema (version integer NOT NULL)")
        .await
        .map_err(db)?;
    let applied = tx
        .query_opt("SELECT version FROM herald_schema", &[])
        .await
        .map_err(db)?
        .map(|r| r.get::<_, i32>(0).max(0) as usize)
        .unwrap_or(0);
    for sql in MIGRATIONS.iter().skip(applied) {
        tx.batch_execute(sql).await.map_err(db)?;
    }
    tx.execute("DELETE FROM herald_schema", &[])
        .await
        .map_err(db)?;
    tx.execute(
        "INSERT INTO herald_schema (version) VALUES ($1)",
        &[&(MIGRATIONS.len().max(applied) as i32)],
    )
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)
}

/// Rows per multi-row INSERT (9 parameters each; PostgreSQL allows 65,535).
const INSERT_CHUNK: usize = 1000;

async fn insert(
    tx: &deadpool_postgres::Transaction<'_>,
    notifications: &[Notification],
) -> Result<(), StoreError> {
    for chunk in notifications.chunks(INSERT_CHUNK) {
        let mut sql = String::from(
            "INSERT INTO notifications (user_id, id, title, message, kind, link, data, read, created_at) VALUES ",
        );
        let owned: Vec<(&'static str, Option<String>, i64)> = chunk
            .iter()
            .map(|n| {
                (
                    n.kind.as_str(),
                    n.data.as_ref().map(|d| d.to_string()),
                    n.created_at as i64,
                )
            })
            .collect();
        let mut values: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(chunk.len() * 9);
        for (i, (n, (kind, data, created_at))) in chunk.iter().zip(&owned).enumerate() {
            if i > 0 {
                sql.push(',');
            }
            let b = i * 9;
            sql.push_str(&format!(
                "(${},${},${},${},${},${},${},${},${})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6,
                b + 7,
                b + 8,
                b + 9
            ));
            values.extend([
                &n.user as &(dyn ToSql + Sync),
                &n.id,
                &n.title,
                &n.message,
                kind,
                &n.link,
                data,
                &n.read,
                created_at,
            ]);
        }
        tx.execute(sql.as_str(), &values).await.map_err(db)?;
    }
    Ok(())
}

async fn broadcast_state(
    tx: &deadpool_postgres::Transaction<'_>,
    user: &str,
    id: &str,
) -> Result<Option<(bool, bool)>, StoreError> {
    Ok(tx
        .query_opt(
            "SELECT coalesce(s.read, false), coalesce(s.deleted, false) FROM broadcasts b
             LEFT JOIN broadcast_state s ON s.user_id = $1 AND s.broadcast_id = b.id
             WHERE b.id = $2",
            &[&user, &id],
        )
        .await
        .map_err(db)?
        .map(|r| (r.get(0), r.get(1))))
}

async fn unread<C: deadpool_postgres::GenericClient>(
    client: &C,
    user: &str,
) -> Result<u64, StoreError> {
    let row = client.query_one(UNREAD_SQL, &[&user]).await.map_err(db)?;
    Ok(row.get::<_, i64>(0).max(0) as u64)
}

fn row_to_notification(r: &tokio_postgres::Row) -> Notification {
    let kind: String = r.get(4);
    let data: Option<String> = r.get(6);
    Notification {
        id: r.get(0),
        user: r.get(1),
        title: r.get(2),
        message: r.get(3),
        // Only valid kinds are ever written.
        kind: Kind::parse(&kind).unwrap_or(Kind::Info),
        link: r.get(5),
        data: data.and_then(|d| serde_json::from_str(&d).ok()),
        read: r.get(7),
        created_at: r.get::<_, i64>(8).max(0) as u64,
        broadcast: r.get(9),
    }
}

fn row_to_task(r: &tokio_postgres::Row) -> Task {
    let status: String = r.get(3);
    Task {
        id: r.get(0),
        user: r.get(1),
        title: r.get(2),
        // Only valid statuses are ever written.
        status: Status::parse(&status).unwrap_or(Status::Failed),
        progress: r.get::<_, i16>(4).clamp(0, 100) as u8,
        message: r.get(5),
        created_at: r.get::<_, i64>(6).max(0) as u64,
        updated_at: r.get::<_, i64>(7).max(0) as u64,
    }
}
