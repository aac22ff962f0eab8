//! The HTTP wire as a client that does not play by the rules sees it: pipelined and
//! malformed requests get an answer with the hub's JSON error body and a close,
//! streams never take a request after them, and slow or idle clients are closed
//! after the configured timeouts without delaying anyone else.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::fixture::{PATIENCE, TestHub, eventually};

const ORIGIN: &str = "https://app.example";

/// A hub with CORS on, so that a stream request with an `Origin` is served through
/// the router and one without it straight on the socket.
async fn cors_hub(change: impl FnOnce(&mut herald::Config)) -> TestHub {
    TestHub::builder()
        .config(|c| {
            c.http.cors_origins = vec![ORIGIN.into()];
            change(c);
        })
        .start()
        .await
}

/// The `Origin` line of a stream request on each path.
const PATHS: [(&str, &str); 2] = [
    ("direct", ""),
    ("router", "Origin: https://app.example\r\n"),
];

async fn connect(hub: &TestHub) -> TcpStream {
    TcpStream::connect(hub.addr).await.unwrap()
}

/// Reads what the hub sends until it closes the connection (an end of stream or a
/// reset); fails if it is still open after `patience`.
async fn until_closed(socket: &mut TcpStream, patience: Duration) -> String {
    let mut answer = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let read_all = async {
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    };
    let closed = tokio::time::timeout(patience, read_all).await.is_ok();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(
        closed,
        "the hub left the connection open; it sent {answer:?}"
    );
    answer
}

/// Reads until `needle` has been received; fails after [`PATIENCE`].
async fn until_received(socket: &mut TcpStream, needle: &str) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + PATIENCE;
    while !String::from_utf8_lossy(&seen).contains(needle) {
        let n = tokio::time::timeout_at(deadline, socket.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} in {:?}", String::from_utf8_lossy(&seen)))
            .unwrap();
        assert!(n > 0, "closed before {needle:?}");
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// The status and JSON body of the one response in `answer`, which must be the
/// hub's error shape and ask the client to close.
fn json_error(answer: &str) -> (u16, Value) {
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("a response, not {answer:?}"));
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("content-type: application/json"),
        "{answer:?}"
    );
    assert!(lower.contains("connection: close"), "{answer:?}");
    assert_eq!(
        answer.matches("HTTP/1.1 ").count(),
        1,
        "one answer: {answer:?}"
    );
    let body: Value =
        serde_json::from_str(body).unwrap_or_else(|_| panic!("a JSON body: {answer:?}"));
    assert!(body["error"]["code"].is_string(), "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    (head[9..12].parse().unwrap(), body)
}

/// Waits until `/stats` counts no open connection.
async fn connections_return_to_zero(hub: &TestHub) {
    eventually("no connection to be held", || async {
        let stats = hub.stats().await;
        if stats["connections"] == 0 {
            Ok(())
        } else {
            Err(format!("connections still held: {stats}"))
        }
    })
    .await;
}

/// A subscriber on `channel` gets the next event published to it.
async fn round_trip(hub: &TestHub, channel: &str) {
    let token = hub.token(None, &[channel], &[]);
    let mut sse = hub
        .subscribe(&format!("channel={channel}"), Some(&token))
        .await;
    hub.publish(json!({"channel": channel, "data": "round trip"}))
        .await;
    assert_eq!(sse.expect().await.data, "round trip");
}

/// A stream is a response that never ends, so nothing sent after its request could
/// ever be answered: a stream request followed by more bytes (a second request,
/// stray bytes, a body) is refused before any stream starts, alike on both paths,
/// and holds nothing afterwards.
#[tokio::test]
async fn bytes_after_a_stream_request_are_refused_on_both_paths() {
    let hub = cors_hub(|_| {}).await;
    let token = hub.token(None, &["a"], &[]);
    for (path, origin) in PATHS {
        for (what, extra_headers, after) in [
            (
                "a second request",
                "",
                "GET /stats HTTP/1.1\r\nHost: x\r\n\r\n",
            ),
            ("a stray byte", "", "x"),
            ("a body", "Content-Length: 5\r\n", "hello"),
        ] {
            let mut socket = connect(&hub).await;
            let request = format!(
                "GET /events?channel=a&token={token} HTTP/1.1\r\nHost: x\r\n{origin}{extra_headers}\r\n{after}"
            );
            socket.write_all(request.as_bytes()).await.unwrap();
            let answer = until_closed(&mut socket, PATIENCE).await;
            let (status, body) = json_error(&answer);
            assert_eq!(status, 400, "{path}, {what}: {body}");
            assert_eq!(body["error"]["code"], "pipelined_request", "{path}, {what}");
        }
    }
    connections_return_to_zero(&hub).await;
    round_trip(&hub, "a").await;
}

