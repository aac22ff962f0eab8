//! The WebSocket protocol itself, spoken byte by byte on a raw TCP connection: a
//! client that breaks RFC 6455 gets a close frame with the code the RFC asks for
//! (1002, 1007, 1009), and a bad upgrade request gets an HTTP error with a JSON body.

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::fixture::{PATIENCE, TestHub};

/// The sample key of RFC 6455 section 1.3 and its accept value.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// The `ws.max_frame_bytes` of the hubs here.
const MAX_FRAME: usize = 1024;

async fn hub() -> TestHub {
    TestHub::builder()
        .config(|c| c.ws.max_frame_bytes = MAX_FRAME)
        .start()
        .await
}

/// Reads an HTTP response head, byte by byte so that nothing after it is taken.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = tokio::time::timeout(PATIENCE, stream.read_u8())
            .await
            .expect("a response in time")
            .expect("a response head");
        head.push(byte);
    }
    String::from_utf8(head).unwrap()
}

/// The value of header `name` in a response head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

/// Sends a `GET /ws` with `headers` (each line ending in CRLF) and returns the
/// response's status, head and (for an error) JSON body.
async fn upgrade_request(hub: &TestHub, headers: &str) -> (u16, String, Value, TcpStream) {
    let mut stream = TcpStream::connect(hub.addr).await.unwrap();
    let request = format!("GET /ws HTTP/1.1\r\nHost: {}\r\n{headers}\r\n", hub.addr);
    stream.write_all(request.as_bytes()).await.unwrap();
    let head = read_head(&mut stream).await;
    let status: u16 = head[9..12].parse().unwrap();
    let mut body = Value::Null;
    if status != 101 {
        let length: usize = header(&head, "content-length")
            .expect("a content-length")
            .parse()
            .unwrap();
        let mut bytes = vec![0; length];
        stream.read_exact(&mut bytes).await.unwrap();
        body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("a JSON body: {}", String::from_utf8_lossy(&bytes)));
    }
    (status, head, body, stream)
}

/// A WebSocket opened by hand; its `connected` frame has been read.
async fn open(hub: &TestHub) -> TcpStream {
    let headers = format!(
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n"
    );
    let (status, head, _, mut stream) = upgrade_request(hub, &headers).await;
    assert_eq!(status, 101, "{head}");
    assert_eq!(header(&head, "sec-websocket-accept"), Some(ACCEPT));
    let (opcode, payload) = read_frame(&mut stream).await.expect("a first frame");
    assert_eq!(opcode, 1);
    let connected: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(connected["type"], "connected");
    stream
}

