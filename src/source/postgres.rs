//! The PostgreSQL event source: table changes become events on the channels their
//! columns name.
//!
//! Two modes, one set of routes:
//!
//! - **notify** (module `listen`): one connection per node `LISTEN`s on the NOTIFY channels
//!   the routes name, whatever the number of subscribers. Triggers (see [`trigger`] and
//!   `herald pg trigger`) call `pg_notify` with the row as JSON. Immediate, but NOTIFY
//!   keeps nothing: what is sent while no hub listens is lost.
//! - **outbox** (module `outbox`): triggers, or the application inside its own transaction,
//!   insert rows into an outbox table; the hub publishes them in id order, gives each
//!   event the id `outbox-{id}`, and records each row as published. Nothing is lost
//!   while the hub is down, and nothing is delivered twice. One node at a time relays
//!   (a session advisory lock); the others stand by and take over when it goes.
//!
//! The module `routing` turns a payload into events. The connection is reopened with backoff
//! when it fails; `/readyz` reports the source as not ready meanwhile. Connections are
//! plain TCP (no TLS).

mod listen;
mod outbox;
pub(crate) mod routing;
pub mod trigger;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_postgres::NoTls;

use self::routing::{Outcome, Router};
use super::Sink;
use crate::backoff::Backoff;
use crate::core::NewEvent;
use crate::health::Readiness;
use crate::hub::PublishError;
use crate::settings::ConfigError;
use crate::stats::SourceSkip;

/// How long a health check, a fetch or a connection attempt may take.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The `[postgres]` section: where to connect, how to read, and the routes.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresConfig {
    /// The connection URL, e.g. `postgres://herald:secret@127.0.0.1:5432/app`
    /// (`HERALD_POSTGRES__URL`). Plain TCP: `sslmode=require` is refused.
    pub url: String,
    /// `notify` (LISTEN/NOTIFY) or `outbox` (the outbox table).
    pub mode: Mode,
    /// The first wait before reconnecting; it doubles up to `reconnect_max`.
    #[serde(with = "humantime_serde")]
    pub reconnect_min: Duration,
    /// The longest wait between reconnection attempts.
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// How often an idle connection is checked with a query.
    #[serde(with = "humantime_serde")]
    pub health_interval: Duration,
    /// Let one node only publish (a session advisory lock), the others standing by
    /// to take over. Outbox mode always does; in notify mode it is on by default when
    /// the broker is shared by nodes (not `memory`), so a row is not published once
    /// per node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elect_publisher: Option<bool>,
    /// How often a standby node tries to take over.
    #[serde(with = "humantime_serde")]
    pub standby_retry: Duration,
    /// The outbox mode's settings.
    pub outbox: OutboxConfig,
    /// Which notifications go where.
    pub routes: Vec<RouteConfig>,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            mode: Mode::Notify,
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(10),
            health_interval: Duration::from_secs(30),
            elect_publisher: None,
            standby_retry: Duration::from_secs(1),
            outbox: OutboxConfig::default(),
            routes: Vec::new(),
        }
    }
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &crate::redact::redact_url(&self.url))
            .field("mode", &self.mode)
            .field("reconnect_min", &self.reconnect_min)
            .field("reconnect_max", &self.reconnect_max)
            .field("health_interval", &self.health_interval)
            .field("elect_publisher", &self.elect_publisher)
            .field("standby_retry", &self.standby_retry)
            .field("outbox", &self.outbox)
            .field("routes", &self.routes)
            .finish()
    }
}

/// How the source reads changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `LISTEN` on the routes' NOTIFY channels.
    #[default]
    Notify,
    /// Read the outbox table.
    Outbox,
}

/// The outbox mode's settings (`[postgres.outbox]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxConfig {
    /// The outbox table, optionally with its schema.
    pub table: String,
    /// The NOTIFY channel on which the table's trigger wakes the hub.
    pub notify: String,
    /// Rows read, published and recorded at a time.
    pub batch: usize,
    /// How often the table is read when no wake-up comes.
    #[serde(with = "humantime_serde")]
    pub poll: Duration,
    /// How long published rows are kept before they are deleted.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Create the table, its index and its wake trigger when they are missing.
    pub create_table: bool,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            table: "herald_outbox".into(),
            notify: "herald_outbox".into(),
            batch: 500,
            poll: Duration::from_secs(1),
            retention: Duration::from_secs(24 * 3600),
            create_table: true,
        }
    }
}

