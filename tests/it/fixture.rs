//! The shared fixture: a real hub on 127.0.0.1:0, in process, and clients that talk
//! to it over real HTTP connections.

use std::pin::Pin;
use std::time::Duration;

use eventsource_stream::{Event as SseEvent, Eventsource};
use futures_util::{Stream, StreamExt};
use herald::auth::Claims;
use herald::core::ChannelPattern;
use herald::{Config, Hub};
use reqwest::StatusCode;
use serde_json::Value;

/// The HS256 secret every test hub uses.
pub(crate) const SECRET: &str = "integration-test-secret-0123456789";

/// How long a test waits for something it expects before failing.
pub(crate) const PATIENCE: Duration = Duration::from_secs(15);

/// Builds a [`TestHub`] with a configuration changed by the test.
pub(crate) struct Builder {
    config: Config,
}

impl Builder {
    /// Changes the configuration.
    pub(crate) fn config(mut self, change: impl FnOnce(&mut Config)) -> Self {
        change(&mut self.config);
        self
    }

    /// Keeps notifications and tasks in `backend` (the default is a private
    /// in-memory SQLite database).
    pub(crate) fn store(mut self, backend: &herald::store::Backend) -> Self {
        match backend {
            herald::store::Backend::Sqlite(path) => {
                self.config.store.kind = "sqlite".into();
                self.config.store.path = path.clone();
            }
            herald::store::Backend::Postgres { url, pool_size } => {
                self.config.store.kind = "postgres".into();
                self.config.store.url = Some(url.clone());
                self.config.store.pool_size = *pool_size;
            }
        }
        self
    }

    /// Starts the hub.
    pub(crate) async fn start(self) -> TestHub {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hub = Hub::new(self.config).expect("valid test configuration");
        let task = tokio::spawn(herald::serve(listener, hub.clone()));
        TestHub {
            url: format!("http://{addr}"),
            addr,
            hub,
            task: Some(task),
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
        }
    }
}

/// A hub running on a free port.
pub(crate) struct TestHub {
    /// `http://127.0.0.1:PORT`.
    pub(crate) url: String,
    /// The listening address.
    pub(crate) addr: std::net::SocketAddr,
    /// The hub handle, for library calls and counters.
    pub(crate) hub: Hub,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// A client for plain requests.
    pub(crate) http: reqwest::Client,
}

impl TestHub {
    /// A builder with the test secret and defaults otherwise.
    pub(crate) fn builder() -> Builder {
        let mut config = Config {
            listen: "127.0.0.1:0".into(),
            ..Config::default()
        };
        config.auth.jwt_secret = Some(SECRET.into());
        config.store.path = ":memory:".into();
        Builder { config }
    }

    /// A hub with the default test configuration.
    pub(crate) async fn start() -> Self {
        Self::builder().start().await
    }

    /// A token for `sub` with subscribe and publish grants, valid for an hour.
    pub(crate) fn token(&self, sub: Option<&str>, subscribe: &[&str], publish: &[&str]) -> String {
        self.token_for(sub, subscribe, publish, Duration::from_secs(3600))
    }

    /// A token like [`TestHub::token`] with a chosen lifetime.
    pub(crate) fn token_for(
        &self,
        sub: Option<&str>,
        subscribe: &[&str],
        publish: &[&str],
        ttl: Duration,
    ) -> String {
        let mut claims = Claims::new(sub.map(str::to_owned), ttl);
        let parse = |ps: &[&str]| {
            ps.iter()
                .map(|p| ChannelPattern::parse(p).unwrap())
                .collect()
        };
        claims.herald.subscribe = parse(subscribe);
        claims.herald.publish = parse(publish);
        self.hub.authenticator().mint(&claims).unwrap()
    }

    /// A token that may publish anywhere.
    pub(crate) fn publisher(&self) -> String {
        self.token(Some("publisher"), &[], &["*"])
    }

