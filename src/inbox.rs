//! The notification inbox and tasks as the hub offers them: every change is
//! stored first, then pushed on the user's channel (`user:{id}`) through the
//! hub's normal publish path, so every open tab of the user stays in step.
//!
//! | change                 | event on `user:{id}`   | data                                      |
//! |------------------------|------------------------|-------------------------------------------|
//! | notification created   | `notification.created` | `{"notification": N, "unread_count": n}`  |
//! | marked read            | `notification.read`    | `{"ids": [...], "all": b, "unread_count": n}` |
//! | deleted                | `notification.deleted` | `{"ids": [...], "all": b, "unread_count": n}` |
//! | task created / updated | `task.created` / `task.updated` | the task                         |
//!
//! A broadcast goes to `$broadcast` as `notification.created` without a count
//! (each user's differs). A change that is stored but whose event cannot be
//! published (the broker is down) is not undone: it is logged, and clients see it
//! on their next fetch.
//!
//! Within a node, a user's changes are committed and pushed one at a time
//! ([`UserLocks`]), so the events of a user's channel carry unread counts in the
//! order of the changes: the last event's count is the stored count.
//!
//! [`spawn_upkeep`] runs the retention cleanup of the `[store]` section.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::broker::Accepted;
use crate::core::{ChannelName, NewEvent};
use crate::health::Readiness;
use crate::hub::{Hub, PublishError};
use crate::store::{
    Change, Cleaned, ListQuery, NewNotification, Notification, Page, StoreError, Target,
    TaskChange, TaskUpdate,
};

/// Live event types of the inbox.
pub mod events {
    /// A notification was created.
    pub const CREATED: &str = "notification.created";
    /// Notifications were marked read.
    pub const READ: &str = "notification.read";
    /// Notifications were deleted.
    pub const DELETED: &str = "notification.deleted";
    /// A task was created.
    pub const TASK_CREATED: &str = "task.created";
    /// A task was updated.
    pub const TASK_UPDATED: &str = "task.updated";
}

/// Locks that order the changes of one user: a change holds its user's lock from
/// before its commit until its event is published. Users are spread over a fixed
/// number of locks, so memory does not grow with users.
#[derive(Debug)]
pub struct UserLocks {
    shards: Box<[tokio::sync::Mutex<()>]>,
}

impl Default for UserLocks {
    fn default() -> Self {
        Self {
            shards: (0..256).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }
}

impl UserLocks {
    /// Waits for `user`'s turn.
    pub async fn lock(&self, user: &str) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        user.hash(&mut hasher);
        let shard = (hasher.finish() % self.shards.len() as u64) as usize;
        self.shards[shard].lock().await
    }
}

/// The inbox: notifications and tasks, stored, then pushed live. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Inbox {
    store: crate::store::Store,
    hub: Hub,
    locks: Arc<UserLocks>,
}

impl Inbox {
    /// The inbox kept in `store`, whose changes are published on `hub`.
    pub fn new(store: crate::store::Store, hub: Hub) -> Self {
        Self {
            store,
            hub,
            locks: Arc::default(),
        }
    }

    /// Where notifications and tasks are stored. Changes made directly on it are
    /// not pushed to users; the methods of the inbox are.
    pub fn store(&self) -> &crate::store::Store {
        &self.store
    }

    fn user_locks(&self) -> &UserLocks {
        &self.locks
    }

    async fn publish(&self, event: NewEvent) -> Result<Accepted, PublishError> {
        self.hub.publish(event).await
    }

    /// Stores one notification for each of `users` (all or none) and pushes each
    /// to its user with their new unread count.
    pub async fn notify(
        &self,
        users: &[String],
        new: &NewNotification,
    ) -> Result<Vec<Notification>, StoreError> {
        if let [user] = users {
            let _turn = self.user_locks().lock(user).await;
            let made = self.store.create(users, new).await?;
            for n in &made {
                self.push_created(n).await;
            }
            return Ok(made);
        }
        // Several users: one transaction, then each user's count and event in their
        // turn (counted after the commit, so still the latest when published).
        let made = self.store.create(users, new).await?;
        for n in &made {
            let _turn = self.user_locks().lock(&n.user).await;
            self.push_created(n).await;
        }
        Ok(made)
    }

    /// Stores a notification for every user, as one shared row, and pushes it on
    /// `$broadcast`.
    pub async fn broadcast_notification(
        &self,
        new: &NewNotification,
    ) -> Result<Notification, StoreError> {
        let made = self.store.create_broadcast(new).await?;
        let event = NewEvent::json(ChannelName::broadcast(), &json!({ "notification": made }));
        self.push(event, events::CREATED).await;
        Ok(made)
    }

