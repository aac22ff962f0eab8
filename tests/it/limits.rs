//! Limits and slow consumers.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::fixture::{TestHub, eventually, json};

#[tokio::test]
async fn past_max_connections_is_503_with_retry_after() {
    let hub = TestHub::builder()
        .config(|c| c.limits.max_connections = 2)
        .start()
        .await;
    let token = hub.token(None, &["a"], &[]);
    let first = hub.subscribe("channel=a", Some(&token)).await;
    let _second = hub.subscribe("channel=a", Some(&token)).await;
    let response = hub.open("channel=a", Some(&token), None).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_connections");
    // A closed connection frees its place.
    drop(first);
    eventually("the place to be freed", || async {
        hub.open("channel=a", Some(&token), None).await.status() == 200
    })
    .await;
}

#[tokio::test]
async fn past_max_connections_per_address_is_429() {
    let hub = TestHub::builder()
        .config(|c| c.limits.max_connections_per_ip = 1)
        .start()
        .await;
    let token = hub.token(None, &["a"], &[]);
    let _first = hub.subscribe("channel=a", Some(&token)).await;
    let response = hub.open("channel=a", Some(&token), None).await;
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn too_many_or_bad_channels_are_400() {
    let hub = TestHub::builder()
        .config(|c| c.limits.max_channels_per_connection = 2)
        .start()
        .await;
    let token = hub.token(None, &["*"], &[]);
    for (query, code) in [
        ("channel=a&channel=b&channel=c", "too_many_channels"),
        ("channel=a%0Ab", "invalid_channel"),
        ("channel=%24broadcast", "invalid_channel"),
        ("channel=a*", "invalid_channel"),
        ("channel=a&envelope=perhaps", "invalid_parameter"),
    ] {
        let response = hub.open(query, Some(&token), None).await;
        assert_eq!(response.status(), 400, "{query}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{query}");
    }
    let response = hub.open("", None, None).await;
    assert_eq!(response.status(), 400);
}

/// Where the first SSE frame in `text` at or after `from` ends (its blank line),
/// found line by line: the search for a line end is far quicker than for two.
fn frame_end(text: &str, mut from: usize) -> Option<usize> {
    while let Some(at) = text[from..].find('\n') {
        let end = from + at;
        if text[end + 1..].starts_with('\n') {
            return Some(end);
        }
        from = end + 1;
    }
    None
}

/// A reader that sends its request and then never reads: its queue fills up and
/// the hub closes it, while a hundred others on the same channel get everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_is_disconnected_while_others_keep_receiving() {
    const EVENTS: usize = 160;
    let hub = TestHub::builder()
        .config(|c| {
            c.limits.queue_size = 4;
            c.channels.history_size = 10;
        })
        .start()
        .await;
    let token = hub.token(None, &["a"], &[]);

    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(hub.addr).await.unwrap();
    stalled
        .write_all(
            format!("GET /events?channel=a&token={token} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut head = [0u8; 512];
    let n = stalled.read(&mut head).await.unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"));

    let mut readers = Vec::new();
    for _ in 0..100 {
        let response = hub.open("channel=a", Some(&token), None).await;
        assert_eq!(response.status(), 200);
        readers.push(tokio::spawn(async move {
            let mut body = response.bytes_stream();
            let mut text = String::new();
            // Where the search for the end of a frame goes on: the text before it
            // holds none. A hundred readers of 10 MB each are read by whole slices,
            // not byte by byte, or reading would take longer than the hub's work.
            let mut searched = 0;
            let mut ids = Vec::new();
            while ids.len() < EVENTS {
                let chunk = tokio::time::timeout(Duration::from_secs(30), body.next())
                    .await
                    .expect("events keep flowing")
                    .expect("the stream stays open")
                    .unwrap();
                text.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = frame_end(&text, searched) {
                    let rest = text.split_off(end + 2);
                    let frame = std::mem::replace(&mut text, rest);
                    searched = 0;
                    if frame.contains("event: connected\n") {
                        continue;
                    }
                    if let Some(id) = frame.lines().find_map(|l| l.strip_prefix("id: ")) {
                        ids.push(id.to_owned());
                    }
                }
                searched = text.len().saturating_sub(1);
                while !text.is_char_boundary(searched) {
                    searched -= 1;
                }
            }
            ids
        }));
    }
    eventually("all 101 streams to be open", || {
        hub.node.stats().connections >= 101
    })
    .await;

    let payload = "x".repeat(60_000);
    let mut published = Vec::new();
    for i in 0..EVENTS {
        let id = hub
            .publish(json!({"channel": "a", "data": {"i": i, "pad": payload}}))
            .await;
        published.push(id);
    }
    for reader in readers {
        assert_eq!(reader.await.unwrap(), published, "every event, in order");
    }
    assert_eq!(hub.node.stats().slow_consumer_disconnects, 1);
    // The stalled socket was closed by the hub: draining it ends in EOF.
    let mut sink = vec![0u8; 1 << 16];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stalled.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the stalled connection was closed");
}

/// A stream served through the router (here: a cross-origin request, which the CORS
/// policy answers) whose reader stopped reading is closed as soon as its queue
/// overflows, though hyper, blocked on the write, no longer polls the stream: the
/// hub counts it gone and its socket ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_of_a_routed_stream_is_disconnected() {
    let hub = TestHub::builder()
        .config(|c| {
            // Events larger than the socket's and hyper's buffers together before
            // the queue is full: the write blocks first.
            c.limits.queue_size = 16;
            c.limits.max_event_bytes = 1 << 20;
            c.limits.max_body_bytes = 2 << 20;
            c.http.cors_origins = vec!["https://app.example".into()];
        })
        .start()
        .await;
    let token = hub.token(None, &["a"], &[]);
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(hub.addr).await.unwrap();
    stalled
        .write_all(
            format!(
                "GET /events?channel=a&token={token} HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut head = [0u8; 1024];
    let n = stalled.read(&mut head).await.unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.contains("access-control-allow-origin: https://app.example"),
        "served by the router: {head}"
    );

    let payload = "x".repeat(1_000_000);
    eventually("the stalled stream's queue to overflow", || async {
        hub.publish(json!({"channel": "a", "data": {"pad": payload}}))
            .await;
        hub.node.stats().slow_consumer_disconnects > 0
    })
    .await;
    eventually("the stalled stream to be let go", || {
        hub.node.stats().connections == 0
    })
    .await;
    let mut sink = vec![0u8; 1 << 16];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stalled.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the stalled connection was closed");
}

/// Events published to thousands of distinct channels are held within
/// `limits.history_memory`: the oldest are evicted whatever their channel, counted
/// in `/stats` and `/metrics`, and a client resuming from before an evicted event is
/// told so with a `reset`.
#[tokio::test]
async fn history_stays_within_its_memory_budget_and_evictions_reset() {
    const BUDGET: u64 = 256 * 1024;
    let hub = TestHub::builder()
        .config(|c| c.limits.history_memory = BUDGET as usize)
        .start()
        .await;
    let reader = hub.token(None, &["*"], &[]);
    let before = hub.publish(json!({"channel": "x", "data": "before"})).await;
    hub.publish(json!({"channel": "a", "data": "evicted"}))
        .await;
    let mut ids: Vec<String> = Vec::new();
    for batch in 0..5 {
        let events: Vec<Value> = (0..1000)
            .map(|i| json!({"channel": format!("many:{}", batch * 1000 + i), "data": {"i": i}}))
            .collect();
        let (status, answer) = hub
            .publish_with(Some(&hub.publisher()), &Value::Array(events))
            .await;
        assert_eq!(status, 200, "{answer}");
        ids = serde_json::from_value(answer["ids"].clone()).unwrap();
    }
    let stats: Value = hub.get("/stats").await.json().await.unwrap();
    let bytes = stats["history_bytes"].as_u64().unwrap();
    assert!(bytes <= BUDGET && bytes > BUDGET / 2, "{stats}");
    let channels = stats["history_channels"].as_u64().unwrap();
    assert!(channels < 1000, "{channels} channels kept");
    let evicted = stats["history_evicted"].as_u64().unwrap();
    assert!(evicted + channels >= 5002, "{stats}");
    let metrics = hub.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains(&format!("herald_history_evicted_total {evicted}\n")));
    assert!(metrics.contains("herald_history_bytes "));

    let mut sse = hub
        .subscribe_from("channel=a", Some(&reader), Some(&before))
        .await;
    let reset = sse.expect().await;
    assert_eq!(reset.event, "reset", "{}", reset.data);
    // `$broadcast`, which keeps no log, may be named too: its bucket of dropped
    // positions is shared with channels evicted since.
    let gaps = json(&reset)["channels"].clone();
    assert!(gaps.as_array().unwrap().contains(&json!("a")), "{gaps}");
    // The newest are still kept and resumable.
    let mut sse = hub
        .subscribe_from("channel=many:4999", Some(&reader), Some(&ids[998]))
        .await;
    let e = sse.expect().await;
    assert_eq!(
        (e.id.as_str(), e.data.as_str()),
        (ids[999].as_str(), r#"{"i":999}"#)
    );
}

/// Sends `GET {target}` on a raw connection (the target may be longer than an HTTP
/// client will send) and returns the status and JSON body of the answer.
async fn raw_get(hub: &TestHub, target: &str) -> (u16, Value) {
    let stream = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let request = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
    // Written while the answer is read: the hub may answer before it has it all.
    let writer = tokio::spawn(async move {
        let _ = write.write_all(request.as_bytes()).await;
        write
    });
    let mut answer = Vec::new();
    tokio::time::timeout(crate::fixture::PATIENCE, read.read_to_end(&mut answer))
        .await
        .expect("an answer in time")
        .unwrap();
    drop(writer.await.unwrap());
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("a response");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    (
        head[9..12].parse().unwrap(),
        serde_json::from_str(body).unwrap(),
    )
}

/// A query of a hundred thousand channel names is far past what the HTTP layer
/// reads: it is refused, with the usual JSON body, instead of dropped unanswered.
#[tokio::test]
async fn a_query_of_a_hundred_thousand_channels_is_refused_with_json() {
    let hub = TestHub::start().await;
    let query = "channel=a&".repeat(100_000);
    for path in ["/events", "/ws", "/poll"] {
        let (status, body) = raw_get(&hub, &format!("{path}?{query}")).await;
        assert_eq!(status, 414, "{path}: {body}");
        assert_eq!(body["error"]["code"], "uri_too_long");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("65534 bytes"),
            "{body}"
        );
    }
}

/// The longest queries the HTTP layer takes, full of channel names, are refused
/// once the names pass `limits.max_channels_per_connection` and a few more, on
/// every stream endpoint and both paths of `/events`, with the limit named.
#[tokio::test]
async fn stream_queries_past_the_channel_limit_are_refused_before_their_names_are_read() {
    let hub = TestHub::builder()
        .config(|c| c.http.cors_origins = vec!["https://app.example".into()])
        .start()
        .await;
    let token = hub.token(Some("ana"), &["*"], &[]);
    // About 60 KB: one channel named 6,000 times, or 30,000 names in one list.
    let repeated = format!("token={token}&{}", "channel=a&".repeat(6_000));
    let listed = format!("token={token}&channels={}", "a,".repeat(30_000));
    // Short enough for `/events` to be served directly on the socket.
    let short = format!("token={token}&channels={}", "b,".repeat(6_000));
    for query in [&repeated, &listed, &short] {
        let url = |path: &str| format!("{}{path}?{query}", hub.url);
        for (endpoint, request) in [
            ("/events", hub.http.get(url("/events"))),
            (
                "/events with Origin",
                hub.http
                    .get(url("/events"))
                    .header("origin", "https://app.example"),
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
        ] {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 400, "{endpoint}, {} bytes", query.len());
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "too_many_channels", "{endpoint}");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(
                message.contains(
                    "at most 64 channels per connection (limits.max_channels_per_connection)"
                ),
                "{endpoint}: {message}"
            );
        }
    }

    // Up to 16 more names than the limit may come, so long as at most 64 differ.
    let names: Vec<String> = (0..64).map(|i| format!("c{i}")).collect();
    let poll = |names: &[String]| {
        hub.http.get(format!(
            "{}/poll?token={token}&timeout=0&channels={}",
            hub.url,
            names.join(",")
        ))
    };
    let with_repeats = [names.clone(), names[..16].to_vec()].concat();
    let answer: Value = poll(&with_repeats)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        answer["channels"].as_array().unwrap().len(),
        64 + 2,
        "{answer}"
    );
    let one_more = [with_repeats, vec!["c0".to_owned()]].concat();
    assert_eq!(poll(&one_more).send().await.unwrap().status(), 400);
    let distinct: Vec<String> = (0..65).map(|i| format!("c{i}")).collect();
    let response = poll(&distinct).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_channels");
}
