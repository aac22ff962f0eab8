//! WebSocket client frames. Raw bytes from a client, read by the WebSocket library
//! as the hub configures it, end in an error that maps to 1002, 1007, 1009 or to
//! nothing (the client is gone), with a reason that fits a close frame. Text frames,
//! answered by the hub on a real session, always get a JSON reply of a known type,
//! an error carrying a code and message.
#![no_main]

use std::io::{self, Cursor, Read, Write};
use std::sync::OnceLock;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Uri};
use herald::auth::Claims;
use herald::core::ChannelPattern;
use herald::{Config, Node, fuzzing};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tungstenite::protocol::{Role, WebSocket, WebSocketConfig};

/// A client's bytes to read, and a sink for what the server writes back.
struct Wire {
    input: Cursor<Vec<u8>>,
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn frames(bytes: &[u8]) {
    let config = WebSocketConfig::default()
        .max_message_size(Some(1024))
        .max_frame_size(Some(1024));
    let wire = Wire {
        input: Cursor::new(bytes.to_vec()),
    };
    let mut socket = WebSocket::from_raw_socket(wire, Role::Server, Some(config));
    let error = loop {
        match socket.read() {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    if let Some((code, reason)) = fuzzing::ws_close_code(&axum::Error::new(error)) {
        assert!(matches!(code, 1002 | 1007 | 1009), "{code}");
        assert!(reason.len() <= 123, "{reason}");
    }
}

struct Hub {
    runtime: tokio::runtime::Runtime,
    node: Node,
    token: String,
}

fn hub() -> &'static Hub {
    static HUB: OnceLock<Hub> = OnceLock::new();
    HUB.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let mut config = Config::default();
        config.auth.jwt_secret = Some("fuzzing-secret-0123456789abcdef".into());
        config.store.path = ":memory:".into();
        config.channels.client_publish = true;
        config.channels.presence = true;
        let node = runtime.block_on(async { Node::new(config).expect("a valid config") });
        let mut claims = Claims::new(Some("fuzz".into()), Duration::from_secs(86_400));
        let all = vec![ChannelPattern::parse("*").expect("a pattern")];
        claims.herald.subscribe = all.clone();
        claims.herald.publish = all;
        let token = node.authenticator().mint(&claims).expect("a token");
        Hub {
            runtime,
            node,
            token,
        }
    })
}

fn texts(bytes: &[u8]) {
    let hub = hub();
    let uri = Uri::from_static("/ws?channel=orders");
    let mut headers = HeaderMap::new();
    let bearer = HeaderValue::from_str(&format!("Bearer {}", hub.token)).expect("a header");
    headers.insert("authorization", bearer);
    hub.runtime.block_on(async {
        let mut session = fuzzing::ws_session(&hub.node, &uri, &headers)
            .await
            .expect("a session");
        // Frames are separated by 0xFF, which UTF-8 text never holds.
        for frame in bytes.split(|&b| b == 0xFF).take(16) {
            let Ok(text) = std::str::from_utf8(frame) else {
                continue;
            };
            let reply = fuzzing::ws_frame(&mut session, text).await;
            let kind = reply["type"].as_str().expect("a reply has a type");
            assert!(
                matches!(kind, "ack" | "error" | "pong" | "presence"),
                "{reply}"
            );
            if kind == "error" {
                assert!(reply["code"].is_string() && reply["message"].is_string());
            }
            let sent = serde_json::from_str::<Value>(text).ok();
            if let Some(id) = sent.as_ref().and_then(|v| v.get("id")) {
                assert_eq!(&reply["id"], id, "the frame's id is echoed");
            }
            // What the session was sent is taken, so its queue never overflows.
            while let Ok(Some(_)) = session.try_next() {}
        }
        session.close();
    });
}

fuzz_target!(|input: &[u8]| {
    match input.split_first() {
        Some((0, rest)) => frames(rest),
        Some((_, rest)) => texts(rest),
        None => {}
    }
});