/// A client that sends anything once its stream has started is closed, on both
/// paths: the hub counts it gone and its place is free for a new client.
#[tokio::test]
async fn a_stream_whose_client_sends_more_is_closed_on_both_paths() {
    let hub = cors_hub(|c| c.limits.max_connections = 2).await;
    let token = hub.token(None, &["a"], &[]);
    let mut streams = Vec::new();
    for (_, origin) in PATHS {
        let mut socket = connect(&hub).await;
        let request =
            format!("GET /events?channel=a&token={token} HTTP/1.1\r\nHost: x\r\n{origin}\r\n");
        socket.write_all(request.as_bytes()).await.unwrap();
        let seen = until_received(&mut socket, "event: connected").await;
        assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
        streams.push(socket);
    }
    for (socket, (path, _)) in streams.iter_mut().zip(PATHS) {
        socket
            .write_all(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let rest = until_closed(socket, PATIENCE).await;
        assert!(
            !rest.contains("HTTP/1.1"),
            "{path}: no answer to it: {rest}"
        );
    }
    connections_return_to_zero(&hub).await;
    // Both places are free again.
    let _first = hub.subscribe("channel=a", Some(&token)).await;
    round_trip(&hub, "a").await;
}

/// `Content-Length` and `Transfer-Encoding` together leave the length of a body
/// ambiguous (the shape of request smuggling): the request is refused with a 400 and
/// the connection closed, nothing is published, and what followed is not served.
#[tokio::test]
async fn a_publish_with_two_lengths_is_refused_and_not_published() {
    let hub = TestHub::start().await;
    let token = hub.token(None, &["a"], &[]);
    let mut sse = hub.subscribe("channel=a", Some(&token)).await;
    let event = r#"{"channel":"a","data":"smuggled"}"#;
    let chunked = format!("{:x}\r\n{event}\r\n0\r\n\r\n", event.len());
    let request = format!(
        "POST /publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\
         Transfer-Encoding: chunked\r\n\r\n{chunked}GET /stats HTTP/1.1\r\nHost: x\r\n\r\n",
        hub.publisher(),
        chunked.len(),
    );
    let mut socket = connect(&hub).await;
    socket.write_all(request.as_bytes()).await.unwrap();
    let answer = until_closed(&mut socket, PATIENCE).await;
    let (status, body) = json_error(&answer);
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "malformed_request");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Transfer-Encoding"),
        "{body}"
    );
    hub.publish(json!({"channel": "a", "data": "after"})).await;
    assert_eq!(
        sse.expect().await.data,
        "after",
        "the refused event was not published"
    );
}

/// Heads that cannot be read get a status naming what is wrong and the hub's JSON
/// body, never a bare close or an empty answer, whatever the request is for.
#[tokio::test]
async fn malformed_heads_get_a_json_error() {
    let hub = TestHub::start().await;
    let many_headers: String = (0..101).map(|i| format!("X-Header-{i}: v\r\n")).collect();
    let huge_header = format!("X-Big: {}\r\n", "b".repeat(512 * 1024));
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "a NUL byte",
            "GET /stats HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n".into(),
            400,
            "malformed_request",
        ),
        (
            "a header line without a colon",
            "GET /stats HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n".into(),
            400,
            "malformed_request",
        ),
        (
            "a stream request with a header line without a colon",
            "GET /events?channel=a HTTP/1.1\r\nno colon\r\n\r\n".into(),
            400,
            "malformed_request",
        ),
        (
            "a method that is not a token",
            "G(T /stats HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            400,
            "malformed_request",
        ),
        (
            "an unknown version",
            "GET /stats HTTP/1.7\r\nHost: x\r\n\r\n".into(),
            400,
            "malformed_request",
        ),
        (
            "a Content-Length that is not a number",
            "POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n".into(),
            400,
            "malformed_request",
        ),
        (
            "two different Content-Lengths",
            "POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n{}"
                .into(),
            400,
            "malformed_request",
        ),
        (
            "a Transfer-Encoding that does not end in chunked",
            "POST /publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n".into(),
            400,
            "malformed_request",
        ),
        (
            "over 100 header lines",
            format!("GET /stats HTTP/1.1\r\n{many_headers}\r\n"),
            431,
            "headers_too_large",
        ),
        (
            "over 100 header lines on a stream request",
            format!("GET /events?channel=a HTTP/1.1\r\n{many_headers}\r\n"),
            431,
            "headers_too_large",
        ),
        (
            "a head of half a megabyte",
            format!("GET /stats HTTP/1.1\r\nHost: x\r\n{huge_header}\r\n"),
            431,
            "headers_too_large",
        ),
        (
            "a request target over 64 KiB",
            format!("GET /stats?{} HTTP/1.1\r\n\r\n", "q".repeat(70_000)),
            414,
            "uri_too_long",
        ),
    ];
    for (what, request, status, code) in cases {
        let mut socket = connect(&hub).await;
        let (mut read, mut write) = socket.split();
        // Written while the answer is read: the hub may answer before it has it all.
        let write = async {
            let _ = write.write_all(request.as_bytes()).await;
        };
        let read = async {
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(PATIENCE, read.read_to_end(&mut answer)).await;
            String::from_utf8_lossy(&answer).into_owned()
        };
        let ((), answer) = tokio::join!(write, read);
        assert!(!answer.is_empty(), "{what}: a bare close");
        let (got, body) = json_error(&answer);
        assert_eq!(got, status, "{what}: {body}");
        assert_eq!(body["error"]["code"], code, "{what}");
        drop(socket);
    }
    round_trip(&hub, "a").await;
}

