//! The auth cookie, which a browser sends from any page, is taken only from the
//! hub's own pages and those of `http.cors_origins`: another site can neither open
//! a stream or a WebSocket as the user (reading their channels, publishing client
//! events) nor change their inbox, and no cookie ever publishes. A token in the
//! `Authorization` header or `?token=` is not affected.

use futures_util::StreamExt;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::fixture::{PATIENCE, TestHub};

const APP: &str = "https://app.example";
const EVIL: &str = "https://evil.example";

/// A hub whose CORS policy allows the page origin [`APP`].
async fn hub_for_app() -> TestHub {
    TestHub::builder()
        .config(|c| c.http.cors_origins = vec![APP.into()])
        .start()
        .await
}

fn cookie(token: &str) -> String {
    format!("theme=dark; herald_token={token}")
}

/// The status and JSON body of a request.
async fn send(request: RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Asserts a 403 `origin_not_allowed` that names `origin`.
fn assert_refused(status: StatusCode, body: &Value, origin: &str, what: &str) {
    assert_eq!(status, StatusCode::FORBIDDEN, "{what}: {body}");
    assert_eq!(
        body["error"]["code"], "origin_not_allowed",
        "{what}: {body}"
    );
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(origin), "{what}: {message}");
}

/// How a streaming request carries its credential.
#[derive(Clone, Copy, Debug)]
enum Carried {
    Cookie,
    Bearer,
    Query,
}

/// `GET {path}?{query}` with `token` carried as said, from a page on `origin`
/// (none: no `Origin` header) and with the `Sec-Fetch-Site` a browser would add.
fn stream_request(
    hub: &TestHub,
    path: &str,
    query: &str,
    token: &str,
    carried: Carried,
    origin: Option<&str>,
    site: Option<&str>,
) -> RequestBuilder {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut url = format!("{}{path}?{query}", hub.url);
    let mut request = match carried {
        Carried::Query => {
            url.push_str(&format!("&token={token}"));
            client.get(url)
        }
        Carried::Bearer => client.get(url).bearer_auth(token),
        Carried::Cookie => client.get(url).header("cookie", cookie(token)),
    };
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    if let Some(site) = site {
        request = request.header("sec-fetch-site", site);
    }
    request
}

