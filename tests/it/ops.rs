//! Health, readiness, counters and metrics.

use serde_json::{Value, json};

use crate::fixture::TestHub;

#[tokio::test]
async fn health_readiness_stats_and_metrics() {
    let hub = TestHub::start().await;
    let response = hub.get("/healthz").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"status": "ok"})
    );
    assert_eq!(hub.get("/readyz").await.status(), 200);

    let token = hub.token(Some("ana"), &["a"], &[]);
    let mut sse = hub.subscribe("channel=a", Some(&token)).await;
    hub.publish(json!({"channel": "a", "data": 1})).await;
    sse.expect().await;

    let stats: Value = hub.get("/stats").await.json().await.unwrap();
    assert_eq!(stats["connections"], 1);
    assert_eq!(stats["events_published"], 1);
    assert_eq!(stats["events_delivered"], 1);
    assert_eq!(stats["slow_consumer_disconnects"], 0);
    assert_eq!(stats["broker"], "memory");
    // a, user:ana and $broadcast; the hub's own presence log is not counted.
    assert_eq!(stats["channels"], 3);
    assert!(stats["rss_bytes"].as_u64().unwrap() > 0);

    let response = hub.get("/metrics").await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    for name in [
        "herald_connections 1",
        "herald_events_published_total 1",
        "herald_deliveries_total 1",
        "herald_slow_consumer_disconnects_total 0",
        "herald_connections_rejected_total{reason=\"max_connections\"} 0",
    ] {
        assert!(text.contains(name), "{name} in\n{text}");
    }
    assert!(
        !text.contains("ana") && !text.contains("channel=\"a\""),
        "no per-user or per-channel labels"
    );
}

#[tokio::test]
async fn readiness_turns_off_when_shutting_down() {
    let hub = TestHub::start().await;
    let response = hub.get("/readyz").await;
    assert_eq!(response.status(), 200);
    hub.node.shutdown();
    // The listener is closing; readiness is checked through the library face.
    assert!(hub.node.ready().await.is_err());
}

#[tokio::test]
async fn the_demo_page_is_served() {
    let hub = TestHub::start().await;
    let response = hub.get("/").await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = response.text().await.unwrap();
    assert!(html.contains("demo.js"));
    assert_eq!(hub.get("/demo.js").await.status(), 200);
    assert_eq!(hub.get("/demo.css").await.status(), 200);
    // Demo tokens are off unless asked for.
    let response = hub
        .http
        .post(format!("{}/demo/token", hub.url))
        .json(&json!({"user": "a"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn demo_tokens_when_enabled() {
    let hub = TestHub::builder()
        .config(|c| c.demo.tokens = Some(true))
        .start()
        .await;
    let response = hub
        .http
        .post(format!("{}/demo/token", hub.url))
        .json(&json!({"user": "guest-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let token = body["token"].as_str().unwrap();
    let sse = hub.subscribe("channel=demo:lobby", Some(token)).await;
    assert_eq!(sse.connected["user"], "guest-1");
    // The page publishes on the demo's channels and to its own user, nobody else's.
    for (channel, allowed) in [
        ("demo:board", true),
        ("user:guest-1", true),
        ("user:guest-2", false),
        ("orders", false),
    ] {
        let (status, answer) = hub
            .publish_with(Some(token), &json!({"channel": channel, "data": 1}))
            .await;
        let expected = if allowed { 200 } else { 403 };
        assert_eq!(status.as_u16(), expected, "{channel}: {answer}");
    }
    let (status, _) = hub
        .publish_with(Some(token), &json!({"broadcast": true, "data": 1}))
        .await;
    assert_eq!(status.as_u16(), 403);
    let response = hub
        .http
        .post(format!("{}/demo/token", hub.url))
        .json(&json!({"user": "a b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn readiness_reports_unready_components() {
    let hub = TestHub::start().await;
    let source = hub.node.components().register("postgres source");
    let response = hub.get("/readyz").await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("postgres source: starting")
    );
    source.ready();
    assert_eq!(hub.get("/readyz").await.status(), 200);
    source.unready("connection lost");
    assert_eq!(hub.get("/readyz").await.status(), 503);
}
