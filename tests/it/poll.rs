//! Long-polling, `GET /poll`: the same credentials, history and resets as SSE, and
//! no event lost between one request and the next.

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::fixture::{PATIENCE, TestHub, eventually};

/// One `/poll` request; the status and the JSON answer.
async fn poll(hub: &TestHub, query: &str, token: Option<&str>) -> (StatusCode, Value) {
    let mut request = hub.http.get(format!("{}/poll?{query}", hub.url));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = tokio::time::timeout(PATIENCE, request.send())
        .await
        .expect("an answer in time")
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON: {text}"));
    (status, body)
}

/// A poll that must succeed.
async fn ok(hub: &TestHub, query: &str, token: &str) -> Value {
    let (status, body) = poll(hub, query, Some(token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn ids(answer: &Value) -> Vec<String> {
    answer["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

fn last(answer: &Value) -> String {
    answer["last_event_id"].as_str().unwrap().to_owned()
}

/// Waits until the hub counts `n` open connections (a waiting poll holds one).
async fn connections(hub: &TestHub, n: u64) {
    eventually(format!("{n} waiting polls"), || {
        hub.node.stats().connections == n
    })
    .await;
}

#[tokio::test]
async fn a_first_poll_gives_the_position_and_the_next_gets_what_followed() {
    let hub = TestHub::start().await;
    let token = hub.token(None, &["a", "b"], &[]);
    hub.publish(json!({"channel": "a", "data": "before"})).await;

    let first = ok(&hub, "channel=a&channel=b", &token).await;
    assert_eq!(first["events"], json!([]));
    assert_eq!(first["reset"], Value::Null);
    assert_eq!(first["retry_ms"], 0);
    let position = last(&first);

    // Published between the two requests: the second one gets them at once.
    let one = hub
        .publish(json!({"channel": "a", "type": "t", "data": {"n": 1}}))
        .await;
    let two = hub.publish(json!({"channel": "b", "data": "two"})).await;
    hub.publish(json!({"channel": "c", "data": "not mine"}))
        .await;
    let second = ok(
        &hub,
        &format!("channel=a&channel=b&last_event_id={position}"),
        &token,
    )
    .await;
    assert_eq!(ids(&second), vec![one.clone(), two.clone()]);
    let events = second["events"].as_array().unwrap();
    assert_eq!(events[0]["channel"], "a");
    assert_eq!(events[0]["type"], "t");
    assert_eq!(events[0]["data"], json!({"n": 1}));
    assert_eq!(events[1]["data"], "two");
    assert_eq!(last(&second), two);

    // Nothing new: the request waits, and a live event ends the wait.
    let url = format!("channel=a&channel=b&last_event_id={two}&timeout=30");
    let waiting = {
        let (hub_url, token) = (hub.url.clone(), token.clone());
        tokio::spawn(async move {
            let response = reqwest::Client::new()
                .get(format!("{hub_url}/poll?{url}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            response.json::<Value>().await.unwrap()
        })
    };
    connections(&hub, 1).await;
    let three = hub.publish(json!({"channel": "b", "data": 3})).await;
    let third = tokio::time::timeout(PATIENCE, waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ids(&third), vec![three.clone()]);
    assert_eq!(last(&third), three);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_polls_lose_and_repeat_nothing_while_events_are_published() {
    let hub = TestHub::builder()
        .config(|c| c.channels.history_size = 1000)
        .start()
        .await;
    let token = hub.token(None, &["a", "b"], &[]);
    let mut position = last(&ok(&hub, "channel=a&channel=b", &token).await);

    const TOTAL: usize = 300;
    let url = hub.url.clone();
    let publisher = hub.publisher();
    let publishing = tokio::spawn(async move {
        let http = reqwest::Client::new();
        let mut expected = Vec::new();
        for i in 0..TOTAL {
            let body = match i % 4 {
                0 => json!({"channel": "a", "data": i}),
                1 => json!({"channel": "b", "data": i}),
                2 => json!({"channels": ["a", "b"], "data": i}),
                _ => json!({"channel": "c", "data": i}),
            };
            let response = http
                .post(format!("{url}/publish"))
                .bearer_auth(&publisher)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            let id = response.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned();
            if i % 4 != 3 {
                expected.push(id);
            }
        }
        expected
    });

    let mut received = Vec::new();
    let mut polls = 0;
    while received.len() < TOTAL - TOTAL / 4 {
        polls += 1;
        assert!(polls < 10 * TOTAL, "too many polls");
        let answer = ok(
            &hub,
            &format!("channel=a&channel=b&last_event_id={position}&timeout=5"),
            &token,
        )
        .await;
        assert_eq!(answer["reset"], Value::Null, "{answer}");
        received.extend(ids(&answer));
        position = last(&answer);
    }
    let expected = publishing.await.unwrap();
    assert_eq!(received, expected, "every event once, in order");
    assert!(polls > 1, "the events came over several requests");
    let unique: HashSet<&String> = received.iter().collect();
    assert_eq!(unique.len(), received.len());
}

#[tokio::test]
async fn an_unknown_id_gets_a_reset_naming_the_position_to_continue_from() {
    let hub = TestHub::start().await;
    let token = hub.token(None, &["a"], &[]);
    let id = hub.publish(json!({"channel": "a", "data": 1})).await;
    let answer = ok(&hub, "channel=a&last_event_id=0-999", &token).await;
    assert_eq!(answer["events"], json!([]));
    assert_eq!(answer["reset"]["reason"], "unknown_id");
    assert_eq!(answer["reset"]["channels"], json!(["a", "$broadcast"]));
    assert_eq!(answer["reset"]["id"], id.as_str());
    assert_eq!(last(&answer), id);
    // `earliest` is everything kept.
    let all = ok(&hub, "channel=a&last_event_id=earliest", &token).await;
    assert_eq!(ids(&all), vec![id]);
}

#[tokio::test]
async fn a_quiet_channel_answers_empty_after_the_timeout() {
    let hub = TestHub::start().await;
    let token = hub.token(None, &["a"], &[]);
    let position = last(&ok(&hub, "channel=a", &token).await);
    let answer = ok(
        &hub,
        &format!("channel=a&last_event_id={position}&timeout=0.2"),
        &token,
    )
    .await;
    assert_eq!(answer["events"], json!([]));
    assert_eq!(answer["reset"], Value::Null);
    assert_eq!(last(&answer), position, "the position is unchanged");
    assert_eq!(hub.node.stats().connections, 0, "the slot is released");
}

#[tokio::test]
async fn credentials_and_grants_are_checked_as_for_streams() {
    let hub = TestHub::start().await;
    let (status, body) = poll(&hub, "channel=a", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    assert_eq!(body["error"]["channel"], "a");

    let (status, body) = poll(&hub, "channel=a", Some("not.a.token")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "invalid_token");

    let only_a = hub.token(None, &["a"], &[]);
    let (status, body) = poll(&hub, "channel=a&channel=b", Some(&only_a)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    assert_eq!(body["error"]["channel"], "b");

    let (status, body) = poll(&hub, "channel=a&timeout=soon", Some(&only_a)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_parameter");

    let (status, body) = poll(&hub, "channel=bad%20name", Some(&only_a)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_channel");
    assert_eq!(body["error"]["channel"], "bad name");
}

#[tokio::test]
async fn a_user_gets_their_own_channel_and_nobody_elses() {
    let hub = TestHub::start().await;
    let ana = hub.token(Some("ana"), &[], &[]);
    let first = ok(&hub, "", &ana).await;
    assert_eq!(first["user"], "ana");
    assert_eq!(first["channels"], json!(["user:ana", "$broadcast"]));
    let position = last(&first);
    hub.publish(json!({"channel": "user:bob", "data": "for bob"}))
        .await;
    let mine = hub
        .publish(json!({"channel": "user:ana", "data": "for ana"}))
        .await;
    let answer = ok(&hub, &format!("last_event_id={position}"), &ana).await;
    assert_eq!(ids(&answer), vec![mine]);
    assert_eq!(answer["events"][0]["channel"], "user:ana");
}

#[tokio::test]
async fn a_waiting_poll_answers_promptly_when_the_hub_stops() {
    let hub = TestHub::start().await;
    let token = hub.token(None, &["a"], &[]);
    let position = last(&ok(&hub, "channel=a", &token).await);
    let waiting = {
        let (url, token) = (hub.url.clone(), token.clone());
        tokio::spawn(async move {
            let response = reqwest::Client::new()
                .get(format!(
                    "{url}/poll?channel=a&last_event_id={position}&timeout=55"
                ))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        })
    };
    connections(&hub, 1).await;
    let stopping = tokio::spawn(hub.stop());
    let (status, answer) = tokio::time::timeout(PATIENCE, waiting)
        .await
        .expect("answered before its timeout")
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["events"], json!([]));
    assert!(answer["retry_ms"].as_u64().unwrap() > 0, "{answer}");
    stopping.await.unwrap().unwrap();
}