/// Opens `/events` and returns its status, and the `connected` user when it opened
/// (or the JSON error when it did not).
async fn open_events(
    hub: &TestHub,
    token: &str,
    carried: Carried,
    origin: Option<&str>,
    site: Option<&str>,
) -> (StatusCode, Value) {
    let request = stream_request(
        hub,
        "/events",
        "channel=secret",
        token,
        carried,
        origin,
        site,
    );
    let response = request.send().await.unwrap();
    let status = response.status();
    if status != StatusCode::OK {
        let text = response.text().await.unwrap_or_default();
        return (status, serde_json::from_str(&text).unwrap_or(Value::Null));
    }
    let mut body = response.bytes_stream();
    let mut text = String::new();
    while !text.contains("\n\n") {
        let chunk = tokio::time::timeout(PATIENCE, body.next())
            .await
            .expect("the connected event in time")
            .expect("the stream goes on")
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("a connected event");
    let connected: Value = serde_json::from_str(line).unwrap();
    (status, connected["user"].clone())
}

/// The ways `/events` is asked for in the tests below: each answer expected, with
/// the page's origin (and `Sec-Fetch-Site`) and how the token goes.
async fn check_events(hub: &TestHub, cases: &[(Carried, Option<&str>, Option<&str>, bool)]) {
    let token = hub.token(Some("ana"), &["secret"], &[]);
    for &(carried, origin, site, allowed) in cases {
        let what = format!("/events, token by {carried:?}, Origin {origin:?}, site {site:?}");
        let (status, body) = open_events(hub, &token, carried, origin, site).await;
        if allowed {
            assert_eq!(status, StatusCode::OK, "{what}: {body}");
            assert_eq!(body, "ana", "{what}");
        } else {
            assert_refused(status, &body, origin.unwrap_or("Sec-Fetch-Site"), &what);
        }
    }
}

#[tokio::test]
async fn a_stream_takes_the_cookie_only_from_allowed_origins() {
    // With CORS configured a request with an Origin goes through the router, and
    // one without is served straight on the socket: both paths check.
    let hub = hub_for_app().await;
    let own = hub.url.clone();
    check_events(
        &hub,
        &[
            (Carried::Cookie, Some(EVIL), None, false),
            (Carried::Cookie, Some(EVIL), Some("cross-site"), false),
            (Carried::Cookie, Some("null"), None, false),
            (Carried::Cookie, Some(APP), Some("cross-site"), true),
            (Carried::Cookie, Some(&format!("{APP}/")), None, true),
            (Carried::Cookie, Some(&own), None, true),
            (Carried::Cookie, None, Some("cross-site"), false),
            (Carried::Cookie, None, Some("same-site"), false),
            (Carried::Cookie, None, Some("same-origin"), true),
            (Carried::Cookie, None, None, true),
            (Carried::Bearer, Some(EVIL), Some("cross-site"), true),
            (Carried::Query, Some(EVIL), Some("cross-site"), true),
        ],
    )
    .await;
}

#[tokio::test]
async fn without_cors_only_the_hubs_own_pages_may_stream_with_the_cookie() {
    // Every plain GET /events is served straight on the socket here.
    let hub = TestHub::start().await;
    let own = hub.url.clone();
    let own_https = own.replace("http://", "https://");
    check_events(
        &hub,
        &[
            (Carried::Cookie, Some(EVIL), None, false),
            (Carried::Cookie, Some(APP), None, false),
            (Carried::Cookie, Some("http://127.0.0.1"), None, false),
            (Carried::Cookie, Some(&own), Some("same-origin"), true),
            (Carried::Cookie, Some(&own), None, true),
            // Behind a proxy that ends TLS, the page's scheme is https.
            (Carried::Cookie, Some(&own_https), None, true),
            (Carried::Cookie, None, Some("cross-site"), false),
            (Carried::Cookie, None, None, true),
            (Carried::Bearer, Some(EVIL), None, true),
            (Carried::Query, Some(EVIL), None, true),
        ],
    )
    .await;
}

#[tokio::test]
async fn long_polling_takes_the_cookie_only_from_allowed_origins() {
    for hub in [hub_for_app().await, TestHub::start().await] {
        let token = hub.token(Some("ana"), &["secret"], &[]);
        let poll = |carried, origin| {
            stream_request(
                &hub,
                "/poll",
                "channel=secret&timeout=0",
                &token,
                carried,
                Some(origin),
                None,
            )
        };
        let (status, body) = send(poll(Carried::Cookie, EVIL)).await;
        assert_refused(status, &body, EVIL, "/poll with the cookie");
        for (carried, origin) in [
            (Carried::Cookie, hub.url.as_str()),
            (Carried::Bearer, EVIL),
            (Carried::Query, EVIL),
        ] {
            let (status, body) = send(poll(carried, origin)).await;
            assert_eq!(status, StatusCode::OK, "{carried:?} from {origin}: {body}");
            assert_eq!(body["user"], "ana");
        }
        let (status, body) = send(poll(Carried::Cookie, APP)).await;
        let cors = !hub.node.config().http.cors_origins.is_empty();
        if cors {
            assert_eq!(status, StatusCode::OK, "{body}");
        } else {
            assert_refused(status, &body, APP, "/poll from an origin not configured");
        }
    }
}

/// The WebSocket handshake for `/ws?{query}` with `headers`: the socket, or the
/// HTTP answer that refused it.
async fn handshake(
    hub: &TestHub,
    query: &str,
    headers: &[(&str, String)],
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    (StatusCode, Value),
> {
    let mut request = format!("ws://{}/ws?{query}", hub.addr)
        .into_client_request()
        .unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, response)) => {
            assert_eq!(response.status(), 101);
            Ok(socket)
        }
        Err(tungstenite::Error::Http(response)) => {
            let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
            let body = response
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            Err((status, body))
        }
        Err(other) => panic!("the handshake failed: {other}"),
    }
}

