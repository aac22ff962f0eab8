//! The PostgreSQL source against the real database on 127.0.0.1:5432: triggers from
//! `herald pg trigger`, routing by team, bad payloads, a killed connection, the
//! outbox across a hub restart and between two relays.
//!
//! Each test works in a schema of its own (random name, dropped at the end) and
//! uses NOTIFY channel names derived from it, so the tests run in parallel.

use std::collections::HashSet;
use std::time::Duration;

use herald::source::postgres::trigger::{Delivery, QualifiedName, TriggerSpec};
use herald::source::postgres::{FetchConfig, Mode, PostgresConfig, RouteConfig};
use serde_json::{Value, json};
use tokio_postgres::{Client, NoTls};

use crate::fixture::process::herald_command as herald;
use crate::fixture::{Sse, TestHub, eventually, json as data};

const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Whether the tests can run; prints why not (or fails with HERALD_REQUIRE_SERVICES=1).
async fn available() -> bool {
    crate::fixture::services::postgres_available().await
}

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// A schema of the test's own, with the sample tables; dropped on drop, with the
/// roles the test created.
struct Db {
    schema: String,
    admin: Client,
    roles: Vec<String>,
}

impl Db {
    async fn new() -> Self {
        let schema = format!("herald_t_{:08x}", rand::random::<u32>());
        let admin = connect(ADMIN_URL).await;
        admin
            .batch_execute(&format!(
                "CREATE SCHEMA {schema};
                 SET search_path TO {schema};
                 CREATE TABLE teams (id bigint PRIMARY KEY, name text NOT NULL);
                 CREATE TABLE tasks (
                     id bigserial PRIMARY KEY,
                     team_id bigint NOT NULL REFERENCES teams,
                     title text NOT NULL,
                     done boolean NOT NULL DEFAULT false,
                     body text,
                     secret text
                 );
                 INSERT INTO teams VALUES (1, 'one'), (2, 'two');"
            ))
            .await
            .unwrap();
        Self {
            schema,
            admin,
            roles: Vec::new(),
        }
    }

    /// A connection URL into the schema, naming its connections `app`, as `user`.
    fn url_as(&self, user: &str, app: &str) -> String {
        format!(
            "postgres://{user}@127.0.0.1:5432/test?application_name={app}&options=-c%20search_path%3D{}",
            self.schema
        )
    }

    fn url(&self, app: &str) -> String {
        self.url_as("postgres", app)
    }

    /// A NOTIFY channel (or wake channel) name of this test's own.
    fn channel(&self, name: &str) -> String {
        format!("{}_{name}", self.schema)
    }

    async fn exec(&self, sql: &str) {
        self.admin.batch_execute(sql).await.unwrap();
    }

    async fn count(&self, sql: &str) -> i64 {
        self.admin.query_one(sql, &[]).await.unwrap().get(0)
    }

    /// Whether a connection named `app` is open.
    async fn connected(&self, app: &str) -> bool {
        self.admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                &[&app],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
            > 0
    }

    /// Ends the connections named `app`; returns how many.
    async fn kill(&self, app: &str) -> i64 {
        self.admin
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
                &[&app],
            )
            .await
            .unwrap()
            .get(0)
    }

    /// A login role of this test's own.
    async fn role(&mut self) -> String {
        let role = format!("{}_role", self.schema);
        self.exec(&format!("CREATE ROLE {role} LOGIN")).await;
        self.roles.push(role.clone());
        role
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let schema = self.schema.clone();
        let roles = self.roles.clone();
        // Dropping needs a connection of its own; the test's runtime may be gone.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let admin = connect(ADMIN_URL).await;
                let mut sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE;");
                for role in roles {
                    sql.push_str(&format!(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}';
                         DROP ROLE IF EXISTS {role};"
                    ));
                }
                let _ = admin.batch_execute(&sql).await;
            });
        });
        let _ = cleanup.join();
    }
}

/// The route the team tests use: tasks to `team:{team_id}`, type `task.{op}`, and
/// the public fields only.
fn task_route(notify: &str) -> RouteConfig {
    RouteConfig {
        notify: notify.into(),
        channels: vec!["team:{team_id}".into()],
        kind: Some("task.{op}".into()),
        fields: Some(vec![
            "op".into(),
            "id".into(),
            "title".into(),
            "done".into(),
        ]),
        ..RouteConfig::default()
    }
}

fn source(url: String, routes: Vec<RouteConfig>) -> PostgresConfig {
    PostgresConfig {
        url,
        routes,
        reconnect_min: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(500),
        ..PostgresConfig::default()
    }
}

