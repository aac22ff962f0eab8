//! `POST /publish`: batches, ids, and every way a request can be wrong.

use herald::core::Item;
use herald::hub::{Start, Subscribe};
use herald::{ChannelName, NewEvent};
use serde_json::{Value, json};

use crate::fixture::TestHub;

/// While the node's connections are behind, a publish's event is accepted and queued
/// for them at once; only its answer waits until they catch up.
#[tokio::test]
async fn behind_the_fan_out_an_event_goes_out_before_its_answer() {
    let hub = TestHub::start().await;
    let a = ChannelName::new("a").unwrap();
    // 300 connections that read nothing: four events each put the fan-out more than
    // two events per connection (and over its floor of 1,024 events) behind.
    let mut readers = Vec::new();
    for _ in 0..300 {
        let request = Subscribe {
            channels: vec![a.clone()],
            start: Start::Now,
            queue: None,
        };
        readers.push(
            hub.node
                .hub()
                .subscribe(request)
                .await
                .unwrap()
                .subscription,
        );
    }
    for i in 0..4 {
        let event = NewEvent::text(a.clone(), format!("{i}"));
        hub.node.hub().publish(event).await.unwrap();
    }
    let publish = hub.node.hub().publish(NewEvent::text(a.clone(), "late"));
    tokio::pin!(publish);
    tokio::select! {
        biased;
        _ = &mut publish => panic!("answered while the connections are behind"),
        _ = std::future::ready(()) => {}
    }
    let mut queued = 0;
    while let Ok(Some(Item::Event(_))) = readers[0].try_next() {
        queued += 1;
    }
    assert_eq!(queued, 5, "the unanswered event is already queued");
    for subscription in &mut readers {
        while let Ok(Some(_)) = subscription.try_next() {}
    }
    publish
        .await
        .expect("answered once the connections caught up");
}

#[tokio::test]
async fn a_batch_is_published_in_order_and_answered_with_ids() {
    let hub = TestHub::start().await;
    let token = hub.token(None, &["a", "b"], &[]);
    let mut sse = hub.subscribe("channel=a&channel=b", Some(&token)).await;
    let (status, answer) = hub
        .publish_with(
            Some(&hub.publisher()),
            &json!([
                {"channel": "a", "data": 1},
                {"channel": "b", "data": 2, "id": "mine-2"},
                {"channels": ["a", "b"], "data": 3, "type": "both"},
            ]),
        )
        .await;
    assert_eq!(status, 200);
    let ids: Vec<String> = serde_json::from_value(answer["ids"].clone()).unwrap();
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[1], "mine-2");
    for (i, id) in ids.iter().enumerate() {
        let e = sse.expect().await;
        assert_eq!(&e.id, id);
        assert_eq!(e.data, (i + 1).to_string());
    }
}

async fn expect_error(hub: &TestHub, token: Option<&str>, body: Value, status: u16, code: &str) {
    let (got, answer) = hub.publish_with(token, &body).await;
    assert_eq!(got.as_u16(), status, "{body} -> {answer}");
    assert_eq!(answer["error"]["code"], code, "{body} -> {answer}");
    assert!(!answer["error"]["message"].as_str().unwrap().is_empty());
}

#[tokio::test]
async fn bad_publishes_get_clear_errors() {
    let hub = TestHub::builder()
        .config(|c| {
            c.limits.max_event_bytes = 100;
            c.limits.max_batch = 3;
        })
        .start()
        .await;
    let p = hub.publisher();
    let p = Some(p.as_str());
    let limited = hub.token(Some("x"), &[], &["team:*"]);
    let subscriber = hub.token(Some("x"), &["*"], &[]);
    let cases: Vec<(Option<&str>, Value, u16, &str)> = vec![
        (
            None,
            json!({"channel": "a", "data": 1}),
            401,
            "unauthorized",
        ),
        (
            Some("garbage"),
            json!({"channel": "a", "data": 1}),
            401,
            "invalid_token",
        ),
        (
            Some(&limited),
            json!({"channel": "a", "data": 1}),
            403,
            "forbidden",
        ),
        (
            Some(&limited),
            json!({"broadcast": true, "data": 1}),
            403,
            "forbidden",
        ),
        (
            Some(&subscriber),
            json!({"channel": "a", "data": 1}),
            403,
            "forbidden",
        ),
        (p, json!({"data": 1}), 400, "no_channel"),
        (p, json!({"channel": "a"}), 400, "missing_data"),
        (
            p,
            json!({"channel": "a", "channels": ["b"], "data": 1}),
            400,
            "invalid_target",
        ),
        (
            p,
            json!({"channel": "a b", "data": 1}),
            400,
            "invalid_channel",
        ),
        (
            p,
            json!({"channel": "$broadcast", "data": 1}),
            400,
            "invalid_channel",
        ),
        (p, json!({"channel": "", "data": 1}), 400, "invalid_channel"),
        (p, json!({"channels": [], "data": 1}), 400, "no_channel"),
        (
            p,
            json!({"channel": "a", "type": "two words", "data": 1}),
            400,
            "invalid_type",
        ),
        (
            p,
            json!({"channel": "a", "type": "reset", "data": 1}),
            400,
            "reserved_type",
        ),
        (
            p,
            json!({"channel": "a", "type": "connected", "data": 1}),
            400,
            "reserved_type",
        ),
        (
            p,
            json!({"channel": "a", "id": "x\ny", "data": 1}),
            400,
            "invalid_id",
        ),
        (
            p,
            json!({"channel": "a", "data": 1, "colour": "red"}),
            400,
            "invalid_json",
        ),
        (p, json!("just a string"), 400, "invalid_json"),
        (p, json!([]), 400, "empty_batch"),
        (
            p,
            json!({"channel": "a", "data": "x".repeat(200)}),
            413,
            "event_too_large",
        ),
        (
            p,
            json!([{"channel": "a", "data": 1}, {"channel": "a", "data": 2}, {"channel": "a", "data": 3}, {"channel": "a", "data": 4}]),
            413,
            "batch_too_large",
        ),
    ];
    for (token, body, status, code) in cases {
        expect_error(&hub, token, body, status, code).await;
    }
    // A bad event in a batch names its place, and nothing of the batch is published.
    let (status, answer) = hub
        .publish_with(
            p,
            &json!([{"channel": "a", "data": 1}, {"channel": "a", "type": "bad type", "data": 2}]),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("event 1:")
    );
    assert_eq!(hub.node.stats().events_published, 0);
    // Malformed JSON.
    let response = hub
        .http
        .post(format!("{}/publish", hub.url))
        .bearer_auth(hub.publisher())
        .body("{\"channel\": \"a\", ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_json");
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let hub = TestHub::builder()
        .config(|c| c.limits.max_body_bytes = 1024)
        .start()
        .await;
    let body = json!({"channel": "a", "data": "x".repeat(2000)});
    let (status, answer) = hub.publish_with(Some(&hub.publisher()), &body).await;
    assert_eq!(status, 413);
    assert_eq!(answer["error"]["code"], "payload_too_large");
}

#[tokio::test]
async fn unknown_routes_are_json_404s() {
    let hub = TestHub::start().await;
    let response = hub.get("/nope").await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
}
