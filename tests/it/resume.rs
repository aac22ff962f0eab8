//! Resume with `Last-Event-ID`: nothing lost, nothing repeated, and an explicit
//! `reset` when history cannot cover the gap.

use std::time::Duration;

use herald::core::ManualClock;
use serde_json::json;

use crate::fixture::{Client, HubProcess, TestHub, eventually, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_across_three_channels_after_forced_disconnects_loses_and_repeats_nothing() {
    let hub = TestHub::builder()
        .config(|c| c.channels.history_size = 1000)
        .start()
        .await;
    let token = hub.token(None, &["a", "b", "c", "d"], &[]);
    let query = "channel=a&channel=b&channel=c";
    let mut sse = hub.subscribe(query, Some(&token)).await;

    const TOTAL: u64 = 400;
    let url = hub.url.clone();
    let publisher = hub.publisher();
    let publishing = tokio::spawn(async move {
        let http = reqwest::Client::new();
        let mut expected = Vec::new();
        for i in 0..TOTAL {
            let target = match i % 5 {
                0 => json!({"channel": "a"}),
                1 => json!({"channel": "b"}),
                2 => json!({"channel": "c"}),
                3 => json!({"channels": ["a", "c"]}),
                _ => json!({"channel": "d"}),
            };
            let mut body = target;
            body["data"] = json!({"i": i});
            let response = http
                .post(format!("{url}/publish"))
                .bearer_auth(&publisher)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            if i % 5 != 4 {
                expected.push(i);
            }
        }
        expected
    });

    let mut received: Vec<u64> = Vec::new();
    let mut last_id = String::new();
    let mut reconnects = 0;
    let expected_count = TOTAL - TOTAL / 5;
    while (received.len() as u64) < expected_count {
        // Read a stretch, then drop the connection mid-stream and resume.
        for _ in 0..37 {
            if received.len() as u64 == expected_count {
                break;
            }
            let e = sse.expect().await;
            assert_ne!(e.event, "reset", "history covers the gap");
            received.push(json(&e)["i"].as_u64().unwrap());
            last_id = e.id;
        }
        drop(sse);
        reconnects += 1;
        // Away until something was published after the last event received, so
        // the resume has a gap to cover.
        let after = received.last().copied().unwrap_or_default();
        eventually(format!("an event published after {after}"), || {
            hub.node.stats().events_published > after + 1
        })
        .await;
        sse = if reconnects % 2 == 0 {
            hub.subscribe_from(query, Some(&token), Some(&last_id))
                .await
        } else {
            let q = format!("{query}&last_event_id={last_id}");
            hub.subscribe(&q, Some(&token)).await
        };
    }
    let expected = publishing.await.unwrap();
    assert!(reconnects >= 5, "the test disconnected mid-stream");
    assert_eq!(received, expected, "every event once, in order");
    assert!(sse.quiet_for(Duration::from_millis(200)).await.is_none());
    assert!(hub.node.stats().resumes >= 5);
}

#[tokio::test]
async fn an_expired_id_gets_a_reset_then_live_events() {
    let hub = TestHub::builder()
        .config(|c| c.channels.history_size = 3)
        .start()
        .await;
    let token = hub.token(None, &["a", "b"], &[]);
    let old = hub.publish(json!({"channel": "a", "data": 0})).await;
    for i in 1..=5 {
        hub.publish(json!({"channel": "a", "data": i})).await;
    }
    let b = hub.publish(json!({"channel": "b", "data": "b"})).await;
    let mut sse = hub
        .subscribe_from("channel=a&channel=b", Some(&token), Some(&old))
        .await;
    // Channel b's history covers the gap and is replayed; channel a's does not.
    let e = sse.expect().await;
    assert_eq!((e.id.as_str(), e.data.as_str()), (b.as_str(), "b"));
    let reset = sse.expect().await;
    assert_eq!(reset.event, "reset");
    assert_eq!(
        json(&reset),
        json!({"reason": "expired", "channels": ["a"]})
    );
    assert!(
        !reset.id.is_empty(),
        "a reset carries the position to resume from"
    );
    let live = hub.publish(json!({"channel": "a", "data": 6})).await;
    assert_eq!(sse.expect().await.id, live);
    drop(sse);

    // Resuming from the reset's id is clean.
    let mut sse = hub
        .subscribe_from("channel=a&channel=b", Some(&token), Some(&reset.id))
        .await;
    let e = sse.expect().await;
    assert_eq!(e.id, live);
    assert_eq!(hub.node.stats().resets, 1);
}

#[tokio::test]
async fn an_unknown_id_gets_a_reset() {
    let hub = TestHub::start().await;
    let token = hub.token(None, &["a"], &[]);
    hub.publish(json!({"channel": "a", "data": 1})).await;
    for id in ["bogus", "0-1", "12345"] {
        let mut sse = hub
            .subscribe_from("channel=a", Some(&token), Some(id))
            .await;
        let reset = sse.expect().await;
        assert_eq!(reset.event, "reset");
        assert_eq!(json(&reset)["reason"], "unknown_id");
        assert_eq!(json(&reset)["channels"], json!(["a", "$broadcast"]));
        assert!(
            sse.quiet_for(Duration::from_millis(100)).await.is_none(),
            "nothing replayed"
        );
    }
}

/// On a hub keeping history for 300 ms, events that `outlive` lets grow older
/// than that are gone: resuming from before them gets a reset.
async fn events_past_the_history_age_reset(hub: &Client, outlive: impl AsyncFnOnce()) {
    let token = hub.token(None, &["a"], &[]);
    let first = hub.publish(json!({"channel": "a", "data": 1})).await;
    hub.publish(json!({"channel": "a", "data": 2})).await;
    outlive().await;
    let mut sse = hub
        .subscribe_from("channel=a", Some(&token), Some(&first))
        .await;
    let reset = sse.expect().await;
    assert_eq!(reset.event, "reset");
    assert_eq!(json(&reset)["reason"], "expired");
}

#[tokio::test]
async fn events_older_than_the_history_age_are_gone_with_a_reset() {
    let clock = ManualClock::starting_now();
    let hub = TestHub::builder()
        .config(|c| c.channels.history_ttl = Duration::from_millis(300))
        .clock(&clock)
        .start()
        .await;
    events_past_the_history_age_reset(&hub, async || {
        clock.advance(Duration::from_millis(500));
    })
    .await;
}

/// The same on the binary as deployed, which goes by the system clock: here real
/// time has to pass, and the test reads the history until it has.
#[tokio::test]
async fn events_older_than_the_history_age_are_gone_in_real_time() {
    let hub = HubProcess::builder()
        .env("HERALD_CHANNELS__HISTORY_TTL", "300ms")
        .start()
        .await;
    events_past_the_history_age_reset(&hub, async || {
        let token = hub.token(None, &["a"], &[]);
        eventually("the events of `a` to expire", || async {
            hub.get_json("/channels/a/history", &token).await["events"] == json!([])
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn earliest_replays_everything_still_kept() {
    let hub = TestHub::builder()
        .config(|c| c.channels.history_size = 2)
        .start()
        .await;
    let token = hub.token(None, &["a"], &[]);
    for i in 1..=3 {
        hub.publish(json!({"channel": "a", "data": i})).await;
    }
    let mut sse = hub
        .subscribe("channel=a&last_event_id=earliest", Some(&token))
        .await;
    assert_eq!(sse.expect().await.data, "2");
    assert_eq!(sse.expect().await.data, "3");
    assert!(sse.quiet_for(Duration::from_millis(100)).await.is_none());
}

#[tokio::test]
async fn publisher_ids_are_kept_and_resumable() {
    let hub = TestHub::start().await;
    let token = hub.token(None, &["a"], &[]);
    let id = hub
        .publish(json!({"channel": "a", "data": 1, "id": "order-17"}))
        .await;
    assert_eq!(id, "order-17");
    let next = hub.publish(json!({"channel": "a", "data": 2})).await;
    let mut sse = hub
        .subscribe_from("channel=a", Some(&token), Some("order-17"))
        .await;
    let e = sse.expect().await;
    assert_eq!((e.id.as_str(), e.data.as_str()), (next.as_str(), "2"));
    // Publishing the same id again is answered, not delivered twice.
    let (status, answer) = hub
        .publish_with(
            Some(&hub.publisher()),
            &json!({"channel": "a", "data": 1, "id": "order-17"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(answer, json!({"id": "order-17", "duplicate": true}));
    assert!(sse.quiet_for(Duration::from_millis(200)).await.is_none());
}

#[tokio::test]
async fn channel_history_is_readable_over_http() {
    let hub = TestHub::start().await;
    let token = hub.token(None, &["a"], &[]);
    for i in 1..=3 {
        hub.publish(json!({"channel": "a", "type": "n", "data": i}))
            .await;
    }
    let response = hub
        .http
        .get(format!("{}/channels/a/history?limit=2", hub.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    let data: Vec<_> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"].clone())
        .collect();
    assert_eq!(data, vec![json!(2), json!(3)]);
    assert_eq!(body["events"][0]["type"], "n");
    let response = hub.get("/channels/a/history").await;
    assert_eq!(response.status(), 401);
    let other = hub.token(None, &["b"], &[]);
    let response = hub
        .http
        .get(format!("{}/channels/a/history?limit=5000", hub.url))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn connected_names_the_position_a_fresh_stream_can_resume_from() {
    let hub = TestHub::start().await;
    let token = hub.token(None, &["a"], &[]);
    let before = hub.publish(json!({"channel": "a", "data": 0})).await;
    let sse = hub.subscribe("channel=a", Some(&token)).await;
    let position = sse.connected["last_event_id"].as_str().unwrap().to_owned();
    assert_eq!(position, before, "the newest event when it opened");
    drop(sse);

    // Gone before anything arrived, it resumes from the position and misses nothing.
    let missed = hub.publish(json!({"channel": "a", "data": 1})).await;
    let mut sse = hub
        .subscribe_from("channel=a", Some(&token), Some(&position))
        .await;
    assert_eq!(sse.connected["last_event_id"], position.as_str());
    assert_eq!(sse.expect().await.id, missed);

    // The same over WebSocket.
    let url = format!("ws://{}/ws?channel=a&token={token}", hub.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    use futures_util::StreamExt;
    let first = ws.next().await.unwrap().unwrap();
    let connected: serde_json::Value = serde_json::from_str(first.to_text().unwrap()).unwrap();
    assert_eq!(connected["type"], "connected");
    assert_eq!(connected["last_event_id"], missed.as_str());
}