async fn start(config: PostgresConfig) -> TestHub {
    TestHub::builder()
        .config(|c| c.postgres = Some(config))
        .start()
        .await
}

async fn until_ready(hub: &TestHub) {
    eventually("the postgres source to be ready", || async {
        hub.node.ready().await.is_ok()
    })
    .await;
}

async fn subscribe(hub: &TestHub, channel: &str) -> Sse {
    let token = hub.token(Some("member"), &[channel], &[]);
    hub.subscribe(&format!("channel={channel}"), Some(&token))
        .await
}

/// The next event: its type and JSON data.
async fn next(sse: &mut Sse) -> (String, Value) {
    let e = sse.expect().await;
    (e.event.clone(), data(&e))
}

#[tokio::test]
async fn the_trigger_helper_prints_the_sql() {
    let out = herald()
        .args([
            "pg",
            "trigger",
            "--table",
            "app.tasks",
            "--notify",
            "tasks",
            "--columns",
            "id,team_id,title",
        ])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let sql = String::from_utf8(out.stdout).unwrap();
    assert!(sql.contains("CREATE TRIGGER \"herald_tasks_tasks\" AFTER INSERT OR UPDATE OR DELETE ON \"app\".\"tasks\""), "{sql}");
    assert!(
        sql.contains("PERFORM pg_notify('tasks', payload);"),
        "{sql}"
    );
    assert!(
        !sql.contains("to_jsonb(NEW)"),
        "only the listed columns: {sql}"
    );

    let out = herald()
        .args([
            "pg", "trigger", "--table", "tasks", "--notify", "tasks", "--outbox",
        ])
        .output()
        .await
        .unwrap();
    let sql = String::from_utf8(out.stdout).unwrap();
    assert!(
        sql.contains("CREATE TABLE IF NOT EXISTS \"herald_outbox\""),
        "{sql}"
    );
    assert!(
        sql.contains("INSERT INTO \"herald_outbox\" (topic, payload)"),
        "{sql}"
    );

    let out = herald()
        .args([
            "pg", "trigger", "--table", "tasks", "--notify", "", "--apply",
        ])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let out = herald()
        .args([
            "pg", "trigger", "--table", "tasks", "--notify", "t", "--apply",
        ])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--url"));
}

