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
        .header("content-type", "application/json")
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

/// A publisher granted only `b` tries to give its events ids the hub gives out (one
/// it just assigned, the next it will assign) and the resume word `earliest`, then
/// the id a publisher of `a` chose. None is accepted, so a subscriber of `a` that
/// resumes from any id it received gets exactly the events after it: nothing
/// skipped, nothing again.
#[tokio::test]
async fn a_publisher_of_another_channel_can_neither_forge_nor_take_ids() {
    let hub = TestHub::start().await;
    let on_a = hub.token(Some("pa"), &[], &["a"]);
    let on_b = hub.token(Some("pb"), &[], &["b"]);
    let reader = hub.token(Some("reader"), &["a"], &[]);
    let mut sse = hub.subscribe("channel=a", Some(&reader)).await;
    let publish = async |token: &str, body: Value| hub.publish_with(Some(token), &body).await;

    let (status, answer) = publish(&on_a, json!({"channel": "a", "data": 0})).await;
    assert_eq!(status, 200, "{answer}");
    let assigned = answer["id"].as_str().unwrap().to_owned();
    let (epoch, seq) = assigned.split_once('-').unwrap();
    let seq: u64 = seq.parse().unwrap();
    let mut forged = vec![assigned.clone()];
    forged.extend(
        (1..=5)
            .chain(15..=25)
            .map(|k| format!("{epoch}-{}", seq + k)),
    );
    forged.extend(["earliest".to_owned(), "Earliest".to_owned()]);
    for id in &forged {
        let (status, answer) = publish(&on_b, json!({"channel": "b", "data": "x", "id": id})).await;
        assert_eq!(status, 400, "{id}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_id", "{id}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("visible ASCII"),
            "the rule is named: {message}"
        );
    }

    let chosen = json!({"channel": "a", "data": 1, "id": "order-17-created"});
    let (status, answer) = publish(&on_a, chosen.clone()).await;
    assert_eq!(
        (status.as_u16(), &answer["id"]),
        (200, &json!("order-17-created"))
    );
    let taken = json!({"channel": "b", "data": "x", "id": "order-17-created"});
    let (status, answer) = publish(&on_b, taken).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"]["code"], "id_conflict");
    // A retry of the same event stays a duplicate; ids of b's own still work.
    let (status, answer) = publish(&on_a, chosen).await;
    assert_eq!((status.as_u16(), &answer["duplicate"]), (200, &json!(true)));
    let (status, _) = publish(&on_b, json!({"channel": "b", "data": "x", "id": "b-own"})).await;
    assert_eq!(status, 200);

    for i in 2..=21 {
        let (status, _) = publish(&on_a, json!({"channel": "a", "data": i})).await;
        assert_eq!(status, 200);
    }
    let mut ids = Vec::new();
    for i in 0..=21 {
        let e = sse.expect().await;
        assert_eq!(e.data, i.to_string());
        ids.push(e.id);
    }
    drop(sse);
    let (status, _) = publish(&on_a, json!({"channel": "a", "data": "end"})).await;
    assert_eq!(status, 200);
    for (i, id) in ids.iter().enumerate() {
        let mut resumed = hub
            .subscribe_from("channel=a", Some(&reader), Some(id))
            .await;
        let mut replayed = Vec::new();
        loop {
            let e = resumed.expect().await;
            assert_ne!(e.event, "reset", "after {id}: {}", e.data);
            if e.data == "end" {
                break;
            }
            replayed.push(e.id);
        }
        assert_eq!(replayed, ids[i + 1..], "resuming after {id}");
    }
}

async fn expect_code(hub: &TestHub, body: &Value, status: u16, code: &str) -> String {
    let (got, answer) = hub.publish_with(Some(&hub.publisher()), body).await;
    assert_eq!(got.as_u16(), status, "{answer}");
    assert_eq!(answer["error"]["code"], code, "{answer}");
    answer["error"]["message"].as_str().unwrap().to_owned()
}

/// A publish naming 150,000 channels is refused by the count alone, before any name
/// or grant is looked at; within the cap the first channel not granted answers 403,
/// and a channel named twice is kept once.
#[tokio::test]
async fn the_channels_of_an_event_are_capped_before_any_is_looked_at() {
    let hub = TestHub::builder()
        .config(|c| c.limits.max_body_bytes = 4 << 20)
        .start()
        .await;
    let names: Vec<String> = (0..150_000).map(|i| format!("c{i}")).collect();
    let only_b = hub.token(Some("pb"), &[], &["b"]);
    for token in [&only_b, &hub.publisher()] {
        let body = json!({"channels": &names, "data": 1});
        let (status, answer) = hub.publish_with(Some(token), &body).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"]["code"], "too_many_channels");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains("100") && message.contains("limits.max_channels_per_event"));
    }
    let batch = json!([{"channel": "b", "data": 1}, {"channels": &names, "data": 2}]);
    let (status, answer) = hub.publish_with(Some(&only_b), &batch).await;
    assert_eq!(status, 400);
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("event 1:")
    );

    let mut within: Vec<&str> = vec!["b"; 99];
    within[3] = "a";
    let (status, answer) = hub
        .publish_with(Some(&only_b), &json!({"channels": within, "data": 1}))
        .await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["error"]["channel"], "a");
    let hundred: Vec<String> = (0..100).map(|i| format!("c{i}")).collect();
    expect_code(
        &hub,
        &json!({"channels": &names[..101], "data": 1}),
        400,
        "too_many_channels",
    )
    .await;
    hub.publish(json!({"channels": &hundred, "data": 1})).await;
    hub.publish(json!({"channels": ["b", "b", "c", "b"], "data": "once"}))
        .await;
    let kept = hub
        .node
        .hub()
        .history(&ChannelName::new("b").unwrap(), 1)
        .await
        .unwrap();
    let channels: Vec<&str> = kept[0].channels.iter().map(|c| c.as_str()).collect();
    assert_eq!(channels, ["b", "c"]);
    assert_eq!(hub.node.stats().events_published, 2);

    // The same cap for applications publishing through the library.
    let mut event = NewEvent::text(ChannelName::new("c0").unwrap(), "x");
    event.channels = hundred
        .iter()
        .chain(["c100".to_owned()].iter())
        .map(|c| ChannelName::new(c).unwrap())
        .collect();
    let refused = hub.node.hub().publish_batch(vec![event]).await.unwrap_err();
    assert!(
        matches!(
            refused,
            herald::hub::PublishError::Invalid {
                error: herald::core::EventError::TooManyChannels { limit: 100 },
                ..
            }
        ),
        "{refused:?}"
    );
}

