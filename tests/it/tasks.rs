//! Background tasks over HTTP, on SQLite and on the real PostgreSQL: a publisher
//! creates and updates a user's task, the user lists it and sees each change live,
//! a finishing task raises its notification, and no user sees another's task.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::inbox::{TestStore, call, expect_event, on_both_stores, user_token};

on_both_stores! {
    async fn a_task_is_created_updated_and_finished_live(store: &TestStore) {
        let hub = store.hub().await;
        let alice = user_token(&hub, "alice");
        let publisher = hub.publisher();
        let mut tab = hub.subscribe("", Some(&alice)).await;

        let (status, created) = call(&hub, Method::PUT, "/api/tasks/export-42", Some(&publisher),
            Some(json!({"user": "alice", "title": "Export CSV", "status": "queued"}))).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        assert_eq!(created["id"], "export-42");
        assert_eq!(created["user"], "alice");
        assert_eq!(created["status"], "queued");
        assert_eq!(created["progress"], 0);
        assert_eq!(created["message"], Value::Null);
        assert_eq!(expect_event(&mut tab, "task.created").await, created);

        let (status, running) = call(&hub, Method::PUT, "/api/tasks/export-42", Some(&publisher),
            Some(json!({"user": "alice", "title": "Export CSV", "status": "running", "progress": 40,
                        "message": "Writing rows"}))).await;
        assert_eq!(status, StatusCode::OK, "{running}");
        assert_eq!(running["progress"], 40);
        assert_eq!(running["message"], "Writing rows");
        assert_eq!(running["created_at"], created["created_at"]);
        assert_eq!(expect_event(&mut tab, "task.updated").await, running);

        let (_, listed) = call(&hub, Method::GET, "/api/tasks", Some(&alice), None).await;
        assert_eq!(listed, json!({"tasks": [running]}));
        let (_, one) = call(&hub, Method::GET, "/api/tasks/export-42", Some(&alice), None).await;
        assert_eq!(one, running);

        // Finishing raises the notification, once.
        let finish = json!({"user": "alice", "title": "Export CSV", "status": "completed",
            "notify": {"title": "Export ready", "message": "42 rows", "type": "success", "link": "/exports/42"}});
        let (status, done) = call(&hub, Method::PUT, "/api/tasks/export-42", Some(&publisher), Some(finish.clone())).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(done["status"], "completed");
        assert_eq!(done["progress"], 100);
        assert_eq!(done["message"], "Writing rows");
        assert_eq!(expect_event(&mut tab, "task.updated").await, done);
        let raised = expect_event(&mut tab, "notification.created").await;
        assert_eq!(raised["notification"]["title"], "Export ready");
        assert_eq!(raised["notification"]["link"], "/exports/42");
        assert_eq!(raised["unread_count"], 1);
        call(&hub, Method::PUT, "/api/tasks/export-42", Some(&publisher), Some(finish)).await;
        expect_event(&mut tab, "task.updated").await;
        let (_, page) = call(&hub, Method::GET, "/api/notifications", Some(&alice), None).await;
        assert_eq!(page["notifications"].as_array().unwrap().len(), 1);
        assert_eq!(page["notifications"][0], raised["notification"]);

        // Newest update first.
        let (_, other) = call(&hub, Method::PUT, "/api/tasks/import-7", Some(&publisher),
            Some(json!({"user": "alice", "title": "Import", "status": "failed", "message": "bad row 3"}))).await;
        let (_, listed) = call(&hub, Method::GET, "/api/tasks?limit=1", Some(&alice), None).await;
        assert_eq!(listed["tasks"], json!([other]));
        let (_, listed) = call(&hub, Method::GET, "/api/tasks", Some(&alice), None).await;
        assert_eq!(listed["tasks"].as_array().unwrap().len(), 2);
    }

    async fn tasks_are_private_and_checked(store: &TestStore) {
        let hub = store.hub().await;
        let (alice, bob) = (user_token(&hub, "alice"), user_token(&hub, "bob"));
        let publisher = hub.publisher();
        let mut bobs_tab = hub.subscribe("", Some(&bob)).await;
        let (status, _) = call(&hub, Method::PUT, "/api/tasks/report", Some(&publisher),
            Some(json!({"user": "alice", "title": "Alice's report", "status": "running"}))).await;
        assert_eq!(status, StatusCode::CREATED);
        let (status, answer) = call(&hub, Method::GET, "/api/tasks/report", Some(&bob), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
        assert_eq!(answer["error"]["code"], "not_found");
        let (_, listed) = call(&hub, Method::GET, "/api/tasks", Some(&bob), None).await;
        assert_eq!(listed, json!({"tasks": []}));
        // The same id for bob is bob's own task.
        let (status, his) = call(&hub, Method::PUT, "/api/tasks/report", Some(&publisher),
            Some(json!({"user": "bob", "title": "Bob's report", "status": "queued"}))).await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(expect_event(&mut bobs_tab, "task.created").await, his);
        let (_, hers) = call(&hub, Method::GET, "/api/tasks/report", Some(&alice), None).await;
        assert_eq!(hers["title"], "Alice's report");

        for (body, field) in [
            (json!({"user": "alice", "title": "", "status": "running"}), "title"),
            (json!({"user": "alice", "title": "x", "status": "paused"}), "status"),
            (json!({"user": "alice", "title": "x"}), "status"),
            (json!({"user": "alice", "title": "x", "status": "running", "progress": 101}), "progress"),
            (json!({"user": "alice", "title": "x", "status": "running", "progress": -1}), "progress"),
            (json!({"user": "alice", "title": "x", "status": "running", "progress": "half"}), "progress"),
            (json!({"title": "x", "status": "running"}), "user"),
            (json!({"user": "alice", "title": "x", "status": "completed",
                    "notify": {"title": "done", "type": "loud"}}), "notify.type"),
        ] {
            let (status, answer) = call(&hub, Method::PUT, "/api/tasks/report", Some(&publisher), Some(body.clone())).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {answer}");
            assert_eq!(answer["error"]["code"], "invalid_field", "{body}");
            assert!(answer["error"]["message"].as_str().unwrap().starts_with(field), "{body} -> {answer}");
        }
        let (status, _) = call(&hub, Method::PUT, "/api/tasks/bad%20id", Some(&publisher),
            Some(json!({"user": "alice", "title": "x", "status": "running"}))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        for query in ["limit=0", "limit=101"] {
            let (status, answer) = call(&hub, Method::GET, &format!("/api/tasks?{query}"), Some(&alice), None).await;
            assert_eq!(status, StatusCode::BAD_REQUEST);
            assert_eq!(answer["error"]["code"], "invalid_parameter");
        }
        let (status, _) = call(&hub, Method::PUT, "/api/tasks/x", Some(&alice),
            Some(json!({"user": "bob", "title": "x", "status": "running"}))).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = call(&hub, Method::GET, "/api/tasks", None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        // The refused updates changed nothing.
        let (_, hers) = call(&hub, Method::GET, "/api/tasks/report", Some(&alice), None).await;
        assert_eq!(hers["title"], "Alice's report");
        assert_eq!(hers["status"], "running");
    }
}
