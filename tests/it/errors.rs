//! Every refusal has the same JSON body, `{"error": {"code", "message"}}`, whatever
//! refused the request: the router (no such route or method), a path or query that
//! cannot be read, a body that is not JSON, and on both paths of `GET /events` (served
//! directly on the socket, and through the router when CORS applies).

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};

use crate::fixture::TestHub;

const ORIGIN: &str = "https://app.example";

/// A hub with CORS on, so that a request with an `Origin` goes through the router.
async fn hub() -> TestHub {
    TestHub::builder()
        .config(|c| c.http.cors_origins = vec![ORIGIN.into()])
        .start()
        .await
}

/// Sends `request` and returns its status, headers and JSON error body, checking
/// that it is one.
async fn refusal(request: RequestBuilder) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    assert!(
        headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("application/json")),
        "{status}: {headers:?} {text}"
    );
    let body: Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: JSON, not {text:?}"));
    assert!(body["error"]["code"].is_string(), "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    (status, headers, body)
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let hub = hub().await;
    let url = |path: &str| format!("{}{path}", hub.url);
    let (status, headers, body) = refusal(hub.http.put(url("/publish"))).await;
    assert_eq!(status, 405);
    assert_eq!(body["error"]["code"], "method_not_allowed");
    assert_eq!(headers["allow"], "POST");
    for (method, path, allow) in [
        (Method::DELETE, "/api/tasks/x", "GET,HEAD,PUT"),
        (Method::POST, "/events", "GET,HEAD"),
        (Method::PATCH, "/channels/a/history", "GET,HEAD"),
    ] {
        let (status, headers, body) = refusal(
            hub.http
                .request(method.clone(), url(path))
                .header("origin", ORIGIN),
        )
        .await;
        assert_eq!(status, 405, "{method} {path}");
        assert_eq!(body["error"]["code"], "method_not_allowed");
        assert_eq!(headers["allow"], allow, "{method} {path}");
        assert_eq!(headers["access-control-allow-origin"], ORIGIN);
    }
    for path in ["/nope", "/api/nope", "/channels/a", "/events/more"] {
        let (status, _, body) = refusal(hub.http.get(url(path))).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["error"]["code"], "not_found");
    }
}

/// The stream endpoints, each as a request for `query`: `/events` on both of its
/// paths, `/ws` (a well-formed upgrade) and `/poll`.
fn stream_requests(hub: &TestHub, query: &str) -> Vec<(&'static str, RequestBuilder)> {
    let url = |path: &str| format!("{}{path}?{query}", hub.url);
    vec![
        ("/events", hub.http.get(url("/events"))),
        (
            "/events with Origin",
            hub.http.get(url("/events")).header("origin", ORIGIN),
        ),
        (
            "/ws",
            hub.http
                .get(url("/ws"))
                .header("upgrade", "websocket")
                .header("connection", "upgrade")
                .header("sec-websocket-version", "13")
                .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ),
        ("/poll", hub.http.get(url("/poll"))),
    ]
}