    /// A page of `user`'s notifications and their unread count.
    pub async fn notifications(
        &self,
        user: &str,
        query: &ListQuery,
    ) -> Result<(Page, u64), StoreError> {
        let page = self.store.list(user, query).await?;
        let unread = self.store.unread_count(user).await?;
        Ok((page, unread))
    }

    /// Marks one or all of `user`'s notifications read and tells their tabs.
    pub async fn mark_read(&self, user: &str, target: &Target) -> Result<Change, StoreError> {
        let _turn = self.user_locks().lock(user).await;
        let change = self.store.mark_read(user, target).await?;
        if change.count > 0 {
            self.push_change(user, events::READ, target, &change).await;
        }
        Ok(change)
    }

    /// Deletes one or all of `user`'s notifications and tells their tabs.
    pub async fn delete_notifications(
        &self,
        user: &str,
        target: &Target,
    ) -> Result<Change, StoreError> {
        let _turn = self.user_locks().lock(user).await;
        let change = self.store.delete(user, target).await?;
        if change.count > 0 {
            self.push_change(user, events::DELETED, target, &change)
                .await;
        }
        Ok(change)
    }

    /// Creates or updates a task and pushes it to its user, with the notification
    /// it raises when it finishes.
    pub async fn put_task(&self, update: &TaskUpdate) -> Result<TaskChange, StoreError> {
        let _turn = self.user_locks().lock(&update.user).await;
        let change = self.store.put_task(update).await?;
        let kind = if change.created {
            events::TASK_CREATED
        } else {
            events::TASK_UPDATED
        };
        let event = user_channel(&change.task.user)
            .and_then(|channel| NewEvent::json(channel, &change.task).ok());
        if let Some(event) = event {
            self.push(Ok(event), kind).await;
        }
        if let Some(n) = &change.notification {
            self.push_created(n).await;
        }
        Ok(change)
    }

    async fn push_created(&self, n: &Notification) {
        let unread = match self.store.unread_count(&n.user).await {
            Ok(count) => count,
            Err(e) => {
                tracing::warn!(error = %e, "notification stored but not pushed");
                return;
            }
        };
        if let Some(channel) = user_channel(&n.user) {
            let data = json!({ "notification": n, "unread_count": unread });
            self.push(NewEvent::json(channel, &data), events::CREATED)
                .await;
        }
    }

    async fn push_change(&self, user: &str, kind: &str, target: &Target, change: &Change) {
        let (ids, all) = match target {
            Target::One(id) => (vec![id.as_str()], false),
            Target::All => (Vec::new(), true),
        };
        if let Some(channel) = user_channel(user) {
            let data = json!({ "ids": ids, "all": all, "unread_count": change.unread_count });
            self.push(NewEvent::json(channel, &data), kind).await;
        }
    }

    async fn push(&self, event: Result<NewEvent, serde_json::Error>, kind: &str) {
        let result = match event {
            Ok(event) => self
                .publish(event.with_type(kind))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = result {
            tracing::warn!(event = kind, error = %e, "inbox change stored but not pushed");
        }
    }
}

/// The channel of a stored user id (always valid: ids are checked before storing).
fn user_channel(user: &str) -> Option<ChannelName> {
    ChannelName::user(user).ok()
}

/// How often the store's health is checked for `/readyz`.
const CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs the retention cleanup every `cleanup_interval` (the first one at start)
/// and reports the store's health in `readiness`, until `stop`.
pub fn spawn_upkeep(
    store: crate::store::Store,
    cleanup_interval: Duration,
    retention: crate::store::Retention,
    readiness: Readiness,
    stop: CancellationToken,
) {
    if let crate::store::Store::Sqlite(_) = store {
        // Opened and migrated already.
        readiness.ready();
    }
    tokio::spawn(async move {
        let mut check = tokio::time::interval(CHECK_EVERY);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut cleanup = tokio::time::interval(cleanup_interval);
        cleanup.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = check.tick() => match store.check().await {
                    Ok(()) => readiness.ready(),
                    Err(e) => readiness.unready(e.to_string()),
                },
                _ = cleanup.tick() => {
                    match store.clean_up(crate::store::now_ms(), retention).await {
                        Ok(Cleaned { notifications, tasks, broadcasts }) => {
                            tracing::debug!(notifications, tasks, broadcasts, "store cleaned up")
                        }
                        Err(e) => tracing::warn!(error = %e, "store cleanup failed"),
                    }
                }
            }
        }
    });
}
