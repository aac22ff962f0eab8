//! The `[store]` section: where notifications and tasks are kept, and for how long.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Backend, Retention};
use crate::settings::ConfigError;

/// Where the notification inbox and tasks are stored, and their retention.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite` (the default) or `postgres`.
    pub kind: String,
    /// The SQLite file, created on first start; `:memory:` for a database that
    /// lives as long as the process.
    pub path: PathBuf,
    /// The PostgreSQL URL, for `kind = "postgres"`.
    pub url: Option<String>,
    /// PostgreSQL connections at most.
    pub pool_size: usize,
    /// Read notifications older than this many days are deleted (0: kept).
    pub read_retention_days: u32,
    /// Completed or failed tasks not updated for this many days are deleted (0: kept).
    pub task_retention_days: u32,
    /// Broadcasts older than this many days are deleted, read or not (0: kept).
    pub broadcast_retention_days: u32,
    /// How often the retention cleanup runs.
    #[serde(with = "humantime_serde")]
    pub cleanup_interval: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            kind: "sqlite".into(),
            path: PathBuf::from("herald.db"),
            url: None,
            pool_size: 16,
            read_retention_days: 30,
            task_retention_days: 7,
            broadcast_retention_days: 90,
            cleanup_interval: Duration::from_secs(3600),
        }
    }
}

const DAY: Duration = Duration::from_secs(86_400);

impl StoreConfig {
    /// Checks the section and says which database it selects.
    pub fn backend(&self) -> Result<Backend, ConfigError> {
        match self.kind.as_str() {
            "sqlite" => {
                if self.path.as_os_str().is_empty() {
                    return Err(ConfigError::new("store.path", "must not be empty"));
                }
                Ok(Backend::Sqlite(self.path.clone()))
            }
            "postgres" => {
                let url = self.url.as_deref().unwrap_or_default();
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    return Err(ConfigError::new(
                        "store.url",
                        "is needed with store.kind = \"postgres\": postgres://USER@HOST:PORT/DB",
                    ));
                }
                if self.pool_size == 0 {
                    return Err(ConfigError::new(
                        "store.pool_size",
                        "must be greater than 0",
                    ));
                }
                Ok(Backend::Postgres {
                    url: url.to_owned(),
                    pool_size: self.pool_size,
                })
            }
            other => Err(ConfigError::new(
                "store.kind",
                format!("{other:?} is not a store; use sqlite or postgres"),
            )),
        }
    }

    /// Checks the section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.backend()?;
        if self.cleanup_interval.is_zero() {
            return Err(ConfigError::new(
                "store.cleanup_interval",
                "must be longer than 0s",
            ));
        }
        Ok(())
    }

    /// How long finished things are kept.
    pub fn retention(&self) -> Retention {
        let days = |n: u32| (n > 0).then(|| DAY * n);
        Retention {
            read: days(self.read_retention_days),
            tasks: days(self.task_retention_days),
            broadcasts: days(self.broadcast_retention_days),
        }
    }
}
