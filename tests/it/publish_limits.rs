//! Rate limits of HTTP publishers (`limits.publish_rate`, `limits.publish_burst`,
//! and a namespace's own `publish_rate`/`publish_burst`): per publisher, each event
//! of a batch counted in each namespace it reaches; past the limit a 429 with
//! `Retry-After` and a JSON body naming the limit, counted in the metrics.

use std::time::Duration;

use herald::config::{ApiKeyConfig, NamespaceConfig};
use herald::core::ChannelPattern;
use herald::{ChannelName, NewEvent};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::fixture::TestHub;

const API_KEY: &str = "backend-key-0123456789";

/// A hub whose publishers may each publish `burst` events at once, then one every
/// two seconds, with the API key [`API_KEY`] as another publisher.
async fn hub(burst: u32, change: impl FnOnce(&mut herald::Config)) -> TestHub {
    TestHub::builder()
        .config(|c| {
            c.limits.publish_rate = 0.5;
            c.limits.publish_burst = burst;
            c.auth.api_keys = vec![ApiKeyConfig {
                name: "backend".into(),
                key: Some(API_KEY.into()),
                key_sha256: None,
                publish: vec![ChannelPattern::parse("*").unwrap()],
            }];
            change(c);
        })
        .start()
        .await
}

/// POSTs `body` to `/publish` as `credential`: the status, `Retry-After` and body.
async fn publish(hub: &TestHub, credential: &str, body: Value) -> (StatusCode, Option<u64>, Value) {
    let response = hub
        .http
        .post(format!("{}/publish", hub.url))
        .bearer_auth(credential)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (status, retry_after, response.json().await.unwrap())
}

/// Asserts a 429 `rate_limited` naming `limit`, and returns its `Retry-After`.
fn assert_limited(answer: &(StatusCode, Option<u64>, Value), limit: &str) -> u64 {
    let (status, retry_after, body) = answer;
    assert_eq!(*status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert_eq!(body["error"]["limit"], limit, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains(limit),
        "{body}"
    );
    let seconds = retry_after.expect("a Retry-After header");
    // One event every two seconds: the next token is at most two seconds away.
    assert!((1..=2).contains(&seconds), "Retry-After: {seconds}");
    seconds
}

fn one(channel: &str) -> Value {
    json!({"channel": channel, "data": 1})
}

fn batch(channel: &str, n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| json!({"channel": channel, "data": i}))
            .collect(),
    )
}

#[tokio::test]
async fn a_publisher_past_its_burst_waits_while_others_publish() {
    let hub = hub(3, |_| {}).await;
    let alice = hub.token(Some("alice"), &[], &["*"]);
    let bob = hub.token(Some("bob"), &[], &["*"]);

    let (status, _, body) = publish(&hub, &alice, batch("orders", 3)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let refused = publish(&hub, &alice, one("orders")).await;
    let retry_after = assert_limited(&refused, "limits.publish_rate");

    // Other publishers, and the library, are not held back by alice.
    let (status, _, body) = publish(&hub, &bob, batch("orders", 3)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, body) = publish(&hub, API_KEY, batch("orders", 3)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for _ in 0..10 {
        let event = NewEvent::text(ChannelName::new("orders").unwrap(), "from the app");
        hub.node.hub().publish(event).await.unwrap();
    }

    let metrics = hub.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("\nherald_publish_rate_limited_total 1\n"),
        "{metrics}"
    );
    let stats: Value = hub.get("/stats").await.json().await.unwrap();
    assert_eq!(stats["publish_rate_limited"], 1);

    // Once the Retry-After has passed, alice may publish again.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let (status, _, body) = publish(&hub, &alice, one("orders")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn each_event_of_a_batch_counts() {
    let hub = hub(3, |_| {}).await;
    let alice = hub.token(Some("alice"), &[], &["*"]);
    // More events than the burst could ever let through at once.
    let (status, retry_after, body) = publish(&hub, &alice, batch("orders", 4)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"]["code"], "batch_too_large");
    assert_eq!(body["error"]["limit"], "limits.publish_burst");
    assert_eq!(retry_after, None);
    // It took nothing: two, then two more of the three left is one too many.
    let (status, _, body) = publish(&hub, &alice, batch("orders", 2)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let refused = publish(&hub, &alice, batch("orders", 2)).await;
    assert_limited(&refused, "limits.publish_rate");
    let (status, _, body) = publish(&hub, &alice, one("orders")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_namespace_with_its_own_rate_counts_apart_and_an_event_counts_in_each() {
    let hub = hub(2, |c| {
        c.namespaces.insert(
            "chat".into(),
            NamespaceConfig {
                publish_rate: Some(0.5),
                publish_burst: Some(1),
                ..Default::default()
            },
        );
    })
    .await;
    let alice = hub.token(Some("alice"), &[], &["*"]);
    let (status, _, body) = publish(&hub, &alice, one("chat:1")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let refused = publish(&hub, &alice, one("chat:2")).await;
    assert_limited(&refused, "namespaces.chat.publish_rate");
    // Other namespaces share the default bucket, one token per event.
    let two_namespaces = json!({"channels": ["orders", "team:1"], "data": 1});
    let (status, _, body) = publish(&hub, &alice, two_namespaces).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, body) = publish(&hub, &alice, one("orders")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let refused = publish(&hub, &alice, one("team:2")).await;
    assert_limited(&refused, "limits.publish_rate");

    // An event to chat and to another namespace takes a token from each.
    let carol = hub.token(Some("carol"), &[], &["*"]);
    let across = json!({"channels": ["orders", "chat:1"], "data": 1});
    let (status, _, body) = publish(&hub, &carol, across).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let refused = publish(&hub, &carol, one("chat:1")).await;
    assert_limited(&refused, "namespaces.chat.publish_rate");
    let (status, _, body) = publish(&hub, &carol, one("orders")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let refused = publish(&hub, &carol, one("orders")).await;
    assert_limited(&refused, "limits.publish_rate");
}

#[tokio::test]
async fn without_a_publish_rate_nothing_is_limited() {
    let hub = TestHub::start().await;
    let alice = hub.token(Some("alice"), &[], &["*"]);
    for _ in 0..5 {
        let (status, _, body) = publish(&hub, &alice, batch("orders", 1000)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}