#[tokio::test]
async fn table_changes_reach_exactly_the_subscribers_of_their_team() {
    if !available().await {
        return;
    }
    let db = Db::new().await;
    let notify = db.channel("tasks");
    let url = db.url("herald_teams");
    let out = herald()
        .args(["pg", "trigger", "--table"])
        .arg(format!("{}.tasks", db.schema))
        .args([
            "--notify",
            &notify,
            "--columns",
            "id,team_id,title,done",
            "--apply",
            "--url",
            &url,
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let hub = start(source(url, vec![task_route(&notify)])).await;
    until_ready(&hub).await;
    let mut one_a = subscribe(&hub, "team:1").await;
    let mut one_b = subscribe(&hub, "team:1").await;
    let mut two = subscribe(&hub, "team:2").await;

    db.exec("INSERT INTO tasks (id, team_id, title, secret) VALUES (10, 1, 'Write the tests', 'private')")
        .await;
    for sse in [&mut one_a, &mut one_b] {
        let (kind, data) = next(sse).await;
        assert_eq!(kind, "task.insert");
        assert_eq!(
            data,
            json!({"op": "insert", "id": 10, "title": "Write the tests", "done": false})
        );
    }
    db.exec("UPDATE tasks SET done = true WHERE id = 10").await;
    let (kind, data) = next(&mut one_a).await;
    assert_eq!(kind, "task.update");
    assert_eq!(data["done"], true);
    // A change to a column that is not sent sends nothing.
    db.exec("UPDATE tasks SET secret = 'still private' WHERE id = 10")
        .await;
    db.exec("DELETE FROM tasks WHERE id = 10").await;
    let (kind, data) = next(&mut one_a).await;
    assert_eq!(kind, "task.delete");
    assert_eq!(
        data,
        json!({"op": "delete", "id": 10, "title": "Write the tests", "done": true})
    );

    // Team 2's first event is its own row: none of team 1's reached it.
    db.exec("INSERT INTO tasks (id, team_id, title) VALUES (20, 2, 'Team two only')")
        .await;
    let (kind, data) = next(&mut two).await;
    assert_eq!(
        (kind.as_str(), data["id"].clone()),
        ("task.insert", json!(20))
    );
    // And team 1 goes on with its own rows only.
    db.exec("INSERT INTO tasks (id, team_id, title) VALUES (11, 1, 'Next')")
        .await;
    let (_, data) = next(&mut one_a).await;
    assert_eq!(data["id"], 11);
    let mut rest = Vec::new();
    for _ in 0..3 {
        let (kind, data) = next(&mut one_b).await;
        rest.push((kind, data["id"].clone()));
    }
    let expected = [
        ("task.update", 10),
        ("task.delete", 10),
        ("task.insert", 11),
    ]
    .map(|(k, id)| (k.to_owned(), json!(id)));
    assert_eq!(rest, expected);
    let stats = hub.node.stats();
    assert_eq!(stats.source_skipped, 0);
    assert_eq!(stats.source_notifications, 5);
}

#[tokio::test]
async fn payloads_that_cannot_be_routed_are_counted_and_skipped() {
    if !available().await {
        return;
    }
    let db = Db::new().await;
    let notify = db.channel("raw");
    let route = RouteConfig {
        notify: notify.clone(),
        channels: vec!["team:{team_id}".into()],
        ..RouteConfig::default()
    };
    let hub = start(source(db.url("herald_raw"), vec![route])).await;
    until_ready(&hub).await;
    let mut one = subscribe(&hub, "team:1").await;
    for payload in [
        "not json",
        "{\"title\": \"no team\"}",
        "{\"team_id\": null}",
        "{\"team_id\": \"1 2\"}",
        "{\"team_id\": \"1,2\"}",
        "{\"team_id\": 1, \"n\": \"good\"}",
    ] {
        db.admin
            .execute("SELECT pg_notify($1, $2)", &[&notify, &payload])
            .await
            .unwrap();
    }
    // Notifications arrive in order: when the good one is delivered, the others
    // have been handled.
    let (kind, data) = next(&mut one).await;
    assert_eq!(kind, "message");
    assert_eq!(data, json!({"team_id": 1, "n": "good"}));
    let metrics = hub.get("/metrics").await.text().await.unwrap();
    for line in [
        "herald_source_notifications_total 6",
        "herald_source_skipped_total{reason=\"not_json\"} 1",
        "herald_source_skipped_total{reason=\"missing_field\"} 2",
        "herald_source_skipped_total{reason=\"bad_channel\"} 2",
        "herald_source_connections_total 1",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    let stats: Value = hub.get("/stats").await.json().await.unwrap();
    assert_eq!(stats["source_skipped"], 5);
}

#[tokio::test]
async fn the_listener_reconnects_after_its_connection_is_killed() {
    if !available().await {
        return;
    }
    let mut db = Db::new().await;
    let notify = db.channel("tasks");
    TriggerSpec {
        table: QualifiedName::parse(&format!("{}.tasks", db.schema)).unwrap(),
        notify: notify.clone(),
        columns: Some(vec![
            "id".into(),
            "team_id".into(),
            "title".into(),
            "done".into(),
        ]),
        key: None,
        keep: vec![],
        delivery: Delivery::Notify,
    }
    .apply(&db.url("herald_setup"), false)
    .await
    .unwrap();
    let role = db.role().await;
    let app = db.channel("listener");
    let hub = start(source(db.url_as(&role, &app), vec![task_route(&notify)])).await;
    until_ready(&hub).await;
    let mut one = subscribe(&hub, "team:1").await;
    db.exec("INSERT INTO tasks (id, team_id, title) VALUES (1, 1, 'before')")
        .await;
    assert_eq!(next(&mut one).await.1["title"], "before");

    // Kill the connection and keep the role from logging in: the hub is down and says so.
    db.exec(&format!("ALTER ROLE {role} NOLOGIN")).await;
    assert_eq!(db.kill(&app).await, 1);
    eventually("/readyz to report the source down", || async {
        let response = hub.get("/readyz").await;
        response.status() == 503 && response.text().await.unwrap().contains("postgres source")
    })
    .await;

    // Let it back in: it reconnects by itself, LISTENs again and delivers.
    db.exec(&format!("ALTER ROLE {role} LOGIN")).await;
    until_ready(&hub).await;
    assert!(hub.node.stats().source_connections >= 2);
    assert_eq!(hub.get("/readyz").await.status(), 200);
    db.exec("INSERT INTO tasks (id, team_id, title) VALUES (2, 1, 'after')")
        .await;
    assert_eq!(next(&mut one).await.1["title"], "after");
    hub.stop().await.unwrap();
    eventually("the listener to close its connection", || async {
        !db.connected(&app).await
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_database_makes_the_hub_unready() {
    let config = source(
        "postgres://postgres@127.0.0.1:1/test?connect_timeout=1".into(),
        vec![task_route("tasks")],
    );
    let hub = start(config).await;
    eventually("/readyz to report the source down", || async {
        let response = hub.get("/readyz").await;
        response.status() == 503
            && response
                .text()
                .await
                .unwrap()
                .contains("postgres source: cannot connect")
    })
    .await;
    assert_eq!(hub.node.stats().source_connections, 0);
    // Other parts of the hub work meanwhile.
    let mut sse = subscribe(&hub, "team:1").await;
    hub.publish(json!({"channel": "team:1", "data": 1})).await;
    assert_eq!(data(&sse.expect().await), json!(1));
}

#[tokio::test]
async fn a_row_too_big_to_notify_is_sent_as_its_key_and_fetched() {
    if !available().await {
        return;
    }
    let db = Db::new().await;
    let notify = db.channel("tasks");
    let url = db.url("herald_fetch");
    TriggerSpec {
        table: QualifiedName::parse("tasks").unwrap(),
        notify: notify.clone(),
        columns: Some(vec![
            "id".into(),
            "team_id".into(),
            "title".into(),
            "body".into(),
        ]),
        key: None,
        keep: vec!["team_id".into()],
        delivery: Delivery::Notify,
    }
    .apply(&url, false)
    .await
    .unwrap();
    let fetched = RouteConfig {
        notify: notify.clone(),
        channels: vec!["team:{team_id}".into()],
        fetch: Some(FetchConfig {
            table: "tasks".into(),
            key: vec!["id".into()],
            columns: Some(vec![
                "id".into(),
                "team_id".into(),
                "title".into(),
                "body".into(),
            ]),
        }),
        ..RouteConfig::default()
    };
    let keys_only = RouteConfig {
        notify: notify.clone(),
        channels: vec!["keys:{team_id}".into()],
        ..RouteConfig::default()
    };
    let hub = start(source(url, vec![fetched, keys_only])).await;
    until_ready(&hub).await;
    let mut full = subscribe(&hub, "team:1").await;
    let mut keys = subscribe(&hub, "keys:1").await;
    let body = "x".repeat(9000);
    db.admin
        .execute(
            "INSERT INTO tasks (id, team_id, title, body, secret) VALUES (5, 1, 'big', $1, 'private')",
            &[&body],
        )
        .await
        .unwrap();
    let (_, row) = next(&mut full).await;
    assert_eq!(row["truncated"], true);
    assert_eq!(row["fetched"], true);
    assert_eq!(row["new"]["body"].as_str().map(str::len), Some(9000));
    assert_eq!(row["new"]["title"], "big");
    assert!(row["new"].get("secret").is_none(), "{row}");
    let (_, key) = next(&mut keys).await;
    assert_eq!(
        key,
        json!({"op": "insert", "schema": db.schema, "table": "tasks", "new": {"id": 5, "team_id": 1}, "old": null, "truncated": true})
    );
    // A small row is sent whole, without a fetch.
    db.exec("INSERT INTO tasks (id, team_id, title) VALUES (6, 1, 'small')")
        .await;
    let (_, row) = next(&mut full).await;
    assert_eq!(row["new"]["title"], "small");
    assert!(row.get("truncated").is_none());
}

/// Outbox settings for a test: its own table (in its schema) and wake channel.
fn outbox_source(db: &Db, app: &str) -> PostgresConfig {
    let mut config = source(db.url(app), vec![task_route("tasks")]);
    config.mode = Mode::Outbox;
    config.outbox.notify = db.channel("wake");
    config.outbox.poll = Duration::from_millis(200);
    config
}

async fn install_outbox_trigger(db: &Db) {
    TriggerSpec {
        table: QualifiedName::parse("tasks").unwrap(),
        notify: "tasks".into(),
        columns: Some(vec![
            "id".into(),
            "team_id".into(),
            "title".into(),
            "done".into(),
        ]),
        key: None,
        keep: vec![],
        delivery: Delivery::Outbox {
            table: QualifiedName::parse("herald_outbox").unwrap(),
            wake: db.channel("wake"),
        },
    }
    .apply(&db.url("herald_setup"), false)
    .await
    .unwrap();
}

#[tokio::test]
async fn outbox_rows_written_while_the_hub_is_down_are_delivered_once_after_it_starts() {
    if !available().await {
        return;
    }
    let db = Db::new().await;
    install_outbox_trigger(&db).await;
    let first_app = db.channel("first");
    let first = start(outbox_source(&db, &first_app)).await;
    until_ready(&first).await;
    let mut sse = subscribe(&first, "team:1").await;
    for id in 1..=3 {
        db.exec(&format!(
            "INSERT INTO tasks (id, team_id, title) VALUES ({id}, 1, 'row {id}')"
        ))
        .await;
    }
    for id in 1..=3 {
        let e = sse.expect().await;
        assert_eq!(
            (e.event.as_str(), e.id.clone()),
            ("task.insert", format!("outbox-{id}"))
        );
        assert_eq!(data(&e)["title"], format!("row {id}"));
    }
    first.stop().await.unwrap();
    eventually("the first hub's relay to close its connection", || async {
        !db.connected(&first_app).await
    })
    .await;

    // Written while no hub runs: kept in the outbox.
    for id in 4..=6 {
        db.exec(&format!(
            "INSERT INTO tasks (id, team_id, title) VALUES ({id}, 1, 'row {id}')"
        ))
        .await;
    }
    assert_eq!(
        db.count("SELECT count(*) FROM herald_outbox WHERE published_at IS NULL")
            .await,
        3
    );

    let second = start(outbox_source(&db, &db.channel("second"))).await;
    let token = second.token(Some("member"), &["team:1"], &[]);
    // From the start of the new hub's history: whatever it published before this
    // subscription is replayed, so the test does not race the relay.
    let mut sse = second
        .subscribe_from("channel=team:1", Some(&token), Some("earliest"))
        .await;
    for id in 4..=6 {
        let e = sse.expect().await;
        assert_eq!(e.id, format!("outbox-{id}"), "rows 1-3 are not sent again");
        assert_eq!(data(&e)["title"], format!("row {id}"));
    }
    eventually("rows 4 to 6 to be recorded as published", || async {
        second.node.stats().source_outbox_rows == 3
    })
    .await;
    // As if a relay had published rows 5 and 6 and died before recording it: they
    // are read again, and the hub, knowing their ids, does not deliver them twice.
    db.exec("UPDATE herald_outbox SET published_at = NULL WHERE id IN (5, 6)")
        .await;
    db.exec("INSERT INTO tasks (id, team_id, title) VALUES (7, 1, 'row 7')")
        .await;
    let e = sse.expect().await;
    assert_eq!(e.id, "outbox-7");
    // Rows 4-6, then 5-6 again and 7: each read recorded.
    eventually("every row to be recorded as published", || async {
        second.node.stats().source_outbox_rows == 3 + 2 + 1
    })
    .await;
    assert_eq!(
        db.count("SELECT count(*) FROM herald_outbox WHERE published_at IS NULL")
            .await,
        0
    );
    assert!(sse.quiet_for(Duration::from_millis(300)).await.is_none());
}

#[tokio::test]
async fn two_relays_never_publish_one_row_twice() {
    if !available().await {
        return;
    }
    let db = Db::new().await;
    install_outbox_trigger(&db).await;
    let apps = [db.channel("a"), db.channel("b")];
    let a = start(outbox_source(&db, &apps[0])).await;
    let b = start(outbox_source(&db, &apps[1])).await;
    until_ready(&a).await;
    until_ready(&b).await;
    let mut subs = [subscribe(&a, "team:1").await, subscribe(&b, "team:1").await];

    let insert = |from: i64| {
        let db = &db;
        async move {
            for chunk in 0..5 {
                let values: Vec<String> = (0..10)
                    .map(|i| {
                        let id = from + chunk * 10 + i;
                        format!("({id}, 1, 'row {id}')")
                    })
                    .collect();
                db.exec(&format!(
                    "INSERT INTO tasks (id, team_id, title) VALUES {}",
                    values.join(", ")
                ))
                .await;
            }
        }
    };
    let published = || async {
        db.count("SELECT count(*) FROM herald_outbox WHERE published_at IS NOT NULL")
            .await
    };
    insert(1).await;
    eventually("the first 50 rows to be published", || async {
        published().await == 50
    })
    .await;

    // The relay holding the lock loses its connection; a relay takes over.
    let holder: i32 = db
        .admin
        .query_one(
            "SELECT count(pg_terminate_backend(l.pid))::int FROM pg_locks l WHERE l.locktype = 'advisory' AND l.classid = 1212502593 AND l.granted AND l.pid IN (SELECT pid FROM pg_stat_activity WHERE application_name = ANY($1))",
            &[&apps.to_vec()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(holder, 1, "exactly one relay holds the lock");
    insert(51).await;
    eventually("all 100 rows to be published", || async {
        published().await == 100
    })
    .await;

    let per_hub = || {
        [
            a.node.stats().source_outbox_rows,
            b.node.stats().source_outbox_rows,
        ]
    };
    eventually("both relays to count what they recorded", || async {
        per_hub().iter().sum::<u64>() >= 100
    })
    .await;
    let per_hub = per_hub();
    assert_eq!(
        per_hub[0] + per_hub[1],
        100,
        "each row recorded once: {per_hub:?}"
    );
    let mut seen = HashSet::new();
    for (sse, count) in subs.iter_mut().zip(per_hub) {
        for _ in 0..count {
            let e = sse.expect().await;
            assert!(seen.insert(e.id.clone()), "{} delivered twice", e.id);
        }
    }
    assert_eq!(seen.len(), 100);
    for sse in &mut subs {
        assert!(sse.quiet_for(Duration::from_millis(300)).await.is_none());
    }
}

/// The backend holding the source's advisory lock among the connections named `apps`.
async fn lock_holder(db: &Db, apps: &[String]) -> Option<i32> {
    db.admin
        .query_opt(
            "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.classid = 1212502593 AND l.granted AND a.application_name = ANY($1)",
            &[&apps.to_vec()],
        )
        .await
        .unwrap()
        .map(|row| row.get(0))
}

#[tokio::test]
async fn with_an_elected_publisher_one_node_publishes_each_notification() {
    if !available().await {
        return;
    }
    let db = Db::new().await;
    let notify = db.channel("tasks");
    TriggerSpec {
        table: QualifiedName::parse("tasks").unwrap(),
        notify: notify.clone(),
        columns: Some(vec![
            "id".into(),
            "team_id".into(),
            "title".into(),
            "done".into(),
        ]),
        key: None,
        keep: vec![],
        delivery: Delivery::Notify,
    }
    .apply(&db.url("herald_setup"), false)
    .await
    .unwrap();
    let apps = [db.channel("a"), db.channel("b")];
    let node = |app: &str| {
        let mut config = source(db.url(app), vec![task_route(&notify)]);
        config.elect_publisher = Some(true);
        config.standby_retry = Duration::from_millis(100);
        config
    };
    let hubs = [start(node(&apps[0])).await, start(node(&apps[1])).await];
    for hub in &hubs {
        until_ready(hub).await;
    }
    let mut subs = [
        subscribe(&hubs[0], "team:1").await,
        subscribe(&hubs[1], "team:1").await,
    ];
    let published = || {
        hubs.iter()
            .map(|h| h.node.stats().events_published)
            .collect::<Vec<_>>()
    };

    eventually("a node to take the lock", || async {
        lock_holder(&db, &apps).await.is_some()
    })
    .await;
    let holder = lock_holder(&db, &apps).await;
    db.exec("INSERT INTO tasks (id, team_id, title) SELECT i, 1, 'row ' || i FROM generate_series(1, 20) i")
        .await;
    eventually("20 events to be published", || async {
        published().iter().sum::<u64>() >= 20
    })
    .await;
    let first = published();
    assert!(
        first.contains(&20) && first.contains(&0),
        "one node publishes: {first:?}"
    );

    // The publishing node loses its connection; a node (either) takes over.
    db.admin
        .execute("SELECT pg_terminate_backend($1)", &[&holder.unwrap()])
        .await
        .unwrap();
    eventually("another session to take the lock", || async {
        lock_holder(&db, &apps)
            .await
            .is_some_and(|pid| Some(pid) != holder)
    })
    .await;
    db.exec("INSERT INTO tasks (id, team_id, title) SELECT i, 1, 'row ' || i FROM generate_series(21, 40) i")
        .await;
    eventually("40 events to be published", || async {
        published().iter().sum::<u64>() >= 40
    })
    .await;
    let total = published();
    assert_eq!(total.iter().sum::<u64>(), 40, "{total:?}");

    let mut seen = HashSet::new();
    for (sse, count) in subs.iter_mut().zip(total) {
        for _ in 0..count {
            let (_, data) = next(sse).await;
            assert!(seen.insert(data["id"].clone()), "{data} delivered twice");
        }
    }
    assert_eq!(seen.len(), 40);
    for sse in &mut subs {
        assert!(sse.quiet_for(Duration::from_millis(300)).await.is_none());
    }
}
