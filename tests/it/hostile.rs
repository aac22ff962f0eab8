//! Hostile input against a real hub: generated query strings, `Last-Event-ID`
//! headers, publish bodies and WebSocket text frames, from a fixed seed so that a
//! failure reproduces. Every request is answered below 500, an error with the JSON
//! body; the WebSocket answers every frame and stays open; and the hub still
//! answers `/healthz` at the end.

use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::fixture::{PATIENCE, TestHub};

/// How many requests of each kind are sent.
const QUERIES: usize = 50;
const POLLS: usize = 40;
const BODIES: usize = 70;
const FRAMES: usize = 40;

/// Picks one of `items`.
fn pick<'a>(rng: &mut StdRng, items: &[&'a str]) -> &'a str {
    items[rng.random_range(0..items.len())]
}

/// A short string of any characters, and now and then of the ones that matter to
/// the parsers (separators, escapes, wildcards, reserved prefixes).
fn text(rng: &mut StdRng, most: usize) -> String {
    let len = rng.random_range(0..=most);
    (0..len)
        .map(|_| match rng.random_range(0..4) {
            0 => pick(
                rng,
                &[
                    "*", ",", ":", "$", "%", "&", "=", "+", "-", "\"", "\\", " ", "é",
                ],
            )
            .to_owned(),
            1 => char::from(rng.random_range(b'a'..=b'z')).to_string(),
            2 => char::from(rng.random_range(0x20u8..0x7f)).to_string(),
            _ => rng
                .random_range(0x80u32..0x11_0000)
                .try_into()
                .map_or_else(|_| "?".to_owned(), |c: char| c.to_string()),
        })
        .collect()
}

/// `text` percent-encoded, or with some of it left raw (bytes that are not UTF-8
/// once decoded included).
fn query_value(rng: &mut StdRng) -> String {
    match rng.random_range(0..4) {
        0 => format!("%{:02X}%{:02X}", rng.random::<u8>(), rng.random::<u8>()),
        1 => text(rng, 6)
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || "*,:$-._~".contains(*c))
            .collect(),
        _ => form_urlencoded::byte_serialize(text(rng, 10).as_bytes()).collect(),
    }
}

