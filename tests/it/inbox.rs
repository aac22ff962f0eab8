//! The notification inbox over HTTP, on SQLite and on the real PostgreSQL: what a
//! user observes in API answers and on their live stream, isolation between users,
//! pagination while notifications arrive, broadcasts, retention, and restarts.
//!
//! Every test runs once per store (`..::sqlite` and `..::postgres`); the PostgreSQL
//! run works in a schema of its own, dropped at the end.

use std::time::Duration;

use herald::store::{Backend, Retention, now_ms};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::fixture::{Sse, TestHub, json as data};

/// A store for one test: a temporary SQLite file, or a PostgreSQL schema.
pub(crate) struct TestStore {
    pub(crate) backend: Backend,
    _dir: Option<tempfile::TempDir>,
    schema: Option<String>,
}

const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

impl TestStore {
    pub(crate) fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self {
            backend: Backend::Sqlite(dir.path().join("herald.db")),
            _dir: Some(dir),
            schema: None,
        }
    }

    /// A fresh schema, or `None` (the test is skipped) without PostgreSQL.
    pub(crate) async fn postgres() -> Option<Self> {
        if !crate::fixture::services::postgres_available().await {
            return None;
        }
        let schema = format!("herald_inbox_{:08x}", rand::random::<u32>());
        let (admin, connection) = tokio_postgres::connect(ADMIN_URL, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        admin
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .unwrap();
        Some(Self {
            backend: Backend::Postgres {
                url: format!("{ADMIN_URL}?options=-c%20search_path%3D{schema}"),
                pool_size: 8,
            },
            _dir: None,
            schema: Some(schema),
        })
    }

    /// Starts a hub on this store.
    pub(crate) async fn hub(&self) -> TestHub {
        TestHub::builder().store(&self.backend).start().await
    }
}

/// Drops a test schema, waiting at most a few seconds for locks (a hub of the test
/// may still be finishing a transaction on it).
async fn drop_schema(schema: &str) {
    if let Ok((admin, connection)) = tokio_postgres::connect(ADMIN_URL, tokio_postgres::NoTls).await
    {
        tokio::spawn(connection);
        let _ = admin
            .batch_execute(&format!(
                "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {schema} CASCADE"
            ))
            .await;
    }
}

impl TestStore {
    /// Drops the schema while the test's runtime still drives the hub's connections,
    /// so a transaction they have open can finish first.
    pub(crate) async fn finish(mut self) {
        if let Some(schema) = self.schema.take() {
            drop_schema(&schema).await;
        }
    }
}

impl Drop for TestStore {
    /// After a failed test: the schema is dropped from a thread of its own.
    fn drop(&mut self) {
        let Some(schema) = self.schema.take() else {
            return;
        };
        // Dropping needs a connection of its own; the test's runtime may be gone.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(drop_schema(&schema));
        });
        let _ = cleanup.join();
    }
}

/// Defines each test twice, as `NAME::sqlite` and `NAME::postgres`, given a
/// `&TestStore`.
macro_rules! on_both_stores {
    ($(async fn $name:ident($store:ident: &TestStore) $body:block)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn run($store: &TestStore) $body

            #[tokio::test]
            async fn sqlite() {
                run(&TestStore::sqlite()).await;
            }

            #[tokio::test]
            async fn postgres() {
                if let Some(store) = TestStore::postgres().await {
                    run(&store).await;
                    store.finish().await;
                }
            }
        }
    )*};
}
pub(crate) use on_both_stores;