#[tokio::test]
async fn stream_queries_that_are_not_utf8_or_repeat_a_parameter_are_400() {
    let hub = hub().await;
    let token = hub.token(Some("ana"), &["*"], &[]);
    for (query, parameter) in [
        ("channel=%FF".to_owned(), "channel"),
        ("channel=a&channel=b%C3%28".to_owned(), "channel"),
        ("channel=a&envelope=%FE".to_owned(), "envelope"),
        (
            format!("channel=a&token={token}&last_event_id=1&last_event_id=2"),
            "last_event_id",
        ),
        (
            format!("channel=a&token={token}&lastEventId=1&last_event_id=2"),
            "last_event_id",
        ),
        (format!("channel=a&token={token}&token={token}"), "token"),
    ] {
        for (endpoint, request) in stream_requests(&hub, &query) {
            let (status, _, body) = refusal(request).await;
            assert_eq!(status, 400, "{endpoint}?{query}: {body}");
            assert_eq!(
                body["error"]["code"], "invalid_parameter",
                "{endpoint}: {body}"
            );
            assert_eq!(body["error"]["parameter"], parameter, "{endpoint}: {body}");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(
                message.contains(&format!("`{parameter}`")),
                "{endpoint}: {message}"
            );
        }
    }
    // `timeout` is a long-poll's own.
    let (status, _, body) = refusal(
        hub.http
            .get(format!("{}/poll?channel=a&timeout=1&timeout=2", hub.url)),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["parameter"], "timeout");

    // A channel named twice is still one channel.
    let answer: Value = hub
        .http
        .get(format!(
            "{}/poll?channel=a&channel=a&channels=a,a&timeout=0&token={token}",
            hub.url
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["channels"], json!(["a", "user:ana", "$broadcast"]));
}

#[tokio::test]
async fn paths_and_queries_that_cannot_be_read_are_400() {
    let hub = hub().await;
    let alice = hub.token(Some("alice"), &["*"], &[]);
    let publisher = hub.publisher();
    let url = |path: &str| format!("{}{path}", hub.url);
    for (request, parameter) in [
        (hub.http.get(url("/channels/%FF/history")), "name"),
        (hub.http.get(url("/channels/a%C3/presence")), "name"),
        (
            hub.http.get(url("/api/tasks/%FF%FE")).bearer_auth(&alice),
            "id",
        ),
        (
            hub.http
                .put(url("/api/tasks/%FF"))
                .bearer_auth(&publisher)
                .json(&json!({"user": "alice", "title": "t", "status": "queued"})),
            "id",
        ),
        (
            hub.http.get(url("/channels/a/history?limit=1&limit=2")),
            "limit",
        ),
        (hub.http.get(url("/channels/a/history?limit=%FF")), "limit"),
        (
            hub.http
                .get(url("/api/notifications?page=1&page=2"))
                .bearer_auth(&alice),
            "page",
        ),
        (
            hub.http
                .get(url("/api/notifications?cursor=%FF"))
                .bearer_auth(&alice),
            "cursor",
        ),
        (
            hub.http
                .get(url("/api/tasks?limit=5&limit=6"))
                .bearer_auth(&alice),
            "limit",
        ),
        (
            hub.http.get(url(&format!(
                "/api/notifications/unread_count?token={alice}&token=x"
            ))),
            "token",
        ),
    ] {
        let (status, _, body) = refusal(request).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "invalid_parameter", "{body}");
        assert_eq!(body["error"]["parameter"], parameter, "{body}");
    }
    // An id the store would never have is not found, in JSON.
    let (status, _, body) = refusal(
        hub.http
            .get(url("/api/tasks/no-such-task"))
            .bearer_auth(&alice),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test]
async fn api_bodies_must_be_json_of_the_right_type() {
    let hub = hub().await;
    let publisher = hub.publisher();
    let alice = hub.token(Some("alice"), &[], &[]);
    let url = |path: &str| format!("{}{path}", hub.url);
    let notification = r#"{"user":"alice","title":"t","message":"m","type":"info"}"#;
    // The same body the hub accepts as JSON is refused as anything else: a page on
    // another origin can send text/plain without asking first.
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut request = hub
            .http
            .post(url("/api/notifications"))
            .bearer_auth(&publisher)
            .body(notification);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let (status, _, body) = refusal(request).await;
        assert_eq!(status, 415, "{content_type:?}");
        assert_eq!(body["error"]["code"], "unsupported_media_type");
    }
    for (method, path, token) in [
        (Method::PUT, "/api/tasks/x", &publisher),
        (Method::PATCH, "/api/notifications", &alice),
        (Method::DELETE, "/api/notifications", &alice),
        (Method::POST, "/api/notifications/broadcast", &publisher),
    ] {
        let request = hub
            .http
            .request(method.clone(), url(path))
            .bearer_auth(token)
            .header("content-type", "text/plain")
            .body("{}");
        let (status, _, _) = refusal(request).await;
        assert_eq!(status, 415, "{method} {path}");
    }
    for body in ["[1]", "\"alice\"", "17", r#"{"user": 5}"#, "{\"user\":"] {
        let request = hub
            .http
            .post(url("/api/notifications"))
            .bearer_auth(&publisher)
            .header("content-type", "application/json")
            .body(body);
        let (status, _, answer) = refusal(request).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(answer["error"]["code"], "invalid_json", "{body}");
    }
    // JSON with parameters or a +json type is JSON.
    for content_type in [
        "application/json; charset=utf-8",
        "application/vnd.app+json",
    ] {
        let response = hub
            .http
            .post(url("/api/notifications"))
            .bearer_auth(&publisher)
            .header("content-type", content_type)
            .body(notification)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{content_type}");
    }
}