/// A stream query: known parameters with hostile values, repeated, unknown ones,
/// many of them.
fn stream_query(rng: &mut StdRng, with_timeout: bool) -> String {
    let n = match rng.random_range(0..10) {
        0 => rng.random_range(60..200),
        _ => rng.random_range(0..8),
    };
    let mut names = vec![
        "channel",
        "channels",
        "last_event_id",
        "lastEventId",
        "token",
        "envelope",
        "x",
        "",
    ];
    if with_timeout {
        names.push("timeout");
    }
    (0..n)
        .map(|_| {
            let name = pick(rng, &names);
            match rng.random_range(0..5) {
                0 => name.to_owned(),
                _ => format!("{name}={}", query_value(rng)),
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A value fit for a header, from visible ASCII and spaces.
fn header_value(rng: &mut StdRng) -> String {
    let hub_like = format!("{:x}-{}", rng.random::<u32>(), rng.random::<u64>());
    let ascii: String = text(rng, 30)
        .chars()
        .filter(|c| (' '..='~').contains(c))
        .collect();
    let choices = [
        hub_like.as_str(),
        ascii.as_str(),
        "earliest",
        "EARLIEST",
        "0-0",
        "-1",
        "ffffffff-99999999999999999999999",
    ];
    pick(rng, &choices).trim().to_owned()
}

/// Any JSON value, nested up to `depth`.
fn json_value(rng: &mut StdRng, depth: u32) -> Value {
    match rng.random_range(0..if depth == 0 { 6 } else { 8 }) {
        0 => Value::Null,
        1 => rng.random::<bool>().into(),
        2 => rng.random::<i64>().into(),
        3 => rng.random::<f64>().into(),
        4 => json!(u64::MAX),
        5 => text(rng, 8).into(),
        6 => (0..rng.random_range(0..4))
            .map(|_| json_value(rng, depth - 1))
            .collect(),
        _ => (0..rng.random_range(0..4))
            .map(|_| (text(rng, 4), json_value(rng, depth - 1)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
    }
}

/// A field value: usually of its own type, sometimes anything.
fn field(rng: &mut StdRng, own: impl FnOnce(&mut StdRng) -> Value) -> Option<Value> {
    match rng.random_range(0..6) {
        0 => None,
        1 => Some(json_value(rng, 2)),
        _ => Some(own(rng)),
    }
}

/// One event object, each field missing, right, or of the wrong type.
fn event(rng: &mut StdRng) -> Value {
    let names: Vec<Value> = (0..rng.random_range(0..4))
        .map(|_| {
            pick(
                rng,
                &["orders", "team:1", "$broadcast", "user:", "a b", "x*"],
            )
            .into()
        })
        .collect();
    let mut fields = serde_json::Map::new();
    let one = pick(rng, &["orders", "team:1", "$presence", "", "a,b"]).into();
    let mut candidates = [
        ("channel", field(rng, |_| one)),
        ("channels", field(rng, |_| names.into())),
        (
            "type",
            field(rng, |r| {
                pick(
                    r,
                    &[
                        "order.created",
                        "note",
                        "note",
                        "connected",
                        "presence.x",
                        "a b",
                    ],
                )
                .into()
            }),
        ),
        ("data", field(rng, |r| json_value(r, 3))),
        (
            "id",
            field(rng, |r| match r.random_range(0..3) {
                0 => header_value(r).into(),
                _ => format!("order-{}", r.random_range(0..20)).into(),
            }),
        ),
        ("retry", field(rng, |r| r.random::<u32>().into())),
        (
            "extra",
            if rng.random_range(0..10) == 0 {
                Some(Value::Null)
            } else {
                None
            },
        ),
    ];
    // Most events name their channels one way; the rest name them two ways, or
    // are a broadcast.
    match rng.random_range(0..8) {
        0..=3 => candidates[1].1 = None,
        4 | 5 => candidates[0].1 = None,
        6 => candidates[0] = ("broadcast", field(rng, |r| r.random::<bool>().into())),
        _ => {}
    }
    for (key, value) in candidates {
        if let Some(value) = value {
            fields.insert(key.to_owned(), value);
        }
    }
    fields.into()
}

/// A publish body: an event, a batch, any JSON, nesting past every limit, a
/// number past every type, or bytes that are not UTF-8.
fn publish_body(rng: &mut StdRng) -> Vec<u8> {
    match rng.random_range(0..8) {
        0..=2 => event(rng).to_string().into_bytes(),
        3..=4 => Value::from(
            (0..rng.random_range(0..6))
                .map(|_| event(rng))
                .collect::<Vec<_>>(),
        )
        .to_string()
        .into_bytes(),
        5 => {
            let n = rng.random_range(100..5000);
            format!(
                r#"{{"channel":"orders","data":{}{}}}"#,
                "[".repeat(n),
                "]".repeat(n)
            )
            .into_bytes()
        }
        6 => format!(
            r#"{{"channel":"orders","retry":1{},"data":1e99999}}"#,
            "0".repeat(rng.random_range(10..400))
        )
        .into_bytes(),
        _ => {
            let mut bytes = event(rng).to_string().into_bytes();
            let at = rng.random_range(0..bytes.len());
            bytes[at] = rng.random_range(0x80..=0xff);
            bytes
        }
    }
}

/// A WebSocket text frame: an op with fields of any type, any JSON, or any text.
fn ws_frame(rng: &mut StdRng) -> String {
    match rng.random_range(0..6) {
        0 => json_value(rng, 3).to_string(),
        1 => text(rng, 40),
        _ => {
            let mut frame = match event(rng) {
                Value::Object(fields) => fields,
                _ => serde_json::Map::new(),
            };
            frame.remove("broadcast");
            frame.remove("retry");
            frame.remove("extra");
            let op = pick(
                rng,
                &[
                    "subscribe",
                    "unsubscribe",
                    "publish",
                    "presence",
                    "ping",
                    "x",
                ],
            );
            if let Some(op) = field(rng, |_| op.into()) {
                frame.insert("op".into(), op);
            }
            if let Some(id) = field(rng, |r| json_value(r, 1)) {
                frame.insert("id".into(), id);
            }
            if let Some(id) = field(rng, |r| header_value(r).into()) {
                frame.insert("last_event_id".into(), id);
            }
            Value::from(frame).to_string()
        }
    }
}

/// Checks an answer: below 500, and an error carries the JSON body.
async fn answered(what: &str, response: reqwest::Response) {
    let status = response.status();
    assert!(status.as_u16() < 500, "{what}: {status}");
    if status.is_client_error() {
        let body: Value = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(body["error"]["code"].is_string(), "{what}: {body}");
        assert!(body["error"]["message"].is_string(), "{what}: {body}");
    }
}

#[tokio::test]
async fn hostile_requests_get_4xx_answers_and_the_hub_stays_up() {
    let hub = TestHub::start().await;
    let mut rng = StdRng::seed_from_u64(0x4845_5241_4c44);
    let subscriber = hub.token(Some("ana"), &["*"], &[]);
    let publisher = hub.publisher();
    hub.publish(json!({"channel": "orders", "data": 1, "id": "order-1"}))
        .await;

    for _ in 0..QUERIES {
        let query = stream_query(&mut rng, false);
        let mut request = hub.http.get(format!("{}/events?{query}", hub.url));
        if rng.random::<bool>() {
            request = request.header("last-event-id", header_value(&mut rng));
        }
        if rng.random::<bool>() {
            request = request.bearer_auth(&subscriber);
        }
        // A stream that opened is dropped once its head is checked.
        let response = tokio::time::timeout(PATIENCE, request.send())
            .await
            .unwrap_or_else(|_| panic!("/events?{query} unanswered"))
            .unwrap();
        answered(&format!("/events?{query}"), response).await;
    }

    for _ in 0..POLLS {
        // The hub's own `timeout=0`, so that a valid poll is answered at once.
        let query = format!("{}&timeout=0", stream_query(&mut rng, false));
        let mut request = hub.http.get(format!("{}/poll?{query}", hub.url));
        if rng.random::<bool>() {
            request = request.header("last-event-id", header_value(&mut rng));
        }
        if rng.random::<bool>() {
            request = request.bearer_auth(&subscriber);
        }
        let response = tokio::time::timeout(PATIENCE, request.send())
            .await
            .unwrap_or_else(|_| panic!("/poll?{query} unanswered"))
            .unwrap();
        answered(&format!("/poll?{query}"), response).await;
    }

    for _ in 0..BODIES {
        let body = publish_body(&mut rng);
        let response = hub
            .http
            .post(format!("{}/publish", hub.url))
            .bearer_auth(&publisher)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        answered(&String::from_utf8_lossy(&body), response).await;
    }

    let url = format!("ws://{}/ws?channel=orders&token={subscriber}", hub.addr);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut frames: Vec<String> = (0..FRAMES).map(|_| ws_frame(&mut rng)).collect();
    frames.push(r#"{"op":"ping","id":"last"}"#.to_owned());
    for frame in &frames {
        socket.send(Message::text(frame.clone())).await.unwrap();
        let reply = loop {
            let message = tokio::time::timeout(PATIENCE, socket.next())
                .await
                .unwrap_or_else(|_| panic!("no reply to {frame}"))
                .unwrap_or_else(|| panic!("closed after {frame}"))
                .unwrap();
            let Message::Text(text) = message else {
                continue;
            };
            let reply: Value = serde_json::from_str(&text).unwrap();
            if matches!(
                reply["type"].as_str(),
                Some("ack" | "error" | "pong" | "presence")
            ) {
                break reply;
            }
        };
        if reply["type"] == "error" {
            assert!(reply["code"].is_string(), "{frame}: {reply}");
        }
    }

    let health = hub.get("/healthz").await;
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_head_whose_lines_end_in_bare_line_feeds_is_answered() {
    let hub = TestHub::start().await;
    let mut socket = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
    // The client keeps the connection open: the head alone must be enough.
    socket
        .write_all(b"GET /healthz HTTP/1.1\nHost: herald\n\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(PATIENCE, socket.read(&mut buf))
            .await
            .expect("an answer before the header timeout")
            .unwrap();
        assert!(n > 0, "closed without an answer");
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

#[tokio::test]
async fn data_no_json_value_holds_comes_back_from_history_as_published() {
    let hub = TestHub::start().await;
    let data = [
        // Within the hub's depth limit, but wrapped in an envelope one level deeper
        // than a JSON reader with the usual recursion limit takes apart.
        format!("{}{}", "[".repeat(127), "]".repeat(127)),
        // Valid JSON, passed on as written, beyond what a double holds.
        r#"{"n":1e400}"#.to_owned(),
    ];
    for data in &data {
        let body = format!(r#"{{"channel":"orders","data":{data}}}"#);
        let response = hub
            .http
            .post(format!("{}/publish", hub.url))
            .bearer_auth(hub.publisher())
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    let text = hub
        .http
        .get(format!("{}/channels/orders/history", hub.url))
        .bearer_auth(hub.token(Some("ana"), &["*"], &[]))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    #[derive(serde::Deserialize)]
    struct History<'a> {
        #[serde(borrow)]
        events: Vec<&'a serde_json::value::RawValue>,
    }
    let history: History = serde_json::from_str(&text).unwrap();
    assert_eq!(history.events.len(), data.len(), "{text}");
    for (event, data) in history.events.iter().zip(&data) {
        let event = event.get();
        assert!(event.contains(&format!(r#""data":{data}"#)), "{event}");
    }
}
