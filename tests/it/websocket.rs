//! The WebSocket transport, presence, client events and hooks.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use herald::config::NamespaceConfig;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::fixture::{PATIENCE, TestHub, eventually};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket client speaking the hub's JSON protocol.
pub(crate) struct Ws {
    socket: Socket,
    pub(crate) connected: Value,
    next_id: u64,
    /// Frames read while waiting for something else.
    pending: Vec<Value>,
}

impl Ws {
    async fn open(hub: &TestHub, query: &str, token: Option<&str>) -> Ws {
        Self::open_at(&hub.addr.to_string(), query, token).await
    }

    /// Opens `/ws?{query}` on the hub at `addr` (`127.0.0.1:PORT`).
    pub(crate) async fn open_at(addr: &str, query: &str, token: Option<&str>) -> Ws {
        let mut url = format!("ws://{addr}/ws?{query}");
        if let Some(token) = token {
            url.push_str(&format!("&token={token}"));
        }
        let (socket, response) = tokio_tungstenite::connect_async(url).await.unwrap();
        assert_eq!(response.status(), 101);
        let mut ws = Ws {
            socket,
            connected: Value::Null,
            next_id: 1,
            pending: Vec::new(),
        };
        let first = ws.frame().await.expect("a connected frame");
        assert_eq!(first["type"], "connected", "{first}");
        ws.connected = first;
        ws
    }

    /// The next JSON frame; `None` when the socket closed.
    async fn frame(&mut self) -> Option<Value> {
        if !self.pending.is_empty() {
            return Some(self.pending.remove(0));
        }
        self.read().await
    }

    /// The next JSON frame from the socket itself.
    async fn read(&mut self) -> Option<Value> {
        loop {
            let message = tokio::time::timeout(PATIENCE, self.socket.next())
                .await
                .expect("a frame in time")?;
            match message.ok()? {
                Message::Text(text) => return Some(serde_json::from_str(&text).unwrap()),
                Message::Close(_) => return None,
                _ => {}
            }
        }
    }

    /// The next frame of type `kind`, keeping the others for later.
    pub(crate) async fn expect(&mut self, kind: &str) -> Value {
        if let Some(i) = self.pending.iter().position(|f| f["type"] == kind) {
            return self.pending.remove(i);
        }
        loop {
            let message = tokio::time::timeout(PATIENCE, self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("no {kind} frame in time"))
                .expect("open")
                .unwrap();
            if let Message::Text(text) = message {
                let frame: Value = serde_json::from_str(&text).unwrap();
                if frame["type"] == kind {
                    return frame;
                }
                self.pending.push(frame);
            }
        }
    }

    /// The next event frame with event type `event`.
    pub(crate) async fn event_of(&mut self, event: &str) -> Value {
        loop {
            let frame = self.expect("event").await;
            if frame["event"] == event {
                return frame;
            }
        }
    }

    async fn send(&mut self, mut frame: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        frame["id"] = json!(id);
        self.socket
            .send(Message::text(frame.to_string()))
            .await
            .unwrap();
        id
    }

    /// Sends a request and returns its answer (ack, error or reply).
    pub(crate) async fn request(&mut self, frame: Value) -> Value {
        let id = self.send(frame).await;
        loop {
            if let Some(i) = self.pending.iter().position(|f| f["id"] == id) {
                return self.pending.remove(i);
            }
            let frame = self.read().await.expect("an answer");
            if frame["id"] == id {
                return frame;
            }
            self.pending.push(frame);
        }
    }

    pub(crate) async fn close_code(&mut self) -> Option<CloseCode> {
        loop {
            match tokio::time::timeout(PATIENCE, self.socket.next())
                .await
                .expect("closed in time")
            {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
                Some(Ok(_)) => {}
                _ => return None,
            }
        }
    }

    /// No frame of `kind` within `wait`.
    async fn none_of(&mut self, kind: &str, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.socket.next()).await {
                Err(_) => return true,
                Ok(Some(Ok(Message::Text(text)))) => {
                    let frame: Value = serde_json::from_str(&text).unwrap();
                    if frame["type"] == kind {
                        return false;
                    }
                }
                Ok(Some(Ok(_))) => {}
                Ok(_) => return true,
            }
        }
    }
}