/// A head or a body that stops arriving midway is answered 408, with the JSON body,
/// once its timeout passes, and the connection closed.
#[tokio::test]
async fn a_request_that_stops_midway_gets_a_408() {
    let hub = TestHub::builder()
        .config(|c| {
            c.http.head_timeout = Duration::from_millis(500);
            c.http.body_timeout = Duration::from_millis(500);
        })
        .start()
        .await;
    let stopped_head = "POST /publish HTTP/1.1\r\nHost: x\r\nContent-Ty".to_owned();
    let stopped_body = format!(
        "POST /publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"channel\":",
        hub.publisher()
    );
    for (what, request) in [("head", stopped_head), ("body", stopped_body)] {
        let mut socket = connect(&hub).await;
        socket.write_all(request.as_bytes()).await.unwrap();
        let answer = until_closed(&mut socket, PATIENCE).await;
        let (status, body) = json_error(&answer);
        assert_eq!(status, 408, "{what}: {body}");
        assert_eq!(body["error"]["code"], "request_timeout", "{what}");
    }
}

/// A client that sends one byte now and then, of its head or of its body, is closed
/// once `http.head_timeout` or `http.body_timeout` has passed, as is a connection
/// that sends nothing or sits idle after a request; and while 500 of each kind are
/// open, a subscriber still gets what a publisher sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_closed_after_their_timeouts_without_delaying_others() {
    const SLOW: usize = 500;
    let hub = TestHub::builder()
        .config(|c| {
            c.http.head_timeout = Duration::from_secs(3);
            c.http.body_timeout = Duration::from_secs(3);
        })
        .start()
        .await;
    let slow_body_head = format!(
        "POST /publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n[",
        hub.publisher()
    );
    let mut slow = Vec::new();
    for i in 0..2 * SLOW {
        let first = if i % 2 == 0 {
            "POST /publish HTTP/1.1\r\nHost: x\r\nX-Slow: ".to_owned()
        } else {
            slow_body_head.clone()
        };
        let mut socket = connect(&hub).await;
        socket.write_all(first.as_bytes()).await.unwrap();
        slow.push(tokio::spawn(trickle(socket)));
    }
    let mut quiet = connect(&hub).await;
    let mut idle = connect(&hub).await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    until_received(&mut idle, "\r\n\r\n").await;

    round_trip(&hub, "a").await;

    for (i, trickler) in slow.into_iter().enumerate() {
        assert!(
            trickler.await.unwrap(),
            "slow {} {i} was never closed",
            if i % 2 == 0 { "head" } else { "body" }
        );
    }
    until_closed(&mut quiet, PATIENCE).await;
    until_closed(&mut idle, PATIENCE).await;
    connections_return_to_zero(&hub).await;
}

/// Sends a byte every 200 ms until the hub closes the connection (true), or gives up
/// after twice [`PATIENCE`] (false).
async fn trickle(mut socket: TcpStream) -> bool {
    let deadline = Instant::now() + 2 * PATIENCE;
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        tokio::select! {
            read = socket.read(&mut buf) => match read {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            },
            // A slow client is the point: a byte now and then, never the whole
            // request, until the hub's timeout closes the connection.
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                if socket.write_all(b"a").await.is_err() {
                    return true;
                }
            }
        }
    }
    false
}

/// Connections that send nothing are bounded in number too, not only in time: past
/// the cap on connections waiting for their request (at least 1,024), the one that
/// has waited longest is closed, so a flood of them cannot hold every file
/// descriptor, and a client that sends its request is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_cap_on_waiting_connections_the_oldest_are_closed() {
    const CAP: usize = 1024;
    const OVER: usize = 50;
    let hub = TestHub::builder()
        .config(|c| c.limits.max_connections = 100)
        .start()
        .await;
    let mut idle = Vec::new();
    for _ in 0..CAP + OVER {
        idle.push(connect(&hub).await);
    }
    for (i, socket) in idle.iter_mut().take(OVER).enumerate() {
        let sent = until_closed(socket, PATIENCE).await;
        assert!(
            sent.is_empty(),
            "idle {i} was closed without an answer: {sent}"
        );
    }
    round_trip(&hub, "a").await;
}
