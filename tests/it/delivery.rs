//! Delivery over SSE: channels, users, broadcast, framing, heartbeats.

use std::time::Duration;

use serde_json::json;

use crate::fixture::{PATIENCE, TestHub, json};

#[tokio::test]
async fn one_connection_receives_several_channels_each_event_once() {
    let hub = TestHub::start().await;
    let token = hub.token(Some("ana"), &["a", "b", "c"], &[]);
    let mut sse = hub.subscribe("channel=a&channel=b", Some(&token)).await;
    assert_eq!(
        sse.connected["channels"],
        json!(["a", "b", "user:ana", "$broadcast"])
    );
    assert_eq!(sse.connected["user"], "ana");
    let a = hub.publish(json!({"channel": "a", "data": {"n": 1}})).await;
    hub.publish(json!({"channel": "c", "data": {"n": 2}})).await;
    let both = hub
        .publish(json!({"channels": ["a", "b", "c"], "data": {"n": 3}}))
        .await;
    let b = hub
        .publish(json!({"channel": "b", "type": "note", "data": "four"}))
        .await;

    let e = sse.expect().await;
    assert_eq!(
        (e.id.as_str(), e.event.as_str(), e.data.as_str()),
        (a.as_str(), "message", r#"{"n":1}"#)
    );
    let e = sse.expect().await;
    assert_eq!(
        (e.id.as_str(), e.data.as_str()),
        (both.as_str(), r#"{"n":3}"#)
    );
    let e = sse.expect().await;
    assert_eq!(
        (e.id.as_str(), e.event.as_str(), e.data.as_str()),
        (b.as_str(), "note", "four")
    );
    assert!(sse.quiet_for(Duration::from_millis(200)).await.is_none());
}

#[tokio::test]
async fn the_stream_has_proxy_safe_headers_and_a_retry_hint() {
    let hub = TestHub::start().await;
    let token = hub.token(None, &["a"], &[]);
    let response = hub.open("channel=a", Some(&token), None).await;
    let h = response.headers();
    assert_eq!(h["content-type"], "text/event-stream");
    assert_eq!(h["cache-control"], "no-cache, no-transform");
    assert_eq!(h["x-accel-buffering"], "no");
    let mut body = response.bytes_stream();
    use futures_util::StreamExt;
    let first = body.next().await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&first);
    assert!(text.starts_with("retry: 3000\nid: "), "{text}");
    // The id is the starting position the event's data names too, so an
    // EventSource dropped before any event resumes from there.
    let id = text.lines().nth(1).unwrap().strip_prefix("id: ").unwrap();
    let rest = text.split_once('\n').unwrap().1.split_once('\n').unwrap().1;
    assert!(rest.starts_with("event: connected\ndata: {"), "{text}");
    let data: serde_json::Value =
        serde_json::from_str(rest.lines().nth(1).unwrap().strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(data["last_event_id"], id, "{text}");
}

#[tokio::test]
async fn a_user_never_receives_another_users_events() {
    let hub = TestHub::start().await;
    let ana = hub.token(Some("ana"), &["*"], &[]);
    let bob = hub.token(Some("bob"), &["*"], &[]);
    let mut ana_sse = hub.subscribe("", Some(&ana)).await;
    let mut bob_sse = hub.subscribe("", Some(&bob)).await;
    hub.publish(json!({"channel": "user:bob", "data": "for bob"}))
        .await;
    hub.node
        .hub()
        .send_to_user(
            "ana",
            herald::NewEvent::text(herald::ChannelName::new("x").unwrap(), "for ana"),
        )
        .await
        .unwrap();
    assert_eq!(bob_sse.expect().await.data, "for bob");
    assert_eq!(ana_sse.expect().await.data, "for ana");
    assert!(
        ana_sse
            .quiet_for(Duration::from_millis(200))
            .await
            .is_none()
    );
    assert!(
        bob_sse
            .quiet_for(Duration::from_millis(200))
            .await
            .is_none()
    );
    // Even a token granting every channel cannot open another user's channel.
    let response = hub.open("channel=user:bob", Some(&ana), None).await;
    assert_eq!(response.status(), 403);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden");
}

#[tokio::test]
async fn broadcast_reaches_every_connection() {
    let hub = TestHub::builder()
        .config(|c| {
            c.namespaces.insert(
                "public".into(),
                herald::config::NamespaceConfig {
                    subscribe: Some(herald::core::SubscribeRule::Anyone),
                    ..Default::default()
                },
            );
        })
        .start()
        .await;
    let ana = hub.token(Some("ana"), &["a"], &[]);
    let mut streams = vec![
        hub.subscribe("channel=a", Some(&ana)).await,
        hub.subscribe("channel=public:news", None).await,
        hub.subscribe("channel=public:other", None).await,
    ];
    let id = hub
        .publish(json!({"broadcast": true, "type": "announcement", "data": {"text": "hi"}}))
        .await;
    for sse in &mut streams {
        let e = sse.expect().await;
        assert_eq!(
            (e.id.as_str(), e.event.as_str()),
            (id.as_str(), "announcement")
        );
        assert_eq!(json(&e)["text"], "hi");
    }
    hub.node
        .hub()
        .broadcast(herald::NewEvent::text(
            herald::ChannelName::new("ignored").unwrap(),
            "lib",
        ))
        .await
        .unwrap();
    for sse in &mut streams {
        assert_eq!(sse.expect().await.data, "lib");
    }
}

#[tokio::test]
async fn multi_line_and_awkward_data_round_trips() {
    let hub = TestHub::start().await;
    let token = hub.token(None, &["a"], &[]);
    let mut sse = hub.subscribe("channel=a", Some(&token)).await;
    let texts = [
        "first line\nsecond line\n\nafter an empty line",
        "\n",
        "",
        "trailing newline\n",
        "data: looks like a field\nid: 99\nevent: reset\n\n:comment",
        "unicode — ✓ 日本語",
    ];
    for text in texts {
        hub.publish(json!({"channel": "a", "data": text})).await;
    }
    for text in texts {
        assert_eq!(sse.expect().await.data, text);
    }
    hub.publish(json!({"channel": "a", "data": {"nested": {"text": "x\ny"}, "list": [1, 2]}}))
        .await;
    let e = sse.expect().await;
    assert_eq!(
        json(&e),
        json!({"nested": {"text": "x\ny"}, "list": [1, 2]})
    );
    assert_eq!(e.event, "message", "data cannot forge the event type");
}

#[tokio::test]
async fn envelopes_name_the_channel() {
    let hub = TestHub::start().await;
    let token = hub.token(None, &["a", "b"], &[]);
    let mut sse = hub.subscribe("channel=b&envelope=true", Some(&token)).await;
    let id = hub
        .publish(json!({"channels": ["a", "b"], "type": "t", "data": "x\ny"}))
        .await;
    let e = sse.expect().await;
    let envelope = json(&e);
    assert_eq!(envelope["channel"], "b");
    assert_eq!(envelope["type"], "t");
    assert_eq!(envelope["data"], "x\ny");
    assert_eq!(envelope["id"], id.as_str());
    assert!(envelope["time"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn idle_streams_get_heartbeats() {
    let hub = TestHub::builder()
        .config(|c| c.sse.heartbeat = Duration::from_millis(100))
        .start()
        .await;
    let token = hub.token(None, &["a"], &[]);
    let response = hub.open("channel=a", Some(&token), None).await;
    let mut body = response.bytes_stream();
    use futures_util::StreamExt;
    let mut seen = String::new();
    let _ = tokio::time::timeout(PATIENCE, async {
        while seen.matches(":\n\n").count() < 2 {
            let chunk = body.next().await.unwrap().unwrap();
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    assert!(seen.matches(":\n\n").count() >= 2, "{seen}");
}

#[tokio::test]
async fn the_library_face_publishes_from_rust() {
    let hub = TestHub::start().await;
    let token = hub.token(Some("ana"), &["orders"], &[]);
    let mut sse = hub.subscribe("channel=orders", Some(&token)).await;
    let channel = herald::ChannelName::new("orders").unwrap();
    let event = herald::NewEvent::json(channel, &json!({"id": 17}))
        .unwrap()
        .with_type("order.created");
    let accepted = hub.node.hub().publish(event).await.unwrap();
    let e = sse.expect().await;
    assert_eq!(
        (e.id, e.event, e.data),
        (
            accepted.id,
            "order.created".to_owned(),
            r#"{"id":17}"#.to_owned()
        )
    );
}

#[tokio::test]
async fn the_router_mounts_into_an_application() {
    let mut config = herald::Config::default();
    config.auth.jwt_secret = Some(crate::fixture::SECRET.into());
    config.store.path = ":memory:".into();
    let node = herald::Node::new(config).unwrap();
    let app = axum::Router::new()
        .route("/hello", axum::routing::get(|| async { "app" }))
        .nest("/realtime", node.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(axum::serve(listener, app).into_future());

    let token = {
        let mut claims = herald::auth::Claims::new(Some("ana".into()), Duration::from_secs(60));
        claims.herald.subscribe = vec![herald::core::ChannelPattern::parse("orders").unwrap()];
        node.authenticator().mint(&claims).unwrap()
    };
    let response = reqwest::get(format!(
        "{url}/realtime/events?channel=orders&token={token}"
    ))
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        reqwest::get(format!("{url}/hello"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "app"
    );
    use futures_util::StreamExt;
    let mut body = response.bytes_stream();
    let connected = body.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&connected).contains("event: connected"));
    let channel = herald::ChannelName::new("orders").unwrap();
    node.hub()
        .publish(herald::NewEvent::text(channel, "from a handler"))
        .await
        .unwrap();
    let event = body.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&event).contains("data: from a handler\n"));
    node.shutdown();
    server.abort();
}

#[tokio::test]
async fn configured_origins_may_use_the_hub_from_the_browser() {
    let hub = TestHub::builder()
        .config(|c| c.http.cors_origins = vec!["https://app.example.com".into()])
        .start()
        .await;
    let preflight = hub
        .http
        .request(reqwest::Method::OPTIONS, format!("{}/publish", hub.url))
        .header("Origin", "https://app.example.com")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    let h = preflight.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(h["access-control-allow-credentials"], "true");
    let token = hub.token(None, &["a"], &[]);
    let allowed = hub
        .http
        .get(format!("{}/events?channel=a&token={token}", hub.url))
        .header("Origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let other = hub
        .http
        .get(format!("{}/healthz", hub.url))
        .header("Origin", "https://evil.example.com")
        .send()
        .await
        .unwrap();
    assert!(!other.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn an_event_on_several_of_a_connections_channels_names_them_all() {
    let hub = TestHub::start().await;
    let token = hub.token(None, &["a", "b", "c"], &[]);
    let mut sse = hub
        .subscribe("channel=a&channel=b&envelope=1", Some(&token))
        .await;
    let id = hub
        .publish(json!({"channels": ["c", "b", "a"], "data": 1}))
        .await;
    let envelope = json(&sse.expect().await);
    assert_eq!(envelope["id"], id.as_str());
    assert_eq!(envelope["channel"], "b");
    // Only the connection's own channels: never another channel's name.
    assert_eq!(envelope["channels"], json!(["b", "a"]));
    // Once on one channel: no list.
    hub.publish(json!({"channels": ["c", "a"], "data": 2}))
        .await;
    let envelope = json(&sse.expect().await);
    assert_eq!(envelope["channel"], "a");
    assert!(envelope.get("channels").is_none(), "{envelope}");
}

#[tokio::test]
async fn a_refusal_names_the_channel_and_retry_after_is_readable_cross_origin() {
    let hub = TestHub::builder()
        .config(|c| {
            c.http.cors_origins = vec!["https://app.example.com".into()];
            c.limits.max_connections = 1;
        })
        .start()
        .await;
    let only_a = hub.token(None, &["a"], &[]);
    let response = hub.open("channel=a&channel=b", Some(&only_a), None).await;
    assert_eq!(response.status(), 403);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["channel"], "b");

    let _only_one = hub.subscribe("channel=a", Some(&only_a)).await;
    let full = hub
        .http
        .get(format!("{}/events?channel=a&token={only_a}", hub.url))
        .header("Origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(full.status(), 503);
    assert!(full.headers().contains_key("retry-after"));
    let exposed = full.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(exposed.contains("retry-after"), "{exposed}");
}

#[tokio::test]
async fn a_stream_without_origin_answers_with_the_same_cors_headers_as_any_route() {
    let hub = TestHub::builder()
        .config(|c| c.http.cors_origins = vec!["https://app.example.com".into()])
        .start()
        .await;
    let routed = hub
        .http
        .get(format!("{}/healthz", hub.url))
        .send()
        .await
        .unwrap();
    let vary = |r: &reqwest::Response| -> Vec<String> {
        r.headers()
            .get_all("vary")
            .iter()
            .map(|v| v.to_str().unwrap().to_ascii_lowercase())
            .collect()
    };
    let expected = vary(&routed);
    assert!(
        expected.iter().any(|v| v.contains("origin")),
        "{expected:?}"
    );
    let token = hub.token(None, &["a"], &[]);
    let stream = hub.open("channel=a", Some(&token), None).await;
    assert_eq!(stream.status(), 200);
    assert_eq!(vary(&stream), expected, "an open stream");
    let refused = hub.open("channel=b", Some(&token), None).await;
    assert_eq!(refused.status(), 403);
    assert_eq!(vary(&refused), expected, "a refusal");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["channel"], "b");
}