fn namespace(c: &mut herald::Config, name: &str, change: impl FnOnce(&mut NamespaceConfig)) {
    let mut ns = NamespaceConfig::default();
    change(&mut ns);
    c.namespaces.insert(name.into(), ns);
}

#[tokio::test]
async fn subscribe_and_unsubscribe_mid_connection() {
    let hub = TestHub::start().await;
    let token = hub.token(Some("ana"), &["a", "b"], &[]);
    let mut ws = Ws::open(&hub, "channel=a", Some(&token)).await;
    assert_eq!(
        ws.connected["channels"],
        json!(["a", "user:ana", "$broadcast"])
    );
    let a = hub
        .publish(json!({"channel": "a", "type": "t", "data": {"n": 1}}))
        .await;
    let e = ws.expect("event").await;
    assert_eq!(
        (
            e["channel"].clone(),
            e["event"].clone(),
            e["data"].clone(),
            e["id"].clone()
        ),
        (json!("a"), json!("t"), json!({"n": 1}), json!(a))
    );
    let ack = ws.request(json!({"op": "subscribe", "channel": "b"})).await;
    assert_eq!(ack["type"], "ack");
    // The ack means live: an event published right after it arrives.
    hub.publish(json!({"channel": "b", "data": "text"})).await;
    let e = ws.expect("event").await;
    assert_eq!(
        (e["channel"].clone(), e["data"].clone()),
        (json!("b"), json!("text"))
    );
    let ack = ws
        .request(json!({"op": "unsubscribe", "channel": "a"}))
        .await;
    assert_eq!(ack["type"], "ack");
    hub.publish(json!({"channel": "a", "data": 2})).await;
    hub.publish(json!({"channel": "b", "data": 3})).await;
    let e = ws.expect("event").await;
    assert_eq!(e["channel"], "b", "nothing from a after unsubscribing");
    let pong = ws.request(json!({"op": "ping"})).await;
    assert_eq!(pong["type"], "pong");
}

#[tokio::test]
async fn resume_after_a_dropped_socket_loses_nothing() {
    let hub = TestHub::start().await;
    let token = hub.token(None, &["a", "b"], &[]);
    let mut ws = Ws::open(&hub, "channel=a", Some(&token)).await;
    let first = hub.publish(json!({"channel": "a", "data": 0})).await;
    assert_eq!(ws.expect("event").await["id"], json!(first));
    drop(ws);
    let mut missed = Vec::new();
    for i in 1..=5 {
        missed.push(hub.publish(json!({"channel": "a", "data": i})).await);
    }
    // Resume in the query, as for SSE.
    let mut ws = Ws::open(
        &hub,
        &format!("channel=a&last_event_id={first}"),
        Some(&token),
    )
    .await;
    for id in &missed {
        assert_eq!(&ws.expect("event").await["id"], &json!(id));
    }
    // And per channel, when subscribing mid-connection.
    let b0 = hub.publish(json!({"channel": "b", "data": "b0"})).await;
    let b1 = hub.publish(json!({"channel": "b", "data": "b1"})).await;
    let ack = ws
        .request(json!({"op": "subscribe", "channel": "b", "last_event_id": b0}))
        .await;
    assert_eq!(ack["type"], "ack");
    let e = ws.expect("event").await;
    assert_eq!(e["id"], json!(b1));
    let live = hub.publish(json!({"channel": "b", "data": "b2"})).await;
    assert_eq!(ws.expect("event").await["id"], json!(live));
    // An unknown id gets a reset for that channel.
    let ack = ws
        .request(json!({"op": "subscribe", "channel": "a", "last_event_id": "nope"}))
        .await;
    assert_eq!(ack["already"], true);
    let mut other = Ws::open(&hub, "", Some(&token)).await;
    other
        .request(json!({"op": "subscribe", "channel": "b", "last_event_id": "nope"}))
        .await;
    let reset = other.expect("reset").await;
    assert_eq!(
        (reset["reason"].clone(), reset["channels"].clone()),
        (json!("unknown_id"), json!(["b"]))
    );
}