    /// POSTs `body` to `/publish` with `token`; returns the status and JSON answer.
    pub(crate) async fn publish_with(
        &self,
        token: Option<&str>,
        body: &Value,
    ) -> (StatusCode, Value) {
        let mut request = self.http.post(format!("{}/publish", self.url)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Publishes with a publisher token and returns the assigned id.
    pub(crate) async fn publish(&self, body: Value) -> String {
        let (status, answer) = self.publish_with(Some(&self.publisher()), &body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        answer["id"].as_str().expect("an id").to_owned()
    }

    /// A GET on `path`.
    pub(crate) async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap()
    }

    /// Opens an SSE stream for `query` (e.g. `channel=a&channel=b`).
    pub(crate) async fn subscribe(&self, query: &str, token: Option<&str>) -> Sse {
        self.subscribe_from(query, token, None).await
    }

    /// Opens an SSE stream resuming after `last_event_id` (sent as the header).
    pub(crate) async fn subscribe_from(
        &self,
        query: &str,
        token: Option<&str>,
        last_event_id: Option<&str>,
    ) -> Sse {
        let response = self.open(query, token, last_event_id).await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "subscribe {query}: {:?}",
            response.text().await
        );
        Sse::new(response).await
    }

    /// Sends the SSE request and returns the raw response (for error paths).
    pub(crate) async fn open(
        &self,
        query: &str,
        token: Option<&str>,
        last_event_id: Option<&str>,
    ) -> reqwest::Response {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let mut request = client.get(format!("{}/events?{query}", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        request.send().await.unwrap()
    }

    /// Starts a graceful shutdown and waits for the server to return.
    pub(crate) async fn stop(mut self) -> std::io::Result<()> {
        self.hub.shutdown();
        let task = self.task.take().expect("running");
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("the server stopped")
            .expect("the server task did not panic")
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        self.hub.shutdown();
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<SseEvent, String>> + Send>>;

/// An open SSE stream, parsed by an independent SSE parser.
pub(crate) struct Sse {
    events: EventStream,
    /// The data of the `connected` event.
    pub(crate) connected: Value,
}

impl Sse {
    async fn new(response: reqwest::Response) -> Self {
        let events = response
            .bytes_stream()
            .eventsource()
            .map(|r| r.map_err(|e| e.to_string()));
        let mut sse = Self {
            events: Box::pin(events),
            connected: Value::Null,
        };
        let first = sse.next().await.expect("a connected event");
        assert_eq!(first.event, "connected", "the first event is `connected`");
        sse.connected = serde_json::from_str(&first.data).unwrap();
        sse
    }

    /// The next event, or `None` when the stream ended; fails after [`PATIENCE`].
    pub(crate) async fn next(&mut self) -> Option<SseEvent> {
        match tokio::time::timeout(PATIENCE, self.events.next()).await {
            Ok(Some(Ok(event))) => Some(event),
            Ok(Some(Err(_))) | Ok(None) => None,
            Err(_) => panic!("no event within {PATIENCE:?}"),
        }
    }

    /// The next event, which must exist.
    pub(crate) async fn expect(&mut self) -> SseEvent {
        self.next()
            .await
            .expect("an event, not the end of the stream")
    }

    /// Whether an event arrives within `wait`.
    pub(crate) async fn quiet_for(&mut self, wait: Duration) -> Option<SseEvent> {
        match tokio::time::timeout(wait, self.events.next()).await {
            Ok(Some(Ok(event))) => Some(event),
            _ => None,
        }
    }
}

/// The JSON data of an event.
pub(crate) fn json(event: &SseEvent) -> Value {
    serde_json::from_str(&event.data).unwrap_or_else(|_| panic!("JSON data: {:?}", event.data))
}

/// Whether the service at `addr` (e.g. `127.0.0.1:5432`) answers. When it does not,
/// the calling test should return early: this prints why it is skipped, or fails
/// the test when `HERALD_REQUIRE_SERVICES=1`.
pub(crate) async fn service_available(name: &str, addr: &str) -> bool {
    let up = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await
        .is_ok_and(|r| r.is_ok());
    if up {
        return true;
    }
    if std::env::var("HERALD_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("{name} is required (HERALD_REQUIRE_SERVICES=1) but not reachable at {addr}");
    }
    eprintln!(
        "SKIP: {name} not reachable at {addr}; set HERALD_REQUIRE_SERVICES=1 to make this a failure"
    );
    false
}