/// The first frame of a socket, which is `connected`: its user.
async fn connected_user(
    socket: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Value {
    let frame = tokio::time::timeout(PATIENCE, socket.next())
        .await
        .expect("a frame in time")
        .expect("a frame")
        .unwrap();
    let frame: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
    assert_eq!(frame["type"], "connected", "{frame}");
    frame["user"].clone()
}

#[tokio::test]
async fn a_websocket_takes_the_cookie_only_from_allowed_origins() {
    let hub = hub_for_app().await;
    let token = hub.token(Some("ana"), &["secret"], &["secret"]);
    let with_cookie =
        |origin: &str| vec![("cookie", cookie(&token)), ("origin", origin.to_owned())];
    // Another site's page: refused before the upgrade, with a JSON answer.
    let refused = handshake(&hub, "channel=secret", &with_cookie(EVIL)).await;
    let Err((status, body)) = refused else {
        panic!("a page on {EVIL} opened a WebSocket with the user's cookie");
    };
    assert_refused(status, &body, EVIL, "/ws with the cookie");

    for origin in [APP, hub.url.as_str()] {
        let mut socket = handshake(&hub, "channel=secret", &with_cookie(origin))
            .await
            .unwrap_or_else(|e| panic!("{origin}: {e:?}"));
        assert_eq!(connected_user(&mut socket).await, "ana", "{origin}");
    }
    // A page holding the token itself may connect from anywhere.
    let by_query = format!("channel=secret&token={token}");
    let mut socket = handshake(&hub, &by_query, &[("origin", EVIL.into())])
        .await
        .unwrap();
    assert_eq!(connected_user(&mut socket).await, "ana");
    let bearer = vec![
        ("authorization", format!("Bearer {token}")),
        ("cookie", cookie(&token)),
        ("origin", EVIL.to_owned()),
    ];
    let mut socket = handshake(&hub, "channel=secret", &bearer).await.unwrap();
    assert_eq!(connected_user(&mut socket).await, "ana");
}

#[tokio::test]
async fn no_cookie_publishes_and_publishing_takes_json_only() {
    let hub = hub_for_app().await;
    let publisher = hub.token(Some("pub"), &[], &["news"]);
    let mut reader = hub
        .subscribe("channel=news", Some(&hub.token(None, &["news"], &[])))
        .await;
    let body = r#"{"channel": "news", "data": "forged"}"#;
    let post = |content_type: &str, origin: &str| {
        hub.http
            .post(format!("{}/publish", hub.url))
            .header("cookie", cookie(&publisher))
            .header("content-type", content_type)
            .header("origin", origin)
            .body(body)
    };
    // A form on another site, and even a page the hub trusts: the cookie is not a
    // publisher's credential.
    for (content_type, origin) in [
        ("text/plain", EVIL),
        ("application/x-www-form-urlencoded", EVIL),
        ("application/json", APP),
        ("application/json", hub.url.as_str()),
    ] {
        let (status, answer) = send(post(content_type, origin)).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{content_type} from {origin}: {answer}"
        );
        assert_eq!(answer["error"]["code"], "unauthorized");
    }
    let (status, answer) = send(
        hub.http
            .post(format!("{}/publish?token={publisher}", hub.url))
            .json(&json!({"channel": "news", "data": "forged"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "?token=: {answer}");
    // With the header, the body must still say it is JSON.
    let (status, answer) = send(
        hub.http
            .post(format!("{}/publish", hub.url))
            .bearer_auth(&publisher)
            .header("content-type", "text/plain")
            .body(body),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{answer}");
    assert_eq!(answer["error"]["code"], "unsupported_media_type");

    let (status, answer) = send(
        hub.http
            .post(format!("{}/publish", hub.url))
            .bearer_auth(&publisher)
            .header("origin", EVIL)
            .json(&json!({"channel": "news", "data": "real"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // The first event the reader gets is the real one: nothing else was published.
    let event = reader.expect().await;
    assert_eq!(event.data, "real");
}

/// `method path` with `body` as JSON and the cookie of `token`, from `origin`.
fn with_cookie(
    hub: &TestHub,
    method: Method,
    path: &str,
    token: &str,
    origin: Option<&str>,
    body: &Value,
) -> RequestBuilder {
    let mut request = hub
        .http
        .request(method, format!("{}{path}", hub.url))
        .header("cookie", cookie(token))
        .json(body);
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    request
}

#[tokio::test]
async fn another_site_cannot_change_the_users_inbox_with_the_cookie() {
    let hub = hub_for_app().await;
    let publisher = hub.publisher();
    let alice = hub.token(Some("alice"), &[], &[]);
    let notify = |title: &str| {
        let request = hub
            .http
            .post(format!("{}/api/notifications", hub.url))
            .bearer_auth(&publisher)
            .json(&json!({"user": "alice", "title": title, "message": "m", "type": "info"}));
        async move {
            let (status, body) = send(request).await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            body["notifications"][0]["id"].as_str().unwrap().to_owned()
        }
    };
    let first = notify("one").await;
    notify("two").await;
    let inbox = async || {
        let body = hub.get_json("/api/notifications", &alice).await;
        let unread = body["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["read"] == false)
            .count();
        (body["notifications"].as_array().unwrap().len(), unread)
    };
    assert_eq!(inbox().await, (2, 2));

    let changes = [
        (Method::PATCH, json!({"all": true})),
        (Method::PATCH, json!({"id": first})),
        (Method::DELETE, json!({"all": true})),
        (Method::DELETE, json!({"id": first})),
    ];
    for (method, body) in &changes {
        let what = format!("{method} {body}");
        let request = with_cookie(
            &hub,
            method.clone(),
            "/api/notifications",
            &alice,
            Some(EVIL),
            body,
        );
        let (status, answer) = send(request).await;
        assert_refused(status, &answer, EVIL, &what);
        // No Origin, but the browser says another site's page asked.
        let request = with_cookie(
            &hub,
            method.clone(),
            "/api/notifications",
            &alice,
            None,
            body,
        )
        .header("sec-fetch-site", "cross-site");
        let (status, answer) = send(request).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{what}: {answer}");
        // A form-encodable body is refused even from an allowed page.
        let request = hub
            .http
            .request(method.clone(), format!("{}/api/notifications", hub.url))
            .header("cookie", cookie(&alice))
            .header("origin", APP)
            .header("content-type", "text/plain")
            .body(body.to_string());
        let (status, answer) = send(request).await;
        assert_eq!(
            status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{what}: {answer}"
        );
    }
    assert_eq!(inbox().await, (2, 2), "nothing changed");

    // The app's own page (and the hub's) may.
    let request = with_cookie(
        &hub,
        Method::PATCH,
        "/api/notifications",
        &alice,
        Some(APP),
        &json!({"id": first}),
    );
    let (status, answer) = send(request).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["updated"], 1);
    assert_eq!(inbox().await, (2, 1));
    let own = hub.url.clone();
    let request = with_cookie(
        &hub,
        Method::DELETE,
        "/api/notifications",
        &alice,
        Some(&own),
        &json!({"all": true}),
    );
    let (status, answer) = send(request).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["deleted"], 2);
    assert_eq!(inbox().await, (0, 0));
}

#[tokio::test]
async fn a_cookie_never_creates_notifications_or_tasks() {
    let hub = hub_for_app().await;
    // A token that could publish to alice, in the cookie.
    let publisher = hub.token(Some("ops"), &[], &["user:*", "$broadcast"]);
    let alice = hub.token(Some("alice"), &[], &[]);
    let notification = json!({"user": "alice", "title": "t", "message": "m", "type": "info"});
    let broadcast = json!({"title": "t", "message": "m", "type": "info"});
    let task = json!({"user": "alice", "title": "Export", "status": "running"});
    let creations = [
        (Method::POST, "/api/notifications", &notification),
        (Method::POST, "/api/notifications/broadcast", &broadcast),
        (Method::PUT, "/api/tasks/t1", &task),
    ];
    for (method, path, body) in &creations {
        for origin in [EVIL, APP] {
            let request = with_cookie(&hub, method.clone(), path, &publisher, Some(origin), body);
            let (status, answer) = send(request).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} from {origin}: {answer}"
            );
        }
    }
    let notifications = hub.get_json("/api/notifications", &alice).await;
    assert_eq!(notifications["notifications"], json!([]), "{notifications}");
    let tasks = hub.get_json("/api/tasks", &alice).await;
    assert_eq!(tasks["tasks"], json!([]), "{tasks}");
    // The same requests with the token in the header work.
    for (method, path, body) in &creations {
        let request = hub
            .http
            .request(method.clone(), format!("{}{path}", hub.url))
            .bearer_auth(&publisher)
            .header("origin", EVIL)
            .json(body);
        let (status, answer) = send(request).await;
        assert_eq!(status, StatusCode::CREATED, "{method} {path}: {answer}");
    }
}

#[tokio::test]
async fn reads_take_the_cookie_only_from_allowed_origins() {
    let hub = TestHub::builder()
        .config(|c| {
            c.http.cors_origins = vec![APP.into()];
            let room = herald::config::NamespaceConfig {
                presence: Some(true),
                ..Default::default()
            };
            c.namespaces.insert("room".into(), room);
        })
        .start()
        .await;
    let alice = hub.token(Some("alice"), &["room:1"], &[]);
    hub.publish(json!({"channel": "room:1", "data": "kept"}))
        .await;
    let get = |path: &str, origin: &str| {
        hub.http
            .get(format!("{}{path}", hub.url))
            .header("cookie", cookie(&alice))
            .header("origin", origin)
    };
    for path in [
        "/api/notifications",
        "/api/notifications/unread_count",
        "/api/tasks",
        "/channels/room:1/history",
        "/channels/room:1/presence",
    ] {
        let (status, body) = send(get(path, EVIL)).await;
        assert_refused(status, &body, EVIL, path);
        let (status, body) = send(get(path, APP)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    let (_, history) = send(get("/channels/room:1/history", APP)).await;
    assert_eq!(data_of(&history), ["kept"]);
}

fn data_of(history: &Value) -> Vec<String> {
    history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn demo_tokens_are_asked_for_in_json() {
    let hub = TestHub::builder()
        .config(|c| c.demo.tokens = Some(true))
        .start()
        .await;
    let url = format!("{}/demo/token", hub.url);
    let (status, body) = send(
        hub.http
            .post(&url)
            .header("content-type", "text/plain")
            .header("origin", EVIL)
            .body(r#"{"user": "ana"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
    let (status, body) = send(hub.http.post(&url).json(&json!({"user": "ana"}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["token"].as_str().unwrap();
    // The demo page is the hub's own: it may use the cookie.
    let sse = hub
        .http
        .get(format!("{}/events?channel=demo:board", hub.url))
        .header("cookie", cookie(token))
        .header("origin", hub.url.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), StatusCode::OK);
}