#[tokio::test]
async fn presence_counts_users_once_and_sees_them_leave() {
    let hub = TestHub::builder()
        .config(|c| {
            namespace(c, "doc", |ns| ns.presence = Some(true));
            c.ws.ping_interval = Duration::from_millis(100);
            c.ws.ping_timeout = Duration::from_millis(400);
        })
        .start()
        .await;
    let watcher_token = hub.token(Some("watcher"), &["doc:*"], &[]);
    let mut watcher = Ws::open(&hub, "channel=doc:1", Some(&watcher_token)).await;
    assert_eq!(
        watcher.event_of("presence.join").await["data"]["user"],
        "watcher"
    );

    let ana = hub.token(Some("ana"), &["doc:*"], &[]);
    let tab1 = Ws::open(&hub, "channel=doc:1", Some(&ana)).await;
    let join = watcher.event_of("presence.join").await;
    assert_eq!(join["data"]["user"], "ana");
    // A second tab of the same user is not a second join.
    let tab2 = Ws::open(&hub, "channel=doc:1", Some(&ana)).await;
    let answer = watcher
        .request(json!({"op": "presence", "channel": "doc:1"}))
        .await;
    let users: Vec<(String, u64)> = answer["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["user"].as_str().unwrap().to_owned(),
                u["connections"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        users,
        vec![("watcher".to_owned(), 1), ("ana".to_owned(), 2)]
    );
    // Over HTTP too.
    let response = hub
        .http
        .get(format!("{}/channels/doc:1/presence", hub.url))
        .bearer_auth(&watcher_token)
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["count"], 2);

    // Closing one tab: still present. Killing the other without a close (it stops
    // answering pings): the ping timeout notices, and ana leaves.
    drop(tab1);
    assert!(watcher.none_of("never", Duration::from_millis(300)).await);
    let mut frozen = tab2; // never read again, so never answers a ping
    let leave = watcher.event_of("presence.leave").await;
    assert_eq!(leave["data"]["user"], "ana");
    assert_eq!(
        frozen.close_code().await,
        Some(CloseCode::Library(4008)),
        "closed for silence"
    );

    // SSE subscribers are present too.
    let bob = hub.token(Some("bob"), &["doc:*"], &[]);
    let _sse = hub.subscribe("channel=doc:1", Some(&bob)).await;
    assert_eq!(
        watcher.event_of("presence.join").await["data"]["user"],
        "bob"
    );
    // Presence events are live-only.
    let history = hub
        .get_json("/channels/doc:1/history", &watcher_token)
        .await;
    assert_eq!(history["events"], json!([]));
}