/// One routing rule (`[[postgres.routes]]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The NOTIFY channel (outbox mode: the `topic` column) whose notifications this
    /// route takes. Several routes may take the same one.
    pub notify: String,
    /// Channel templates, all required: `team:{team_id}`. A notification lacking one
    /// of their fields is skipped.
    pub channels: Vec<String>,
    /// Channel templates used when their fields are present, e.g. `team:{old.team_id}`
    /// so a row moved to another team reaches both.
    #[serde(default)]
    pub optional_channels: Vec<String>,
    /// The event type, a template (`task.{op}`); `message` when left out.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The fields sent on, each at the path it is listed with; the whole payload
    /// when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<String>>,
    /// Conditions on fields: the route applies only when each holds the value given
    /// (or one of a list), e.g. `{ op = ["insert", "update"] }`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub when: BTreeMap<String, Value>,
    /// How to fetch a row that was too big to notify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetch: Option<FetchConfig>,
}

/// Where to fetch a row sent as its key only (`"truncated": true`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FetchConfig {
    /// The table, optionally with its schema.
    pub table: String,
    /// The key columns, found in the payload's `new` row.
    pub key: Vec<String>,
    /// The columns fetched; all when left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            table: String::new(),
            key: vec!["id".into()],
            columns: None,
        }
    }
}

impl PostgresConfig {
    /// Checks the section; errors name the key (`postgres.routes[0].channels[1]`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.connection()?;
        for (key, value) in [
            ("postgres.reconnect_min", self.reconnect_min),
            ("postgres.health_interval", self.health_interval),
            ("postgres.standby_retry", self.standby_retry),
        ] {
            if value.is_zero() {
                return Err(ConfigError::new(key, "must be longer than 0s"));
            }
        }
        if self.reconnect_max < self.reconnect_min {
            return Err(ConfigError::new(
                "postgres.reconnect_max",
                "must be at least postgres.reconnect_min",
            ));
        }
        if self.mode == Mode::Outbox {
            trigger::QualifiedName::parse(&self.outbox.table)
                .map_err(|m| ConfigError::new("postgres.outbox.table", m))?;
            trigger::check_identifier(&self.outbox.notify)
                .map_err(|m| ConfigError::new("postgres.outbox.notify", m))?;
            if !(1..=10_000).contains(&self.outbox.batch) {
                return Err(ConfigError::new(
                    "postgres.outbox.batch",
                    "must be between 1 and 10000",
                ));
            }
            for (key, value) in [
                ("postgres.outbox.poll", self.outbox.poll),
                ("postgres.outbox.retention", self.outbox.retention),
            ] {
                if value.is_zero() {
                    return Err(ConfigError::new(key, "must be longer than 0s"));
                }
            }
        }
        if self.routes.is_empty() {
            return Err(ConfigError::new(
                "postgres.routes",
                "no route: add a [[postgres.routes]] with `notify` and `channels`",
            ));
        }
        Router::new(self).map(|_| ())
    }

    /// The connection settings: the URL, with defaults for what it leaves out
    /// (`application_name=herald`, a connection timeout, TCP keepalives).
    fn connection(&self) -> Result<tokio_postgres::Config, ConfigError> {
        if self.url.is_empty() {
            return Err(ConfigError::new(
                "postgres.url",
                "must be set, e.g. postgres://herald@127.0.0.1:5432/app",
            ));
        }
        let mut config: tokio_postgres::Config = self.url.parse().map_err(|e| {
            ConfigError::new(
                "postgres.url",
                format!("is not a PostgreSQL connection URL: {e}"),
            )
        })?;
        if config.get_hosts().is_empty() {
            return Err(ConfigError::new(
                "postgres.url",
                "names no host, e.g. postgres://herald@127.0.0.1:5432/app",
            ));
        }
        if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            return Err(ConfigError::new(
                "postgres.url",
                "asks for TLS (sslmode=require), which Herald does not support yet: connections are plain TCP",
            ));
        }
        if config.get_application_name().is_none() {
            config.application_name("herald");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(IO_TIMEOUT);
        }
        if config.get_keepalives_idle() == Duration::from_secs(2 * 3600) {
            config.keepalives_idle(Duration::from_secs(30));
        }
        Ok(config)
    }
}