/// What else a publisher controls stays bounded: a batch is cut at its limit before
/// the rest of the body is read, deep data and numbers out of range are refused as
/// 400s naming the field, invalid UTF-8 is a JSON 400, and every field of the wrong
/// type is named.
#[tokio::test]
async fn every_other_cost_a_publish_controls_is_bounded_and_named() {
    let hub = TestHub::builder()
        .config(|c| c.limits.max_batch = 3)
        .start()
        .await;
    let p = hub.publisher();
    let post = async |body: Vec<u8>| {
        let response = hub
            .http
            .post(format!("{}/publish", hub.url))
            .bearer_auth(&p)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap();
        (status, answer)
    };
    // The batch is cut after its fourth event: what follows is never read.
    let (status, answer) = post(b"[{}, {}, {}, {}, this is not JSON".to_vec()).await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["error"]["code"], "batch_too_large");
    let tiny = format!("[{}{{}}]", "{},".repeat(300_000));
    let (status, answer) = post(tiny.into_bytes()).await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (413, &json!("batch_too_large"))
    );

    // Deep data: 128 levels are fine, more is a 400 naming `data`, not a crash.
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let ok = format!(r#"{{"channel": "a", "data": {}}}"#, deep(128));
    assert_eq!(post(ok.into_bytes()).await.0, 200);
    for depth in [129, 100_000] {
        let body = format!(r#"{{"channel": "a", "data": {}}}"#, deep(depth));
        let (status, answer) = post(body.into_bytes()).await;
        assert_eq!(
            (status, &answer["error"]["code"]),
            (400, &json!("invalid_field"))
        );
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("`data`")
        );
    }

    // A huge number as data is passed on as written; out of range as `retry`, named.
    let huge = format!("1{}", "0".repeat(10_000));
    let body = format!(r#"{{"channel": "huge", "data": {huge}}}"#);
    assert_eq!(post(body.into_bytes()).await.0, 200);
    let kept = hub
        .node
        .hub()
        .history(&ChannelName::new("huge").unwrap(), 1)
        .await
        .unwrap();
    assert_eq!(kept[0].data.as_str(), huge);
    for retry in ["1e400", "4294967296", "-1", "1.5", &huge] {
        let body = format!(r#"{{"channel": "a", "data": 1, "retry": {retry}}}"#);
        let (status, answer) = post(body.into_bytes()).await;
        assert_eq!(
            (status, &answer["error"]["code"]),
            (400, &json!("invalid_field"))
        );
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("`retry`")
        );
    }

    // Invalid UTF-8, in a string and outside one.
    for body in [&b"{\"channel\": \"a\", \"data\": \"\xff\"}"[..], b"\xfe{}"] {
        let (status, answer) = post(body.to_vec()).await;
        assert_eq!(
            (status, &answer["error"]["code"]),
            (400, &json!("invalid_json"))
        );
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("UTF-8")
        );
    }

    // Every field of the wrong type is named.
    for (body, field) in [
        (json!({"channel": 5, "data": 1}), "channel"),
        (json!({"channel": ["a"], "data": 1}), "channel"),
        (json!({"channels": "a", "data": 1}), "channels"),
        (json!({"channels": [1, 2], "data": 1}), "channels"),
        (json!({"channels": {"a": 1}, "data": 1}), "channels"),
        (json!({"broadcast": "yes", "data": 1}), "broadcast"),
        (json!({"channel": "a", "type": 5, "data": 1}), "type"),
        (json!({"channel": "a", "id": 17, "data": 1}), "id"),
        (json!({"channel": "a", "retry": "soon", "data": 1}), "retry"),
    ] {
        let message = expect_code(&hub, &body, 400, "invalid_field").await;
        assert!(
            message.starts_with(&format!("`{field}`")),
            "{body}: {message}"
        );
    }
    let message = expect_code(
        &hub,
        &json!([{"channel": "a", "data": 1}, 7]),
        400,
        "invalid_json",
    )
    .await;
    assert!(message.contains("event 1"), "{message}");
}