/// The next frame from the hub (opcode and payload); `None` when the connection
/// ended instead.
async fn read_frame(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let read = async {
        let mut head = [0u8; 2];
        stream.read_exact(&mut head).await.ok()?;
        assert_eq!(head[1] & 0x80, 0, "a server never masks its frames");
        let len = match head[1] & 0x7F {
            126 => u64::from(stream.read_u16().await.ok()?),
            127 => stream.read_u64().await.ok()?,
            n => u64::from(n),
        };
        let mut payload = vec![0; usize::try_from(len).unwrap()];
        stream.read_exact(&mut payload).await.ok()?;
        Some((head[0] & 0x0F, payload))
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("a frame or the end in time")
}

/// The code of the hub's close frame, skipping other frames; `None` when the
/// connection ended without one (or with an empty one).
async fn close_code(stream: &mut TcpStream) -> Option<u16> {
    loop {
        let (opcode, payload) = read_frame(stream).await?;
        if opcode == 8 {
            return (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
        }
    }
}

/// A client frame: `first` is the FIN, RSV and opcode byte; the payload is masked.
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = frame_head(first, payload.len(), Some(mask));
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// A client frame sent without a mask, which only a server may do.
fn unmasked(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = frame_head(first, payload.len(), None);
    out.extend_from_slice(payload);
    out
}

/// The head of a frame of `len` bytes.
fn frame_head(first: u8, len: usize, mask: Option<[u8; 4]>) -> Vec<u8> {
    let bit = if mask.is_some() { 0x80 } else { 0 };
    let mut out = vec![first];
    match len {
        0..=125 => out.push(bit | len as u8),
        126..=0xFFFF => {
            out.push(bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask.unwrap_or_default()[..if mask.is_some() { 4 } else { 0 }]);
    out
}

/// A close frame's payload: the code and the reason.
fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    payload
}

const FIN: u8 = 0x80;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;

/// Sends each case's bytes on a fresh WebSocket and checks the hub's close code.
async fn expect_close_codes(hub: &TestHub, cases: &[(&str, Vec<u8>, u16)]) {
    for (name, bytes, code) in cases {
        let mut socket = open(hub).await;
        socket.write_all(bytes).await.unwrap();
        assert_eq!(close_code(&mut socket).await, Some(*code), "{name}");
    }
}

#[tokio::test]
async fn frames_that_break_the_protocol_close_with_1002() {
    let hub = hub().await;
    let fragment_then_new_message = [frame(TEXT, b"{\"op\""), frame(FIN | TEXT, b"{}")].concat();
    let cases = [
        ("an unmasked frame", unmasked(FIN | TEXT, b"{}"), 1002),
        (
            "RSV1 without an extension",
            frame(FIN | 0x40 | TEXT, b"{}"),
            1002,
        ),
        ("RSV2", frame(FIN | 0x20 | TEXT, b"{}"), 1002),
        ("RSV3", frame(FIN | 0x10 | BINARY, b"{}"), 1002),
        ("reserved data opcode 3", frame(FIN | 0x3, b"{}"), 1002),
        ("reserved data opcode 7", frame(FIN | 0x7, b""), 1002),
        ("reserved control opcode 0xB", frame(FIN | 0xB, b""), 1002),
        ("reserved control opcode 0xF", frame(FIN | 0xF, b"x"), 1002),
        (
            "a continuation with nothing to continue",
            frame(FIN, b"x"),
            1002,
        ),
        ("a fragmented ping", frame(PING, b"x"), 1002),
        ("a ping of 126 bytes", frame(FIN | PING, &[b'p'; 126]), 1002),
        (
            "a close frame of 126 bytes",
            frame(FIN | CLOSE, &close_payload(1000, &[b'r'; 124])),
            1002,
        ),
        (
            "a new message inside a fragmented one",
            fragment_then_new_message,
            1002,
        ),
    ];
    expect_close_codes(&hub, &cases).await;
}

#[tokio::test]
async fn close_frames_are_answered_and_bad_close_codes_get_1002() {
    let hub = hub().await;
    let mut cases = vec![
        (
            "a one-byte close payload",
            frame(FIN | CLOSE, &[0x03]),
            1002,
        ),
        // Valid codes are answered with the same code, completing the handshake.
        (
            "close 1000",
            frame(FIN | CLOSE, &close_payload(1000, b"bye")),
            1000,
        ),
        (
            "close 3000",
            frame(FIN | CLOSE, &close_payload(3000, b"")),
            3000,
        ),
        (
            "close 4999",
            frame(FIN | CLOSE, &close_payload(4999, b"")),
            4999,
        ),
    ];
    for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
        cases.push((
            "a reserved close code",
            frame(FIN | CLOSE, &close_payload(code, b"")),
            1002,
        ));
    }
    expect_close_codes(&hub, &cases).await;
    // An empty close frame is answered with an empty one.
    let mut socket = open(&hub).await;
    socket.write_all(&frame(FIN | CLOSE, b"")).await.unwrap();
    assert_eq!(read_frame(&mut socket).await, Some((CLOSE, Vec::new())));
}

#[tokio::test]
async fn text_that_is_not_utf8_closes_with_1007() {
    let hub = hub().await;
    let cases = [
        (
            "a text frame",
            frame(FIN | TEXT, b"{\"op\":\"\xff\"}"),
            1007,
        ),
        ("a truncated sequence", frame(FIN | TEXT, b"\xce"), 1007),
        ("a surrogate", frame(FIN | TEXT, b"\xed\xa0\x80"), 1007),
        (
            "across fragments",
            [frame(TEXT, b"\"\xce"), frame(FIN, b"\xff\"")].concat(),
            1007,
        ),
        (
            "a close reason",
            frame(FIN | CLOSE, &close_payload(1000, b"\xff\xfe")),
            1007,
        ),
    ];
    expect_close_codes(&hub, &cases).await;
}

#[tokio::test]
async fn messages_over_max_frame_bytes_close_with_1009() {
    let hub = hub().await;
    // Only the head of the large frame is sent: the hub refuses it from its length.
    let large = frame_head(FIN | TEXT, MAX_FRAME * 2, Some([1, 2, 3, 4]));
    let half = vec![b' '; MAX_FRAME * 3 / 4];
    let cases = [
        ("a frame over the limit", large, 1009),
        (
            "a message over the limit in fragments within it",
            [frame(TEXT, &half), frame(FIN, &half)].concat(),
            1009,
        ),
    ];
    expect_close_codes(&hub, &cases).await;
}

#[tokio::test]
async fn a_connection_that_keeps_to_the_protocol_stays_open() {
    let hub = hub().await;
    let mut socket = open(&hub).await;
    // A fragmented message with a ping in between, then a ping of 125 bytes.
    let bytes = [
        frame(TEXT, b"{\"op\":"),
        frame(FIN | PING, b"between"),
        frame(FIN, b"\"ping\",\"id\":1}"),
        frame(FIN | PING, &[b'p'; 125]),
    ]
    .concat();
    socket.write_all(&bytes).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let (opcode, payload) = read_frame(&mut socket).await.expect("still open");
        seen.push((opcode, payload));
    }
    assert_eq!(seen[0], (0xA, b"between".to_vec()));
    assert_eq!(seen[1].0, TEXT);
    let pong: Value = serde_json::from_slice(&seen[1].1).unwrap();
    assert_eq!(pong["type"], "pong");
    assert_eq!(seen[2], (0xA, vec![b'p'; 125]));
}

#[tokio::test]
async fn bad_upgrade_requests_are_refused_with_json() {
    let hub = hub().await;
    let good = |skip: &str| -> String {
        [
            "Upgrade: websocket",
            "Connection: Upgrade",
            &format!("Sec-WebSocket-Key: {KEY}"),
            "Sec-WebSocket-Version: 13",
        ]
        .iter()
        .filter(|line| !line.starts_with(skip))
        .map(|line| format!("{line}\r\n"))
        .collect()
    };
    let with = |skip: &str, line: &str| format!("{}{line}\r\n", good(skip));
    let cases = [
        (
            "an empty key",
            with("Sec-WebSocket-Key", "Sec-WebSocket-Key: "),
            400,
            "Sec-WebSocket-Key",
        ),
        (
            "no key",
            good("Sec-WebSocket-Key"),
            400,
            "Sec-WebSocket-Key",
        ),
        (
            "a key that is not base64",
            with("Sec-WebSocket-Key", "Sec-WebSocket-Key: not base64 at all!"),
            400,
            "Sec-WebSocket-Key",
        ),
        // 15 bytes, not 16.
        (
            "a short key",
            with(
                "Sec-WebSocket-Key",
                "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA",
            ),
            400,
            "Sec-WebSocket-Key",
        ),
        (
            "two keys",
            with("X-Nothing", &format!("Sec-WebSocket-Key: {KEY}")),
            400,
            "Sec-WebSocket-Key",
        ),
        (
            "no version",
            good("Sec-WebSocket-Version"),
            400,
            "Sec-WebSocket-Version",
        ),
        (
            "version 8",
            with("Sec-WebSocket-Version", "Sec-WebSocket-Version: 8"),
            426,
            "Sec-WebSocket-Version",
        ),
        (
            "no upgrade to the connection",
            with("Connection", "Connection: keep-alive"),
            400,
            "Connection",
        ),
        (
            "an upgrade to something else",
            with("Upgrade", "Upgrade: h2c"),
            426,
            "WebSocket",
        ),
        ("no upgrade at all", good("Upgrade"), 426, "WebSocket"),
    ];
    for (name, headers, status, named) in cases {
        let (got, head, body, _) = upgrade_request(&hub, &headers).await;
        assert_eq!(got, status, "{name}: {head}");
        assert!(
            header(&head, "content-type")
                .unwrap()
                .starts_with("application/json"),
            "{name}"
        );
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(named), "{name}: {body}");
        if name.contains("version") {
            assert_eq!(header(&head, "sec-websocket-version"), Some("13"), "{name}");
        }
        if status == 426 {
            assert_eq!(body["error"]["code"], "upgrade_required", "{name}");
            assert_eq!(header(&head, "upgrade"), Some("websocket"), "{name}");
        } else {
            assert_eq!(body["error"]["code"], "invalid_upgrade", "{name}");
        }
    }
    // And still a socket for a good one.
    drop(open(&hub).await);
}