#[tokio::test]
async fn typing_events_are_live_only_and_rate_limited() {
    let hub = TestHub::builder()
        .config(|c| {
            namespace(c, "chat", |ns| {
                ns.client_publish = Some(true);
                ns.client_history = Some(false);
            });
            namespace(c, "room", |ns| ns.client_publish = Some(true));
            c.ws.client_publish_rate = 1.0;
            c.ws.client_publish_burst = 3;
        })
        .start()
        .await;
    let ana = hub.token(Some("ana"), &["chat:*", "room:*"], &["chat:*", "room:*"]);
    let bob = hub.token(Some("bob"), &["chat:*"], &[]);
    let mut ana_ws = Ws::open(&hub, "channel=chat:1", Some(&ana)).await;
    let mut bob_ws = Ws::open(&hub, "channel=chat:1", Some(&bob)).await;

    let ack = ana_ws
        .request(json!({"op": "publish", "channel": "chat:1", "type": "typing", "data": {"user": "ana"}}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let typing = bob_ws.event_of("typing").await;
    assert_eq!(typing["data"], json!({"user": "ana"}));
    assert_eq!(typing["id"], ack["event_id"]);
    let history: Value = hub
        .get("/channels/chat:1/history")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(history["error"]["code"], "unauthorized");
    let history = hub.get_json("/channels/chat:1/history", &ana).await;
    assert_eq!(history["events"], json!([]), "typing is not kept");

    // Where the namespace keeps client events, they are in history.
    let ack = ana_ws
        .request(json!({"op": "publish", "channel": "room:1", "data": "hello"}))
        .await;
    assert_eq!(ack["type"], "ack");
    let history = hub.get_json("/channels/room:1/history", &ana).await;
    assert_eq!(history["events"][0]["data"], "hello");

    // The burst is 3 and one was left: the next ones are refused with an error frame,
    // and the connection stays open.
    let mut refused = 0;
    for _ in 0..4 {
        let answer = ana_ws
            .request(json!({"op": "publish", "channel": "chat:1", "type": "typing", "data": {}}))
            .await;
        if answer["type"] == "error" {
            assert_eq!(answer["code"], "rate_limited");
            refused += 1;
        }
    }
    assert!(refused >= 2, "refused {refused}");
    assert_eq!(ana_ws.request(json!({"op": "ping"})).await["type"], "pong");

    // Not granted, or not a client-publish namespace: forbidden.
    let answer = bob_ws
        .request(json!({"op": "publish", "channel": "chat:1", "data": 1}))
        .await;
    assert_eq!(answer["code"], "forbidden");
    let mut fresh = Ws::open(&hub, "", Some(&ana)).await;
    let answer = fresh
        .request(json!({"op": "publish", "channel": "other", "data": 1}))
        .await;
    assert_eq!(answer["code"], "forbidden");
    assert!(hub.node.stats().client_events_refused >= 4);
}

#[tokio::test]
async fn bad_input_gets_error_frames_and_documented_close_codes() {
    let hub = TestHub::builder()
        .config(|c| c.ws.max_frame_bytes = 1024)
        .start()
        .await;
    let token = hub.token(Some("ana"), &["a"], &[]);
    let mut ws = Ws::open(&hub, "", Some(&token)).await;
    ws.socket.send(Message::text("{not json")).await.unwrap();
    assert_eq!(ws.expect("error").await["code"], "invalid_frame");
    let answer = ws.request(json!({"op": "dance"})).await;
    assert_eq!(answer["code"], "unknown_op");
    let answer = ws.request(json!({"op": "subscribe"})).await;
    assert_eq!(answer["code"], "missing_channel");
    let answer = ws
        .request(json!({"op": "subscribe", "channel": "a b"}))
        .await;
    assert_eq!(answer["code"], "invalid_channel");
    let answer = ws
        .request(json!({"op": "subscribe", "channel": "secret"}))
        .await;
    assert_eq!(answer["code"], "forbidden");
    let answer = ws
        .request(json!({"op": "subscribe", "channel": "user:bob"}))
        .await;
    assert_eq!(answer["code"], "forbidden");
    let answer = ws
        .request(json!({"op": "unsubscribe", "channel": "zzz"}))
        .await;
    assert_eq!(answer["code"], "not_subscribed");
    ws.socket
        .send(Message::binary(vec![1, 2, 3]))
        .await
        .unwrap();
    assert_eq!(ws.expect("error").await["code"], "binary_not_supported");
    // All of that left the connection open.
    assert_eq!(ws.request(json!({"op": "ping"})).await["type"], "pong");
    // An oversized frame cannot be survived: close 1009.
    ws.socket
        .send(Message::text(
            json!({"op": "ping", "pad": "x".repeat(4096)}).to_string(),
        ))
        .await
        .unwrap();
    assert_eq!(ws.close_code().await, Some(CloseCode::Size));

    // A plain GET is told to upgrade; a bad token never gets a socket.
    let response = hub.get("/ws").await;
    assert_eq!(response.status(), 426);
    let err = tokio_tungstenite::connect_async(format!("ws://{}/ws?token=bad", hub.addr)).await;
    assert!(err.is_err());
    let err = tokio_tungstenite::connect_async(format!(
        "ws://{}/ws?channel=secret&token={token}",
        hub.addr
    ))
    .await;
    match err {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        other => panic!("expected a 403, got {other:?}"),
    }
}

#[tokio::test]
async fn token_expiry_and_shutdown_close_with_their_codes() {
    // No leeway: the socket closes at the token's `exp`, not a few seconds later.
    let hub = TestHub::builder()
        .config(|c| c.auth.leeway = Duration::ZERO)
        .start()
        .await;
    let short = hub.token_for(Some("ana"), &["a"], &[], Duration::from_secs(1));
    let mut ws = Ws::open(&hub, "channel=a", Some(&short)).await;
    assert_eq!(ws.expect("token_expired").await["type"], "token_expired");
    assert_eq!(ws.close_code().await, Some(CloseCode::Library(4001)));

    let token = hub.token(Some("ana"), &["a"], &[]);
    let mut ws = Ws::open(&hub, "channel=a", Some(&token)).await;
    hub.node.shutdown();
    let notice = ws.expect("shutdown").await;
    assert!(notice["retry_ms"].as_u64().is_some());
    assert_eq!(ws.close_code().await, Some(CloseCode::Restart));
}

#[tokio::test]
async fn rust_hooks_see_joins_leaves_and_can_refuse_client_events() {
    let hub = TestHub::builder()
        .config(|c| namespace(c, "chat", |ns| ns.client_publish = Some(true)))
        .start()
        .await;
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    hub.node
        .hooks()
        .on_join(move |a| log.lock().push(format!("join {} {:?}", a.channel, a.user)));
    let log = seen.clone();
    hub.node
        .hooks()
        .on_leave(move |a| log.lock().push(format!("leave {} {:?}", a.channel, a.user)));
    hub.node
        .hooks()
        .on_client_event(|mut e: herald::hooks::ClientEvent| async move {
            if e.event.data.as_str().contains("spam") {
                return Err("no spam".to_owned());
            }
            e.event.data =
                herald::Payload::json(&json!({"checked": true, "from": e.user})).unwrap();
            Ok(e.event)
        });
    let ana = hub.token(Some("ana"), &["chat:*"], &["chat:*"]);
    let mut ws = Ws::open(&hub, "channel=chat:1", Some(&ana)).await;
    let answer = ws
        .request(json!({"op": "publish", "channel": "chat:1", "data": "buy spam"}))
        .await;
    assert_eq!(
        (answer["code"].clone(), answer["message"].clone()),
        (json!("refused"), json!("no spam"))
    );
    let answer = ws
        .request(json!({"op": "publish", "channel": "chat:1", "data": "hi"}))
        .await;
    assert_eq!(answer["type"], "ack");
    let e = ws.expect("event").await;
    assert_eq!(e["data"], json!({"checked": true, "from": "ana"}));
    drop(ws);
    eventually("the leave of chat:1", || {
        let seen = seen.lock();
        if seen.iter().any(|s| s.starts_with("leave chat:1")) {
            Ok(())
        } else {
            Err(format!("{:?}", *seen))
        }
    })
    .await;
    let seen = seen.lock().clone();
    assert!(
        seen.contains(&"join chat:1 Some(\"ana\")".to_owned()),
        "{seen:?}"
    );
    assert!(
        seen.contains(&"join user:ana Some(\"ana\")".to_owned()),
        "{seen:?}"
    );
}

/// A real HTTP server standing in for the application's webhook endpoint.
async fn webhook_receiver(
    refuse: &'static str,
) -> (String, Arc<Mutex<Vec<(Value, String, String)>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let log = log.clone();
            async move {
                let value: Value = serde_json::from_str(&body).unwrap();
                let header = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_owned();
                log.lock().push((
                    value.clone(),
                    header("x-herald-timestamp"),
                    header("x-herald-signature") + "|" + &body,
                ));
                if value["type"] == "client_event" && value["event"]["data"] == refuse {
                    return (
                        axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                        r#"{"error":{"message":"not here"}}"#,
                    );
                }
                (axum::http::StatusCode::OK, "{}")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, app).into_future());
    (url, received)
}

#[tokio::test]
async fn webhooks_report_joins_leaves_and_vet_client_events() {
    use hmac::{Hmac, Mac};
    let (url, received) = webhook_receiver("forbidden words").await;
    let secret = "webhook-secret-0123456789";
    let hub = TestHub::builder()
        .config(|c| {
            namespace(c, "chat", |ns| ns.client_publish = Some(true));
            c.webhooks.url = Some(url);
            c.webhooks.secret = Some(secret.into());
            c.webhooks.batch_window = Duration::from_millis(50);
        })
        .start()
        .await;
    let ana = hub.token(Some("ana"), &["chat:*"], &["chat:*"]);
    let mut ws = Ws::open(&hub, "channel=chat:1", Some(&ana)).await;
    let answer = ws
        .request(json!({"op": "publish", "channel": "chat:1", "data": "forbidden words"}))
        .await;
    assert_eq!(
        (answer["code"].clone(), answer["message"].clone()),
        (json!("refused"), json!("not here"))
    );
    let answer = ws
        .request(json!({"op": "publish", "channel": "chat:1", "data": "fine"}))
        .await;
    assert_eq!(answer["type"], "ack");
    assert_eq!(ws.expect("event").await["data"], "fine");
    drop(ws);

    let activity = eventually("the leave of chat:1 in the activity sent", || {
        let received = received.lock();
        let events: Vec<Value> = received
            .iter()
            .filter(|(v, ..)| v["type"] == "activity")
            .flat_map(|(v, ..)| v["events"].as_array().unwrap().clone())
            .collect();
        if events
            .iter()
            .any(|e| e["type"] == "leave" && e["channel"] == "chat:1")
        {
            Ok(events)
        } else {
            Err(format!("{:?}", *received))
        }
    })
    .await;
    assert!(
        activity
            .iter()
            .any(|e| e["type"] == "join" && e["channel"] == "chat:1" && e["user"] == "ana")
    );
    let received = received.lock().clone();
    let client_events: Vec<&Value> = received
        .iter()
        .map(|(v, ..)| v)
        .filter(|v| v["type"] == "client_event")
        .collect();
    assert_eq!(client_events.len(), 2);
    assert_eq!(client_events[1]["event"]["channels"], json!(["chat:1"]));
    assert_eq!(client_events[1]["user"], "ana");
    // Every request is signed over "{timestamp}.{body}".
    for (_, timestamp, signature_and_body) in &received {
        let (signature, body) = signature_and_body.split_once('|').unwrap();
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{timestamp}.{body}").as_bytes());
        let expected: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(signature, format!("sha256={expected}"));
    }
}

/// A WebSocket client with a small receive buffer that the test can stop reading.
type RawSocket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn open_raw(hub: &TestHub, query: &str) -> RawSocket {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(hub.addr).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{}/ws?{query}", hub.addr), stream)
        .await
        .unwrap();
    ws
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_while_a_reader_gets_everything() {
    let hub = TestHub::builder()
        // A queue longer than the socket buffers hold, so the hub's writes to the
        // stalled client block before its queue overflows.
        .config(|c| c.limits.queue_size = 1024)
        .start()
        .await;
    let token = hub.token(Some("ana"), &["feed"], &[]);
    let mut stalled = open_raw(&hub, &format!("channel=feed&token={token}")).await;
    let Some(Ok(Message::Text(first))) = stalled.next().await else {
        panic!("a connected frame");
    };
    let connected: Value = serde_json::from_str(&first).unwrap();
    let stalled_id = connected["connection_id"].as_str().unwrap().to_owned();
    let left = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = left.clone();
    hub.node
        .hooks()
        .on_leave(move |a| log.lock().push(a.connection_id.clone()));
    // The reader forwards the ids of its events as it reads them.
    let reader = Ws::open(&hub, "channel=feed", Some(&token)).await;
    let (tx, mut ids) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let reading = tokio::spawn(async move {
        let mut reader = reader;
        loop {
            let frame = reader.expect("event").await;
            if tx.send(frame["id"].clone()).is_err() {
                return;
            }
        }
    });

    // Publish 32 KiB events in steps the reader keeps up with, until the stalled
    // client's socket buffers and queue are full (bounded: at most 4000 events).
    let channel = herald::ChannelName::new("feed").unwrap();
    let payload = "x".repeat(32 * 1024);
    let mut published = Vec::new();
    while hub.node.stats().slow_consumer_disconnects == 0 {
        assert!(
            published.len() < 4000,
            "the stalled client never overflowed"
        );
        for _ in 0..8 {
            let event = herald::NewEvent::text(channel.clone(), payload.clone());
            published.push(hub.node.hub().publish(event).await.unwrap().id);
        }
        for id in &published[published.len() - 8..] {
            let got = tokio::time::timeout(PATIENCE, ids.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(got, json!(id));
        }
    }
    // The reader got every event, in order, once; and it keeps getting them.
    let after = hub
        .node
        .hub()
        .publish(herald::NewEvent::text(channel.clone(), "after"))
        .await
        .unwrap()
        .id;
    assert_eq!(
        tokio::time::timeout(PATIENCE, ids.recv()).await.unwrap(),
        Some(json!(after))
    );
    reading.abort();

    // The hub let go of the stalled connection without waiting for it to read.
    eventually("the stalled connection to be let go", || {
        left.lock().contains(&stalled_id)
    })
    .await;

    // The stalled client, reading again, finds what was buffered and then the close
    // code that tells it to reconnect and resume.
    let mut seen = 0;
    let code = loop {
        match tokio::time::timeout(PATIENCE, stalled.next())
            .await
            .expect("the hub closes the stalled client")
        {
            Some(Ok(Message::Text(_))) => seen += 1,
            Some(Ok(Message::Close(frame))) => break frame.map(|f| f.code),
            Some(Ok(_)) => {}
            other => panic!("expected a close frame after {seen} events, got {other:?}"),
        }
    };
    assert_eq!(code, Some(CloseCode::Library(4000)));
    assert!(seen < published.len(), "it fell behind: {seen} events");
}

#[tokio::test]
async fn every_bad_frame_gets_its_error_and_limits_hold() {
    let hub = TestHub::builder()
        .config(|c| {
            c.limits.max_channels_per_connection = 2;
            c.limits.max_connections = 3;
            namespace(c, "chat", |ns| ns.client_publish = Some(true));
        })
        .start()
        .await;
    let token = hub.token(Some("ana"), &["*"], &["chat:*"]);
    let mut ws = Ws::open(&hub, "", Some(&token)).await;
    let answer = ws.request(json!({"op": "ping", "colour": "blue"})).await;
    assert_eq!(answer["code"], "invalid_frame", "unknown fields: {answer}");
    let answer = ws.request(json!({"op": 7})).await;
    assert_eq!(answer["code"], "invalid_frame", "{answer}");
    let answer = ws
        .request(json!({"op": "publish", "channel": "chat:1", "channels": ["chat:2"], "data": 1}))
        .await;
    assert_eq!(answer["code"], "invalid_target");
    let answer = ws
        .request(json!({"op": "publish", "channel": "chat:1", "type": "connected", "data": 1}))
        .await;
    assert_eq!(
        answer["code"], "invalid_event",
        "a hub event name: {answer}"
    );
    let many: Vec<String> = (0..101).map(|i| format!("chat:{i}")).collect();
    let answer = ws
        .request(json!({"op": "publish", "channels": many, "data": 1}))
        .await;
    assert_eq!(answer["code"], "too_many_channels", "{answer}");
    let answer = ws
        .request(json!({"op": "presence", "channel": "chat:1"}))
        .await;
    assert_eq!(answer["code"], "presence_disabled");
    let answer = ws.request(json!({"op": "presence"})).await;
    assert_eq!(answer["code"], "missing_channel");
    for name in ["a", "b"] {
        let ack = ws
            .request(json!({"op": "subscribe", "channel": name}))
            .await;
        assert_eq!(ack["type"], "ack", "{ack}");
    }
    let answer = ws.request(json!({"op": "subscribe", "channel": "c"})).await;
    assert_eq!(answer["code"], "too_many_channels");
    let answer = ws
        .request(json!({"op": "subscribe", "channel": "$broadcast"}))
        .await;
    assert_eq!(answer["code"], "invalid_channel", "{answer}");
    // Still open after all of it.
    assert_eq!(ws.request(json!({"op": "ping"})).await["type"], "pong");
    // A frame larger than one read (4 KiB) but within ws.max_frame_bytes is fine.
    let long_id = "x".repeat(20_000);
    ws.socket
        .send(Message::text(
            json!({"op": "ping", "id": long_id}).to_string(),
        ))
        .await
        .unwrap();
    let pong = ws.expect("pong").await;
    assert_eq!(pong["id"], json!(long_id));

    // Connection limits count WebSockets like SSE streams: past them, 503.
    let _two = Ws::open(&hub, "", Some(&token)).await;
    let _three = Ws::open(&hub, "", Some(&token)).await;
    match tokio_tungstenite::connect_async(format!("ws://{}/ws?token={token}", hub.addr)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"]["code"], "too_many_connections");
        }
        other => panic!("expected a 503, got {other:?}"),
    }
}

#[tokio::test]
async fn webhooks_retry_time_out_and_stay_quiet_on_shutdown() {
    let attempts = Arc::new(Mutex::new(Vec::<Value>::new()));
    let log = attempts.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let log = log.clone();
            async move {
                let value: Value = serde_json::from_str(&body).unwrap();
                let tries = {
                    let mut log = log.lock();
                    log.push(value.clone());
                    log.iter()
                        .filter(|v| v["event"]["data"] == value["event"]["data"])
                        .count()
                };
                match value["event"]["data"].as_str() {
                    // Fails once, then lets the event through.
                    Some("flaky") if tries == 1 => {
                        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "{}".to_owned())
                    }
                    // Never answers: the hub's request times out.
                    Some("slow") => std::future::pending().await,
                    _ => (axum::http::StatusCode::OK, "{}".to_owned()),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, app).into_future());
    let hub = TestHub::builder()
        .config(|c| {
            namespace(c, "chat", |ns| ns.client_publish = Some(true));
            c.webhooks.url = Some(url);
            c.webhooks.secret = Some("webhook-secret-0123456789".into());
            c.webhooks.timeout = Duration::from_millis(200);
            c.webhooks.retries = 1;
            c.webhooks.batch_window = Duration::from_millis(20);
        })
        .start()
        .await;
    let ana = hub.token(Some("ana"), &["chat:*"], &["chat:*"]);
    let mut ws = Ws::open(&hub, "channel=chat:1", Some(&ana)).await;
    let answer = ws
        .request(json!({"op": "publish", "channel": "chat:1", "data": "flaky"}))
        .await;
    assert_eq!(answer["type"], "ack", "retried after a 503: {answer}");
    let answer = ws
        .request(json!({"op": "publish", "channel": "chat:1", "data": "slow"}))
        .await;
    assert_eq!(answer["code"], "refused", "timed out twice: {answer}");
    let count = |data: &str| {
        attempts
            .lock()
            .iter()
            .filter(|v| v["event"]["data"] == data)
            .count()
    };
    assert_eq!((count("flaky"), count("slow")), (2, 2));

    // Wait for the join to be reported, then stop the hub: one node_stopping, and
    // none of the leaves of the connections it closes.
    eventually("the join to be reported", || {
        attempts.lock().iter().any(|v| v["type"] == "activity")
    })
    .await;
    hub.node.shutdown();
    assert_eq!(ws.close_code().await, Some(CloseCode::Restart));
    hub.stop().await.unwrap();
    eventually("node_stopping to be reported", || {
        attempts.lock().iter().any(|v| v["type"] == "node_stopping")
    })
    .await;
    let leaves = attempts
        .lock()
        .iter()
        .filter(|v| v["type"] == "activity")
        .flat_map(|v| v["events"].as_array().unwrap().clone())
        .filter(|e| e["type"] == "leave")
        .count();
    assert_eq!(leaves, 0, "{:?}", attempts.lock());
}