/// Sends `method path` with `token` and an optional JSON body; returns the status
/// and the JSON answer.
pub(crate) async fn call(
    hub: &TestHub,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = hub.http.request(method, format!("{}{path}", hub.url));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A signed-in user of the tests.
pub(crate) fn user_token(hub: &TestHub, user: &str) -> String {
    hub.token(Some(user), &[], &[])
}

/// Creates a notification for `user` as the publisher; returns it.
async fn notify(hub: &TestHub, user: &str, title: &str) -> Value {
    let (status, body) = call(
        hub,
        Method::POST,
        "/api/notifications",
        Some(&hub.publisher()),
        Some(json!({"user": user, "title": title, "message": "m", "type": "info"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["notifications"][0].clone()
}

async fn list(hub: &TestHub, token: &str, query: &str) -> Value {
    let (status, body) = call(
        hub,
        Method::GET,
        &format!("/api/notifications?{query}"),
        Some(token),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn ids(page: &Value) -> Vec<String> {
    page["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The next event on `sse`, which must be of type `kind`; returns its data.
pub(crate) async fn expect_event(sse: &mut Sse, kind: &str) -> Value {
    let event = sse.expect().await;
    assert_eq!(event.event, kind, "{}", event.data);
    data(&event)
}

on_both_stores! {
    async fn the_whole_api_matches_the_live_events(store: &TestStore) {
        let hub = store.hub().await;
        let alice = user_token(&hub, "alice");
        let mut tab = hub.subscribe("", Some(&alice)).await;

        let (status, created) = call(
            &hub,
            Method::POST,
            "/api/notifications",
            Some(&hub.publisher()),
            Some(json!({"user": "alice", "title": "Report ready", "message": "Q3 is done",
                        "type": "success", "link": "/reports/3", "data": {"report": 3}})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let first = &created["notifications"][0];
        assert_eq!(first["user"], "alice");
        assert_eq!(first["title"], "Report ready");
        assert_eq!(first["type"], "success");
        assert_eq!(first["link"], "/reports/3");
        assert_eq!(first["data"], json!({"report": 3}));
        assert_eq!(first["read"], false);
        assert_eq!(first["broadcast"], false);
        assert!(first["created_at"].as_str().unwrap().ends_with('Z'));
        let live = expect_event(&mut tab, "notification.created").await;
        assert_eq!(&live["notification"], first);
        assert_eq!(live["unread_count"], 1);

        let second = notify(&hub, "alice", "Second").await;
        assert_eq!(expect_event(&mut tab, "notification.created").await["unread_count"], 2);
        let third = notify(&hub, "alice", "Third").await;
        assert_eq!(expect_event(&mut tab, "notification.created").await["unread_count"], 3);

        let page = list(&hub, &alice, "page=1&limit=50").await;
        assert_eq!(ids(&page), [&third["id"], &second["id"], &first["id"]].map(|v| v.as_str().unwrap().to_owned()));
        assert_eq!(page["unread_count"], 3);
        assert_eq!(page["page"], 1);
        assert_eq!(page["limit"], 50);
        assert_eq!(page["has_more"], false);
        assert_eq!(page["next_cursor"], Value::Null);
        assert_eq!(&page["notifications"][2], first);

        let (_, count) = call(&hub, Method::GET, "/api/notifications/unread_count", Some(&alice), None).await;
        assert_eq!(count, json!({"unread_count": 3}));

        let (status, body) = call(&hub, Method::PATCH, "/api/notifications", Some(&alice),
            Some(json!({"id": second["id"]}))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, json!({"updated": 1, "unread_count": 2}));
        assert_eq!(
            expect_event(&mut tab, "notification.read").await,
            json!({"ids": [second["id"]], "all": false, "unread_count": 2})
        );
        let unread = list(&hub, &alice, "unread=true").await;
        assert_eq!(ids(&unread).len(), 2);
        assert!(!ids(&unread).contains(&second["id"].as_str().unwrap().to_owned()));

        let (_, body) = call(&hub, Method::PATCH, "/api/notifications", Some(&alice),
            Some(json!({"all": true}))).await;
        assert_eq!(body, json!({"updated": 2, "unread_count": 0}));
        assert_eq!(
            expect_event(&mut tab, "notification.read").await,
            json!({"ids": [], "all": true, "unread_count": 0})
        );
        let page = list(&hub, &alice, "").await;
        assert!(page["notifications"].as_array().unwrap().iter().all(|n| n["read"] == true));

        let (_, body) = call(&hub, Method::DELETE, "/api/notifications", Some(&alice),
            Some(json!({"id": first["id"]}))).await;
        assert_eq!(body, json!({"deleted": 1, "unread_count": 0}));
        assert_eq!(
            expect_event(&mut tab, "notification.deleted").await,
            json!({"ids": [first["id"]], "all": false, "unread_count": 0})
        );
        notify(&hub, "alice", "Fourth").await;
        expect_event(&mut tab, "notification.created").await;
        let (_, body) = call(&hub, Method::DELETE, "/api/notifications", Some(&alice),
            Some(json!({"all": true}))).await;
        assert_eq!(body, json!({"deleted": 3, "unread_count": 0}));
        assert_eq!(
            expect_event(&mut tab, "notification.deleted").await,
            json!({"ids": [], "all": true, "unread_count": 0})
        );
        assert_eq!(ids(&list(&hub, &alice, "").await), Vec::<String>::new());

        // A deleted id is gone for good.
        let (status, body) = call(&hub, Method::PATCH, "/api/notifications", Some(&alice),
            Some(json!({"id": first["id"]}))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["code"], "not_found");
    }

    async fn one_create_reaches_many_users(store: &TestStore) {
        let hub = store.hub().await;
        let (status, body) = call(&hub, Method::POST, "/api/notifications", Some(&hub.publisher()),
            Some(json!({"users": ["ann", "ben", "ann"], "title": "Hi", "type": "info"}))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let made = body["notifications"].as_array().unwrap();
        assert_eq!(made.len(), 2);
        assert_eq!(made[0]["message"], "");
        for user in ["ann", "ben"] {
            let page = list(&hub, &user_token(&hub, user), "").await;
            assert_eq!(page["unread_count"], 1);
            assert_eq!(page["notifications"][0]["user"], user);
        }
    }

    async fn bad_requests_get_clear_400s(store: &TestStore) {
        let hub = store.hub().await;
        let alice = user_token(&hub, "alice");
        let publisher = hub.publisher();
        let post = |body: Value| {
            let publisher = publisher.clone();
            let hub = &hub;
            async move { call(hub, Method::POST, "/api/notifications", Some(&publisher), Some(body)).await }
        };
        for (body, code, words) in [
            (json!({"user": "alice", "title": "", "type": "info"}), "invalid_field", "title"),
            (json!({"user": "alice", "title": "  ", "type": "info"}), "invalid_field", "title"),
            (json!({"user": "alice", "title": "x", "type": "debug"}), "invalid_field", "type"),
            (json!({"user": "alice", "title": "x"}), "invalid_field", "type"),
            (json!({"title": "x", "type": "info"}), "invalid_field", "user"),
            (json!({"user": "a", "users": ["b"], "title": "x", "type": "info"}), "invalid_field", "user"),
            (json!({"users": [], "title": "x", "type": "info"}), "invalid_field", "users"),
            (json!({"user": "al ice", "title": "x", "type": "info"}), "invalid_field", "user"),
            (json!({"user": "alice", "title": 5, "type": "info"}), "invalid_json", "string"),
            (json!({"user": "alice", "title": "x", "type": "info", "colour": 1}), "invalid_json", "colour"),
        ] {
            let (status, answer) = post(body.clone()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {answer}");
            assert_eq!(answer["error"]["code"], code, "{body} -> {answer}");
            assert!(answer["error"]["message"].as_str().unwrap().contains(words), "{body} -> {answer}");
        }
        for query in ["limit=0", "limit=101", "limit=ten", "page=0", "page=1&cursor=n_0",
                      "cursor=abc", "unread=maybe"] {
            let (status, answer) = call(&hub, Method::GET, &format!("/api/notifications?{query}"),
                Some(&alice), None).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{query} -> {answer}");
            assert_eq!(answer["error"]["code"], "invalid_parameter", "{query}");
        }
        for body in [json!({}), json!({"all": false}), json!({"id": "x", "all": true})] {
            let (status, answer) = call(&hub, Method::PATCH, "/api/notifications", Some(&alice),
                Some(body.clone())).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {answer}");
        }
        // Who may do what.
        let (status, _) = call(&hub, Method::GET, "/api/notifications", None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) = call(&hub, Method::GET, "/api/notifications", Some("not-a-token"), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let body = json!({"user": "bob", "title": "x", "type": "info"});
        let (status, _) = call(&hub, Method::POST, "/api/notifications", None, Some(body.clone())).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, answer) = call(&hub, Method::POST, "/api/notifications", Some(&alice), Some(body.clone())).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
        let narrow = hub.token(Some("svc"), &[], &["user:alice"]);
        let (status, _) = call(&hub, Method::POST, "/api/notifications", Some(&narrow), Some(body)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = call(&hub, Method::POST, "/api/notifications/broadcast", Some(&narrow),
            Some(json!({"title": "x", "type": "info"}))).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        // Nothing of the refused requests was stored.
        let page = list(&hub, &user_token(&hub, "bob"), "").await;
        assert_eq!(page["unread_count"], 0);
        assert_eq!(list(&hub, &alice, "").await["unread_count"], 0);
    }

    async fn users_see_and_change_only_their_own(store: &TestStore) {
        let hub = store.hub().await;
        let (alice, bob) = (user_token(&hub, "alice"), user_token(&hub, "bob"));
        let mut bobs_tab = hub.subscribe("", Some(&bob)).await;
        let hers = notify(&hub, "alice", "For alice").await;
        let id = hers["id"].clone();
        for method in [Method::PATCH, Method::DELETE] {
            let (status, answer) = call(&hub, method, "/api/notifications", Some(&bob),
                Some(json!({"id": id}))).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
            assert_eq!(answer["error"]["code"], "not_found");
        }
        let (status, _) = call(&hub, Method::PATCH, "/api/notifications", Some(&bob),
            Some(json!({"id": "n_unknown"}))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        // Bob's mark-all and delete-all leave alice's alone.
        call(&hub, Method::PATCH, "/api/notifications", Some(&bob), Some(json!({"all": true}))).await;
        call(&hub, Method::DELETE, "/api/notifications", Some(&bob), Some(json!({"all": true}))).await;
        let page = list(&hub, &alice, "").await;
        assert_eq!(page["notifications"][0]["id"], id);
        assert_eq!(page["notifications"][0]["read"], false);
        assert_eq!(page["unread_count"], 1);
        assert_eq!(list(&hub, &bob, "").await["notifications"], json!([]));
        // Bob's stream carries his own notification first: nothing of alice's came before it.
        let his = notify(&hub, "bob", "For bob").await;
        let live = expect_event(&mut bobs_tab, "notification.created").await;
        assert_eq!(live["notification"], his);
        assert_eq!(live["unread_count"], 1);
    }

    async fn cursor_pages_have_no_gaps_or_repeats_while_new_ones_arrive(store: &TestStore) {
        let hub = store.hub().await;
        let alice = user_token(&hub, "alice");
        let publisher = hub.publisher();
        let mut before = Vec::new();
        for i in 0..23 {
            before.push(notify(&hub, "alice", &format!("old {i}")).await["id"].as_str().unwrap().to_owned());
        }
        before.reverse();
        // Page numbers without arrivals cover the same list.
        let mut by_number = Vec::new();
        for page in 1..=4 {
            let body = list(&hub, &alice, &format!("page={page}&limit=7")).await;
            assert_eq!(body["has_more"], page < 4, "page {page}");
            by_number.extend(ids(&body));
        }
        assert_eq!(by_number, before);

        // Cursor pages while notifications keep arriving, some of them concurrently.
        let writer = {
            let (url, publisher) = (hub.url.clone(), publisher.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                for i in 0..20 {
                    let response = http
                        .post(format!("{url}/api/notifications"))
                        .bearer_auth(&publisher)
                        .json(&json!({"user": "alice", "title": format!("new {i}"), "type": "info"}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), StatusCode::CREATED);
                }
            })
        };
        let mut seen = Vec::new();
        let mut page = list(&hub, &alice, "limit=5").await;
        let newest = ids(&page)[0].clone();
        seen.extend(ids(&page));
        let mut pages = 1;
        while let Some(cursor) = page["next_cursor"].as_str().map(str::to_owned) {
            notify(&hub, "alice", "between pages").await;
            page = list(&hub, &alice, &format!("cursor={cursor}&limit=5")).await;
            assert_eq!(page["page"], Value::Null);
            seen.extend(ids(&page));
            pages += 1;
            assert!(pages < 100, "the cursor walk does not end");
        }
        writer.await.unwrap();
        let mut sorted = seen.clone();
        sorted.sort_by(|a, b| b.cmp(a));
        sorted.dedup();
        assert_eq!(seen, sorted, "newest first, without repeats");
        let start = seen.iter().position(|id| *id == newest).unwrap();
        assert_eq!(start, 0);
        // Everything older than the first page's newest was seen, exactly once.
        let old: Vec<String> = seen.iter().filter(|id| before.contains(id)).cloned().collect();
        assert_eq!(old, before);
    }

    async fn a_broadcast_is_one_row_with_state_per_user(store: &TestStore) {
        let hub = store.hub().await;
        let (ann, ben) = (user_token(&hub, "ann"), user_token(&hub, "ben"));
        let mut anns_tab = hub.subscribe("", Some(&ann)).await;
        notify(&hub, "ann", "own").await;
        expect_event(&mut anns_tab, "notification.created").await;
        let (status, body) = call(&hub, Method::POST, "/api/notifications/broadcast",
            Some(&hub.publisher()),
            Some(json!({"title": "Maintenance", "message": "at 18:00", "type": "warning"}))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let shared = &body["notification"];
        assert_eq!(shared["broadcast"], true);
        let live = expect_event(&mut anns_tab, "notification.created").await;
        assert_eq!(&live["notification"], shared);
        assert!(live.get("unread_count").is_none());

        let id = shared["id"].clone();
        let page = list(&hub, &ann, "").await;
        assert_eq!(page["unread_count"], 2);
        assert_eq!(page["notifications"][0]["id"], id);
        assert_eq!(page["notifications"][0]["user"], "ann");
        assert_eq!(list(&hub, &ben, "").await["unread_count"], 1);
        // A user who never received anything still sees it.
        assert_eq!(list(&hub, &user_token(&hub, "newcomer"), "").await["unread_count"], 1);

        let (_, body) = call(&hub, Method::PATCH, "/api/notifications", Some(&ann), Some(json!({"id": id}))).await;
        assert_eq!(body, json!({"updated": 1, "unread_count": 1}));
        let (_, body) = call(&hub, Method::PATCH, "/api/notifications", Some(&ann), Some(json!({"id": id}))).await;
        assert_eq!(body, json!({"updated": 0, "unread_count": 1}));
        assert_eq!(list(&hub, &ann, "").await["notifications"][0]["read"], true);
        let page = list(&hub, &ben, "").await;
        assert_eq!(page["notifications"][0]["read"], false);
        assert_eq!(page["unread_count"], 1);

        let (_, body) = call(&hub, Method::DELETE, "/api/notifications", Some(&ben), Some(json!({"id": id}))).await;
        assert_eq!(body, json!({"deleted": 1, "unread_count": 0}));
        assert_eq!(list(&hub, &ben, "").await["notifications"], json!([]));
        let (status, _) = call(&hub, Method::DELETE, "/api/notifications", Some(&ben), Some(json!({"id": id}))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(ids(&list(&hub, &ann, "").await).len(), 2);

        // Mark-all and delete-all cover broadcasts too.
        call(&hub, Method::POST, "/api/notifications/broadcast", Some(&hub.publisher()),
            Some(json!({"title": "Second", "type": "info"}))).await;
        let (_, body) = call(&hub, Method::PATCH, "/api/notifications", Some(&ann), Some(json!({"all": true}))).await;
        assert_eq!(body, json!({"updated": 2, "unread_count": 0}));
        let (_, body) = call(&hub, Method::DELETE, "/api/notifications", Some(&ann), Some(json!({"all": true}))).await;
        assert_eq!(body["unread_count"], 0);
        assert_eq!(list(&hub, &ann, "").await["notifications"], json!([]));
        assert_eq!(list(&hub, &ben, "").await["unread_count"], 1);
    }

    async fn two_tabs_stay_in_step(store: &TestStore) {
        let hub = store.hub().await;
        let alice = user_token(&hub, "alice");
        let mut tabs = [hub.subscribe("", Some(&alice)).await, hub.subscribe("", Some(&alice)).await];
        let one = notify(&hub, "alice", "one").await;
        notify(&hub, "alice", "two").await;
        for tab in &mut tabs {
            assert_eq!(expect_event(tab, "notification.created").await["notification"], one);
            assert_eq!(expect_event(tab, "notification.created").await["unread_count"], 2);
        }
        let (_, body) = call(&hub, Method::PATCH, "/api/notifications", Some(&alice), Some(json!({"id": one["id"]}))).await;
        for tab in &mut tabs {
            let live = expect_event(tab, "notification.read").await;
            assert_eq!(live["unread_count"], body["unread_count"]);
            assert_eq!(live["ids"], json!([one["id"]]));
        }
        let (_, body) = call(&hub, Method::PATCH, "/api/notifications", Some(&alice), Some(json!({"all": true}))).await;
        for tab in &mut tabs {
            assert_eq!(expect_event(tab, "notification.read").await["unread_count"], body["unread_count"]);
        }
        let (_, count) = call(&hub, Method::GET, "/api/notifications/unread_count", Some(&alice), None).await;
        assert_eq!(count["unread_count"], 0);
    }

    async fn the_last_event_carries_the_stored_count_under_concurrent_changes(store: &TestStore) {
        let hub = store.hub().await;
        let alice = user_token(&hub, "alice");
        let mut tab = hub.subscribe("", Some(&alice)).await;
        let mut requests = Vec::new();
        for i in 0..30 {
            let (url, http) = (hub.url.clone(), hub.http.clone());
            let (publisher, alice) = (hub.publisher(), alice.clone());
            requests.push(tokio::spawn(async move {
                let request = if i % 5 == 4 {
                    http.patch(format!("{url}/api/notifications"))
                        .bearer_auth(alice)
                        .json(&json!({"all": true}))
                } else {
                    http.post(format!("{url}/api/notifications"))
                        .bearer_auth(publisher)
                        .json(&json!({"user": "alice", "title": format!("n{i}"), "type": "info"}))
                };
                assert!(request.send().await.unwrap().status().is_success());
            }));
        }
        for r in requests {
            r.await.unwrap();
        }
        // Every inbox event was published before its request was answered; this one
        // comes after all of them.
        hub.publish(json!({"channel": "user:alice", "type": "marker", "data": null})).await;
        let mut last = None;
        let mut created = 0;
        loop {
            let event = tab.expect().await;
            match event.event.as_str() {
                "marker" => break,
                "notification.created" => created += 1,
                _ => {}
            }
            last = Some(data(&event)["unread_count"].clone());
        }
        assert_eq!(created, 24);
        let (_, count) = call(&hub, Method::GET, "/api/notifications/unread_count", Some(&alice), None).await;
        assert_eq!(last, Some(count["unread_count"].clone()));
    }

    async fn accepted_notifications_survive_a_restart(store: &TestStore) {
        let hub = store.hub().await;
        let alice = user_token(&hub, "alice");
        for i in 0..5 {
            notify(&hub, "alice", &format!("n{i}")).await;
        }
        let (_, first) = call(&hub, Method::GET, "/api/notifications?limit=1", Some(&alice), None).await;
        call(&hub, Method::PATCH, "/api/notifications", Some(&alice),
            Some(json!({"id": first["notifications"][0]["id"]}))).await;
        call(&hub, Method::POST, "/api/notifications/broadcast", Some(&hub.publisher()),
            Some(json!({"title": "all", "type": "info"}))).await;
        let (status, _) = call(&hub, Method::PUT, "/api/tasks/t1", Some(&hub.publisher()),
            Some(json!({"user": "alice", "title": "Export", "status": "running", "progress": 40}))).await;
        assert_eq!(status, StatusCode::CREATED);
        let before = list(&hub, &alice, "").await;
        let (_, tasks_before) = call(&hub, Method::GET, "/api/tasks", Some(&alice), None).await;
        hub.stop().await.unwrap();

        let hub = store.hub().await;
        let alice = user_token(&hub, "alice");
        let after = list(&hub, &alice, "").await;
        assert_eq!(after, before);
        assert_eq!(after["unread_count"], 5);
        assert_eq!(ids(&after).len(), 6);
        let (_, tasks_after) = call(&hub, Method::GET, "/api/tasks", Some(&alice), None).await;
        assert_eq!(tasks_after, tasks_before);
        assert_eq!(tasks_after["tasks"][0]["progress"], 40);
    }

    async fn retention_removes_only_what_is_old_and_finished(store: &TestStore) {
        let hub = store.hub().await;
        let alice = user_token(&hub, "alice");
        let read = notify(&hub, "alice", "read").await;
        let unread = notify(&hub, "alice", "unread").await;
        call(&hub, Method::PATCH, "/api/notifications", Some(&alice), Some(json!({"id": read["id"]}))).await;
        call(&hub, Method::POST, "/api/notifications/broadcast", Some(&hub.publisher()),
            Some(json!({"title": "all", "type": "info"}))).await;
        for (id, status) in [("done", "completed"), ("broken", "failed"), ("busy", "running")] {
            call(&hub, Method::PUT, &format!("/api/tasks/{id}"), Some(&hub.publisher()),
                Some(json!({"user": "alice", "title": id, "status": status}))).await;
        }
        let retention = Retention {
            read: Some(Duration::from_secs(30 * 86_400)),
            tasks: Some(Duration::from_secs(7 * 86_400)),
            broadcasts: Some(Duration::from_secs(90 * 86_400)),
        };
        let day = 86_400_000;
        // Nothing is old yet.
        let cleaned = hub.node.inbox().store().clean_up(now_ms() + day, retention).await.unwrap();
        assert_eq!((cleaned.notifications, cleaned.tasks, cleaned.broadcasts), (0, 0, 0));
        // Eight days on: finished tasks go.
        let cleaned = hub.node.inbox().store().clean_up(now_ms() + 8 * day, retention).await.unwrap();
        assert_eq!((cleaned.notifications, cleaned.tasks, cleaned.broadcasts), (0, 2, 0));
        let (_, tasks) = call(&hub, Method::GET, "/api/tasks", Some(&alice), None).await;
        assert_eq!(tasks["tasks"].as_array().unwrap().len(), 1);
        assert_eq!(tasks["tasks"][0]["id"], "busy");
        // Thirty-one days on: read notifications go, unread ones stay.
        let cleaned = hub.node.inbox().store().clean_up(now_ms() + 31 * day, retention).await.unwrap();
        assert_eq!(cleaned.notifications, 1);
        let page = list(&hub, &alice, "").await;
        assert_eq!(ids(&page).len(), 2);
        assert!(ids(&page).contains(&unread["id"].as_str().unwrap().to_owned()));
        // Ninety-one days on: the broadcast goes.
        let cleaned = hub.node.inbox().store().clean_up(now_ms() + 91 * day, retention).await.unwrap();
        assert_eq!(cleaned.broadcasts, 1);
        let page = list(&hub, &alice, "").await;
        assert_eq!(ids(&page), vec![unread["id"].as_str().unwrap().to_owned()]);
        assert_eq!(page["unread_count"], 1);
    }
}

#[tokio::test]
async fn the_openapi_document_is_served_and_every_route_in_it_exists() {
    let hub = TestHub::start().await;
    let response = hub.get("/api/openapi.json").await;
    assert_eq!(response.status(), StatusCode::OK);
    let doc: Value = response.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 6);
    for (path, item) in paths {
        let concrete = path.replace("{id}", "some-task");
        for method in item
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| *k != "parameters")
        {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let (status, body) = call(&hub, method.clone(), &concrete, None, None).await;
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert_ne!(
                body["error"]["message"], "no such endpoint",
                "{method} {path} is documented but not served"
            );
        }
    }
}

#[tokio::test]
async fn cors_allows_the_inbox_methods() {
    let hub = TestHub::builder()
        .config(|c| c.http.cors_origins = vec!["https://app.example.com".into()])
        .start()
        .await;
    for method in ["PATCH", "DELETE", "PUT"] {
        let response = hub
            .http
            .request(Method::OPTIONS, format!("{}/api/notifications", hub.url))
            .header("Origin", "https://app.example.com")
            .header("Access-Control-Request-Method", method)
            .send()
            .await
            .unwrap();
        let allowed = response
            .headers()
            .get("access-control-allow-methods")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(allowed.contains(method), "{method} not in {allowed:?}");
    }
}

#[tokio::test]
async fn an_unreachable_database_is_a_503_and_not_ready() {
    let hub = TestHub::builder()
        .store(&Backend::Postgres {
            url: "postgres://postgres@127.0.0.1:1/test".into(),
            pool_size: 2,
        })
        .start()
        .await;
    let (status, body) = call(
        &hub,
        Method::POST,
        "/api/notifications",
        Some(&hub.publisher()),
        Some(json!({"user": "alice", "title": "x", "type": "info"})),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");
    let alice = user_token(&hub, "alice");
    let (status, _) = call(&hub, Method::GET, "/api/notifications", Some(&alice), None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let ready = hub.get("/readyz").await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(ready.text().await.unwrap().contains("store"));
}