/// A database error with the server's message (the driver's own text is only
/// "db error").
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = format!("{}: {}", db.severity(), db.message());
        if let Some(detail) = db.detail() {
            text.push_str(&format!(" ({detail})"));
        }
        return text;
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Starts the source, publishing to `sink` (when `[postgres]` is set).
pub(crate) fn spawn(sink: Sink, config: PostgresConfig) {
    let readiness = sink.readiness.clone();
    let prepared = config
        .connection()
        .and_then(|pg| Router::new(&config).map(|router| (pg, router)));
    let (pg, router) = match prepared {
        Ok(prepared) => prepared,
        Err(e) => {
            // Config::validate has checked this already; an embedder may not have.
            tracing::error!("postgres source not started: {e}");
            readiness.unready(e.to_string());
            return;
        }
    };
    let source = Source {
        sink,
        router,
        readiness,
        pg,
        config,
        log: Mutex::new(LogLimit::default()),
    };
    tokio::spawn(async move {
        match source.config.mode {
            Mode::Notify => listen::run(source).await,
            Mode::Outbox => outbox::run(source).await,
        }
    });
}

/// Why a session with the database ended.
enum End {
    /// The hub is shutting down.
    Stop,
    /// The connection failed or was lost, and why.
    Lost(String),
}

/// Everything a running source needs.
struct Source {
    sink: Sink,
    router: Router,
    readiness: Readiness,
    pg: tokio_postgres::Config,
    config: PostgresConfig,
    log: Mutex<LogLimit>,
}

/// At most one warning a second about skipped notifications; the rest go to debug.
#[derive(Default)]
struct LogLimit {
    last: Option<Instant>,
    suppressed: u64,
}

impl Source {
    /// Counts a skip and logs it (rate-limited). `detail` never holds payload values.
    fn skipped(&self, why: SourceSkip, topic: &str, detail: &str) {
        self.sink.stats.source_skipped(why);
        let mut log = self.log.lock();
        let now = Instant::now();
        if log
            .last
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            let suppressed = std::mem::take(&mut log.suppressed);
            log.last = Some(now);
            drop(log);
            tracing::warn!(
                reason = why.label(),
                notify = topic,
                suppressed,
                "postgres source skipped a notification: {detail}"
            );
        } else {
            log.suppressed += 1;
            drop(log);
            tracing::debug!(reason = why.label(), notify = topic, "skipped: {detail}");
        }
    }

    /// The events one notification (or outbox row) makes, through every route of its
    /// topic. What cannot be routed is counted and logged, never published.
    async fn events_for(
        &self,
        topic: &str,
        payload: Option<Value>,
        side: &mut SideClient,
    ) -> Vec<NewEvent> {
        self.sink.stats.source_received(1);
        let mut routes = self.router.routes_for(topic).peekable();
        if routes.peek().is_none() {
            self.skipped(SourceSkip::NoRoute, topic, "no route takes this topic");
            return Vec::new();
        }
        let Some(payload) = payload else {
            self.skipped(SourceSkip::NotJson, topic, "the payload is not JSON");
            return Vec::new();
        };
        let truncated = routing::is_truncated(&payload);
        let limits = self.sink.event_limits;
        let mut fetched: HashMap<&str, Option<Value>> = HashMap::new();
        let mut events = Vec::new();
        for route in routes {
            let mut this = &payload;
            if let (true, Some(sql)) = (truncated, route.fetch.as_deref()) {
                if !fetched.contains_key(sql) {
                    let full = match side.fetch(&self.pg, sql, &payload).await {
                        Ok(full) => Some(full),
                        Err(detail) => {
                            self.skipped(SourceSkip::FetchFailed, topic, &detail);
                            None
                        }
                    };
                    fetched.insert(sql, full);
                }
                match fetched.get(sql) {
                    Some(Some(full)) => this = full,
                    _ => continue,
                }
            }
            match route.apply(this) {
                Outcome::Event(event) => match event.validate(&limits) {
                    Ok(()) => events.push(event),
                    Err(e) => self.skipped(
                        SourceSkip::InvalidEvent,
                        topic,
                        &format!("route {}: {e}", route.index),
                    ),
                },
                Outcome::Filtered => {}
                Outcome::Skipped(why, detail) => {
                    self.skipped(why, topic, &format!("route {}: {detail}", route.index))
                }
            }
        }
        events
    }

    /// Publishes events that have been checked one by one (so the hub refusing one
    /// of them as invalid should not happen; if it does, the batch is counted as
    /// skipped). An unavailable broker is the caller's to handle.
    async fn publish(&self, events: Vec<NewEvent>) -> Result<(), PublishError> {
        if events.is_empty() {
            return Ok(());
        }
        let count = events.len();
        match self.sink.hub.publish_batch(events).await {
            Ok(_) => Ok(()),
            Err(PublishError::Invalid { index, error }) => {
                for _ in 0..count {
                    self.sink.stats.source_skipped(SourceSkip::InvalidEvent);
                }
                tracing::error!(
                    "postgres source: the hub refused a batch of {count} events (event {index}: {error})"
                );
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Waits for `wait`; true when the hub started shutting down meanwhile.
    async fn pause(&self, wait: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(wait) => self.sink.hub.is_shutting_down(),
            _ = self.sink.hub.shutting_down() => true,
        }
    }

    /// After a session ended with `reason`: reports the source unready, logs (less
    /// and less often while it stays down), and waits the backoff. True when the hub
    /// started shutting down meanwhile.
    async fn lost(&self, backoff: &mut Backoff, started: Instant, reason: String) -> bool {
        // A session that had been up a while makes this a new outage.
        let wait = backoff.after_session(started);
        let failures = backoff.failures();
        if failures == 1 || failures.is_power_of_two() {
            tracing::warn!(
                "postgres source down ({reason}); reconnecting in {wait:?} (attempt {failures})"
            );
        }
        self.readiness.unready(reason);
        self.pause(wait).await
    }
}

/// A lazily opened second connection, for fetching rows too big to notify without
/// holding up the listening connection.
struct SideClient {
    client: Option<tokio_postgres::Client>,
}

impl SideClient {
    fn new() -> Self {
        Self { client: None }
    }

    /// The full `new` row for a truncated payload, put in its place (with
    /// `"fetched": true`). A row deleted since is an error.
    async fn fetch(
        &mut self,
        pg: &tokio_postgres::Config,
        sql: &str,
        payload: &Value,
    ) -> Result<Value, String> {
        let Some(key) = payload.get("new").filter(|v| v.is_object()) else {
            // A delete: nothing to fetch, the key is all there is.
            return Ok(payload.clone());
        };
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            let (client, connection) = tokio::time::timeout(IO_TIMEOUT, pg.connect(NoTls))
                .await
                .map_err(|_| "connecting to fetch the row timed out".to_owned())?
                .map_err(|e| format!("connecting to fetch the row: {}", describe(&e)))?;
            tokio::spawn(connection);
            self.client = Some(client);
        }
        let Some(client) = &self.client else {
            return Err("no connection to fetch the row".into());
        };
        let result = tokio::time::timeout(IO_TIMEOUT, client.query_opt(sql, &[key])).await;
        let row = match result {
            Ok(Ok(row)) => row,
            Ok(Err(e)) => {
                let text = describe(&e);
                if client.is_closed() {
                    self.client = None;
                }
                return Err(format!("fetching the row: {text}"));
            }
            Err(_) => {
                self.client = None;
                return Err("fetching the row timed out".into());
            }
        };
        let row: Option<Value> = match row {
            Some(row) => row
                .try_get(0)
                .map_err(|e| format!("reading the fetched row: {}", describe(&e)))?,
            None => None,
        };
        let row = row.ok_or_else(|| "the row no longer exists".to_owned())?;
        let mut full = payload.clone();
        if let Value::Object(map) = &mut full {
            map.insert("new".into(), row);
            map.insert("fetched".into(), Value::Bool(true));
        }
        Ok(full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(change: impl FnOnce(&mut PostgresConfig)) -> PostgresConfig {
        let mut c = PostgresConfig {
            url: "postgres://herald:pw@127.0.0.1:5432/app".into(),
            routes: vec![RouteConfig {
                notify: "tasks".into(),
                channels: vec!["team:{team_id}".into()],
                ..RouteConfig::default()
            }],
            ..PostgresConfig::default()
        };
        change(&mut c);
        c
    }

    #[test]
    fn a_valid_section_and_its_errors() {
        assert!(config(|_| {}).validate().is_ok());
        let key = |change: fn(&mut PostgresConfig)| config(change).validate().unwrap_err().key;
        assert_eq!(key(|c| c.url = String::new()), "postgres.url");
        assert_eq!(
            key(|c| c.url = "postgres://h:99999999/x".into()),
            "postgres.url"
        );
        assert_eq!(
            key(|c| c.url = "postgres://127.0.0.1/app?sslmode=require".into()),
            "postgres.url"
        );
        assert_eq!(key(|c| c.routes.clear()), "postgres.routes");
        assert_eq!(
            key(|c| c.reconnect_min = Duration::ZERO),
            "postgres.reconnect_min"
        );
        assert_eq!(
            key(|c| c.reconnect_max = Duration::from_millis(1)),
            "postgres.reconnect_max"
        );
        assert_eq!(
            key(|c| {
                c.mode = Mode::Outbox;
                c.outbox.batch = 0;
            }),
            "postgres.outbox.batch"
        );
        assert_eq!(
            key(|c| {
                c.mode = Mode::Outbox;
                c.outbox.table = "a.b.c".into();
            }),
            "postgres.outbox.table"
        );
        assert_eq!(
            key(|c| c.routes[0].channels.push("team {x}".into())),
            "postgres.routes[0].channels[1]"
        );
        let e = config(|c| c.url = "postgres://h:99999999/x".into())
            .validate()
            .unwrap_err();
        assert!(!e.message.contains("99999999/x"), "{e}");
    }

    fn load(toml: &str, env: &[(&str, &str)]) -> Result<crate::Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.toml");
        std::fs::write(&path, toml).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        crate::Config::load_with_env(Some(&path), env)
    }

    const SECTION: &str = r#"
[postgres]
url = "postgres://herald@127.0.0.1:5432/app"
mode = "outbox"

[postgres.outbox]
retention = "2h"

[[postgres.routes]]
notify = "tasks"
channels = ["team:{team_id}"]
optional_channels = ["team:{old.team_id}"]
type = "task.{op}"
fields = ["op", "id", "title", "done"]
when = { op = ["insert", "update"], "new.done" = true }

[postgres.routes.fetch]
table = "public.tasks"
columns = ["id", "team_id", "title", "done"]

[[postgres.routes]]
notify = "invitations"
channels = ["invitations:{email}"]
"#;

    #[test]
    fn the_section_loads_from_toml_and_the_environment() {
        assert_eq!(load("", &[]).unwrap().postgres, None);
        let c = load(
            SECTION,
            &[
                ("HERALD_POSTGRES__URL", "postgres://other@127.0.0.1:6543/x"),
                ("HERALD_POSTGRES__OUTBOX__BATCH", "100"),
                ("HERALD_POSTGRES__OUTBOX__NOTIFY", "2024"),
            ],
        )
        .unwrap();
        let pg = c.postgres.unwrap();
        assert_eq!(pg.url, "postgres://other@127.0.0.1:6543/x");
        assert_eq!(pg.mode, Mode::Outbox);
        assert_eq!(pg.outbox.batch, 100);
        assert_eq!(
            pg.outbox.notify, "2024",
            "names are text even when they look like numbers"
        );
        assert_eq!(pg.outbox.retention, Duration::from_secs(7200));
        assert_eq!(pg.outbox.table, "herald_outbox");
        assert_eq!(pg.routes.len(), 2);
        let route = &pg.routes[0];
        assert_eq!(route.kind.as_deref(), Some("task.{op}"));
        assert_eq!(route.when["new.done"], Value::Bool(true));
        let fetch = route.fetch.as_ref().unwrap();
        assert_eq!(fetch.key, ["id"]);
        let router = Router::new(&pg).unwrap();
        assert_eq!(router.topics(), ["invitations", "tasks"]);

        let e = load(
            "[postgres]\nurl = 'postgres://h/db'\n[[postgres.routes]]\nnotify = 'a'\nchannels = ['ok', 'team {id}']\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(e.key, "postgres.routes[0].channels[1]");
        let e = load("[postgres]\nurll = 'x'\n", &[]).unwrap_err();
        assert_eq!(e.key, "postgres.urll");
        let e = load("", &[("HERALD_POSTGRES__URL", "postgres://h/db")]).unwrap_err();
        assert_eq!(e.key, "postgres.routes");
        let e = load("[postgres]\nmode = 'poll'\n", &[]).unwrap_err();
        assert_eq!(e.key, "postgres.mode");
    }

    #[test]
    fn passwords_stay_out_of_logs() {
        let debug = format!("{:?}", config(|_| {}));
        assert!(!debug.contains("pw"), "{debug}");
    }

    #[test]
    fn connection_defaults_fill_what_the_url_leaves_out() {
        let pg = config(|_| {}).connection().unwrap();
        assert_eq!(pg.get_application_name(), Some("herald"));
        assert_eq!(pg.get_connect_timeout(), Some(&IO_TIMEOUT));
        let pg = config(|c| c.url.push_str("?application_name=mine"))
            .connection()
            .unwrap();
        assert_eq!(pg.get_application_name(), Some("mine"));
    }
}
